"""Audit events: the exact sequence of a full session and of each way it can fail."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import pytest

import anyio_smtp
from anyio_smtp import (
    AuthenticationError,
    ExtensionNotSupportedError,
    SenderRefusedError,
    ServiceUnavailableError,
    SessionClosedError,
    SMTPClient,
)
from anyio_smtp.audit import (
    AuditEvent,
    Authenticated,
    Connected,
    DeliveryUnknown,
    MessageAccepted,
    MessageRejected,
    RecipientRejected,
    SessionAborted,
    TLSStarted,
)
from anyio_smtp.testing import SMTPTestServer, memory_stream_pair, throwaway_tls
from tests.client.scripted import PIPELINING_EHLO, Peer, scripted

USER, PASSWORD = "alice@example.test", "s3cret-Pa55"
BODY = b"Subject: audit\r\n\r\nsecret body marker 7f3a\r\n"
SERVER_TLS, CLIENT_TLS = throwaway_tls("mx.test")


class Recorder:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def __call__(self, event: AuditEvent) -> None:
        self.events.append(event)

    @property
    def names(self) -> list[str]:
        return [event.name for event in self.events]


@asynccontextmanager
async def served(
    server: SMTPTestServer, audit: Callable[[AuditEvent], Awaitable[None] | None]
) -> AsyncIterator[anyio_smtp.SMTPClient]:
    """A client connected to ``server`` over an in-memory stream (both ends in this loop)."""
    client_end, server_end = memory_stream_pair()
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve_stream, server_end)
        try:
            smtp = await anyio_smtp.connect_stream(
                client_end, ehlo_domain="client.test", tls_hostname="mx.test", audit=audit
            )
            yield smtp
        finally:
            await client_end.aclose()


def make_server(**options: object) -> SMTPTestServer:
    return SMTPTestServer(
        starttls_context=SERVER_TLS,
        users={USER: PASSWORD},
        **options,  # type: ignore[arg-type]
    )


async def full_session(server: SMTPTestServer, record: Recorder) -> anyio_smtp.SendResult:
    async with served(server, record) as smtp:
        await smtp.starttls(ssl_context=CLIENT_TLS)
        await smtp.login(USER, PASSWORD, mechanism="PLAIN")
        result = await smtp.send_mail(USER, ["bob@example.test", "nobody@example.test"], BODY)
        await smtp.aclose()
    return result


async def test_full_session_sequence() -> None:
    record = Recorder()
    async with make_server() as server:
        server.reply("RCPT", "550 5.1.1 No such user", match="nobody@")
        result = await full_session(server, record)
    assert record.names == [
        "connected",
        "greeting",
        "tls-started",
        "authenticated",
        "sender-accepted",
        "recipient-accepted",
        "recipient-rejected",
        "message-accepted",
        "quit",
    ]
    connected, greeting, tls, auth, _sender, _bob, nobody, accepted, quit = record.events
    assert connected == Connected(None, None)
    assert greeting.reply.code == 220  # type: ignore[attr-defined]
    assert isinstance(tls, TLSStarted)
    assert tls.starttls
    assert tls.version is not None
    assert tls.cipher
    assert auth == Authenticated("PLAIN")
    assert isinstance(nobody, RecipientRejected)
    assert nobody.recipient == "nobody@example.test"
    assert nobody.reply.code == 550
    assert isinstance(accepted, MessageAccepted)
    assert accepted.recipients == ("bob@example.test",)
    assert accepted.queue_id == result.queue_id
    assert accepted.queue_id is not None
    assert quit.reply.code == 221  # type: ignore[attr-defined]


async def test_events_never_carry_credentials_or_content() -> None:
    record = Recorder()
    async with make_server() as server:
        await full_session(server, record)
    text = " ".join(repr(event) for event in record.events)
    assert PASSWORD not in text
    assert "secret body marker" not in text


async def test_implicit_tls_event_comes_before_the_greeting() -> None:
    record = Recorder()
    async with (
        SMTPTestServer(tls_context=SERVER_TLS) as server,
        anyio_smtp.connect(
            server.host,
            server.port,
            tls=True,
            ssl_context=CLIENT_TLS,
            tls_hostname="mx.test",
            audit=record,
        ),
    ):
        pass
    assert record.names == ["connected", "tls-started", "greeting", "quit"]
    assert record.events[0] == Connected(server.host, server.port)
    assert not record.events[1].starttls  # type: ignore[attr-defined]


async def test_starttls_missing_aborts_once() -> None:
    record = Recorder()
    async with SMTPTestServer() as server, served(server, record) as smtp:
        with pytest.raises(ExtensionNotSupportedError):
            await smtp.starttls(ssl_context=CLIENT_TLS)
        with pytest.raises(SessionClosedError):
            await smtp.noop()
        await smtp.aclose()
    assert record.names == ["connected", "greeting", "session-aborted"]
    aborted = record.events[-1]
    assert isinstance(aborted, SessionAborted)
    assert aborted.error == "ExtensionNotSupportedError"
    assert "STARTTLS" in aborted.reason


async def test_refused_login_aborts_once_without_authenticated() -> None:
    record = Recorder()
    async with make_server() as server, served(server, record) as smtp:
        await smtp.starttls(ssl_context=CLIENT_TLS)
        with pytest.raises(AuthenticationError):
            await smtp.login(USER, "wrong password")
        await smtp.aclose()
    assert record.names == ["connected", "greeting", "tls-started", "session-aborted"]
    assert "535" in record.events[-1].reason  # type: ignore[attr-defined]
    assert "wrong password" not in repr(record.events)


async def test_refusals_inside_a_transaction_are_events_not_aborts() -> None:
    record = Recorder()
    async with make_server(auth_require_tls=False) as server, served(server, record) as smtp:
        server.reply("MAIL", "553 5.7.1 sender refused", times=1)
        with pytest.raises(SenderRefusedError):
            await smtp.send_mail(USER, ["bob@example.test"], BODY)
        server.clear_replies()
        server.reply("DATA", "451 4.3.0 try later", times=1)
        with pytest.raises(anyio_smtp.DataRefusedError):
            await smtp.send_mail(USER, ["bob@example.test"], BODY)
        server.reply("EOM", "554 5.6.0 content refused", times=1)
        with pytest.raises(anyio_smtp.DataRefusedError):
            await smtp.send_mail(USER, ["bob@example.test"], BODY)
        await smtp.send_mail(USER, ["bob@example.test"], BODY)
        await smtp.aclose()
    assert record.names == [
        "connected",
        "greeting",
        # MAIL refused; the pipelined RCPT is refused too (no transaction)
        "sender-rejected",
        "recipient-rejected",
        # DATA refused
        "sender-accepted",
        "recipient-accepted",
        "message-rejected",
        # the message itself refused
        "sender-accepted",
        "recipient-accepted",
        "message-rejected",
        # and one that goes through
        "sender-accepted",
        "recipient-accepted",
        "message-accepted",
        "quit",
    ]
    rejections = [event for event in record.events if isinstance(event, MessageRejected)]
    assert [(event.command, event.reply.code) for event in rejections] == [
        ("DATA", 451),
        ("end of data", 554),
    ]


async def test_421_aborts_once_with_the_reply_text() -> None:
    record = Recorder()
    async with make_server(auth_require_tls=False) as server:
        server.reply("RCPT", "421 4.3.2 shutting down", close=True)
        async with served(server, record) as smtp:
            with pytest.raises(ServiceUnavailableError):
                await smtp.send_mail(USER, ["bob@example.test"], BODY)
            await smtp.aclose()
    assert record.names[-1] == "session-aborted"
    assert record.names.count("session-aborted") == 1
    assert "shutting down" in record.events[-1].reason  # type: ignore[attr-defined]


async def cancelled_send(*, data_sent: bool) -> tuple[Recorder, SMTPClient, bool]:
    """``send_mail`` cancelled while it waits for a reply that never comes.

    With ``data_sent`` the server takes the whole message before it goes
    silent (the verdict is lost); without, it goes silent after MAIL, RCPT and
    DATA (nothing of the data can have gone).

    :return: the audit record, the client, and whether the stream was closed
    """
    record = Recorder()
    waiting = anyio.Event()

    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        for _ in range(3):  # MAIL, RCPT, DATA
            await peer.line()
        if data_sent:
            await peer.send("250 2.1.0 Ok", "250 2.1.5 Ok", "354 go ahead")
            await peer.data()
        waiting.set()  # and never answer
        await peer.rest()

    async with scripted(server) as stream:
        smtp = await anyio_smtp.connect_stream(stream, ehlo_domain="client.test", audit=record)
        async with anyio.create_task_group() as group:

            async def cancel_when_waiting() -> None:
                await waiting.wait()
                group.cancel_scope.cancel()

            group.start_soon(cancel_when_waiting)
            await smtp.send_mail(USER, ["bob@example.test"], BODY)
        return record, smtp, stream.closed


async def test_cancellation_aborts_once() -> None:
    record, smtp, stream_closed = await cancelled_send(data_sent=False)
    assert smtp.closed
    assert stream_closed
    assert record.names == ["connected", "greeting", "session-aborted"]
    assert record.events[-1] == SessionAborted("cancelled", record.events[-1].error)  # type: ignore[attr-defined]


async def test_a_cancellation_after_the_data_tells_the_lost_verdict() -> None:
    record, smtp, _ = await cancelled_send(data_sent=True)
    assert smtp.closed
    assert record.names == ["connected", "greeting", "session-aborted", "delivery-unknown"]
    assert record.events[3] == DeliveryUnknown(USER, ("bob@example.test",), record.events[3].reason)  # type: ignore[attr-defined]


async def test_a_cancellation_before_the_data_ends_tells_no_lost_verdict() -> None:
    record, _, _ = await cancelled_send(data_sent=False)
    assert "delivery-unknown" not in record.names


async def test_exit_by_exception_aborts_with_the_reason() -> None:
    record = Recorder()
    client_end, server_end = memory_stream_pair()
    async with SMTPTestServer() as server, anyio.create_task_group() as group:
        group.start_soon(server.serve_stream, server_end)
        with pytest.raises(LookupError):
            async with anyio_smtp.connect_stream(
                client_end, ehlo_domain="client.test", audit=record
            ):
                raise LookupError("caller gave up")
    assert record.names == ["connected", "greeting", "session-aborted"]
    assert record.events[-1] == SessionAborted("caller gave up", "LookupError")


async def test_async_hook_and_failing_hook(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    async def hook(event: AuditEvent) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(event.name)
        if event.name == "message-accepted":
            raise RuntimeError("audit store is down")

    caplog.set_level(logging.ERROR, logger="anyio_smtp")
    async with SMTPTestServer() as server, served(server, hook) as smtp:
        result = await smtp.send_mail(USER, ["bob@example.test"], BODY)
        await smtp.aclose()
    # The hook failed, but the message was delivered and is reported as such.
    assert result.reply.code == 250
    assert server.messages
    assert seen[-2:] == ["message-accepted", "quit"]
    assert any("audit hook failed" in record.getMessage() for record in caplog.records)

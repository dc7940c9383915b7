"""Opening and closing sessions: greeting, EHLO/HELO, context manager and await forms."""

from __future__ import annotations

import functools

import anyio
import pytest

import anyio_smtp
from anyio_smtp import (
    InvalidArgumentError,
    ReplyError,
    ServerDisconnectedError,
    SessionClosedError,
    SessionState,
)
from anyio_smtp._connect import tls_for_port
from anyio_smtp._protocol.commands import check_domain
from anyio_smtp.testing import SMTPTestServer, throwaway_tls
from tests.client.scripted import PIPELINING_EHLO, Peer, scripted
from tests.tools import unavailable


async def test_greeting_and_ehlo_fill_capabilities() -> None:
    async def server(peer: Peer) -> None:
        await peer.send("220-mx.test ESMTP", "220 second greeting line")
        assert await peer.lone("EHLO ") == "EHLO client.test"
        await peer.send("250-mx.test hello", "250-SIZE 1000", "250-AUTH PLAIN LOGIN", "250 ")
        await peer.quit()

    async with scripted(server) as stream:
        async with anyio_smtp.connect_stream(stream, ehlo_domain="client.test") as smtp:
            assert smtp.state is SessionState.READY
            assert "size" in smtp.capabilities
            assert smtp.capabilities.size_limit == 1000
            assert smtp.capabilities.auth_mechanisms == {"PLAIN", "LOGIN"}
            assert smtp.capabilities.greeting == "mx.test hello"
            assert not smtp.tls
        assert smtp.closed
        assert stream.closed


async def test_await_form_and_aclose_sends_quit() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        await peer.quit()

    async with scripted(server) as stream:
        smtp = await anyio_smtp.connect_stream(stream, ehlo_domain="client.test")
        assert smtp.capabilities.greeting == "mx.test"
        await smtp.aclose()
        assert smtp.closed
        assert stream.closed
        with pytest.raises(SessionClosedError):
            await smtp.noop()
        await smtp.aclose()  # closing twice is fine


async def test_default_ehlo_domain_needs_no_lookup() -> None:
    seen: list[str] = []

    async def server(peer: Peer) -> None:
        await peer.send("220 mx.test")
        seen.append(await peer.lone("EHLO "))
        await peer.send("250 mx.test")
        await peer.quit()

    async with scripted(server) as stream, anyio_smtp.connect_stream(stream) as smtp:
        assert smtp.ehlo_domain
    domain = seen[0].removeprefix("EHLO ")
    assert domain == smtp.ehlo_domain
    # Whatever it picked, it is a valid EHLO argument.
    check_domain(domain)


async def test_helo_fallback_when_ehlo_is_not_recognised() -> None:
    async def server(peer: Peer) -> None:
        await peer.send("220 old.test")
        await peer.lone("EHLO ")
        await peer.send("502 command not implemented")
        await peer.lone("HELO ")
        await peer.send("250 old.test")
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain="client.test") as smtp,
    ):
        assert len(smtp.capabilities) == 0
        assert smtp.capabilities.greeting == "old.test"


async def test_refusing_greeting_closes_without_a_command() -> None:
    async def server(peer: Peer) -> None:
        await peer.send("554 5.3.2 no service for you")
        assert await peer.rest() == b""

    async with scripted(server) as stream:
        with pytest.raises(ReplyError) as caught:
            await anyio_smtp.connect_stream(stream, ehlo_domain="client.test")
        assert caught.value.reply.code == 554
        assert caught.value.command == "greeting"
        assert "554" in str(caught.value)
        assert stream.closed


async def test_transient_ehlo_refusal_fails_the_connection() -> None:
    async def server(peer: Peer) -> None:
        await peer.send("220 mx.test")
        await peer.lone("EHLO ")
        await peer.send("451 4.3.0 try later")
        assert await peer.rest() == b""

    async with scripted(server) as stream:
        with pytest.raises(ReplyError) as caught:
            await anyio_smtp.connect_stream(stream, ehlo_domain="client.test")
        assert caught.value.is_transient
        assert stream.closed


async def test_server_closing_before_greeting() -> None:
    async def server(peer: Peer) -> None:
        pass  # closes at once

    async with scripted(server) as stream:
        with pytest.raises(ServerDisconnectedError, match="greeting"):
            await anyio_smtp.connect_stream(stream, ehlo_domain="client.test")
        assert stream.closed


async def test_exit_by_exception_closes_without_quit_and_keeps_the_exception() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet()
        assert await peer.rest() == b""  # no QUIT

    async with scripted(server) as stream:
        with pytest.raises(KeyError, match="boom"):
            async with anyio_smtp.connect_stream(stream, ehlo_domain="client.test"):
                raise KeyError("boom")
        assert stream.closed


def test_arguments_are_checked_at_call_time() -> None:
    with pytest.raises(InvalidArgumentError):
        anyio_smtp.connect("", 25)
    with pytest.raises(InvalidArgumentError):
        anyio_smtp.connect("127.0.0.1", 0)
    with pytest.raises(InvalidArgumentError):
        anyio_smtp.connect("127.0.0.1", 25, timeout=-1)
    with pytest.raises(InvalidArgumentError):
        anyio_smtp.connect_starttls("127.0.0.1", ehlo_domain="bad name\r\nMAIL")
    with pytest.raises(InvalidArgumentError):
        anyio_smtp.connect("127.0.0.1", ssl_context="not a context")  # type: ignore[arg-type]


async def test_connect_refused_is_a_connect_error() -> None:
    # Find a loopback port nobody listens on by binding and closing a listener.
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    with pytest.raises(anyio_smtp.ConnectError) as caught:
        await anyio_smtp.connect("127.0.0.1", port, timeout=5)
    assert isinstance(caught.value, ConnectionError)
    assert caught.value.is_transient


# -- implicit TLS by port (RFC 8314) -----------------------------------------------------

SERVER_TLS, CLIENT_TLS = throwaway_tls("mx.test")


@pytest.mark.parametrize(
    ("port", "tls", "expected"),
    [
        (465, None, True),
        (465, False, False),
        (465, True, True),
        (25, None, False),
        (587, None, False),
        (2525, None, False),
        (2465, True, True),
        (25, False, False),
    ],
)
def test_tls_goes_by_the_port_unless_given(port: int, tls: bool | None, expected: bool) -> None:
    assert tls_for_port(port, tls) is expected


def test_tls_must_be_a_bool_or_none() -> None:
    with pytest.raises(InvalidArgumentError):
        anyio_smtp.connect("127.0.0.1", 465, tls="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        anyio_smtp.connect("127.0.0.1", 465, tls=1)  # type: ignore[arg-type]


async def test_tls_unset_on_another_port_is_plain() -> None:
    async with (
        SMTPTestServer() as server,
        anyio_smtp.connect(server.host, server.port, ehlo_domain="client.test") as smtp,
    ):
        assert not smtp.tls
        await smtp.noop()


async def test_tls_unset_on_port_465_starts_with_the_handshake() -> None:
    """``connect(host, 465)`` speaks TLS at once instead of waiting for a greeting."""
    try:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=465)
    except OSError as exc:
        unavailable(f"can not listen on 127.0.0.1:465 here: {exc}")
    async with (
        listener,
        SMTPTestServer(tls_context=SERVER_TLS) as server,
        anyio.create_task_group() as group,
    ):
        group.start_soon(listener.serve, server.serve_stream, group)
        # A short greeting timeout: a client waiting for a plaintext greeting fails fast.
        async with anyio_smtp.connect(
            "127.0.0.1", 465, ssl_context=CLIENT_TLS, tls_hostname="mx.test", timeout=10
        ) as smtp:
            assert smtp.tls
            await smtp.send_mail(
                "a@example.test", ["b@example.test"], b"Subject: 465\r\n\r\nhi\r\n"
            )
        # The pool forwards nothing of its own: its factory decides, the same way.
        factory = functools.partial(
            anyio_smtp.connect, "127.0.0.1", 465, ssl_context=CLIENT_TLS, tls_hostname="mx.test"
        )
        async with anyio_smtp.SMTPPool(factory, max_connections=1) as pool:
            await pool.send_mail(
                "a@example.test", ["c@example.test"], b"Subject: pool\r\n\r\nhi\r\n"
            )
        # tls=False is plaintext even on port 465: the server waits for a handshake.
        with pytest.raises(anyio_smtp.SMTPTimeoutError):
            await anyio_smtp.connect("127.0.0.1", 465, tls=False, timeout=0.5)
        group.cancel_scope.cancel()
    assert [m.recipients for m in server.messages] == [("b@example.test",), ("c@example.test",)]

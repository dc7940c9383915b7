"""DSN and REQUIRETLS on the wire: sent when advertised, refused before MAIL when not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

import anyio_smtp
from anyio_smtp import DSN, ExtensionNotSupportedError, Recipient
from anyio_smtp.testing import MemoryByteStream, SMTPTestServer, memory_stream_pair, throwaway_tls

BODY = b"Subject: dsn\r\n\r\nhello\r\n"
SERVER_TLS, CLIENT_TLS = throwaway_tls("mx.test")


@asynccontextmanager
async def session(
    server: SMTPTestServer,
) -> AsyncIterator[tuple[anyio_smtp.SMTPClient, MemoryByteStream]]:
    client_end, server_end = memory_stream_pair()
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve_stream, server_end)
        async with anyio_smtp.connect_stream(
            client_end, ehlo_domain="client.test", tls_hostname="mx.test"
        ) as smtp:
            yield smtp, client_end


async def test_dsn_parameters_are_sent_when_advertised() -> None:
    extensions = ["PIPELINING", "8BITMIME", "DSN", "ENHANCEDSTATUSCODES"]
    async with SMTPTestServer(extensions=extensions) as server:
        async with session(server) as (smtp, _stream):
            result = await smtp.send_mail(
                "bounce@example.test",
                ["a@example.test", Recipient("b@example.test", notify=frozenset({"NEVER"}))],
                BODY,
                dsn=DSN(
                    ret="HDRS",
                    envid="batch-7+x",
                    notify=frozenset({"FAILURE", "DELAY"}),
                    orcpt=True,
                ),
            )
        assert result.accepted == ("a@example.test", "b@example.test")
    (received,) = server.messages
    assert received.mail_options == ("RET=HDRS", "ENVID=batch-7+2Bx")
    assert received.rcpt_options == (
        ("NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;a@example.test"),
        ("NOTIFY=NEVER", "ORCPT=rfc822;b@example.test"),
    )


async def test_dsn_not_advertised_is_refused_before_mail() -> None:
    async with SMTPTestServer(extensions=["PIPELINING", "8BITMIME"]) as server:
        async with session(server) as (smtp, stream):
            written = len(stream.sent)
            with pytest.raises(ExtensionNotSupportedError) as caught:
                await smtp.send_mail(
                    "a@example.test", ["b@example.test"], BODY, dsn=DSN(notify=frozenset({"NEVER"}))
                )
            assert caught.value.name == "DSN"
            assert len(stream.sent) == written
            # The session is untouched: the same message without DSN goes through.
            await smtp.send_mail("a@example.test", ["b@example.test"], BODY)
    assert len(server.messages) == 1


async def test_requiretls_over_tls_when_advertised() -> None:
    extensions = ["PIPELINING", "8BITMIME", "STARTTLS", "REQUIRETLS"]
    async with SMTPTestServer(extensions=extensions, starttls_context=SERVER_TLS) as server:
        async with session(server) as (smtp, stream):
            written = len(stream.sent)
            with pytest.raises(ExtensionNotSupportedError, match="not encrypted"):
                await smtp.send_mail("a@example.test", ["b@example.test"], BODY, require_tls=True)
            assert len(stream.sent) == written
            await smtp.starttls(ssl_context=CLIENT_TLS)
            await smtp.send_mail("a@example.test", ["b@example.test"], BODY, require_tls=True)
    (received,) = server.messages
    assert received.mail_options == ("REQUIRETLS",)
    assert received.tls


async def test_requiretls_not_advertised_is_never_silently_dropped() -> None:
    extensions = ["PIPELINING", "8BITMIME", "STARTTLS"]
    async with SMTPTestServer(extensions=extensions, starttls_context=SERVER_TLS) as server:
        async with session(server) as (smtp, _stream):
            await smtp.starttls(ssl_context=CLIENT_TLS)
            with pytest.raises(ExtensionNotSupportedError) as caught:
                await smtp.send_mail("a@example.test", ["b@example.test"], BODY, require_tls=True)
            assert caught.value.name == "REQUIRETLS"
    assert server.messages == []


async def test_batch_options_apply_to_every_message() -> None:
    extensions = ["PIPELINING", "8BITMIME", "DSN"]
    async with SMTPTestServer(extensions=extensions) as server:
        async with session(server) as (smtp, _stream):
            items = [("a@example.test", [f"r{i}@example.test"], BODY) for i in range(3)]
            outcomes = [o async for o in smtp.send_many(items, dsn=DSN(ret="FULL"))]
    assert all(isinstance(o, anyio_smtp.SendResult) for o in outcomes)
    assert [m.mail_options for m in server.messages] == [("RET=FULL",)] * 3

"""STARTTLS over in-memory streams: the upgrade and every way it must fail closed."""

from __future__ import annotations

import datetime
import ssl

import anyio
import pytest
from anyio.streams.tls import TLSStream

import anyio_smtp
from anyio_smtp import (
    ExtensionNotSupportedError,
    InsecureAuthError,
    LocalProtocolError,
    ReplyError,
    SessionClosedError,
    StartTLSInjectionError,
    TLSCertificateError,
    TLSError,
)
from anyio_smtp.testing import memory_stream_pair
from tests.client.scripted import BASIC_EHLO, Peer, scripted
from tests.tls import client_context, server_context

STARTTLS_EHLO = ("250-mx.test", "250-8BITMIME", "250-STARTTLS", "250 ENHANCEDSTATUSCODES")
AFTER_TLS_EHLO = ("250-mx.test", "250-AUTH PLAIN", "250 ENHANCEDSTATUSCODES")


async def refused_handshake(peer: Peer, context: ssl.SSLContext) -> None:
    """The server side of a handshake the client aborts (it may fail at either step)."""

    async def handshake_then_read() -> None:
        await peer.start_tls(context)
        await peer.stream.receive()

    with pytest.raises((anyio.BrokenResourceError, anyio.EndOfStream, OSError)):
        await handshake_then_read()


def after(sent: bytes, marker: bytes) -> bytes:
    """What the client sent after ``marker`` (which must occur once)."""
    assert sent.count(marker) == 1
    return sent.split(marker, 1)[1]


async def test_starttls_upgrades_forgets_capabilities_and_says_ehlo_again() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(STARTTLS_EHLO)
        await peer.lone("STARTTLS")
        await peer.send("220 2.0.0 Ready to start TLS")
        await peer.start_tls(server_context("mx.test"))
        assert await peer.lone("EHLO ") == "EHLO client.test"
        await peer.send(*AFTER_TLS_EHLO)
        await peer.quit()

    async with scripted(server) as stream:
        smtp = await anyio_smtp.connect_stream(
            stream, ehlo_domain="client.test", tls_hostname="mx.test"
        )
        assert not smtp.tls
        assert "STARTTLS" in smtp.capabilities
        await smtp.starttls(ssl_context=client_context())
        assert smtp.tls
        assert smtp.tls_version is not None
        assert "STARTTLS" not in smtp.capabilities  # the pre-TLS list is gone
        assert "8BITMIME" not in smtp.capabilities
        assert smtp.capabilities.auth_mechanisms == {"PLAIN"}
        with pytest.raises(LocalProtocolError):
            await smtp.starttls(ssl_context=client_context())
        await smtp.aclose()
    # Nothing but the TLS handshake follows STARTTLS in clear text.
    assert after(bytes(stream.sent), b"STARTTLS\r\n")[:1] == b"\x16"


async def test_starttls_not_advertised_closes_with_nothing_sent() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(BASIC_EHLO)
        assert await peer.rest() == b""

    async with scripted(server) as stream:
        smtp = await anyio_smtp.connect_stream(
            stream, ehlo_domain="client.test", tls_hostname="mx.test"
        )
        with pytest.raises(ExtensionNotSupportedError) as caught:
            await smtp.starttls(ssl_context=client_context())
        assert caught.value.name == "STARTTLS"
        assert smtp.closed
        assert stream.closed
        with pytest.raises(SessionClosedError):
            await smtp.login("user", "password")
    assert after(bytes(stream.sent), b"EHLO client.test\r\n") == b""


@pytest.mark.parametrize(
    "reply", ["454 4.7.0 TLS not available", "502 5.5.1 no", "250 2.0.0 ok", "221 2.0.0 bye"]
)
async def test_starttls_answered_without_220_closes_with_nothing_else_sent(reply: str) -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(STARTTLS_EHLO)
        await peer.lone("STARTTLS")
        await peer.send(reply)
        assert await peer.rest() == b""

    async with scripted(server) as stream:
        smtp = await anyio_smtp.connect_stream(
            stream, ehlo_domain="client.test", tls_hostname="mx.test"
        )
        with pytest.raises(ReplyError) as caught:
            await smtp.starttls(ssl_context=client_context())
        assert caught.value.command == "STARTTLS"
        assert caught.value.reply.code == int(reply[:3])
        assert reply[:3] in str(caught.value)
        assert smtp.closed
        assert stream.closed
    assert after(bytes(stream.sent), b"STARTTLS\r\n") == b""


@pytest.mark.parametrize(
    "injected", [b"X\r\n", b"250-PIPELINING\r\n250 AUTH PLAIN\r\n", b"5"], ids=repr
)
async def test_bytes_after_220_refuse_the_upgrade(injected: bytes) -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(STARTTLS_EHLO)
        await peer.lone("STARTTLS")
        await peer.send_raw(b"220 2.0.0 go ahead\r\n" + injected)
        assert await peer.rest() == b""

    async with scripted(server) as stream:
        smtp = await anyio_smtp.connect_stream(
            stream, ehlo_domain="client.test", tls_hostname="mx.test"
        )
        with pytest.raises(StartTLSInjectionError) as caught:
            await smtp.starttls(ssl_context=client_context())
        assert caught.value.byte_count == len(injected)
        assert isinstance(caught.value, anyio_smtp.RemoteProtocolError)
        assert smtp.closed
        assert stream.closed
    # Not even a TLS ClientHello was sent.
    assert after(bytes(stream.sent), b"STARTTLS\r\n") == b""


@pytest.mark.parametrize(
    ("identity", "trusted"),
    [("mx.test", False), ("other.test", True)],
    ids=["untrusted-ca", "wrong-host-name"],
)
async def test_certificate_failures_are_typed_and_nothing_follows(
    identity: str, trusted: bool
) -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(STARTTLS_EHLO)
        await peer.lone("STARTTLS")
        await peer.send("220 2.0.0 Ready")
        await refused_handshake(peer, server_context(identity))

    # The default context trusts only the system's CAs, not the test CA.
    context = client_context() if trusted else None
    async with scripted(server) as stream:
        with pytest.raises(TLSCertificateError) as caught:
            await _starttls(stream, context)
        assert isinstance(caught.value, TLSError)
        assert "certificate" in str(caught.value)
        assert stream.closed
    tail = after(bytes(stream.sent), b"STARTTLS\r\n")
    assert tail[:1] == b"\x16"  # the ClientHello
    for command in (b"EHLO", b"AUTH", b"MAIL", b"QUIT"):
        assert command not in tail


async def _starttls(stream: anyio.abc.ByteStream, context: ssl.SSLContext | None) -> None:
    smtp = await anyio_smtp.connect_stream(
        stream, ehlo_domain="client.test", tls_hostname="mx.test"
    )
    await smtp.starttls(ssl_context=context)


async def test_expired_certificate_is_refused() -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = server_context(
        "mx.test",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )

    async def server(peer: Peer) -> None:
        await peer.greet(STARTTLS_EHLO)
        await peer.lone("STARTTLS")
        await peer.send("220 2.0.0 Ready")
        await refused_handshake(peer, expired)

    async with scripted(server) as stream:
        with pytest.raises(TLSCertificateError, match="expired"):
            await _starttls(stream, client_context())


async def test_server_closing_during_handshake_is_a_tls_error() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(STARTTLS_EHLO)
        await peer.lone("STARTTLS")
        await peer.send("220 2.0.0 Ready")
        await peer.stream.receive()  # the ClientHello; then hang up

    async with scripted(server) as stream:
        with pytest.raises(TLSError):
            await _starttls(stream, client_context())
        assert stream.closed


async def test_connect_stream_over_an_already_encrypted_stream() -> None:
    client_end, server_end = memory_stream_pair()

    async def serve() -> None:
        peer = Peer(server_end)
        try:
            await peer.start_tls(server_context("mx.test"))
            await peer.greet(("250-mx.test", "250 AUTH PLAIN"))
            await peer.expect("AUTH PLAIN ")
            await peer.send("235 2.7.0 ok")
            await peer.quit()
        finally:
            await peer.close()

    async with anyio.create_task_group() as group:
        group.start_soon(serve)
        tls_stream = await TLSStream.wrap(
            client_end, hostname="mx.test", ssl_context=client_context(), standard_compatible=False
        )
        async with anyio_smtp.connect_stream(tls_stream, ehlo_domain="client.test") as smtp:
            assert smtp.tls
            # TLS is already on, so AUTH needs no opt-in.
            await smtp.login("user", "secret")
            assert smtp.authenticated


async def test_auth_refused_on_plaintext_until_tls() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(("250-mx.test", "250-STARTTLS", "250 AUTH PLAIN"))
        await peer.lone("STARTTLS")
        await peer.send("220 ready")
        await peer.start_tls(server_context("mx.test"))
        await peer.lone("EHLO ")
        await peer.send("250-mx.test", "250 AUTH PLAIN")
        await peer.lone("AUTH PLAIN ")
        await peer.send("235 ok")
        await peer.quit()

    async with scripted(server) as stream:
        smtp = await anyio_smtp.connect_stream(
            stream, ehlo_domain="client.test", tls_hostname="mx.test"
        )
        written = len(stream.sent)
        with pytest.raises(InsecureAuthError):
            await smtp.login("user", "secret")
        assert len(stream.sent) == written  # not a byte
        assert not smtp.closed
        await smtp.starttls(ssl_context=client_context())
        await smtp.login("user", "secret")
        await smtp.aclose()

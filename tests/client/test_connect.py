"""Opening and closing sessions: greeting, EHLO/HELO, context manager and await forms."""

from __future__ import annotations

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
from anyio_smtp._protocol.commands import check_domain
from tests.client.scripted import PIPELINING_EHLO, Peer, scripted


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

"""Over TCP on Linux, the client acknowledges replies at once (TCP_QUICKACK).

A server that writes each reply of a pipelined group separately and leaves
Nagle's algorithm on holds its second reply until the first is acknowledged;
a delayed ACK then stalls every group by up to 40 ms.  Linux leaves quick-ACK
mode whenever the client sends (it reads the exchange as interactive), so the
client must ask again before each wait.  ``getsockopt(TCP_QUICKACK)`` reads
whether the socket is in quick-ACK mode now: after a command and its reply it
reads 0 unless the client asked again.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from anyio_smtp._timeouts import Timeouts
from anyio_smtp._transport import Transport, _quickack_socket, open_transport
from anyio_smtp.testing import SMTPTestServer, memory_stream_pair

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="TCP_QUICKACK is a Linux socket option"
)


def quickack(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK)


@asynccontextmanager
async def greeted_transport() -> AsyncIterator[tuple[Transport, socket.socket]]:
    """A transport to the test server, its greeting read, and the socket under it."""
    async with SMTPTestServer() as server:
        transport = await open_transport(server.host, server.port, timeouts=Timeouts())
        try:
            found = _quickack_socket(transport._stream)
            assert found is not None
            await transport.receive(action="reading the greeting")
            yield transport, found[0]
        finally:
            await transport.aclose()


@linux_only
async def test_each_wait_for_replies_asks_for_quick_acks() -> None:
    async with greeted_transport() as (transport, sock):
        for _ in range(3):
            await transport.send(b"NOOP\r\n", action="sending", timeout=5)
            assert (await transport.receive(action="reading")).startswith(b"250")
            assert quickack(sock) == 1


@linux_only
async def test_sending_leaves_quick_ack_mode() -> None:
    # Why the client asks before every wait: a send right after a receive
    # makes Linux delay ACKs again.
    async with greeted_transport() as (transport, sock):
        assert quickack(sock) == 1
        await transport.send(b"NOOP\r\n", action="sending", timeout=5)
        assert quickack(sock) == 0
        await transport.receive(action="reading")
        assert quickack(sock) == 1


async def test_streams_without_a_tcp_socket_are_left_alone() -> None:
    client_stream, server_stream = memory_stream_pair()
    assert _quickack_socket(client_stream) is None
    await client_stream.aclose()
    await server_stream.aclose()

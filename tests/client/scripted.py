"""A scripted SMTP server for client tests: the test writes the server's side line by line.

``scripted(script)`` runs ``script(peer)`` in a task group on the server end of
an in-memory stream pair and yields the client end.  The peer reads the
client's bytes and writes whatever the test says, so tests can produce replies
no real server would send (and see exactly what the client wrote).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import anyio
from anyio.abc import ByteStream
from anyio.streams.tls import TLSStream

from anyio_smtp.testing import MemoryByteStream, memory_stream_pair

#: What a plain ESMTP server advertises in these tests.
BASIC_EHLO = ("250-mx.test", "250-8BITMIME", "250 ENHANCEDSTATUSCODES")
PIPELINING_EHLO = ("250-mx.test", "250-PIPELINING", "250-8BITMIME", "250 ENHANCEDSTATUSCODES")


class Peer:
    """The server end of one connection, driven by a test."""

    def __init__(self, stream: MemoryByteStream) -> None:
        self.raw = stream
        self.stream: ByteStream = stream
        self.buffer = b""
        #: Every command line received, without CRLF.
        self.lines: list[str] = []

    async def send(self, *lines: str) -> None:
        """Write reply lines, each followed by CRLF, in one write."""
        await self.stream.send("".join(f"{line}\r\n" for line in lines).encode())

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send(data)

    async def _fill(self) -> None:
        self.buffer += await self.stream.receive()

    async def line(self) -> str:
        """Read the next command line (without its CRLF)."""
        while b"\r\n" not in self.buffer:
            await self._fill()
        raw, self.buffer = self.buffer.split(b"\r\n", 1)
        text = raw.decode("utf-8")
        self.lines.append(text)
        return text

    async def expect(self, prefix: str) -> str:
        """Read a line and check that it starts with ``prefix``."""
        line = await self.line()
        assert line.startswith(prefix), f"expected {prefix!r}, got {line!r}"
        return line

    async def lone(self, prefix: str) -> str:
        """Read a line that must have come alone (no command pipelined after it)."""
        line = await self.expect(prefix)
        assert self.buffer == b"", f"{line!r} was followed by {self.buffer!r} before the reply"
        return line

    async def data(self) -> bytes:
        """Read message data up to and including the terminator; return it raw."""
        while True:
            # The data starts right after the DATA line; the terminator may be the
            # first line (empty message) or follow a CRLF.
            if self.buffer.startswith(b".\r\n"):
                end = 3
                break
            index = self.buffer.find(b"\r\n.\r\n")
            if index != -1:
                end = index + 5
                break
            await self._fill()
        raw, self.buffer = self.buffer[:end], self.buffer[end:]
        return raw

    async def greet(self, ehlo: Sequence[str] = BASIC_EHLO) -> None:
        """Greeting, then answer EHLO with ``ehlo``."""
        await self.send("220 mx.test ESMTP ready")
        await self.lone("EHLO ")
        await self.send(*ehlo)

    async def start_tls(self, ssl_context: ssl.SSLContext) -> None:
        """Do the server side of the TLS handshake on this connection."""
        self.stream = await TLSStream.wrap(
            self.stream, server_side=True, ssl_context=ssl_context, standard_compatible=False
        )

    async def rest(self) -> bytes:
        """Read until the client closes; return everything received after now."""
        data, self.buffer = self.buffer, b""
        try:
            while True:
                data += await self.stream.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            return data

    async def quit(self) -> None:
        """Expect QUIT, answer 221 and check that nothing else arrives."""
        await self.lone("QUIT")
        await self.send("221 2.0.0 Bye")
        assert await self.rest() == b""

    async def close(self) -> None:
        await self.stream.aclose()


Script = Callable[[Peer], Awaitable[None]]


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[MemoryByteStream]:
    """Run ``script`` as the server; yield the client's end of the connection.

    The block waits for the script to finish, so assertions inside it count.
    """
    client_stream, server_stream = memory_stream_pair()
    peer = Peer(server_stream)

    async def run() -> None:
        try:
            await script(peer)
        finally:
            await peer.close()

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        yield client_stream

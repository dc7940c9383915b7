"""An in-memory byte stream pair, for running SMTP sessions without sockets."""

from __future__ import annotations

import math

import anyio
from anyio.abc import ByteStream
from anyio.lowlevel import checkpoint
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ("MemoryByteStream", "memory_stream_pair")


class MemoryByteStream(ByteStream):
    """One end of a bidirectional in-memory byte stream (see :func:`memory_stream_pair`).

    Sending never blocks (the buffer is unbounded). :meth:`send_eof` makes the peer's
    :meth:`receive` raise :exc:`anyio.EndOfStream` once it has read everything;
    :meth:`aclose` additionally makes the peer's :meth:`send` raise
    :exc:`anyio.BrokenResourceError`.  Each end records what it sent (``sent``), in
    how many ``send()`` calls (``writes``), and whether it was closed (``closed``),
    so a test can check exactly what a client wrote.

    :param send_stream: where bytes written to this end go
    :param receive_stream: where bytes read from this end come from
    """

    def __init__(
        self,
        send_stream: MemoryObjectSendStream[bytes],
        receive_stream: MemoryObjectReceiveStream[bytes],
    ) -> None:
        self._send_stream = send_stream
        self._receive_stream = receive_stream
        self._pending = b""
        #: Every byte sent from this end, in order.
        self.sent: bytearray = bytearray()
        #: How many non-empty ``send()`` calls this end made.
        self.writes: int = 0
        #: Whether :meth:`aclose` was called.
        self.closed: bool = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Receive at most ``max_bytes`` bytes.

        :param max_bytes: upper bound on the size of the returned chunk
        :return: a non-empty chunk of bytes
        :raises anyio.EndOfStream: when the peer has finished sending
        """
        if max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")
        if not self._pending:
            self._pending = await self._receive_stream.receive()
        chunk, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return chunk

    async def send(self, item: bytes) -> None:
        """Send bytes to the peer.

        :param item: the bytes to send (an empty item is ignored)
        """
        if item:
            self.writes += 1
            self.sent += item
            await self._send_stream.send(bytes(item))
        else:
            await checkpoint()

    async def send_eof(self) -> None:
        """Tell the peer that nothing more will be sent."""
        self._send_stream.close()
        await checkpoint()

    async def aclose(self) -> None:
        """Close both directions of this end."""
        self.closed = True
        self._send_stream.close()
        self._receive_stream.close()
        await checkpoint()


def memory_stream_pair() -> tuple[MemoryByteStream, MemoryByteStream]:
    """Create two connected in-memory byte streams.

    Whatever is sent on one end is received on the other. Useful with
    :meth:`SMTPTestServer.serve_stream <anyio_smtp.testing.SMTPTestServer.serve_stream>`.
    Both ends must be closed when done.

    :return: ``(a, b)``, two connected ends
    """
    a_to_b_send, a_to_b_receive = anyio.create_memory_object_stream[bytes](math.inf)
    b_to_a_send, b_to_a_receive = anyio.create_memory_object_stream[bytes](math.inf)
    return (
        MemoryByteStream(a_to_b_send, b_to_a_receive),
        MemoryByteStream(b_to_a_send, a_to_b_receive),
    )

"""An in-memory, connected pair of anyio byte streams for client tests."""

from __future__ import annotations

import anyio
from anyio.abc import ByteStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream


class MemoryByteStream(ByteStream):
    """One end of an in-memory byte pipe pair; bytes sent arrive at the other end."""

    def __init__(
        self, send: MemoryObjectSendStream[bytes], receive: MemoryObjectReceiveStream[bytes]
    ) -> None:
        self._send = send
        self._receive = receive
        self._leftover = b""
        #: Every byte this end has sent, in order.
        self.sent = bytearray()
        #: How many send() calls this end made.
        self.writes = 0
        self.closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self._leftover:
            try:
                self._leftover = await self._receive.receive()
            except anyio.EndOfStream:
                raise
            except anyio.ClosedResourceError:
                raise
        data, self._leftover = self._leftover[:max_bytes], self._leftover[max_bytes:]
        return data

    async def send(self, item: bytes) -> None:
        self.writes += 1
        self.sent += item
        try:
            await self._send.send(bytes(item))
        except anyio.BrokenResourceError:
            raise

    async def send_eof(self) -> None:
        await self._send.aclose()

    async def aclose(self) -> None:
        self.closed = True
        await self._send.aclose()
        await self._receive.aclose()


def memory_stream_pair() -> tuple[MemoryByteStream, MemoryByteStream]:
    """Return (client end, server end)."""
    to_server_send, to_server_receive = anyio.create_memory_object_stream[bytes](100)
    to_client_send, to_client_receive = anyio.create_memory_object_stream[bytes](100)
    client = MemoryByteStream(to_server_send, to_client_receive)
    server = MemoryByteStream(to_client_send, to_server_receive)
    return client, server

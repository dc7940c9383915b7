"""A fast SMTP sink: accepts every message and throws it away, counting.

Used by the benchmark when Postfix's ``smtp-sink`` is not installed.  It
advertises PIPELINING, 8BITMIME, SIZE, ENHANCEDSTATUSCODES, SMTPUTF8 and, with
``--chunking``, CHUNKING.  All the replies to what one read brought are
written in one go (as a pipelining server must), and message data is scanned
for the terminator without keeping it: memory stays flat whatever the
message size.

Run as a program it prints its port on the first line of its output, then
serves until SIGTERM/SIGINT or until its standard input is closed; at the end
it prints the counters (``sessions=... messages=... octets=...``) on stderr::

    python benchmarks/sink.py [--port 2525] [--chunking]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass
from typing import Final

#: Longest command line accepted (RFC 5321 §4.5.3.1.4 says 512 octets; be generous).
MAX_LINE: Final = 4096
END_OF_DATA: Final = b"\r\n.\r\n"


@dataclass
class Counters:
    sessions: int = 0
    messages: int = 0
    octets: int = 0


class _Session(asyncio.Protocol):
    def __init__(self, counters: Counters, *, chunking: bool) -> None:
        self._counters = counters
        self._chunking = chunking
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._mode = "command"  # or "data" or "bdat"
        self._bdat_left = 0
        self._bdat_last = False
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._counters.sessions += 1
        transport.write(b"220 localhost ESMTP benchmark sink\r\n")

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        buffer = self._buffer + data if self._buffer else data
        replies: list[bytes] = []
        while (buffer or self._mode == "bdat") and not self._closing:
            if self._mode == "data":
                end = buffer.find(END_OF_DATA)
                if end < 0:
                    # Keep only what could be the start of the terminator.
                    self._counters.octets += max(len(buffer) - 4, 0)
                    buffer = buffer[-4:]
                    break
                self._counters.octets += end
                self._counters.messages += 1
                replies.append(b"250 2.0.0 Ok: queued\r\n")
                buffer = buffer[end + len(END_OF_DATA) :]
                self._mode = "command"
            elif self._mode == "bdat":
                take = min(self._bdat_left, len(buffer))
                self._bdat_left -= take
                self._counters.octets += take
                buffer = buffer[take:]
                if self._bdat_left:
                    break  # (an empty chunk, BDAT 0, is answered at once)
                self._mode = "command"
                if self._bdat_last:
                    self._counters.messages += 1
                    replies.append(b"250 2.0.0 Ok: queued\r\n")
                else:
                    replies.append(b"250 2.0.0 Ok: chunk received\r\n")
            else:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_LINE:
                        replies.append(b"500 5.5.2 Line too long\r\n")
                        buffer = b""
                    break
                line, buffer = buffer[:end], buffer[end + 2 :]
                replies.append(self._command(line))
                if self._mode == "data":
                    # The data starts right after DATA's line: a CRLF before it
                    # lets an empty message (a lone ".") be found too.
                    buffer = b"\r\n" + buffer
        self._buffer = buffer
        if replies and self._transport is not None:
            self._transport.write(b"".join(replies))
            if self._closing:
                self._transport.close()

    def _command(self, line: bytes) -> bytes:
        verb = line[:4].upper()
        if verb == b"MAIL":
            return b"250 2.1.0 Ok\r\n"
        if verb == b"RCPT":
            return b"250 2.1.5 Ok\r\n"
        if verb == b"DATA":
            self._mode = "data"
            return b"354 End data with <CR><LF>.<CR><LF>\r\n"
        if verb == b"BDAT" and self._chunking:
            parts = line.split()
            try:
                self._bdat_left = int(parts[1])
            except (IndexError, ValueError):
                return b"501 5.5.4 Syntax: BDAT size [LAST]\r\n"
            self._bdat_last = len(parts) > 2 and parts[2].upper() == b"LAST"
            self._mode = "bdat"
            return b""  # answered once the chunk is in
        if verb == b"EHLO":
            extensions = [
                b"localhost",
                b"PIPELINING",
                b"8BITMIME",
                b"SIZE 0",
                b"ENHANCEDSTATUSCODES",
                b"SMTPUTF8",
            ]
            if self._chunking:
                extensions.append(b"CHUNKING")
            last = len(extensions) - 1
            return b"".join(
                b"250" + (b" " if index == last else b"-") + text + b"\r\n"
                for index, text in enumerate(extensions)
            )
        if verb in (b"HELO", b"RSET", b"NOOP"):
            return b"250 2.0.0 Ok\r\n"
        if verb == b"QUIT":
            self._closing = True
            return b"221 2.0.0 Bye\r\n"
        return b"502 5.5.2 Command not implemented\r\n"

    def eof_received(self) -> bool:
        return False


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    chunking: bool = False,
    counters: Counters | None = None,
    started: asyncio.Future[int] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set."""
    loop = asyncio.get_running_loop()
    counters = counters if counters is not None else Counters()
    server = await loop.create_server(lambda: _Session(counters, chunking=chunking), host, port)
    if started is not None:
        started.set_result(server.sockets[0].getsockname()[1])
    stop = stop or asyncio.Event()
    async with server:
        await stop.wait()


async def _main(arguments: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    counters = Counters()
    started: asyncio.Future[int] = loop.create_future()
    task = loop.create_task(
        serve(
            host=arguments.host,
            port=arguments.port,
            chunking=arguments.chunking,
            counters=counters,
            started=started,
            stop=stop,
        )
    )
    print(await started, flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    eof = loop.create_task(reader.read())
    stopped = loop.create_task(stop.wait())
    await asyncio.wait({eof, stopped, task}, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    for pending in (eof, stopped):
        pending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    print(
        f"sessions={counters.sessions} messages={counters.messages} octets={counters.octets}",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fast SMTP sink for benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunking", action="store_true", help="advertise CHUNKING (BDAT)")
    asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()

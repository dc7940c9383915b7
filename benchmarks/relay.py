"""A latency relay: a TCP proxy on loopback that adds a round-trip time.

How this works: every accepted connection gets an upstream connection to the
target.  Bytes read on one side are queued with the time they may leave
(arrival + RTT/2) and written to the other side when that time comes, in
order, all that is due in one write.  One timer per direction is armed for
the oldest queued chunk; nothing sleeps per byte, so bandwidth is not limited:
only latency is added.  A round trip through the relay therefore costs the
chosen RTT on top of loopback's own.

Timers: asyncio's default epoll selector waits in whole milliseconds and
rounds up twice (CPython 3.11 turns 9 ms into 10), so its timers fire 1-2 ms
late, which would add 2-4 ms to a 20 ms round trip.  The relay therefore runs
on a ``select()`` loop (microsecond timeouts; a relay has few sockets), and
arms each timer early by its own running estimate of how late timers wake
(the process's wake-up latency, about 0.2 ms on a small VM).  A timer that
fires before its chunk is due is simply armed again, so nothing ever leaves
early by more than ``EARLY``; the mean delay per direction is RTT/2.

Flow control: reading from a side pauses while more than ``HIGH_WATER``
octets wait in its queue or while the other side's socket buffer is full.

Run as a program it prints its port on the first line of its output, then
relays until SIGTERM/SIGINT or until its standard input is closed (so it
never outlives the process that started it)::

    python benchmarks/relay.py --target 127.0.0.1:2525 --rtt-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import selectors
import signal
import sys
from collections import deque
from typing import Final

#: A chunk may leave this much before its time (less than a loopback round trip).
EARLY: Final = 0.00002
#: Bounds of the estimate of how late a timer wakes (see the module docstring).
MAX_LEAD: Final = 0.002
#: Queued octets above which a side stops reading; it resumes below LOW_WATER.
HIGH_WATER: Final = 8 * 1024 * 1024
LOW_WATER: Final = 2 * 1024 * 1024


class _TimerLead:
    """How early to arm a timer: a running estimate of how late timers wake."""

    def __init__(self) -> None:
        self.value = 0.0002

    def observe(self, lateness: float) -> None:
        sample = min(max(lateness, 0.0), MAX_LEAD)
        self.value += (sample - self.value) / 8


_LEAD = _TimerLead()


class _Side(asyncio.Protocol):
    """One socket of a relayed connection; ``peer`` is the other one.

    ``_queue`` holds what this side received and the other side will be
    given: ``(deadline, chunk)``, where a ``None`` chunk stands for the end
    of the stream.
    """

    def __init__(self, delay: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._delay = delay
        self.peer: _Side | None = None
        self.transport: asyncio.Transport | None = None
        self._queue: deque[tuple[float, bytes | None]] = deque()
        self._queued = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._timer_waits = False  # armed for the future (a real wait, worth learning from)
        self._pauses: set[str] = set()
        #: This socket is gone (connection_lost).
        self._closed = False
        #: The end of what this side receives has been queued / given to the peer.
        self._end_queued = False
        self._ended = False

    # -- this side's socket ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._push(data)
        if self._queued > HIGH_WATER:
            self._pause("queue")

    def eof_received(self) -> bool:
        self._push(None)
        return True  # keep the other direction open until it ends too

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if not self._end_queued:
            self._push(None)

    def pause_writing(self) -> None:
        # This side's send buffer is full: stop reading what the other side sends.
        if self.peer is not None:
            self.peer._pause("peer")

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer._resume("peer")

    def _pause(self, reason: str) -> None:
        if not self._pauses and self.transport is not None and not self._closed:
            self.transport.pause_reading()
        self._pauses.add(reason)

    def _resume(self, reason: str) -> None:
        self._pauses.discard(reason)
        if not self._pauses and self.transport is not None and not self._closed:
            self.transport.resume_reading()

    # -- forwarding to the peer --------------------------------------------------------

    def _push(self, chunk: bytes | None) -> None:
        if self._end_queued:
            return
        self._queue.append((self._loop.time() + self._delay, chunk))
        if chunk is None:
            self._end_queued = True
        else:
            self._queued += len(chunk)
        if self._timer is None:
            self._arm()

    def _arm(self) -> None:
        if not self._queue:
            self._timer = None
            return
        when = self._queue[0][0] - _LEAD.value
        self._timer_when = when
        self._timer_waits = when - self._loop.time() > 0.001
        self._timer = self._loop.call_at(when, self.forward)

    def _close(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.close()  # what is buffered is written first

    def forward(self) -> None:
        """Give the peer everything that is due (called by the timer, or on connect)."""
        now = self._loop.time()
        if self._timer is not None and self._timer_waits:
            _LEAD.observe(now - self._timer_when)
        self._timer = None
        peer = self.peer
        if peer is None or peer.transport is None:
            return  # the upstream connection is not ready; forward() runs again when it is
        due = now + EARLY
        chunks: list[bytes] = []
        end = False
        while self._queue and self._queue[0][0] <= due:
            _deadline, chunk = self._queue.popleft()
            if chunk is None:
                end = True
                break
            chunks.append(chunk)
        if chunks:
            data = b"".join(chunks)
            self._queued -= len(data)
            if not peer._closed:
                peer.transport.write(data)
        if end:
            self._ended = True
            if self._closed or peer._ended or not peer.transport.can_write_eof():
                # Both directions are over (or this socket died): close both.
                peer._close()
                self._close()
            elif not peer._closed:
                peer.transport.write_eof()
            return
        if self._queued < LOW_WATER:
            self._resume("queue")
        self._arm()


class _ClientSide(_Side):
    """The side a client connected to: opens the upstream connection."""

    def __init__(self, delay: float, target: tuple[str, int]) -> None:
        super().__init__(delay)
        self._target = target
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._task = self._loop.create_task(self._connect())

    async def _connect(self) -> None:
        upstream = _Side(self._delay)
        upstream.peer = self
        self.peer = upstream
        try:
            await self._loop.create_connection(lambda: upstream, *self._target)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        self.forward()  # anything the client sent before the upstream was ready


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def serve(
    target: tuple[str, int],
    rtt: float,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    started: asyncio.Future[int] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Relay connections on ``host:port`` to ``target``, adding ``rtt`` seconds per round trip."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _ClientSide(rtt / 2, target), host, port)
    bound = server.sockets[0].getsockname()[1]
    if started is not None:
        started.set_result(bound)
    stop = stop or asyncio.Event()
    async with server:
        await stop.wait()


async def _main(arguments: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    started: asyncio.Future[int] = loop.create_future()
    task = loop.create_task(
        serve(
            _address(arguments.target),
            arguments.rtt_ms / 1000,
            host=arguments.host,
            port=arguments.port,
            started=started,
            stop=stop,
        )
    )
    port = await started
    print(port, flush=True)
    # Standing on our parent's pipe: when it is closed, the parent is gone.
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    eof = loop.create_task(reader.read())
    done_wait = loop.create_task(stop.wait())
    await asyncio.wait({eof, done_wait, task}, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    for pending in (eof, done_wait):
        pending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--target", required=True, help="HOST:PORT to relay to")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="round-trip time to add")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any)")
    arguments = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=_loop) as runner:
        runner.run(_main(arguments))


def _loop() -> asyncio.AbstractEventLoop:
    """An event loop whose timers keep time to the microsecond (see the module docstring)."""
    return asyncio.SelectorEventLoop(selectors.SelectSelector())


if __name__ == "__main__":
    main()

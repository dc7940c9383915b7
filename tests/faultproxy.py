"""A seeded TCP fault proxy on loopback, for soak tests of the client against a real server.

It runs inside the caller's event loop (asyncio or trio, through anyio) and forwards
bytes untouched between each accepted connection and an upstream port.  Connection
number ``i`` (in accept order) gets the fault ``plan_for(i)``: either the explicit
``plan`` given, or a draw from ``random.Random(seed)`` made in index order, so a seed
always gives the same list of faults.  With probability ``fault_rate`` a connection is
faulted with one of the kinds below; ``after`` counts bytes (or client chunks) in the
fault's direction, from the start of the connection:

``cut_c2s``            forward ``after`` client->server bytes, then close both sides
``cut_c2s_boundary``   forward ``after`` client chunks (as received: each one a TLS
                       record or a few of them), then close both sides, so the server
                       has every byte the client wrote so far and nothing cut in half
``cut_s2c``            forward ``after`` server->client bytes, then close both sides
``blackhole_s2c``      forward ``after`` server->client bytes, then drop every further
                       server byte; client bytes still reach the server, the connection
                       stays open: the client has to time out
``stall``              forward ``after`` bytes in ``direction``, then forward nothing
                       either way (everything read is dropped), the connection open
``handshake_cut``      forward ``after`` bytes in ``direction`` counted from the end of
                       the client's ``STARTTLS`` command, then close both sides: the cut
                       lands inside the ``220`` reply or the TLS handshake

A connection whose fault has fired but that stays open (``stall``, ``blackhole_s2c``)
is closed by the proxy ``stall_limit`` seconds later at the latest (choose about twice
the client's reply timeout), and ``aclose()`` closes every connection, so nothing
outlives the proxy.  Each connection's ``ProxiedConnection`` record (``proxy.
connections``) says what was planned, whether and where it fired, and how many bytes
went each way.

::

    async with FaultProxy(upstream_port, seed=7, fault_rate=0.3, stall_limit=8) as proxy:
        ...  # connect to 127.0.0.1:proxy.port
    print(proxy.fault_counts())
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self

import anyio
from anyio.abc import Listener, SocketAttribute, SocketStream, TaskGroup

__all__ = ("HOST", "Fault", "FaultKind", "FaultProxy", "ProxiedConnection", "spans_for")

HOST = "127.0.0.1"

Direction = Literal["c2s", "s2c"]

#: The client's STARTTLS command, searched for in the first client bytes.
_STARTTLS = b"STARTTLS\r\n"
_STARTTLS_SEARCH = 4096
#: Bytes after STARTTLS that count as "during the TLS handshake" in the report.
HANDSHAKE_WINDOW = 400
_READ = 65536


class FaultKind(enum.Enum):
    NONE = "none"
    CUT_C2S = "cut_c2s"
    CUT_C2S_BOUNDARY = "cut_c2s_boundary"
    CUT_S2C = "cut_s2c"
    BLACKHOLE_S2C = "blackhole_s2c"
    STALL = "stall"
    HANDSHAKE_CUT = "handshake_cut"


#: Every kind that does something, the ones a random plan chooses from.
FAULT_KINDS: tuple[FaultKind, ...] = tuple(kind for kind in FaultKind if kind != FaultKind.NONE)


@dataclass(frozen=True, slots=True)
class Fault:
    """What the proxy does to one connection (see the module docstring)."""

    kind: FaultKind = FaultKind.NONE
    #: Bytes (client chunks for ``cut_c2s_boundary``) forwarded before the fault fires.
    after: int = 0
    direction: Direction = "c2s"

    def __post_init__(self) -> None:
        if self.after < 0:
            raise ValueError("after must be >= 0")
        if self.kind == FaultKind.CUT_C2S_BOUNDARY and self.after < 1:
            raise ValueError("a boundary cut needs after >= 1 chunk")

    def __str__(self) -> str:
        if self.kind == FaultKind.NONE:
            return "none"
        unit = "chunks" if self.kind == FaultKind.CUT_C2S_BOUNDARY else "B"
        return f"{self.kind.value}({self.direction} {self.after} {unit})"


Spans = Mapping[Direction, tuple[int, int]]

#: Where random byte counts fall, by direction: (end of the early region, end of all).
#: Tuned to the soak's connections through Postfix submission: the client's STARTTLS
#: ends at byte 28 and its TLS handshake and AUTH take about 2000 bytes (the server's
#: about 2200), then each message of about 1.5 KiB adds about 1.65 KiB from the client
#: and 100 bytes of replies; the default suits about 13 messages per connection (see
#: ``spans_for``).
SPANS: Spans = {"c2s": (2000, 24_000), "s2c": (2200, 3600)}


def spans_for(messages_per_connection: int) -> Spans:
    """Spans of random byte counts for connections of the soak carrying this many messages."""
    return {
        "c2s": (2000, 2000 + 1700 * messages_per_connection),
        "s2c": (2200, 2200 + 110 * messages_per_connection),
    }


#: Client chunks (as received) of the handshake and AUTH.
EARLY_CHUNKS = 10


def random_fault(
    rng: random.Random,
    fault_rate: float,
    kinds: Sequence[FaultKind] = FAULT_KINDS,
    spans: Spans = SPANS,
) -> Fault:
    """One draw of a plan: no fault, or a fault of a random kind at a random place.

    One draw in five falls early (greeting, EHLO, STARTTLS, the handshake, AUTH), the
    others anywhere in the rest of a connection as long as the soak's.
    """
    if rng.random() >= fault_rate or not kinds:
        return Fault()
    kind = rng.choice(list(kinds))
    early = rng.random() < 0.2
    direction: Direction = rng.choice(("c2s", "s2c"))
    if kind == FaultKind.CUT_C2S_BOUNDARY:
        if early:
            return Fault(kind, rng.randint(1, EARLY_CHUNKS), "c2s")
        # Few writes carry many BDAT messages, many carry DATA ones: favour small counts.
        return Fault(kind, EARLY_CHUNKS + 1 + int(rng.expovariate(1 / 8)), "c2s")
    if kind == FaultKind.HANDSHAKE_CUT:
        return Fault(kind, rng.randrange(HANDSHAKE_WINDOW), direction)
    if kind in (FaultKind.CUT_C2S, FaultKind.CUT_S2C, FaultKind.BLACKHOLE_S2C):
        direction = "c2s" if kind == FaultKind.CUT_C2S else "s2c"
    early_end, end = spans[direction]
    return Fault(
        kind, rng.randrange(early_end) if early else rng.randrange(early_end, end), direction
    )


@dataclass(eq=False)
class ProxiedConnection:
    """One accepted connection: its planned fault, what happened, byte counts."""

    index: int
    fault: Fault
    c2s_bytes: int = 0
    s2c_bytes: int = 0
    c2s_chunks: int = 0
    #: Every byte read from the client, forwarded or not.
    c2s_read: int = 0
    #: Bytes read and thrown away after a stall or blackhole fired.
    dropped_bytes: int = 0
    #: Offsets (c2s, s2c) right after the client's STARTTLS, once seen.
    starttls_at: tuple[int, int] | None = None
    #: Where the fault fired ("c2s byte 1234, TLS session"), None while it has not.
    fired: str | None = None
    #: Why the connection ended ("client closed", "cut", "stall limit", ...).
    ended: str | None = None
    #: Set the first time a byte is dropped (stall / blackhole): the client waits now.
    dropping: anyio.Event = field(default_factory=anyio.Event)
    #: Set when both sides are closed.
    closed: anyio.Event = field(default_factory=anyio.Event)
    _stalled: bool = False
    _blackholed: bool = False
    _fired_event: anyio.Event = field(default_factory=anyio.Event)
    _scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def impose(self, kind: FaultKind) -> None:
        """Stall or blackhole this connection from now on (for tests that time a fault)."""
        if kind not in (FaultKind.STALL, FaultKind.BLACKHOLE_S2C):
            raise ValueError(f"only a stall or a blackhole can be imposed, not {kind}")
        if self.fired is not None or self.ended is not None:
            raise RuntimeError(f"connection #{self.index} is no longer plain: {self.describe()}")
        self.fault = Fault(kind, self.s2c_bytes, "s2c")
        self._fire("imposed")

    def _phase(self, direction: Direction) -> str:
        if self.starttls_at is None:
            return "before STARTTLS"
        count = self.c2s_bytes if direction == "c2s" else self.s2c_bytes
        start = self.starttls_at[0 if direction == "c2s" else 1]
        return "TLS handshake" if count - start <= HANDSHAKE_WINDOW else "TLS session"

    def _fire(self, where: str) -> None:
        if self.fired is not None:
            return
        self.fired = where
        kind = self.fault.kind
        if kind == FaultKind.STALL:
            self._stalled = True
        elif kind == FaultKind.BLACKHOLE_S2C:
            self._blackholed = True
        else:
            self._end("cut")
        self._fired_event.set()

    def _end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
        self._scope.cancel()

    def _limit(self, direction: Direction) -> int | None:
        """The byte count in ``direction`` at which the fault fires, if it is known."""
        fault = self.fault
        if self.fired is not None or fault.kind in (FaultKind.NONE, FaultKind.CUT_C2S_BOUNDARY):
            return None
        if fault.direction != direction:
            return None
        if fault.kind == FaultKind.HANDSHAKE_CUT:
            if self.starttls_at is None:
                return None
            return self.starttls_at[0 if direction == "c2s" else 1] + fault.after
        return fault.after

    def _drop(self, data: bytes) -> None:
        self.dropped_bytes += len(data)
        self.dropping.set()

    async def _forward(self, direction: Direction, data: bytes, target: SocketStream) -> None:
        """Forward one chunk read in ``direction``, applying the fault."""
        if direction == "c2s":
            self.c2s_chunks += 1
            self.c2s_read += len(data)
            if self.starttls_at is None and self.c2s_bytes < _STARTTLS_SEARCH:
                seen = data.find(_STARTTLS)
                if seen >= 0:
                    self.starttls_at = (self.c2s_bytes + seen + len(_STARTTLS), self.s2c_bytes)
        await self._pass(direction, data, target)
        fault = self.fault
        if (
            direction == "c2s"
            and fault.kind == FaultKind.CUT_C2S_BOUNDARY
            and self.fired is None
            and self.c2s_chunks >= fault.after
        ):
            self._fire(
                f"after c2s chunk {self.c2s_chunks} (byte {self.c2s_bytes}), {self._phase('c2s')}"
            )

    async def _pass(self, direction: Direction, data: bytes, target: SocketStream) -> None:
        """Send what the fault lets through of ``data``; fire the fault at its byte."""
        if self._stalled or (direction == "s2c" and self._blackholed):
            self._drop(data)
            return
        limit = self._limit(direction)
        count = self.c2s_bytes if direction == "c2s" else self.s2c_bytes
        if limit is None or count + len(data) < limit:
            await self._send(direction, data, target)
            return
        head, tail = data[: limit - count], data[limit - count :]
        if head:
            await self._send(direction, head, target)
        self._fire(f"{direction} byte {limit}, {self._phase(direction)}")
        if self.ended is None and tail:
            await self._pass(direction, tail, target)

    async def _send(self, direction: Direction, data: bytes, target: SocketStream) -> None:
        await target.send(data)
        if direction == "c2s":
            self.c2s_bytes += len(data)
        else:
            self.s2c_bytes += len(data)

    def describe(self) -> str:
        return (
            f"#{self.index} {self.fault}: fired={self.fired or 'no'}, ended={self.ended}, "
            f"c2s={self.c2s_bytes} B/{self.c2s_chunks} chunks, s2c={self.s2c_bytes} B, "
            f"dropped={self.dropped_bytes} B"
        )


class FaultProxy:
    """Forward 127.0.0.1:``port`` to ``upstream_host:upstream_port``, faulting connections.

    Use it as an async context manager (it owns a task group, so it is entered and
    left in one task).

    :param seed: seeds the plan of faults
    :param fault_rate: probability that a connection gets a fault
    :param kinds: the kinds a random plan chooses from (default: all)
    :param plan: explicit faults for the first connections (then random draws)
    :param spans: per direction, (end of the early region, end) of random byte counts
    :param stall_limit: seconds a stalled or blackholed connection is kept open after
        its fault fired, at most
    """

    def __init__(
        self,
        upstream_port: int,
        *,
        seed: int = 0,
        fault_rate: float = 0.3,
        kinds: Sequence[FaultKind] = FAULT_KINDS,
        plan: Sequence[Fault] = (),
        spans: Spans = SPANS,
        stall_limit: float = 10.0,
        upstream_host: str = HOST,
    ) -> None:
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError("fault_rate must be within [0, 1]")
        if not stall_limit > 0:
            raise ValueError("stall_limit must be positive")
        self.upstream = (upstream_host, upstream_port)
        self.seed = seed
        self.fault_rate = fault_rate
        self.kinds = tuple(kinds)
        self.spans = dict(spans)
        self.stall_limit = stall_limit
        self._explicit = list(plan)
        self._rng = random.Random(seed)
        self._drawn: list[Fault] = []
        self.connections: list[ProxiedConnection] = []
        self.port = 0
        self._group: TaskGroup | None = None

    def plan_for(self, index: int) -> Fault:
        """The fault of connection ``index`` (0-based, in accept order)."""
        while len(self._drawn) <= index:
            self._drawn.append(random_fault(self._rng, self.fault_rate, self.kinds, self.spans))
        if index < len(self._explicit):
            return self._explicit[index]
        return self._drawn[index]

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        listener = await anyio.create_tcp_listener(local_host=HOST, local_port=0)
        self.port = listener.extra(SocketAttribute.local_port)
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        group.start_soon(self._serve, listener, group)
        return self

    async def _serve(self, listener: Listener[SocketStream], group: TaskGroup) -> None:
        async with listener:
            await listener.serve(self._handle, group)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop listening and close every connection (each record says "proxy closed")."""
        group, self._group = self._group, None
        if group is None:
            return
        for connection in self.connections:
            if connection.ended is None:
                connection.ended = "proxy closed"
        group.cancel_scope.cancel()
        await group.__aexit__(None, None, None)

    # -- one connection ----------------------------------------------------------------

    async def _handle(self, client: SocketStream) -> None:
        connection = ProxiedConnection(len(self.connections), Fault())
        connection.fault = self.plan_for(connection.index)
        self.connections.append(connection)
        try:
            async with client:
                try:
                    upstream = await anyio.connect_tcp(*self.upstream)
                except OSError as error:
                    connection.ended = f"upstream connect failed: {error}"
                    return
                async with upstream:
                    with connection._scope:
                        async with anyio.create_task_group() as group:
                            group.start_soon(self._pump, connection, "c2s", client, upstream)
                            group.start_soon(self._pump, connection, "s2c", upstream, client)
                            group.start_soon(self._watch, connection)
        finally:
            if connection.ended is None:
                connection.ended = "proxy closed"
            connection.closed.set()

    async def _pump(
        self,
        connection: ProxiedConnection,
        direction: Direction,
        source: SocketStream,
        target: SocketStream,
    ) -> None:
        try:
            while True:
                data = await source.receive(_READ)
                await connection._forward(direction, data, target)
        except anyio.EndOfStream:
            connection._end("client closed" if direction == "c2s" else "server closed")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as error:
            side = "client" if direction == "c2s" else "server"
            connection._end(f"{side} side broke ({type(error).__name__})")

    async def _watch(self, connection: ProxiedConnection) -> None:
        """Close a stalled or blackholed connection ``stall_limit`` after its fault fired."""
        await connection._fired_event.wait()
        if connection.ended is not None:
            return
        # Ends early when the connection does (this task is cancelled with it).
        with anyio.move_on_after(self.stall_limit):
            await anyio.sleep_forever()
        connection._end("stall limit")

    # -- reporting -----------------------------------------------------------------------

    def fault_counts(self) -> dict[str, tuple[int, int]]:
        """Per fault kind: (connections planned with it, connections where it fired)."""
        planned: Counter[str] = Counter()
        fired: Counter[str] = Counter()
        for connection in self.connections:
            planned[connection.fault.kind.value] += 1
            if connection.fired is not None:
                fired[connection.fault.kind.value] += 1
        return {kind: (planned[kind], fired[kind]) for kind in sorted(planned)}

    def handshake_faults(self) -> int:
        """Faults that fired at most ``HANDSHAKE_WINDOW`` bytes after STARTTLS."""
        return sum(1 for c in self.connections if c.fired and "TLS handshake" in c.fired)

    def summary(self) -> str:
        counts = self.fault_counts()
        parts = [f"{kind} {fired}/{planned}" for kind, (planned, fired) in counts.items()]
        return (
            f"{len(self.connections)} connections (seed {self.seed}, rate {self.fault_rate}); "
            f"faults fired/planned: {', '.join(parts) or 'none'}; "
            f"fired in the TLS handshake: {self.handshake_faults()}"
        )

"""SMTPPool: many messages over several reused SMTP sessions.

How this works
--------------

The pool opens sessions lazily with the caller's factory (a zero-argument
callable such as ``functools.partial(anyio_smtp.connect_starttls, host)``),
at most ``max_connections`` at a time.  A session goes back to an idle stack
after each use and is reused, newest first, unless it has been idle for longer
than ``idle_timeout``, has sent ``max_messages_per_connection`` messages, or is
closed.

A message is sent again only when it is certain it was not delivered: the
session failed before the message's data was complete (a lost connection, a
timeout, a ``421`` at any point, or a session the server had already closed
while it sat idle).  Such a message is retried on a fresh session, up to
``retries`` times.  A message whose outcome is known (a ``SendResult``, a
refusal) or possibly delivered (``DeliveryUnknownError``) is never sent again;
streamed messages, which can be read once only, are never retried either.

``send_many`` runs one worker per session inside the pool's task group (so the
pool must be entered with ``async with``); each worker feeds its session's
``send_many`` from a shared queue, and outcomes are handed back in input
order, with a bounded number of messages between the oldest unanswered one
and the newest started.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
)
from contextlib import aclosing
from dataclasses import dataclass, field
from email.message import Message
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ._client import SMTPClient
from ._engine import DEFAULT_MAX_IN_FLIGHT, BatchItem
from ._errors import (
    InvalidArgumentError,
    ServerDisconnectedError,
    ServiceUnavailableError,
    SessionClosedError,
    SMTPError,
    SMTPTimeoutError,
)
from ._result import SendResult
from ._source import MessageSource

__all__ = ("SMTPPool",)

#: Failures after which a message that was not delivered may go again.
_RETRYABLE = (
    ServiceUnavailableError,
    ServerDisconnectedError,
    SMTPTimeoutError,
    SessionClosedError,
)

Factory = Callable[[], Awaitable[SMTPClient]]


def _resendable(item: object) -> bool:
    """Whether a message can be sent a second time (its content is in memory)."""
    if isinstance(item, Message):
        return True
    if isinstance(item, tuple) and len(item) == 3:
        return isinstance(item[2], (bytes, bytearray, memoryview, str))
    return False


@dataclass(eq=False)
class _Connection:
    client: SMTPClient
    messages: int = 0
    idle_since: float = field(default_factory=anyio.current_time)


class SMTPPool:
    """A pool of SMTP sessions for sending many messages concurrently.

    ::

        factory = functools.partial(anyio_smtp.connect_starttls, "smtp.example.com",
                                    ssl_context=ctx)
        async with anyio_smtp.SMTPPool(factory, max_connections=8) as pool:
            await pool.send_mail("a@example.com", ["b@example.org"], message)
            async for outcome in pool.send_many(messages):
                ...

    :param factory: a zero-argument callable returning what ``connect(...)`` or
        ``connect_starttls(...)`` return (something to ``await`` for an
        ``SMTPClient``); it is also where ``login`` belongs, e.g. an async
        function that connects and logs in
    :param max_connections: most sessions open at once
    :param max_messages_per_connection: a session is closed (with QUIT) after
        sending this many messages (or fewer, if the server's LIMITS says
        MAILMAX); None for no limit but the server's
    :param idle_timeout: seconds a session may sit unused before it is closed
        instead of reused; None keeps it
    :param retries: how many times a message that certainly was not delivered
        is tried again on a new session
    """

    def __init__(
        self,
        factory: Callable[[], Awaitable[SMTPClient]],
        *,
        max_connections: int = 8,
        max_messages_per_connection: int | None = None,
        idle_timeout: float | None = 60.0,
        retries: int = 2,
    ) -> None:
        if not callable(factory):
            raise InvalidArgumentError("factory must be a callable returning a session")
        for name, value, allow_none in (
            ("max_connections", max_connections, False),
            ("max_messages_per_connection", max_messages_per_connection, True),
        ):
            if (value is None and not allow_none) or (
                value is not None
                and (isinstance(value, bool) or not isinstance(value, int) or value < 1)
            ):
                raise InvalidArgumentError(f"{name} must be a positive int")
        if idle_timeout is not None and not idle_timeout > 0:
            raise InvalidArgumentError("idle_timeout must be a positive number or None")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidArgumentError("retries must be a non-negative int")
        self._factory = factory
        self.max_connections = max_connections
        self.max_messages_per_connection = max_messages_per_connection
        self.idle_timeout = idle_timeout
        self.retries = retries
        self._slots = anyio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._group: TaskGroup | None = None
        self._closed = False
        #: Sessions opened so far (for monitoring and tests).
        self.connections_opened = 0

    def __repr__(self) -> str:
        return (
            f"<SMTPPool max_connections={self.max_connections} idle={len(self._idle)} "
            f"opened={self.connections_opened}>"
        )

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> SMTPPool:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        if self.idle_timeout is not None:
            self._group.start_soon(self._reap, self.idle_timeout)
        return self

    async def _reap(self, idle_timeout: float) -> None:
        """Close sessions idle for longer than ``idle_timeout`` (while the pool is entered)."""
        while True:
            now = anyio.current_time()
            oldest = min((c.idle_since for c in self._idle), default=now)
            await anyio.sleep(max(oldest + idle_timeout - now, 0) + 0.05 * idle_timeout)
            now = anyio.current_time()
            expired = [c for c in self._idle if now - c.idle_since > idle_timeout]
            self._idle = [c for c in self._idle if c not in expired]
            for connection in expired:
                await connection.client.aclose()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        group, self._group = self._group, None
        try:
            if group is not None:
                group.cancel_scope.cancel()
                return await group.__aexit__(exc_type, exc, traceback)
            return None
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close every idle session politely (QUIT); later sends fail."""
        self._closed = True
        idle, self._idle = self._idle, []
        with anyio.CancelScope(shield=True):
            for connection in idle:
                await connection.client.aclose()

    # -- sessions ----------------------------------------------------------------------

    async def _acquire(self) -> _Connection:
        if self._closed:
            raise SessionClosedError("the pool is closed")
        await self._slots.acquire()
        try:
            now = anyio.current_time()
            while self._idle:
                connection = self._idle.pop()
                stale = self.idle_timeout is not None and now - connection.idle_since > (
                    self.idle_timeout
                )
                if connection.client.closed or stale:
                    await connection.client.aclose()
                    continue
                return connection
            client = await self._factory()
            self.connections_opened += 1
            return _Connection(client)
        except BaseException:
            self._slots.release()
            raise

    async def _release(self, connection: _Connection) -> None:
        try:
            if self._closed or connection.client.closed or self._room(connection) <= 0:
                with anyio.CancelScope(shield=True):
                    await connection.client.aclose()
            else:
                connection.idle_since = anyio.current_time()
                self._idle.append(connection)
        finally:
            self._slots.release()

    def _limit(self, connection: _Connection) -> float:
        """Messages a session may carry: ours, and the server's LIMITS MAILMAX (RFC 9422)."""
        limit: float = self.max_messages_per_connection or math.inf
        mailmax = connection.client.capabilities.limits.get("MAILMAX")
        return min(limit, mailmax) if mailmax else limit

    def _room(self, connection: _Connection) -> float:
        return self._limit(connection) - connection.messages

    # -- one message -----------------------------------------------------------------

    async def send_mail(
        self,
        sender: str,
        recipients: str | Iterable[str],
        message: MessageSource,
        **options: Any,
    ) -> SendResult:
        """Send one message on a pooled session (see :meth:`SMTPClient.send_mail`).

        A connection-level failure before the message was complete is retried
        on a new session (``retries`` times); everything else is raised.
        """
        resendable = _resendable((sender, recipients, message))

        async def send(client: SMTPClient) -> SendResult:
            return await client.send_mail(sender, recipients, message, **options)

        return await self._send_one(send, resendable)

    async def send_message(self, message: Message, **options: Any) -> SendResult:
        """Send an email message on a pooled session (see :meth:`SMTPClient.send_message`)."""

        async def send(client: SMTPClient) -> SendResult:
            return await client.send_message(message, **options)

        return await self._send_one(send, True)

    async def _send_one(
        self, send: Callable[[SMTPClient], Awaitable[SendResult]], resendable: bool
    ) -> SendResult:
        attempt = 0
        while True:
            connection = await self._acquire()
            try:
                connection.messages += 1
                return await send(connection.client)
            except _RETRYABLE:
                if not resendable or attempt >= self.retries:
                    raise
                attempt += 1
            finally:
                await self._release(connection)

    # -- many messages -----------------------------------------------------------------

    async def send_many(
        self,
        messages: Iterable[BatchItem] | AsyncIterable[BatchItem],
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        **options: Any,
    ) -> AsyncIterator[SendResult | SMTPError]:
        """Send a batch over up to ``max_connections`` sessions at once.

        Outcomes come in input order, one per message, as for
        :meth:`SMTPClient.send_many`.  Needs ``async with pool:``.

        :param max_in_flight: messages in flight per session
        :param options: ``transfer``, ``dsn``, ``require_tls`` as for
            :meth:`SMTPClient.send_many`
        :raises InvalidArgumentError: the pool was not entered with ``async with``
        """
        if self._group is None:
            raise InvalidArgumentError("SMTPPool.send_many needs `async with pool:` first")
        if (
            isinstance(max_in_flight, bool)
            or not isinstance(max_in_flight, int)
            or max_in_flight < 1
        ):
            raise InvalidArgumentError("max_in_flight must be a positive int")
        batch = _Batch(self, messages, max_in_flight=max_in_flight, options=options)
        self._group.start_soon(batch.run)
        try:
            async for outcome in batch.outcomes():
                yield outcome
        finally:
            batch.cancel()


class _Batch:
    """One ``SMTPPool.send_many`` call: workers, a shared queue, ordered results."""

    def __init__(
        self,
        pool: SMTPPool,
        messages: Iterable[BatchItem] | AsyncIterable[BatchItem],
        *,
        max_in_flight: int,
        options: dict[str, Any],
    ) -> None:
        self._pool = pool
        self._messages = messages
        self._source: AsyncIterator[BatchItem] | None = None
        self._max_in_flight = max_in_flight
        self._options = options
        self._lock = anyio.Lock()
        self._next_index = 0
        self._exhausted = False
        self._retry: deque[tuple[int, BatchItem, int]] = deque()
        # Bounds how far the newest started message may run ahead of the oldest
        # unanswered one (memory for out-of-order outcomes).
        self._window = anyio.Semaphore(pool.max_connections * max_in_flight * 2)
        self._results_in, self._results_out = anyio.create_memory_object_stream[
            tuple[int, SendResult | SMTPError] | BaseException
        ](math.inf)
        self._scope = anyio.CancelScope()

    def cancel(self) -> None:
        self._scope.cancel()

    async def _items(self) -> AsyncGenerator[BatchItem, None]:
        if isinstance(self._messages, AsyncIterable):
            try:
                async for item in self._messages:
                    yield item
            finally:
                close = getattr(self._messages, "aclose", None)
                if close is not None:
                    await close()
        else:
            for item in self._messages:
                yield item

    async def _take(self) -> tuple[int, BatchItem, int] | None:
        """The next message to send (retries first), or None when all are handed out."""
        if self._retry:
            return self._retry.popleft()
        async with self._lock:
            if self._retry:
                return self._retry.popleft()
            if self._exhausted:
                return None
            await self._window.acquire()
            assert self._source is not None
            try:
                item = await anext(self._source)
            except StopAsyncIteration:
                self._window.release()
                self._exhausted = True
                return None
            index = self._next_index
            self._next_index += 1
            return index, item, 0

    async def run(self) -> None:
        with self._scope:
            try:
                async with aclosing(self._items()) as source:
                    self._source = source
                    async with anyio.create_task_group() as workers:
                        for _ in range(self._pool.max_connections):
                            workers.start_soon(self._worker)
            except BaseException as exc:
                if not isinstance(exc, anyio.get_cancelled_exc_class()):
                    await self._results_in.send(exc)
                raise
            finally:
                self._results_in.close()

    async def _worker(self) -> None:
        pool = self._pool
        while True:
            first = await self._take()
            if first is None:
                return
            try:
                connection = await pool._acquire()
            except SMTPError as exc:
                await self._finish(first, exc)
                continue
            fed: deque[tuple[int, BatchItem, int]] = deque()

            async def feed(
                first: tuple[int, BatchItem, int] = first,
                connection: _Connection = connection,
                fed: deque[tuple[int, BatchItem, int]] = fed,
            ) -> AsyncGenerator[BatchItem, None]:
                entry: tuple[int, BatchItem, int] | None = first
                while entry is not None:
                    fed.append(entry)
                    connection.messages += 1
                    yield entry[1]
                    if pool._room(connection) <= 0:
                        return
                    entry = await self._take()

            try:
                outcomes_of = connection.client.send_many(
                    feed(), max_in_flight=self._max_in_flight, **self._options
                )
                async with aclosing(outcomes_of) as outcomes:
                    async for outcome in outcomes:
                        await self._finish(fed.popleft(), outcome)
            except SMTPError as failure:
                # The session failed; whatever was fed but not answered goes
                # again (it can not have been delivered: outcomes for messages
                # that may have been were yielded above).
                while fed:
                    await self._finish(fed.popleft(), failure)
            finally:
                await pool._release(connection)

    async def _finish(
        self, entry: tuple[int, BatchItem, int], outcome: SendResult | SMTPError
    ) -> None:
        index, item, attempt = entry
        if isinstance(outcome, _RETRYABLE) and attempt < self._pool.retries and _resendable(item):
            self._retry.append((index, item, attempt + 1))
            return
        await self._results_in.send((index, outcome))

    async def outcomes(self) -> AsyncIterator[SendResult | SMTPError]:
        """Outcomes in input order."""
        waiting: dict[int, SendResult | SMTPError] = {}
        expected = 0
        async with self._results_out:
            async for received in self._results_out:
                if isinstance(received, BaseException):
                    raise received
                index, outcome = received
                waiting[index] = outcome
                while expected in waiting:
                    yield waiting.pop(expected)
                    expected += 1
                    self._window.release()

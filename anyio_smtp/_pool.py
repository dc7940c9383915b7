"""SMTPPool: many messages over several reused SMTP sessions.

How this works
--------------

The pool opens sessions lazily with the caller's factory (a zero-argument
callable such as ``functools.partial(anyio_smtp.connect_starttls, host)``),
at most ``max_connections`` at a time.  A session goes back to an idle stack
after each use and is reused, newest first, unless it has been idle for longer
than ``idle_timeout``, has sent ``max_messages_per_connection`` messages, or is
closed.

A message is sent again only when it is certain it was not delivered (see
``_transaction``): the session failed before the end of the message's data was
handed to the transport, or a reply refused it before the failure (a lost
connection, a timeout, a ``421``, a session the server had already closed
while it sat idle, or a session that could not be opened at all).  Such a
message is retried on a fresh session, up to ``retries`` times.  A message
whose outcome is known (a ``SendResult``, a refusal) or possibly delivered
(``DeliveryUnknownError``) is never sent again; streamed messages, which can be
read once only, are never retried either.

``send_many`` runs, inside the pool's task group (so the pool must be entered
with ``async with``), a reader that moves the caller's messages into a shared
queue and one worker per session that feeds its session's ``send_many`` from
it; outcomes are handed back in input order, with a bounded number of messages
between the oldest unanswered one and the newest started.  A session never
waits for the queue while it holds a message unwritten, and retried messages
go to the front: the oldest unanswered message is always being worked on, so
the in-order window can not wait on itself.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
)
from contextlib import aclosing
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from ._client import SMTPClient
from ._engine import DEFAULT_MAX_IN_FLIGHT
from ._errors import (
    ConnectError,
    DataRefusedError,
    InvalidArgumentError,
    RecipientsRefusedError,
    SenderRefusedError,
    ServerDisconnectedError,
    ServiceUnavailableError,
    SessionClosedError,
    SMTPError,
    SMTPTimeoutError,
    TLSCertificateError,
    TLSError,
)
from ._protocol.params import DSN, Recipient, Transfer
from ._result import Outcome, SendBatch, SendResult, with_index
from ._transaction import Options, check_mail
from ._types import BatchItem, MessageBody, Recipients, is_email_message

if TYPE_CHECKING:
    from email.message import Message

__all__ = ("SMTPPool", "retryable")

#: Failures that leave a message certainly undelivered, and may pass: a retry
#: on another session may succeed.  (``DeliveryUnknownError`` is none of them.)
_RETRYABLE = (
    ServiceUnavailableError,
    ServerDisconnectedError,
    SMTPTimeoutError,
    SessionClosedError,
    ConnectError,
    TLSError,
)


def retryable(error: SMTPError) -> bool:
    """Whether a message that got ``error`` may be sent again on another session.

    A refused certificate is no passing fault: trying again can not help.  A
    message refused for how the session sent it (``503`` bad sequence of
    commands, a complaint about pipelining) was refused for no fault of its
    own, so it may go again too.
    """
    if isinstance(error, (SenderRefusedError, RecipientsRefusedError, DataRefusedError)):
        return error.is_sequence_error
    return isinstance(error, _RETRYABLE) and not isinstance(error, TLSCertificateError)


Factory = Callable[[], Awaitable[SMTPClient]]


def _only(group: BaseExceptionGroup[BaseException], exc: BaseException) -> bool:
    """Whether ``group`` holds ``exc`` and, besides it, only cancellations."""
    cancelled = anyio.get_cancelled_exc_class()
    found = False

    def walk(node: BaseException) -> bool:
        nonlocal found
        if node is exc:
            found = True
            return True
        if isinstance(node, BaseExceptionGroup):
            return all(walk(inner) for inner in node.exceptions)
        return isinstance(node, cancelled)

    return walk(group) and found and not isinstance(exc, cancelled)


def _resendable(item: object) -> bool:
    """Whether a message can be sent a second time (its content is in memory)."""
    if is_email_message(item):
        return True
    if isinstance(item, tuple) and len(item) == 3:
        return isinstance(item[2], (bytes, bytearray, memoryview, str)) or is_email_message(item[2])
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
        self.connections_opened: int = 0

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
                try:
                    return await group.__aexit__(exc_type, exc, traceback)
                except BaseExceptionGroup as raised:
                    # The pool's own tasks ended by cancellation: what the
                    # caller's code raised comes out as it was raised, not
                    # wrapped in a group.  A real failure of a pool task as
                    # well keeps the group, so that neither is lost.
                    if exc is not None and _only(raised, exc):
                        return False
                    raise
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
        recipients: Recipients,
        message: MessageBody,
        *,
        size: int | None = None,
        transfer: Transfer = "auto",
        dsn: DSN | None = None,
        require_tls: bool = False,
    ) -> SendResult:
        """Send one message on a pooled session (see :meth:`SMTPClient.send_mail`).

        A failure that certainly did not deliver the message (a lost
        connection before its data ended, a timeout, a ``421``, a session that
        could not be opened) is retried on a new session (``retries`` times);
        everything else is raised, ``DeliveryUnknownError`` included.
        """
        # Refuse bad options and arguments before any I/O, a new session included.
        Options(transfer, dsn, require_tls)
        recipients = check_mail(sender, recipients, message)
        resendable = _resendable((sender, recipients, message))

        async def send(client: SMTPClient) -> SendResult:
            return await client.send_mail(
                sender,
                recipients,
                message,
                size=size,
                transfer=transfer,
                dsn=dsn,
                require_tls=require_tls,
            )

        return await self._send_one(send, resendable)

    async def send_message(
        self,
        message: Message,
        *,
        sender: str | None = None,
        recipients: str | Recipient | Iterable[str | Recipient] | None = None,
        transfer: Transfer = "auto",
        dsn: DSN | None = None,
        require_tls: bool = False,
    ) -> SendResult:
        """Send an email message on a pooled session (see :meth:`SMTPClient.send_message`)."""
        Options(transfer, dsn, require_tls)

        async def send(client: SMTPClient) -> SendResult:
            return await client.send_message(
                message,
                sender=sender,
                recipients=recipients,
                transfer=transfer,
                dsn=dsn,
                require_tls=require_tls,
            )

        return await self._send_one(send, True)

    async def _send_one(
        self, send: Callable[[SMTPClient], Awaitable[SendResult]], resendable: bool
    ) -> SendResult:
        attempt = 0
        while True:
            try:
                connection = await self._acquire()
            except SMTPError as exc:
                if not (resendable and retryable(exc) and attempt < self.retries):
                    raise
                attempt += 1
                continue
            try:
                connection.messages += 1
                return await send(connection.client)
            except SMTPError as exc:
                if not (resendable and retryable(exc) and attempt < self.retries):
                    raise
                attempt += 1
            finally:
                await self._release(connection)

    # -- many messages -----------------------------------------------------------------

    def send_many(
        self,
        messages: Iterable[BatchItem] | AsyncIterable[BatchItem],
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        transfer: Transfer = "auto",
        dsn: DSN | None = None,
        require_tls: bool = False,
    ) -> SendBatch:
        """Send a batch over up to ``max_connections`` sessions at once.

        Outcomes come in input order, one per message, as for
        :meth:`SMTPClient.send_many`, each with its message's ``index``; a
        message that certainly was not delivered because its session failed
        is sent again on another one (``retries`` times).  Needs ``async with
        pool:``.

        Leaving the loop early (inside ``contextlib.aclosing``) stops the
        batch: sessions in the middle of a message are closed, and the
        outcomes not read, of every message that went to a session, are in
        the batch's :attr:`~SendBatch.unread` once the loop is left.

        :param max_in_flight: messages in flight per session
        :param transfer: as for :meth:`SMTPClient.send_many`
        :param dsn: as for :meth:`SMTPClient.send_many`
        :param require_tls: as for :meth:`SMTPClient.send_many`
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
        Options(transfer, dsn, require_tls)
        options = {"transfer": transfer, "dsn": dsn, "require_tls": require_tls}
        unread: list[Outcome] = []
        return SendBatch(
            self._send_many(self._group, messages, max_in_flight, options, unread), unread
        )

    async def _send_many(
        self,
        group: TaskGroup,
        messages: Iterable[BatchItem] | AsyncIterable[BatchItem],
        max_in_flight: int,
        options: dict[str, Any],
        unread: list[Outcome],
    ) -> AsyncGenerator[Outcome, None]:
        batch = _Batch(self, messages, max_in_flight=max_in_flight, options=options)
        group.start_soon(batch.run)
        try:
            async with aclosing(batch.outcomes()) as outcomes:
                async for outcome in outcomes:
                    yield outcome
        finally:
            batch.cancel()
            # Wait for the sessions to give up their messages, so that every
            # outcome decided is known before the caller goes on.
            with anyio.CancelScope(shield=True):
                await batch.stopped.wait()
            unread.extend(batch.unread())


@dataclass(slots=True)
class _Entry:
    """One message of a pool batch: where it stands in the input, and its tries."""

    index: int
    item: BatchItem
    attempt: int = 0


class _WorkQueue:
    """A pool batch's messages waiting for a session; messages to retry go first.

    ``get`` ends (``EndOfStream``) only once the input is exhausted and every
    message taken from it has its final outcome: until then a failed session
    may still hand a message back.
    """

    def __init__(self) -> None:
        self._entries: deque[_Entry] = deque()
        self._unfinished = 0
        self._input_done = False
        self._changed = anyio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def put(self, entry: _Entry, *, retry: bool = False) -> None:
        if retry:
            self._entries.appendleft(entry)
        else:
            self._unfinished += 1
            self._entries.append(entry)
        self._notify()

    def finished(self) -> None:
        """A message has its final outcome."""
        self._unfinished -= 1
        self._notify()

    def input_done(self) -> None:
        self._input_done = True
        self._notify()

    def get_nowait(self) -> _Entry:
        if self._entries:
            return self._entries.popleft()
        if self._input_done and self._unfinished == 0:
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def get(self) -> _Entry:
        while True:
            try:
                return self.get_nowait()
            except anyio.WouldBlock:
                await self._changed.wait()


class _SessionFeed:
    """What one pooled session sends: messages from the queue, up to the session's room.

    It can be polled (``receive_nowait``), so the session's engine fills a
    pipelined group with what is queued without ever waiting for more while
    it holds work (which could wait on the in-order window, and so on itself).
    """

    def __init__(self, batch: _Batch, connection: _Connection, first: _Entry) -> None:
        self._batch = batch
        self._connection = connection
        self.first: _Entry | None = first
        #: Messages handed to the session and not yet answered, in order.
        self.fed: deque[_Entry] = deque()

    def _hand(self, entry: _Entry) -> BatchItem:
        self.fed.append(entry)
        self._connection.messages += 1
        return entry.item

    def receive_nowait(self) -> BatchItem:
        if self.first is not None:
            entry, self.first = self.first, None
            return self._hand(entry)
        if self._batch.pool._room(self._connection) <= 0:
            raise anyio.EndOfStream
        return self._hand(self._batch.queue.get_nowait())

    async def receive(self) -> BatchItem:
        try:
            return self.receive_nowait()
        except anyio.WouldBlock:
            return self._hand(await self._batch.queue.get())

    def __aiter__(self) -> _SessionFeed:
        return self

    async def __anext__(self) -> BatchItem:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


class _Batch:
    """One ``SMTPPool.send_many`` call: an input reader, workers, ordered results."""

    def __init__(
        self,
        pool: SMTPPool,
        messages: Iterable[BatchItem] | AsyncIterable[BatchItem],
        *,
        max_in_flight: int,
        options: dict[str, Any],
    ) -> None:
        self.pool = pool
        self._messages = messages
        self._max_in_flight = max_in_flight
        self._options = options
        self.queue = _WorkQueue()
        self._input_error: BaseException | None = None
        # Bounds how far the newest started message may run ahead of the oldest
        # unanswered one (memory for out-of-order outcomes).
        self._window = anyio.Semaphore(pool.max_connections * max_in_flight * 2)
        self._results_in, self._results_out = anyio.create_memory_object_stream[
            tuple[int, SendResult | SMTPError] | BaseException
        ](math.inf)
        self._scope = anyio.CancelScope()
        #: Set once the reader and every worker have ended.
        self.stopped = anyio.Event()
        #: Outcomes received, by index, not yet handed out in order.
        self._waiting: dict[int, Outcome] = {}

    def cancel(self) -> None:
        self._scope.cancel()

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.stopped.set()

    async def _run(self) -> None:
        with self._scope:
            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(self._read_input)
                    for _ in range(self.pool.max_connections):
                        group.start_soon(self._worker)
                if self._input_error is not None:
                    self._results_in.send_nowait(self._input_error)
            except BaseException as exc:
                if not isinstance(exc, anyio.get_cancelled_exc_class()):
                    self._results_in.send_nowait(exc)
                raise
            finally:
                self._results_in.close()

    async def _read_input(self) -> None:
        """Move the caller's messages into the queue, as the window allows."""
        index = 0
        try:
            if isinstance(self._messages, AsyncIterable):
                try:
                    async for item in self._messages:
                        await self._admit(index, item)
                        index += 1
                finally:
                    close = getattr(self._messages, "aclose", None)
                    if close is not None:
                        await close()
            else:
                for item in self._messages:
                    await self._admit(index, item)
                    index += 1
        except Exception as exc:
            # Finish what was taken, then tell the caller.
            self._input_error = exc
        finally:
            self.queue.input_done()

    async def _admit(self, index: int, item: BatchItem) -> None:
        await self._window.acquire()
        self.queue.put(_Entry(index, item))

    async def _worker(self) -> None:
        pool = self.pool
        while True:
            try:
                first = await self.queue.get()
            except anyio.EndOfStream:
                return
            try:
                connection = await pool._acquire()
            except SMTPError as exc:
                # Nothing of the message was sent: it may go again.
                self._finish(first, exc)
                continue
            feed = _SessionFeed(self, connection, first)
            failure: SMTPError = SessionClosedError("the session ended before the message went")
            outcomes_of: SendBatch | None = None
            try:
                outcomes_of = connection.client.send_many(
                    feed, max_in_flight=self._max_in_flight, **self._options
                )
                async with aclosing(outcomes_of) as outcomes:
                    async for outcome in outcomes:
                        self._finish(feed.fed.popleft(), outcome)
            except SMTPError as exc:
                failure = exc
            except BaseException:
                # Stopped (the caller left the batch): keep what the session
                # decided for the messages it had, retried or not.
                unread = () if outcomes_of is None else outcomes_of.unread
                for entry, outcome in zip(list(feed.fed), unread, strict=False):
                    self._results_in.send_nowait((entry.index, outcome))
                raise
            finally:
                await pool._release(connection)
            # Messages the session never got to (it was already closed, or it
            # failed first): certainly not delivered.
            if feed.first is not None:
                self._finish(feed.first, failure)
            while feed.fed:
                self._finish(feed.fed.popleft(), failure)

    def _finish(self, entry: _Entry, outcome: SendResult | SMTPError) -> None:
        if (
            isinstance(outcome, SMTPError)
            and retryable(outcome)
            and entry.attempt < self.pool.retries
            and _resendable(entry.item)
        ):
            entry.attempt += 1
            self.queue.put(entry, retry=True)
            return
        self._results_in.send_nowait((entry.index, outcome))
        self.queue.finished()

    async def outcomes(self) -> AsyncGenerator[Outcome, None]:
        """Outcomes in input order."""
        waiting = self._waiting
        expected = 0
        async for received in self._results_out:
            if isinstance(received, BaseException):
                raise received
            index, outcome = received
            waiting[index] = outcome
            while expected in waiting:
                yield with_index(waiting.pop(expected), expected)
                expected += 1
                self._window.release()

    def unread(self) -> list[Outcome]:
        """Once stopped: the outcomes never handed out, in input order."""
        with self._results_out:
            while True:
                try:
                    received = self._results_out.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                if not isinstance(received, BaseException):
                    index, outcome = received
                    self._waiting[index] = outcome
        waiting, self._waiting = self._waiting, {}
        return [with_index(waiting[index], index) for index in sorted(waiting)]

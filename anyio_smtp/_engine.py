"""The sending engine: the I/O loop around the sans-I/O :class:`~._transaction.Pipeline`.

How this works
--------------

With PIPELINING the engine works in *rounds*.  A round writes one group, as
the pipeline composes it, and reads every reply that group is owed:

    [body of the message whose DATA got 354, "."]  [RSET]  [MAIL, RCPT..., DATA]

so in steady state a message costs one round trip (RFC 2920 §3.1).  Messages
sent with BDAT need no 354, so up to ``max_in_flight`` whole transactions fit
in one group.  When a group is larger than a socket buffer, a reader task and
the writer run side by side, so replies are read while the group is written
(no deadlock against a server that answers as it reads, RFC 2920 §3.3).  The
reader waits for a reply only once the write holding its command was started,
so a slow upload does not eat into the wait for the verdict.

Input is never waited for while anything is held unwritten (the data after a
354, a planned message): held work is written first.  Only a source that can
be polled (a list, an anyio memory object stream, the pool's queue) fills a
group with more than what is at hand; any other async iterable is read when
the engine holds nothing.  So the engine can not wait on a producer that is
itself waiting for the outcome of a message the engine holds.

Rounds end with no task running, and only then are outcomes handed out (an
async generator must not yield inside a task group).  Outcomes come in input
order, one per message.  A failure of the session itself raises, after every
message in flight was given its outcome; whatever ends the session, a message
whose verdict was lost gets a ``DeliveryUnknown`` audit event.

Without PIPELINING each message goes strictly one command at a time, with the
same records and outcomes.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Iterator
from contextlib import aclosing
from typing import Any, Final, Literal, TypeAlias

import anyio

from ._channel import Channel
from ._errors import (
    DeliveryUnknownError,
    ExtensionNotSupportedError,
    ReplyError,
    ServerDisconnectedError,
    SessionClosedError,
    SMTPError,
    TLSError,
)
from ._protocol.body import BodyEncoder
from ._protocol.commands import Data
from ._protocol.state import SessionState
from ._result import SendResult
from ._transaction import (
    BatchItem,
    Delivery,
    Options,
    Owed,
    Piece,
    Pipeline,
    StreamedContent,
    Submission,
    Transaction,
    item_submission,
)

__all__ = ("DEFAULT_MAX_IN_FLIGHT", "WRITE_COALESCE", "Engine", "Source")

#: Groups up to this size go out in one write.
WRITE_COALESCE: Final = 64 * 1024
#: Messages a batch keeps in flight unless told otherwise.
DEFAULT_MAX_IN_FLIGHT: Final = 16

Outcome: TypeAlias = SendResult | SMTPError


class _Marker(enum.Enum):
    END = "end"
    NOT_READY = "not ready"


END: Final = _Marker.END
NOT_READY: Final = _Marker.NOT_READY


class Source:
    """A batch's messages, read lazily; an invalid message becomes its own error.

    ``poll()`` never waits: it returns the next message only if it is at
    hand (always, for a plain iterable; for an object with ``receive_nowait``
    such as an anyio memory object stream, when one is buffered).
    """

    def __init__(
        self,
        messages: Iterable[BatchItem | Submission] | AsyncIterable[BatchItem],
        options: Options,
    ) -> None:
        self._options = options
        self._sync: Iterator[BatchItem | Submission] | None = None
        self._async: AsyncIterable[BatchItem] | None = None
        self._iterator: Any = None
        self._pollable = False
        if isinstance(messages, AsyncIterable):
            self._async = messages
            self._pollable = callable(getattr(messages, "receive_nowait", None)) and callable(
                getattr(messages, "receive", None)
            )
            if not self._pollable:
                self._iterator = aiter(messages)
        else:
            self._sync = iter(messages)

    @classmethod
    def of(cls, *submissions: Submission) -> Source:
        """A source of submissions already checked."""
        return cls(submissions, Options())

    def _convert(self, item: object) -> Submission | SMTPError:
        if isinstance(item, Submission):
            return item
        return item_submission(item, self._options)

    def poll(self) -> Submission | SMTPError | Literal[_Marker.END, _Marker.NOT_READY]:
        if self._sync is not None:
            try:
                return self._convert(next(self._sync))
            except StopIteration:
                return END
        if not self._pollable:
            return NOT_READY
        try:
            item = self._async.receive_nowait()  # type: ignore[union-attr]
        except anyio.WouldBlock:
            return NOT_READY
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return END
        return self._convert(item)

    async def next(self) -> Submission | SMTPError | Literal[_Marker.END]:
        if self._sync is not None:
            item = self.poll()
            assert item is not NOT_READY
            return item
        if self._pollable:
            try:
                received = await self._async.receive()  # type: ignore[union-attr]
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return END
            return self._convert(received)
        try:
            return self._convert(await anext(self._iterator))
        except StopAsyncIteration:
            return END

    async def aclose(self) -> None:
        close = getattr(self._async, "aclose", None)
        if close is not None:
            await close()


def _leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that matters in a task group's exception group."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    cancelled = anyio.get_cancelled_exc_class()
    for leaf in leaves:
        if not isinstance(leaf, cancelled):
            return leaf
    return leaves[0]


class Engine:
    """Sends messages over one channel (whose client lock the caller holds)."""

    def __init__(self, channel: Channel, *, max_in_flight: int) -> None:
        self._channel = channel
        self._session = channel.session
        self._transport = channel.transport
        self._pipeline = Pipeline(channel.session, lmtp=channel.lmtp, max_in_flight=max_in_flight)
        self._pipeline.pipeline_after_end = channel.pipeline_after_end
        self._wake = anyio.Event()
        self._writer_done = False

    @property
    def in_transaction(self) -> bool:
        """Whether a message is half way (replies owed, or a data phase open)."""
        return bool(self._session.pending) or self._session.state is not SessionState.READY

    def unread(self) -> list[Outcome]:
        """After a run was left early: the outcomes it decided but did not yield, in order."""
        return list(self._pipeline.take_outcomes())

    # -- whole runs --------------------------------------------------------------------

    async def send_one(self, submission: Submission) -> Outcome:
        """Send one message; return its outcome or raise the session's failure."""
        outcome: Outcome | None = None
        try:
            async with aclosing(self.run(Source.of(submission))) as results:
                async for result in results:
                    outcome = result
        except SMTPError:
            # The session failed; if the message may have been delivered, say
            # that its fate is unknown rather than that the connection broke.
            if isinstance(outcome, DeliveryUnknownError):
                raise outcome from outcome.__cause__
            raise
        assert outcome is not None
        return outcome

    async def run(self, source: Source) -> AsyncGenerator[Outcome, None]:
        """Send the source's messages (and close it); yield one outcome per message."""
        runner = self._run_pipelined if self._session.pipelining else self._run_lock_step
        try:
            async with aclosing(runner(source)) as outcomes:
                async for outcome in outcomes:
                    yield outcome
        except SMTPError as failure:
            # The session failed: every message in flight gets its outcome first.
            await self._lost(failure)
            for outcome in self._pipeline.take_outcomes():
                yield outcome
            raise
        except BaseException as failure:
            # Cancelled, or the caller left the loop: no one to give outcomes
            # to, but the audit hook still learns which verdicts were lost.
            await self._lost(failure)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await source.aclose()

    async def _lost(self, failure: BaseException) -> list[Delivery]:
        """Settle everything in flight after ``failure``; tell the audit hook."""
        error = (
            failure
            if isinstance(failure, SMTPError)
            else SessionClosedError(f"the session ended ({type(failure).__name__})")
        )
        lost = self._pipeline.fail(error)
        await self._channel.emit_lost(lost)
        return lost

    async def _run_lock_step(self, source: Source) -> AsyncGenerator[Outcome, None]:
        pipeline = self._pipeline
        while (item := await source.next()) is not END:
            delivery = pipeline.add(item)
            while pipeline.pending:
                transaction = pipeline.pending.popleft()
                await self._channel.run(self._lock_step(transaction))
                pipeline.pending.extendleft(reversed(delivery.after(transaction)))
            for outcome in pipeline.take_outcomes():
                yield outcome

    async def _lock_step(self, transaction: Transaction) -> None:
        """One transaction, one command at a time (no PIPELINING)."""
        channel = self._channel
        transaction.mail_reply = await channel.command(transaction.mail)
        if transaction.mail_reply.is_positive:
            for index, rcpt in enumerate(transaction.rcpts):
                transaction.rcpt_replies[index] = await channel.command(rcpt)
            if transaction.accepted:
                if transaction.plan.bdat:
                    await self._write_bdat(transaction, None)
                else:
                    transaction.data_reply = await channel.command(Data())
                    if transaction.data_reply.code == 354:
                        buffer: list[Piece] = []
                        await self._write_data(transaction, buffer)
                        await self._flush(buffer)
                        await self._receive_owed()
        transaction.settle()
        await channel.emit_transaction(transaction)
        if isinstance(transaction.outcome, ReplyError):
            await channel.reset_after(transaction.outcome)

    async def _receive_owed(self) -> None:
        """Read every reply still owed, in order (lock step, or a small group)."""
        while self._session.pending:
            await self._receive_one()

    async def _receive_one(self) -> None:
        event = await self._channel.receive()
        if event.owed is None:
            self._channel.raise_if_closing(event)
        self._pipeline.record(event)
        self._channel.raise_if_closing(event)

    async def _run_pipelined(self, source: Source) -> AsyncGenerator[Outcome, None]:
        pipeline = self._pipeline
        exhausted = False
        input_error: Exception | None = None
        while True:
            while not exhausted:
                holding = pipeline.holding()  # planned transactions join the group first
                if not pipeline.wants_more():
                    break
                try:
                    # Never wait for input while work is held unwritten.
                    item = source.poll() if holding else await source.next()
                except Exception as exc:
                    # The caller's messages failed: finish what is in flight first.
                    exhausted, input_error = True, exc
                    break
                if item is NOT_READY:
                    break
                if item is END:
                    exhausted = True
                    break
                pipeline.add(item)
            if pipeline.holding() or (exhausted and pipeline.needs_rset):
                await self._channel.run(self._round())
            for outcome in pipeline.take_outcomes():
                yield outcome
            if exhausted and not pipeline.holding() and not pipeline.needs_rset:
                if input_error is not None:
                    raise input_error
                return

    # -- one pipelined round -----------------------------------------------------------

    async def _round(self) -> None:
        """Write one group while reading its replies; settle what they decide."""
        pipeline = self._pipeline
        self._writer_done = False
        try:
            if self._small():
                # One small write: the server can not fill our buffers before
                # we read, so no reader task is needed (it costs ~30 µs).
                await self._writer()
                await self._receive_owed()
            else:
                self._wake = anyio.Event()
                async with anyio.create_task_group() as group:
                    group.start_soon(self._reader)
                    await self._writer()
        except BaseExceptionGroup as exc:
            raise _leaf(exc) from None
        for transaction in pipeline.finish_round():
            await self._channel.emit_transaction(transaction)
        if not pipeline.pipeline_after_end:
            self._channel.no_pipelining_after_end()

    def _small(self) -> bool:
        """Whether the next group surely fits in one coalesced write."""
        pipeline = self._pipeline
        size = 0
        body_next = pipeline.body_next
        if body_next is not None:
            content = body_next.submission.content
            if not content.in_memory:
                return False
            size += 3 if body_next.lone_dot else len(content.encoded.data)
        for transaction in pipeline.new:
            content = transaction.submission.content
            if not content.in_memory:
                return False
            size += 128 + sum(len(rcpt.recipient) + 64 for rcpt in transaction.rcpts)
            if transaction.plan.bdat:
                size += len(content.encoded.data) + 32
        return size <= WRITE_COALESCE // 2

    def _nothing_to_read(self) -> bool:
        """No reply is owed for bytes handed to the transport."""
        owed = self._session.awaiting_owed
        return not self._session.pending or (isinstance(owed, Owed) and not owed.handed)

    async def _reader(self) -> None:
        while True:
            if self._nothing_to_read():
                if self._writer_done:
                    return
                self._wake = anyio.Event()
                if self._nothing_to_read() and not self._writer_done:
                    await self._wake.wait()
                continue
            await self._receive_one()

    # -- writing -----------------------------------------------------------------------

    async def _writer(self) -> None:
        buffer: list[Piece] = []
        try:
            for piece in self._pipeline.compose():
                if isinstance(piece, StreamedContent):
                    # What is queued goes with the first chunk: a message that
                    # fails while it is read (8-bit data without 8BITMIME)
                    # then sends nothing at all.
                    transaction = piece.transaction
                    if transaction.plan.bdat:
                        await self._write_bdat(transaction, buffer)
                    else:
                        await self._write_data(transaction, buffer)
                else:
                    await self._add(buffer, piece)
            await self._flush(buffer)
        finally:
            self._writer_done = True
            self._wake.set()

    async def _add(self, buffer: list[Piece], piece: Piece) -> None:
        """Queue a piece with the group, or send it at once if it is large."""
        if sum(len(p.data) for p in buffer) + len(piece.data) <= WRITE_COALESCE:
            buffer.append(piece)
            return
        await self._flush(buffer)
        if len(piece.data) <= WRITE_COALESCE:
            buffer.append(piece)
        else:
            await self._send([piece])

    async def _flush(self, buffer: list[Piece]) -> None:
        if buffer:
            pieces = list(buffer)
            buffer.clear()
            await self._send(pieces)

    async def _send(self, pieces: list[Piece]) -> None:
        """Write pieces in one go; their replies are owed from the start of the last block."""
        channel = self._channel
        for piece in pieces:
            if piece.commands:
                channel.log_commands(piece.commands)
            if piece.data_size:
                channel.log_data(piece.data_size)
        owed = [record for piece in pieces for record in piece.owed]

        def handed() -> None:
            Pipeline.mark_handed(owed)
            self._wake.set()

        data = pieces[0].data if len(pieces) == 1 else b"".join(p.data for p in pieces)
        action = (
            "sending the message data" if any(p.data_size for p in pieces) else ("sending commands")
        )
        try:
            await self._transport.send(
                data, action=action, timeout=self._transport.timeouts.data_block, before_last=handed
            )
        except (ServerDisconnectedError, TLSError):
            # The stream refused the block, so its last byte was not handed on
            # (on both backends a send that fails did not write all it was
            # given; TLS sends the ciphertext of the block last).  A timeout or
            # a cancellation may have left it on the wire: those stay handed.
            Pipeline.mark_handed(pieces[-1].owed, handed=False)
            raise

    async def _write_data(self, transaction: Transaction, buffer: list[Piece]) -> None:
        """Write the message data after 354, terminator included."""
        pipeline = self._pipeline
        content = transaction.submission.content
        if content.in_memory:
            await self._add(buffer, pipeline.data_end(transaction, content.encoded.data))
        else:
            encoder = BodyEncoder()
            async with aclosing(content.stream()) as chunks:
                async for chunk in chunks:
                    encoded = encoder.encode(chunk)
                    self._check_eight_bit(transaction, encoder.eight_bit)
                    if encoded:
                        await self._add(buffer, pipeline.data_chunk(encoded))
            await self._add(buffer, pipeline.data_end(transaction, encoder.finish()))

    @staticmethod
    def _check_eight_bit(transaction: Transaction, eight_bit: bool) -> None:
        if eight_bit and transaction.plan.check_eight_bit:
            raise ExtensionNotSupportedError("8BITMIME", "the message contains 8-bit data")

    async def _bdat_payloads(
        self, transaction: Transaction
    ) -> AsyncGenerator[tuple[bytes, bool], None]:
        """The BDAT payloads of a streamed message, each with whether it is the last."""
        content = transaction.submission.content
        encoder = None if transaction.plan.binary else BodyEncoder(dot_stuff=False)
        # Each read chunk becomes a BDAT chunk as it is (no copying into a
        # buffer); one is held back to learn whether it is the last.
        held = b""
        async with aclosing(content.stream()) as chunks:
            async for chunk in chunks:
                if encoder is not None:
                    chunk = encoder.encode(chunk)
                    self._check_eight_bit(transaction, encoder.eight_bit)
                if not chunk:
                    continue
                if held:
                    yield held, False
                held = chunk
        if encoder is not None:
            held += encoder.finish()
        yield held, True

    async def _write_bdat(self, transaction: Transaction, buffer: list[Piece] | None) -> None:
        """Send the data in BDAT chunks; stop early once a chunk is refused (RFC 3030 §2).

        Pipelined, chunks join ``buffer``; without it (lock step) each chunk
        is sent and answered before the next.
        """
        pipeline = self._pipeline
        lock_step = buffer is None
        queue: list[Piece] = [] if buffer is None else buffer

        async def chunk(piece: Piece) -> None:
            await self._add(queue, piece)
            if lock_step:
                await self._flush(queue)
                await self._receive_one()

        if transaction.submission.content.in_memory:
            for piece in pipeline.bdat_pieces(transaction, pipelined=not lock_step):
                await chunk(piece)
            return
        async with aclosing(self._bdat_payloads(transaction)) as payloads:
            async for payload, last in payloads:
                if transaction.chunk_refusal is not None:
                    if not lock_step:
                        await self._add(queue, pipeline.rset())
                    return
                await chunk(pipeline.bdat_chunk(transaction, payload, last=last))

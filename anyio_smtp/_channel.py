"""One SMTP session on one transport: the I/O piece the client and the engine share.

A :class:`Channel` owns the sans-I/O session, the transport, the transcript
(the ``anyio_smtp`` logger), the audit hook, and the single place a session
dies: :meth:`Channel.fatal` (and :meth:`Channel.run`, the same for one
awaitable).  Any exception escaping it -- an I/O error, a timeout, a
cancellation, a protocol violation, an unexpected reply -- closes the session
and the stream once, and emits exactly one ``SessionAborted`` event.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Final, TypeVar

import anyio

from ._errors import DataRefusedError, DeliveryUnknownError, ReplyError, ServiceUnavailableError
from ._protocol.commands import Command, Quit, Rset
from ._protocol.replies import Reply
from ._protocol.session import NEED_DATA, ReplyEvent, SMTPSession
from ._protocol.state import SessionState
from ._result import SendResult
from ._transaction import Delivery, Transaction
from ._transport import Transport
from .audit import (
    AuditEvent,
    AuditHook,
    DeliveryUnknown,
    MessageAccepted,
    MessageRejected,
    RecipientAccepted,
    RecipientRejected,
    SenderAccepted,
    SenderRejected,
    SessionAborted,
)

__all__ = ("QUIT_TIMEOUT", "Channel", "logger")

logger = logging.getLogger("anyio_smtp")

T = TypeVar("T")

#: Most seconds a polite close waits for the reply to QUIT (and an audit hook
#: called while a session dies may take).
QUIT_TIMEOUT: Final = 5.0


#: Numbers the sessions of this process, for their log records.
_session_numbers = itertools.count(1)


class Channel:
    """A session, its transport, its transcript and its audit hook.

    Every log record of the session starts with its identifier in brackets
    (``[s3] C: EHLO ...``) and carries it as ``record.smtp_session``, so the
    records of concurrent sessions can be told apart.
    """

    __slots__ = (
        "_audit",
        "_ended",
        "_extra",
        "_stream_closed",
        "id",
        "lmtp",
        "pipeline_after_end",
        "session",
        "transport",
    )

    def __init__(
        self, transport: Transport, *, audit: AuditHook | None = None, lmtp: bool = False
    ) -> None:
        #: Short and unique in this process: ``"s1"``, ``"s2"`` ...
        self.id = f"s{next(_session_numbers)}"
        self._extra = {"smtp_session": self.id}
        self.transport = transport
        self.session = SMTPSession(tls=transport.tls)
        self.lmtp = lmtp
        self._audit = audit
        self._stream_closed = False
        self._ended = False  # SessionQuit or SessionAborted was emitted
        #: Whether commands may follow an end of data in one write; turned off
        #: for the session by a server that refuses them (see ``_transaction``).
        self.pipeline_after_end = True

    def no_pipelining_after_end(self) -> None:
        """The server refused commands sent with an end of data: stop for this session."""
        if self.pipeline_after_end:
            self.pipeline_after_end = False
            self.log(
                "the server refused commands pipelined after the end of a message's data; "
                "each message now waits for the verdict on the one before",
                level=logging.INFO,
            )

    @property
    def closed(self) -> bool:
        return self.session.state is SessionState.CLOSED

    @property
    def stream_closed(self) -> bool:
        return self._stream_closed

    # -- the one place a session dies -------------------------------------------------

    @asynccontextmanager
    async def fatal(self) -> AsyncIterator[None]:
        """Any exception escaping the block closes the session and the stream."""
        try:
            yield
        except BaseException as exc:
            await self.abort(exc)
            raise

    async def run(self, awaitable: Awaitable[T]) -> T:
        """Await under the same rule as :meth:`fatal` (written out: once per round)."""
        try:
            return await awaitable
        except BaseException as exc:
            await self.abort(exc)
            raise

    async def abort(self, reason: BaseException | None) -> None:
        """Close the session and the stream; the first time, emit ``SessionAborted``."""
        self.session.close()
        await self.close_stream()
        if not self._ended:
            self._ended = True
            if reason is None:
                text, error = "closed without QUIT", None
            elif isinstance(reason, anyio.get_cancelled_exc_class()):
                text, error = "cancelled", type(reason).__name__
            else:
                text, error = str(reason) or type(reason).__name__, type(reason).__name__
            self.log("SMTP session aborted: %s", text)
            await self.emit_shielded(SessionAborted(text, error))

    async def close_stream(self) -> None:
        if not self._stream_closed:
            self._stream_closed = True
            with anyio.CancelScope(shield=True):
                await self.transport.aclose()

    def ended_politely(self) -> None:
        """QUIT was answered: no ``SessionAborted`` will follow."""
        self._ended = True

    # -- audit ------------------------------------------------------------------------

    async def emit(self, event: AuditEvent) -> None:
        """Give an event to the audit hook; its failures are logged, never raised."""
        if self._audit is None:
            return
        try:
            result = self._audit(event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.log(
                "the audit hook failed on a %r event",
                event.name,
                level=logging.ERROR,
                exc_info=True,
            )

    async def emit_shielded(self, event: AuditEvent) -> None:
        """Emit even while a cancellation ends the session; bounded, so a stuck hook can
        not hold the caller."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(QUIT_TIMEOUT):
            await self.emit(event)

    async def emit_transaction(self, transaction: Transaction) -> None:
        """The audit events of a settled transaction."""
        if self._audit is None or transaction.mail_reply is None:
            return
        mail_reply = transaction.mail_reply
        await self.emit(
            SenderAccepted(transaction.mail.sender, mail_reply)
            if mail_reply.is_positive
            else SenderRejected(transaction.mail.sender, mail_reply)
        )
        for rcpt, reply in zip(transaction.rcpts, transaction.rcpt_replies, strict=True):
            if reply is not None:
                await self.emit(
                    RecipientAccepted(rcpt.recipient, reply)
                    if reply.is_positive
                    else RecipientRejected(rcpt.recipient, reply)
                )
        outcome = transaction.outcome
        if isinstance(outcome, SendResult):
            await self.emit(MessageAccepted(outcome.reply, outcome.queue_id, outcome.accepted))
        elif isinstance(outcome, DataRefusedError):
            await self.emit(MessageRejected(outcome.command, outcome.reply))

    async def emit_lost(self, deliveries: Iterable[Delivery]) -> None:
        """``DeliveryUnknown`` for each message whose verdict the session's end lost."""
        if self._audit is None:
            return
        for delivery in deliveries:
            if isinstance(delivery.outcome, DeliveryUnknownError):
                await self.emit_shielded(
                    DeliveryUnknown(
                        delivery.submission.sender,
                        delivery.outcome.recipients,
                        str(delivery.outcome.cause),
                    )
                )

    # -- the transcript ---------------------------------------------------------------

    def log(
        self, message: str, *args: object, level: int = logging.DEBUG, exc_info: bool = False
    ) -> None:
        """Log one record of this session (``%``-style arguments, as ``logging`` takes)."""
        if logger.isEnabledFor(level):
            logger.log(
                level,
                "[%s] " + message,
                self.id,
                *args,
                exc_info=exc_info,
                extra=self._extra,
                stacklevel=2,
            )

    def log_commands(self, commands: Iterable[Command]) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            for command in commands:
                self.log("C: %s", command.log_line())

    def log_data(self, size: int) -> None:
        self.log("C: [message data, %d octets]", size)

    def log_reply(self, reply: Reply) -> None:
        # A 334 carries a SASL challenge: never shown.
        redact = reply.code == 334
        last = len(reply.lines) - 1
        for index, line in enumerate(reply.lines):
            separator = " " if index == last else "-"
            text = "[redacted]" if redact and line else line
            self.log("S: %d%s%s", reply.code, separator, text)

    # -- exchanges --------------------------------------------------------------------

    async def write(self, data: bytes, commands: Sequence[Command]) -> None:
        """Write commands' bytes (one deadline per block)."""
        self.log_commands(commands)
        await self.transport.send(
            data,
            action=f"sending {', '.join(command.name for command in commands)}",
            timeout=self.transport.timeouts.data_block,
        )

    async def command(self, command: Command) -> Reply:
        """Send one command and return its reply."""
        await self.write(self.session.send(command), (command,))
        return await self.reply()

    async def receive(self) -> ReplyEvent:
        """Receive the next reply, with the command it answers and its tag.

        A ``421`` is returned like any reply (the session is then CLOSED):
        call :meth:`raise_if_closing` once it is recorded.
        """
        session = self.session
        event = session.next_event()
        if event is NEED_DATA:
            awaiting = session.awaiting
            action = f"waiting for the reply to {awaiting.name if awaiting else 'a command'}"
            transport = self.transport
            # One deadline for the whole reply: a trickle of bytes does not extend it.
            with transport.deadline(action, transport.timeouts.for_reply(awaiting)):
                while (event := session.next_event()) is NEED_DATA:
                    session.receive_data(await transport.receive(action=action))
        if logger.isEnabledFor(logging.DEBUG):
            self.log_reply(event.reply)
        return event

    def raise_if_closing(self, event: ReplyEvent) -> None:
        """RFC 5321 §3.8: a ``421`` ends the session whatever it answers.

        :raises ServiceUnavailableError: the reply was such a ``421``
        """
        if (
            event.reply.code == 421
            and self.session.state is SessionState.CLOSED
            and not isinstance(event.command, Quit)
        ):
            raise ServiceUnavailableError(
                event.command.name if event.command else None, event.reply
            )

    async def reply(self) -> Reply:
        """Receive the next reply (for the oldest command still owed one)."""
        event = await self.receive()
        self.raise_if_closing(event)
        return event.reply

    async def reset(self) -> Reply:
        """RSET, which must get 250.

        :raises ReplyError: it did not
        """
        reply = await self.command(Rset())
        if reply.code != 250:
            raise ReplyError("RSET", reply)
        return reply

    async def reset_after(self, refusal: ReplyError) -> None:
        """Reset a refused transaction; if that fails the caller learns of both."""
        try:
            await self.reset()
        except ReplyError as exc:
            raise exc from refusal

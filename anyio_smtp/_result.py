"""What a successful send returns."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import TypeAlias

from ._errors import SMTPError
from ._protocol.replies import Reply

__all__ = ("Outcome", "SendBatch", "SendResult", "queue_id_of", "with_index")

# Queue ids in final replies: Postfix "queued as 4Xz...", Exim "id=1tX...-000A",
# Haraka "Message Queued (8F1C...-4B2C.1)".
_QUEUE_ID_PATTERNS = (
    re.compile(r"\bqueued as ([A-Za-z0-9]{6,})"),
    re.compile(r"\bid=([A-Za-z0-9-]{6,})"),
    re.compile(r"\bQueued \(([A-Za-z0-9.-]{6,})\)"),
)


@dataclass(frozen=True, slots=True)
class SendResult:
    """What became of a message the server accepted.

    :ivar reply: the server's final reply to the message
    :ivar accepted: the recipients the server accepted, in the order given
    :ivar rejected: each refused recipient and the server's reply to it
    :ivar per_recipient: with LMTP, the reply after the data for each recipient
        (delivered or not); empty for SMTP
    """

    reply: Reply
    accepted: tuple[str, ...]
    rejected: Mapping[str, Reply] = field(default_factory=lambda: MappingProxyType({}))
    #: LMTP (RFC 2033): each accepted recipient's own reply after the data.
    per_recipient: Mapping[str, Reply] = field(default_factory=lambda: MappingProxyType({}))
    #: In ``send_many``, the position of the message in the input (0 for the
    #: first); ``None`` for ``send_mail`` and ``send_message``.
    index: int | None = field(default=None, compare=False)

    @property
    def queue_id(self) -> str | None:
        """The server's queue id for the message, when its reply names one."""
        return queue_id_of(self.reply)


def queue_id_of(reply: Reply) -> str | None:
    """The queue id a final reply names (Postfix, Exim style), or None."""
    for pattern in _QUEUE_ID_PATTERNS:
        match = pattern.search(reply.message)
        if match:
            return match[1]
    return None


#: What ``send_many`` gives for each message.
Outcome: TypeAlias = SendResult | SMTPError


def with_index(outcome: Outcome, index: int | None) -> Outcome:
    """``outcome`` marked as the outcome of the message at ``index`` of a batch.

    A result is frozen, so it is copied.  An error is marked in place, unless
    it already belongs to another message (one session failure can be the
    outcome of several messages): then it is copied, so each keeps its own.
    """
    if isinstance(outcome, SendResult):
        return outcome if outcome.index == index else dataclasses.replace(outcome, index=index)
    if outcome.index == index or (outcome.index is None and index is not None):
        outcome.index = index
        return outcome
    clone = type(outcome).__new__(type(outcome), *outcome.args)
    clone.__dict__.update(outcome.__dict__)
    clone.__cause__ = outcome.__cause__
    clone.__context__ = outcome.__context__
    clone.__suppress_context__ = outcome.__suppress_context__
    clone.__traceback__ = outcome.__traceback__
    clone.index = index
    return clone


class SendBatch(AsyncGenerator[Outcome, None]):
    """The outcomes of one ``send_many`` call: an async generator, and what was left unread.

    Iterate it (inside ``contextlib.aclosing`` to leave early); each outcome
    carries ``.index``, its message's position in the input.  When the batch
    ends before every outcome was read (the loop was left, the task was
    cancelled), :attr:`unread` holds, in input order, the outcome of every
    message the batch had taken from the input that the caller did not read:
    a :class:`SendResult` for a message the server accepted,
    ``DeliveryUnknownError`` for one whose data went out but whose verdict
    was lost, or the error that says it was not delivered.  Messages never
    taken from the input were not sent at all.
    """

    __slots__ = ("_generator", "_unread")

    def __init__(self, generator: AsyncGenerator[Outcome, None], unread: list[Outcome]) -> None:
        self._generator = generator
        self._unread = unread

    @property
    def unread(self) -> tuple[Outcome, ...]:
        """Outcomes decided but not read when the batch ended early (empty until then)."""
        return tuple(self._unread)

    def __aiter__(self) -> SendBatch:
        return self

    async def __anext__(self) -> Outcome:
        return await self._generator.__anext__()

    async def asend(self, value: None, /) -> Outcome:
        return await self._generator.asend(value)

    async def athrow(
        self,
        typ: type[BaseException] | BaseException,
        val: object = None,
        tb: TracebackType | None = None,
        /,
    ) -> Outcome:
        if isinstance(typ, BaseException):
            exc = typ
        elif isinstance(val, BaseException):
            exc = val
        else:
            exc = typ() if val is None else typ(val)
        if tb is not None:
            exc = exc.with_traceback(tb)
        return await self._generator.athrow(exc)

    async def aclose(self) -> None:
        await self._generator.aclose()

    def __repr__(self) -> str:
        return f"<SendBatch unread={len(self._unread)}>"

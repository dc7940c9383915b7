"""The sending engine: one message or a batch, pipelined across transactions.

How this works
--------------

Every message becomes a ``Flight``: its MAIL/RCPT commands, its content, and
the replies they get.  With PIPELINING the engine works in *rounds*.  A round
writes one group and reads every reply that group is owed:

    [body of the message whose DATA got 354, "."]  [RSET]  [MAIL, RCPT..., DATA]

so in steady state a message costs one round trip: its data travels with the
next message's envelope (RFC 2920 §3.1 lets MAIL, RCPT and RSET go anywhere in
a group and DATA end it).  A message sent with BDAT (CHUNKING) needs no 354,
so its whole transaction fits in a group and the next ones can follow in the
same group, up to ``max_in_flight`` messages.

Inside a round a writer task and a reader task run side by side, so the
client never stops reading replies while it writes (no deadlock against a full
send buffer, RFC 2920 §3.3).  Replies are matched to the commands in order:
the engine keeps its own FIFO of expected replies ("slots"), in step with the
session's, and every reply is checked.

Rounds end with no task running, and only then are outcomes handed to the
caller (an async generator must not yield inside a task group).  Outcomes come
in input order, one per message: a ``SendResult`` or the message's own
``SMTPError``.  A failure of the session itself raises, after every message
that was in flight has been given an outcome saying whether it may have been
delivered.

Without PIPELINING each message goes strictly one command at a time, with the
same outcomes.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from email.message import Message
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeAlias

import anyio

from ._errors import (
    DataRefusedError,
    DeliveryUnknownError,
    ExtensionNotSupportedError,
    InvalidArgumentError,
    RecipientsRefusedError,
    RemoteProtocolError,
    ReplyError,
    SenderRefusedError,
    ServerDisconnectedError,
    SMTPError,
    SMTPTimeoutError,
)
from ._message import prepare_message
from ._protocol.body import TERMINATOR, BodyEncoder
from ._protocol.commands import Bdat, Command, Data, Mail, Rcpt, Rset, check_mailbox
from ._protocol.params import (
    DSN,
    Recipient,
    Transfer,
    TransferPlan,
    envelope_parameters,
    plan_transfer,
)
from ._protocol.replies import Reply
from ._protocol.state import SessionState
from ._result import SendResult
from ._source import Content, MessageSource

if TYPE_CHECKING:
    from ._client import SMTPClient

__all__ = (
    "BDAT_CHUNK",
    "DEFAULT_MAX_IN_FLIGHT",
    "BatchItem",
    "Engine",
    "Flight",
    "Job",
    "Options",
    "batch_jobs",
    "mail_job",
    "message_job",
    "recipient_list",
)

#: Most octets in one BDAT chunk of an in-memory message (a streamed one goes
#: in chunks as read, up to READ_CHUNK octets each).
BDAT_CHUNK = 1024 * 1024
#: Groups up to this size go out in one write.
WRITE_COALESCE = 64 * 1024
#: Messages a batch keeps in flight unless told otherwise.
DEFAULT_MAX_IN_FLIGHT = 16


@dataclass(frozen=True, slots=True)
class Options:
    """How to send: the same for every message of a call."""

    transfer: Transfer = "auto"
    dsn: DSN | None = None
    require_tls: bool = False

    def __post_init__(self) -> None:
        if self.dsn is not None and not isinstance(self.dsn, DSN):
            raise InvalidArgumentError("dsn must be an anyio_smtp.DSN")


@dataclass(slots=True)
class Job:
    """One message whose arguments are valid; not yet planned against the server."""

    sender: str
    recipients: tuple[str, ...]
    content: Content
    smtputf8: bool = False
    options: Options = field(default_factory=Options)
    #: Recipients given as :class:`Recipient`, with their own DSN requests.
    recipient_options: dict[str, Recipient] = field(default_factory=dict)


#: One message of a batch: an email message, or (sender, recipients, message).
BatchItem: TypeAlias = (
    Message | tuple[str, "str | Recipient | Iterable[str | Recipient]", MessageSource]
)


def recipient_list(
    recipients: str | Recipient | Iterable[str | Recipient],
) -> tuple[tuple[str, ...], dict[str, Recipient]]:
    """Validate recipients (addresses or :class:`Recipient`); drop repeats, keep the order.

    :return: the addresses, and the :class:`Recipient` objects by address
    """
    if isinstance(recipients, (str, Recipient)):
        recipients = (recipients,)
    addresses: dict[str, None] = {}
    options: dict[str, Recipient] = {}
    for entry in recipients:
        if isinstance(entry, Recipient):
            address = check_mailbox(entry.address, role="recipient")
            options[address] = entry
        else:
            address = check_mailbox(entry, role="recipient")
        addresses[address] = None
    if not addresses:
        raise InvalidArgumentError("there must be at least one recipient")
    return tuple(addresses), options


def message_job(
    message: Message,
    *,
    sender: str | None = None,
    recipients: str | Recipient | Iterable[str | Recipient] | None = None,
    options: Options = Options(),
) -> Job:
    """A job for an email message (envelope from its header fields unless given)."""
    if not isinstance(message, Message):
        raise InvalidArgumentError("send_message() takes an email.message.Message")
    if sender is not None:
        sender = check_mailbox(sender, role="sender", allow_null=True)
    overrides: dict[str, Recipient] = {}
    override = None
    if recipients is not None:
        addresses, overrides = recipient_list(recipients)
        override = list(addresses)
    prepared = prepare_message(message, sender=sender, recipients=override)
    addresses, _ = recipient_list(prepared.recipients)
    return Job(
        check_mailbox(prepared.sender, role="sender", allow_null=True),
        addresses,
        Content.of(prepared.data),
        smtputf8=prepared.smtputf8,
        options=options,
        recipient_options=overrides,
    )


def mail_job(
    sender: str,
    recipients: str | Recipient | Iterable[str | Recipient],
    message: MessageSource,
    *,
    size: int | None = None,
    options: Options = Options(),
) -> Job:
    """A job for ``send_mail`` arguments."""
    addresses, overrides = recipient_list(recipients)
    return Job(
        check_mailbox(sender, role="sender", allow_null=True),
        addresses,
        Content.of(message, size=size),
        options=options,
        recipient_options=overrides,
    )


def _item_job(item: object, options: Options) -> Job:
    if isinstance(item, Message):
        return message_job(item, options=options)
    if not isinstance(item, tuple) or len(item) != 3:
        raise InvalidArgumentError(
            "each message must be an email.message.Message or a (sender, recipients, message) tuple"
        )
    sender, recipients, message = item
    return mail_job(sender, recipients, message, options=options)


async def batch_jobs(
    messages: Iterable[BatchItem] | AsyncIterable[BatchItem], options: Options
) -> AsyncGenerator[Job | SMTPError, None]:
    """Jobs for a batch, read lazily; an invalid message becomes its own error."""
    if isinstance(messages, AsyncIterable):
        try:
            async for item in messages:
                yield _checked_job(item, options)
        finally:
            close = getattr(messages, "aclose", None)
            if close is not None:
                await close()
    else:
        for item in messages:
            yield _checked_job(item, options)


def _checked_job(item: object, options: Options) -> Job | SMTPError:
    try:
        return _item_job(item, options)
    except SMTPError as exc:
        return exc


class _Kind(enum.Enum):
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    CHUNK = "BDAT"
    FINAL = "final"  # the reply to the end of data or to BDAT LAST
    RSET = "RSET"


@dataclass(slots=True)
class _Slot:
    """A reply the engine is owed, and whose it is."""

    kind: _Kind
    flight: Flight | None  # None for RSET
    index: int = 0


class Flight:
    """One message on its way, with every reply it got."""

    __slots__ = (
        "chunk_refusal",
        "data_reply",
        "final_replies",
        "final_reply",
        "job",
        "lone_dot",
        "mail",
        "mail_reply",
        "message",
        "outcome",
        "plan",
        "rcpt_replies",
        "rcpts",
        "written",
    )

    def __init__(
        self,
        message: _Message,
        plan: TransferPlan,
        mail: Mail,
        rcpts: list[Rcpt],
    ) -> None:
        self.message = message
        self.job = message.job
        self.plan = plan
        self.mail = mail
        self.rcpts = rcpts
        #: LMTP (RFC 2033 §4.2): one reply per accepted recipient after the data.
        self.final_replies: list[Reply | None] = []
        self.mail_reply: Reply | None = None
        self.rcpt_replies: list[Reply | None] = [None] * len(self.rcpts)
        self.data_reply: Reply | None = None
        self.chunk_refusal: Reply | None = None
        self.final_reply: Reply | None = None
        #: The whole message (terminator or BDAT LAST) has been written.
        self.written = False
        #: DATA got 354 but nothing can be delivered: end it with a lone ".".
        self.lone_dot = False
        self.outcome: SendResult | SMTPError | None = None

    @property
    def accepted(self) -> tuple[str, ...]:
        return tuple(
            rcpt.recipient
            for rcpt, reply in zip(self.rcpts, self.rcpt_replies, strict=True)
            if reply is not None and reply.is_positive
        )

    @property
    def rejected(self) -> dict[str, Reply]:
        return {
            rcpt.recipient: reply
            for rcpt, reply in zip(self.rcpts, self.rcpt_replies, strict=True)
            if reply is not None and not reply.is_positive
        }

    def envelope_refusal(self) -> ReplyError | None:
        """The refusal of MAIL or of every RCPT, if the replies so far say so."""
        if self.mail_reply is not None and not self.mail_reply.is_positive:
            return SenderRefusedError(self.mail.sender, self.mail_reply)
        if all(reply is not None for reply in self.rcpt_replies) and not self.accepted:
            return RecipientsRefusedError(self.rejected)
        return None


class _Message:
    """A caller's message, sent in one transaction or, over recipient limits, several."""

    __slots__ = ("flights", "job", "outcome", "rcpt_parameters")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.flights: list[Flight] = []
        self.outcome: SendResult | SMTPError | None = None
        self.rcpt_parameters: dict[str, tuple[str, ...]] = {}

    def transaction(self, plan: TransferPlan, mail: Mail, recipients: Sequence[str]) -> Flight:
        flight = Flight(
            self, plan, mail, [Rcpt(r, self.rcpt_parameters.get(r, ())) for r in recipients]
        )
        self.flights.append(flight)
        return flight

    def after(self, flight: Flight) -> list[Flight]:
        """Settle a transaction; return the follow-up transactions it calls for.

        RFC 5321 §4.5.3.1.10: a server that reached its limit of RCPTs answers
        452 (some say 552); "the client SHOULD ... send the remaining recipients
        in a new transaction".  Only when this transaction delivered to someone
        (so a new one can make progress) and the message can be read again.
        """
        followups: list[Flight] = []
        if isinstance(flight.outcome, SendResult) and self.job.content.in_memory:
            over = [
                rcpt.recipient
                for rcpt, reply in zip(flight.rcpts, flight.rcpt_replies, strict=True)
                if reply is not None and reply.code in (452, 552) and _too_many(reply)
            ]
            if over:
                followups.append(self.transaction(flight.plan, flight.mail, over))
        if not followups and all(f.outcome is not None for f in self.flights):
            self.outcome = self._merge()
        return followups

    def _merge(self) -> SendResult | SMTPError:
        outcomes = [f.outcome for f in self.flights]
        if len(outcomes) == 1:
            assert outcomes[0] is not None
            return outcomes[0]
        accepted: dict[str, None] = {}
        rejected: dict[str, Reply] = {}
        per_recipient: dict[str, Reply] = {}
        last: SendResult | None = None
        for flight in self.flights:
            outcome = flight.outcome
            if isinstance(outcome, SendResult):
                last = outcome
                for address in outcome.accepted:
                    accepted[address] = None
                    rejected.pop(address, None)
                for address, reply in outcome.rejected.items():
                    if address not in accepted:
                        rejected[address] = reply
                per_recipient.update(outcome.per_recipient)
            elif isinstance(outcome, ReplyError):
                for rcpt in flight.rcpts:
                    if rcpt.recipient not in accepted:
                        rejected[rcpt.recipient] = (
                            outcome.rejected.get(rcpt.recipient, outcome.reply)
                            if isinstance(outcome, RecipientsRefusedError)
                            else outcome.reply
                        )
        if last is None:
            errors = [o for o in outcomes if isinstance(o, SMTPError)]
            if all(isinstance(e, RecipientsRefusedError) for e in errors):
                return RecipientsRefusedError(rejected)
            return errors[0]
        order = {address: index for index, address in enumerate(self.job.recipients)}
        return SendResult(
            last.reply,
            tuple(sorted(accepted, key=order.__getitem__)),
            MappingProxyType(rejected),
            MappingProxyType(per_recipient),
        )

    def lost(self, failure: SMTPError) -> SendResult | SMTPError:
        """The outcome when the session fails with some of this message's transactions open."""
        open_flights = [f for f in self.flights if f.outcome is None]
        if not open_flights:
            return self._merge()
        delivered = [f for f in self.flights if isinstance(f.outcome, SendResult)]
        # RFC 1047: the data went out to somebody and the verdict was lost.
        verdict_lost = any(f.written and f.accepted for f in open_flights) and isinstance(
            failure, (ServerDisconnectedError, SMTPTimeoutError, RemoteProtocolError)
        )
        if delivered or verdict_lost:
            # Some recipients may have it already: it must not be sent again blindly.
            recipients = tuple(r for f in delivered + open_flights for r in f.accepted)
            unknown = DeliveryUnknownError(recipients, failure)
            unknown.__cause__ = failure
            return unknown
        return failure


def _too_many(reply: Reply) -> bool:
    # 452 is the standard answer; with enhanced codes it says 4.5.3 (or 5.5.3 for 552).
    status = reply.enhanced_status
    return status is None or status.endswith(".5.3")


def split_recipients(
    recipients: Sequence[str], *, rcpt_max: int | None, domain_max: int | None
) -> list[list[str]]:
    """Group recipients so no transaction exceeds RCPTMAX or RCPTDOMAINMAX (RFC 9422 §5)."""
    groups: list[list[str]] = []
    current: list[str] = []
    domains: set[str] = set()
    for address in recipients:
        domain = address.rpartition("@")[2].lower()
        full = rcpt_max is not None and len(current) >= rcpt_max
        new_domain = domain not in domains
        if current and (
            full or (domain_max is not None and new_domain and len(domains) >= domain_max)
        ):
            groups.append(current)
            current, domains = [], set()
        current.append(address)
        domains.add(domain)
    if current:
        groups.append(current)
    return groups


class _Done:
    """A message settled before it was sent (invalid, or refused by the plan)."""

    __slots__ = ("outcome",)

    def __init__(self, outcome: SMTPError) -> None:
        self.outcome = outcome


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
    """Sends messages over one client (whose lock the caller holds)."""

    def __init__(self, client: SMTPClient, *, max_in_flight: int) -> None:
        self._client = client
        self._session = client._session
        self._transport = client._transport
        self._max_in_flight = max_in_flight
        self._slots: deque[_Slot] = deque()
        self._needs_rset = False
        self._last_refusal: ReplyError | None = None
        self._wake = anyio.Event()
        self._writer_done = False
        self._out = bytearray()
        #: (end offset in _out of what the reply answers, kind, flight, index)
        self._out_slots: list[tuple[int, _Kind, Flight | None, int]] = []

    @property
    def in_transaction(self) -> bool:
        """Whether a message is half way (replies owed, or a data phase open)."""
        return bool(self._session.pending) or self._session.state is not SessionState.READY

    # -- planning ----------------------------------------------------------------------

    def _plan(self, job: Job) -> _Message | _Done:
        """Plan a message against what the server offers (refusals before any I/O)."""
        capabilities = self._session.capabilities
        lmtp = self._client.lmtp
        try:
            plan = plan_transfer(
                capabilities,
                size=job.content.size,
                raw_size=job.content.raw_size,
                eight_bit=job.content.eight_bit,
                binary=job.content.binary,
                smtputf8=job.smtputf8
                or not job.sender.isascii()
                or not all(r.isascii() for r in job.recipients),
                # LMTP: one reply per recipient after the data; kept to DATA.
                transfer="data" if lmtp else job.options.transfer,
            )
            mail_parameters, rcpt_parameters = envelope_parameters(
                capabilities,
                tls=self._session.tls,
                recipients=job.recipients,
                dsn=job.options.dsn,
                recipient_options=job.recipient_options,
                require_tls=job.options.require_tls,
            )
            limits = capabilities.limits
            groups = split_recipients(
                job.recipients,
                rcpt_max=limits.get("RCPTMAX"),
                domain_max=limits.get("RCPTDOMAINMAX"),
            )
            if len(groups) > 1 and not job.content.in_memory:
                raise InvalidArgumentError(
                    "the server takes fewer recipients per transaction than this message "
                    "has, and a streamed message can be sent only once: pass it as bytes"
                )
        except SMTPError as exc:
            return _Done(exc)
        message = _Message(job)
        message.rcpt_parameters = dict(zip(job.recipients, rcpt_parameters, strict=True))
        mail = Mail(job.sender, plan.parameters + mail_parameters)
        for group in groups:
            message.transaction(plan, mail, group)
        return message

    # -- whole runs --------------------------------------------------------------------

    async def send_one(self, job: Job) -> SendResult | SMTPError:
        """Send one message; return its outcome or raise the session's failure."""

        async def one() -> AsyncGenerator[Job | SMTPError, None]:
            yield job

        outcome: SendResult | SMTPError | None = None
        try:
            async with aclosing(self.run(one())) as results:
                async for result in results:
                    outcome = result
        except SMTPError:
            # The session failed; if the message was fully sent, say that its
            # fate is unknown rather than that the connection broke.
            if isinstance(outcome, DeliveryUnknownError):
                raise outcome from outcome.__cause__
            raise
        assert outcome is not None
        return outcome

    async def run(
        self, jobs: AsyncGenerator[Job | SMTPError, None]
    ) -> AsyncGenerator[SendResult | SMTPError, None]:
        """Send ``jobs`` (and close it); yield one outcome per job, in order."""
        runner = self._run_pipelined if self._session.pipelining else self._run_lock_step
        async with aclosing(jobs), aclosing(runner(jobs)) as outcomes:
            async for outcome in outcomes:
                yield outcome

    async def _run_lock_step(
        self, jobs: AsyncGenerator[Job | SMTPError, None]
    ) -> AsyncGenerator[SendResult | SMTPError, None]:
        async for job in jobs:
            item = _Done(job) if isinstance(job, SMTPError) else self._plan(job)
            if isinstance(item, _Message):
                pending = deque(item.flights)
                try:
                    while pending:
                        flight = pending.popleft()
                        await self._client._in_session(self._lock_step(flight))
                        pending.extend(item.after(flight))
                except SMTPError as failure:
                    # The session failed: this message gets its outcome first.
                    item.outcome = item.lost(failure)
                    yield item.outcome
                    raise
            yield self._take(item)

    async def _lock_step(self, flight: Flight) -> None:
        """One transaction, one command at a time (no PIPELINING)."""
        client = self._client
        flight.mail_reply = await client._command(flight.mail)
        if flight.mail_reply.is_positive:
            for index, rcpt in enumerate(flight.rcpts):
                flight.rcpt_replies[index] = await client._command(rcpt)
            if flight.accepted:
                if flight.plan.bdat:
                    await self._write_bdat(flight, lock_step=True)
                else:
                    flight.data_reply = await client._command(Data())
                    if flight.data_reply.code == 354:
                        await self._write_data(flight)
                        await self._flush(expect=False)
                        if client.lmtp:
                            for index in range(len(flight.final_replies)):
                                flight.final_replies[index] = await self._client._reply()
                        else:
                            flight.final_reply = await self._client._reply()
        self._settle(flight)
        await client._emit_flight(flight)
        assert flight.outcome is not None
        if isinstance(flight.outcome, ReplyError):
            await client._reset_after(flight.outcome)

    async def _run_pipelined(
        self, jobs: AsyncGenerator[Job | SMTPError, None]
    ) -> AsyncGenerator[SendResult | SMTPError, None]:
        order: deque[_Message | _Done] = deque()
        pending: deque[Flight] = deque()  # planned transactions not started yet
        body_next: Flight | None = None  # DATA got 354: its data goes in the next group
        exhausted = False
        input_error: BaseException | None = None
        try:
            while True:
                new: list[Flight] = []
                while len(new) + (body_next is not None) < self._max_in_flight:
                    if not pending:
                        if exhausted:
                            break
                        try:
                            job = await anext(jobs)
                        except StopAsyncIteration:
                            exhausted = True
                            break
                        except Exception as exc:
                            # The caller's messages failed: finish what is in flight first.
                            exhausted, input_error = True, exc
                            break
                        item = _Done(job) if isinstance(job, SMTPError) else self._plan(job)
                        order.append(item)
                        if isinstance(item, _Message):
                            pending.extend(item.flights)
                        continue
                    flight = pending.popleft()
                    new.append(flight)
                    if not flight.plan.bdat:
                        break  # DATA ends the group: its 354 decides what follows
                if body_next is None and not new:
                    if self._needs_rset:
                        await self._client._in_session(self._round([], None))
                    while order:
                        yield self._take(order.popleft())
                    if input_error is not None:
                        raise input_error
                    return
                followups = await self._client._in_session(self._round(new, body_next))
                pending.extendleft(reversed(followups))
                body_next = next(
                    (flight for flight in new if flight.outcome is None and flight.data_reply),
                    None,
                )
                while order and order[0].outcome is not None:
                    yield self._take(order.popleft())
        except SMTPError as exc:
            # The session failed: say what became of every message in flight,
            # then let the failure through.
            for item in order:
                if item.outcome is None:
                    assert isinstance(item, _Message)
                    item.outcome = item.lost(exc)
            while order:
                yield self._take(order.popleft())
            raise

    @staticmethod
    def _take(item: _Message | _Done) -> SendResult | SMTPError:
        assert item.outcome is not None
        return item.outcome

    # -- one pipelined round -----------------------------------------------------------

    async def _round(self, new: list[Flight], body_next: Flight | None) -> list[Flight]:
        """Write one group while reading its replies; settle what they decide.

        :return: follow-up transactions (recipients over a server's limit)
        """
        self._writer_done = False
        try:
            if self._small(new, body_next):
                # One small write: the server can not fill our buffers before
                # we read, so no reader task is needed (it costs ~30 µs).
                await self._writer(new, body_next)
                while self._slots:
                    reply = await self._client._reply()
                    self._record(self._slots.popleft(), reply)
            else:
                self._wake = anyio.Event()
                async with anyio.create_task_group() as group:
                    group.start_soon(self._reader)
                    await self._writer(new, body_next)
        except BaseException as exc:
            error = _leaf(exc) if isinstance(exc, BaseExceptionGroup) else exc
            if isinstance(error, SMTPError):
                # Messages whose fate is already known keep it (a final 250
                # before a 421 was still a delivery).
                for flight in (body_next, *new):
                    if flight is not None and flight.outcome is None and self._decided(flight):
                        self._settle(flight)
                        flight.message.after(flight)
            if error is exc:
                raise
            raise error from None
        settled = [body_next] if body_next is not None else []
        for flight in new:
            if flight.plan.bdat or flight.data_reply is None or flight.data_reply.code != 354:
                settled.append(flight)
            elif flight.envelope_refusal() is not None:
                # RFC 2920 §3.1: DATA was accepted although nothing can be
                # delivered; the data phase must be ended with a lone ".".
                flight.lone_dot = True
        followups: list[Flight] = []
        for flight in settled:
            self._settle(flight)
            await self._client._emit_flight(flight)
            followups += flight.message.after(flight)
        return followups

    @staticmethod
    def _small(new: list[Flight], body_next: Flight | None) -> bool:
        """Whether a round's group surely fits in one coalesced write."""
        size = 0
        if body_next is not None:
            content = body_next.job.content
            if not content.in_memory:
                return False
            size += 3 if body_next.lone_dot else len(content.encoded.data)
        for flight in new:
            content = flight.job.content
            if not content.in_memory:
                return False
            size += 128 + sum(len(rcpt.recipient) + 64 for rcpt in flight.rcpts)
            if flight.plan.bdat:
                size += len(content.encoded.data) + 32
        return size <= WRITE_COALESCE // 2

    async def _writer(self, new: list[Flight], body_next: Flight | None) -> None:
        try:
            if body_next is not None:
                if body_next.lone_dot:
                    self._session.send_data(
                        TERMINATOR, end=True, replies=self._final_count(body_next)
                    )
                    self._queue(TERMINATOR, ())
                    self._expect_final(body_next)
                else:
                    await self._write_data(body_next)
            previous_bdat = False
            for flight in new:
                commands: list[Command] = []
                slots: list[tuple[_Kind, Flight | None, int]] = []
                if self._needs_rset or previous_bdat:
                    # A transaction before this one may still be open on the
                    # server; RSET closes it and is harmless otherwise.
                    commands.append(Rset())
                    slots.append((_Kind.RSET, None, 0))
                    self._needs_rset = False
                commands += [flight.mail, *flight.rcpts]
                slots.append((_Kind.MAIL, flight, 0))
                slots += [(_Kind.RCPT, flight, i) for i in range(len(flight.rcpts))]
                if not flight.plan.bdat:
                    commands.append(Data())
                    slots.append((_Kind.DATA, flight, 0))
                self._queue_commands(commands, slots)
                if flight.plan.bdat:
                    await self._write_bdat(flight, lock_step=False)
                    previous_bdat = True
            if not new and self._needs_rset:
                self._queue_commands([Rset()], [(_Kind.RSET, None, 0)])
                self._needs_rset = False
            await self._flush()
        finally:
            self._writer_done = True
            self._wake.set()

    async def _reader(self) -> None:
        while True:
            if not self._slots:
                if self._writer_done:
                    return
                self._wake = anyio.Event()
                if not self._slots and not self._writer_done:
                    await self._wake.wait()
                continue
            reply = await self._client._reply()
            self._record(self._slots.popleft(), reply)

    def _record(self, slot: _Slot, reply: Reply) -> None:
        flight = slot.flight
        if slot.kind is _Kind.RSET:
            if reply.code != 250:
                raise ReplyError("RSET", reply) from self._last_refusal
            return
        assert flight is not None
        if slot.kind is _Kind.MAIL:
            flight.mail_reply = reply
        elif slot.kind is _Kind.RCPT:
            flight.rcpt_replies[slot.index] = reply
        elif slot.kind is _Kind.DATA:
            flight.data_reply = reply
        elif slot.kind is _Kind.CHUNK:
            if not reply.is_positive and flight.chunk_refusal is None:
                flight.chunk_refusal = reply
        elif self._client.lmtp:
            flight.final_replies[slot.index] = reply
        else:
            flight.final_reply = reply

    def _expect(self, kind: _Kind, flight: Flight | None, index: int = 0) -> None:
        self._slots.append(_Slot(kind, flight, index))
        self._wake.set()

    # -- writing -----------------------------------------------------------------------

    def _queue(self, data: bytes, slots: Sequence[tuple[_Kind, Flight | None, int]]) -> None:
        """Add bytes, and the replies they will be owed, to the group being written."""
        self._out += data
        end = len(self._out)
        for kind, flight, index in slots:
            if end == 0 and kind is _Kind.FINAL and flight is not None:
                # Nothing waits to be written: the end of the message is on the wire.
                flight.written = True
            self._out_slots.append((end, kind, flight, index))

    def _queue_commands(
        self, commands: list[Command], slots: Sequence[tuple[_Kind, Flight | None, int]]
    ) -> None:
        self._client._log_commands(commands)
        self._queue(b"".join(self._session.send(command) for command in commands), slots)

    async def _flush(self, *, expect: bool = True) -> None:
        """Write what is queued, expecting (pipelined) the replies it is owed.

        Replies to commands are expected *before* their bytes are written, so
        the reader takes them while a long group is still going out (no
        deadlock against a server that answers as it reads, RFC 2920 §3.3).
        The verdict on a message is expected only once the end of its data is
        written, so a slow upload does not eat into its wait.
        """
        data, self._out = bytes(self._out), bytearray()
        slots, self._out_slots = self._out_slots, []
        if len(data) <= WRITE_COALESCE:
            # A small group goes in one write (one packet, no waiting in between).
            if expect:
                for _end, kind, flight, index in slots:
                    self._expect(kind, flight, index)
            if data:
                await self._send(data, "sending commands")
            for _end, kind, flight, _index in slots:
                if kind is _Kind.FINAL and flight is not None:
                    flight.written = True
            return
        sent = 0
        for end, kind, flight, index in slots:
            if kind is _Kind.FINAL:
                if end > sent:
                    await self._send(data[sent:end], "sending the message data")
                    sent = end
                if flight is not None:
                    flight.written = True  # the end of the message is on the wire
            if expect:
                self._expect(kind, flight, index)
        if len(data) > sent:
            await self._send(data[sent:], "sending commands")

    async def _send(self, data: bytes, action: str) -> None:
        await self._transport.send(data, action=action, timeout=self._transport.timeouts.data_block)

    async def _write_large(self, data: bytes, action: str) -> None:
        """Queue small data with the group; send large data at once (after the group)."""
        if len(self._out) + len(data) <= WRITE_COALESCE:
            self._queue(data, ())
        else:
            await self._flush()
            await self._send(data, action)

    async def _write_data(self, flight: Flight) -> None:
        """Write the message data after 354, terminator included."""
        content = flight.job.content
        if content.in_memory:
            data = content.encoded.data
            self._session.send_data(data, end=True, replies=self._final_count(flight))
            self._client._log_data(len(data))
            await self._write_large(data, "sending the message data")
        else:
            await self._flush()
            encoder = BodyEncoder()
            total = 0
            async with aclosing(content.stream()) as chunks:
                async for chunk in chunks:
                    encoded = encoder.encode(chunk)
                    self._check_eight_bit(flight, encoder.eight_bit)
                    if encoded:
                        total += len(encoded)
                        self._session.send_data(encoded)
                        await self._send(encoded, "sending the message data")
            tail = encoder.finish()
            self._session.send_data(tail, end=True, replies=self._final_count(flight))
            self._client._log_data(total + len(tail))
            self._queue(tail, ())
        self._expect_final(flight)

    def _final_count(self, flight: Flight) -> int:
        """Replies owed after the data: one, or with LMTP one per accepted recipient."""
        if not self._client.lmtp:
            return 1
        flight.final_replies = [None] * len(flight.accepted)
        return len(flight.final_replies)

    def _expect_final(self, flight: Flight) -> None:
        count = len(flight.final_replies) if self._client.lmtp else 1
        self._queue(b"", [(_Kind.FINAL, flight, index) for index in range(count)])
        if count == 0:
            flight.written = True

    @staticmethod
    def _check_eight_bit(flight: Flight, eight_bit: bool) -> None:
        if eight_bit and flight.plan.check_eight_bit:
            raise ExtensionNotSupportedError("8BITMIME", "the message contains 8-bit data")

    async def _bdat_chunks(self, flight: Flight) -> AsyncGenerator[tuple[bytes, bool], None]:
        """The BDAT payloads of a message, each with whether it is the last."""
        content = flight.job.content
        if content.in_memory:
            payload = content.bdat_payload(binary=flight.plan.binary)
            view = memoryview(payload)
            for start in range(0, max(len(view), 1), BDAT_CHUNK):
                end = start + BDAT_CHUNK
                yield bytes(view[start:end]), end >= len(view)
            return
        encoder = None if flight.plan.binary else BodyEncoder(dot_stuff=False)
        # Each read chunk becomes a BDAT chunk as it is (no copying into a
        # buffer); one is held back to learn whether it is the last.
        held = b""
        async with aclosing(content.stream()) as chunks:
            async for chunk in chunks:
                if encoder is not None:
                    chunk = encoder.encode(chunk)
                    self._check_eight_bit(flight, encoder.eight_bit)
                if not chunk:
                    continue
                if held:
                    yield held, False
                held = chunk
        if encoder is not None:
            held += encoder.finish()
        yield held, True

    async def _write_bdat(self, flight: Flight, *, lock_step: bool) -> None:
        """Send the data in BDAT chunks; stop early once a chunk is refused."""
        async with aclosing(self._bdat_chunks(flight)) as chunks:
            async for payload, last in chunks:
                if flight.chunk_refusal is not None:
                    # RFC 3030 §2: after a refused chunk no more of this message
                    # is sent; the transaction is reset (here, or by the caller).
                    if not lock_step:
                        self._queue_commands([Rset()], [(_Kind.RSET, None, 0)])
                    return
                command = Bdat(len(payload), last)
                self._queue_commands([command], ())
                self._client._log_data(len(payload))
                await self._write_large(payload, "sending BDAT data")
                self._queue(b"", [(_Kind.FINAL if last else _Kind.CHUNK, flight, 0)])
                if not lock_step:
                    continue
                await self._flush(expect=False)
                if last:
                    flight.final_reply = await self._client._reply()
                else:
                    reply = await self._client._reply()
                    if not reply.is_positive:
                        flight.chunk_refusal = reply

    # -- outcomes ----------------------------------------------------------------------

    def _decided(self, flight: Flight) -> bool:
        """Whether the replies so far settle a flight's outcome."""
        if flight.lone_dot:
            return True  # nothing could be delivered, whatever the "." got
        if self._client.lmtp and flight.final_replies:
            return all(reply is not None for reply in flight.final_replies)
        if flight.final_reply is not None:
            return True
        return flight.data_reply is not None and flight.data_reply.code != 354

    def _settle(self, flight: Flight) -> None:
        """Decide a flight's outcome from its replies."""
        if self._client.lmtp and flight.final_replies and not flight.lone_dot:
            self._settle_lmtp(flight)
            return
        refusal = flight.envelope_refusal()
        if refusal is None:
            if flight.data_reply is not None and flight.data_reply.code != 354:
                refusal = DataRefusedError("DATA", flight.data_reply)
            elif flight.chunk_refusal is not None:
                refusal = DataRefusedError("BDAT", flight.chunk_refusal)
            elif flight.final_reply is not None and not flight.final_reply.is_positive:
                refusal = DataRefusedError(
                    "BDAT" if flight.plan.bdat else "end of data", flight.final_reply
                )
        if refusal is not None:
            flight.outcome = refusal
            self._needs_rset = True
            self._last_refusal = refusal
            return
        assert flight.final_reply is not None
        flight.outcome = SendResult(
            flight.final_reply, flight.accepted, MappingProxyType(flight.rejected)
        )

    def _settle_lmtp(self, flight: Flight) -> None:
        """RFC 2033 §4.2: each accepted recipient got its own reply after the data."""
        rejected = flight.rejected
        delivered: list[str] = []
        per_recipient: dict[str, Reply] = {}
        last: Reply | None = None
        for address, reply in zip(flight.accepted, flight.final_replies, strict=True):
            assert reply is not None
            per_recipient[address] = reply
            if reply.is_positive:
                delivered.append(address)
                last = reply
            else:
                rejected[address] = reply
        if last is None:
            refusal = RecipientsRefusedError(rejected)
            flight.outcome = refusal
            self._needs_rset = True
            self._last_refusal = refusal
            return
        flight.outcome = SendResult(
            last, tuple(delivered), MappingProxyType(rejected), MappingProxyType(per_recipient)
        )

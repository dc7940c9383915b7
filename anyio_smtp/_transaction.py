"""Mail transactions without I/O: what to send for each message, and what became of it.

How this works
--------------

A caller's message is a :class:`Submission` (arguments checked).  Planned
against the server's capabilities it becomes a :class:`Delivery`: one or more
:class:`Transaction` objects (more than one only when the server limits the
recipients per transaction, RFC 9422), and, in the end, exactly one outcome:
a :class:`SendResult` or an :class:`SMTPError`.

Every command sent is tagged with an :class:`Owed` record, "a reply this
command is owed, and whose it is".  The tag travels through the sans-I/O
session's one queue of replies still owed and comes back with the reply, so
replies can not be paired with the wrong message.

:class:`Pipeline` composes the bytes of each pipelined group in wire order
(RFC 2920 §3.1: the data of the message whose ``DATA`` got 354, then the next
messages' ``MAIL``, ``RCPT``... ``DATA`` or their ``BDAT`` chunks), records each
reply, and settles outcomes.  The I/O layer (``_engine``) only writes what it
is given, marks what it has handed to the transport, and feeds replies back.

The rule every outcome follows (RFC 5321 §6.1, RFC 1047): a message is
*certainly not delivered* only when the server can not have accepted it: its
terminator (the final ``.`` line, or the whole ``BDAT ... LAST`` chunk) was never
handed to the transport, or a reply that did arrive refused it (MAIL refused,
every RCPT refused, no 354, a BDAT chunk refused).  When the session dies
otherwise before the verdict, the outcome is :class:`DeliveryUnknownError`,
which is never retried automatically.  A piece of data counts as handed as
soon as a write containing its end was *started*: a write that fails may
still have put those bytes on the wire.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from ._errors import (
    DataRefusedError,
    DeliveryUnknownError,
    InvalidArgumentError,
    LocalProtocolError,
    RecipientsRefusedError,
    ReplyError,
    SenderRefusedError,
    SMTPError,
)
from ._message import prepare_message
from ._protocol.body import TERMINATOR
from ._protocol.capabilities import Capabilities
from ._protocol.commands import Bdat, Command, Data, Mail, Rcpt, Rset, check_mailbox
from ._protocol.params import (
    DSN,
    Recipient,
    Transfer,
    TransferPlan,
    envelope_parameters,
    envelope_smtputf8,
    plan_transfer,
)
from ._protocol.replies import Reply
from ._protocol.session import ReplyEvent, SMTPSession
from ._result import SendResult
from ._source import Content, check_streamed
from ._types import BatchItem, MessageBody, Recipients, is_email_message

if TYPE_CHECKING:
    from email.message import Message

__all__ = (
    "BDAT_CHUNK",
    "BatchItem",
    "Delivery",
    "Kind",
    "Options",
    "Owed",
    "Piece",
    "Pipeline",
    "StreamedContent",
    "Submission",
    "Transaction",
    "check_mail",
    "item_submission",
    "mail_submission",
    "message_submission",
    "plan",
    "recipient_list",
    "split_recipients",
)

#: Most octets in one BDAT chunk of an in-memory message (a streamed one goes
#: in chunks as read).
BDAT_CHUNK = 1024 * 1024


# -- what the caller asked for -------------------------------------------------------


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
class Submission:
    """A caller's message whose arguments are valid; not yet planned against the server."""

    sender: str
    recipients: tuple[str, ...]
    content: Content
    smtputf8: bool = False
    options: Options = field(default_factory=Options)
    #: Recipients given as :class:`Recipient`, with their own DSN requests.
    recipient_options: dict[str, Recipient] = field(default_factory=dict)


def recipient_list(recipients: Recipients) -> tuple[tuple[str, ...], dict[str, Recipient]]:
    """Validate recipients (addresses or :class:`Recipient`); drop repeats, keep the order.

    :return: the addresses, and the :class:`Recipient` objects by address
    :raises InvalidArgumentError: an address is invalid, or there is none
    """
    if isinstance(recipients, (str, Recipient)):
        recipients = (recipients,)
    elif isinstance(recipients, (bytes, bytearray, memoryview)) or not isinstance(
        recipients, Iterable
    ):
        raise InvalidArgumentError(
            "the recipients must be an address (str), a Recipient or an iterable of them, "
            f"not {type(recipients).__name__}"
        )
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


def message_submission(
    message: Message,
    *,
    sender: str | None = None,
    recipients: Recipients | None = None,
    options: Options = Options(),
) -> Submission:
    """A submission for an email message (envelope from its header fields unless given)."""
    if not is_email_message(message):
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
    return Submission(
        check_mailbox(prepared.sender, role="sender", allow_null=True),
        addresses,
        Content.of(prepared.data),
        smtputf8=prepared.smtputf8,
        options=options,
        recipient_options=overrides,
    )


def mail_submission(
    sender: str,
    recipients: Recipients,
    message: MessageBody,
    *,
    size: int | None = None,
    options: Options = Options(),
) -> Submission:
    """A submission for ``send_mail`` arguments.

    An email message as ``message`` is serialised as ``send_message`` does
    (its policy, CRLF, Bcc and Resent-Bcc removed), with this envelope.
    """
    addresses, overrides = recipient_list(recipients)
    sender = check_mailbox(sender, role="sender", allow_null=True)
    smtputf8 = False
    if is_email_message(message):
        # Imported here: the email package is loaded only for email messages.
        from ._message import prepare_message

        prepared = prepare_message(message, sender=sender, recipients=list(addresses))
        content = Content.of(prepared.data)
        smtputf8 = prepared.smtputf8
    else:
        content = Content.of(message, size=size)
    return Submission(
        sender,
        addresses,
        content,
        smtputf8=smtputf8,
        options=options,
        recipient_options=overrides,
    )


def check_mail(sender: str, recipients: Recipients, message: MessageBody) -> list[str | Recipient]:
    """Refuse bad ``send_mail`` arguments without reading or encoding the message.

    :return: the recipients, read once (they may come from an iterator)
    :raises InvalidArgumentError: as :func:`mail_submission` would
    """
    addresses, options = recipient_list(recipients)
    check_mailbox(sender, role="sender", allow_null=True)
    if not (isinstance(message, (bytes, bytearray, memoryview, str)) or is_email_message(message)):
        check_streamed(message)
    return [options.get(address, address) for address in addresses]


def item_submission(item: object, options: Options) -> Submission | SMTPError:
    """A submission for one batch item; an invalid item becomes its own error."""
    try:
        if is_email_message(item):
            return message_submission(item, options=options)
        if not isinstance(item, tuple) or len(item) != 3:
            raise InvalidArgumentError(
                "each message must be an email.message.Message or a "
                "(sender, recipients, message) tuple"
            )
        sender, recipients, message = item
        return mail_submission(sender, recipients, message, options=options)
    except SMTPError as exc:
        return exc


# -- replies owed ----------------------------------------------------------------------


class Kind(enum.Enum):
    """What a reply owed answers."""

    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    CHUNK = "BDAT"  #: a BDAT chunk that is not the last
    FINAL = "final"  #: the end of data or BDAT LAST: the verdict on the message
    RSET = "RSET"


@dataclass(slots=True, eq=False)
class Owed:
    """A reply a command is owed, and whose it is.

    ``handed`` turns true when a write holding the command's last byte was
    started; only then is its reply waited for.
    """

    kind: Kind
    transaction: Transaction | None  # None for RSET
    index: int = 0
    handed: bool = False
    #: Sent in the same group as, and after, another message's end of data.
    after_end: bool = False


# -- one transaction -------------------------------------------------------------------


class Transaction:
    """One MAIL ... end-of-data exchange of a delivery, with every reply it got."""

    __slots__ = (
        "chunk_refusal",
        "closing",
        "data_reply",
        "delivery",
        "finals",
        "lmtp",
        "lone_dot",
        "mail",
        "mail_reply",
        "outcome",
        "pipelined_after_end",
        "plan",
        "rcpt_replies",
        "rcpts",
        "terminator_handed",
    )

    def __init__(
        self, delivery: Delivery, plan: TransferPlan, mail: Mail, rcpts: list[Rcpt], *, lmtp: bool
    ) -> None:
        self.delivery = delivery
        self.plan = plan
        self.mail = mail
        self.rcpts = rcpts
        self.lmtp = lmtp
        #: Its commands were sent in the same group as an earlier end of data.
        self.pipelined_after_end = False
        self.reset()

    def reset(self) -> None:
        """Forget every reply: the server did not take up any of its commands."""
        self.mail_reply: Reply | None = None
        self.rcpt_replies: list[Reply | None] = [None] * len(self.rcpts)
        self.data_reply: Reply | None = None
        self.chunk_refusal: Reply | None = None
        #: A ``421`` answered one of its commands: the server closed instead
        #: of deciding (RFC 5321 §3.8), so nothing was accepted.
        self.closing: Reply | None = None
        #: Replies after the data: one, or with LMTP one per accepted recipient
        #: (RFC 2033 §4.2).  Sized when the end of the data is sent.
        self.finals: list[Reply | None] = []
        #: A write holding the end of the data (or BDAT LAST) was started.
        self.terminator_handed = False
        #: DATA got 354 but nothing can be delivered: end it with a lone ".".
        self.lone_dot = False
        self.outcome: SendResult | SMTPError | None = None

    @property
    def refused_as_pipelined(self) -> bool:
        """Whether the server refused its ``MAIL`` for arriving too early.

        Some servers (Haraka, for one) refuse every command that arrives in
        the same write as the end of an earlier message's data, with ``503``
        (bad sequence of commands).  ``503`` to ``MAIL`` says the server did not
        take the transaction up at all: it is about how the commands were sent,
        never a verdict on this message, so the message can be sent again.
        """
        return (
            self.pipelined_after_end
            and self.mail_reply is not None
            and self.mail_reply.code == 503
            and self.closing is None
            and (self.data_reply is None or self.data_reply.code != 354)
        )

    @property
    def submission(self) -> Submission:
        return self.delivery.submission

    @property
    def accepted(self) -> tuple[str, ...]:
        """Recipients whose RCPT was accepted."""
        return tuple(
            rcpt.recipient
            for rcpt, reply in zip(self.rcpts, self.rcpt_replies, strict=True)
            if reply is not None and reply.is_positive
        )

    @property
    def rejected(self) -> dict[str, Reply]:
        """Recipients whose RCPT was refused, with the refusal."""
        return {
            rcpt.recipient: reply
            for rcpt, reply in zip(self.rcpts, self.rcpt_replies, strict=True)
            if reply is not None and not reply.is_positive
        }

    def record(self, owed: Owed, reply: Reply) -> None:
        """Keep the reply to one of this transaction's commands."""
        if reply.code == 421:
            self.closing = reply
            return
        kind = owed.kind
        if kind is Kind.MAIL:
            self.mail_reply = reply
        elif kind is Kind.RCPT:
            self.rcpt_replies[owed.index] = reply
        elif kind is Kind.DATA:
            self.data_reply = reply
        elif kind is Kind.CHUNK:
            if not reply.is_positive and self.chunk_refusal is None:
                self.chunk_refusal = reply
        elif kind is Kind.FINAL:
            self.finals[owed.index] = reply

    def expect_finals(self) -> list[Owed]:
        """The replies owed after the data, now that it ends."""
        count = len(self.accepted) if self.lmtp else 1
        self.finals = [None] * count
        return [Owed(Kind.FINAL, self, index) for index in range(count)]

    def envelope_refusal(self) -> ReplyError | None:
        """The refusal of MAIL or of every RCPT, if the replies so far say so."""
        if self.mail_reply is not None and not self.mail_reply.is_positive:
            return SenderRefusedError(self.mail.sender, self.mail_reply)
        if all(reply is not None for reply in self.rcpt_replies) and not self.accepted:
            return RecipientsRefusedError(self.rejected)
        return None

    def refusal(self) -> ReplyError | None:
        """The reply that refused this transaction before its verdict, if one did."""
        refusal = self.envelope_refusal()
        if refusal is not None:
            return refusal
        if self.data_reply is not None and self.data_reply.code != 354:
            return DataRefusedError("DATA", self.data_reply)
        if self.chunk_refusal is not None:
            return DataRefusedError("BDAT", self.chunk_refusal)
        return None

    @property
    def decided(self) -> bool:
        """Whether the replies so far settle the outcome."""
        if self.lone_dot:
            return True  # nothing could be delivered, whatever the "." got
        if self.finals and all(reply is not None for reply in self.finals):
            return True
        if self.closing is not None and self._some_final_positive():
            # LMTP: the server closed after delivering to some recipients, so
            # the others did not get it (RFC 2033 §4.2, RFC 5321 §3.8).
            return True
        return self.data_reply is not None and self.data_reply.code != 354

    @property
    def certainly_undelivered(self) -> bool:
        """Whether the server can not have accepted this transaction (RFC 5321 §6.1)."""
        if self._some_final_positive():
            return False  # LMTP (RFC 2033 §4.2): some recipient has it already
        return (
            not self.terminator_handed
            or self.lone_dot
            or self.closing is not None
            or self.refusal() is not None
        )

    def _some_final_positive(self) -> bool:
        return self.lmtp and any(reply is not None and reply.is_positive for reply in self.finals)

    def settle(self) -> None:
        """Decide the outcome from the replies (``decided`` must be true)."""
        if self.lmtp and self.finals and not self.lone_dot:
            self._settle_lmtp()
            return
        refusal = self.refusal()
        if refusal is None:
            final = self.finals[0] if self.finals else None
            assert final is not None
            if not final.is_positive:
                refusal = DataRefusedError("BDAT" if self.plan.bdat else "end of data", final)
            else:
                self.outcome = SendResult(final, self.accepted, MappingProxyType(self.rejected))
                return
        self.outcome = refusal

    def _settle_lmtp(self) -> None:
        """RFC 2033 §4.2: each accepted recipient got its own reply after the data."""
        rejected = self.rejected
        delivered: list[str] = []
        per_recipient: dict[str, Reply] = {}
        last: Reply | None = None
        for address, final in zip(self.accepted, self.finals, strict=True):
            reply = final or self.closing
            assert reply is not None
            per_recipient[address] = reply
            if reply.is_positive:
                delivered.append(address)
                last = reply
            else:
                rejected[address] = reply
        if last is None:
            self.outcome = RecipientsRefusedError(rejected)
            return
        self.outcome = SendResult(
            last, tuple(delivered), MappingProxyType(rejected), MappingProxyType(per_recipient)
        )

    def maybe_delivered_to(self) -> tuple[str, ...]:
        """Recipients that may have the message, the verdict being lost."""
        if self.certainly_undelivered:
            return ()
        if self.lmtp and self.finals:
            # After a 421 the server took no more: only the recipients it
            # answered positively have the message.
            return tuple(
                address
                for address, reply in zip(self.accepted, self.finals, strict=True)
                if (reply is None and self.closing is None)
                or (reply is not None and reply.is_positive)
            )
        # Recipients still unanswered may have been accepted too.
        return tuple(
            rcpt.recipient
            for rcpt, reply in zip(self.rcpts, self.rcpt_replies, strict=True)
            if reply is None or reply.is_positive
        )


# -- one caller's message --------------------------------------------------------------


class Delivery:
    """A caller's message, in one transaction or (over recipient limits) several.

    A delivery refused by the plan, or an invalid batch item, has no
    transactions and its outcome from the start.
    """

    __slots__ = ("outcome", "rcpt_parameters", "submission", "transactions")

    def __init__(
        self, submission: Submission | None, outcome: SendResult | SMTPError | None = None
    ) -> None:
        self.submission: Submission = submission  # type: ignore[assignment]
        self.transactions: list[Transaction] = []
        self.outcome = outcome
        self.rcpt_parameters: dict[str, tuple[str, ...]] = {}

    @classmethod
    def settled(cls, outcome: SMTPError) -> Delivery:
        """A delivery that ends before anything is sent."""
        return cls(None, outcome)

    def transaction(
        self, plan: TransferPlan, mail: Mail, recipients: Sequence[str], *, lmtp: bool
    ) -> Transaction:
        rcpts = [Rcpt(r, self.rcpt_parameters.get(r, ()), mail.idna) for r in recipients]
        transaction = Transaction(self, plan, mail, rcpts, lmtp=lmtp)
        self.transactions.append(transaction)
        return transaction

    def after(self, transaction: Transaction) -> list[Transaction]:
        """Note a settled transaction; return the follow-up transactions it calls for.

        RFC 5321 §4.5.3.1.10: a server that reached its limit of RCPTs answers
        452 (some say 552); "the client SHOULD ... send the remaining recipients
        in a new transaction".  Only when this transaction delivered to someone
        (so a new one makes progress) and the message can be read again.
        """
        followups: list[Transaction] = []
        if isinstance(transaction.outcome, SendResult) and self.submission.content.in_memory:
            over = [
                rcpt.recipient
                for rcpt, reply in zip(transaction.rcpts, transaction.rcpt_replies, strict=True)
                if reply is not None and reply.code in (452, 552) and _too_many(reply)
            ]
            if over:
                followups.append(
                    self.transaction(
                        transaction.plan, transaction.mail, over, lmtp=transaction.lmtp
                    )
                )
        if not followups and all(t.outcome is not None for t in self.transactions):
            self.outcome = self._merge()
        return followups

    def _merge(self) -> SendResult | SMTPError:
        outcomes = [t.outcome for t in self.transactions]
        if len(outcomes) == 1:
            assert outcomes[0] is not None
            return outcomes[0]
        accepted: dict[str, None] = {}
        rejected: dict[str, Reply] = {}
        per_recipient: dict[str, Reply] = {}
        last: SendResult | None = None
        for transaction in self.transactions:
            outcome = transaction.outcome
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
                for rcpt in transaction.rcpts:
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
        order = {address: index for index, address in enumerate(self.submission.recipients)}
        return SendResult(
            last.reply,
            tuple(sorted(accepted, key=order.__getitem__)),
            MappingProxyType(rejected),
            MappingProxyType(per_recipient),
        )

    def lost(self, failure: SMTPError) -> SendResult | SMTPError:
        """The outcome when the session fails with some of this message's transactions open.

        ``failure`` itself (a certain non-delivery, which may be retried) only
        when no transaction may have delivered; otherwise
        :class:`DeliveryUnknownError` naming who may have the message.
        """
        open_transactions = [t for t in self.transactions if t.outcome is None]
        if not open_transactions:
            return self._merge()
        for transaction in open_transactions:
            if transaction.decided or transaction.refusal() is not None:
                # A verdict (or a refusal) that arrived before the failure still counts.
                transaction.settle()
        delivered = [t for t in self.transactions if isinstance(t.outcome, SendResult)]
        maybe: dict[str, None] = {}
        for transaction in delivered:
            assert isinstance(transaction.outcome, SendResult)
            maybe.update(dict.fromkeys(transaction.outcome.accepted))
        undecided = [t for t in self.transactions if t.outcome is None]
        unknown = any(not t.certainly_undelivered for t in undecided)
        for transaction in undecided:
            maybe.update(dict.fromkeys(transaction.maybe_delivered_to()))
        if not undecided:
            return self._merge()
        if delivered or unknown:
            # Some recipients may have it already: it must not be sent again blindly.
            error = DeliveryUnknownError(tuple(maybe), failure)
            error.__cause__ = failure
            return error
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


def plan(submission: Submission, capabilities: Capabilities, *, tls: bool, lmtp: bool) -> Delivery:
    """Plan a message against what the server offers (refusals before any I/O)."""
    try:
        smtputf8 = envelope_smtputf8(
            submission.sender, submission.recipients, content=submission.smtputf8
        )
        transfer = plan_transfer(
            capabilities,
            size=submission.content.size,
            raw_size=submission.content.raw_size,
            eight_bit=submission.content.eight_bit,
            binary=submission.content.binary,
            smtputf8=smtputf8,
            # LMTP: one reply per recipient after the data; kept to DATA.
            transfer="data" if lmtp else submission.options.transfer,
        )
        mail_parameters, rcpt_parameters = envelope_parameters(
            capabilities,
            tls=tls,
            recipients=submission.recipients,
            dsn=submission.options.dsn,
            recipient_options=submission.recipient_options,
            require_tls=submission.options.require_tls,
        )
        limits = capabilities.limits
        groups = split_recipients(
            submission.recipients,
            rcpt_max=limits.get("RCPTMAX"),
            domain_max=limits.get("RCPTDOMAINMAX"),
        )
        if len(groups) > 1 and not submission.content.in_memory:
            raise InvalidArgumentError(
                "the server takes fewer recipients per transaction than this message "
                "has, and a streamed message can be sent only once: pass it as bytes"
            )
    except SMTPError as exc:
        return Delivery.settled(exc)
    delivery = Delivery(submission)
    delivery.rcpt_parameters = dict(zip(submission.recipients, rcpt_parameters, strict=True))
    mail = Mail(submission.sender, transfer.parameters + mail_parameters, idna=not smtputf8)
    for group in groups:
        delivery.transaction(transfer, mail, group, lmtp=lmtp)
    return delivery


# -- pipelined groups ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes to write, and the replies owed once they are handed to the transport."""

    data: bytes
    owed: tuple[Owed, ...] = ()
    #: For the transcript: the commands in ``data``, and how many octets of
    #: message data it holds.
    commands: tuple[Command, ...] = ()
    data_size: int = 0


@dataclass(frozen=True, slots=True)
class StreamedContent:
    """The content of a streamed message goes here: the I/O layer reads and sends it."""

    transaction: Transaction


class Pipeline:
    """The sans-I/O sending engine: messages in, groups of bytes out, replies in, outcomes out.

    The I/O layer loop is::

        while there is work:
            add() messages while wants_more(), without waiting when holding()
            for piece in compose(): write it (mark_handed first)
            feed every reply to record()
            finish_round(); hand out take_outcomes()

    and, when the session fails, ``fail(error)`` settles every message in flight.
    """

    def __init__(self, session: SMTPSession, *, lmtp: bool, max_in_flight: int) -> None:
        self.session = session
        self.lmtp = lmtp
        self.max_in_flight = max_in_flight
        #: Every delivery not yet handed out, in input order.
        self.order: deque[Delivery] = deque()
        #: Transactions planned and not yet started.
        self.pending: deque[Transaction] = deque()
        #: DATA got 354: its data goes first in the next group.
        self.body_next: Transaction | None = None
        #: The transactions whose commands the group being composed starts.
        self.new: list[Transaction] = []
        #: A transaction may be open on the server: the next group starts with RSET.
        self.needs_rset = False
        #: The latest refusal (the cause, should the RSET after it fail).
        self.last_refusal: ReplyError | None = None
        #: Whether commands may follow an end of data in the same group.  A
        #: server that refuses them (``503``, see
        #: :attr:`Transaction.refused_as_pipelined`) turns this off for the
        #: rest of the session: the next message's commands then wait for
        #: the verdict on the previous one.
        self.pipeline_after_end = True

    # -- input ---------------------------------------------------------------------

    def add(self, item: Submission | SMTPError) -> Delivery:
        """Plan a message (or keep an invalid item's error) in input order."""
        if isinstance(item, SMTPError):
            delivery = Delivery.settled(item)
        else:
            delivery = plan(item, self.session.capabilities, tls=self.session.tls, lmtp=self.lmtp)
        self.order.append(delivery)
        self.pending.extend(delivery.transactions)
        return delivery

    def _take_pending(self) -> None:
        while self.pending and self.wants_more():
            transaction = self.pending.popleft()
            self.new.append(transaction)

    def wants_more(self) -> bool:
        """Whether the next group has room for another message's commands.

        ``DATA`` ends a group (RFC 2920 §3.1): its 354 decides what follows.
        """
        if self.new and not self.new[-1].plan.bdat:
            return False
        if not self.pipeline_after_end and (self.body_next is not None or self.new):
            # Each end of data (after 354, or BDAT LAST) closes its group.
            return False
        return len(self.new) + (self.body_next is not None) < self.max_in_flight

    def holding(self) -> bool:
        """Whether work is waiting to be written (then input must not be waited for)."""
        self._take_pending()
        return bool(self.new) or self.body_next is not None

    @property
    def idle(self) -> bool:
        """No message is in flight and nothing is owed: input may be waited for."""
        return not self.holding() and not self.pending

    # -- output --------------------------------------------------------------------

    def compose(self) -> Iterator[Piece | StreamedContent]:
        """The next group, piece by piece in wire order (each recorded as sent)."""
        body_next, new = self.body_next, self.new
        # Whether an end of data is already in this group, ahead of what follows.
        after_end = body_next is not None
        if body_next is not None:
            if body_next.lone_dot:
                yield self._end_of_data(body_next, TERMINATOR)
            elif body_next.submission.content.in_memory:
                yield self._end_of_data(body_next, body_next.submission.content.encoded.data)
            else:
                yield StreamedContent(body_next)
        previous_bdat = False
        for transaction in new:
            commands: list[Command] = []
            owed: list[Owed] = []
            if self.needs_rset or previous_bdat:
                # A transaction before this one may still be open on the
                # server; RSET closes it and is harmless otherwise.
                commands.append(Rset())
                owed.append(Owed(Kind.RSET, None, after_end=after_end))
                self.needs_rset = False
            transaction.pipelined_after_end = after_end
            commands.append(transaction.mail)
            owed.append(Owed(Kind.MAIL, transaction, after_end=after_end))
            commands += transaction.rcpts
            owed += [Owed(Kind.RCPT, transaction, i) for i in range(len(transaction.rcpts))]
            if not transaction.plan.bdat:
                commands.append(Data())
                owed.append(Owed(Kind.DATA, transaction))
            yield self._commands(commands, owed)
            if transaction.plan.bdat:
                if transaction.submission.content.in_memory:
                    yield from self.bdat_pieces(transaction, pipelined=True)
                else:
                    yield StreamedContent(transaction)
                previous_bdat = after_end = True
        if not new and self.needs_rset and not (after_end and not self.pipeline_after_end):
            self.needs_rset = False
            yield self._commands([Rset()], [Owed(Kind.RSET, None, after_end=after_end)])

    def _commands(self, commands: Sequence[Command], owed: Sequence[Owed]) -> Piece:
        data = b"".join(
            self.session.send(command, tag) for command, tag in zip(commands, owed, strict=True)
        )
        return Piece(data, tuple(owed), tuple(commands))

    def _end_of_data(self, transaction: Transaction, data: bytes) -> Piece:
        owed = transaction.expect_finals()
        self.session.send_data(data, end=True, owed=owed)
        return Piece(data, tuple(owed), data_size=len(data))

    def data_chunk(self, data: bytes) -> Piece:
        """A piece of a streamed message's data (DATA), not its end."""
        self.session.send_data(data)
        return Piece(data, data_size=len(data))

    def rset(self) -> Piece:
        """RSET, as a piece of a group."""
        return self._commands([Rset()], [Owed(Kind.RSET, None)])

    def data_end(self, transaction: Transaction, tail: bytes) -> Piece:
        """The end of a streamed message's data (DATA), terminator included."""
        return self._end_of_data(transaction, tail)

    def bdat_chunk(self, transaction: Transaction, payload: bytes, *, last: bool) -> Piece:
        """One BDAT chunk: the command and its payload."""
        command = Bdat(len(payload), last)
        owed = transaction.expect_finals() if last else [Owed(Kind.CHUNK, transaction)]
        data = self.session.send(command, owed[0])
        return Piece(data + payload, tuple(owed), (command,), len(payload))

    def bdat_pieces(self, transaction: Transaction, *, pipelined: bool) -> Iterator[Piece]:
        """The BDAT chunks of an in-memory message; stop early once a chunk is refused.

        RFC 3030 §2: after a refused chunk no more of this message is sent; the
        transaction is reset (here when pipelined, else by the caller).
        """
        payload = transaction.submission.content.bdat_payload(binary=transaction.plan.binary)
        view = memoryview(payload)
        for start in range(0, max(len(view), 1), BDAT_CHUNK):
            if transaction.chunk_refusal is not None:
                if pipelined:
                    yield self.rset()
                return
            end = start + BDAT_CHUNK
            yield self.bdat_chunk(transaction, bytes(view[start:end]), last=end >= len(view))

    @staticmethod
    def mark_handed(owed: Iterable[Owed], *, handed: bool = True) -> None:
        """A write holding these commands' last bytes is about to start (``handed``),
        or failed before its last byte was handed (``handed=False``)."""
        for record in owed:
            record.handed = handed
            if record.kind is Kind.FINAL and record.transaction is not None:
                record.transaction.terminator_handed = handed

    # -- replies -------------------------------------------------------------------

    def record(self, event: ReplyEvent) -> None:
        """Keep a reply for the transaction it belongs to.

        :raises ReplyError: RSET was refused (the session can not go on)
        """
        owed = event.owed
        if not isinstance(owed, Owed):
            raise LocalProtocolError(f"a reply to {event.command!r} came with no record")
        if event.reply.code == 421 and self.session.closed_by_server:
            # RFC 5321 §3.8: the server closes instead of answering.  It takes
            # commands in order, so nothing sent after this one was taken either.
            for transaction in (owed.transaction, self.body_next, *self.new):
                if transaction is not None and not transaction.decided:
                    transaction.closing = event.reply
            return
        if owed.kind is Kind.RSET:
            if event.reply.code == 503 and owed.after_end:
                # Refused for arriving with an end of data (see
                # Transaction.refused_as_pipelined): send it again, on its own.
                self.needs_rset = True
                self.pipeline_after_end = False
            elif event.reply.code != 250:
                raise ReplyError("RSET", event.reply) from self.last_refusal
            return
        assert owed.transaction is not None
        owed.transaction.record(owed, event.reply)

    def finish_round(self) -> list[Transaction]:
        """Settle what the group's replies decide; plan what comes next.

        :return: the transactions settled (for their audit events)
        """
        body_next, new = self.body_next, self.new
        self.body_next, self.new = None, []
        settled = [body_next] if body_next is not None else []
        again: list[Transaction] = []
        for transaction in new:
            if transaction.refused_as_pipelined:
                # Untouched by the server: it goes again, after the verdicts
                # it was sent with (no more commands after an end of data).
                transaction.reset()
                again.append(transaction)
                self.pipeline_after_end = False
                # Nothing is open on the server, but this side's session went
                # through MAIL; RSET brings both back to the same state.
                self.needs_rset = True
                continue
            data_reply = transaction.data_reply
            if transaction.plan.bdat or data_reply is None or data_reply.code != 354:
                settled.append(transaction)
            elif transaction.envelope_refusal() is not None:
                # RFC 2920 §3.1: DATA was accepted although nothing can be
                # delivered; the data phase must be ended with a lone ".".
                transaction.lone_dot = True
                self.body_next = transaction
            else:
                self.body_next = transaction
        followups: list[Transaction] = []
        for transaction in settled:
            self.settle(transaction)
            followups += transaction.delivery.after(transaction)
        self.pending.extendleft(reversed(again + followups))
        return settled

    def settle(self, transaction: Transaction) -> None:
        """Decide one transaction's outcome; a refusal leaves an RSET owed."""
        transaction.settle()
        if isinstance(transaction.outcome, ReplyError):
            self.needs_rset = True
            self.last_refusal = transaction.outcome

    def take_outcomes(self) -> Iterator[SendResult | SMTPError]:
        """The outcomes now known, in input order (up to the first unknown one)."""
        while self.order and self.order[0].outcome is not None:
            outcome = self.order.popleft().outcome
            assert outcome is not None
            yield outcome

    def fail(self, failure: SMTPError) -> list[Delivery]:
        """The session failed: give every message in flight its outcome.

        :return: the deliveries whose outcome this decided
        """
        lost: list[Delivery] = []
        for delivery in self.order:
            if delivery.outcome is None:
                delivery.outcome = delivery.lost(failure)
                lost.append(delivery)
        self.body_next, self.new = None, []
        self.pending.clear()
        return lost

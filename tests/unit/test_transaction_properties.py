"""Properties of the sans-I/O transaction core, driven the way the engine drives it.

A small synchronous driver mirrors ``Engine._run_pipelined`` for in-memory
messages: it fills each group with ``holding()``/``wants_more()``/``add()``,
writes everything ``compose()`` gives in one write (marking the replies owed
as handed first, as ``Engine._send`` does), feeds replies drawn from a server
that stays consistent with itself, and calls ``finish_round()``.  Once per run
the connection may fail: the write is cut after some bytes (and raised, or was
left in doubt), a prefix of the replies the server could have sent arrives,
and then ``fail()`` settles everything in flight.  A ``421`` may end any run.

The driver keeps its own record of what it wrote and what each command got,
and judges every outcome from that record alone (never from the core's own
``certainly_undelivered`` or ``maybe_delivered_to``):

1. every message read from the source gets exactly one outcome, in input order
   (as in the engine, messages not yet read when the session fails get none);
2. a ``SendResult`` only for a message that got a positive verdict, naming
   exactly the recipients that got it;
3. a certain failure (an error other than ``DeliveryUnknownError``) only when
   the server can not have accepted the message: no positive verdict, and for
   each of its transactions the terminator was never handed, or a reply
   refused it, or a ``421`` came before its verdict;
4. a message whose terminator was handed and whose verdict was lost, with no
   refusal, gets ``DeliveryUnknownError``; and ``DeliveryUnknownError`` only
   when a verdict is missing and someone may have the message, naming exactly
   who may have it;
5. without a failure, every message gets its verdict: the recipients that got
   it (every recipient when every reply was positive), over the transactions
   RCPTMAX and 452 replies call for.

Pipelined ``compose()`` is listed whole before any reply is fed, and BDAT
chunks are made small (``BDAT_CHUNK`` patched) so that chunk replies occur.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Literal, TypeAlias
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from anyio_smtp import (
    DataRefusedError,
    DeliveryUnknownError,
    ExtensionNotSupportedError,
    RecipientsRefusedError,
    ServerDisconnectedError,
    ServiceUnavailableError,
    SMTPError,
    _transaction,
)
from anyio_smtp._protocol.commands import Bdat, Command, Ehlo, Lhlo, Rcpt
from anyio_smtp._protocol.params import Transfer
from anyio_smtp._protocol.session import NEED_DATA, ReplyEvent, SMTPSession
from anyio_smtp._result import SendResult
from anyio_smtp._transaction import (
    Delivery,
    Kind,
    Options,
    Owed,
    Piece,
    Pipeline,
    Submission,
    Transaction,
    mail_submission,
)

Outcome: TypeAlias = SendResult | SMTPError
#: How the faulty write went: never started; started and raised (the engine
#: un-marks its last piece); started and left in doubt (a timeout: it stays
#: handed although only some bytes went out); or completed, the connection
#: dying afterwards.
Mode: TypeAlias = Literal["unstarted", "raised", "timeout", "completed"]

SENDER = "sender@client.example"
ADDRESSES = (
    "a@one.example",
    "b@one.example",
    "c@two.example",
    "d@three.example",
    "e@two.example",
)
TEXT = {
    250: "2.0.0 ok",
    354: "go ahead",
    421: "4.3.2 closing the connection",
    450: "4.2.1 mailbox busy",
    451: "4.3.0 try again later",
    452: "4.5.3 too many recipients",
    503: "5.5.1 bad sequence of commands",
    550: "5.1.1 no such user",
    554: "5.6.0 transaction failed",
}
POSITIVE = frozenset({250, 354})


def reply_bytes(code: int) -> bytes:
    return f"{code} {TEXT[code]}\r\n".encode()


def ready_session(*, lmtp: bool, chunking: bool, rcpt_max: int | None) -> SMTPSession:
    """A session that saw the greeting and an EHLO (LHLO) reply with PIPELINING."""
    keywords = ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"]
    if chunking:
        keywords.append("CHUNKING")
    if rcpt_max is not None:
        keywords.append(f"LIMITS RCPTMAX={rcpt_max}")
    lines = ["mx.example greets client.example", *keywords]
    ehlo = b"".join(
        b"250" + (b" " if index == len(lines) - 1 else b"-") + line.encode() + b"\r\n"
        for index, line in enumerate(lines)
    )
    session = SMTPSession()
    session.receive_data(b"220 mx.example ready\r\n")
    assert isinstance(session.next_event(), ReplyEvent)
    session.send(Lhlo("client.example") if lmtp else Ehlo("client.example"))
    session.receive_data(ehlo)
    assert isinstance(session.next_event(), ReplyEvent)
    assert session.pipelining
    assert session.pending == 0
    return session


# -- the driver's own record of what was written and answered ---------------------------


@dataclass(eq=False)
class Sent:
    """One reply owed, as the driver wrote it."""

    owed: Owed
    #: Offset in its group after which the server can answer it.
    end: int
    command: Command | None
    handed: bool = False
    code: int | None = None

    @property
    def answer(self) -> int | None:
        """The server's answer; a 421 is no answer (the server closed instead)."""
        return None if self.code == 421 else self.code


@dataclass(eq=False)
class Log:
    """What the driver wrote for one transaction and what came back."""

    lmtp: bool
    records: list[Sent] = field(default_factory=list)
    #: Recipients of the RCPTs accepted when the data ended (LMTP: one final each).
    final_recipients: tuple[str, ...] = ()
    #: A 421 arrived before this transaction's verdict was complete.
    closed: bool = False

    def of(self, kind: Kind) -> list[Sent]:
        return [sent for sent in self.records if sent.owed.kind is kind]

    @property
    def mail_code(self) -> int | None:
        mail = self.of(Kind.MAIL)
        return mail[0].answer if mail else None

    @property
    def rcpts(self) -> list[Sent]:
        return self.of(Kind.RCPT)

    @property
    def accepted_rcpts(self) -> list[str]:
        return [rcpt_of(sent) for sent in self.rcpts if sent.answer == 250]

    @property
    def data_code(self) -> int | None:
        data = self.of(Kind.DATA)
        return data[0].answer if data else None

    @property
    def finals(self) -> list[Sent]:
        return self.of(Kind.FINAL)

    @property
    def is_open(self) -> bool:
        """Whether the server holds an open transaction with a recipient."""
        return self.mail_code == 250 and bool(self.accepted_rcpts)

    @property
    def chunk_refused(self) -> bool:
        return any(s.answer is not None and s.answer not in POSITIVE for s in self.of(Kind.CHUNK))

    @property
    def handed(self) -> bool:
        """The terminator (end of data, BDAT LAST) went to a write that was not undone."""
        return any(sent.handed for sent in self.finals)

    @property
    def positive_final(self) -> bool:
        return any(sent.answer == 250 for sent in self.finals)

    @property
    def verdict_complete(self) -> bool:
        """Every reply after the data arrived (a 421 is the server closing instead)."""
        finals = self.finals
        return bool(finals) and all(sent.answer is not None for sent in finals)

    @property
    def decided(self) -> bool:
        """The verdict arrived, or DATA was refused (nothing more was owed)."""
        return self.verdict_complete or self.data_code not in (None, 354)

    @property
    def settled(self) -> bool:
        """Nothing about this transaction is unknown: its verdict, a refusal, or (LMTP)
        positive per-recipient replies before a 421 that ended the rest."""
        return self.decided or self.refused or (self.closed and self.positive_final)

    @property
    def refused(self) -> bool:
        """A reply that arrived says the server did not take this transaction."""
        if self.mail_code is not None and self.mail_code != 250:
            return True
        rcpts = self.rcpts
        if rcpts and all(sent.answer is not None for sent in rcpts) and not self.accepted_rcpts:
            return True
        if self.data_code is not None and self.data_code != 354:
            return True
        if self.chunk_refused:
            return True
        return self.verdict_complete and not any(sent.answer == 250 for sent in self.finals)

    @property
    def certain_allowed(self) -> bool:
        """The server can not have accepted this transaction for anyone."""
        return not self.positive_final and (not self.handed or self.refused or self.closed)

    @property
    def must_be_unknown(self) -> bool:
        """Handed, neither refused nor answered: its verdict is lost."""
        return self.handed and not self.refused and not self.closed and not self.positive_final

    def delivered_to(self) -> list[str]:
        """The recipients a positive verdict that arrived names."""
        if self.lmtp:
            return [
                address
                for address, sent in zip(self.final_recipients, self.finals, strict=True)
                if sent.answer == 250
            ]
        return self.accepted_rcpts if self.positive_final else []

    def maybe(self) -> list[str]:
        """The recipients that may have the message."""
        if self.certain_allowed:
            return []
        if self.verdict_complete or self.closed:
            return self.delivered_to()
        if self.lmtp and self.finals:
            return [
                address
                for address, sent in zip(self.final_recipients, self.finals, strict=True)
                if sent.answer is None or sent.answer == 250
            ]
        return [rcpt_of(sent) for sent in self.rcpts if sent.answer is None or sent.answer == 250]


def rcpt_of(sent: Sent) -> str:
    assert isinstance(sent.command, Rcpt)
    return sent.command.recipient


# -- the driver --------------------------------------------------------------------------


class Driver:
    """Drives a Pipeline over an in-memory session as ``Engine._run_pipelined`` does."""

    def __init__(
        self, *, lmtp: bool, chunking: bool, rcpt_max: int | None, max_in_flight: int
    ) -> None:
        self.lmtp = lmtp
        self.rcpt_max = rcpt_max
        self.session = ready_session(lmtp=lmtp, chunking=chunking, rcpt_max=rcpt_max)
        self.pipeline = Pipeline(self.session, lmtp=lmtp, max_in_flight=max_in_flight)
        self.logs: dict[Transaction, Log] = {}
        self.deliveries: list[Delivery] = []
        self.outcomes: list[Outcome] = []
        #: This round's replies owed, in wire order, and its bytes.
        self.round: list[Sent] = []
        self.group = b""
        self.failed: SMTPError | None = None

    def log(self, transaction: Transaction) -> Log:
        return self.logs.setdefault(transaction, Log(self.lmtp))

    # -- one round, step by step --------------------------------------------------------

    def fill(self, source: list[Submission]) -> bool:
        """Add messages as the engine does with a list source; return whether it ran out."""
        pipeline = self.pipeline
        while True:
            pipeline.holding()
            if not pipeline.wants_more():
                return False
            if not source:
                return True
            self.deliveries.append(pipeline.add(source.pop(0)))

    def compose(self) -> list[Piece]:
        """The next group, recorded piece by piece with where each reply becomes due."""
        pieces: list[Piece] = []
        for piece in self.pipeline.compose():
            assert isinstance(piece, Piece), "no streamed content for in-memory messages"
            pieces.append(piece)
        self.round, offset = [], 0
        for piece in pieces:
            start, offset = offset, offset + len(piece.data)
            if piece.commands and not isinstance(piece.commands[0], Bdat):
                # MAIL, RCPT..., DATA, RSET: each answerable once its own line is in.
                assert len(piece.commands) == len(piece.owed)
                assert b"".join(c.encode() for c in piece.commands) == piece.data
                end = start
                for command, owed in zip(piece.commands, piece.owed, strict=True):
                    end += len(command.encode())
                    self.round.append(Sent(owed, end, command))
            else:
                # A BDAT chunk or the end of the data: answered once all of it is in.
                self.round += [Sent(owed, offset, None) for owed in piece.owed]
        finals: dict[Transaction, int] = {}
        for sent in self.round:
            transaction = sent.owed.transaction
            if transaction is None:
                assert sent.owed.kind is Kind.RSET
                continue
            log = self.log(transaction)
            if sent.owed.kind is Kind.FINAL:
                if transaction not in finals:
                    finals[transaction] = 0
                    log.final_recipients = tuple(log.accepted_rcpts)
                assert sent.owed.index == finals[transaction]
                finals[transaction] += 1
            log.records.append(sent)
        for transaction, count in finals.items():
            # The replies owed after the data: one, or one per accepted RCPT (LMTP).
            log = self.log(transaction)
            if self.lmtp:
                assert count == len(log.final_recipients)
            else:
                assert count == 1
        self.group = b"".join(piece.data for piece in pieces)
        assert offset == len(self.group)
        assert self.session.pending == len(self.round)
        return pieces

    def write(self, pieces: Sequence[Piece], mode: Mode) -> None:
        """One write of the whole group, marked as ``Engine._send`` marks it."""
        if mode == "unstarted" or not pieces:
            return
        owed = [record for piece in pieces for record in piece.owed]
        Pipeline.mark_handed(owed)
        for sent in self.round:
            sent.handed = True
        if mode == "raised":
            # Engine._send: the stream refused the block, so its last piece was not handed.
            Pipeline.mark_handed(pieces[-1].owed, handed=False)
            for sent in self.round:
                if any(sent.owed is record for record in pieces[-1].owed):
                    sent.handed = False

    def due(self, cut: int) -> int:
        """How many of this round's replies the server can send after ``cut`` bytes."""
        answered = sum(sent.code is not None for sent in self.round)
        count = 0
        for sent in self.round[answered:]:
            if sent.end > cut:
                break
            count += 1
        return count

    def next_owed(self) -> Sent:
        owed = self.session.awaiting_owed
        for sent in self.round:
            if sent.owed is owed:
                assert sent.code is None
                return sent
        raise AssertionError("the session waits for a reply this round does not owe")

    def reply(self, code: int) -> ReplyEvent:
        """Feed the reply to the oldest command owed one; keep it in the driver's record."""
        sent = self.next_owed()
        self.session.receive_data(reply_bytes(code))
        event = self.session.next_event()
        assert event is not NEED_DATA
        assert isinstance(event, ReplyEvent)
        assert event.owed is sent.owed
        assert event.reply.code == code
        sent.code = code
        self.pipeline.record(event)
        if code == 421:
            # The server took nothing after this: every verdict still owed is lost.
            for log in self.logs.values():
                if not log.verdict_complete:
                    log.closed = True
        return event

    def finish_round(self) -> None:
        self.pipeline.finish_round()
        self.collect()

    def fail(self, failure: SMTPError) -> None:
        self.failed = failure
        self.pipeline.fail(failure)
        self.collect()

    def collect(self) -> None:
        self.outcomes += self.pipeline.take_outcomes()


def closing_error(event: ReplyEvent) -> ServiceUnavailableError:
    """What ``Channel.raise_if_closing`` raises for a 421."""
    return ServiceUnavailableError(event.command.name if event.command else None, event.reply)


# -- the server's replies ----------------------------------------------------------------


def codes_for(driver: Driver, sent: Sent) -> list[int]:
    """Replies a server consistent with what it said before may give (first: the best)."""
    owed = sent.owed
    if owed.kind is Kind.RSET:
        return [250]
    assert owed.transaction is not None
    log = driver.log(owed.transaction)
    if owed.kind is Kind.MAIL:
        codes = [250, 451, 550]
    elif owed.kind is Kind.RCPT:
        codes = [250, 450, 452, 550] if log.mail_code == 250 else [503, 550]
    elif owed.kind is Kind.DATA:
        if log.is_open:
            codes = [354, 451, 554]
        elif driver.lmtp:
            codes = [503, 554]  # RFC 2033 §4.2: DATA fails without a recipient
        else:
            codes = [554, 503, 354]  # a 354 here is ended with a lone "."
    elif owed.kind is Kind.CHUNK:
        codes = [250, 554] if log.is_open and not log.chunk_refused else [554, 503]
    else:
        assert owed.kind is Kind.FINAL
        taken = (
            log.is_open
            and not log.chunk_refused
            and (log.data_code == 354 if log.of(Kind.DATA) else True)
        )
        codes = [250, 451, 554] if taken else [554, 503]
    return codes


# -- properties ----------------------------------------------------------------------------


def is_certain(outcome: Outcome) -> bool:
    return isinstance(outcome, SMTPError) and not isinstance(outcome, DeliveryUnknownError)


def ordered(delivery: Delivery, addresses: Sequence[str]) -> tuple[str, ...]:
    chosen = set(addresses)
    return tuple(a for a in delivery.submission.recipients if a in chosen)


def check_properties(driver: Driver, submissions: Sequence[Submission], *, faulty: bool) -> None:
    deliveries = driver.deliveries
    # 1. One outcome per message read, in input order; without a fault, every message.
    assert len(driver.outcomes) == len(deliveries)
    for outcome, delivery in zip(driver.outcomes, deliveries, strict=True):
        assert isinstance(outcome, (SendResult, SMTPError))
        assert outcome is delivery.outcome
    if not faulty:
        assert len(deliveries) == len(submissions)
        assert driver.session.pending == 0
        assert not driver.pipeline.needs_rset
    for delivery, outcome in zip(deliveries, driver.outcomes, strict=True):
        if not delivery.transactions:
            # Refused by the plan before anything was sent.
            assert isinstance(outcome, ExtensionNotSupportedError)
            continue
        logs = [driver.logs.get(t, Log(driver.lmtp)) for t in delivery.transactions]
        delivered = ordered(delivery, [a for log in logs for a in log.delivered_to()])
        # 2. A SendResult only after a positive verdict, for exactly its recipients.
        if isinstance(outcome, SendResult):
            assert any(log.positive_final for log in logs)
            assert outcome.accepted == delivered
            assert not set(outcome.accepted) & set(outcome.rejected)
        # 3. A certain failure only when the server can not have taken the message.
        if is_certain(outcome):
            assert all(log.certain_allowed for log in logs), (outcome, logs)
        # 4. A lost verdict after the terminator was handed: delivery unknown.
        if any(log.must_be_unknown for log in logs):
            assert isinstance(outcome, DeliveryUnknownError), (outcome, logs)
        if isinstance(outcome, DeliveryUnknownError):
            # ... and only then: someone may have it, and a verdict is missing.
            assert faulty
            assert not all(log.settled for log in logs), (outcome, logs)
            assert not all(log.certain_allowed for log in logs), (outcome, logs)
            assert outcome.recipients
            assert outcome.cause is driver.failed
            assert set(outcome.recipients) == {a for log in logs for a in log.maybe()}
        # 5. Without a fault every verdict is known.
        if not faulty:
            assert not isinstance(outcome, DeliveryUnknownError)
            assert all(log.verdict_complete or log.refused for log in logs)
            assert isinstance(outcome, SendResult) == bool(delivered)
            if all(sent.code in POSITIVE for log in logs for sent in log.records):
                assert isinstance(outcome, SendResult)
                assert outcome.accepted == delivery.submission.recipients
            assert [[rcpt_of(sent) for sent in log.rcpts] for log in logs] == transactions_expected(
                delivery.submission.recipients, logs, driver.rcpt_max
            )


def transactions_expected(
    recipients: Sequence[str], logs: Sequence[Log], rcpt_max: int | None
) -> list[list[str]]:
    """The recipients of each transaction: RCPTMAX groups (RFC 9422), then a new
    transaction for those a delivering one answered 452 (RFC 5321 §4.5.3.1.10)."""
    size = rcpt_max or len(recipients)
    expected = [list(recipients[i : i + size]) for i in range(0, len(recipients), size)]
    for log in logs:
        over = [rcpt_of(sent) for sent in log.rcpts if sent.code == 452]
        if over and log.delivered_to():
            expected.append(over)
    return expected


@contextmanager
def small_bdat_chunks(size: int) -> Iterator[None]:
    """Split in-memory messages into BDAT chunks of ``size`` octets (so CHUNK replies occur)."""
    with mock.patch.object(_transaction, "BDAT_CHUNK", size):
        yield


# -- the property test -----------------------------------------------------------------------


bodies = st.lists(
    st.sampled_from([b"Subject: hi", b"", b".leading dot", b"x" * 20, b"\xc3\xa9t\xc3\xa9"]),
    min_size=1,
    max_size=4,
).map(lambda lines: b"\r\n".join(lines) + b"\r\n")


@st.composite
def submissions(draw: st.DrawFn, transfers: Sequence[Transfer]) -> Submission:
    recipients = draw(st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=4, unique=True))
    transfer = draw(st.sampled_from(transfers))
    return mail_submission(SENDER, recipients, draw(bodies), options=Options(transfer=transfer))


@dataclass(frozen=True)
class Profile:
    """Where a run's drawings lean."""

    lmtp: st.SearchStrategy[bool]
    chunking: st.SearchStrategy[bool]
    #: Without CHUNKING, "bdat" is refused by the plan before any I/O.
    transfers: tuple[Transfer, ...]
    #: The server closes with 421 in place of its n-th reply.
    closing_at: st.SearchStrategy[int | None]
    #: How much likelier the best reply is than each other one (drawn per kind).
    agreeable: st.SearchStrategy[int]
    fault_round: st.SearchStrategy[int | None]
    modes: tuple[Mode, ...]
    max_in_flight: st.SearchStrategy[int]
    #: After a cut, all but the last few replies the server could send arrive.
    tail: bool


#: Anything goes.
ANY = Profile(
    lmtp=st.booleans(),
    chunking=st.booleans(),
    transfers=("auto", "data", "auto", "data", "bdat"),
    closing_at=st.none() | st.integers(0, 24),
    agreeable=st.integers(1, 8),
    fault_round=st.none() | st.integers(0, 2) | st.integers(0, 10),
    modes=("completed", "raised", "timeout", "unstarted"),
    max_in_flight=st.integers(1, 4),
    tail=False,
)
#: A cut early on, mostly after the whole message went out: verdicts get lost.
LOST = replace(
    ANY,
    closing_at=st.none(),
    agreeable=st.integers(1, 12),
    fault_round=st.integers(0, 3),
    tail=True,
)
#: Pipelined BDAT, often refused (a chunk too), then a cut before the verdict.
REFUSED = replace(
    ANY,
    lmtp=st.just(False),
    chunking=st.just(True),
    transfers=("bdat",),
    closing_at=st.none(),
    agreeable=st.integers(1, 6),
    fault_round=st.integers(0, 1),
    modes=("completed", "timeout"),
    max_in_flight=st.integers(1, 2),
    tail=True,
)

#: The server closes with 421 somewhere, mostly after agreeing so far.
CLOSING = replace(
    ANY,
    closing_at=st.integers(0, 16),
    agreeable=st.integers(3, 12),
    fault_round=st.none(),
)

MAX_ROUNDS = 60


def run(data: st.DataObject, profile: Profile) -> None:
    """One drawn run: the engine's loop over a drawn server and a drawn fault."""
    lmtp = data.draw(profile.lmtp, label="lmtp")
    chunking = data.draw(profile.chunking, label="chunking")
    rcpt_max = data.draw(st.sampled_from([None, 2]), label="rcpt_max")
    max_in_flight = data.draw(profile.max_in_flight, label="max_in_flight")
    closing_at = data.draw(profile.closing_at, label="421 at reply")
    agreeable = {
        kind: data.draw(profile.agreeable, label=f"agreeable {kind.value}") for kind in Kind
    }
    messages = data.draw(
        st.lists(submissions(profile.transfers), min_size=1, max_size=5), label="messages"
    )
    fault_round = data.draw(profile.fault_round, label="fault round")
    driver = Driver(lmtp=lmtp, chunking=chunking, rcpt_max=rcpt_max, max_in_flight=max_in_flight)
    pipeline = driver.pipeline
    source = list(messages)
    exhausted = False
    faulty = False
    replies = 0

    def answer(count: int | None) -> bool:
        """Feed ``count`` replies (None: all owed); return whether a 421 ended the session."""
        nonlocal replies
        while driver.session.pending and (count is None or count > 0):
            sent = driver.next_owed()
            if replies == closing_at:
                code = 421
            else:
                best, *others = codes_for(driver, sent)
                code = data.draw(st.sampled_from([best] * agreeable[sent.owed.kind] + others))
            replies += 1
            event = driver.reply(code)
            if code == 421:
                driver.fail(closing_error(event))
                return True
            if count is not None:
                count -= 1
        return False

    for round_number in range(MAX_ROUNDS):
        if not exhausted:
            exhausted = driver.fill(source)
        if pipeline.holding() or (exhausted and pipeline.needs_rset):
            pieces = driver.compose()
            if round_number == fault_round:
                faulty = True
                mode = data.draw(st.sampled_from(profile.modes), label="fault")
                size = len(driver.group)
                if mode == "completed":
                    cut = size
                elif mode == "unstarted":
                    cut = 0
                else:
                    cut = data.draw(st.integers(0, max(size - 1, 0)), label="cut")
                driver.write(pieces, mode)
                due = driver.due(cut)
                if profile.tail:
                    count = due - data.draw(st.integers(0, min(due, 3)), label="missing")
                else:
                    count = data.draw(st.integers(0, due), label="replies")
                if not answer(count):
                    driver.fail(ServerDisconnectedError("cut"))
                break
            driver.write(pieces, "completed")
            if answer(None):
                faulty = True
                break
            driver.finish_round()
        driver.collect()
        if exhausted and not pipeline.holding() and not pipeline.needs_rset:
            break
    else:
        raise AssertionError("the run did not end")
    check_properties(driver, messages, faulty=faulty)


@settings(max_examples=700, deadline=None)
@given(st.data())
def test_every_outcome_follows_from_what_was_written_and_answered(data: st.DataObject) -> None:
    with small_bdat_chunks(16):
        run(data, ANY)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_421_ends_what_it_answers_and_everything_after(data: st.DataObject) -> None:
    with small_bdat_chunks(16):
        run(data, CLOSING)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_verdicts_lost_in_a_cut_are_never_called_certain(data: st.DataObject) -> None:
    with small_bdat_chunks(16):
        run(data, LOST)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_refusals_before_a_cut_stay_certain(data: st.DataObject) -> None:
    with small_bdat_chunks(16):
        run(data, REFUSED)


# -- pinned examples -------------------------------------------------------------------------


def example(
    *, lmtp: bool = False, chunking: bool = True, max_in_flight: int = 4
) -> tuple[Driver, Callable[..., Submission]]:
    driver = Driver(lmtp=lmtp, chunking=chunking, rcpt_max=None, max_in_flight=max_in_flight)

    def message(*recipients: str, transfer: Transfer = "auto") -> Submission:
        return mail_submission(
            SENDER, recipients, b"Subject: hi\r\n\r\nbody\r\n", options=Options(transfer=transfer)
        )

    return driver, message


def round_of(driver: Driver, source: list[Submission]) -> list[Piece]:
    driver.fill(source)
    assert driver.pipeline.holding()
    return driver.compose()


def commands_of(pieces: Sequence[Piece]) -> list[str]:
    return [type(command).__name__ for piece in pieces for command in piece.commands]


def test_pipelined_bdat_cut_after_the_write_is_delivery_unknown() -> None:
    driver, message = example()
    pieces = round_of(driver, [message("a@one.example")])
    assert commands_of(pieces) == ["Mail", "Rcpt", "Bdat"]
    driver.write(pieces, "completed")
    failure = ServerDisconnectedError("cut")
    driver.fail(failure)
    [outcome] = driver.outcomes
    assert isinstance(outcome, DeliveryUnknownError)
    assert outcome.recipients == ("a@one.example",)
    assert outcome.cause is failure


def test_pipelined_bdat_write_that_raised_is_the_failure_itself() -> None:
    driver, message = example()
    pieces = round_of(driver, [message("a@one.example")])
    driver.write(pieces, "raised")
    failure = ServerDisconnectedError("cut")
    driver.fail(failure)
    assert driver.outcomes == [failure]


def test_data_group_cut_before_354_is_a_certain_failure() -> None:
    driver, message = example(chunking=False)
    pieces = round_of(driver, [message("a@one.example")])
    assert commands_of(pieces) == ["Mail", "Rcpt", "Data"]
    driver.write(pieces, "completed")
    driver.reply(250)
    driver.reply(250)
    failure = ServerDisconnectedError("cut")
    driver.fail(failure)
    assert driver.outcomes == [failure]


def test_data_body_write_that_raised_is_a_certain_failure() -> None:
    driver, message = example(chunking=False)
    source = [message("a@one.example")]
    driver.write(round_of(driver, source), "completed")
    for code in (250, 250, 354):
        driver.reply(code)
    driver.finish_round()
    body = round_of(driver, source)
    assert [sent.owed.kind for sent in driver.round] == [Kind.FINAL]
    driver.write(body, "raised")
    failure = ServerDisconnectedError("cut")
    driver.fail(failure)
    assert driver.outcomes == [failure]


def test_refused_bdat_chunk_then_cut_is_a_certain_failure() -> None:
    driver, message = example()
    with small_bdat_chunks(16):
        source = [message("a@one.example")]
        pieces = round_of(driver, source)
    assert commands_of(pieces) == ["Mail", "Rcpt", "Bdat", "Bdat"]
    driver.write(pieces, "completed")
    for code in (250, 250, 554):  # the first chunk is refused; the verdict is lost
        driver.reply(code)
    driver.fail(ServerDisconnectedError("cut"))
    # The refusal that arrived is the verdict: certainly not delivered.
    [outcome] = driver.outcomes
    assert isinstance(outcome, DataRefusedError)
    assert outcome.reply.code == 554


def test_354_after_every_rcpt_refused_ends_with_a_lone_dot() -> None:
    driver, message = example(chunking=False)
    source = [message("a@one.example")]
    driver.write(round_of(driver, source), "completed")
    for code in (250, 550, 354):
        driver.reply(code)
    driver.finish_round()
    body = round_of(driver, source)
    assert [piece.data for piece in body] == [b".\r\n"]
    driver.write(body, "completed")
    driver.reply(554)
    driver.finish_round()
    [outcome] = driver.outcomes
    assert isinstance(outcome, RecipientsRefusedError)
    assert list(outcome.rejected) == ["a@one.example"]
    assert driver.pipeline.needs_rset


def test_421_to_the_second_bdat_ends_it_and_the_ones_after() -> None:
    driver, message = example(max_in_flight=3)
    source = [message("a@one.example"), message("b@one.example"), message("c@two.example")]
    pieces = round_of(driver, source)
    assert commands_of(pieces) == ["Mail", "Rcpt", "Bdat"] + ["Rset", "Mail", "Rcpt", "Bdat"] * 2
    driver.write(pieces, "completed")
    for code in (250, 250, 250, 250, 250, 250):  # message 0, RSET, MAIL and RCPT of message 1
        driver.reply(code)
    event = driver.reply(421)
    failure = closing_error(event)
    driver.fail(failure)
    first, second, third = driver.outcomes
    assert isinstance(first, SendResult)
    assert first.accepted == ("a@one.example",)
    assert second is failure
    assert third is failure
    assert isinstance(failure, ServiceUnavailableError)


def lmtp_after_data(driver: Driver, source: list[Submission]) -> list[Piece]:
    """An LMTP message whose two RCPTs were accepted and whose DATA got 354."""
    driver.write(round_of(driver, source), "completed")
    for code in (250, 250, 250, 354):
        driver.reply(code)
    driver.finish_round()
    body = round_of(driver, source)
    assert [sent.owed.kind for sent in driver.round] == [Kind.FINAL, Kind.FINAL]
    return body


def test_lmtp_one_final_missing_is_delivery_unknown() -> None:
    driver, message = example(lmtp=True, chunking=False)
    source = [message("a@one.example", "c@two.example")]
    driver.write(lmtp_after_data(driver, source), "completed")
    driver.reply(250)
    failure = ServerDisconnectedError("cut")
    driver.fail(failure)
    [outcome] = driver.outcomes
    assert isinstance(outcome, DeliveryUnknownError)
    assert "c@two.example" in outcome.recipients
    # The one delivered has it too: sending again to both would repeat it.
    assert outcome.recipients == ("a@one.example", "c@two.example")


def test_lmtp_421_after_a_positive_final_keeps_that_delivery() -> None:
    driver, message = example(lmtp=True, chunking=False)
    source = [message("a@one.example", "c@two.example")]
    driver.write(lmtp_after_data(driver, source), "completed")
    driver.reply(250)
    event = driver.reply(421)
    driver.fail(closing_error(event))
    [outcome] = driver.outcomes
    # Not a certain (retryable) failure: a@ has the message; c@ got the 421 instead.
    assert isinstance(outcome, SendResult)
    assert outcome.accepted == ("a@one.example",)
    assert list(outcome.rejected) == ["c@two.example"]

"""send_many: cross-transaction pipelining, replies matched in order, outcomes in input order.

With PIPELINING a batch goes in groups: the data of the message whose DATA got
354 travels in one write with the next message's MAIL, RCPTs and DATA, and a
refusal is cleaned up with RSET at the start of the next group.  Without
PIPELINING every command goes alone.  The scripted servers here model both and
check every write byte for byte.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, TypeVar

import anyio
import pytest

import anyio_smtp
from anyio_smtp import (
    DataRefusedError,
    DeliveryUnknownError,
    ExtensionNotSupportedError,
    InvalidArgumentError,
    LocalProtocolError,
    RecipientsRefusedError,
    ReplyError,
    SenderRefusedError,
    SendResult,
    ServerDisconnectedError,
    ServiceUnavailableError,
    SessionClosedError,
    SessionState,
    SMTPClient,
    SMTPError,
)
from anyio_smtp._transaction import BatchItem
from anyio_smtp.testing import MemoryByteStream, SMTPTestServer, memory_stream_pair
from tests.client.scripted import BASIC_EHLO, PIPELINING_EHLO, Peer, scripted

CLIENT = "client.test"
SENDER = "alice@example.test"
BOB = "bob@example.test"
CAROL = "carol@example.test"
DAVE = "dave@example.test"

MAIL_OK = "250 2.1.0 Ok"
RCPT_OK = "250 2.1.5 Ok"
GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"
RSET_OK = "250 2.0.0 Ok"
NEED_MAIL = "503 5.5.1 Error: need MAIL command"

#: Both ways of running a batch: (EHLO reply, pipelined?).
MODES = pytest.mark.parametrize(
    ("ehlo", "pipelined"),
    [(PIPELINING_EHLO, True), (BASIC_EHLO, False)],
    ids=["pipelined", "lock-step"],
)
E = TypeVar("E", bound=SMTPError)

#: A bound on every test that could deadlock if the engine got it wrong.
GUARD = 10


def message(index: int) -> bytes:
    return f"Subject: message {index}\r\n\r\nbody of message {index}\r\n".encode()


def wire(index: int) -> bytes:
    """``message(index)`` as it travels after 354 (it needs no stuffing)."""
    return message(index) + b".\r\n"


def queued(index: int) -> str:
    return f"250 2.0.0 Ok: queued as QUEUE{index:03d}X"


def queue_id(index: int) -> str:
    return f"QUEUE{index:03d}X"


def rcpt(index: int) -> str:
    return f"rcpt{index}@example.test"


def envelope(recipients: Iterable[str], sender: str = SENDER) -> bytes:
    lines = [f"MAIL FROM:<{sender}>", *(f"RCPT TO:<{r}>" for r in recipients), "DATA"]
    return "".join(f"{line}\r\n" for line in lines).encode()


async def take_write(peer: Peer) -> bytes:
    """Receive exactly one write of the client (nothing may be left unread before it)."""
    assert peer.buffer == b"", f"unread bytes before the write: {peer.buffer!r}"
    return await peer.stream.receive()


async def collect(smtp: SMTPClient, messages: Any, **options: Any) -> list[SendResult | SMTPError]:
    async with aclosing(smtp.send_many(messages, **options)) as outcomes:
        return [outcome async for outcome in outcomes]


async def drain(
    smtp: SMTPClient, messages: Any, into: list[SendResult | SMTPError], **options: Any
) -> None:
    """Like ``collect``, keeping the outcomes that came before an exception."""
    async with aclosing(smtp.send_many(messages, **options)) as outcomes:
        async for outcome in outcomes:
            into.append(outcome)


def ok(reply: str) -> bool:
    return reply[:1] == "2"


@asynccontextmanager
async def session(script: Any) -> AsyncIterator[tuple[MemoryByteStream, SMTPClient]]:
    """A client connected to a scripted server, the whole exchange bounded in time."""
    with anyio.fail_after(GUARD):
        async with (
            scripted(script) as stream,
            anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
        ):
            yield stream, smtp


# -- outcomes, summarised so they can be compared --------------------------------------


Summary = tuple[object, ...]


def summary(outcome: SendResult | SMTPError) -> Summary:
    if isinstance(outcome, SendResult):
        rejected = {address: reply.code for address, reply in outcome.rejected.items()}
        return ("sent", outcome.reply.code, outcome.accepted, rejected)
    if isinstance(outcome, SenderRefusedError):
        return ("sender refused", outcome.sender, outcome.reply.code)
    if isinstance(outcome, RecipientsRefusedError):
        return ("recipients refused", {a: reply.code for a, reply in outcome.rejected.items()})
    if isinstance(outcome, DataRefusedError):
        return ("data refused", outcome.command, outcome.reply.code)
    if isinstance(outcome, ReplyError):
        return (type(outcome).__name__, outcome.command, outcome.reply.code)
    return (type(outcome).__name__,)


def sent(*accepted: str, code: int = 250, **rejected: int) -> Summary:
    return ("sent", code, accepted, {f"{name}@example.test": c for name, c in rejected.items()})


# -- a model of the server, pipelined and lock-step -----------------------------------------


@dataclass(frozen=True)
class Spec:
    """One message of a scripted batch: the replies its commands get, and its outcome.

    ``rcpt`` and ``data`` are the replies a pipelining server gives; in lock-step
    a RCPT after a refused MAIL, and DATA after every RCPT was refused, are never
    sent, so their replies are not used.
    """

    expect: Summary
    recipients: tuple[str, ...] = (BOB,)
    mail: str = MAIL_OK
    rcpt: tuple[str, ...] = ()
    data: str = GO_AHEAD
    final: str = ""

    def rcpt_replies(self) -> tuple[str, ...]:
        return self.rcpt or tuple(RCPT_OK for _ in self.recipients)


def items(specs: Sequence[Spec], start: int = 0) -> list[BatchItem]:
    return [(SENDER, spec.recipients, message(start + i)) for i, spec in enumerate(specs)]


async def serve_pipelined(
    peer: Peer, specs: Sequence[Spec], start: int = 0, *, joined: bool = True
) -> None:
    """Serve a batch as a pipelining server sees it, checking every write.

    A group is [the data of the message whose DATA got 354 (a lone "." when
    nothing can be delivered)] [RSET, when the previous group decided a refusal]
    [MAIL, RCPT..., DATA of the next message], all in one write.  With
    ``joined=False`` (input the client can not poll: a plain async iterable)
    the data goes alone, since the next message is read only once nothing is
    held unwritten.
    """
    pending: tuple[int, Spec, bool] | None = None
    rset_due = False
    upcoming = iter(enumerate(specs, start))
    while True:
        expected = b""
        replies: list[str] = []
        refusal = False
        if pending is not None:
            index, spec, lone_dot = pending
            expected += b".\r\n" if lone_dot else wire(index)
            final = spec.final or queued(index)
            replies.append(final)
            refusal = lone_dot or not ok(final)
            pending = None
        if rset_due:
            expected += b"RSET\r\n"
            replies.append(RSET_OK)
        if expected and not joined:
            assert await take_write(peer) == expected
            await peer.send(*replies)
            rset_due = refusal
            continue
        following = next(upcoming, None)
        if following is not None:
            index, spec = following
            expected += envelope(spec.recipients)
            replies += [spec.mail, *spec.rcpt_replies(), spec.data]
            if spec.data.startswith("354"):
                lone_dot = not ok(spec.mail) or not any(map(ok, spec.rcpt_replies()))
                pending = (index, spec, lone_dot)
            else:
                refusal = True
        if not expected:
            return
        assert await take_write(peer) == expected
        await peer.send(*replies)
        rset_due = refusal


async def serve_lock_step(peer: Peer, specs: Sequence[Spec], start: int = 0) -> None:
    """Serve a batch one command at a time; RSET follows every refusal at once."""
    for index, spec in enumerate(specs, start):
        assert await peer.lone("MAIL FROM:") == f"MAIL FROM:<{SENDER}>"
        await peer.send(spec.mail)
        refused = not ok(spec.mail)
        if not refused:
            for recipient, reply in zip(spec.recipients, spec.rcpt_replies(), strict=True):
                assert await peer.lone("RCPT TO:") == f"RCPT TO:<{recipient}>"
                await peer.send(reply)
            refused = not any(map(ok, spec.rcpt_replies()))
        if not refused:
            assert await peer.lone("DATA") == "DATA"
            await peer.send(spec.data)
            refused = not spec.data.startswith("354")
            if not refused:
                assert await peer.data() == wire(index)
                final = spec.final or queued(index)
                await peer.send(final)
                refused = not ok(final)
        if refused:
            assert await peer.lone("RSET") == "RSET"
            await peer.send(RSET_OK)


async def serve(peer: Peer, specs: Sequence[Spec], *, pipelined: bool, start: int = 0) -> None:
    if pipelined:
        await serve_pipelined(peer, specs, start)
    else:
        await serve_lock_step(peer, specs, start)


ACCEPTED = sent(BOB)
OK = Spec(ACCEPTED)
MAIL_REFUSED = Spec(
    ("sender refused", SENDER, 553),
    mail="553 5.7.1 sender refused",
    rcpt=(NEED_MAIL,),
    data=NEED_MAIL,
)
SOME_REFUSED = Spec(
    sent(BOB, carol=550, dave=452),
    recipients=(BOB, CAROL, DAVE),
    rcpt=(RCPT_OK, "550 5.1.1 carol: no such user", "452 4.2.2 dave: mailbox full"),
)
ALL_REFUSED_354 = Spec(
    ("recipients refused", {BOB: 550, CAROL: 450}),
    recipients=(BOB, CAROL),
    rcpt=("550 5.1.1 bob: no such user", "450 4.2.1 carol: try later"),
    final="554 5.5.1 Error: no valid recipients",
)
ALL_REFUSED_503 = Spec(
    ("recipients refused", {BOB: 550}),
    rcpt=("550 5.1.1 bob: no such user",),
    data="503 5.5.1 Error: no valid recipients",
)
DATA_REFUSED = Spec(("data refused", "DATA", 451), data="451 4.3.0 try again later")
FINAL_REFUSED = Spec(
    ("data refused", "end of data", 554), final="554 5.7.1 message looks like spam"
)

SCENARIOS: dict[str, list[Spec]] = {
    "all accepted": [OK, OK, OK, OK],
    "some recipients refused": [SOME_REFUSED, OK],
    "MAIL refused": [OK, MAIL_REFUSED, OK],
    "all recipients refused, DATA 354": [OK, ALL_REFUSED_354, OK],
    "all recipients refused, DATA 503": [OK, ALL_REFUSED_503, OK],
    "DATA refused": [OK, DATA_REFUSED, OK],
    "end of data refused": [OK, FINAL_REFUSED, OK],
    "first message refused": [MAIL_REFUSED, OK],
    "last message refused": [OK, FINAL_REFUSED],
    "only a lone dot": [ALL_REFUSED_354],
    "refusals back to back": [
        MAIL_REFUSED,
        DATA_REFUSED,
        ALL_REFUSED_354,
        FINAL_REFUSED,
        ALL_REFUSED_503,
        SOME_REFUSED,
        ALL_REFUSED_354,
        OK,
    ],
}


@MODES
@pytest.mark.parametrize("specs", SCENARIOS.values(), ids=SCENARIOS.keys())
async def test_scripted_refusals_give_the_same_outcomes_both_ways(
    ehlo: tuple[str, ...], pipelined: bool, specs: list[Spec]
) -> None:
    after = len(specs)

    async def server(peer: Peer) -> None:
        await peer.greet(ehlo)
        await serve(peer, specs, pipelined=pipelined)
        # The session is still usable after the batch.
        await serve(peer, [OK], pipelined=pipelined, start=after)
        await peer.quit()

    async with session(server) as (_stream, smtp):
        outcomes = await collect(smtp, items(specs))
        assert smtp.state is SessionState.READY
        result = await smtp.send_mail(SENDER, [BOB], message(after))
    assert [summary(outcome) for outcome in outcomes] == [spec.expect for spec in specs]
    for spec, outcome in zip(specs, outcomes, strict=True):
        if isinstance(outcome, SendResult):
            assert ok(spec.final or "250")
        else:
            assert isinstance(outcome, ReplyError)
    assert result.queue_id == queue_id(after)


# -- the wire, write by write ------------------------------------------------------------


async def test_steady_state_is_one_write_and_one_round_trip_per_message() -> None:
    count = 6

    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        assert await take_write(peer) == envelope([rcpt(0)])
        await peer.send(MAIL_OK, RCPT_OK, GO_AHEAD)
        for index in range(1, count):
            assert await take_write(peer) == wire(index - 1) + envelope([rcpt(index)])
            await peer.send(queued(index - 1), MAIL_OK, RCPT_OK, GO_AHEAD)
        assert await take_write(peer) == wire(count - 1)
        await peer.send(queued(count - 1))
        await peer.quit()

    async with session(server) as (stream, smtp):
        writes = stream.writes
        batch = [(SENDER, rcpt(i), message(i)) for i in range(count)]
        outcomes = await collect(smtp, batch)
        assert stream.writes - writes == count + 1
    assert [type(outcome) for outcome in outcomes] == [SendResult] * count
    results = [outcome for outcome in outcomes if isinstance(outcome, SendResult)]
    assert [result.queue_id for result in results] == [queue_id(i) for i in range(count)]
    assert [result.accepted for result in results] == [(rcpt(i),) for i in range(count)]
    assert all(not result.rejected for result in results)


async def test_refused_mail_consumes_the_pipelined_replies_and_resets_in_the_next_group() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        assert await take_write(peer) == envelope([BOB])
        await peer.send(MAIL_OK, RCPT_OK, GO_AHEAD)
        assert await take_write(peer) == wire(0) + envelope([BOB, CAROL])
        await peer.send(queued(0), "550 5.7.1 sender blocked", NEED_MAIL, NEED_MAIL, NEED_MAIL)
        assert await take_write(peer) == b"RSET\r\n" + envelope([CAROL])
        await peer.send(RSET_OK, MAIL_OK, RCPT_OK, GO_AHEAD)
        assert await take_write(peer) == wire(2)
        await peer.send(queued(2))
        await peer.quit()

    async with session(server) as (_stream, smtp):
        outcomes = await collect(
            smtp,
            [
                (SENDER, BOB, message(0)),
                (SENDER, [BOB, CAROL], message(1)),
                (SENDER, CAROL, message(2)),
            ],
        )
    first, refused, last = outcomes
    assert isinstance(first, SendResult)
    assert first.queue_id == queue_id(0)
    assert isinstance(refused, SenderRefusedError)
    assert refused.reply.code == 550
    assert refused.reply.message == "sender blocked"
    assert refused.is_permanent
    assert isinstance(last, SendResult)
    assert last.accepted == (CAROL,)
    assert last.queue_id == queue_id(2)


async def test_all_refused_with_354_sends_a_lone_dot_with_the_next_envelope() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        assert await take_write(peer) == envelope([BOB, CAROL])
        await peer.send(MAIL_OK, "550 5.1.1 bob: no such user", "550 5.1.1 carol: no", GO_AHEAD)
        assert await take_write(peer) == b".\r\n" + envelope([DAVE])
        await peer.send("554 5.5.1 no valid recipients", MAIL_OK, RCPT_OK, GO_AHEAD)
        assert await take_write(peer) == wire(1) + b"RSET\r\n" + envelope([DAVE])
        await peer.send(queued(1), RSET_OK, MAIL_OK, RCPT_OK, GO_AHEAD)
        assert await take_write(peer) == wire(2)
        await peer.send(queued(2))
        await peer.quit()

    async with session(server) as (stream, smtp):
        before = len(stream.sent)
        outcomes = await collect(
            smtp,
            [
                (SENDER, [BOB, CAROL], message(0)),
                (SENDER, DAVE, message(1)),
                (SENDER, DAVE, message(2)),
            ],
        )
        assert b"message 0" not in stream.sent[before:]
    refused, second, third = outcomes
    assert isinstance(refused, RecipientsRefusedError)
    assert {address: reply.code for address, reply in refused.rejected.items()} == {
        BOB: 550,
        CAROL: 550,
    }
    assert isinstance(second, SendResult)
    assert second.queue_id == queue_id(1)
    assert isinstance(third, SendResult)
    assert third.queue_id == queue_id(2)


async def test_data_refused_resets_before_the_next_mail() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        assert await take_write(peer) == envelope([BOB])
        await peer.send(MAIL_OK, RCPT_OK, "451 4.3.0 try again later")
        assert await take_write(peer) == b"RSET\r\n" + envelope([CAROL])
        await peer.send(RSET_OK, MAIL_OK, RCPT_OK, GO_AHEAD)
        assert await take_write(peer) == wire(1)
        await peer.send(queued(1))
        await peer.quit()

    async with session(server) as (stream, smtp):
        before = len(stream.sent)
        outcomes = await collect(smtp, [(SENDER, BOB, message(0)), (SENDER, CAROL, message(1))])
        assert b"message 0" not in stream.sent[before:]
    refused, accepted = outcomes
    assert isinstance(refused, DataRefusedError)
    assert refused.command == "DATA"
    assert refused.reply.code == 451
    assert refused.is_transient
    assert isinstance(accepted, SendResult)


async def test_end_of_data_refused_then_the_batch_goes_on() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        assert await take_write(peer) == envelope([BOB])
        await peer.send(MAIL_OK, RCPT_OK, GO_AHEAD)
        assert await take_write(peer) == wire(0) + envelope([BOB])
        await peer.send("554 5.7.1 spam", MAIL_OK, RCPT_OK, GO_AHEAD)
        assert await take_write(peer) == wire(1) + b"RSET\r\n"
        await peer.send(queued(1), RSET_OK)
        await peer.quit()

    async with session(server) as (_stream, smtp):
        outcomes = await collect(smtp, [(SENDER, BOB, message(0)), (SENDER, BOB, message(1))])
    refused, accepted = outcomes
    assert isinstance(refused, DataRefusedError)
    assert refused.command == "end of data"
    assert refused.reply.message == "spam"
    assert isinstance(accepted, SendResult)
    assert accepted.queue_id == queue_id(1)


async def test_max_in_flight_one_keeps_messages_apart() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        for index in range(3):
            assert await take_write(peer) == envelope([rcpt(index)])
            await peer.send(MAIL_OK, RCPT_OK, GO_AHEAD)
            assert await take_write(peer) == wire(index)
            await peer.send(queued(index))
        await peer.quit()

    async with session(server) as (_stream, smtp):
        batch = [(SENDER, rcpt(i), message(i)) for i in range(3)]
        outcomes = await collect(smtp, batch, max_in_flight=1)
    assert [summary(outcome) for outcome in outcomes] == [
        ("sent", 250, (rcpt(i),), {}) for i in range(3)
    ]


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2", None])
async def test_max_in_flight_must_be_a_positive_int(bad: object) -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        await serve_pipelined(peer, [OK])
        await peer.quit()

    async with session(server) as (stream, smtp):
        writes = stream.writes
        with pytest.raises(InvalidArgumentError, match="max_in_flight"):
            await collect(smtp, items([OK]), max_in_flight=bad)
        assert stream.writes == writes
        assert [summary(o) for o in await collect(smtp, items([OK]))] == [ACCEPTED]


@MODES
async def test_an_empty_batch_sends_nothing(ehlo: tuple[str, ...], pipelined: bool) -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(ehlo)
        await peer.quit()

    async with session(server) as (stream, smtp):
        writes = stream.writes
        assert await collect(smtp, []) == []
        assert await collect(smtp, iter(())) == []
        assert stream.writes == writes
        assert smtp.state is SessionState.READY


# -- what the caller gives ---------------------------------------------------------------


@MODES
async def test_invalid_messages_get_their_error_in_place_and_nothing_is_sent(
    ehlo: tuple[str, ...], pipelined: bool
) -> None:
    no_recipients = EmailMessage()
    no_recipients["From"] = SENDER
    no_recipients["Subject"] = "nobody to send to"
    no_recipients.set_content("x\n")
    batch: list[Any] = [
        (SENDER, BOB, message(0)),
        ("not an address", BOB, message(90)),
        (SENDER, ["bob@example.test\r\nRCPT TO:<evil@example.test>"], message(91)),
        (SENDER, [BOB]),
        (SENDER, [], message(92)),
        (SENDER, BOB, 12345),
        42,
        no_recipients,
        ("jörg@bücher.test", BOB, message(93)),
        (SENDER, BOB, message(1)),
    ]

    async def server(peer: Peer) -> None:
        await peer.greet(ehlo)
        await serve(peer, [OK, OK], pipelined=pipelined)
        await peer.quit()

    async with session(server) as (stream, smtp):
        outcomes = await collect(smtp, batch)
        wire_bytes = bytes(stream.sent)
    assert len(outcomes) == len(batch)
    first, *invalid, utf8, last = outcomes
    assert isinstance(first, SendResult)
    assert isinstance(last, SendResult)
    assert last.queue_id == queue_id(1)
    assert len(invalid) == 7
    assert all(isinstance(outcome, InvalidArgumentError) for outcome in invalid), invalid
    assert isinstance(utf8, ExtensionNotSupportedError)
    assert utf8.name == "SMTPUTF8"
    for marker in (b"message 9", b"evil", b"not an address", "jörg".encode()):
        assert marker not in wire_bytes
    assert wire_bytes.count(b"MAIL FROM:") == 2


async def test_async_iterables_and_generators_are_read_lazily() -> None:
    pulled: list[int] = []
    closed: list[bool] = []

    async def generate() -> AsyncIterator[BatchItem]:
        try:
            for index in range(3):
                pulled.append(index)
                yield (SENDER, BOB, message(index))
        finally:
            closed.append(True)

    class Items:
        """An async iterable that is not a generator (no aclose)."""

        def __aiter__(self) -> AsyncIterator[BatchItem]:
            return generate_plain()

    async def generate_plain() -> AsyncIterator[BatchItem]:
        for index in range(3, 5):
            yield (SENDER, BOB, message(index))

    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        await serve_pipelined(peer, [OK] * 3, joined=False)
        await serve_pipelined(peer, [OK] * 2, start=3, joined=False)
        await serve_pipelined(peer, [OK] * 2, start=5)
        await peer.quit()

    async with session(server) as (_stream, smtp):
        seen: list[list[int]] = []
        async with aclosing(smtp.send_many(generate())) as outcomes:
            async for _outcome in outcomes:
                seen.append(list(pulled))
        # A plain async iterable is read only when the engine holds nothing
        # unwritten: never ahead of the message in flight.
        assert seen[0] == [0]
        assert closed == [True]
        second = await collect(smtp, Items())
        third = await collect(smtp, ((SENDER, BOB, message(i)) for i in range(5, 7)))
    assert len(seen) == 3
    assert [summary(o) for o in second + third] == [ACCEPTED] * 4


def _email(subject: str, *, bcc: str | None = None) -> EmailMessage:
    email = EmailMessage()
    email["From"] = "Alice <alice@example.test>"
    email["To"] = "Bob <bob@example.test>"
    if bcc is not None:
        email["Bcc"] = bcc
    email["Subject"] = subject
    email.set_content(f"{subject} body\n")
    return email


@asynccontextmanager
async def served(server: SMTPTestServer) -> AsyncIterator[SMTPClient]:
    """A client talking to ``server`` over an in-memory stream."""
    client_end, server_end = memory_stream_pair()
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as group:
            group.start_soon(server.serve_stream, server_end)
            async with anyio_smtp.connect_stream(client_end, ehlo_domain=CLIENT) as smtp:
                yield smtp


async def test_email_messages_in_a_batch_keep_bcc_blind() -> None:
    server = SMTPTestServer()
    secret = _email("secret", bcc="Eve <eve@example.test>")
    batch: list[BatchItem] = [
        _email("first"),
        (SENDER, [CAROL], b"Subject: tuple\r\n\r\nplain\r\n"),
        secret,
    ]
    async with served(server) as smtp:
        outcomes = await collect(smtp, batch)
    assert [type(outcome) for outcome in outcomes] == [SendResult] * 3
    third = outcomes[2]
    assert isinstance(third, SendResult)
    assert set(third.accepted) == {BOB, "eve@example.test"}
    first, second, hidden = server.messages
    assert first.recipients == (BOB,)
    assert first.sender == SENDER
    assert second.recipients == (CAROL,)
    assert set(hidden.recipients) == {BOB, "eve@example.test"}
    assert b"Subject: secret\r\n" in hidden.data
    assert b"eve@example.test" not in hidden.data
    assert b"bcc" not in hidden.data.lower()
    assert secret["Bcc"] == "Eve <eve@example.test>"


# -- the caller's side of the loop -------------------------------------------------------


@MODES
async def test_an_exception_from_the_callers_iterator_comes_after_the_messages_in_flight(
    ehlo: tuple[str, ...], pipelined: bool
) -> None:
    def batch() -> Iterator[BatchItem]:
        yield (SENDER, BOB, message(0))
        yield (SENDER, BOB, message(1))
        raise LookupError("the caller's messages ran out badly")

    async def server(peer: Peer) -> None:
        await peer.greet(ehlo)
        await serve(peer, [OK, OK], pipelined=pipelined)
        await serve(peer, [OK], pipelined=pipelined, start=2)
        await peer.quit()

    async with session(server) as (_stream, smtp):
        outcomes: list[SendResult | SMTPError] = []
        with pytest.raises(LookupError, match="ran out badly"):
            await drain(smtp, batch(), outcomes)
        assert [summary(o) for o in outcomes] == [ACCEPTED, ACCEPTED]
        assert smtp.state is SessionState.READY
        assert (await smtp.send_mail(SENDER, BOB, message(2))).queue_id == queue_id(2)


async def test_leaving_the_loop_with_a_message_in_flight_closes_the_session() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        assert await take_write(peer) == envelope([BOB])
        await peer.send(MAIL_OK, RCPT_OK, GO_AHEAD)
        assert await take_write(peer) == wire(0) + envelope([CAROL])
        await peer.send(queued(0), MAIL_OK, RCPT_OK, GO_AHEAD)
        # Message 1 is in its data phase: the client can only drop the connection.
        assert await peer.rest() == b""

    pulled: list[int] = []

    def batch() -> Iterator[BatchItem]:
        for index in range(5):
            pulled.append(index)
            yield (SENDER, BOB if index == 0 else CAROL, message(index))

    async with session(server) as (stream, smtp):
        async with aclosing(smtp.send_many(batch())) as outcomes:
            async for outcome in outcomes:
                assert isinstance(outcome, SendResult)
                break
        assert stream.closed
        assert smtp.closed
        with pytest.raises(SessionClosedError):
            await smtp.send_mail(SENDER, BOB, message(9))
    assert pulled == [0, 1]


@MODES
async def test_leaving_the_loop_when_nothing_is_in_flight_keeps_the_session(
    ehlo: tuple[str, ...], pipelined: bool
) -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(ehlo)
        await serve(peer, [OK, OK], pipelined=pipelined)
        await serve(peer, [OK], pipelined=pipelined, start=2)
        await peer.quit()

    # In lock-step every outcome comes between two messages; pipelined, only the
    # last one does (the next message is under way before an outcome is given).
    batch: list[BatchItem] = items([OK, OK])
    if not pipelined:
        batch.append((SENDER, BOB, b"Subject: never sent\r\n\r\n"))

    async with session(server) as (stream, smtp):
        count = 0
        async with aclosing(smtp.send_many(batch)) as outcomes:
            async for outcome in outcomes:
                assert isinstance(outcome, SendResult)
                count += 1
                if count == 2:
                    break
        assert not stream.closed
        assert smtp.state is SessionState.READY
        result = await smtp.send_mail(SENDER, BOB, message(2))
        assert result.queue_id == queue_id(2)
        assert b"never sent" not in stream.sent


async def test_send_mail_inside_the_loop_fails_instead_of_deadlocking() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        assert await take_write(peer) == envelope([BOB])
        await peer.send(MAIL_OK, RCPT_OK, GO_AHEAD)
        assert await take_write(peer) == wire(0) + envelope([BOB])
        await peer.send(queued(0), MAIL_OK, RCPT_OK, GO_AHEAD)
        await peer.rest()

    async def nested() -> None:
        async with aclosing(smtp.send_many(items([OK] * 3))) as outcomes:
            async for _outcome in outcomes:
                await smtp.send_mail(SENDER, CAROL, b"Subject: nested\r\n\r\n")

    async with session(server) as (stream, smtp):
        with anyio.fail_after(5):
            with pytest.raises(LocalProtocolError, match="send_many"):
                await nested()
        assert b"nested" not in stream.sent
        assert smtp.closed


# -- concurrency -------------------------------------------------------------------------


def transactions(lines: Sequence[str]) -> list[list[str]]:
    """Client lines cut into transactions, each starting with its MAIL command."""
    cut: list[list[str]] = []
    for line in lines:
        if line.startswith("MAIL FROM:"):
            cut.append([line])
        elif cut and line not in ("QUIT", "RSET"):
            cut[-1].append(line)
    return cut


async def test_concurrent_senders_never_interleave_on_the_wire() -> None:
    server = SMTPTestServer()
    results: dict[str, SendResult | SMTPError] = {}

    def body(tag: str) -> bytes:
        return f"Subject: {tag}\r\n\r\nfrom {tag}\r\n.{tag}\r\n".encode()

    async def single(tag: str) -> None:
        results[tag] = await smtp.send_mail(
            f"{tag}@example.test", [f"to-{tag}@example.test"], body(tag)
        )

    async def batch(tags: list[str]) -> None:
        messages = [(f"{t}@example.test", f"to-{t}@example.test", body(t)) for t in tags]
        async with aclosing(smtp.send_many(messages)) as outcomes:
            async for tag, outcome in _zip_async(tags, outcomes):
                results[tag] = outcome

    batch_tags = [f"batch{i}" for i in range(3)]
    single_tags = [f"task{i}" for i in range(5)]
    async with served(server) as smtp, anyio.create_task_group() as group:
        for tag in single_tags[:2]:
            group.start_soon(single, tag)
        group.start_soon(batch, batch_tags)
        for tag in single_tags[2:]:
            group.start_soon(single, tag)

    tags = single_tags + batch_tags
    assert sorted(results) == sorted(tags)
    assert all(isinstance(outcome, SendResult) for outcome in results.values())
    cut = transactions(server.client_lines())
    assert len(cut) == len(tags)
    for transaction in cut:
        tag = transaction[0].removeprefix("MAIL FROM:<").partition("@")[0]
        assert transaction == [
            f"MAIL FROM:<{tag}@example.test> SIZE={len(body(tag))}",
            f"RCPT TO:<to-{tag}@example.test>",
            "DATA",
            f"Subject: {tag}",
            "",
            f"from {tag}",
            f"..{tag}",
            ".",
        ], transaction
    # The batch's messages went one after the other, with no one else's in between.
    order = [t[0].removeprefix("MAIL FROM:<").partition("@")[0] for t in cut]
    start = order.index("batch0")
    assert order[start : start + 3] == batch_tags
    assert sorted(m.sender for m in server.messages) == sorted(f"{t}@example.test" for t in tags)
    assert server.pipelining_violations == 0


async def _zip_async(
    tags: list[str], outcomes: AsyncIterator[SendResult | SMTPError]
) -> AsyncIterator[tuple[str, SendResult | SMTPError]]:
    index = 0
    async for outcome in outcomes:
        yield tags[index], outcome
        index += 1


# -- the session fails in the middle of a group ------------------------------------------


@dataclass
class Recorder:
    """A caller's batch that records how far it was read."""

    count: int
    pulled: list[int] = field(default_factory=list)

    def __iter__(self) -> Iterator[BatchItem]:
        for index in range(self.count):
            self.pulled.append(index)
            yield (SENDER, rcpt(index), message(index))


async def run_failing(
    smtp: SMTPClient, batch: Recorder, error: type[E]
) -> tuple[list[SendResult | SMTPError], E]:
    outcomes: list[SendResult | SMTPError] = []
    with pytest.raises(error) as caught:
        await drain(smtp, batch, outcomes)
    assert smtp.closed
    return outcomes, caught.value


async def test_421_to_the_end_of_data_in_the_middle_of_a_group() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        assert await take_write(peer) == envelope([rcpt(0)])
        await peer.send(MAIL_OK, RCPT_OK, GO_AHEAD)
        assert await take_write(peer) == wire(0) + envelope([rcpt(1)])
        await peer.send("421 4.3.2 shutting down")

    batch = Recorder(5)
    async with session(server) as (stream, smtp):
        outcomes, failure = await run_failing(smtp, batch, ServiceUnavailableError)
        assert stream.closed
    assert isinstance(failure, ServiceUnavailableError)
    assert failure.reply.code == 421
    # Message 0's verdict was 421, message 1 never got far: neither was sent.
    assert [type(outcome) for outcome in outcomes] == [ServiceUnavailableError] * 2
    assert all(isinstance(o, ReplyError) and o.reply.code == 421 for o in outcomes)
    assert batch.pulled == [0, 1]


async def test_421_after_a_final_250_keeps_that_message_sent() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        assert await take_write(peer) == envelope([rcpt(0)])
        await peer.send(MAIL_OK, RCPT_OK, GO_AHEAD)
        assert await take_write(peer) == wire(0) + envelope([rcpt(1)])
        await peer.send(queued(0), MAIL_OK, "421 4.3.2 shutting down")

    batch = Recorder(5)
    async with session(server) as (_stream, smtp):
        outcomes, failure = await run_failing(smtp, batch, ServiceUnavailableError)
    assert len(outcomes) == 2
    delivered, lost = outcomes
    # The server accepted message 0 before it closed: reporting it as failed
    # would make the caller send it twice.
    assert isinstance(delivered, SendResult), delivered
    assert delivered.queue_id == queue_id(0)
    assert isinstance(lost, ServiceUnavailableError)
    assert lost.reply.code == 421
    assert failure.reply.code == 421
    assert batch.pulled == [0, 1]


async def test_disconnect_after_the_data_was_written_makes_delivery_unknown() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        assert await take_write(peer) == envelope([rcpt(0)])
        await peer.send(MAIL_OK, RCPT_OK, GO_AHEAD)
        assert await take_write(peer) == wire(0) + envelope([rcpt(1)])
        # Gone without a word: message 0 was complete on the wire, 1 was not.

    batch = Recorder(5)
    async with session(server) as (stream, smtp):
        outcomes, failure = await run_failing(smtp, batch, ServerDisconnectedError)
        assert stream.closed
    unknown, lost = outcomes
    assert isinstance(unknown, DeliveryUnknownError)
    assert unknown.recipients == (rcpt(0),)
    assert isinstance(unknown.__cause__, ServerDisconnectedError)
    assert not isinstance(unknown, ConnectionError)
    assert isinstance(lost, ServerDisconnectedError)
    assert isinstance(failure, ServerDisconnectedError)
    assert batch.pulled == [0, 1]


async def test_disconnect_after_a_final_250_keeps_that_message_sent() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        assert await take_write(peer) == envelope([rcpt(0)])
        await peer.send(MAIL_OK, RCPT_OK, GO_AHEAD)
        assert await take_write(peer) == wire(0) + envelope([rcpt(1)])
        await peer.send(queued(0), MAIL_OK)

    batch = Recorder(5)
    async with session(server) as (_stream, smtp):
        outcomes, _failure = await run_failing(smtp, batch, ServerDisconnectedError)
    assert len(outcomes) == 2
    delivered, lost = outcomes
    assert isinstance(delivered, SendResult), delivered
    assert delivered.queue_id == queue_id(0)
    assert isinstance(lost, ServerDisconnectedError)
    assert batch.pulled == [0, 1]


async def test_disconnect_after_a_lone_dot_is_not_delivery_unknown() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        assert await take_write(peer) == envelope([rcpt(0)])
        await peer.send(MAIL_OK, "550 5.1.1 no such user", GO_AHEAD)
        assert await take_write(peer) == b".\r\n" + envelope([rcpt(1)])

    batch = Recorder(2)
    async with session(server) as (_stream, smtp):
        outcomes, _failure = await run_failing(smtp, batch, ServerDisconnectedError)
    first, second = outcomes
    # Message 0 can not have been delivered: its only recipient was refused.
    assert isinstance(first, RecipientsRefusedError), first
    assert first.rejected[rcpt(0)].code == 550
    assert isinstance(second, ServerDisconnectedError)


async def test_lock_step_421_gives_the_message_in_flight_its_outcome() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(BASIC_EHLO)
        await serve_lock_step(peer, [Spec(sent(rcpt(0)), recipients=(rcpt(0),))])
        await peer.lone("MAIL FROM:")
        await peer.send("421 4.3.2 shutting down")

    batch = Recorder(5)
    async with session(server) as (_stream, smtp):
        outcomes, failure = await run_failing(smtp, batch, ServiceUnavailableError)
    # As with PIPELINING: one outcome per message that was started, then the failure.
    assert [type(outcome) for outcome in outcomes] == [SendResult, ServiceUnavailableError]
    assert failure.reply.code == 421
    assert batch.pulled == [0, 1]


async def test_lock_step_disconnect_after_the_data_gives_delivery_unknown_as_an_outcome() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(BASIC_EHLO)
        await peer.lone("MAIL FROM:")
        await peer.send(MAIL_OK)
        await peer.lone("RCPT TO:")
        await peer.send(RCPT_OK)
        await peer.lone("DATA")
        await peer.send(GO_AHEAD)
        assert await peer.data() == wire(0)

    batch = Recorder(5)
    async with session(server) as (_stream, smtp):
        outcomes, failure = await run_failing(smtp, batch, ServerDisconnectedError)
    assert [type(outcome) for outcome in outcomes] == [DeliveryUnknownError]
    assert isinstance(failure, ServerDisconnectedError)
    assert batch.pulled == [0]


# -- every reply is checked; no deadlock against full buffers -----------------------------


async def test_a_positive_reply_to_data_that_is_not_354_is_a_refusal() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        assert await take_write(peer) == envelope([BOB])
        await peer.send(MAIL_OK, RCPT_OK, "250 2.0.0 Ok")
        assert await take_write(peer) == b"RSET\r\n" + envelope([BOB])
        await peer.send(RSET_OK, MAIL_OK, RCPT_OK, GO_AHEAD)
        assert await take_write(peer) == wire(1)
        await peer.send(queued(1))
        await peer.quit()

    async with session(server) as (stream, smtp):
        outcomes = await collect(smtp, items([OK, OK]))
        assert b"message 0" not in stream.sent
    refused, accepted = outcomes
    assert isinstance(refused, DataRefusedError)
    assert refused.reply.code == 250
    assert isinstance(accepted, SendResult)


async def test_a_refused_rset_ends_the_session_after_the_outcomes() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        assert await take_write(peer) == envelope([rcpt(0)])
        await peer.send("550 5.7.1 sender blocked", NEED_MAIL, NEED_MAIL)
        assert await take_write(peer) == b"RSET\r\n" + envelope([rcpt(1)])
        await peer.send("502 5.5.2 RSET not implemented", MAIL_OK, RCPT_OK, GO_AHEAD)
        await peer.rest()

    batch = Recorder(3)
    async with session(server) as (_stream, smtp):
        outcomes, failure = await run_failing(smtp, batch, ReplyError)
    assert failure.command == "RSET"
    assert failure.reply.code == 502
    refused, lost = outcomes
    assert isinstance(refused, SenderRefusedError)
    assert lost is failure
    assert batch.pulled == [0, 1]


def unbuffered_pair() -> tuple[MemoryByteStream, MemoryByteStream]:
    """A connection whose every write waits until the peer reads it (no buffer at all)."""
    to_server, from_client = anyio.create_memory_object_stream[bytes](0)
    to_client, from_server = anyio.create_memory_object_stream[bytes](0)
    return MemoryByteStream(to_server, from_server), MemoryByteStream(to_client, from_client)


async def test_a_large_group_does_not_deadlock_against_a_server_that_answers_as_it_reads() -> None:
    """RFC 2920 §3.3: the client must keep reading replies while it writes a group.

    Here the group (MAIL, 3000 RCPTs, DATA) is larger than one write, the server
    answers each command as soon as it reads it, and nothing is buffered: a
    client that does not read until the whole group is written waits forever.
    """
    recipients = [f"user{i:05d}@example.test" for i in range(3000)]
    client_end, server_end = unbuffered_pair()
    peer = Peer(server_end)

    async def server() -> None:
        try:
            await peer.greet(PIPELINING_EHLO)
            await peer.expect("MAIL FROM:")
            await peer.send(MAIL_OK)
            for address in recipients:
                assert await peer.line() == f"RCPT TO:<{address}>"
                await peer.send(RCPT_OK)
            assert await peer.line() == "DATA"
            await peer.send(GO_AHEAD)
            assert await peer.data() == wire(0)
            await peer.send(queued(0))
            await peer.quit()
        finally:
            await peer.close()

    # A working client needs a fraction of a second; a deadlock waits for this.
    with anyio.fail_after(3):
        async with anyio.create_task_group() as group:
            group.start_soon(server)
            async with anyio_smtp.connect_stream(client_end, ehlo_domain=CLIENT) as smtp:
                result = await smtp.send_mail(SENDER, recipients, message(0))
    assert len(result.accepted) == len(recipients)
    assert result.queue_id == queue_id(0)

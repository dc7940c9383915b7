"""CHUNKING (RFC 3030): BDAT on the wire, BINARYMIME, chunking, early stop, groups.

RFC 3030 §2: "BDAT <chunk-size> [LAST]" is followed by exactly chunk-size
octets, with no dot-stuffing or other transformation; after a refused chunk the
client sends no more chunks of that message, and RSET ends the transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

import anyio_smtp
from anyio_smtp import (
    DataRefusedError,
    ExtensionNotSupportedError,
    InvalidArgumentError,
    RecipientsRefusedError,
    SenderRefusedError,
    SendResult,
    ServiceUnavailableError,
    SessionClosedError,
    SessionState,
    SMTPClient,
    SMTPError,
)
from anyio_smtp._transaction import BDAT_CHUNK, BatchItem
from anyio_smtp.testing import MemoryByteStream
from tests.client.scripted import Peer, scripted

CLIENT = "client.test"
SENDER = "alice@example.test"
BOB = "bob@example.test"
CAROL = "carol@example.test"
GUARD = 20

MAIL_OK = "250 2.1.0 Ok"
RCPT_OK = "250 2.1.5 Ok"
RSET_OK = "250 2.0.0 Ok"


def ehlo(*keywords: str) -> tuple[str, ...]:
    lines = ("mx.test", *keywords, "ENHANCEDSTATUSCODES")
    return (*(f"250-{line}" for line in lines[:-1]), f"250 {lines[-1]}")


CHUNKING_PIPELINED = ehlo("PIPELINING", "8BITMIME", "CHUNKING")
CHUNKING_LOCK_STEP = ehlo("8BITMIME", "CHUNKING")
BINARY_PIPELINED = ehlo("PIPELINING", "8BITMIME", "CHUNKING", "BINARYMIME")

MODES = pytest.mark.parametrize(
    ("ehlo_lines", "pipelined"),
    [(CHUNKING_PIPELINED, True), (CHUNKING_LOCK_STEP, False)],
    ids=["pipelined", "lock-step"],
)

#: Text whose lines start with dots (a lone one too), with every kind of line ending.
DOTTY = b"Subject: chunks\n\n.leading dot\n.\n..two\r\nbare cr\rend"
DOTTY_PAYLOAD = b"Subject: chunks\r\n\r\n.leading dot\r\n.\r\n..two\r\nbare cr\r\nend\r\n"


def queued(index: int) -> str:
    return f"250 2.0.0 Ok: queued as QBDAT{index:04d}"


def transaction(recipients: Iterable[str], payload: bytes, *, mail: str = "") -> bytes:
    """A whole small BDAT transaction as the client writes it."""
    lines = [f"MAIL FROM:<{SENDER}>{mail}", *(f"RCPT TO:<{r}>" for r in recipients)]
    head = "".join(f"{line}\r\n" for line in lines).encode()
    return head + f"BDAT {len(payload)} LAST\r\n".encode() + payload


async def take_write(peer: Peer) -> bytes:
    """Receive exactly one write of the client (nothing may be left unread before it)."""
    assert peer.buffer == b"", f"unread bytes before the write: {peer.buffer!r}"
    return await peer.stream.receive()


async def read_exact(peer: Peer, size: int) -> bytes:
    while len(peer.buffer) < size:
        peer.buffer += await peer.stream.receive()
    data, peer.buffer = peer.buffer[:size], peer.buffer[size:]
    return data


@asynccontextmanager
async def session(script: Any) -> AsyncIterator[tuple[MemoryByteStream, SMTPClient]]:
    with anyio.fail_after(GUARD):
        async with (
            scripted(script) as stream,
            anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
        ):
            yield stream, smtp


async def collect(smtp: SMTPClient, messages: Any, **options: Any) -> list[SendResult | SMTPError]:
    async with aclosing(smtp.send_many(messages, **options)) as outcomes:
        return [outcome async for outcome in outcomes]


# -- a server that answers each command at once ---------------------------------------------


@dataclass
class Event:
    """A command the server received; ``payload`` for BDAT and for the data after DATA."""

    command: str
    payload: bytes = b""

    @property
    def is_bdat(self) -> bool:
        return self.command.startswith("BDAT ")

    @property
    def is_last(self) -> bool:
        return self.is_bdat and self.command.endswith(" LAST")


class ChunkServer:
    """Answers every command as soon as it is read (fine with or without PIPELINING).

    ``decide(event, events)`` may return a reply to use instead of the normal one.
    """

    def __init__(
        self,
        ehlo_lines: Sequence[str],
        decide: Callable[[Event, list[Event]], str | None] | None = None,
    ) -> None:
        self.ehlo_lines = ehlo_lines
        self.decide = decide
        self.events: list[Event] = []
        self.delivered: list[bytes] = []
        #: Whether the client dropped the connection without QUIT.
        self.dropped = False
        self._chunks: list[bytes] = []

    def _answer(self, event: Event, normal: str) -> str:
        reply = self.decide(event, self.events) if self.decide is not None else None
        return reply or normal

    async def run(self, peer: Peer) -> None:
        try:
            await self._run(peer)
        except anyio.EndOfStream:
            self.dropped = True

    async def _run(self, peer: Peer) -> None:
        await peer.greet(self.ehlo_lines)
        while True:
            line = await peer.line()
            if line == "QUIT":
                await peer.send("221 2.0.0 Bye")
                assert await peer.rest() == b""
                return
            event = Event(line)
            if event.is_bdat:
                event.payload = await read_exact(peer, int(line.split()[1]))
            self.events.append(event)
            if event.is_bdat:
                self._chunks.append(event.payload)
                if event.is_last:
                    reply = self._answer(event, queued(len(self.delivered)))
                    if reply.startswith("2"):
                        self.delivered.append(b"".join(self._chunks))
                    self._chunks = []
                else:
                    reply = self._answer(event, "250 2.0.0 chunk ok")
            elif line == "DATA":
                reply = self._answer(event, "354 go ahead")
            else:
                self._chunks = [] if line == "RSET" else self._chunks
                reply = self._answer(event, "250 2.0.0 Ok")
            await peer.send(reply)
            if line == "DATA" and reply.startswith("354"):
                end = Event(".", await peer.data())
                self.events.append(end)
                reply = self._answer(end, queued(len(self.delivered)))
                if reply.startswith("2"):
                    self.delivered.append(end.payload)
                await peer.send(reply)

    def commands(self) -> list[str]:
        return [event.command for event in self.events]

    def bdat_sizes(self) -> list[tuple[int, bool]]:
        return [(len(e.payload), e.is_last) for e in self.events if e.is_bdat]


# -- the wire format ---------------------------------------------------------------------------


async def test_bdat_last_carries_the_message_unstuffed_in_one_write() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(CHUNKING_PIPELINED)
        assert await take_write(peer) == transaction([BOB, CAROL], DOTTY_PAYLOAD)
        await peer.send(MAIL_OK, RCPT_OK, RCPT_OK, queued(0))
        await peer.quit()

    async with session(server) as (_stream, smtp):
        result = await smtp.send_mail(SENDER, [BOB, CAROL], DOTTY, transfer="bdat")
        assert smtp.state is SessionState.READY
    assert result.accepted == (BOB, CAROL)
    assert result.queue_id == "QBDAT0000"


async def test_bdat_in_lock_step_waits_for_each_reply() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(CHUNKING_LOCK_STEP)
        assert await peer.lone("MAIL FROM:") == f"MAIL FROM:<{SENDER}>"
        await peer.send(MAIL_OK)
        assert await peer.lone("RCPT TO:") == f"RCPT TO:<{BOB}>"
        await peer.send(RCPT_OK)
        header = f"BDAT {len(DOTTY_PAYLOAD)} LAST\r\n".encode()
        assert await take_write(peer) == header + DOTTY_PAYLOAD
        await peer.send(queued(0))
        await peer.quit()

    async with session(server) as (_stream, smtp):
        result = await smtp.send_mail(SENDER, BOB, DOTTY, transfer="bdat")
    assert result.queue_id == "QBDAT0000"


async def test_binary_content_goes_unchanged_as_binarymime() -> None:
    binary = b"\x00\x01\x02 binary\nbare LF\r\n\xff\xfe\r.\r\nno final line ending"

    async def server(peer: Peer) -> None:
        await peer.greet(BINARY_PIPELINED)
        expected = transaction([BOB], binary, mail=" BODY=BINARYMIME")
        assert await take_write(peer) == expected
        await peer.send(MAIL_OK, RCPT_OK, queued(0))
        await peer.quit()

    async with session(server) as (_stream, smtp):
        result = await smtp.send_mail(SENDER, BOB, binary)
    assert result.queue_id == "QBDAT0000"


async def test_size_declares_the_octets_that_bdat_carries_for_binary_content() -> None:
    binary = b"\x00\n\x00\n\x00\n\x00\n"

    async def server(peer: Peer) -> None:
        await peer.greet(ehlo("PIPELINING", "8BITMIME", "CHUNKING", "BINARYMIME", "SIZE"))
        mail = f" BODY=BINARYMIME SIZE={len(binary)}"
        write = await take_write(peer)
        assert write.split(b"\r\n")[0] == f"MAIL FROM:<{SENDER}>{mail}".encode()
        assert write == transaction([BOB], binary, mail=mail)
        await peer.send(MAIL_OK, RCPT_OK, queued(0))
        await peer.quit()

    async with session(server) as (_stream, smtp):
        await smtp.send_mail(SENDER, BOB, binary)


async def test_binary_content_without_binarymime_is_normalised_8bitmime() -> None:
    binary = b"\x00 nul\nbare LF\xff"
    server = ChunkServer(CHUNKING_PIPELINED)
    async with session(server.run) as (_stream, smtp):
        await smtp.send_mail(SENDER, BOB, binary, transfer="data")
    mail, _rcpt, data, _end = server.events
    assert mail.command == f"MAIL FROM:<{SENDER}> BODY=8BITMIME"
    assert data.command == "DATA"
    assert server.delivered == [b"\x00 nul\r\nbare LF\xff\r\n.\r\n"]


@MODES
async def test_a_large_message_is_cut_into_bdat_chunks(
    ehlo_lines: tuple[str, ...], pipelined: bool
) -> None:
    body = b"".join(b".line %07d of a large message\n" % i for i in range(90_000))
    normalised = body.replace(b"\n", b"\r\n")
    assert len(normalised) > 2 * BDAT_CHUNK
    server = ChunkServer(ehlo_lines)
    async with session(server.run) as (_stream, smtp):
        result = await smtp.send_mail(SENDER, BOB, body)
    assert result.queue_id == "QBDAT0000"
    assert server.bdat_sizes() == [
        (BDAT_CHUNK, False),
        (BDAT_CHUNK, False),
        (len(normalised) - 2 * BDAT_CHUNK, True),
    ]
    assert server.delivered == [normalised]
    assert "DATA" not in server.commands()


@MODES
async def test_a_streamed_message_goes_in_bdat_chunks(
    ehlo_lines: tuple[str, ...], pipelined: bool
) -> None:
    line = b".streamed line, 31 octets long\n"
    piece = line * 2048
    count = 3 * BDAT_CHUNK // (len(line) + 1) // 2048 + 1

    async def generate() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield piece

    normalised = piece.replace(b"\n", b"\r\n") * count
    assert len(normalised) > 3 * BDAT_CHUNK
    server = ChunkServer(ehlo_lines)
    async with session(server.run) as (_stream, smtp):
        result = await smtp.send_mail(SENDER, BOB, generate())
        small = await smtp.send_mail(SENDER, BOB, iter([b"Subject: tiny\r\n\r\n.x"]))
        # A stream with no data at all is refused before MAIL (it is most likely
        # one read already): nothing is sent, the session stays usable.
        with pytest.raises(InvalidArgumentError, match="read to its end"):
            await smtp.send_mail(SENDER, BOB, iter([]))
        assert not smtp.closed
    assert (result.queue_id, small.queue_id) == ("QBDAT0000", "QBDAT0001")
    assert server.events[0].command == f"MAIL FROM:<{SENDER}> BODY=8BITMIME"
    sizes = server.bdat_sizes()
    # Each piece read from the stream goes as one BDAT chunk, the last one LAST.
    streamed = sizes[:count]
    assert streamed == [(len(piece.replace(b"\n", b"\r\n")), False)] * (count - 1) + [
        (len(piece.replace(b"\n", b"\r\n")), True)
    ]
    assert sum(size for size, _last in streamed) == len(normalised)
    assert sizes[count:] == [(len(b"Subject: tiny\r\n\r\n.x\r\n"), True)]
    assert server.delivered == [normalised, b"Subject: tiny\r\n\r\n.x\r\n"]


async def test_streamed_8bit_data_without_8bitmime_never_reaches_bdat() -> None:
    server = ChunkServer(ehlo("PIPELINING", "CHUNKING"))

    async def generate() -> AsyncIterator[bytes]:
        yield b"Subject: x\r\n\r\nfine so far\r\n"
        yield b"caf\xc3\xa9\r\n"

    async with session(server.run) as (stream, smtp):
        with pytest.raises(ExtensionNotSupportedError) as caught:
            await smtp.send_mail(SENDER, BOB, generate())
        assert caught.value.name == "8BITMIME"
        assert smtp.closed
        assert stream.closed
        with pytest.raises(SessionClosedError):
            await smtp.send_mail(SENDER, BOB, b"x")
    assert server.dropped
    assert server.delivered == []
    assert not any(event.is_last for event in server.events)
    assert b"caf\xc3\xa9" not in stream.sent


# -- refusals ------------------------------------------------------------------------------


def refuse_chunk(number: int, reply: str) -> Callable[[Event, list[Event]], str | None]:
    """Refuse the ``number``-th BDAT chunk (from 1); later chunks get 503."""

    def decide(event: Event, events: list[Event]) -> str | None:
        if not event.is_bdat:
            return None
        position = sum(1 for e in events if e.is_bdat)
        if position == number:
            return reply
        if position > number:
            return "503 5.5.1 Error: the transaction failed"
        return None

    return decide


@MODES
async def test_a_refused_chunk_stops_the_message_and_resets(
    ehlo_lines: tuple[str, ...], pipelined: bool
) -> None:
    total = 8
    body = (b"x" * 1022 + b"\r\n") * (total * BDAT_CHUNK // 1024)
    server = ChunkServer(ehlo_lines, refuse_chunk(1, "552 5.3.4 message too big for me"))
    async with session(server.run) as (_stream, smtp):
        with pytest.raises(DataRefusedError) as caught:
            await smtp.send_mail(SENDER, BOB, body)
        assert smtp.state is SessionState.READY
        after = await smtp.send_mail(
            SENDER, BOB, b"Subject: after\r\n\r\nsmall\r\n", transfer="data"
        )
    assert caught.value.command == "BDAT"
    assert caught.value.reply.code == 552
    assert caught.value.reply.message == "message too big for me"
    chunks = [event for event in server.events if event.is_bdat]
    assert not any(event.is_last for event in chunks)
    if pipelined:
        # Chunks already under way may still go; then no more of that message.
        assert 1 <= len(chunks) < total - 2
    else:
        assert len(chunks) == 1
    commands = server.commands()
    last_chunk = max(i for i, command in enumerate(commands) if command.startswith("BDAT"))
    assert commands[last_chunk + 1] == "RSET"
    assert after.accepted == (BOB,)
    assert server.delivered == [b"Subject: after\r\n\r\nsmall\r\n.\r\n"]


@MODES
async def test_a_refused_last_chunk_is_a_data_refusal(
    ehlo_lines: tuple[str, ...], pipelined: bool
) -> None:
    server = ChunkServer(ehlo_lines, refuse_chunk(1, "554 5.7.1 content rejected"))
    async with session(server.run) as (_stream, smtp):
        with pytest.raises(DataRefusedError) as caught:
            await smtp.send_mail(SENDER, BOB, DOTTY, transfer="bdat")
        assert smtp.state is SessionState.READY
        await smtp.send_mail(SENDER, CAROL, b"Subject: fine\r\n\r\n", transfer="data")
    assert caught.value.command == "BDAT"
    assert caught.value.reply.code == 554
    assert caught.value.is_permanent
    commands = server.commands()
    assert commands[:4] == [
        f"MAIL FROM:<{SENDER}>",
        f"RCPT TO:<{BOB}>",
        f"BDAT {len(DOTTY_PAYLOAD)} LAST",
        "RSET",
    ]
    assert server.delivered == [b"Subject: fine\r\n\r\n.\r\n"]


@MODES
async def test_all_recipients_refused_consumes_the_bdat_reply(
    ehlo_lines: tuple[str, ...], pipelined: bool
) -> None:
    def decide(event: Event, events: list[Event]) -> str | None:
        if event.command.startswith("RCPT") and len(events) <= 3:
            return "550 5.1.1 no such user"
        if event.is_last and len(events) <= 4:
            return "503 5.5.1 Error: no valid recipients"
        return None

    server = ChunkServer(ehlo_lines, decide)
    async with session(server.run) as (_stream, smtp):
        with pytest.raises(RecipientsRefusedError) as caught:
            await smtp.send_mail(SENDER, [BOB, CAROL], DOTTY, transfer="bdat")
        assert smtp.state is SessionState.READY
        result = await smtp.send_mail(SENDER, BOB, DOTTY, transfer="bdat")
    assert {address: reply.code for address, reply in caught.value.rejected.items()} == {
        BOB: 550,
        CAROL: 550,
    }
    commands = server.commands()
    first = commands[: commands.index("RSET") + 1]
    if pipelined:
        assert first == [
            f"MAIL FROM:<{SENDER}>",
            f"RCPT TO:<{BOB}>",
            f"RCPT TO:<{CAROL}>",
            f"BDAT {len(DOTTY_PAYLOAD)} LAST",
            "RSET",
        ]
    else:
        assert first == [f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{BOB}>", f"RCPT TO:<{CAROL}>", "RSET"]
    assert result.accepted == (BOB,)
    assert server.delivered == [DOTTY_PAYLOAD]


# -- batches: several BDAT transactions per group ------------------------------------------


def message(index: int) -> bytes:
    return f"Subject: bdat {index}\r\n\r\n.body {index}\r\n".encode()


async def test_a_batch_of_bdat_messages_goes_in_groups() -> None:
    rcpts = [f"rcpt{i}@example.test" for i in range(5)]

    def t(index: int) -> bytes:
        return transaction([rcpts[index]], message(index))

    async def server(peer: Peer) -> None:
        await peer.greet(CHUNKING_PIPELINED)
        assert await take_write(peer) == t(0) + b"RSET\r\n" + t(1) + b"RSET\r\n" + t(2)
        await peer.send(MAIL_OK, RCPT_OK, queued(0))
        await peer.send(RSET_OK, "550 5.7.1 sender refused", "503 5.5.1 need MAIL")
        await peer.send("503 5.5.1 need MAIL", RSET_OK, MAIL_OK, RCPT_OK, queued(2))
        # Message 1 was refused: the next group starts with RSET.
        assert await take_write(peer) == b"RSET\r\n" + t(3) + b"RSET\r\n" + t(4)
        await peer.send(RSET_OK, MAIL_OK, RCPT_OK, queued(3), RSET_OK, MAIL_OK, RCPT_OK)
        await peer.send(queued(4))
        await peer.quit()

    batch: list[BatchItem] = [(SENDER, rcpts[i], message(i)) for i in range(5)]
    async with session(server) as (stream, smtp):
        writes = stream.writes
        outcomes = await collect(smtp, batch, max_in_flight=3, transfer="bdat")
        assert stream.writes - writes == 2
    assert [type(outcome) for outcome in outcomes] == [
        SendResult,
        SenderRefusedError,
        SendResult,
        SendResult,
        SendResult,
    ]
    results = [o for o in outcomes if isinstance(o, SendResult)]
    assert [r.queue_id for r in results] == ["QBDAT0000", "QBDAT0002", "QBDAT0003", "QBDAT0004"]
    assert [r.accepted for r in results] == [(rcpts[i],) for i in (0, 2, 3, 4)]


async def test_421_in_the_middle_of_a_bdat_group_keeps_what_was_accepted() -> None:
    rcpts = [f"rcpt{i}@example.test" for i in range(4)]

    async def server(peer: Peer) -> None:
        await peer.greet(CHUNKING_PIPELINED)
        group = b"RSET\r\n".join(transaction([rcpts[i]], message(i)) for i in range(3))
        assert await take_write(peer) == group
        await peer.send(MAIL_OK, RCPT_OK, queued(0), RSET_OK, MAIL_OK, RCPT_OK)
        await peer.send("421 4.3.2 shutting down")

    pulled: list[int] = []

    def batch() -> Iterable[BatchItem]:
        for index in range(4):
            pulled.append(index)
            yield (SENDER, rcpts[index], message(index))

    outcomes: list[SendResult | SMTPError] = []
    async with session(server) as (stream, smtp):
        with pytest.raises(ServiceUnavailableError):
            await drain(smtp, batch(), outcomes, max_in_flight=3, transfer="bdat")
        assert smtp.closed
        assert stream.closed
    assert len(outcomes) == 3
    first, second, third = outcomes
    assert isinstance(first, SendResult), first
    assert first.queue_id == "QBDAT0000"
    assert isinstance(second, ServiceUnavailableError)
    assert isinstance(third, ServiceUnavailableError)
    assert pulled == [0, 1, 2]


async def drain(
    smtp: SMTPClient, messages: Any, into: list[SendResult | SMTPError], **options: Any
) -> None:
    async with aclosing(smtp.send_many(messages, **options)) as outcomes:
        async for outcome in outcomes:
            into.append(outcome)


# -- the caller's choice -------------------------------------------------------------------


@MODES
async def test_transfer_data_forces_data_even_for_a_large_message(
    ehlo_lines: tuple[str, ...], pipelined: bool
) -> None:
    body = b"\r\n".join(b".dotted line %06d" % i for i in range(20_000))
    assert len(body) >= 256 * 1024
    server = ChunkServer(ehlo_lines)
    async with session(server.run) as (_stream, smtp):
        await smtp.send_mail(SENDER, BOB, body, transfer="data")
        outcomes = await collect(smtp, [(SENDER, BOB, body)], transfer="data")
    assert [type(outcome) for outcome in outcomes] == [SendResult]
    assert server.bdat_sizes() == []
    assert server.commands().count("DATA") == 2
    stuffed = b"\r\n".join(b"." + line for line in body.split(b"\r\n")) + b"\r\n.\r\n"
    assert server.delivered == [stuffed, stuffed]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lock-step"])
async def test_transfer_bdat_without_chunking_is_refused_before_mail(pipelining: bool) -> None:
    lines = ehlo("PIPELINING", "8BITMIME") if pipelining else ehlo("8BITMIME")
    server = ChunkServer(lines)
    async with session(server.run) as (stream, smtp):
        writes = stream.writes
        with pytest.raises(ExtensionNotSupportedError) as caught:
            await smtp.send_mail(SENDER, BOB, DOTTY, transfer="bdat")
        assert caught.value.name == "CHUNKING"
        outcomes = await collect(smtp, [(SENDER, BOB, DOTTY)], transfer="bdat")
        assert stream.writes == writes
        assert smtp.state is SessionState.READY
        await smtp.send_mail(SENDER, BOB, DOTTY)
    (refused,) = outcomes
    assert isinstance(refused, ExtensionNotSupportedError)
    assert refused.name == "CHUNKING"
    assert server.bdat_sizes() == []
    assert len(server.delivered) == 1

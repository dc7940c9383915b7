"""Streamed messages: every kind of source, any chunking, the same bytes, bounded memory.

A streamed message is encoded chunk by chunk while it is sent; whatever the
source and wherever its chunks break (inside a CRLF, before a dot that starts a
line), the wire must carry exactly what the same message given as one bytes
object would.
"""

from __future__ import annotations

import io
import itertools
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from anyio.abc import ByteStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import anyio_smtp
from anyio_smtp import (
    ExtensionNotSupportedError,
    InvalidArgumentError,
    MessageTooLargeError,
    SenderRefusedError,
    SessionClosedError,
    SessionState,
    SMTPClient,
)
from anyio_smtp.testing import MemoryByteStream, SMTPTestServer, memory_stream_pair
from tests.client.scripted import Peer, scripted

CLIENT = "client.test"
SENDER = "alice@example.test"
BOB = "bob@example.test"
GUARD = 10

#: Dot-leading lines, a lone dot, every kind of line ending, 8-bit text, no final CRLF.
TRICKY = (
    b"Subject: streamed\r\n"
    b"X-Long: " + b"x" * 300 + b"\r\n"
    b"\r\n"
    b".leading dot\r\n"
    b".\r\n"
    b"..two dots\n"
    b".\n"
    b"bare CR\r.after a bare CR\r"
    b"mixed\r\n\r\n\n\r"
    b"caf\xc3\xa9 cr\xc3\xa8me br\xc3\xbbl\xc3\xa9e\r\n"
    b"MAIL FROM:<smuggled@example.test>\r\n"
    b"last line without an ending."
)


TRICKY_7BIT = bytes(octet for octet in TRICKY if octet < 0x80)


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def cut(data: bytes, points: Sequence[int]) -> list[bytes]:
    """``data`` cut at ``points`` (empty pieces kept where points repeat)."""
    bounds = [0, *sorted(points), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def boundaries(data: bytes) -> list[int]:
    """Every place where a chunk boundary is tricky: around CR, LF and dots."""
    points: set[int] = set()
    for index, octet in enumerate(data):
        if octet in b"\r\n.":
            points.update((index, index + 1))
    return sorted(point for point in points if 0 < point < len(data))


@asynccontextmanager
async def served(
    server: SMTPTestServer,
) -> AsyncIterator[tuple[SMTPClient, MemoryByteStream]]:
    """A client talking to ``server`` over an in-memory stream (and the client's end)."""
    client_end, server_end = memory_stream_pair()
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as group:
            group.start_soon(server.serve_stream, server_end)
            async with anyio_smtp.connect_stream(client_end, ehlo_domain=CLIENT) as smtp:
                yield smtp, client_end


def open_binary(path: Path) -> IO[bytes]:
    return path.open("rb")


SOURCE_KINDS = [
    "async generator",
    "sync generator",
    "list of chunks",
    "bytearray and memoryview chunks",
    "BytesIO",
    "binary file",
    "anyio AsyncFile",
    "anyio byte stream",
]


@asynccontextmanager
async def source_of(kind: str, data: bytes, tmp_path: Path, size: int = 7) -> AsyncIterator[Any]:
    """``data`` as a streamed source of the given kind (chunks of ``size`` where it can)."""
    chunks = pieces(data, size)
    if kind == "async generator":

        async def generate() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        yield generate()
    elif kind == "sync generator":
        yield (chunk for chunk in chunks)
    elif kind == "list of chunks":
        yield chunks
    elif kind == "bytearray and memoryview chunks":
        yield [bytearray(c) if i % 2 else memoryview(c) for i, c in enumerate(chunks)]
    elif kind == "BytesIO":
        yield io.BytesIO(data)
    elif kind == "binary file":
        path = tmp_path / "message.eml"
        await anyio.Path(path).write_bytes(data)
        file = open_binary(path)
        try:
            yield file
        finally:
            file.close()
    elif kind == "anyio AsyncFile":
        path = tmp_path / "message.eml"
        await anyio.Path(path).write_bytes(data)
        async with await anyio.open_file(path, "rb") as async_file:
            yield async_file
    elif kind == "anyio byte stream":
        sending, receiving = memory_stream_pair()

        async def feed() -> None:
            for chunk in chunks:
                await sending.send(chunk)
            await sending.send_eof()

        async with sending, receiving, anyio.create_task_group() as group:
            group.start_soon(feed)
            yield receiving
    else:
        raise AssertionError(kind)


# -- the same bytes whatever the source ----------------------------------------------------


@pytest.mark.parametrize("kind", SOURCE_KINDS)
async def test_every_source_gives_the_bytes_of_the_whole_message(kind: str, tmp_path: Path) -> None:
    server = SMTPTestServer()
    async with served(server) as (smtp, _wire):
        whole = await smtp.send_mail(SENDER, BOB, TRICKY)
        async with source_of(kind, TRICKY, tmp_path) as source:
            streamed = await smtp.send_mail(SENDER, BOB, source)
        assert smtp.state is SessionState.READY
    assert whole.accepted == streamed.accepted == (BOB,)
    reference, received = server.messages
    assert received.raw == reference.raw
    assert received.data == reference.data
    assert reference.raw.count(b"\r\n.\r\n") == 1
    assert reference.raw.endswith(b"last line without an ending.\r\n.\r\n")
    # Bytes carry their size; a stream declares 8BITMIME since it can not know.
    assert reference.mail_options == ("BODY=8BITMIME", f"SIZE={len(reference.data)}")
    assert received.mail_options == ("BODY=8BITMIME",)
    assert server.bare_line_ending_violations == 0


@pytest.mark.parametrize(
    ("size", "repeat"), [(1, 3), (2, 3), (3, 5), (64 * 1024 - 1, 400), (64 * 1024 + 1, 400)]
)
async def test_chunk_sizes_from_one_byte_to_larger_than_a_read(size: int, repeat: int) -> None:
    body = (TRICKY + b"\r\n" + b".x\r\n" * 100) * repeat
    server = SMTPTestServer()
    async with served(server) as (smtp, _wire):
        await smtp.send_mail(SENDER, BOB, body)
        await smtp.send_mail(SENDER, BOB, pieces(body, size))
    reference, received = server.messages
    assert received.raw == reference.raw


async def test_chunks_broken_at_every_tricky_place() -> None:
    server = SMTPTestServer()
    points = boundaries(TRICKY)
    async with served(server) as (smtp, _wire):
        await smtp.send_mail(SENDER, BOB, TRICKY)
        # One boundary at a time, then all of them at once (with empty chunks between).
        for point in points:
            await smtp.send_mail(SENDER, BOB, cut(TRICKY, [point]))
        await smtp.send_mail(SENDER, BOB, cut(TRICKY, points + points))
    reference, *others = server.messages
    assert len(others) == len(points) + 1
    for point, received in zip([*points, -1], others, strict=True):
        assert received.raw == reference.raw, point


TEXT = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"a", b" ", b"\xc3\xa9", b"\x00"]),
    min_size=1,  # a stream with no data at all is refused
    max_size=40,
).map(b"".join)


@st.composite
def chunked_content(draw: st.DrawFn) -> tuple[bytes, list[int], bool]:
    """Content, where to cut it, and whether to stream it from an async generator.

    Drawn up front: drawing inside the event loop could stop the test midway.
    """
    content = draw(TEXT)
    points = draw(st.lists(st.integers(0, len(content)), max_size=12))
    return content, points, draw(st.booleans())


@pytest.mark.anyio
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=chunked_content())
async def test_any_content_in_any_chunking_equals_the_whole_send(
    anyio_backend: str, case: tuple[bytes, list[int], bool]
) -> None:
    content, points, use_async = case
    chunks = cut(content, points)

    async def generate() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    server = SMTPTestServer()
    async with served(server) as (smtp, _wire):
        await smtp.send_mail(SENDER, BOB, content)
        await smtp.send_mail(SENDER, BOB, generate() if use_async else iter(chunks))
    reference, received = server.messages
    assert received.raw == reference.raw
    assert received.data == reference.data
    assert server.bare_line_ending_violations == 0


# -- declaring the size and the 8-bit-ness -----------------------------------------------


async def test_size_is_declared_only_when_given() -> None:
    body = b"Subject: sized\r\n\r\n.dot\r\n"
    server = SMTPTestServer(extensions=["PIPELINING", "SIZE 100000", "8BITMIME"])
    async with served(server) as (smtp, _wire):
        await smtp.send_mail(SENDER, BOB, iter([body]), size=len(body))
        await smtp.send_mail(SENDER, BOB, iter([body]))
        await smtp.send_mail(SENDER, BOB, io.BytesIO(body), size=0)
    sized, unsized, zero = server.messages
    assert sized.mail_options == ("BODY=8BITMIME", f"SIZE={len(body)}")
    assert unsized.mail_options == ("BODY=8BITMIME",)
    assert zero.mail_options == ("BODY=8BITMIME", "SIZE=0")
    assert sized.data == unsized.data == zero.data == body


async def test_a_given_size_over_the_limit_is_refused_before_anything_is_read() -> None:
    started: list[bool] = []

    async def generate() -> AsyncIterator[bytes]:
        started.append(True)
        yield b"Subject: big\r\n\r\n"

    server = SMTPTestServer(extensions=["PIPELINING", "SIZE 1000", "8BITMIME"])
    async with served(server) as (smtp, wire):
        writes = wire.writes
        with pytest.raises(MessageTooLargeError) as caught:
            await smtp.send_mail(SENDER, BOB, generate(), size=1001)
        assert wire.writes == writes
        assert (caught.value.size, caught.value.limit) == (1001, 1000)
        assert smtp.state is SessionState.READY
        await smtp.send_mail(SENDER, BOB, generate(), size=16)
    assert started == [True]
    assert len(server.messages) == 1


@pytest.mark.parametrize("size", [-1, True, 1.5, "10"])
async def test_a_bad_size_is_refused_before_any_byte(size: Any) -> None:
    server = SMTPTestServer()
    async with served(server) as (smtp, wire):
        writes = wire.writes
        with pytest.raises(InvalidArgumentError, match="size"):
            await smtp.send_mail(SENDER, BOB, iter([b"x\r\n"]), size=size)
        assert wire.writes == writes
        assert smtp.state is SessionState.READY
    assert server.messages == []


NO_8BITMIME_PIPELINED = ("250-mx.test", "250-PIPELINING", "250 ENHANCEDSTATUSCODES")
NO_8BITMIME_LOCK_STEP = ("250-mx.test", "250 ENHANCEDSTATUSCODES")


@pytest.mark.parametrize(
    "ehlo", [NO_8BITMIME_PIPELINED, NO_8BITMIME_LOCK_STEP], ids=["pipelined", "lock-step"]
)
async def test_8bit_data_in_a_stream_without_8bitmime_is_never_terminated(
    ehlo: tuple[str, ...],
) -> None:
    pipelined = "250-PIPELINING" in ehlo
    plain = b"Subject: plain\r\n\r\nseven bits only\r\n"
    seen: list[bytes] = []

    async def server(peer: Peer) -> None:
        await peer.greet(ehlo)
        # A 7-bit stream goes through, with no BODY= parameter.
        for attempt in range(2):
            lines = [f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{BOB}>", "DATA"]
            replies = ["250 2.1.0 Ok", "250 2.1.5 Ok", "354 go ahead"]
            if pipelined:
                for line in lines:
                    assert await peer.line() == line
                await peer.send(*replies)
            else:
                for line, reply in zip(lines, replies, strict=True):
                    assert await peer.lone(line) == line
                    await peer.send(reply)
            if attempt == 0:
                assert await peer.data() == plain + b".\r\n"
                await peer.send("250 2.0.0 Ok: queued as PLAIN0001")
        seen.append(await peer.rest())

    async def eight_bit() -> AsyncIterator[bytes]:
        yield b"Subject: not plain\r\n\r\nfirst line\r\n"
        yield b"caf\xc3\xa9\r\n"
        yield b"end\r\n"

    with anyio.fail_after(GUARD):
        async with (
            scripted(server) as stream,
            anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
        ):
            result = await smtp.send_mail(SENDER, BOB, iter([plain]))
            assert result.queue_id == "PLAIN0001"
            with pytest.raises(ExtensionNotSupportedError) as caught:
                await smtp.send_mail(SENDER, BOB, eight_bit())
            assert caught.value.name == "8BITMIME"
            assert smtp.closed
            assert stream.closed
            with pytest.raises(SessionClosedError):
                await smtp.send_mail(SENDER, BOB, plain)
    (rest,) = seen
    assert b"\xc3" not in rest
    assert b"\r\n.\r\n" not in rest
    assert not rest.endswith(b".\r\n")


async def test_a_stream_without_8bitmime_that_stays_7bit_is_delivered() -> None:
    server = SMTPTestServer(extensions=["PIPELINING", "SIZE"])
    async with served(server) as (smtp, _wire):
        await smtp.send_mail(SENDER, BOB, pieces(TRICKY_7BIT, 5))
        await smtp.send_mail(SENDER, BOB, TRICKY_7BIT)
    received, reference = server.messages
    assert received.mail_options == ()
    assert received.raw == reference.raw
    assert server.eight_bit_violations == 0


async def test_8bit_stream_without_8bitmime_delivers_nothing() -> None:
    server = SMTPTestServer(extensions=["PIPELINING", "SIZE"])
    async with served(server) as (smtp, wire):
        with pytest.raises(ExtensionNotSupportedError):
            await smtp.send_mail(SENDER, BOB, pieces(TRICKY, 64))
        assert smtp.closed
        assert wire.closed
    assert server.messages == []
    assert server.eight_bit_violations == 0
    assert b"\r\n.\r\n" not in wire.sent.partition(b"DATA\r\n")[2]


class TextReader:
    """A file-like object that (wrongly) returns text."""

    def __init__(self) -> None:
        self.calls = 0

    def read(self, size: int = -1) -> str:
        self.calls += 1
        return "Subject: text\r\n\r\n" if self.calls == 1 else ""


def bad_sync() -> Iterator[Any]:
    yield b"Subject: bad\r\n\r\n"
    yield "a str chunk\r\n"


async def bad_async() -> AsyncIterator[Any]:
    yield b"Subject: bad\r\n\r\n"
    yield 42


BAD_SOURCES = {
    "str in a sync iterable": bad_sync,
    "int in an async generator": bad_async,
    "read() returning str": TextReader,
}


@pytest.mark.parametrize("make", BAD_SOURCES.values(), ids=BAD_SOURCES.keys())
async def test_a_chunk_that_is_not_bytes_ends_the_session_and_delivers_nothing(
    make: Any,
) -> None:
    source = make()
    server = SMTPTestServer()
    async with served(server) as (smtp, wire):
        with pytest.raises(InvalidArgumentError, match="bytes"):
            await smtp.send_mail(SENDER, BOB, source)
        assert smtp.closed
        assert wire.closed
    assert server.messages == []
    assert b"\r\n.\r\n" not in wire.sent.partition(b"DATA\r\n")[2]


async def test_a_text_file_is_refused_before_any_byte() -> None:
    server = SMTPTestServer()
    async with served(server) as (smtp, wire):
        with pytest.raises(InvalidArgumentError, match="binary mode"):
            await smtp.send_mail(SENDER, BOB, io.StringIO("Subject: text\r\n\r\nbody\r\n"))  # type: ignore[arg-type]
        assert not smtp.closed
        assert b"MAIL FROM" not in wire.sent
        await smtp.send_mail(SENDER, BOB, b"Subject: after\r\n\r\nbody\r\n")
    assert len(server.messages) == 1


# -- a stream can be read once ---------------------------------------------------------------


@pytest.mark.parametrize("use_async", [False, True], ids=["generator", "async generator"])
async def test_a_consumed_stream_can_not_be_sent_again(use_async: bool) -> None:
    body = b"Subject: once\r\n\r\nonly once\r\n"

    async def generate() -> AsyncIterator[bytes]:
        yield body

    source: Any = generate() if use_async else iter([body])
    server = SMTPTestServer()
    async with served(server) as (smtp, wire):
        await smtp.send_mail(SENDER, BOB, source)
        writes = wire.writes
        with pytest.raises(InvalidArgumentError):
            await smtp.send_mail(SENDER, BOB, source)
        assert wire.writes == writes
        assert smtp.state is SessionState.READY
    # Never a second, empty message.
    assert [message.data for message in server.messages] == [body]


async def test_a_refused_envelope_leaves_the_stream_unread_for_a_retry() -> None:
    started: list[int] = []
    body = [b"Subject: retry\r\n\r\n", b".dot\r\n", b"end\r\n"]

    async def generate() -> AsyncIterator[bytes]:
        for chunk in body:
            started.append(len(chunk))
            yield chunk

    server = SMTPTestServer()
    server.reply("MAIL", "451 4.7.1 greylisted, try again", times=1)
    source = generate()
    async with served(server) as (smtp, _wire):
        with pytest.raises(SenderRefusedError):
            await smtp.send_mail(SENDER, BOB, source)
        assert started == []
        await smtp.send_mail(SENDER, BOB, source)
    (received,) = server.messages
    assert received.data == b"".join(body)
    assert received.raw == b"Subject: retry\r\n\r\n..dot\r\nend\r\n.\r\n"


# -- memory stays bounded whatever the size --------------------------------------------------


class Sink(ByteStream):
    """An SMTP server inside the client's stream: it answers at once and keeps no data.

    It understands just enough (EHLO, MAIL, RCPT, DATA, BDAT, RSET, QUIT) and counts
    the message octets and their CRC, so what it holds never depends on the size.
    """

    def __init__(self, keywords: Sequence[str]) -> None:
        self._keywords = keywords
        self._replies = bytearray(b"220 sink.test ESMTP\r\n")
        self._waiting: anyio.Event | None = None
        self._line = bytearray()
        self._mode = "command"
        self._tail = b""
        self._bdat_left = 0
        self._bdat_last = False
        #: Octets received as message data (DATA: terminator included).
        self.octets = 0
        self.crc = 0
        self.accepted = 0
        self.commands: list[str] = []
        self.closed = False

    def _reply(self, *lines: str) -> None:
        self._replies += "".join(f"{line}\r\n" for line in lines).encode()
        if self._waiting is not None:
            self._waiting.set()

    def _data(self, data: bytes) -> None:
        self.octets += len(data)
        self.crc = zlib.crc32(data, self.crc)

    def _command(self, line: str) -> None:
        self.commands.append(line if not line.startswith("BDAT") else "BDAT")
        verb = line.split(" ", 1)[0].upper()
        if verb == "EHLO":
            names = ["sink.test", *self._keywords]
            self._reply(*(f"250-{n}" for n in names[:-1]), f"250 {names[-1]}")
        elif verb == "DATA":
            self._mode, self._tail = "data", b"\r\n"
            self._reply("354 go ahead")
        elif verb == "BDAT":
            words = line.split()
            self._mode, self._bdat_left = "bdat", int(words[1])
            self._bdat_last = len(words) > 2 and words[2].upper() == "LAST"
            if self._bdat_left == 0:
                self._end_chunk()
        elif verb == "QUIT":
            self._reply("221 2.0.0 Bye")
        else:
            self._reply("250 2.0.0 Ok")

    def _end_chunk(self) -> None:
        self._mode = "command"
        if self._bdat_last:
            self.accepted += 1
            self._reply("250 2.0.0 Ok: queued as SINK0001")
        else:
            self._reply("250 2.0.0 chunk ok")

    async def send(self, item: bytes) -> None:
        view = memoryview(item)
        position = 0
        while position < len(view):
            if self._mode == "data":
                segment = bytes(view[position:])
                found = (self._tail + segment).find(b"\r\n.\r\n")
                if found == -1:
                    self._data(segment)
                    self._tail = (self._tail + segment)[-4:]
                    break
                end = found + 5 - len(self._tail)
                self._data(segment[:end])
                position += end
                self._mode = "command"
                self.accepted += 1
                self._reply("250 2.0.0 Ok: queued as SINK0001")
            elif self._mode == "bdat":
                take = min(self._bdat_left, len(view) - position)
                self._data(bytes(view[position : position + take]))
                position += take
                self._bdat_left -= take
                if self._bdat_left == 0:
                    self._end_chunk()
            else:
                end = bytes(view[position:]).find(b"\r\n")
                if end == -1:
                    self._line += view[position:]
                    break
                self._line += view[position : position + end]
                position += end + 2
                line, self._line = self._line.decode(), bytearray()
                self._command(line)
        await anyio.lowlevel.checkpoint()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while not self._replies:
            if self.closed:
                raise anyio.ClosedResourceError
            self._waiting = anyio.Event()
            await self._waiting.wait()
            self._waiting = None
        data = bytes(self._replies[:max_bytes])
        del self._replies[:max_bytes]
        return data

    async def send_eof(self) -> None:
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.closed = True
        if self._waiting is not None:
            self._waiting.set()
        await anyio.lowlevel.checkpoint()


#: 64 KiB of text: 1024 lines of 64 octets, every eighth one starting with a dot.
LINE = b"%s streamed line of a large message, not kept anywhere.........\r\n"
CHUNK = b"".join(LINE % (b"." if i % 8 == 0 else b"x") for i in range(1024))
TOTAL = 50 * 1024 * 1024
#: The DATA path holds a few reads at a time; BDAT a few chunks of BDAT_CHUNK (1 MiB).
PEAK_LIMIT = {"data": 4 * 1024 * 1024, "bdat": 16 * 1024 * 1024}


def test_the_large_chunk_is_what_it_claims() -> None:
    assert len(CHUNK) == 64 * 1024
    assert CHUNK.count(b"\r\n.") == 1024 // 8 - 1


@pytest.mark.parametrize(
    ("keywords", "transfer"),
    [
        (("PIPELINING", "8BITMIME"), "data"),
        (("8BITMIME",), "data"),
        (("PIPELINING", "8BITMIME", "CHUNKING"), "bdat"),
    ],
    ids=["DATA pipelined", "DATA lock-step", "BDAT"],
)
async def test_a_50_mb_stream_is_sent_in_bounded_memory(
    keywords: tuple[str, ...], transfer: Any
) -> None:
    count = TOTAL // len(CHUNK)
    stuffed = CHUNK.replace(b"\r\n.", b"\r\n..")
    stuffed = b"." + stuffed if CHUNK.startswith(b".") else stuffed
    on_wire = stuffed if transfer == "data" else CHUNK
    expected_crc = 0
    for _ in range(count):
        expected_crc = zlib.crc32(on_wire, expected_crc)

    async def generate() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield CHUNK

    sink = Sink(keywords)
    with anyio.fail_after(60):
        async with anyio_smtp.connect_stream(sink, ehlo_domain=CLIENT) as smtp:
            tracemalloc.start()
            try:
                result = await smtp.send_mail(SENDER, BOB, generate(), transfer=transfer)
                _current, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert result.queue_id == "SINK0001"
    assert sink.accepted == 1
    if transfer == "data":
        expected_crc = zlib.crc32(b".\r\n", expected_crc)
        assert sink.octets == count * len(stuffed) + 3
        assert "DATA" in sink.commands
    else:
        assert sink.octets == count * len(CHUNK)
        assert sink.commands.count("BDAT") >= TOTAL // (1024 * 1024)
    assert sink.crc == expected_crc
    assert peak < PEAK_LIMIT[transfer], f"peak traced memory {peak / 2**20:.1f} MiB"

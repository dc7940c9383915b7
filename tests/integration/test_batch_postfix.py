"""send_many and streamed messages against a real Postfix, on asyncio and trio.

200 messages go over one connection, pipelined across transactions, once with
DATA and once with BDAT (Postfix offers PIPELINING and CHUNKING); each must
arrive in the Maildir exactly once with its body byte for byte.  Then a 5 MB
message streamed chunk by chunk, with DATA and with BDAT.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from typing import Any

import anyio
from anyio.abc import ByteStream

import anyio_smtp
from anyio_smtp import SendResult, SMTPClient, SMTPError
from anyio_smtp._transaction import BatchItem

from .messages import marker_of, numbered_message
from .servers.postfix import DeliveredMessage, PostfixInstance

ALICE = "alice@example.test"
COUNT = 200

#: Dot-leading lines, a lone dot, a line of two dots, a bare LF and UTF-8 text.
BODY = (
    "Message {index} of run {run}.\r\n"
    ".A line that starts with a dot\r\n"
    ".\r\n"
    "..\r\n"
    "..two dots\r\n"
    "bare LF follows\n"
    "UTF-8: naïve café, Ελληνικά, 日本語 ✓\r\n"
    "marker {marker}\r\n"
)


class Tap(ByteStream):
    """A TCP stream that remembers what the client wrote, and in how many writes."""

    def __init__(self, inner: ByteStream, *, keep: bool = True) -> None:
        self.inner = inner
        self.keep = keep
        self.writes = 0
        self.sent = bytearray()
        self.heads: list[bytes] = []

    async def send(self, item: bytes) -> None:
        self.writes += 1
        self.heads.append(bytes(item[:16]))
        if self.keep:
            self.sent += item
        await self.inner.send(item)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self.inner.receive(max_bytes)

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self.inner.extra_attributes


def recipient(index: int) -> str:
    return f"batch{index}@example.test"


def message(run: str, index: int) -> tuple[bytes, bytes]:
    """The message as sent (CRLF) and its body as the Maildir keeps it (LF)."""
    return numbered_message(BODY, ALICE, recipient(index), run, index, stored_newline="\n")


async def connect(postfix: PostfixInstance, *, keep: bool = True) -> tuple[Tap, SMTPClient]:
    tap = Tap(await anyio.connect_tcp(postfix.host, postfix.plain_port), keep=keep)
    return tap, await anyio_smtp.connect_stream(tap, ehlo_domain="client.example.test")


async def delivered(postfix: PostfixInstance, marker: str) -> list[DeliveredMessage]:
    """Every Maildir message with ``marker``, once Postfix has delivered all it accepted."""

    def collect() -> list[DeliveredMessage]:
        postfix.wait_for_empty_queue(60.0)
        return [m for m in postfix.messages() if marker.encode() in m.data]

    return await anyio.to_thread.run_sync(collect)


async def send_batch(
    postfix: PostfixInstance, run: str, transfer: Any
) -> tuple[Tap, list[SendResult | SMTPError]]:
    batch: list[BatchItem] = []
    for index in range(COUNT):
        data, _body = message(run, index)
        batch.append((ALICE, recipient(index), data))
    tap, smtp = await connect(postfix)
    async with smtp:
        assert "PIPELINING" in smtp.capabilities
        assert "CHUNKING" in smtp.capabilities
        assert "BINARYMIME" not in smtp.capabilities
        async with aclosing(smtp.send_many(batch, transfer=transfer)) as results:
            outcomes = [outcome async for outcome in results]
    return tap, outcomes


async def check_delivery(postfix: PostfixInstance, run: str) -> None:
    stored = await delivered(postfix, run)
    by_marker: dict[str, list[DeliveredMessage]] = {}
    for item in stored:
        subject = item.parsed()["Subject"]
        by_marker.setdefault(str(subject), []).append(item)
    expected = {marker_of(run, index) for index in range(COUNT)}
    assert set(by_marker) == expected
    for index in range(COUNT):
        (item,) = by_marker[marker_of(run, index)]
        _data, body = message(run, index)
        assert item.body == body
        assert f"Delivered-To: {recipient(index)}\n".encode() in item.headers


def check_outcomes(outcomes: list[SendResult | SMTPError]) -> None:
    assert len(outcomes) == COUNT
    results = [outcome for outcome in outcomes if isinstance(outcome, SendResult)]
    assert len(results) == COUNT, [o for o in outcomes if not isinstance(o, SendResult)][:3]
    assert [result.accepted for result in results] == [(recipient(i),) for i in range(COUNT)]
    queue_ids = [result.queue_id for result in results]
    assert None not in queue_ids
    assert len(set(queue_ids)) == COUNT


async def test_200_pipelined_messages_with_data_arrive_once_and_intact(
    postfix: PostfixInstance,
) -> None:
    run = uuid.uuid4().hex
    tap, outcomes = await send_batch(postfix, run, "data")
    check_outcomes(outcomes)
    sent = bytes(tap.sent)
    assert sent.count(b"\r\nDATA\r\n") == COUNT
    assert b"BDAT" not in sent
    # Cross-transaction pipelining: one write per message in steady state
    # (EHLO, COUNT + 1 groups, QUIT), where lock-step would take five.
    assert tap.writes <= COUNT + 3
    await check_delivery(postfix, run)


async def test_200_pipelined_messages_with_bdat_arrive_once_and_intact(
    postfix: PostfixInstance,
) -> None:
    run = uuid.uuid4().hex
    tap, outcomes = await send_batch(postfix, run, "bdat")
    check_outcomes(outcomes)
    sent = bytes(tap.sent)
    assert sent.count(b"\r\nBDAT ") == COUNT
    assert b"\r\nDATA\r\n" not in sent
    # Several BDAT transactions share each write.
    assert tap.writes <= COUNT // 8
    await check_delivery(postfix, run)


# -- a large streamed message ---------------------------------------------------------------

SIZE = 5 * 1024 * 1024


def large_message(run: str) -> tuple[bytes, bytes]:
    """About 5 MB of text (dots and UTF-8 included), as sent and as the Maildir keeps it."""
    header = (
        f"From: {ALICE}\r\nTo: big@example.test\r\nSubject: large {run}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode()
    lines = []
    index = 0
    total = len(header)
    while total < SIZE:
        if index % 10 == 0:
            line = f".{index:07d} a line that starts with a dot\r\n"
        elif index % 10 == 5:
            line = ".\r\n"
        else:
            line = f"{index:07d} naïve café text, line after line, for {run}\r\n"
        encoded = line.encode()
        lines.append(encoded)
        total += len(encoded)
        index += 1
    body = b"".join(lines)
    return header + body, body.replace(b"\r\n", b"\n")


async def send_large(postfix: PostfixInstance, transfer: Any, *, sized: bool) -> None:
    run = uuid.uuid4().hex
    data, body = large_message(run)
    # Chunks of an odd size, so they split CRLFs, dots and UTF-8 sequences.
    step = 65_521

    async def generate() -> AsyncIterator[bytes]:
        for start in range(0, len(data), step):
            yield data[start : start + step]

    tap, smtp = await connect(postfix, keep=False)
    async with smtp:
        size = len(data) if sized else None
        result = await smtp.send_mail(
            ALICE, "big@example.test", generate(), size=size, transfer=transfer
        )
    assert result.accepted == ("big@example.test",)
    commands = [head for head in tap.heads if head.startswith((b"BDAT ", b"MAIL FROM:"))]
    if transfer == "bdat":
        assert len([head for head in commands if head.startswith(b"BDAT ")]) >= 5
    else:
        assert not any(head.startswith(b"BDAT ") for head in commands)
    (stored,) = await delivered(postfix, f"large {run}")
    assert stored.body == body


async def test_a_streamed_5_mb_message_via_bdat_arrives_intact(postfix: PostfixInstance) -> None:
    await send_large(postfix, "bdat", sized=False)


async def test_a_streamed_5_mb_message_via_data_arrives_intact(postfix: PostfixInstance) -> None:
    await send_large(postfix, "data", sized=True)

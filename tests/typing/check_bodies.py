# pyright: strict
"""What a type checker accepts as a message, and what it refuses.

This file is type-checked, never run.  Each wrong usage carries a ``type:
ignore``: a checker that accepted it would report the comment as unused
(``mypy --strict`` has ``warn_unused_ignores``), so the check fails both ways.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from email.message import EmailMessage, Message
from typing import BinaryIO, TextIO, assert_type

import anyio
from anyio.abc import ByteReceiveStream

from anyio_smtp import (
    BatchItem,
    MessageBody,
    SendBatch,
    SendResult,
    SMTPClient,
    SMTPError,
    SMTPPool,
)

SENDER = "a@example.test"
RCPT = "b@example.test"


def chunks() -> Iterator[bytes]:
    yield b"Subject: x\r\n\r\nbody\r\n"


async def async_chunks() -> AsyncIterator[bytes]:
    yield b"Subject: x\r\n\r\nbody\r\n"


def text_chunks() -> Iterator[str]:
    yield "Subject: x\r\n\r\nbody\r\n"


async def good_bodies(
    smtp: SMTPClient,
    pool: SMTPPool,
    stream: ByteReceiveStream,
    binary_file: BinaryIO,
    buffered: io.BufferedReader,
) -> None:
    email = EmailMessage()
    legacy = Message()
    assert_type(await smtp.send_mail(SENDER, [RCPT], b"Subject: x\r\n\r\nbody\r\n"), SendResult)
    await smtp.send_mail(SENDER, RCPT, bytearray(b"x"))
    await smtp.send_mail(SENDER, RCPT, memoryview(b"x"))
    await smtp.send_mail(SENDER, RCPT, "Subject: x\r\n\r\nbody\r\n")
    await smtp.send_mail(SENDER, RCPT, email)
    await smtp.send_mail(SENDER, RCPT, legacy)
    await smtp.send_mail(SENDER, RCPT, io.BytesIO(b"x"))
    await smtp.send_mail(SENDER, RCPT, binary_file)
    await smtp.send_mail(SENDER, RCPT, buffered)
    async with await anyio.open_file("message.eml", "rb") as async_file:
        await smtp.send_mail(SENDER, RCPT, async_file)
    await smtp.send_mail(SENDER, RCPT, stream)
    await smtp.send_mail(SENDER, RCPT, [b"Subject: x\r\n", b"\r\nbody\r\n"])
    await smtp.send_mail(SENDER, RCPT, chunks())
    await smtp.send_mail(SENDER, RCPT, async_chunks())
    assert_type(await pool.send_mail(SENDER, [RCPT], email), SendResult)
    await pool.send_mail(SENDER, [RCPT], chunks())
    body: MessageBody = email
    await pool.send_mail(SENDER, [RCPT], body)


async def wrong_bodies(smtp: SMTPClient, pool: SMTPPool, text_file: TextIO) -> None:
    await smtp.send_mail(SENDER, RCPT, 42)  # type: ignore[arg-type]
    await smtp.send_mail(SENDER, RCPT, None)  # type: ignore[arg-type]
    await smtp.send_mail(SENDER, RCPT, io.StringIO("text"))  # type: ignore[arg-type]
    await smtp.send_mail(SENDER, RCPT, text_chunks())  # type: ignore[arg-type]
    headers: dict[str, bytes] = {"Subject": b"x"}
    await smtp.send_mail(SENDER, RCPT, headers)  # type: ignore[arg-type]
    await smtp.send_mail(SENDER, RCPT, text_file)  # type: ignore[arg-type]
    async with await anyio.open_file("message.eml") as async_text_file:
        await smtp.send_mail(SENDER, RCPT, async_text_file)  # type: ignore[arg-type]
    texts = ["Subject: x\r\n", "\r\nbody\r\n"]
    await pool.send_mail(SENDER, RCPT, texts)  # type: ignore[arg-type]
    await pool.send_mail(SENDER, None, b"x")  # type: ignore[arg-type]


async def batches(smtp: SMTPClient, pool: SMTPPool) -> None:
    items: list[BatchItem] = [
        (SENDER, [RCPT], b"Subject: x\r\n\r\nbody\r\n"),
        (SENDER, RCPT, EmailMessage()),
        (SENDER, RCPT, chunks()),
        EmailMessage(),
    ]
    batch = smtp.send_many(items)
    assert_type(batch, SendBatch)
    async with aclosing(batch) as outcomes:
        async for outcome in outcomes:
            assert_type(outcome, SendResult | SMTPError)
            assert_type(outcome.index, int | None)
            if isinstance(outcome, SendResult):
                assert_type(outcome.queue_id, str | None)
    for unread in batch.unread:
        assert_type(unread, SendResult | SMTPError)
    async with aclosing(pool.send_many(items)) as pooled:
        async for outcome in pooled:
            assert_type(outcome, SendResult | SMTPError)
    assert_type(pool.send_many(items), SendBatch)
    bad_body: list[tuple[str, str, int]] = [(SENDER, RCPT, 42)]
    smtp.send_many(bad_body)  # type: ignore[arg-type]
    no_recipients: list[tuple[str, None, bytes]] = [(SENDER, None, b"x")]
    pool.send_many(no_recipients)  # type: ignore[arg-type]

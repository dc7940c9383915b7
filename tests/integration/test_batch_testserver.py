"""The same 200-message batch to SMTPTestServer over loopback TCP, lock-step and pipelined.

The server refuses a few messages on purpose (a blocked sender, an unknown
recipient, a message that looks like spam), so that "identical outcomes" means
something: both ways must give every message the same fate, and the server
must see each accepted message exactly once, byte for byte.
"""

from __future__ import annotations

import re
import uuid
from contextlib import aclosing

import anyio

import anyio_smtp
from anyio_smtp import (
    DataRefusedError,
    RecipientsRefusedError,
    ReplyError,
    SenderRefusedError,
    SendResult,
    SMTPError,
)
from anyio_smtp._transaction import BatchItem
from anyio_smtp.testing import ReceivedMessage, SMTPTestServer

COUNT = 200
ALICE = "alice@example.test"
BLOCKED = "blocked@example.test"
NOBODY = "nobody@example.test"

LOCK_STEP = ["8BITMIME", "SIZE", "ENHANCEDSTATUSCODES"]
PIPELINED = ["PIPELINING", *LOCK_STEP]

BODY = (
    "Message {index} of run {run}.\r\n"
    ".A line that starts with a dot\r\n"
    ".\r\n"
    "..two dots\r\n"
    "bare LF follows\n"
    "bare CR follows\r"
    "UTF-8: naïve café ✓\r\n"
    "{extra}"
    "last line without an ending"
)


def kind(index: int) -> str:
    return {7: "blocked", 23: "unknown", 41: "spam"}.get(index % 50, "ok")


def batch(run: str) -> list[tuple[str, str, bytes]]:
    messages = []
    for index in range(COUNT):
        sender = BLOCKED if kind(index) == "blocked" else ALICE
        rcpt = NOBODY if kind(index) == "unknown" else f"user{index}@example.test"
        extra = "SPAMMARK\r\n" if kind(index) == "spam" else ""
        headers = f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {run}-{index:03d}\r\n\r\n"
        body = BODY.format(index=index, run=run, extra=extra)
        messages.append((sender, rcpt, (headers + body).encode()))
    return messages


def normalised(data: bytes) -> bytes:
    """What the server must receive: CRLF everywhere and a final CRLF."""
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def summary(outcome: SendResult | SMTPError) -> tuple[object, ...]:
    if isinstance(outcome, SendResult):
        return ("sent", outcome.reply.code, outcome.accepted)
    if isinstance(outcome, ReplyError):
        return (type(outcome).__name__, outcome.command, outcome.reply.code)
    return (type(outcome).__name__, str(outcome))


def expected_summary(index: int) -> tuple[object, ...]:
    return {
        "blocked": ("SenderRefusedError", "MAIL FROM", 553),
        "unknown": ("RecipientsRefusedError", "RCPT TO", 550),
        "spam": ("DataRefusedError", "end of data", 554),
        "ok": ("sent", 250, (f"user{index}@example.test",)),
    }[kind(index)]


async def run_batch(
    extensions: list[str], run: str
) -> tuple[SMTPTestServer, list[SendResult | SMTPError]]:
    server = SMTPTestServer(extensions=extensions)
    server.reply("MAIL", "553 5.7.1 sender blocked", match=BLOCKED)
    server.reply("RCPT", "550 5.1.1 no such user", match=NOBODY)
    server.reply("EOM", "554 5.7.1 looks like spam", match="SPAMMARK")
    messages: list[BatchItem] = list(batch(run))
    with anyio.fail_after(60):
        async with server, anyio_smtp.connect(server.host, server.port) as smtp:
            assert ("PIPELINING" in smtp.capabilities) == ("PIPELINING" in extensions)
            async with aclosing(smtp.send_many(messages)) as results:
                outcomes = [outcome async for outcome in results]
            await smtp.noop()
    return server, outcomes


def check_server(server: SMTPTestServer, run: str) -> None:
    sent = batch(run)
    by_subject: dict[str, list[ReceivedMessage]] = {}
    for received in server.messages:
        subject = received.as_email()["Subject"]
        by_subject.setdefault(str(subject), []).append(received)
    accepted = [index for index in range(COUNT) if kind(index) == "ok"]
    assert sorted(by_subject) == [f"{run}-{index:03d}" for index in accepted]
    for index in accepted:
        (received,) = by_subject[f"{run}-{index:03d}"]
        sender, rcpt, data = sent[index]
        assert received.sender == sender
        assert received.recipients == (rcpt,)
        assert received.data == normalised(data)
        assert "BODY=8BITMIME" in received.mail_options
    assert server.sessions == 1
    assert server.bare_line_ending_violations == 0
    assert server.eight_bit_violations == 0
    assert server.pipelining_violations == 0
    assert server.session_errors == []


async def test_the_same_batch_lock_step_and_pipelined_has_the_same_outcomes() -> None:
    run = uuid.uuid4().hex[:12]
    lock_step_server, lock_step = await run_batch(LOCK_STEP, run)
    pipelined_server, pipelined = await run_batch(PIPELINED, run)

    expected = [expected_summary(index) for index in range(COUNT)]
    assert [summary(o) for o in lock_step] == expected
    assert [summary(o) for o in pipelined] == expected
    for outcomes in (lock_step, pipelined):
        assert sum(isinstance(o, SenderRefusedError) for o in outcomes) == 4
        assert sum(isinstance(o, RecipientsRefusedError) for o in outcomes) == 4
        assert sum(isinstance(o, DataRefusedError) for o in outcomes) == 4
    check_server(lock_step_server, run)
    check_server(pipelined_server, run)
    # Lock-step: the server answered every command before the next one came.
    lock_step_lines = lock_step_server.client_lines()
    assert lock_step_lines.count("RSET") == 12
    # The same commands reached both servers, in the same order, apart from RSET
    # and the commands a pipelining client sends after a refused MAIL or RCPT.
    assert [line for line in lock_step_lines if line.startswith("MAIL")] == [
        line for line in pipelined_server.client_lines() if line.startswith("MAIL")
    ]

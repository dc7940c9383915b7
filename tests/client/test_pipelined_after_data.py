"""A server that refuses commands pipelined after the end of data (as Haraka does).

Such a server answers ``503`` to every command that arrived in the same read
as the end of a message's data.  That refusal is about how the client sent,
never about the message: the client must send the untouched messages again,
stop pipelining across the end of data for the rest of the session, and
report every message as what really became of it.  The messages are checked
where they land (the server's messages), not only in the outcomes.
"""

from __future__ import annotations

import functools

import anyio
import pytest

import anyio_smtp
from anyio_smtp import (
    DataRefusedError,
    RecipientsRefusedError,
    ReplyError,
    SenderRefusedError,
    SendResult,
    SMTPPool,
)
from anyio_smtp._pool import retryable
from anyio_smtp._protocol.replies import Reply
from anyio_smtp.testing import SMTPTestServer

SENDER = "batch@example.test"
RCPT = "rcpt@example.test"
EARLY = "pipelined after end of DATA"


def message(index: int) -> bytes:
    return f"Subject: message {index}\r\nX-Index: {index}\r\n\r\nbody {index}\r\n".encode()


def delivered(server: SMTPTestServer) -> list[int]:
    """The X-Index of every message the server took, in arrival order."""
    return [int(m.data.split(b"X-Index: ")[1].split(b"\r\n")[0]) for m in server.messages]


def early_refusals(server: SMTPTestServer) -> int:
    return sum(1 for line in server.server_lines() if EARLY in line)


def strict_server() -> SMTPTestServer:
    return SMTPTestServer(refuse_pipelined_after_data=True)


async def test_the_test_server_refuses_commands_after_the_end_of_data() -> None:
    # The model itself: what arrives with the end of data is refused, one
    # reply per command, and nothing of it is taken up.
    with anyio.fail_after(10):
        await _raw_exchange()


async def _raw_exchange() -> None:
    async with strict_server() as server:
        stream = await anyio.connect_tcp(server.host, server.port)
        async with stream:
            buffer = b""

            async def replies(count: int) -> list[str]:
                nonlocal buffer
                while buffer.count(b"\r\n") < count:
                    buffer += await stream.receive()
                lines = buffer.split(b"\r\n")
                buffer = b"\r\n".join(lines[count:])
                return [line.decode() for line in lines[:count]]

            await replies(1)
            await stream.send(b"EHLO c.test\r\n")
            while not buffer.endswith(b"\r\n") or not buffer.split(b"\r\n")[-2].startswith(b"250 "):
                buffer += await stream.receive()
            buffer = b""
            await stream.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n")
            assert [r[:3] for r in await replies(3)] == ["250", "250", "354"]
            await stream.send(b"one\r\n.\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n")
            answers = await replies(3)
            assert answers[0].startswith("250 ")
            assert all(a.startswith("503 5.5.0") and EARLY in a for a in answers[1:])
            await stream.send(b"RCPT TO:<b@x.test>\r\n")
            assert (await replies(1))[0].startswith("503 ")  # no MAIL was taken up
    assert delivered_count(server) == 1


def delivered_count(server: SMTPTestServer) -> int:
    return len(server.messages)


@pytest.mark.parametrize("count", [2, 50])
async def test_send_many_delivers_every_message_once(count: int) -> None:
    async with strict_server() as server:
        async with await anyio_smtp.connect(server.host, server.port) as smtp:
            batch = [(SENDER, [RCPT], message(i)) for i in range(count)]
            outcomes = [outcome async for outcome in smtp.send_many(batch)]
        assert all(isinstance(outcome, SendResult) for outcome in outcomes), outcomes
        assert len(outcomes) == count
        assert delivered(server) == list(range(count))
        # One group was refused (MAIL, RCPT, DATA of the second message); after
        # that the session stopped pipelining across the end of data.
        assert early_refusals(server) == 3
        assert server.sessions == 1


async def test_the_session_remembers_across_batches() -> None:
    async with strict_server() as server:
        async with await anyio_smtp.connect(server.host, server.port) as smtp:
            for start in (0, 5):
                batch = [(SENDER, [RCPT], message(i)) for i in range(start, start + 5)]
                outcomes = [outcome async for outcome in smtp.send_many(batch)]
                assert all(isinstance(outcome, SendResult) for outcome in outcomes)
        assert delivered(server) == list(range(10))
        assert early_refusals(server) == 3  # the second batch was not refused at all


async def test_a_refused_message_and_the_rset_after_it() -> None:
    # The third message's recipient is refused: its RSET and the fourth
    # message's commands follow an end of data, and are refused early too.
    async with strict_server() as server:
        server.reply("RCPT", "550 5.1.1 no such user", match="nobody@")
        async with await anyio_smtp.connect(server.host, server.port) as smtp:
            batch = [
                (SENDER, ["nobody@example.test" if i == 2 else RCPT], message(i)) for i in range(6)
            ]
            outcomes = [outcome async for outcome in smtp.send_many(batch)]
        assert isinstance(outcomes[2], RecipientsRefusedError)
        assert outcomes[2].is_permanent
        assert all(isinstance(o, SendResult) for i, o in enumerate(outcomes) if i != 2), outcomes
        assert delivered(server) == [0, 1, 3, 4, 5]


async def test_a_pool_delivers_every_message_once() -> None:
    opener = functools.partial(anyio_smtp.connect, "127.0.0.1")
    async with strict_server() as server:
        async with SMTPPool(functools.partial(opener, server.port), max_connections=3) as pool:
            batch = [(SENDER, [RCPT], message(i)) for i in range(40)]
            outcomes = [outcome async for outcome in pool.send_many(batch)]
        assert all(isinstance(outcome, SendResult) for outcome in outcomes), outcomes
        assert sorted(delivered(server)) == list(range(40))


async def test_send_mail_from_many_tasks_through_a_pool() -> None:
    async with strict_server() as server:
        opener = functools.partial(anyio_smtp.connect, server.host, server.port)
        results: dict[int, SendResult] = {}

        async def send(index: int, pool: SMTPPool) -> None:
            results[index] = await pool.send_mail(SENDER, [RCPT], message(index))

        async with SMTPPool(opener, max_connections=2) as pool, anyio.create_task_group() as tg:
            for index in range(30):
                tg.start_soon(send, index, pool)
        assert sorted(results) == list(range(30))
        assert sorted(delivered(server)) == list(range(30))


# -- what a 503 means in the error model ---------------------------------------------------


def reply(code: int, text: str = "Bad sequence of commands") -> Reply:
    return Reply(code, (text,))


def test_a_503_is_never_a_permanent_refusal_of_the_message() -> None:
    errors: list[ReplyError] = [
        SenderRefusedError(SENDER, reply(503)),
        RecipientsRefusedError({RCPT: reply(503)}),
        DataRefusedError("DATA", reply(503)),
    ]
    for error in errors:
        assert not error.is_permanent
        assert error.is_transient
        assert retryable(error)
    # Other 5xx replies keep their meaning.
    refused = SenderRefusedError(SENDER, reply(550, "no"))
    assert refused.is_permanent
    assert not refused.is_transient
    assert not retryable(refused)
    mixed = RecipientsRefusedError({RCPT: reply(503), "x@example.test": reply(550)})
    assert not mixed.is_permanent
    assert not mixed.is_transient
    assert not retryable(mixed)


async def test_a_503_in_lock_step_is_reported_as_not_permanent() -> None:
    # Without pipelining nothing was sent early; a 503 then still says nothing
    # about the message (here the server wants something else first).
    async with SMTPTestServer(extensions=["ENHANCEDSTATUSCODES"]) as server:
        server.reply("MAIL", "503 5.5.1 Error: send something else first", times=1)
        async with await anyio_smtp.connect(server.host, server.port) as smtp:
            outcomes = [o async for o in smtp.send_many([(SENDER, [RCPT], message(0))])]
            assert isinstance(outcomes[0], SenderRefusedError)
            assert not outcomes[0].is_permanent
            result = await smtp.send_mail(SENDER, [RCPT], message(1))
            assert isinstance(result, SendResult)
        assert delivered(server) == [1]


@pytest.mark.parametrize(
    "text",
    [
        "503 5.5.0 <a@x.test>: Sender address rejected: Improper use of SMTP command pipelining",
        "554 5.5.0 Error: SMTP protocol synchronization",
        "550 5.5.0 pipelining not allowed",
    ],
)
def test_complaints_about_pipelining_are_sequence_errors(text: str) -> None:
    code, _, rest = text.partition(" ")
    error = SenderRefusedError(SENDER, Reply(int(code), (rest,)))
    assert error.is_sequence_error
    assert not error.is_permanent
    assert retryable(error)


def test_other_refusals_are_not_sequence_errors() -> None:
    for code, text in [(550, "5.1.1 no such user"), (554, "5.7.1 spam"), (452, "4.5.3 later")]:
        error = RecipientsRefusedError({RCPT: Reply(code, (text,))})
        assert not error.is_sequence_error
    assert RecipientsRefusedError({RCPT: Reply(550, ("5.1.1 no",))}).is_permanent


async def test_the_switch_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="anyio_smtp")
    async with strict_server() as server:
        async with await anyio_smtp.connect(server.host, server.port) as smtp:
            batch = [(SENDER, [RCPT], message(i)) for i in range(4)]
            assert all([isinstance(outcome, SendResult) async for outcome in smtp.send_many(batch)])
    notes = [r for r in caplog.records if "pipelined after the end" in r.getMessage()]
    assert len(notes) == 1
    assert notes[0].levelname == "INFO"

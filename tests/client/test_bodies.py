"""What goes where a message body goes: email messages, refusals before any byte, bad items.

An ``email.message.Message`` is accepted wherever a body goes and is sent as
``send_message`` would send it, with the caller's envelope.  Anything that is
not a body is refused with ``InvalidMessageError`` before a byte is written,
and the session stays usable.  In a batch, a malformed item gets its own
error, in its place, and the batch goes on.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterator
from contextlib import aclosing
from email.message import EmailMessage
from typing import Any

import pytest

import anyio_smtp
from anyio_smtp import (
    InvalidArgumentError,
    InvalidMessageError,
    SendResult,
    SMTPClient,
    SMTPError,
    SMTPPool,
)
from anyio_smtp.testing import SMTPTestServer

SENDER = "sender@example.test"
RCPT = "rcpt@example.test"


def email_message(subject: str = "hello") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Header Sender <header@example.test>"
    message["To"] = "header-to@example.test"
    message["Bcc"] = "hidden@example.test"
    message["Subject"] = subject
    message.set_content("A body line.\n.a line with a dot\n")
    return message


def raw(subject: str) -> bytes:
    return f"Subject: {subject}\r\n\r\nbody of {subject}\r\n".encode()


def subjects(server: SMTPTestServer) -> list[str]:
    return [str(m.as_email()["Subject"]) for m in server.messages]


def mail_lines(server: SMTPTestServer) -> list[str]:
    return [line for line in server.client_lines() if line.upper().startswith("MAIL")]


async def connect(server: SMTPTestServer) -> SMTPClient:
    return await anyio_smtp.connect(server.host, server.port)


def factory(server: SMTPTestServer) -> functools.partial[anyio_smtp.SessionOpener]:
    return functools.partial(anyio_smtp.connect, server.host, server.port)


# -- an email message as the body -------------------------------------------------------


async def test_send_mail_sends_an_email_message_as_send_message_does() -> None:
    async with SMTPTestServer() as server, await connect(server) as smtp:
        message = email_message()
        result = await smtp.send_mail(SENDER, [RCPT], message)
        await smtp.send_message(message, sender=SENDER, recipients=[RCPT])
    assert result.accepted == (RCPT,)
    by_mail, by_message = server.messages
    # The explicit envelope, not the header fields.
    assert (by_mail.sender, by_mail.recipients) == (SENDER, (RCPT,))
    assert by_mail.data == by_message.data
    assert b"Bcc" not in by_mail.data
    assert b"hidden@" not in by_mail.data
    assert by_mail.as_email()["Subject"] == "hello"
    # The caller's message is left as it was.
    assert message["Bcc"] == "hidden@example.test"


async def test_pool_send_mail_sends_an_email_message() -> None:
    async with SMTPTestServer() as server, SMTPPool(factory(server)) as pool:
        result = await pool.send_mail(SENDER, RCPT, email_message("pooled"))
    assert isinstance(result, SendResult)
    (received,) = server.messages
    assert (received.sender, received.recipients) == (SENDER, (RCPT,))
    assert received.as_email()["Subject"] == "pooled"
    assert b"hidden@" not in received.data


async def test_a_non_ascii_email_message_uses_smtputf8() -> None:
    async with SMTPTestServer() as server, await connect(server) as smtp:
        message = email_message()
        message.replace_header("To", "Zoë <zoë@example.test>")
        await smtp.send_mail(SENDER, [RCPT], message)
    (received,) = server.messages
    assert "SMTPUTF8" in received.mail_options
    assert "zoë@example.test" in received.data.decode()


# -- what is not a body ------------------------------------------------------------------


def not_bodies() -> list[Any]:
    return [
        None,
        42,
        {"Subject": b"x"},
        {b"chunk"},
        [],
        ["Subject: text\r\n\r\nnot bytes\r\n"],
        [b"Subject: mixed\r\n\r\n", "text"],
        io.StringIO("Subject: a text file\r\n\r\nbody\r\n"),
    ]


@pytest.mark.parametrize("body", not_bodies(), ids=lambda body: type(body).__name__)
async def test_send_mail_refuses_what_is_not_a_body_before_any_byte(body: Any) -> None:
    async with SMTPTestServer() as server, await connect(server) as smtp:
        with pytest.raises(InvalidMessageError):
            await smtp.send_mail(SENDER, [RCPT], body)
        assert mail_lines(server) == []
        assert not smtp.closed
        result = await smtp.send_mail(SENDER, [RCPT], raw("after"))
    assert result.accepted == (RCPT,)
    assert subjects(server) == ["after"]


@pytest.mark.parametrize("body", not_bodies(), ids=lambda body: type(body).__name__)
async def test_pool_send_mail_refuses_what_is_not_a_body_before_any_session(body: Any) -> None:
    async with SMTPTestServer() as server, SMTPPool(factory(server)) as pool:
        with pytest.raises(InvalidMessageError):
            await pool.send_mail(SENDER, [RCPT], body)
        assert server.sessions == 0
        await pool.send_mail(SENDER, [RCPT], raw("after"))
    assert subjects(server) == ["after"]


async def test_the_refusal_is_an_invalid_argument_error() -> None:
    assert issubclass(InvalidMessageError, InvalidArgumentError)
    assert issubclass(InvalidMessageError, ValueError)
    async with SMTPTestServer() as server, await connect(server) as smtp:
        with pytest.raises(InvalidMessageError, match="encode"):
            await smtp.send_mail(SENDER, [RCPT], [b"Subject: x\r\n\r\n", "text"])  # type: ignore[list-item]
        with pytest.raises(InvalidMessageError, match="binary mode"):
            await smtp.send_mail(SENDER, [RCPT], io.StringIO("x"))  # type: ignore[arg-type]


async def test_a_str_stays_a_body_sent_as_utf8() -> None:
    async with SMTPTestServer() as server, await connect(server) as smtp:
        await smtp.send_mail(SENDER, [RCPT], "Subject: text\r\n\r\ncafé\r\n")
    assert "café" in server.messages[0].data.decode()


async def test_a_refused_send_does_not_read_a_one_shot_iterator() -> None:
    def chunks() -> Iterator[bytes]:
        yield b"Subject: once\r\n\r\n"
        yield b"read only once\r\n"

    source = chunks()
    async with SMTPTestServer() as server, await connect(server) as smtp:
        with pytest.raises(InvalidArgumentError):
            await smtp.send_mail(SENDER, None, source)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError):
            await smtp.send_mail("bad<address>", [RCPT], source)
        await smtp.send_mail(SENDER, [RCPT], source)
    (received,) = server.messages
    assert received.data == b"Subject: once\r\n\r\nread only once\r\n"


# -- malformed batch items ---------------------------------------------------------------


def batch() -> list[Any]:
    """Good items (0, 1, 3, 8) and malformed ones, each refused on its own."""
    return [
        (SENDER, [RCPT], raw("item 0")),
        (SENDER, [RCPT], email_message("item 1")),
        (SENDER, None, raw("item 2")),
        (SENDER, [RCPT], raw("item 3")),
        ("bad<address>", [RCPT], raw("item 4")),
        (SENDER, [RCPT], 42),
        (SENDER, [RCPT], ["text, not bytes"]),
        "not a message",
        (SENDER, [RCPT], raw("item 8")),
    ]


GOOD = [0, 1, 3, 8]


def check_batch(outcomes: list[SendResult | SMTPError], server: SMTPTestServer) -> None:
    assert len(outcomes) == 9
    for index, outcome in enumerate(outcomes):
        if index in GOOD:
            assert isinstance(outcome, SendResult), (index, outcome)
        else:
            assert isinstance(outcome, InvalidArgumentError), (index, outcome)
    assert isinstance(outcomes[5], InvalidMessageError)
    assert isinstance(outcomes[6], InvalidMessageError)
    assert sorted(subjects(server)) == [f"item {index}" for index in GOOD]
    assert all(b"hidden@" not in m.data for m in server.messages)


@pytest.mark.parametrize("max_in_flight", [1, 16])
async def test_client_send_many_gives_a_malformed_item_its_own_error(max_in_flight: int) -> None:
    async with SMTPTestServer() as server, await connect(server) as smtp:
        async with aclosing(smtp.send_many(batch(), max_in_flight=max_in_flight)) as results:
            outcomes = [outcome async for outcome in results]
        assert not smtp.closed
    check_batch(outcomes, server)


async def test_client_send_many_of_an_async_iterable_with_malformed_items() -> None:
    async def items() -> Any:
        for item in batch():
            yield item

    async with SMTPTestServer() as server, await connect(server) as smtp:
        async with aclosing(smtp.send_many(items())) as results:
            outcomes = [outcome async for outcome in results]
    check_batch(outcomes, server)


async def test_pool_send_many_gives_a_malformed_item_its_own_error() -> None:
    async with SMTPTestServer() as server, SMTPPool(factory(server), max_connections=2) as pool:
        async with aclosing(pool.send_many(batch())) as results:
            outcomes = [outcome async for outcome in results]
    check_batch(outcomes, server)


async def test_a_batch_of_email_message_bodies_and_five_good_items() -> None:
    items: list[Any] = [(SENDER, [RCPT], email_message(f"body {i}")) for i in range(5)]
    async with SMTPTestServer() as server, await connect(server) as smtp:
        async with aclosing(smtp.send_many(items)) as results:
            outcomes = [outcome async for outcome in results]
        assert not smtp.closed
    assert all(isinstance(outcome, SendResult) for outcome in outcomes)
    assert subjects(server) == [f"body {i}" for i in range(5)]


async def test_pool_send_mail_reads_an_iterator_of_recipients_once() -> None:
    async with SMTPTestServer() as server, SMTPPool(factory(server)) as pool:
        recipients = iter([RCPT, "other@example.test", RCPT])
        await pool.send_mail(SENDER, recipients, raw("iterated"))
    (received,) = server.messages
    assert received.recipients == (RCPT, "other@example.test")

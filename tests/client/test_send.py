"""Sending mail: the envelope on the wire, pipelined and lock-step, refusals and encodings."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from email.message import EmailMessage

import pytest

import anyio_smtp
from anyio_smtp import (
    DataRefusedError,
    ExtensionNotSupportedError,
    InvalidArgumentError,
    MessageTooLargeError,
    RecipientsRefusedError,
    SenderRefusedError,
    SessionState,
)
from anyio_smtp.testing import MemoryByteStream, SMTPTestServer
from tests.client.scripted import BASIC_EHLO, PIPELINING_EHLO, Peer, scripted

CLIENT = "client.test"
SENDER = "alice@example.test"
BOB = "bob@example.test"
CAROL = "carol@example.test"
MESSAGE = b"Subject: hello\r\n\r\nHello, world.\r\n"
QUEUED = "250 2.0.0 Ok: queued as 4ABC123XYZ"

#: Both ways of running a transaction: (EHLO reply, pipelined?).
MODES = pytest.mark.parametrize(
    ("ehlo", "pipelined"),
    [(PIPELINING_EHLO, True), (BASIC_EHLO, False)],
    ids=["pipelined", "lock-step"],
)


def ehlo_reply(*keywords: str) -> tuple[str, ...]:
    """An EHLO reply advertising exactly ``keywords``."""
    lines = ("mx.test", *keywords)
    return (*(f"250-{line}" for line in lines[:-1]), f"250 {lines[-1]}")


async def next_write(peer: Peer) -> bytes:
    """Receive exactly one write of the client (the buffer must be empty)."""
    assert peer.buffer == b"", f"unread bytes before the write: {peer.buffer!r}"
    chunk = await peer.stream.receive()
    peer.buffer += chunk
    return chunk


async def exchange(peer: Peer, steps: Sequence[tuple[str, str]], *, pipelined: bool) -> list[str]:
    """Read each expected command line and answer it with its reply.

    Pipelined: every command must arrive before any reply is sent, and the
    replies then go out together.  Lock-step: each command must come alone.
    """
    lines = []
    if pipelined:
        for expected, _reply in steps:
            line = await peer.line()
            assert line == expected
            lines.append(line)
        assert peer.buffer == b"", f"unexpected bytes after the group: {peer.buffer!r}"
        await peer.send(*(reply for _expected, reply in steps))
    else:
        for expected, reply in steps:
            line = await peer.lone(expected)
            assert line == expected
            lines.append(line)
            await peer.send(reply)
    return lines


async def accept_message(
    peer: Peer,
    sender: str,
    recipients: Iterable[str],
    *,
    pipelined: bool,
    final: str = QUEUED,
) -> bytes:
    """Serve one fully accepted transaction; return the raw message data received."""
    steps = [
        (f"MAIL FROM:<{sender}>", "250 2.1.0 Ok"),
        *((f"RCPT TO:<{rcpt}>", "250 2.1.5 Ok") for rcpt in recipients),
        ("DATA", "354 End data with <CR><LF>.<CR><LF>"),
    ]
    await exchange(peer, steps, pipelined=pipelined)
    data = await peer.data()
    await peer.send(final)
    return data


class Mark:
    """What the client had written at some point (to check what came after)."""

    def __init__(self, stream: MemoryByteStream) -> None:
        self.stream = stream
        self.size = len(stream.sent)
        self.writes = stream.writes

    @property
    def since(self) -> bytes:
        return bytes(self.stream.sent[self.size :])

    @property
    def writes_since(self) -> int:
        return self.stream.writes - self.writes


# -- the envelope on the wire ------------------------------------------------------------


async def test_pipelined_send_is_one_write_with_replies_in_order() -> None:
    group = (f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{BOB}>\r\nRCPT TO:<{CAROL}>\r\nDATA\r\n").encode()

    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        assert await next_write(peer) == group
        for _ in range(4):
            await peer.line()
        await peer.send(
            "250 2.1.0 sender ok",
            "250 2.1.5 bob ok",
            "250 2.1.5 carol ok",
            "354 go ahead",
        )
        assert await peer.data() == MESSAGE + b".\r\n"
        await peer.send(QUEUED)
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        mark = Mark(stream)
        result = await smtp.send_mail(SENDER, [BOB, CAROL], MESSAGE)
        assert mark.since == group + MESSAGE + b".\r\n"
        assert mark.writes_since == 2  # the group, then the message
        assert result.reply.code == 250
        assert result.reply.enhanced_status == "2.0.0"
        assert result.reply.message == "Ok: queued as 4ABC123XYZ"
        assert result.accepted == (BOB, CAROL)
        assert dict(result.rejected) == {}
        assert result.queue_id == "4ABC123XYZ"
        assert smtp.state is SessionState.READY


async def test_pipelined_replies_are_paired_with_their_commands() -> None:
    dave = "dave@example.test"

    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        await exchange(
            peer,
            [
                (f"MAIL FROM:<{SENDER}>", "250 2.1.0 sender ok"),
                (f"RCPT TO:<{BOB}>", "250 2.1.5 bob ok"),
                (f"RCPT TO:<{CAROL}>", "550 5.1.1 carol: no such user"),
                (f"RCPT TO:<{dave}>", "450 4.2.0 dave: greylisted"),
                ("DATA", "354 go ahead"),
            ],
            pipelined=True,
        )
        await peer.data()
        await peer.send(QUEUED)
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        result = await smtp.send_mail(SENDER, [BOB, CAROL, dave], MESSAGE)
    assert result.accepted == (BOB,)
    assert list(result.rejected) == [CAROL, dave]
    assert result.rejected[CAROL].code == 550
    assert result.rejected[CAROL].message == "carol: no such user"
    assert result.rejected[dave].code == 450
    assert result.rejected[dave].message == "dave: greylisted"
    assert result.reply.message == "Ok: queued as 4ABC123XYZ"


async def test_lock_step_send_without_pipelining() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(BASIC_EHLO)
        assert await peer.lone("MAIL FROM:") == f"MAIL FROM:<{SENDER}>"
        await peer.send("250 2.1.0 Ok")
        assert await peer.lone("RCPT TO:") == f"RCPT TO:<{BOB}>"
        await peer.send("250 2.1.5 Ok")
        assert await peer.lone("RCPT TO:") == f"RCPT TO:<{CAROL}>"
        await peer.send("250 2.1.5 Ok")
        assert await peer.lone("DATA") == "DATA"
        await peer.send("354 go ahead")
        assert await peer.data() == MESSAGE + b".\r\n"
        await peer.send(QUEUED)
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        mark = Mark(stream)
        result = await smtp.send_mail(SENDER, [BOB, CAROL], MESSAGE)
        assert mark.writes_since == 5  # MAIL, RCPT, RCPT, DATA, the message
        assert result.accepted == (BOB, CAROL)
        assert result.queue_id == "4ABC123XYZ"


@MODES
async def test_partial_refusal_is_reported_in_rejected(
    ehlo: tuple[str, ...], pipelined: bool
) -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(ehlo)
        await exchange(
            peer,
            [
                (f"MAIL FROM:<{SENDER}>", "250 2.1.0 Ok"),
                (f"RCPT TO:<{BOB}>", "550 5.1.1 bob: mailbox unavailable"),
                (f"RCPT TO:<{CAROL}>", "250 2.1.5 Ok"),
                ("DATA", "354 go ahead"),
            ],
            pipelined=pipelined,
        )
        assert await peer.data() == MESSAGE + b".\r\n"
        await peer.send(QUEUED)
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        result = await smtp.send_mail(SENDER, [BOB, CAROL], MESSAGE)
    assert result.accepted == (CAROL,)
    assert list(result.rejected) == [BOB]
    assert result.rejected[BOB].code == 550
    assert result.rejected[BOB].enhanced_status == "5.1.1"
    assert result.queue_id == "4ABC123XYZ"


# -- refusals ----------------------------------------------------------------------------


async def test_total_refusal_in_lock_step_sends_no_data_and_resets() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(BASIC_EHLO)
        await exchange(
            peer,
            [
                (f"MAIL FROM:<{SENDER}>", "250 2.1.0 Ok"),
                (f"RCPT TO:<{BOB}>", "550 5.1.1 bob: no such user"),
                (f"RCPT TO:<{CAROL}>", "450 4.2.1 carol: mailbox busy"),
                ("RSET", "250 2.0.0 Ok"),
            ],
            pipelined=False,
        )
        await accept_message(peer, SENDER, [BOB], pipelined=False)
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        mark = Mark(stream)
        with pytest.raises(RecipientsRefusedError) as caught:
            await smtp.send_mail(SENDER, [BOB, CAROL], MESSAGE)
        assert b"DATA" not in mark.since
        assert mark.since.endswith(b"RSET\r\n")
        error = caught.value
        assert set(error.rejected) == {BOB, CAROL}
        assert error.rejected[BOB].code == 550
        assert error.rejected[CAROL].code == 450
        assert error.reply.code == 550
        assert not error.is_transient
        assert not error.is_permanent
        assert smtp.state is SessionState.READY
        result = await smtp.send_mail(SENDER, BOB, MESSAGE)
        assert result.accepted == (BOB,)


async def test_pipelined_total_refusal_with_data_refused_sends_no_dot() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        await exchange(
            peer,
            [
                (f"MAIL FROM:<{SENDER}>", "250 2.1.0 Ok"),
                (f"RCPT TO:<{BOB}>", "550 5.1.1 bob: no such user"),
                (f"RCPT TO:<{CAROL}>", "550 5.1.1 carol: no such user"),
                ("DATA", "503 5.5.1 no valid recipients"),
            ],
            pipelined=True,
        )
        assert await peer.lone("RSET") == "RSET"
        await peer.send("250 2.0.0 Ok")
        await accept_message(peer, SENDER, [CAROL], pipelined=True)
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        mark = Mark(stream)
        with pytest.raises(RecipientsRefusedError) as caught:
            await smtp.send_mail(SENDER, [BOB, CAROL], MESSAGE)
        assert mark.since.endswith(b"DATA\r\nRSET\r\n")
        assert caught.value.is_permanent
        assert {r: reply.code for r, reply in caught.value.rejected.items()} == {
            BOB: 550,
            CAROL: 550,
        }
        result = await smtp.send_mail(SENDER, [CAROL], MESSAGE)
        assert result.accepted == (CAROL,)


async def test_pipelined_total_refusal_with_354_ends_data_with_a_lone_dot() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        await exchange(
            peer,
            [
                (f"MAIL FROM:<{SENDER}>", "250 2.1.0 Ok"),
                (f"RCPT TO:<{BOB}>", "550 5.1.1 bob: no such user"),
                (f"RCPT TO:<{CAROL}>", "451 4.3.0 carol: try later"),
                ("DATA", "354 go ahead"),
            ],
            pipelined=True,
        )
        assert await next_write(peer) == b".\r\n"
        assert await peer.line() == "."
        await peer.send("554 5.5.1 no valid recipients")
        assert await peer.lone("RSET") == "RSET"
        await peer.send("250 2.0.0 Ok")
        await accept_message(peer, SENDER, [BOB], pipelined=True)
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        mark = Mark(stream)
        with pytest.raises(RecipientsRefusedError) as caught:
            await smtp.send_mail(SENDER, [BOB, CAROL], MESSAGE)
        assert mark.since.endswith(b"DATA\r\n.\r\nRSET\r\n")
        assert b"Hello, world" not in mark.since
        assert set(caught.value.rejected) == {BOB, CAROL}
        assert smtp.state is SessionState.READY
        result = await smtp.send_mail(SENDER, [BOB], MESSAGE)
        assert result.queue_id == "4ABC123XYZ"


async def test_sender_refused_in_lock_step_sends_no_rcpt() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(BASIC_EHLO)
        assert await peer.lone("MAIL FROM:") == f"MAIL FROM:<{SENDER}>"
        await peer.send("553 5.7.1 sender rejected")
        assert await peer.lone("RSET") == "RSET"
        await peer.send("250 2.0.0 Ok")
        await accept_message(peer, "other@example.test", [BOB], pipelined=False)
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        mark = Mark(stream)
        with pytest.raises(SenderRefusedError) as caught:
            await smtp.send_mail(SENDER, [BOB], MESSAGE)
        assert mark.since == f"MAIL FROM:<{SENDER}>\r\nRSET\r\n".encode()
        assert caught.value.sender == SENDER
        assert caught.value.command == "MAIL FROM"
        assert caught.value.reply.code == 553
        assert caught.value.is_permanent
        assert smtp.state is SessionState.READY
        result = await smtp.send_mail("other@example.test", [BOB], MESSAGE)
        assert result.accepted == (BOB,)


async def test_sender_refused_pipelined() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        await exchange(
            peer,
            [
                (f"MAIL FROM:<{SENDER}>", "451 4.7.1 sender greylisted"),
                (f"RCPT TO:<{BOB}>", "503 5.5.1 need MAIL first"),
                ("DATA", "503 5.5.1 need RCPT first"),
            ],
            pipelined=True,
        )
        assert await peer.lone("RSET") == "RSET"
        await peer.send("250 2.0.0 Ok")
        await accept_message(peer, SENDER, [BOB], pipelined=True)
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        with pytest.raises(SenderRefusedError) as caught:
            await smtp.send_mail(SENDER, [BOB], MESSAGE)
        assert caught.value.reply.code == 451
        assert caught.value.is_transient
        result = await smtp.send_mail(SENDER, [BOB], MESSAGE)
        assert result.accepted == (BOB,)


@MODES
async def test_data_refused(ehlo: tuple[str, ...], pipelined: bool) -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(ehlo)
        await exchange(
            peer,
            [
                (f"MAIL FROM:<{SENDER}>", "250 2.1.0 Ok"),
                (f"RCPT TO:<{BOB}>", "250 2.1.5 Ok"),
                ("DATA", "554 5.3.0 no data today"),
            ],
            pipelined=pipelined,
        )
        assert await peer.lone("RSET") == "RSET"
        await peer.send("250 2.0.0 Ok")
        await accept_message(peer, SENDER, [BOB], pipelined=pipelined)
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        mark = Mark(stream)
        with pytest.raises(DataRefusedError) as caught:
            await smtp.send_mail(SENDER, [BOB], MESSAGE)
        assert mark.since.endswith(b"DATA\r\nRSET\r\n")
        assert b"Hello, world" not in mark.since
        assert caught.value.command == "DATA"
        assert caught.value.reply.code == 554
        assert smtp.state is SessionState.READY
        assert (await smtp.send_mail(SENDER, [BOB], MESSAGE)).accepted == (BOB,)


@MODES
async def test_end_of_data_refused(ehlo: tuple[str, ...], pipelined: bool) -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(ehlo)
        await accept_message(
            peer, SENDER, [BOB], pipelined=pipelined, final="554 5.7.1 looks like spam"
        )
        assert await peer.lone("RSET") == "RSET"
        await peer.send("250 2.0.0 Ok")
        await accept_message(peer, SENDER, [BOB], pipelined=pipelined)
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        mark = Mark(stream)
        with pytest.raises(DataRefusedError) as caught:
            await smtp.send_mail(SENDER, [BOB], MESSAGE)
        assert mark.since.endswith(MESSAGE + b".\r\nRSET\r\n")
        assert caught.value.command == "end of data"
        assert caught.value.reply.code == 554
        assert caught.value.reply.message == "looks like spam"
        assert "spam" in str(caught.value)
        assert smtp.state is SessionState.READY
        assert (await smtp.send_mail(SENDER, [BOB], MESSAGE)).queue_id == "4ABC123XYZ"


@MODES
async def test_several_messages_on_one_session(ehlo: tuple[str, ...], pipelined: bool) -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(ehlo)
        for index in range(3):
            data = await accept_message(
                peer,
                SENDER,
                [BOB],
                pipelined=pipelined,
                final=f"250 2.0.0 Ok: queued as QUEUE{index}ID",
            )
            assert data == f"Subject: {index}\r\n\r\nbody {index}\r\n.\r\n".encode()
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        ids = [
            (await smtp.send_mail(SENDER, [BOB], f"Subject: {i}\r\n\r\nbody {i}\r\n")).queue_id
            for i in range(3)
        ]
    assert ids == ["QUEUE0ID", "QUEUE1ID", "QUEUE2ID"]


# -- envelope details ----------------------------------------------------------------------


async def test_null_sender_single_str_recipient_and_duplicates() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        await accept_message(peer, "", [BOB], pipelined=True)
        await accept_message(peer, SENDER, [BOB, CAROL], pipelined=True)
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        mark = Mark(stream)
        bounce = await smtp.send_mail("", BOB, MESSAGE)
        assert mark.since.startswith(f"MAIL FROM:<>\r\nRCPT TO:<{BOB}>\r\nDATA\r\n".encode())
        assert bounce.accepted == (BOB,)
        mark = Mark(stream)
        result = await smtp.send_mail(SENDER, [BOB, CAROL, BOB, CAROL], MESSAGE)
        assert mark.since.count(b"RCPT TO:") == 2
        assert result.accepted == (BOB, CAROL)


async def test_body_encoding_on_the_wire() -> None:
    message = (
        b"Subject: dots\n"
        b"\n"
        b".starts with a dot\n"
        b"mixed\r\n"
        b"..two dots\rbare cr\n"
        b".\n"
        b"MAIL FROM:<smuggled@example.test>\n"
        b"last line without an ending"
    )
    expected = (
        b"Subject: dots\r\n"
        b"\r\n"
        b"..starts with a dot\r\n"
        b"mixed\r\n"
        b"...two dots\r\nbare cr\r\n"
        b"..\r\n"
        b"MAIL FROM:<smuggled@example.test>\r\n"
        b"last line without an ending\r\n"
        b".\r\n"
    )

    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        assert await accept_message(peer, SENDER, [BOB], pipelined=True) == expected
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        mark = Mark(stream)
        await smtp.send_mail(SENDER, [BOB], message)
        data = mark.since
        assert data.endswith(expected)
        assert data.count(b"\r\n.\r\n") == 1
        # Every LF is part of a CRLF, every CR is followed by LF.
        assert data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r")


async def test_empty_message_is_just_the_terminator() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        assert await accept_message(peer, SENDER, [BOB], pipelined=True) == b".\r\n"
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        await smtp.send_mail(SENDER, [BOB], b"")


async def test_str_message_is_utf8_with_8bitmime() -> None:
    text = "Subject: café\r\n\r\nnaïve crème brûlée\r\n"

    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        await exchange(
            peer,
            [
                (f"MAIL FROM:<{SENDER}> BODY=8BITMIME", "250 2.1.0 Ok"),
                (f"RCPT TO:<{BOB}>", "250 2.1.5 Ok"),
                ("DATA", "354 go ahead"),
            ],
            pipelined=True,
        )
        assert await peer.data() == text.encode("utf-8") + b".\r\n"
        await peer.send(QUEUED)
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        await smtp.send_mail(SENDER, [BOB], text)


async def test_8bit_body_without_8bitmime_is_refused_before_sending() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(ehlo_reply("PIPELINING", "ENHANCEDSTATUSCODES"))
        await accept_message(peer, SENDER, [BOB], pipelined=True)
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        mark = Mark(stream)
        with pytest.raises(ExtensionNotSupportedError) as caught:
            await smtp.send_mail(SENDER, [BOB], "Subject: x\r\n\r\ncafé\r\n")
        with pytest.raises(ExtensionNotSupportedError):
            await smtp.send_mail(SENDER, [BOB], b"Subject: x\r\n\r\n\xff\r\n")
        assert caught.value.name == "8BITMIME"
        assert caught.value.is_permanent
        assert mark.since == b""
        assert mark.writes_since == 0
        assert smtp.state is SessionState.READY
        await smtp.send_mail(SENDER, [BOB], MESSAGE)


async def test_non_ascii_addresses_use_smtputf8() -> None:
    sender = "jörg@bücher.test"
    recipient = "用户@例子.测试"

    async def server(peer: Peer) -> None:
        await peer.greet(ehlo_reply("PIPELINING", "8BITMIME", "SMTPUTF8"))
        await exchange(
            peer,
            [
                (f"MAIL FROM:<{sender}> SMTPUTF8", "250 2.1.0 Ok"),
                (f"RCPT TO:<{recipient}>", "250 2.1.5 Ok"),
                ("DATA", "354 go ahead"),
            ],
            pipelined=True,
        )
        await peer.data()
        await peer.send("250 Ok")
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        mark = Mark(stream)
        result = await smtp.send_mail(sender, [recipient], MESSAGE)
        assert mark.since.startswith(f"MAIL FROM:<{sender}> SMTPUTF8\r\n".encode())
        assert result.accepted == (recipient,)


async def test_non_ascii_address_without_smtputf8_is_refused_before_sending() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        await accept_message(peer, SENDER, [BOB], pipelined=True)
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        mark = Mark(stream)
        with pytest.raises(ExtensionNotSupportedError) as caught:
            await smtp.send_mail("jörg@bücher.test", [BOB], MESSAGE)
        assert caught.value.name == "SMTPUTF8"
        with pytest.raises(ExtensionNotSupportedError) as caught:
            await smtp.send_mail(SENDER, [BOB, "用户@例子.测试"], MESSAGE)
        assert caught.value.name == "SMTPUTF8"
        assert mark.since == b""
        assert mark.writes_since == 0
        assert smtp.state is SessionState.READY
        await smtp.send_mail(SENDER, [BOB], MESSAGE)


@pytest.mark.parametrize("smtputf8", [False, True], ids=["without-smtputf8", "with-smtputf8"])
async def test_a_non_ascii_domain_goes_in_a_labels(smtputf8: bool) -> None:
    """Only a non-ASCII local part needs SMTPUTF8; a domain has its ASCII form."""
    extensions = ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"]
    async with (
        SMTPTestServer(extensions=[*extensions, "SMTPUTF8"] if smtputf8 else extensions) as server,
        anyio_smtp.connect(server.host, server.port, ehlo_domain=CLIENT) as smtp,
    ):
        result = await smtp.send_mail(
            "me@Bücher.example", ["user@bücher.example", "bob@example.test"], MESSAGE
        )
        # The caller's addresses in the outcome; their ASCII form on the wire.
        assert result.accepted == ("user@bücher.example", "bob@example.test")
        message = server.messages[-1]
        assert message.sender == "me@xn--bcher-kva.example"
        assert message.recipients == ("user@xn--bcher-kva.example", "bob@example.test")
        assert "SMTPUTF8" not in message.mail_options
        # No ASCII form: refused before a byte is written, the session stays usable.
        lines = len(server.client_lines())
        with pytest.raises(InvalidArgumentError, match="internationalised domain name"):
            await smtp.send_mail(SENDER, ["user@☃.example"], MESSAGE)
        if not smtputf8:
            # A non-ASCII local part still needs SMTPUTF8.
            with pytest.raises(ExtensionNotSupportedError) as caught:
                await smtp.send_mail(SENDER, ["jörg@bücher.example"], MESSAGE)
            assert caught.value.name == "SMTPUTF8"
        assert len(server.client_lines()) == lines
        assert smtp.state is SessionState.READY
        if smtputf8:
            # With SMTPUTF8 in use anyway, every address goes as it is.
            await smtp.send_mail("me@bücher.example", ["jörg@bücher.example"], MESSAGE)
            message = server.messages[-1]
            assert message.sender == "me@bücher.example"
            assert message.recipients == ("jörg@bücher.example",)
            assert "SMTPUTF8" in message.mail_options


async def test_size_parameter_declares_the_rfc1870_size() -> None:
    message = b"Subject: s\n\n.dot\nend"
    # RFC 1870: CRLF line endings, no dot-stuffing, no terminator.
    size = len(b"Subject: s\r\n\r\n.dot\r\nend\r\n")

    async def server(peer: Peer) -> None:
        await peer.greet(ehlo_reply("PIPELINING", "SIZE 10000"))
        await exchange(
            peer,
            [
                (f"MAIL FROM:<{SENDER}> SIZE={size}", "250 2.1.0 Ok"),
                (f"RCPT TO:<{BOB}>", "250 2.1.5 Ok"),
                ("DATA", "354 go ahead"),
            ],
            pipelined=True,
        )
        assert await peer.data() == b"Subject: s\r\n\r\n..dot\r\nend\r\n.\r\n"
        await peer.send("250 Ok")
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        await smtp.send_mail(SENDER, [BOB], message)


async def test_message_over_the_size_limit_is_refused_before_sending() -> None:
    limit = 100
    at_limit = b"Subject: x\r\n\r\n" + b"a" * (limit - 16) + b"\r\n"
    assert len(at_limit) == limit

    async def server(peer: Peer) -> None:
        await peer.greet(ehlo_reply("PIPELINING", f"SIZE {limit}"))
        await exchange(
            peer,
            [
                (f"MAIL FROM:<{SENDER}> SIZE={limit}", "250 2.1.0 Ok"),
                (f"RCPT TO:<{BOB}>", "250 2.1.5 Ok"),
                ("DATA", "354 go ahead"),
            ],
            pipelined=True,
        )
        assert await peer.data() == at_limit + b".\r\n"
        await peer.send("250 Ok")
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        mark = Mark(stream)
        too_big = at_limit + b"x"
        with pytest.raises(MessageTooLargeError) as caught:
            await smtp.send_mail(SENDER, [BOB], too_big)
        assert caught.value.limit == limit
        assert caught.value.size == limit + 3  # "x" plus the CRLF added after it
        assert caught.value.is_permanent
        assert mark.since == b""
        assert smtp.state is SessionState.READY
        await smtp.send_mail(SENDER, [BOB], at_limit)


# -- arguments checked before any byte ----------------------------------------------------

BAD_ADDRESSES = [
    "alice@example.test\r\nRCPT TO:<evil@example.test>",
    "alice@example.test\nDATA",
    "alice@example.test\r",
    "al\x00ice@example.test",
    "<alice@example.test>",
    "alice@example.test>",
    "Alice <alice@example.test>",
    "Alice Example alice@example.test",
    "alice",
    "@example.test",
]


async def test_invalid_addresses_are_refused_before_any_byte() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        await accept_message(peer, SENDER, [BOB], pipelined=True)
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        mark = Mark(stream)
        for bad in BAD_ADDRESSES:
            with pytest.raises(InvalidArgumentError, match="sender"):
                await smtp.send_mail(bad, [BOB], MESSAGE)
            with pytest.raises(InvalidArgumentError, match="recipient"):
                await smtp.send_mail(SENDER, [BOB, bad], MESSAGE)
            with pytest.raises(InvalidArgumentError, match="recipient"):
                await smtp.send_mail(SENDER, bad, MESSAGE)
            with pytest.raises(ValueError, match="recipient"):
                await smtp.send_message(_simple_message(), recipients=[bad])
            with pytest.raises(ValueError, match="sender"):
                await smtp.send_message(_simple_message(), sender=bad)
            assert mark.since == b"", bad
            assert mark.writes_since == 0
        with pytest.raises(InvalidArgumentError):
            await smtp.send_mail(SENDER, [""], MESSAGE)
        with pytest.raises(InvalidArgumentError):
            await smtp.send_mail(SENDER, [BOB], 12345)  # type: ignore[arg-type]
        assert mark.since == b""
        assert smtp.state is SessionState.READY
        await smtp.send_mail(SENDER, [BOB], MESSAGE)


async def test_empty_recipient_list_is_refused() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        mark = Mark(stream)
        empties: list[Iterable[str]] = [[], (), iter(()), set()]
        for empty in empties:
            with pytest.raises(InvalidArgumentError, match="at least one recipient"):
                await smtp.send_mail(SENDER, empty, MESSAGE)
        assert mark.since == b""
        assert not smtp.closed


# -- send_message ----------------------------------------------------------------------------


def _simple_message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Alice <alice@example.test>"
    message["To"] = "Bob <bob@example.test>"
    message["Subject"] = "simple"
    message.set_content("simple body\n")
    return message


def _bcc_message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Alice Example <alice@example.test>"
    message["To"] = "Bob <bob@example.test>, carol@example.test"
    message["Cc"] = "Dave <dave@example.test>"
    message["Bcc"] = "Eve Hidden <eve@example.test>"
    message["Subject"] = "meeting"
    message.set_content("See you at noon.\n")
    return message


async def _serve_any_envelope(peer: Peer) -> tuple[str, list[str], bytes]:
    """Accept a pipelined transaction of any number of recipients."""
    mail = await peer.expect("MAIL FROM:")
    rcpts = []
    while (line := await peer.line()) != "DATA":
        assert line.startswith("RCPT TO:"), line
        rcpts.append(line)
    await peer.send("250 2.1.0 Ok", *("250 2.1.5 Ok" for _ in rcpts), "354 go ahead")
    data = await peer.data()
    await peer.send(QUEUED)
    return mail, rcpts, data


async def test_send_message_takes_the_envelope_from_the_header_and_drops_bcc() -> None:
    message = _bcc_message()
    seen: list[tuple[str, list[str], bytes]] = []

    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        seen.append(await _serve_any_envelope(peer))
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        result = await smtp.send_message(message)
    mail, rcpts, data = seen[0]
    assert mail == "MAIL FROM:<alice@example.test>"
    expected = {"bob@example.test", "carol@example.test", "dave@example.test", "eve@example.test"}
    assert sorted(rcpts) == sorted(f"RCPT TO:<{address}>" for address in expected)
    assert set(result.accepted) == expected
    assert b"\nbcc:" not in data.lower()
    assert b"eve@example.test" not in data
    assert b"Eve Hidden" not in data
    assert b"\r\nTo: Bob <bob@example.test>, carol@example.test\r\n" in data
    assert b"\r\nCc: Dave <dave@example.test>\r\n" in data
    assert b"\r\n\r\nSee you at noon.\r\n.\r\n" in data
    assert data.count(b"\n") == data.count(b"\r\n")
    # The caller's message is left as it was.
    assert message["Bcc"] == "Eve Hidden <eve@example.test>"


async def test_send_message_sender_and_recipients_override_the_header() -> None:
    message = _bcc_message()
    seen: list[tuple[str, list[str], bytes]] = []

    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        seen.append(await _serve_any_envelope(peer))
        seen.append(await _serve_any_envelope(peer))
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        first = await smtp.send_message(
            message, sender="bounces@example.test", recipients=["list@example.test"]
        )
        second = await smtp.send_message(message, sender="", recipients="frank@example.test")
    assert first.accepted == ("list@example.test",)
    assert second.accepted == ("frank@example.test",)
    (mail, rcpts, data), (mail2, rcpts2, data2) = seen
    assert mail == "MAIL FROM:<bounces@example.test>"
    assert rcpts == ["RCPT TO:<list@example.test>"]
    assert mail2 == "MAIL FROM:<>"
    assert rcpts2 == ["RCPT TO:<frank@example.test>"]
    for sent in (data, data2):
        assert b"\r\nFrom: Alice Example <alice@example.test>\r\n" in b"\r\n" + sent
        assert b"eve@example.test" not in sent
        assert b"bcc:" not in sent.lower()

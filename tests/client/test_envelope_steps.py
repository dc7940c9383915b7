"""mail() and rcpt(): the envelope one step at a time, for probing a server."""

from __future__ import annotations

import pytest

import anyio_smtp
from anyio_smtp import (
    InvalidArgumentError,
    LocalProtocolError,
    RecipientsRefusedError,
    SenderRefusedError,
)
from anyio_smtp.testing import SMTPTestServer

SENDER = "probe@example.test"


async def test_mail_and_rcpt_then_quit_send_nothing() -> None:
    async with SMTPTestServer() as server:
        server.reply("RCPT", "550 5.1.1 No such user", match="nobody@")
        async with await anyio_smtp.connect(server.host, server.port) as smtp:
            assert (await smtp.mail(SENDER, parameters=["SIZE=100"])).code == 250
            assert (await smtp.rcpt("ada@example.org")).code == 250
            with pytest.raises(RecipientsRefusedError) as refused:
                await smtp.rcpt("nobody@example.org")
            assert refused.value.rejected["nobody@example.org"].code == 550
            # The transaction is still open: another recipient may follow.
            assert (await smtp.rcpt("bob@example.org")).code == 250
            await smtp.quit()
        assert server.messages == []
        assert server.client_lines()[-5:] == [
            "MAIL FROM:<probe@example.test> SIZE=100",
            "RCPT TO:<ada@example.org>",
            "RCPT TO:<nobody@example.org>",
            "RCPT TO:<bob@example.org>",
            "QUIT",
        ]


async def test_an_open_transaction_blocks_sending_until_rset() -> None:
    async with SMTPTestServer() as server:
        async with await anyio_smtp.connect(server.host, server.port) as smtp:
            await smtp.mail(SENDER)
            with pytest.raises(LocalProtocolError):
                await smtp.send_mail(SENDER, ["ada@example.org"], b"hi\r\n")
            with pytest.raises(LocalProtocolError):
                await smtp.mail(SENDER)
            await smtp.rset()
            result = await smtp.send_mail(SENDER, ["ada@example.org"], b"hi\r\n")
            assert result.accepted == ("ada@example.org",)
        assert len(server.messages) == 1


async def test_a_refused_sender_resets_and_the_session_goes_on() -> None:
    async with SMTPTestServer() as server:
        server.reply("MAIL", "553 5.7.1 Sender address rejected", times=1)
        async with await anyio_smtp.connect(server.host, server.port) as smtp:
            with pytest.raises(SenderRefusedError) as refused:
                await smtp.mail(SENDER)
            assert refused.value.is_permanent
            assert (await smtp.mail(SENDER)).code == 250
            assert (await smtp.rcpt("ada@example.org")).code == 250
        assert "RSET" in server.client_lines()


async def test_bad_input_and_rcpt_before_mail_write_nothing() -> None:
    async with SMTPTestServer() as server:
        async with await anyio_smtp.connect(server.host, server.port) as smtp:
            before = len(server.client_lines())
            with pytest.raises(LocalProtocolError):
                await smtp.rcpt("ada@example.org")
            with pytest.raises(InvalidArgumentError):
                await smtp.mail("no-at-sign")
            with pytest.raises(InvalidArgumentError):
                await smtp.mail(SENDER, parameters=["BAD PARAMETER"])
            with pytest.raises(InvalidArgumentError):
                await smtp.mail("jörg@example.org")
            assert len(server.client_lines()) == before
            await smtp.noop()


async def test_a_non_ascii_domain_goes_in_a_labels() -> None:
    async with SMTPTestServer() as server:
        async with await anyio_smtp.connect(server.host, server.port) as smtp:
            await smtp.mail("me@bücher.example")
            await smtp.rcpt("you@bücher.example")
        assert "MAIL FROM:<me@xn--bcher-kva.example>" in server.client_lines()
        assert "RCPT TO:<you@xn--bcher-kva.example>" in server.client_lines()

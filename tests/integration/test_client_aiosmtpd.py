"""anyio_smtp against aiosmtpd (in a thread) on loopback, on asyncio and trio."""

from __future__ import annotations

import pytest

import anyio_smtp
from anyio_smtp import AuthenticationError, SessionClosedError

from .servers.aiosmtpd_server import AiosmtpdServer
from .servers.postfix import DEFAULT_USERS

ALICE = "alice@example.test"
BODY = b"Subject: hi\r\n\r\n.dot first\r\n.\r\nplain\r\nUTF-8: \xc3\xa9\r\n"


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_starttls_auth_send(aiosmtpd_starttls: AiosmtpdServer, mechanism: str) -> None:
    server = aiosmtpd_starttls
    before = len(server.messages)
    async with anyio_smtp.connect_starttls(
        server.host, server.port, ssl_context=server.client_ssl_context(), tls_hostname="localhost"
    ) as smtp:
        # aiosmtpd does not offer PIPELINING: the client must go step by step.
        assert "PIPELINING" not in smtp.capabilities
        await smtp.login(ALICE, DEFAULT_USERS[ALICE], mechanism=mechanism)
        result = await smtp.send_mail(ALICE, ["bob@example.test", "carol@example.test"], BODY)
    assert result.accepted == ("bob@example.test", "carol@example.test")
    message = server.messages[before]
    assert message.tls
    assert message.authenticated_as == ALICE
    assert message.mail_from == ALICE
    assert message.rcpt_tos == ("bob@example.test", "carol@example.test")
    assert "BODY=8BITMIME" in message.mail_options
    assert message.content == BODY


async def test_utf8_password_login(aiosmtpd_starttls: AiosmtpdServer) -> None:
    user = "jose@example.test"
    async with anyio_smtp.connect_starttls(
        aiosmtpd_starttls.host,
        aiosmtpd_starttls.port,
        ssl_context=aiosmtpd_starttls.client_ssl_context(),
        tls_hostname="127.0.0.1",
    ) as smtp:
        assert (await smtp.login(user, DEFAULT_USERS[user])).code == 235


async def test_wrong_password_closes_the_session(aiosmtpd_starttls: AiosmtpdServer) -> None:
    async with anyio_smtp.connect_starttls(
        aiosmtpd_starttls.host,
        aiosmtpd_starttls.port,
        ssl_context=aiosmtpd_starttls.client_ssl_context(),
        tls_hostname="localhost",
    ) as smtp:
        with pytest.raises(AuthenticationError) as caught:
            await smtp.login(ALICE, "not the password")
        assert caught.value.reply.code == 535
        assert "not the password" not in str(caught.value)
        assert smtp.closed
        with pytest.raises(SessionClosedError):
            await smtp.send_mail(ALICE, ["bob@example.test"], BODY)


async def test_implicit_tls_send(aiosmtpd_implicit_tls: AiosmtpdServer) -> None:
    server = aiosmtpd_implicit_tls
    before = len(server.messages)
    async with anyio_smtp.connect(
        server.host,
        server.port,
        tls=True,
        ssl_context=server.client_ssl_context(),
        tls_hostname="localhost",
    ) as smtp:
        assert smtp.tls
        await smtp.login(ALICE, DEFAULT_USERS[ALICE])
        await smtp.send_mail("", ["postmaster"], BODY)
    message = server.messages[before]
    assert message.mail_from == "<>"  # how aiosmtpd records the null reverse-path
    assert message.rcpt_tos == ("postmaster",)
    assert message.content == BODY


async def test_implicit_tls_refuses_an_untrusted_certificate(
    aiosmtpd_implicit_tls: AiosmtpdServer,
) -> None:
    with pytest.raises(anyio_smtp.TLSCertificateError):
        await anyio_smtp.connect(aiosmtpd_implicit_tls.host, aiosmtpd_implicit_tls.port, tls=True)


async def test_smtputf8_recipient(aiosmtpd_plain: AiosmtpdServer) -> None:
    before = len(aiosmtpd_plain.messages)
    async with anyio_smtp.connect(aiosmtpd_plain.host, aiosmtpd_plain.port) as smtp:
        await smtp.send_mail(ALICE, ["zoë@example.test"], b"Subject: x\r\n\r\nhi\r\n")
    message = aiosmtpd_plain.messages[before]
    assert message.smtp_utf8
    assert message.rcpt_tos == ("zoë@example.test",)

"""Every password mechanism against the real Postfix + Dovecot SASL, on asyncio and trio.

Dovecot here (``auth_mechanisms = plain login cram-md5 scram-sha-1
scram-sha-256``, passwords stored in clear) offers SCRAM without -PLUS:
Postfix passes no TLS channel binding to Dovecot.  Dovecot sends the SCRAM
server-final message in a 334 challenge, which the client answers with an
empty line before the 235.
"""

from __future__ import annotations

import logging
import uuid

import anyio
import pytest

import anyio_smtp
from anyio_smtp import AuthenticationError, SMTPClient
from anyio_smtp.auth import PREFERENCE

from .servers.postfix import PostfixInstance

ALICE = "alice@example.test"
JOSE = "jose@example.test"
PASSWORD_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256")


def submission(postfix: PostfixInstance) -> anyio_smtp.SessionOpener:
    return anyio_smtp.connect_starttls(
        postfix.host,
        postfix.submission_port,
        ssl_context=postfix.client_ssl_context(),
        tls_hostname="localhost",
    )


async def send_and_check(postfix: PostfixInstance, smtp: SMTPClient, user: str) -> None:
    """Send one message as ``user`` and wait until Postfix has delivered it."""
    mark = uuid.uuid4().hex
    message = (
        f"From: {user}\r\nTo: bob@example.test\r\nSubject: {mark}\r\n\r\nauthenticated\r\n"
    ).encode()
    result = await smtp.send_mail(user, ["bob@example.test"], message)
    assert result.reply.code == 250
    assert result.accepted == ("bob@example.test",)
    stored = await anyio.to_thread.run_sync(
        postfix.wait_for_message_containing, mark.encode(), 20.0
    )
    assert stored.body == b"authenticated\n"


def client_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = (
        record.getMessage().removeprefix(f"[{vars(record)['smtp_session']}] ")
        for record in caplog.records
        if record.name == "anyio_smtp"
    )
    return [message for message in messages if message.startswith(("C: ", "S: "))]


@pytest.mark.parametrize("user", [ALICE, JOSE])
@pytest.mark.parametrize("mechanism", PASSWORD_MECHANISMS)
async def test_each_mechanism_for_each_user(
    postfix: PostfixInstance, mechanism: str, user: str
) -> None:
    async with submission(postfix) as smtp:
        assert smtp.tls
        assert mechanism in smtp.capabilities.auth_mechanisms
        reply = await smtp.login(user, postfix.users[user], mechanism=mechanism)
        assert reply.code == 235
        assert smtp.authenticated
        await send_and_check(postfix, smtp, user)


async def test_auto_selection_picks_scram_sha_256(
    postfix: PostfixInstance, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="anyio_smtp"):
        async with submission(postfix) as smtp:
            offered = smtp.capabilities.auth_mechanisms
            assert {"SCRAM-SHA-1", "SCRAM-SHA-256"} <= offered
            # No channel binding through Postfix: Dovecot offers no -PLUS here.
            assert not any(name.endswith("-PLUS") for name in offered)
            assert next(name for name in PREFERENCE if name in offered) == "SCRAM-SHA-256"
            await smtp.login(JOSE, postfix.users[JOSE])
            assert smtp.authenticated
            await send_and_check(postfix, smtp, JOSE)
    lines = client_lines(caplog)
    start = lines.index("C: AUTH SCRAM-SHA-256 [redacted]")
    # Server-first and server-final both come as 334 challenges (Dovecot's way);
    # the client answers the second one with an empty line, then gets 235.
    assert lines[start + 1 : start + 6] == [
        "S: 334 [redacted]",
        "C: [redacted]",
        "S: 334 [redacted]",
        "C: [redacted]",
        "S: 235 2.7.0 Authentication successful",
    ]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
async def test_scram_with_a_wrong_password_is_refused(
    postfix: PostfixInstance, mechanism: str
) -> None:
    async with submission(postfix) as smtp:
        with pytest.raises(AuthenticationError) as caught:
            await smtp.login(ALICE, "not the password", mechanism=mechanism)
        assert caught.value.reply.code == 535
        assert caught.value.is_permanent
        assert "not the password" not in str(caught.value)
        assert smtp.closed

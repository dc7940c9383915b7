"""anyio_smtp against a real Postfix 3 with Dovecot SASL on loopback, on asyncio and trio."""

from __future__ import annotations

import uuid
from email.message import EmailMessage

import anyio
import pytest

import anyio_smtp
from anyio_smtp import (
    ExtensionNotSupportedError,
    InsecureAuthError,
    MessageTooLargeError,
    RecipientsRefusedError,
)

from .servers.postfix import DeliveredMessage, PostfixInstance

ALICE = "alice@example.test"

# Dot-leading lines, a lone dot, a bare LF and UTF-8 text: each must arrive unchanged.
TRICKY_BODY = (
    "First line.\r\n"
    ".A line that starts with a dot\r\n"
    ".\r\n"
    "..two dots\r\n"
    "bare LF follows\n"
    "UTF-8: naïve café, Ελληνικά, 日本語 ✓\r\n"
)


def marker() -> str:
    return uuid.uuid4().hex


def raw_message(mark: str, body: str = TRICKY_BODY, to: str = "bob@example.test") -> bytes:
    headers = (
        f"From: {ALICE}\r\nTo: {to}\r\nSubject: {mark}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return (headers + body).encode("utf-8")


async def delivered(postfix: PostfixInstance, mark: str) -> DeliveredMessage:
    return await anyio.to_thread.run_sync(postfix.wait_for_message_containing, mark.encode(), 20.0)


async def copies_of(postfix: PostfixInstance, mark: str, count: int) -> list[DeliveredMessage]:
    """Wait until Postfix has delivered ``count`` copies of a message (one per recipient)."""
    with anyio.fail_after(20):
        while True:  # delivery happens in Postfix's own processes: poll the Maildir
            found = [m for m in postfix.messages() if mark.encode() in m.data]
            if len(found) >= count:
                return found
            await anyio.sleep(0.05)


def expected_body(body: str) -> bytes:
    """The body as the Maildir stores it: LF line endings, bytes otherwise unchanged."""
    return body.replace("\r\n", "\n").encode("utf-8")


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5", None])
async def test_submission_starttls_auth_and_byte_identical_delivery(
    postfix: PostfixInstance, mechanism: str | None
) -> None:
    mark = marker()
    async with anyio_smtp.connect_starttls(
        postfix.host,
        postfix.submission_port,
        ssl_context=postfix.client_ssl_context(),
        tls_hostname="localhost",
    ) as smtp:
        assert smtp.tls
        assert "PIPELINING" in smtp.capabilities
        assert {"PLAIN", "LOGIN", "CRAM-MD5"} <= smtp.capabilities.auth_mechanisms
        reply = await smtp.login(ALICE, postfix.users[ALICE], mechanism=mechanism)
        assert reply.code == 235
        result = await smtp.send_mail(ALICE, ["bob@example.test"], raw_message(mark))
    assert result.reply.code == 250
    assert result.accepted == ("bob@example.test",)
    assert result.queue_id is not None
    message = await delivered(postfix, mark)
    assert message.body == expected_body(TRICKY_BODY)


async def test_utf8_password_over_implicit_tls(postfix: PostfixInstance) -> None:
    mark = marker()
    user = "jose@example.test"
    async with anyio_smtp.connect(
        postfix.host,
        postfix.smtps_port,
        tls=True,
        ssl_context=postfix.client_ssl_context(),
        tls_hostname="127.0.0.1",
    ) as smtp:
        assert smtp.tls
        assert smtp.tls_version
        await smtp.login(user, postfix.users[user], mechanism="PLAIN")
        result = await smtp.send_mail(user, ["carol@example.test"], raw_message(mark))
    assert result.reply.is_positive
    assert (await delivered(postfix, mark)).body == expected_body(TRICKY_BODY)


async def test_send_message_with_utf8_recipient_uses_smtputf8(postfix: PostfixInstance) -> None:
    mark = marker()
    message = EmailMessage()
    message["From"] = ALICE
    message["To"] = "Jürgen <jürgen@bücher.example>"
    message["Bcc"] = "hidden@example.test"
    message["Subject"] = mark
    message.set_content("Grüße aus anyio_smtp.\n.leading dot\n")
    async with anyio_smtp.connect_starttls(
        postfix.host,
        postfix.submission_port,
        ssl_context=postfix.client_ssl_context(),
        tls_hostname="localhost",
    ) as smtp:
        assert "SMTPUTF8" in smtp.capabilities
        await smtp.login(ALICE, postfix.users[ALICE])
        result = await smtp.send_message(message)
    assert set(result.accepted) == {"jürgen@bücher.example", "hidden@example.test"}
    # One Maildir copy per recipient; the header fields are the same in both.
    copies = await copies_of(postfix, mark, 2)
    stored = next(m for m in copies if "Delivered-To: jürgen@bücher.example".encode() in m.data)
    assert "jürgen@bücher.example".encode() in stored.headers
    own_fields = stored.headers.split(b"\nReceived:")[-1]  # what the client sent
    assert b"hidden@example.test" not in own_fields
    assert b"Bcc" not in stored.headers
    assert stored.parsed().get_content() == "Grüße aus anyio_smtp.\n.leading dot\n"


async def test_plain_port_without_auth_and_many_messages(postfix: PostfixInstance) -> None:
    marks = [marker() for _ in range(5)]
    async with anyio_smtp.connect(postfix.host, postfix.plain_port) as smtp:
        assert not smtp.tls
        for mark in marks:
            await smtp.send_mail("", [f"user{mark[:4]}@example.test"], raw_message(mark))
    for mark in marks:
        assert (await delivered(postfix, mark)).body == expected_body(TRICKY_BODY)


async def test_plain_upgrade_with_starttls_then_send(postfix: PostfixInstance) -> None:
    mark = marker()
    async with anyio_smtp.connect(postfix.host, postfix.plain_port) as smtp:
        with pytest.raises(InsecureAuthError):
            await smtp.login(ALICE, postfix.users[ALICE])
        await smtp.starttls(ssl_context=postfix.client_ssl_context(), tls_hostname="localhost")
        assert smtp.tls
        await smtp.send_mail(ALICE, ["dave@example.test"], raw_message(mark))
    await delivered(postfix, mark)


async def test_unauthenticated_submission_refuses_every_recipient(
    postfix: PostfixInstance,
) -> None:
    async with anyio_smtp.connect_starttls(
        postfix.host,
        postfix.submission_port,
        ssl_context=postfix.client_ssl_context(),
        tls_hostname="localhost",
    ) as smtp:
        with pytest.raises(RecipientsRefusedError) as caught:
            await smtp.send_mail(
                ALICE, ["x@example.test", "y@example.test"], b"Subject: no\r\n\r\n"
            )
        assert set(caught.value.rejected) == {"x@example.test", "y@example.test"}
        assert all(reply.code == 554 for reply in caught.value.rejected.values())
        assert caught.value.reply.enhanced_status == "5.7.1"
        assert caught.value.is_permanent
        # The session is still usable: authenticate and send.
        await smtp.login(ALICE, postfix.users[ALICE])
        mark = marker()
        await smtp.send_mail(ALICE, ["x@example.test"], raw_message(mark))
    await delivered(postfix, mark)


async def test_submission_offers_no_auth_before_tls(postfix: PostfixInstance) -> None:
    async with anyio_smtp.connect(
        postfix.host, postfix.submission_port, allow_insecure_auth=True
    ) as smtp:
        assert "STARTTLS" in smtp.capabilities
        assert "AUTH" not in smtp.capabilities
        with pytest.raises(ExtensionNotSupportedError) as caught:
            await smtp.login(ALICE, postfix.users[ALICE])
        assert caught.value.name == "AUTH"


async def test_message_over_the_size_limit_is_refused_before_mail(
    postfix: PostfixInstance,
) -> None:
    async with anyio_smtp.connect(postfix.host, postfix.plain_port) as smtp:
        limit = smtp.capabilities.size_limit
        assert limit is not None
        with pytest.raises(MessageTooLargeError) as caught:
            await smtp.send_mail(ALICE, ["bob@example.test"], b"x" * (limit + 1))
        assert caught.value.limit == limit
        assert await smtp.noop()


async def test_dsn_options_are_accepted(postfix: PostfixInstance) -> None:
    mark = marker()
    async with anyio_smtp.connect(postfix.host, postfix.plain_port) as smtp:
        assert "DSN" in smtp.capabilities
        result = await smtp.send_mail(
            ALICE,
            [
                "bob@example.test",
                anyio_smtp.Recipient("carol@example.test", notify=frozenset({"NEVER"})),
            ],
            raw_message(mark),
            dsn=anyio_smtp.DSN(
                ret="HDRS", envid=f"id-{mark}", notify=frozenset({"FAILURE"}), orcpt=True
            ),
        )
        assert result.accepted == ("bob@example.test", "carol@example.test")
        # Postfix 3.7 does not offer REQUIRETLS: asking for it is refused, never dropped.
        with pytest.raises(ExtensionNotSupportedError) as caught:
            await smtp.send_mail(ALICE, ["bob@example.test"], raw_message(mark), require_tls=True)
        assert caught.value.name == "REQUIRETLS"
    stored = await delivered(postfix, mark)
    assert stored.body == expected_body(TRICKY_BODY)

"""The public surface as a user meets it, for the type checkers only (never run).

``mypy --strict`` and pyright in strict mode check this file.  A line a type
checker must refuse carries an ignore comment; both checkers report an ignore
that suppresses nothing (mypy's ``warn_unused_ignores``, pyright's
``reportUnnecessaryTypeIgnoreComment``), so an API that stopped refusing it
fails the check.
"""

from __future__ import annotations

import functools
import ssl
from email.message import EmailMessage
from typing import assert_type

import anyio

import anyio_smtp
import anyio_smtp.testing
from anyio_smtp.auth import OAuthBearer, SASLMechanism, XOAuth2


def fetch_token() -> str:
    return "ya29.token"


async def fetch_token_async() -> str:
    return "ya29.token"


async def starttls_submission(ctx: ssl.SSLContext) -> None:
    opener = anyio_smtp.connect_starttls("smtp.example.com", 587, ssl_context=ctx)
    assert_type(opener, anyio_smtp.SessionOpener)
    async with opener as smtp:
        assert_type(smtp, anyio_smtp.SMTPClient)
        assert_type(await smtp.login("me@example.com", "secret"), anyio_smtp.Reply)
        result = await smtp.send_mail(
            "me@example.com", ["you@example.org"], b"Subject: hi\r\n\r\nhello\r\n"
        )
        assert_type(result, anyio_smtp.SendResult)
        assert_type(result.reply.code, int)
        assert_type(result.queue_id, str | None)
        assert_type(result.accepted, tuple[str, ...])
        for address, reply in result.rejected.items():
            assert_type(address, str)
            assert_type(reply, anyio_smtp.Reply)


async def implicit_tls_and_plain() -> None:
    async with anyio_smtp.connect("smtp.example.com", 465, tls=True) as smtp:
        assert_type(smtp.tls, bool)
        assert_type(smtp.tls_version, str | None)
        assert_type(smtp.capabilities, anyio_smtp.Capabilities)
        assert_type(smtp.state, anyio_smtp.SessionState)
    smtp = await anyio_smtp.connect(
        "127.0.0.1", 2525, timeout=anyio_smtp.Timeouts(connect=5, command=30)
    )
    try:
        await smtp.starttls(ssl_context=ssl.create_default_context())
        message = EmailMessage()
        message["From"] = "me@example.com"
        message["To"] = "you@example.org"
        assert_type(await smtp.send_message(message), anyio_smtp.SendResult)
        assert_type(await smtp.noop(), anyio_smtp.Reply)
        assert_type(await smtp.quit(), anyio_smtp.Reply)
    finally:
        await smtp.aclose()
    assert_type(smtp.closed, bool)


async def own_stream() -> None:
    stream = await anyio.connect_tcp("127.0.0.1", 2525)
    async with anyio_smtp.connect_stream(stream, tls_hostname="mail.example.com") as smtp:
        await smtp.send_mail(
            "",
            anyio_smtp.Recipient("b@example.org", notify={"NEVER"}),
            "Subject: bounce\r\n\r\n",
            dsn=anyio_smtp.DSN(ret="HDRS", envid="order-4711"),
            require_tls=True,
        )


async def lmtp() -> None:
    async with anyio_smtp.connect_lmtp("127.0.0.1", 24) as smtp:
        result = await smtp.send_mail("me@example.com", ["a@example.org", "b@example.org"], b"x")
        for address, reply in result.per_recipient.items():
            assert_type(address, str)
            assert_type(reply.is_permanent, bool)
    anyio_smtp.connect_lmtp("127.0.0.1", lmtp=True)  # type: ignore[call-arg]


# -- login: a password, or a mechanism object that carries the credentials ------------


async def logins(smtp: anyio_smtp.SMTPClient) -> None:
    await smtp.login("me@example.com", "secret")
    await smtp.login("me@example.com", "secret", mechanism="PLAIN")
    await smtp.login("me@example.com", "ya29.token", mechanism="XOAUTH2")
    await smtp.login("me@example.com", mechanism=XOAuth2("me@example.com", fetch_token))
    await smtp.login("me@example.com", mechanism=XOAuth2("me@example.com", "ya29.token"))
    mechanism: SASLMechanism = OAuthBearer("me@example.com", fetch_token_async, host="mx")
    await smtp.login("me@example.com", None, mechanism=mechanism)
    await smtp.login("me@example.com", "", mechanism=mechanism)

    # Refused at run time, so refused by the type checkers: a password is
    # required unless the mechanism is an object.
    await smtp.login("me@example.com")  # type: ignore[call-overload]
    await smtp.login("me@example.com", None)  # type: ignore[call-overload]
    await smtp.login("me@example.com", mechanism="PLAIN")  # type: ignore[call-overload]
    await smtp.login("me@example.com", None, mechanism="XOAUTH2")  # type: ignore[call-overload]


# -- the audit hook: anyio_smtp.audit after a plain "import anyio_smtp" -----------------


def audit(event: anyio_smtp.audit.AuditEvent) -> None:
    assert_type(event.name, str)
    if isinstance(event, anyio_smtp.audit.MessageAccepted):
        assert_type(event.reply, anyio_smtp.Reply)


async def audit_async(event: anyio_smtp.audit.AuditEvent) -> None:
    if isinstance(event, anyio_smtp.audit.SessionAborted):
        print(event)


async def with_audit(ctx: ssl.SSLContext) -> None:
    hook: anyio_smtp.audit.AuditHook = audit
    async with anyio_smtp.connect_starttls("smtp.example.com", ssl_context=ctx, audit=hook):
        pass
    async with anyio_smtp.connect("smtp.example.com", audit=audit_async):
        pass


# -- errors ------------------------------------------------------------------------------


async def errors(smtp: anyio_smtp.SMTPClient) -> None:
    try:
        await smtp.send_mail("me@example.com", "you@example.org", b"data\r\n")
    except anyio_smtp.RecipientsRefusedError as exc:
        for address, reply in exc.rejected.items():
            assert_type(address, str)
            assert_type(reply, anyio_smtp.Reply)
    except anyio_smtp.ReplyError as exc:
        assert_type(exc.reply, anyio_smtp.Reply)
        assert_type(exc.is_transient, bool)
    except anyio_smtp.SMTPError:
        pass


# -- the pool -----------------------------------------------------------------------------


async def logged_in_session() -> anyio_smtp.SMTPClient:
    smtp = await anyio_smtp.connect_starttls("smtp.example.com")
    await smtp.login("me@example.com", "secret")
    return smtp


async def pool(ctx: ssl.SSLContext) -> None:
    factory = functools.partial(anyio_smtp.connect_starttls, "smtp.example.com", ssl_context=ctx)
    async with anyio_smtp.SMTPPool(
        factory, max_connections=8, max_messages_per_connection=100
    ) as smtp_pool:
        assert_type(smtp_pool, anyio_smtp.SMTPPool)
        result = await smtp_pool.send_mail(
            "me@example.com", ["you@example.org"], b"x\r\n", require_tls=True
        )
        assert_type(result, anyio_smtp.SendResult)
        await smtp_pool.send_mail(
            "me@example.com",
            ["you@example.org"],
            b"x\r\n",
            requre_tls=True,  # type: ignore[call-arg]
        )
    async with anyio_smtp.SMTPPool(logged_in_session) as smtp_pool:
        await smtp_pool.send_message(EmailMessage())
    anyio_smtp.SMTPPool(anyio_smtp.connect)  # type: ignore[arg-type]


# -- the test tools -----------------------------------------------------------------------


async def test_tools(factory: anyio_smtp.testing.SMTPServerFactory) -> None:
    ca = anyio_smtp.testing.ThrowawayCA("localhost")
    assert_type(ca.client_context, ssl.SSLContext)
    server = await factory.start(
        anyio_smtp.testing.SMTPTestServer(starttls_context=ca.server_context)
    )
    server.fault("DATA", anyio_smtp.testing.Fault.close(after_bytes=10))
    server.fault("MAIL", anyio_smtp.testing.Fault.delay(0.5), times=2)
    server.fault("RCPT", "close")  # type: ignore[arg-type]
    assert_type(server.messages[0].recipients, tuple[str, ...])

"""The attack suite: downgrade, injection, forged certificates, smuggling, leaks.

Every case is a named test and, like every coroutine test here, runs on
asyncio and on trio.  Each one plays the attacker (a man in the middle or a
hostile server) and checks the promise the client makes: a typed error, the
session closed where it must be, and not one byte more on the wire than the
protocol allows -- above all no credential.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage, Message

import anyio
import pytest

import anyio_smtp
from anyio_smtp import (
    DSN,
    AuthenticationError,
    ExtensionNotSupportedError,
    InsecureAuthError,
    InvalidArgumentError,
    Recipient,
    RemoteProtocolError,
    ReplyError,
    SendResult,
    ServerDisconnectedError,
    ServiceUnavailableError,
    SessionClosedError,
    SessionState,
    SMTPClient,
    SMTPError,
    SMTPTimeoutError,
    StartTLSInjectionError,
    Timeouts,
    TLSCertificateError,
    TLSError,
)
from anyio_smtp._protocol.commands import Mail, Rcpt
from anyio_smtp.audit import AuditEvent, GreetingReceived, SessionAborted
from anyio_smtp.auth import MECHANISMS, Plain
from anyio_smtp.testing import SUPPORTED_AUTH_MECHANISMS, SMTPTestServer
from tests.client.scripted import Peer, scripted
from tests.client.test_failures import BOB, CLIENT, MESSAGE, SENDER, closes_quietly
from tests.client.test_starttls import AFTER_TLS_EHLO, STARTTLS_EHLO, after, refused_handshake
from tests.security.helpers import (
    CERTIFICATE_FAILURES,
    PASSWORD,
    SERVER_NAME,
    USERNAME,
    assert_no_application_data,
    assert_no_secret,
    assert_single_end_of_data,
    capture_all_logs,
    client_tls,
    exception_texts,
    record_texts,
    refused_certificate_context,
    secret_forms,
    server_tls,
    serving,
    tcp_scripted,
)
from tests.tls import server_context

SECRETS = secret_forms(USERNAME, PASSWORD)
EHLO_LINE = f"EHLO {CLIENT}\r\n".encode()
#: What a downgrading attacker shows the client: AUTH offered in clear text.
STRIPPED_EHLO = ("250-mx.test", "250-8BITMIME", "250 AUTH PLAIN LOGIN")


def assert_no_credentials(wire: bytes) -> None:
    """Neither AUTH nor MAIL nor any form of a credential is in ``wire``."""
    for forbidden in (b"AUTH", b"MAIL FROM", b"RCPT TO"):
        assert forbidden not in wire
    for form in SECRETS:
        assert form.encode() not in wire, f"{form!r} was written"


# -- STARTTLS stripped -----------------------------------------------------------------


async def strip_not_advertised(peer: Peer) -> None:
    await peer.greet(STRIPPED_EHLO)
    await closes_quietly(peer)


async def strip_refused_454(peer: Peer) -> None:
    await peer.greet(STARTTLS_EHLO)
    await peer.lone("STARTTLS")
    await peer.send("454 4.7.0 TLS not available due to temporary reason")
    await closes_quietly(peer)


async def strip_220_then_garbage(peer: Peer) -> None:
    await peer.greet(STARTTLS_EHLO)
    await peer.lone("STARTTLS")
    await peer.send("220 2.0.0 Ready to start TLS")
    hello = await peer.stream.receive()
    assert hello[:1] == b"\x16"  # the ClientHello
    # Plaintext where the ServerHello belongs: "carry on without TLS".
    await peer.send("250-mx.test", "250 AUTH PLAIN LOGIN")
    await peer.rest()


async def strip_220_then_close(peer: Peer) -> None:
    await peer.greet(STARTTLS_EHLO)
    await peer.lone("STARTTLS")
    await peer.send("220 2.0.0 Ready to start TLS")
    await peer.stream.receive()  # the ClientHello; then hang up


def wire_ends_after_ehlo(wire: bytes) -> None:
    assert wire == EHLO_LINE  # not even STARTTLS


def wire_ends_after_starttls(wire: bytes) -> None:
    assert wire == EHLO_LINE + b"STARTTLS\r\n"


def wire_is_a_bare_handshake(wire: bytes) -> None:
    assert wire.startswith(EHLO_LINE + b"STARTTLS\r\n")
    assert_no_application_data(after(wire, b"STARTTLS\r\n"))


@dataclass(frozen=True)
class Strip:
    script: Callable[[Peer], Awaitable[None]]
    error: type[SMTPError]
    wire: Callable[[bytes], None]


STRIPS = {
    "not-advertised": Strip(strip_not_advertised, ExtensionNotSupportedError, wire_ends_after_ehlo),
    "refused-454": Strip(strip_refused_454, ReplyError, wire_ends_after_starttls),
    "220-then-garbage": Strip(strip_220_then_garbage, TLSError, wire_is_a_bare_handshake),
    "220-then-close": Strip(strip_220_then_close, TLSError, wire_is_a_bare_handshake),
}


def check_strip_error(error: SMTPError, strip: Strip) -> None:
    assert type(error) is strip.error
    if isinstance(error, ExtensionNotSupportedError):
        assert error.name == "STARTTLS"
    if isinstance(error, ReplyError):
        assert error.command == "STARTTLS"
        assert error.reply.code == 454
        assert "454" in str(error)


@pytest.mark.parametrize("attack", list(STRIPS))
async def test_stripped_starttls_upgrade_fails_closed(attack: str) -> None:
    strip = STRIPS[attack]
    with capture_all_logs() as records:
        async with scripted(strip.script) as stream:
            smtp = await anyio_smtp.connect_stream(
                stream, ehlo_domain=CLIENT, tls_hostname=SERVER_NAME, timeout=5
            )
            with pytest.raises(SMTPError) as caught:
                await smtp.starttls(ssl_context=client_tls())
            check_strip_error(caught.value, strip)
            assert smtp.closed
            assert not smtp.tls
            assert stream.closed
            # An application that ignores the error gets nothing through.
            with pytest.raises(SessionClosedError):
                await smtp.login(USERNAME, PASSWORD)
            with pytest.raises(SessionClosedError):
                await smtp.send_mail(SENDER, [BOB], MESSAGE)
    wire = bytes(stream.sent)
    strip.wire(wire)
    assert_no_credentials(wire)
    assert_no_secret((text for r in records for text in record_texts(r)), SECRETS, "the logs")


@pytest.mark.parametrize("attack", list(STRIPS))
async def test_stripped_starttls_fails_connect_starttls(attack: str) -> None:
    strip = STRIPS[attack]
    async with tcp_scripted(strip.script) as server:
        with pytest.raises(SMTPError) as caught:
            await anyio_smtp.connect_starttls(
                "127.0.0.1",
                server.port,
                ssl_context=client_tls(),
                tls_hostname=SERVER_NAME,
                ehlo_domain=CLIENT,
                timeout=5,
            )
        check_strip_error(caught.value, strip)
    assert server.connections == 1  # no second, plaintext attempt
    strip.wire(server.sent)
    assert_no_credentials(server.sent)


# -- replies injected before the TLS handshake -----------------------------------------

INJECTIONS = {
    "fake-ehlo-reply": b"250-mx.test\r\n250 AUTH PLAIN LOGIN\r\n",
    "fake-auth-success": b"235 2.7.0 Authentication successful\r\n",
    "partial-line": b"250 mx.te",
    "lone-lf": b"\n",
    "many-lines": b"250-PIPELINING\r\n" * 100,
}


@pytest.mark.parametrize("injected", list(INJECTIONS))
async def test_bytes_pipelined_after_the_220_are_refused(injected: str) -> None:
    payload = INJECTIONS[injected]

    async def server(peer: Peer) -> None:
        await peer.greet(STARTTLS_EHLO)
        await peer.lone("STARTTLS")
        await peer.send_raw(b"220 2.0.0 Ready to start TLS\r\n" + payload)
        await closes_quietly(peer)

    async with scripted(server) as stream:
        smtp = await anyio_smtp.connect_stream(
            stream, ehlo_domain=CLIENT, tls_hostname=SERVER_NAME, timeout=5
        )
        with pytest.raises(StartTLSInjectionError) as caught:
            await smtp.starttls(ssl_context=client_tls())
        assert caught.value.byte_count == len(payload)
        assert f"{len(payload)} unexpected byte(s)" in str(caught.value)
        assert smtp.closed
        assert stream.closed
        with pytest.raises(SessionClosedError):
            await smtp.login(USERNAME, PASSWORD)
    # Not a ClientHello, not a command: nothing at all after STARTTLS.
    assert after(bytes(stream.sent), b"STARTTLS\r\n") == b""


async def test_a_220_sent_before_starttls_is_asked_for_is_refused() -> None:
    early = b"220 2.0.0 Ready to start TLS\r\n"

    async def server(peer: Peer) -> None:
        await peer.send("220 mx.test ESMTP")
        await peer.lone("EHLO ")
        # The attacker answers the STARTTLS the client has not sent yet.
        await peer.send_raw("".join(f"{line}\r\n" for line in STARTTLS_EHLO).encode() + early)
        await closes_quietly(peer)

    async with scripted(server) as stream:
        smtp = await anyio_smtp.connect_stream(
            stream, ehlo_domain=CLIENT, tls_hostname=SERVER_NAME, timeout=5
        )
        with pytest.raises(RemoteProtocolError) as caught:
            await smtp.starttls(ssl_context=client_tls())
        assert f"{len(early)} byte(s) no command was waiting for" in str(caught.value)
        assert smtp.closed
        assert stream.closed
    assert bytes(stream.sent) == EHLO_LINE  # STARTTLS itself was never sent


# -- certificates ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["valid", *CERTIFICATE_FAILURES])
@pytest.mark.parametrize("mode", ["implicit-tls", "starttls"])
async def test_certificate_is_verified(mode: str, kind: str) -> None:
    context = server_context(SERVER_NAME) if kind == "valid" else refused_certificate_context(kind)

    async def server(peer: Peer) -> None:
        if mode == "starttls":
            await peer.greet(STARTTLS_EHLO)
            await peer.lone("STARTTLS")
            await peer.send("220 2.0.0 Ready to start TLS")
        if kind != "valid":
            await refused_handshake(peer, context)
            return
        await peer.start_tls(context)
        if mode == "starttls":
            await peer.lone("EHLO ")
            await peer.send(*AFTER_TLS_EHLO)
        else:
            await peer.greet(AFTER_TLS_EHLO)
        await peer.quit()

    async with tcp_scripted(server) as listener:
        if mode == "starttls":
            opener = anyio_smtp.connect_starttls(
                "127.0.0.1",
                listener.port,
                ssl_context=client_tls(),
                tls_hostname=SERVER_NAME,
                ehlo_domain=CLIENT,
                timeout=5,
            )
        else:
            opener = anyio_smtp.connect(
                "127.0.0.1",
                listener.port,
                tls=True,
                ssl_context=client_tls(),
                tls_hostname=SERVER_NAME,
                ehlo_domain=CLIENT,
                timeout=5,
            )
        if kind == "valid":
            async with opener as smtp:
                assert smtp.tls
                assert smtp.tls_version is not None
        else:
            with pytest.raises(TLSCertificateError) as caught:
                await opener
            assert isinstance(caught.value, TLSError)
            assert re.search(CERTIFICATE_FAILURES[kind], str(caught.value)), str(caught.value)
    assert listener.connections == 1
    wire = listener.sent
    if mode == "starttls":
        assert wire.startswith(EHLO_LINE + b"STARTTLS\r\n")
        wire = after(wire, b"STARTTLS\r\n")
    if kind == "valid":
        # The check below is not vacuous: a real session fails it.
        with pytest.raises(AssertionError):
            assert_no_application_data(wire)
    else:
        assert_no_application_data(wire)


# -- SMTP smuggling --------------------------------------------------------------------

SMUGGLERS = {
    "lf-dot-lf": b"\n.\n",
    "cr-dot-cr": b"\r.\r",
    "lf-dot-crlf": b"\n.\r\n",
    "crlf-dot-lf": b"\r\n.\n",
    "cr-dot-crlf": b"\r.\r\n",
    "crlf-dot-crlf": b"\r\n.\r\n",
    "crlf-dot-nul-crlf": b"\r\n.\x00\r\n",
    "nul-crlf-dot-crlf": b"\x00\r\n.\r\n",
    "lf-dot-nul-lf": b"\n.\x00\n",
}
VICTIM = "victim@example.test"
SMUGGLED = (
    f"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<{VICTIM}>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil"
).encode()


def smuggling_body(sequence: bytes) -> bytes:
    return b"Subject: invoice\r\n\r\nhello" + sequence + SMUGGLED + sequence + b"QUIT\r\n"


def normalised(data: bytes) -> bytes:
    """CRLF for every line ending, and one at the end (an independent reference)."""
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def data_on_the_wire(written: bytes) -> bytes:
    """The message data in the bytes of one pipelined transaction."""
    commands, data = written.split(b"DATA\r\n", 1)
    assert commands.count(b"\r\n") == 2  # MAIL FROM and one RCPT TO before it
    return data


async def smuggle(smtp: SMTPClient, sequence: bytes, path: str) -> None:
    body = smuggling_body(sequence)
    if path == "send_mail":
        result = await smtp.send_mail(SENDER, [BOB], body)
    elif path == "send_mail-streamed":
        # One octet per chunk: every sequence is split at every place.
        result = await smtp.send_mail(SENDER, [BOB], [body[i : i + 1] for i in range(len(body))])
    else:
        message = Message()  # compat32 keeps the payload as it is
        message["From"] = SENDER
        message["To"] = BOB
        message.set_payload(body.decode("latin-1"))
        result = await smtp.send_message(message)
    assert result.accepted == (BOB,)


@pytest.mark.parametrize("path", ["send_mail", "send_mail-streamed", "send_message"])
@pytest.mark.parametrize("sequence", list(SMUGGLERS))
async def test_no_second_message_can_be_smuggled(sequence: str, path: str) -> None:
    server = SMTPTestServer(transcript_data=False)
    async with serving(server) as stream:
        smtp = await anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, timeout=5)
        before = len(stream.sent)
        await smuggle(smtp, SMUGGLERS[sequence], path)
        written = bytes(stream.sent[before:])
        # The server saw one transaction, and nothing it could answer twice.
        assert (await smtp.noop()).code == 250
        await smtp.aclose()
    assert_single_end_of_data(data_on_the_wire(written))
    assert len(server.messages) == 1
    (message,) = server.messages
    assert message.recipients == (BOB,)
    assert server.bare_line_ending_violations == 0
    if path.startswith("send_mail"):
        assert message.data == normalised(smuggling_body(SMUGGLERS[sequence]))
    mail_commands = [line for line in server.client_lines() if line.startswith("MAIL FROM")]
    assert len(mail_commands) == 1
    assert mail_commands[0].startswith(f"MAIL FROM:<{SENDER}>")


@pytest.mark.parametrize("sequence", list(SMUGGLERS))
async def test_no_message_can_be_smuggled_in_a_pipelined_batch(sequence: str) -> None:
    # In a batch the data of one message shares a write with the next
    # message's MAIL, RCPT and DATA: the place a smuggled end of data would bite.
    bodies = [smuggling_body(SMUGGLERS[sequence]) + str(n).encode() for n in range(3)]
    server = SMTPTestServer(transcript_data=False)
    async with serving(server) as stream:
        smtp = await anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, timeout=5)
        outcomes = [
            outcome async for outcome in smtp.send_many((SENDER, [BOB], body) for body in bodies)
        ]
        assert (await smtp.noop()).code == 250
        await smtp.aclose()
    assert [type(outcome) for outcome in outcomes] == [SendResult] * 3
    assert [message.data for message in server.messages] == [normalised(b) for b in bodies]
    assert all(message.recipients == (BOB,) for message in server.messages)
    assert server.bare_line_ending_violations == 0
    mail_commands = [line for line in server.client_lines() if line.startswith("MAIL FROM")]
    assert len(mail_commands) == 3
    assert all(line.startswith(f"MAIL FROM:<{SENDER}>") for line in mail_commands)


async def test_no_message_can_be_smuggled_through_a_header_field() -> None:
    message = Message()
    message["From"] = SENDER
    message["To"] = BOB
    # compat32 lets line breaks through into a header field value (as long as
    # no line looks like a header field of its own).
    message["X-Note"] = (
        f"a\r\n.\r\nMAIL FROM:<evil@attacker.test>\r\nRCPT TO:<{VICTIM}>\r\nDATA\r\n."
    )
    message.set_payload("hello\n")
    server = SMTPTestServer(transcript_data=False)
    async with serving(server) as stream:
        smtp = await anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, timeout=5)
        before = len(stream.sent)
        await smtp.send_message(message)
        written = bytes(stream.sent[before:])
        assert (await smtp.noop()).code == 250
        await smtp.aclose()
    assert_single_end_of_data(data_on_the_wire(written))
    assert [m.recipients for m in server.messages] == [(BOB,)]


# -- control characters in every argument ----------------------------------------------

CONTROLS = {
    "CR": "\r",
    "LF": "\n",
    "CRLF": "\r\n",
    "NUL": "\x00",
    "TAB": "\t",
    "ESC": "\x1b",
    "DEL": "\x7f",
    "NEL": "\x85",
}


def spoiled(value: str, control: str) -> str:
    """``value`` with ``control`` inside it."""
    return value[:3] + control + value[3:]


def an_email(sender: str = SENDER, to: str = BOB) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "hello"
    message.set_content("Hello.\n")
    return message


Call = Callable[[SMTPClient, str], Awaitable[object]]


async def _send_mail_sender(smtp: SMTPClient, value: str) -> object:
    return await smtp.send_mail(value, [BOB], MESSAGE)


async def _send_mail_recipient(smtp: SMTPClient, value: str) -> object:
    return await smtp.send_mail(SENDER, [value], MESSAGE)


async def _send_mail_second_recipient(smtp: SMTPClient, value: str) -> object:
    return await smtp.send_mail(SENDER, [BOB, value], MESSAGE)


async def _send_mail_recipient_str(smtp: SMTPClient, value: str) -> object:
    return await smtp.send_mail(SENDER, value, MESSAGE)


async def _send_message_sender(smtp: SMTPClient, value: str) -> object:
    return await smtp.send_message(an_email(), sender=value)


async def _send_message_recipient(smtp: SMTPClient, value: str) -> object:
    return await smtp.send_message(an_email(), recipients=[value])


async def _recipient_address(smtp: SMTPClient, value: str) -> object:
    return await smtp.send_mail(SENDER, [Recipient(value)], MESSAGE)


async def _recipient_orcpt(smtp: SMTPClient, value: str) -> object:
    return await smtp.send_mail(SENDER, [Recipient(BOB, orcpt=value)], MESSAGE)


async def _recipient_notify(smtp: SMTPClient, value: str) -> object:
    return await smtp.send_mail(SENDER, [Recipient(BOB, notify={value})], MESSAGE)


async def _dsn_envid(smtp: SMTPClient, value: str) -> object:
    return await smtp.send_mail(SENDER, [BOB], MESSAGE, dsn=DSN(envid=value))


async def _dsn_notify(smtp: SMTPClient, value: str) -> object:
    return await smtp.send_mail(SENDER, [BOB], MESSAGE, dsn=DSN(notify={value}))


async def _login_username(smtp: SMTPClient, value: str) -> object:
    return await smtp.login(value, PASSWORD)


async def _login_password(smtp: SMTPClient, value: str) -> object:
    return await smtp.login(USERNAME, value)


async def _login_mechanism(smtp: SMTPClient, value: str) -> object:
    return await smtp.login(USERNAME, PASSWORD, mechanism=value)


async def _starttls_hostname(smtp: SMTPClient, value: str) -> object:
    await smtp.starttls(ssl_context=client_tls(), tls_hostname=value)
    return smtp.tls


#: Each argument: the call taking it, a good value, and whether it is a secret.
ARGUMENTS: dict[str, tuple[Call, str, bool]] = {
    "send_mail-sender": (_send_mail_sender, SENDER, False),
    "send_mail-recipient": (_send_mail_recipient, BOB, False),
    "send_mail-second-recipient": (_send_mail_second_recipient, BOB, False),
    "send_mail-recipient-str": (_send_mail_recipient_str, BOB, False),
    "send_message-sender": (_send_message_sender, SENDER, False),
    "send_message-recipient": (_send_message_recipient, BOB, False),
    "Recipient-address": (_recipient_address, BOB, False),
    "Recipient-orcpt": (_recipient_orcpt, BOB, False),
    "Recipient-notify": (_recipient_notify, "SUCCESS", False),
    "DSN-envid": (_dsn_envid, "envelope-0001", False),
    "DSN-notify": (_dsn_notify, "FAILURE", False),
    "login-username": (_login_username, USERNAME, True),
    "login-password": (_login_password, PASSWORD, True),
    "login-mechanism": (_login_mechanism, "PLAIN", False),
    "starttls-tls_hostname": (_starttls_hostname, SERVER_NAME, False),
}


def a_server() -> SMTPTestServer:
    """A server offering everything the arguments above need, without TLS first."""
    return SMTPTestServer(
        extensions=[
            "PIPELINING",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "DSN",
            "STARTTLS",
            "AUTH CRAM-MD5 PLAIN LOGIN",
        ],
        starttls_context=server_tls(),
        users={USERNAME: PASSWORD},
        auth_require_tls=False,
        transcript_data=False,
    )


def check_refusal(error: InvalidArgumentError, value: str, secret: bool) -> None:
    assert isinstance(error, ValueError)
    text = str(error)
    # The message itself can not carry a line break into a log.
    assert not re.search(r"[\x00-\x1f\x7f-\x9f]", text), text
    if secret:
        assert value not in text
        assert_no_secret(exception_texts(error), SECRETS, "the error")


@pytest.mark.parametrize("control", list(CONTROLS))
@pytest.mark.parametrize("argument", list(ARGUMENTS))
async def test_control_characters_in_arguments_are_refused_before_any_byte(
    argument: str, control: str
) -> None:
    call, good, secret = ARGUMENTS[argument]
    bad = spoiled(good, CONTROLS[control])
    server = a_server()
    async with serving(server) as stream:
        smtp = await anyio_smtp.connect_stream(
            stream, ehlo_domain=CLIENT, allow_insecure_auth=True, timeout=5
        )
        written = len(stream.sent)
        with pytest.raises(InvalidArgumentError) as caught:
            await call(smtp, bad)
        check_refusal(caught.value, bad, secret)
        assert len(stream.sent) == written
        assert not smtp.closed
        assert smtp.state is SessionState.READY
        # The session is still usable: the same call with a good value works.
        await call(smtp, good)
        if argument.startswith("login"):
            assert smtp.authenticated
        elif argument.startswith("starttls"):
            assert smtp.tls
        await smtp.aclose()
    assert not any(CONTROLS[control] in line for line in server.client_lines())
    assert len(server.messages) == (0 if argument.startswith(("login", "starttls")) else 1)
    assert server.session_errors == []


@pytest.mark.parametrize("control", list(CONTROLS))
async def test_control_characters_in_the_ehlo_domain_are_refused_before_any_byte(
    control: str,
) -> None:
    server = a_server()
    async with serving(server) as stream:
        with pytest.raises(InvalidArgumentError) as caught:
            anyio_smtp.connect_stream(stream, ehlo_domain=spoiled(CLIENT, CONTROLS[control]))
        check_refusal(caught.value, CLIENT, False)
        assert stream.sent == b""
        assert not stream.closed
        # The connection is untouched and still good for a session.
        async with anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, timeout=5) as smtp:
            assert (await smtp.noop()).code == 250
    assert server.client_lines()[0] == f"EHLO {CLIENT}"


async def test_a_header_field_with_an_embedded_header_is_a_typed_refusal() -> None:
    message = Message()
    message["From"] = SENDER
    message["To"] = BOB
    message["X-Note"] = "a\r\nBcc: victim@example.test"  # compat32 accepts it as it is
    message.set_payload("hello\n")
    server = a_server()
    async with serving(server) as stream:
        smtp = await anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, timeout=5)
        written = len(stream.sent)
        with pytest.raises(InvalidArgumentError):
            await smtp.send_message(message)
        assert len(stream.sent) == written
        assert not smtp.closed
        assert (await smtp.send_message(an_email())).accepted == (BOB,)
        await smtp.aclose()
    assert len(server.messages) == 1


@pytest.mark.parametrize("control", list(CONTROLS))
@pytest.mark.parametrize("place", ["keyword", "value"])
@pytest.mark.parametrize("command", ["MAIL", "RCPT"])
def test_control_characters_in_esmtp_parameters_are_refused(
    command: str, place: str, control: str
) -> None:
    character = CONTROLS[control]
    parameter = f"NO{character}TIFY=NEVER" if place == "keyword" else f"NOTIFY=NE{character}VER"
    build = Mail if command == "MAIL" else Rcpt
    with pytest.raises(InvalidArgumentError):
        build(SENDER, (parameter,))


# -- AUTH without TLS ------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["chosen", *sorted(MECHANISMS), "instance"])
async def test_auth_on_a_plaintext_session_is_refused_before_any_byte(mechanism: str) -> None:
    # The server offers AUTH in clear text, as a downgrading attacker would.
    chosen: str | Plain | None = mechanism
    if mechanism == "instance":
        chosen = Plain(USERNAME, PASSWORD)
    elif mechanism == "chosen":
        chosen = None
    server = SMTPTestServer(users={USERNAME: PASSWORD}, auth_require_tls=False)
    async with serving(server) as stream:
        smtp = await anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, timeout=5)
        assert smtp.capabilities.auth_mechanisms
        written = len(stream.sent)
        with pytest.raises(InsecureAuthError):
            await smtp.login(USERNAME, PASSWORD, mechanism=chosen)
        assert len(stream.sent) == written
        assert not smtp.closed
        assert not smtp.authenticated
        result = await smtp.send_mail(SENDER, [BOB], MESSAGE)
        assert result.accepted == (BOB,)
        await smtp.aclose()
    assert not any(line.startswith("AUTH") for line in server.client_lines())


# -- Bcc and Resent-Bcc ----------------------------------------------------------------

HIDDEN = ("hidden-one@example.test", "hidden-two@example.test")


def bcc_plain() -> tuple[Message, tuple[str, ...] | None]:
    message = an_email()
    message["Cc"] = "carol@example.test"
    message["Bcc"] = f"{HIDDEN[0]}, Someone <{HIDDEN[1]}>"
    return message, None


def bcc_several_fields() -> tuple[Message, tuple[str, ...] | None]:
    message = Message()
    message["From"] = SENDER
    message["To"] = BOB
    message["BCC"] = HIDDEN[0]
    message["bcc"] = HIDDEN[1]
    message.set_payload("Hello.\n")
    return message, None


def resent_bcc() -> tuple[Message, tuple[str, ...] | None]:
    message = an_email()
    message["Bcc"] = "original-hidden@example.test"
    message["Resent-Date"] = "Mon, 1 Jan 2024 00:00:00 +0000"
    message["Resent-From"] = "resender@example.test"
    message["Resent-To"] = "carol@example.test"
    message["Resent-Bcc"] = ", ".join(HIDDEN)
    return message, None


def resent_bcc_without_a_resent_block() -> tuple[Message, tuple[str, ...] | None]:
    message = an_email()
    message["Resent-Bcc"] = ", ".join(HIDDEN)
    return message, None


def bcc_with_overridden_recipients() -> tuple[Message, tuple[str, ...] | None]:
    message = an_email()
    message["Bcc"] = ", ".join(HIDDEN)
    return message, (BOB, *HIDDEN)


BCC_CASES = {
    "bcc": bcc_plain,
    "bcc-several-fields": bcc_several_fields,
    "resent-bcc": resent_bcc,
    "resent-bcc-without-resent-block": resent_bcc_without_a_resent_block,
    "bcc-with-recipients-override": bcc_with_overridden_recipients,
}


@pytest.mark.parametrize("case", list(BCC_CASES))
async def test_bcc_is_never_on_the_wire(case: str) -> None:
    message, recipients = BCC_CASES[case]()
    server = SMTPTestServer()
    async with serving(server) as stream:
        smtp = await anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, timeout=5)
        result = await smtp.send_message(message, recipients=recipients)
        await smtp.aclose()
    wire = bytes(stream.sent)
    assert b"bcc" not in wire.lower()
    for hidden in HIDDEN:
        # Blind recipients get the message (RCPT TO) and appear nowhere else.
        if case != "resent-bcc-without-resent-block":
            assert hidden in result.accepted
            assert wire.count(hidden.encode()) == 1
            assert f"RCPT TO:<{hidden}>".encode() in wire
        else:
            assert hidden.encode() not in wire
    assert b"original-hidden" not in wire
    (received,) = server.messages
    assert b"bcc" not in received.raw.lower()
    assert "Bcc" in message or "Resent-Bcc" in message  # the caller's message is unchanged


# -- credentials in logs, reprs and errors ---------------------------------------------


@dataclass
class Seen:
    """What a scenario exposed to the application, to be searched for secrets.

    :ivar events: what the session gave its audit hook
    """

    errors: list[BaseException] = field(default_factory=list)
    objects: list[object] = field(default_factory=list)
    events: list[AuditEvent] = field(default_factory=list)

    def caught(self, error: BaseException) -> None:
        self.errors.append(error)


Scenario = Callable[[Seen], Awaitable[None]]
#: A plaintext server offering every mechanism the client knows.
ALL_AUTH_EHLO = ("250-mx.test", "250 AUTH " + " ".join(sorted(MECHANISMS)))


async def tls_session(seen: Seen, server: SMTPTestServer, mechanism: str, *, refused: bool) -> None:
    async with serving(server) as stream:
        smtp = await anyio_smtp.connect_stream(
            stream,
            ehlo_domain=CLIENT,
            tls_hostname=SERVER_NAME,
            timeout=5,
            audit=seen.events.append,
        )
        seen.objects.append(smtp)
        await smtp.starttls(ssl_context=client_tls())
        if refused:
            with pytest.raises(AuthenticationError) as caught:
                await smtp.login(USERNAME, PASSWORD, mechanism=mechanism)
            seen.caught(caught.value)
            with pytest.raises(SessionClosedError) as closed:
                await smtp.send_mail(SENDER, [BOB], MESSAGE)
            seen.caught(closed.value)
            return
        seen.objects.append(await smtp.login(USERNAME, PASSWORD, mechanism=mechanism))
        seen.objects += [smtp.capabilities, await smtp.send_mail(SENDER, [BOB], MESSAGE)]
        seen.objects.append(await smtp.quit())


def success(mechanism: str) -> Scenario:
    async def scenario(seen: Seen) -> None:
        server = SMTPTestServer(
            starttls_context=server_context(SERVER_NAME),
            users={USERNAME: PASSWORD},
            auth_mechanisms=[mechanism],
        )
        await tls_session(seen, server, mechanism, refused=False)
        assert len(server.messages) == 1

    return scenario


def wrong_password(mechanism: str) -> Scenario:
    async def scenario(seen: Seen) -> None:
        server = SMTPTestServer(
            starttls_context=server_context(SERVER_NAME),
            users={USERNAME: "a-different-password"},
            auth_mechanisms=[mechanism],
        )
        await tls_session(seen, server, mechanism, refused=True)
        assert [type(error) for error in seen.errors] == [AuthenticationError, SessionClosedError]

    return scenario


def failed_upgrade(make_server: Callable[[], SMTPTestServer], error: type[SMTPError]) -> Scenario:
    async def scenario(seen: Seen) -> None:
        async with serving(make_server()) as stream:
            smtp = await anyio_smtp.connect_stream(
                stream,
                ehlo_domain=CLIENT,
                tls_hostname=SERVER_NAME,
                timeout=5,
                audit=seen.events.append,
            )
            seen.objects.append(smtp)
            with pytest.raises(error) as caught:
                await smtp.starttls(ssl_context=client_tls())
            seen.caught(caught.value)
            with pytest.raises(SessionClosedError) as closed:
                await smtp.login(USERNAME, PASSWORD)
            seen.caught(closed.value)

    return scenario


def plaintext_auth(
    serve_auth: Callable[[Peer], Awaitable[None]],
    error: type[SMTPError],
    mechanism: str = "PLAIN",
    password: str = PASSWORD,
) -> Scenario:
    """AUTH over a plaintext session (opted in) against a scripted server."""

    async def scenario(seen: Seen) -> None:
        async def server(peer: Peer) -> None:
            await peer.greet(ALL_AUTH_EHLO)
            await serve_auth(peer)

        async with scripted(server) as stream:
            smtp = await anyio_smtp.connect_stream(
                stream,
                ehlo_domain=CLIENT,
                allow_insecure_auth=error is not InsecureAuthError,
                timeout=Timeouts.uniform(5).replace(command=0.2),
                audit=seen.events.append,
            )
            seen.objects.append(smtp)
            with pytest.raises(error) as caught:
                await smtp.login(USERNAME, password, mechanism=mechanism)
            seen.caught(caught.value)
            await smtp.aclose()

    return scenario


async def auth_stalls(peer: Peer) -> None:
    await peer.expect("AUTH PLAIN ")
    await peer.rest()


async def auth_hangs_up(peer: Peer) -> None:
    await peer.expect("AUTH PLAIN ")


async def auth_421(peer: Peer) -> None:
    await peer.expect("AUTH PLAIN ")
    await peer.send("421 4.7.0 Too many failed attempts, closing")
    await peer.rest()


async def auth_garbage_challenge(peer: Peer) -> None:
    await peer.lone("AUTH LOGIN")
    await peer.send("334 this is not base64!")
    await peer.rest()


async def scram_wrong_nonce(peer: Peer) -> None:
    await peer.expect("AUTH SCRAM-SHA-256 ")
    server_first = b"r=not-the-client-nonce,s=c2FsdA==,i=4096"
    await peer.send("334 " + base64.b64encode(server_first).decode())
    await peer.rest()


async def xoauth2_error_echoing_the_token(peer: Peer) -> None:
    await peer.expect("AUTH XOAUTH2 ")
    # A careless server puts the token it refused into its error details.
    details = json.dumps({"status": "401", "scope": PASSWORD}).encode()
    await peer.send("334 " + base64.b64encode(details).decode())
    assert await peer.lone("") == ""
    await peer.send("535 5.7.8 Username and Password not accepted")
    await peer.rest()


async def no_auth_expected(peer: Peer) -> None:
    await peer.quit()


async def cancelled_during_auth(seen: Seen) -> None:
    reached = anyio.Event()

    async def server(peer: Peer) -> None:
        await peer.greet(ALL_AUTH_EHLO)
        await peer.expect("AUTH PLAIN ")
        reached.set()
        await peer.rest()

    async with scripted(server) as stream:
        smtp = await anyio_smtp.connect_stream(
            stream,
            ehlo_domain=CLIENT,
            allow_insecure_auth=True,
            timeout=5,
            audit=seen.events.append,
        )
        seen.objects.append(smtp)
        async with anyio.create_task_group() as group:

            async def login() -> None:
                await smtp.login(USERNAME, PASSWORD, mechanism="PLAIN")

            group.start_soon(login)
            await reached.wait()
            group.cancel_scope.cancel()
        assert smtp.closed
        with pytest.raises(SessionClosedError) as closed:
            await smtp.noop()
        seen.caught(closed.value)


SCENARIOS: dict[str, Scenario] = {
    **{f"success-{name}": success(name) for name in SUPPORTED_AUTH_MECHANISMS},
    **{f"wrong-password-{name}": wrong_password(name) for name in SUPPORTED_AUTH_MECHANISMS},
    "starttls-not-offered": failed_upgrade(SMTPTestServer, ExtensionNotSupportedError),
    "certificate-refused": failed_upgrade(
        lambda: SMTPTestServer(starttls_context=refused_certificate_context("wrong-host-name")),
        TLSCertificateError,
    ),
    "insecure-auth": plaintext_auth(no_auth_expected, InsecureAuthError),
    "control-character-in-password": plaintext_auth(
        no_auth_expected, InvalidArgumentError, password=PASSWORD + "\r\nQUIT"
    ),
    "timeout-during-auth": plaintext_auth(auth_stalls, SMTPTimeoutError),
    "disconnect-during-auth": plaintext_auth(auth_hangs_up, ServerDisconnectedError),
    "421-during-auth": plaintext_auth(auth_421, ServiceUnavailableError),
    "garbage-challenge": plaintext_auth(auth_garbage_challenge, RemoteProtocolError, "LOGIN"),
    "scram-server-fails-its-check": plaintext_auth(
        scram_wrong_nonce, AuthenticationError, "SCRAM-SHA-256"
    ),
    "xoauth2-error-echoing-the-token": plaintext_auth(
        xoauth2_error_echoing_the_token, AuthenticationError, "XOAUTH2"
    ),
    "cancelled-during-auth": cancelled_during_auth,
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_no_credential_in_any_log_repr_or_error(scenario: str) -> None:
    seen = Seen()
    with capture_all_logs() as records:
        await SCENARIOS[scenario](seen)
    # The capture works: the library's debug transcript is in it.
    assert any(
        r.name == "anyio_smtp" and r.getMessage() == f"[{vars(r)['smtp_session']}] C: EHLO {CLIENT}"
        for r in records
    )
    assert seen.errors or scenario.startswith("success")
    assert_no_secret((text for r in records for text in record_texts(r)), SECRETS, "a log record")
    for error in seen.errors:
        assert_no_secret(exception_texts(error), SECRETS, f"a {type(error).__name__}")
    for thing in seen.objects:
        assert_no_secret((repr(thing), str(thing)), SECRETS, f"a {type(thing).__name__}")
    # The audit hook saw the session, and no credential either.
    assert any(isinstance(event, GreetingReceived) for event in seen.events)
    if seen.errors and not scenario.startswith(("insecure", "control")):
        assert any(isinstance(event, SessionAborted) for event in seen.events)
    for event in seen.events:
        assert_no_secret((repr(event), str(event)), SECRETS, f"a {type(event).__name__} event")

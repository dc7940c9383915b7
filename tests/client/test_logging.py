"""The debug transcript: useful lines are logged, secrets and message content never are."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import traceback
from collections import defaultdict

import anyio
import pytest

import anyio_smtp
from anyio_smtp import AuthenticationError
from anyio_smtp.auth import CramMD5, Login, Plain
from anyio_smtp.testing import SMTPTestServer
from tests.client.scripted import Peer, scripted

CLIENT = "client.test"
SENDER = "alice@example.test"
RECIPIENT = "bob@example.test"
USERNAME = "sasl-user-4821"
PASSWORD = "Pa55-w0rd-Secret!"
MARKER = "BODY-MARKER-93be1f"
MESSAGE = f"Subject: report\r\n\r\n{MARKER}\r\n.{MARKER} on a dotted line\r\n".encode()
#: What the client writes after 354 (dot-stuffed, with the terminator).
ENCODED = f"Subject: report\r\n\r\n{MARKER}\r\n..{MARKER} on a dotted line\r\n.\r\n".encode()
CHALLENGE = b"<4821.1700000000@mx.test>"
DIGEST = hmac.new(PASSWORD.encode(), CHALLENGE, hashlib.md5).hexdigest()
EHLO = (
    "250-mx.test",
    "250-PIPELINING",
    "250-8BITMIME",
    "250-AUTH CRAM-MD5 PLAIN LOGIN",
    "250 ENHANCEDSTATUSCODES",
)
MECHANISMS = pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])


def b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode("ascii")


#: Every form in which a credential or the message could leak.
SECRETS = (
    PASSWORD,
    USERNAME,
    b64(PASSWORD),
    b64(USERNAME),
    b64("\0" + USERNAME + "\0" + PASSWORD),
    b64(f"{USERNAME} {DIGEST}"),
    DIGEST,
    MARKER,
)


async def serve_auth(peer: Peer, mechanism: str, final: str) -> None:
    line = await peer.lone("AUTH ")
    if mechanism == "PLAIN":
        assert line == "AUTH PLAIN " + b64("\0" + USERNAME + "\0" + PASSWORD)
    elif mechanism == "LOGIN":
        assert line == "AUTH LOGIN"
        await peer.send("334 VXNlcm5hbWU6")
        assert await peer.lone("") == b64(USERNAME)
        await peer.send("334 UGFzc3dvcmQ6")
        assert await peer.lone("") == b64(PASSWORD)
    else:
        assert line == "AUTH CRAM-MD5"
        await peer.send("334 " + base64.b64encode(CHALLENGE).decode())
        assert await peer.lone("") == b64(f"{USERNAME} {DIGEST}")
    await peer.send(final)


def text(record: logging.LogRecord) -> str:
    """A record's message without its session prefix (``[s3] ``)."""
    prefix = f"[{vars(record)['smtp_session']}] "
    message = record.getMessage()
    assert message.startswith(prefix)
    return message.removeprefix(prefix)


def transcript(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [text(record) for record in caplog.records if record.name == "anyio_smtp"]


def assert_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    """No record of any logger shows a secret, formatted or in its raw parts."""
    assert caplog.records
    for record in caplog.records:
        texts = (record.getMessage(), str(record.msg), repr(record.args))
        for text in texts:
            for secret in SECRETS:
                assert secret not in text, f"{secret!r} leaked in {record.name}: {text!r}"


@MECHANISMS
async def test_transcript_shows_the_session_but_no_secret(
    mechanism: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="anyio_smtp")

    async def server(peer: Peer) -> None:
        await peer.greet(EHLO)
        await serve_auth(peer, mechanism, "235 2.7.0 Authentication successful")
        for command in (f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{RECIPIENT}>", "DATA"):
            assert await peer.line() == command
        await peer.send("250 2.1.0 Ok", "250 2.1.5 Ok", "354 go ahead")
        assert await peer.data() == ENCODED
        await peer.send("250 2.0.0 Ok: queued as 4ABC123XYZ")
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, allow_insecure_auth=True) as smtp,
    ):
        await smtp.login(USERNAME, PASSWORD, mechanism=mechanism)
        await smtp.send_mail(SENDER, [RECIPIENT], MESSAGE)
        for text in (repr(smtp), str(smtp)):
            assert PASSWORD not in text
            assert USERNAME not in text

    lines = transcript(caplog)
    assert "S: 220 mx.test ESMTP ready" in lines
    assert f"C: EHLO {CLIENT}" in lines
    assert "S: 250-AUTH CRAM-MD5 PLAIN LOGIN" in lines
    assert f"C: MAIL FROM:<{SENDER}>" in lines
    assert f"C: RCPT TO:<{RECIPIENT}>" in lines
    assert "C: DATA" in lines
    assert "S: 354 go ahead" in lines
    assert f"C: [message data, {len(ENCODED)} octets]" in lines
    assert "S: 250 2.0.0 Ok: queued as 4ABC123XYZ" in lines
    assert "S: 235 2.7.0 Authentication successful" in lines
    assert "C: QUIT" in lines
    assert "S: 221 2.0.0 Bye" in lines
    auth = [line for line in lines if "AUTH" in line and line.startswith("C: ")]
    if mechanism == "PLAIN":
        assert auth == ["C: AUTH PLAIN [redacted]"]
        assert "S: 334 [redacted]" not in lines
    elif mechanism == "LOGIN":
        assert auth == ["C: AUTH LOGIN"]
        assert lines.count("S: 334 [redacted]") == 2
        assert lines.count("C: [redacted]") == 2
    else:
        assert auth == ["C: AUTH CRAM-MD5"]
        assert lines.count("S: 334 [redacted]") == 1
        assert lines.count("C: [redacted]") == 1
    assert all(
        record.levelno == logging.DEBUG for record in caplog.records if record.name == "anyio_smtp"
    )
    assert_no_secret(caplog)


@MECHANISMS
async def test_a_failed_login_shows_no_secret(
    mechanism: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="anyio_smtp")

    async def server(peer: Peer) -> None:
        await peer.greet(EHLO)
        await serve_auth(peer, mechanism, "535 5.7.8 Authentication credentials invalid")
        assert await peer.rest() == b""

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, allow_insecure_auth=True) as smtp,
    ):
        with pytest.raises(AuthenticationError) as caught:
            await smtp.login(USERNAME, PASSWORD, mechanism=mechanism)
        error = caught.value
        texts = [
            str(error),
            repr(error),
            repr(error.args),
            str(error.reply),
            repr(error.reply),
            "".join(traceback.format_exception(error)),
            repr(smtp),
            str(smtp),
        ]
        for text in texts:
            for secret in SECRETS:
                assert secret not in text
        assert "535" in str(error)
        assert smtp.closed

    assert "S: 535 5.7.8 Authentication credentials invalid" in transcript(caplog)
    assert_no_secret(caplog)


def test_mechanism_objects_do_not_show_credentials() -> None:
    for mechanism in (
        Plain(USERNAME, PASSWORD),
        Login(USERNAME, PASSWORD),
        CramMD5(USERNAME, PASSWORD),
    ):
        for text in (repr(mechanism), str(mechanism)):
            assert PASSWORD not in text
            assert USERNAME not in text


async def test_concurrent_sessions_tell_their_records_apart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="anyio_smtp")
    clients: list[anyio_smtp.SMTPClient] = []
    opening = 0
    both_opening = anyio.Event()

    async def open_session() -> anyio_smtp.SMTPClient:
        # Two sessions at once: each waits until the other is being opened too.
        nonlocal opening
        opening += 1
        if opening == 2:
            both_opening.set()
        await both_opening.wait()
        client = await anyio_smtp.connect(server.host, server.port, ehlo_domain=CLIENT)
        clients.append(client)
        return client

    async with (
        SMTPTestServer() as server,
        anyio_smtp.SMTPPool(open_session, max_connections=2) as pool,
        anyio.create_task_group() as group,
    ):
        for recipient in ("one@example.test", "two@example.test"):
            group.start_soon(pool.send_mail, SENDER, [recipient], MESSAGE)

    ids = [client.session_id for client in clients]
    assert len(set(ids)) == 2
    assert all(len(session_id) <= 8 for session_id in ids)
    by_session: dict[str, list[str]] = defaultdict(list)
    for record in caplog.records:
        if record.name == "anyio_smtp":
            by_session[vars(record)["smtp_session"]].append(text(record))
    assert sorted(by_session) == sorted(ids)
    rcpts = {
        session_id: [line for line in lines if line.startswith("C: RCPT TO:")]
        for session_id, lines in by_session.items()
    }
    assert sorted(rcpts.values()) == [
        ["C: RCPT TO:<one@example.test>"],
        ["C: RCPT TO:<two@example.test>"],
    ]
    for lines in by_session.values():
        assert lines[0].startswith("S: 220 mx.test ")
        assert f"C: EHLO {CLIENT}" in lines
        assert lines[-1] == "S: 221 2.0.0 Bye"
    # A formatter can use the identifier as a field of its own.
    formatter = logging.Formatter("%(smtp_session)s|%(message)s")
    record = next(r for r in caplog.records if r.name == "anyio_smtp")
    session_id = vars(record)["smtp_session"]
    assert formatter.format(record).startswith(f"{session_id}|[{session_id}] ")

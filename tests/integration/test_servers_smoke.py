"""The loopback servers work as the integration tests expect.

These tests use only the standard library's smtplib, so they check the test servers
themselves, independently of anyio_smtp.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import smtplib
import ssl
from collections.abc import Callable, Iterator

import pytest

from .servers.aiosmtpd_server import AiosmtpdServer
from .servers.postfix import DEFAULT_USERS, PostfixFactory, PostfixInstance

ALICE = "alice@example.test"
JOSE = "jose@example.test"  # has a non-ASCII UTF-8 password
TIMEOUT = 10.0


def _b64(data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _message(marker: str) -> bytes:
    """A CRLF message whose body has lines that a careless transport would alter."""
    return (
        "From: Alice <alice@example.test>\r\n"
        "To: Bob <bob@example.org>\r\n"
        f"Subject: smoke {marker}\r\n"
        "\r\n"
        f"marker {marker}\r\n"
        ".a line starting with a dot\r\n"
        "From the start of a line\r\n"
        "trailing spaces   \r\n"
        "\r\n"
        "last line\r\n"
    ).encode("ascii")


def _body(message: bytes) -> bytes:
    return message.partition(b"\r\n\r\n")[2]


def _send_and_check(smtp: smtplib.SMTP, postfix: PostfixInstance, sender: str) -> None:
    marker = secrets.token_hex(8)
    message = _message(marker)
    refused = smtp.sendmail(sender, ["bob@example.org"], message)
    assert refused == {}
    delivered = postfix.wait_for_message_containing(marker.encode(), TIMEOUT)
    # Postfix stores LF line endings; the body is otherwise byte for byte the same.
    assert delivered.body == _body(message).replace(b"\r\n", b"\n")
    assert delivered.parsed()["Return-Path"] == f"<{sender}>"
    assert delivered.parsed()["Delivered-To"] == "bob@example.org"


def _auth_plain(smtp: smtplib.SMTP, user: str, password: str) -> tuple[int, bytes]:
    # smtplib encodes credentials as ASCII, so the UTF-8 exchange is done by hand.
    return smtp.docmd("AUTH", "PLAIN " + _b64(f"\0{user}\0{password}"))


def _auth_login(smtp: smtplib.SMTP, user: str, password: str) -> tuple[int, bytes]:
    code, _ = smtp.docmd("AUTH", "LOGIN")
    assert code == 334
    code, _ = smtp.docmd(_b64(user))
    assert code == 334
    return smtp.docmd(_b64(password))


def _auth_cram_md5(smtp: smtplib.SMTP, user: str, password: str) -> tuple[int, bytes]:
    code, challenge = smtp.docmd("AUTH", "CRAM-MD5")
    assert code == 334
    digest = hmac.digest(password.encode(), base64.b64decode(challenge), "md5")
    return smtp.docmd(_b64(f"{user} {digest.hex()}"))


def _auth_scram(smtp: smtplib.SMTP, mechanism: str, user: str, password: str) -> tuple[int, bytes]:
    """A minimal SCRAM-SHA-1/-256 client exchange (RFC 5802), without channel binding."""
    hash_name = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}[mechanism]
    nonce = secrets.token_urlsafe(18)
    saslname = user.replace("=", "=3D").replace(",", "=2C")
    client_first_bare = f"n={saslname},r={nonce}"
    code, reply = smtp.docmd("AUTH", f"{mechanism} {_b64('n,,' + client_first_bare)}")
    assert code == 334, reply
    server_first = base64.b64decode(reply).decode()
    fields = dict(item.split("=", 1) for item in server_first.split(","))
    assert fields["r"].startswith(nonce)
    salted = hashlib.pbkdf2_hmac(
        hash_name, password.encode(), base64.b64decode(fields["s"]), int(fields["i"])
    )
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    stored_key = hashlib.new(hash_name, client_key).digest()
    client_final_bare = f"c=biws,r={fields['r']}"
    auth_message = f"{client_first_bare},{server_first},{client_final_bare}".encode()
    signature = hmac.digest(stored_key, auth_message, hash_name)
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    code, reply = smtp.docmd(_b64(f"{client_final_bare},p={_b64(proof)}"))
    if code != 334:
        return code, reply
    # Dovecot sends the server signature as a 334 challenge; an empty line answers it.
    server_key = hmac.digest(salted, b"Server Key", hash_name)
    expected = "v=" + _b64(hmac.digest(server_key, auth_message, hash_name))
    assert base64.b64decode(reply).decode() == expected
    return smtp.docmd("")


Authenticate = Callable[[smtplib.SMTP, str, str], tuple[int, bytes]]

MECHANISMS: dict[str, Authenticate] = {
    "PLAIN": _auth_plain,
    "LOGIN": _auth_login,
    "CRAM-MD5": _auth_cram_md5,
    "SCRAM-SHA-1": lambda smtp, user, pw: _auth_scram(smtp, "SCRAM-SHA-1", user, pw),
    "SCRAM-SHA-256": lambda smtp, user, pw: _auth_scram(smtp, "SCRAM-SHA-256", user, pw),
}


@pytest.fixture
def submission(postfix: PostfixInstance) -> Iterator[smtplib.SMTP]:
    """A connection to the submission port, after EHLO and STARTTLS."""
    with smtplib.SMTP(postfix.host, postfix.submission_port, timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.example.test")
        smtp.starttls(context=postfix.client_ssl_context())
        smtp.ehlo("client.example.test")
        yield smtp


# ------------------------------------------------------------------ Postfix


def test_postfix_users_are_the_documented_ones(postfix: PostfixInstance) -> None:
    assert postfix.users[ALICE] == "correct horse battery"
    assert not postfix.users[JOSE].isascii()
    assert postfix.users == dict(DEFAULT_USERS)


def test_postfix_plain_port_delivers_byte_identical_body(postfix: PostfixInstance) -> None:
    with smtplib.SMTP(postfix.host, postfix.plain_port, timeout=TIMEOUT) as smtp:
        code, _ = smtp.ehlo("client.example.test")
        assert code == 250
        for extension in ("starttls", "pipelining", "smtputf8", "chunking", "8bitmime"):
            assert smtp.has_extn(extension), extension
        assert not smtp.has_extn("auth")
        _send_and_check(smtp, postfix, "alice@example.test")


def test_postfix_plain_port_starttls_verifies_against_test_ca(postfix: PostfixInstance) -> None:
    with smtplib.SMTP(postfix.host, postfix.plain_port, timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.example.test")
        code, _ = smtp.starttls(context=postfix.client_ssl_context())
        assert code == 220
        assert isinstance(smtp.sock, ssl.SSLSocket)
        _send_and_check(smtp, postfix, "alice@example.test")


def test_postfix_plain_port_accepts_smtputf8(postfix: PostfixInstance) -> None:
    marker = secrets.token_hex(8)
    message = f"Subject: ünïcode {marker}\r\n\r\nGrüße {marker}\r\n".encode()
    with smtplib.SMTP(postfix.host, postfix.plain_port, timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.example.test")
        smtp.sendmail("jösé@example.test", ["bjørn@exämple.org"], message, ["SMTPUTF8"])
    delivered = postfix.wait_for_message_containing(marker.encode(), TIMEOUT)
    assert delivered.body == f"Grüße {marker}\n".encode()
    assert b"Delivered-To: bj\xc3\xb8rn@ex\xc3\xa4mple.org" in delivered.headers


def test_postfix_rejects_bare_line_feed(postfix: PostfixInstance) -> None:
    with smtplib.SMTP(postfix.host, postfix.plain_port, timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.example.test")
        assert smtp.mail("alice@example.test")[0] == 250
        assert smtp.rcpt("bob@example.org")[0] == 250
        assert smtp.docmd("DATA")[0] == 354
        # smtplib's data() would repair the bare LF, so the bytes go out raw.
        smtp.send(b"Subject: bare\r\n\r\none\nbare line feed\r\n.\r\n")
        code, reply = smtp.getreply()
        assert code == 550, reply


def test_postfix_submission_requires_starttls(postfix: PostfixInstance) -> None:
    with smtplib.SMTP(postfix.host, postfix.submission_port, timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.example.test")
        assert smtp.has_extn("starttls")
        assert not smtp.has_extn("auth")
        code, reply = smtp.mail("alice@example.test")
        assert code == 530, reply
        code, reply = smtp.docmd("AUTH", "PLAIN " + _b64(f"\0{ALICE}\0x"))
        assert code in (503, 530), reply


def test_postfix_submission_requires_auth_to_relay(submission: smtplib.SMTP) -> None:
    mechanisms = submission.esmtp_features["auth"].upper().split()
    assert set(MECHANISMS) <= set(mechanisms)
    assert submission.mail("alice@example.test")[0] == 250
    code, reply = submission.rcpt("bob@example.org")
    assert code == 554, reply


@pytest.mark.parametrize("mechanism", list(MECHANISMS))
@pytest.mark.parametrize("user", [ALICE, JOSE])
def test_postfix_submission_auth(
    postfix: PostfixInstance, submission: smtplib.SMTP, mechanism: str, user: str
) -> None:
    code, reply = MECHANISMS[mechanism](submission, user, postfix.users[user])
    assert code == 235, reply
    _send_and_check(submission, postfix, user)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"])
def test_postfix_submission_wrong_password(submission: smtplib.SMTP, mechanism: str) -> None:
    code, reply = MECHANISMS[mechanism](submission, ALICE, "wrong password")
    assert code == 535, reply


def test_postfix_submission_smtplib_login_uses_cram_md5(
    postfix: PostfixInstance, submission: smtplib.SMTP
) -> None:
    # smtplib prefers CRAM-MD5 when offered.
    code, _ = submission.login(ALICE, postfix.users[ALICE])
    assert code == 235
    _send_and_check(submission, postfix, ALICE)


def test_postfix_smtps_implicit_tls_with_auth(postfix: PostfixInstance) -> None:
    with smtplib.SMTP_SSL(
        postfix.host, postfix.smtps_port, timeout=TIMEOUT, context=postfix.client_ssl_context()
    ) as smtp:
        smtp.ehlo("client.example.test")
        assert not smtp.has_extn("starttls")
        assert smtp.mail(ALICE)[0] == 250
        assert smtp.rcpt("bob@example.org")[0] == 554
        smtp.rset()
        code, reply = _auth_plain(smtp, JOSE, postfix.users[JOSE])
        assert code == 235, reply
        _send_and_check(smtp, postfix, JOSE)


def test_postfix_recipient_limit(postfix_factory: PostfixFactory) -> None:
    limited = postfix_factory(recipient_limit=2)
    assert limited.plain_port != 0
    with smtplib.SMTP(limited.host, limited.plain_port, timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.example.test")
        assert smtp.mail("alice@example.test")[0] == 250
        assert smtp.rcpt("one@example.org")[0] == 250
        assert smtp.rcpt("two@example.org")[0] == 250
        code, reply = smtp.rcpt("three@example.org")
        assert code == 452, reply
        code, _ = smtp.data(b"Subject: limit\r\n\r\nlimited\r\n")
        assert code == 250
    delivered = limited.wait_for_messages(2, TIMEOUT)
    assert len(delivered) == 2
    limited.clear()
    assert limited.messages() == []


# ------------------------------------------------------------------ aiosmtpd


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("user", [ALICE, JOSE])
def test_aiosmtpd_starttls_and_auth(
    aiosmtpd_starttls: AiosmtpdServer, mechanism: str, user: str
) -> None:
    server = aiosmtpd_starttls
    server.clear()
    marker = secrets.token_hex(8)
    message = _message(marker)
    with smtplib.SMTP(server.host, server.port, timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.example.test")
        assert smtp.has_extn("starttls")
        assert not smtp.has_extn("pipelining")
        code, reply = smtp.mail(ALICE)
        assert code == 530, reply
        smtp.starttls(context=server.client_ssl_context())
        smtp.ehlo("client.example.test")
        assert set(smtp.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
        code, reply = MECHANISMS[mechanism](smtp, user, server.users[user])
        assert code == 235, reply
        assert smtp.sendmail(user, ["bob@example.org", "carol@example.org"], message) == {}
    [received] = server.messages
    assert received.content == message
    assert received.mail_from == user
    assert received.rcpt_tos == ("bob@example.org", "carol@example.org")
    assert received.authenticated_as == user
    assert received.tls
    assert received.helo_name == "client.example.test"
    assert server.auth_attempts[-1].mechanism == mechanism
    assert server.auth_attempts[-1].success


def test_aiosmtpd_starttls_requires_auth(aiosmtpd_starttls: AiosmtpdServer) -> None:
    server = aiosmtpd_starttls
    with smtplib.SMTP(server.host, server.port, timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.example.test")
        smtp.starttls(context=server.client_ssl_context())
        smtp.ehlo("client.example.test")
        code, reply = smtp.mail(ALICE)
        assert code == 530, reply
        code, reply = _auth_plain(smtp, ALICE, "wrong password")
        assert code == 535, reply


def test_aiosmtpd_implicit_tls(aiosmtpd_implicit_tls: AiosmtpdServer) -> None:
    server = aiosmtpd_implicit_tls
    server.clear()
    message = _message(secrets.token_hex(8))
    with smtplib.SMTP_SSL(
        server.host, server.port, timeout=TIMEOUT, context=server.client_ssl_context()
    ) as smtp:
        smtp.ehlo("client.example.test")
        assert not smtp.has_extn("starttls")
        code, reply = _auth_login(smtp, JOSE, server.users[JOSE])
        assert code == 235, reply
        assert smtp.sendmail(JOSE, ["bob@example.org"], message) == {}
    [received] = server.wait_for_messages(1)
    assert received.content == message
    assert received.authenticated_as == JOSE
    assert received.tls


def test_aiosmtpd_plain_records_exact_bytes(aiosmtpd_plain: AiosmtpdServer) -> None:
    server = aiosmtpd_plain
    server.clear()
    message = _message(secrets.token_hex(8)) + "ünïcode\r\n".encode()
    with smtplib.SMTP(server.host, server.port, timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.example.test")
        assert not smtp.has_extn("starttls")
        assert not smtp.has_extn("auth")
        smtp.sendmail("a@example.test", ["b@example.org"], message, ["BODY=8BITMIME"])
    [received] = server.messages
    assert received.content == message
    assert "BODY=8BITMIME" in received.mail_options
    assert not received.tls
    assert received.authenticated_as is None

"""SMTP AUTH: the exact exchanges of PLAIN, LOGIN and CRAM-MD5, selection and failures."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

import anyio
import pytest
from anyio.abc import ByteStream

import anyio_smtp
from anyio_smtp import (
    AuthenticationError,
    ExtensionNotSupportedError,
    InsecureAuthError,
    InvalidArgumentError,
    LocalProtocolError,
    RemoteProtocolError,
    SessionClosedError,
    SessionState,
)
from anyio_smtp._client import MAX_AUTH_ROUNDS
from tests.client.scripted import Peer, scripted

CLIENT = "client.test"
USER = "alice@example.test"
PASSWORD = "s3cret pass-phrase"
#: RFC 2195 §2, the example exchange.
CRAM_CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"
CRAM_USER = "tim"
CRAM_PASSWORD = "tanstaaftanstaaf"
CRAM_RESPONSE = "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"
#: The prompts aiosmtpd sends during AUTH LOGIN ("User Name\0", "Password\0").
LOGIN_USER_PROMPT = "VXNlciBOYW1lAA=="
LOGIN_PASSWORD_PROMPT = "UGFzc3dvcmQA"
OK = "235 2.7.0 Authentication successful"


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def plain_blob(username: str = USER, password: str = PASSWORD) -> str:
    """The base64 PLAIN message (RFC 4616): empty authzid, NUL, user, NUL, password."""
    return b64("\0" + username + "\0" + password)


def auth_ehlo(mechanisms: str | None) -> tuple[str, ...]:
    """An EHLO reply offering ``mechanisms`` (None: no AUTH at all)."""
    lines = ["250-mx.test", "250-PIPELINING", "250-8BITMIME"]
    if mechanisms is not None:
        lines.append(f"250-AUTH {mechanisms}")
    lines.append("250 ENHANCEDSTATUSCODES")
    return tuple(lines)


def connect(stream: ByteStream, *, insecure: bool = True) -> anyio_smtp.SessionOpener:
    return anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, allow_insecure_auth=insecure)


async def serve_auth(
    peer: Peer,
    mechanism: str,
    username: str = USER,
    password: str = PASSWORD,
    *,
    challenge: bytes = CRAM_CHALLENGE,
    final: str = OK,
) -> None:
    """Play the server side of one AUTH exchange, checking every client line exactly."""
    line = await peer.lone("AUTH ")
    if mechanism == "PLAIN":
        assert line == f"AUTH PLAIN {plain_blob(username, password)}"
    elif mechanism == "LOGIN":
        assert line == "AUTH LOGIN"
        await peer.send(f"334 {LOGIN_USER_PROMPT}")
        assert await peer.lone("") == b64(username)
        await peer.send(f"334 {LOGIN_PASSWORD_PROMPT}")
        assert await peer.lone("") == b64(password)
    elif mechanism == "CRAM-MD5":
        assert line == "AUTH CRAM-MD5"
        await peer.send(f"334 {b64(challenge)}")
        digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
        assert await peer.lone("") == b64(f"{username} {digest}")
    else:
        raise AssertionError(f"unexpected mechanism {mechanism}")
    await peer.send(final)


async def closes_quietly(peer: Peer) -> None:
    """The client must close the connection without sending anything more."""
    assert await peer.rest() == b""


# -- the exchanges on the wire -----------------------------------------------------------


async def test_auth_plain_sends_the_initial_response() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(auth_ehlo("PLAIN"))
        line = await peer.lone("AUTH ")
        assert line == "AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzM2NyZXQgcGFzcy1waHJhc2U="
        await peer.send(OK)
        await peer.quit()

    async with scripted(server) as stream, connect(stream) as smtp:
        assert not smtp.authenticated
        reply = await smtp.login(USER, PASSWORD)
        assert reply.code == 235
        assert reply.message == "Authentication successful"
        assert smtp.authenticated
        assert smtp.state is SessionState.READY


async def test_auth_login_answers_two_prompts() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(auth_ehlo("LOGIN"))
        assert await peer.lone("AUTH ") == "AUTH LOGIN"
        await peer.send(f"334 {LOGIN_USER_PROMPT}")
        assert await peer.lone("") == "YWxpY2VAZXhhbXBsZS50ZXN0"
        await peer.send(f"334 {LOGIN_PASSWORD_PROMPT}")
        assert await peer.lone("") == "czNjcmV0IHBhc3MtcGhyYXNl"
        await peer.send(OK)
        await peer.quit()

    async with scripted(server) as stream, connect(stream) as smtp:
        await smtp.login(USER, PASSWORD)
        assert smtp.authenticated


async def test_auth_cram_md5_matches_the_rfc_2195_example() -> None:
    expected = hmac.new(CRAM_PASSWORD.encode(), CRAM_CHALLENGE, hashlib.md5).hexdigest()
    assert base64.b64decode(CRAM_RESPONSE) == f"{CRAM_USER} {expected}".encode()

    async def server(peer: Peer) -> None:
        await peer.greet(auth_ehlo("CRAM-MD5"))
        assert await peer.lone("AUTH ") == "AUTH CRAM-MD5"
        await peer.send("334 PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+")
        assert await peer.lone("") == CRAM_RESPONSE
        await peer.send(OK)
        await peer.quit()

    async with scripted(server) as stream, connect(stream) as smtp:
        await smtp.login(CRAM_USER, CRAM_PASSWORD)
        assert smtp.authenticated


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ("LOGIN PLAIN CRAM-MD5", "CRAM-MD5"),
        ("CRAM-MD5 PLAIN", "CRAM-MD5"),
        ("LOGIN PLAIN", "PLAIN"),
        ("PLAIN LOGIN", "PLAIN"),
        ("XOAUTH2 LOGIN", "LOGIN"),
        ("login", "LOGIN"),
    ],
)
async def test_the_strongest_offered_mechanism_is_chosen(offered: str, chosen: str) -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(auth_ehlo(offered))
        await serve_auth(peer, chosen)
        await peer.quit()

    async with scripted(server) as stream, connect(stream) as smtp:
        await smtp.login(USER, PASSWORD)
        assert smtp.authenticated


@pytest.mark.parametrize("forced", ["LOGIN", "login", "PLAIN"])
async def test_a_forced_mechanism_is_used(forced: str) -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(auth_ehlo("CRAM-MD5 PLAIN LOGIN"))
        await serve_auth(peer, forced.upper())
        await peer.quit()

    async with scripted(server) as stream, connect(stream) as smtp:
        await smtp.login(USER, PASSWORD, mechanism=forced)
        assert smtp.authenticated


@pytest.mark.parametrize("offered", ["PLAIN", "LOGIN", "CRAM-MD5"])
async def test_a_forced_mechanism_that_is_not_offered_is_refused_before_sending(
    offered: str,
) -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(auth_ehlo(offered))
        await serve_auth(peer, offered)
        await peer.quit()

    async with scripted(server) as stream, connect(stream) as smtp:
        written = len(stream.sent)
        for name in {"PLAIN", "LOGIN", "CRAM-MD5"} - {offered}:
            with pytest.raises(ExtensionNotSupportedError) as caught:
                await smtp.login(USER, PASSWORD, mechanism=name)
            assert caught.value.name == f"AUTH {name}"
            assert caught.value.name in str(caught.value)
        # A mechanism this client does not implement is a caller error.
        with pytest.raises(InvalidArgumentError, match="unknown SASL mechanism"):
            await smtp.login(USER, PASSWORD, mechanism="GSSAPI")
        assert len(stream.sent) == written
        assert not smtp.closed
        assert not smtp.authenticated
        await smtp.login(USER, PASSWORD)
        assert smtp.authenticated


@pytest.mark.parametrize("offered", [None, "XOAUTH2 GSSAPI"])
async def test_no_usable_auth_offered(offered: str | None) -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(auth_ehlo(offered))
        assert await peer.lone("NOOP") == "NOOP"
        await peer.send("250 2.0.0 Ok")
        await peer.quit()

    async with scripted(server) as stream, connect(stream) as smtp:
        written = len(stream.sent)
        with pytest.raises(ExtensionNotSupportedError) as caught:
            await smtp.login(USER, PASSWORD)
        assert caught.value.name == "AUTH"
        assert caught.value.is_permanent
        if offered is None:
            with pytest.raises(ExtensionNotSupportedError):
                await smtp.login(USER, PASSWORD, mechanism="PLAIN")
        assert len(stream.sent) == written
        assert (await smtp.noop()).code == 250


async def test_plaintext_session_refuses_auth_without_permission() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(auth_ehlo("PLAIN LOGIN"))
        assert await peer.lone("NOOP") == "NOOP"
        await peer.send("250 2.0.0 Ok")
        await peer.quit()

    async with scripted(server) as stream, connect(stream, insecure=False) as smtp:
        written, writes = len(stream.sent), stream.writes
        for mechanism in (None, "PLAIN", "LOGIN"):
            with pytest.raises(InsecureAuthError):
                await smtp.login(USER, PASSWORD, mechanism=mechanism)
        assert len(stream.sent) == written
        assert stream.writes == writes
        assert not smtp.authenticated
        assert smtp.state is SessionState.READY
        assert (await smtp.noop()).code == 250


# -- failures ----------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
async def test_refused_credentials_close_the_session(mechanism: str) -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(auth_ehlo(mechanism))
        await serve_auth(peer, mechanism, final="535 5.7.8 Authentication credentials invalid")
        await closes_quietly(peer)

    async with scripted(server) as stream, connect(stream) as smtp:
        with pytest.raises(AuthenticationError) as caught:
            await smtp.login(USER, PASSWORD)
        error = caught.value
        assert error.reply.code == 535
        assert error.reply.enhanced_status == "5.7.8"
        assert error.mechanism == mechanism
        assert error.command == f"AUTH {mechanism}"
        assert error.is_permanent
        assert "535" in str(error)
        assert PASSWORD not in str(error)
        assert smtp.closed
        assert not smtp.authenticated
        assert stream.closed
        with pytest.raises(SessionClosedError):
            await smtp.noop()
        with pytest.raises(SessionClosedError):
            await smtp.login(USER, PASSWORD)


async def test_a_challenge_that_is_not_base64_closes_the_session() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(auth_ehlo("LOGIN"))
        assert await peer.lone("AUTH ") == "AUTH LOGIN"
        await peer.send("334 this is *not* base64!")
        await closes_quietly(peer)

    async with scripted(server) as stream, connect(stream) as smtp:
        with pytest.raises(RemoteProtocolError, match="base64"):
            await smtp.login(USER, PASSWORD)
        assert smtp.closed
        assert stream.closed
        with pytest.raises(SessionClosedError):
            await smtp.noop()


async def test_endless_challenges_are_abandoned_after_a_bounded_number_of_rounds() -> None:
    responses: list[str] = []

    async def server(peer: Peer) -> None:
        await peer.greet(auth_ehlo("PLAIN"))
        await peer.lone("AUTH PLAIN ")
        try:
            while len(responses) < 1000:
                await peer.send("334 ")
                responses.append(await peer.lone(""))
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    async with scripted(server) as stream, connect(stream) as smtp:
        with pytest.raises(RemoteProtocolError, match="rounds"):
            await smtp.login(USER, PASSWORD)
        assert smtp.closed
        assert stream.closed
    assert len(responses) == MAX_AUTH_ROUNDS
    assert MAX_AUTH_ROUNDS <= 20
    # PLAIN answers an empty challenge with its message again.
    assert set(responses) == {plain_blob()}


async def test_login_twice_is_a_local_protocol_error() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(auth_ehlo("PLAIN LOGIN"))
        await serve_auth(peer, "PLAIN")
        await peer.quit()

    async with scripted(server) as stream, connect(stream) as smtp:
        await smtp.login(USER, PASSWORD)
        written = len(stream.sent)
        with pytest.raises(LocalProtocolError):
            await smtp.login(USER, PASSWORD)
        with pytest.raises(LocalProtocolError):
            await smtp.login(USER, PASSWORD, mechanism="LOGIN")
        assert len(stream.sent) == written
        assert smtp.authenticated
        assert not smtp.closed


BAD_CREDENTIALS: Sequence[tuple[str, str, str]] = [
    ("", PASSWORD, "user name"),
    (USER, "", "password"),
    ("ali\r\nce", PASSWORD, "user name"),
    ("alice\x00", PASSWORD, "user name"),
    (USER, "hunter2\r\nAUTH PLAIN", "password"),
    (USER, "hunter2\x00", "password"),
    (USER, "hunter2\n", "password"),
    (USER, "hunter2\x7f", "password"),
    (USER, "\x1bhunter2", "password"),
]


async def test_bad_credentials_are_refused_before_any_byte() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(auth_ehlo("PLAIN LOGIN CRAM-MD5"))
        await serve_auth(peer, "CRAM-MD5")
        await peer.quit()

    async with scripted(server) as stream, connect(stream) as smtp:
        written = len(stream.sent)
        for username, password, what in BAD_CREDENTIALS:
            for mechanism in (None, "PLAIN", "LOGIN"):
                with pytest.raises(InvalidArgumentError) as caught:
                    await smtp.login(username, password, mechanism=mechanism)
                error = caught.value
                assert isinstance(error, ValueError)
                assert what in str(error)
                for text in (str(error), repr(error), repr(error.args)):
                    assert "hunter2" not in text
                    assert PASSWORD not in text
                    assert not password or password not in text
        assert len(stream.sent) == written
        assert not smtp.closed
        assert not smtp.authenticated
        await smtp.login(USER, PASSWORD)
        assert smtp.authenticated

"""XOAUTH2 and OAUTHBEARER (RFC 7628): messages, token providers, the error flow."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable

import pytest

from anyio_smtp import InvalidArgumentError, LocalProtocolError, RemoteProtocolError
from anyio_smtp.auth import MECHANISMS, PREFERENCE, OAuthBearer, XOAuth2
from anyio_smtp.auth._registry import create

TOKEN = "ya29.a0AfH6SMB-secret_token~value/+=="
USER = "someone@example.com"
# RFC 7628 §4.1: the example token and message.
RFC7628_TOKEN = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
RFC7628_MESSAGE = (
    b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01"
    b"auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
)
# RFC 7628 §4.3: the error challenge.
RFC7628_ERROR = json.dumps(
    {
        "status": "invalid_token",
        "scope": "example_scope",
        "openid-configuration": "https://example.com/.well-known/openid-configuration",
    }
).encode()

Mechanism = type[XOAuth2] | type[OAuthBearer]


def test_xoauth2_initial_response() -> None:
    mechanism = XOAuth2(USER, TOKEN)
    assert mechanism.initial_response() == f"user={USER}\x01auth=Bearer {TOKEN}\x01\x01".encode()


def test_oauthbearer_rfc_7628_example() -> None:
    mechanism = OAuthBearer("user@example.com", RFC7628_TOKEN, host="server.example.com", port=143)
    assert mechanism.initial_response() == RFC7628_MESSAGE


def test_oauthbearer_without_host_and_port() -> None:
    mechanism = OAuthBearer(USER, TOKEN)
    expected = f"n,a={USER},\x01auth=Bearer {TOKEN}\x01\x01".encode()
    assert mechanism.initial_response() == expected
    only_host = OAuthBearer(USER, TOKEN, host="mx.example.com")
    assert b"\x01host=mx.example.com\x01auth=" in only_host.initial_response()
    only_port = OAuthBearer(USER, TOKEN, port=587)
    assert b",\x01port=587\x01auth=" in only_port.initial_response()


def test_oauthbearer_escapes_the_authzid() -> None:
    mechanism = OAuthBearer("a=b,c@example.com", TOKEN)
    assert mechanism.initial_response().startswith(b"n,a=a=3Db=2Cc@example.com,\x01")


def test_utf8_user_name() -> None:
    mechanism = XOAuth2("j\u00f6rg@example.com", TOKEN)
    assert mechanism.initial_response().startswith("user=j\u00f6rg@example.com\x01".encode())


@pytest.mark.parametrize("cls", [XOAuth2, OAuthBearer])
def test_names_and_registry(cls: Mechanism) -> None:
    assert not cls.auto_select
    assert cls.name in MECHANISMS
    assert cls.name not in PREFERENCE
    mechanism = create(cls.name.lower(), USER, TOKEN)
    assert isinstance(mechanism, cls)
    assert mechanism.initial_response() == cls(USER, TOKEN).initial_response()


# -- token providers ---------------------------------------------------------------------


@pytest.mark.parametrize("cls", [XOAuth2, OAuthBearer])
async def test_sync_provider_is_called_in_prepare(cls: Mechanism) -> None:
    calls: list[int] = []

    def provider() -> str:
        calls.append(1)
        return TOKEN

    mechanism = cls(USER, provider)
    assert calls == []
    with pytest.raises(LocalProtocolError, match="prepare"):
        mechanism.initial_response()
    await mechanism.prepare()
    assert calls == [1]
    assert TOKEN.encode() in mechanism.initial_response()
    assert calls == [1]


@pytest.mark.parametrize("cls", [XOAuth2, OAuthBearer])
async def test_async_provider_is_awaited_in_prepare(cls: Mechanism) -> None:
    tokens = iter(["first-token", "second-token"])

    async def provider() -> str:
        return next(tokens)

    mechanism = cls(USER, provider)
    await mechanism.prepare()
    assert b"Bearer first-token\x01" in mechanism.initial_response()
    # Each exchange gets a fresh token.
    await mechanism.prepare()
    assert b"Bearer second-token\x01" in mechanism.initial_response()


async def test_provider_returning_an_awaitable() -> None:
    async def fetch() -> str:
        return TOKEN

    def provider() -> Awaitable[str]:
        return fetch()

    mechanism = XOAuth2(USER, provider)
    await mechanism.prepare()
    assert TOKEN.encode() in mechanism.initial_response()


@pytest.mark.parametrize("bad", ["", "has space", "tab\t", "new\nline", "caf\u00e9", 42, None])
async def test_provider_returning_an_unusable_token(bad: object) -> None:
    mechanism = OAuthBearer(USER, lambda: bad)  # type: ignore[arg-type, return-value]
    with pytest.raises(InvalidArgumentError, match="token") as caught:
        await mechanism.prepare()
    assert not isinstance(bad, str) or not bad or bad not in str(caught.value)
    with pytest.raises(LocalProtocolError):
        mechanism.initial_response()


async def test_provider_errors_propagate() -> None:
    def provider() -> str:
        raise LookupError("no refresh token")

    with pytest.raises(LookupError):
        await XOAuth2(USER, provider).prepare()


async def test_prepare_without_provider_keeps_the_token() -> None:
    mechanism = OAuthBearer(USER, TOKEN)
    await mechanism.prepare()
    assert TOKEN.encode() in mechanism.initial_response()


# -- validation --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [XOAuth2, OAuthBearer])
@pytest.mark.parametrize(
    "token", ["", " ", TOKEN + " ", TOKEN + "\x01", TOKEN + "\r\n", "t\u00f6ken", "\x7f"]
)
def test_unusable_tokens(cls: Mechanism, token: str) -> None:
    with pytest.raises(InvalidArgumentError, match="token") as caught:
        cls(USER, token)
    if token.strip():
        assert token.strip() not in str(caught.value)
    with pytest.raises(InvalidArgumentError):
        create(cls.name, USER, token)


@pytest.mark.parametrize("cls", [XOAuth2, OAuthBearer])
@pytest.mark.parametrize("token", [b"bytes-token", 42, None])
def test_token_of_the_wrong_type(cls: Mechanism, token: object) -> None:
    with pytest.raises(InvalidArgumentError, match="token"):
        cls(USER, token)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [XOAuth2, OAuthBearer])
@pytest.mark.parametrize("username", ["", "a\x01b", "user\r\n", "nul\x00", "del\x7f"])
def test_unusable_user_names(cls: Mechanism, username: str) -> None:
    with pytest.raises(InvalidArgumentError, match="user name"):
        cls(username, TOKEN)


@pytest.mark.parametrize(
    "options",
    [
        {"host": ""},
        {"host": "mx example"},
        {"host": "mx\x01"},
        {"host": b"mx"},
        {"port": 0},
        {"port": 65536},
        {"port": -1},
        {"port": True},
        {"port": "587"},
    ],
)
def test_unusable_host_or_port(options: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        OAuthBearer(USER, TOKEN, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [XOAuth2, OAuthBearer])
async def test_repr_never_shows_the_token(cls: Mechanism) -> None:
    for mechanism in (cls(USER, TOKEN), cls(USER, lambda: TOKEN)):
        await mechanism.prepare()
        for text in (repr(mechanism), str(mechanism)):
            assert TOKEN not in text
            assert USER not in text
        assert repr(mechanism) == f"<{cls.__name__} SASL mechanism>"


# -- the error flow ----------------------------------------------------------------------


def test_oauthbearer_error_challenge_rfc_7628() -> None:
    mechanism = OAuthBearer("user@example.com", RFC7628_TOKEN, host="server.example.com", port=143)
    mechanism.initial_response()
    assert mechanism.failure_detail() is None
    # RFC 7628 §3.2.3: the client answers the error with a single %x01.
    assert mechanism.respond(RFC7628_ERROR) == b"\x01"
    assert mechanism.failure_detail() == (
        "status=invalid_token, scope=example_scope, "
        "openid-configuration=https://example.com/.well-known/openid-configuration"
    )
    with pytest.raises(RemoteProtocolError, match="another challenge"):
        mechanism.respond(RFC7628_ERROR)


def test_xoauth2_error_challenge_google() -> None:
    mechanism = XOAuth2(USER, TOKEN)
    mechanism.initial_response()
    challenge = base64.b64decode(
        base64.b64encode(b'{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}')
    )
    assert mechanism.respond(challenge) == b""
    assert mechanism.failure_detail() == (
        "status=401, schemes=bearer, scope=https://mail.google.com/"
    )


@pytest.mark.parametrize(
    ("challenge", "detail"),
    [
        (b"not json at all", "the server's error details are not JSON: 'not json at all'"),
        (b"[1, 2]", "the server's error details are not JSON: '[1, 2]'"),
        (b"{}", None),
        (b"", None),
        (b'{"status": true, "scope": ["a"]}', None),
        (b'{"status": 400}', "status=400"),
        (b'{"status": "invalid_token", "other": "ignored"}', "status=invalid_token"),
        (b'{"status": "bad\\u001b\\u00e9"}', "status=bad??"),
        (b"\xff\xfe{", "the server's error details are not JSON: '??{'"),
    ],
)
def test_error_challenge_is_read_tolerantly(challenge: bytes, detail: str | None) -> None:
    mechanism = OAuthBearer(USER, TOKEN)
    mechanism.initial_response()
    assert mechanism.respond(challenge) == b"\x01"
    assert mechanism.failure_detail() == detail


def test_error_detail_is_bounded() -> None:
    mechanism = XOAuth2(USER, TOKEN)
    mechanism.respond(json.dumps({"status": "x" * 10_000}).encode())
    detail = mechanism.failure_detail()
    assert detail is not None
    assert len(detail) < 300


@pytest.mark.parametrize("cls", [XOAuth2, OAuthBearer])
def test_error_detail_never_echoes_the_token(cls: Mechanism) -> None:
    mechanism = cls(USER, TOKEN)
    mechanism.initial_response()
    mechanism.respond(json.dumps({"status": "invalid_token", "scope": TOKEN}).encode())
    detail = mechanism.failure_detail()
    assert detail == "status=invalid_token, scope=[redacted]"


def _factories() -> list[Callable[[], XOAuth2 | OAuthBearer]]:
    return [lambda: XOAuth2(USER, TOKEN), lambda: OAuthBearer(USER, TOKEN)]


@pytest.mark.parametrize("make", _factories())
def test_success_needs_nothing_more(make: Callable[[], XOAuth2 | OAuthBearer]) -> None:
    mechanism = make()
    mechanism.initial_response()
    mechanism.verify_success(None)
    mechanism.verify_success(b"anything")

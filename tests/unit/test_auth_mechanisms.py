"""SASL mechanisms: PLAIN, LOGIN, CRAM-MD5."""

from __future__ import annotations

import pytest

from anyio_smtp import InvalidArgumentError, RemoteProtocolError
from anyio_smtp.auth import MECHANISMS, PREFERENCE, CramMD5, Login, Plain, SASLMechanism
from anyio_smtp.auth._mechanisms import ChannelBindings
from anyio_smtp.auth._registry import create

SECRET = "hunter2-secret"


def test_plain_initial_response() -> None:
    assert Plain("user", "pass").initial_response() == b"\0user\0pass"


def test_plain_utf8_credentials() -> None:
    assert Plain("jörg", "pässwörd").initial_response() == "\0jörg\0pässwörd".encode()


def test_plain_answers_an_empty_challenge() -> None:
    assert Plain("user", "pass").respond(b"") == b"\0user\0pass"


def test_plain_refuses_challenge_data() -> None:
    with pytest.raises(RemoteProtocolError):
        Plain("user", "pass").respond(b"unexpected")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (b"Username:", b"Password:"),
        (b"User Name\0", b"Password\0"),
        (b"Password:", b"Username:"),  # the order decides, not the text
        (b"", b""),
    ],
)
def test_login_answers_user_then_password(first: bytes, second: bytes) -> None:
    login = Login("user", "pass")
    assert login.initial_response() is None
    assert login.respond(first) == b"user"
    assert login.respond(second) == b"pass"
    with pytest.raises(RemoteProtocolError):
        login.respond(b"More:")


def test_login_utf8_credentials() -> None:
    login = Login("jörg", "pässwörd")
    assert login.respond(b"Username:") == "jörg".encode()
    assert login.respond(b"Password:") == "pässwörd".encode()


def test_cram_md5_rfc2195_example() -> None:
    mechanism = CramMD5("tim", "tanstaaftanstaaf")
    assert mechanism.initial_response() is None
    response = mechanism.respond(b"<1896.697170952@postoffice.reston.mci.net>")
    assert response == b"tim b913a602c7eda7a495b4e6e7334d3890"


def test_cram_md5_refuses_empty_challenge() -> None:
    with pytest.raises(RemoteProtocolError):
        CramMD5("tim", "tanstaaftanstaaf").respond(b"")


def test_names() -> None:
    assert Plain.name == "PLAIN"
    assert Login.name == "LOGIN"
    assert CramMD5.name == "CRAM-MD5"
    for name, factory in MECHANISMS.items():
        assert factory("u", "p", ChannelBindings(tls_server_end_point=b"x" * 32)).name == name
    assert set(PREFERENCE) <= set(MECHANISMS)
    assert PREFERENCE[0] == "SCRAM-SHA-256-PLUS"


@pytest.mark.parametrize("cls", [Plain, Login, CramMD5])
def test_repr_never_shows_credentials(cls: type[Plain | Login | CramMD5]) -> None:
    mechanism = cls("someone@example.com", SECRET)
    for text in (repr(mechanism), str(mechanism)):
        assert SECRET not in text
        assert "someone" not in text
    assert cls.__name__ in repr(mechanism)


@pytest.mark.parametrize("cls", [Plain, Login, CramMD5])
@pytest.mark.parametrize(
    ("username", "password", "what"),
    [
        ("", SECRET, "user name"),
        ("user", "", "password"),
        ("user\r\nx", SECRET, "user name"),
        ("user", SECRET + "\r\n", "password"),
        ("user", SECRET + "\n", "password"),
        ("user", SECRET + "\x00", "password"),
        ("user", "\x00" + SECRET, "password"),
        ("user", SECRET + "\x7f", "password"),
        ("user", SECRET + "\x85", "password"),
        ("us\x00er", SECRET, "user name"),
    ],
)
def test_unusable_credentials_refused_without_the_value(
    cls: type[Plain | Login | CramMD5], username: str, password: str, what: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        cls(username, password)
    text = str(info.value)
    assert what in text
    assert SECRET not in text
    if password:
        assert repr(password) not in text
    if username:
        assert repr(username) not in text


@pytest.mark.parametrize("cls", [Plain, Login, CramMD5])
def test_non_str_credentials_refused(cls: type[Plain | Login | CramMD5]) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        cls("user", SECRET.encode())  # type: ignore[arg-type]
    assert SECRET not in str(info.value)
    with pytest.raises(InvalidArgumentError):
        cls(None, SECRET)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [Plain, Login, CramMD5])
def test_unencodable_password_refused_up_front(cls: type[Plain | Login | CramMD5]) -> None:
    # A lone surrogate can not be encoded as UTF-8: refuse it when the mechanism is
    # made, as InvalidArgumentError, instead of failing in the middle of AUTH.
    password = "hunter2\udcff"
    with pytest.raises(InvalidArgumentError) as info:
        cls("user", password)
    assert "hunter2" not in str(info.value)


def test_create_known_mechanisms() -> None:
    assert isinstance(create("PLAIN", "u", "p"), Plain)
    assert isinstance(create("plain", "u", "p"), Plain)
    assert isinstance(create("Login", "u", "p"), Login)
    assert isinstance(create("cram-md5", "u", "p"), CramMD5)


def test_create_unknown_mechanism() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        create("GSSAPI", "user", SECRET)
    text = str(info.value)
    assert "GSSAPI" in text
    assert "PLAIN" in text  # the known ones are listed
    assert SECRET not in text


def test_create_checks_credentials() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        create("PLAIN", "user", SECRET + "\r\n")
    assert SECRET not in str(info.value)


def test_custom_mechanism() -> None:
    class External(SASLMechanism):
        name = "EXTERNAL"

        def initial_response(self) -> bytes:
            return b""

        def respond(self, challenge: bytes) -> bytes:
            return b""

    mechanism = External()
    assert mechanism.initial_response() == b""
    assert repr(mechanism) == "<External SASL mechanism>"


def test_sasl_mechanism_is_abstract() -> None:
    with pytest.raises(TypeError):
        SASLMechanism()  # type: ignore[abstract]

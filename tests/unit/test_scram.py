"""SCRAM-SHA-1/-256 and their -PLUS variants: the RFC examples, channel binding,
and every way a server message is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from anyio_smtp import InvalidArgumentError, RemoteProtocolError
from anyio_smtp.auth import (
    MECHANISMS,
    PREFERENCE,
    ChannelBindings,
    SASLFailure,
    ScramSHA1,
    ScramSHA1Plus,
    ScramSHA256,
    ScramSHA256Plus,
)
from anyio_smtp.auth._registry import create
from anyio_smtp.auth._scram import MAX_ITERATIONS, MIN_ITERATIONS, _Scram

# RFC 7677 §3: the SCRAM-SHA-256 example (user "user", password "pencil").
RFC7677_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC7677_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC7677_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC7677_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC7677_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

# RFC 5802 §5: the SCRAM-SHA-1 example (user "user", password "pencil").
RFC5802_NONCE = "fyko+d2lbbFgONRv9qkxdawL"
RFC5802_CLIENT_FIRST = b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
RFC5802_SERVER_FIRST = b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
RFC5802_CLIENT_FINAL = (
    b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
)
RFC5802_SERVER_FINAL = b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="

SECRET = "pencil-hunter2"
WRONG_V = b"v=" + base64.b64encode(b"\0" * 32)
SALT = base64.b64encode(b"0123456789abcdef").decode()
BINDING = hashlib.sha256(b"the server's certificate").digest()


def rfc7677() -> ScramSHA256:
    return ScramSHA256("user", "pencil", client_nonce=RFC7677_NONCE)


def after_server_first() -> ScramSHA256:
    """The RFC 7677 exchange, waiting for the server-final message."""
    mechanism = rfc7677()
    mechanism.initial_response()
    assert mechanism.respond(RFC7677_SERVER_FIRST) == RFC7677_CLIENT_FINAL
    return mechanism


def server_signature(
    digest: str, password: str, client_first: bytes, client_final: bytes, server_first: bytes
) -> bytes:
    """An independent server side: the ServerSignature (RFC 5802 §3) for an exchange."""
    fields = dict(part.split("=", 1) for part in server_first.decode().split(","))
    salted = hashlib.pbkdf2_hmac(
        digest, password.encode(), base64.b64decode(fields["s"]), int(fields["i"])
    )
    bare = client_first.split(b",", 2)[2]
    without_proof = client_final.rsplit(b",p=", 1)[0]
    auth_message = bare + b"," + server_first + b"," + without_proof
    server_key = hmac.new(salted, b"Server Key", digest).digest()
    return hmac.new(server_key, auth_message, digest).digest()


def client_proof_ok(
    digest: str, password: str, client_first: bytes, client_final: bytes, server_first: bytes
) -> bool:
    """The server's check of the ClientProof (RFC 5802 §3)."""
    fields = dict(part.split("=", 1) for part in server_first.decode().split(","))
    salted = hashlib.pbkdf2_hmac(
        digest, password.encode(), base64.b64decode(fields["s"]), int(fields["i"])
    )
    bare = client_first.split(b",", 2)[2]
    without_proof, proof_text = client_final.rsplit(b",p=", 1)
    auth_message = bare + b"," + server_first + b"," + without_proof
    stored_key = hashlib.new(digest, hmac.new(salted, b"Client Key", digest).digest()).digest()
    signature = hmac.new(stored_key, auth_message, digest).digest()
    client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof_text), signature, strict=True))
    return hashlib.new(digest, client_key).digest() == stored_key


def exchange(mechanism: _Scram, password: str, *, iterations: int = 4096) -> tuple[bytes, bytes]:
    """Run a correct server against ``mechanism``; return (client-final, server-final)."""
    client_first = mechanism.initial_response()
    nonce = re.search(rb",r=([^,]+)", client_first)
    assert nonce is not None
    server_first = b"r=" + nonce[1] + b"srv-nonce,s=" + SALT.encode() + b",i=%d" % iterations
    client_final = mechanism.respond(server_first)
    assert client_proof_ok(mechanism.digest, password, client_first, client_final, server_first)
    signature = server_signature(
        mechanism.digest, password, client_first, client_final, server_first
    )
    return client_final, b"v=" + base64.b64encode(signature)


def server_first_for(
    nonce: str = RFC7677_NONCE + "srv", salt: str = SALT, count: str = "4096"
) -> bytes:
    return f"r={nonce},s={salt},i={count}".encode()


# -- the RFC examples --------------------------------------------------------------------


def test_rfc_7677_example_with_the_server_final_in_a_challenge() -> None:
    mechanism = rfc7677()
    assert mechanism.initial_response() == RFC7677_CLIENT_FIRST
    assert mechanism.respond(RFC7677_SERVER_FIRST) == RFC7677_CLIENT_FINAL
    assert mechanism.respond(RFC7677_SERVER_FINAL) == b""  # the client sends an empty line
    mechanism.verify_success(None)


def test_rfc_7677_example_with_the_server_final_in_the_success_reply() -> None:
    mechanism = after_server_first()
    mechanism.verify_success(RFC7677_SERVER_FINAL)


def test_rfc_5802_example_sha1() -> None:
    mechanism = ScramSHA1("user", "pencil", client_nonce=RFC5802_NONCE)
    assert mechanism.initial_response() == RFC5802_CLIENT_FIRST
    assert mechanism.respond(RFC5802_SERVER_FIRST) == RFC5802_CLIENT_FINAL
    mechanism.verify_success(RFC5802_SERVER_FINAL)

    mechanism = ScramSHA1("user", "pencil", client_nonce=RFC5802_NONCE)
    mechanism.initial_response()
    mechanism.respond(RFC5802_SERVER_FIRST)
    assert mechanism.respond(RFC5802_SERVER_FINAL) == b""
    mechanism.verify_success(None)


def test_the_test_server_agrees_with_the_rfc() -> None:
    signature = server_signature(
        "sha256", "pencil", RFC7677_CLIENT_FIRST, RFC7677_CLIENT_FINAL, RFC7677_SERVER_FIRST
    )
    assert b"v=" + base64.b64encode(signature) == RFC7677_SERVER_FINAL
    assert client_proof_ok(
        "sha1", "pencil", RFC5802_CLIENT_FIRST, RFC5802_CLIENT_FINAL, RFC5802_SERVER_FIRST
    )


@pytest.mark.parametrize("data", [None, b"", b"garbage", WRONG_V, b"e=other-error"])
def test_once_proved_in_a_challenge_any_success_payload_is_accepted(data: bytes | None) -> None:
    mechanism = after_server_first()
    mechanism.respond(RFC7677_SERVER_FINAL)
    mechanism.verify_success(data)


def test_server_final_extensions_are_ignored() -> None:
    mechanism = after_server_first()
    mechanism.verify_success(RFC7677_SERVER_FINAL + b",x=extension")


def test_server_first_extensions_are_ignored() -> None:
    mechanism = rfc7677()
    mechanism.initial_response()
    response = mechanism.respond(server_first_for() + b",x=ext")
    assert response.startswith(b"c=biws,r=" + RFC7677_NONCE.encode() + b"srv,p=")


# -- names, registry, nonce ------------------------------------------------------------


def test_names_and_registry() -> None:
    bindings = ChannelBindings(tls_server_end_point=BINDING)
    for cls, digest in (
        (ScramSHA1, "sha1"),
        (ScramSHA1Plus, "sha1"),
        (ScramSHA256, "sha256"),
        (ScramSHA256Plus, "sha256"),
    ):
        assert cls.digest == digest
        assert cls.plus == cls.name.endswith("-PLUS")
        assert cls.auto_select
        assert MECHANISMS[cls.name] is cls
        assert isinstance(create(cls.name.lower(), "u", "p", bindings), cls)
    assert PREFERENCE[:4] == (
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-1",
    )
    assert PREFERENCE[4:] == ("CRAM-MD5", "PLAIN", "LOGIN")


def test_iteration_bounds_are_documented_constants() -> None:
    assert MIN_ITERATIONS == 4096  # RFC 5802 §5.1, RFC 7677 §4; Dovecot's default
    assert MAX_ITERATIONS == 600_000


def test_random_client_nonce() -> None:
    first = ScramSHA256("user", "pencil").initial_response()
    second = ScramSHA256("user", "pencil").initial_response()
    nonces = [re.fullmatch(rb"n,,n=user,r=([^,]+)", message) for message in (first, second)]
    assert nonces[0] is not None
    assert nonces[1] is not None
    assert nonces[0][1] != nonces[1][1]
    for match in nonces:
        assert match is not None
        assert len(match[1]) == 32  # 24 random bytes, base64
        assert len(base64.b64decode(match[1], validate=True)) == 24


@pytest.mark.parametrize("nonce", ["", "a,b", "caf\u00e9", "with space", "tab\t"])
def test_bad_injected_nonce(nonce: str) -> None:
    with pytest.raises(InvalidArgumentError, match="nonce"):
        ScramSHA256("user", "pencil", client_nonce=nonce)


# -- credentials -------------------------------------------------------------------------


def test_saslname_escaping() -> None:
    mechanism = ScramSHA256("a=b,c=", "pencil", client_nonce="abc")
    assert mechanism.initial_response() == b"n,,n=a=3Db=2Cc=3D,r=abc"


def test_user_name_is_saslprepped_as_a_query() -> None:
    mechanism = ScramSHA256("I\u00adX\u00a0\u2168", "pencil", client_nonce="abc")
    assert mechanism.initial_response() == b"n,,n=IX IX,r=abc"
    # Unassigned code points are allowed in a query.
    mechanism = ScramSHA256("d\u0221", "pencil", client_nonce="abc")
    assert mechanism.initial_response() == "n,,n=d\u0221,r=abc".encode()


def test_password_is_saslprepped() -> None:
    # "\u2168" (ROMAN NUMERAL NINE) and "I\u00adX" both prepare to "IX".
    responses = set()
    for password in ("IX", "\u2168", "I\u00adX"):
        mechanism = ScramSHA256("user", password, client_nonce=RFC7677_NONCE)
        mechanism.initial_response()
        responses.add(mechanism.respond(RFC7677_SERVER_FIRST))
    assert len(responses) == 1


def test_utf8_password() -> None:
    password = "contrase\u00f1a-\u00f1\u00fc\u20ac"
    mechanism = ScramSHA256("jose@example.test", password)
    _, server_final = exchange(mechanism, password)
    mechanism.verify_success(server_final)


@pytest.mark.parametrize(
    ("username", "password", "what"),
    [
        ("user", "", "password"),
        ("", SECRET, "user name"),
        ("user", SECRET + "\x07", "password"),
        ("user", SECRET + "\u200e", "password"),  # C.8: prohibited by SASLprep
        ("user", "\u0627" + SECRET, "password"),  # bidirectional rule
        ("user", SECRET + "\U0001f600", "password"),  # unassigned in a stored string
        ("user", "\u00ad", "password"),  # empty once prepared
        ("us\u200eer", SECRET, "user name"),
        ("user\r\n", SECRET, "user name"),
    ],
)
@pytest.mark.parametrize("cls", [ScramSHA1, ScramSHA256])
def test_unusable_credentials(cls: type[_Scram], username: str, password: str, what: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        cls(username, password)
    text = str(caught.value)
    assert what in text
    assert SECRET not in text
    assert not password or repr(password) not in text


def test_repr_and_errors_never_show_credentials() -> None:
    mechanism = ScramSHA256("someone@example.com", SECRET)
    for text in (repr(mechanism), str(mechanism)):
        assert SECRET not in text
        assert "someone" not in text
    assert repr(mechanism) == "<ScramSHA256 SASL mechanism>"
    mechanism.initial_response()
    with pytest.raises(SASLFailure) as caught:
        mechanism.respond(b"r=other,s=" + SALT.encode() + b",i=4096")
    assert SECRET not in str(caught.value)


# -- channel binding ---------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ScramSHA1Plus, ScramSHA256Plus])
@pytest.mark.parametrize("bindings", [None, ChannelBindings()])
def test_plus_needs_channel_bindings(cls: type[_Scram], bindings: ChannelBindings | None) -> None:
    with pytest.raises(InvalidArgumentError, match="channel-binding"):
        cls("user", "pencil", bindings)
    with pytest.raises(InvalidArgumentError):
        create(cls.name, "user", "pencil", bindings)


def test_plus_prefers_tls_server_end_point() -> None:
    bindings = ChannelBindings(
        tls_server_end_point=BINDING, tls_unique=b"unique", tls_exporter=b"exporter"
    )
    mechanism = ScramSHA256Plus("user", "pencil", bindings, client_nonce="abc")
    assert mechanism.channel_binding == "tls-server-end-point"
    assert mechanism.initial_response() == b"p=tls-server-end-point,,n=user,r=abc"
    client_final, server_final = exchange(mechanism, "pencil")
    expected = base64.b64encode(b"p=tls-server-end-point,," + BINDING)
    assert client_final.startswith(b"c=" + expected + b",r=abcsrv-nonce,p=")
    mechanism.verify_success(server_final)


def test_plus_falls_back_to_tls_unique() -> None:
    bindings = ChannelBindings(tls_unique=b"finished-message")
    mechanism = ScramSHA1Plus("user", "pencil", bindings, client_nonce="abc")
    assert mechanism.channel_binding == "tls-unique"
    assert mechanism.initial_response() == b"p=tls-unique,,n=user,r=abc"
    client_final, server_final = exchange(mechanism, "pencil")
    expected = base64.b64encode(b"p=tls-unique,,finished-message")
    assert client_final.startswith(b"c=" + expected + b",")
    assert mechanism.respond(server_final) == b""
    mechanism.verify_success(None)


def test_plus_uses_tls_exporter_only_when_nothing_else() -> None:
    mechanism = ScramSHA256Plus("user", "pencil", ChannelBindings(tls_exporter=b"exp"))
    assert mechanism.channel_binding == "tls-exporter"


@pytest.mark.parametrize("cls", [ScramSHA1, ScramSHA256])
def test_plain_variants_say_y_when_the_client_could_bind(cls: type[_Scram]) -> None:
    # RFC 5802 §6: with binding data at hand, but no -PLUS chosen, the flag is "y".
    mechanism = cls("user", "pencil", ChannelBindings(tls_server_end_point=BINDING))
    assert mechanism.channel_binding is None
    assert mechanism.initial_response().startswith(b"y,,n=user,r=")
    client_final, server_final = exchange(mechanism, "pencil")
    assert client_final.startswith(b"c=eSws,r=")  # base64("y,,")
    mechanism.verify_success(server_final)


@pytest.mark.parametrize("bindings", [None, ChannelBindings()])
def test_plain_variants_say_n_without_binding_data(bindings: ChannelBindings | None) -> None:
    mechanism = ScramSHA256("user", "pencil", bindings)
    assert mechanism.initial_response().startswith(b"n,,n=user,r=")
    client_final, _ = exchange(mechanism, "pencil")
    assert client_final.startswith(b"c=biws,r=")  # base64("n,,")


# -- refused server-first messages -------------------------------------------------------


def refused_first(server_first: bytes) -> pytest.ExceptionInfo[Exception]:
    mechanism = rfc7677()
    mechanism.initial_response()
    with pytest.raises((SASLFailure, RemoteProtocolError)) as caught:
        mechanism.respond(server_first)
    # The exchange is over: nothing more is accepted.
    with pytest.raises(SASLFailure):
        mechanism.verify_success(RFC7677_SERVER_FINAL)
    return caught


@pytest.mark.parametrize(
    ("server_first", "error", "match"),
    [
        # The nonce must extend the client's (RFC 5802 §5.1).
        (server_first_for("XOprNGfwEbeRWgbNEkqO-srv"), SASLFailure, "does not start"),
        (server_first_for("srv" + RFC7677_NONCE), SASLFailure, "does not start"),
        (server_first_for(RFC7677_NONCE), SASLFailure, "no nonce of its own"),
        (server_first_for(RFC7677_NONCE[:-1]), SASLFailure, "does not start"),
        (server_first_for(RFC7677_NONCE + "\u00e9"), RemoteProtocolError, "printable"),
        # m= is a mandatory extension: the client MUST fail (RFC 5802 §5.1).
        (b"m=ext," + server_first_for(), SASLFailure, "m="),
        # Iteration counts out of bounds.
        (server_first_for(count=str(MIN_ITERATIONS - 1)), SASLFailure, "iteration count"),
        (server_first_for(count=str(MAX_ITERATIONS + 1)), SASLFailure, "iteration count"),
        (server_first_for(count="1"), SASLFailure, "iteration count"),
        (server_first_for(count="99999999999999999999"), RemoteProtocolError, "positive"),
        (server_first_for(count="0"), RemoteProtocolError, "positive"),
        (server_first_for(count="-4096"), RemoteProtocolError, "positive"),
        (server_first_for(count="04096"), RemoteProtocolError, "positive"),
        (server_first_for(count="4096.0"), RemoteProtocolError, "positive"),
        (server_first_for(count=""), RemoteProtocolError, "positive"),
        # The salt must be base64, and not empty.
        (server_first_for(salt="not base64!"), RemoteProtocolError, "base64"),
        (server_first_for(salt="QSXCR+Q6sek8bf9"), RemoteProtocolError, "base64"),
        (server_first_for(salt="\u00e9\u00e9\u00e9\u00e9"), RemoteProtocolError, "base64"),
        (server_first_for(salt=""), RemoteProtocolError, "empty"),
        # Missing, misplaced or malformed attributes.
        (b"", RemoteProtocolError, "malformed"),
        (b"r=" + RFC7677_NONCE.encode() + b"srv,i=4096", RemoteProtocolError, "r=, s= and i="),
        (b"s=" + SALT.encode() + b",i=4096", RemoteProtocolError, "r=, s= and i="),
        (b"r=" + RFC7677_NONCE.encode() + b"srv,s=" + SALT.encode(), RemoteProtocolError, "r=, s"),
        (
            b"s=" + SALT.encode() + b",r=" + RFC7677_NONCE.encode() + b"srv,i=4096",
            RemoteProtocolError,
            "order",
        ),
        (server_first_for() + b",", RemoteProtocolError, "malformed"),
        (b"r" + server_first_for()[2:], RemoteProtocolError, "malformed"),
        (b"rr=" + server_first_for()[2:], RemoteProtocolError, "malformed"),
        (b"r=\xff\xfe,s=" + SALT.encode() + b",i=4096", RemoteProtocolError, "UTF-8"),
        (RFC7677_SERVER_FINAL, RemoteProtocolError, "r=, s= and i="),
        # A server may fail early with e= (not in the grammar, but seen).
        (b"e=unknown-user", SASLFailure, "unknown-user"),
    ],
)
def test_refused_server_first(server_first: bytes, error: type[Exception], match: str) -> None:
    caught = refused_first(server_first)
    assert caught.type is error
    assert re.search(re.escape(match), str(caught.value)), str(caught.value)


def test_iteration_count_bounds_are_inclusive() -> None:
    for count in (MIN_ITERATIONS, MAX_ITERATIONS):
        mechanism = ScramSHA256("user", "pencil", client_nonce="abc")
        mechanism.initial_response()
        _, server_final = exchange(mechanism, "pencil", iterations=count)
        mechanism.verify_success(server_final)


# -- refused server-final messages -------------------------------------------------------


def test_wrong_server_signature_in_a_challenge() -> None:
    mechanism = after_server_first()
    with pytest.raises(SASLFailure, match="signature is wrong"):
        mechanism.respond(WRONG_V)
    # A 235 afterwards changes nothing.
    with pytest.raises(SASLFailure):
        mechanism.verify_success(None)
    with pytest.raises(SASLFailure):
        mechanism.verify_success(RFC7677_SERVER_FINAL)


def test_wrong_server_signature_in_the_success_reply() -> None:
    mechanism = after_server_first()
    with pytest.raises(SASLFailure, match="signature is wrong"):
        mechanism.verify_success(WRONG_V)


def test_the_signature_of_another_password_is_wrong() -> None:
    mechanism = ScramSHA256("user", "not pencil", client_nonce=RFC7677_NONCE)
    mechanism.initial_response()
    mechanism.respond(RFC7677_SERVER_FIRST)
    with pytest.raises(SASLFailure, match="signature is wrong"):
        mechanism.verify_success(RFC7677_SERVER_FINAL)


@pytest.mark.parametrize("data", [None, b"", b"garbage", b"Accepted", b"v=not base64!"])
def test_no_server_final_at_all(data: bytes | None) -> None:
    mechanism = after_server_first()
    with pytest.raises(SASLFailure, match="did not prove it knows the password"):
        mechanism.verify_success(data)


def test_success_right_after_the_first_message_is_refused() -> None:
    mechanism = rfc7677()
    mechanism.initial_response()
    with pytest.raises(SASLFailure, match="did not prove"):
        mechanism.verify_success(RFC7677_SERVER_FINAL)


@pytest.mark.parametrize("where", ["challenge", "success"])
def test_server_error_attribute(where: str) -> None:
    mechanism = after_server_first()
    step = mechanism.respond if where == "challenge" else mechanism.verify_success
    with pytest.raises(SASLFailure, match="invalid-proof") as caught:
        step(b"e=invalid-proof")
    assert "pencil" not in str(caught.value)


def test_server_error_text_is_cleaned_and_bounded() -> None:
    mechanism = after_server_first()
    with pytest.raises(SASLFailure) as caught:
        mechanism.respond(b"e=" + "\u00e9\x1b".encode() + b"x" * 500)
    text = str(caught.value)
    assert "\x1b" not in text
    assert len(text) < 250


@pytest.mark.parametrize(
    ("server_final", "match"),
    [
        (b"v=not base64!", "base64"),
        (b"x=" + RFC7677_SERVER_FINAL[2:], "neither v= nor e="),
        (b"", "malformed"),
        (b"\xff", "UTF-8"),
        (b"vv", "malformed"),
    ],
)
def test_malformed_server_final_in_a_challenge(server_final: bytes, match: str) -> None:
    mechanism = after_server_first()
    with pytest.raises(RemoteProtocolError, match=match):
        mechanism.respond(server_final)
    with pytest.raises(SASLFailure):
        mechanism.verify_success(None)


def test_no_challenge_after_the_server_final() -> None:
    mechanism = after_server_first()
    mechanism.respond(RFC7677_SERVER_FINAL)
    with pytest.raises(RemoteProtocolError, match="another challenge"):
        mechanism.respond(RFC7677_SERVER_FINAL)


# -- any server bytes: success, RemoteProtocolError or SASLFailure, nothing else ----------

_ATTRIBUTE_VALUE = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters=","), max_size=12
)
_SERVER_FIRST = st.one_of(
    st.binary(max_size=80),
    st.builds(
        lambda prefix, nonce, salt, count, extra: (
            f"{prefix}r={nonce},s={salt},i={count}{extra}".encode()
        ),
        st.sampled_from(["", "m=x,", "e=x,", "x=y,"]),
        st.one_of(
            _ATTRIBUTE_VALUE.map(lambda tail: RFC7677_NONCE + tail),
            _ATTRIBUTE_VALUE,
        ),
        st.one_of(st.just(SALT), _ATTRIBUTE_VALUE),
        st.one_of(st.integers(-5, 9000).map(str), _ATTRIBUTE_VALUE),
        st.sampled_from(["", ",x=y", ",", ",,"]),
    ),
)


@settings(max_examples=100, deadline=None)
@given(_SERVER_FIRST)
@example(RFC7677_SERVER_FIRST)
@example(b"m=,r=,s=,i=")
def test_any_server_first_message(server_first: bytes) -> None:
    mechanism = rfc7677()
    mechanism.initial_response()
    try:
        response = mechanism.respond(server_first)
    except (RemoteProtocolError, SASLFailure):
        return
    assert response.startswith(b"c=biws,r=" + RFC7677_NONCE.encode())


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=80),
        st.builds(lambda v: b"v=" + v, st.binary(max_size=60)),
        st.builds(lambda v: b"v=" + base64.b64encode(v), st.binary(max_size=40)),
        st.builds(lambda v: b"e=" + v, st.binary(max_size=40)),
    ),
    st.booleans(),
)
@example(RFC7677_SERVER_FINAL, True)
@example(RFC7677_SERVER_FINAL, False)
def test_any_server_final_message(server_final: bytes, in_challenge: bool) -> None:
    mechanism = after_server_first()
    try:
        if in_challenge:
            assert mechanism.respond(server_final) == b""
            mechanism.verify_success(None)
        else:
            mechanism.verify_success(server_final)
    except (RemoteProtocolError, SASLFailure):
        assert server_final != RFC7677_SERVER_FINAL
        return
    assert server_final.split(b",")[0] == RFC7677_SERVER_FINAL

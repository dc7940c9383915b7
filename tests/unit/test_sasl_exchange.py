"""The sans-I/O AUTH exchange: SASLExchange driven with Reply objects, and choose_mechanism.

Everything here is synchronous: the tests play the server by hand, one reply
at a time, and check every command the exchange produces and every error it
raises (messages included, as the client shows them to users).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import ClassVar

import pytest

from anyio_smtp import (
    AuthenticationError,
    ExtensionNotSupportedError,
    InvalidArgumentError,
    LocalProtocolError,
    RemoteProtocolError,
)
from anyio_smtp._protocol.capabilities import Capabilities
from anyio_smtp._protocol.commands import Auth, AuthResponse
from anyio_smtp._protocol.replies import Reply
from anyio_smtp.auth import (
    PREFERENCE,
    ChannelBindings,
    CramMD5,
    Login,
    OAuthBearer,
    Plain,
    SASLFailure,
    SASLMechanism,
    ScramSHA1,
    ScramSHA1Plus,
    ScramSHA256,
    ScramSHA256Plus,
    XOAuth2,
)
from anyio_smtp.auth._exchange import (
    MAX_AUTH_ROUNDS,
    Challenge,
    SASLExchange,
    choose_mechanism,
    redacted,
    success_data,
)
from tests.unit.test_scram import client_proof_ok, server_signature

USER = "user"
PASSWORD = "correct horse battery"
TOKEN = "ya29.secret-access-token_0123456789"
OK = Reply(235, ("2.7.0 Authentication successful",), "2.7.0")
REFUSED = Reply(535, ("5.7.8 Authentication credentials invalid",), "5.7.8")
BINDINGS = ChannelBindings(tls_server_end_point=b"\x5a" * 32)
ALL_PREFERRED = " ".join(PREFERENCE)

# A SCRAM exchange with everything fixed: the client nonce, the server's part
# of it, the salt and the iteration count.
SCRAM_NONCE = "fixed-client-nonce"
SCRAM_SALT = base64.b64encode(b"a fixed salt 16B").decode("ascii")
SCRAM_SERVER_FIRST = f"r={SCRAM_NONCE}+server-part,s={SCRAM_SALT},i=4096".encode()


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def challenge_reply(data: bytes | str) -> Reply:
    """A 334 reply carrying ``data``, as the reply parser makes it."""
    return Reply(334, (b64(data),))


def answer(exchange: SASLExchange, replies: Iterable[Reply]) -> tuple[list[AuthResponse], Reply]:
    """The client's I/O loop after AUTH, with ``replies`` as the server.

    :return: the responses sent and the final reply
    """
    sent: list[AuthResponse] = []
    for reply in replies:
        step = exchange.receive(reply)
        if isinstance(step, Reply):
            return sent, step
        sent.append(exchange.respond(step))
    raise AssertionError(f"the server's script ended before the exchange: {sent}")


def drive(
    exchange: SASLExchange, replies: Iterable[Reply]
) -> tuple[list[Auth | AuthResponse], Reply]:
    """The whole client loop: (AUTH and the responses sent, final reply)."""
    auth = exchange.start()
    responses, final = answer(exchange, replies)
    return [auth, *responses], final


def caps(offered: str | None) -> Capabilities:
    """EHLO capabilities offering the mechanisms ``offered`` (None: no AUTH at all)."""
    lines = ["mx.test greets you", "PIPELINING"]
    if offered is not None:
        lines.append(f"AUTH {offered}")
    return Capabilities.from_ehlo(lines)


class Recorder(SASLMechanism):
    """A mechanism that records what the exchange hands it, and fails on request."""

    name: ClassVar[str] = "X-RECORDER"

    def __init__(
        self,
        *,
        initial: bytes | None = None,
        refuse_challenge: bool = False,
        refuse_success: bool = False,
        detail: str | None = None,
    ) -> None:
        self.initial = initial
        self.refuse_challenge = refuse_challenge
        self.refuse_success = refuse_success
        self.detail = detail
        self.challenges: list[bytes] = []
        self.successes: list[bytes | None] = []

    def initial_response(self) -> bytes | None:
        return self.initial

    def respond(self, challenge: bytes) -> bytes:
        self.challenges.append(challenge)
        if self.refuse_challenge:
            raise SASLFailure("the recorder refuses the challenge")
        return b"answer-" + challenge

    def verify_success(self, data: bytes | None) -> None:
        self.successes.append(data)
        if self.refuse_success:
            raise SASLFailure("the recorder refuses the success")

    def failure_detail(self) -> str | None:
        return self.detail


class BlockingRecorder(Recorder):
    name: ClassVar[str] = "X-BLOCKING"
    blocking: ClassVar[bool] = True


# -- the module itself -------------------------------------------------------------------


def test_max_auth_rounds() -> None:
    assert MAX_AUTH_ROUNDS == 10


def test_plain_sends_its_message_with_the_command() -> None:
    exchange = SASLExchange(Plain(USER, PASSWORD))
    sent, final = drive(exchange, [OK])
    assert sent == [Auth("PLAIN", b"\0user\0correct horse battery")]
    assert sent[0].encode() == b"AUTH PLAIN " + b64("\0user\0" + PASSWORD).encode() + b"\r\n"
    assert final is OK


def test_plain_answers_an_empty_challenge_with_its_message_again() -> None:
    sent, final = drive(SASLExchange(Plain(USER, PASSWORD)), [Reply(334, ("",)), OK])
    assert sent[1:] == [AuthResponse(b"\0user\0correct horse battery")]
    assert final is OK


def test_login_answers_user_then_password() -> None:
    exchange = SASLExchange(Login(USER, PASSWORD))
    auth = exchange.start()
    assert auth == Auth("LOGIN", None)
    assert auth.encode() == b"AUTH LOGIN\r\n"

    prompt = Reply(334, ("VXNlcm5hbWU6",))  # "Username:"
    challenge = exchange.receive(prompt)
    assert challenge == Challenge(b"Username:", False, prompt)
    assert isinstance(challenge, Challenge)
    assert challenge.reply is prompt
    assert exchange.respond(challenge) == AuthResponse(USER.encode())

    challenge = exchange.receive(Reply(334, ("UGFzc3dvcmQ6",)))  # "Password:"
    assert isinstance(challenge, Challenge)
    assert challenge.data == b"Password:"
    assert exchange.respond(challenge) == AuthResponse(PASSWORD.encode())

    assert exchange.receive(OK) is OK


def test_cram_md5_matches_the_rfc_2195_example() -> None:
    exchange = SASLExchange(CramMD5("tim", "tanstaaftanstaaf"))
    sent, final = drive(
        exchange, [challenge_reply(b"<1896.697170952@postoffice.reston.mci.net>"), OK]
    )
    assert sent == [Auth("CRAM-MD5", None), AuthResponse(b"tim b913a602c7eda7a495b4e6e7334d3890")]
    assert sent[1].encode() == b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n"
    assert final is OK


def test_whitespace_around_a_challenge_is_ignored() -> None:
    exchange = SASLExchange(Login(USER, PASSWORD))
    exchange.start()
    challenge = exchange.receive(Reply(334, ("  VXNlcm5hbWU6 ",)))
    assert isinstance(challenge, Challenge)
    assert challenge.data == b"Username:"


def test_only_the_first_line_of_a_challenge_is_read() -> None:
    exchange = SASLExchange(Login(USER, PASSWORD))
    exchange.start()
    challenge = exchange.receive(Reply(334, ("VXNlcm5hbWU6", "not base64!")))
    assert isinstance(challenge, Challenge)
    assert challenge.data == b"Username:"


# -- SCRAM-SHA-256 ------------------------------------------------------------------------


def scram_until_server_final() -> tuple[SASLExchange, bytes]:
    """A SCRAM-SHA-256 exchange past the client-final message; also the right server-final."""
    exchange = SASLExchange(ScramSHA256(USER, PASSWORD, client_nonce=SCRAM_NONCE))
    auth = exchange.start()
    assert auth.mechanism == "SCRAM-SHA-256"
    client_first = auth.initial_response
    assert client_first == b"n,,n=user,r=fixed-client-nonce"

    challenge = exchange.receive(challenge_reply(SCRAM_SERVER_FIRST))
    assert isinstance(challenge, Challenge)
    assert challenge.data == SCRAM_SERVER_FIRST
    assert challenge.blocking is True  # PBKDF2: the caller runs respond() in a thread
    client_final = exchange.respond(challenge).data
    assert client_final.startswith(b"c=biws,r=fixed-client-nonce+server-part,p=")
    # The server's side, computed independently of the client code.
    assert client_proof_ok("sha256", PASSWORD, client_first, client_final, SCRAM_SERVER_FIRST)
    signature = server_signature("sha256", PASSWORD, client_first, client_final, SCRAM_SERVER_FIRST)
    return exchange, b"v=" + base64.b64encode(signature)


def test_scram_with_the_server_final_in_the_success_reply() -> None:
    exchange, server_final = scram_until_server_final()
    success = Reply(235, (f"2.7.0 {b64(server_final)}",), "2.7.0")
    assert exchange.receive(success) is success


def test_scram_with_the_server_final_in_a_challenge() -> None:
    exchange, server_final = scram_until_server_final()
    challenge = exchange.receive(challenge_reply(server_final))
    assert isinstance(challenge, Challenge)
    assert challenge.blocking is True
    assert exchange.respond(challenge) == AuthResponse(b"")  # the empty line
    assert exchange.receive(OK) is OK


def tampered(server_final: bytes) -> bytes:
    signature = bytearray(base64.b64decode(server_final[2:]))
    signature[0] ^= 1
    return b"v=" + base64.b64encode(bytes(signature))


def test_a_wrong_server_signature_after_235_fails() -> None:
    exchange, server_final = scram_until_server_final()
    bad = tampered(server_final)
    success = Reply(235, (f"2.7.0 {b64(bad)}",), "2.7.0")
    with pytest.raises(AuthenticationError) as caught:
        exchange.receive(success)
    error = caught.value
    assert str(error) == (
        "authentication with AUTH SCRAM-SHA-256 failed (the server's SCRAM signature is "
        "wrong: it does not know the password): the server replied 235 [redacted]"
    )
    assert error.mechanism == "SCRAM-SHA-256"
    # The 235 is kept (the caller sees the server said yes) but its proof is hidden.
    assert error.reply == Reply(235, ("[redacted]",), "2.7.0")
    assert error.__cause__ is None
    assert error.__suppress_context__
    # The exchange is over: nothing more is accepted.
    with pytest.raises(LocalProtocolError, match="it failed"):
        exchange.receive(OK)


def test_a_235_without_any_server_proof_fails() -> None:
    exchange, _ = scram_until_server_final()
    with pytest.raises(AuthenticationError, match="did not prove it knows the password") as caught:
        exchange.receive(OK)
    assert caught.value.reply is OK  # nothing to redact in it


def test_a_wrong_server_signature_in_a_challenge_fails_in_respond() -> None:
    exchange, server_final = scram_until_server_final()
    reply = challenge_reply(tampered(server_final))
    challenge = exchange.receive(reply)
    assert isinstance(challenge, Challenge)
    with pytest.raises(AuthenticationError) as caught:
        exchange.respond(challenge)
    error = caught.value
    assert str(error) == (
        "authentication with AUTH SCRAM-SHA-256 failed (the server's SCRAM signature is "
        "wrong: it does not know the password): the server replied 334 [redacted]"
    )
    assert error.reply == Reply(334, ("[redacted]",))
    assert reply.lines[0] not in str(error)


def test_a_scram_refusal_of_the_server_first_message_redacts_the_challenge() -> None:
    exchange = SASLExchange(ScramSHA256(USER, PASSWORD, client_nonce=SCRAM_NONCE))
    exchange.start()
    reply = challenge_reply(f"r=someone-elses-nonce,s={SCRAM_SALT},i=4096")
    challenge = exchange.receive(reply)
    assert isinstance(challenge, Challenge)
    with pytest.raises(AuthenticationError, match="nonce does not start") as caught:
        exchange.respond(challenge)
    assert caught.value.reply == Reply(334, ("[redacted]",))


# -- XOAUTH2 and OAUTHBEARER ------------------------------------------------------------

ERROR_STATUS = {"status": "invalid_token", "scope": "https://mail.example/", "schemes": "bearer"}


@pytest.mark.parametrize(
    ("mechanism", "dummy"),
    [(XOAuth2(USER, TOKEN), b""), (OAuthBearer(USER, TOKEN), b"\x01")],
)
def test_bearer_error_flow(mechanism: XOAuth2 | OAuthBearer, dummy: bytes) -> None:
    exchange = SASLExchange(mechanism)
    auth = exchange.start()
    assert auth.mechanism == mechanism.name
    assert auth.initial_response is not None
    assert f"auth=Bearer {TOKEN}\x01".encode() in auth.initial_response

    challenge = exchange.receive(challenge_reply(json.dumps(ERROR_STATUS)))
    assert isinstance(challenge, Challenge)
    assert challenge.blocking is False
    assert exchange.respond(challenge) == AuthResponse(dummy)

    final = Reply(535, ("5.7.8 Username and Password not accepted",), "5.7.8")
    with pytest.raises(AuthenticationError) as caught:
        exchange.receive(final)
    error = caught.value
    assert str(error) == (
        f"authentication with AUTH {mechanism.name} failed (status=invalid_token, "
        "schemes=bearer, scope=https://mail.example/): the server replied "
        "535 5.7.8 Username and Password not accepted"
    )
    assert error.reply is final
    assert error.mechanism == mechanism.name
    assert TOKEN not in str(error)


# -- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [535, 454, 504, 534, 250, 500])
def test_any_other_reply_is_a_refusal_with_the_mechanisms_detail(code: int) -> None:
    mechanism = Recorder(detail="what the server said")
    exchange = SASLExchange(mechanism)
    exchange.start()
    reply = Reply(code, ("refused",))
    with pytest.raises(AuthenticationError) as caught:
        exchange.receive(reply)
    error = caught.value
    assert str(error) == (
        f"authentication with AUTH X-RECORDER failed (what the server said): "
        f"the server replied {code} refused"
    )
    assert error.reply is reply
    assert error.command == "AUTH X-RECORDER"
    assert mechanism.successes == []  # verify_success is for a 235 only


def test_a_refusal_without_detail() -> None:
    exchange = SASLExchange(Plain(USER, PASSWORD))
    with pytest.raises(AuthenticationError) as caught:
        drive(exchange, [REFUSED])
    error = caught.value
    assert str(error) == (
        "authentication with AUTH PLAIN failed: the server replied "
        "535 5.7.8 Authentication credentials invalid"
    )
    assert error.reply is REFUSED
    assert error.is_permanent
    assert PASSWORD not in str(error)


def test_too_many_rounds() -> None:
    exchange = SASLExchange(Plain(USER, PASSWORD))
    exchange.start()
    responses: list[AuthResponse] = []
    for _ in range(MAX_AUTH_ROUNDS):
        step = exchange.receive(Reply(334, ("",)))
        assert isinstance(step, Challenge)
        responses.append(exchange.respond(step))
    assert responses == [AuthResponse(b"\0user\0correct horse battery")] * MAX_AUTH_ROUNDS
    with pytest.raises(RemoteProtocolError) as caught:
        exchange.receive(Reply(334, ("",)))
    assert str(caught.value) == "AUTH PLAIN took more than 10 rounds"


def test_rounds_are_counted_before_the_challenge_is_decoded() -> None:
    mechanism = Recorder()
    exchange = SASLExchange(mechanism)
    exchange.start()
    for _ in range(MAX_AUTH_ROUNDS):
        step = exchange.receive(Reply(334, ("",)))
        assert isinstance(step, Challenge)
        exchange.respond(step)
    with pytest.raises(RemoteProtocolError, match="took more than 10 rounds"):
        exchange.receive(Reply(334, ("not base64!",)))
    assert len(mechanism.challenges) == MAX_AUTH_ROUNDS


@pytest.mark.parametrize("text", ["this is *not* base64!", "VXNlcm5hbWU", "VXNl!", "VXNl cm5h"])
def test_a_challenge_that_is_not_base64(text: str) -> None:
    mechanism = Recorder()
    exchange = SASLExchange(mechanism)
    exchange.start()
    with pytest.raises(RemoteProtocolError) as caught:
        exchange.receive(Reply(334, (text,)))
    assert str(caught.value) == (
        "the server sent a challenge that is not base64 during AUTH X-RECORDER"
    )
    assert caught.value.__suppress_context__
    assert mechanism.challenges == []  # never handed to the mechanism
    with pytest.raises(LocalProtocolError):
        exchange.respond(Challenge(b"", False, Reply(334)))


def test_a_protocol_error_of_the_mechanism_is_not_wrapped() -> None:
    exchange = SASLExchange(CramMD5("tim", "tanstaaftanstaaf"))
    exchange.start()
    challenge = exchange.receive(Reply(334, ("",)))
    assert isinstance(challenge, Challenge)
    with pytest.raises(RemoteProtocolError, match="empty CRAM-MD5 challenge") as caught:
        exchange.respond(challenge)
    assert not isinstance(caught.value, AuthenticationError)


def test_a_sasl_failure_in_respond_is_an_authentication_error() -> None:
    exchange = SASLExchange(Recorder(refuse_challenge=True))
    exchange.start()
    reply = challenge_reply(b"secret challenge")
    challenge = exchange.receive(reply)
    assert isinstance(challenge, Challenge)
    with pytest.raises(AuthenticationError) as caught:
        exchange.respond(challenge)
    assert str(caught.value) == (
        "authentication with AUTH X-RECORDER failed (the recorder refuses the challenge): "
        "the server replied 334 [redacted]"
    )
    assert caught.value.reply == Reply(334, ("[redacted]",))


# -- what the exchange hands the mechanism ------------------------------------------------


@pytest.mark.parametrize(
    ("success", "data"),
    [
        (Reply(235, ("2.7.0 dGVzdA==",), "2.7.0"), b"test"),
        (Reply(235, ("dGVzdA==",)), b"test"),
        (OK, None),
        (Reply(235, ("",)), None),
    ],
)
def test_verify_success_gets_the_decoded_payload(success: Reply, data: bytes | None) -> None:
    mechanism = Recorder()
    exchange = SASLExchange(mechanism)
    exchange.start()
    assert exchange.receive(success) is success
    assert mechanism.successes == [data]


def test_a_refused_success_hides_its_payload() -> None:
    exchange = SASLExchange(Recorder(refuse_success=True))
    exchange.start()
    success = Reply(235, ("2.7.0 dGVzdA==",), "2.7.0")
    with pytest.raises(AuthenticationError) as caught:
        exchange.receive(success)
    assert caught.value.reply == Reply(235, ("[redacted]",), "2.7.0")
    assert "dGVzdA" not in str(caught.value)


def test_the_initial_response_and_challenges_reach_the_mechanism() -> None:
    mechanism = Recorder(initial=b"")
    exchange = SASLExchange(mechanism)
    assert exchange.mechanism is mechanism
    auth = exchange.start()
    assert auth == Auth("X-RECORDER", b"")
    assert auth.encode() == b"AUTH X-RECORDER =\r\n"
    sent, final = answer(exchange, [challenge_reply(b"one"), challenge_reply(b"two"), OK])
    assert mechanism.challenges == [b"one", b"two"]
    assert sent == [AuthResponse(b"answer-one"), AuthResponse(b"answer-two")]
    assert final is OK


@pytest.mark.parametrize(("cls", "blocking"), [(Recorder, False), (BlockingRecorder, True)])
def test_challenges_say_whether_answering_blocks(cls: type[Recorder], blocking: bool) -> None:
    exchange = SASLExchange(cls())
    exchange.start()
    challenge = exchange.receive(challenge_reply(b"x"))
    assert isinstance(challenge, Challenge)
    assert challenge.blocking is blocking


# -- the order of calls -------------------------------------------------------------------


def test_receive_before_start() -> None:
    exchange = SASLExchange(Plain(USER, PASSWORD))
    with pytest.raises(LocalProtocolError) as caught:
        exchange.receive(OK)
    assert str(caught.value) == ("SASLExchange.receive() out of turn: AUTH PLAIN expects start()")


def test_start_twice() -> None:
    exchange = SASLExchange(Plain(USER, PASSWORD))
    exchange.start()
    with pytest.raises(LocalProtocolError, match=r"start\(\) out of turn.*expects receive\(\)"):
        exchange.start()


def test_respond_without_a_challenge() -> None:
    exchange = SASLExchange(Login(USER, PASSWORD))
    exchange.start()
    with pytest.raises(LocalProtocolError, match=r"respond\(\) out of turn.*expects receive\(\)"):
        exchange.respond(Challenge(b"Username:", False, Reply(334)))


def test_receive_twice_without_answering() -> None:
    exchange = SASLExchange(Login(USER, PASSWORD))
    exchange.start()
    exchange.receive(Reply(334, ("VXNlcm5hbWU6",)))
    with pytest.raises(LocalProtocolError, match=r"expects respond\(\) to the challenge"):
        exchange.receive(Reply(334, ("UGFzc3dvcmQ6",)))


@pytest.mark.parametrize("final", [OK, REFUSED])
def test_nothing_after_the_end(final: Reply) -> None:
    exchange = SASLExchange(Plain(USER, PASSWORD))
    exchange.start()
    if final is OK:
        exchange.receive(final)
        expected = "it succeeded"
    else:
        with pytest.raises(AuthenticationError):
            exchange.receive(final)
        expected = "it failed"
    with pytest.raises(LocalProtocolError, match=expected):
        exchange.receive(OK)
    with pytest.raises(LocalProtocolError, match=expected):
        exchange.respond(Challenge(b"", False, Reply(334)))
    with pytest.raises(LocalProtocolError, match=expected):
        exchange.start()


def test_an_unprepared_bearer_mechanism_fails_at_start() -> None:
    exchange = SASLExchange(XOAuth2(USER, lambda: TOKEN))
    with pytest.raises(LocalProtocolError, match="await prepare"):
        exchange.start()


def test_reprs_show_no_sasl_data() -> None:
    exchange = SASLExchange(Plain(USER, PASSWORD))
    assert repr(exchange) == "<SASLExchange AUTH PLAIN: start_due>"
    exchange.start()
    reply = challenge_reply(b"secret challenge")
    challenge = exchange.receive(reply)
    assert isinstance(challenge, Challenge)
    assert repr(exchange) == "<SASLExchange AUTH PLAIN: response_due>"
    text = repr(challenge)
    assert text == (
        "Challenge(data=[redacted], blocking=False, "
        "reply=Reply(code=334, lines=('[redacted]',), enhanced_status=None))"
    )
    assert reply.lines[0] not in text


# -- redacted and success_data ------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "data"),
    [
        (Reply(235, ("2.7.0 dGVzdA==",), "2.7.0"), b"test"),
        (Reply(235, ("  dGVzdA==  ",)), b"test"),
        # Without ENHANCEDSTATUSCODES the status is text, and two words are no payload.
        (Reply(235, ("2.7.0 dGVzdA==",)), None),
        (OK, None),
        (Reply(235, ("",)), None),
        (Reply(235, ("   ",)), None),
        (Reply(235, ("Accepted!",)), None),
        (Reply(235, ("Authentification r\u00e9ussie",)), None),  # not read as base64
        (Reply(235, ("dGVzdA",)), None),  # no padding
    ],
)
def test_success_data(reply: Reply, data: bytes | None) -> None:
    assert success_data(reply) == data


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (challenge_reply(b"secret"), Reply(334, ("[redacted]",))),
        (Reply(334, ("c2VjcmV0",), "3.7.0"), Reply(334, ("[redacted]",), "3.7.0")),
        (Reply(235, ("2.7.0 dGVzdA==",), "2.7.0"), Reply(235, ("[redacted]",), "2.7.0")),
    ],
)
def test_redacted_hides_sasl_data(reply: Reply, expected: Reply) -> None:
    assert redacted(reply) == expected


@pytest.mark.parametrize("reply", [OK, REFUSED, Reply(235, ("2.7.0 dGVzdA==",))])
def test_redacted_keeps_other_replies(reply: Reply) -> None:
    assert redacted(reply) is reply


# -- choose_mechanism ---------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", [None, "PLAIN", Plain(USER, PASSWORD)])
def test_no_auth_offered(mechanism: str | SASLMechanism | None) -> None:
    with pytest.raises(ExtensionNotSupportedError) as caught:
        choose_mechanism(caps(None), USER, PASSWORD, mechanism, BINDINGS)
    assert caught.value.name == "AUTH"
    assert str(caught.value) == "the server does not support AUTH"


def test_no_auth_is_checked_before_the_mechanism_name() -> None:
    with pytest.raises(ExtensionNotSupportedError):
        choose_mechanism(caps(None), USER, PASSWORD, "GSSAPI", None)


@pytest.mark.parametrize("index", range(len(PREFERENCE)))
def test_the_first_offered_in_preference_order_is_chosen(index: int) -> None:
    # Offer the preferred names from ``index`` on, in reverse order (order of
    # the EHLO line must not matter), with channel bindings.
    offered = " ".join(reversed(PREFERENCE[index:])) + " XOAUTH2 OAUTHBEARER"
    chosen = choose_mechanism(caps(offered), USER, PASSWORD, None, BINDINGS)
    assert chosen.name == PREFERENCE[index]


@pytest.mark.parametrize(
    ("offered", "bindings", "expected"),
    [
        (ALL_PREFERRED, BINDINGS, ScramSHA256Plus),
        (ALL_PREFERRED, None, ScramSHA256),
        ("SCRAM-SHA-1 SCRAM-SHA-1-PLUS", BINDINGS, ScramSHA1Plus),
        ("SCRAM-SHA-1 SCRAM-SHA-1-PLUS", None, ScramSHA1),
        ("SCRAM-SHA-1 SCRAM-SHA-256-PLUS", BINDINGS, ScramSHA256Plus),
        ("SCRAM-SHA-1 SCRAM-SHA-256-PLUS", None, ScramSHA1),
        ("LOGIN PLAIN CRAM-MD5", None, CramMD5),
        ("LOGIN PLAIN", None, Plain),
        ("login", None, Login),
        ("XOAUTH2 OAUTHBEARER LOGIN", BINDINGS, Login),
    ],
)
def test_chosen_mechanism(
    offered: str, bindings: ChannelBindings | None, expected: type[SASLMechanism]
) -> None:
    chosen = choose_mechanism(caps(offered), USER, PASSWORD, None, bindings)
    assert type(chosen) is expected


def test_plus_is_never_chosen_without_bindings() -> None:
    with pytest.raises(ExtensionNotSupportedError) as caught:
        choose_mechanism(caps("SCRAM-SHA-256-PLUS SCRAM-SHA-1-PLUS"), USER, PASSWORD, None, None)
    assert caught.value.name == "AUTH"
    assert str(caught.value) == (
        "the server does not support AUTH: none of SCRAM-SHA-256-PLUS, SCRAM-SHA-256, "
        "SCRAM-SHA-1-PLUS, SCRAM-SHA-1, CRAM-MD5, PLAIN, LOGIN is offered"
    )


def test_plus_with_bindings_carries_them() -> None:
    chosen = choose_mechanism(caps(ALL_PREFERRED), USER, PASSWORD, None, BINDINGS)
    assert isinstance(chosen, ScramSHA256Plus)
    assert chosen.channel_binding == "tls-server-end-point"
    assert chosen.initial_response().startswith(b"p=tls-server-end-point,,n=user,r=")


def test_plus_without_binding_data_falls_to_the_next_mechanism() -> None:
    # Bindings with no data in them: the -PLUS mechanism refuses to be made.
    chosen = choose_mechanism(
        caps("SCRAM-SHA-256-PLUS PLAIN"), USER, PASSWORD, None, ChannelBindings()
    )
    assert isinstance(chosen, Plain)


@pytest.mark.parametrize(
    ("offered", "mechanism", "bindings", "flag"),
    [
        # RFC 5802 §6: -PLUS offered but not used: "n", the bindings are withheld.
        ("SCRAM-SHA-256 SCRAM-SHA-1-PLUS", None, BINDINGS, b"n,,"),
        ("SCRAM-SHA-256 SCRAM-SHA-256-PLUS", "scram-sha-256", BINDINGS, b"n,,"),
        # No -PLUS offered although the client could bind: "y".
        ("SCRAM-SHA-256 PLAIN", None, BINDINGS, b"y,,"),
        ("SCRAM-SHA-256", "SCRAM-SHA-256", BINDINGS, b"y,,"),
        # No TLS: "n".
        ("SCRAM-SHA-256 SCRAM-SHA-256-PLUS", None, None, b"n,,"),
        ("SCRAM-SHA-1-PLUS", "SCRAM-SHA-1-PLUS", BINDINGS, b"p=tls-server-end-point,,"),
    ],
)
def test_gs2_flag_against_what_is_offered(
    offered: str, mechanism: str | None, bindings: ChannelBindings | None, flag: bytes
) -> None:
    initial = choose_mechanism(
        caps(offered), USER, PASSWORD, mechanism, bindings
    ).initial_response()
    assert initial is not None
    assert initial.startswith(flag + b"n=user,r=")


@pytest.mark.parametrize("offered", ["XOAUTH2", "OAUTHBEARER", "XOAUTH2 OAUTHBEARER GSSAPI"])
def test_bearer_mechanisms_are_never_chosen_on_their_own(offered: str) -> None:
    with pytest.raises(ExtensionNotSupportedError, match="none of"):
        choose_mechanism(caps(offered), USER, TOKEN, None, BINDINGS)


@pytest.mark.parametrize(("name", "cls"), [("xoauth2", XOAuth2), ("OAuthBearer", OAuthBearer)])
def test_bearer_mechanisms_by_name(name: str, cls: type[SASLMechanism]) -> None:
    chosen = choose_mechanism(caps("XOAUTH2 OAUTHBEARER"), USER, TOKEN, name, BINDINGS)
    assert type(chosen) is cls
    initial = chosen.initial_response()
    assert initial is not None
    assert f"auth=Bearer {TOKEN}\x01".encode() in initial


@pytest.mark.parametrize(("name", "cls"), [("login", Login), ("PLAIN", Plain)])
def test_a_forced_name_wins_over_preference(name: str, cls: type[SASLMechanism]) -> None:
    chosen = choose_mechanism(caps(ALL_PREFERRED), USER, PASSWORD, name, BINDINGS)
    assert type(chosen) is cls


@pytest.mark.parametrize("offered", ["PLAIN GSSAPI", "PLAIN"])
def test_an_unknown_name(offered: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        choose_mechanism(caps(offered), USER, PASSWORD, "gssapi", None)
    assert str(caught.value) == (
        "unknown SASL mechanism 'GSSAPI'; known ones are SCRAM-SHA-256-PLUS, SCRAM-SHA-256, "
        "SCRAM-SHA-1-PLUS, SCRAM-SHA-1, CRAM-MD5, PLAIN, LOGIN, XOAUTH2, OAUTHBEARER"
    )


def test_a_name_that_is_not_offered() -> None:
    # Checked before the credentials: an empty password does not matter yet.
    with pytest.raises(ExtensionNotSupportedError) as caught:
        choose_mechanism(caps("PLAIN LOGIN"), USER, "", "cram-md5", None)
    assert caught.value.name == "AUTH CRAM-MD5"
    assert str(caught.value) == (
        "the server does not support AUTH CRAM-MD5: the server does not offer it"
    )


def test_an_instance_is_used_as_it_is() -> None:
    mechanism = ScramSHA1(USER, PASSWORD)
    chosen = choose_mechanism(caps("SCRAM-SHA-1 SCRAM-SHA-256"), "", "", mechanism, BINDINGS)
    assert chosen is mechanism


def test_an_instance_that_is_not_offered() -> None:
    with pytest.raises(ExtensionNotSupportedError) as caught:
        choose_mechanism(caps("PLAIN"), "", "", Recorder(), None)
    assert caught.value.name == "AUTH X-RECORDER"


SASLPREP_REFUSED = "pass\u200eword"  # C.8: prohibited by SASLprep, fine for PLAIN


def test_a_password_saslprep_refuses_falls_to_the_next_mechanism() -> None:
    chosen = choose_mechanism(
        caps("SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5 PLAIN"), USER, SASLPREP_REFUSED, None, None
    )
    assert isinstance(chosen, CramMD5)
    chosen = choose_mechanism(caps("SCRAM-SHA-256 PLAIN"), USER, SASLPREP_REFUSED, None, None)
    assert isinstance(chosen, Plain)
    assert chosen.initial_response() == ("\0user\0" + SASLPREP_REFUSED).encode()


def test_when_every_mechanism_refuses_the_last_refusal_is_raised() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        choose_mechanism(caps("SCRAM-SHA-256 SCRAM-SHA-1"), USER, SASLPREP_REFUSED, None, None)
    assert str(caught.value) == (
        "the password contains a character that SASLprep prohibits (RFC 4013 §2.3)"
    )


def test_a_forced_mechanism_does_not_fall_back() -> None:
    with pytest.raises(InvalidArgumentError, match="SASLprep"):
        choose_mechanism(caps("SCRAM-SHA-256 PLAIN"), USER, SASLPREP_REFUSED, "SCRAM-SHA-256", None)


def test_a_forced_plus_mechanism_without_bindings() -> None:
    with pytest.raises(InvalidArgumentError, match="needs TLS channel-binding data"):
        choose_mechanism(caps("SCRAM-SHA-256-PLUS"), USER, PASSWORD, "SCRAM-SHA-256-PLUS", None)

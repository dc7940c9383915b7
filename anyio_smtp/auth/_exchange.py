"""The SMTP AUTH exchange (RFC 4954 §4), without I/O: which mechanism, what to send, what it means.

How this works: :func:`choose_mechanism` picks and creates the mechanism
before anything is sent; a :class:`SASLExchange` then turns it into commands
and reads the replies, and the caller only moves them over the network::

    await mechanism.prepare()                  # the caller's job (e.g. fetch an OAuth token)
    exchange = SASLExchange(mechanism)
    reply = await send(exchange.start())       # AUTH <name> [initial response]
    while isinstance(step := exchange.receive(reply), Challenge):
        if step.blocking:                      # SCRAM's PBKDF2: keep it off the event loop
            response = await to_thread(exchange.respond, step)
        else:
            response = exchange.respond(step)
        reply = await send(response)           # the base64 answer line
    # ``step`` is the 235 reply, and the mechanism has verified the server

``receive`` reads a 334 as a challenge (counted, then base64-decoded), a 235
as the end (after ``verify_success``, which may still refuse: SCRAM checks the
server's signature) and anything else as a refusal.  Every failure is an
exception from ``start``, ``receive`` or ``respond`` and ends the exchange;
the caller closes the session.  Replies that carry SASL data (a challenge, a
server proof) are put in errors only through :func:`redacted`.  Calling the
methods out of turn raises ``LocalProtocolError``.
"""

from __future__ import annotations

from base64 import b64decode
from dataclasses import dataclass
from enum import Enum, auto
from typing import Final

from .._errors import (
    AuthenticationError,
    ExtensionNotSupportedError,
    InvalidArgumentError,
    LocalProtocolError,
    RemoteProtocolError,
)
from .._protocol.capabilities import Capabilities
from .._protocol.commands import Auth, AuthResponse
from .._protocol.replies import Reply
from ._mechanisms import ChannelBindings, SASLFailure, SASLMechanism
from ._registry import MECHANISMS, PREFERENCE, create

__all__ = (
    "MAX_AUTH_ROUNDS",
    "Challenge",
    "SASLExchange",
    "choose_mechanism",
    "redacted",
    "success_data",
)

#: Most 334 challenges one AUTH exchange may take before it is abandoned.
MAX_AUTH_ROUNDS: Final = 10


def redacted(reply: Reply) -> Reply:
    """A reply whose text is SASL data (a challenge, a server proof), with the text hidden.

    :param reply: a reply received during AUTH
    :return: a copy with the text replaced by ``[redacted]`` for a 334 reply
        or a reply carrying a base64 payload (see :func:`success_data`);
        ``reply`` itself otherwise
    """
    if reply.code == 334 or success_data(reply) is not None:
        return Reply(reply.code, ("[redacted]",), reply.enhanced_status)
    return reply


def success_data(reply: Reply) -> bytes | None:
    """The base64 payload a 235 reply may carry (RFC 4954 §4), if it has one.

    :param reply: the reply (its text without the enhanced status code is read)
    :return: the decoded payload when the text is one base64 word, else None
    """
    text = reply.message.strip()
    if not text or " " in text:
        return None
    try:
        return b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        return None


def choose_mechanism(
    capabilities: Capabilities,
    username: str,
    password: str,
    mechanism: str | SASLMechanism | None,
    bindings: ChannelBindings | None,
) -> SASLMechanism:
    """The mechanism ``login()`` runs, created for these credentials.

    Without ``mechanism`` the first name of :data:`~anyio_smtp.auth.PREFERENCE`
    the server offers is used (bearer-token mechanisms are not in it, -PLUS
    names only with ``bindings``); one whose credentials it refuses (e.g. a
    password SASLprep prohibits, for SCRAM) is skipped for the next.  When the
    server offers any -PLUS name, a mechanism without -PLUS gets no bindings,
    so SCRAM sends the GS2 flag ``n`` (RFC 5802 §6), never ``y``.

    :param capabilities: the server's EHLO capabilities
    :param username: the user name (not used for a mechanism instance)
    :param password: the password, or the OAuth token for XOAUTH2 and
        OAUTHBEARER (not used for a mechanism instance)
    :param mechanism: None to choose, a name to force (any case), or an
        instance to run as it is
    :param bindings: the TLS channel bindings of the connection, None without TLS
    :return: the mechanism, ready for :class:`SASLExchange` (after ``prepare()``)
    :raises ExtensionNotSupportedError: the server offers no AUTH, none of
        the preferred mechanisms, or not the one asked for
    :raises InvalidArgumentError: an unknown mechanism name, or credentials
        no usable mechanism accepts (the last refusal)
    """
    if "AUTH" not in capabilities:
        raise ExtensionNotSupportedError("AUTH")
    offered = capabilities.auth_mechanisms
    plus_offered = any(name.endswith("-PLUS") for name in offered)

    def _bindings_for(name: str) -> ChannelBindings | None:
        # RFC 5802 §6: a client that does not use channel binding although
        # the server offers it must say "n" (it gets no bindings), never "y".
        if plus_offered and not name.endswith("-PLUS"):
            return None
        return bindings

    if isinstance(mechanism, SASLMechanism):
        name = mechanism.name
    elif mechanism is not None:
        name = str(mechanism).upper()
        if name not in MECHANISMS:
            raise InvalidArgumentError(
                f"unknown SASL mechanism {name!r}; known ones are {', '.join(MECHANISMS)}"
            )
    else:
        # -PLUS variants need TLS channel bindings; bearer-token mechanisms
        # are never chosen on their own (auto_select is False for them).
        choices = [
            name
            for name in PREFERENCE
            if name in offered and (bindings is not None or not name.endswith("-PLUS"))
        ]
        if not choices:
            raise ExtensionNotSupportedError("AUTH", f"none of {', '.join(PREFERENCE)} is offered")
        failure: InvalidArgumentError | None = None
        for name in choices:
            try:
                return create(name, username, password, _bindings_for(name))
            except InvalidArgumentError as exc:
                # e.g. SASLprep refuses the password for SCRAM: try the next one.
                failure = exc
        assert failure is not None
        raise failure
    if name not in offered:
        raise ExtensionNotSupportedError(f"AUTH {name}", "the server does not offer it")
    if isinstance(mechanism, SASLMechanism):
        return mechanism
    return create(name, username, password, _bindings_for(name))


@dataclass(frozen=True, slots=True, repr=False)
class Challenge:
    """A 334 challenge of the server, decoded, waiting for :meth:`SASLExchange.respond`.

    :ivar data: the base64-decoded challenge
    :ivar blocking: whether computing the answer is blocking work (the
        mechanism's ``blocking``): run ``respond`` in a worker thread then
    :ivar reply: the 334 reply it came from (put in errors only redacted)
    """

    data: bytes
    blocking: bool
    reply: Reply

    def __repr__(self) -> str:
        return (
            f"Challenge(data=[redacted], blocking={self.blocking}, reply={redacted(self.reply)!r})"
        )


class _State(Enum):
    START_DUE = auto()  # nothing sent yet
    REPLY_DUE = auto()  # AUTH or a response went out; its reply is awaited
    RESPONSE_DUE = auto()  # a challenge came; its answer is awaited
    SUCCEEDED = auto()  # 235, and the mechanism verified the server
    FAILED = auto()  # an exception ended the exchange


_EXPECTED = {
    _State.START_DUE: "start()",
    _State.REPLY_DUE: "receive() with the server's reply",
    _State.RESPONSE_DUE: "respond() to the challenge",
    _State.SUCCEEDED: "nothing more: it succeeded",
    _State.FAILED: "nothing more: it failed",
}


class SASLExchange:
    """One AUTH exchange: commands out, replies in, the verdict at the end.

    ``start()`` once, then ``receive()`` each reply, and ``respond()`` to each
    :class:`Challenge` it returns, until ``receive()`` returns the 235 reply or
    raises.  The mechanism must be prepared (``await mechanism.prepare()``)
    before ``start()``.  An exchange is used once.

    :param mechanism: the mechanism to run (from :func:`choose_mechanism`, or
        the caller's own instance)
    """

    __slots__ = ("_mechanism", "_rounds", "_state")

    def __init__(self, mechanism: SASLMechanism) -> None:
        self._mechanism = mechanism
        self._rounds = 0
        self._state = _State.START_DUE

    def __repr__(self) -> str:
        return f"<SASLExchange AUTH {self._mechanism.name}: {self._state.name.lower()}>"

    @property
    def mechanism(self) -> SASLMechanism:
        """The mechanism this exchange runs."""
        return self._mechanism

    def _turn(self, state: _State, method: str) -> None:
        """Check it is ``method``'s turn, and count the exchange failed until it returns."""
        if self._state is not state:
            raise LocalProtocolError(
                f"SASLExchange.{method}() out of turn: AUTH {self._mechanism.name} "
                f"expects {_EXPECTED[self._state]}"
            )
        self._state = _State.FAILED

    def start(self) -> Auth:
        """The AUTH command (with the initial response if the mechanism has one).

        :return: the command to send; its reply goes to :meth:`receive`
        :raises InvalidArgumentError: the mechanism's name can not be sent
        :raises LocalProtocolError: called twice, or the mechanism is not
            prepared (a bearer-token mechanism without its token)
        """
        self._turn(_State.START_DUE, "start")
        command = Auth(self._mechanism.name, self._mechanism.initial_response())
        self._state = _State.REPLY_DUE
        return command

    def receive(self, reply: Reply) -> Challenge | Reply:
        """Feed the reply to the last command sent.

        A 334 is counted, then decoded; a 235 is accepted only once the
        mechanism has verified it (``verify_success`` on its decoded payload,
        see :func:`success_data`).  When that check fails the server has
        already said 235, so the session must not be treated as authenticated
        (the caller resets that flag; the error's ``reply.code`` is 235 in
        this case only).

        :param reply: the server's reply to :meth:`start`'s or :meth:`respond`'s command
        :return: a :class:`Challenge` for a 334 (answer it with :meth:`respond`),
            or ``reply`` itself for a verified 235: the exchange succeeded
        :raises RemoteProtocolError: more than :data:`MAX_AUTH_ROUNDS`
            challenges, or a challenge that is not base64
        :raises AuthenticationError: any reply but 334 and 235 (with the
            mechanism's ``failure_detail()``), or a 235 the mechanism refuses
            (with the reply redacted and the mechanism's reason)
        :raises LocalProtocolError: no command is waiting for a reply
        """
        self._turn(_State.REPLY_DUE, "receive")
        mechanism = self._mechanism
        if reply.code == 334:
            self._rounds += 1
            if self._rounds > MAX_AUTH_ROUNDS:
                raise RemoteProtocolError(
                    f"AUTH {mechanism.name} took more than {MAX_AUTH_ROUNDS} rounds"
                )
            try:
                data = b64decode(reply.lines[0].strip(), validate=True)
            except ValueError:  # binascii.Error, or non-ASCII text
                raise RemoteProtocolError(
                    f"the server sent a challenge that is not base64 during AUTH {mechanism.name}"
                ) from None
            self._state = _State.RESPONSE_DUE
            return Challenge(data, mechanism.blocking, reply)
        if reply.code != 235:
            raise AuthenticationError(mechanism.name, reply, mechanism.failure_detail())
        try:
            mechanism.verify_success(success_data(reply))
        except SASLFailure as exc:
            # RFC 5802 §5.1: the client must verify the server, even after a 235.
            raise AuthenticationError(mechanism.name, redacted(reply), str(exc)) from None
        self._state = _State.SUCCEEDED
        return reply

    def respond(self, challenge: Challenge) -> AuthResponse:
        """Answer a challenge (the mechanism's ``respond``).

        The caller runs this in a worker thread when ``challenge.blocking`` is true.

        :param challenge: what :meth:`receive` returned
        :return: the response line to send; its reply goes to :meth:`receive`
        :raises AuthenticationError: the mechanism refuses to go on
            (``SASLFailure``), with the 334 reply redacted and its reason
        :raises RemoteProtocolError: the challenge is not what the mechanism expects
        :raises LocalProtocolError: no challenge is waiting for an answer
        """
        self._turn(_State.RESPONSE_DUE, "respond")
        mechanism = self._mechanism
        try:
            data = mechanism.respond(challenge.data)
        except SASLFailure as exc:
            raise AuthenticationError(mechanism.name, redacted(challenge.reply), str(exc)) from None
        self._state = _State.REPLY_DUE
        return AuthResponse(data)

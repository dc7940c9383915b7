"""SASL mechanisms for SMTP AUTH (RFC 4954), without I/O.

A mechanism turns decoded server challenges into decoded client responses; the
client does the base64 framing and the network.  Mechanism objects hold the
credentials for one exchange only and never show them in ``repr``.

The client drives a mechanism so::

    await mechanism.prepare()                   # once, e.g. to fetch an OAuth token
    AUTH <name> [initial_response()]
    334 <challenge>  ->  respond(challenge)     # as often as the server asks
    235 [data]       ->  verify_success(data)   # may still refuse (SCRAM)
    4xx/5xx          ->  AuthenticationError, with failure_detail() if any

PLAIN, LOGIN and CRAM-MD5 live here; SCRAM-SHA-1/-256 (and -PLUS) in
``_scram``, XOAUTH2 and OAUTHBEARER in ``_oauth``, SASLprep in ``_saslprep``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from .._errors import RemoteProtocolError
from .._protocol.commands import check_credential

__all__ = (
    "ChannelBindings",
    "CramMD5",
    "Login",
    "Plain",
    "SASLFailure",
    "SASLMechanism",
)


class SASLFailure(Exception):
    """Raised by a mechanism that will not accept the exchange (e.g. a bad server proof).

    The client turns it into ``AuthenticationError`` and closes the session.  The
    message must not contain credentials.
    """


@dataclass(frozen=True, slots=True)
class ChannelBindings:
    """TLS channel-binding data for the -PLUS mechanisms (RFC 5929, RFC 9266).

    :ivar tls_server_end_point: RFC 5929 §4: a hash of the server's certificate
    :ivar tls_unique: RFC 5929 §3: the first Finished message (TLS 1.2 and older only)
    :ivar tls_exporter: RFC 9266: the exporter value (TLS 1.3), when available
    """

    tls_server_end_point: bytes | None = None
    tls_unique: bytes | None = None
    tls_exporter: bytes | None = None


class SASLMechanism(ABC):
    """One client side of a SASL exchange.

    Subclasses set ``name`` and implement ``respond``; those that send data
    with the AUTH command override ``initial_response``.
    """

    #: The mechanism's registered name, as in the EHLO ``AUTH`` line.
    name: ClassVar[str]
    #: Whether ``login()`` may pick this mechanism on its own.
    auto_select: ClassVar[bool] = True
    #: Whether ``respond()`` does enough work (key derivation) to run in a thread.
    blocking: ClassVar[bool] = False

    async def prepare(self) -> None:  # noqa: B027 (doing nothing is the right default)
        """Get ready for the exchange (called once, before AUTH is sent)."""

    def initial_response(self) -> bytes | None:
        """Data to send with the AUTH command itself, or None to wait for a challenge."""
        return None

    @abstractmethod
    def respond(self, challenge: bytes) -> bytes:
        """Answer one (base64-decoded) 334 challenge.

        :raises RemoteProtocolError: the challenge is not what the mechanism expects
        :raises SASLFailure: the mechanism refuses to go on
        """

    def verify_success(self, data: bytes | None) -> None:  # noqa: B027
        """Check the server's success reply (235).

        :param data: the base64-decoded payload of the 235 reply, or None when
            it carries none
        :raises SASLFailure: the server did not prove what the mechanism needs
        """

    def failure_detail(self) -> str | None:
        """What the server said about a failure, if the mechanism learned it."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} SASL mechanism>"


class _UserPassword(SASLMechanism, ABC):
    __slots__ = ("_password", "_username")

    def __init__(
        self, username: str, password: str, bindings: ChannelBindings | None = None
    ) -> None:
        self._username = check_credential(username, "user name")
        self._password = check_credential(password, "password")


class Plain(_UserPassword):
    """PLAIN (RFC 4616): the credentials in one message, sent with the command."""

    name: ClassVar[str] = "PLAIN"

    def _message(self) -> bytes:
        # message = [authzid] UTF8NUL authcid UTF8NUL passwd
        return b"\0" + self._username.encode() + b"\0" + self._password.encode()

    def initial_response(self) -> bytes:
        return self._message()

    def respond(self, challenge: bytes) -> bytes:
        # Only reached when a server asks again with an empty challenge.
        if challenge:
            raise RemoteProtocolError("unexpected challenge data during AUTH PLAIN")
        return self._message()


class Login(_UserPassword):
    """LOGIN (draft-murchison-sasl-login): user name, then password, each on request."""

    name: ClassVar[str] = "LOGIN"
    __slots__ = ("_step",)

    def __init__(
        self, username: str, password: str, bindings: ChannelBindings | None = None
    ) -> None:
        super().__init__(username, password)
        self._step = 0

    def respond(self, challenge: bytes) -> bytes:
        # Servers word the prompts differently ("Username:", "User Name\0"), so
        # the order decides, not the text.
        self._step += 1
        if self._step == 1:
            return self._username.encode()
        if self._step == 2:
            return self._password.encode()
        raise RemoteProtocolError("AUTH LOGIN asked for more than a user name and a password")


class CramMD5(_UserPassword):
    """CRAM-MD5 (RFC 2195): an HMAC-MD5 of the server's challenge keyed with the password."""

    name: ClassVar[str] = "CRAM-MD5"

    def respond(self, challenge: bytes) -> bytes:
        if not challenge:
            raise RemoteProtocolError("empty CRAM-MD5 challenge")
        import hashlib  # loaded on the first CRAM-MD5 login only
        import hmac

        digest = hmac.new(self._password.encode(), challenge, hashlib.md5).hexdigest()
        return self._username.encode() + b" " + digest.encode("ascii")

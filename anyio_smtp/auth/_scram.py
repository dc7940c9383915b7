"""SCRAM-SHA-1 and SCRAM-SHA-256, with and without -PLUS (RFC 5802, RFC 7677).

How this works: SCRAM proves the password in both directions without sending
it.  The exchange, each message base64-framed by the client::

    C: AUTH SCRAM-SHA-256 n,,n=user,r=<client nonce>          initial_response()
    S: 334 r=<client nonce + server nonce>,s=<salt>,i=<count>
    C: c=<binding>,r=<full nonce>,p=<client proof>             respond()
    S: 334 v=<server signature>   ->  C: (empty line)          respond()   (Dovecot)
    S: 235 ...                                                 verify_success()
 or S: 235 v=<server signature>                                verify_success()

From the password, the salt and the iteration count both sides derive the same
keys with PBKDF2; the client proves it has them (ClientProof), then checks the
server's ServerSignature, so a server that does not know the password is
refused even when it says 235.  Everything here is computed locally: the only
input from the network is the two server messages, and every attribute of
them is checked before it is used.

Channel binding (RFC 5802 §6): the -PLUS variants tie the exchange to the TLS
connection by sending ``tls-server-end-point`` (preferred: it exists for every
TLS version) or ``tls-unique`` data inside ``c=``.  The plain variants send the
GS2 flag ``y`` when TLS binding data is at hand ("the client supports channel
binding but thinks the server does not": ``login()`` picks a -PLUS variant
whenever the server offers one, so reaching a plain variant with TLS means the
server offered none), and ``n`` without TLS.  A server that does support
channel binding must refuse ``y``, which defeats an attacker who strips the
-PLUS names from the EHLO reply.  An instance made without ``bindings``
(``login(user, "", mechanism=ScramSHA256(user, password))``) sends ``n``.
"""

from __future__ import annotations

import base64
import binascii
import re
from enum import Enum, auto
from typing import ClassVar, Final

from .._errors import InvalidArgumentError, RemoteProtocolError
from .._protocol.commands import check_credential
from ._mechanisms import ChannelBindings, SASLFailure, SASLMechanism
from ._saslprep import saslprep

__all__ = (
    "MAX_ITERATIONS",
    "MIN_ITERATIONS",
    "ScramSHA1",
    "ScramSHA1Plus",
    "ScramSHA256",
    "ScramSHA256Plus",
)

#: The smallest iteration count accepted from a server.  RFC 5802 §5.1 and
#: RFC 7677 §4: servers "SHOULD announce a hash iteration-count of at least
#: 4096".  A lower count makes the proof the client sends cheaper to attack
#: offline, so it is refused.  (4096 is also Dovecot's default.)
MIN_ITERATIONS: Final = 4096
#: The largest iteration count accepted from a server.  PBKDF2 runs in the
#: event loop's thread, so an absurd count from a hostile server would stall
#: every task; 600 000 (the OWASP 2023 figure for PBKDF2-HMAC-SHA256) takes
#: about a quarter of a second.
MAX_ITERATIONS: Final = 600_000

#: Random bytes in a client nonce (base64-encoded, so 32 characters).
NONCE_BYTES: Final = 24

# RFC 5802 §7: printable = %x21-2B / %x2D-7E  ;; Printable ASCII except ",".
_PRINTABLE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
# posit-number = %x31-39 *DIGIT (bounded here, so parsing stays cheap).
_POSITIVE = re.compile(r"[1-9][0-9]{0,9}")
# attr-val = ALPHA "=" value
_ATTRIBUTE = re.compile(r"([A-Za-z])=(.*)", re.DOTALL)
# What of a server's e= text may be shown (it never holds credentials).
_SAFE_TEXT = re.compile(r"[^\x20-\x7e]")
_MAX_SHOWN = 100

_NO_PROOF = "the server did not prove it knows the password"


class _State(Enum):
    SERVER_FIRST = auto()  # the client-first message went out with AUTH
    SERVER_FINAL = auto()  # the client-final message went out
    VERIFIED = auto()  # the server's signature was checked
    FAILED = auto()


def _escape_saslname(name: str) -> str:
    # RFC 5802 §5.1: "The characters ',' or '=' in usernames are sent as '=2C'
    # and '=3D' respectively."  ('=' first, or its own escape would be redone.)
    return name.replace("=", "=3D").replace(",", "=2C")


def _shown(text: str) -> str:
    cleaned = _SAFE_TEXT.sub("?", text)
    return cleaned if len(cleaned) <= _MAX_SHOWN else cleaned[:_MAX_SHOWN] + "..."


def _attributes(data: bytes, what: str) -> list[tuple[str, str]]:
    """Split a server message into its ``name=value`` attributes, in order."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError(f"the SCRAM {what} message is not UTF-8") from None
    attributes: list[tuple[str, str]] = []
    for part in text.split(","):
        match = _ATTRIBUTE.fullmatch(part)
        if match is None:
            raise RemoteProtocolError(f"malformed attribute in the SCRAM {what} message")
        attributes.append((match[1], match[2]))
    return attributes


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise RemoteProtocolError(f"the SCRAM {what} is not valid base64") from None


def _new_nonce() -> str:
    # RFC 5802 §5.1: the nonce is "a sequence of random printable ASCII
    # characters excluding ','"; base64 never produces a ','.
    import secrets  # hashlib, hmac and secrets load on the first login only

    return base64.b64encode(secrets.token_bytes(NONCE_BYTES)).decode("ascii")


def _check_nonce(nonce: str) -> str:
    if not isinstance(nonce, str) or not _PRINTABLE.fullmatch(nonce):
        raise InvalidArgumentError(
            "the client nonce must be printable ASCII without ',' (RFC 5802 §7)"
        )
    return nonce


def _binding_choice(bindings: ChannelBindings | None) -> tuple[str, bytes] | None:
    """The channel-binding type to use and its data, best first (None: no binding)."""
    if bindings is None:
        return None
    # tls-server-end-point (RFC 5929 §4) works with every TLS version and with
    # TLS-terminating servers that know their certificate; tls-unique (RFC 5929
    # §3) is not defined for TLS 1.3; tls-exporter (RFC 9266) is used only when
    # the transport supplied it.
    for name, data in (
        ("tls-server-end-point", bindings.tls_server_end_point),
        ("tls-unique", bindings.tls_unique),
        ("tls-exporter", bindings.tls_exporter),
    ):
        if data:
            return name, data
    return None


class _Scram(SASLMechanism):
    """The SCRAM client of RFC 5802, parametrised by hash and channel binding."""

    #: The hash for HMAC, H() and PBKDF2, as :func:`hashlib.new` names it.
    digest: ClassVar[str]
    #: Whether this is a -PLUS variant (channel binding required).
    plus: ClassVar[bool] = False
    blocking: ClassVar[bool] = True  # PBKDF2 runs in a worker thread

    __slots__ = (
        "_binding",
        "_client_first_bare",
        "_gs2_header",
        "_nonce",
        "_password",
        "_server_signature",
        "_state",
    )

    def __init__(
        self,
        username: str,
        password: str,
        bindings: ChannelBindings | None = None,
        *,
        client_nonce: str | None = None,
    ) -> None:
        """Get ready to authenticate ``username``.

        :param username: the user name (SASLprep'd as a query, RFC 5802 §5.1)
        :param password: the password (SASLprep'd as a stored string, RFC 5802 §2.2)
        :param bindings: the TLS channel bindings of the connection, None without TLS
        :param client_nonce: the client nonce, for tests only (default: 24 random
            bytes from :mod:`secrets`, base64-encoded)
        :raises InvalidArgumentError: unusable credentials or nonce, or a -PLUS
            variant without channel-binding data
        """
        check_credential(username, "user name")
        check_credential(password, "password")
        # RFC 5802 §5.1: "The client SHOULD prepare the username using the
        # 'SASLprep' profile [RFC4013] ... treating it as a query string (i.e.,
        # unassigned Unicode code points are allowed)."
        prepared_user = saslprep(username, allow_unassigned=True, what="user name")
        # RFC 5802 §2.2: "When applying SASLprep, 'str' is treated as a 'stored
        # strings', which means that unassigned Unicode codepoints are prohibited".
        self._password = saslprep(password, what="password").encode("utf-8")
        self._nonce = _new_nonce() if client_nonce is None else _check_nonce(client_nonce)

        choice = _binding_choice(bindings)
        if self.plus:
            if choice is None:
                raise InvalidArgumentError(
                    f"{self.name} needs TLS channel-binding data; use it over TLS only"
                )
            # RFC 5802 §7: gs2-cbind-flag = ("p=" cb-name) / "n" / "y"
            self._gs2_header = f"p={choice[0]},,"
            self._binding = choice[1]
        else:
            # RFC 5802 §6: "If the client supports channel binding and the server
            # does not appear to (i.e., the client did not see the -PLUS name
            # advertised by the server), then the client MUST NOT use an 'n'
            # gs2-cbind-flag."  Without TLS the client can not bind: 'n'.
            self._gs2_header = "y,," if choice is not None else "n,,"
            self._binding = b""
        self._client_first_bare = f"n={_escape_saslname(prepared_user)},r={self._nonce}"
        self._server_signature = b""
        self._state = _State.SERVER_FIRST

    @property
    def channel_binding(self) -> str | None:
        """The channel-binding type sent (``"tls-server-end-point"``...), or None."""
        if self._gs2_header.startswith("p="):
            return self._gs2_header[2:-2]
        return None

    def initial_response(self) -> bytes:
        # RFC 5802 §7: client-first-message = gs2-header client-first-message-bare
        return (self._gs2_header + self._client_first_bare).encode("utf-8")

    def respond(self, challenge: bytes) -> bytes:
        """Answer the server-first message, then check the server-final one.

        :raises RemoteProtocolError: a malformed server message, or one too many
        :raises SASLFailure: the server is refused (bad nonce, iteration count out
            of bounds, unsupported ``m=``, wrong signature, or ``e=`` sent)
        """
        if self._state is _State.SERVER_FIRST:
            return self._client_final(challenge)
        if self._state is _State.SERVER_FINAL:
            self._check_server_final(challenge)
            # RFC 4954 §4: server data that can not go with 235 comes as a
            # challenge, answered with an empty response.
            return b""
        raise RemoteProtocolError(f"the server sent another challenge after {self.name} ended")

    def verify_success(self, data: bytes | None) -> None:
        """Make sure the server proved it knows the password before accepting 235.

        :param data: the decoded 235 payload (the server-final message, unless
            it came in a 334 challenge already)
        :raises SASLFailure: no server signature was seen, or it is wrong
        """
        if self._state is _State.VERIFIED:
            return  # proved in a 334 challenge; the 235 text is anything at all
        if self._state is not _State.SERVER_FINAL or not data:
            self._state = _State.FAILED
            raise SASLFailure(_NO_PROOF)
        try:
            self._check_server_final(data)
        except RemoteProtocolError:
            # A 235 text that is not a server-final message proves nothing.
            self._state = _State.FAILED
            raise SASLFailure(_NO_PROOF) from None

    # -- the two steps -----------------------------------------------------------------

    def _client_final(self, server_first: bytes) -> bytes:
        import hashlib
        import hmac

        self._state = _State.FAILED  # until this step succeeds
        attributes = _attributes(server_first, "server-first")
        if attributes[0][0] == "e":
            # Not in the RFC's grammar here, but some servers fail this early.
            raise SASLFailure(f"the server reported the SCRAM error {_shown(attributes[0][1])!r}")
        # RFC 5802 §5.1: "m: This attribute is reserved for future extensibility.
        # ... If this extension is present, the client MUST fail authentication".
        if attributes[0][0] == "m":
            raise SASLFailure("the server requires a SCRAM extension (m=) this client lacks")
        # server-first-message = [reserved-mext ","] nonce "," salt ","
        #                        iteration-count ["," extensions]
        if [name for name, _ in attributes[:3]] != ["r", "s", "i"]:
            raise RemoteProtocolError(
                "the SCRAM server-first message lacks r=, s= and i= in that order"
            )
        nonce, salt_text, count_text = (value for _, value in attributes[:3])

        if not _PRINTABLE.fullmatch(nonce):
            raise RemoteProtocolError("the SCRAM server nonce is not printable ASCII")
        # RFC 5802 §5.1: "r: ... the client MUST verify that the initial part of
        # the nonce used in subsequent messages is the same as the nonce it
        # initially specified", and the server appends its own nonce to it.
        if not nonce.startswith(self._nonce):
            raise SASLFailure("the server's nonce does not start with the client's")
        if len(nonce) <= len(self._nonce):
            raise SASLFailure("the server added no nonce of its own")

        # RFC 5802 §5.1: "s: ... the base64-encoded salt".
        salt = _b64decode(salt_text, "salt")
        if not salt:
            raise RemoteProtocolError("the SCRAM salt is empty")
        # RFC 5802 §5.1: "i: ... the iteration count ... a positive integer".
        if not _POSITIVE.fullmatch(count_text):
            raise RemoteProtocolError("the SCRAM iteration count is not a positive number")
        count = int(count_text)
        if not MIN_ITERATIONS <= count <= MAX_ITERATIONS:
            raise SASLFailure(
                f"the server's iteration count {count} is outside the accepted "
                f"{MIN_ITERATIONS}..{MAX_ITERATIONS}"
            )

        # RFC 5802 §7: channel-binding = "c=" base64 (of the GS2 header and,
        # for "p=", the channel-binding data); client-final-message-without-proof
        # = channel-binding "," nonce ["," extensions]
        binding = base64.b64encode(self._gs2_header.encode("utf-8") + self._binding)
        without_proof = b"c=" + binding + b",r=" + nonce.encode("ascii")
        # RFC 5802 §3:
        #   SaltedPassword  := Hi(Normalize(password), salt, i)
        #   ClientKey       := HMAC(SaltedPassword, "Client Key")
        #   StoredKey       := H(ClientKey)
        #   AuthMessage     := client-first-message-bare + "," +
        #                      server-first-message + "," +
        #                      client-final-message-without-proof
        #   ClientSignature := HMAC(StoredKey, AuthMessage)
        #   ClientProof     := ClientKey XOR ClientSignature
        #   ServerKey       := HMAC(SaltedPassword, "Server Key")
        #   ServerSignature := HMAC(ServerKey, AuthMessage)
        salted = hashlib.pbkdf2_hmac(self.digest, self._password, salt, count)
        self._password = b""  # no longer needed
        client_key = hmac.digest(salted, b"Client Key", self.digest)
        stored_key = hashlib.new(self.digest, client_key).digest()
        auth_message = b",".join(
            (self._client_first_bare.encode("utf-8"), server_first, without_proof)
        )
        client_signature = hmac.digest(stored_key, auth_message, self.digest)
        proof = bytes(a ^ b for a, b in zip(client_key, client_signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", self.digest)
        self._server_signature = hmac.digest(server_key, auth_message, self.digest)
        self._state = _State.SERVER_FINAL
        return without_proof + b",p=" + base64.b64encode(proof)

    def _check_server_final(self, server_final: bytes) -> None:
        import hmac

        self._state = _State.FAILED  # until the signature matches
        # server-final-message = (server-error / verifier) ["," extensions]
        name, value = _attributes(server_final, "server-final")[0]
        if name == "e":
            # RFC 5802 §5.1: "e: This attribute specifies an error that occurred
            # during authentication exchange."
            raise SASLFailure(f"the server reported the SCRAM error {_shown(value)!r}")
        if name != "v":
            raise RemoteProtocolError("the SCRAM server-final message has neither v= nor e=")
        signature = _b64decode(value, "server signature")
        # RFC 5802 §5.1: "The client ... MUST verify ServerSignature"; constant
        # time, so the comparison reveals nothing of the expected value.
        if not hmac.compare_digest(signature, self._server_signature):
            raise SASLFailure(
                "the server's SCRAM signature is wrong: it does not know the password"
            )
        self._state = _State.VERIFIED


class ScramSHA1(_Scram):
    """SCRAM-SHA-1 (RFC 5802)."""

    name: ClassVar[str] = "SCRAM-SHA-1"
    digest: ClassVar[str] = "sha1"


class ScramSHA1Plus(_Scram):
    """SCRAM-SHA-1-PLUS (RFC 5802): SCRAM-SHA-1 bound to the TLS channel."""

    name: ClassVar[str] = "SCRAM-SHA-1-PLUS"
    digest: ClassVar[str] = "sha1"
    plus: ClassVar[bool] = True


class ScramSHA256(_Scram):
    """SCRAM-SHA-256 (RFC 7677)."""

    name: ClassVar[str] = "SCRAM-SHA-256"
    digest: ClassVar[str] = "sha256"


class ScramSHA256Plus(_Scram):
    """SCRAM-SHA-256-PLUS (RFC 7677): SCRAM-SHA-256 bound to the TLS channel."""

    name: ClassVar[str] = "SCRAM-SHA-256-PLUS"
    digest: ClassVar[str] = "sha256"
    plus: ClassVar[bool] = True

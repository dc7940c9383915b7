"""Bearer-token mechanisms: XOAUTH2 (Google, Microsoft) and OAUTHBEARER (RFC 7628).

How this works: both send an OAuth 2.0 access token in the initial response,
so a session costs one round trip when the token is good::

    C: AUTH XOAUTH2 user=<user>^Aauth=Bearer <token>^A^A
    S: 235 ...

When it is not, the server sends its reasons as a base64 JSON object in a 334
challenge, the client answers with a dummy response and the server ends the
exchange with a 5xx reply::

    S: 334 eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=     {"status":"invalid_token"}
    C: (empty line for XOAUTH2, ^A for OAUTHBEARER)
    S: 535 5.7.8 ...

``respond()`` keeps the decoded reasons for :meth:`failure_detail`, so the
``AuthenticationError`` says why (``status=invalid_token, scope=...``).

The token is a str or a provider: a callable without arguments returning the
token, or an awaitable of it.  A provider is called in :meth:`prepare`, which
``login()`` awaits just before AUTH, so each login gets a fresh token.  These
mechanisms are never picked by ``login()`` on its own (``auto_select`` is
False): name one, ``login(user, token, mechanism="XOAUTH2")``, or pass an
instance, ``login(user, mechanism=XOAuth2(user, provider))``.  The token
never appears in a repr, an error message or a log line.
"""

from __future__ import annotations

import inspect
import re
from abc import ABC
from collections.abc import Awaitable, Callable
from typing import ClassVar, Self, TypeAlias

from .._errors import InvalidArgumentError, LocalProtocolError, RemoteProtocolError
from .._protocol.commands import check_credential
from ._mechanisms import ChannelBindings, SASLMechanism

__all__ = ("OAuthBearer", "TokenProvider", "XOAuth2")

#: A callable returning an access token, or an awaitable of one (e.g. an
#: ``async def`` that refreshes it).
TokenProvider: TypeAlias = Callable[[], str | Awaitable[str]]

# RFC 6750 §2.1 allows b64token characters only; RFC 7628 §3.1 allows any
# VCHAR in a value.  Printable ASCII without space is what both can carry.
_TOKEN = re.compile(r"[\x21-\x7e]+")
# RFC 7628 §3.2.2: the error challenge's members worth showing, in this order
# (``schemes`` is Google's addition to XOAUTH2).
_DETAIL_KEYS = ("status", "schemes", "scope", "openid-configuration")
_UNSAFE = re.compile(r"[^\x20-\x7e]")
_MAX_SHOWN = 200


def _check_token(token: object) -> str:
    if not isinstance(token, str):
        raise InvalidArgumentError("the OAuth token must be a str")
    if not _TOKEN.fullmatch(token):
        raise InvalidArgumentError(
            "the OAuth token must be non-empty printable ASCII without spaces"
        )
    return token


def _shown(text: str) -> str:
    text = _UNSAFE.sub("?", text)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def _error_detail(challenge: bytes) -> str | None:
    """What an error challenge says, as ``key=value, ...`` (None if it says nothing)."""
    import json  # only a refused token needs it

    text = challenge.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        # RecursionError: deeply nested arrays from a hostile server.
        document = None
    if not isinstance(document, dict):
        return f"the server's error details are not JSON: {text!r}"
    parts = [
        f"{key}={document[key]}"
        for key in _DETAIL_KEYS
        if isinstance(document.get(key), (str, int)) and not isinstance(document[key], bool)
    ]
    return ", ".join(parts) or None


class _BearerToken(SASLMechanism, ABC):
    """What XOAUTH2 and OAUTHBEARER share: the token, its provider, the error flow."""

    auto_select: ClassVar[bool] = False
    #: What answers the server's error challenge.
    dummy_response: ClassVar[bytes]

    __slots__ = ("_detail", "_failed", "_provider", "_token", "_username")

    def __init__(self, username: str, token: str | TokenProvider) -> None:
        self._username = check_credential(username, "user name")
        self._provider: TokenProvider | None = None
        self._token: str | None = None
        if isinstance(token, str):
            self._token = _check_token(token)
        elif callable(token):
            self._provider = token
        else:
            raise InvalidArgumentError("the OAuth token must be a str or a callable returning one")
        self._detail: str | None = None
        self._failed = False

    @classmethod
    def for_login(cls, username: str, token: str, bindings: ChannelBindings | None = None) -> Self:
        """The ``MECHANISMS`` factory: ``login(user, token, mechanism=cls.name)``.

        :raises InvalidArgumentError: unusable user name or token
        """
        return cls(username, token)

    async def prepare(self) -> None:
        """Fetch the token from the provider, if one was given.

        :raises InvalidArgumentError: the provider returned no usable token
        """
        self._detail = None
        self._failed = False
        if self._provider is not None:
            self._token = None
            result = self._provider()
            if inspect.isawaitable(result):
                result = await result
            self._token = _check_token(result)

    def _bearer(self) -> str:
        if self._token is None:
            raise LocalProtocolError(f"{self.name}: await prepare() before the exchange")
        return self._token

    def respond(self, challenge: bytes) -> bytes:
        """Note the server's error challenge and answer it with the dummy response.

        :raises RemoteProtocolError: a second challenge (only one error is allowed)
        """
        if self._failed:
            raise RemoteProtocolError(f"the server sent another challenge during {self.name}")
        self._failed = True
        detail = _error_detail(challenge)
        if detail is not None:
            detail = _shown(detail)
            if self._token:
                detail = detail.replace(self._token, "[redacted]")
        self._detail = detail
        return self.dummy_response

    def failure_detail(self) -> str | None:
        """The server's reasons from its error challenge (never the token)."""
        return self._detail


class XOAuth2(_BearerToken):
    """XOAUTH2 (Google's and Microsoft's OAuth 2.0 SASL mechanism).

    :param username: the mailbox the token was issued for
    :param token: the access token, or a :data:`TokenProvider`
    :raises InvalidArgumentError: unusable user name or token
    """

    name: ClassVar[str] = "XOAUTH2"
    # Google: "the client should send an empty response" to the error challenge.
    dummy_response: ClassVar[bytes] = b""

    def initial_response(self) -> bytes:
        # "user=" {User} "^A" "auth=Bearer " {Access Token} "^A^A"
        return f"user={self._username}\x01auth=Bearer {self._bearer()}\x01\x01".encode()


class OAuthBearer(_BearerToken):
    """OAUTHBEARER (RFC 7628).

    :param username: the authorization identity (sent as ``a=``)
    :param token: the access token, or a :data:`TokenProvider`
    :param host: the server's host name, sent as ``host=`` when given
    :param port: the server's port, sent as ``port=`` when given
    :raises InvalidArgumentError: unusable user name, token, host or port
    """

    name: ClassVar[str] = "OAUTHBEARER"
    # RFC 7628 §3.2.3: "the client MUST then send ... a single %x01 (control A)
    # character to the server in order to allow the server to finish the exchange".
    dummy_response: ClassVar[bytes] = b"\x01"

    __slots__ = ("_host", "_port")

    def __init__(
        self,
        username: str,
        token: str | TokenProvider,
        *,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        super().__init__(username, token)
        if host is not None and (not isinstance(host, str) or not _TOKEN.fullmatch(host)):
            raise InvalidArgumentError("host must be a host name (printable ASCII)")
        if port is not None and (
            not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536
        ):
            raise InvalidArgumentError("port must be an int from 1 to 65535")
        self._host = host
        self._port = port

    def initial_response(self) -> bytes:
        # RFC 7628 §3.1:
        #   client-resp = (gs2-header kvsep *kvpair kvsep) / kvsep
        #   kvpair      = key "=" value kvsep        kvsep = %x01
        #   auth-value  = "Bearer" 1*SP b64token
        # and RFC 5801 §4 (gs2-header): saslname escapes "," and "=" as "=2C"
        # and "=3D".
        authzid = self._username.replace("=", "=3D").replace(",", "=2C")
        pairs = ""
        if self._host is not None:
            pairs += f"host={self._host}\x01"
        if self._port is not None:
            pairs += f"port={self._port}\x01"
        pairs += f"auth=Bearer {self._bearer()}\x01"
        return f"n,a={authzid},\x01{pairs}\x01".encode()

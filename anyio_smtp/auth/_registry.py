"""The SASL mechanisms ``login()`` knows, by name, and the order it prefers them in."""

from __future__ import annotations

from collections.abc import Callable

from .._errors import InvalidArgumentError
from ._mechanisms import ChannelBindings, CramMD5, Login, Plain, SASLMechanism
from ._oauth import OAuthBearer, XOAuth2
from ._scram import ScramSHA1, ScramSHA1Plus, ScramSHA256, ScramSHA256Plus

__all__ = ("MECHANISMS", "PREFERENCE", "create")


#: The mechanisms ``login()`` knows, by name: each is called with the user name,
#: the password (for XOAUTH2 and OAUTHBEARER: the access token) and the TLS
#: channel bindings (None without TLS).  The -PLUS factories raise
#: ``InvalidArgumentError`` without channel bindings.
MECHANISMS: dict[str, Callable[[str, str, ChannelBindings | None], SASLMechanism]] = {
    ScramSHA256Plus.name: ScramSHA256Plus,
    ScramSHA256.name: ScramSHA256,
    ScramSHA1Plus.name: ScramSHA1Plus,
    ScramSHA1.name: ScramSHA1,
    CramMD5.name: CramMD5,
    Plain.name: Plain,
    Login.name: Login,
    XOAuth2.name: XOAuth2.for_login,
    OAuthBearer.name: OAuthBearer.for_login,
}

#: The order ``login()`` prefers among the mechanisms a server offers,
#: strongest first.  SCRAM proves the password without sending it and checks
#: the server too; -PLUS also binds the exchange to the TLS connection (the
#: client skips -PLUS names without TLS).  CRAM-MD5 keeps the password off the
#: wire but needs it stored in clear on the server; PLAIN and LOGIN send it
#: (inside TLS).  XOAUTH2 and OAUTHBEARER take a token, not a password, so they
#: are never picked on their own.
PREFERENCE: tuple[str, ...] = (
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-1",
    "CRAM-MD5",
    "PLAIN",
    "LOGIN",
)


def create(
    name: str, username: str, password: str, bindings: ChannelBindings | None = None
) -> SASLMechanism:
    """Create the mechanism ``name`` for these credentials.

    :raises InvalidArgumentError: unknown mechanism or unusable credentials
    """
    try:
        factory = MECHANISMS[name.upper()]
    except KeyError:
        known = ", ".join(MECHANISMS)
        raise InvalidArgumentError(
            f"unknown SASL mechanism {name!r}; known ones are {known}"
        ) from None
    return factory(username, password, bindings)

"""SASL mechanisms for ``SMTPClient.login`` (RFC 4954), free of I/O.

``login(username, password)`` picks the strongest mechanism the server offers
from :data:`PREFERENCE` (SCRAM-SHA-256-PLUS first, LOGIN last);
``login(..., mechanism="PLAIN")`` forces one, and an instance of a
:class:`SASLMechanism` subclass may be passed to run a mechanism of your own.

OAuth 2.0 access tokens go through XOAUTH2 or OAUTHBEARER, which are only used
when asked for: ``login(user, token, mechanism="XOAUTH2")``, or with an instance
holding the token or a provider called at login time (no password then)::

    await smtp.login("me@example.com", mechanism=XOAuth2("me@example.com", fetch_token))

``OAuthBearer(user, provider, host=..., port=...)`` is passed the same way.
"""

from ._mechanisms import (
    ChannelBindings,
    CramMD5,
    Login,
    Plain,
    SASLFailure,
    SASLMechanism,
)
from ._oauth import OAuthBearer, TokenProvider, XOAuth2
from ._registry import MECHANISMS, PREFERENCE
from ._scram import ScramSHA1, ScramSHA1Plus, ScramSHA256, ScramSHA256Plus

__all__ = (
    "MECHANISMS",
    "PREFERENCE",
    "ChannelBindings",
    "CramMD5",
    "Login",
    "OAuthBearer",
    "Plain",
    "SASLFailure",
    "SASLMechanism",
    "ScramSHA1",
    "ScramSHA1Plus",
    "ScramSHA256",
    "ScramSHA256Plus",
    "TokenProvider",
    "XOAuth2",
)

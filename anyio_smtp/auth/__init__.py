"""SASL mechanisms for ``SMTPClient.login`` (RFC 4954), free of I/O.

``login(username, password)`` picks the strongest mechanism the server offers
from :data:`PREFERENCE`; ``login(..., mechanism="PLAIN")`` forces one, and an
instance of a :class:`SASLMechanism` subclass may be passed to run a mechanism
of your own.
"""

from ._mechanisms import (
    MECHANISMS,
    PREFERENCE,
    ChannelBindings,
    CramMD5,
    Login,
    Plain,
    SASLFailure,
    SASLMechanism,
)

__all__ = (
    "MECHANISMS",
    "PREFERENCE",
    "ChannelBindings",
    "CramMD5",
    "Login",
    "Plain",
    "SASLFailure",
    "SASLMechanism",
)

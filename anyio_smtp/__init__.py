"""anyio_smtp: an async SMTP client for asyncio and trio, built on anyio.

>>> import anyio_smtp
>>> async def main() -> None:
...     async with anyio_smtp.connect_starttls("smtp.example.com", 587) as smtp:
...         await smtp.login("user@example.com", "secret")
...         message = b"Subject: hi\\r\\n\\r\\nhello\\r\\n"
...         await smtp.send_mail("user@example.com", ["friend@example.org"], message)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import audit
    from ._client import QUIT_TIMEOUT, SendResult, SMTPClient
    from ._connect import SessionOpener, connect, connect_lmtp, connect_starttls, connect_stream
    from ._errors import (
        AuthenticationError,
        ConnectError,
        DataRefusedError,
        DeliveryUnknownError,
        ExtensionNotSupportedError,
        InsecureAuthError,
        InvalidArgumentError,
        InvalidMessageError,
        LocalProtocolError,
        MessageTooLargeError,
        ProtocolError,
        RecipientsRefusedError,
        RemoteProtocolError,
        ReplyError,
        SenderRefusedError,
        ServerDisconnectedError,
        ServiceUnavailableError,
        SessionClosedError,
        SMTPError,
        SMTPTimeoutError,
        StartTLSInjectionError,
        TLSCertificateError,
        TLSError,
    )
    from ._pool import SMTPPool
    from ._protocol.capabilities import Capabilities
    from ._protocol.params import DSN, Recipient
    from ._protocol.replies import EnhancedStatus, Reply
    from ._protocol.state import SessionState
    from ._result import SendBatch
    from ._timeouts import DEFAULT_TIMEOUT, Timeouts
    from ._types import BatchItem, MessageBody

__version__ = "0.1.0.dev0"

__all__ = (
    "DEFAULT_TIMEOUT",
    "DSN",
    "QUIT_TIMEOUT",
    "AuthenticationError",
    "BatchItem",
    "Capabilities",
    "ConnectError",
    "DataRefusedError",
    "DeliveryUnknownError",
    "EnhancedStatus",
    "ExtensionNotSupportedError",
    "InsecureAuthError",
    "InvalidArgumentError",
    "InvalidMessageError",
    "LocalProtocolError",
    "MessageBody",
    "MessageTooLargeError",
    "ProtocolError",
    "Recipient",
    "RecipientsRefusedError",
    "RemoteProtocolError",
    "Reply",
    "ReplyError",
    "SMTPClient",
    "SMTPError",
    "SMTPPool",
    "SMTPTimeoutError",
    "SendBatch",
    "SendResult",
    "SenderRefusedError",
    "ServerDisconnectedError",
    "ServiceUnavailableError",
    "SessionClosedError",
    "SessionOpener",
    "SessionState",
    "StartTLSInjectionError",
    "TLSCertificateError",
    "TLSError",
    "Timeouts",
    "__version__",
    "audit",
    "connect",
    "connect_lmtp",
    "connect_starttls",
    "connect_stream",
)

#: Where each public name lives.  ``import anyio_smtp`` loads none of these
#: modules; the first use of a name loads its module (and what that needs),
#: so a program that imports the package and sends mail later, or never,
#: pays only for what it uses.
_HOMES = {
    "audit": "anyio_smtp.audit",
    "QUIT_TIMEOUT": "anyio_smtp._client",
    "SendResult": "anyio_smtp._client",
    "SMTPClient": "anyio_smtp._client",
    "connect": "anyio_smtp._connect",
    "connect_lmtp": "anyio_smtp._connect",
    "connect_starttls": "anyio_smtp._connect",
    "connect_stream": "anyio_smtp._connect",
    "SessionOpener": "anyio_smtp._connect",
    "AuthenticationError": "anyio_smtp._errors",
    "ConnectError": "anyio_smtp._errors",
    "DataRefusedError": "anyio_smtp._errors",
    "DeliveryUnknownError": "anyio_smtp._errors",
    "ExtensionNotSupportedError": "anyio_smtp._errors",
    "InsecureAuthError": "anyio_smtp._errors",
    "InvalidArgumentError": "anyio_smtp._errors",
    "InvalidMessageError": "anyio_smtp._errors",
    "LocalProtocolError": "anyio_smtp._errors",
    "MessageTooLargeError": "anyio_smtp._errors",
    "ProtocolError": "anyio_smtp._errors",
    "RecipientsRefusedError": "anyio_smtp._errors",
    "RemoteProtocolError": "anyio_smtp._errors",
    "ReplyError": "anyio_smtp._errors",
    "SenderRefusedError": "anyio_smtp._errors",
    "ServerDisconnectedError": "anyio_smtp._errors",
    "ServiceUnavailableError": "anyio_smtp._errors",
    "SessionClosedError": "anyio_smtp._errors",
    "SMTPError": "anyio_smtp._errors",
    "SMTPTimeoutError": "anyio_smtp._errors",
    "StartTLSInjectionError": "anyio_smtp._errors",
    "TLSCertificateError": "anyio_smtp._errors",
    "TLSError": "anyio_smtp._errors",
    "SMTPPool": "anyio_smtp._pool",
    "Capabilities": "anyio_smtp._protocol.capabilities",
    "DSN": "anyio_smtp._protocol.params",
    "Recipient": "anyio_smtp._protocol.params",
    "EnhancedStatus": "anyio_smtp._protocol.replies",
    "Reply": "anyio_smtp._protocol.replies",
    "SessionState": "anyio_smtp._protocol.state",
    "SendBatch": "anyio_smtp._result",
    "DEFAULT_TIMEOUT": "anyio_smtp._timeouts",
    "Timeouts": "anyio_smtp._timeouts",
    "BatchItem": "anyio_smtp._types",
    "MessageBody": "anyio_smtp._types",
}


if not TYPE_CHECKING:
    # Hidden from type checkers, which see the imports above: a misspelt name
    # stays an error for them instead of becoming Any.
    from ._lazy import lazy_names as _lazy_names

    __getattr__, __dir__ = _lazy_names(__name__, _HOMES, globals(), __all__)

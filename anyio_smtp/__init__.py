"""anyio_smtp: an async SMTP client for asyncio and trio, built on anyio.

>>> import anyio_smtp
>>> async def main() -> None:
...     async with anyio_smtp.connect_starttls("smtp.example.com", 587) as smtp:
...         await smtp.login("user@example.com", "secret")
...         message = b"Subject: hi\\r\\n\\r\\nhello\\r\\n"
...         await smtp.send_mail("user@example.com", ["friend@example.org"], message)
"""

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

"""Tools for testing SMTP clients: a scriptable SMTP server and TLS helpers.

The server here is independent of the client code in :mod:`anyio_smtp`; it depends only
on anyio and the standard library (``trustme`` is needed by :func:`throwaway_tls` only).
"""

from ._faults import Fault
from ._messages import ReceivedMessage, TranscriptLine
from ._server import SUPPORTED_AUTH_MECHANISMS, TOKEN_AUTH_MECHANISMS, SMTPTestServer
from ._streams import MemoryByteStream, memory_stream_pair
from ._tls import throwaway_tls

__all__ = (
    "SUPPORTED_AUTH_MECHANISMS",
    "Fault",
    "MemoryByteStream",
    "ReceivedMessage",
    "SMTPTestServer",
    "TOKEN_AUTH_MECHANISMS",
    "TranscriptLine",
    "memory_stream_pair",
    "throwaway_tls",
)

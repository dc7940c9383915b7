"""Tools for testing SMTP clients: a scriptable SMTP server, TLS helpers, pytest fixtures.

The server here is independent of the client code in :mod:`anyio_smtp`; it depends only
on anyio and the standard library (``trustme`` is needed by :class:`ThrowawayCA` and
:func:`throwaway_tls` only). Installing the package also registers a pytest plugin
(:mod:`anyio_smtp.testing._pytest_plugin`) with the fixtures ``smtp_server``,
``smtp_server_factory`` and ``smtp_tls``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._faults import Fault
    from ._messages import ReceivedMessage, TranscriptLine
    from ._pytest_plugin import SMTPServerFactory
    from ._server import SUPPORTED_AUTH_MECHANISMS, TOKEN_AUTH_MECHANISMS, SMTPTestServer
    from ._streams import MemoryByteStream, memory_stream_pair
    from ._tls import ThrowawayCA, throwaway_tls

__all__ = (
    "SUPPORTED_AUTH_MECHANISMS",
    "Fault",
    "MemoryByteStream",
    "ReceivedMessage",
    "SMTPServerFactory",
    "SMTPTestServer",
    "TOKEN_AUTH_MECHANISMS",
    "ThrowawayCA",
    "TranscriptLine",
    "memory_stream_pair",
    "throwaway_tls",
)

#: Where each public name lives.  Importing this package loads none of these modules
#: (the pytest plugin is one of its modules, imported at every pytest start-up); the
#: first use of a name loads its module.
_HOMES = {
    "Fault": "anyio_smtp.testing._faults",
    "ReceivedMessage": "anyio_smtp.testing._messages",
    "TranscriptLine": "anyio_smtp.testing._messages",
    "SMTPServerFactory": "anyio_smtp.testing._pytest_plugin",
    "SUPPORTED_AUTH_MECHANISMS": "anyio_smtp.testing._server",
    "TOKEN_AUTH_MECHANISMS": "anyio_smtp.testing._server",
    "SMTPTestServer": "anyio_smtp.testing._server",
    "MemoryByteStream": "anyio_smtp.testing._streams",
    "memory_stream_pair": "anyio_smtp.testing._streams",
    "ThrowawayCA": "anyio_smtp.testing._tls",
    "throwaway_tls": "anyio_smtp.testing._tls",
}


if not TYPE_CHECKING:
    # Hidden from type checkers, which see the imports above: a misspelt name
    # stays an error for them instead of becoming Any.
    from .._lazy import lazy_names as _lazy_names

    __getattr__, __dir__ = _lazy_names(__name__, _HOMES, globals(), __all__)

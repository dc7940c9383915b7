"""The types of what a caller may pass as a message, for type checkers.

Nothing here imports :mod:`email` at run time: ``email.message.Message`` is
named for type checkers only, and a message object is recognised at run time
without importing the package (:func:`is_email_message`).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterable, Awaitable, Iterable
from typing import TYPE_CHECKING, Protocol, TypeAlias, TypeGuard, Union

from anyio.abc import ByteReceiveStream

from ._protocol.params import Recipient

if TYPE_CHECKING:
    from email.message import Message

__all__ = (
    "AsyncBinaryReadable",
    "BatchItem",
    "BinaryReadable",
    "Chunk",
    "MessageBody",
    "Recipients",
    "is_email_message",
)


class BinaryReadable(Protocol):
    """A binary file: ``read(n)`` returns at most ``n`` bytes, ``b""`` at the end."""

    def read(self, size: int, /) -> bytes: ...


class AsyncBinaryReadable(Protocol):
    """An async binary file such as ``anyio.AsyncFile``: ``await read(n)`` returns bytes."""

    def read(self, size: int, /) -> Awaitable[bytes]: ...


#: One chunk of a streamed message.
Chunk: TypeAlias = bytes | bytearray | memoryview

#: What ``send_mail`` (and a ``send_many`` tuple) accepts as the message: the
#: whole message in memory (``bytes``-like, or ``str``, sent as UTF-8), an
#: ``email.message.Message`` (serialised as ``send_message`` does, with the
#: envelope given by the caller), or, streamed, an iterable or async iterable
#: of ``bytes``, a binary file, an async binary file or an anyio byte stream.
MessageBody: TypeAlias = Union[  # a forward reference needs Union
    bytes,
    bytearray,
    memoryview,
    str,
    "Message",
    BinaryReadable,
    AsyncBinaryReadable,
    ByteReceiveStream,
    Iterable[Chunk],
    AsyncIterable[Chunk],
]

#: The recipients of a message: one address, or an iterable of addresses; a
#: :class:`~anyio_smtp.Recipient` carries its own DSN requests.
Recipients: TypeAlias = str | Recipient | Iterable[str | Recipient]

#: One message of a batch: an email message (envelope from its header fields),
#: or ``(sender, recipients, message)`` as ``send_mail`` takes them.
BatchItem: TypeAlias = Union["Message", tuple[str, Recipients, MessageBody]]


def is_email_message(value: object) -> TypeGuard[Message]:
    """Whether ``value`` is an ``email.message.Message``, without importing :mod:`email`.

    If ``email.message`` was never imported, no object can be a Message.
    """
    module = sys.modules.get("email.message")
    return module is not None and isinstance(value, module.Message)

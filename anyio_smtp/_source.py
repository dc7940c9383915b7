"""Message content: in memory, or streamed from an iterable, a file or an anyio stream.

In-memory content is encoded once, up front, so its size and 8-bit-ness are
known before MAIL.  Streamed content is read ``READ_CHUNK`` bytes at a time
and encoded chunk by chunk while it is sent, so memory stays bounded by a few
chunks whatever the message size; its size is known only if the caller says
(``size=``), and it can be read once.
"""

from __future__ import annotations

import inspect
import io
import operator
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import aclosing
from typing import TypeAlias

import anyio
from anyio.abc import ByteReceiveStream

from ._errors import InvalidArgumentError, InvalidMessageError
from ._protocol.body import EncodedBody, normalize_body, stuff_normalized
from ._types import MessageBody, is_email_message

__all__ = ("READ_CHUNK", "Content", "MessageSource")

#: Bytes read from a streamed source at a time (the memory a streamed message
#: needs is a small multiple of this).
READ_CHUNK = 256 * 1024

#: What ``send_mail`` accepts as the message (kept under its former name).
MessageSource: TypeAlias = MessageBody


class Content:
    """A message's data, ready to be sent once (or, in memory, any number of times)."""

    __slots__ = (
        "_data",
        "_encoded",
        "_normalized",
        "_source",
        "_used",
        "binary",
        "eight_bit",
        "raw_size",
        "size",
    )

    def __init__(
        self,
        *,
        data: bytes | None = None,
        source: AsyncGenerator[bytes, None] | None = None,
        size: int | None = None,
    ) -> None:
        self._data = data
        self._source = source
        self._used = False
        self._encoded: EncodedBody | None = None
        self._normalized: bytes | None = None
        #: The RFC 1870 size, when known.
        self.size = size
        #: The size of the data as given (in memory only).
        self.raw_size: int | None = None
        #: Whether the data has octets above 127 (None: unknown until sent).
        self.eight_bit: bool | None = None
        #: Whether the data holds NUL octets (binary; BINARYMIME material).
        self.binary = False
        if data is not None:
            # One pass now for what MAIL must declare; the DATA form (dot-stuffed)
            # is made from it only if DATA is used.
            self.raw_size = len(data)
            self._normalized = normalize_body(data)
            self.size = len(self._normalized)
            self.eight_bit = not data.isascii()
            self.binary = b"\0" in data

    @classmethod
    def of(cls, message: MessageSource, *, size: int | None = None) -> Content:
        """Wrap what the caller passed as a message.

        :param size: the message size for ``SIZE=`` when the message is streamed
        :raises InvalidArgumentError: not a kind of message this client can send
        """
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise InvalidArgumentError("size must be a non-negative int")
        if isinstance(message, str):
            return cls(data=message.encode("utf-8"))
        if isinstance(message, (bytes, bytearray, memoryview)):
            return cls(data=bytes(message))
        check_streamed(message)
        return cls(source=_chunks(message), size=size)

    @property
    def in_memory(self) -> bool:
        return self._data is not None

    @property
    def encoded(self) -> EncodedBody:
        """The DATA form of in-memory content (dot-stuffed, with the terminator)."""
        if self._encoded is None:
            assert self._normalized is not None
            assert self.size is not None
            self._encoded = EncodedBody(
                stuff_normalized(self._normalized), self.size, bool(self.eight_bit)
            )
        return self._encoded

    def bdat_payload(self, *, binary: bool) -> bytes:
        """The BDAT form of in-memory content: normalised, or unchanged when binary."""
        assert self._data is not None
        assert self._normalized is not None
        return self._data if binary else self._normalized

    def stream(self) -> AsyncGenerator[bytes, None]:
        """The raw chunks of streamed content (once only)."""
        if self._source is None:
            raise InvalidArgumentError("in-memory content has no stream")
        if self._used:
            raise InvalidArgumentError("a streamed message can be sent only once")
        self._used = True
        return self._source


_SUPPORTED = (
    "bytes, str, an email.message.Message, an iterable or async iterable of bytes, "
    "a binary file or an anyio byte stream"
)


def check_streamed(message: object) -> None:
    """Refuse, before any I/O, what can not be sent as a streamed message.

    Only what can be checked without reading is checked: a one-shot iterator
    is never advanced, while the chunks of a list or tuple are all looked at.

    :raises InvalidMessageError: not a kind of message this client can send
    """
    name = type(message).__name__
    if is_email_message(message):
        raise InvalidMessageError(
            "an email.message.Message is sent with send_message(), or as the message "
            "of send_mail() or of a send_many() tuple"
        )
    if isinstance(message, io.TextIOBase) or isinstance(
        getattr(message, "wrapped", None), io.TextIOBase
    ):
        raise InvalidMessageError(
            f"the message is a text file ({name}); open it in binary mode ('rb')"
        )
    if isinstance(message, (Mapping, AbstractSet)):
        raise InvalidMessageError(f"the message must be {_SUPPORTED}, not {name}")
    if isinstance(message, Sequence):
        if not message:
            raise InvalidMessageError("the message has no data (an empty sequence of chunks)")
        for chunk in message:
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                hint = "; encode it, e.g. with .encode()" if isinstance(chunk, str) else ""
                raise InvalidMessageError(
                    f"the message is a {name} holding a {type(chunk).__name__}, "
                    f"where only bytes may go{hint}"
                )
        return
    if _exhausted(message):
        raise InvalidMessageError(
            "this generator has already been read to its end; a streamed message "
            "can be sent only once"
        )
    if not (
        isinstance(message, (ByteReceiveStream, AsyncIterable, Iterable))
        or callable(getattr(message, "read", None))
    ):
        raise InvalidMessageError(f"the message must be {_SUPPORTED}, not {name}")


def _exhausted(source: object) -> bool:
    """A generator, async generator or iterator that has already been read to its end."""
    if inspect.isgenerator(source):
        return inspect.getgeneratorstate(source) == inspect.GEN_CLOSED
    if inspect.isasyncgen(source):
        return source.ag_frame is None
    if isinstance(source, Iterator):
        # Iterators over sized containers know how much is left.
        return operator.length_hint(source, -1) == 0
    return False


def _check_chunk(chunk: object) -> bytes:
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, (bytearray, memoryview)):
        return bytes(chunk)
    raise InvalidArgumentError(f"a streamed message must yield bytes, not {type(chunk).__name__}")


async def _chunks(source: object) -> AsyncGenerator[bytes, None]:
    """Raw chunks from any supported source; refuses a source with no data at all.

    An empty message is almost always a source read twice; sending it would
    deliver an empty message, so the data phase is abandoned instead.
    """
    empty = True
    async with aclosing(_raw_chunks(source)) as chunks:
        async for chunk in chunks:
            empty = False
            yield chunk
    if empty:
        raise InvalidArgumentError(
            "the streamed message has no data (was it read already?); nothing was delivered"
        )


async def _raw_chunks(source: object) -> AsyncGenerator[bytes, None]:
    """Raw chunks from any supported source; empty chunks are skipped."""
    if isinstance(source, ByteReceiveStream):
        while True:
            try:
                chunk = await source.receive(READ_CHUNK)
            except anyio.EndOfStream:
                return
            yield chunk
    read = getattr(source, "read", None)
    if callable(read):
        while True:
            chunk = read(READ_CHUNK)
            if inspect.isawaitable(chunk):
                chunk = await chunk
            data = _check_chunk(chunk)
            if not data:
                return
            yield data
            await anyio.lowlevel.checkpoint()
    elif isinstance(source, AsyncIterable):
        try:
            async for chunk in source:
                data = _check_chunk(chunk)
                if data:
                    yield data
        finally:
            close = getattr(source, "aclose", None)
            if close is not None:
                await close()
    else:
        assert isinstance(source, Iterable)
        for chunk in source:
            data = _check_chunk(chunk)
            if data:
                yield data
            await anyio.lowlevel.checkpoint()

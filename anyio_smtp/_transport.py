"""The I/O boundary: an anyio ByteStream with timeouts, TLS, and error translation.

This is the only module that catches anyio, ssl and OS exceptions.  Each one
becomes an anyio_smtp error, chained with ``from`` so the cause stays visible.
Cancellation is never caught here.

Timeouts (see ``_timeouts``): connecting and each TLS handshake are bounded by
``Timeouts.connect``; each write of at most ``WRITE_CHUNK`` bytes gets its own
deadline, so a large message that keeps flowing never times out while a
stalled peer always does; waits for replies are bounded by the caller with
``deadline()``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import ByteStream, SocketAttribute

from ._errors import (
    ConnectError,
    ServerDisconnectedError,
    SMTPError,
    SMTPTimeoutError,
    TLSCertificateError,
    TLSError,
)
from ._timeouts import Timeouts
from .auth._mechanisms import ChannelBindings

if TYPE_CHECKING:
    import socket
    import ssl

# ssl, socket and anyio.streams.tls (a large part of the import time) are
# imported where they are used: the event loop loads them anyway by the time a
# connection exists, and a program that only imports anyio_smtp does not pay.

__all__ = ("READ_SIZE", "WRITE_CHUNK", "Transport", "default_ssl_context", "open_transport")

#: Most bytes asked for in one receive.
READ_SIZE = 65536
#: Most bytes handed to the stream in one send (one inactivity deadline each).
WRITE_CHUNK = 256 * 1024

_default_context: ssl.SSLContext | None = None


def default_ssl_context() -> ssl.SSLContext:
    """The context used when none is given: system CAs, certificate and host name checks."""
    global _default_context
    if _default_context is None:
        import ssl

        _default_context = ssl.create_default_context()
    return _default_context


def _seconds(timeout: float | None) -> str:
    return f"{timeout:g} s" if timeout is not None else "ever"


class _Translated:
    """A deadline for a block, and foreign exceptions turned into ours (``with`` only).

    Built on a bare cancel scope rather than ``anyio.fail_after``: this sits
    on every write and every wait for a reply, so it avoids a generator-based
    context manager per use.
    """

    __slots__ = ("_action", "_handshake", "_scope", "_timeout")

    def __init__(self, action: str, timeout: float | None, *, handshake: bool = False) -> None:
        self._action = action
        self._timeout = timeout
        self._handshake = handshake
        self._scope: anyio.CancelScope | None = None

    def __enter__(self) -> None:
        if self._timeout is not None:
            self._scope = anyio.CancelScope(deadline=anyio.current_time() + self._timeout)
            self._scope.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        scope = self._scope
        if scope is not None:
            scope.__exit__(exc_type, exc, traceback)
            # As anyio.fail_after decides: our own deadline ended the block.
            if scope.cancelled_caught and anyio.current_time() >= scope.deadline:
                raise SMTPTimeoutError(
                    f"timed out after {_seconds(self._timeout)} {self._action}"
                ) from None
        if exc is None or isinstance(exc, SMTPError) or not isinstance(exc, _FOREIGN):
            return
        raise _translate(exc, self._action, self._timeout, handshake=self._handshake) from exc


#: What the streams and ssl raise, and ``_translate`` turns into our errors.
_FOREIGN = (
    TimeoutError,
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)


def _translate(
    exc: BaseException, action: str, timeout: float | None, *, handshake: bool = False
) -> SMTPError:
    """Our error for a foreign one (chain it with ``from``)."""
    import ssl

    if isinstance(exc, TimeoutError):
        return SMTPTimeoutError(f"timed out after {_seconds(timeout)} {action}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        return TLSCertificateError(f"the server's certificate was refused: {detail}")
    if isinstance(exc, ssl.SSLError):
        return TLSError(f"TLS failed {action}: {exc.reason or exc}")
    if handshake:
        return TLSError(f"the connection was lost {action}")
    return ServerDisconnectedError(f"the connection was lost {action}")


class _OneSenderAtATime(ByteStream):
    """A stream whose sends queue up instead of clashing.

    The sending engine reads replies in one task while it writes in another.
    Over TLS a read may have to write too (TLS 1.3 post-handshake messages),
    and anyio's TLSStream does not serialise that against the writer's send;
    placed under the TLS layer, this keeps the two from meeting on the socket.
    """

    def __init__(self, stream: ByteStream) -> None:
        self._stream = stream
        self._lock = anyio.Lock()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self._stream.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        async with self._lock:
            await self._stream.send(item)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._stream.extra_attributes


def _quickack_socket(stream: ByteStream) -> tuple[socket.socket, int, int] | None:
    """The TCP socket under ``stream`` and the option that turns its delayed ACKs off.

    Linux only (``TCP_QUICKACK``).  On asyncio the socket is the transport's
    wrapper, which has the same ``family``, ``type`` and ``setsockopt``.
    """
    raw: socket.socket | None = stream.extra(SocketAttribute.raw_socket, None)
    if raw is None:
        return None
    import socket

    option: int | None = getattr(socket, "TCP_QUICKACK", None)
    if option is None or getattr(raw, "type", None) != socket.SOCK_STREAM:
        return None
    if getattr(raw, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return None
    return raw, socket.IPPROTO_TCP, option


class Transport:
    """A byte stream to an SMTP server, owned by one client.

    Over TCP on Linux, every wait for replies first puts the socket in
    quick-ACK mode.  A server that writes each reply of a pipelined group on
    its own without TCP_NODELAY (Haraka, for one) holds the second reply back
    (Nagle) until the first is acknowledged, and Linux delays that ACK by up to
    40 ms when the client has nothing to send: per group, not per message.
    """

    __slots__ = ("_quickack", "_stream", "timeouts")

    def __init__(self, stream: ByteStream, *, timeouts: Timeouts) -> None:
        self._stream: ByteStream = _OneSenderAtATime(stream)
        self._quickack = _quickack_socket(stream)
        self.timeouts: Timeouts = timeouts

    @property
    def tls(self) -> bool:
        """Whether the stream is protected by TLS."""
        from anyio.streams.tls import TLSAttribute

        return self._stream.extra(TLSAttribute.ssl_object, None) is not None

    @property
    def tls_version(self) -> str | None:
        from anyio.streams.tls import TLSAttribute

        return self._stream.extra(TLSAttribute.tls_version, None)

    @property
    def tls_cipher(self) -> str | None:
        from anyio.streams.tls import TLSAttribute

        cipher = self._stream.extra(TLSAttribute.cipher, None)
        return cipher[0] if cipher else None

    def channel_bindings(self) -> ChannelBindings | None:
        """TLS channel-binding data for SCRAM -PLUS, or None without TLS."""
        from anyio.streams.tls import TLSAttribute

        ssl_object = self._stream.extra(TLSAttribute.ssl_object, None)
        if ssl_object is None:
            return None
        from .auth._channel_binding import tls_server_end_point

        certificate = ssl_object.getpeercert(binary_form=True)
        # RFC 5929 §3 / RFC 9266: tls-unique is not defined for TLS 1.3.
        unique = None
        if ssl_object.version() in ("TLSv1", "TLSv1.1", "TLSv1.2"):
            unique = ssl_object.get_channel_binding("tls-unique")
        return ChannelBindings(
            tls_server_end_point=tls_server_end_point(certificate) if certificate else None,
            tls_unique=unique,
        )

    def local_address_literal(self) -> str | None:
        """The local IP address as an RFC 5321 address literal, if known."""
        address = self._stream.extra(SocketAttribute.local_address, None)
        if not isinstance(address, tuple):
            return None
        try:
            ip = ipaddress.ip_address(address[0])
        except ValueError:
            return None
        return f"[IPv6:{ip}]" if ip.version == 6 else f"[{ip}]"

    async def send(
        self,
        data: bytes | memoryview,
        *,
        action: str,
        timeout: float | None,
        before_last: Callable[[], object] | None = None,
    ) -> None:
        """Write all of ``data``, each ``WRITE_CHUNK`` under its own ``timeout``.

        :param before_last: called just before the block holding the last byte
            is handed to the stream (from then on, the end may be on the wire)
        """
        if len(data) <= WRITE_CHUNK:
            if before_last is not None:
                before_last()
            with _Translated(action, timeout):
                await self._stream.send(bytes(data))
            return
        view = memoryview(data)
        for start in range(0, len(view), WRITE_CHUNK):
            if before_last is not None and start + WRITE_CHUNK >= len(view):
                before_last()
            with _Translated(action, timeout):
                await self._stream.send(bytes(view[start : start + WRITE_CHUNK]))

    async def receive(self, *, action: str) -> bytes:
        """Receive the next bytes; EOF is an error because a reply is always owed.

        No deadline here: the caller bounds the whole wait for a reply.
        """
        if self._quickack is not None:
            # Linux leaves quick-ACK mode again whenever this side sends; set it
            # anew before each wait (one cheap system call).
            sock, level, option = self._quickack
            try:
                sock.setsockopt(level, option, 1)
            except OSError:
                self._quickack = None
        try:
            return await self._stream.receive(READ_SIZE)
        except SMTPError:
            raise
        except _FOREIGN as exc:
            raise _translate(exc, action, None) from exc

    def deadline(self, action: str, timeout: float | None) -> AbstractContextManager[None]:
        """Bound a whole block (e.g. waiting for one reply) by ``timeout``."""
        return _Translated(action, timeout)

    async def start_tls(self, ssl_context: ssl.SSLContext | None, hostname: str | None) -> None:
        """Wrap the stream in TLS (client side) and complete the handshake."""
        from anyio.streams.tls import TLSStream

        context = ssl_context or default_ssl_context()
        with _Translated("during the TLS handshake", self.timeouts.connect, handshake=True):
            self._stream = await TLSStream.wrap(
                self._stream,
                server_side=False,
                hostname=hostname,
                ssl_context=context,
                # SMTP frames its own end (QUIT/221), so a missing TLS
                # close_notify is no truncation risk; waiting for one could hang.
                standard_compatible=False,
            )

    async def aclose(self) -> None:
        """Close the stream without waiting for the peer."""
        await anyio.aclose_forcefully(self._stream)


async def open_transport(
    host: str,
    port: int,
    *,
    timeouts: Timeouts,
    local_host: str | None = None,
) -> Transport:
    """Open a TCP connection (happy eyeballs over every address of ``host``).

    :raises ConnectError: the connection could not be made
    :raises SMTPTimeoutError: connecting took longer than ``timeouts.connect``
    """
    import socket

    action = f"connecting to {host}:{port}"
    timeout = timeouts.connect
    try:
        with anyio.fail_after(timeout):
            stream = await anyio.connect_tcp(host, port, local_host=local_host)
    except TimeoutError as exc:
        raise SMTPTimeoutError(f"timed out after {_seconds(timeout)} {action}") from exc
    except (OSError, socket.gaierror) as exc:
        raise ConnectError(f"could not connect to {host}:{port}: {exc}") from exc
    return Transport(stream, timeouts=timeouts)

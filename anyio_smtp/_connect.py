"""Opening sessions: plain, implicit TLS, STARTTLS, or over a stream you already have.

Each function returns an object that is both awaitable and an async context
manager, so ``smtp = await connect(...)`` and ``async with connect(...) as
smtp:`` both work.  Arguments are checked when the function is called, before
any connection is made.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING

from anyio.abc import ByteStream

from ._client import SMTPClient, start_session
from ._errors import InvalidArgumentError
from ._protocol.commands import check_domain, check_hostname
from ._timeouts import DEFAULT_TIMEOUTS, Timeouts
from ._transport import Transport, open_transport
from .audit import AuditHook

if TYPE_CHECKING:
    import ssl

__all__ = (
    "IMPLICIT_TLS_PORT",
    "SessionOpener",
    "connect",
    "connect_lmtp",
    "connect_starttls",
    "connect_stream",
    "tls_for_port",
)

#: RFC 8314 §3.3 (and §7.3): the port of message submission over implicit TLS.
IMPLICIT_TLS_PORT = 465


def tls_for_port(port: int, tls: bool | None) -> bool:
    """Whether a session on ``port`` starts with the TLS handshake.

    ``tls`` decides when given; left as None, TLS goes with port 465 (RFC
    8314), where a server says nothing until the handshake is done.

    :raises InvalidArgumentError: ``tls`` is neither a bool nor None
    """
    if tls is None:
        return port == IMPLICIT_TLS_PORT
    if not isinstance(tls, bool):
        raise InvalidArgumentError("tls must be True, False or None (by the port)")
    return tls


class SessionOpener:
    """An SMTP session about to open: ``await`` it, or use it with ``async with``."""

    __slots__ = ("_client", "_open")

    def __init__(self, open_: Callable[[], Awaitable[SMTPClient]]) -> None:
        self._open = open_
        self._client: SMTPClient | None = None

    def __await__(self) -> Generator[object, None, SMTPClient]:
        return self._open().__await__()

    async def __aenter__(self) -> SMTPClient:
        self._client = await self._open()
        return self._client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._client is not None
        await self._client.__aexit__(exc_type, exc, traceback)


def _check_options(
    *,
    timeout: float | Timeouts | None,
    ssl_context: ssl.SSLContext | None,
    ehlo_domain: str | None,
    tls_hostname: str | None,
) -> Timeouts:
    timeouts = Timeouts.of(timeout)
    import ssl

    if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
        raise InvalidArgumentError("ssl_context must be an ssl.SSLContext")
    if ehlo_domain is not None:
        check_domain(ehlo_domain)
    if tls_hostname is not None:
        check_hostname(tls_hostname, "tls_hostname")
    return timeouts


def _check_endpoint(host: str, port: int) -> None:
    check_hostname(host, "host")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise InvalidArgumentError("port must be an int from 1 to 65535")


def _tcp_session(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None,
    tls_hostname: str | None,
    ehlo_domain: str | None,
    timeout: float | Timeouts | None,
    allow_insecure_auth: bool,
    local_host: str | None,
    audit: AuditHook | None,
    implicit_tls: bool = False,
    starttls: bool = False,
    lmtp: bool = False,
) -> SessionOpener:
    """What the TCP entry points share: check the arguments now, connect when awaited."""
    _check_endpoint(host, port)
    timeouts = _check_options(
        timeout=timeout, ssl_context=ssl_context, ehlo_domain=ehlo_domain, tls_hostname=tls_hostname
    )
    verify = tls_hostname or host

    async def open_() -> SMTPClient:
        transport = await open_transport(host, port, timeouts=timeouts, local_host=local_host)
        client = SMTPClient(
            transport,
            tls_hostname=verify,
            ehlo_domain=ehlo_domain,
            allow_insecure_auth=allow_insecure_auth,
            audit=audit,
            lmtp=lmtp,
        )
        return await start_session(
            client,
            host=host,
            port=port,
            implicit_tls=implicit_tls,
            starttls=starttls,
            ssl_context=ssl_context,
            tls_hostname=verify,
        )

    return SessionOpener(open_)


def connect(
    host: str,
    port: int = 25,
    *,
    tls: bool | None = None,
    ssl_context: ssl.SSLContext | None = None,
    tls_hostname: str | None = None,
    ehlo_domain: str | None = None,
    timeout: float | Timeouts | None = DEFAULT_TIMEOUTS,
    allow_insecure_auth: bool = False,
    local_host: str | None = None,
    audit: AuditHook | None = None,
) -> SessionOpener:
    """Open an SMTP session over TCP: plaintext, or implicit TLS (port 465, or ``tls=True``).

    The returned session has read the greeting and said EHLO.  On a plaintext
    session ``starttls()`` may be called next.

    :param host: the server's host name or IP address
    :param port: 25 (relay), 587 (submission; prefer ``connect_starttls``) or
        465 (implicit TLS)
    :param tls: do the TLS handshake right after connecting (RFC 8314); by
        default (None) on port 465 and on no other; ``tls=False`` speaks
        plaintext even on port 465
    :param ssl_context: TLS settings (default: ``ssl.create_default_context()``,
        which verifies the certificate and the host name)
    :param tls_hostname: the name the certificate must carry (default: ``host``)
    :param ehlo_domain: the name to give in EHLO (default: this host's fully
        qualified name when it has one, else its address literal; no DNS lookup)
    :param timeout: a :class:`Timeouts` giving the limit of each kind of wait
        (by default one minute each, ten minutes for the verdict on a message),
        or one number of seconds for all of them; None waits for ever
    :param allow_insecure_auth: permit ``login()`` without TLS
    :param local_host: the local address to connect from
    :param audit: a function or coroutine function called with each
        :mod:`anyio_smtp.audit` event of the session
    :raises ConnectError: the TCP connection failed
    :raises TLSError: the TLS handshake failed (``TLSCertificateError``: verification)
    :raises ReplyError: the server refused the session or EHLO
    :raises SMTPTimeoutError: the server did not answer in time
    :raises InvalidArgumentError: an argument is invalid (raised at call time)
    """
    return _tcp_session(
        host,
        port,
        ssl_context=ssl_context,
        tls_hostname=tls_hostname,
        ehlo_domain=ehlo_domain,
        timeout=timeout,
        allow_insecure_auth=allow_insecure_auth,
        local_host=local_host,
        audit=audit,
        implicit_tls=tls_for_port(port, tls),
    )


def connect_starttls(
    host: str,
    port: int = 587,
    *,
    ssl_context: ssl.SSLContext | None = None,
    tls_hostname: str | None = None,
    ehlo_domain: str | None = None,
    timeout: float | Timeouts | None = DEFAULT_TIMEOUTS,
    allow_insecure_auth: bool = False,
    local_host: str | None = None,
    audit: AuditHook | None = None,
) -> SessionOpener:
    """Open an SMTP session and require STARTTLS before anything else (RFC 3207).

    Connects, reads the greeting, says EHLO, sends STARTTLS, completes the TLS
    handshake on the same connection, forgets what the server advertised and
    says EHLO again.  If STARTTLS is not advertised, is answered with anything
    but 220, or the handshake fails, the session is closed and nothing else is
    sent: there is no fallback to plaintext.

    The other parameters, and the other errors it raises, are those of
    :func:`connect`.

    :param allow_insecure_auth: accepted for symmetry with :func:`connect`
        (the session is always encrypted here)
    :raises ExtensionNotSupportedError: the server does not offer STARTTLS
    :raises StartTLSInjectionError: bytes followed the server's 220
    """
    return _tcp_session(
        host,
        port,
        ssl_context=ssl_context,
        tls_hostname=tls_hostname,
        ehlo_domain=ehlo_domain,
        timeout=timeout,
        allow_insecure_auth=allow_insecure_auth,
        local_host=local_host,
        audit=audit,
        starttls=True,
    )


def connect_stream(
    stream: ByteStream,
    *,
    tls_hostname: str | None = None,
    ehlo_domain: str | None = None,
    timeout: float | Timeouts | None = DEFAULT_TIMEOUTS,
    allow_insecure_auth: bool = False,
    audit: AuditHook | None = None,
    lmtp: bool = False,
) -> SessionOpener:
    """Run an SMTP session over a byte stream you opened yourself.

    Any anyio :class:`~anyio.abc.ByteStream` works: a Unix socket, a tunnel
    through a proxy, an in-memory stream in tests, or a stream already wrapped
    in TLS (then the session knows it is encrypted).  The client owns the
    stream from now on and closes it.  ``starttls()`` upgrades a plaintext
    stream in place with ``anyio.streams.tls.TLSStream.wrap``.  It raises the
    errors of :func:`connect` other than ``ConnectError``.

    :param stream: the open stream; the server's greeting is read from it first
    :param tls_hostname: the name to verify in ``starttls()`` (it can also be
        passed there)
    :param lmtp: speak LMTP (RFC 2033), e.g. to a local delivery agent's Unix
        socket: LHLO, and one result per recipient after the data
    """
    timeouts = _check_options(
        timeout=timeout, ssl_context=None, ehlo_domain=ehlo_domain, tls_hostname=tls_hostname
    )

    async def open_() -> SMTPClient:
        client = SMTPClient(
            Transport(stream, timeouts=timeouts),
            tls_hostname=tls_hostname,
            ehlo_domain=ehlo_domain,
            allow_insecure_auth=allow_insecure_auth,
            audit=audit,
            lmtp=lmtp,
        )
        return await start_session(client)

    return SessionOpener(open_)


def connect_lmtp(
    host: str,
    port: int = 24,
    *,
    tls: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    tls_hostname: str | None = None,
    ehlo_domain: str | None = None,
    timeout: float | Timeouts | None = DEFAULT_TIMEOUTS,
    allow_insecure_auth: bool = False,
    local_host: str | None = None,
    audit: AuditHook | None = None,
) -> SessionOpener:
    """Open an LMTP session (RFC 2033) over TCP.

    LMTP is SMTP for final delivery: the client says LHLO, and after the
    message data the server answers once per accepted recipient, so
    ``SendResult.per_recipient`` tells each recipient's fate and
    ``SendResult.accepted`` lists only those it was delivered to.  Messages go
    by DATA (never BDAT).  For a Unix socket, open it with
    ``anyio.connect_unix`` and use :func:`connect_stream` with ``lmtp=True``.

    :param tls: do the TLS handshake right after connecting (LMTP has no port
        of its own for that, so here it never goes by the port)

    The other parameters are those of :func:`connect`.
    """
    return _tcp_session(
        host,
        port,
        ssl_context=ssl_context,
        tls_hostname=tls_hostname,
        ehlo_domain=ehlo_domain,
        timeout=timeout,
        allow_insecure_auth=allow_insecure_auth,
        local_host=local_host,
        audit=audit,
        implicit_tls=tls,
        lmtp=True,
    )

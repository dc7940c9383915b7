"""Tools shared by the security suite.

* ``paced_stream_pair`` / ``paced_scripted``: like ``memory_stream_pair`` and
  ``tests.client.scripted.scripted``, but each direction holds at most one
  unread write, so a writer waits for its reader as it would on a socket.
* ``tcp_scripted``: a scripted ``Peer`` behind a real loopback TCP listener,
  recording every byte the client wrote.
* ``CountingStream``: counts the send and receive calls of a session and can
  cancel the session at the k-th one.
* TLS: certificates a client must refuse, and a parser of TLS records that
  proves no application data left the client.
* Secrets: capture every log record and search records, reprs and exception
  chains for a credential in any of its encodings.
* Message data: a lenient end-of-data detector, to prove there is exactly one.
"""

from __future__ import annotations

import base64
import datetime
import gc
import logging
import re
import ssl
import traceback
import warnings
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

import anyio
import trustme
from anyio.abc import ByteStream, SocketAttribute, SocketListener, SocketStream
from anyio.lowlevel import checkpoint
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from anyio_smtp.testing import MemoryByteStream, SMTPTestServer, memory_stream_pair
from tests.client.scripted import Peer, Script
from tests.tls import client_context, server_context, shared_ca

__all__ = (
    "CERTIFICATE_FAILURES",
    "PASSWORD",
    "SERVER_NAME",
    "USERNAME",
    "CountingStream",
    "TCPScript",
    "assert_no_application_data",
    "assert_no_secret",
    "assert_single_end_of_data",
    "capture_all_logs",
    "client_tls",
    "exception_texts",
    "paced_scripted",
    "paced_stream_pair",
    "record_texts",
    "refused_certificate_context",
    "resource_warnings",
    "secret_forms",
    "server_tls",
    "serving",
    "tcp_scripted",
)

#: The name every test server's certificate is issued for.
SERVER_NAME = "mx.test"
#: Credentials that must never show up anywhere but, encrypted, on the wire.
USERNAME = "sasl-user-7d3a51"
PASSWORD = "Corr3ct-Horse-Battery-Staple-91!"


# -- streams ---------------------------------------------------------------------------


def paced_stream_pair() -> tuple[MemoryByteStream, MemoryByteStream]:
    """Two connected in-memory streams where each direction buffers one write.

    A second write waits until the reader took the first, so a reader that
    stops reading stalls the writer (as a full socket buffer does), and a
    writer can never run far ahead of its reader.  Both ends record what they
    sent, like :func:`anyio_smtp.testing.memory_stream_pair`.
    """
    a_to_b_send, a_to_b_receive = anyio.create_memory_object_stream[bytes](1)
    b_to_a_send, b_to_a_receive = anyio.create_memory_object_stream[bytes](1)
    return (
        MemoryByteStream(a_to_b_send, b_to_a_receive),
        MemoryByteStream(b_to_a_send, a_to_b_receive),
    )


@asynccontextmanager
async def paced_scripted(script: Script) -> AsyncIterator[MemoryByteStream]:
    """``tests.client.scripted.scripted`` over a :func:`paced_stream_pair`."""
    client_stream, server_stream = paced_stream_pair()
    peer = Peer(server_stream)

    async def run() -> None:
        try:
            await script(peer)
        finally:
            await peer.close()

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        yield client_stream


@asynccontextmanager
async def serving(server: SMTPTestServer) -> AsyncIterator[MemoryByteStream]:
    """Serve one session of ``server`` on an in-memory pair; yield the client's end.

    The client's end is closed when the block is left (if the client has not
    closed it already), so the server's session always ends.
    """
    client_end, server_end = memory_stream_pair()
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve_stream, server_end)
        try:
            yield client_end
        finally:
            await client_end.aclose()


@dataclass
class TCPScript:
    """Where a :func:`tcp_scripted` server listens, and what the client sent it."""

    port: int
    wire: MemoryByteStream
    connections: int = 0

    @property
    def sent(self) -> bytes:
        """Every byte the client wrote on the TCP connection, in order."""
        return bytes(self.wire.sent)


_GONE = (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError)


async def _pump_in(tcp: SocketStream, wire: MemoryByteStream) -> None:
    """Client to script: what arrives on TCP is written (and recorded) by ``wire``."""
    try:
        while True:
            await wire.send(await tcp.receive())
    except anyio.EndOfStream:
        await wire.send_eof()
    except _GONE:
        pass


async def _pump_out(tcp: SocketStream, wire: MemoryByteStream) -> None:
    """Script to client; when the script hangs up, so does the TCP connection."""
    try:
        while True:
            await tcp.send(await wire.receive())
    except _GONE:
        pass
    finally:
        await anyio.aclose_forcefully(tcp)


@asynccontextmanager
async def tcp_scripted(script: Script) -> AsyncIterator[TCPScript]:
    """Run ``script`` as the server of one TCP connection on 127.0.0.1.

    The script drives a scripted ``Peer`` exactly as with ``scripted()``; the
    bytes travel over a real loopback connection, so the client under test is
    opened with ``anyio_smtp.connect``/``connect_starttls``.  The block waits
    for the script to finish.
    """
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener:
        (socket_listener,) = listener.listeners
        assert isinstance(socket_listener, SocketListener)
        wire, server_end = memory_stream_pair()
        result = TCPScript(socket_listener.extra(SocketAttribute.local_port), wire)
        peer = Peer(server_end)

        async def serve() -> None:
            try:
                tcp = await socket_listener.accept()
                result.connections += 1
                async with anyio.create_task_group() as pumps:
                    pumps.start_soon(_pump_in, tcp, wire)
                    pumps.start_soon(_pump_out, tcp, wire)
                    try:
                        await script(peer)
                    finally:
                        await peer.close()
            finally:
                await wire.aclose()
                await server_end.aclose()

        async with anyio.create_task_group() as group:
            group.start_soon(serve)
            try:
                yield result
            except BaseException:
                group.cancel_scope.cancel()
                raise


class CountingStream(ByteStream):
    """Wraps a stream and counts every ``send`` and ``receive`` call on it.

    With ``cancel_at=k`` the k-th call cancels ``scope`` and then meets a
    checkpoint, so the cancellation is delivered exactly at that await, before
    the call reaches the stream underneath.  Every later call meets a
    checkpoint first too, so it reaches the stream only if it is shielded from
    the cancellation.

    :ivar calls: ``"send"`` or ``"receive"`` for every call made so far
    :ivar reached: how many of them went on to the stream underneath
    """

    def __init__(
        self,
        inner: ByteStream,
        *,
        cancel_at: int | None = None,
        scope: anyio.CancelScope | None = None,
    ) -> None:
        if cancel_at is not None and scope is None:
            raise ValueError("cancel_at needs the scope to cancel")
        self.inner = inner
        self.cancel_at = cancel_at
        self.scope = scope
        self.calls: list[str] = []
        self.reached = 0

    async def _count(self, kind: str) -> None:
        self.calls.append(kind)
        if self.scope is not None and self.cancel_at is not None:
            if len(self.calls) == self.cancel_at:
                self.scope.cancel()
            if len(self.calls) >= self.cancel_at:
                await checkpoint()
        self.reached += 1

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await self._count("receive")
        return await self.inner.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await self._count("send")
        await self.inner.send(item)

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Any]:
        return self.inner.extra_attributes


@contextmanager
def resource_warnings() -> Iterator[list[str]]:
    """Collect the ResourceWarnings of objects made in the block, after a garbage collection.

    Objects older than the block are set aside while it runs (``gc.freeze``),
    so the collection at its end is quick and looks at the block's objects only.
    """
    found: list[str] = []
    gc.freeze()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            yield found
            gc.collect()
    finally:
        gc.unfreeze()
    found.extend(str(w.message) for w in caught if issubclass(w.category, ResourceWarning))


# -- TLS -------------------------------------------------------------------------------

#: Each certificate a client must refuse, and what the refusal says.
CERTIFICATE_FAILURES: dict[str, str] = {
    "self-signed": r"self[- ]signed",
    "unknown-ca": r"unable to get local issuer certificate",
    "wrong-host-name": r"[Hh]ostname mismatch",
    "expired": r"certificate has expired",
    "not-yet-valid": r"certificate is not yet valid",
}


def _self_signed_context(identity: str) -> ssl.SSLContext:
    """A server context whose leaf certificate is signed by its own key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(identity)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with trustme.Blob(pem).tempfile() as path:
        context.load_cert_chain(path)
    return context


def refused_certificate_context(kind: str) -> ssl.SSLContext:
    """A server context with a certificate of ``kind`` (a key of CERTIFICATE_FAILURES).

    Clients in these tests trust only ``tests.tls.shared_ca()`` and verify
    ``SERVER_NAME``, so every one of these must be refused.
    """
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    if kind == "self-signed":
        return _self_signed_context(SERVER_NAME)
    if kind == "unknown-ca":
        return server_context(SERVER_NAME, ca=trustme.CA())
    if kind == "wrong-host-name":
        return server_context("other.test", ca=shared_ca())
    if kind == "expired":
        return server_context(SERVER_NAME, not_before=now - 30 * day, not_after=now - day)
    if kind == "not-yet-valid":
        return server_context(SERVER_NAME, not_before=now + day, not_after=now + 30 * day)
    raise ValueError(f"unknown certificate kind {kind!r}")


@cache
def client_tls() -> ssl.SSLContext:
    """``tests.tls.client_context()``, made once: loading the system CAs is slow."""
    return client_context()


@cache
def server_tls() -> ssl.SSLContext:
    """A good server context for ``SERVER_NAME`` from the test CA, made once."""
    return server_context(SERVER_NAME)


_CHANGE_CIPHER_SPEC, _ALERT, _HANDSHAKE, _APPLICATION_DATA = 20, 21, 22, 23
#: The size of an encrypted TLS 1.3 alert: 2 octets of alert, 1 of inner
#: content type and a 16-octet AEAD tag.  The shortest SMTP command ("QUIT"
#: with CRLF) would make 23.
_ENCRYPTED_ALERT = 19


def _tls_records(data: bytes) -> list[tuple[int, int]]:
    """Split ``data`` into TLS records: (content type, length) for each one."""
    records = []
    offset = 0
    while offset < len(data):
        header = data[offset : offset + 5]
        assert len(header) == 5, f"a truncated TLS record header at octet {offset}"
        content_type, major = header[0], header[1]
        assert content_type in (_CHANGE_CIPHER_SPEC, _ALERT, _HANDSHAKE, _APPLICATION_DATA), (
            f"not a TLS record at octet {offset}: {data[offset : offset + 20]!r}"
        )
        assert major == 3, f"not a TLS record version at octet {offset}"
        length = int.from_bytes(header[3:5], "big")
        offset += 5 + length
        assert offset <= len(data), "a truncated TLS record"
        records.append((content_type, length))
    return records


def assert_no_application_data(data: bytes) -> None:
    """Check that ``data`` is nothing but the start of a TLS handshake.

    Every octet must belong to a well-formed TLS record (so no plaintext
    command was written), and no record may carry application data (at most
    one encrypted alert), so no SMTP command was sent through TLS either.
    """
    records = _tls_records(data)
    assert records, "not even a ClientHello was sent"
    assert records[0][0] == _HANDSHAKE
    application = [length for kind, length in records if kind == _APPLICATION_DATA]
    assert len(application) <= 1, f"application data records after the handshake: {records}"
    assert all(length <= _ENCRYPTED_ALERT for length in application), records


# -- secrets ---------------------------------------------------------------------------


def secret_forms(*secrets: str) -> frozenset[str]:
    """Every text in which ``secrets`` could appear in a log or an error.

    For each secret: itself, its ``repr`` escaping, its base64 encoding, and
    the base64 characters it fixes at each of the three alignments it can have
    inside a longer base64 text (such as the AUTH PLAIN message
    ``\\0user\\0password``).
    """
    forms: set[str] = set()
    for secret in secrets:
        forms.add(secret)
        forms.add(repr(secret)[1:-1])
        raw = secret.encode()
        forms.add(base64.b64encode(raw).decode("ascii"))
        for shift in range(3):
            encoded = base64.b64encode(b"\0" * shift + raw).decode("ascii")
            start = 4 if shift else 0
            end = 4 * ((shift + len(raw)) // 3)
            if end - start >= 8:
                forms.add(encoded[start:end])
    return frozenset(forms)


class _RecordCollector(logging.Handler):
    """A handler that keeps every record it is given."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def capture_all_logs() -> Iterator[list[logging.LogRecord]]:
    """Capture every record of every logger, at every level, during the block."""
    root = logging.getLogger()
    library = logging.getLogger("anyio_smtp")
    saved = (root.level, library.level, library.disabled, library.propagate)
    handler = _RecordCollector()
    root.addHandler(handler)
    root.setLevel(1)
    library.setLevel(logging.NOTSET)
    library.disabled = False
    library.propagate = True
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        library.setLevel(saved[1])
        library.disabled, library.propagate = saved[2], saved[3]


def record_texts(record: logging.LogRecord) -> list[str]:
    """Everything a record could show: message, arguments, extras, traceback."""
    texts = [str(record.msg), repr(record.args), repr(vars(record))]
    try:
        texts.append(record.getMessage())
    except (TypeError, ValueError) as exc:  # a malformed record shows its parts
        texts.append(repr(exc))
    if record.exc_info:
        texts.append("".join(traceback.format_exception(*record.exc_info)))
    if record.exc_text:
        texts.append(record.exc_text)
    if record.stack_info:
        texts.append(record.stack_info)
    return texts


def exception_texts(error: BaseException) -> list[str]:
    """str, repr, args and attributes of ``error`` and of every exception chained to it."""
    texts = ["".join(traceback.format_exception(error))]
    seen: set[int] = set()
    pending = [error]
    while pending:
        exc = pending.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        texts += [str(exc), repr(exc), repr(exc.args), repr(getattr(exc, "__notes__", None))]
        texts.append(repr(getattr(exc, "__dict__", {})))
        pending += [linked for linked in (exc.__cause__, exc.__context__) if linked is not None]
        if isinstance(exc, BaseExceptionGroup):
            pending += list(exc.exceptions)
    return texts


def assert_no_secret(texts: Iterable[str], forms: frozenset[str], where: str) -> None:
    for text in texts:
        for form in forms:
            assert form not in text, f"a credential ({form!r}) leaked in {where}: {text!r}"


# -- message data ----------------------------------------------------------------------

# A dot alone between two line-ending characters of any kind: what lenient
# servers take for the end of the message data.
_LONE_DOT = re.compile(rb"(?<=[\r\n])\.(?=[\r\n])")
_BARE_LINE_ENDING = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def _lone_dots(data: bytes) -> list[int]:
    """Where ``data`` (message data as sent after 354) holds a possible end of data.

    The data starts at the beginning of a line, so a leading dot counts too.
    """
    return [match.start() - 2 for match in _LONE_DOT.finditer(b"\r\n" + data)]


def assert_single_end_of_data(data: bytes) -> None:
    """The data holds exactly one end-of-data sequence by any reading: its last five octets."""
    assert data.endswith(b"\r\n.\r\n") or data == b".\r\n", data[-20:]
    assert _lone_dots(data) == [len(data) - 3], f"more than one end of data in {data!r}"
    bare = _BARE_LINE_ENDING.search(data)
    assert bare is None, f"a bare CR or LF at octet {bare.start() if bare else 0}"

"""An SMTP server for tests, written directly on anyio.

How this works
==============

* ``SMTPTestServer`` owns a TCP listener on 127.0.0.1 (port 0) and a task group. Every
  accepted connection, and every stream handed to ``serve_stream()``, becomes one
  ``_Session`` running in its own task (or in the caller's task for ``serve_stream()``).
  Sessions share nothing but the server's records (messages, transcript, counters) and
  its reply-override rules; all of it lives in one thread, so no locking is needed.
* A session keeps the received bytes in one ``bytearray`` plus a read position. Command
  lines are cut with ``bytearray.find(b"\\n")``; message data is delimited with
  ``find(b"\\r\\n.\\r\\n")`` and un-stuffed with one ``bytes.replace()``, so no Python
  code ever loops over single bytes. A command line longer than ``max_line_length`` is
  discarded as it arrives rather than buffered.
* Replies are queued, not sent. The queue is flushed in one ``send()`` right before the
  session has to wait for more input (and before TLS starts or the connection closes).
  A pipelined burst of commands therefore gets its replies in order and in one write.
* Each command handler validates the command and returns an ``_Outcome``: the normal
  reply plus an optional ``apply`` callback that performs the state change (start a
  transaction, add a recipient, enter the data phase, ...). A reply override from
  ``SMTPTestServer.reply()`` replaces the reply text; the state change happens only if
  both the normal reply and the override are positive (2xx/3xx), so an overridden
  refusal has exactly the effect of a real one.
* The server is deliberately independent of the rest of the package: it imports nothing
  from the client, so a client bug cannot be mirrored (and hidden) by shared code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import ClassVar, Literal, Self

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketStream, TaskGroup
from anyio.streams.stapled import MultiListener
from anyio.streams.tls import TLSStream

from ._messages import ReceivedMessage, TranscriptLine

__all__ = ("SMTPTestServer",)

#: Mechanisms the server implements.
SUPPORTED_AUTH_MECHANISMS = ("CRAM-MD5", "PLAIN", "LOGIN")

# Commands after which a client must wait for the reply even with PIPELINING (RFC 2920).
_GROUP_ENDERS = frozenset({"EHLO", "HELO", "STARTTLS", "AUTH", "DATA", "QUIT", "NOOP"})

# Errors meaning "the peer went away or broke the connection"; a session ends quietly on them.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    ssl.SSLError,
    OSError,
)

# ESMTP parameters the server understands, and the EHLO keyword that must have been
# advertised for each.
_MAIL_PARAMS = {
    "SIZE": "SIZE",
    "BODY": "8BITMIME",
    "SMTPUTF8": "SMTPUTF8",
    "AUTH": "AUTH",
    "RET": "DSN",
    "ENVID": "DSN",
    "REQUIRETLS": "REQUIRETLS",
}
_RCPT_PARAMS = {"NOTIFY": "DSN", "ORCPT": "DSN"}


class _LineTooLongError(Exception):
    """A command line exceeded the limit; its bytes have been discarded."""

    def __init__(self, head: bytes, size: int) -> None:
        super().__init__(size)
        self.head = head
        self.size = size


@dataclass(eq=False)
class _Rule:
    verb: str
    text: str
    match: str | None
    remaining: int | None
    close: bool


@dataclass
class _Outcome:
    reply: str
    apply: Callable[[str], None] | None = None


@dataclass
class _Transaction:
    sender: str
    mail_options: tuple[str, ...]
    utf8: bool
    eight_bit: bool
    recipients: list[str] = field(default_factory=list)
    rcpt_options: list[tuple[str, ...]] = field(default_factory=list)


def _split_reply(text: str) -> list[str]:
    lines = [line.rstrip("\r") for line in text.split("\n")]
    if len(lines) > 1 and not lines[-1]:
        lines.pop()
    return lines


def _is_positive(text: str) -> bool:
    return text[:1] in ("2", "3")


def _keywords(reply_lines: list[str]) -> frozenset[str]:
    """The EHLO keywords in an EHLO reply (every line but the first)."""
    words = set()
    for line in reply_lines[1:]:
        parts = line[4:].split()
        if parts:
            words.add(parts[0].upper())
    return frozenset(words)


def _normalize_param(param: str) -> str:
    """Upper-case the keyword of an ESMTP parameter (values can be case-sensitive)."""
    key, has_value, value = param.partition("=")
    return f"{key.upper()}{has_value}{value}"


def _parse_path(arg: str, prefix: str) -> tuple[str, list[str]] | None:
    """Parse ``FROM:<path> params`` / ``TO:<path> params`` (strictly: no space after ':').

    :return: ``(address, params)`` or ``None`` on a syntax error
    """
    if arg[: len(prefix)].upper() != prefix or arg[len(prefix) : len(prefix) + 1] != "<":
        return None
    rest = arg[len(prefix) + 1 :]
    if '"' in rest:
        # A quoted local part may contain '>'; find the first '>' outside quotes.
        quoted = False
        end = -1
        i = 0
        while i < len(rest):
            char = rest[i]
            if char == "\\" and quoted:
                i += 2
                continue
            if char == '"':
                quoted = not quoted
            elif char == ">" and not quoted:
                end = i
                break
            i += 1
    else:
        end = rest.find(">")
    if end < 0:
        return None
    address, tail = rest[:end], rest[end + 1 :]
    if tail and not tail.startswith(" "):
        return None
    if address.startswith("@") and ":" in address:
        # Obsolete source route: "<@relay1,@relay2:user@example.com>".
        address = address.split(":", 1)[1]
    if "<" in address or (" " in address and '"' not in address):
        return None
    return address, tail.split()


class SMTPTestServer:
    """A strict, scriptable SMTP server for tests, running in the caller's event loop.

    Use it as an async context manager: entering it starts listening on
    ``127.0.0.1`` (an ephemeral port, see :attr:`port`); leaving it stops accepting,
    cancels the live sessions and closes everything. It works the same under asyncio
    and trio. :meth:`serve_stream` runs a session on any anyio byte stream, with or
    without the listener.

    :param hostname: the server's name in the greeting and the EHLO reply
    :param extensions: ``None`` for the default EHLO keywords (``PIPELINING``, ``SIZE``,
        ``8BITMIME``, ``SMTPUTF8``, ``ENHANCEDSTATUSCODES``, plus ``STARTTLS`` and
        ``AUTH ...`` when configured and allowed), or the exact EHLO lines to advertise
        (``STARTTLS`` is still left out on a connection that already uses TLS). The server
        accepts an ESMTP parameter only if its extension was advertised in the session.
    :param starttls_context: server-side SSL context; enables ``STARTTLS``
    :param tls_context: server-side SSL context for implicit TLS: every session starts
        with a TLS handshake
    :param users: user name to password; enables ``AUTH`` (``None`` disables it)
    :param auth_mechanisms: the mechanisms to offer and accept, a subset of
        ``CRAM-MD5``, ``PLAIN`` and ``LOGIN``
    :param auth_require_tls: refuse ``AUTH`` with ``538 5.7.11`` (and do not advertise it)
        on a connection without TLS
    :param require_auth: refuse ``MAIL`` with ``530 5.7.0`` until the client authenticated
    :param size_limit: maximum message size in octets: advertised as ``SIZE n`` and
        enforced for ``SIZE=`` parameters and received data (``552 5.3.4``)
    :param max_line_length: longest accepted command line in octets, line ending
        included (longer ones get ``500 5.5.6``)
    :param transcript_data: also record the lines of message data in :attr:`transcript`
    :param refuse_pipelined_after_data: as Haraka does, answer every command that
        arrived together with the end of a message's data (in the same read) with
        ``503 5.5.0 Bad sequence of commands - pipelined after end of DATA``, one
        reply per command, and take none of them up
    """

    def __init__(
        self,
        hostname: str = "mx.test",
        *,
        extensions: Iterable[str] | None = None,
        starttls_context: ssl.SSLContext | None = None,
        tls_context: ssl.SSLContext | None = None,
        users: Mapping[str, str] | None = None,
        auth_mechanisms: Iterable[str] = SUPPORTED_AUTH_MECHANISMS,
        auth_require_tls: bool = True,
        require_auth: bool = False,
        size_limit: int | None = None,
        max_line_length: int = 1000,
        transcript_data: bool = True,
        refuse_pipelined_after_data: bool = False,
    ) -> None:
        mechanisms = tuple(mech.upper() for mech in auth_mechanisms)
        unknown = [mech for mech in mechanisms if mech not in SUPPORTED_AUTH_MECHANISMS]
        if unknown:
            raise ValueError(f"unsupported AUTH mechanisms: {', '.join(unknown)}")
        if size_limit is not None and size_limit < 0:
            raise ValueError("size_limit must not be negative")
        if max_line_length < 3:
            raise ValueError("max_line_length is too small")

        #: Name used in the greeting and the EHLO reply.
        self.hostname = hostname
        self.extensions: tuple[str, ...] | None = None if extensions is None else tuple(extensions)
        self.starttls_context = starttls_context
        self.tls_context = tls_context
        self.users: dict[str, str] | None = None if users is None else dict(users)
        self.auth_mechanisms = mechanisms
        self.auth_require_tls = auth_require_tls
        self.require_auth = require_auth
        self.size_limit = size_limit
        self.max_line_length = max_line_length
        self.transcript_data = transcript_data
        self.refuse_pipelined_after_data = refuse_pipelined_after_data

        #: Address of the listener; the port is 0 until the server has been entered.
        self.host = "127.0.0.1"
        self.port: int = 0
        #: Accepted messages, in arrival order.
        self.messages: list[ReceivedMessage] = []
        #: Every line in both directions, all sessions, in order.
        self.transcript: list[TranscriptLine] = []
        #: Sessions started so far (accepted connections plus served streams).
        self.sessions: int = 0
        #: Sessions that have ended.
        self.sessions_closed: int = 0
        #: Commands that were followed by more client input before their reply was sent,
        #: although PIPELINING was not advertised or the command must end a group.
        self.pipelining_violations = 0
        #: Bare CR or bare LF octets seen in message data (each one counts).
        self.bare_line_ending_violations = 0
        #: Messages with 8-bit data sent without ``BODY=8BITMIME`` or ``SMTPUTF8``.
        self.eight_bit_violations = 0
        #: Notes about sessions that ended abnormally: connection lost or closed in the middle
        #: of a line, of message data or of an AUTH exchange, failed TLS handshake. A client
        #: that closes between commands (with or without QUIT) is not noted here.
        self.session_errors: list[str] = []

        if self.extensions is None:
            self._enhanced = True
        else:
            self._enhanced = any(
                line.split()[:1] == ["ENHANCEDSTATUSCODES"]
                for line in (ext.upper() for ext in self.extensions)
            )
        self._rules: list[_Rule] = []
        self._listener: MultiListener[SocketStream] | None = None
        self._task_group: TaskGroup | None = None
        self._scopes: set[anyio.CancelScope] = set()
        self._changed: anyio.Event | None = None

    def __repr__(self) -> str:
        return (
            f"<SMTPTestServer {self.hostname} at {self.host}:{self.port}, "
            f"{len(self.messages)} message(s), {self.sessions} session(s)>"
        )

    # -- public API --------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` of the listener."""
        return self.host, self.port

    @property
    def active_sessions(self) -> int:
        """Number of sessions currently running."""
        return self.sessions - self.sessions_closed

    def reply(
        self,
        verb: str,
        text: str,
        *,
        match: str | None = None,
        times: int | None = None,
        close: bool = False,
    ) -> None:
        """Override the reply to coming commands.

        Rules are checked newest first; the first one that matches is used. A negative
        override of ``MAIL``, ``RCPT``, ``DATA``, ``EHLO``... leaves the session state as a
        real refusal would; a positive one (2xx/3xx) applies the normal effect if the
        command itself was acceptable. An ``EOM`` override decides whether the message
        is kept (only if the override is 2xx). An ``AUTH`` override answers the ``AUTH``
        command line at once, without any exchange; if it is 2xx the session counts as
        authenticated (as the user ``""``). Overrides apply even where the server would
        refuse the command anyway (e.g. ``RCPT`` without ``MAIL``).

        :param verb: the command (case-insensitive), or ``"GREETING"`` for the greeting,
            or ``"EOM"`` for the reply to the end of message data
        :param text: the reply; several lines are separated by ``\\n`` and each starts with
            the code and its own ``-``/space separator, e.g. ``"250-a\\n250 b"``; the lines
            are sent as given, with CRLF
        :param match: a case-insensitive substring that must occur in the command's
            argument (for ``EOM``: in the message data; the greeting has no argument)
        :param times: how many matching commands the rule applies to; ``None`` for all
        :param close: close the connection after sending the reply
        """
        lines = _split_reply(text)
        if not all(len(line) >= 3 and line[:3].isascii() and line[:3].isdigit() for line in lines):
            raise ValueError(f"every reply line must start with a 3-digit code: {text!r}")
        if times is not None and times < 1:
            raise ValueError("times must be None or at least 1")
        self._rules.append(_Rule(verb.upper(), "\n".join(lines), match, times, close))

    def clear_replies(self) -> None:
        """Drop all reply overrides."""
        self._rules.clear()

    async def serve_stream(self, stream: ByteStream) -> None:
        """Run one SMTP session on an already open byte stream, in the calling task.

        The session starts with the greeting (or with a TLS handshake if the server has a
        ``tls_context``). Returns when the session ends; the stream is closed by then.
        Leaving the server's context cancels the session.

        :param stream: the server's end of the connection
        """
        await self._serve(stream)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` is true.

        The predicate is re-checked whenever the server records something (a transcript
        line, a message, a session starting or ending). Wrap the call in
        :func:`anyio.fail_after` to bound it.

        :param predicate: a cheap check of the server's attributes
        """
        while not predicate():
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    async def wait_for_messages(self, count: int = 1) -> list[ReceivedMessage]:
        """Wait until at least ``count`` messages have been accepted.

        :param count: the number of messages to wait for
        :return: the accepted messages so far
        """
        await self.wait_until(lambda: len(self.messages) >= count)
        return list(self.messages)

    def client_lines(self, session: int | None = None) -> list[str]:
        """The client's transcript lines.

        :param session: restrict to this session index
        :return: the lines, in order
        """
        return self._lines("C", session)

    def server_lines(self, session: int | None = None) -> list[str]:
        """The server's transcript lines.

        :param session: restrict to this session index
        :return: the lines, in order
        """
        return self._lines("S", session)

    async def __aenter__(self) -> Self:
        if self._task_group is not None:
            raise RuntimeError("this SMTPTestServer is already running")
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=0)
        try:
            self.port = listener.extra(SocketAttribute.local_port)
            task_group = anyio.create_task_group()
            await task_group.__aenter__()
        except BaseException:
            await anyio.aclose_forcefully(listener)
            raise
        self._listener = listener
        self._task_group = task_group
        task_group.start_soon(listener.serve, self._serve, task_group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        task_group, listener = self._task_group, self._listener
        if task_group is None or listener is None:
            raise RuntimeError("this SMTPTestServer is not running")
        self._task_group = self._listener = None
        task_group.cancel_scope.cancel()
        for scope in list(self._scopes):
            scope.cancel()
        try:
            if isinstance(exc_value, anyio.get_cancelled_exc_class()):
                return await task_group.__aexit__(exc_type, exc_value, traceback)
            # Any other exception of the body propagates unchanged (not wrapped in an
            # exception group); only errors of the server's own tasks are raised here.
            await task_group.__aexit__(None, None, None)
            return None
        finally:
            await anyio.aclose_forcefully(listener)

    # -- internals ---------------------------------------------------------------------

    def _lines(self, direction: str, session: int | None) -> list[str]:
        return [
            entry.line
            for entry in self.transcript
            if entry.direction == direction and (session is None or entry.session == session)
        ]

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _record(self, session: int, direction: Literal["C", "S"], line: str) -> None:
        self.transcript.append(TranscriptLine(direction, line, session))
        self._notify()

    def _has_rule(self, verb: str) -> bool:
        return any(rule.verb == verb for rule in self._rules)

    def _take_rule(self, verb: str, arg: str) -> _Rule | None:
        for rule in reversed(self._rules):
            if rule.verb != verb:
                continue
            if rule.match is not None and rule.match.lower() not in arg.lower():
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining == 0:
                    self._rules.remove(rule)
            return rule
        return None

    def _ehlo_lines(self, tls: bool) -> list[str]:
        if self.extensions is not None:
            return [
                line
                for line in self.extensions
                if line.strip() and not (tls and line.split()[0].upper() == "STARTTLS")
            ]
        lines = [
            "PIPELINING",
            "SIZE" if self.size_limit is None else f"SIZE {self.size_limit}",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
        ]
        if self.starttls_context is not None and not tls:
            lines.append("STARTTLS")
        if self.users is not None and self.auth_mechanisms and (tls or not self.auth_require_tls):
            lines.append("AUTH " + " ".join(self.auth_mechanisms))
        return lines

    def _fmt(self, code: int, enhanced: str, text: str) -> str:
        if self._enhanced and enhanced:
            return f"{code} {enhanced} {text}"
        return f"{code} {text}"

    async def _serve(self, stream: ByteStream) -> None:
        index = self.sessions
        self.sessions += 1
        self._notify()
        session = _Session(self, stream, index)
        scope = anyio.CancelScope()
        self._scopes.add(scope)
        try:
            with scope:
                try:
                    await session.run()
                except _CONNECTION_ERRORS as exc:
                    self.session_errors.append(
                        f"session {index}: connection lost ({type(exc).__name__}: {exc})"
                    )
        finally:
            self._scopes.discard(scope)
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(session.stream)
            self.sessions_closed += 1
            self._notify()


class _Session:
    """The state and protocol logic of one SMTP connection."""

    def __init__(self, server: SMTPTestServer, stream: ByteStream, index: int) -> None:
        self.server = server
        self.stream = stream
        self.index = index
        self.buf = bytearray()
        self.pos = 0
        self.out: list[bytes] = []
        self.tls = False
        self.greeted = False
        self.esmtp = False
        self.helo = ""
        self.keywords: frozenset[str] = frozenset()
        self.authenticated_as: str | None = None
        self.transaction: _Transaction | None = None
        self.refused = False
        self.closing = False
        self.expect_data = False
        self.start_tls = False
        #: With ``refuse_pipelined_after_data``: the end (in ``buf``) of what
        #: arrived together with the last end of data.
        self.early_until: int | None = None

    # -- I/O -------------------------------------------------------------------------

    def _record(self, direction: Literal["C", "S"], line: bytes | str) -> None:
        if isinstance(line, bytes):
            line = line.decode("utf-8", "backslashreplace")
        self.server._record(self.index, direction, line)

    def _note(self, text: str) -> None:
        self.server.session_errors.append(f"session {self.index}: {text}")

    def _queue(self, text: str) -> None:
        lines = _split_reply(text)
        for line in lines:
            self._record("S", line)
        self.out.append(("\r\n".join(lines) + "\r\n").encode("utf-8"))

    async def _flush(self) -> None:
        if self.out:
            data = b"".join(self.out)
            self.out.clear()
            await self.stream.send(data)

    async def _fill(self) -> bool:
        """Flush pending replies, then append received bytes to the buffer.

        :return: ``False`` at end of stream
        """
        await self._flush()
        if self.pos:
            del self.buf[: self.pos]
            if self.early_until is not None:
                self.early_until -= self.pos
            self.pos = 0
        try:
            chunk = await self.stream.receive()
        except anyio.EndOfStream:
            return False
        self.buf += chunk
        return True

    async def _read_line(self) -> bytes | None:
        """Read one line and strip its CRLF (or bare LF).

        :return: the line, or ``None`` at end of stream
        :raises _LineTooLongError: if the line exceeds ``max_line_length``
        """
        limit = self.server.max_line_length
        scan = self.pos
        discarded = 0
        head = b""
        while True:
            end = self.buf.find(b"\n", scan)
            if end >= 0:
                line = bytes(self.buf[self.pos : end + 1])
                self.pos = end + 1
                if discarded or len(line) > limit:
                    raise _LineTooLongError(head or line[:80], discarded + len(line))
                return line[:-2] if line.endswith(b"\r\n") else line[:-1]
            if len(self.buf) - self.pos > limit:
                if not discarded:
                    head = bytes(self.buf[self.pos : self.pos + 80])
                discarded += len(self.buf) - self.pos
                del self.buf[self.pos :]
            if not await self._fill():
                if discarded or self.pos < len(self.buf):
                    self._note("connection closed in the middle of a line")
                return None
            scan = self.pos

    # -- session flow ------------------------------------------------------------------

    async def run(self) -> None:
        if self.server.tls_context is not None and not await self._handshake(
            self.server.tls_context
        ):
            return
        rule = self.server._take_rule("GREETING", "")
        if rule is not None:
            self._queue(rule.text)
            self.refused = not rule.text.startswith("220")
            self.closing = rule.close
        else:
            self._queue(f"220 {self.server.hostname} ESMTP test server ready")
        while not self.closing:
            try:
                line = await self._read_line()
                if line is None:
                    break
                await self._command(line)
            except _LineTooLongError as exc:
                self._record("C", exc.head + b"... [%d octets]" % exc.size)
                self._queue(self.server._fmt(500, "5.5.6", "Line too long"))
                continue
            if self.closing:
                break
            if self.expect_data:
                self.expect_data = False
                if not await self._data_phase():
                    break
            elif self.start_tls:
                self.start_tls = False
                await self._flush()
                # Anything the client sent after STARTTLS and before the handshake must
                # not be read as if it had come through TLS (command injection).
                del self.buf[:]
                self.pos = 0
                assert self.server.starttls_context is not None
                if not await self._handshake(self.server.starttls_context):
                    break
                self.greeted = self.esmtp = False
                self.helo = ""
                self.keywords = frozenset()
                self.authenticated_as = None
                self.transaction = None
        await self._flush()

    async def _handshake(self, context: ssl.SSLContext) -> bool:
        try:
            self.stream = await TLSStream.wrap(
                self.stream, server_side=True, ssl_context=context, standard_compatible=False
            )
        except _CONNECTION_ERRORS as exc:
            self._note(f"TLS handshake failed ({type(exc).__name__}: {exc})")
            return False
        self.tls = True
        return True

    async def _command(self, line: bytes) -> None:
        self._record("C", line)
        server = self.server
        verb = line.split(b" ", 1)[0].upper().decode("ascii", "replace")
        if self.pos < len(self.buf) and (
            verb in _GROUP_ENDERS or "PIPELINING" not in self.keywords
        ):
            server.pipelining_violations += 1
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._queue(server._fmt(500, "5.5.2", "Error: command is not valid UTF-8"))
            return
        arg = text.partition(" ")[2]
        if self.early_until is not None:
            if self.pos <= self.early_until:
                self._queue(
                    server._fmt(
                        503, "5.5.0", "Bad sequence of commands - pipelined after end of DATA"
                    )
                )
                return
            self.early_until = None
        rule = server._take_rule(verb, arg)

        if verb == "AUTH" and rule is None and not self.refused:
            await self._auth(arg)
            return

        if self.refused and verb != "QUIT":
            outcome = _Outcome(server._fmt(503, "5.5.1", "Error: no service"))
        else:
            handler = self._handlers.get(verb)
            if handler is None:
                outcome = _Outcome(server._fmt(500, "5.5.2", "Error: command not recognized"))
            else:
                outcome = handler(self, arg)

        if rule is None:
            self._queue(outcome.reply)
            if outcome.apply is not None:
                outcome.apply(outcome.reply)
            return
        self._queue(rule.text)
        if verb == "AUTH":
            if rule.text.startswith("2") and not self.refused:
                self.authenticated_as = ""
        elif outcome.apply is not None and _is_positive(rule.text):
            outcome.apply(rule.text)
        if rule.close:
            self.closing = True

    # -- command handlers: validate, return the reply and the state change -------------

    def _ok(self, enhanced: str, text: str = "Ok") -> str:
        return self.server._fmt(250, enhanced, text)

    def _error(self, code: int, enhanced: str, text: str) -> _Outcome:
        return _Outcome(self.server._fmt(code, enhanced, text))

    def _helo(self, arg: str, *, extended: bool) -> _Outcome:
        name = arg.strip()
        if not name or " " in name:
            return self._error(501, "5.5.4", f"Syntax: {'EHLO' if extended else 'HELO'} hostname")

        def apply(reply: str) -> None:
            self.greeted = True
            self.esmtp = extended
            self.helo = name
            self.transaction = None
            self.keywords = _keywords(_split_reply(reply)) if extended else frozenset()

        if not extended:
            return _Outcome(f"250 {self.server.hostname}", apply)
        lines = [self.server.hostname, *self._ehlo_lines()]
        reply = "\n".join(
            f"250{' ' if i == len(lines) - 1 else '-'}{line}" for i, line in enumerate(lines)
        )
        return _Outcome(reply, apply)

    def _ehlo_lines(self) -> list[str]:
        return self.server._ehlo_lines(self.tls)

    def _cmd_ehlo(self, arg: str) -> _Outcome:
        return self._helo(arg, extended=True)

    def _cmd_helo(self, arg: str) -> _Outcome:
        return self._helo(arg, extended=False)

    def _check_params(
        self, params: list[str], allowed: Mapping[str, str]
    ) -> tuple[_Outcome | None, dict[str, str]]:
        values: dict[str, str] = {}
        for param in params:
            key, has_value, value = param.partition("=")
            key = key.upper()
            needed = allowed.get(key)
            if needed is None or needed not in self.keywords:
                return self._error(555, "5.5.4", f"Unsupported parameter: {key}"), values
            if key in ("SMTPUTF8", "REQUIRETLS") and has_value:
                return self._error(501, "5.5.4", f"{key} takes no value"), values
            if key not in ("SMTPUTF8", "REQUIRETLS") and not value:
                return self._error(501, "5.5.4", f"{key} needs a value"), values
            values[key] = value
        return None, values

    def _cmd_mail(self, arg: str) -> _Outcome:
        server = self.server
        if not self.greeted:
            return self._error(503, "5.5.1", "Error: send HELO/EHLO first")
        if server.require_auth and self.authenticated_as is None:
            return self._error(530, "5.7.0", "Authentication required")
        if self.transaction is not None:
            return self._error(503, "5.5.1", "Error: nested MAIL command")
        parsed = _parse_path(arg, "FROM:")
        if parsed is None:
            return self._error(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]")
        address, params = parsed
        error, values = self._check_params(params, _MAIL_PARAMS)
        if error is not None:
            return error
        if "SIZE" in values:
            if not (values["SIZE"].isascii() and values["SIZE"].isdigit()):
                return self._error(501, "5.5.4", "Syntax: SIZE=<number>")
            if server.size_limit is not None and int(values["SIZE"]) > server.size_limit:
                return self._error(552, "5.3.4", "Message size exceeds fixed limit")
        body = values.get("BODY", "7BIT").upper()
        if body not in ("7BIT", "8BITMIME"):
            return self._error(501, "5.5.4", "Syntax: BODY=7BIT|8BITMIME")
        utf8 = "SMTPUTF8" in values
        if not address.isascii() and not utf8:
            return self._error(553, "5.6.7", "Non-ASCII address needs the SMTPUTF8 parameter")
        options = tuple(_normalize_param(param) for param in params)
        transaction = _Transaction(address, options, utf8, utf8 or body == "8BITMIME")

        def apply(reply: str) -> None:
            self.transaction = transaction

        return _Outcome(self._ok("2.1.0"), apply)

    def _cmd_rcpt(self, arg: str) -> _Outcome:
        transaction = self.transaction
        if transaction is None:
            return self._error(503, "5.5.1", "Error: need MAIL command")
        parsed = _parse_path(arg, "TO:")
        if parsed is None:
            return self._error(501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]")
        address, params = parsed
        if "@" not in address and address.lower() != "postmaster":
            return self._error(501, "5.1.3", "Bad recipient address syntax")
        error, _ = self._check_params(params, _RCPT_PARAMS)
        if error is not None:
            return error
        if not address.isascii() and not transaction.utf8:
            return self._error(553, "5.6.7", "Non-ASCII address needs SMTPUTF8 in MAIL")

        options = tuple(_normalize_param(param) for param in params)

        def apply(reply: str) -> None:
            transaction.recipients.append(address)
            transaction.rcpt_options.append(options)

        return _Outcome(self._ok("2.1.5"), apply)

    def _cmd_data(self, arg: str) -> _Outcome:
        if arg.strip():
            return self._error(501, "5.5.4", "Syntax: DATA")
        if self.transaction is None:
            return self._error(503, "5.5.1", "Error: need MAIL command")
        if not self.transaction.recipients:
            return self._error(503, "5.5.1", "Error: need RCPT command")

        def apply(reply: str) -> None:
            self.expect_data = True

        return _Outcome("354 End data with <CR><LF>.<CR><LF>", apply)

    def _cmd_rset(self, arg: str) -> _Outcome:
        if arg.strip():
            return self._error(501, "5.5.4", "Syntax: RSET")

        def apply(reply: str) -> None:
            self.transaction = None

        return _Outcome(self._ok("2.0.0"), apply)

    def _cmd_noop(self, arg: str) -> _Outcome:
        return _Outcome(self._ok("2.0.0"))

    def _cmd_quit(self, arg: str) -> _Outcome:
        if arg.strip():
            return self._error(501, "5.5.4", "Syntax: QUIT")

        def apply(reply: str) -> None:
            self.closing = True

        return _Outcome(self.server._fmt(221, "2.0.0", "Bye"), apply)

    def _cmd_vrfy(self, arg: str) -> _Outcome:
        if not arg.strip():
            return self._error(501, "5.5.4", "Syntax: VRFY address")
        return self._error(252, "2.5.0", "Cannot VRFY user, but will accept message")

    def _cmd_expn(self, arg: str) -> _Outcome:
        return self._error(502, "5.5.1", "EXPN not available")

    def _cmd_help(self, arg: str) -> _Outcome:
        return self._error(
            214,
            "2.0.0",
            "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
        )

    def _cmd_starttls(self, arg: str) -> _Outcome:
        if arg.strip():
            return self._error(501, "5.5.4", "Syntax: STARTTLS")
        if self.tls:
            return self._error(503, "5.5.1", "Error: TLS already active")
        if self.server.starttls_context is None:
            return self._error(454, "4.7.0", "TLS not available")
        if not self.esmtp:
            return self._error(503, "5.5.1", "Error: send EHLO first")

        def apply(reply: str) -> None:
            self.start_tls = True

        return _Outcome(self.server._fmt(220, "2.0.0", "Ready to start TLS"), apply)

    _handlers: ClassVar[Mapping[str, Callable[[_Session, str], _Outcome]]] = {
        "EHLO": _cmd_ehlo,
        "HELO": _cmd_helo,
        "MAIL": _cmd_mail,
        "RCPT": _cmd_rcpt,
        "DATA": _cmd_data,
        "RSET": _cmd_rset,
        "NOOP": _cmd_noop,
        "QUIT": _cmd_quit,
        "VRFY": _cmd_vrfy,
        "EXPN": _cmd_expn,
        "HELP": _cmd_help,
        "STARTTLS": _cmd_starttls,
        # AUTH is interactive and handled by _auth(); this entry serves overrides only.
        "AUTH": _cmd_noop,
    }

    # -- data phase ----------------------------------------------------------------------

    async def _data_phase(self) -> bool:
        """Read message data up to the ``<CRLF>.<CRLF>`` terminator and answer it.

        The data is kept in ``self.buf``, starting at ``self.pos``; offsets are relative to
        ``self.pos`` because ``_fill()`` may compact the buffer.

        :return: ``False`` if the stream ended first
        """
        server = self.server
        limit = server.size_limit
        # Un-stuffing removes at most one octet per three, so wire data beyond this
        # bound is certainly over the limit and need not be kept.
        cap = None if limit is None else limit + limit // 2 + 1024
        scan = 0
        discarded = 0
        bare = 0
        while True:
            start = self.pos
            if not discarded and self.buf[start : start + 3] == b".\r\n":
                content_end, end = start, start + 3
                break
            found = self.buf.find(b"\r\n.\r\n", start + scan)
            if found >= 0:
                content_end, end = found + 2, found + 5
                break
            scan = max(0, len(self.buf) - start - 4)
            if cap is not None and len(self.buf) - start > cap:
                # Too big: count and drop what we have, keeping a tail that may hold the
                # start of the terminator (and never splitting a CRLF).
                cut = len(self.buf) - 4
                if self.buf[cut - 1 : cut] == b"\r":
                    cut -= 1
                bare += _count_bare(self.buf[start:cut])
                discarded += cut - start
                del self.buf[start:cut]
                scan = 0
            if not await self._fill():
                self._note("connection closed during message data")
                return False

        raw = bytes(self.buf[start:end])
        self.pos = end
        if server.refuse_pipelined_after_data and len(self.buf) > end:
            self.early_until = len(self.buf)
        bare += _count_bare(raw)
        server.bare_line_ending_violations += bare
        if server.transcript_data and not discarded:
            for wire_line in raw.split(b"\r\n")[:-1]:
                self._record("C", wire_line)
        content = raw[: content_end - start]
        data = (b"\r\n" + content).replace(b"\r\n.", b"\r\n")[2:] if b"." in content else content

        transaction = self.transaction
        self.transaction = None
        assert transaction is not None
        queue_id = ""
        if discarded or (limit is not None and len(data) > limit):
            reply = server._fmt(552, "5.3.4", "Message size exceeds fixed limit")
        else:
            queue_id = secrets.token_hex(6).upper()
            reply = self._ok("2.0.0", f"Ok: queued as {queue_id}")
        rule = None
        if server._has_rule("EOM"):
            rule = server._take_rule("EOM", data.decode("utf-8", "replace"))
        if rule is not None:
            accepted = reply.startswith("2") and rule.text.startswith("2")
            reply = rule.text
            self.closing = rule.close
        else:
            accepted = reply.startswith("2")
        if accepted:
            if not transaction.eight_bit and not data.isascii():
                server.eight_bit_violations += 1
            server.messages.append(
                ReceivedMessage(
                    sender=transaction.sender,
                    recipients=tuple(transaction.recipients),
                    data=data,
                    mail_options=transaction.mail_options,
                    rcpt_options=tuple(transaction.rcpt_options),
                    tls=self.tls,
                    authenticated_as=self.authenticated_as,
                    raw=raw,
                    session=self.index,
                    queue_id=queue_id,
                    helo=self.helo,
                )
            )
        self._queue(reply)
        return True

    # -- AUTH ----------------------------------------------------------------------------

    async def _auth(self, arg: str) -> None:
        server = self.server
        if server.users is None:
            self._queue(server._fmt(503, "5.5.1", "Error: authentication not enabled"))
            return
        if not self.esmtp:
            self._queue(server._fmt(503, "5.5.1", "Error: send EHLO first"))
            return
        if server.auth_require_tls and not self.tls:
            self._queue(
                server._fmt(
                    538, "5.7.11", "Encryption required for requested authentication mechanism"
                )
            )
            return
        if self.authenticated_as is not None:
            self._queue(server._fmt(503, "5.5.1", "Error: already authenticated"))
            return
        if self.transaction is not None:
            self._queue(server._fmt(503, "5.5.1", "Error: MAIL transaction in progress"))
            return
        parts = arg.split()
        if not parts or len(parts) > 2:
            self._queue(server._fmt(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"))
            return
        mechanism = parts[0].upper()
        initial = parts[1] if len(parts) == 2 else None
        if mechanism not in server.auth_mechanisms:
            self._queue(server._fmt(504, "5.5.4", "Unrecognized authentication type"))
            return

        if mechanism == "PLAIN":
            user = await self._auth_plain(initial)
        elif mechanism == "LOGIN":
            user = await self._auth_login(initial)
        else:
            user = await self._auth_cram_md5(initial)
        if user is not None:
            self.authenticated_as = user
            self._queue(server._fmt(235, "2.7.0", "Authentication successful"))

    def _check_password(self, user: str, password: str) -> bool:
        users = self.server.users or {}
        expected = users.get(user)
        return expected is not None and hmac.compare_digest(
            expected.encode("utf-8"), password.encode("utf-8")
        )

    def _auth_failed(self) -> None:
        self._queue(self.server._fmt(535, "5.7.8", "Authentication credentials invalid"))

    def _decode(self, text: str) -> bytes | None:
        """Decode a base64 client response; queue an error reply if it is malformed."""
        if text == "=":
            return b""
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            self._queue(self.server._fmt(501, "5.5.2", "Cannot decode response"))
            return None

    async def _challenge(self, challenge: str) -> bytes | None:
        """Send a ``334`` challenge and read the decoded response.

        :return: the response, or ``None`` if the exchange is over (a reply was queued, or
            the connection ended)
        """
        self._queue(f"334 {challenge}")
        line = await self._read_line()
        if line is None:
            self._note("connection closed during AUTH")
            self.closing = True
            return None
        self._record("C", line)
        text = line.decode("ascii", "replace").strip()
        if text == "*":
            self._queue(self.server._fmt(501, "5.7.0", "Authentication cancelled"))
            return None
        return self._decode(text)

    async def _auth_plain(self, initial: str | None) -> str | None:
        response = await self._challenge("") if initial is None else self._decode(initial)
        if response is None:
            return None
        fields = response.split(b"\0")
        try:
            authzid, user, password = (part.decode("utf-8") for part in fields)
        except (ValueError, UnicodeDecodeError):
            self._queue(self.server._fmt(501, "5.5.2", "Malformed PLAIN response"))
            return None
        if authzid not in ("", user) or not self._check_password(user, password):
            self._auth_failed()
            return None
        return user

    async def _auth_login(self, initial: str | None) -> str | None:
        if initial is None:
            user_bytes = await self._challenge("VXNlcm5hbWU6")
        else:
            user_bytes = self._decode(initial)
        if user_bytes is None:
            return None
        password_bytes = await self._challenge("UGFzc3dvcmQ6")
        if password_bytes is None:
            return None
        try:
            user = user_bytes.decode("utf-8")
            password = password_bytes.decode("utf-8")
        except UnicodeDecodeError:
            self._auth_failed()
            return None
        if not self._check_password(user, password):
            self._auth_failed()
            return None
        return user

    async def _auth_cram_md5(self, initial: str | None) -> str | None:
        if initial is not None:
            self._queue(self.server._fmt(501, "5.5.4", "CRAM-MD5 takes no initial response"))
            return None
        nonce = f"<{secrets.randbelow(10**12)}.{int(time.time())}@{self.server.hostname}>"
        response = await self._challenge(base64.b64encode(nonce.encode("utf-8")).decode("ascii"))
        if response is None:
            return None
        try:
            user, digest = response.decode("utf-8").rsplit(" ", 1)
        except (ValueError, UnicodeDecodeError):
            self._auth_failed()
            return None
        password = (self.server.users or {}).get(user)
        if password is None:
            self._auth_failed()
            return None
        expected = hmac.new(password.encode("utf-8"), nonce.encode("utf-8"), hashlib.md5)
        if not hmac.compare_digest(expected.hexdigest(), digest.lower()):
            self._auth_failed()
            return None
        return user


def _count_bare(data: bytes | bytearray) -> int:
    """Number of CR not followed by LF plus LF not preceded by CR."""
    crlf = data.count(b"\r\n")
    return (data.count(b"\r") - crlf) + (data.count(b"\n") - crlf)

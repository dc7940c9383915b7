"""One connection to the test server: its state, its I/O and the command loop.

* The received bytes are kept in one ``bytearray`` plus a read position. Command lines
  are cut with ``bytearray.find(b"\\n")``; a command line longer than
  ``max_line_length`` is discarded as it arrives rather than buffered.
* Replies are queued, not sent. The queue is flushed in one ``send()`` right before the
  session has to wait for more input (and before TLS starts or the connection closes), so
  a pipelined burst of commands gets its replies in order and in one write.
* Commands are validated by the handlers in ``_commands``, the data phase is ``_data``,
  the AUTH exchanges are ``_auth``. A session reads the server's configuration, and
  records into it through ``SMTPTestServer._record`` and its rule book ``_rules``.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Literal

import anyio
from anyio.abc import ByteStream
from anyio.streams.tls import TLSStream

from ._auth import authenticate
from ._commands import HANDLERS, Outcome, Transaction, enhanced_codes, fmt
from ._data import parse_bdat, receive_chunk, receive_data
from ._faults import Fault, act, inject
from ._rules import is_positive, split_reply

if TYPE_CHECKING:
    from ._server import SMTPTestServer

__all__ = ("CONNECTION_ERRORS", "Session")

# Commands after which a client must wait for the reply even with PIPELINING (RFC 2920).
_GROUP_ENDERS = frozenset({"EHLO", "HELO", "STARTTLS", "AUTH", "DATA", "QUIT", "NOOP"})

#: Errors meaning "the peer went away or broke the connection"; a session ends quietly on them.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    ssl.SSLError,
    OSError,
)


class _LineTooLongError(Exception):
    """A command line exceeded the limit; its bytes have been discarded."""

    def __init__(self, head: bytes, size: int) -> None:
        super().__init__(size)
        self.head = head
        self.size = size


class Session:
    """The state and protocol flow of one SMTP connection."""

    def __init__(self, server: SMTPTestServer, stream: ByteStream, index: int) -> None:
        self.server = server
        self.stream = stream
        self.index = index
        self.enhanced = enhanced_codes(server.extensions)
        self.buf = bytearray()
        self.pos = 0
        self.out: list[bytes] = []
        self.tls = False
        self.greeted = False
        self.esmtp = False
        self.helo = ""
        self.keywords: frozenset[str] = frozenset()
        self.authenticated_as: str | None = None
        self.transaction: Transaction | None = None
        self.refused = False
        self.closing = False
        self.expect_data = False
        self.start_tls = False
        self.auth_pending = False
        #: With ``refuse_pipelined_after_data``: the end (in ``buf``) of what
        #: arrived together with the last end of data.
        self.early_until: int | None = None
        #: A fault with ``after_bytes`` for the data of the current command.
        self.data_fault: Fault | None = None

    # -- replies and records -----------------------------------------------------------

    def fmt(self, code: int, status: str, text: str) -> str:
        """A reply line, with the enhanced status code if the server uses them."""
        return fmt(self.enhanced, code, status, text)

    def ok(self, status: str, text: str = "Ok") -> str:
        return self.fmt(250, status, text)

    def record(self, direction: Literal["C", "S"], line: bytes | str) -> None:
        if isinstance(line, bytes):
            line = line.decode("utf-8", "backslashreplace")
        self.server._record(self.index, direction, line)

    def note(self, text: str) -> None:
        """Add a note to the server's ``session_errors``."""
        self.server.session_errors.append(f"session {self.index}: {text}")

    def queue(self, text: str) -> None:
        """Queue a reply (recorded in the transcript now, sent at the next flush)."""
        lines = split_reply(text)
        for line in lines:
            self.record("S", line)
        self.out.append(("\r\n".join(lines) + "\r\n").encode("utf-8"))

    # -- I/O -----------------------------------------------------------------------------

    async def flush(self) -> None:
        if self.out:
            data = b"".join(self.out)
            self.out.clear()
            await self.stream.send(data)

    async def fill(self) -> bool:
        """Flush pending replies, then append received bytes to the buffer.

        :return: ``False`` at end of stream
        """
        await self.flush()
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

    async def read_line(self) -> bytes | None:
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
            if not await self.fill():
                if discarded or self.pos < len(self.buf):
                    self.note("connection closed in the middle of a line")
                return None
            scan = self.pos

    async def handshake(self, context: ssl.SSLContext) -> bool:
        try:
            self.stream = await TLSStream.wrap(
                self.stream, server_side=True, ssl_context=context, standard_compatible=False
            )
        except CONNECTION_ERRORS as exc:
            self.note(f"TLS handshake failed ({type(exc).__name__}: {exc})")
            return False
        self.tls = True
        return True

    # -- session flow ------------------------------------------------------------------

    async def run(self) -> None:
        server = self.server
        if server.tls_context is not None and not await self.handshake(server.tls_context):
            return
        fault = server._faults.take_fault("GREETING", "")
        if fault is not None and await act(self, fault, "at GREETING"):
            await self.flush()
            return
        rule = server._rules.take("GREETING", "")
        if rule is not None:
            self.queue(rule.text)
            self.refused = not rule.text.startswith("220")
            self.closing = rule.close
        else:
            self.queue(f"220 {server.hostname} ESMTP test server ready")
        inject(self, fault)
        while not self.closing:
            try:
                line = await self.read_line()
                if line is None:
                    break
                await self.command(line)
            except _LineTooLongError as exc:
                self.record("C", exc.head + b"... [%d octets]" % exc.size)
                self.queue(self.fmt(500, "5.5.6", "Line too long"))
                continue
            if self.closing:
                break
            if self.expect_data:
                self.expect_data = False
                if not await receive_data(self):
                    break
            elif self.start_tls:
                self.start_tls = False
                await self.flush()
                # Anything the client sent after STARTTLS and before the handshake must
                # not be read as if it had come through TLS (command injection).
                del self.buf[:]
                self.pos = 0
                assert server.starttls_context is not None
                if not await self.handshake(server.starttls_context):
                    break
                self.greeted = self.esmtp = False
                self.helo = ""
                self.keywords = frozenset()
                self.authenticated_as = None
                self.transaction = None
        await self.flush()

    async def command(self, line: bytes) -> None:
        self.record("C", line)
        server = self.server
        verb = line.split(b" ", 1)[0].upper().decode("ascii", "replace")
        chunking = verb == "BDAT" and "CHUNKING" in self.keywords and not self.refused
        # A BDAT chunk follows its command at once; the chunk is no pipelined command.
        if (
            self.pos < len(self.buf)
            and not chunking
            and (verb in _GROUP_ENDERS or "PIPELINING" not in self.keywords)
        ):
            server.pipelining_violations += 1
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self.queue(self.fmt(500, "5.5.2", "Error: command is not valid UTF-8"))
            return
        arg = text.partition(" ")[2]
        if self.early_until is not None:
            if self.pos <= self.early_until:
                self.queue(
                    self.fmt(503, "5.5.0", "Bad sequence of commands - pipelined after end of DATA")
                )
                return
            self.early_until = None
        self.data_fault = None
        fault = server._faults.take_fault(verb, arg)
        if fault is not None:
            if fault.after_bytes is not None:
                self.data_fault = fault
                fault = None
            elif await act(self, fault, f"at {verb}"):
                return
        bdat = parse_bdat(arg) if chunking else None
        if bdat is not None:
            if not await receive_chunk(self, arg, *bdat):
                self.closing = True
                return
        else:
            self.reply_to(verb, arg)
        if verb == "AUTH" and self.auth_pending:
            self.auth_pending = False
            await authenticate(self, arg)
        inject(self, fault)

    def reply_to(self, verb: str, arg: str) -> None:
        """Queue the reply to a command (an override's or the handler's) and apply it."""
        server = self.server
        rule = server._rules.take(verb, arg)

        if verb == "AUTH" and rule is None and not self.refused:
            self.auth_pending = True
            return

        if self.refused and verb != "QUIT":
            outcome = Outcome(self.fmt(503, "5.5.1", "Error: no service"))
        else:
            handler = HANDLERS.get(verb)
            if handler is None:
                outcome = Outcome(self.fmt(500, "5.5.2", "Error: command not recognized"))
            else:
                outcome = handler(self, arg)

        if rule is None:
            self.queue(outcome.reply)
            if outcome.apply is not None:
                outcome.apply(outcome.reply)
            return
        self.queue(rule.text)
        if verb == "AUTH":
            if rule.text.startswith("2") and not self.refused:
                self.authenticated_as = ""
        elif outcome.apply is not None and is_positive(rule.text):
            outcome.apply(rule.text)
        if rule.close:
            self.closing = True

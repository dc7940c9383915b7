"""The SMTP client session as a pure state machine: commands in, bytes out; bytes in, replies out.

How this works: ``send(command)`` checks the command against the transition
table, remembers that a reply is owed to it and returns the bytes to write.
``receive_data(bytes)`` feeds what the server sent; ``next_event()`` returns
the next complete reply paired with the command it answers (replies come back
in the order commands were sent, RFC 2920 §3.1), or ``NEED_DATA``.  A caller
may tag each command with an object of its own (``owed=``); the tag comes back
with the reply, so the one queue of replies still owed is this session's.

Nothing here does I/O or knows about anyio, sockets or ssl, so every rule can
be tested by feeding bytes, one at a time if need be.  The rules that protect
the client live here, where they can not be skipped:

* a reply no command is waiting for is never paired with the next command:
  ``send`` refuses to go on while such bytes are buffered (a lone ``421`` is
  reported as the server closing the session);
* after the ``220`` to STARTTLS, any byte already received is refused before
  the TLS handshake (RFC 3207 §5, STARTTLS command injection);
* after TLS starts, every capability is forgotten (RFC 3207 §4.2);
* without PIPELINING, nothing is sent while a reply is owed; with it, only the
  commands RFC 2920 lets into a group.

Any failure leaves the session CLOSED; it can not be used again.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from .._errors import (
    LocalProtocolError,
    RemoteProtocolError,
    ServiceUnavailableError,
    StartTLSInjectionError,
)
from .capabilities import Capabilities
from .commands import Command, EndOfData, Greeting
from .replies import Reply, ReplyParser
from .state import GROUP_END, PIPELINABLE, Event, SessionState, transition

__all__ = ("NEED_DATA", "ReplyEvent", "SMTPSession")


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


#: Returned by ``next_event`` when more bytes must be received first.
NEED_DATA: Final = _NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class ReplyEvent:
    """A reply, the command it answers (None only for an unprompted 421), and its tag."""

    command: Command | None
    reply: Reply
    #: What the caller passed as ``owed`` when it sent the command.
    owed: object = None


class SMTPSession:
    """The sans-IO SMTP client session."""

    __slots__ = ("_parser", "_pending", "authenticated", "capabilities", "extended", "state", "tls")

    def __init__(self, *, tls: bool = False) -> None:
        self.state = SessionState.GREETING
        #: What the latest EHLO reply advertised (empty before EHLO, after HELO
        #: and right after TLS starts).
        self.capabilities = Capabilities()
        #: True once EHLO (rather than HELO) succeeded.
        self.extended = False
        #: Whether the link is encrypted (set at creation or by ``start_tls``).
        self.tls = tls
        #: True after a successful AUTH.
        self.authenticated = False
        self._parser = ReplyParser()
        #: The commands still owed a reply, oldest first, each with the caller's tag.
        self._pending: deque[tuple[Command, object]] = deque([(Greeting(), None)])

    # -- inspection ------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many replies are owed by the server."""
        return len(self._pending)

    @property
    def awaiting(self) -> Command | None:
        """The command whose reply comes next, if any."""
        return self._pending[0][0] if self._pending else None

    @property
    def awaiting_owed(self) -> object:
        """The tag of the command whose reply comes next (None if none or untagged)."""
        return self._pending[0][1] if self._pending else None

    @property
    def closed_by_server(self) -> bool:
        """Whether the session is over (after a ``421``, the server's own close)."""
        return self.state is SessionState.CLOSED

    @property
    def pipelining(self) -> bool:
        """Whether commands may be grouped (the server advertised PIPELINING)."""
        return "PIPELINING" in self.capabilities

    def check(self, event: Event) -> None:
        """Raise if ``event`` is not allowed now (nothing changes).

        :raises LocalProtocolError: not allowed in the current state
        """
        transition(self.state, event)

    # -- outgoing --------------------------------------------------------------------

    def send(self, command: Command, owed: object = None) -> bytes:
        """Record that ``command`` is sent and return its bytes.

        :param owed: a tag of the caller's, returned with the command's reply

        :raises LocalProtocolError: not allowed now
        :raises RemoteProtocolError: the server sent bytes no command asked for
        :raises ServiceUnavailableError: the server sent an unprompted 421
        """
        assert command.event is not None
        state = transition(self.state, command.event)
        self._check_unsolicited()
        self._check_group(command.event)
        self.state = state
        self._pending.append((command, owed))
        return command.encode()

    def send_data(
        self,
        data: bytes,
        *,
        end: bool = False,
        replies: int = 1,
        owed: Sequence[object] | None = None,
    ) -> bytes:
        """Record that encoded message data is sent; ``end`` if it holds the terminator.

        The data must come from ``BodyEncoder``/``encode_body``.

        :param replies: replies owed after the end: 1, or with LMTP one per
            accepted recipient (RFC 2033 §4.2)
        :param owed: with ``end``, a tag for each of those replies (their
            number then gives ``replies``)
        """
        if owed is not None:
            replies = len(owed)
        event = Event.END_OF_DATA if end else Event.BODY_CHUNK
        state = transition(self.state, event)
        self._check_unsolicited()
        self._check_group(event)
        self.state = state
        if end:
            tags = owed if owed is not None else (None,) * replies
            self._pending.extend((EndOfData(), tag) for tag in tags)
        return data

    def _check_group(self, event: Event) -> None:
        if self._pending and not (
            self.pipelining and event in PIPELINABLE and self._pending[-1][0].event not in GROUP_END
        ):
            raise LocalProtocolError(
                f"{event.value} can not be sent while {len(self._pending)} "
                "reply(ies) are still owed"
            )

    def _check_unsolicited(self) -> None:
        if self._pending or not self._parser.buffered:
            return
        count = self._parser.buffered
        try:
            reply = self._parser.next_reply()
        except RemoteProtocolError:
            reply = None
        self.close()
        if reply is not None and reply.code == 421:
            raise ServiceUnavailableError(None, reply)
        detail = f": {reply}" if reply is not None else ""
        raise RemoteProtocolError(
            f"the server sent {count} byte(s) no command was waiting for{detail}"
        )

    # -- incoming --------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the server.

        :raises RemoteProtocolError: an oversized reply line
        """
        try:
            self._parser.receive_data(data)
        except RemoteProtocolError:
            self.close()
            raise

    def next_event(self) -> ReplyEvent | Literal[_NeedData.NEED_DATA]:
        """Return the next reply with its command, or ``NEED_DATA``.

        :raises RemoteProtocolError: a malformed or unsolicited reply, or bytes
            after the 220 to STARTTLS
        """
        try:
            reply = self._parser.next_reply()
        except RemoteProtocolError:
            self.close()
            raise
        if reply is None:
            return NEED_DATA
        if not self._pending:
            if reply.code == 421:
                if self.state is not SessionState.CLOSED:
                    self.state = transition(self.state, Event.SERVICE_CLOSING)
                return ReplyEvent(None, reply)
            self.close()
            raise RemoteProtocolError(
                f"the server sent a reply no command was waiting for: {reply}"
            )
        command, owed = self._pending.popleft()
        if reply.code == 421 and command.event is not Event.QUIT:
            # RFC 5321 §3.8: the server may close "at any time" with 421.
            self._pending.clear()
            self.state = transition(self.state, Event.SERVICE_CLOSING)
            return ReplyEvent(command, reply, owed)
        event = command.reply_event(reply)
        if event is not None:
            self.state = transition(self.state, event)
        if event is Event.HELLO_OK:
            self._hello_done(command, reply)
        elif event is Event.STARTTLS_READY and self._parser.buffered:
            # RFC 3207 §5: bytes received before the handshake could only have
            # been injected by someone on the path; never let TLS inherit them.
            residue = self._parser.buffered
            self.close()
            raise StartTLSInjectionError(residue)
        elif event is Event.AUTH_DONE and reply.code == 235:
            self.authenticated = True
        elif event is Event.CLOSE:
            self._pending.clear()
        return ReplyEvent(command, reply, owed)

    def _hello_done(self, command: Command, reply: Reply) -> None:
        self.extended = command.event is Event.EHLO
        if self.extended:
            self.capabilities = Capabilities.from_ehlo(reply.lines)
        else:
            self.capabilities = Capabilities(greeting=reply.lines[0])
        # RFC 2034 §3: enhanced codes are used only once the server advertised them.
        self._parser.enhanced_status_codes = "ENHANCEDSTATUSCODES" in self.capabilities

    @property
    def unread(self) -> int:
        """Received bytes not yet returned as part of a reply."""
        return self._parser.buffered

    # -- the session as a whole ------------------------------------------------------

    def start_tls(self) -> None:
        """Record that the TLS handshake succeeded; capabilities are forgotten."""
        state = transition(self.state, Event.TLS_STARTED)
        if self._parser.buffered:
            # Bytes that arrived after the 220 but before the handshake (RFC 3207 §5).
            residue = self._parser.buffered
            self.close()
            raise StartTLSInjectionError(residue)
        self.state = state
        self.tls = True
        self.capabilities = Capabilities()
        self.extended = False
        self._parser.enhanced_status_codes = False

    def close(self) -> None:
        """End the session (idempotent); every later ``send`` fails."""
        if self.state is not SessionState.CLOSED:
            self.state = transition(self.state, Event.CLOSE)
        self._pending.clear()

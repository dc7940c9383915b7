"""SMTP replies and an incremental, bounded reply parser.

How this works: bytes from the server are appended to one buffer.  ``next_reply``
looks for complete lines (``\\n``-terminated; a preceding ``\\r`` is dropped, so
LF-only servers work), remembering where it stopped so no byte is scanned twice,
and collects lines until one has a space (or nothing) after its code.  Every
limit is a named constant; crossing one raises ``RemoteProtocolError`` and the
session is dead, because after a framing error there is no safe way to find the
start of the next reply.

RFC 5321 §4.2:  ``Reply-line = *( Reply-code "-" [ textstring ] CRLF )
Reply-code [ SP textstring ] CRLF`` and "the reply code ... MUST be the same"
on every line of a multiline reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .._errors import RemoteProtocolError

__all__ = (
    "MAX_REPLY_LINES",
    "MAX_REPLY_LINE_LENGTH",
    "MAX_REPLY_SIZE",
    "EnhancedStatus",
    "Reply",
    "ReplyParser",
)

#: Longest reply line accepted, in octets without the line ending.  RFC 5321
#: §4.5.3.1.5 allows 512 octets with the CRLF; real servers write longer EHLO
#: and error lines, so we accept about four times that and no more.
MAX_REPLY_LINE_LENGTH = 2048
#: Most lines in one reply (an EHLO reply of a large server has about 20).
MAX_REPLY_LINES = 256
#: Most octets in one reply, line endings included.
MAX_REPLY_SIZE = 64 * 1024

# RFC 3463 §2 / RFC 2034 §4: "status-code = class "." subject "." detail" with
# class 2, 4 or 5, subject and detail 1 to 3 digits; the code is followed by a
# space or ends the line.
_ENHANCED = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?= |\t|$)")


# RFC 3463 §3 (and RFC 4954 §6, RFC 3030, RFC 8689 for a few 5.7.x codes): what the
# common enhanced status codes mean, by (subject, detail).
_SUBJECTS = {
    0: "other or undefined status",
    1: "addressing status",
    2: "mailbox status",
    3: "mail system status",
    4: "network and routing status",
    5: "mail delivery protocol status",
    6: "message content or media status",
    7: "security or policy status",
}
_MEANINGS = {
    (0, 0): "other undefined status",
    (1, 0): "other address status",
    (1, 1): "bad destination mailbox address",
    (1, 2): "bad destination system address",
    (1, 3): "bad destination mailbox address syntax",
    (1, 4): "destination mailbox address ambiguous",
    (1, 5): "destination address valid",
    (1, 6): "destination mailbox has moved",
    (1, 7): "bad sender's mailbox address syntax",
    (1, 8): "bad sender's system address",
    (2, 0): "other or undefined mailbox status",
    (2, 1): "mailbox disabled, not accepting messages",
    (2, 2): "mailbox full",
    (2, 3): "message length exceeds administrative limit",
    (2, 4): "mailing list expansion problem",
    (3, 0): "other or undefined mail system status",
    (3, 1): "mail system full",
    (3, 2): "system not accepting network messages",
    (3, 3): "system not capable of selected features",
    (3, 4): "message too big for system",
    (3, 5): "system incorrectly configured",
    (4, 0): "other or undefined network or routing status",
    (4, 1): "no answer from host",
    (4, 2): "bad connection",
    (4, 3): "directory server failure",
    (4, 4): "unable to route",
    (4, 5): "mail system congestion",
    (4, 6): "routing loop detected",
    (4, 7): "delivery time expired",
    (5, 0): "other or undefined protocol status",
    (5, 1): "invalid command",
    (5, 2): "syntax error",
    (5, 3): "too many recipients",
    (5, 4): "invalid command arguments",
    (5, 5): "wrong protocol version",
    (5, 6): "authentication exchange line is too long",
    (6, 0): "other or undefined media error",
    (6, 1): "media not supported",
    (6, 2): "conversion required and prohibited",
    (6, 3): "conversion required but not supported",
    (6, 4): "conversion with loss performed",
    (6, 5): "conversion failed",
    (7, 0): "other or undefined security status",
    (7, 1): "delivery not authorized, message refused",
    (7, 2): "mailing list expansion prohibited",
    (7, 3): "security conversion required but not possible",
    (7, 4): "security features not supported",
    (7, 5): "cryptographic failure",
    (7, 6): "cryptographic algorithm not supported",
    (7, 7): "message integrity failure",
    (7, 8): "authentication credentials invalid",
    (7, 9): "authentication mechanism is too weak",
    (7, 10): "encryption needed",
    (7, 11): "encryption required for requested authentication mechanism",
    (7, 12): "a password transition is needed",
    (7, 13): "user account disabled",
    (7, 14): "trust relationship required",
    (7, 30): "REQUIRETLS support required",
}


@dataclass(frozen=True, slots=True)
class EnhancedStatus:
    """An RFC 3463 enhanced status code, ``class.subject.detail``.

    >>> status = EnhancedStatus.parse("5.1.1")
    >>> status.is_permanent, status.subject_text, status.meaning
    (True, 'addressing status', 'bad destination mailbox address')
    """

    class_: int
    subject: int
    detail: int

    @classmethod
    def parse(cls, text: str) -> EnhancedStatus:
        """Parse ``"5.1.1"``; raises ValueError for anything else."""
        match = _ENHANCED.fullmatch(text)
        if match is None:
            raise ValueError(f"not an enhanced status code: {text!r}")
        return cls(int(match[1]), int(match[2]), int(match[3]))

    @property
    def is_success(self) -> bool:
        return self.class_ == 2

    @property
    def is_transient(self) -> bool:
        """Class 4: "persistent transient failure" (RFC 3463 §3.1)."""
        return self.class_ == 4

    @property
    def is_permanent(self) -> bool:
        """Class 5: "permanent failure" (RFC 3463 §3.1)."""
        return self.class_ == 5

    @property
    def subject_text(self) -> str:
        """What the subject digit is about, e.g. "addressing status"."""
        return _SUBJECTS.get(self.subject, "unknown subject")

    @property
    def meaning(self) -> str | None:
        """A short meaning for the common codes of RFC 3463 and its successors."""
        return _MEANINGS.get((self.subject, self.detail))

    def __str__(self) -> str:
        return f"{self.class_}.{self.subject}.{self.detail}"


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete server reply.

    :ivar code: the three-digit reply code
    :ivar lines: the text of each line exactly as received (after the code and
        its separator), decoded as UTF-8 with invalid bytes replaced
    :ivar enhanced_status: the RFC 3463 enhanced status code of the first line,
        e.g. ``"5.1.1"``, when the server advertised ENHANCEDSTATUSCODES; else None
    """

    code: int
    lines: tuple[str, ...] = ("",)
    enhanced_status: str | None = None

    @property
    def message(self) -> str:
        """The text lines joined by ``\\n``, each without its enhanced status code."""
        if self.enhanced_status is None:
            return "\n".join(self.lines)
        return "\n".join(_strip_status(self.code, line) for line in self.lines)

    @property
    def enhanced(self) -> EnhancedStatus | None:
        """The enhanced status code as an :class:`EnhancedStatus`, or None."""
        return EnhancedStatus.parse(self.enhanced_status) if self.enhanced_status else None

    @property
    def is_positive(self) -> bool:
        """True for a 2xx reply (the command succeeded)."""
        return 200 <= self.code < 300

    @property
    def is_intermediate(self) -> bool:
        """True for a 3xx reply (the server waits for more, e.g. 354 or 334)."""
        return 300 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        """True for a 4xx reply: a temporary failure, worth retrying later."""
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        """True for a 5xx reply: a permanent failure, retrying unchanged fails again."""
        return 500 <= self.code < 600

    def __str__(self) -> str:
        text = " ".join(line for line in self.lines if line)
        return f"{self.code} {text}" if text else str(self.code)


def _strip_status(code: int, line: str) -> str:
    # RFC 2034 §4: the enhanced code prefixes the text of each line of the reply.
    match = _ENHANCED.match(line)
    if match is None or int(match[1]) != code // 100:
        return line
    rest = line[match.end() :]
    return rest[1:] if rest[:1] in (" ", "\t") else rest


def parse_enhanced_status(code: int, text: str) -> str | None:
    """Return the enhanced status code at the start of ``text``, or None.

    The class must agree with the reply code (RFC 3463 §2: "the class ... of the
    enhanced status code must match the first digit of the reply code"); a
    mismatch is treated as ordinary text.
    """
    match = _ENHANCED.match(text)
    if match is None or int(match[1]) != code // 100:
        return None
    return f"{match[1]}.{match[2]}.{match[3]}"


class ReplyParser:
    """Turns received bytes into :class:`Reply` objects, incrementally.

    >>> parser = ReplyParser()
    >>> parser.receive_data(b"250-mx.example\\r\\n250 SIZE 1000\\r\\n")
    >>> parser.next_reply()
    Reply(code=250, lines=('mx.example', 'SIZE 1000'), enhanced_status=None)
    """

    __slots__ = ("_buffer", "_code", "_lines", "_reply_size", "_scan_from", "enhanced_status_codes")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scan_from = 0  # bytes of _buffer already known to hold no b"\n"
        self._code = 0
        self._lines: list[str] = []
        self._reply_size = 0
        #: Parse enhanced status codes (set when the server advertised
        #: ENHANCEDSTATUSCODES in its latest EHLO reply).
        self.enhanced_status_codes = False

    @property
    def buffered(self) -> int:
        """How many received bytes are not part of a reply returned yet."""
        return len(self._buffer) + self._reply_size

    def receive_data(self, data: bytes) -> None:
        """Add bytes received from the server."""
        self._buffer += data
        # Fail as soon as an unterminated line is too long, whatever the reads.
        if len(self._buffer) > MAX_REPLY_LINE_LENGTH + 2:
            self._check_unterminated()

    def _check_unterminated(self) -> None:
        buffer = self._buffer
        if len(buffer) - (buffer.rfind(b"\n") + 1) > MAX_REPLY_LINE_LENGTH + 2:
            raise RemoteProtocolError(
                f"reply line longer than {MAX_REPLY_LINE_LENGTH} octets without an end"
            )

    def next_reply(self) -> Reply | None:
        """Return the next complete reply, or None if more data is needed.

        :raises RemoteProtocolError: malformed or oversized reply
        """
        buffer = self._buffer
        while True:
            end = buffer.find(b"\n", self._scan_from)
            if end == -1:
                self._scan_from = len(buffer)
                self._check_unterminated()
                return None
            raw = bytes(buffer[:end])
            del buffer[: end + 1]
            self._scan_from = 0
            reply = self._feed_line(raw, end + 1)
            if reply is not None:
                return reply

    def _feed_line(self, raw: bytes, size: int) -> Reply | None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > MAX_REPLY_LINE_LENGTH:
            raise RemoteProtocolError(f"reply line longer than {MAX_REPLY_LINE_LENGTH} octets")
        head = raw[:3]
        separator = raw[3:4]
        if (
            len(head) != 3
            or not head.isdigit()
            or head[0] not in b"2345"
            or separator not in (b"", b" ", b"-")
        ):
            raise RemoteProtocolError(f"malformed reply line {_preview(raw)}")
        code = int(head)
        if self._lines and code != self._code:
            raise RemoteProtocolError(
                f"reply code changed from {self._code} to {code} inside a multiline reply"
            )
        self._code = code
        self._reply_size += size
        if len(self._lines) >= MAX_REPLY_LINES or self._reply_size > MAX_REPLY_SIZE:
            raise RemoteProtocolError(
                f"reply longer than {MAX_REPLY_LINES} lines or {MAX_REPLY_SIZE} octets"
            )
        self._lines.append(raw[4:].decode("utf-8", "replace"))
        if separator == b"-":
            return None
        lines = tuple(self._lines)
        self._lines = []
        self._reply_size = 0
        enhanced = parse_enhanced_status(code, lines[0]) if self.enhanced_status_codes else None
        return Reply(code, lines, enhanced)


def _preview(raw: bytes) -> str:
    """A short, printable rendering of a bad line for an error message."""
    text = raw[:40].decode("ascii", "backslashreplace")
    return repr(text + ("..." if len(raw) > 40 else ""))

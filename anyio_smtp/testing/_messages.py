"""Records kept by :class:`~anyio_smtp.testing.SMTPTestServer`."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Literal

__all__ = ("ReceivedMessage", "TranscriptLine")


@dataclass(frozen=True)
class ReceivedMessage:
    """A message the test server accepted (the end-of-data reply was 2xx).

    :param sender: the reverse-path without angle brackets; ``""`` for ``MAIL FROM:<>``
    :param recipients: the accepted forward-paths, without angle brackets, in order
    :param data: the message content as the client meant it: dot-unstuffed, line endings
        exactly as received, without the terminating ``.`` line
    :param mail_options: the ESMTP parameters of ``MAIL`` in the order sent, keywords
        upper-cased and values as sent (e.g. ``("SIZE=12", "BODY=8BITMIME")``)
    :param rcpt_options: the ESMTP parameters of each accepted ``RCPT`` (same form),
        parallel to ``recipients``
    :param tls: whether the session was encrypted when the message arrived
    :param authenticated_as: the authenticated user name, or ``None``
    :param raw: the bytes of the data phase as they were on the wire, dot-stuffing and the
        terminating ``.`` line included
    :param session: index of the session that delivered the message (see
        :attr:`TranscriptLine.session`)
    :param queue_id: the id the server announced in its ``250`` reply
    :param helo: the name the client gave in ``EHLO``/``HELO``
    """

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    mail_options: tuple[str, ...] = ()
    rcpt_options: tuple[tuple[str, ...], ...] = ()
    tls: bool = False
    authenticated_as: str | None = None
    raw: bytes = b""
    session: int = 0
    queue_id: str = ""
    helo: str = ""

    def as_email(self) -> EmailMessage:
        """Parse :attr:`data` with the standard library's modern e-mail API.

        :return: the parsed message (policy :data:`email.policy.default`)
        """
        return email.message_from_bytes(self.data, policy=email.policy.default)


@dataclass(frozen=True)
class TranscriptLine:
    """One line of an SMTP conversation, as seen by the test server.

    :param direction: ``"C"`` for a line the client sent, ``"S"`` for a line the server sent
    :param line: the line without its line ending (decoded as UTF-8; undecodable bytes are
        shown as backslash escapes)
    :param session: index of the session, counting from 0 in the order sessions started
    """

    direction: Literal["C", "S"]
    line: str
    session: int = 0

    def __str__(self) -> str:
        return f"[{self.session}] {self.direction}: {self.line}"

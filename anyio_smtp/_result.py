"""What a successful send returns."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ._protocol.replies import Reply

__all__ = ("SendResult", "queue_id_of")

# Queue ids in final replies: Postfix "queued as 4Xz...", Exim "id=1tX...-000A".
_QUEUE_ID_PATTERNS = (
    re.compile(r"\bqueued as ([A-Za-z0-9]{6,})"),
    re.compile(r"\bid=([A-Za-z0-9-]{6,})"),
)


@dataclass(frozen=True, slots=True)
class SendResult:
    """What became of a message the server accepted.

    :ivar reply: the server's final reply to the message
    :ivar accepted: the recipients the server accepted, in the order given
    :ivar rejected: each refused recipient and the server's reply to it
    :ivar per_recipient: with LMTP, the reply after the data for each recipient
        (delivered or not); empty for SMTP
    """

    reply: Reply
    accepted: tuple[str, ...]
    rejected: Mapping[str, Reply] = field(default_factory=lambda: MappingProxyType({}))
    #: LMTP (RFC 2033): each accepted recipient's own reply after the data.
    per_recipient: Mapping[str, Reply] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def queue_id(self) -> str | None:
        """The server's queue id for the message, when its reply names one."""
        return queue_id_of(self.reply)


def queue_id_of(reply: Reply) -> str | None:
    """The queue id a final reply names (Postfix, Exim style), or None."""
    for pattern in _QUEUE_ID_PATTERNS:
        match = pattern.search(reply.message)
        if match:
            return match[1]
    return None

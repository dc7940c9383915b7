"""Structured audit events of an SMTP session.

Pass a callable as ``audit=`` to any connect function; it is called with each
event as it happens, and may be a plain function or a coroutine function::

    def record(event: anyio_smtp.audit.AuditEvent) -> None:
        log.info("smtp %s", event)

    async with anyio_smtp.connect_starttls(host, audit=record) as smtp: ...

A full session gives, in order: ``Connected``, ``GreetingReceived``, [``TLSStarted``],
[``Authenticated``], then for each message ``SenderAccepted``, ``RecipientAccepted``
or ``RecipientRejected`` per recipient, ``MessageAccepted`` (or the matching
``...Rejected`` events), and finally ``SessionQuit``.  A session that ends by a
failure gives exactly one ``SessionAborted`` instead, with the reason, then a
``DeliveryUnknown`` for each message whose verdict it lost.

Events carry addresses, reply codes and texts, TLS parameters and mechanism
names; never credentials, SASL data or message content.  A hook that raises is
reported on the ``anyio_smtp`` logger and does not disturb the session: an
audit failure must never make a delivered message look undelivered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from ._protocol.replies import Reply

__all__ = (
    "AuditEvent",
    "AuditHook",
    "Authenticated",
    "Connected",
    "DeliveryUnknown",
    "GreetingReceived",
    "MessageAccepted",
    "MessageRejected",
    "RecipientAccepted",
    "RecipientRejected",
    "SenderAccepted",
    "SenderRejected",
    "SessionAborted",
    "SessionQuit",
    "TLSStarted",
)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """The base of every audit event."""

    #: A short, stable name for the kind of event (e.g. ``"message-accepted"``).
    name: ClassVar[str] = "event"


@dataclass(frozen=True, slots=True)
class Connected(AuditEvent):
    """The connection is open (before any TLS handshake or greeting).

    :ivar host: the server's host as given, None for a caller's stream
    :ivar port: the server's port, None for a caller's stream
    """

    host: str | None
    port: int | None
    name: ClassVar[str] = "connected"


@dataclass(frozen=True, slots=True)
class GreetingReceived(AuditEvent):
    reply: Reply
    name: ClassVar[str] = "greeting"


@dataclass(frozen=True, slots=True)
class TLSStarted(AuditEvent):
    """TLS is on, by implicit TLS or STARTTLS."""

    version: str | None
    cipher: str | None
    starttls: bool
    name: ClassVar[str] = "tls-started"


@dataclass(frozen=True, slots=True)
class Authenticated(AuditEvent):
    mechanism: str
    name: ClassVar[str] = "authenticated"


@dataclass(frozen=True, slots=True)
class SenderAccepted(AuditEvent):
    sender: str
    reply: Reply
    name: ClassVar[str] = "sender-accepted"


@dataclass(frozen=True, slots=True)
class SenderRejected(AuditEvent):
    sender: str
    reply: Reply
    name: ClassVar[str] = "sender-rejected"


@dataclass(frozen=True, slots=True)
class RecipientAccepted(AuditEvent):
    recipient: str
    reply: Reply
    name: ClassVar[str] = "recipient-accepted"


@dataclass(frozen=True, slots=True)
class RecipientRejected(AuditEvent):
    recipient: str
    reply: Reply
    name: ClassVar[str] = "recipient-rejected"


@dataclass(frozen=True, slots=True)
class MessageAccepted(AuditEvent):
    """The server took responsibility for the message.

    :ivar queue_id: the server's queue id, when its reply names one
    """

    reply: Reply
    queue_id: str | None
    recipients: tuple[str, ...]
    name: ClassVar[str] = "message-accepted"


@dataclass(frozen=True, slots=True)
class MessageRejected(AuditEvent):
    """DATA or the message itself was refused (``command`` says which)."""

    command: str
    reply: Reply
    name: ClassVar[str] = "message-rejected"


@dataclass(frozen=True, slots=True)
class DeliveryUnknown(AuditEvent):
    """A message's verdict was lost with the session: it may have been delivered.

    Emitted whatever ended the session, a cancellation included, for each
    message whose data may have reached the server; such a message is never
    sent again automatically.

    :ivar sender: the message's sender
    :ivar recipients: the recipients that may have it
    :ivar reason: what ended the session
    """

    sender: str
    recipients: tuple[str, ...]
    reason: str
    name: ClassVar[str] = "delivery-unknown"


@dataclass(frozen=True, slots=True)
class SessionAborted(AuditEvent):
    """The session ended by a failure or was dropped without QUIT (exactly once).

    :ivar reason: a sentence saying why (the exception, or "closed without QUIT")
    :ivar error: the exception's class name, or None
    """

    reason: str
    error: str | None
    name: ClassVar[str] = "session-aborted"


@dataclass(frozen=True, slots=True)
class SessionQuit(AuditEvent):
    """The session ended with QUIT."""

    reply: Reply
    name: ClassVar[str] = "quit"


#: What ``audit=`` accepts: a function or coroutine function taking an event.
AuditHook: TypeAlias = Callable[[AuditEvent], Awaitable[None] | None]

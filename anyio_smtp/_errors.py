"""The whole exception tree of anyio_smtp.

Every exception the library raises on purpose derives from :class:`SMTPError`.
Errors that mean "the server said no" carry the server's :class:`~anyio_smtp.Reply`
and say whether retrying later may help (``is_transient``: a 4xx reply) or not
(``is_permanent``: a 5xx reply).  Connection problems also derive from the
built-in :class:`ConnectionError`, timeouts from :class:`TimeoutError` and bad
arguments from :class:`ValueError`, so generic handlers keep working.

No exception text ever contains credentials or SASL payloads: AUTH commands are
named by their mechanism only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import islice
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._protocol.replies import EnhancedStatus, Reply

__all__ = (
    "AuthenticationError",
    "ConnectError",
    "DataRefusedError",
    "DeliveryUnknownError",
    "ExtensionNotSupportedError",
    "InsecureAuthError",
    "InvalidArgumentError",
    "InvalidMessageError",
    "LocalProtocolError",
    "MessageTooLargeError",
    "ProtocolError",
    "RecipientsRefusedError",
    "RemoteProtocolError",
    "ReplyError",
    "SMTPError",
    "SMTPTimeoutError",
    "SenderRefusedError",
    "ServerDisconnectedError",
    "ServiceUnavailableError",
    "SessionClosedError",
    "StartTLSInjectionError",
    "TLSCertificateError",
    "TLSError",
)


class SMTPError(Exception):
    """The root of every error raised by anyio_smtp.

    :ivar index: for an outcome of ``send_many``, the position of its message
        in the input (0 for the first); ``None`` for an error raised by a call,
        unless it is also the outcome of a message (a session failure that
        ``send_many`` raises after giving it as the outcome of a message in
        flight keeps that message's index)
    """

    index: int | None = None

    @property
    def is_transient(self) -> bool:
        """True when trying again later, unchanged, may succeed."""
        return False

    @property
    def is_permanent(self) -> bool:
        """True when trying again unchanged will fail the same way."""
        return False


# -- the server refused something ------------------------------------------------------


def refused_for_sequence(reply: Reply) -> bool:
    """Whether a refusal is about how or when the client sent, not about the message.

    ``503`` (bad sequence of commands, RFC 5321 §4.2.4), and replies that
    complain of pipelining or of lost synchronisation (Postfix: "Improper use
    of SMTP command pipelining", "SMTP protocol synchronization").
    """
    if reply.code == 503:
        return True
    if not reply.is_permanent and not reply.is_transient:
        return False
    text = reply.message.lower()
    return "pipelining" in text or "synchroni" in text


def _transient(reply: Reply) -> bool:
    # A refusal of how the client sent says nothing about the message: a new
    # session may well succeed.
    return reply.is_transient or refused_for_sequence(reply)


def _permanent(reply: Reply) -> bool:
    return reply.is_permanent and not refused_for_sequence(reply)


class ReplyError(SMTPError):
    """The server answered a command with a reply that refuses it.

    ``is_transient`` follows the reply's class (4xx), ``is_permanent`` too
    (5xx), with one exception, :attr:`is_sequence_error`: a refusal of how or
    when the client sent (``503`` bad sequence of commands, a complaint about
    pipelining) is no verdict on the message, so it counts as transient and
    never as permanent.

    :ivar reply: the server's :class:`~anyio_smtp.Reply`
    :ivar command: the command that got it (``"MAIL FROM"``, ``"AUTH PLAIN"``,
        ``"greeting"`` ...), never with its arguments
    """

    def __init__(self, command: str, reply: Reply, what: str | None = None) -> None:
        self.command: str = command
        self.reply: Reply = reply
        what = what or f"{command} was refused"
        super().__init__(f"{what}: the server replied {reply}")

    @property
    def is_transient(self) -> bool:
        return _transient(self.reply)

    @property
    def is_permanent(self) -> bool:
        return _permanent(self.reply)

    @property
    def is_sequence_error(self) -> bool:
        """True when the server refused how or when the command was sent, not what it said."""
        return refused_for_sequence(self.reply)

    @property
    def enhanced(self) -> EnhancedStatus | None:
        """The reply's enhanced status code (class, subject, detail, meaning), if any."""
        return self.reply.enhanced


#: Most addresses an error's text names; the rest are counted ("and 3 more").
_NAMED = 5
#: Most characters of each server reply quoted in such a list.
_QUOTED = 100


def _some(items: Iterable[str], count: int) -> list[str]:
    """The first few of ``count`` items, and how many others there are."""
    named = list(islice(items, _NAMED))
    return named if count <= _NAMED else [*named, f"and {count - _NAMED} more"]


def _quote(reply: Reply) -> str:
    text = str(reply)
    return text if len(text) <= _QUOTED else text[: _QUOTED - 3].rstrip() + "..."


class SenderRefusedError(ReplyError):
    """``MAIL FROM`` was refused. The session was reset and stays usable.

    :ivar sender: the reverse-path that was refused (``""`` for the null path)
    """

    def __init__(self, sender: str, reply: Reply) -> None:
        self.sender = sender
        super().__init__("MAIL FROM", reply, f"the sender <{sender}> was refused at MAIL FROM")


class RecipientsRefusedError(ReplyError):
    """Every recipient was refused, so nothing was sent.

    The session was reset and stays usable.  ``reply`` is the first refusal;
    ``rejected`` maps each recipient to its own reply, and the text names the
    first five of them with their replies.  ``is_transient`` is true
    only when every refusal was transient, ``is_permanent`` only when every one
    was permanent.
    """

    def __init__(self, rejected: Mapping[str, Reply]) -> None:
        if not rejected:
            raise ValueError("RecipientsRefusedError needs at least one refused recipient")
        self.rejected: Mapping[str, Reply] = MappingProxyType(dict(rejected))
        (only, first), *others = self.rejected.items()
        if not others:
            super().__init__("RCPT TO", first, f"the recipient <{only}> was refused at RCPT TO")
            return
        # Each refusal has its own reply: name them all, not only the first.
        self.command = "RCPT TO"
        self.reply = first
        refusals = _some(
            (f"<{address}> {_quote(reply)}" for address, reply in self.rejected.items()),
            len(self.rejected),
        )
        SMTPError.__init__(
            self,
            f"all {len(self.rejected)} recipients were refused at RCPT TO: {'; '.join(refusals)}",
        )

    @property
    def is_transient(self) -> bool:
        return all(_transient(reply) for reply in self.rejected.values())

    @property
    def is_permanent(self) -> bool:
        return all(_permanent(reply) for reply in self.rejected.values())

    @property
    def is_sequence_error(self) -> bool:
        return all(refused_for_sequence(reply) for reply in self.rejected.values())


class DataRefusedError(ReplyError):
    """``DATA`` or the message data itself was refused; nothing was delivered.

    The session was reset and stays usable.
    """

    def __init__(self, command: str, reply: Reply) -> None:
        if command == "end of data":
            what = "the message was refused at the end of DATA"
        else:
            what = f"{command} was refused"
        super().__init__(command, reply, what)


class AuthenticationError(ReplyError):
    """Authentication failed. The session is closed."""

    def __init__(self, mechanism: str, reply: Reply, detail: str | None = None) -> None:
        self.mechanism = mechanism
        what = f"authentication with AUTH {mechanism} failed"
        if detail:
            what = f"{what} ({detail})"
        super().__init__(f"AUTH {mechanism}", reply, what)


class ServiceUnavailableError(ReplyError, ConnectionError):
    """The server is closing the connection (a ``421`` reply, RFC 5321 §3.8).

    It may come at any point, as the answer to any command or on its own.  The
    session is closed; connecting again later may succeed.
    """

    def __init__(self, command: str | None, reply: Reply) -> None:
        context = f"in reply to {command}" if command else "unprompted"
        ReplyError.__init__(
            self, command or "", reply, f"the server is closing the connection ({context})"
        )


# -- the client refused to do something ------------------------------------------------


class InvalidArgumentError(SMTPError, ValueError):
    """An argument can not be sent safely or correctly; nothing was written.

    Raised before any I/O; the session is unaffected.
    """


class InvalidMessageError(InvalidArgumentError):
    """The message is not something this client can send as message content.

    Supported: ``bytes``-like objects, ``str``, an ``email.message.Message``, an
    iterable or async iterable of ``bytes``, a binary file, an anyio byte stream.
    Raised before any I/O; the session is unaffected.
    """


class ExtensionNotSupportedError(SMTPError):
    """The operation needs a service extension the server did not advertise.

    :ivar name: the extension, e.g. ``"STARTTLS"``, ``"SMTPUTF8"``, ``"8BITMIME"``,
        ``"AUTH"`` or an AUTH mechanism such as ``"AUTH CRAM-MD5"``
    """

    def __init__(self, name: str, detail: str | None = None) -> None:
        self.name = name
        message = f"the server does not support {name}"
        if detail:
            message = f"{message}: {detail}"
        super().__init__(message)

    @property
    def is_permanent(self) -> bool:
        return True


class MessageTooLargeError(SMTPError):
    """The message is larger than the size limit the server advertised (``SIZE``).

    Raised before ``MAIL FROM``; the session is unaffected.
    """

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"the message is {size} octets but the server accepts at most {limit} (SIZE)"
        )

    @property
    def is_permanent(self) -> bool:
        return True


class InsecureAuthError(SMTPError):
    """Credentials would travel in clear text, so they were not sent.

    Use TLS (``connect_starttls``, ``connect(..., tls=True)`` or ``starttls()``)
    or, only where the link is private, pass ``allow_insecure_auth=True``.
    The session is unaffected.
    """

    def __init__(self) -> None:
        super().__init__(
            "refusing to authenticate over an unencrypted connection; "
            "start TLS first or pass allow_insecure_auth=True"
        )


class SessionClosedError(SMTPError):
    """The session is closed; open a new one.

    Every call on a client raises this once the session has ended, whether by
    ``quit()``, ``aclose()`` or an earlier failure.
    """


# -- protocol violations ---------------------------------------------------------------


class ProtocolError(SMTPError):
    """The SMTP conversation can not go on as asked."""


class LocalProtocolError(ProtocolError):
    """The call is not allowed in the session's current state (raised before any I/O)."""


class RemoteProtocolError(ProtocolError):
    """The server broke the protocol: a malformed, oversized or unsolicited reply.

    The session is closed.
    """


class StartTLSInjectionError(RemoteProtocolError):
    """Bytes arrived after the ``220`` to STARTTLS, before the TLS handshake.

    An honest server sends nothing until the handshake; anything here may be
    an attacker's injected plaintext (RFC 3207 §5).  The upgrade was refused and
    the session is closed.

    :ivar byte_count: how many unexpected bytes were waiting
    """

    def __init__(self, byte_count: int) -> None:
        self.byte_count = byte_count
        super().__init__(
            f"refusing to start TLS: {byte_count} unexpected byte(s) followed the "
            "server's 220 reply to STARTTLS (possible command injection)"
        )


# -- transport -------------------------------------------------------------------------


class ConnectError(SMTPError, ConnectionError):
    """The TCP connection could not be opened."""

    @property
    def is_transient(self) -> bool:
        return True


class ServerDisconnectedError(SMTPError, ConnectionError):
    """The connection broke or the server closed it. The session is closed."""

    @property
    def is_transient(self) -> bool:
        return True


class DeliveryUnknownError(SMTPError):
    """The connection failed after the whole message was sent, before the server's verdict.

    The server may have accepted the message and may deliver it (RFC 1047), so
    sending it again may deliver it twice.  This is deliberately not a
    ``ConnectionError``: a generic retry-on-disconnect handler must not resend
    the message without deciding to.  The session is closed; ``__cause__`` is
    the underlying ``ServerDisconnectedError`` or ``SMTPTimeoutError``.

    :ivar recipients: the recipients that may have the message (accepted, or
        not yet answered when the connection failed); the text names the first five
    :ivar cause: the failure that lost the verdict
    """

    def __init__(self, recipients: tuple[str, ...], cause: SMTPError) -> None:
        self.recipients = recipients
        self.cause = cause
        to = f" to {', '.join(_some((f'<{a}>' for a in recipients), len(recipients)))}"
        super().__init__(
            "the connection failed after the message was sent but before the server "
            f"confirmed it, so it may or may not have been delivered{to if recipients else ''} "
            f"({cause})"
        )


class SMTPTimeoutError(SMTPError, TimeoutError):
    """The server did not answer, or did not accept bytes, in time. The session is closed."""

    @property
    def is_transient(self) -> bool:
        return True


class TLSError(SMTPError):
    """The TLS handshake failed. No SMTP command was sent afterwards; the session is closed."""


class TLSCertificateError(TLSError):
    """The server's certificate could not be verified (untrusted, expired, wrong host name...)."""

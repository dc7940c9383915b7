"""SMTPClient: drives the sans-IO session over an anyio byte stream.

How this works: every public coroutine takes the client's lock (so calls from
several tasks never interleave on the wire), checks its arguments and the
session state *before* any I/O, and then runs its exchange inside
``_fatal_on_error``.  That block is the single place where a session dies: any
exception escaping it -- an I/O error, a timeout, a cancellation, a protocol
violation, an unexpected reply -- closes the session and the stream, once,
and every later call raises ``SessionClosedError`` at once.

A refusal inside a mail transaction (MAIL, RCPT, DATA or the message answered
4xx/5xx) is not such a failure: the exchange resets the transaction with RSET
and *returns* the refusal, which is raised only after the fatal block has
been left, so the session stays usable.
"""

from __future__ import annotations

import binascii
import inspect
import logging
import re
import socket
import ssl
from base64 import b64decode
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import Message
from types import MappingProxyType, TracebackType
from typing import Final

import anyio

from ._errors import (
    AuthenticationError,
    DataRefusedError,
    DeliveryUnknownError,
    ExtensionNotSupportedError,
    InsecureAuthError,
    InvalidArgumentError,
    LocalProtocolError,
    MessageTooLargeError,
    RecipientsRefusedError,
    RemoteProtocolError,
    ReplyError,
    SenderRefusedError,
    ServerDisconnectedError,
    ServiceUnavailableError,
    SessionClosedError,
    SMTPError,
    SMTPTimeoutError,
)
from ._message import prepare_message
from ._protocol.body import TERMINATOR, EncodedBody, encode_body
from ._protocol.capabilities import Capabilities
from ._protocol.commands import (
    Auth,
    AuthResponse,
    Command,
    Data,
    Ehlo,
    Helo,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTLS,
    check_credential,
    check_domain,
    check_mailbox,
)
from ._protocol.replies import Reply
from ._protocol.session import NEED_DATA, SMTPSession
from ._protocol.state import Event, SessionState
from ._transport import Transport
from .audit import (
    AuditEvent,
    AuditHook,
    Authenticated,
    GreetingReceived,
    MessageAccepted,
    MessageRejected,
    RecipientAccepted,
    RecipientRejected,
    SenderAccepted,
    SenderRejected,
    SessionAborted,
    SessionQuit,
    TLSStarted,
)
from .auth import MECHANISMS, PREFERENCE, SASLFailure, SASLMechanism
from .auth._mechanisms import create as create_mechanism

__all__ = ("QUIT_TIMEOUT", "SMTPClient", "SendResult")

logger = logging.getLogger("anyio_smtp")

#: Most seconds a polite close waits for the reply to QUIT.
QUIT_TIMEOUT: Final = 5.0
#: Most 334 challenges one AUTH exchange may take before it is abandoned.
MAX_AUTH_ROUNDS: Final = 10

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
    """

    reply: Reply
    accepted: tuple[str, ...]
    rejected: Mapping[str, Reply] = field(default_factory=lambda: MappingProxyType({}))

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


def _log_reply(reply: Reply, *, redact: bool = False) -> None:
    last = len(reply.lines) - 1
    for index, line in enumerate(reply.lines):
        separator = " " if index == last else "-"
        text = "[redacted]" if redact and line else line
        logger.debug("S: %d%s%s", reply.code, separator, text)


def _default_ehlo_domain(transport: Transport) -> str:
    """A name for EHLO that needs no DNS lookup (so the event loop never blocks).

    RFC 5321 §4.1.4: the client sends its fully qualified domain name, "or, if
    the host has no meaningful domain name, ... an address literal".
    """
    hostname = socket.gethostname()
    if "." in hostname:
        try:
            return check_domain(hostname)
        except InvalidArgumentError:
            pass
    return transport.local_address_literal() or "localhost.localdomain"


def _success_data(reply: Reply) -> bytes | None:
    """The base64 payload a 235 reply may carry (RFC 4954 §4), if it has one."""
    text = reply.message.strip()
    if not text or " " in text:
        return None
    try:
        return b64decode(text, validate=True)
    except binascii.Error:
        return None


def _recipient_list(recipients: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(recipients, str):
        recipients = (recipients,)
    checked = tuple(
        dict.fromkeys(check_mailbox(address, role="recipient") for address in recipients)
    )
    if not checked:
        raise InvalidArgumentError("there must be at least one recipient")
    return checked


class SMTPClient:
    """An open SMTP session.

    Create one with :func:`anyio_smtp.connect`, :func:`anyio_smtp.connect_starttls`
    or :func:`anyio_smtp.connect_stream`, as ``async with ... as smtp:`` or as
    ``smtp = await ...`` followed by ``await smtp.aclose()``.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        tls_hostname: str | None = None,
        ehlo_domain: str | None = None,
        allow_insecure_auth: bool = False,
        audit: AuditHook | None = None,
    ) -> None:
        self._transport = transport
        self._session = SMTPSession(tls=transport.tls)
        self._lock = anyio.Lock()
        self._tls_hostname = tls_hostname
        self._ehlo_domain = ehlo_domain
        self._allow_insecure_auth = allow_insecure_auth
        self._audit = audit
        self._stream_closed = False
        self._ended = False  # SessionQuit or SessionAborted was emitted

    # -- state -----------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        """What the server advertised in its latest EHLO reply."""
        return self._session.capabilities

    @property
    def state(self) -> SessionState:
        """Where the session stands (``SessionState.READY`` between messages)."""
        return self._session.state

    @property
    def tls(self) -> bool:
        """Whether the connection is encrypted."""
        return self._session.tls

    @property
    def tls_version(self) -> str | None:
        """The negotiated TLS version (e.g. ``"TLSv1.3"``), or None without TLS."""
        return self._transport.tls_version if not self._stream_closed else None

    @property
    def authenticated(self) -> bool:
        """Whether ``login`` succeeded."""
        return self._session.authenticated

    @property
    def closed(self) -> bool:
        """Whether the session is over; every call then raises ``SessionClosedError``."""
        return self._session.state is SessionState.CLOSED

    @property
    def ehlo_domain(self) -> str | None:
        """The name this client gives in EHLO."""
        return self._ehlo_domain

    def __repr__(self) -> str:
        return (
            f"<SMTPClient state={self.state.value} tls={self.tls} "
            f"authenticated={self.authenticated}>"
        )

    # -- the failure discipline ------------------------------------------------------

    @asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        """Hold the lock; refuse at once if the session is over."""
        async with self._lock:
            if self.closed:
                raise SessionClosedError("the SMTP session is closed; open a new one")
            yield

    @asynccontextmanager
    async def _fatal_on_error(self) -> AsyncIterator[None]:
        """The one place a session dies: any exception closes session and stream."""
        try:
            yield
        except BaseException as exc:
            await self._abort(exc)
            raise

    async def _abort(self, reason: BaseException | None) -> None:
        self._session.close()
        await self._close_stream()
        if not self._ended:
            self._ended = True
            if reason is None:
                text, error = "closed without QUIT", None
            elif isinstance(reason, anyio.get_cancelled_exc_class()):
                text, error = "cancelled", type(reason).__name__
            else:
                text, error = str(reason) or type(reason).__name__, type(reason).__name__
            logger.debug("SMTP session aborted: %s", text)
            # Shielded, so the event is recorded even when a cancellation ends the
            # session; bounded, so a stuck hook can not hold the caller.
            with anyio.CancelScope(shield=True), anyio.move_on_after(QUIT_TIMEOUT):
                await self._emit(SessionAborted(text, error))

    async def _emit(self, event: AuditEvent) -> None:
        """Give an event to the audit hook; its failures are logged, never raised."""
        if self._audit is None:
            return
        try:
            result = self._audit(event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("the audit hook failed on a %r event", event.name)

    async def _close_stream(self) -> None:
        if not self._stream_closed:
            self._stream_closed = True
            with anyio.CancelScope(shield=True):
                await self._transport.aclose()

    # -- exchanges -------------------------------------------------------------------

    async def _write(self, data: bytes, commands: Iterable[Command]) -> None:
        names = []
        for command in commands:
            names.append(command.name)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("C: %s", command.log_line())
        await self._transport.send(
            data,
            action=f"sending {', '.join(names)}",
            timeout=self._transport.timeouts.data_block,
        )

    async def _command(self, command: Command) -> Reply:
        """Send one command and return its reply."""
        await self._write(self._session.send(command), (command,))
        return await self._reply()

    async def _reply(self) -> Reply:
        """Receive the next reply (for the oldest command still owed one)."""
        session = self._session
        awaiting = session.awaiting
        action = f"waiting for the reply to {awaiting.name if awaiting else 'a command'}"
        # One deadline for the whole reply: a trickle of bytes does not extend it.
        with self._transport.deadline(action, self._transport.timeouts.for_reply(awaiting)):
            while (event := session.next_event()) is NEED_DATA:
                session.receive_data(await self._transport.receive(action=action))
        reply = event.reply
        if logger.isEnabledFor(logging.DEBUG):
            _log_reply(reply, redact=reply.code == 334)
        if (
            reply.code == 421
            and session.state is SessionState.CLOSED
            and not isinstance(event.command, Quit)
        ):
            raise ServiceUnavailableError(event.command.name if event.command else None, reply)
        return reply

    async def _open(self) -> None:
        """Read the greeting and say EHLO (called once by the connect functions)."""
        async with self._exclusive(), self._fatal_on_error():
            if self._ehlo_domain is None:
                self._ehlo_domain = _default_ehlo_domain(self._transport)
            reply = await self._reply()
            await self._emit(GreetingReceived(reply))
            if not reply.is_positive:
                raise ReplyError("greeting", reply, "the server refused the session")
            await self._hello()

    async def _hello(self) -> None:
        assert self._ehlo_domain is not None
        reply = await self._command(Ehlo(self._ehlo_domain))
        if reply.code == 250:
            return
        if not reply.is_permanent:
            raise ReplyError("EHLO", reply)
        # RFC 5321 §3.2: a client whose EHLO is refused falls back to HELO.
        reply = await self._command(Helo(self._ehlo_domain))
        if reply.code != 250:
            raise ReplyError("HELO", reply)

    async def _start_implicit_tls(
        self, ssl_context: ssl.SSLContext | None, hostname: str | None
    ) -> None:
        """Complete the TLS handshake before anything else (port 465, RFC 8314)."""
        async with self._exclusive(), self._fatal_on_error():
            await self._transport.start_tls(ssl_context, hostname)
            self._session.tls = True
            await self._tls_started(starttls=False)

    async def _tls_started(self, *, starttls: bool) -> None:
        version, cipher = self._transport.tls_version, self._transport.tls_cipher
        logger.debug("TLS started: %s, %s", version, cipher)
        await self._emit(TLSStarted(version, cipher, starttls))

    # -- public API ------------------------------------------------------------------

    async def starttls(
        self, *, ssl_context: ssl.SSLContext | None = None, tls_hostname: str | None = None
    ) -> None:
        """Upgrade the session to TLS with STARTTLS (RFC 3207), then say EHLO again.

        The server's certificate and host name are verified
        (``ssl.create_default_context()`` when no context is given).  Anything
        but success closes the session: there is no fallback to plaintext.

        :param ssl_context: an :class:`ssl.SSLContext` for the handshake
        :param tls_hostname: the name to verify the certificate against
            (default: the host given when connecting)
        :raises ExtensionNotSupportedError: STARTTLS was not advertised (session closed)
        :raises ReplyError: STARTTLS was answered with anything but 220 (session closed)
        :raises StartTLSInjectionError: bytes followed the 220 (session closed)
        :raises TLSError: the handshake failed, e.g. ``TLSCertificateError`` (session closed)
        :raises LocalProtocolError: TLS is already on, or a transaction or AUTH is done
        :raises InvalidArgumentError: no host name to verify is known
        :raises SessionClosedError: the session is closed
        """
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise InvalidArgumentError("ssl_context must be an ssl.SSLContext")
        hostname = tls_hostname or self._tls_hostname
        if not hostname:
            raise InvalidArgumentError("pass tls_hostname: the name to verify the certificate for")
        async with self._exclusive():
            if self._session.tls:
                raise LocalProtocolError("TLS is already active on this session")
            if self._session.authenticated:
                raise LocalProtocolError("STARTTLS must come before AUTH")
            self._session.check(Event.STARTTLS)
            async with self._fatal_on_error():
                if "STARTTLS" not in self._session.capabilities:
                    raise ExtensionNotSupportedError("STARTTLS", "refusing to continue without TLS")
                reply = await self._command(StartTLS())
                if reply.code != 220:
                    raise ReplyError("STARTTLS", reply, "the server refused to start TLS")
                await self._transport.start_tls(ssl_context, hostname)
                self._session.start_tls()
                await self._tls_started(starttls=True)
                await self._hello()

    async def login(
        self,
        username: str,
        password: str,
        *,
        mechanism: str | SASLMechanism | None = None,
    ) -> Reply:
        """Authenticate with SMTP AUTH (RFC 4954).

        Without ``mechanism`` the strongest one the server offers is used, in
        the order of :data:`anyio_smtp.auth.PREFERENCE`.  Over a connection
        without TLS this refuses before sending anything, unless the client was
        opened with ``allow_insecure_auth=True``.

        :param mechanism: a mechanism name to force (e.g. ``"PLAIN"``), or a
            :class:`~anyio_smtp.auth.SASLMechanism` instance (then ``username``
            and ``password`` are not used)
        :return: the server's 235 reply
        :raises AuthenticationError: the server refused (session closed)
        :raises InsecureAuthError: the connection is not encrypted
        :raises ExtensionNotSupportedError: AUTH, or the asked mechanism, is not offered
        :raises InvalidArgumentError: empty credentials or control characters in them
        :raises LocalProtocolError: already authenticated, or not between transactions
        :raises SessionClosedError: the session is closed
        """
        if not isinstance(mechanism, SASLMechanism):
            check_credential(username, "user name")
            check_credential(password, "password")
        async with self._exclusive():
            if self._session.authenticated:
                raise LocalProtocolError("this session is already authenticated")
            self._session.check(Event.AUTH)
            if not self._session.tls and not self._allow_insecure_auth:
                raise InsecureAuthError()
            sasl = self._choose_mechanism(username, password, mechanism)
            await sasl.prepare()
            async with self._fatal_on_error():
                reply = await self._authenticate(sasl)
                await self._emit(Authenticated(sasl.name))
                return reply

    def _choose_mechanism(
        self, username: str, password: str, mechanism: str | SASLMechanism | None
    ) -> SASLMechanism:
        if "AUTH" not in self._session.capabilities:
            raise ExtensionNotSupportedError("AUTH")
        bindings = self._transport.channel_bindings()
        offered = self._session.capabilities.auth_mechanisms
        if isinstance(mechanism, SASLMechanism):
            name = mechanism.name
        elif mechanism is not None:
            name = str(mechanism).upper()
            if name not in MECHANISMS:
                raise InvalidArgumentError(
                    f"unknown SASL mechanism {name!r}; known ones are {', '.join(MECHANISMS)}"
                )
        else:
            # -PLUS variants need TLS channel bindings; bearer-token mechanisms
            # are never chosen on their own (auto_select is False for them).
            choices = [
                name
                for name in PREFERENCE
                if name in offered and (bindings is not None or not name.endswith("-PLUS"))
            ]
            if not choices:
                raise ExtensionNotSupportedError(
                    "AUTH", f"none of {', '.join(PREFERENCE)} is offered"
                )
            name = choices[0]
        if name not in offered:
            raise ExtensionNotSupportedError(f"AUTH {name}", "the server does not offer it")
        if isinstance(mechanism, SASLMechanism):
            return mechanism
        return create_mechanism(name, username, password, bindings)

    async def _authenticate(self, sasl: SASLMechanism) -> Reply:
        reply = await self._command(Auth(sasl.name, sasl.initial_response()))
        rounds = 0
        while reply.code == 334:
            rounds += 1
            if rounds > MAX_AUTH_ROUNDS:
                raise RemoteProtocolError(
                    f"AUTH {sasl.name} took more than {MAX_AUTH_ROUNDS} rounds"
                )
            try:
                challenge = b64decode(reply.lines[0].strip(), validate=True)
            except binascii.Error:
                raise RemoteProtocolError(
                    f"the server sent a challenge that is not base64 during AUTH {sasl.name}"
                ) from None
            try:
                response = sasl.respond(challenge)
            except SASLFailure as exc:
                raise AuthenticationError(sasl.name, reply, str(exc)) from None
            reply = await self._command(AuthResponse(response))
        if reply.code != 235:
            raise AuthenticationError(sasl.name, reply, sasl.failure_detail())
        try:
            sasl.verify_success(_success_data(reply))
        except SASLFailure as exc:
            # RFC 5802 §5.1: the client must verify the server, even after a 235.
            raise AuthenticationError(sasl.name, reply, str(exc)) from None
        return reply

    async def send_mail(
        self,
        sender: str,
        recipients: str | Iterable[str],
        message: bytes | bytearray | memoryview | str,
    ) -> SendResult:
        """Send one message.

        ``message`` is the whole message (header fields and body), as bytes or
        as a str (sent as UTF-8).  Line endings are normalised to CRLF and
        lines starting with ``.`` are dot-stuffed.  ``BODY=8BITMIME``,
        ``SMTPUTF8`` and ``SIZE=`` are added when needed and advertised.  With
        PIPELINING, MAIL, every RCPT and DATA go in one write.

        :param sender: the bare reverse-path address; ``""`` is the null sender ``<>``
        :param recipients: one bare address or an iterable of them
        :return: the final reply, accepted recipients and refused ones
        :raises SenderRefusedError: MAIL was refused (session reset, still usable)
        :raises RecipientsRefusedError: every recipient was refused (session usable)
        :raises DataRefusedError: DATA or the message was refused (session usable)
        :raises ExtensionNotSupportedError: SMTPUTF8 or 8BITMIME is needed but not offered
        :raises MessageTooLargeError: larger than the server's SIZE limit
        :raises InvalidArgumentError: an address can not be sent safely
        :raises ServiceUnavailableError: the server said 421 (session closed)
        :raises ServerDisconnectedError: the connection broke (session closed)
        :raises SMTPTimeoutError: the server stalled (session closed)
        :raises SessionClosedError: the session is closed
        """
        sender = check_mailbox(sender, role="sender", allow_null=True)
        checked = _recipient_list(recipients)
        if isinstance(message, str):
            message = message.encode("utf-8")
        elif not isinstance(message, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError("the message must be bytes or str")
        return await self._send(sender, checked, encode_body(message), smtputf8=False)

    async def send_message(
        self,
        message: Message,
        *,
        sender: str | None = None,
        recipients: str | Iterable[str] | None = None,
    ) -> SendResult:
        """Send an :class:`email.message.EmailMessage` (or ``Message``).

        The envelope comes from Sender/From and To/Cc/Bcc, or from the
        Resent- fields when the message has one Resent- block; ``sender`` and
        ``recipients`` override it.  Bcc and Resent-Bcc are never transmitted.
        Non-ASCII addresses make the message use SMTPUTF8.

        :return: as for :meth:`send_mail`
        :raises: as for :meth:`send_mail`
        """
        if not isinstance(message, Message):
            raise InvalidArgumentError("send_message() takes an email.message.Message")
        if sender is not None:
            sender = check_mailbox(sender, role="sender", allow_null=True)
        override = list(_recipient_list(recipients)) if recipients is not None else None
        prepared = prepare_message(message, sender=sender, recipients=override)
        checked_sender = check_mailbox(prepared.sender, role="sender", allow_null=True)
        checked = _recipient_list(prepared.recipients)
        return await self._send(
            checked_sender, checked, encode_body(prepared.data), smtputf8=prepared.smtputf8
        )

    def _mail_parameters(
        self, sender: str, recipients: tuple[str, ...], body: EncodedBody, smtputf8: bool
    ) -> tuple[str, ...]:
        caps = self._session.capabilities
        parameters: list[str] = []
        if not smtputf8:
            smtputf8 = not sender.isascii() or not all(r.isascii() for r in recipients)
        if smtputf8 and "SMTPUTF8" not in caps:
            raise ExtensionNotSupportedError(
                "SMTPUTF8", "the message has non-ASCII addresses or header fields"
            )
        if body.eight_bit:
            # RFC 6152 §3: 8-bit data only to a server that advertised 8BITMIME.
            if "8BITMIME" not in caps:
                raise ExtensionNotSupportedError("8BITMIME", "the message contains 8-bit data")
            parameters.append("BODY=8BITMIME")
        if smtputf8:
            parameters.append("SMTPUTF8")
        if "SIZE" in caps:
            limit = caps.size_limit
            if limit is not None and body.size > limit:
                raise MessageTooLargeError(body.size, limit)
            # RFC 1870 §6: the client declares the size with MAIL.
            parameters.append(f"SIZE={body.size}")
        return tuple(parameters)

    async def _send(
        self, sender: str, recipients: tuple[str, ...], body: EncodedBody, *, smtputf8: bool
    ) -> SendResult:
        async with self._exclusive():
            self._session.check(Event.MAIL)
            parameters = self._mail_parameters(sender, recipients, body, smtputf8)
            mail = Mail(sender, parameters)
            rcpts = [Rcpt(recipient) for recipient in recipients]
            async with self._fatal_on_error():
                outcome = await self._transaction(mail, rcpts, body)
        if isinstance(outcome, SMTPError):
            raise outcome
        return outcome

    async def _transaction(
        self, mail: Mail, rcpts: list[Rcpt], body: EncodedBody
    ) -> SendResult | ReplyError:
        """Run one mail transaction; a refusal is reset and returned, not raised."""
        if self._session.pipelining:
            # RFC 2920 §3.1: MAIL, the RCPTs and DATA may go in one group;
            # the replies come back in order and each one is checked.
            group: list[Command] = [mail, *rcpts, Data()]
            data = b"".join(self._session.send(command) for command in group)
            await self._write(data, group)
            mail_reply = await self._reply()
            rcpt_replies = [await self._reply() for _ in rcpts]
            data_reply: Reply | None = await self._reply()
        else:
            mail_reply = await self._command(mail)
            rcpt_replies = []
            data_reply = None
            if mail_reply.is_positive:
                rcpt_replies = [await self._command(rcpt) for rcpt in rcpts]
                if any(reply.is_positive for reply in rcpt_replies):
                    data_reply = await self._command(Data())

        accepted = tuple(
            rcpt.recipient
            for rcpt, reply in zip(rcpts, rcpt_replies, strict=False)
            if reply.is_positive
        )
        rejected = {
            rcpt.recipient: reply
            for rcpt, reply in zip(rcpts, rcpt_replies, strict=False)
            if not reply.is_positive
        }
        await self._emit(
            SenderAccepted(mail.sender, mail_reply)
            if mail_reply.is_positive
            else SenderRejected(mail.sender, mail_reply)
        )
        for rcpt, reply in zip(rcpts, rcpt_replies, strict=False):
            await self._emit(
                RecipientAccepted(rcpt.recipient, reply)
                if reply.is_positive
                else RecipientRejected(rcpt.recipient, reply)
            )
        refusal: ReplyError | None = None
        if not mail_reply.is_positive:
            refusal = SenderRefusedError(mail.sender, mail_reply)
        elif not accepted:
            refusal = RecipientsRefusedError(rejected)
        elif data_reply is not None and data_reply.code != 354:
            refusal = DataRefusedError("DATA", data_reply)
            await self._emit(MessageRejected("DATA", data_reply))
        if refusal is not None:
            if data_reply is not None and data_reply.code == 354:
                # RFC 2920 §3.1: DATA was accepted although nothing can be
                # delivered; end the data at once with a lone ".".
                await self._end_empty_data()
            return await self._reset_after(refusal)

        final = await self._send_message_data(body.data, accepted)
        if not final.is_positive:
            await self._emit(MessageRejected("end of data", final))
            return await self._reset_after(DataRefusedError("end of data", final))
        await self._emit(MessageAccepted(final, queue_id_of(final), accepted))
        return SendResult(final, accepted, MappingProxyType(rejected))

    async def _end_empty_data(self) -> Reply:
        """End a data phase that carries nothing deliverable with a lone "."."""
        self._session.send_data(TERMINATOR, end=True)
        logger.debug("C: .")
        await self._transport.send(
            TERMINATOR,
            action="ending the message data",
            timeout=self._transport.timeouts.data_block,
        )
        return await self._reply()

    async def _send_message_data(self, data: bytes, accepted: tuple[str, ...]) -> Reply:
        """Send a whole encoded message and return the server's verdict.

        Once the end of the data has been sent, a lost connection or a timeout
        no longer means "not delivered": the server may have accepted the
        message just before (RFC 1047), so it becomes ``DeliveryUnknownError``.
        """
        self._session.send_data(data, end=True)
        logger.debug("C: [message data, %d octets]", len(data))
        await self._transport.send(
            data, action="sending the message data", timeout=self._transport.timeouts.data_block
        )
        try:
            return await self._reply()
        except (ServerDisconnectedError, SMTPTimeoutError) as exc:
            raise DeliveryUnknownError(accepted, exc) from exc

    async def _reset_after(self, refusal: ReplyError) -> ReplyError:
        """Reset the refused transaction; return the refusal for the caller."""
        try:
            await self._reset()
        except ReplyError as exc:
            # The session is lost, but the caller learns what was refused too.
            raise exc from refusal
        return refusal

    async def _reset(self) -> Reply:
        reply = await self._command(Rset())
        if reply.code != 250:
            raise ReplyError("RSET", reply)
        return reply

    async def noop(self) -> Reply:
        """Send NOOP; useful to check that the session is alive.

        :raises ReplyError: the server did not answer 250 (the session stays open)
        :raises SessionClosedError: the session is closed
        """
        async with self._exclusive():
            self._session.check(Event.NOOP)
            async with self._fatal_on_error():
                reply = await self._command(Noop())
        if reply.code != 250:
            raise ReplyError("NOOP", reply)
        return reply

    async def rset(self) -> Reply:
        """Send RSET, abandoning any transaction the server may hold.

        :raises ReplyError: the server did not answer 250 (session closed)
        :raises SessionClosedError: the session is closed
        """
        async with self._exclusive():
            self._session.check(Event.RSET)
            async with self._fatal_on_error():
                return await self._reset()

    async def quit(self) -> Reply:
        """Send QUIT, wait for the reply and close the connection.

        :return: the server's reply (normally 221)
        :raises SessionClosedError: the session was already closed
        :raises ServerDisconnectedError, SMTPTimeoutError: no proper reply (closed anyway)
        """
        async with self._exclusive():
            self._session.check(Event.QUIT)
            async with self._fatal_on_error():
                reply = await self._command(Quit())
            await self._close_stream()
            self._ended = True
            await self._emit(SessionQuit(reply))
            return reply

    async def aclose(self) -> None:
        """End the session: QUIT with a short wait when idle, then close the connection.

        Never raises for a session that is already closed or a server that
        does not answer; the connection is always closed.
        """
        if self.closed or self._lock.locked():
            await self._abort(None)
            return
        try:
            with anyio.move_on_after(QUIT_TIMEOUT):
                await self.quit()
        except (SMTPError, LocalProtocolError):
            pass
        finally:
            await self._abort(None)

    async def __aenter__(self) -> SMTPClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.aclose()
        else:
            await self._abort(exc)

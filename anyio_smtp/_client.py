"""SMTPClient: drives the sans-IO session over an anyio byte stream.

How this works: every public coroutine takes the client's lock (so calls from
several tasks never interleave on the wire), checks its arguments and the
session state *before* any I/O, and then runs its exchange inside the
channel's ``fatal()`` block (``_channel``).  That block is the single place
where a session dies: any exception escaping it -- an I/O error, a timeout, a
cancellation, a protocol violation, an unexpected reply -- closes the session
and the stream, once, and every later call raises ``SessionClosedError`` at once.

A refusal inside a mail transaction (MAIL, RCPT, DATA or the message answered
4xx/5xx) is not such a failure: the exchange resets the transaction with RSET
and *returns* the refusal, which is raised only after the fatal block has
been left, so the session stays usable.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from contextlib import aclosing, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, overload

import anyio

from ._channel import QUIT_TIMEOUT, Channel
from ._engine import DEFAULT_MAX_IN_FLIGHT, Engine, Source
from ._errors import (
    AuthenticationError,
    ExtensionNotSupportedError,
    InsecureAuthError,
    InvalidArgumentError,
    LocalProtocolError,
    RecipientsRefusedError,
    ReplyError,
    SenderRefusedError,
    SessionClosedError,
    SMTPError,
)
from ._protocol.capabilities import Capabilities
from ._protocol.commands import (
    Ehlo,
    Helo,
    Lhlo,
    Mail,
    Noop,
    Quit,
    Rcpt,
    StartTLS,
    check_credential,
    check_domain,
    check_esmtp_parameter,
    check_hostname,
    check_mailbox,
    needs_smtputf8,
)
from ._protocol.params import DSN, Recipient, Transfer
from ._protocol.replies import Reply
from ._protocol.state import Event, SessionState
from ._result import Outcome, SendBatch, SendResult, queue_id_of, with_index
from ._transaction import (
    Options,
    Submission,
    mail_submission,
    message_submission,
)
from ._transport import Transport
from ._types import BatchItem, MessageBody, Recipients
from .audit import (
    AuditHook,
    Authenticated,
    Connected,
    GreetingReceived,
    SessionQuit,
    TLSStarted,
)
from .auth import SASLMechanism
from .auth._exchange import MAX_AUTH_ROUNDS, Challenge, SASLExchange, choose_mechanism

if TYPE_CHECKING:
    import ssl
    from email.message import Message

__all__ = (
    "MAX_AUTH_ROUNDS",
    "QUIT_TIMEOUT",
    "SMTPClient",
    "SendResult",
    "queue_id_of",
    "start_session",
)


def _default_ehlo_domain(transport: Transport) -> str:
    """A name for EHLO that needs no DNS lookup (so the event loop never blocks).

    RFC 5321 §4.1.4: the client sends its fully qualified domain name, "or, if
    the host has no meaningful domain name, ... an address literal".
    """
    import socket

    hostname = socket.gethostname()
    if "." in hostname:
        try:
            return check_domain(hostname)
        except InvalidArgumentError:
            pass
    return transport.local_address_literal() or "localhost.localdomain"


def _envelope_step(
    role: str, address: str, parameters: Iterable[str]
) -> tuple[str, tuple[str, ...]]:
    """Check the address and parameters of ``mail()`` or ``rcpt()`` (ASCII local parts)."""
    address = check_mailbox(address, role=role, allow_null=role == "sender")
    if needs_smtputf8(address):
        raise InvalidArgumentError(
            f"the {role} of a single envelope step must have an ASCII local part "
            "(a non-ASCII one needs SMTPUTF8)"
        )
    return address, tuple(check_esmtp_parameter(parameter) for parameter in parameters)


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
        lmtp: bool = False,
    ) -> None:
        #: Whether this is an LMTP session (RFC 2033): LHLO, and one reply per
        #: recipient after the data.
        self.lmtp = lmtp
        self._channel = Channel(transport, audit=audit, lmtp=lmtp)
        self._session = self._channel.session
        self._transport = transport
        self._lock = anyio.Semaphore(1)
        self._batch_task: int | None = None
        self._tls_hostname = tls_hostname
        self._ehlo_domain = ehlo_domain
        self._allow_insecure_auth = allow_insecure_auth

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
        return self._transport.tls_version if not self._channel.stream_closed else None

    @property
    def authenticated(self) -> bool:
        """Whether ``login`` succeeded."""
        return self._session.authenticated

    @property
    def closed(self) -> bool:
        """Whether the session is over; every call then raises ``SessionClosedError``."""
        return self._session.state is SessionState.CLOSED

    @property
    def session_id(self) -> str:
        """This session's short identifier (``"s3"``), unique in the process.

        Every record the session logs starts with it in brackets and carries it
        as the ``smtp_session`` attribute (``%(smtp_session)s`` in a format).
        """
        return self._channel.id

    @property
    def ehlo_domain(self) -> str | None:
        """The name this client gives in EHLO."""
        return self._ehlo_domain

    def __repr__(self) -> str:
        return (
            f"<SMTPClient {self.session_id} state={self.state.value} tls={self.tls} "
            f"authenticated={self.authenticated}>"
        )

    # -- the failure discipline ------------------------------------------------------

    @asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        """Hold the lock; refuse at once if the session is over."""
        if self._batch_task is not None and self._batch_task == anyio.get_current_task().id:
            raise LocalProtocolError(
                "this task's send_many() batch still holds the session: finish the loop, "
                "or leave it through contextlib.aclosing(), before using the client"
            )
        # A semaphore, not a lock: a batch abandoned without aclosing() is
        # finished by the event loop in another task, which must release it.
        async with self._lock:
            if self.closed:
                raise SessionClosedError("the SMTP session is closed; open a new one")
            yield

    async def _open(self) -> None:
        """Read the greeting and say EHLO (called once by the connect functions)."""
        async with self._exclusive(), self._channel.fatal():
            if self._ehlo_domain is None:
                self._ehlo_domain = _default_ehlo_domain(self._transport)
            reply = await self._channel.reply()
            await self._channel.emit(GreetingReceived(reply))
            if not reply.is_positive:
                raise ReplyError("greeting", reply, "the server refused the session")
            await self._hello()

    async def _hello(self) -> None:
        assert self._ehlo_domain is not None
        if self.lmtp:
            reply = await self._channel.command(Lhlo(self._ehlo_domain))
            if reply.code != 250:
                raise ReplyError("LHLO", reply)
            return
        reply = await self._channel.command(Ehlo(self._ehlo_domain))
        if reply.code == 250:
            return
        if not reply.is_permanent:
            raise ReplyError("EHLO", reply)
        # RFC 5321 §3.2: a client whose EHLO is refused falls back to HELO.
        reply = await self._channel.command(Helo(self._ehlo_domain))
        if reply.code != 250:
            raise ReplyError("HELO", reply)

    async def _start_implicit_tls(
        self, ssl_context: ssl.SSLContext | None, hostname: str | None
    ) -> None:
        """Complete the TLS handshake before anything else (port 465, RFC 8314)."""
        async with self._exclusive(), self._channel.fatal():
            await self._transport.start_tls(ssl_context, hostname)
            self._session.tls = True
            await self._tls_started(starttls=False)

    async def _tls_started(self, *, starttls: bool) -> None:
        """Tell the transcript and the audit hook that TLS is on."""
        version, cipher = self._transport.tls_version, self._transport.tls_cipher
        self._channel.log("TLS started: %s, %s", version, cipher)
        await self._channel.emit(TLSStarted(version, cipher, starttls))

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
        import ssl

        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise InvalidArgumentError("ssl_context must be an ssl.SSLContext")
        hostname = tls_hostname or self._tls_hostname
        if not hostname:
            raise InvalidArgumentError("pass tls_hostname: the name to verify the certificate for")
        hostname = check_hostname(hostname, "tls_hostname")
        async with self._exclusive():
            if self._session.tls:
                raise LocalProtocolError("TLS is already active on this session")
            if self._session.authenticated:
                raise LocalProtocolError("STARTTLS must come before AUTH")
            self._session.check(Event.STARTTLS)
            async with self._channel.fatal():
                if "STARTTLS" not in self._session.capabilities:
                    raise ExtensionNotSupportedError("STARTTLS", "refusing to continue without TLS")
                reply = await self._channel.command(StartTLS())
                if reply.code != 220:
                    raise ReplyError("STARTTLS", reply, "the server refused to start TLS")
                await self._transport.start_tls(ssl_context, hostname)
                self._session.start_tls()
                await self._tls_started(starttls=True)
                await self._hello()

    @overload
    async def login(
        self, username: str, password: str, *, mechanism: str | SASLMechanism | None = None
    ) -> Reply: ...

    @overload
    async def login(
        self, username: str, password: None = None, *, mechanism: SASLMechanism
    ) -> Reply: ...

    async def login(
        self,
        username: str,
        password: str | None = None,
        *,
        mechanism: str | SASLMechanism | None = None,
    ) -> Reply:
        """Authenticate with SMTP AUTH (RFC 4954).

        A password (or, for ``mechanism="XOAUTH2"``/``"OAUTHBEARER"``, a token) is
        required, except with a :class:`~anyio_smtp.auth.SASLMechanism` instance,
        which carries its own credentials: ``login(user, mechanism=XOAuth2(user,
        token_provider))``.

        Without ``mechanism`` the strongest one the server offers is used, in
        the order of :data:`anyio_smtp.auth.PREFERENCE` (SCRAM with channel
        binding first; bearer-token mechanisms are never picked on their own).
        Over a connection without TLS this refuses before sending anything,
        unless the client was opened with ``allow_insecure_auth=True``.

        :param password: the password, or the OAuth token for
            ``mechanism="XOAUTH2"``/``"OAUTHBEARER"``
        :param mechanism: a mechanism name to force (e.g. ``"PLAIN"``), or a
            :class:`~anyio_smtp.auth.SASLMechanism` instance such as
            ``XOAuth2(user, token_provider)`` (then ``username`` and
            ``password`` are not used)
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
            check_credential(password, "password")  # type: ignore[arg-type]
        async with self._exclusive():
            if self._session.authenticated:
                raise LocalProtocolError("this session is already authenticated")
            self._session.check(Event.AUTH)
            if not self._session.tls and not self._allow_insecure_auth:
                raise InsecureAuthError()
            sasl = choose_mechanism(
                self._session.capabilities,
                username,
                password or "",
                mechanism,
                self._transport.channel_bindings(),
            )
            await sasl.prepare()
            async with self._channel.fatal():
                reply = await self._authenticate(SASLExchange(sasl))
                await self._channel.emit(Authenticated(sasl.name))
                return reply

    async def _authenticate(self, exchange: SASLExchange) -> Reply:
        """The AUTH exchange: the sans-I/O ``SASLExchange`` decides, this loop talks."""
        reply = await self._channel.command(exchange.start())
        try:
            while isinstance(step := exchange.receive(reply), Challenge):
                if step.blocking:
                    # Key derivation (SCRAM's PBKDF2) must not stall the event loop.
                    response = await anyio.to_thread.run_sync(exchange.respond, step)
                else:
                    response = exchange.respond(step)
                reply = await self._channel.command(response)
        except AuthenticationError:
            # RFC 5802 §5.1: a 235 whose server proof fails is no authentication.
            self._session.authenticated = False
            raise
        return step

    async def send_mail(
        self,
        sender: str,
        recipients: Recipients,
        message: MessageBody,
        *,
        size: int | None = None,
        transfer: Transfer = "auto",
        dsn: DSN | None = None,
        require_tls: bool = False,
    ) -> SendResult:
        """Send one message.

        ``message`` is the whole message (header fields and body): ``bytes``, a
        ``str`` (sent as UTF-8), an :class:`email.message.Message` (serialised
        as :meth:`send_message` does, Bcc removed, with this envelope), or,
        streamed in bounded memory, an iterable or async iterable of ``bytes``,
        a binary file object or an anyio ``ByteReceiveStream``
        (:data:`anyio_smtp.MessageBody`).  Anything else is refused with
        ``InvalidMessageError`` before any I/O.  Line endings are normalised
        to CRLF and lines starting with ``.`` are dot-stuffed.
        ``BODY=8BITMIME``, ``SMTPUTF8``
        and ``SIZE=`` are added when needed and advertised.  With PIPELINING,
        MAIL, every RCPT and DATA go in one write.

        :param sender: the bare reverse-path address; ``""`` is the null sender ``<>``
        :param recipients: one bare address or an iterable of them; a
            :class:`Recipient` carries its own DSN requests
        :param size: for a streamed message, its size (for ``SIZE=``) if known
        :param transfer: ``"auto"`` (BDAT for large, binary or streamed messages
            when the server offers CHUNKING, else DATA), ``"data"`` or ``"bdat"``
        :param dsn: delivery status notification requests (RFC 3461); refused
            before MAIL when the server does not offer DSN
        :param require_tls: ask that the message travel over TLS all the way
            (RFC 8689 REQUIRETLS); refused before MAIL on a session without TLS
            or when the server does not offer it
        :return: the final reply, accepted recipients and refused ones
        :raises SenderRefusedError: MAIL was refused (session reset, still usable)
        :raises RecipientsRefusedError: every recipient was refused (session usable)
        :raises DataRefusedError: DATA, BDAT or the message was refused (session usable)
        :raises ExtensionNotSupportedError: SMTPUTF8, 8BITMIME or CHUNKING is needed
            but not offered
        :raises MessageTooLargeError: larger than the server's SIZE limit
        :raises InvalidArgumentError: an address or the message can not be sent
            (``InvalidMessageError``: ``message`` is not a kind of message)
        :raises DeliveryUnknownError: the connection failed after the whole
            message was sent, before the server's verdict (session closed)
        :raises ServiceUnavailableError: the server said 421 (session closed)
        :raises ServerDisconnectedError: the connection broke (session closed)
        :raises SMTPTimeoutError: the server stalled (session closed)
        :raises SessionClosedError: the session is closed
        """
        options = Options(transfer, dsn, require_tls)
        return await self._send_one(
            mail_submission(sender, recipients, message, size=size, options=options)
        )

    async def send_message(
        self,
        message: Message,
        *,
        sender: str | None = None,
        recipients: str | Recipient | Iterable[str | Recipient] | None = None,
        transfer: Transfer = "auto",
        dsn: DSN | None = None,
        require_tls: bool = False,
    ) -> SendResult:
        """Send an :class:`email.message.EmailMessage` (or ``Message``).

        The envelope comes from Sender/From and To/Cc/Bcc, or from the
        Resent- fields when the message has one Resent- block; ``sender`` and
        ``recipients`` override it.  Bcc and Resent-Bcc are never transmitted.
        Non-ASCII addresses make the message use SMTPUTF8.  It raises the
        errors of :meth:`send_mail`.

        :return: as for :meth:`send_mail`
        """
        options = Options(transfer, dsn, require_tls)
        return await self._send_one(
            message_submission(message, sender=sender, recipients=recipients, options=options)
        )

    async def _send_one(self, submission: Submission) -> SendResult:
        async with self._exclusive():
            self._session.check(Event.MAIL)
            outcome = await Engine(self._channel, max_in_flight=1).send_one(submission)
        if isinstance(outcome, SMTPError):
            raise outcome
        return outcome

    def send_many(
        self,
        messages: Iterable[BatchItem] | AsyncIterable[BatchItem],
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        transfer: Transfer = "auto",
        dsn: DSN | None = None,
        require_tls: bool = False,
    ) -> SendBatch:
        """Send a batch of messages, as fast as the server allows.

        ``messages`` (an iterable or async iterable, read as the batch goes)
        holds :class:`~email.message.EmailMessage` objects or ``(sender,
        recipients, message)`` tuples as :meth:`send_mail` takes them.  With
        PIPELINING each message costs one round trip in steady state: its data
        goes in the same write as the next message's MAIL, RCPTs and DATA (RFC
        2920 §3.1); without it, messages go one command at a time.

        Yields one outcome per message, in order: a :class:`SendResult`, or the
        :class:`SMTPError` that message got (returned, not raised: a refused
        message, or a malformed item, does not stop the batch).  Each outcome's
        ``index`` is its message's position in ``messages``.  A failure of the
        session itself raises, after the messages in flight were given outcomes
        (``DeliveryUnknownError`` for one whose data was fully sent).

        The batch holds the session until it ends: other tasks' calls wait,
        and a call from inside the loop raises ``LocalProtocolError``.  To
        leave the loop early, iterate inside ``contextlib.aclosing`` (trio
        warns otherwise): leaving closes the session if a message is still in
        flight, and the outcomes the loop did not read are then in the
        batch's :attr:`~SendBatch.unread`::

            async with aclosing(smtp.send_many(messages)) as outcomes:
                async for outcome in outcomes:
                    ...
            for outcome in outcomes.unread:
                ...

        :param max_in_flight: most messages started and not yet answered;
            1 turns off pipelining across messages
        :param transfer: as for :meth:`send_mail`
        :param dsn: as for :meth:`send_mail`, for every message
        :param require_tls: as for :meth:`send_mail`, for every message
        :raises SessionClosedError: the session is closed
        :raises InvalidArgumentError: ``max_in_flight`` is not a positive int
        """
        if (
            isinstance(max_in_flight, bool)
            or not isinstance(max_in_flight, int)
            or max_in_flight < 1
        ):
            raise InvalidArgumentError("max_in_flight must be a positive int")
        unread: list[Outcome] = []
        options = Options(transfer, dsn, require_tls)
        return SendBatch(self._send_many(messages, max_in_flight, options, unread), unread)

    async def _send_many(
        self,
        messages: Iterable[BatchItem] | AsyncIterable[BatchItem],
        max_in_flight: int,
        options: Options,
        unread: list[Outcome],
    ) -> AsyncGenerator[Outcome, None]:
        async with self._exclusive():
            self._session.check(Event.MAIL)
            engine = Engine(self._channel, max_in_flight=max_in_flight)
            finished = False
            index = 0
            self._batch_task = anyio.get_current_task().id
            try:
                async with aclosing(engine.run(Source(messages, options))) as outcomes:
                    async for outcome in outcomes:
                        outcome = with_index(outcome, index)
                        index += 1
                        yield outcome
                finished = True
            finally:
                self._batch_task = None
                if not finished:
                    # Left early: the outcomes decided but not read.
                    for outcome in engine.unread():
                        unread.append(with_index(outcome, index))
                        index += 1
                if not finished and not self.closed and engine.in_transaction:
                    # The caller left with a message half sent: the only safe
                    # way out of a data phase is to drop the connection.
                    await self._channel.abort(None)

    async def noop(self) -> Reply:
        """Send NOOP; useful to check that the session is alive.

        :raises ReplyError: the server did not answer 250 (the session stays open)
        :raises SessionClosedError: the session is closed
        """
        async with self._exclusive():
            self._session.check(Event.NOOP)
            async with self._channel.fatal():
                reply = await self._channel.command(Noop())
        if reply.code != 250:
            raise ReplyError("NOOP", reply)
        return reply

    async def mail(self, sender: str, *, parameters: Iterable[str] = ()) -> Reply:
        """Send ``MAIL FROM`` on its own, one step of a transaction (for probing a server).

        :meth:`send_mail` and :meth:`send_many` run whole transactions and are
        what sends mail; this and :meth:`rcpt` are for checking what a server
        answers, step by step.  An accepted ``MAIL`` opens a transaction that
        only :meth:`rcpt`, :meth:`rset` or :meth:`quit` may follow.  A domain
        that is not ASCII goes in A-labels (no SMTPUTF8 is asked for).

        :param parameters: ESMTP parameters, e.g. ``("SIZE=1000",)``; each is
            checked, none is added
        :raises SenderRefusedError: refused (the transaction is reset; the
            session stays usable)
        :raises InvalidArgumentError: a bad address or parameter (nothing written)
        :raises LocalProtocolError: a transaction is already open
        :raises SessionClosedError: the session is closed
        """
        sender, checked = _envelope_step("sender", sender, parameters)
        command = Mail(sender, checked, idna=True)
        async with self._exclusive():
            self._session.check(Event.MAIL)
            async with self._channel.fatal():
                reply = await self._channel.command(command)
                if reply.is_positive:
                    return reply
                refusal = SenderRefusedError(sender, reply)
                await self._channel.reset_after(refusal)
        raise refusal

    async def rcpt(self, recipient: str, *, parameters: Iterable[str] = ()) -> Reply:
        """Send ``RCPT TO`` on its own, after :meth:`mail` (for probing a server).

        :raises RecipientsRefusedError: this recipient was refused (the
            transaction stays open for more recipients, :meth:`rset` or :meth:`quit`)
        :raises InvalidArgumentError: a bad address or parameter (nothing written)
        :raises LocalProtocolError: no transaction is open (call :meth:`mail` first)
        :raises SessionClosedError: the session is closed
        """
        recipient, checked = _envelope_step("recipient", recipient, parameters)
        command = Rcpt(recipient, checked, idna=True)
        async with self._exclusive():
            self._session.check(Event.RCPT)
            async with self._channel.fatal():
                reply = await self._channel.command(command)
        if not reply.is_positive:
            raise RecipientsRefusedError({recipient: reply})
        return reply

    async def rset(self) -> Reply:
        """Send RSET, abandoning any transaction the server may hold.

        :raises ReplyError: the server did not answer 250 (session closed)
        :raises SessionClosedError: the session is closed
        """
        async with self._exclusive():
            self._session.check(Event.RSET)
            async with self._channel.fatal():
                return await self._channel.reset()

    async def quit(self) -> Reply:
        """Send QUIT, wait for the reply and close the connection.

        :return: the server's reply (normally 221)
        :raises SessionClosedError: the session was already closed
        :raises ServerDisconnectedError: no proper reply (closed anyway)
        :raises SMTPTimeoutError: no reply in time (closed anyway)
        """
        async with self._exclusive():
            self._session.check(Event.QUIT)
            async with self._channel.fatal():
                reply = await self._channel.command(Quit())
            await self._channel.close_stream()
            self._channel.ended_politely()
            await self._channel.emit(SessionQuit(reply))
            return reply

    async def aclose(self) -> None:
        """End the session: QUIT with a short wait when idle, then close the connection.

        Never raises for a session that is already closed or a server that
        does not answer; the connection is always closed.
        """
        if self.closed or self._lock.value == 0:
            await self._channel.abort(None)
            return
        try:
            with anyio.move_on_after(QUIT_TIMEOUT):
                await self.quit()
        except SMTPError:
            pass  # the connection is closed below whatever QUIT got
        finally:
            await self._channel.abort(None)

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
            await self._channel.abort(exc)


async def start_session(
    client: SMTPClient,
    *,
    host: str | None = None,
    port: int | None = None,
    implicit_tls: bool = False,
    starttls: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    tls_hostname: str | None = None,
) -> SMTPClient:
    """Greet a new session: [implicit TLS], the greeting, EHLO, [STARTTLS].

    Any failure closes the session (the connect functions' single way in).
    """
    try:
        await client._channel.emit(Connected(host, port))
        if implicit_tls:
            await client._start_implicit_tls(ssl_context, tls_hostname)
        await client._open()
        if starttls:
            await client.starttls(ssl_context=ssl_context, tls_hostname=tls_hostname)
    except BaseException as exc:
        await client._channel.abort(exc)
        raise
    return client

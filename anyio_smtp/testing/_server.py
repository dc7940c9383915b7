"""The public test server: configuration, listener, reply rules and waiting helpers.

How this works
==============

* ``SMTPTestServer`` owns a TCP listener on 127.0.0.1 (port 0) and a task group. Every
  accepted connection, and every stream handed to ``serve_stream()``, becomes one
  ``Session`` (``_session``) running in its own task (or in the caller's task for
  ``serve_stream()``). Sessions share nothing but the server's records (messages,
  transcript, counters) and its reply-override rules (``_rules``); all of it lives in
  one thread, so no locking is needed.
* A command is validated by its handler (``_commands``), which returns the normal reply
  and the state change. A reply override from ``SMTPTestServer.reply()`` replaces the
  reply text; the state change happens only if both the normal reply and the override
  are positive (2xx/3xx), so an overridden refusal has exactly the effect of a real one.
* The data phase (``DATA`` and ``BDAT``) is ``_data``, the AUTH exchanges ``_auth``.
  Faults set with ``SMTPTestServer.fault()`` are ``Fault`` values (``_faults``); a
  session takes the one for a command before the command's reply override, and acts it
  out (close, stall, delay, ``421``, injected bytes).
* The server is deliberately independent of the rest of the package: it imports nothing
  from the client, so a client bug cannot be mirrored (and hidden) by shared code.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Literal, Self

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketStream, TaskGroup
from anyio.streams.stapled import MultiListener

from ._auth import DEFAULT_AUTH_MECHANISMS, SUPPORTED_AUTH_MECHANISMS, TOKEN_AUTH_MECHANISMS
from ._faults import DATA_POINTS, Fault, FaultBook, FaultRule
from ._messages import ReceivedMessage, TranscriptLine
from ._rules import Rule, RuleBook, check_reply, check_times
from ._session import CONNECTION_ERRORS, Session

__all__ = ("SUPPORTED_AUTH_MECHANISMS", "TOKEN_AUTH_MECHANISMS", "SMTPTestServer")


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
    :param users: user name to password, for ``PLAIN``, ``LOGIN``, ``CRAM-MD5`` and
        ``SCRAM-SHA-256``; enables ``AUTH`` (``None`` disables it, unless ``tokens`` is
        given)
    :param auth_mechanisms: the mechanisms to offer and accept, in that order: any of
        :data:`SUPPORTED_AUTH_MECHANISMS` and :data:`TOKEN_AUTH_MECHANISMS`; by default
        ``CRAM-MD5``, ``PLAIN`` and ``LOGIN``
    :param tokens: user name to OAuth 2.0 access token, for ``XOAUTH2`` and
        ``OAUTHBEARER`` (which must be listed in ``auth_mechanisms``); enables ``AUTH``.
        A wrong token gets the mechanism's error challenge (base64 JSON), and ``535``
        once the client has answered it. An OAUTHBEARER login without ``a=`` is the user
        whose token it is
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
    :param chunking: advertise ``CHUNKING`` among the default EHLO keywords and accept
        ``BDAT size [LAST]`` (RFC 3030); ``BDAT`` is also accepted when ``extensions``
        lists ``CHUNKING``. A chunk is read in full whatever its answer; each chunk but
        the last gets ``250 2.0.0 <size> octets received``, the last one the verdict on
        the message (``EOM`` overrides and faults apply to it as to the end of ``DATA``)
    """

    def __init__(
        self,
        hostname: str = "mx.test",
        *,
        extensions: Iterable[str] | None = None,
        starttls_context: ssl.SSLContext | None = None,
        tls_context: ssl.SSLContext | None = None,
        users: Mapping[str, str] | None = None,
        auth_mechanisms: Iterable[str] = DEFAULT_AUTH_MECHANISMS,
        tokens: Mapping[str, str] | None = None,
        auth_require_tls: bool = True,
        require_auth: bool = False,
        size_limit: int | None = None,
        max_line_length: int = 1000,
        transcript_data: bool = True,
        refuse_pipelined_after_data: bool = False,
        chunking: bool = False,
    ) -> None:
        mechanisms = tuple(mech.upper() for mech in auth_mechanisms)
        known = SUPPORTED_AUTH_MECHANISMS + TOKEN_AUTH_MECHANISMS
        unknown = [mech for mech in mechanisms if mech not in known]
        if unknown:
            raise ValueError(f"unsupported AUTH mechanisms: {', '.join(unknown)}")
        bearer = [mech for mech in mechanisms if mech in TOKEN_AUTH_MECHANISMS]
        if bearer and tokens is None:
            raise ValueError(f"the AUTH mechanisms {', '.join(bearer)} need tokens=")
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
        #: User name to access token, for the bearer-token mechanisms.
        self.tokens: dict[str, str] | None = None if tokens is None else dict(tokens)
        self.auth_mechanisms = mechanisms
        self.auth_require_tls = auth_require_tls
        self.require_auth = require_auth
        self.size_limit = size_limit
        self.max_line_length = max_line_length
        self.transcript_data = transcript_data
        self.refuse_pipelined_after_data = refuse_pipelined_after_data
        self.chunking = chunking

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

        #: The faults that have been acted out, in order, e.g.
        #: ``"session 0: close after 100 octets of DATA"``.
        self.fault_log: list[str] = []

        self._rules: RuleBook[Rule] = RuleBook()
        self._faults = FaultBook()
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
        reply_text = check_reply(text)
        check_times(times)
        self._rules.add(Rule(verb.upper(), reply_text, match, times, close))

    def clear_replies(self) -> None:
        """Drop all reply overrides."""
        self._rules.clear()

    def fault(
        self,
        at: str,
        fault: Fault,
        *,
        match: str | None = None,
        times: int | None = 1,
    ) -> None:
        """Make the server misbehave at coming commands (see :class:`Fault`).

        Faults are checked newest first, like reply overrides, and before them: a fault
        that replaces the reply (close, stall, shutdown) wins over an override; with
        delay and inject the reply is the override's if there is one. Each use is
        noted in :attr:`fault_log`.

        Examples: ``fault("MAIL", Fault.close())`` drops the connection when ``MAIL``
        arrives; ``fault("DATA", Fault.close(after_bytes=100))`` drops it after 100
        octets of message data; ``fault("RCPT", Fault.stall())`` stops answering;
        ``fault("EHLO", Fault.delay(0.5))``; ``fault("GREETING", Fault.shutdown())``
        greets with ``421`` and closes; ``fault("STARTTLS", Fault.inject(b"250 x\\r\\n"))``
        sends bytes after the ``220`` before the handshake.

        :param at: the command (case-insensitive), ``"GREETING"`` for the greeting, or
            ``"EOM"`` for the reply to the end of message data
        :param fault: what to do
        :param match: a case-insensitive substring that must occur in the command's
            argument (for ``EOM``: in the message data)
        :param times: how many matching commands the fault applies to (the next one by
            default); ``None`` for all
        :raises ValueError: if ``after_bytes`` is used elsewhere than at ``DATA`` or
            ``BDAT``, or ``times`` is not positive
        """
        point = at.upper()
        if fault.after_bytes is not None:
            if point not in DATA_POINTS:
                raise ValueError("after_bytes applies at DATA or BDAT only")
            if fault.kind not in ("close", "stall", "shutdown"):
                raise ValueError("after_bytes applies to close, stall and shutdown only")
        check_times(times)
        self._faults.add(FaultRule(point, fault, match, times))

    def clear_faults(self) -> None:
        """Drop all faults that have not been used up."""
        self._faults.clear()

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

    def _fault_fired(self, session: int, what: str) -> None:
        self.fault_log.append(f"session {session}: {what}")
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _record(self, session: int, direction: Literal["C", "S"], line: str) -> None:
        self.transcript.append(TranscriptLine(direction, line, session))
        self._notify()

    async def _serve(self, stream: ByteStream) -> None:
        index = self.sessions
        self.sessions += 1
        self._notify()
        session = Session(self, stream, index)
        scope = anyio.CancelScope()
        self._scopes.add(scope)
        try:
            with scope:
                try:
                    await session.run()
                except CONNECTION_ERRORS as exc:
                    self.session_errors.append(
                        f"session {index}: connection lost ({type(exc).__name__}: {exc})"
                    )
        finally:
            self._scopes.discard(scope)
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(session.stream)
            self.sessions_closed += 1
            self._notify()

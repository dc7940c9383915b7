"""An in-process aiosmtpd server on loopback, running its own event loop in a thread.

Because the server has its own thread and asyncio loop, tests using it may run on
any async backend (asyncio or trio) or be plain synchronous tests.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from .tls import LoopbackCertificates

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ReceivedMessage:
    """One message accepted by the server, with its envelope.

    ``content`` is exactly the bytes of the DATA section after dot-unstuffing, with
    the line endings the client sent (the final ``.`` line is not included).
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    mail_options: tuple[str, ...]
    rcpt_options: tuple[str, ...]
    smtp_utf8: bool
    helo_name: str | None
    authenticated_as: str | None
    tls: bool


@dataclass(frozen=True)
class AuthAttempt:
    """One AUTH exchange that reached the authenticator."""

    mechanism: str
    login: str
    success: bool


class _RecordingHandler:
    """aiosmtpd handler that keeps every accepted message."""

    def __init__(self, server: AiosmtpdServer) -> None:
        self._server = server

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content
        assert isinstance(content, bytes)
        assert envelope.mail_from is not None
        login = session.auth_data if isinstance(session.auth_data, str) else None
        message = ReceivedMessage(
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            content=content,
            mail_options=tuple(envelope.mail_options),
            rcpt_options=tuple(envelope.rcpt_options),
            smtp_utf8=envelope.smtp_utf8,
            helo_name=session.host_name,
            authenticated_as=login,
            tls=session.ssl is not None or self._server.implicit_tls,
        )
        self._server._record_message(message)
        return "250 2.0.0 OK: message accepted"


class _Controller(Controller):
    """Controller that may bind port 0 and learns the port before its first connection."""

    def _trigger_server(self) -> None:
        if self.port == 0 and isinstance(self.server, asyncio.Server):
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class AiosmtpdServer:
    """An aiosmtpd server on 127.0.0.1 that records what it receives.

    * ``starttls=True`` offers STARTTLS; ``require_starttls=True`` refuses other
      commands until TLS is on.
    * ``implicit_tls=True`` speaks TLS from the first byte (aiosmtpd does not know
      the link is encrypted, so AUTH is allowed without STARTTLS there).
    * ``users`` enables AUTH PLAIN and LOGIN against that table; ``auth_required``
      refuses mail from unauthenticated clients.
    """

    host: str = HOST

    def __init__(
        self,
        *,
        certificates: LoopbackCertificates | None = None,
        starttls: bool = False,
        require_starttls: bool = False,
        implicit_tls: bool = False,
        users: Mapping[str, str] | None = None,
        auth_required: bool = False,
        data_size_limit: int = 33_554_432,
        hostname: str = "aiosmtpd.example.test",
        port: int = 0,
    ) -> None:
        if (starttls or implicit_tls) and certificates is None:
            raise ValueError("TLS needs certificates")
        if starttls and implicit_tls:
            raise ValueError("choose STARTTLS or implicit TLS, not both")
        if require_starttls and not starttls:
            raise ValueError("require_starttls needs starttls=True")
        if auth_required and not users:
            raise ValueError("auth_required needs users")
        self.certificates = certificates
        self.starttls = starttls
        self.require_starttls = require_starttls
        self.implicit_tls = implicit_tls
        self.users: dict[str, str] = dict(users or {})
        self.auth_required = auth_required
        self.data_size_limit = data_size_limit
        self.hostname = hostname
        self._requested_port = port
        self._lock = threading.Lock()
        self._messages: list[ReceivedMessage] = []
        self._auth_attempts: list[AuthAttempt] = []
        self._controller: _Controller | None = None

    # ------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._controller is not None:
            raise RuntimeError("the aiosmtpd server is already running")
        server_context = self.certificates.server_context() if self.certificates else None
        smtp_parameters: dict[str, Any] = {
            "data_size_limit": self.data_size_limit,
            "enable_SMTPUTF8": True,
            "decode_data": False,
        }
        if self.starttls:
            smtp_parameters["tls_context"] = server_context
            smtp_parameters["require_starttls"] = self.require_starttls
        if self.users:
            smtp_parameters["authenticator"] = self._authenticate
            smtp_parameters["auth_required"] = self.auth_required
            # On implicit TLS aiosmtpd cannot tell the link is encrypted.
            smtp_parameters["auth_require_tls"] = self.starttls
        controller = _Controller(
            _RecordingHandler(self),
            hostname=HOST,
            port=self._requested_port,
            ssl_context=server_context if self.implicit_tls else None,
            server_hostname=self.hostname,
            ready_timeout=10.0,
            **smtp_parameters,
        )
        try:
            controller.start()
        except BaseException:
            controller.stop(no_assert=True)
            raise
        self._controller = controller

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> AiosmtpdServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ properties

    @property
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError("the aiosmtpd server is not running")
        port = self._controller.port
        assert isinstance(port, int)
        return port

    @property
    def ca_pem_path(self) -> str:
        if self.certificates is None:
            raise RuntimeError("this aiosmtpd server has no TLS")
        return str(self.certificates.ca_pem)

    def client_ssl_context(self) -> ssl.SSLContext:
        """A new client context trusting the test CA (host names are checked)."""
        if self.certificates is None:
            raise RuntimeError("this aiosmtpd server has no TLS")
        return self.certificates.client_context()

    # -------------------------------------------------------------- records

    @property
    def messages(self) -> list[ReceivedMessage]:
        """The messages accepted so far, oldest first (a copy)."""
        with self._lock:
            return list(self._messages)

    @property
    def auth_attempts(self) -> list[AuthAttempt]:
        with self._lock:
            return list(self._auth_attempts)

    def wait_for_messages(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Poll until at least ``count`` messages were accepted, and return them.

        A message is recorded before the server acknowledges the DATA, so after a
        successful send no waiting is normally needed.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"expected {count} message(s) within {timeout} s, got {len(found)}"
                )
            time.sleep(0.01)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self._auth_attempts.clear()

    def _record_message(self, message: ReceivedMessage) -> None:
        with self._lock:
            self._messages.append(message)

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", errors="replace")
        expected = self.users.get(login)
        success = expected is not None and auth_data.password == expected.encode("utf-8")
        with self._lock:
            self._auth_attempts.append(AuthAttempt(mechanism, login, success))
        if not success:
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=login)

"""AUTH on the test server side: the SASL exchanges (RFC 4954) and the credential checks."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._session import Session

__all__ = ("SUPPORTED_AUTH_MECHANISMS", "authenticate")

#: Mechanisms the server implements.
SUPPORTED_AUTH_MECHANISMS = ("CRAM-MD5", "PLAIN", "LOGIN")


async def authenticate(session: Session, arg: str) -> None:
    """Run the ``AUTH`` command with argument ``arg``: checks, exchange, final reply."""
    server = session.server
    if server.users is None:
        session.queue(session.fmt(503, "5.5.1", "Error: authentication not enabled"))
        return
    if not session.esmtp:
        session.queue(session.fmt(503, "5.5.1", "Error: send EHLO first"))
        return
    if server.auth_require_tls and not session.tls:
        session.queue(
            session.fmt(538, "5.7.11", "Encryption required for requested authentication mechanism")
        )
        return
    if session.authenticated_as is not None:
        session.queue(session.fmt(503, "5.5.1", "Error: already authenticated"))
        return
    if session.transaction is not None:
        session.queue(session.fmt(503, "5.5.1", "Error: MAIL transaction in progress"))
        return
    parts = arg.split()
    if not parts or len(parts) > 2:
        session.queue(session.fmt(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"))
        return
    mechanism = parts[0].upper()
    initial = parts[1] if len(parts) == 2 else None
    if mechanism not in server.auth_mechanisms:
        session.queue(session.fmt(504, "5.5.4", "Unrecognized authentication type"))
        return

    exchange = _Exchange(session)
    if mechanism == "PLAIN":
        user = await exchange.plain(initial)
    elif mechanism == "LOGIN":
        user = await exchange.login(initial)
    else:
        user = await exchange.cram_md5(initial)
    if user is not None:
        session.authenticated_as = user
        session.queue(session.fmt(235, "2.7.0", "Authentication successful"))


class _Exchange:
    """One SASL exchange; each mechanism returns the user, or ``None`` after a reply."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.users = session.server.users or {}

    def check_password(self, user: str, password: str) -> bool:
        expected = self.users.get(user)
        return expected is not None and hmac.compare_digest(
            expected.encode("utf-8"), password.encode("utf-8")
        )

    def failed(self) -> None:
        self.session.queue(self.session.fmt(535, "5.7.8", "Authentication credentials invalid"))

    def decode(self, text: str) -> bytes | None:
        """Decode a base64 client response; queue an error reply if it is malformed."""
        if text == "=":
            return b""
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            self.session.queue(self.session.fmt(501, "5.5.2", "Cannot decode response"))
            return None

    async def challenge(self, challenge: str) -> bytes | None:
        """Send a ``334`` challenge and read the decoded response.

        :return: the response, or ``None`` if the exchange is over (a reply was queued, or
            the connection ended)
        """
        session = self.session
        session.queue(f"334 {challenge}")
        line = await session.read_line()
        if line is None:
            session.note("connection closed during AUTH")
            session.closing = True
            return None
        session.record("C", line)
        text = line.decode("ascii", "replace").strip()
        if text == "*":
            session.queue(session.fmt(501, "5.7.0", "Authentication cancelled"))
            return None
        return self.decode(text)

    async def plain(self, initial: str | None) -> str | None:
        response = await self.challenge("") if initial is None else self.decode(initial)
        if response is None:
            return None
        fields = response.split(b"\0")
        try:
            authzid, user, password = (part.decode("utf-8") for part in fields)
        except (ValueError, UnicodeDecodeError):
            self.session.queue(self.session.fmt(501, "5.5.2", "Malformed PLAIN response"))
            return None
        if authzid not in ("", user) or not self.check_password(user, password):
            self.failed()
            return None
        return user

    async def login(self, initial: str | None) -> str | None:
        if initial is None:
            user_bytes = await self.challenge("VXNlcm5hbWU6")
        else:
            user_bytes = self.decode(initial)
        if user_bytes is None:
            return None
        password_bytes = await self.challenge("UGFzc3dvcmQ6")
        if password_bytes is None:
            return None
        try:
            user = user_bytes.decode("utf-8")
            password = password_bytes.decode("utf-8")
        except UnicodeDecodeError:
            self.failed()
            return None
        if not self.check_password(user, password):
            self.failed()
            return None
        return user

    async def cram_md5(self, initial: str | None) -> str | None:
        if initial is not None:
            self.session.queue(self.session.fmt(501, "5.5.4", "CRAM-MD5 takes no initial response"))
            return None
        nonce = f"<{secrets.randbelow(10**12)}.{int(time.time())}@{self.session.server.hostname}>"
        response = await self.challenge(base64.b64encode(nonce.encode("utf-8")).decode("ascii"))
        if response is None:
            return None
        try:
            user, digest = response.decode("utf-8").rsplit(" ", 1)
        except (ValueError, UnicodeDecodeError):
            self.failed()
            return None
        password = self.users.get(user)
        if password is None:
            self.failed()
            return None
        expected = hmac.new(password.encode("utf-8"), nonce.encode("utf-8"), hashlib.md5)
        if not hmac.compare_digest(expected.hexdigest(), digest.lower()):
            self.failed()
            return None
        return user

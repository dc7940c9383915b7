"""AUTH on the test server side: the SASL exchanges (RFC 4954) and the credential checks.

Password mechanisms (PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256) check the server's ``users``;
the bearer-token mechanisms (XOAUTH2, OAUTHBEARER) check its ``tokens``. Everything is
written here on the standard library (hashlib, hmac, secrets, base64), apart from the
client's own SASL code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import stringprep
import time
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._session import Session

__all__ = (
    "DEFAULT_AUTH_MECHANISMS",
    "SUPPORTED_AUTH_MECHANISMS",
    "TOKEN_AUTH_MECHANISMS",
    "authenticate",
)

#: Password mechanisms the server implements (checked against ``users``).
SUPPORTED_AUTH_MECHANISMS = ("CRAM-MD5", "PLAIN", "LOGIN", "SCRAM-SHA-256")
#: Bearer-token mechanisms the server implements (checked against ``tokens``).
TOKEN_AUTH_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")
#: The mechanisms offered when none are given.
DEFAULT_AUTH_MECHANISMS = ("CRAM-MD5", "PLAIN", "LOGIN")

#: The SCRAM iteration count (RFC 7677 §4: at least 4096).
SCRAM_ITERATIONS = 4096


async def authenticate(session: Session, arg: str) -> None:
    """Run the ``AUTH`` command with argument ``arg``: checks, exchange, final reply."""
    server = session.server
    if server.users is None and server.tokens is None:
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
    elif mechanism == "SCRAM-SHA-256":
        user = await exchange.scram(initial, "sha256")
    elif mechanism in TOKEN_AUTH_MECHANISMS:
        user = await exchange.bearer(initial, mechanism)
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
        self.tokens = session.server.tokens or {}

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

    async def scram(self, initial: str | None, digest: str) -> str | None:
        """SCRAM (RFC 5802, RFC 7677 for SHA-256) without channel binding."""
        first = await self.challenge("") if initial is None else self.decode(initial)
        if first is None:
            return None
        try:
            client_first = first.decode("utf-8")
        except UnicodeDecodeError:
            self.malformed("SCRAM")
            return None
        # client-first-message = gs2-header client-first-message-bare
        # gs2-header = gs2-cbind-flag "," [ authzid ] ","
        flag, _, rest = client_first.partition(",")
        authzid, _, bare = rest.partition(",")
        # "y": the client could bind but the server did not offer -PLUS; fine here.
        if flag not in ("n", "y") or not bare:
            self.malformed("SCRAM")
            return None
        attributes = _scram_attributes(bare)
        if attributes is None or [key for key, _ in attributes[:2]] != ["n", "r"]:
            self.malformed("SCRAM")
            return None
        user = _unescape_saslname(attributes[0][1])
        client_nonce = attributes[1][1]
        if user is None or not client_nonce or (authzid and authzid != f"a={attributes[0][1]}"):
            self.malformed("SCRAM")
            return None
        salt = secrets.token_bytes(16)
        nonce = client_nonce + base64.b64encode(secrets.token_bytes(18)).decode("ascii")
        server_first = f"r={nonce},s={base64.b64encode(salt).decode('ascii')},i={SCRAM_ITERATIONS}"
        final = await self.challenge(base64.b64encode(server_first.encode()).decode("ascii"))
        if final is None:
            return None
        try:
            client_final = final.decode("utf-8")
        except UnicodeDecodeError:
            self.malformed("SCRAM")
            return None
        without_proof, _, proof_part = client_final.rpartition(",p=")
        final_attributes = _scram_attributes(without_proof)
        gs2_header = client_first[: len(client_first) - len(bare)]
        expected_binding = base64.b64encode(gs2_header.encode("utf-8")).decode("ascii")
        if (
            final_attributes is None
            or [key for key, _ in final_attributes[:2]] != ["c", "r"]
            or not proof_part
        ):
            self.malformed("SCRAM")
            return None
        try:
            proof = base64.b64decode(proof_part, validate=True)
        except (binascii.Error, ValueError):
            self.malformed("SCRAM")
            return None
        password = self.users.get(user)
        if (
            final_attributes[0][1] != expected_binding
            or final_attributes[1][1] != nonce
            or password is None
        ):
            self.failed()
            return None
        salted = hashlib.pbkdf2_hmac(digest, _saslprep(password), salt, SCRAM_ITERATIONS)
        client_key = hmac.digest(salted, b"Client Key", digest)
        stored_key = hashlib.new(digest, client_key).digest()
        auth_message = ",".join((bare, server_first, without_proof)).encode("utf-8")
        client_signature = hmac.digest(stored_key, auth_message, digest)
        if len(proof) != len(client_signature):
            self.failed()
            return None
        claimed_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        if not hmac.compare_digest(hashlib.new(digest, claimed_key).digest(), stored_key):
            self.failed()
            return None
        server_key = hmac.digest(salted, b"Server Key", digest)
        verifier = b"v=" + base64.b64encode(hmac.digest(server_key, auth_message, digest))
        # RFC 4954 §4: data that can not go with 235 is a challenge, answered empty.
        last = await self.challenge(base64.b64encode(verifier).decode("ascii"))
        if last is None:
            return None
        if last:
            self.malformed("SCRAM")
            return None
        return user

    async def bearer(self, initial: str | None, mechanism: str) -> str | None:
        """XOAUTH2 (Google, Microsoft) or OAUTHBEARER (RFC 7628) with a bearer token."""
        response = await self.challenge("") if initial is None else self.decode(initial)
        if response is None:
            return None
        try:
            text = response.decode("utf-8")
        except UnicodeDecodeError:
            self.malformed(mechanism)
            return None
        if mechanism == "XOAUTH2":
            # "user=" {User} "^A" "auth=Bearer " {Access Token} "^A^A"
            fields = text.split("\x01")
            pairs = dict(field.partition("=")[::2] for field in fields if field)
            user: str | None = pairs.get("user")
            if user is None or fields[-2:] != ["", ""]:
                self.malformed(mechanism)
                return None
        else:
            # gs2-header kvsep *kvpair kvsep, gs2-header = "n," ["a=" saslname] ","
            header, _, kvpairs = text.partition("\x01")
            flag, _, rest = header.partition(",")
            authzid, _, tail = rest.partition(",")
            if flag not in ("n", "y") or tail or not kvpairs.endswith("\x01"):
                self.malformed(mechanism)
                return None
            if authzid and not authzid.startswith("a="):
                self.malformed(mechanism)
                return None
            user = _unescape_saslname(authzid[2:]) if authzid else None
            pairs = dict(field.partition("=")[::2] for field in kvpairs.split("\x01") if field)
        auth = pairs.get("auth", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            self.malformed(mechanism)
            return None
        if user is None:
            user = next((name for name, known in self.tokens.items() if known == token), None)
        expected = None if user is None else self.tokens.get(user)
        if (
            user is not None
            and expected is not None
            and hmac.compare_digest(expected.encode("utf-8"), token.encode("utf-8"))
        ):
            return user
        # The error challenge, then 535 once the client has answered it.
        if mechanism == "XOAUTH2":
            error = {"status": "401", "schemes": "Bearer", "scope": "https://mail.test/"}
        else:
            error = {"status": "invalid_token", "scope": "mail", "openid-configuration": ""}
        body = json.dumps(error).encode("utf-8")
        answer = await self.challenge(base64.b64encode(body).decode("ascii"))
        if answer is None:
            return None
        self.failed()
        return None

    def malformed(self, mechanism: str) -> None:
        self.session.queue(self.session.fmt(501, "5.5.2", f"Malformed {mechanism} response"))


def _scram_attributes(text: str) -> list[tuple[str, str]] | None:
    """``a=value,b=value`` as pairs, or ``None`` if a part is not ``letter=value``."""
    pairs = []
    for part in text.split(","):
        key, equals, value = part.partition("=")
        if len(key) != 1 or not key.isalpha() or not equals:
            return None
        pairs.append((key, value))
    return pairs


def _unescape_saslname(name: str) -> str | None:
    """RFC 5802 saslname: ``=2C`` is ``,`` and ``=3D`` is ``=``; any other ``=`` is wrong."""
    if "=" in name.replace("=2C", "").replace("=3D", ""):
        return None
    return name.replace("=2C", ",").replace("=3D", "=")


def _saslprep(password: str) -> bytes:
    """SASLprep (RFC 4013) mapping and normalisation: what the password hash is made of.

    Non-ASCII spaces become spaces, characters "commonly mapped to nothing" go, and the
    result is NFKC-normalised (the prohibited-output and bidi checks are left out: a test
    server compares, it does not refuse passwords).
    """
    if password.isascii():
        return password.encode("utf-8")
    mapped = "".join(
        " " if stringprep.in_table_c12(char) else char
        for char in password
        if not stringprep.in_table_b1(char)
    )
    return unicodedata.normalize("NFKC", mapped).encode("utf-8")

"""SMTP AUTH with SCRAM (and -PLUS) and with OAuth tokens, against a scripted server.

The server side of SCRAM is computed here from the password, independently of
the client code, so the client's random nonce is handled and its proof checked;
for -PLUS the server checks ``c=`` against the channel binding of its own
certificate.  Every session runs over TLS (STARTTLS on an in-memory stream).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache

import pytest
import trustme

import anyio_smtp
from anyio_smtp import (
    AuthenticationError,
    ExtensionNotSupportedError,
    RemoteProtocolError,
    SessionClosedError,
    SMTPClient,
)
from anyio_smtp.auth import OAuthBearer, XOAuth2
from anyio_smtp.auth._channel_binding import tls_server_end_point
from tests.client.scripted import Peer, scripted
from tests.tls import client_context, shared_ca

CLIENT = "client.test"
USER = "alice@example.test"
PASSWORD = "correct horse battery"
TOKEN = "ya29.secret-access-token_0123456789"
OK = "235 2.7.0 Authentication successful"
STARTTLS_EHLO = ("250-mx.test", "250-STARTTLS", "250 ENHANCEDSTATUSCODES")


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def auth_ehlo(mechanisms: str) -> tuple[str, ...]:
    return ("250-mx.test", "250-PIPELINING", f"250-AUTH {mechanisms}", "250 ENHANCEDSTATUSCODES")


@dataclass(frozen=True)
class ServerCertificate:
    context: ssl.SSLContext
    der: bytes


@cache
def server_certificate() -> ServerCertificate:
    """The scripted server's TLS context and its certificate (DER), from the test CA."""
    leaf = shared_ca().issue_cert("mx.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode("ascii"))
    return ServerCertificate(context, der)


async def start_tls(peer: Peer, mechanisms: str) -> None:
    """Greeting, EHLO, STARTTLS, handshake, EHLO again offering ``mechanisms``."""
    await peer.greet(STARTTLS_EHLO)
    await peer.lone("STARTTLS")
    await peer.send("220 2.0.0 Ready to start TLS")
    await peer.start_tls(server_certificate().context)
    await peer.lone("EHLO ")
    await peer.send(*auth_ehlo(mechanisms))


@asynccontextmanager
async def tls_session(script: Callable[[Peer], Awaitable[None]]) -> AsyncIterator[SMTPClient]:
    """A client session with ``script`` as the server, upgraded with STARTTLS."""
    async with (
        scripted(script) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, tls_hostname="mx.test") as smtp,
    ):
        await smtp.starttls(ssl_context=client_context())
        assert smtp.tls
        yield smtp


async def closes_quietly(peer: Peer) -> None:
    assert await peer.rest() == b""


# -- a SCRAM server (RFC 5802), written from the RFC independently of the client ---------


@dataclass
class ScramServer:
    """Plays the server side of one SCRAM exchange and checks the client's messages.

    :ivar gs2_flag: the GS2 flag the client must send: "n", "y" or "p"
    :ivar final_in: where the server-final goes: a 334 "challenge" or the 235 "success"
    :ivar tamper: send a wrong server signature
    :ivar omit_final: say 235 without any server-final message
    :ivar error: send ``e=<error>`` instead of the server-final message
    """

    mechanism: str
    password: str = PASSWORD
    username: str = USER
    gs2_flag: str = "y"
    final_in: str = "challenge"
    tamper: bool = False
    omit_final: bool = False
    error: str | None = None
    iterations: int = 4096

    @property
    def digest(self) -> str:
        return "sha256" if "SHA-256" in self.mechanism else "sha1"

    def expected_gs2_header(self) -> bytes:
        if self.gs2_flag == "p":
            return b"p=tls-server-end-point,,"
        return self.gs2_flag.encode() + b",,"

    def expected_binding(self) -> bytes:
        header = self.expected_gs2_header()
        if self.gs2_flag == "p":
            # The server's own view of the channel: the hash of its certificate.
            return header + tls_server_end_point(server_certificate().der)
        return header

    async def run(self, peer: Peer) -> None:
        line = await peer.lone("AUTH ")
        name, _, initial = line[len("AUTH ") :].partition(" ")
        assert name == self.mechanism
        client_first = base64.b64decode(initial, validate=True)
        header = self.expected_gs2_header()
        assert client_first.startswith(header), client_first
        bare = client_first[len(header) :]
        match = re.fullmatch(rb"n=([^,]*),r=([\x21-\x2b\x2d-\x7e]+)", bare)
        assert match is not None, bare
        assert match[1].decode() == self.username.replace("=", "=3D").replace(",", "=2C")
        client_nonce = match[2]

        salt = secrets.token_bytes(16)
        nonce = client_nonce + secrets.token_urlsafe(18).encode()
        server_first = b"r=%s,s=%s,i=%d" % (nonce, base64.b64encode(salt), self.iterations)
        await peer.send(f"334 {b64(server_first)}")

        client_final = base64.b64decode(await peer.lone(""), validate=True)
        without_proof, _, proof_text = client_final.rpartition(b",p=")
        assert without_proof == b"c=%s,r=%s" % (
            base64.b64encode(self.expected_binding()),
            nonce,
        )
        salted = hashlib.pbkdf2_hmac(self.digest, self.password.encode(), salt, self.iterations)
        auth_message = b",".join((bare, server_first, without_proof))
        client_key = hmac.new(salted, b"Client Key", self.digest).digest()
        stored_key = hashlib.new(self.digest, client_key).digest()
        client_signature = hmac.new(stored_key, auth_message, self.digest).digest()
        proof = base64.b64decode(proof_text, validate=True)
        recovered = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        if hashlib.new(self.digest, recovered).digest() != stored_key:
            await peer.send("535 5.7.8 Authentication credentials invalid")
            return

        server_key = hmac.new(salted, b"Server Key", self.digest).digest()
        signature = hmac.new(server_key, auth_message, self.digest).digest()
        if self.tamper:
            signature = bytes([signature[0] ^ 1]) + signature[1:]
        server_final = b"v=" + base64.b64encode(signature)
        if self.error is not None:
            server_final = b"e=" + self.error.encode()
        if self.omit_final:
            await peer.send(OK)
        elif self.final_in == "challenge":
            # Dovecot's way: the server-final comes as a challenge, answered empty.
            await peer.send(f"334 {b64(server_final)}")
            if self.tamper or self.error is not None:
                return  # the client must give up without answering
            assert await peer.lone("") == ""
            await peer.send(OK)
        else:
            # RFC 4954 §4: additional data with success.
            await peer.send(f"235 2.7.0 {b64(server_final)}")


# -- SCRAM ---------------------------------------------------------------------------------


@pytest.mark.parametrize("final_in", ["challenge", "success"])
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
async def test_scram_success(final_in: str, mechanism: str) -> None:
    server = ScramServer(mechanism, final_in=final_in)

    async def script(peer: Peer) -> None:
        await start_tls(peer, f"PLAIN LOGIN {mechanism}")
        await server.run(peer)
        await peer.quit()

    async with tls_session(script) as smtp:
        reply = await smtp.login(USER, PASSWORD)
        assert reply.code == 235
        assert smtp.authenticated


async def test_scram_sha_256_is_preferred_when_no_plus_is_offered() -> None:
    async def script(peer: Peer) -> None:
        await start_tls(peer, "PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256")
        await ScramServer("SCRAM-SHA-256").run(peer)
        await peer.quit()

    async with tls_session(script) as smtp:
        await smtp.login(USER, PASSWORD)
        assert smtp.authenticated


async def test_scram_with_a_utf8_password_and_a_user_name_to_escape() -> None:
    username, password = "jo=s,e@example.test", "contrase\u00f1a-\u00f1\u00fc\u20ac"
    server = ScramServer("SCRAM-SHA-256", username=username, password=password)

    async def script(peer: Peer) -> None:
        await start_tls(peer, "SCRAM-SHA-256")
        await server.run(peer)
        await peer.quit()

    async with tls_session(script) as smtp:
        await smtp.login(username, password)


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (
            "PLAIN SCRAM-SHA-1 SCRAM-SHA-256 SCRAM-SHA-256-PLUS SCRAM-SHA-1-PLUS",
            "SCRAM-SHA-256-PLUS",
        ),
        ("SCRAM-SHA-1 SCRAM-SHA-1-PLUS SCRAM-SHA-256", "SCRAM-SHA-256"),
        ("PLAIN SCRAM-SHA-1 SCRAM-SHA-1-PLUS", "SCRAM-SHA-1-PLUS"),
    ],
)
async def test_plus_is_chosen_over_tls_and_bound_to_the_certificate(
    offered: str, chosen: str
) -> None:
    # RFC 5802 §6: when the server offers -PLUS, a client that does not bind says "n".
    flag = "p" if chosen.endswith("-PLUS") else "n"
    server = ScramServer(chosen, gs2_flag=flag)

    async def script(peer: Peer) -> None:
        await start_tls(peer, offered)
        await server.run(peer)
        await peer.quit()

    async with tls_session(script) as smtp:
        await smtp.login(USER, PASSWORD)
        assert smtp.authenticated


async def test_without_tls_plus_is_skipped_and_the_flag_is_n() -> None:
    async def script(peer: Peer) -> None:
        await peer.greet(auth_ehlo("SCRAM-SHA-256-PLUS SCRAM-SHA-256"))
        await ScramServer("SCRAM-SHA-256", gs2_flag="n", final_in="success").run(peer)
        await peer.quit()

    async with (
        scripted(script) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, allow_insecure_auth=True) as smtp,
    ):
        assert not smtp.tls
        await smtp.login(USER, PASSWORD)
        assert smtp.authenticated


async def test_a_forced_scram_mechanism_is_used() -> None:
    async def script(peer: Peer) -> None:
        await start_tls(peer, "SCRAM-SHA-256 SCRAM-SHA-1 PLAIN")
        await ScramServer("SCRAM-SHA-1").run(peer)
        await peer.quit()

    async with tls_session(script) as smtp:
        await smtp.login(USER, PASSWORD, mechanism="scram-sha-1")


@pytest.mark.parametrize("final_in", ["challenge", "success"])
async def test_wrong_server_signature_fails_even_after_235(final_in: str) -> None:
    async def script(peer: Peer) -> None:
        await start_tls(peer, "SCRAM-SHA-256")
        await ScramServer("SCRAM-SHA-256", final_in=final_in, tamper=True).run(peer)
        await closes_quietly(peer)

    async with tls_session(script) as smtp:
        with pytest.raises(AuthenticationError) as caught:
            await smtp.login(USER, PASSWORD)
        error = caught.value
        assert "signature is wrong" in str(error)
        assert error.mechanism == "SCRAM-SHA-256"
        assert error.reply.code == (334 if final_in == "challenge" else 235)
        assert PASSWORD not in str(error)
        assert smtp.closed
        with pytest.raises(SessionClosedError):
            await smtp.noop()
        with pytest.raises(SessionClosedError):
            await smtp.send_mail(USER, USER, b"Subject: no\r\n\r\nno\r\n")


async def test_235_without_any_server_proof_fails() -> None:
    async def script(peer: Peer) -> None:
        await start_tls(peer, "SCRAM-SHA-256")
        await ScramServer("SCRAM-SHA-256", omit_final=True).run(peer)
        await closes_quietly(peer)

    async with tls_session(script) as smtp:
        with pytest.raises(AuthenticationError, match="did not prove it knows the password"):
            await smtp.login(USER, PASSWORD)
        assert smtp.closed


async def test_server_error_attribute_fails_with_its_text() -> None:
    async def script(peer: Peer) -> None:
        await start_tls(peer, "SCRAM-SHA-256-PLUS SCRAM-SHA-256")
        server = ScramServer(
            "SCRAM-SHA-256-PLUS", gs2_flag="p", error="channel-bindings-dont-match"
        )
        await server.run(peer)
        await closes_quietly(peer)

    async with tls_session(script) as smtp:
        with pytest.raises(AuthenticationError, match="channel-bindings-dont-match"):
            await smtp.login(USER, PASSWORD)
        assert smtp.closed


async def test_wrong_password_is_refused_by_the_server() -> None:
    async def script(peer: Peer) -> None:
        await start_tls(peer, "SCRAM-SHA-256")
        await ScramServer("SCRAM-SHA-256", password="another password").run(peer)
        await closes_quietly(peer)

    async with tls_session(script) as smtp:
        with pytest.raises(AuthenticationError) as caught:
            await smtp.login(USER, PASSWORD)
        assert caught.value.reply.code == 535
        assert caught.value.is_permanent
        assert smtp.closed


async def test_a_server_nonce_not_extending_the_clients_is_refused() -> None:
    async def script(peer: Peer) -> None:
        await start_tls(peer, "SCRAM-SHA-256")
        await peer.lone("AUTH SCRAM-SHA-256 ")
        salt = b64(b"0123456789abcdef")
        await peer.send(f"334 {b64(f'r=someone-elses-nonce,s={salt},i=4096')}")
        await closes_quietly(peer)

    async with tls_session(script) as smtp:
        with pytest.raises(AuthenticationError, match="nonce"):
            await smtp.login(USER, PASSWORD)
        assert smtp.closed


async def test_a_malformed_server_first_message_closes_the_session() -> None:
    async def script(peer: Peer) -> None:
        await start_tls(peer, "SCRAM-SHA-256")
        await peer.lone("AUTH SCRAM-SHA-256 ")
        await peer.send(f"334 {b64('i=4096')}")
        await closes_quietly(peer)

    async with tls_session(script) as smtp:
        with pytest.raises(RemoteProtocolError, match="r=, s= and i="):
            await smtp.login(USER, PASSWORD)
        assert smtp.closed


# -- XOAUTH2 and OAUTHBEARER ---------------------------------------------------------------


def xoauth2_line(token: str = TOKEN) -> str:
    message = f"user={USER}\x01auth=Bearer {token}\x01\x01"
    return f"AUTH XOAUTH2 {b64(message)}"


def oauthbearer_line(token: str = TOKEN, extra: str = "") -> str:
    message = f"n,a={USER},\x01{extra}auth=Bearer {token}\x01\x01"
    return f"AUTH OAUTHBEARER {b64(message)}"


async def test_xoauth2_success_with_a_token_string() -> None:
    async def script(peer: Peer) -> None:
        await start_tls(peer, "XOAUTH2 PLAIN")
        assert await peer.lone("AUTH ") == xoauth2_line()
        await peer.send(OK)
        await peer.quit()

    async with tls_session(script) as smtp:
        reply = await smtp.login(USER, TOKEN, mechanism="XOAUTH2")
        assert reply.code == 235
        assert smtp.authenticated


async def test_oauthbearer_success_with_host_and_port() -> None:
    async def script(peer: Peer) -> None:
        await start_tls(peer, "OAUTHBEARER")
        line = await peer.lone("AUTH ")
        assert line == oauthbearer_line(extra="host=mx.test\x01port=587\x01")
        await peer.send(OK)
        await peer.quit()

    async with tls_session(script) as smtp:
        mechanism = OAuthBearer(USER, TOKEN, host="mx.test", port=587)
        await smtp.login(USER, "", mechanism=mechanism)
        assert smtp.authenticated


async def test_oauthbearer_by_name() -> None:
    async def script(peer: Peer) -> None:
        await start_tls(peer, "OAUTHBEARER XOAUTH2")
        assert await peer.lone("AUTH ") == oauthbearer_line()
        await peer.send(OK)
        await peer.quit()

    async with tls_session(script) as smtp:
        await smtp.login(USER, TOKEN, mechanism="oauthbearer")


ERROR_STATUS = {"status": "invalid_token", "scope": "https://mail.example/", "schemes": "bearer"}


@pytest.mark.parametrize(
    ("name", "dummy"),
    [("XOAUTH2", ""), ("OAUTHBEARER", b64(b"\x01"))],
)
async def test_json_error_flow_ends_in_authentication_error(name: str, dummy: str) -> None:
    async def script(peer: Peer) -> None:
        await start_tls(peer, name)
        line = await peer.lone("AUTH ")
        assert line == (xoauth2_line() if name == "XOAUTH2" else oauthbearer_line())
        await peer.send(f"334 {b64(json.dumps(ERROR_STATUS))}")
        assert await peer.lone("") == dummy
        await peer.send("535 5.7.8 Username and Password not accepted")
        await closes_quietly(peer)

    async with tls_session(script) as smtp:
        with pytest.raises(AuthenticationError) as caught:
            await smtp.login(USER, TOKEN, mechanism=name)
        error = caught.value
        text = str(error)
        assert "status=invalid_token" in text
        assert "scope=https://mail.example/" in text
        assert TOKEN not in text
        assert TOKEN not in repr(error)
        assert error.reply.code == 535
        assert error.mechanism == name
        assert smtp.closed
        assert not smtp.authenticated


async def test_error_flow_with_a_challenge_that_is_not_json() -> None:
    async def script(peer: Peer) -> None:
        await start_tls(peer, "OAUTHBEARER")
        await peer.lone("AUTH OAUTHBEARER ")
        await peer.send(f"334 {b64('try again later')}")
        assert await peer.lone("") == b64(b"\x01")
        await peer.send("454 4.7.0 Temporary authentication failure")
        await closes_quietly(peer)

    async with tls_session(script) as smtp:
        with pytest.raises(AuthenticationError, match="try again later") as caught:
            await smtp.login(USER, TOKEN, mechanism="OAUTHBEARER")
        assert caught.value.is_transient


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("cls", [XOAuth2, OAuthBearer])
async def test_token_provider_is_called_once_at_login(
    kind: str, cls: type[XOAuth2] | type[OAuthBearer]
) -> None:
    calls: list[str] = []

    def sync_provider() -> str:
        calls.append("sync")
        return TOKEN

    async def async_provider() -> str:
        calls.append("async")
        return TOKEN

    provider = sync_provider if kind == "sync" else async_provider
    mechanism = cls(USER, provider)
    assert calls == []

    async def script(peer: Peer) -> None:
        await start_tls(peer, cls.name)
        line = await peer.lone("AUTH ")
        assert calls == [kind]  # fetched before AUTH was sent
        assert line == (xoauth2_line() if cls is XOAuth2 else oauthbearer_line())
        await peer.send(OK)
        await peer.quit()

    async with tls_session(script) as smtp:
        assert calls == []
        await smtp.login(USER, "", mechanism=mechanism)
        assert smtp.authenticated
    assert calls == [kind]


async def test_a_failing_provider_leaves_the_session_usable() -> None:
    def provider() -> str:
        raise LookupError("no refresh token stored")

    async def script(peer: Peer) -> None:
        await start_tls(peer, "XOAUTH2 PLAIN")
        assert await peer.lone("NOOP") == "NOOP"
        await peer.send("250 2.0.0 Ok")
        await peer.quit()

    async with tls_session(script) as smtp:
        with pytest.raises(LookupError):
            await smtp.login(USER, "", mechanism=XOAuth2(USER, provider))
        assert not smtp.closed
        assert (await smtp.noop()).code == 250


@pytest.mark.parametrize("offered", ["XOAUTH2", "OAUTHBEARER", "XOAUTH2 OAUTHBEARER"])
async def test_login_never_picks_a_token_mechanism_by_itself(offered: str) -> None:
    async def script(peer: Peer) -> None:
        await start_tls(peer, offered)
        assert await peer.lone("NOOP") == "NOOP"
        await peer.send("250 2.0.0 Ok")
        await peer.quit()

    async with tls_session(script) as smtp:
        with pytest.raises(ExtensionNotSupportedError):
            await smtp.login(USER, TOKEN)
        assert not smtp.closed
        assert (await smtp.noop()).code == 250


async def test_login_prefers_login_over_token_mechanisms() -> None:
    async def script(peer: Peer) -> None:
        await start_tls(peer, "XOAUTH2 OAUTHBEARER LOGIN")
        assert await peer.lone("AUTH ") == "AUTH LOGIN"
        await peer.send(f"334 {b64('Username:')}")
        assert await peer.lone("") == b64(USER)
        await peer.send(f"334 {b64('Password:')}")
        assert await peer.lone("") == b64(PASSWORD)
        await peer.send(OK)
        await peer.quit()

    async with tls_session(script) as smtp:
        await smtp.login(USER, PASSWORD)
        assert smtp.authenticated


def test_the_server_certificate_is_from_the_test_ca() -> None:
    # The client trusts only the shared test CA; the binding is over this DER.
    assert isinstance(shared_ca(), trustme.CA)
    assert len(tls_server_end_point(server_certificate().der)) == 32

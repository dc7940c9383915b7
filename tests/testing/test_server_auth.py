"""SCRAM-SHA-256, XOAUTH2 and OAUTHBEARER on the test server, against the client library.

The server's side of these mechanisms is its own code; these tests check that the
library's client logs in with it, and that a wrong password or token is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
from collections.abc import Callable

import anyio
import anyio.abc
import pytest

import anyio_smtp
from anyio_smtp import AuthenticationError
from anyio_smtp.auth import OAuthBearer, XOAuth2
from anyio_smtp.testing import SMTPTestServer, throwaway_tls

USER = "alice@example.test"
PASSWORD = "pässwörd with spaces"
TOKEN = "ya29.a0-test-token"
TIMEOUT = 10


@pytest.fixture(scope="module")
def tls_pair() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return throwaway_tls("localhost", "127.0.0.1")


def plaintext(server: SMTPTestServer) -> anyio_smtp.SessionOpener:
    return anyio_smtp.connect(
        server.host,
        server.port,
        ehlo_domain="client.test",
        allow_insecure_auth=True,
        timeout=TIMEOUT,
    )


async def send(smtp: anyio_smtp.SMTPClient) -> None:
    await smtp.send_mail(USER, ["bob@example.test"], b"Subject: hi\r\n\r\nhi\r\n")


async def test_scram_sha_256_login(tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls_pair
    server = SMTPTestServer(
        starttls_context=server_context, users={USER: PASSWORD}, auth_mechanisms=["SCRAM-SHA-256"]
    )
    with anyio.fail_after(TIMEOUT):
        async with server:
            # Over TLS the client could bind the channel; the server offers no -PLUS.
            async with anyio_smtp.connect_starttls(
                server.host,
                server.port,
                ssl_context=client_context,
                tls_hostname="localhost",
                ehlo_domain="client.test",
                timeout=TIMEOUT,
            ) as smtp:
                await smtp.login(USER, PASSWORD, mechanism="SCRAM-SHA-256")
                await send(smtp)
    assert server.messages[0].authenticated_as == USER
    client = server.client_lines()
    assert any(line.startswith("AUTH SCRAM-SHA-256") for line in client)
    assert not any(PASSWORD in line for line in client)
    assert "AUTH SCRAM-SHA-256" in " ".join(server.server_lines())


async def test_scram_sha_256_login_in_plaintext_when_allowed() -> None:
    server = SMTPTestServer(
        users={USER: PASSWORD}, auth_mechanisms=["SCRAM-SHA-256"], auth_require_tls=False
    )
    with anyio.fail_after(TIMEOUT):
        async with server, plaintext(server) as smtp:
            await smtp.login(USER, PASSWORD, mechanism="SCRAM-SHA-256")
            await send(smtp)
    assert server.messages[0].authenticated_as == USER


@pytest.mark.parametrize(
    ("user", "password"), [(USER, "wrong"), ("mallory@example.test", PASSWORD)]
)
async def test_scram_sha_256_wrong_credentials_are_refused(user: str, password: str) -> None:
    server = SMTPTestServer(
        users={USER: PASSWORD}, auth_mechanisms=["SCRAM-SHA-256"], auth_require_tls=False
    )
    with anyio.fail_after(TIMEOUT):
        async with server, plaintext(server) as smtp:
            with pytest.raises(AuthenticationError) as caught:
                await smtp.login(user, password, mechanism="SCRAM-SHA-256")
    assert caught.value.reply.code == 535
    assert server.messages == []


async def test_scram_server_proves_it_knows_the_password() -> None:
    # The client checks the server signature (v=) before it accepts the 235.
    server = SMTPTestServer(
        users={USER: PASSWORD}, auth_mechanisms=["SCRAM-SHA-256"], auth_require_tls=False
    )
    with anyio.fail_after(TIMEOUT):
        async with server, plaintext(server) as smtp:
            await smtp.login(USER, PASSWORD, mechanism="SCRAM-SHA-256")
    verifier = base64.b64decode(server.server_lines()[-3][4:])
    assert verifier.startswith(b"v=")
    assert server.server_lines()[-2].startswith("235 ")


@pytest.mark.parametrize("provider", ["string", "async"])
async def test_xoauth2_login(provider: str) -> None:
    async def fetch() -> str:
        return TOKEN

    server = SMTPTestServer(
        tokens={USER: TOKEN}, auth_mechanisms=["XOAUTH2"], auth_require_tls=False
    )
    with anyio.fail_after(TIMEOUT):
        async with server, plaintext(server) as smtp:
            await smtp.login(
                USER, mechanism=XOAuth2(USER, TOKEN if provider == "string" else fetch)
            )
            await send(smtp)
    assert server.messages[0].authenticated_as == USER


async def test_xoauth2_login_with_the_token_as_password() -> None:
    server = SMTPTestServer(
        tokens={USER: TOKEN}, auth_mechanisms=["XOAUTH2"], auth_require_tls=False
    )
    with anyio.fail_after(TIMEOUT):
        async with server, plaintext(server) as smtp:
            await smtp.login(USER, TOKEN, mechanism="XOAUTH2")
    assert server.server_lines()[-2].startswith("235 ")


@pytest.mark.parametrize(("user", "token"), [(USER, "expired"), ("mallory@example.test", TOKEN)])
async def test_xoauth2_wrong_token_gets_the_error_challenge_then_535(user: str, token: str) -> None:
    server = SMTPTestServer(
        tokens={USER: TOKEN}, auth_mechanisms=["XOAUTH2"], auth_require_tls=False
    )
    with anyio.fail_after(TIMEOUT):
        async with server, plaintext(server) as smtp:
            with pytest.raises(AuthenticationError) as caught:
                await smtp.login(user, mechanism=XOAuth2(user, token))
    assert caught.value.reply.code == 535
    challenge = next(line for line in server.server_lines() if line.startswith("334 "))
    assert json.loads(base64.b64decode(challenge[4:]))["status"] == "401"
    # The client answered the error challenge with an empty response.
    assert server.client_lines()[-1] == ""


async def test_oauthbearer_login_and_refusal() -> None:
    server = SMTPTestServer(
        tokens={USER: TOKEN}, auth_mechanisms=["OAUTHBEARER", "XOAUTH2"], auth_require_tls=False
    )
    with anyio.fail_after(TIMEOUT):
        async with server:
            async with plaintext(server) as smtp:
                await smtp.login(
                    USER, mechanism=OAuthBearer(USER, TOKEN, host="localhost", port=server.port)
                )
                await send(smtp)
            async with plaintext(server) as smtp:
                with pytest.raises(AuthenticationError) as caught:
                    await smtp.login(USER, mechanism=OAuthBearer(USER, "wrong"))
    assert server.messages[0].authenticated_as == USER
    assert caught.value.reply.code == 535
    challenge = [line for line in server.server_lines() if line.startswith("334 ")][-1]
    assert json.loads(base64.b64decode(challenge[4:]))["status"] == "invalid_token"


async def test_tokens_alone_enable_auth_and_mechanisms_are_checked() -> None:
    with pytest.raises(ValueError, match="unsupported AUTH mechanisms: SCRAM-SHA-256-PLUS"):
        SMTPTestServer(users={}, auth_mechanisms=["SCRAM-SHA-256-PLUS"])
    server = SMTPTestServer(tokens={USER: TOKEN}, auth_mechanisms=["XOAUTH2"])
    async with server, plaintext(server):
        pass
    # auth_require_tls: not offered without TLS.
    assert not any("AUTH" in line for line in server.server_lines())


def test_bearer_mechanisms_need_tokens() -> None:
    with pytest.raises(ValueError, match="XOAUTH2 need tokens="):
        SMTPTestServer(users={USER: PASSWORD}, auth_mechanisms=["PLAIN", "XOAUTH2"])


# -- the SCRAM exchange on the wire, with a client computed here ----------------------------


class Wire:
    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def line(self) -> str:
        while b"\r\n" not in self.buffer:
            self.buffer += await self.stream.receive()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line.decode()

    async def reply(self) -> str:
        while True:
            line = await self.line()
            if line[3:4] != "-":
                return line

    async def ask(self, text: str) -> str:
        await self.stream.send(text.encode() + b"\r\n")
        return await self.reply()


def scram_server() -> SMTPTestServer:
    return SMTPTestServer(
        users={USER: PASSWORD}, auth_mechanisms=["SCRAM-SHA-256"], auth_require_tls=False
    )


async def scram_exchange(first: str, final: Callable[[str, str], str]) -> list[str]:
    """Run AUTH SCRAM-SHA-256 with ``first``; ``final(server_first, bare)`` answers."""
    replies = []
    async with scram_server() as server:
        stream = await anyio.connect_tcp(server.host, server.port)
        async with stream:
            wire = Wire(stream)
            await wire.reply()
            await wire.ask("EHLO client.test")
            b64 = base64.b64encode(first.encode()).decode()
            reply = await wire.ask(f"AUTH SCRAM-SHA-256 {b64}")
            replies.append(reply)
            while reply.startswith("334 "):
                challenge = base64.b64decode(reply[4:]).decode()
                answer = final(challenge, first.split(",", 2)[2])
                reply = await wire.ask(base64.b64encode(answer.encode()).decode())
                replies.append(reply)
    return replies


def scram_final(password: str, *, nonce_suffix: str = "") -> Callable[[str, str], str]:
    def final(challenge: str, bare: str) -> str:
        if challenge.startswith("v="):
            return ""
        fields = dict(part.split("=", 1) for part in challenge.split(","))
        salted = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), base64.b64decode(fields["s"]), int(fields["i"])
        )
        without_proof = f"c=biws,r={fields['r']}{nonce_suffix}"
        auth_message = f"{bare},{challenge},{without_proof}".encode()
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return f"{without_proof},p={base64.b64encode(proof).decode()}"

    return final


async def test_scram_on_the_wire() -> None:
    import unicodedata

    password = unicodedata.normalize("NFKC", PASSWORD)
    with anyio.fail_after(TIMEOUT):
        replies = await scram_exchange(f"n,,n={USER},r=abc123", scram_final(password))
    assert [reply[:3] for reply in replies] == ["334", "334", "235"]
    assert base64.b64decode(replies[1][4:]).startswith(b"v=")


@pytest.mark.parametrize(
    ("first", "final", "code"),
    [
        ("n,,n=alice@example.test,r=abc", scram_final("wrong"), "535"),
        ("n,,n=alice@example.test,r=abc", scram_final(PASSWORD, nonce_suffix="x"), "535"),
        ("p=tls-unique,,n=alice@example.test,r=abc", scram_final(PASSWORD), "501"),
        ("n,,r=abc,n=alice@example.test", scram_final(PASSWORD), "501"),
        ("n,,n=al=ice,r=abc", scram_final(PASSWORD), "501"),
        ("n,,n=alice@example.test,r=abc", lambda challenge, bare: "c=biws", "501"),
    ],
)
async def test_scram_refusals(first: str, final: Callable[[str, str], str], code: str) -> None:
    with anyio.fail_after(TIMEOUT):
        replies = await scram_exchange(first, final)
    assert replies[-1][:3] == code

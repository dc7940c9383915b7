"""Tests of the SMTP test server (anyio_smtp.testing), driven by independent clients.

The clients are the standard library's smtplib (run in a worker thread) and a raw line
client over anyio streams, so nothing here depends on the anyio_smtp client code.
"""

from __future__ import annotations

import base64
import functools
import smtplib
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import pytest
from anyio.abc import ByteStream
from anyio.streams.tls import TLSStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anyio_smtp.testing import (
    MemoryByteStream,
    ReceivedMessage,
    SMTPTestServer,
    TranscriptLine,
    memory_stream_pair,
    throwaway_tls,
)

T = TypeVar("T")

TIMEOUT = 15


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def tls_pair() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return throwaway_tls("localhost", "127.0.0.1")


# -- helpers -------------------------------------------------------------------------------


class RawClient:
    """A minimal line-based SMTP client on an anyio byte stream."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def send(self, data: str | bytes) -> None:
        await self.stream.send(data.encode() if isinstance(data, str) else data)

    async def read_line(self) -> str:
        while b"\r\n" not in self.buffer:
            self.buffer += await self.stream.receive()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line.decode()

    async def read_reply(self) -> list[str]:
        lines = [await self.read_line()]
        while lines[-1][3:4] == "-":
            lines.append(await self.read_line())
        return lines

    async def cmd(self, line: str) -> str:
        """Send one command and return its (possibly multi-line) reply joined by newlines."""
        await self.send(line + "\r\n")
        return "\n".join(await self.read_reply())

    async def starttls(self, context: ssl.SSLContext, hostname: str = "localhost") -> None:
        assert not self.buffer
        self.stream = await TLSStream.wrap(
            self.stream, hostname=hostname, ssl_context=context, standard_compatible=False
        )

    async def expect_closed(self) -> None:
        try:
            data = await self.stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return
        raise AssertionError(f"expected the connection to close, got {data!r}")

    async def drain(self) -> None:
        """Read and ignore everything until the server closes the connection."""
        while True:
            try:
                await self.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return

    async def aclose(self) -> None:
        await self.stream.aclose()


@asynccontextmanager
async def tcp_client(server: SMTPTestServer, *, greeting: bool = True) -> AsyncIterator[RawClient]:
    client = RawClient(await anyio.connect_tcp(server.host, server.port))
    try:
        if greeting:
            assert (await client.read_line()).startswith("220 ")
        yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def stream_client(server: SMTPTestServer) -> AsyncIterator[RawClient]:
    """A RawClient connected to ``server.serve_stream()`` through an in-memory pair."""
    client_end, server_end = memory_stream_pair()
    client = RawClient(client_end)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve_stream, server_end)
        try:
            yield client
        finally:
            await client.aclose()


async def in_thread(function: Callable[[], T]) -> T:
    return await anyio.to_thread.run_sync(function)


def smtp(server: SMTPTestServer) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, timeout=TIMEOUT)


def data_of(lines: list[str]) -> str:
    return "".join(line + "\r\n" for line in lines)


async def start_transaction(client: RawClient, *recipients: str) -> None:
    assert (await client.cmd("EHLO client.test")).startswith("250-")
    assert await client.cmd("MAIL FROM:<a@x.test>") == "250 2.1.0 Ok"
    for recipient in recipients or ("b@y.test",):
        assert await client.cmd(f"RCPT TO:<{recipient}>") == "250 2.1.5 Ok"


# -- basic sessions ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_plain_send_with_smtplib() -> None:
    content = b"Subject: x\r\n\r\nhi\r\n"
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer(hostname="mx.test") as server:
            assert server.host == "127.0.0.1"
            assert server.port > 0
            assert server.address == (server.host, server.port)

            def send() -> dict[str, Any]:
                with smtp(server) as client:
                    return client.sendmail("a@x.test", ["b@y.test", "c@y.test"], content)

            assert await in_thread(send) == {}

    [message] = server.messages
    assert message.sender == "a@x.test"
    assert message.recipients == ("b@y.test", "c@y.test")
    assert message.data == content
    assert message.raw == content + b".\r\n"
    assert message.tls is False
    assert message.authenticated_as is None
    assert message.mail_options == (f"SIZE={len(content)}",)
    assert message.rcpt_options == ((), ())
    assert message.session == 0
    assert message.as_email()["Subject"] == "x"
    assert len(message.queue_id) >= 10
    assert f"250 2.0.0 Ok: queued as {message.queue_id}" in server.server_lines()
    assert server.sessions == 1
    assert server.sessions_closed == 1
    assert server.pipelining_violations == 0
    assert server.bare_line_ending_violations == 0
    assert server.session_errors == []
    assert server.server_lines()[0].startswith("220 mx.test ")
    assert server.server_lines()[-1] == "221 2.0.0 Bye"
    assert server.client_lines()[-1] == "QUIT"
    assert all(isinstance(entry, TranscriptLine) for entry in server.transcript)
    assert {entry.session for entry in server.transcript} == {0}


@pytest.mark.anyio
async def test_ehlo_reply_is_multiline_with_default_keywords() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer(hostname="mx.test") as server, tcp_client(server) as client:
            reply = await client.cmd("EHLO client.test")
            assert reply.split("\n") == [
                "250-mx.test",
                "250-PIPELINING",
                "250-SIZE",
                "250-8BITMIME",
                "250-SMTPUTF8",
                "250 ENHANCEDSTATUSCODES",
            ]
            assert await client.cmd("HELO client.test") == "250 mx.test"
            assert await client.cmd("QUIT") == "221 2.0.0 Bye"
            await client.expect_closed()


@pytest.mark.anyio
async def test_ehlo_advertises_configured_features(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = tls_pair
    with anyio.fail_after(TIMEOUT):
        async with (
            SMTPTestServer(
                starttls_context=server_ctx,
                users={"alice": "s3cret"},
                auth_mechanisms=("PLAIN", "LOGIN"),
                size_limit=1000,
            ) as server,
            tcp_client(server) as client,
        ):
            lines = (await client.cmd("EHLO client.test")).split("\n")
            assert "250-SIZE 1000" in lines
            assert lines[-1] == "250 STARTTLS"
            assert not any("AUTH" in line for line in lines)
            assert (await client.cmd("STARTTLS")).startswith("220 ")
            await client.starttls(client_ctx)
            lines = (await client.cmd("EHLO client.test")).split("\n")
            assert not any("STARTTLS" in line for line in lines)
            assert lines[-1] == "250 AUTH PLAIN LOGIN"
            assert await client.cmd("STARTTLS") == "503 5.5.1 Error: TLS already active"


@pytest.mark.anyio
async def test_explicit_extensions_are_advertised_exactly() -> None:
    with anyio.fail_after(TIMEOUT):
        async with (
            SMTPTestServer(extensions=["PIPELINING", "SIZE 1000", "8BITMIME"]) as server,
            tcp_client(server) as client,
        ):
            reply = await client.cmd("EHLO client.test")
            assert reply.split("\n")[1:] == ["250-PIPELINING", "250-SIZE 1000", "250 8BITMIME"]
            # Without ENHANCEDSTATUSCODES, replies carry no enhanced codes.
            assert await client.cmd("NOOP") == "250 Ok"
            # SMTPUTF8 was not advertised, so its parameter is refused.
            assert (await client.cmd("MAIL FROM:<a@x.test> SMTPUTF8")).startswith("555 ")
            assert await client.cmd("MAIL FROM:<a@x.test> BODY=8BITMIME") == "250 Ok"


@pytest.mark.anyio
async def test_several_messages_per_session_and_sessions_in_parallel() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:

            def send(index: int) -> None:
                with smtp(server) as client:
                    for number in range(3):
                        body = f"Subject: {index}/{number}\r\n\r\nbody\r\n".encode()
                        client.sendmail(f"s{index}@x.test", [f"r{number}@y.test"], body)

            async with anyio.create_task_group() as tg:
                for index in range(5):
                    tg.start_soon(anyio.to_thread.run_sync, functools.partial(send, index))

            assert await server.wait_for_messages(15) == server.messages
            await server.wait_until(lambda: server.sessions_closed == 5)
    assert server.sessions == 5
    assert len(server.messages) == 15
    subjects = {message.as_email()["Subject"] for message in server.messages}
    assert subjects == {f"{index}/{number}" for index in range(5) for number in range(3)}
    for message in server.messages:
        index = message.as_email()["Subject"].split("/")[0]
        assert message.sender == f"s{index}@x.test"
        # Every line of a session carries that session's index.
        assert f"MAIL FROM:<s{index}@x.test> SIZE={len(message.data)}".lower() in [
            line.lower() for line in server.client_lines(message.session)
        ]


# -- data phase ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_dot_unstuffing() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server, tcp_client(server) as client:
            await start_transaction(client)
            assert (await client.cmd("DATA")).startswith("354 ")
            wire = data_of(["Subject: dots", "", "..x", "..", "...", "a.", "."])
            await client.send(wire)
            assert (await client.read_line()).startswith("250 2.0.0 Ok: queued as ")
            await start_transaction(client)
            # An empty message is just the terminator.
            assert (await client.cmd("DATA")).startswith("354 ")
            assert (await client.cmd(".")).startswith("250 ")
    first, empty = server.messages
    assert first.data == b"Subject: dots\r\n\r\n.x\r\n.\r\n..\r\na.\r\n"
    assert first.raw == wire.encode()
    assert empty.data == b""
    assert empty.raw == b".\r\n"
    lines = server.client_lines()
    start = lines.index("..x")
    assert lines[start : start + 5] == ["..x", "..", "...", "a.", "."]


@pytest.mark.anyio
async def test_smtplib_content_with_dot_lines() -> None:
    content = b"Subject: d\r\n\r\n.\r\n.hidden\r\nend\r\n"
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:

            def send() -> None:
                with smtp(server) as client:
                    client.sendmail("a@x.test", ["b@y.test"], content)

            await in_thread(send)
    assert server.messages[0].data == content
    assert server.messages[0].raw == b"Subject: d\r\n\r\n..\r\n..hidden\r\nend\r\n.\r\n"


@pytest.mark.anyio
async def test_data_ends_only_on_crlf_dot_crlf_and_bare_endings_are_counted() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server, tcp_client(server) as client:
            await start_transaction(client)
            assert (await client.cmd("DATA")).startswith("354 ")
            # None of "\n.\n", "\r\n.\n", "\n.\r\n" ends the data.
            await client.send(b"a\nb\rc\r\nx\n.\nmore\r\ny\n.\r\nz\r\n.\r\n")
            assert (await client.read_line()).startswith("250 ")
    [message] = server.messages
    assert message.data == b"a\nb\rc\r\nx\n.\nmore\r\ny\n.\r\nz\r\n"
    assert server.bare_line_ending_violations == 5


@pytest.mark.anyio
async def test_data_split_across_many_writes() -> None:
    wire = data_of(["Subject: split", "", "..one", "two", "."]).encode()
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server, stream_client(server) as client:
            assert (await client.read_line()).startswith("220 ")
            await start_transaction(client)
            assert (await client.cmd("DATA")).startswith("354 ")
            for index in range(len(wire)):
                await client.send(wire[index : index + 1])
            assert (await client.read_line()).startswith("250 ")
            assert await client.cmd("QUIT") == "221 2.0.0 Bye"
    assert server.messages[0].data == b"Subject: split\r\n\r\n.one\r\ntwo\r\n"


@st.composite
def message_lines(draw: st.DrawFn) -> list[bytes]:
    alphabet = st.sampled_from([b".", b"a", b" ", b"\xc3\xa9", b"\r", b"\n"])
    return draw(st.lists(st.lists(alphabet, max_size=8).map(b"".join), max_size=8))


@pytest.mark.anyio
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=message_lines())
async def test_stuffed_content_round_trips(lines: list[bytes]) -> None:
    # Any content whose lines are CRLF-terminated survives stuffing and un-stuffing,
    # even if lines contain stray CR or LF octets.
    content = b"".join(line + b"\r\n" for line in lines)
    stuffed = b"\r\n".join(
        b"." + line if line.startswith(b".") else line for line in content.split(b"\r\n")
    )
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server, stream_client(server) as client:
            assert (await client.read_line()).startswith("220 ")
            await start_transaction(client)
            assert (await client.cmd("DATA")).startswith("354 ")
            await client.send(stuffed + b".\r\n")
            assert (await client.read_line()).startswith("250 ")
    assert server.messages[0].data == content


_VERBS = ["EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "VRFY", "AUTH", "HELP", "X"]
_ARGS = [
    "client.test",
    "FROM:<a@x.test>",
    "FROM:<>",
    "FROM:<a@x.test> SIZE=\u00b2",
    "FROM:<\u00e9@x.test> SMTPUTF8 BODY=8BITMIME",
    "TO:<b@y.test>",
    'TO:<"q\\"x>"@y.test> NOTIFY=NEVER',
    "TO:<b@y.test",
    "PLAIN",
    "PLAIN =",
    "LOGIN Zm9v",
    "CRAM-MD5",
    "*",
]


@st.composite
def command_lines(draw: st.DrawFn) -> list[bytes]:
    text = st.text(st.characters(exclude_characters="\n"), max_size=30)
    verb = st.sampled_from(_VERBS) | text
    argument = st.sampled_from(_ARGS) | text
    line = st.builds(lambda v, a: f"{v} {a}".encode("utf-8", "surrogatepass"), verb, argument)
    junk = st.binary(max_size=30).filter(lambda b: b"\n" not in b)
    return draw(st.lists(line | junk, max_size=12))


@pytest.mark.anyio
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=command_lines())
async def test_arbitrary_commands_never_break_the_server(lines: list[bytes]) -> None:
    with anyio.fail_after(TIMEOUT):
        async with (
            SMTPTestServer(users={"alice": "s3cret"}, auth_require_tls=False) as server,
            stream_client(server) as client,
        ):
            assert (await client.read_line()).startswith("220 ")
            for line in lines:
                await client.send(line + b"\r\n")
                code = (await client.read_reply())[-1][:3]
                if code == "354":
                    await client.send(b"x\r\n.\r\n")
                    await client.read_reply()
                elif code == "334":
                    await client.send(b"*\r\n")
                    await client.read_reply()
            await client.send(b"QUIT\r\n")
            assert (await client.read_reply())[-1] == "221 2.0.0 Bye"
    assert server.session_errors == []


@pytest.mark.anyio
async def test_eight_bit_data_without_body_parameter_is_counted() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server, tcp_client(server) as client:
            await start_transaction(client)
            assert (await client.cmd("DATA")).startswith("354 ")
            assert (await client.cmd(data_of(["caf\u00e9", "."]).rstrip())).startswith("250 ")
            assert await client.cmd("MAIL FROM:<a@x.test> BODY=8BITMIME") == "250 2.1.0 Ok"
            assert await client.cmd("RCPT TO:<b@y.test>") == "250 2.1.5 Ok"
            assert (await client.cmd("DATA")).startswith("354 ")
            assert (await client.cmd(data_of(["caf\u00e9", "."]).rstrip())).startswith("250 ")
    assert server.eight_bit_violations == 1
    assert server.messages[1].mail_options == ("BODY=8BITMIME",)


# -- pipelining ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_pipelined_commands_get_replies_in_order_in_one_write() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server, stream_client(server) as client:
            assert (await client.read_line()).startswith("220 ")
            assert (await client.cmd("EHLO client.test")).startswith("250-")
            server.reply("RCPT", "550 5.1.1 No such user", match="nobody@")
            await client.send(
                "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n"
                "RCPT TO:<nobody@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n"
            )
            # One write from the server carries all five replies.
            chunk = await client.stream.receive()
            assert chunk == (
                b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 No such user\r\n"
                b"250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
            )
            # The end of data may be followed by more commands in the same group.
            await client.send("Subject: p\r\n\r\nbody\r\n.\r\nRSET\r\nQUIT\r\n")
            replies = [await client.read_line() for _ in range(3)]
            assert replies[0].startswith("250 2.0.0 Ok: queued as ")
            assert replies[1:] == ["250 2.0.0 Ok", "221 2.0.0 Bye"]
            await client.expect_closed()
    assert server.pipelining_violations == 0
    assert server.messages[0].recipients == ("b@y.test", "c@y.test")


@pytest.mark.anyio
async def test_pipelining_violation_without_pipelining_extension() -> None:
    with anyio.fail_after(TIMEOUT):
        async with (
            SMTPTestServer(extensions=["SIZE", "ENHANCEDSTATUSCODES"]) as server,
            stream_client(server) as client,
        ):
            assert (await client.read_line()).startswith("220 ")
            assert (await client.cmd("EHLO client.test")).startswith("250-")
            assert await client.cmd("MAIL FROM:<a@x.test>") == "250 2.1.0 Ok"
            assert server.pipelining_violations == 0
            await client.send("RCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nRSET\r\n")
            assert [await client.read_line() for _ in range(3)] == [
                "250 2.1.5 Ok",
                "250 2.1.5 Ok",
                "250 2.0.0 Ok",
            ]
            # Two commands were followed by input sent before their replies.
            assert server.pipelining_violations == 2


@pytest.mark.anyio
async def test_pipelining_violation_after_group_ending_commands() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server, stream_client(server) as client:
            assert (await client.read_line()).startswith("220 ")
            assert (await client.cmd("EHLO client.test")).startswith("250-")
            await client.send("NOOP\r\nNOOP\r\n")
            assert [await client.read_line() for _ in range(2)] == ["250 2.0.0 Ok"] * 2
            assert server.pipelining_violations == 1
            await start_transaction(client)
            # The message content must not be sent before the 354 reply.
            await client.send("DATA\r\nSubject: early\r\n\r\n.\r\n")
            assert (await client.read_line()).startswith("354 ")
            assert (await client.read_line()).startswith("250 ")
            assert server.pipelining_violations == 2


@pytest.mark.anyio
async def test_input_sent_with_starttls_is_discarded(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = tls_pair
    with anyio.fail_after(TIMEOUT):
        async with (
            SMTPTestServer(starttls_context=server_ctx) as server,
            stream_client(server) as client,
        ):
            assert (await client.read_line()).startswith("220 ")
            assert (await client.cmd("EHLO client.test")).startswith("250-")
            await client.send("STARTTLS\r\nMAIL FROM:<injected@x.test>\r\n")
            assert await client.read_line() == "220 2.0.0 Ready to start TLS"
            await client.starttls(client_ctx)
            # The injected MAIL was dropped: this EHLO gets the first reply under TLS.
            assert (await client.cmd("EHLO client.test")).startswith("250-")
            assert (await client.cmd("RCPT TO:<b@y.test>")).startswith("503 ")
    assert server.pipelining_violations == 1
    assert "MAIL FROM:<injected@x.test>" not in server.client_lines()


# -- TLS and AUTH --------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
async def test_starttls_then_auth(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext], mechanism: str
) -> None:
    server_ctx, client_ctx = tls_pair
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer(
            starttls_context=server_ctx,
            users={"alice": "s3cret"},
            auth_mechanisms=(mechanism,),
            require_auth=True,
        ) as server:

            def send() -> None:
                with smtp(server) as client:
                    client.starttls(context=client_ctx)
                    client.login("alice", "s3cret")
                    client.sendmail("a@x.test", ["b@y.test"], b"Subject: t\r\n\r\nx\r\n")

            await in_thread(send)
    [message] = server.messages
    assert message.tls is True
    assert message.authenticated_as == "alice"
    assert any(line.startswith(f"AUTH {mechanism}") for line in server.client_lines())
    assert "235 2.7.0 Authentication successful" in server.server_lines()


@pytest.mark.anyio
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_auth_without_initial_response(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext], mechanism: str
) -> None:
    server_ctx, client_ctx = tls_pair
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer(starttls_context=server_ctx, users={"alice": "s3cret"}) as server:

            def login() -> tuple[int, bytes]:
                with smtp(server) as client:
                    client.starttls(context=client_ctx)
                    client.ehlo()
                    client.user, client.password = "alice", "s3cret"
                    authobject = {"PLAIN": client.auth_plain, "LOGIN": client.auth_login}
                    return client.auth(mechanism, authobject[mechanism], initial_response_ok=False)

            assert await in_thread(login) == (235, b"2.7.0 Authentication successful")
    assert f"AUTH {mechanism}" in server.client_lines()
    if mechanism == "LOGIN":
        assert "334 VXNlcm5hbWU6" in server.server_lines()
        assert "334 UGFzc3dvcmQ6" in server.server_lines()


@pytest.mark.anyio
async def test_auth_failures(tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls_pair
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer(starttls_context=server_ctx, users={"alice": "s3cret"}) as server:

            def bad_login() -> None:
                with smtp(server) as client:
                    client.starttls(context=client_ctx)
                    client.login("alice", "wrong")

            with pytest.raises(smtplib.SMTPAuthenticationError) as info:
                await in_thread(bad_login)
            assert info.value.smtp_code == 535

            async with tcp_client(server) as client:
                await client.cmd("EHLO client.test")
                await client.cmd("STARTTLS")
                await client.starttls(client_ctx)
                assert (await client.cmd("AUTH PLAIN")).startswith("503 ")  # EHLO first
                await client.cmd("EHLO client.test")
                assert (await client.cmd("AUTH LOGIN")) == "334 VXNlcm5hbWU6"
                assert await client.cmd("*") == "501 5.7.0 Authentication cancelled"
                assert await client.cmd("AUTH PLAIN not-base64!") == (
                    "501 5.5.2 Cannot decode response"
                )
                assert (await client.cmd("AUTH XOAUTH2 abc")).startswith("504 5.5.4 ")
                assert (await client.cmd("AUTH CRAM-MD5")).startswith("334 ")
                assert await client.cmd("bm9ib2R5IDAwMDA=") == (
                    "535 5.7.8 Authentication credentials invalid"
                )
                plain = base64.b64encode(b"\0alice\0s3cret").decode()
                assert (await client.cmd(f"AUTH PLAIN {plain}")).startswith("235 ")
                assert (await client.cmd(f"AUTH PLAIN {plain}")).startswith("503 ")


@pytest.mark.anyio
async def test_auth_refused_on_plaintext_when_tls_required() -> None:
    plain = base64.b64encode(b"\0alice\0s3cret").decode()
    with anyio.fail_after(TIMEOUT):
        async with (
            SMTPTestServer(users={"alice": "s3cret"}, require_auth=True) as server,
            tcp_client(server) as client,
        ):
            assert "AUTH" not in await client.cmd("EHLO client.test")
            assert await client.cmd(f"AUTH PLAIN {plain}") == (
                "538 5.7.11 Encryption required for requested authentication mechanism"
            )
            assert await client.cmd("MAIL FROM:<a@x.test>") == "530 5.7.0 Authentication required"


@pytest.mark.anyio
async def test_auth_on_plaintext_when_allowed() -> None:
    plain = base64.b64encode(b"\0alice\0s3cret").decode()
    with anyio.fail_after(TIMEOUT):
        async with (
            SMTPTestServer(users={"alice": "s3cret"}, auth_require_tls=False) as server,
            tcp_client(server) as client,
        ):
            assert "250 AUTH CRAM-MD5 PLAIN LOGIN" in await client.cmd("EHLO client.test")
            assert await client.cmd("AUTH PLAIN =") == "501 5.5.2 Malformed PLAIN response"
            assert await client.cmd("AUTH PLAIN") == "334 "
            assert (await client.cmd(plain)).startswith("235 ")


@pytest.mark.anyio
async def test_implicit_tls(tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls_pair
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer(tls_context=server_ctx, users={"alice": "s3cret"}) as server:

            def send() -> None:
                with smtplib.SMTP_SSL(
                    server.host, server.port, context=client_ctx, timeout=TIMEOUT
                ) as client:
                    assert not client.has_extn("starttls")
                    client.login("alice", "s3cret")
                    client.sendmail("a@x.test", ["b@y.test"], b"Subject: s\r\n\r\nx\r\n")

            await in_thread(send)
    assert server.messages[0].tls is True
    assert server.messages[0].authenticated_as == "alice"


@pytest.mark.anyio
async def test_starttls_errors() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server, tcp_client(server) as client:
            assert "STARTTLS" not in await client.cmd("EHLO client.test")
            assert await client.cmd("STARTTLS") == "454 4.7.0 TLS not available"


def test_throwaway_tls_contexts() -> None:
    server_ctx, client_ctx = throwaway_tls()
    assert client_ctx.verify_mode == ssl.CERT_REQUIRED
    assert client_ctx.check_hostname
    assert len(client_ctx.get_ca_certs()) == 1
    assert server_ctx.verify_mode == ssl.CERT_NONE


def test_throwaway_tls_without_trustme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trustme", None)
    with pytest.raises(ImportError, match="pip install trustme"):
        throwaway_tls()


# -- size limit and command checks ---------------------------------------------------------


@pytest.mark.anyio
async def test_size_limit() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer(size_limit=100) as server:
            async with tcp_client(server) as client:
                assert "250-SIZE 100" in await client.cmd("EHLO client.test")
                assert await client.cmd("MAIL FROM:<a@x.test> SIZE=101") == (
                    "552 5.3.4 Message size exceeds fixed limit"
                )
                assert await client.cmd("MAIL FROM:<a@x.test> SIZE=abc") == (
                    "501 5.5.4 Syntax: SIZE=<number>"
                )
                assert await client.cmd("MAIL FROM:<a@x.test> SIZE=100") == "250 2.1.0 Ok"
                assert await client.cmd("RCPT TO:<b@y.test>") == "250 2.1.5 Ok"
                assert (await client.cmd("DATA")).startswith("354 ")
                # Dot-stuffing does not count: 100 octets of content are accepted.
                await client.send(b".." + b"x" * 97 + b"\r\n.\r\n")
                assert (await client.read_line()).startswith("250 ")
                # Slightly too big: refused after reading.
                await start_transaction(client)
                assert (await client.cmd("DATA")).startswith("354 ")
                await client.send(b"x" * 99 + b"\r\n.\r\n")
                assert await client.read_line() == "552 5.3.4 Message size exceeds fixed limit"
                # Far too big: discarded while reading, and the session goes on.
                await start_transaction(client)
                assert (await client.cmd("DATA")).startswith("354 ")
                await client.send((b"y" * 998 + b"\r\n") * 300 + b".\r\n")
                assert await client.read_line() == "552 5.3.4 Message size exceeds fixed limit"
                assert await client.cmd("NOOP") == "250 2.0.0 Ok"

            def too_big() -> None:
                with smtp(server) as client:
                    client.sendmail("a@x.test", ["b@y.test"], b"z" * 200)

            with pytest.raises(smtplib.SMTPSenderRefused) as info:
                await in_thread(too_big)
            assert info.value.smtp_code == 552
    assert len(server.messages) == 1
    assert server.messages[0].data == b"." + b"x" * 97 + b"\r\n"


@pytest.mark.anyio
async def test_line_too_long() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server, stream_client(server) as client:
            assert (await client.read_line()).startswith("220 ")
            # 998 octets plus CRLF is the longest allowed line.
            assert await client.cmd("NOOP " + "x" * 993) == "250 2.0.0 Ok"
            assert await client.cmd("NOOP " + "x" * 994) == "500 5.5.6 Line too long"
            # A huge line arriving in pieces is discarded as it comes.
            for _ in range(100):
                await client.send(b"z" * 10_000)
            assert await client.cmd("") == "500 5.5.6 Line too long"
            assert await client.cmd("NOOP") == "250 2.0.0 Ok"


@pytest.mark.anyio
async def test_command_errors() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server, tcp_client(server) as client:
            assert (
                await client.cmd("MAIL FROM:<a@x.test>") == "503 5.5.1 Error: send HELO/EHLO first"
            )
            assert await client.cmd("EHLO") == "501 5.5.4 Syntax: EHLO hostname"
            assert (await client.cmd("ehlo client.test")).startswith("250-")
            assert await client.cmd("RCPT TO:<b@y.test>") == "503 5.5.1 Error: need MAIL command"
            assert await client.cmd("DATA") == "503 5.5.1 Error: need MAIL command"
            assert await client.cmd("FOO bar") == "500 5.5.2 Error: command not recognized"
            assert (await client.cmd("VRFY someone")).startswith("252 2.5.0 ")
            assert (await client.cmd("HELP")).startswith("214 ")
            assert (await client.cmd("MAIL FROM: <a@x.test>")).startswith("501 5.5.4 ")
            assert (await client.cmd("MAIL FROM:a@x.test")).startswith("501 5.5.4 ")
            assert await client.cmd("MAIL FROM:<a@x.test> SIZE=\u00b2") == (
                "501 5.5.4 Syntax: SIZE=<number>"
            )
            await client.send(b"NOOP \xff\r\n")
            assert await client.read_line() == "500 5.5.2 Error: command is not valid UTF-8"
            assert await client.cmd("MAIL FROM:<a@x.test> FOO=1") == (
                "555 5.5.4 Unsupported parameter: FOO"
            )
            assert await client.cmd("MAIL FROM:<us\u00e9r@x.test>") == (
                "553 5.6.7 Non-ASCII address needs the SMTPUTF8 parameter"
            )
            assert await client.cmd("mail from:<> body=8bitmime") == "250 2.1.0 Ok"
            assert (
                await client.cmd("MAIL FROM:<a@x.test>") == "503 5.5.1 Error: nested MAIL command"
            )
            assert await client.cmd("DATA") == "503 5.5.1 Error: need RCPT command"
            assert await client.cmd("RCPT TO:<\u00fcser@y.test>") == (
                "553 5.6.7 Non-ASCII address needs SMTPUTF8 in MAIL"
            )
            assert await client.cmd("RCPT TO:<nobody>") == "501 5.1.3 Bad recipient address syntax"
            assert await client.cmd("RCPT TO:<b@y.test> NOTIFY=NEVER") == (
                "555 5.5.4 Unsupported parameter: NOTIFY"
            )
            assert await client.cmd("RCPT TO:<Postmaster>") == "250 2.1.5 Ok"
            assert await client.cmd("RSET") == "250 2.0.0 Ok"
            assert await client.cmd("DATA") == "503 5.5.1 Error: need MAIL command"
            assert await client.cmd("MAIL FROM:<s\u00e9nder@x.test> SMTPUTF8") == "250 2.1.0 Ok"
            assert await client.cmd('RCPT TO:<"odd >name"@y.test>') == "250 2.1.5 Ok"
            assert await client.cmd("RCPT TO:<\u00fcser@y.test>") == "250 2.1.5 Ok"
            assert (await client.cmd("DATA")).startswith("354 ")
            assert (await client.cmd("Subject: \u00fc\r\n\r\n.")).startswith("250 ")
            assert await client.cmd("QUIT") == "221 2.0.0 Bye"
    [message] = server.messages
    assert message.sender == "s\u00e9nder@x.test"
    assert message.recipients == ('"odd >name"@y.test', "\u00fcser@y.test")
    assert message.mail_options == ("SMTPUTF8",)
    assert server.eight_bit_violations == 0


# -- reply overrides -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_reply_override_for_matching_recipient() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.reply("RCPT", "550 5.1.1 No such user", match="NOBODY@")

            def send() -> dict[str, Any]:
                with smtp(server) as client:
                    return client.sendmail(
                        "a@x.test", ["b@y.test", "nobody@y.test"], b"Subject: r\r\n\r\nx\r\n"
                    )

            assert await in_thread(send) == {"nobody@y.test": (550, b"5.1.1 No such user")}
            # times=None: it keeps applying.
            assert await in_thread(send) == {"nobody@y.test": (550, b"5.1.1 No such user")}
    assert [message.recipients for message in server.messages] == [("b@y.test",)] * 2


@pytest.mark.anyio
async def test_reply_override_times_and_order() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server, tcp_client(server) as client:
            server.reply("DATA", "451 4.3.0 Try later", times=1)
            server.reply("NOOP", "250-first\n250-second\n250 third")
            server.reply("NOOP", "252 newest wins", match="me", times=2)
            await start_transaction(client)
            assert await client.cmd("DATA") == "451 4.3.0 Try later"
            # The refused DATA left the transaction intact but started no data phase.
            assert await client.cmd("NOOP") == "250-first\n250-second\n250 third"
            assert await client.cmd("NOOP me") == "252 newest wins"
            assert await client.cmd("NOOP me") == "252 newest wins"
            assert await client.cmd("NOOP me") == "250-first\n250-second\n250 third"
            assert (await client.cmd("DATA")).startswith("354 ")
            assert (await client.cmd("Subject: x\r\n\r\n.")).startswith("250 ")
            server.clear_replies()
            assert await client.cmd("NOOP") == "250 2.0.0 Ok"
    assert len(server.messages) == 1


@pytest.mark.anyio
async def test_refusing_overrides_change_state_like_real_refusals() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server, tcp_client(server) as client:
            server.reply("MAIL", "550 5.7.1 Sender rejected", times=1)
            assert (await client.cmd("EHLO client.test")).startswith("250-")
            assert await client.cmd("MAIL FROM:<a@x.test>") == "550 5.7.1 Sender rejected"
            assert await client.cmd("RCPT TO:<b@y.test>") == "503 5.5.1 Error: need MAIL command"
            assert await client.cmd("MAIL FROM:<a@x.test>") == "250 2.1.0 Ok"
            server.reply("RCPT", "450 4.2.0 Busy", times=1)
            assert await client.cmd("RCPT TO:<b@y.test>") == "450 4.2.0 Busy"
            assert await client.cmd("DATA") == "503 5.5.1 Error: need RCPT command"
            # A positive override keeps the normal effect.
            server.reply("RCPT", "250 2.1.5 Fine by me", times=1)
            assert await client.cmd("RCPT TO:<c@y.test>") == "250 2.1.5 Fine by me"
            assert (await client.cmd("DATA")).startswith("354 ")
            assert (await client.cmd("Subject: x\r\n\r\n.")).startswith("250 ")
    assert server.messages[0].recipients == ("c@y.test",)


@pytest.mark.anyio
async def test_eom_override_rejects_message() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.reply("EOM", "554 5.6.0 Rejected", match="subject: spam")

            def send(subject: str) -> None:
                with smtp(server) as client:
                    client.sendmail("a@x.test", ["b@y.test"], f"Subject: {subject}\r\n\r\nx\r\n")

            with pytest.raises(smtplib.SMTPDataError) as info:
                await in_thread(lambda: send("spam"))
            assert info.value.smtp_code == 554
            await in_thread(lambda: send("ham"))
    assert [message.as_email()["Subject"] for message in server.messages] == ["ham"]


@pytest.mark.anyio
async def test_override_with_close() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.reply("MAIL", "421 4.4.2 Bye", close=True)
            async with tcp_client(server) as client:
                assert (await client.cmd("EHLO client.test")).startswith("250-")
                assert await client.cmd("MAIL FROM:<a@x.test>") == "421 4.4.2 Bye"
                await client.expect_closed()
            await server.wait_until(lambda: server.sessions_closed == 1)
    assert server.session_errors == []


@pytest.mark.anyio
async def test_greeting_override() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.reply("GREETING", "554 5.3.2 No service", times=1)

            def connect() -> None:
                smtp(server).close()

            with pytest.raises(smtplib.SMTPConnectError):
                await in_thread(connect)

            server.reply("GREETING", "554 No service here", times=1)
            async with tcp_client(server, greeting=False) as client:
                assert await client.read_line() == "554 No service here"
                assert await client.cmd("EHLO client.test") == "503 5.5.1 Error: no service"
                assert await client.cmd("QUIT") == "221 2.0.0 Bye"
                await client.expect_closed()

            server.reply("GREETING", "421 4.3.2 Go away", close=True, times=1)
            server.reply("GREETING", "220-mx.test first\n220 mx.test second", times=1)
            async with tcp_client(server, greeting=False) as client:
                assert await client.read_reply() == ["220-mx.test first", "220 mx.test second"]
                assert await client.cmd("NOOP") == "250 2.0.0 Ok"
            async with tcp_client(server, greeting=False) as client:
                assert await client.read_line() == "421 4.3.2 Go away"
                await client.expect_closed()

            # Back to normal.
            await in_thread(connect)


@pytest.mark.anyio
async def test_ehlo_override_makes_smtplib_fall_back_to_helo() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.reply("EHLO", "502 5.5.1 Not implemented")

            def send() -> None:
                with smtp(server) as client:
                    client.sendmail("a@x.test", ["b@y.test"], b"Subject: h\r\n\r\nx\r\n")

            await in_thread(send)
    assert server.messages[0].helo != ""
    assert any(line.lower().startswith("helo ") for line in server.client_lines())
    assert server.messages[0].mail_options == ()


def test_reply_validation() -> None:
    server = SMTPTestServer()
    with pytest.raises(ValueError, match="3-digit"):
        server.reply("MAIL", "no code")
    with pytest.raises(ValueError, match="times"):
        server.reply("MAIL", "250 ok", times=0)
    with pytest.raises(ValueError, match="mechanisms"):
        SMTPTestServer(auth_mechanisms=("XOAUTH2",))


# -- serve_stream and lifecycle ------------------------------------------------------------


@pytest.mark.anyio
async def test_serve_stream_without_listener() -> None:
    server = SMTPTestServer(hostname="mem.test")
    with anyio.fail_after(TIMEOUT):
        async with stream_client(server) as client:
            assert (await client.read_line()).startswith("220 mem.test ")
            await start_transaction(client)
            assert (await client.cmd("DATA")).startswith("354 ")
            assert (await client.cmd("Subject: m\r\n\r\nin memory\r\n.")).startswith("250 ")
            assert await client.cmd("QUIT") == "221 2.0.0 Bye"
            await client.expect_closed()
    assert server.messages[0].data == b"Subject: m\r\n\r\nin memory\r\n"
    assert server.sessions == server.sessions_closed == 1


@pytest.mark.anyio
async def test_serve_stream_with_implicit_tls(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = tls_pair
    server = SMTPTestServer(tls_context=server_ctx)
    with anyio.fail_after(TIMEOUT):
        async with stream_client(server) as client:
            await client.starttls(client_ctx)
            assert (await client.read_line()).startswith("220 ")
            await start_transaction(client)
            assert (await client.cmd("DATA")).startswith("354 ")
            assert (await client.cmd("Subject: t\r\n\r\n.")).startswith("250 ")
            assert await client.cmd("QUIT") == "221 2.0.0 Bye"
    assert server.messages[0].tls is True


@pytest.mark.anyio
async def test_memory_stream_pair() -> None:
    a, b = memory_stream_pair()
    assert isinstance(a, MemoryByteStream)
    async with a, b:
        await a.send(b"hello")
        await a.send(b"")
        assert await b.receive(2) == b"he"
        assert await b.receive() == b"llo"
        await b.send_eof()
        with pytest.raises(anyio.EndOfStream):
            await a.receive()
        await a.send(b"still open")
        assert await b.receive() == b"still open"
        await a.aclose()
        with pytest.raises(anyio.EndOfStream):
            await b.receive()


@pytest.mark.anyio
async def test_leaving_the_context_cancels_live_sessions() -> None:
    memory_client, memory_server = memory_stream_pair()
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            async with SMTPTestServer() as server:
                tcp = RawClient(await anyio.connect_tcp(server.host, server.port))
                assert (await tcp.read_line()).startswith("220 ")
                tg.start_soon(server.serve_stream, memory_server)
                memory = RawClient(memory_client)
                assert (await memory.read_line()).startswith("220 ")
                assert server.active_sessions == 2
                await tcp.send("EHLO unfinished")
            # Both sessions were cancelled and their streams closed.
            assert server.active_sessions == 0
            await tcp.expect_closed()
            await memory.expect_closed()
            await tcp.aclose()
            await memory.aclose()
    assert server.sessions_closed == 2
    assert server.session_errors == []


@pytest.mark.anyio
async def test_body_exception_propagates_unwrapped() -> None:
    with pytest.raises(KeyError):
        async with SMTPTestServer():
            raise KeyError("boom")


@pytest.mark.anyio
async def test_client_disconnects_are_quiet(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, _ = tls_pair
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer(starttls_context=server_ctx) as server:
            # Right after the greeting.
            async with tcp_client(server):
                pass
            # In the middle of a command line and in the middle of the data.
            async with tcp_client(server) as client:
                await client.send("EHLO cli")
            async with tcp_client(server) as client:
                await start_transaction(client)
                assert (await client.cmd("DATA")).startswith("354 ")
                await client.send("Subject: cut\r\n\r\nhalf a mess")
            # During the TLS handshake.
            async with tcp_client(server) as client:
                await client.cmd("EHLO client.test")
                assert (await client.cmd("STARTTLS")).startswith("220 ")
            # With garbage instead of a TLS handshake.
            async with tcp_client(server) as client:
                await client.cmd("EHLO client.test")
                assert (await client.cmd("STARTTLS")).startswith("220 ")
                await client.send(b"this is not TLS\r\n" * 10)
                await client.drain()
            await server.wait_until(lambda: server.sessions_closed == 5)
            notes = sorted(server.session_errors)
            assert len(notes) == 4
            assert notes[0] == "session 1: connection closed in the middle of a line"
            assert notes[1] == "session 2: connection closed during message data"
            assert notes[2].startswith("session 3: TLS handshake failed")
            assert notes[3].startswith("session 4: TLS handshake failed")
        async with SMTPTestServer(tls_context=server_ctx) as server:
            # Implicit TLS: drop before and during the handshake.
            await (await anyio.connect_tcp(server.host, server.port)).aclose()
            tcp = await anyio.connect_tcp(server.host, server.port)
            await tcp.send(b"\x16\x03\x01\x00\x05hello")
            await tcp.aclose()
            # A client that does not trust the certificate aborts the handshake.
            with pytest.raises(ssl.SSLError):
                await anyio.connect_tcp(
                    server.host, server.port, tls=True, ssl_context=ssl.create_default_context()
                )
            await server.wait_until(lambda: server.sessions_closed == 3)
            assert all("TLS handshake failed" in note for note in server.session_errors)
    assert server.messages == []


@pytest.mark.anyio
async def test_wait_for_messages_and_transcript_sessions() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server, anyio.create_task_group() as tg:

            async def waiter() -> None:
                messages = await server.wait_for_messages(2)
                assert len(messages) == 2

            tg.start_soon(waiter)
            for _ in range(2):
                async with tcp_client(server) as client:
                    await start_transaction(client)
                    assert (await client.cmd("DATA")).startswith("354 ")
                    assert (await client.cmd(".")).startswith("250 ")
                    assert await client.cmd("QUIT") == "221 2.0.0 Bye"
    assert [message.session for message in server.messages] == [0, 1]
    assert {entry.session for entry in server.transcript} == {0, 1}
    assert str(server.transcript[0]) == f"[0] S: {server.transcript[0].line}"
    assert isinstance(server.messages[0], ReceivedMessage)

"""Fuzzing: every input parses or raises the library's typed error, never another exception.

Each target is a plain function of one generated input (``check_*``) and the
strategy that generates it (``*_INPUTS``), listed in ``TARGETS``.  The tests
here run every target with a bounded number of examples (``CI_EXAMPLES``);
``fuzz/fuzz_targets.py`` runs the same targets for as long as asked.

Targets: the reply parser, the EHLO reply (through the session and on to the
MAIL parameters it leads to), ``Capabilities``, every SASL mechanism in
``anyio_smtp.auth.MECHANISMS`` (so mechanisms added later are fuzzed too),
the message data encoder, and whole client sessions against a server that
answers with fuzzed bytes.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import anyio_smtp
from anyio_smtp import InvalidArgumentError, RemoteProtocolError, SMTPError
from anyio_smtp._protocol.body import BodyEncoder, encode_body
from anyio_smtp._protocol.capabilities import Capabilities
from anyio_smtp._protocol.commands import Ehlo, Mail
from anyio_smtp._protocol.params import plan_transfer
from anyio_smtp._protocol.replies import (
    MAX_REPLY_LINE_LENGTH,
    MAX_REPLY_LINES,
    MAX_REPLY_SIZE,
    Reply,
    ReplyParser,
)
from anyio_smtp._protocol.session import NEED_DATA, SMTPSession
from anyio_smtp._protocol.state import SessionState
from anyio_smtp.auth import MECHANISMS, ChannelBindings, SASLFailure
from anyio_smtp.testing import MemoryByteStream, memory_stream_pair
from tests.security.helpers import (
    PASSWORD,
    USERNAME,
    assert_no_secret,
    assert_single_end_of_data,
    exception_texts,
    secret_forms,
)

#: Examples per target in the test suite (CI); the fuzz script takes its own.
CI_EXAMPLES: dict[str, int] = {
    "reply": 300,
    "ehlo": 300,
    "capabilities": 200,
    "sasl": 300,
    "body": 300,
    "client-greeting": 75,
    "client-auth": 75,
}


def ci(target: str) -> settings:
    return settings(
        max_examples=CI_EXAMPLES[target],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def chunked(data: bytes, cuts: tuple[int, ...]) -> list[bytes]:
    """``data`` cut at ``cuts`` (any integers; taken modulo its length)."""
    bounds = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


_CUTS = st.lists(st.integers(0, 1 << 16), max_size=12).map(tuple)


# -- the reply parser ------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyInput:
    data: bytes
    cuts: tuple[int, ...]
    enhanced: bool


_CODES = st.sampled_from(
    [b"220", b"235", b"250", b"334", b"354", b"421", b"451", b"535", b"550", b"199", b"600"]
)
_CODES = _CODES | st.sampled_from([b"25", b"2500", b"abc", b"", b"2\x00\x00"])
_SEPARATORS = st.sampled_from([b" ", b"-", b"", b"_", b"\t", b"\x00"])
_ENDINGS = st.sampled_from([b"\r\n", b"\n", b"\r", b"", b"\r\r\n", b"\n\r"])
_TEXTS = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=20).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"2.0.0 Ok", b"5.1.1 unknown", b"4.7.0 later", b"2.999.999 x", b"9.9.9 x"]),
    # Around the longest line: the line is code, separator and this text.
    st.sampled_from([2040, 2043, 2044, 2045, 2046, 2047, 3000]).map(lambda n: b"x" * n),
)
_REPEATS = st.sampled_from([1, 1, 1, 1, 2, 3, MAX_REPLY_LINES - 1, MAX_REPLY_LINES, 300])


@st.composite
def _reply_like(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.tuples(_CODES, _SEPARATORS, _TEXTS, _ENDINGS, _REPEATS), max_size=6))
    return b"".join((code + sep + text + end) * n for code, sep, text, end, n in parts)


REPLY_INPUTS = st.builds(
    ReplyInput,
    data=st.one_of(st.binary(max_size=3000), _reply_like()),
    cuts=_CUTS,
    enhanced=st.booleans(),
)
_ENHANCED = re.compile(r"([245])\.[0-9]{1,3}\.[0-9]{1,3}")
#: Most octets a parser may hold between two calls: one reply in progress and
#: one unfinished line.
PARSER_BOUND = MAX_REPLY_SIZE + MAX_REPLY_LINE_LENGTH + 2


def _parse(chunks: list[bytes], enhanced: bool) -> tuple[list[Reply], bool]:
    parser = ReplyParser()
    parser.enhanced_status_codes = enhanced
    replies: list[Reply] = []
    try:
        for chunk in chunks:
            parser.receive_data(chunk)
            while (reply := parser.next_reply()) is not None:
                replies.append(reply)
            assert parser.buffered <= PARSER_BOUND
    except RemoteProtocolError:
        return replies, True
    return replies, False


def check_reply(reply: Reply, *, enhanced: bool) -> None:
    """What every parsed reply is; ``enhanced``: enhanced status codes were asked for."""
    assert 200 <= reply.code <= 599
    assert 1 <= len(reply.lines) <= MAX_REPLY_LINES
    assert all(isinstance(line, str) and "\n" not in line for line in reply.lines)
    if reply.enhanced_status is not None:
        assert enhanced
        match = _ENHANCED.fullmatch(reply.enhanced_status)
        assert match is not None
        assert int(match[1]) == reply.code // 100
    assert str(reply).startswith(str(reply.code))
    assert isinstance(reply.message, str)
    kinds = (reply.is_positive, reply.is_intermediate, reply.is_transient, reply.is_permanent)
    assert sum(kinds) == 1


def check_reply_parser(case: ReplyInput) -> None:
    """Any bytes in any chunks: replies or RemoteProtocolError, with bounded buffering."""
    replies, failed = _parse(chunked(case.data, case.cuts), case.enhanced)
    for reply in replies:
        check_reply(reply, enhanced=case.enhanced)
    # However the bytes are cut, the outcome is the same.
    whole, whole_failed = _parse([case.data], case.enhanced)
    assert failed == whole_failed
    if not failed:
        assert replies == whole


@ci("reply")
@given(REPLY_INPUTS)
@example(ReplyInput(b"250-x\r\n" * (MAX_REPLY_LINES + 1), (), False))
@example(ReplyInput(b"250 " + b"x" * 10_000, (7, 5000), False))
@example(ReplyInput(b"250-2.0.0 a\r\n250 5.0.0 b\r\n", (1,), True))
def test_reply_parser(case: ReplyInput) -> None:
    check_reply_parser(case)


# -- EHLO and capabilities ---------------------------------------------------------------


@dataclass(frozen=True)
class EhloInput:
    reply: bytes
    cuts: tuple[int, ...]


_KEYWORDS = st.sampled_from(
    [
        "PIPELINING",
        "SIZE",
        "SIZE 0",
        "SIZE 35882577",
        "SIZE -1",
        "SIZE 99999999999999999999999",
        "SIZE \u0663",
        "AUTH PLAIN LOGIN",
        "AUTH=LOGIN",
        "auth scram-sha-256-plus",
        "STARTTLS",
        "8BITMIME",
        "SMTPUTF8",
        "CHUNKING",
        "BINARYMIME",
        "ENHANCEDSTATUSCODES",
        "DSN",
        "",
        " ",
    ]
)
_EHLO_LINE = st.one_of(_KEYWORDS, st.text(max_size=30))


@st.composite
def _ehlo_reply(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(_EHLO_LINE, max_size=12))
    code = draw(st.sampled_from(["250", "250", "250", "502", "421", "550", "251"]))
    out = [f"{code}-mx.test"] + [f"{code}-{line}" for line in lines]
    out[-1] = out[-1].replace("-", " ", 1)
    text = "".join(f"{line}\r\n" for line in out).encode("utf-8", "surrogatepass")
    return text + draw(st.sampled_from([b"", b"", b"250 extra\r\n", b"421 bye\r\n", b"2"]))


EHLO_INPUTS = st.builds(
    EhloInput, reply=st.one_of(_ehlo_reply(), st.binary(max_size=600)), cuts=_CUTS
)


def check_capabilities(capabilities: Capabilities) -> None:
    assert isinstance(repr(capabilities), str)
    assert isinstance(capabilities.greeting, str)
    limit = capabilities.size_limit
    assert limit is None or (isinstance(limit, int) and limit > 0)
    assert all(name == name.upper() for name in capabilities.auth_mechanisms)
    assert all(keyword in capabilities for keyword in capabilities if keyword.isascii())
    assert all(isinstance(value, tuple) for value in capabilities.values())


def check_mail_parameters(capabilities: Capabilities) -> None:
    """What a server advertised never puts anything unchecked into MAIL FROM."""
    for size, eight_bit, binary in ((120, False, False), (5000, True, False), (9, True, True)):
        try:
            plan = plan_transfer(capabilities, size=size, eight_bit=eight_bit, binary=binary)
        except SMTPError:
            continue
        line = Mail("alice@example.test", plan.parameters).encode()
        assert line.count(b"\r\n") == 1
        assert line.endswith(b"\r\n")


def check_ehlo_exchange(case: EhloInput) -> None:
    """Greeting, EHLO, then any reply bytes: capabilities or RemoteProtocolError."""
    session = SMTPSession()
    session.receive_data(b"220 mx.test ESMTP\r\n")
    greeting = session.next_event()
    assert greeting is not NEED_DATA
    session.send(Ehlo("client.test"))
    try:
        for chunk in chunked(case.reply, case.cuts):
            session.receive_data(chunk)
            while (event := session.next_event()) is not NEED_DATA:
                check_reply(event.reply, enhanced=True)
    except RemoteProtocolError:
        assert session.state is SessionState.CLOSED
        return
    check_capabilities(session.capabilities)
    assert isinstance(session.pipelining, bool)
    if session.state is SessionState.READY:
        check_mail_parameters(session.capabilities)


@ci("ehlo")
@given(EHLO_INPUTS)
@example(EhloInput(b"250-mx.test\r\n250 SIZE 99999999999999999999\r\n", ()))
def test_ehlo_reply(case: EhloInput) -> None:
    check_ehlo_exchange(case)


CAPABILITY_INPUTS = st.lists(st.one_of(_KEYWORDS, st.text(max_size=40)), max_size=16)


def check_capabilities_from_ehlo(lines: list[str]) -> None:
    """Any text lines make capabilities; nothing raises."""
    capabilities = Capabilities.from_ehlo(lines)
    assert capabilities.greeting == (lines[0] if lines else "")
    check_capabilities(capabilities)
    check_mail_parameters(capabilities)


@ci("capabilities")
@given(CAPABILITY_INPUTS)
def test_capabilities_from_ehlo(lines: list[str]) -> None:
    check_capabilities_from_ehlo(lines)


# -- SASL mechanisms -------------------------------------------------------------------

NONCE = b"{nonce}"
BINDINGS = ChannelBindings(tls_server_end_point=b"x" * 32)
SECRETS = secret_forms(PASSWORD)


@dataclass(frozen=True)
class SaslInput:
    """A mechanism, the challenges a server sends it and the data of its 235.

    ``{nonce}`` in a challenge stands for the client's nonce (SCRAM), so the
    fuzzer can get past the nonce check.
    """

    name: str
    challenges: tuple[bytes, ...]
    success: bytes | None


def _json(depth: int) -> bytes:
    return b"[" * depth + b'{"status":"401","schemes":"Bearer"}' + b"]" * depth


_CHALLENGES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b"Username:",
            b"Password:",
            b"<1896.697170952@postoffice.reston.mci.net>",
            b"r={nonce}srv,s=c2FsdA==,i=4096",
            b"r={nonce}srv,s=c2FsdA==,i=4096,x=ext",
            b"r={nonce},s=c2FsdA==,i=4096",
            b"r=other,s=c2FsdA==,i=4096",
            b"r={nonce}srv,s=,i=4096",
            b"r={nonce}srv,s=!!,i=4096",
            b"r={nonce}srv,s=c2FsdA==,i=0",
            b"r={nonce}srv,s=c2FsdA==,i=4095",
            b"r={nonce}srv,s=c2FsdA==,i=99999999999",
            b"m=ext,r={nonce}srv,s=c2FsdA==,i=4096",
            b"e=invalid-proof",
            b"v=AAAA",
            b"v=!!",
            b'{"status":"invalid_token","scope":"mail"}',
            b'{"status":true}',
            b"null",
        ]
    ),
    # Deeply nested JSON in an OAuth error challenge (deeper than the
    # interpreter's recursion limit, which Hypothesis raises while it runs).
    st.integers(0, 6000).map(_json),
)
SASL_INPUTS = st.builds(
    SaslInput,
    name=st.sampled_from(sorted(MECHANISMS)),
    challenges=st.lists(_CHALLENGES, max_size=4).map(tuple),
    success=st.one_of(st.none(), _CHALLENGES),
)
_CLIENT_NONCE = re.compile(rb"(?:^|,)r=([^,]*)")


def _fail_cleanly(error: Exception) -> None:
    assert isinstance(error, (RemoteProtocolError, SASLFailure)), repr(error)
    assert_no_secret(exception_texts(error), SECRETS, "a SASL error")


def check_sasl_mechanism(case: SaslInput) -> None:
    """Any challenges: a bytes response, RemoteProtocolError or SASLFailure, no secret shown."""
    try:
        mechanism = MECHANISMS[case.name]("sasl-user", PASSWORD, BINDINGS)
    except InvalidArgumentError:
        return  # refusing the credentials up front is allowed
    assert mechanism.name == case.name
    anyio.run(mechanism.prepare)
    initial = mechanism.initial_response()
    assert initial is None or isinstance(initial, bytes)
    found = _CLIENT_NONCE.search(initial or b"")
    nonce = found[1] if found else b""
    failed = False
    for template in case.challenges:
        try:
            response = mechanism.respond(template.replace(NONCE, nonce))
        except Exception as error:  # anything but the typed errors fails the check
            _fail_cleanly(error)
            failed = True
            break
        assert isinstance(response, bytes)
    if not failed:
        try:
            mechanism.verify_success(
                None if case.success is None else case.success.replace(NONCE, nonce)
            )
        except Exception as error:
            _fail_cleanly(error)
    detail = mechanism.failure_detail()
    assert detail is None or isinstance(detail, str)
    assert_no_secret((repr(mechanism), str(mechanism), str(detail)), SECRETS, "the mechanism")


@ci("sasl")
@given(SASL_INPUTS)
@example(SaslInput("XOAUTH2", (_json(6000),), None))
@example(SaslInput("OAUTHBEARER", (_json(6000),), None))
@example(SaslInput("SCRAM-SHA-256", (b"r={nonce}srv,s=c2FsdA==,i=4096",), b"v=AAAA"))
def test_sasl_mechanisms(case: SaslInput) -> None:
    check_sasl_mechanism(case)


# -- the message data encoder ----------------------------------------------------------


@dataclass(frozen=True)
class BodyInput:
    data: bytes
    cuts: tuple[int, ...]


_PIECES = st.one_of(
    st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"\x00", b"\x80", b"\xff", b"x"]),
    st.sampled_from([b"\r\n.\r\n", b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"]),
    st.binary(max_size=12),
)
BODY_INPUTS = st.builds(
    BodyInput,
    data=st.one_of(st.lists(_PIECES, max_size=60).map(b"".join), st.binary(max_size=600)),
    cuts=_CUTS,
)


def _normalised(data: bytes) -> bytes:
    """An independent reference: every line ending made CRLF, and one at the end."""
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return data if not data or data.endswith(b"\r\n") else data + b"\r\n"


def _unstuffed(encoded: bytes) -> bytes:
    lines = encoded[:-3].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def check_body_encoder(case: BodyInput) -> None:
    """Any bytes in any chunks: one end of data, no bare CR or LF, nothing lost."""
    encoder = BodyEncoder()
    streamed = b"".join(encoder.encode(chunk) for chunk in chunked(case.data, case.cuts))
    streamed += encoder.finish()
    whole = encode_body(case.data)
    assert streamed == whole.data
    assert (encoder.size, encoder.eight_bit) == (whole.size, whole.eight_bit)
    assert_single_end_of_data(whole.data)
    expected = _normalised(case.data)
    assert _unstuffed(whole.data) == expected
    assert whole.size == len(expected)
    assert whole.eight_bit == any(octet > 127 for octet in case.data)


@ci("body")
@given(BODY_INPUTS)
@example(BodyInput(b"a\r\n.\r\nMAIL FROM:<x@y>\r\n", (2, 3)))
@example(BodyInput(b".\r", (1,)))
def test_body_encoder(case: BodyInput) -> None:
    check_body_encoder(case)


# -- whole sessions against a fuzzed server --------------------------------------------


@dataclass(frozen=True)
class ServerInput:
    """A server's replies, one per client command; ``mechanism`` for the AUTH target.

    With a mechanism, the server first greets and offers it honestly, so the
    replies are the AUTH exchange.
    """

    replies: tuple[bytes, ...]
    mechanism: str | None = None


async def _client_spoke(stream: MemoryByteStream) -> bool:
    """Wait until the client wrote (True) or is waiting itself (False)."""
    spoke = False

    async def read() -> None:
        nonlocal spoke
        with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError):
            await stream.receive()
            spoke = True

    async with anyio.create_task_group() as group:
        group.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        group.cancel_scope.cancel()
    return spoke


async def _fuzzed_server_session(case: ServerInput) -> None:
    client_end, server_end = memory_stream_pair()
    script = list(case.replies)
    if case.mechanism is not None:
        offer = f"250-mx.test\r\n250 AUTH {case.mechanism}\r\n".encode()
        script = [b"220 mx.test ESMTP\r\n", offer, *script]

    async def serve() -> None:
        try:
            for reply in script:
                await server_end.send(reply)
                if not await _client_spoke(server_end):
                    break  # the client waits for more: it gets the end of the stream
            await server_end.send_eof()
            while True:
                await server_end.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            await server_end.aclose()

    failure: SMTPError | None = None
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(serve)
            try:
                smtp = await anyio_smtp.connect_stream(
                    client_end, ehlo_domain="client.test", allow_insecure_auth=True, timeout=5
                )
                if case.mechanism is not None:
                    reply = await smtp.login(USERNAME, PASSWORD, mechanism=case.mechanism)
                    assert reply.code == 235
                    assert smtp.authenticated
                await smtp.aclose()
            except SMTPError as error:
                failure = error
            finally:
                closed = client_end.closed
                await client_end.aclose()
    if failure is not None:
        # Only a refusal before any I/O leaves the session open.
        assert closed or isinstance(failure, InvalidArgumentError)
        assert_no_secret(exception_texts(failure), SECRETS, "an error")


def check_client_session(case: ServerInput) -> None:
    """A server that says anything: the client succeeds or raises an SMTPError.

    Runs on trio, whose ``wait_all_tasks_blocked`` answers at once (the
    server uses it to see that the client is waiting for more).
    """
    anyio.run(_fuzzed_server_session, case, backend="trio")


def _challenge_line(payload: bytes) -> bytes:
    return b"334 " + base64.b64encode(payload) + b"\r\n"


_SERVER_REPLIES = st.one_of(
    st.binary(max_size=200),
    _reply_like(),
    st.sampled_from(
        [
            b"220 mx.test ESMTP\r\n",
            b"250 ok\r\n",
            b"250-mx.test\r\n250-PIPELINING\r\n250 AUTH PLAIN\r\n",
            b"421 4.3.2 bye\r\n",
            b"554 5.7.1 no\r\n",
        ]
    ),
)
GREETING_INPUTS = st.builds(ServerInput, replies=st.lists(_SERVER_REPLIES, max_size=4).map(tuple))
AUTH_INPUTS = st.builds(
    ServerInput,
    replies=st.lists(
        st.one_of(
            _CHALLENGES.map(_challenge_line),
            st.sampled_from([b"235 2.7.0 ok\r\n", b"535 5.7.8 no\r\n", b"334 !!\r\n", b"334\r\n"]),
            _SERVER_REPLIES,
        ),
        max_size=4,
    ).map(tuple),
    mechanism=st.sampled_from(sorted(MECHANISMS)),
)


@ci("client-greeting")
@given(GREETING_INPUTS)
@example(ServerInput((b"220 mx.test\r\n", b"250-mx.test\r\n250 PIPELINING\r\n", b"221 bye\r\n")))
def test_client_against_a_fuzzed_server(case: ServerInput) -> None:
    check_client_session(case)


@ci("client-auth")
@given(AUTH_INPUTS)
@example(ServerInput((_challenge_line(_json(1500)), b"535 5.7.8 no\r\n"), "XOAUTH2"))
@example(ServerInput((b"235 2.7.0 ok\r\n",), "PLAIN"))
def test_client_against_a_fuzzed_auth_exchange(case: ServerInput) -> None:
    check_client_session(case)


#: Every target: its strategy and its check (the fuzz script runs these).
TARGETS: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], None]]] = {
    "reply": (REPLY_INPUTS, check_reply_parser),
    "ehlo": (EHLO_INPUTS, check_ehlo_exchange),
    "capabilities": (CAPABILITY_INPUTS, check_capabilities_from_ehlo),
    "sasl": (SASL_INPUTS, check_sasl_mechanism),
    "body": (BODY_INPUTS, check_body_encoder),
    "client-greeting": (GREETING_INPUTS, check_client_session),
    "client-auth": (AUTH_INPUTS, check_client_session),
}


def test_every_target_runs_in_ci() -> None:
    assert set(TARGETS) == set(CI_EXAMPLES)

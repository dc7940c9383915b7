"""Cancellation at every await point of a full session.

A full session -- greeting, EHLO, STARTTLS and the TLS handshake, EHLO, AUTH,
one message to two recipients, QUIT -- runs against ``SMTPTestServer`` over
an in-memory connection whose client end counts every ``send`` and
``receive`` call (below TLS, so the handshake's reads and writes count too).
One uncancelled run counts them: N.  Then, for k = 1 ... N, a session is
cancelled exactly at its k-th call.  Each k is a test, on asyncio and on
trio, with and without PIPELINING.

After every cancellation: the session and its stream are closed, not one more
call reached the stream, every later call raises ``SessionClosedError`` (so no
reply still on its way can be paired with a later command), the client's view
agrees with the server's (a message counts as sent only when its final reply
was read), no ResourceWarning is left behind, and a new session works.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import anyio
import pytest

import anyio_smtp
from anyio_smtp import SendResult, SessionClosedError, SMTPClient
from anyio_smtp.testing import SMTPTestServer, memory_stream_pair
from tests.client.test_failures import BOB, CAROL, CLIENT, MESSAGE, SENDER
from tests.security.helpers import (
    PASSWORD,
    SERVER_NAME,
    USERNAME,
    CountingStream,
    capture_all_logs,
    client_tls,
    resource_warnings,
    server_tls,
)

MODES = ("pipelined", "lock-step")
#: What the server advertises without PIPELINING.
LOCK_STEP_EXTENSIONS = (
    "SIZE",
    "8BITMIME",
    "ENHANCEDSTATUSCODES",
    "STARTTLS",
    "AUTH CRAM-MD5 PLAIN",
)


def make_server(mode: str) -> SMTPTestServer:
    return SMTPTestServer(
        SERVER_NAME,
        starttls_context=server_tls(),
        users={USERNAME: PASSWORD},
        extensions=None if mode == "pipelined" else LOCK_STEP_EXTENSIONS,
    )


@dataclass
class Client:
    smtp: SMTPClient | None = None
    result: SendResult | None = None
    quit_code: int | None = None


async def full_session(counting: CountingStream, client: Client) -> None:
    smtp = await anyio_smtp.connect_stream(
        counting, ehlo_domain=CLIENT, tls_hostname=SERVER_NAME, timeout=5
    )
    client.smtp = smtp
    await smtp.starttls(ssl_context=client_tls())
    await smtp.login(USERNAME, PASSWORD)
    client.result = await smtp.send_mail(SENDER, [BOB, CAROL], MESSAGE)
    client.quit_code = (await smtp.quit()).code


@dataclass(frozen=True)
class Outcome:
    """What one run left behind (plain data: no stream or client survives the run)."""

    calls: int
    reached: int
    cancelled: bool
    connected: bool
    client_closed: bool
    later_call_refused: bool
    stream_closed: bool
    sent: bool
    quit_code: int | None
    messages: int
    data_written: bool
    final_reply_read: bool
    used_pipelining: bool
    server_ended: bool


async def run_session(mode: str, cancel_at: int | None) -> Outcome:
    """Run a full session, cancelled at the ``cancel_at``-th stream call if given."""
    server = make_server(mode)
    client_end, server_end = memory_stream_pair()
    scope = anyio.CancelScope()
    counting = CountingStream(client_end, cancel_at=cancel_at, scope=scope)
    client = Client()
    refused = False
    with capture_all_logs() as records:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(server.serve_stream, server_end)
                with scope:
                    await full_session(counting, client)
                if client.smtp is not None:
                    try:
                        await client.smtp.noop()
                    except SessionClosedError:
                        refused = True
                # The session's end is the server's end too: it stops on its own.
        lines = [
            r.getMessage().removeprefix(f"[{vars(r)['smtp_session']}] ")
            for r in records
            if r.name == "anyio_smtp"
        ]
    await client_end.aclose()  # a no-op when the client closed it, as it must
    return Outcome(
        calls=len(counting.calls),
        reached=counting.reached,
        cancelled=scope.cancelled_caught,
        connected=client.smtp is not None,
        client_closed=client.smtp is not None and client.smtp.closed,
        later_call_refused=refused,
        stream_closed=client_end.closed,
        sent=client.result is not None,
        quit_code=client.quit_code,
        messages=len(server.messages),
        data_written=any(line.startswith("C: [message data") for line in lines),
        final_reply_read=any(line.startswith("S: 250 2.0.0 Ok: queued as") for line in lines),
        used_pipelining=any(line == "S: 250-PIPELINING" for line in lines),
        server_ended=server.active_sessions == 0,
    )


@cache
def io_calls(mode: str) -> int:
    """How many stream calls an uncancelled session makes (counted on asyncio)."""
    outcome = anyio.run(run_session, mode, None)
    assert outcome.sent
    return outcome.calls


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cancel_at" in metafunc.fixturenames:
        cases = [
            pytest.param(mode, k, id=f"{mode}-{k:02d}-of-{io_calls(mode)}")
            for mode in MODES
            for k in range(1, io_calls(mode) + 1)
        ]
        metafunc.parametrize(("mode", "cancel_at"), cases)


@pytest.mark.parametrize("mode", MODES)
async def test_an_uncancelled_session_makes_the_counted_calls(mode: str) -> None:
    with resource_warnings() as leaks:
        outcome = await run_session(mode, None)
    assert leaks == []
    assert outcome.calls == io_calls(mode)  # the same on every backend
    assert outcome.reached == outcome.calls
    assert not outcome.cancelled
    assert outcome.sent
    assert outcome.quit_code == 221
    assert outcome.messages == 1
    assert outcome.used_pipelining == (mode == "pipelined")
    assert outcome.stream_closed
    assert outcome.server_ended


async def test_cancellation_at_every_checkpoint(mode: str, cancel_at: int) -> None:
    with resource_warnings() as leaks:
        outcome = await run_session(mode, cancel_at)
    assert leaks == []
    assert outcome.cancelled
    # Not one call reached the stream from the cancellation on.
    assert outcome.reached == cancel_at - 1
    assert outcome.stream_closed
    assert outcome.server_ended
    if outcome.connected:
        assert outcome.client_closed
        assert outcome.later_call_refused
    # Cancelled before QUIT's reply was read, so QUIT never returned.
    assert outcome.quit_code is None
    # The client's view agrees with the server's.
    assert outcome.messages <= 1
    assert outcome.sent == outcome.final_reply_read
    if outcome.sent:
        assert outcome.messages == 1
    if outcome.messages:
        # The server can have the message without the client knowing (the
        # cancellation came after the data, before the verdict), never the
        # other way round, and never before the data was written.
        assert outcome.data_written

    # A new session works.
    fresh = await run_session(mode, None)
    assert fresh.sent
    assert fresh.quit_code == 221
    assert fresh.messages == 1


def test_the_resource_warning_check_sees_an_unclosed_stream() -> None:
    def leak() -> None:
        memory_stream_pair()

    with resource_warnings() as leaks:
        leak()
    assert leaks
    assert all("Unclosed" in leak for leak in leaks)

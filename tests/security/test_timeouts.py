"""Timeouts per phase (RFC 5321 §4.5.3.2): defaults, validation, and each limit on its own wait.

A caller can give one number for every wait or set each phase apart: the
connection and TLS handshakes, the greeting, other commands, MAIL, RCPT, the
354 to DATA, each block of message data, and the verdict after the end of the
data.  Limits are on inactivity: one reply, or one block written, at a time,
never the whole transfer.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import fields

import anyio
import pytest

import anyio_smtp
from anyio_smtp import (
    DEFAULT_TIMEOUT,
    InvalidArgumentError,
    SMTPTimeoutError,
    Timeouts,
)
from anyio_smtp._protocol.commands import (
    Auth,
    Data,
    Ehlo,
    EndOfData,
    Greeting,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTLS,
)
from anyio_smtp._timeouts import DEFAULT_TIMEOUTS
from anyio_smtp._transport import WRITE_CHUNK
from anyio_smtp.testing import memory_stream_pair
from tests.client.scripted import BASIC_EHLO, Peer
from tests.client.test_failures import BOB, CLIENT, QUEUED, SENDER
from tests.client.test_starttls import STARTTLS_EHLO
from tests.security.helpers import SERVER_NAME, client_tls, paced_scripted, server_tls

#: The RFC 5321 §4.5.3.2 phases, plus connecting and TLS handshakes.
PHASES = (
    "connect",
    "greeting",
    "command",
    "mail",
    "rcpt",
    "data_initiation",
    "data_block",
    "data_termination",
)
SHORT = 0.15
LONG = 5.0
#: How late a slow (but not dead) server is: longer than SHORT, far below LONG.
SLOW = 0.25
MARGIN = 2.0
#: A message of several write blocks.
LINE = b"0123456789" * 7 + b"\r\n"
BODY = b"Subject: slow\r\n\r\n" + LINE * (3 * WRITE_CHUNK // len(LINE))
AFTER_TLS = ("250-mx.test", "250 8BITMIME")


def test_the_phases() -> None:
    assert tuple(field.name for field in fields(Timeouts)) == PHASES


def test_documented_defaults() -> None:
    defaults = Timeouts()
    assert DEFAULT_TIMEOUT == 60
    for phase in PHASES[:-1]:
        assert getattr(defaults, phase) == DEFAULT_TIMEOUT
    # RFC 5321 §4.5.3.2.6: "10 minutes", so a slow server's checks can finish.
    assert defaults.data_termination == 600
    assert defaults == DEFAULT_TIMEOUTS
    for function in (anyio_smtp.connect, anyio_smtp.connect_starttls, anyio_smtp.connect_stream):
        assert inspect.signature(function).parameters["timeout"].default == defaults


def test_one_number_for_every_wait() -> None:
    for seconds in (2.5, 30, None):
        uniform = Timeouts.uniform(seconds)
        assert all(getattr(uniform, phase) == seconds for phase in PHASES)
        assert Timeouts.of(seconds) == uniform
    custom = Timeouts(mail=7)
    assert Timeouts.of(custom) is custom
    changed = custom.replace(rcpt=8, data_termination=None)
    assert (changed.mail, changed.rcpt, changed.data_termination) == (7, 8, None)
    assert changed.greeting == DEFAULT_TIMEOUT


@pytest.mark.parametrize("bad", [0, -1, -0.5, True, "5", math.nan, [1]], ids=repr)
@pytest.mark.parametrize("phase", PHASES)
def test_a_bad_limit_is_refused(phase: str, bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match=phase) as caught:
        Timeouts(**{phase: bad})  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    with pytest.raises(InvalidArgumentError, match=phase):
        Timeouts().replace(**{phase: bad})  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -3, True, "30", math.nan, [30]], ids=repr)
def test_a_bad_timeout_argument_is_refused_before_connecting(bad: object) -> None:
    with pytest.raises(InvalidArgumentError):
        Timeouts.of(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        anyio_smtp.connect("127.0.0.1", 25, timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        anyio_smtp.connect_starttls("127.0.0.1", 587, timeout=bad)  # type: ignore[arg-type]


async def test_a_bad_timeout_leaves_the_stream_untouched() -> None:
    client_end, server_end = memory_stream_pair()
    with pytest.raises(InvalidArgumentError):
        anyio_smtp.connect_stream(client_end, timeout=-1)
    assert client_end.sent == b""
    assert not client_end.closed
    await client_end.aclose()
    await server_end.aclose()


def test_each_reply_is_bounded_by_its_phase() -> None:
    timeouts = Timeouts(**{phase: float(n) for n, phase in enumerate(PHASES, start=1)})
    phase_of = {
        Greeting(): "greeting",
        Ehlo(CLIENT): "command",
        StartTLS(): "command",
        Auth("PLAIN", b"x"): "command",
        Mail(SENDER): "mail",
        Rcpt(BOB): "rcpt",
        Data(): "data_initiation",
        EndOfData(): "data_termination",
        Rset(): "command",
        Noop(): "command",
        Quit(): "command",
    }
    for command, phase in phase_of.items():
        assert timeouts.for_reply(command) == getattr(timeouts, phase), command


# -- each limit on its own wait --------------------------------------------------------


async def slow_session(peer: Peer, slow_phase: str) -> None:
    """A full lock-step session with STARTTLS, late by SLOW in ``slow_phase`` only."""

    async def late(phase: str) -> None:
        if phase == slow_phase:
            await anyio.sleep(SLOW)  # the simulated slow server

    await late("greeting")
    await peer.send("220 mx.test ESMTP")
    await peer.lone("EHLO ")
    await late("command")
    await peer.send(*STARTTLS_EHLO)
    await peer.lone("STARTTLS")
    await peer.send("220 2.0.0 Ready")
    await late("connect")
    await peer.start_tls(server_tls())
    await peer.lone("EHLO ")
    await peer.send(*AFTER_TLS)
    for command, reply, phase in (
        ("MAIL FROM:", "250 2.1.0 Ok", "mail"),
        ("RCPT TO:", "250 2.1.5 Ok", "rcpt"),
        ("DATA", "354 go ahead", "data_initiation"),
    ):
        await peer.lone(command)
        await late(phase)
        await peer.send(reply)
    await late("data_block")  # the client's writes wait for this reader
    assert await peer.data() == BODY + b".\r\n"
    await late("data_termination")
    await peer.send(QUEUED)
    await peer.quit()


@pytest.mark.parametrize("phase", PHASES)
async def test_a_slow_phase_is_bounded_by_its_own_limit_only(phase: str) -> None:
    # Every limit is short but this one: a wait bounded by any other limit
    # would time out.
    timeouts = Timeouts.uniform(SHORT).replace(**{phase: LONG})
    async with paced_scripted(lambda peer: slow_session(peer, phase)) as stream:
        start = anyio.current_time()
        smtp = await anyio_smtp.connect_stream(
            stream, ehlo_domain=CLIENT, tls_hostname=SERVER_NAME, timeout=timeouts
        )
        await smtp.starttls(ssl_context=client_tls())
        result = await smtp.send_mail(SENDER, [BOB], BODY)
        await smtp.quit()
        elapsed = anyio.current_time() - start
    assert result.queue_id == "4ABC123XYZ"
    assert SLOW <= elapsed < SLOW + MARGIN


async def test_the_mail_limit_fires_while_a_slow_greeting_within_its_limit_does_not() -> None:
    async def server(peer: Peer) -> None:
        await anyio.sleep(SLOW)  # a slow greeting: the greeting limit is the default
        await peer.greet(BASIC_EHLO)
        await peer.lone("MAIL FROM:")
        assert await peer.rest() == b""  # no reply ever; nothing more from the client

    async with paced_scripted(server) as stream:
        start = anyio.current_time()
        smtp = await anyio_smtp.connect_stream(
            stream, ehlo_domain=CLIENT, timeout=Timeouts(mail=SHORT)
        )
        assert anyio.current_time() - start >= SLOW
        with pytest.raises(SMTPTimeoutError) as caught:
            await smtp.send_mail(SENDER, [BOB], BODY)
        elapsed = anyio.current_time() - start
        assert smtp.closed
    assert "MAIL FROM" in str(caught.value)
    assert f"{SHORT:g} s" in str(caught.value)
    assert SLOW + SHORT <= elapsed < SLOW + SHORT + MARGIN


# -- message data: per block, not per message ------------------------------------------

PACE = 0.05
BLOCKS = 12
LARGE = b"Subject: large\r\n\r\n" + LINE * (BLOCKS * WRITE_CHUNK // len(LINE))


async def read_steadily(peer: Peer, stop: anyio.Event | None = None) -> bytes:
    """Read the message data one block at a time, PACE apart.

    With ``stop``, read two blocks only, then nothing until ``stop`` is set.
    """
    received = 0
    while not peer.buffer.endswith(b"\r\n.\r\n"):
        if stop is not None and received == 2:
            await stop.wait()
            return b""
        await anyio.sleep(PACE)  # the simulated slow reader
        peer.buffer += await peer.stream.receive()
        received += 1
    data, peer.buffer = peer.buffer, b""
    return data


async def test_the_data_block_limit_is_per_block_not_per_message() -> None:
    limit = 0.3

    async def server(peer: Peer) -> None:
        await peer.greet(BASIC_EHLO)
        for command, reply in (("MAIL", "250 Ok"), ("RCPT", "250 Ok"), ("DATA", "354 go")):
            await peer.lone(command)
            await peer.send(reply)
        assert await read_steadily(peer) == LARGE + b".\r\n"
        await peer.send(QUEUED)
        await peer.quit()

    timeouts = Timeouts.uniform(LONG).replace(data_block=limit)
    async with paced_scripted(server) as stream:
        smtp = await anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, timeout=timeouts)
        start = anyio.current_time()
        result = await smtp.send_mail(SENDER, [BOB], LARGE)
        elapsed = anyio.current_time() - start
        await smtp.quit()
    assert result.queue_id == "4ABC123XYZ"
    # The whole message took well over the limit; no single block did.
    assert elapsed > 1.5 * limit


async def test_the_data_block_limit_fires_when_the_server_stops_reading() -> None:
    stop = anyio.Event()

    async def server(peer: Peer) -> None:
        await peer.greet(BASIC_EHLO)
        for command, reply in (("MAIL", "250 Ok"), ("RCPT", "250 Ok"), ("DATA", "354 go")):
            await peer.lone(command)
            await peer.send(reply)
        await read_steadily(peer, stop)

    timeouts = Timeouts.uniform(LONG).replace(data_block=SHORT)
    async with paced_scripted(server) as stream:
        smtp = await anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, timeout=timeouts)
        start = anyio.current_time()
        try:
            with pytest.raises(SMTPTimeoutError) as caught:
                await smtp.send_mail(SENDER, [BOB], LARGE)
        finally:
            stop.set()
        elapsed = anyio.current_time() - start
        assert smtp.closed
    assert "sending the message data" in str(caught.value)
    assert SHORT <= elapsed < 2 * PACE + SHORT + MARGIN


# -- the verdict after BDAT LAST -------------------------------------------------------


async def test_the_verdict_after_bdat_last_waits_for_data_termination() -> None:
    # With CHUNKING the reply to BDAT LAST is the verdict on the message
    # (RFC 3030 §2), like the reply to the end of DATA: a slow server's checks
    # are bounded by data_termination, not by the limit for other commands.
    async def server(peer: Peer) -> None:
        await peer.greet(("250-mx.test", "250-CHUNKING", "250 8BITMIME"))
        for command, reply in (("MAIL", "250 Ok"), ("RCPT", "250 Ok")):
            await peer.lone(command)
            await peer.send(reply)
        line = await peer.expect("BDAT ")
        size = int(line.split()[1])
        assert line.endswith(" LAST")
        while len(peer.buffer) < size:
            peer.buffer += await peer.stream.receive()
        assert peer.buffer == BODY
        peer.buffer = b""
        await anyio.sleep(SLOW)  # the slow server's checks
        await peer.send(QUEUED)
        await peer.quit()

    timeouts = Timeouts.uniform(SHORT).replace(data_termination=LONG)
    async with paced_scripted(server) as stream:
        smtp = await anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, timeout=timeouts)
        result = await smtp.send_mail(SENDER, [BOB], BODY, transfer="bdat")
        await smtp.quit()
    assert result.queue_id == "4ABC123XYZ"

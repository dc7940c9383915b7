"""The fault matrix: a server that fails at every point of a full session.

The session -- greeting, EHLO, STARTTLS, the TLS handshake, EHLO again, AUTH,
MAIL, two RCPTs, DATA, the message data, the final reply and QUIT -- is
written down once as the server's steps, in a lock-step and a PIPELINING
variant.  Every point is generated from that list: for each reply the server
hangs up before it, hangs up half way through it, stalls, or answers 421
instead; for the handshake and the message data it hangs up before, hangs
up in the middle, or stalls.  Each point is a test, on asyncio and on trio,
over a paced in-memory connection (a writer waits for its reader, as on a
socket) so that stalls and cuts land exactly where they are meant to.

For every point the client must raise the right typed error in time, report
the message sent only after a 2xx final reply, say ``DeliveryUnknownError``
when the verdict on a fully sent message is lost, close the session and the
stream, and send nothing after the fault.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Literal

import anyio
import pytest

import anyio_smtp
from anyio_smtp import (
    DeliveryUnknownError,
    Reply,
    SendResult,
    ServerDisconnectedError,
    ServiceUnavailableError,
    SessionClosedError,
    SMTPClient,
    SMTPError,
    SMTPTimeoutError,
    Timeouts,
    TLSError,
)
from anyio_smtp._transport import WRITE_CHUNK
from anyio_smtp.testing import MemoryByteStream
from tests.client.scripted import Peer
from tests.client.test_failures import (
    BOB,
    CAROL,
    CLIENT,
    CLOSING,
    MAIL,
    QUEUED,
    RCPT_BOB,
    RCPT_CAROL,
    SENDER,
)
from tests.client.test_starttls import AFTER_TLS_EHLO, STARTTLS_EHLO
from tests.security.helpers import (
    PASSWORD,
    SERVER_NAME,
    USERNAME,
    client_tls,
    paced_scripted,
    server_tls,
)

#: The limit of the one phase a stall is in (every other phase gets GENEROUS).
STALL = 0.15
GENEROUS = 10.0
#: How much longer than its limit a failure may take to surface.
MARGIN = 2.0

PIPELINED_AFTER_TLS = ("250-mx.test", "250-PIPELINING", "250-AUTH PLAIN", "250 ENHANCEDSTATUSCODES")
AUTH_LINE = "AUTH PLAIN " + base64.b64encode(f"\0{USERNAME}\0{PASSWORD}".encode()).decode()
#: A message of several write blocks, so the data can be cut in its middle.
BODY = b"Subject: fault matrix\r\n\r\n" + b"0123456789" * 7 + b"\r\n"
BODY += BODY[-72:] * (5 * WRITE_CHUNK // 72)
ENCODED = BODY + b".\r\n"

Kind = Literal["reply", "handshake", "body"]
FAULTS: dict[Kind, tuple[str, ...]] = {
    "reply": ("close", "mid", "stall", "421"),
    "handshake": ("close", "mid", "stall"),
    "body": ("close", "mid", "stall"),
}


@dataclass(frozen=True)
class Step:
    """One step of the server's side of the session.

    :ivar phase: the ``Timeouts`` field that bounds the client's wait here
    :ivar waits_for: how the client names this wait (the command a reply answers)
    :ivar reads: the command lines the server reads before answering
    :ivar reply: the reply lines
    """

    name: str
    kind: Kind
    phase: str
    waits_for: str
    reads: tuple[str, ...] = ()
    reply: tuple[str, ...] = ()


def session_steps(*, pipelined: bool) -> list[Step]:
    """The server's side of a full session, step by step."""
    ehlo = f"EHLO {CLIENT}"
    steps = [
        Step("greeting", "reply", "greeting", "greeting", (), ("220 mx.test ESMTP",)),
        Step("EHLO", "reply", "command", "EHLO", (ehlo,), STARTTLS_EHLO),
        Step("STARTTLS", "reply", "command", "STARTTLS", ("STARTTLS",), ("220 2.0.0 Ready",)),
        Step("TLS-handshake", "handshake", "connect", "TLS handshake"),
        Step(
            "EHLO-after-TLS",
            "reply",
            "command",
            "EHLO",
            (ehlo,),
            PIPELINED_AFTER_TLS if pipelined else AFTER_TLS_EHLO,
        ),
        Step("AUTH", "reply", "command", "AUTH", (AUTH_LINE,), ("235 2.7.0 Authenticated",)),
    ]
    envelope = (MAIL, RCPT_BOB, RCPT_CAROL, "DATA")
    transaction = (
        ("MAIL", "mail", "MAIL FROM", "250 2.1.0 Ok"),
        ("RCPT-bob", "rcpt", "RCPT TO", "250 2.1.5 Ok"),
        ("RCPT-carol", "rcpt", "RCPT TO", "250 2.1.5 Ok"),
        ("DATA", "data_initiation", "DATA", "354 End data with <CR><LF>.<CR><LF>"),
    )
    for position, (name, phase, waits_for, reply) in enumerate(transaction):
        # Pipelined, the whole group arrives at once; its replies go back one by one.
        reads: tuple[str, ...] = (envelope[position],)
        if pipelined:
            reads = envelope if position == 0 else ()
        steps.append(Step(name, "reply", phase, waits_for, reads, (reply,)))
    steps += [
        Step("message-data", "body", "data_block", "sending the message data"),
        Step("final-reply", "reply", "data_termination", "end of data", (), (QUEUED,)),
        Step("QUIT", "reply", "command", "QUIT", ("QUIT",), ("221 2.0.0 Bye",)),
    ]
    return steps


VARIANTS = {"lock-step": session_steps(pipelined=False), "pipelined": session_steps(pipelined=True)}
FINAL = next(i for i, step in enumerate(VARIANTS["lock-step"]) if step.name == "final-reply")


def fault_points() -> list[pytest.ParameterSet]:
    """Every (variant, step, fault), plus each variant run to completion.

    The pipelined variant starts where it first differs from the lock-step one.
    """
    lock_step, pipelined = VARIANTS["lock-step"], VARIANTS["pipelined"]
    first_difference = next(
        i for i, (a, b) in enumerate(zip(lock_step, pipelined, strict=True)) if a != b
    )
    points = []
    for variant, steps in VARIANTS.items():
        start = 0 if variant == "lock-step" else first_difference
        for index in range(start, len(steps)):
            step = steps[index]
            for fault in FAULTS[step.kind]:
                point_id = f"{variant}-{index:02d}-{step.name}-{fault}"
                points.append(pytest.param(variant, index, fault, id=point_id))
        points.append(pytest.param(variant, len(steps), "none", id=f"{variant}-complete"))
    return points


# -- the server ------------------------------------------------------------------------


async def perform(peer: Peer, step: Step) -> None:
    """Do a step the way a good server does."""
    if step.kind == "handshake":
        await peer.start_tls(server_tls())
    elif step.kind == "body":
        assert await peer.data() == ENCODED
    else:
        for line in step.reads:
            assert await peer.line() == line
        assert peer.buffer == b"", "the client sent more before this reply"
        await peer.send(*step.reply)


async def misbehave(peer: Peer, step: Step, fault: str, released: anyio.Event) -> None:
    """Do a step wrong; returning closes the connection."""
    if step.kind == "reply":
        for line in step.reads:
            assert await peer.line() == line
        if fault == "mid":
            reply = "".join(f"{line}\r\n" for line in step.reply).encode()
            await peer.send_raw(reply[: len(reply) // 2])
        elif fault == "421":
            await peer.send(CLOSING)
            assert await peer.rest() == b""  # no command after a 421
        elif fault == "stall":
            await released.wait()
            assert await peer.rest() == b""  # no RSET or QUIT after a timeout
    elif fault == "mid":
        # The ClientHello or the first block of the message data.
        await peer.stream.receive()
        if step.kind == "handshake":
            await peer.send_raw(b"\x16\x03\x03\x00")  # half a TLS record header
    elif fault == "stall":
        await released.wait()  # read nothing more, so the client's writes stall


# -- the client ------------------------------------------------------------------------


@dataclass
class Run:
    client: SMTPClient | None = None
    result: SendResult | None = None
    quit_reply: Reply | None = None
    error: Exception | None = None
    elapsed: float = 0.0


async def full_session(stream: MemoryByteStream, run: Run, timeouts: Timeouts) -> None:
    smtp = await anyio_smtp.connect_stream(
        stream, ehlo_domain=CLIENT, tls_hostname=SERVER_NAME, timeout=timeouts
    )
    run.client = smtp
    await smtp.starttls(ssl_context=client_tls())
    await smtp.login(USERNAME, PASSWORD)
    run.result = await smtp.send_mail(SENDER, [BOB, CAROL], BODY)
    run.quit_reply = await smtp.quit()


def expected_error(step: Step | None, fault: str) -> type[SMTPError] | None:
    if step is None:
        return None
    if fault == "421":
        # A 421 answering QUIT is just the end of the session.
        return None if step.name == "QUIT" else ServiceUnavailableError
    if step.name == "final-reply":
        return DeliveryUnknownError
    if fault == "stall":
        return SMTPTimeoutError
    if step.kind == "handshake":
        return TLSError
    return ServerDisconnectedError


def check_error(error: Exception | None, step: Step | None, fault: str) -> None:
    expected = expected_error(step, fault)
    if expected is None:
        assert error is None, repr(error)
        return
    assert step is not None
    assert type(error) is expected, f"expected {expected.__name__}, got {error!r}"
    if isinstance(error, DeliveryUnknownError):
        # RFC 1047: the message may have been delivered; do not blindly resend.
        assert not isinstance(error, ConnectionError)
        assert not error.is_transient
        assert error.recipients == (BOB, CAROL)
        assert "may or may not have been delivered" in str(error)
        cause = SMTPTimeoutError if fault == "stall" else ServerDisconnectedError
        assert type(error.__cause__) is cause
        if fault == "stall":
            assert "end of data" in str(error.__cause__)
    elif isinstance(error, ServiceUnavailableError):
        assert error.reply.code == 421
        assert error.command == step.waits_for
        assert "Service shutting down" in str(error)
        assert "Service shutting down" in error.reply.message
    elif isinstance(error, SMTPTimeoutError):
        assert step.waits_for in str(error)
        assert f"{STALL:g} s" in str(error)


@pytest.mark.parametrize(("variant", "index", "fault"), fault_points())
async def test_fault_at_every_point_of_a_full_session(variant: str, index: int, fault: str) -> None:
    steps = VARIANTS[variant]
    step = steps[index] if index < len(steps) else None
    timeouts = Timeouts.uniform(GENEROUS)
    if fault == "stall":
        assert step is not None
        timeouts = timeouts.replace(**{step.phase: STALL})
    released = anyio.Event()

    async def server(peer: Peer) -> None:
        for good in steps[:index]:
            await perform(peer, good)
        if step is not None:
            await misbehave(peer, step, fault, released)
        else:
            assert await peer.rest() == b""

    run = Run()
    async with paced_scripted(server) as stream:
        start = anyio.current_time()
        try:
            await full_session(stream, run, timeouts)
        except Exception as exc:
            run.error = exc
        finally:
            run.elapsed = anyio.current_time() - start
            released.set()
        assert stream.closed

    check_error(run.error, step, fault)
    # In time: the limit of the stalled phase, or no limit at all.
    limit = STALL if fault == "stall" else 0.0
    assert limit <= run.elapsed < limit + MARGIN
    # A message is sent only once its 2xx final reply arrived.
    assert (run.result is not None) == (index > FINAL)
    if run.result is not None:
        assert run.result.reply.code == 250
        assert run.result.queue_id == "4ABC123XYZ"
        assert run.result.accepted == (BOB, CAROL)
    if step is None:
        assert run.quit_reply is not None
        assert run.quit_reply.code == 221
    elif step.name == "QUIT" and fault == "421":
        assert run.quit_reply is not None
        assert run.quit_reply.code == 421
        assert "Service shutting down" in run.quit_reply.message
    # The client object exists once the greeting and EHLO went through.
    assert (run.client is not None) == (index > 1)
    if run.client is not None:
        smtp = run.client
        assert smtp.closed
        with pytest.raises(SessionClosedError):
            await smtp.noop()
        with pytest.raises(SessionClosedError):
            await smtp.send_mail(SENDER, [BOB], b"Subject: again\r\n\r\nagain\r\n")
        await smtp.aclose()


def test_the_matrix_covers_every_step_and_fault() -> None:
    points = fault_points()
    for variant, steps in VARIANTS.items():
        ids = {p.id for p in points if p.values[0] == variant}
        assert f"{variant}-complete" in ids
        for index, step in enumerate(steps):
            covered = {
                f for f in FAULTS[step.kind] if f"{variant}-{index:02d}-{step.name}-{f}" in ids
            }
            # The pipelined variant shares the steps before its first difference.
            assert covered in (set(FAULTS[step.kind]), set()), (variant, step.name)
            if variant == "lock-step" or step.name in ("MAIL", "DATA", "final-reply"):
                assert covered == set(FAULTS[step.kind])
    assert [s.name for s in VARIANTS["lock-step"]] == [
        "greeting",
        "EHLO",
        "STARTTLS",
        "TLS-handshake",
        "EHLO-after-TLS",
        "AUTH",
        "MAIL",
        "RCPT-bob",
        "RCPT-carol",
        "DATA",
        "message-data",
        "final-reply",
        "QUIT",
    ]
    assert len(BODY) > 4 * WRITE_CHUNK

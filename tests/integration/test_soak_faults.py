"""SMTPPool through a seeded fault proxy to a real Postfix, checked against the Maildir.

Connections from the pool go through ``tests/faultproxy.py`` to Postfix's submission
port (STARTTLS required, AUTH SCRAM-SHA-256), and 30 % of them (planned; fewer fire,
as a connection may end first) are cut, stalled or blackholed somewhere: in the
handshake, inside commands, inside message data, right after a complete client
write.  Afterwards every message's copies in the Maildir must match what the pool
reported (see ``soak.py``): a ``SendResult`` is exactly one copy, a
``DeliveryUnknownError`` at most one, any other ``SMTPError`` none, and no message is
ever delivered twice.  A phase that hangs is cut off by its bound and reported with
what was still open.

The tests: a sanity run without faults (every message exactly once); the send_many
soak (300 messages in 3 rounds of a new pool each, two plans per backend); send_mail
from 20 tasks (100 messages); ten cuts inside the TLS handshake; cancelling a
send_mail mid-way; and two controls of the harness itself (the Maildir check flags
each kind of violation; a hang becomes a reported failure).

The seed is ``SOAK_SEED`` from the environment (default below, a different plan per
backend); the summary line of each run is printed.  The soak runs on a Postfix
instance of its own, so no other test's messages are in its Maildir.  Against a
healthy library the file takes about a minute for both backends on 2 cores; a hang
costs up to ``PHASE_BOUND`` per phase.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import anyio
import pytest

from anyio_smtp import (
    DeliveryUnknownError,
    Reply,
    SendResult,
    ServerDisconnectedError,
    SMTPClient,
)

from ..faultproxy import Fault, FaultKind, FaultProxy, spans_for
from .servers.postfix import DeliveredMessage, PostfixFactory, PostfixInstance
from .soak import (
    ALICE,
    MAX_CONNECTIONS,
    RECIPIENT,
    REPLY_TIMEOUT,
    SoakRun,
    Transfer,
    Verdict,
    check_closed,
    delivered_copies,
    factory,
    failure_report,
    judge,
    make_messages,
    new_pool,
    soak_rounds,
    soak_send_mail,
    soak_send_many,
    summary,
)

SEED = int(os.environ.get("SOAK_SEED", "20250601"))
FAULT_RATE = 0.3
#: How long a stalled or blackholed connection stays open at most (the client's reply
#: timeout ends it first).
STALL_LIMIT = 2 * REPLY_TIMEOUT
#: Bounds of one phase, and of a whole test (pool and proxy closing included).
PHASE_BOUND = 60.0
TEST_BOUND = 240.0
#: The send_many soak's 300 messages go in this many rounds, each on a new pool (about
#: 13 messages per connection, 30 connections, 7-10 faults fired per run).
ROUNDS = 3
#: Cuts at the start of the TLS handshake, in its middle and near its end, each way
#: (the client's ClientHello is about 520 bytes, the server's first flight about 1.6 KiB).
HANDSHAKE_PLAN = tuple(
    Fault(FaultKind.HANDSHAKE_CUT, after, direction)
    for after in (0, 5, 60, 200, 390)
    for direction in ("c2s", "s2c")
)


@pytest.fixture(scope="module")
def soak_postfix(postfix_factory: PostfixFactory) -> PostfixInstance:
    """A Postfix + Dovecot for this module alone (stopped with the session's others)."""
    return postfix_factory()


def backend_seed(anyio_backend: str) -> int:
    return SEED + (0 if anyio_backend == "asyncio" else 1)


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


async def verify(
    postfix: PostfixInstance,
    run_id: str,
    run: SoakRun,
    proxy: FaultProxy,
    label: str,
    capsys: pytest.CaptureFixture[str],
) -> Verdict:
    """Judge the run against the Maildir, print the summary, fail on any violation."""
    verdict = judge(run, await delivered_copies(postfix, run_id))
    line = summary(label, run, verdict, proxy)
    with capsys.disabled():
        print(f"\n{line}")
    assert not verdict.violations, f"{line}\n{failure_report(verdict, proxy)}"
    return verdict


async def test_without_faults_every_message_arrives_exactly_once(
    soak_postfix: PostfixInstance, anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The harness itself: at fault rate 0 every message is a SendResult and one copy."""
    run_id = new_run_id()
    messages = make_messages(run_id, 60, ("auto", "data"), seed=1)
    run = SoakRun()
    sessions: list[SMTPClient] = []
    async with FaultProxy(soak_postfix.submission_port, fault_rate=0.0) as proxy:
        with anyio.fail_after(TEST_BOUND):
            async with new_pool(factory(soak_postfix, proxy.port, opened=sessions)) as pool:
                await soak_send_many(pool, proxy, messages[:40], run, PHASE_BOUND)
                await soak_send_mail(pool, proxy, messages[40:], run, PHASE_BOUND, tasks=5)
            run.connections_opened = pool.connections_opened
            await check_closed(proxy, run)
    verdict = await verify(soak_postfix, run_id, run, proxy, f"no faults/{anyio_backend}", capsys)
    assert dict(verdict.outcome_counts) == {"SendResult": len(messages)}
    assert sorted(verdict.copies.values()) == [1] * len(messages)
    assert verdict.queue_ids_checked == len(messages), "the queue id check did not run"
    assert all(connection.fired is None for connection in proxy.connections)
    # Both transfers were used: "auto" is BDAT here, as Postfix offers CHUNKING.
    assert {message.transfer for message in messages} == {"auto", "data"}
    assert all("CHUNKING" in session.capabilities for session in sessions)


@pytest.mark.parametrize("plan", [0, 1])
async def test_soak_send_many_through_faults(
    soak_postfix: PostfixInstance,
    anyio_backend: str,
    plan: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """300 messages by send_many, half "auto" (BDAT), half "data", through the faults.

    Two plans (seeds) per backend: a fault hits a pipeline at a place a plan decides,
    and scheduling decides much of the rest, so one plan alone misses too often.
    """
    run_id = new_run_id()
    seed = backend_seed(anyio_backend) + 100 * plan
    messages = make_messages(run_id, 300, ("auto", "data") * ROUNDS, seed=seed)
    run = SoakRun()
    async with FaultProxy(
        soak_postfix.submission_port,
        seed=seed,
        fault_rate=FAULT_RATE,
        spans=spans_for(len(messages) // ROUNDS // MAX_CONNECTIONS),
        stall_limit=STALL_LIMIT,
    ) as proxy:
        with anyio.fail_after(TEST_BOUND):
            await soak_rounds(soak_postfix, proxy, messages, run, rounds=ROUNDS, bound=PHASE_BOUND)
            await check_closed(proxy, run)
    label = f"send_many/{anyio_backend} seed {seed}"
    await verify(soak_postfix, run_id, run, proxy, label, capsys)
    assert sum(fired for _, fired in proxy.fault_counts().values()) >= 3, proxy.summary()


async def test_cuts_in_the_tls_handshake(
    soak_postfix: PostfixInstance, anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first ten connections are cut inside STARTTLS's handshake, then none."""
    run_id = new_run_id()
    messages = make_messages(run_id, 40, ("auto", "data"), seed=5)
    run = SoakRun()
    async with FaultProxy(
        soak_postfix.submission_port, fault_rate=0.0, plan=HANDSHAKE_PLAN
    ) as proxy:
        with anyio.fail_after(TEST_BOUND):
            async with new_pool(factory(soak_postfix, proxy.port)) as pool:
                await soak_send_many(pool, proxy, messages, run, PHASE_BOUND)
            run.connections_opened = pool.connections_opened
            await check_closed(proxy, run)
    await verify(soak_postfix, run_id, run, proxy, f"handshake/{anyio_backend}", capsys)
    fired = [c.fired for c in proxy.connections[: len(HANDSHAKE_PLAN)]]
    assert all(where is not None and "TLS handshake" in where for where in fired), fired


async def test_soak_send_mail_from_20_tasks_through_faults(
    soak_postfix: PostfixInstance, anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """100 messages by pool.send_mail from 20 tasks at once, through the faults.

    Two rounds of 50 messages, each on a new pool; the tasks' messages alternate
    between "auto" and "data".
    """
    run_id = new_run_id()
    seed = backend_seed(anyio_backend) + 1000
    messages = make_messages(run_id, 100, ("auto", "data"), seed=seed)
    mixed = [m for pair in zip(messages[:50], messages[50:], strict=True) for m in pair]
    run = SoakRun()
    async with FaultProxy(
        soak_postfix.submission_port,
        seed=seed,
        fault_rate=FAULT_RATE,
        spans=spans_for(50 // MAX_CONNECTIONS),
        stall_limit=STALL_LIMIT,
    ) as proxy:
        with anyio.fail_after(TEST_BOUND):
            await soak_rounds(
                soak_postfix, proxy, mixed, run, rounds=2, bound=PHASE_BOUND, tasks=20
            )
            await check_closed(proxy, run)
    label = f"send_mail x20/{anyio_backend} seed {seed}"
    await verify(soak_postfix, run_id, run, proxy, label, capsys)
    assert sum(fired for _, fired in proxy.fault_counts().values()) >= 1, proxy.summary()


@pytest.mark.parametrize("transfer", ["auto", "data"])
@pytest.mark.parametrize("fault", [FaultKind.STALL, FaultKind.BLACKHOLE_S2C])
async def test_cancelling_send_mail_mid_way_leaves_the_pool_usable(
    soak_postfix: PostfixInstance,
    fault: FaultKind,
    transfer: Transfer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Cancel a send_mail while it waits for replies that never come.

    With ``stall`` nothing reaches Postfix after the cancel point; with
    ``blackhole_s2c`` the commands (and with BDAT the whole message) do, only the
    replies are lost.  Either way the cancelled message is in the Maildir at most
    once, the cancelled session is not used again, and the next send succeeds.
    """
    run_id = new_run_id()
    first, cancelled, following = make_messages(run_id, 3, (transfer,), seed=3)
    run = SoakRun(messages=[first, cancelled, following])
    async with FaultProxy(soak_postfix.submission_port, fault_rate=0.0) as proxy:
        with anyio.fail_after(TEST_BOUND):
            async with new_pool(factory(soak_postfix, proxy.port)) as pool:
                result = await pool.send_mail(
                    ALICE, [RECIPIENT], first.data, transfer=first.transfer
                )
                run.record(first, result)
                (connection,) = [c for c in proxy.connections if not c.closed.is_set()]
                connection.impose(fault)

                outcome: object = None
                with anyio.CancelScope() as scope:
                    async with anyio.create_task_group() as group:

                        async def cancel_once_waiting() -> None:
                            await connection.dropping.wait()
                            scope.cancel()

                        group.start_soon(cancel_once_waiting)
                        outcome = await pool.send_mail(
                            ALICE, [RECIPIENT], cancelled.data, transfer=cancelled.transfer
                        )
                        group.cancel_scope.cancel()
                assert scope.cancelled_caught, f"send_mail returned {outcome!r}, no reply came"
                read_at_cancel = connection.c2s_read

                # A reused stalled session would time out first, then retry: the byte
                # count below tells.
                with anyio.fail_after(REPLY_TIMEOUT * 3):
                    result = await pool.send_mail(
                        ALICE, [RECIPIENT], following.data, transfer=following.transfer
                    )
                run.record(following, result)
                reused = connection.c2s_read - read_at_cancel
            run.connections_opened = pool.connections_opened
            await check_closed(proxy, run)
    run.elapsed = 0.0
    verdict = await verify(
        soak_postfix, run_id, run, proxy, f"cancel {fault.value}/{transfer}", capsys
    )
    assert isinstance(result, SendResult)
    assert verdict.copies[first.soak_id] == 1
    assert verdict.copies[following.soak_id] == 1
    assert verdict.copies[cancelled.soak_id] <= 1
    # A QUIT (and a TLS alert) may still go out on the cancelled session; a message not.
    assert reused < 100, f"the cancelled session carried {reused} more bytes: it was reused"


def test_the_maildir_check_catches_every_kind_of_violation() -> None:
    """A negative control for ``judge``: made-up copies that break each rule are caught."""
    messages = make_messages("ctl", 8, ("auto",), seed=4)
    names = ("twice", "failed", "missing", "unknown", "misattributed", "corrupt", "lost", "ok")
    by_name = dict(zip(names, messages, strict=True))

    def copy(name: str, queue_id: str, body: bytes | None = None) -> DeliveredMessage:
        message = by_name[name]
        head, _, _ = message.data.partition(b"\r\n\r\n")
        data = (
            (
                f"Return-Path: <{ALICE}>\nDelivered-To: {RECIPIENT}\n"
                "Received: from [127.0.0.1] (unknown [127.0.0.1])\n"
                f"\tby mx.example.test (Postfix) with ESMTPSA id {queue_id}\n"
                f"\tfor <{RECIPIENT}>; Thu,  3 Dec 2026 23:44:28 +0000 (UTC)\n"
            ).encode()
            + head.replace(b"\r\n", b"\n")
            + b"\n\n"
            + (body or message.stored_body)
        )
        return DeliveredMessage(Path(name), data)

    def result(queue_id: str) -> SendResult:
        reply = Reply(250, (f"2.0.0 Ok: queued as {queue_id}",), "2.0.0")
        return SendResult(reply, (RECIPIENT,))

    lost = ServerDisconnectedError("lost")
    run = SoakRun(messages=list(messages))
    run.outcomes = {
        by_name["twice"].soak_id: result("AAAAAA1"),
        by_name["failed"].soak_id: lost,
        by_name["missing"].soak_id: result("AAAAAA3"),
        by_name["unknown"].soak_id: DeliveryUnknownError((RECIPIENT,), lost),
        by_name["misattributed"].soak_id: result("AAAAAA5"),
        by_name["corrupt"].soak_id: result("AAAAAA6"),
        by_name["ok"].soak_id: result("AAAAAA8"),
    }
    stored = {
        by_name["twice"].soak_id: [copy("twice", "AAAAAA1"), copy("twice", "BBBBBB1")],
        by_name["failed"].soak_id: [copy("failed", "AAAAAA2")],
        by_name["unknown"].soak_id: [copy("unknown", "AAAAAA4")],
        by_name["misattributed"].soak_id: [copy("misattributed", "CCCCCC5")],
        by_name["corrupt"].soak_id: [copy("corrupt", "AAAAAA6", b"other\n")],
        by_name["lost"].soak_id: [copy("lost", "AAAAAA7")],
        by_name["ok"].soak_id: [copy("ok", "AAAAAA8")],
        "ctl-99999": [copy("ok", "DDDDDD9")],
    }
    verdict = judge(run, stored)
    flagged = {violation.split(":", 1)[0] for violation in verdict.violations}
    # At most one copy is fine for DeliveryUnknownError, and for no outcome (whose own
    # violation, a hang or a stray exception, is recorded while sending).
    allowed = ("unknown", "lost", "ok")
    expected = {by_name[name].soak_id for name in names if name not in allowed}
    assert flagged == expected | {"ctl-99999"}, verdict.violations
    assert verdict.duplicates == [by_name["twice"].soak_id]
    assert verdict.outcome_counts["no outcome"] == 1


async def test_a_hang_becomes_a_reported_failure(anyio_backend: str) -> None:
    """A harness control: a pool that never gets a session is cut off and reported."""
    never = anyio.Event()

    async def open_never() -> SMTPClient:
        await never.wait()
        raise AssertionError("unreachable")

    messages = make_messages("hang", 5, ("auto",), seed=6)
    run = SoakRun()
    async with FaultProxy(1, fault_rate=0.0) as proxy:
        with anyio.fail_after(10):
            async with new_pool(open_never) as pool:
                await soak_send_many(pool, proxy, messages, run, bound=0.2)
    verdict = judge(run, {})
    assert len(run.hangs) == 1
    assert "5 messages without an outcome" in run.hangs[0]
    assert verdict.violations == [f"hang: {run.hangs[0]}"]
    assert verdict.outcome_counts["no outcome"] == 5

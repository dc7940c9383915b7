"""The fault soak of ``SMTPPool`` against Postfix, shared by the tests and benchmarks/soak.py.

Messages go from an ``SMTPPool`` through a ``FaultProxy`` (tests/faultproxy.py) to
Postfix's submission port (STARTTLS, then AUTH SCRAM-SHA-256), by ``send_many`` (half
``transfer="auto"``, which is BDAT with Postfix, half ``"data"``) and by ``send_mail``
from many tasks at once.  Every message carries a unique ``X-Soak-Id`` header.  Once
Postfix's queue is empty the Maildir is read and each message's copies are counted
against the outcome the pool reported:

* ``SendResult``: exactly one copy, with the queue id the result names;
* ``DeliveryUnknownError``: at most one copy;
* any other ``SMTPError``: no copy;
* no outcome at all (a hang, an exception that is no ``SMTPError``): a violation
  itself, and at most one copy;
* every copy's body byte for byte as sent; no id twice, ever.

A phase that does not finish within its bound is cancelled and reported (which
messages had no outcome, which proxied connections were still open) rather than left
hanging.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import anyio

import anyio_smtp
from anyio_smtp import DeliveryUnknownError, SendResult, SMTPClient, SMTPError, SMTPPool, Timeouts

from ..faultproxy import FaultProxy
from .servers.postfix import DeliveredMessage, PostfixInstance

ALICE = "alice@example.test"
RECIPIENT = "soak@example.test"
#: The reply timeouts of the soak's sessions: a stall ends after this long.
REPLY_TIMEOUT = 4.0
MAX_CONNECTIONS = 8
MAX_MESSAGES_PER_CONNECTION = 50
RETRIES = 2

Outcome = SendResult | SMTPError
Transfer = Literal["auto", "data", "bdat"]

_SOAK_ID = re.compile(rb"^X-Soak-Id: (\S+)$", re.MULTILINE)
# Postfix's own Received header: "... with ESMTPSA id 4XyZ...;" (the first one).
_RECEIVED_ID = re.compile(rb"^Received: .*?\n?\s*by \S+ \(Postfix\) with \S+ id (\w+)", re.M)


@dataclass(frozen=True)
class SoakMessage:
    soak_id: str
    transfer: Transfer
    data: bytes

    @property
    def stored_body(self) -> bytes:
        """The body as the Maildir keeps it (LF line endings)."""
        _, _, body = self.data.partition(b"\r\n\r\n")
        return body.replace(b"\r\n", b"\n")


def make_messages(
    run: str, count: int, transfers: Sequence[Transfer], seed: int
) -> list[SoakMessage]:
    """``count`` messages of a few hundred bytes to a few KiB.

    The transfers go in equal consecutive blocks, one per entry of ``transfers``.
    """
    rng = random.Random(seed)
    messages = []
    for index in range(count):
        soak_id = f"{run}-{index:05d}"
        transfer = transfers[index * len(transfers) // count]
        lines = [f"line {n} of {soak_id}: the quick brown fox" for n in range(rng.randint(4, 60))]
        lines.insert(rng.randrange(len(lines)), ".a line with a leading dot")
        lines.insert(rng.randrange(len(lines)), ".")
        data = (
            f"From: {ALICE}\r\nTo: {RECIPIENT}\r\nSubject: soak {soak_id}\r\n"
            f"X-Soak-Id: {soak_id}\r\n\r\n" + "\r\n".join(lines) + "\r\n"
        ).encode()
        messages.append(SoakMessage(soak_id, transfer, data))
    return messages


def factory(
    postfix: PostfixInstance,
    port: int,
    *,
    timeout: float = REPLY_TIMEOUT,
    opened: list[SMTPClient] | None = None,
) -> Callable[[], Awaitable[SMTPClient]]:
    """The pool's factory: STARTTLS to ``port`` (the proxy) and AUTH SCRAM-SHA-256.

    Each session it returns is also appended to ``opened``, when given.
    """
    context = postfix.client_ssl_context()
    password = postfix.users[ALICE]

    async def open_session() -> SMTPClient:
        client = await anyio_smtp.connect_starttls(
            postfix.host,
            port,
            ssl_context=context,
            tls_hostname="localhost",
            timeout=Timeouts.uniform(timeout),
        )
        try:
            await client.login(ALICE, password, mechanism="SCRAM-SHA-256")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await client.aclose()
            raise
        if opened is not None:
            opened.append(client)
        return client

    return open_session


def new_pool(open_session: Callable[[], Awaitable[SMTPClient]]) -> SMTPPool:
    return SMTPPool(
        open_session,
        max_connections=MAX_CONNECTIONS,
        max_messages_per_connection=MAX_MESSAGES_PER_CONNECTION,
        retries=RETRIES,
    )


@dataclass
class SoakRun:
    """What one soak phase (or several) reported, and what went wrong outside the rules."""

    messages: list[SoakMessage] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    #: Contract problems seen while sending: hangs, stray exceptions, extra outcomes.
    problems: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    #: Proxied connections the client still held open after the pool was closed.
    leaks: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    connections_opened: int = 0

    def record(self, message: SoakMessage, outcome: object) -> None:
        if message.soak_id in self.outcomes:
            self.problems.append(f"{message.soak_id}: a second outcome {outcome!r}")
            return
        if not isinstance(outcome, SendResult | SMTPError):
            self.problems.append(f"{message.soak_id}: outcome of type {type(outcome).__name__}")
            return
        self.outcomes[message.soak_id] = outcome


async def _send_many_phase(
    pool: SMTPPool, messages: list[SoakMessage], transfer: Transfer, run: SoakRun
) -> None:
    items = [(ALICE, RECIPIENT, message.data) for message in messages]
    received = 0
    outcomes = pool.send_many(items, transfer=transfer)
    try:
        async for outcome in outcomes:
            if received >= len(messages):
                run.problems.append(f"send_many({transfer}): more outcomes than messages")
                break
            run.record(messages[received], outcome)
            received += 1
    except Exception as error:  # the contract: one outcome per message, never a raise
        run.problems.append(f"send_many({transfer}) raised {error!r}")
    finally:
        close = getattr(outcomes, "aclose", None)
        if close is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(REPLY_TIMEOUT * 2):
                await close()
    if received < len(messages):
        run.problems.append(
            f"send_many({transfer}) gave {received} outcomes for {len(messages)} messages"
        )


async def _send_mail_task(pool: SMTPPool, messages: list[SoakMessage], run: SoakRun) -> None:
    for message in messages:
        try:
            result = await pool.send_mail(
                ALICE,
                [RECIPIENT],
                message.data,
                transfer=message.transfer,
            )
        except SMTPError as error:
            run.record(message, error)
        except Exception as error:
            run.problems.append(f"{message.soak_id}: send_mail raised {error!r}")
        else:
            run.record(message, result)


async def check_closed(proxy: FaultProxy, run: SoakRun, timeout: float = 5.0) -> None:
    """After the pool is closed, every proxied connection must close, soon."""
    with anyio.move_on_after(timeout):
        for connection in proxy.connections:
            await connection.closed.wait()
    run.leaks += [
        f"still open {timeout} s after the pool closed: {c.describe()}"
        for c in proxy.connections
        if not c.closed.is_set()
    ]


def _open_connections(proxy: FaultProxy) -> str:
    lines = [c.describe() for c in proxy.connections if not c.closed.is_set()]
    return "; ".join(lines) or "none"


async def soak_send_many(
    pool: SMTPPool, proxy: FaultProxy, messages: list[SoakMessage], run: SoakRun, bound: float
) -> None:
    """``send_many`` over ``messages``, one call per transfer, in turn, within ``bound`` s."""
    run.messages += messages
    started = time.monotonic()
    with anyio.move_on_after(bound) as scope:
        for transfer in dict.fromkeys(message.transfer for message in messages):
            batch = [message for message in messages if message.transfer == transfer]
            await _send_many_phase(pool, batch, transfer, run)
    run.elapsed += time.monotonic() - started
    if scope.cancelled_caught:
        missing = [m.soak_id for m in messages if m.soak_id not in run.outcomes]
        run.hangs.append(
            f"send_many did not finish within {bound} s: {len(missing)} messages without an "
            f"outcome (first: {missing[:5]}); {pool!r}; open proxied connections: "
            f"{_open_connections(proxy)}"
        )


async def soak_rounds(
    postfix: PostfixInstance,
    proxy: FaultProxy,
    messages: list[SoakMessage],
    run: SoakRun,
    *,
    rounds: int,
    bound: float,
    tasks: int | None = None,
) -> None:
    """The messages in ``rounds`` parts, each on a new pool through ``proxy``.

    Each part goes by ``soak_send_many``, or with ``tasks`` by ``soak_send_mail`` from
    that many tasks.  More pools make more connections (so more faults) for the same
    number of messages.
    """
    size = -(-len(messages) // rounds)
    for start in range(0, len(messages), size):
        part = messages[start : start + size]
        async with new_pool(factory(postfix, proxy.port)) as pool:
            if tasks is None:
                await soak_send_many(pool, proxy, part, run, bound)
            else:
                await soak_send_mail(pool, proxy, part, run, bound, tasks)
        run.connections_opened += pool.connections_opened


async def soak_send_mail(
    pool: SMTPPool,
    proxy: FaultProxy,
    messages: list[SoakMessage],
    run: SoakRun,
    bound: float,
    tasks: int,
) -> None:
    """``send_mail`` from ``tasks`` tasks at once, each sending its share in turn."""
    run.messages += messages
    started = time.monotonic()
    with anyio.move_on_after(bound) as scope:
        async with anyio.create_task_group() as group:
            for task in range(tasks):
                group.start_soon(_send_mail_task, pool, messages[task::tasks], run)
    run.elapsed += time.monotonic() - started
    if scope.cancelled_caught:
        missing = [m.soak_id for m in messages if m.soak_id not in run.outcomes]
        run.hangs.append(
            f"send_mail x{tasks} did not finish within {bound} s: {len(missing)} messages "
            f"without an outcome (first: {missing[:5]}); {pool!r}; open proxied "
            f"connections: {_open_connections(proxy)}"
        )


# -- the Maildir check -------------------------------------------------------------------


@dataclass
class Verdict:
    outcome_counts: Counter[str]
    copies: Counter[str]
    duplicates: list[str]
    violations: list[str]
    #: SendResults whose queue id was compared with the delivered copy's.
    queue_ids_checked: int = 0
    #: DeliveryUnknownErrors whose message was in fact delivered (once).
    unknown_delivered: int = 0


def soak_id_of(message: DeliveredMessage) -> str | None:
    found = _SOAK_ID.search(message.headers)
    return found[1].decode() if found else None


async def delivered_copies(
    postfix: PostfixInstance, prefix: str, drain: float = 60.0
) -> dict[str, list[DeliveredMessage]]:
    """Maildir copies whose X-Soak-Id starts with ``prefix``, once the queue is empty."""

    def collect() -> dict[str, list[DeliveredMessage]]:
        postfix.wait_for_empty_queue(drain)
        found: dict[str, list[DeliveredMessage]] = {}
        for message in postfix.messages():
            soak_id = soak_id_of(message)
            if soak_id is not None and soak_id.startswith(prefix):
                found.setdefault(soak_id, []).append(message)
        return found

    return await anyio.to_thread.run_sync(collect)


def judge(run: SoakRun, stored: dict[str, list[DeliveredMessage]]) -> Verdict:
    """Check every message's copies against its outcome (see the module docstring)."""
    violations = [f"contract: {problem}" for problem in run.problems]
    violations += [f"hang: {hang}" for hang in run.hangs]
    violations += [f"leak: {leak}" for leak in run.leaks]
    known = {message.soak_id: message for message in run.messages}
    copies = Counter({soak_id: len(found) for soak_id, found in stored.items()})
    duplicates = sorted(soak_id for soak_id, count in copies.items() if count > 1)
    counts: Counter[str] = Counter()
    queue_ids_checked = 0
    unknown_delivered = 0
    for soak_id in sorted(set(stored) - set(known)):
        violations.append(f"{soak_id}: delivered but never sent")
    for message in run.messages:
        soak_id = message.soak_id
        outcome = run.outcomes.get(soak_id)
        count = copies[soak_id]
        name = "no outcome" if outcome is None else type(outcome).__name__
        counts[name] += 1
        if count > 1:
            violations.append(f"{soak_id}: DUPLICATE, {count} copies, outcome {outcome!r}")
        if isinstance(outcome, DeliveryUnknownError) and count:
            unknown_delivered += 1
        if isinstance(outcome, SendResult):
            if count == 0:
                violations.append(f"{soak_id}: SendResult but not delivered ({outcome.reply})")
            elif count == 1:
                stored_id = _RECEIVED_ID.search(stored[soak_id][0].headers)
                if stored_id is not None and outcome.queue_id is not None:
                    queue_ids_checked += 1
                if (
                    stored_id is not None
                    and outcome.queue_id is not None
                    and stored_id[1].decode() != outcome.queue_id
                ):
                    violations.append(
                        f"{soak_id}: SendResult names queue id {outcome.queue_id}, the "
                        f"delivered copy has {stored_id[1].decode()} (reply misattributed)"
                    )
            if outcome.accepted != (RECIPIENT,):
                violations.append(f"{soak_id}: SendResult accepted {outcome.accepted}")
        elif (
            isinstance(outcome, SMTPError)
            and not isinstance(outcome, DeliveryUnknownError)
            and count
        ):
            violations.append(
                f"{soak_id}: reported as failed ({type(outcome).__name__}: {outcome}) "
                f"but delivered {count}x"
            )
        for copy in stored.get(soak_id, []):
            if copy.body != message.stored_body:
                violations.append(f"{soak_id}: delivered body differs from what was sent")
    return Verdict(counts, copies, duplicates, violations, queue_ids_checked, unknown_delivered)


def summary(label: str, run: SoakRun, verdict: Verdict, proxy: FaultProxy) -> str:
    outcomes = ", ".join(f"{name} {n}" for name, n in sorted(verdict.outcome_counts.items()))
    rate = len(run.messages) / run.elapsed if run.elapsed else 0.0
    return (
        f"[soak {label}] {len(run.messages)} messages in {run.elapsed:.1f} s "
        f"({rate:.0f} msg/s); outcomes: {outcomes} (unknowns delivered: "
        f"{verdict.unknown_delivered}); duplicates: {len(verdict.duplicates)}; "
        f"violations: {len(verdict.violations)}; hangs: {len(run.hangs)}; "
        f"leaked sessions: {len(run.leaks)}; pool sessions "
        f"opened: {run.connections_opened}; proxy: {proxy.summary()}"
    )


def failure_report(verdict: Verdict, proxy: FaultProxy, limit: int = 25) -> str:
    lines = [f"{len(verdict.violations)} violation(s):"]
    lines += [f"  {violation}" for violation in verdict.violations[:limit]]
    if len(verdict.violations) > limit:
        lines.append(f"  ... and {len(verdict.violations) - limit} more")
    lines.append("faulted connections:")
    lines += [f"  {c.describe()}" for c in proxy.connections if c.fault.kind.value != "none"]
    return "\n".join(lines)

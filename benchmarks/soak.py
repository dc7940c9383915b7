"""A fault soak of SMTPPool against a private Postfix + Dovecot, run by hand.

    python benchmarks/soak.py --messages 2000 --backend both --fault-rate 0.25 --seed 7

Starts its own Postfix + Dovecot on loopback (``tests/integration/servers/postfix.py``;
needs root and the postfix and dovecot-core packages), puts the seeded fault proxy of
``tests/faultproxy.py`` in front of its submission port, and sends ``--messages``
messages through ``SMTPPool`` (8 sessions, 50 messages each, 2 retries; STARTTLS and
AUTH SCRAM-SHA-256): four fifths by ``send_many``, half ``transfer="auto"`` (BDAT) and
half ``"data"``, one fifth by ``send_mail`` from 20 tasks.  Then it waits for Postfix's
queue to drain, counts each message's copies in the Maildir and checks them against the
outcome the pool reported (``tests/integration/soak.py``: a SendResult is exactly one
copy, a DeliveryUnknownError at most one, any other SMTPError none, never two).

Prints, per backend: outcomes by type, faulted connections by kind (fired/planned),
duplicates, violations (the first ones in full), hangs, wall time and messages/s.
Exits with 1 if any backend had a violation, 2 if the set-up failed.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402

from tests.faultproxy import FaultProxy, spans_for  # noqa: E402
from tests.integration.servers.postfix import PostfixInstance  # noqa: E402
from tests.integration.servers.tls import LoopbackCertificates  # noqa: E402
from tests.integration.soak import (  # noqa: E402
    MAX_MESSAGES_PER_CONNECTION,
    REPLY_TIMEOUT,
    SoakRun,
    check_closed,
    delivered_copies,
    factory,
    failure_report,
    judge,
    make_messages,
    new_pool,
    soak_send_mail,
    soak_send_many,
    summary,
)


async def soak(postfix: PostfixInstance, args: argparse.Namespace, backend: str, seed: int) -> int:
    """One backend's soak; returns the number of violations."""
    run_id = f"{backend}-{uuid.uuid4().hex[:8]}"
    by_mail = args.messages // 5
    batch = make_messages(f"{run_id}-b", args.messages - by_mail, ("auto", "data"), seed=seed)
    mail = make_messages(f"{run_id}-m", by_mail, ("auto", "data"), seed=seed)
    half = by_mail // 2
    single = [m for pair in zip(mail[:half], mail[half:], strict=False) for m in pair]
    single += mail[2 * half :]
    messages = batch + single
    # Phase bounds: generous for the volume (a healthy run sends 100-200 messages/s),
    # so only a real hang reaches them.
    bound = args.bound or max(60.0, args.messages * 0.05)
    run = SoakRun()
    started = time.monotonic()
    async with FaultProxy(
        postfix.submission_port,
        seed=seed,
        fault_rate=args.fault_rate,
        spans=spans_for(MAX_MESSAGES_PER_CONNECTION),
        stall_limit=2 * REPLY_TIMEOUT,
    ) as proxy:
        with anyio.move_on_after(3 * bound + 60) as outer:
            async with new_pool(factory(postfix, proxy.port)) as pool:
                await soak_send_many(pool, proxy, batch, run, bound)
                await soak_send_mail(pool, proxy, single, run, bound, tasks=20)
            run.connections_opened = pool.connections_opened
            await check_closed(proxy, run)
        if outer.cancelled_caught:
            run.hangs.append(f"closing the pool took past {3 * bound + 60:.0f} s")
    wall = time.monotonic() - started
    verdict = judge(run, await delivered_copies(postfix, run_id, drain=120.0))
    print(summary(f"{backend} seed {seed}", run, verdict, proxy))
    kinds = ", ".join(
        f"{kind} {fired}/{planned}" for kind, (planned, fired) in proxy.fault_counts().items()
    )
    outcomes = ", ".join(f"{name} {n}" for name, n in sorted(verdict.outcome_counts.items()))
    print(f"  outcomes:            {outcomes}")
    print(
        f"  unknowns delivered:  {verdict.unknown_delivered} of "
        f"{verdict.outcome_counts['DeliveryUnknownError']}"
    )
    print(
        f"  connections:         {len(proxy.connections)} proxied, {run.connections_opened} "
        f"sessions opened by the pool"
    )
    print(f"  faults fired/planned: {kinds}; in the TLS handshake: {proxy.handshake_faults()}")
    print(f"  duplicates:          {len(verdict.duplicates)}")
    print(f"  violations:          {len(verdict.violations)}")
    print(f"  hangs:               {len(run.hangs)}")
    print(
        f"  wall time:           {wall:.1f} s (sending {run.elapsed:.1f} s), "
        f"{len(messages) / run.elapsed if run.elapsed else 0:.0f} messages/s"
    )
    if verdict.violations:
        print(failure_report(verdict, proxy, limit=args.show))
    return len(verdict.violations)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--backend", choices=("asyncio", "trio", "both"), default="both")
    parser.add_argument("--fault-rate", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--bound", type=float, default=0.0, help="seconds a phase may take (default: by size)"
    )
    parser.add_argument("--show", type=int, default=25, help="violations printed in full")
    parser.add_argument("--keep", action="store_true", help="keep the Postfix folder")
    args = parser.parse_args()
    if args.messages < 10 or not 0 <= args.fault_rate <= 1:
        parser.error("--messages must be >= 10 and --fault-rate within [0, 1]")
    backends = ("asyncio", "trio") if args.backend == "both" else (args.backend,)

    base = Path(tempfile.mkdtemp(prefix="anyio-smtp-soak-"))
    postfix = PostfixInstance()
    try:
        PostfixInstance.ensure_installed()
        postfix.start(base / "postfix", certificates=LoopbackCertificates.create(base / "tls"))
    except RuntimeError as error:
        print(f"could not start Postfix + Dovecot: {error}", file=sys.stderr)
        return 2
    violations = 0
    try:
        print(
            f"Postfix {postfix.base_dir}, submission port {postfix.submission_port}; "
            f"{args.messages} messages per backend, fault rate {args.fault_rate}"
        )
        for offset, backend in enumerate(backends):
            seed = args.seed + offset
            violations += anyio.run(
                functools.partial(soak, postfix, args, backend, seed), backend=backend
            )
    finally:
        postfix.stop()
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print("OK: no violation" if not violations else f"FAILED: {violations} violation(s)")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())

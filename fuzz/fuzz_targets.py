#!/usr/bin/env python3
"""Long fuzzing runs of anyio_smtp's parsers, SASL mechanisms, body encoder and client.

This runs the Hypothesis targets of ``tests/security/test_fuzz.py`` -- the same
strategies and checks the test suite runs with a small budget -- for as many
examples as asked::

    python fuzz/fuzz_targets.py reply --examples 200000
    python fuzz/fuzz_targets.py sasl ehlo --examples 50000 --seed 7
    python fuzz/fuzz_targets.py all

Every input must either parse or raise the library's typed error.  A failure
prints the smallest input Hypothesis found, and the run exits with status 1;
the example is kept in ``.hypothesis/`` so the next run (and the test suite)
tries it first.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, given, seed, settings

from tests.security.test_fuzz import TARGETS

DEFAULT_EXAMPLES = 100_000


def run(target: str, examples: int, seed_value: int | None) -> bool:
    """Run one target; return whether every example passed."""
    strategy, check = TARGETS[target]
    test = settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )(given(strategy)(check))
    if seed_value is not None:
        test = seed(seed_value)(test)
    started = time.monotonic()
    print(f"{target}: up to {examples} examples ...", flush=True)
    try:
        test()
    except Exception:
        traceback.print_exc()
        print(f"{target}: FAILED after {time.monotonic() - started:.1f} s", flush=True)
        return False
    print(f"{target}: ok in {time.monotonic() - started:.1f} s", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "targets",
        nargs="+",
        choices=[*TARGETS, "all"],
        metavar="target",
        help=f"what to fuzz: {', '.join(TARGETS)}, or all",
    )
    parser.add_argument(
        "--examples",
        type=int,
        default=DEFAULT_EXAMPLES,
        help=f"examples per target (default {DEFAULT_EXAMPLES})",
    )
    parser.add_argument("--seed", type=int, default=None, help="a seed, to repeat a run")
    arguments = parser.parse_args(argv)
    if arguments.examples < 1:
        parser.error("--examples must be at least 1")
    targets = list(TARGETS) if "all" in arguments.targets else arguments.targets
    results = [run(target, arguments.examples, arguments.seed) for target in targets]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())

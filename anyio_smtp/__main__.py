"""Command line: ``python -m anyio_smtp demo``."""

from __future__ import annotations

import argparse
import sys

from ._demo import run_demo


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (also what its reference documentation is made from)."""
    parser = argparse.ArgumentParser(prog="python -m anyio_smtp")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="send a message through STARTTLS + AUTH to an embedded local server, "
        "on asyncio and on trio, and show what the server received",
    )
    demo.add_argument(
        "--backend",
        choices=("asyncio", "trio", "both"),
        default="both",
        help="which event loop to run on (default: both)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    backends = ("asyncio", "trio") if args.backend == "both" else (args.backend,)
    return run_demo(backends)


if __name__ == "__main__":
    sys.exit(main())

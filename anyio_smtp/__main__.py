"""Command line: ``python -m anyio_smtp send|probe|serve|demo`` (also ``anyio-smtp``)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (also what its reference documentation is made from)."""
    from ._cli import probe, send, serve
    from ._cli._common import EXIT_CODES_EPILOG, Parser

    parser = Parser(
        prog="anyio-smtp",
        description="Send mail, probe a server, or catch mail locally, with anyio_smtp.",
        epilog=EXIT_CODES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    send.register(commands)
    probe.register(commands)
    serve.register(commands)
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
    demo.set_defaults(run=_demo)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    backends = ("asyncio", "trio") if args.backend == "both" else (args.backend,)
    return run_demo(backends)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())

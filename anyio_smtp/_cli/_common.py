"""What the commands share: exit codes, targets, TLS contexts, the transcript, output."""

from __future__ import annotations

import argparse
import enum
import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TextIO

if TYPE_CHECKING:
    import ssl

    from .._protocol.replies import Reply

__all__ = (
    "EXIT_CODES_EPILOG",
    "CLIError",
    "ExitCode",
    "OUTCOMES",
    "outcome_name",
    "Parser",
    "Target",
    "add_common_options",
    "add_mode_options",
    "client_ssl_context",
    "dump_json",
    "parse_target",
    "reply_json",
    "Transcript",
)


class ExitCode(enum.IntEnum):
    """The exit status of ``send`` and ``probe``, one per kind of outcome."""

    #: the message was accepted for every recipient (probe: the server checked out)
    SENT = 0
    #: accepted for some recipients, refused for others
    PARTLY_REFUSED = 1
    #: refused for good (5xx): the sender, every recipient, the message or AUTH
    REFUSED = 2
    #: refused for now (4xx, or 421): trying again later may help
    TRANSIENT = 3
    #: no session: connection refused or lost, timeout, TLS or certificate failure
    CONNECTION = 4
    #: bad command line or bad input (a file that can not be read, a bad header)
    USAGE = 5
    #: the whole message went out but its verdict was lost: it may have been delivered
    DELIVERY_UNKNOWN = 6


#: Each exit status's outcome, as ``--json`` names it, and what it means.
OUTCOMES: dict[ExitCode, tuple[str, str]] = {
    ExitCode.SENT: ("sent", "accepted for every recipient (probe: every check passed)"),
    ExitCode.PARTLY_REFUSED: ("partly-refused", "accepted for some recipients, refused for others"),
    ExitCode.REFUSED: (
        "refused",
        "refused for good (5xx): sender, every recipient, message or AUTH",
    ),
    ExitCode.TRANSIENT: ("transient-failure", "refused for now (4xx or 421): retrying may help"),
    ExitCode.CONNECTION: ("connection-failure", "connection, timeout, TLS or certificate failure"),
    ExitCode.USAGE: ("usage-error", "bad command line or bad input"),
    ExitCode.DELIVERY_UNKNOWN: ("delivery-unknown", "the message went out, its verdict was lost"),
}

EXIT_CODES_EPILOG = "exit status:\n" + "\n".join(
    f"  {int(code)}  {name:<19} {meaning}" for code, (name, meaning) in OUTCOMES.items()
)


def outcome_name(code: ExitCode) -> str:
    return OUTCOMES[code][0]


class CLIError(Exception):
    """A failure the command reports in one sentence, with its exit status."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors exit with ``ExitCode.USAGE``.

    Abbreviated options are not accepted: ``--password`` is an error, never a prefix.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


@dataclass(frozen=True)
class Target:
    host: str
    port: int | None


def parse_target(text: str) -> Target:
    """``HOST``, ``HOST:PORT``, ``[IPV6]`` or ``[IPV6]:PORT``."""
    host, port, colon = text, "", False
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise CLIError(f"unclosed '[' in {text!r}: write an IPv6 address as [::1]:25")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise CLIError(f"unexpected {rest!r} after the address in {text!r}")
            port, colon = rest[1:], True
    elif text.count(":") == 1:
        host, port = text.split(":")
        colon = True
    elif text.count(":") > 1:
        raise CLIError(f"write an IPv6 address in brackets: [{text}] or [{text}]:25")
    if not host:
        raise CLIError(f"no host in {text!r}")
    if not port and not colon:
        return Target(host, None)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise CLIError(f"bad port {port!r}: a number from 1 to 65535")
    return Target(host, int(port))


def client_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying client context: the system's trust store, or only ``ca_file``."""
    import ssl

    try:
        if ca_file is None:
            return ssl.create_default_context()
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as error:
        raise CLIError(f"can not load the CA file {ca_file}: {error}") from error


def add_mode_options(group: Any, **helps: str) -> None:
    """``--starttls``/``--tls``/``--plain`` (those ``helps`` names, each with its help)
    as one choice, stored in ``args.mode``."""
    for mode, help_text in helps.items():
        group.add_argument(
            f"--{mode}", dest="mode", action="store_const", const=mode, help=help_text
        )


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="the event loop to run on (default: asyncio)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="limit of each wait for the server: connect, each reply (default: 30)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the session's transcript (C: and S: lines, AUTH redacted) on stderr",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout instead of the summary",
    )


class _Colour(logging.Formatter):
    _CODES: ClassVar[dict[str, str]] = {"C": "\x1b[36m", "S": "\x1b[33m"}

    def __init__(self, colour: bool) -> None:
        super().__init__("%(message)s")
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.colour:
            return text
        _, _, rest = text.partition("] ")
        code = self._CODES.get(rest[:1]) if rest[1:3] == ": " else None
        return f"{code}{text}\x1b[0m" if code else text


class Transcript:
    """While active, the library's ``anyio_smtp`` log records go to ``stream``."""

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = sys.stderr if stream is None else stream
        self._handler: logging.Handler | None = None
        self._level = logging.NOTSET

    def __enter__(self) -> None:
        if not self.enabled:
            return
        logger = logging.getLogger("anyio_smtp")
        handler = logging.StreamHandler(self.stream)
        handler.setFormatter(_Colour(self.stream.isatty()))
        self._handler, self._level = handler, logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)

    def __exit__(self, *exc: object) -> None:
        if self._handler is not None:
            logger = logging.getLogger("anyio_smtp")
            logger.removeHandler(self._handler)
            logger.setLevel(self._level)


def dump_json(data: dict[str, Any], out: TextIO | None = None) -> None:
    import json

    print(json.dumps(data, indent=2, sort_keys=False), file=sys.stdout if out is None else out)


def reply_json(reply: Reply) -> dict[str, Any]:
    """A reply as JSON: its code, enhanced status code and text."""
    return {"code": reply.code, "enhanced": reply.enhanced_status, "text": reply.message}

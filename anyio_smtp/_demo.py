"""``python -m anyio_smtp demo``: a real send to an embedded server, on asyncio and on trio.

It starts :class:`anyio_smtp.testing.SMTPTestServer` on 127.0.0.1 with a
throwaway certificate authority, then runs ``connect_starttls`` + ``login`` +
``send_message`` against it and prints the client's transcript (AUTH data
redacted, as the library logs it) and the message exactly as the server
received it.
"""

from __future__ import annotations

import importlib
import logging
import sys
from email.message import EmailMessage
from typing import TextIO

import anyio

import anyio_smtp

__all__ = ("run_demo",)

USER = "demo@example.test"
PASSWORD = "demo password"  # noqa: S105 (a throwaway account on the throwaway server)


def _message(backend: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Demo <{USER}>"
    message["To"] = "Alice <alice@example.test>"
    message["Cc"] = "bob@example.test"
    message["Bcc"] = "carol@example.test"
    message["Subject"] = f"Hello from anyio_smtp on {backend}"
    message.set_content(
        "This message went through STARTTLS and AUTH.\n"
        ".A line starting with a dot arrives intact,\n"
        ".\n"
        "and so does a lone dot line, and UTF-8: naïve café ✓\n"
    )
    return message


class _Transcript(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def _send_once(backend: str, out: TextIO) -> None:
    from anyio_smtp.testing import SMTPTestServer, throwaway_tls

    server_context, client_context = throwaway_tls("localhost", "127.0.0.1")
    transcript = _Transcript()
    logger = logging.getLogger("anyio_smtp")
    previous_level = logger.level
    logger.addHandler(transcript)
    logger.setLevel(logging.DEBUG)
    try:
        async with SMTPTestServer(
            hostname="mx.demo.test",
            starttls_context=server_context,
            users={USER: PASSWORD},
        ) as server:
            async with anyio_smtp.connect_starttls(
                server.host,
                server.port,
                ssl_context=client_context,
                tls_hostname="localhost",
                ehlo_domain="client.demo.test",
            ) as smtp:
                await smtp.login(USER, PASSWORD)
                result = await smtp.send_message(_message(backend))
                tls = smtp.tls_version
            received = server.messages[-1]
    finally:
        logger.removeHandler(transcript)
        logger.setLevel(previous_level)

    print(f"=== {backend}: connect_starttls + login + send_message ({tls}) ===", file=out)
    for line in transcript.lines:
        print(f"  {line}", file=out)
    print(f"--- result: {result.reply} (queue id {result.queue_id})", file=out)
    print(f"    accepted: {', '.join(result.accepted)}", file=out)
    print(f"--- envelope as received: MAIL FROM:<{received.sender}>", file=out)
    for recipient in received.recipients:
        print(f"                          RCPT TO:<{recipient}>", file=out)
    print("--- message as received (byte for byte):", file=out)
    for line in received.data.decode("utf-8", "replace").splitlines():
        print(f"  | {line}", file=out)
    if b"carol@example.test" in received.data:
        raise AssertionError("the Bcc header was transmitted")
    print(file=out)


def _missing(backends: tuple[str, ...]) -> list[str]:
    """What the demo needs and can not import, each as a sentence saying what to install."""
    needs = [("trustme", "the demo's throwaway certificate authority", "demo")]
    if "trio" in backends:
        needs.append(("trio", "the trio backend", "trio"))
    missing = []
    for module, purpose, extra in needs:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(
                f"{module} is not installed ({purpose} needs it): pip install 'anyio_smtp[{extra}]'"
            )
    return missing


def run_demo(
    backends: tuple[str, ...] = ("asyncio", "trio"),
    out: TextIO = sys.stdout,
    err: TextIO | None = None,
) -> int:
    """Run the demo on each backend; return a process exit status.

    Before anything runs, a missing optional dependency is named on ``err``
    with the command that installs it (on standard error by default), and the
    status is 1.
    """
    missing = _missing(backends)
    if missing:
        err = sys.stderr if err is None else err
        for line in missing:
            print(f"python -m anyio_smtp demo: {line}", file=err)
        if len(backends) > 1 and any(line.startswith("trio ") for line in missing):
            print(
                "or run it on asyncio alone: python -m anyio_smtp demo --backend asyncio", file=err
            )
        return 1
    for backend in backends:
        anyio.run(_send_once, backend, out, backend=backend)
    print(f"OK: the message was sent and received on {' and '.join(backends)}.", file=out)
    return 0

"""Running the command line in a subprocess, and a STARTTLS test server with a CA file."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from tests.tls import server_context, shared_ca

#: What the command line prints nothing secret with: a distinctive password.
PASSWORD = "s3cret-Pässwörd-never-shown"
USER = "user@example.test"


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANYIO_SMTP")}
    env["PYTHONUTF8"] = "1"
    env.update(extra or {})
    return env


async def cli(*args: str, stdin: bytes | None = None, env: Mapping[str, str] | None = None) -> Run:
    """``python -m anyio_smtp ARGS`` in a subprocess; its exit status and output."""
    process = await anyio.run_process(
        [sys.executable, "-m", "anyio_smtp", *args],
        input=stdin if stdin is not None else b"",
        check=False,
        env=cli_env(env),
    )
    return Run(process.returncode, process.stdout.decode("utf-8"), process.stderr.decode("utf-8"))


def write_ca(path: Path) -> str:
    """The test CA's certificate in a PEM file; its path as a string."""
    shared_ca().cert_pem.write_to_path(str(path))
    return str(path)


def tls_server_context() -> Any:
    return server_context("localhost", "127.0.0.1")


def send_args(port: int, *more: str, backend: str) -> Sequence[str]:
    return (
        "send",
        "--server",
        f"127.0.0.1:{port}",
        "--from",
        "sender@example.test",
        "--to",
        "rcpt@example.test",
        "--backend",
        backend,
        "--timeout",
        "10",
        *more,
    )


def auth_server() -> Any:
    """A test server that wants STARTTLS (the test CA's certificate) and knows ``USER``."""
    from anyio_smtp.testing import SMTPTestServer

    return SMTPTestServer(starttls_context=tls_server_context(), users={USER: PASSWORD})


def starttls_auth(ca: str) -> tuple[str, ...]:
    """The options of a send through STARTTLS, trusting ``ca``, as ``USER``."""
    return ("--starttls", "--ca-file", ca, "--auth", USER)

"""``send`` and ``probe`` against the real Postfix + Dovecot SASL of the integration tests."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from anyio_smtp._cli._common import ExitCode
from tests.integration.servers.postfix import DEFAULT_USERS, PostfixInstance

from .helpers import cli_env

ALICE = "alice@example.test"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "anyio_smtp", *args],
        capture_output=True,
        text=True,
        env=cli_env(env),
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("transfer", ["auto", "data"])
def test_send_through_submission(
    postfix: PostfixInstance, tmp_path: Path, backend: str, transfer: str
) -> None:
    marker = uuid.uuid4().hex
    attachment = tmp_path / "notes.txt"
    attachment.write_text(f"attached {marker}\n")
    password_file = tmp_path / "password"
    password_file.write_text(DEFAULT_USERS[ALICE] + "\n")
    run = run_cli(
        "send",
        "--server",
        f"127.0.0.1:{postfix.submission_port}",
        "--starttls",
        "--ca-file",
        str(postfix.ca_pem_path),
        "--tls-hostname",
        "localhost",
        "--auth",
        ALICE,
        "--password-file",
        str(password_file),
        "--from",
        ALICE,
        "--to",
        "bob@example.test",
        "--subject",
        f"cli {marker}",
        "--attach",
        str(attachment),
        "--transfer",
        transfer,
        "--backend",
        backend,
        "--json",
        "-v",
    )
    assert run.returncode == ExitCode.SENT, run
    result = json.loads(run.stdout)
    assert result["outcome"] == "sent"
    assert result["queue_id"]
    assert result["tls"]["version"].startswith("TLSv1.")
    assert result["authenticated_as"] == ALICE
    assert "C: EHLO" in run.stderr
    assert DEFAULT_USERS[ALICE] not in run.stdout + run.stderr
    delivered = postfix.wait_for_message_containing(f"cli {marker}".encode())
    assert result["queue_id"].encode() in delivered.data


def test_send_refused_without_auth(postfix: PostfixInstance) -> None:
    run = run_cli(
        "send",
        "--server",
        f"127.0.0.1:{postfix.submission_port}",
        "--starttls",
        "--ca-file",
        str(postfix.ca_pem_path),
        "--tls-hostname",
        "localhost",
        "--from",
        ALICE,
        "--to",
        "bob@example.test",
        "--json",
    )
    # The submission service wants AUTH before it relays: a permanent refusal.
    assert run.returncode == ExitCode.REFUSED, run
    result = json.loads(run.stdout)
    assert result["outcome"] == "refused"
    assert result["error"]["message"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_probe_submission(postfix: PostfixInstance, backend: str) -> None:
    run = run_cli(
        "probe",
        f"127.0.0.1:{postfix.submission_port}",
        "--ca-file",
        str(postfix.ca_pem_path),
        "--tls-hostname",
        "localhost",
        "--backend",
        backend,
        "--json",
    )
    assert run.returncode == ExitCode.SENT, run
    result = json.loads(run.stdout)
    assert result["greeting"].startswith("220 ")
    assert result["starttls_offered"] is True
    assert result["before_tls"]["auth"] == []
    assert {"PLAIN", "LOGIN"} <= set(result["after_tls"]["auth"])
    assert result["after_tls"]["size"] is not None
    assert result["verified"] is True
    assert "DNS:localhost" in result["certificate"]["san"]


def test_probe_postfix_without_the_ca(postfix: PostfixInstance) -> None:
    run = run_cli("probe", f"127.0.0.1:{postfix.submission_port}", "--tls-hostname", "localhost")
    assert run.returncode == ExitCode.CONNECTION, run
    assert "verified:  NO" in run.stdout
    assert "certificate was refused" in run.stdout

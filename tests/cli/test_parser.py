"""The parser, the exit codes, target parsing, and what the command line costs an import."""

from __future__ import annotations

import argparse
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from anyio_smtp.__main__ import build_parser
from anyio_smtp._cli._common import OUTCOMES, CLIError, ExitCode, Target, parse_target
from anyio_smtp.testing import SMTPTestServer

from .helpers import cli, cli_env


def _actions(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [(f"{name} {n}", a) for n, a in _actions(sub)]
        else:
            found.append((parser.prog, action))
    return found


def test_every_option_has_help() -> None:
    missing = [name for name, action in _actions(build_parser()) if not action.help]
    assert missing == []


def test_no_option_takes_a_password() -> None:
    options = [option for _, action in _actions(build_parser()) for option in action.option_strings]
    assert "--password" not in options
    assert not [
        option
        for option in options
        if option.startswith("--pass") and option not in ("--password-file", "--password-env")
    ]


def test_exit_codes() -> None:
    assert [(code.name, int(code)) for code in ExitCode] == [
        ("SENT", 0),
        ("PARTLY_REFUSED", 1),
        ("REFUSED", 2),
        ("TRANSIENT", 3),
        ("CONNECTION", 4),
        ("USAGE", 5),
        ("DELIVERY_UNKNOWN", 6),
    ]


def test_help_lists_the_exit_codes() -> None:
    text = build_parser().format_help()
    for code in ExitCode:
        assert f"  {int(code)}  " in text


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("mail.example.com", Target("mail.example.com", None)),
        ("mail.example.com:587", Target("mail.example.com", 587)),
        ("127.0.0.1:25", Target("127.0.0.1", 25)),
        ("[::1]", Target("::1", None)),
        ("[::1]:465", Target("::1", 465)),
    ],
)
def test_parse_target(text: str, target: Target) -> None:
    assert parse_target(text) == target


@pytest.mark.parametrize("text", ["::1", "[::1", "[::1]x", "host:", "host:99999", ":25", "h:x"])
def test_parse_target_refuses(text: str) -> None:
    with pytest.raises(CLIError):
        parse_target(text)


def test_import_anyio_smtp_loads_no_command_line() -> None:
    code = "import sys, anyio_smtp\nprint(sorted(m for m in sys.modules if '_cli' in m))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=cli_env()
    ).stdout
    assert out.strip() == "[]"


async def test_usage_error_exit_status(anyio_backend: str) -> None:
    run = await cli("send", "--no-such-option")
    assert run.code == ExitCode.USAGE
    run = await cli("frobnicate")
    assert run.code == ExitCode.USAGE


async def test_no_progress_bar_when_stderr_is_not_a_terminal(
    tmp_path: Path, anyio_backend: str
) -> None:
    big = tmp_path / "big.eml"
    big.write_bytes(b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 2200)
    async with SMTPTestServer() as server:
        run = await cli(
            "send",
            "--server",
            f"127.0.0.1:{server.port}",
            "--from",
            "a@example.test",
            "--to",
            "b@example.test",
            "--data",
            str(big),
            "--backend",
            anyio_backend,
        )
    assert run.code == ExitCode.SENT, run
    assert run.stderr == ""


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    import anyio

    big = tmp_path / "big.eml"
    big.write_bytes(b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 2200)
    output = bytearray()

    async def main() -> subprocess.CompletedProcess[bytes]:
        async with SMTPTestServer() as server:
            master, slave = pty.openpty()

            def read() -> None:
                while True:
                    try:
                        chunk = os.read(master, 4096)
                    except OSError:
                        return
                    if not chunk:
                        return
                    output.extend(chunk)

            reader = threading.Thread(target=read)
            reader.start()
            try:
                command = [
                    sys.executable,
                    "-m",
                    "anyio_smtp",
                    "send",
                    "--server",
                    f"127.0.0.1:{server.port}",
                    "--from",
                    "a@example.test",
                    "--to",
                    "b@example.test",
                    "--data",
                    str(big),
                ]
                result = await anyio.run_process(command, stderr=slave, check=False, env=cli_env())
            finally:
                os.close(slave)
                await anyio.to_thread.run_sync(reader.join)
                os.close(master)
            return result

    result = anyio.run(main)
    assert result.returncode == ExitCode.SENT, result
    text = output.decode("utf-8", "replace")
    assert "MiB / 2.1 MiB" in text
    assert "/s" in text


def test_the_readme_table_is_the_exit_codes() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    for code, (name, _) in OUTCOMES.items():
        assert f"| {int(code)} | {name} |" in readme

"""``anyio-smtp serve`` as a subprocess: the port it prints, a line per message, the
Maildir or mbox, STARTTLS with its printed CA, and a clean stop on SIGINT."""

from __future__ import annotations

import mailbox
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

import anyio_smtp
from anyio_smtp._cli._common import ExitCode

from .helpers import PASSWORD, USER, cli, cli_env

SUBJECT = "Serve test ✓"


class Serve:
    def __init__(self, process: Process) -> None:
        assert process.stdout is not None
        self.process = process
        self.stdout = BufferedByteReceiveStream(process.stdout)

    async def line(self) -> str:
        with anyio.fail_after(20):
            return (await self.stdout.receive_until(b"\n", 65536)).decode("utf-8")

    async def stop(self) -> tuple[int, str]:
        """SIGINT, then what it printed until it exited, and its exit status."""
        self.process.send_signal(signal.SIGINT)
        rest = b""
        with anyio.fail_after(20):
            try:
                while True:
                    rest += await self.stdout.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                pass
            code = await self.process.wait()
        return code, rest.decode("utf-8")


@asynccontextmanager
async def serve(*args: str) -> AsyncIterator[Serve]:
    command = [sys.executable, "-m", "anyio_smtp", "serve", "--port", "0", *args]
    async with await anyio.open_process(command, env=cli_env(), stderr=None) as process:
        try:
            yield Serve(process)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


def port_of(first_line: str) -> int:
    # "listening on 127.0.0.1:PORT (mode)"
    assert first_line.startswith("listening on 127.0.0.1:"), first_line
    return int(first_line.split(":")[1].split()[0])


def message(sender: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: x@example.test\r\nSubject: =?utf-8?q?Serve_test_=E2=9C=93?=\r\n"
        "\r\nHello.\r\n"
    ).encode()


async def test_serve_maildir_and_sigint(tmp_path: Path, anyio_backend: str) -> None:
    maildir = tmp_path / "Maildir"
    async with serve("--maildir", str(maildir), "--backend", anyio_backend) as server:
        port = port_of(await server.line())
        assert await server.line() == f"storing messages in {maildir}"
        async with anyio_smtp.connect("127.0.0.1", port) as smtp:
            await smtp.send_mail(
                "a@example.test", ["x@example.test", "y@example.test"], message("a@example.test")
            )
        size = len(message("a@example.test"))
        assert await server.line() == (
            f"message 1: from <a@example.test> to <x@example.test>, <y@example.test>, "
            f"{size} bytes, subject {SUBJECT!r}"
        )
        code, rest = await server.stop()
    assert code == 0
    assert rest == "stopped\n"
    assert sorted(path.name for path in maildir.iterdir()) == ["cur", "new", "tmp"]
    box = mailbox.Maildir(maildir, create=False)
    stored = [bytes(entry.as_bytes()) for entry in box]
    assert len(stored) == 1
    assert b"Hello." in stored[0]
    assert len(list((maildir / "new").iterdir())) == 1


async def test_serve_mbox(tmp_path: Path, anyio_backend: str) -> None:
    path = tmp_path / "mail.mbox"
    async with serve("--mbox", str(path)) as server:
        port = port_of(await server.line())
        await server.line()
        for index in range(2):
            async with anyio_smtp.connect("127.0.0.1", port) as smtp:
                await smtp.send_mail(f"s{index}@example.test", ["x@example.test"], message("s"))
            assert (await server.line()).startswith(f"message {index + 1}: from <s{index}@")
        code, _ = await server.stop()
    assert code == 0
    box = mailbox.mbox(path, create=False)
    try:
        entries = list(box)
    finally:
        box.close()
    assert [entry.get_from().split()[0] for entry in entries] == [
        "s0@example.test",
        "s1@example.test",
    ]


async def test_serve_starttls_auth_with_the_printed_ca(tmp_path: Path, anyio_backend: str) -> None:
    ca_path = tmp_path / "ca.pem"
    users = tmp_path / "users"
    users.write_text(f"other@example.test:other\n{USER}:{PASSWORD}\n")
    async with serve("--starttls", "--auth-file", str(users), "--ca-out", str(ca_path)) as server:
        port = port_of(await server.line())
        assert await server.line() == f"CA certificate: {ca_path}"
        run = await cli(
            "send",
            "--server",
            f"127.0.0.1:{port}",
            "--starttls",
            "--ca-file",
            str(ca_path),
            "--auth",
            USER,
            "--from",
            "a@example.test",
            "--to",
            "b@example.test",
            "--backend",
            anyio_backend,
            env={"ANYIO_SMTP_PASSWORD": PASSWORD},
        )
        assert run.code == ExitCode.SENT, run
        assert (await server.line()).startswith("message 1: from <a@example.test>")
        # The library trusts the same CA file.
        context = ssl.create_default_context(cafile=str(ca_path))
        async with anyio_smtp.connect_starttls("127.0.0.1", port, ssl_context=context) as smtp:
            await smtp.login(USER, PASSWORD)
            assert smtp.tls
        code, _ = await server.stop()
    assert code == 0


async def test_serve_implicit_tls_auth_on_the_command_line(
    tmp_path: Path, anyio_backend: str
) -> None:
    ca_path = tmp_path / "ca.pem"
    async with serve(
        "--tls", "--auth", "dev:dev", "--ca-out", str(ca_path), "--backend", anyio_backend
    ) as server:
        port = port_of(await server.line())
        await server.line()
        context = ssl.create_default_context(cafile=str(ca_path))
        async with anyio_smtp.connect("127.0.0.1", port, tls=True, ssl_context=context) as smtp:
            await smtp.login("dev", "dev")
            await smtp.send_mail("dev@example.test", ["x@example.test"], message("dev"))
        assert (await server.line()).startswith("message 1: from <dev@example.test>")
        code, _ = await server.stop()
    assert code == 0


async def test_serve_port_in_use(anyio_backend: str) -> None:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        run = await cli("serve", "--port", str(port))
    assert run.code == ExitCode.CONNECTION, run
    assert f"can not listen on 127.0.0.1:{port}" in run.stderr


def test_serve_tls_without_trustme_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['trustme'] = None  # import trustme now raises ImportError\n"
        "from anyio_smtp.__main__ import main\n"
        "sys.exit(main(['serve', '--starttls', '--port', '0']))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert run.returncode == ExitCode.USAGE, run
    assert "pip install 'anyio_smtp[demo]'" in run.stderr
    assert run.stdout == ""

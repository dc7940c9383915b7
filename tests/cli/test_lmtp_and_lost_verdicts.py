"""``send --lmtp`` over TCP and a Unix socket (Postfix's smtp-sink -L), 421, and a verdict
lost after the whole message went out."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from anyio_smtp._cli._common import ExitCode
from anyio_smtp.testing import SMTPTestServer

from .helpers import cli, send_args


@pytest.fixture(scope="module")
def lmtp_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """smtp-sink -L on a free loopback port and on a Unix socket: (port, socket path)."""
    binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    assert Path(binary).exists(), "smtp-sink (package postfix) is needed"
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    folder = tmp_path_factory.mktemp("lmtp-sink")
    path = folder / "lmtp.sock"
    processes = [
        subprocess.Popen(
            [binary, "-4", "-L", "-h", "lmtp.test", "-u", "postfix", endpoint, "64"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        for endpoint in (f"inet:127.0.0.1:{port}", f"unix:{path}")
    ]
    try:
        deadline = time.monotonic() + 10
        for family, address in ((socket.AF_INET, ("127.0.0.1", port)), (socket.AF_UNIX, str(path))):
            while True:
                try:
                    with socket.socket(family) as probe:
                        probe.settimeout(1)
                        probe.connect(address)
                    break
                except OSError:
                    assert all(p.poll() is None for p in processes), "smtp-sink exited"
                    assert time.monotonic() < deadline, "smtp-sink did not start"
                    time.sleep(0.05)
        yield port, path
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)


@pytest.mark.parametrize("where", ["tcp", "unix"])
async def test_lmtp(lmtp_sink: tuple[int, Path], anyio_backend: str, where: str) -> None:
    port, path = lmtp_sink
    target = ["--server", f"127.0.0.1:{port}"] if where == "tcp" else ["--socket", str(path)]
    run = await cli(
        "send",
        *target,
        "--lmtp",
        "--from",
        "a@example.test",
        "--to",
        "b@example.test",
        "--to",
        "c@example.test",
        "--json",
        "-v",
        "--backend",
        anyio_backend,
    )
    assert run.code == ExitCode.SENT, run
    result = run.json()
    assert [r["accepted"] for r in result["recipients"]] == [True, True]
    assert all(r["reply"]["code"] == 250 for r in result["recipients"])
    assert "C: LHLO" in run.stderr


async def test_421_is_transient(anyio_backend: str) -> None:
    async with SMTPTestServer() as server:
        server.reply("MAIL", "421 4.3.2 Shutting down", close=True)
        run = await cli(*send_args(server.port, "--json", backend=anyio_backend))
    assert run.code == ExitCode.TRANSIENT, run
    assert run.json()["error"]["type"] == "ServiceUnavailableError"


async def _lose_the_verdict(stream: SocketStream) -> None:
    """A server that takes a whole message and closes without a verdict."""
    async with stream:
        lines = BufferedByteReceiveStream(stream)
        await stream.send(b"220 lossy.test ESMTP\r\n")
        while True:
            line = await lines.receive_until(b"\r\n", 4096)
            verb = line[:4].upper()
            if verb == b"EHLO":
                await stream.send(b"250 lossy.test\r\n")
            elif verb in (b"MAIL", b"RCPT"):
                await stream.send(b"250 Ok\r\n")
            elif verb == b"DATA":
                await stream.send(b"354 Go ahead\r\n")
                while await lines.receive_until(b"\r\n", 4096) != b".":
                    pass
                return
            else:
                await stream.send(b"502 No\r\n")


async def test_lost_verdict_is_delivery_unknown(anyio_backend: str) -> None:
    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
        anyio.create_task_group() as group,
    ):
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        group.start_soon(listener.serve, _lose_the_verdict)
        run = await cli(*send_args(port, "--plain", "--json", backend=anyio_backend))
        group.cancel_scope.cancel()
    assert run.code == ExitCode.DELIVERY_UNKNOWN, run
    result = run.json()
    assert result["outcome"] == "delivery-unknown"
    assert result["error"]["type"] == "DeliveryUnknownError"

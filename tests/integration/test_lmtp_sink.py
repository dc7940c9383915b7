"""LMTP against Postfix's smtp-sink in LMTP mode (-L): one reply per recipient."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import anyio_smtp


@pytest.fixture(scope="module")
def lmtp_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """smtp-sink -L on a free loopback port; yields the port."""
    binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    assert Path(binary).exists(), "smtp-sink (package postfix) is needed; .ci/run installs it"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("lmtp-sink") / "sink.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                binary,
                "-4",
                "-L",
                "-h",
                "lmtp.test",
                "-u",
                "postfix",
                f"inet:127.0.0.1:{port}",
                "64",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "smtp-sink did not start"
                time.sleep(0.05)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


async def test_lmtp_per_recipient_replies(lmtp_sink: int) -> None:
    recipients = ["a@example.test", "b@example.test", "c@example.test"]
    async with anyio_smtp.connect_lmtp("127.0.0.1", lmtp_sink, ehlo_domain="client.test") as smtp:
        assert smtp.lmtp
        for _ in range(3):  # several messages on one session
            result = await smtp.send_mail(
                "s@example.test", recipients, b"Subject: lmtp\r\n\r\n.dot\r\nhi\r\n"
            )
            assert result.accepted == tuple(recipients)
            assert set(result.per_recipient) == set(recipients)
            assert all(reply.code == 250 for reply in result.per_recipient.values())

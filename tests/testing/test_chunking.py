"""CHUNKING (RFC 3030, ``BDAT size [LAST]``) on the test server, and faults during BDAT."""

from __future__ import annotations

import anyio
import pytest

import anyio_smtp
from anyio_smtp import DeliveryUnknownError, ServiceUnavailableError
from anyio_smtp.testing import Fault, SMTPTestServer

SENDER = "alice@example.test"
RCPT = "bob@example.test"
MESSAGE = b"Subject: chunks\r\n\r\n.leading dot stays\r\n" + b"z" * 3000 + b"\r\n"
TIMEOUT = 10


def connect(server: SMTPTestServer) -> anyio_smtp.SessionOpener:
    return anyio_smtp.connect(server.host, server.port, ehlo_domain="client.test", timeout=TIMEOUT)


class Wire:
    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def reply(self) -> str:
        while True:
            while b"\r\n" not in self.buffer:
                self.buffer += await self.stream.receive()
            raw, self.buffer = self.buffer.split(b"\r\n", 1)
            line = raw.decode()
            if line[3:4] != "-":
                return line

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)


async def test_chunking_is_advertised_only_when_asked() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as plain, connect(plain) as smtp:
            assert "CHUNKING" not in smtp.capabilities
        async with SMTPTestServer(chunking=True) as server, connect(server) as smtp:
            assert "CHUNKING" in smtp.capabilities


async def test_the_client_sends_with_bdat() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer(chunking=True) as server:
            async with connect(server) as smtp:
                await smtp.send_mail(SENDER, [RCPT], MESSAGE, transfer="bdat")
                await smtp.send_mail(SENDER, [RCPT], MESSAGE, transfer="data")
    first, second = server.messages
    assert first.data == second.data == MESSAGE
    assert first.raw == MESSAGE  # no dot-stuffing with BDAT
    assert any(line.startswith("BDAT ") for line in server.client_lines())
    assert server.pipelining_violations == 0


async def test_bdat_on_the_wire() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer(chunking=True) as server:
            stream = await anyio.connect_tcp(server.host, server.port)
            async with stream:
                wire = Wire(stream)
                await wire.reply()
                await wire.send(b"EHLO c.test\r\n")
                await wire.reply()
                # Refused for want of MAIL, and its chunk is read, not taken as commands.
                await wire.send(b"BDAT 6\r\nQUIT\r\n")
                assert (await wire.reply()).startswith("503 5.5.1")
                await wire.send(b"BDAT x\r\n")
                assert (await wire.reply()).startswith("501 5.5.4")
                await wire.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n")
                assert (await wire.reply())[:3] == "250"
                assert (await wire.reply())[:3] == "250"
                await wire.send(b"BDAT 5\r\nab\r\ncBDAT 0 LAST\r\n")
                assert await wire.reply() == "250 2.0.0 5 octets received"
                assert (await wire.reply()).startswith("250 2.0.0 Ok: queued as ")
                await wire.send(b"DATA\r\n")
                assert (await wire.reply()).startswith("503 5.5.1 Error: need MAIL")
    assert [m.data for m in server.messages] == [b"ab\r\nc"]


async def test_bdat_without_chunking_is_not_recognized() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            stream = await anyio.connect_tcp(server.host, server.port)
            async with stream:
                wire = Wire(stream)
                await wire.reply()
                await wire.send(b"EHLO c.test\r\n")
                await wire.reply()
                await wire.send(b"BDAT 0 LAST\r\n")
                assert (await wire.reply()).startswith("500 5.5.2")


async def test_eom_override_and_size_limit_apply_to_the_last_chunk() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer(chunking=True, size_limit=len(MESSAGE) - 1) as server:
            async with connect(server) as smtp:
                with pytest.raises(anyio_smtp.MessageTooLargeError):
                    await smtp.send_mail(SENDER, [RCPT], MESSAGE, transfer="bdat")
        async with SMTPTestServer(chunking=True) as server:
            server.reply("EOM", "554 5.7.1 no thanks")
            async with connect(server) as smtp:
                with pytest.raises(anyio_smtp.DataRefusedError):
                    await smtp.send_mail(SENDER, [RCPT], MESSAGE, transfer="bdat")
            assert server.messages == []


async def test_close_mid_bdat() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer(chunking=True) as server:
            server.fault("BDAT", Fault.close(after_bytes=100))
            async with connect(server) as smtp:
                # The whole (small) chunk was written before the close was seen.
                with pytest.raises(DeliveryUnknownError):
                    await smtp.send_mail(SENDER, [RCPT], MESSAGE, transfer="bdat")
            assert server.fault_log == ["session 0: close after 100 octets of BDAT"]
            assert server.messages == []


async def test_shutdown_mid_bdat() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer(chunking=True) as server:
            server.fault("BDAT", Fault.shutdown(after_bytes=10))
            async with connect(server) as smtp:
                with pytest.raises(ServiceUnavailableError):
                    await smtp.send_mail(SENDER, [RCPT], MESSAGE, transfer="bdat")
            assert server.messages == []

"""Fault injection on the test server, seen through the client library's typed errors.

Each fault is set with ``SMTPTestServer.fault()`` and then met by ``anyio_smtp``'s own
client, so the test shows both what the server does and what an application sees.
"""

from __future__ import annotations

import ssl

import anyio
import pytest

import anyio_smtp
from anyio_smtp import (
    DeliveryUnknownError,
    ServerDisconnectedError,
    ServiceUnavailableError,
    SMTPTimeoutError,
    StartTLSInjectionError,
    Timeouts,
)
from anyio_smtp.testing import Fault, SMTPTestServer, throwaway_tls

SENDER = "alice@example.test"
RCPT = "bob@example.test"
MESSAGE = b"Subject: faults\r\n\r\n" + b"x" * 2000 + b"\r\n"
TIMEOUT = 10


@pytest.fixture(scope="module")
def tls_pair() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return throwaway_tls("localhost", "127.0.0.1")


def connect(
    server: SMTPTestServer, timeout: float | Timeouts = TIMEOUT
) -> anyio_smtp.SessionOpener:
    return anyio_smtp.connect(server.host, server.port, ehlo_domain="client.test", timeout=timeout)


async def test_close_without_reply_at_a_command() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.fault("RCPT", Fault.close())
            async with connect(server) as smtp:
                with pytest.raises(ServerDisconnectedError):
                    await smtp.send_mail(SENDER, [RCPT], MESSAGE)
            assert server.client_lines()[-1] == f"RCPT TO:<{RCPT}>"
            assert not server.server_lines()[-1].startswith("250 2.1.5")
            assert server.fault_log == ["session 0: close at RCPT"]
            assert server.messages == []


async def test_a_fault_applies_to_the_next_matching_command_only() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.fault("MAIL", Fault.close(), match="mallory")
            async with connect(server) as smtp:
                await smtp.send_mail(SENDER, [RCPT], MESSAGE)
            server.fault("MAIL", Fault.close())
            async with connect(server) as smtp:
                with pytest.raises(ServerDisconnectedError):
                    await smtp.send_mail(SENDER, [RCPT], MESSAGE)
            async with connect(server) as smtp:
                await smtp.send_mail(SENDER, [RCPT], MESSAGE)
            assert len(server.messages) == 2
            assert server.fault_log == ["session 1: close at MAIL"]


async def test_times_and_clear_faults() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.fault("NOOP", Fault.shutdown(), times=None)
            for _ in range(2):
                async with connect(server) as smtp:
                    with pytest.raises(ServiceUnavailableError):
                        await smtp.noop()
            server.clear_faults()
            async with connect(server) as smtp:
                await smtp.noop()
            assert len(server.fault_log) == 2


@pytest.mark.parametrize("after", [0, 1, 100, 1500])
async def test_close_mid_data_after_the_whole_message_was_written(after: int) -> None:
    # The client wrote the whole (small) message before it saw the close: it cannot know
    # whether the server kept it.
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.fault("DATA", Fault.close(after_bytes=after))
            async with connect(server) as smtp:
                with pytest.raises(DeliveryUnknownError):
                    await smtp.send_mail(SENDER, [RCPT], MESSAGE)
            assert server.fault_log == [f"session 0: close after {after} octets of DATA"]
            assert server.messages == []


async def test_close_mid_data_while_the_client_is_still_writing() -> None:
    # 16 MiB do not fit in the socket buffers: the client's write fails.
    big = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 16384
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.fault("DATA", Fault.close(after_bytes=100))
            async with connect(server) as smtp:
                with pytest.raises(ServerDisconnectedError):
                    await smtp.send_mail(SENDER, [RCPT], big)
            assert server.messages == []


async def test_data_shorter_than_after_bytes_is_delivered() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.fault("DATA", Fault.close(after_bytes=len(MESSAGE) + 3))
            async with connect(server) as smtp:
                await smtp.send_mail(SENDER, [RCPT], MESSAGE)
                await smtp.send_mail(SENDER, [RCPT], MESSAGE)
            assert len(server.messages) == 2
            assert server.fault_log == []


async def test_close_at_the_end_of_data_leaves_the_delivery_unknown() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.fault("EOM", Fault.close())
            async with connect(server) as smtp:
                with pytest.raises(DeliveryUnknownError):
                    await smtp.send_mail(SENDER, [RCPT], MESSAGE)
            assert server.messages == []
            assert server.fault_log == ["session 0: close at EOM"]


async def test_stall_at_a_command_times_the_client_out() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.fault("MAIL", Fault.stall())
            async with connect(server, Timeouts(mail=0.2)) as smtp:
                with pytest.raises(SMTPTimeoutError):
                    await smtp.send_mail(SENDER, [RCPT], MESSAGE)
            # The stalled session stays open until the server is left.
            assert server.active_sessions == 1
            assert server.fault_log == ["session 0: stall at MAIL"]
        assert server.active_sessions == 0


async def test_stall_mid_data_times_the_client_out() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.fault("DATA", Fault.stall(after_bytes=10))
            async with connect(server, Timeouts(data_termination=0.2)) as smtp:
                # The verdict on a message that was sent is unknown; the cause is the timeout.
                with pytest.raises(DeliveryUnknownError) as caught:
                    await smtp.send_mail(SENDER, [RCPT], MESSAGE)
            assert "timed out" in str(caught.value)
            assert server.fault_log == ["session 0: stall after 10 octets of DATA"]
            assert server.messages == []


async def test_delay_postpones_the_reply() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.fault("NOOP", Fault.delay(0.2))
            async with connect(server) as smtp:
                start = anyio.current_time()
                await smtp.noop()
                assert anyio.current_time() - start >= 0.2
            server.fault("MAIL", Fault.delay(5))
            async with connect(server, Timeouts(mail=0.1)) as smtp:
                with pytest.raises(SMTPTimeoutError):
                    await smtp.send_mail(SENDER, [RCPT], MESSAGE)


@pytest.mark.parametrize("at", ["GREETING", "EHLO", "MAIL", "RCPT", "DATA", "EOM"])
async def test_shutdown_421_at_any_point(at: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.fault(at, Fault.shutdown())
            with pytest.raises(ServiceUnavailableError) as caught:
                async with connect(server) as smtp:
                    await smtp.send_mail(SENDER, [RCPT], MESSAGE)
            assert caught.value.reply.code == 421
            assert server.server_lines()[-1].startswith("421 4.3.2 mx.test ")
            assert server.messages == []


async def test_shutdown_mid_data() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.fault("DATA", Fault.shutdown("421 going down", after_bytes=50))
            async with connect(server) as smtp:
                with pytest.raises(ServiceUnavailableError):
                    await smtp.send_mail(SENDER, [RCPT], MESSAGE)
            assert server.server_lines()[-1] == "421 going down"
            assert server.messages == []


async def test_inject_bytes_after_the_starttls_220(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, client_context = tls_pair
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer(starttls_context=server_context) as server:
            server.fault("STARTTLS", Fault.inject(b"250 injected\r\n"))
            with pytest.raises(StartTLSInjectionError):
                async with anyio_smtp.connect_starttls(
                    server.host,
                    server.port,
                    ssl_context=client_context,
                    tls_hostname="localhost",
                    ehlo_domain="client.test",
                    timeout=TIMEOUT,
                ):
                    pass
            assert server.server_lines()[-2:] == ["220 2.0.0 Ready to start TLS", "250 injected"]


async def test_inject_unsolicited_lines_after_the_greeting() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.fault("GREETING", Fault.inject(b"250 unsolicited\r\n"))
            stream = await anyio.connect_tcp(server.host, server.port)
            async with stream:
                received = b""
                while received.count(b"\r\n") < 2:
                    received += await stream.receive()
            assert received == b"220 mx.test ESMTP test server ready\r\n250 unsolicited\r\n"


@pytest.mark.parametrize("kind", ["close", "stall"])
async def test_greeting_faults_send_no_greeting(kind: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.fault("GREETING", Fault.close() if kind == "close" else Fault.stall())
            stream = await anyio.connect_tcp(server.host, server.port)
            async with stream:
                if kind == "close":
                    with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                        await stream.receive()
                else:
                    await server.wait_until(lambda: bool(server.fault_log))
                    with anyio.move_on_after(0.1):
                        await stream.receive()
                        pytest.fail("a stalled server sent something")
            assert server.transcript == []


def test_fault_arguments_are_checked() -> None:
    server = SMTPTestServer()
    with pytest.raises(ValueError, match="DATA or BDAT"):
        server.fault("MAIL", Fault.close(after_bytes=3))
    with pytest.raises(ValueError, match="close, stall and shutdown"):
        server.fault("DATA", Fault("delay", after_bytes=3))
    with pytest.raises(ValueError, match="times"):
        server.fault("MAIL", Fault.close(), times=0)
    with pytest.raises(ValueError, match="negative"):
        Fault.close(after_bytes=-1)
    with pytest.raises(ValueError, match="negative"):
        Fault.delay(-1)
    with pytest.raises(ValueError, match="3-digit"):
        Fault.shutdown("going down")


async def test_a_closing_fault_wins_over_a_reply_override() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.reply("MAIL", "250 2.1.0 fine")
            server.fault("MAIL", Fault.close())
            async with connect(server) as smtp:
                with pytest.raises(ServerDisconnectedError):
                    await smtp.send_mail(SENDER, [RCPT], MESSAGE)
            assert "250 2.1.0 fine" not in server.server_lines()


async def test_delay_and_inject_go_with_a_reply_override() -> None:
    with anyio.fail_after(TIMEOUT):
        async with SMTPTestServer() as server:
            server.reply("NOOP", "250 2.0.0 overridden")
            server.fault("NOOP", Fault.delay(0.05))
            server.fault("GREETING", Fault.delay(0.05))
            server.fault("EOM", Fault.inject(b""))
            start = anyio.current_time()
            async with connect(server) as smtp:
                reply = await smtp.noop()
                await smtp.send_mail(SENDER, [RCPT], MESSAGE)
            assert anyio.current_time() - start >= 0.1
            assert reply.code == 250
            assert "250 2.0.0 overridden" in server.server_lines()
            assert server.fault_log == [
                "session 0: delay at GREETING",
                "session 0: delay at NOOP",
                "session 0: inject at EOM",
            ]
            assert len(server.messages) == 1

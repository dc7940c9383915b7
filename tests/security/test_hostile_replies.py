"""Hostile replies: endless continuation lines, a 10 MB line, lines that never end, a trickle.

Each kind of hostile reply is served in place of four different replies (the
greeting, the EHLO reply, the MAIL reply and the verdict on the message), on
asyncio and on trio, over a paced connection so the server can never write
far ahead of what the client reads.  The client must fail with a typed error
at the parser's named bound or within the timeout of the wait it was in, and
the memory it uses must stay far below what the server tries to send.  A
hostile AUTH challenge must end in a typed error too.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import pytest

import anyio_smtp
from anyio_smtp import (
    AuthenticationError,
    DeliveryUnknownError,
    RemoteProtocolError,
    ServerDisconnectedError,
    SMTPError,
    SMTPTimeoutError,
    Timeouts,
)
from anyio_smtp._protocol.replies import MAX_REPLY_LINE_LENGTH, MAX_REPLY_LINES, MAX_REPLY_SIZE
from tests.client.scripted import BASIC_EHLO, Peer
from tests.client.test_failures import BOB, CLIENT, MESSAGE, SENDER
from tests.security.helpers import USERNAME, paced_scripted

#: The limit of the wait the hostile reply is in; every other wait gets GENEROUS.
LIMIT = 0.15
GENEROUS = 10.0
MARGIN = 2.0
#: The pause between two bytes of a trickled reply (a stand-in for "one byte
#: per second": what matters is that the reply never completes).
TRICKLE = 0.01
#: What the server tries to send as one line.
HUGE = 10 * 1024 * 1024
BLOCK = 64 * 1024
#: Far below HUGE: what the client may use while refusing it.
MEMORY_BOUND = 1024 * 1024
GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError)


@dataclass
class Sent:
    """How much of its hostile reply the server managed to write."""

    octets: int = 0
    lines: int = 0


Hostile = Callable[[Peer, int, Sent, anyio.Event], Awaitable[None]]


async def endless_continuation(peer: Peer, code: int, sent: Sent, released: anyio.Event) -> None:
    batch = 64
    data = f"{code}-more to come\r\n".encode() * batch
    while True:
        await peer.send_raw(data)
        sent.lines += batch
        sent.octets += len(data)


async def endless_long_continuation(
    peer: Peer, code: int, sent: Sent, released: anyio.Event
) -> None:
    batch = 8
    line = f"{code}-".encode() + b"y" * (MAX_REPLY_LINE_LENGTH - 8) + b"\r\n"
    while True:
        await peer.send_raw(line * batch)
        sent.lines += batch
        sent.octets += len(line) * batch


async def ten_megabyte_line(peer: Peer, code: int, sent: Sent, released: anyio.Event) -> None:
    block = b"x" * BLOCK
    await peer.send_raw(f"{code} ".encode())
    while sent.octets < HUGE:
        await peer.send_raw(block)
        sent.octets += BLOCK
    await peer.send_raw(b"\r\n")


async def unterminated_then_silence(
    peer: Peer, code: int, sent: Sent, released: anyio.Event
) -> None:
    await peer.send_raw(f"{code} a line without its end".encode())
    await released.wait()


async def unterminated_then_close(peer: Peer, code: int, sent: Sent, released: anyio.Event) -> None:
    await peer.send_raw(f"{code} a line without its end".encode())


async def trickle(peer: Peer, code: int, sent: Sent, released: anyio.Event) -> None:
    for byte in itertools.cycle(f"{code}-slow\r\n".encode()):
        await anyio.sleep(TRICKLE)  # the hostile pace, not synchronisation
        await peer.send_raw(bytes([byte]))
        sent.octets += 1


HOSTILE: dict[str, Hostile] = {
    "endless-continuation": endless_continuation,
    "endless-long-continuation": endless_long_continuation,
    "10MB-line": ten_megabyte_line,
    "unterminated-then-silence": unterminated_then_silence,
    "unterminated-then-close": unterminated_then_close,
    "one-byte-at-a-time": trickle,
}
#: Where the hostile reply comes: (its code, the phase of the client's wait).
PLACES = {
    "greeting": (220, "greeting"),
    "EHLO": (250, "command"),
    "MAIL": (250, "mail"),
    "end-of-data": (250, "data_termination"),
}


async def lead_up(peer: Peer, place: str) -> None:
    """Serve the session honestly up to the reply that will be hostile."""
    if place == "greeting":
        return
    if place == "EHLO":
        await peer.send("220 mx.test ESMTP")
        await peer.lone("EHLO ")
        return
    await peer.greet(BASIC_EHLO)  # no PIPELINING: one command at a time
    await peer.lone("MAIL FROM:")
    if place == "MAIL":
        return
    await peer.send("250 2.1.0 Ok")
    await peer.lone("RCPT TO:")
    await peer.send("250 2.1.5 Ok")
    await peer.lone("DATA")
    await peer.send("354 go ahead")
    assert await peer.data() == MESSAGE + b".\r\n"


def expected(kind: str, place: str) -> tuple[type[SMTPError], type[SMTPError] | None]:
    """The error the caller gets, and (for DeliveryUnknownError) its cause."""
    if kind.startswith(("endless", "10MB")):
        failure: type[SMTPError] = RemoteProtocolError
    else:
        failure = ServerDisconnectedError if kind.endswith("close") else SMTPTimeoutError
    if place == "end-of-data":
        return DeliveryUnknownError, failure
    return failure, None


@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("kind", list(HOSTILE))
async def test_hostile_reply_is_refused_in_bounded_time_and_memory(kind: str, place: str) -> None:
    code, phase = PLACES[place]
    sent = Sent()
    released = anyio.Event()

    async def server(peer: Peer) -> None:
        await lead_up(peer, place)
        with contextlib.suppress(*GONE):  # the client hangs up, as it should
            await HOSTILE[kind](peer, code, sent, released)

    timeouts = Timeouts.uniform(GENEROUS).replace(**{phase: LIMIT})
    error: Exception | None = None
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    async with paced_scripted(server) as stream:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        start = anyio.current_time()
        try:
            smtp = await anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, timeout=timeouts)
            await smtp.send_mail(SENDER, [BOB], MESSAGE)
        except Exception as exc:
            error = exc
        finally:
            elapsed = anyio.current_time() - start
            peak = tracemalloc.get_traced_memory()[1] - baseline
            if not tracing:
                tracemalloc.stop()
            released.set()
        assert stream.closed

    error_type, cause = expected(kind, place)
    assert type(error) is error_type, repr(error)
    assert isinstance(error, SMTPError)
    if cause is not None:
        assert type(error.__cause__) is cause
    assert peak < MEMORY_BOUND, f"{peak} octets in use"
    limit = LIMIT if SMTPTimeoutError in (error_type, cause) else 0.0
    assert limit <= elapsed < limit + MARGIN
    if kind == "endless-continuation":
        assert f"{MAX_REPLY_LINES} lines" in str(error)
        assert sent.lines < MAX_REPLY_LINES + 3 * 64
    elif kind == "endless-long-continuation":
        assert f"{MAX_REPLY_SIZE} octets" in str(error)
        assert sent.octets < MAX_REPLY_SIZE + 3 * 8 * MAX_REPLY_LINE_LENGTH
    elif kind == "10MB-line":
        assert f"longer than {MAX_REPLY_LINE_LENGTH} octets" in str(error)
        assert sent.octets <= 3 * BLOCK  # refused long before the 10 MB
    elif kind == "one-byte-at-a-time":
        # The deadline covers the whole reply: the bytes kept coming, and it
        # still fired on time.
        assert sent.octets >= 2
        assert f"{LIMIT:g} s" in str(error.__cause__ if cause else error)


@pytest.mark.parametrize(("mechanism", "dummy"), [("XOAUTH2", ""), ("OAUTHBEARER", "AQ==")])
async def test_a_deeply_nested_oauth_error_challenge_is_a_typed_failure(
    mechanism: str, dummy: str
) -> None:
    # The most a reply line can carry: "334 " and the base64 of 1533 octets,
    # here all "[" -- JSON nested deeper than the interpreter's recursion limit.
    challenge = base64.b64encode(b"[" * 1533).decode()
    assert len(challenge) + 4 <= MAX_REPLY_LINE_LENGTH

    async def server(peer: Peer) -> None:
        await peer.greet(("250-mx.test", f"250 AUTH {mechanism}"))
        await peer.expect(f"AUTH {mechanism} ")
        await peer.send(f"334 {challenge}")
        assert await peer.lone("") == dummy
        await peer.send("535 5.7.8 Invalid credentials")
        assert await peer.rest() == b""

    async with paced_scripted(server) as stream:
        smtp = await anyio_smtp.connect_stream(
            stream, ehlo_domain=CLIENT, allow_insecure_auth=True, timeout=5
        )
        with pytest.raises(AuthenticationError) as caught:
            await smtp.login(USERNAME, "an-access-token", mechanism=mechanism)
        assert caught.value.reply.code == 535
        assert smtp.closed

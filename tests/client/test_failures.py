"""Failures that end a session: 421, broken connections, timeouts, cancellation, bad replies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import anyio
import pytest

import anyio_smtp
from anyio_smtp import (
    DeliveryUnknownError,
    RemoteProtocolError,
    ReplyError,
    SenderRefusedError,
    SendResult,
    ServerDisconnectedError,
    ServiceUnavailableError,
    SessionClosedError,
    SessionState,
    SMTPClient,
    SMTPTimeoutError,
)
from anyio_smtp.testing import MemoryByteStream
from tests.client.scripted import BASIC_EHLO, PIPELINING_EHLO, Peer, scripted

CLIENT = "client.test"
SENDER = "alice@example.test"
BOB = "bob@example.test"
CAROL = "carol@example.test"
MESSAGE = b"Subject: hello\r\n\r\nHello, world.\r\n"
QUEUED = "250 2.0.0 Ok: queued as 4ABC123XYZ"
CLOSING = "421 4.3.2 Service shutting down"

MODES = pytest.mark.parametrize(
    ("ehlo", "pipelined"),
    [(PIPELINING_EHLO, True), (BASIC_EHLO, False)],
    ids=["pipelined", "lock-step"],
)


async def closes_quietly(peer: Peer) -> None:
    """The client must close the connection without sending anything more."""
    assert await peer.rest() == b""


async def accept_message(
    peer: Peer, sender: str, recipients: Sequence[str], *, pipelined: bool
) -> bytes:
    """Serve one fully accepted transaction; return the raw message data."""
    commands = [
        f"MAIL FROM:<{sender}>",
        *(f"RCPT TO:<{recipient}>" for recipient in recipients),
        "DATA",
    ]
    replies = ["250 2.1.0 Ok", *("250 2.1.5 Ok" for _ in recipients), "354 go ahead"]
    if pipelined:
        for command in commands:
            assert await peer.line() == command
        assert peer.buffer == b""
        await peer.send(*replies)
    else:
        for command, reply in zip(commands, replies, strict=True):
            assert await peer.lone(command) == command
            await peer.send(reply)
    data = await peer.data()
    await peer.send(QUEUED)
    return data


async def assert_dead(smtp: SMTPClient, stream: MemoryByteStream) -> None:
    """The session and its stream are closed and every call says so."""
    assert smtp.closed
    assert smtp.state is SessionState.CLOSED
    assert stream.closed
    with pytest.raises(SessionClosedError):
        await smtp.noop()
    with pytest.raises(SessionClosedError):
        await smtp.send_mail(SENDER, [BOB], MESSAGE)
    await smtp.aclose()  # closing a dead session never raises


# -- 421: the server is closing -------------------------------------------------------------

#: The commands of one transaction, the reply that lets it go on, and the
#: command name an error reports.
TRANSACTION = [
    ("MAIL FROM:", "250 2.1.0 Ok", "MAIL FROM"),
    ("RCPT TO:", "250 2.1.5 Ok", "RCPT TO"),
    ("DATA", "354 go ahead", "DATA"),
]
POSITIONS = pytest.mark.parametrize(
    ("position", "command"),
    [(0, "MAIL FROM"), (1, "RCPT TO"), (2, "DATA"), (3, "end of data")],
    ids=["MAIL", "RCPT", "DATA", "end-of-data"],
)


@MODES
@POSITIONS
async def test_421_during_a_transaction_closes_the_session(
    ehlo: tuple[str, ...], pipelined: bool, position: int, command: str
) -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(ehlo)
        replies = [reply for _prefix, reply, _name in TRANSACTION]
        if position < len(TRANSACTION):
            replies = [*replies[:position], CLOSING]
        if pipelined:
            for prefix, _reply, _name in TRANSACTION:
                await peer.expect(prefix)
            await peer.send(*replies)
        else:
            for (prefix, _reply, _name), reply in zip(TRANSACTION, replies, strict=False):
                await peer.lone(prefix)
                await peer.send(reply)
        if position == len(TRANSACTION):
            await peer.data()
            await peer.send(CLOSING)
        await closes_quietly(peer)

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        with pytest.raises(ServiceUnavailableError) as caught:
            await smtp.send_mail(SENDER, [BOB], MESSAGE)
        error = caught.value
        assert isinstance(error, ConnectionError)
        assert isinstance(error, ReplyError)
        assert error.is_transient
        assert error.reply.code == 421
        assert error.command == command
        assert "Service shutting down" in str(error)
        assert "421" in str(error)
        await assert_dead(smtp, stream)


@MODES
@pytest.mark.parametrize(
    ("extra", "expected"),
    [("421 4.4.2 idle timeout", ServiceUnavailableError), ("250 2.0.0 surprise", None)],
    ids=["421", "250"],
)
async def test_a_reply_nobody_asked_for_is_detected_at_the_next_command(
    ehlo: tuple[str, ...], pipelined: bool, extra: str, expected: type[Exception] | None
) -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(ehlo)
        assert await peer.lone("NOOP") == "NOOP"
        # The unprompted reply travels with the NOOP reply, as if the server
        # had written it while the client was idle.
        await peer.send_raw(f"250 2.0.0 Ok\r\n{extra}\r\n".encode())
        await closes_quietly(peer)

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, timeout=5) as smtp,
    ):
        assert (await smtp.noop()).code == 250
        written = len(stream.sent)
        with pytest.raises((ServiceUnavailableError, RemoteProtocolError)) as caught:
            await smtp.send_mail(SENDER, [BOB], MESSAGE)
        if expected is ServiceUnavailableError:
            assert isinstance(caught.value, ServiceUnavailableError)
            assert isinstance(caught.value, ConnectionError)
            assert caught.value.reply.code == 421
            assert "idle timeout" in str(caught.value)
            assert "unprompted" in str(caught.value)
        else:
            assert isinstance(caught.value, RemoteProtocolError)
            assert "surprise" in str(caught.value)
        # Nothing was written: the stray reply was noticed before MAIL went out.
        assert len(stream.sent) == written
        await assert_dead(smtp, stream)


@pytest.mark.parametrize(
    "raw",
    [
        b"hello there\r\n",
        b"\r\n",
        b"25 short code\r\n",
        b"2500 long code\r\n",
        b"650 no such class\r\n",
        b"250_bad separator\r\n",
        b"250-first line\r\n354 the code changed\r\n",
        b"250 " + b"x" * 5000,
    ],
    ids=["text", "empty", "short", "long", "class", "separator", "mixed", "oversized"],
)
async def test_malformed_reply_closes_the_session(raw: bytes) -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(BASIC_EHLO)
        await peer.lone("MAIL FROM:")
        await peer.send_raw(raw)
        await closes_quietly(peer)

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        with pytest.raises(RemoteProtocolError):
            await smtp.send_mail(SENDER, [BOB], MESSAGE)
        await assert_dead(smtp, stream)


async def test_rset_refused_after_a_refusal_closes_the_session() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(BASIC_EHLO)
        await peer.lone("MAIL FROM:")
        await peer.send("550 5.7.1 sender refused")
        assert await peer.lone("RSET") == "RSET"
        await peer.send("500 5.5.2 what?")
        await closes_quietly(peer)

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        with pytest.raises(ReplyError) as caught:
            await smtp.send_mail(SENDER, [BOB], MESSAGE)
        assert not isinstance(caught.value, SenderRefusedError)
        assert caught.value.command == "RSET"
        assert caught.value.reply.code == 500
        # The refusal that led to the RSET is not lost.
        assert isinstance(caught.value.__cause__, SenderRefusedError)
        assert caught.value.__cause__.reply.code == 550
        await assert_dead(smtp, stream)


# -- the connection drops at every step ---------------------------------------------------

Step = Callable[[Peer], Awaitable[None]]


def say(*lines: str) -> Step:
    async def step(peer: Peer) -> None:
        await peer.send(*lines)

    return step


def read_then_say(commands: Sequence[str], *lines: str) -> Step:
    """Read ``commands`` (all of them before answering), then send ``lines``."""

    async def step(peer: Peer) -> None:
        for command in commands:
            assert await peer.line() == command
        assert peer.buffer == b""
        await peer.send(*lines)

    return step


async def read_data(peer: Peer) -> None:
    assert await peer.data() == MESSAGE + b".\r\n"


async def read_quit(peer: Peer) -> None:
    assert await peer.lone("QUIT") == "QUIT"
    await peer.send("221 2.0.0 Bye")


MAIL = f"MAIL FROM:<{SENDER}>"
RCPT_BOB = f"RCPT TO:<{BOB}>"
RCPT_CAROL = f"RCPT TO:<{CAROL}>"

#: The server's side of a whole pipelined session, step by step.
PIPELINED_SESSION: list[tuple[str, Step]] = [
    ("greeting", say("220 mx.test ESMTP")),
    ("EHLO", read_then_say([f"EHLO {CLIENT}"], *PIPELINING_EHLO)),
    (
        "MAIL+RCPT+RCPT+DATA",
        read_then_say(
            [MAIL, RCPT_BOB, RCPT_CAROL, "DATA"], "250 Ok", "250 Ok", "250 Ok", "354 go ahead"
        ),
    ),
    ("message data", read_data),
    ("final reply", say(QUEUED)),
    ("QUIT", read_quit),
]

#: The same session without PIPELINING: one command, one reply.
LOCK_STEP_SESSION: list[tuple[str, Step]] = [
    ("greeting", say("220 mx.test ESMTP")),
    ("EHLO", read_then_say([f"EHLO {CLIENT}"], *BASIC_EHLO)),
    ("MAIL", read_then_say([MAIL], "250 Ok")),
    ("RCPT bob", read_then_say([RCPT_BOB], "250 Ok")),
    ("RCPT carol", read_then_say([RCPT_CAROL], "250 Ok")),
    ("DATA", read_then_say(["DATA"], "354 go ahead")),
    ("message data", read_data),
    ("final reply", say(QUEUED)),
    ("QUIT", read_quit),
]


def cuts(session: list[tuple[str, Step]]) -> list[pytest.ParameterSet]:
    """One case per step: the server closes instead of doing it (plus a complete run)."""
    cases = [pytest.param(k, id=f"before-{name}") for k, (name, _step) in enumerate(session)]
    return [*cases, pytest.param(len(session), id="complete")]


async def run_cut_session(session: list[tuple[str, Step]], cut: int) -> None:
    final = next(k for k, (name, _step) in enumerate(session) if name == "final reply")

    async def server(peer: Peer) -> None:
        for _name, step in session[:cut]:
            await step(peer)
        # Returning closes the server's end of the connection.

    clients: list[SMTPClient] = []
    results: list[SendResult] = []

    async def client(stream: MemoryByteStream) -> None:
        async with anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, timeout=5) as smtp:
            clients.append(smtp)
            results.append(await smtp.send_mail(SENDER, [BOB, CAROL], MESSAGE))

    async with scripted(server) as stream:
        if cut == final:
            # The whole message went out; only its verdict was lost (RFC 1047).
            with pytest.raises(DeliveryUnknownError) as unknown:
                await client(stream)
            assert not isinstance(unknown.value, ConnectionError)
            assert not unknown.value.is_transient
            assert unknown.value.recipients == (BOB, CAROL)
            assert isinstance(unknown.value.__cause__, ServerDisconnectedError)
            assert "may or may not have been delivered" in str(unknown.value)
        elif cut < final:
            with pytest.raises(ServerDisconnectedError) as caught:
                await client(stream)
            assert isinstance(caught.value, ConnectionError)
            assert caught.value.is_transient
        else:
            await client(stream)  # a lost QUIT reply is no error
        assert stream.closed
        # The message counts as sent only once its final reply arrived.
        assert len(results) == (1 if cut > final else 0)
        if results:
            assert results[0].queue_id == "4ABC123XYZ"
        # A session exists once the greeting and EHLO got through.
        assert len(clients) == (1 if cut >= 2 else 0)
        for smtp in clients:
            await assert_dead(smtp, stream)


@pytest.mark.parametrize("cut", cuts(PIPELINED_SESSION))
async def test_disconnect_at_every_step_of_a_pipelined_session(cut: int) -> None:
    await run_cut_session(PIPELINED_SESSION, cut)


@pytest.mark.parametrize("cut", cuts(LOCK_STEP_SESSION))
async def test_disconnect_at_every_step_of_a_lock_step_session(cut: int) -> None:
    await run_cut_session(LOCK_STEP_SESSION, cut)


# -- timeouts ------------------------------------------------------------------------------


async def test_timeout_waiting_for_a_reply_closes_the_session() -> None:
    unread: list[bytes] = []

    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        await peer.expect("MAIL FROM:")
        unread.append(await peer.rest())  # never answers; waits for the client to go

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, timeout=0.2) as smtp,
    ):
        with pytest.raises(SMTPTimeoutError) as caught:
            await smtp.send_mail(SENDER, [BOB], MESSAGE)
        assert isinstance(caught.value, TimeoutError)
        assert caught.value.is_transient
        assert "MAIL FROM" in str(caught.value)
        await assert_dead(smtp, stream)
    # The rest of the group, and no QUIT or RSET after the timeout.
    assert unread == [f"RCPT TO:<{BOB}>\r\nDATA\r\n".encode()]


async def test_timeout_waiting_for_the_final_reply_means_delivery_unknown() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        for _ in range(3):
            await peer.line()
        await peer.send("250 Ok", "250 Ok", "354 go ahead")
        assert await peer.data() == MESSAGE + b".\r\n"
        await closes_quietly(peer)  # the verdict never comes

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, timeout=0.2) as smtp,
    ):
        with pytest.raises(DeliveryUnknownError) as caught:
            await smtp.send_mail(SENDER, [BOB], MESSAGE)
        assert isinstance(caught.value.__cause__, SMTPTimeoutError)
        await assert_dead(smtp, stream)


async def test_timeout_waiting_for_the_greeting() -> None:
    async def server(peer: Peer) -> None:
        await closes_quietly(peer)  # says nothing at all

    async with scripted(server) as stream:
        with pytest.raises(SMTPTimeoutError, match="greeting") as caught:
            await anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT, timeout=0.2)
        assert isinstance(caught.value, TimeoutError)
        assert stream.closed
        assert stream.sent == b""


# -- cancellation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pipelined", "where"),
    [(True, "MAIL"), (False, "MAIL"), (True, "end of data"), (False, "end of data")],
    ids=["pipelined-MAIL", "lock-step-MAIL", "pipelined-data", "lock-step-data"],
)
async def test_cancellation_mid_command_closes_the_session(pipelined: bool, where: str) -> None:
    reached = anyio.Event()
    unread: list[bytes] = []

    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO if pipelined else BASIC_EHLO)
        if where == "MAIL":
            await peer.expect("MAIL FROM:")
        else:
            await _envelope(peer, pipelined=pipelined)
            await read_data(peer)
        reached.set()
        unread.append(await peer.rest())

    async with scripted(server) as stream:
        smtp = await anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT)
        scope = anyio.CancelScope()

        async def send() -> None:
            with scope:
                await smtp.send_mail(SENDER, [BOB], MESSAGE)

        async with anyio.create_task_group() as group:
            group.start_soon(send)
            await reached.wait()
            scope.cancel()
        assert scope.cancelled_caught
        await assert_dead(smtp, stream)
    leftover = f"RCPT TO:<{BOB}>\r\nDATA\r\n".encode() if pipelined and where == "MAIL" else b""
    assert unread == [leftover]  # nothing was sent after the cancellation

    # A new session on a new connection works.
    async def fresh(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        await accept_message(peer, SENDER, [BOB], pipelined=True)
        await peer.quit()

    async with (
        scripted(fresh) as stream2,
        anyio_smtp.connect_stream(stream2, ehlo_domain=CLIENT) as smtp2,
    ):
        assert (await smtp2.send_mail(SENDER, [BOB], MESSAGE)).queue_id == "4ABC123XYZ"


async def _envelope(peer: Peer, *, pipelined: bool) -> None:
    """Accept MAIL, one RCPT and DATA, leaving the message data unread."""
    exchange = ((MAIL, "250 Ok"), (RCPT_BOB, "250 Ok"), ("DATA", "354 go ahead"))
    if pipelined:
        await read_then_say([command for command, _ in exchange], *(r for _, r in exchange))(peer)
        return
    for command, reply in exchange:
        assert await peer.lone(command) == command
        await peer.send(reply)


async def test_cancellation_while_waiting_for_the_lock_keeps_the_session() -> None:
    noop_read = anyio.Event()
    release = anyio.Event()

    async def server(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        assert await peer.lone("NOOP") == "NOOP"
        noop_read.set()
        await release.wait()
        await peer.send("250 2.0.0 Ok")
        # The cancelled call never wrote anything; the next command is the later one.
        await accept_message(peer, "later@example.test", [BOB], pipelined=True)
        await peer.quit()

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):
        replies = []
        waiter = anyio.CancelScope()
        waiter_done = anyio.Event()

        async def noop() -> None:
            replies.append(await smtp.noop())

        async def blocked_send() -> None:
            try:
                with waiter:
                    await smtp.send_mail("early@example.test", [BOB], MESSAGE)
            finally:
                waiter_done.set()

        async with anyio.create_task_group() as group:
            group.start_soon(noop)
            await noop_read.wait()
            written = len(stream.sent)
            group.start_soon(blocked_send)
            await anyio.wait_all_tasks_blocked()
            assert smtp._lock.statistics().tasks_waiting == 1
            waiter.cancel()
            await waiter_done.wait()
            assert waiter.cancelled_caught
            assert len(stream.sent) == written
            assert not smtp.closed
            release.set()
        assert [reply.code for reply in replies] == [250]
        assert not smtp.closed
        assert smtp.state is SessionState.READY
        result = await smtp.send_mail("later@example.test", [BOB], MESSAGE)
        assert result.queue_id == "4ABC123XYZ"


# -- concurrency ---------------------------------------------------------------------------


@MODES
async def test_concurrent_sends_are_never_interleaved(
    ehlo: tuple[str, ...], pipelined: bool
) -> None:
    names = ("first", "second", "third")
    served: list[str] = []

    async def server(peer: Peer) -> None:
        await peer.greet(ehlo)
        for _ in names:
            if pipelined:
                mail = await peer.expect("MAIL FROM:")
            else:
                mail = await peer.lone("MAIL FROM:")
            name = mail.removeprefix("MAIL FROM:<").split("@")[0]
            assert name in names
            assert name not in served
            served.append(name)
            commands = [
                f"RCPT TO:<{name}-1@example.test>",
                f"RCPT TO:<{name}-2@example.test>",
                "DATA",
            ]
            replies = ["250 Ok", "250 Ok", "354 go ahead"]
            if pipelined:
                for command in commands:
                    assert await peer.line() == command
                assert peer.buffer == b""
                await peer.send("250 Ok", *replies)
            else:
                await peer.send("250 Ok")
                for command, reply in zip(commands, replies, strict=True):
                    assert await peer.lone(command) == command
                    await peer.send(reply)
            assert await peer.data() == f"Subject: {name}\r\n\r\n{name}\r\n.\r\n".encode()
            await peer.send(f"250 2.0.0 Ok: queued as {name.upper()}QUEUE")
        await peer.quit()

    results: dict[str, SendResult] = {}

    async with (
        scripted(server) as stream,
        anyio_smtp.connect_stream(stream, ehlo_domain=CLIENT) as smtp,
    ):

        async def send(name: str) -> None:
            results[name] = await smtp.send_mail(
                f"{name}@example.test",
                [f"{name}-1@example.test", f"{name}-2@example.test"],
                f"Subject: {name}\r\n\r\n{name}\r\n",
            )

        async with anyio.create_task_group() as group:
            for name in names:
                group.start_soon(send, name)
    assert sorted(served) == sorted(names)
    for name in names:
        assert results[name].queue_id == f"{name.upper()}QUEUE"
        assert results[name].accepted == (f"{name}-1@example.test", f"{name}-2@example.test")

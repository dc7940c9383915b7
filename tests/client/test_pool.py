"""SMTPPool: reuse, limits, reconnecting, never sending a known message twice."""

from __future__ import annotations

import functools

import anyio
import pytest

import anyio_smtp
from anyio_smtp import (
    DeliveryUnknownError,
    InvalidArgumentError,
    SendResult,
    ServiceUnavailableError,
    SMTPPool,
)
from anyio_smtp.testing import SMTPTestServer, memory_stream_pair
from tests.client.scripted import PIPELINING_EHLO, Peer

SENDER = "pool@example.test"


def message(index: int) -> bytes:
    return f"Subject: message {index}\r\nX-Index: {index}\r\n\r\nbody {index}\r\n".encode()


def factory(server: SMTPTestServer) -> functools.partial[anyio_smtp.SessionOpener]:
    return functools.partial(anyio_smtp.connect, server.host, server.port)


def indexes(server: SMTPTestServer) -> list[int]:
    return sorted(int(m.data.split(b"X-Index: ")[1].split(b"\r\n")[0]) for m in server.messages)


async def test_sessions_are_reused() -> None:
    async with SMTPTestServer() as server, SMTPPool(factory(server)) as pool:
        for index in range(5):
            result = await pool.send_mail(SENDER, ["a@example.test"], message(index))
            assert result.reply.code == 250
    assert pool.connections_opened == 1
    assert server.sessions == 1
    assert indexes(server) == [0, 1, 2, 3, 4]


async def test_concurrent_sends_use_at_most_max_connections() -> None:
    async with (
        SMTPTestServer() as server,
        SMTPPool(factory(server), max_connections=3) as pool,
        anyio.create_task_group() as group,
    ):
        for index in range(12):
            group.start_soon(pool.send_mail, SENDER, ["a@example.test"], message(index))
    assert 1 <= pool.connections_opened <= 3
    assert indexes(server) == list(range(12))


async def test_message_limit_per_connection_opens_new_sessions() -> None:
    async with (
        SMTPTestServer() as server,
        SMTPPool(factory(server), max_messages_per_connection=2) as pool,
    ):
        for index in range(5):
            await pool.send_mail(SENDER, ["a@example.test"], message(index))
    assert pool.connections_opened == 3
    # Each exhausted session ended with QUIT.
    assert server.client_lines().count("QUIT") == 3


async def test_idle_sessions_past_the_limit_are_not_reused() -> None:
    async with SMTPTestServer() as server, SMTPPool(factory(server), idle_timeout=30) as pool:
        await pool.send_mail(SENDER, ["a@example.test"], message(0))
        (idle,) = pool._idle
        idle.idle_since -= 60  # as if a minute had passed
        await pool.send_mail(SENDER, ["a@example.test"], message(1))
    assert pool.connections_opened == 2
    assert idle.client.closed


async def test_421_reconnects_and_the_message_is_sent_once() -> None:
    async with SMTPTestServer() as server, SMTPPool(factory(server)) as pool:
        await pool.send_mail(SENDER, ["a@example.test"], message(0))
        server.reply("MAIL", "421 4.7.0 too many messages, reconnect", times=1, close=True)
        result = await pool.send_mail(SENDER, ["a@example.test"], message(1))
    assert result.reply.code == 250
    assert pool.connections_opened == 2
    assert indexes(server) == [0, 1]


async def test_retries_are_bounded() -> None:
    async with SMTPTestServer() as server, SMTPPool(factory(server), retries=1) as pool:
        server.reply("MAIL", "421 4.3.2 shutting down", close=True)
        with pytest.raises(ServiceUnavailableError):
            await pool.send_mail(SENDER, ["a@example.test"], message(0))
    assert pool.connections_opened == 2  # the first try and one retry
    assert server.messages == []


async def test_a_message_that_may_have_been_delivered_is_never_resent() -> None:
    opened = 0

    async def serve(peer: Peer) -> None:
        await peer.greet(PIPELINING_EHLO)
        for _ in range(3):
            await peer.line()
        await peer.send("250 ok", "250 ok", "354 go")
        await peer.data()
        await peer.close()  # the verdict is lost

    async def open_session() -> anyio_smtp.SMTPClient:
        nonlocal opened
        opened += 1
        client_end, server_end = memory_stream_pair()
        group.start_soon(_run_peer, serve, server_end)
        return await anyio_smtp.connect_stream(client_end, ehlo_domain="client.test")

    async with anyio.create_task_group() as group, SMTPPool(open_session) as pool:
        with pytest.raises(DeliveryUnknownError):
            await pool.send_mail(SENDER, ["a@example.test"], message(0))
    assert opened == 1


async def _run_peer(serve: object, stream: anyio_smtp.testing.MemoryByteStream) -> None:
    peer = Peer(stream)
    try:
        await serve(peer)  # type: ignore[operator]
    finally:
        await peer.close()


async def test_send_many_spreads_over_connections_in_input_order() -> None:
    async with SMTPTestServer() as server, SMTPPool(factory(server), max_connections=4) as pool:
        server.reply("RCPT", "550 5.1.1 no such user", match="nobody@")
        items = [
            (SENDER, ["nobody@example.test" if i % 10 == 3 else "a@example.test"], message(i))
            for i in range(100)
        ]
        outcomes = [outcome async for outcome in pool.send_many(items)]
    assert len(outcomes) == 100
    for index, outcome in enumerate(outcomes):
        if index % 10 == 3:
            assert isinstance(outcome, anyio_smtp.RecipientsRefusedError)
        else:
            assert isinstance(outcome, SendResult)
    assert indexes(server) == [i for i in range(100) if i % 10 != 3]
    assert 1 < pool.connections_opened <= 4


async def test_send_many_retries_messages_lost_to_a_421() -> None:
    async with SMTPTestServer() as server, SMTPPool(factory(server), max_connections=2) as pool:
        server.reply("MAIL", "421 4.7.0 reconnect please", times=2, close=True)
        items = [(SENDER, ["a@example.test"], message(i)) for i in range(30)]
        outcomes = [outcome async for outcome in pool.send_many(items)]
    assert all(isinstance(outcome, SendResult) for outcome in outcomes)
    # Every message arrived exactly once, despite the two lost sessions.
    assert indexes(server) == list(range(30))
    assert pool.connections_opened >= 3


async def test_send_many_needs_the_pool_entered() -> None:
    async with SMTPTestServer() as server:
        pool = SMTPPool(factory(server))
        with pytest.raises(InvalidArgumentError):
            async for _ in pool.send_many([]):
                pass


def test_arguments_are_checked() -> None:
    with pytest.raises(InvalidArgumentError):
        SMTPPool(lambda: None, max_connections=0)  # type: ignore[arg-type,return-value]
    with pytest.raises(InvalidArgumentError):
        SMTPPool("not callable")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        SMTPPool(lambda: None, retries=-1)  # type: ignore[arg-type,return-value]


async def test_the_servers_mailmax_limits_each_session() -> None:
    extensions = ["PIPELINING", "8BITMIME", "LIMITS MAILMAX=2"]
    async with SMTPTestServer(extensions=extensions) as server, SMTPPool(factory(server)) as pool:
        for index in range(5):
            await pool.send_mail(SENDER, ["a@example.test"], message(index))
        items = [(SENDER, ["a@example.test"], message(i)) for i in range(5, 10)]
        outcomes = [outcome async for outcome in pool.send_many(items)]
    assert all(isinstance(outcome, SendResult) for outcome in outcomes)
    assert indexes(server) == list(range(10))
    # No session carried more than two messages.
    per_session: dict[int, int] = {}
    for received in server.messages:
        per_session[received.session] = per_session.get(received.session, 0) + 1
    assert max(per_session.values()) <= 2

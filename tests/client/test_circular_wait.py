"""No circular wait between a session, its input and the pool's in-order window.

A producer that hands over the next message only once the outcome of the
previous one is known must not stall the batch: the engine may not hold a
message unwritten (the data after a 354) while it waits for the next one.
Each test is bounded by ``fail_after``: a circular wait fails, it does not hang.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import anyio

import anyio_smtp
from anyio_smtp import SendResult, SMTPPool
from anyio_smtp._transaction import BatchItem
from anyio_smtp.testing import SMTPTestServer

SENDER = "loop@example.test"
COUNT = 6
#: Far more than the exchanges need on loopback; a circular wait never ends.
BOUND = 20


def message(index: int) -> bytes:
    return f"Subject: message {index}\r\nX-Index: {index}\r\n\r\nbody {index}\r\n".encode()


class OutcomeGatedProducer:
    """Yields message n+1 only after the caller saw the outcome of message n."""

    def __init__(self) -> None:
        self.seen = 0
        self._changed = anyio.Event()

    def saw_outcome(self) -> None:
        self.seen += 1
        self._changed.set()
        self._changed = anyio.Event()

    async def messages(self) -> AsyncIterator[BatchItem]:
        for index in range(COUNT):
            while self.seen < index:
                await self._changed.wait()
            yield (SENDER, ["a@example.test"], message(index))


def delivered_indexes(server: SMTPTestServer) -> list[int]:
    return sorted(int(m.data.split(b"X-Index: ")[1].split(b"\r\n")[0]) for m in server.messages)


async def test_a_session_batch_fed_by_its_own_outcomes_finishes() -> None:
    producer = OutcomeGatedProducer()
    outcomes: list[SendResult | anyio_smtp.SMTPError] = []
    with anyio.fail_after(BOUND):
        async with SMTPTestServer() as server:
            async with anyio_smtp.connect(server.host, server.port) as smtp:
                assert "PIPELINING" in smtp.capabilities
                async for outcome in smtp.send_many(producer.messages()):
                    outcomes.append(outcome)
                    producer.saw_outcome()
            assert delivered_indexes(server) == list(range(COUNT))
    assert all(isinstance(outcome, SendResult) for outcome in outcomes)
    assert len(outcomes) == COUNT


async def test_a_pool_batch_fed_by_its_own_outcomes_finishes() -> None:
    producer = OutcomeGatedProducer()
    outcomes: list[SendResult | anyio_smtp.SMTPError] = []
    with anyio.fail_after(BOUND):
        async with SMTPTestServer() as server:
            opener = functools.partial(anyio_smtp.connect, server.host, server.port)
            async with SMTPPool(opener, max_connections=2) as pool:
                async for outcome in pool.send_many(producer.messages(), max_in_flight=1):
                    outcomes.append(outcome)
                    producer.saw_outcome()
            assert delivered_indexes(server) == list(range(COUNT))
    assert all(isinstance(outcome, SendResult) for outcome in outcomes)


async def test_a_pool_batch_larger_than_its_window_finishes() -> None:
    # 2 sessions x 1 in flight x 2 = a window of 4 messages, for 40: the
    # oldest unanswered message must always be on its way.
    items = [(SENDER, ["a@example.test"], message(index)) for index in range(40)]
    with anyio.fail_after(BOUND):
        async with SMTPTestServer() as server:
            opener = functools.partial(anyio_smtp.connect, server.host, server.port)
            async with SMTPPool(opener, max_connections=2) as pool:
                outcomes = [o async for o in pool.send_many(items, max_in_flight=1)]
            assert delivered_indexes(server) == list(range(40))
    assert all(isinstance(outcome, SendResult) for outcome in outcomes)


async def test_a_memory_stream_is_read_as_it_fills_and_ends_when_closed() -> None:
    send, receive = anyio.create_memory_object_stream[BatchItem](COUNT)
    outcomes: list[SendResult | anyio_smtp.SMTPError] = []
    with anyio.fail_after(BOUND):
        async with SMTPTestServer() as server:
            async with anyio_smtp.connect(server.host, server.port) as smtp:
                send.send_nowait((SENDER, ["a@example.test"], message(0)))
                async for outcome in smtp.send_many(receive):
                    outcomes.append(outcome)
                    # Each outcome lets the next message in; the last one closes.
                    if len(outcomes) < COUNT:
                        send.send_nowait((SENDER, ["a@example.test"], message(len(outcomes))))
                    else:
                        send.close()
            assert delivered_indexes(server) == list(range(COUNT))
    assert all(isinstance(outcome, SendResult) for outcome in outcomes)

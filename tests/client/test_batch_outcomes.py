"""Batch outcomes: each names its message, none is lost when the loop is left early.

Every outcome of ``send_many`` carries ``index``, its message's position in
the input.  A caller that leaves the loop early finds the outcomes it did not
read in the batch's ``unread``: together with those it read, they name every
message that reached the server.  Errors raised inside ``async with
SMTPPool(...)`` come out as they were raised.
"""

from __future__ import annotations

import collections.abc
import functools
import gc
from contextlib import aclosing
from typing import Any

import anyio
import pytest

import anyio_smtp
from anyio_smtp import (
    DeliveryUnknownError,
    InvalidArgumentError,
    RecipientsRefusedError,
    SendBatch,
    SendResult,
    SMTPClient,
    SMTPError,
    SMTPPool,
)
from anyio_smtp.testing import SMTPTestServer

SENDER = "sender@example.test"


def message(index: int) -> bytes:
    return f"Subject: message {index}\r\nX-Index: {index}\r\n\r\nbody {index}\r\n".encode()


def item(index: int, rcpt: str = "a@example.test") -> tuple[str, list[str], bytes]:
    return (SENDER, [rcpt], message(index))


def indexes(server: SMTPTestServer) -> list[int]:
    return sorted(int(m.data.split(b"X-Index: ")[1].split(b"\r\n")[0]) for m in server.messages)


async def connect(server: SMTPTestServer) -> SMTPClient:
    return await anyio_smtp.connect(server.host, server.port)


def factory(server: SMTPTestServer) -> functools.partial[anyio_smtp.SessionOpener]:
    return functools.partial(anyio_smtp.connect, server.host, server.port)


def mixed_batch(count: int) -> list[Any]:
    """Every fifth recipient is refused, item 7 is malformed."""
    items: list[Any] = [
        item(i, "nobody@example.test" if i % 5 == 3 else "a@example.test") for i in range(count)
    ]
    items[7] = (SENDER, None, message(7))
    return items


def check_indexed(outcomes: list[SendResult | SMTPError], count: int) -> None:
    assert [outcome.index for outcome in outcomes] == list(range(count))
    for index, outcome in enumerate(outcomes):
        if index == 7:
            assert isinstance(outcome, InvalidArgumentError)
        elif index % 5 == 3:
            assert isinstance(outcome, RecipientsRefusedError)
        else:
            assert isinstance(outcome, SendResult)


# -- each outcome says which message it belongs to ---------------------------------------


@pytest.mark.parametrize("max_in_flight", [1, 16])
async def test_client_outcomes_carry_their_index(max_in_flight: int) -> None:
    async with SMTPTestServer() as server, await connect(server) as smtp:
        server.reply("RCPT", "550 5.1.1 no such user", match="nobody@")
        batch = smtp.send_many(mixed_batch(20), max_in_flight=max_in_flight)
        async with aclosing(batch) as results:
            outcomes = [outcome async for outcome in results]
        assert batch.unread == ()
        single = await smtp.send_mail(SENDER, ["a@example.test"], message(99))
    check_indexed(outcomes, 20)
    assert single.index is None


async def test_pool_outcomes_carry_their_index() -> None:
    async with SMTPTestServer() as server, SMTPPool(factory(server), max_connections=3) as pool:
        server.reply("RCPT", "550 5.1.1 no such user", match="nobody@")
        async with aclosing(pool.send_many(mixed_batch(40))) as results:
            outcomes = [outcome async for outcome in results]
        single = await pool.send_mail(SENDER, ["a@example.test"], message(99))
    check_indexed(outcomes, 40)
    assert single.index is None


async def test_a_failure_shared_by_several_messages_gives_each_its_own_index() -> None:
    async with SMTPTestServer() as server, await connect(server) as smtp:
        server.reply("MAIL", "421 4.3.2 going down", match="<late@", close=True)
        items = [
            item(0),
            item(1),
            *(("late@example.test", ["a@example.test"], message(i)) for i in range(2, 6)),
        ]
        outcomes: list[SendResult | SMTPError] = []

        async def run() -> None:
            async with aclosing(smtp.send_many(items)) as results:
                async for outcome in results:
                    outcomes.append(outcome)

        with pytest.raises(SMTPError) as raised:
            await run()
    indexes_seen = [outcome.index for outcome in outcomes]
    assert indexes_seen == list(range(len(outcomes)))
    errors = [outcome for outcome in outcomes if isinstance(outcome, SMTPError)]
    assert errors
    # One object per message, even where the session's one failure decided several.
    assert len({id(error) for error in errors}) == len(errors)
    assert isinstance(raised.value, SMTPError)


async def test_send_mail_results_and_errors_have_no_index() -> None:
    async with SMTPTestServer() as server, await connect(server) as smtp:
        server.reply("RCPT", "550 5.1.1 no such user")
        with pytest.raises(RecipientsRefusedError) as raised:
            await smtp.send_mail(SENDER, ["a@example.test"], message(0))
    assert raised.value.index is None


# -- leaving a batch early -----------------------------------------------------------------


def check_accounted(
    server: SMTPTestServer, read: list[SendResult | SMTPError], batch: SendBatch
) -> None:
    """Every message that reached the server is among the outcomes, read or unread."""
    outcomes = [*read, *batch.unread]
    seen = [outcome.index for outcome in outcomes]
    assert None not in seen
    assert seen == sorted(i for i in seen if i is not None)
    assert len(set(seen)) == len(seen)
    delivered = {o.index for o in outcomes if isinstance(o, SendResult)}
    maybe = {o.index for o in outcomes if isinstance(o, DeliveryUnknownError)}
    received = set(indexes(server))
    assert delivered <= received <= delivered | maybe
    assert len(indexes(server)) == len(received)  # each at most once


@pytest.mark.parametrize("max_in_flight", [1, 16])
async def test_leaving_a_client_batch_early_keeps_the_unread_outcomes(max_in_flight: int) -> None:
    async with SMTPTestServer() as server:
        async with await connect(server) as smtp:
            batch = smtp.send_many([item(i) for i in range(10)], max_in_flight=max_in_flight)
            read: list[SendResult | SMTPError] = []
            async with aclosing(batch) as results:
                async for outcome in results:
                    read.append(outcome)
                    break
    assert len(read) == 1
    check_accounted(server, read, batch)


async def test_leaving_a_pool_batch_early_keeps_every_outcome_that_was_decided() -> None:
    async with SMTPTestServer() as server:
        async with SMTPPool(factory(server), max_connections=3) as pool:
            batch = pool.send_many([item(i) for i in range(30)])
            read: list[SendResult | SMTPError] = []
            async with aclosing(batch) as results:
                async for outcome in results:
                    read.append(outcome)
                    if len(read) == 2:
                        break
            gc.collect()
            # The pool still works.
            await pool.send_mail(SENDER, ["a@example.test"], message(100))
    assert len(read) == 2
    server.messages = [m for m in server.messages if b"X-Index: 100\r\n" not in m.data]
    check_accounted(server, read, batch)


async def test_leaving_a_pool_batch_when_every_session_delivered_more() -> None:
    """Sessions deliver while the caller is slow to read: nothing is lost on leaving."""
    async with SMTPTestServer() as server:
        async with SMTPPool(factory(server), max_connections=3) as pool:
            batch = pool.send_many([item(i) for i in range(12)])
            async with aclosing(batch) as results:
                async for _first in results:
                    # Let the other sessions deliver what they have.
                    await server.wait_until(lambda: len(server.messages) >= 4)
                    break
            gc.collect()
    check_accounted(server, [_first], batch)
    assert len(batch.unread) >= 3
    assert [o for o in batch.unread if isinstance(o, SendResult)]


async def test_leaving_a_pool_batch_early_inside_aclosing_warns_of_nothing() -> None:
    async with SMTPTestServer() as server, SMTPPool(factory(server)) as pool:
        for _ in range(3):
            async with aclosing(pool.send_many([item(i) for i in range(5)])) as results:
                async for _outcome in results:
                    break
            gc.collect()
        await anyio.lowlevel.checkpoint()
    gc.collect()


# -- errors inside `async with SMTPPool(...)` ----------------------------------------------


async def test_an_error_of_the_callers_code_leaves_the_pool_unchanged() -> None:
    async with SMTPTestServer() as server:
        with pytest.raises(ValueError, match="the caller's own") as raised:
            async with SMTPPool(factory(server)):
                raise ValueError("the caller's own")
    assert type(raised.value) is ValueError


async def test_an_error_of_pool_send_mail_leaves_the_pool_unchanged() -> None:
    async with SMTPTestServer() as server:
        server.reply("RCPT", "550 5.1.1 no such user")
        with pytest.raises(RecipientsRefusedError) as raised:
            async with SMTPPool(factory(server)) as pool:
                await pool.send_mail(SENDER, ["nobody@example.test"], message(0))
    assert raised.value.rejected.keys() == {"nobody@example.test"}


async def test_an_error_raised_while_a_pool_batch_runs_leaves_the_pool_unchanged() -> None:
    async def run(server: SMTPTestServer) -> None:
        async with SMTPPool(factory(server), max_connections=2) as pool:
            async with aclosing(pool.send_many([item(i) for i in range(10)])) as results:
                async for _outcome in results:
                    raise KeyError("stop")

    async with SMTPTestServer() as server:
        with pytest.raises(KeyError):
            await run(server)


async def test_a_failing_pool_task_is_not_lost_when_the_callers_code_fails_too() -> None:
    started = anyio.Event()

    async def broken() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            raise RuntimeError("a pool task failed")

    async def run(server: SMTPTestServer) -> None:
        async with SMTPPool(factory(server)) as pool:
            assert pool._group is not None
            pool._group.start_soon(broken)
            await started.wait()
            raise ValueError("the caller's own")

    async with SMTPTestServer() as server:
        with pytest.raises(BaseExceptionGroup) as raised:
            await run(server)
    leaves = raised.value.exceptions
    assert {type(leaf) for leaf in leaves} == {ValueError, RuntimeError}


async def test_a_batch_is_an_async_generator() -> None:
    async with SMTPTestServer() as server, await connect(server) as smtp:
        batch = smtp.send_many([item(0), item(1)])
        assert isinstance(batch, collections.abc.AsyncGenerator)
        first = await batch.asend(None)
        assert isinstance(first, SendResult)
        with pytest.raises(KeyError):
            await batch.athrow(KeyError("from the caller"))
        with pytest.raises(StopAsyncIteration):
            await batch.__anext__()
        await batch.aclose()
    # The exception ended the batch: the second message's outcome was kept.
    assert [outcome.index for outcome in batch.unread] == [1]
    check_accounted(server, [first], batch)

"""Batches with malformed items, email message bodies and early leaving, against Postfix.

Postfix offers PIPELINING and CHUNKING, so the same batch goes with DATA and
with BDAT, through one client and through a pool.  A malformed item gets its
own error and the batch goes on; an email message as a body arrives without
its Bcc.  A caller that leaves a batch early finds every message that reached
the Maildir among the outcomes it read or left unread.
"""

from __future__ import annotations

import functools
import uuid
from contextlib import aclosing
from email.message import EmailMessage
from typing import Any

import pytest

import anyio_smtp
from anyio_smtp import (
    DeliveryUnknownError,
    InvalidArgumentError,
    InvalidMessageError,
    SendBatch,
    SendResult,
    SMTPError,
    SMTPPool,
)

from .servers.postfix import DeliveredMessage, PostfixInstance
from .test_batch_postfix import ALICE, connect, delivered, recipient

TRANSFERS = ["data", "bdat"]


def raw(run: str, index: int) -> bytes:
    return (
        f"From: {ALICE}\r\nTo: {recipient(index)}\r\nSubject: {run}-{index:03d}\r\n\r\n"
        f"message {index} of {run}\r\n"
    ).encode()


def email_body(run: str, index: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = ALICE
    message["To"] = recipient(index)
    message["Bcc"] = "blind@example.test"
    message["Subject"] = f"{run}-{index:03d}"
    message.set_content(f"message {index} of {run}\n")
    return message


def batch(run: str) -> list[Any]:
    """Good items 0, 1, 3, 6 and 7; malformed 2, 4, 5."""
    return [
        (ALICE, recipient(0), raw(run, 0)),
        (ALICE, [recipient(1)], email_body(run, 1)),
        (ALICE, None, raw(run, 2)),
        (ALICE, [recipient(3)], raw(run, 3)),
        (ALICE, [recipient(4)], 42),
        ("not an <address>", [recipient(5)], raw(run, 5)),
        email_body(run, 6),
        (ALICE, [recipient(7)], [b"Subject: ", f"{run}-007\r\n\r\nchunked\r\n".encode()]),
    ]


GOOD = [0, 1, 3, 6, 7]


def by_subject(stored: list[DeliveredMessage]) -> dict[str, list[DeliveredMessage]]:
    found: dict[str, list[DeliveredMessage]] = {}
    for item in stored:
        found.setdefault(str(item.parsed()["Subject"]), []).append(item)
    return found


async def check_batch(
    postfix: PostfixInstance, run: str, outcomes: list[SendResult | SMTPError]
) -> None:
    assert [outcome.index for outcome in outcomes] == list(range(8))
    for index, outcome in enumerate(outcomes):
        if index in GOOD:
            assert isinstance(outcome, SendResult), (index, outcome)
        else:
            assert isinstance(outcome, InvalidArgumentError), (index, outcome)
    assert isinstance(outcomes[4], InvalidMessageError)
    found = by_subject(await delivered(postfix, run))
    assert sorted(found) == [f"{run}-{index:03d}" for index in GOOD]
    for index in GOOD:
        copies = found[f"{run}-{index:03d}"]
        # Item 6 takes its envelope from its header fields, Bcc included.
        expected = {recipient(index), "blind@example.test"} if index == 6 else {recipient(index)}
        assert {str(copy.parsed()["Delivered-To"]) for copy in copies} == expected
        assert len(copies) == len(expected)
        for copy in copies:
            assert b"Bcc:" not in copy.headers
            assert b"blind@example.test>" not in copy.headers


@pytest.mark.parametrize("transfer", TRANSFERS)
async def test_client_batch_with_malformed_items(postfix: PostfixInstance, transfer: Any) -> None:
    run = uuid.uuid4().hex
    _tap, smtp = await connect(postfix)
    async with smtp:
        async with aclosing(smtp.send_many(batch(run), transfer=transfer)) as results:
            outcomes = [outcome async for outcome in results]
        assert not smtp.closed
    await check_batch(postfix, run, outcomes)


def pool_of(postfix: PostfixInstance, **options: Any) -> SMTPPool:
    factory = functools.partial(
        anyio_smtp.connect, postfix.host, postfix.plain_port, ehlo_domain="client.example.test"
    )
    return SMTPPool(factory, **options)


@pytest.mark.parametrize("transfer", TRANSFERS)
async def test_pool_batch_with_malformed_items(postfix: PostfixInstance, transfer: Any) -> None:
    run = uuid.uuid4().hex
    async with pool_of(postfix, max_connections=2) as pool:
        async with aclosing(pool.send_many(batch(run), transfer=transfer)) as results:
            outcomes = [outcome async for outcome in results]
    await check_batch(postfix, run, outcomes)


async def check_accounted(
    postfix: PostfixInstance, run: str, read: list[SendResult | SMTPError], sent: SendBatch
) -> None:
    outcomes = [*read, *sent.unread]
    seen = [outcome.index for outcome in outcomes]
    assert seen == list(range(len(seen)))
    accepted = {o.index for o in outcomes if isinstance(o, SendResult)}
    maybe = {o.index for o in outcomes if isinstance(o, DeliveryUnknownError)}
    found = by_subject(await delivered(postfix, run))
    arrived = {int(subject.rpartition("-")[2]) for subject in found}
    assert all(len(copies) == 1 for copies in found.values())
    assert accepted <= arrived <= accepted | maybe


@pytest.mark.parametrize("transfer", TRANSFERS)
async def test_leaving_a_client_batch_early_accounts_for_every_message(
    postfix: PostfixInstance, transfer: Any
) -> None:
    run = uuid.uuid4().hex
    _tap, smtp = await connect(postfix)
    read: list[SendResult | SMTPError] = []
    async with smtp:
        sent = smtp.send_many(
            [(ALICE, recipient(i), raw(run, i)) for i in range(20)], transfer=transfer
        )
        async with aclosing(sent) as results:
            async for outcome in results:
                read.append(outcome)
                break
    assert len(read) == 1
    await check_accounted(postfix, run, read, sent)
    if transfer == "bdat":
        # Several BDAT messages share a round: their results were decided with the first.
        assert sum(isinstance(o, SendResult) for o in sent.unread) >= 1


@pytest.mark.parametrize("transfer", TRANSFERS)
async def test_leaving_a_pool_batch_early_accounts_for_every_message(
    postfix: PostfixInstance, transfer: Any
) -> None:
    run = uuid.uuid4().hex
    read: list[SendResult | SMTPError] = []
    async with pool_of(postfix, max_connections=3) as pool:
        sent = pool.send_many(
            [(ALICE, recipient(i), raw(run, i)) for i in range(30)], transfer=transfer
        )
        async with aclosing(sent) as results:
            async for outcome in results:
                read.append(outcome)
                if len(read) == 3:
                    break
    assert len(read) == 3
    await check_accounted(postfix, run, read, sent)

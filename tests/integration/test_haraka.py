"""anyio_smtp against a real Haraka 3.3.4 on loopback, on asyncio and trio.

Haraka is strict where a pipelining client can go wrong: it refuses every command that
arrives in the same write as the end of a message's data (``503 Bad sequence of commands
- pipelined after end of DATA``) and it refuses bare LF in DATA. Its queue hook (ours)
writes each message to a file before the final ``250`` is sent, so once a send has
returned, every accepted message is already in the Maildir: copies are counted at once,
without waiting.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing

import anyio
import pytest

import anyio_smtp
from anyio_smtp import (
    InsecureAuthError,
    RecipientsRefusedError,
    SendResult,
    SMTPClient,
    SMTPError,
    SMTPPool,
)
from anyio_smtp._transaction import BatchItem

from .messages import marker_of, numbered_message
from .servers.haraka import HarakaInstance

ALICE = "alice@example.test"
COUNT = 50

#: Dot-leading lines, a lone dot, a bare LF (sent as CRLF) and UTF-8 text.
BODY = (
    "Message {index} of run {run}.\r\n"
    ".A line that starts with a dot\r\n"
    ".\r\n"
    "..two dots\r\n"
    "bare LF follows\n"
    "UTF-8: naïve café, Ελληνικά, 日本語 ✓\r\n"
    "marker {marker}\r\n"
)


def recipient(index: int) -> str:
    return f"haraka{index}@example.org"


def message(run: str, index: int) -> tuple[bytes, bytes]:
    """The message as sent, and its body as Haraka stores it (CRLF line endings)."""
    return numbered_message(BODY, ALICE, recipient(index), run, index, stored_newline="\r\n")


def batch_of(run: str, count: int = COUNT) -> list[BatchItem]:
    return [(ALICE, recipient(index), message(run, index)[0]) for index in range(count)]


def opener(haraka: HarakaInstance) -> Callable[[], Awaitable[SMTPClient]]:
    """Connect to the plain port, STARTTLS (the test CA verified), then AUTH."""
    context = haraka.client_ssl_context()

    async def open_session() -> SMTPClient:
        client = await anyio_smtp.connect_starttls(
            haraka.host,
            haraka.port,
            ssl_context=context,
            tls_hostname="localhost",
            ehlo_domain="client.example.test",
        )
        try:
            await client.login(ALICE, haraka.users[ALICE])
        except BaseException:
            with anyio.CancelScope(shield=True):
                await client.aclose()
            raise
        return client

    return open_session


def check_delivery(
    haraka: HarakaInstance, run: str, outcomes: Sequence[object], count: int = COUNT
) -> None:
    """Every outcome is a SendResult for its recipient, and every message of the run is
    in the Maildir exactly once, body byte for byte. All problems are reported at once."""
    problems: list[str] = []
    if len(outcomes) != count:
        problems.append(f"{len(outcomes)} outcomes for {count} messages")
    failures = [
        f"  #{index}: {type(outcome).__name__}: {outcome}"
        for index, outcome in enumerate(outcomes)
        if not isinstance(outcome, SendResult)
    ]
    if failures:
        problems.append(f"{len(failures)} of {count} messages were not sent:")
        problems += failures[:5]
    accepted = [outcome.accepted for outcome in outcomes if isinstance(outcome, SendResult)]
    if not failures and accepted != [(recipient(index),) for index in range(count)]:
        problems.append(f"accepted recipients out of order: {accepted[:5]}")

    stored: dict[str, list[bytes]] = {}
    for item in haraka.messages_containing(run.encode()):
        mark = str(item.parsed()["Subject"])
        stored.setdefault(mark, []).append(item.body)
        if item.envelope_recipients != (recipient(int(mark[-3:])),):
            problems.append(f"{mark} stored for {item.envelope_recipients}")
    expected = [marker_of(run, index) for index in range(count)]
    missing = [mark for mark in expected if mark not in stored]
    twice = [mark for mark in expected if len(stored.get(mark, ())) > 1]
    if missing:
        problems.append(f"{len(missing)} of {count} messages are not in the Maildir")
    if twice:
        problems.append(f"{len(twice)} messages are in the Maildir more than once: {twice[:3]}")
    for index, mark in enumerate(expected):
        bodies = stored.get(mark, [])
        if bodies and any(body != message(run, index)[1] for body in bodies):
            problems.append(f"{mark} was stored with another body: {bodies[0]!r}")
    assert not problems, "\n".join(problems)


# -- one message -----------------------------------------------------------------------------


async def test_starttls_login_and_one_message_arrives_once(haraka: HarakaInstance) -> None:
    run = uuid.uuid4().hex
    data, body = message(run, 0)
    async with await opener(haraka)() as smtp:
        assert smtp.tls
        assert smtp.authenticated
        assert "PIPELINING" in smtp.capabilities
        assert {"PLAIN", "LOGIN"} <= smtp.capabilities.auth_mechanisms
        result = await smtp.send_mail(ALICE, [recipient(0)], data)
    assert result.reply.code == 250
    assert result.accepted == (recipient(0),)
    assert result.queue_id is not None
    assert result.queue_id in result.reply.message
    (stored,) = haraka.messages_containing(marker_of(run, 0).encode())
    assert stored.body == body
    assert stored.envelope_recipients == (recipient(0),)
    assert f"Return-Path: <{ALICE}>\r\n".encode() in stored.data


@pytest.mark.parametrize("transfer", ["data", None])
async def test_one_message_per_session_with_data_and_by_default(
    haraka: HarakaInstance, transfer: str | None
) -> None:
    """One send_mail per session: the end of the data is the last thing written
    before its reply is read (the QUIT only follows the reply)."""
    run = uuid.uuid4().hex
    data = message(run, 0)[0]
    async with await opener(haraka)() as smtp:
        # Haraka offers no CHUNKING: the default ("auto") is DATA as well.
        assert "CHUNKING" not in smtp.capabilities
        if transfer is None:
            result = await smtp.send_mail(ALICE, recipient(0), data)
        else:
            result = await smtp.send_mail(ALICE, recipient(0), data, transfer="data")
    check_delivery(haraka, run, [result], 1)


async def test_implicit_tls_login_and_one_message(haraka: HarakaInstance) -> None:
    run = uuid.uuid4().hex
    async with anyio_smtp.connect(
        haraka.host,
        haraka.smtps_port,
        tls=True,
        ssl_context=haraka.client_ssl_context(),
        tls_hostname="localhost",
        ehlo_domain="client.example.test",
    ) as smtp:
        assert smtp.tls
        assert "STARTTLS" not in smtp.capabilities
        await smtp.login(ALICE, haraka.users[ALICE], mechanism="LOGIN")
        result = await smtp.send_mail(ALICE, recipient(0), message(run, 0)[0])
    check_delivery(haraka, run, [result], 1)


async def test_login_before_starttls_is_refused_by_the_client(haraka: HarakaInstance) -> None:
    """Haraka offers AUTH in plaintext to a loopback client; the client keeps the
    password off the wire all the same."""
    async with anyio_smtp.connect(
        haraka.host, haraka.port, ehlo_domain="client.example.test"
    ) as smtp:
        assert not smtp.tls
        assert "STARTTLS" in smtp.capabilities
        assert "PLAIN" in smtp.capabilities.auth_mechanisms
        with pytest.raises(InsecureAuthError):
            await smtp.login(ALICE, haraka.users[ALICE])


async def test_unauthenticated_recipients_are_refused(haraka: HarakaInstance) -> None:
    run = uuid.uuid4().hex
    async with anyio_smtp.connect_starttls(
        haraka.host,
        haraka.port,
        ssl_context=haraka.client_ssl_context(),
        tls_hostname="localhost",
        ehlo_domain="client.example.test",
    ) as smtp:
        with pytest.raises(RecipientsRefusedError) as refused:
            await smtp.send_mail(ALICE, recipient(0), message(run, 0)[0])
        assert refused.value.reply.code == 550
        # The session stays usable after the refusal.
        await smtp.noop()
    assert haraka.messages_containing(run.encode()) == []


# -- many messages ---------------------------------------------------------------------------


async def test_send_many_50_pipelined_over_starttls_and_auth(
    haraka: HarakaInstance, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="anyio_smtp")
    run = uuid.uuid4().hex
    async with await opener(haraka)() as smtp:
        assert "PIPELINING" in smtp.capabilities
        async with aclosing(smtp.send_many(batch_of(run))) as results:
            outcomes = [outcome async for outcome in results]
    check_delivery(haraka, run, outcomes)
    # The batch did meet Haraka's refusal of commands sent with an end of data,
    # once, and went on one end of data per write.
    switches = [r for r in caplog.records if "pipelined after the end" in r.getMessage()]
    assert len(switches) == 1


async def test_pool_send_many_delivers_each_message_once(haraka: HarakaInstance) -> None:
    run = uuid.uuid4().hex
    async with SMTPPool(opener(haraka), max_connections=4) as pool:
        outcomes = [outcome async for outcome in pool.send_many(batch_of(run))]
    check_delivery(haraka, run, outcomes)


async def test_pool_send_mail_from_20_tasks_delivers_each_message_once(
    haraka: HarakaInstance,
) -> None:
    run = uuid.uuid4().hex
    tasks = 20
    per_task = 3
    count = tasks * per_task
    outcomes: list[SendResult | SMTPError | None] = [None] * count

    async with SMTPPool(opener(haraka), max_connections=4) as pool:

        async def sender(task: int) -> None:
            for step in range(per_task):
                index = task * per_task + step
                data = message(run, index)[0]
                try:
                    outcomes[index] = await pool.send_mail(ALICE, recipient(index), data)
                except SMTPError as error:
                    outcomes[index] = error

        async with anyio.create_task_group() as group:
            for task in range(tasks):
                group.start_soon(sender, task)

    check_delivery(haraka, run, outcomes, count)


async def test_haraka_stays_on_loopback(haraka: HarakaInstance) -> None:
    """Its log shows no DNS query and no outbound delivery (checked again at the end
    of the session)."""
    async with await opener(haraka)() as smtp:
        await smtp.send_mail(ALICE, "someone@gmail.com", message(uuid.uuid4().hex, 0)[0])
    assert haraka.leaks() == []


def test_the_installer_installs_the_version_the_tests_expect() -> None:
    from .servers.haraka import HARAKA_VERSION, INSTALLER

    assert f"haraka_version={HARAKA_VERSION}\n" in INSTALLER.read_text(encoding="utf-8")

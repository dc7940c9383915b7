"""A 60-recipient message through a Postfix that takes only a few recipients per message."""

from __future__ import annotations

import re
import uuid

import anyio

import anyio_smtp

from .servers.postfix import PostfixFactory, PostfixInstance

LIMIT = 7


async def test_every_recipient_exactly_once_despite_the_limit(
    postfix_factory: PostfixFactory,
) -> None:
    limited: PostfixInstance = await anyio.to_thread.run_sync(
        lambda: postfix_factory(recipient_limit=LIMIT)
    )
    mark = uuid.uuid4().hex
    recipients = [f"user{i:02d}@example.test" for i in range(60)]
    body = f"Subject: {mark}\r\n\r\nsixty recipients\r\n".encode()
    async with anyio_smtp.connect(limited.host, limited.plain_port) as smtp:
        result = await smtp.send_mail("sender@example.test", recipients, body)
    assert result.accepted == tuple(recipients)
    assert result.rejected == {}
    stored = await anyio.to_thread.run_sync(limited.wait_for_messages, 60, 30.0)
    ours = [m for m in stored if mark.encode() in m.data]
    delivered_to = sorted(
        re.search(rb"^Delivered-To: (\S+)$", m.data, re.M)[1].decode()  # type: ignore[index]
        for m in ours
    )
    assert delivered_to == recipients  # each one, exactly once

"""Recipient limits (RFC 9422 LIMITS, 452 "too many recipients") and LMTP (RFC 2033)."""

from __future__ import annotations

import pytest

import anyio_smtp
from anyio_smtp import RecipientsRefusedError, SendResult
from anyio_smtp._protocol.capabilities import Capabilities
from anyio_smtp._transaction import split_recipients
from anyio_smtp.testing import SMTPTestServer
from tests.client.scripted import Peer, scripted

SENDER = "s@example.test"
BODY = b"Subject: many\r\n\r\nhello\r\n"


def test_limits_are_parsed() -> None:
    caps = Capabilities.from_ehlo(
        ["mx", "LIMITS RCPTMAX=20 MAILMAX=100 RCPTDOMAINMAX=3 BAD=x ZERO=0 FUTURE=7"]
    )
    assert caps.limits == {"RCPTMAX": 20, "MAILMAX": 100, "RCPTDOMAINMAX": 3, "FUTURE": 7}
    assert Capabilities.from_ehlo(["mx"]).limits == {}


@pytest.mark.parametrize(
    ("recipients", "rcpt_max", "domain_max", "groups"),
    [
        (["a@x", "b@x", "c@x"], None, None, [["a@x", "b@x", "c@x"]]),
        (["a@x", "b@x", "c@x"], 2, None, [["a@x", "b@x"], ["c@x"]]),
        (["a@x", "b@y", "c@x", "d@z"], None, 2, [["a@x", "b@y", "c@x"], ["d@z"]]),
        (["a@x", "b@X", "c@y"], None, 1, [["a@x", "b@X"], ["c@y"]]),
        (
            [f"r{i}@x" for i in range(7)],
            3,
            1,
            [["r0@x", "r1@x", "r2@x"], ["r3@x", "r4@x", "r5@x"], ["r6@x"]],
        ),
    ],
)
def test_split_recipients(
    recipients: list[str], rcpt_max: int | None, domain_max: int | None, groups: list[list[str]]
) -> None:
    assert split_recipients(recipients, rcpt_max=rcpt_max, domain_max=domain_max) == groups


async def test_rcptmax_splits_a_message_into_transactions_over_tcp() -> None:
    extensions = ["PIPELINING", "8BITMIME", "LIMITS RCPTMAX=3 RCPTDOMAINMAX=2"]
    recipients = [f"r{i}@d{i % 3}.example" for i in range(8)]
    async with SMTPTestServer(extensions=extensions) as server:
        server.reply("RCPT", "550 5.1.1 no such user", match="r5@")
        async with anyio_smtp.connect(server.host, server.port) as smtp:
            result = await smtp.send_mail(SENDER, recipients, BODY)
    assert set(result.accepted) == set(recipients) - {"r5@d2.example"}
    assert result.accepted == tuple(r for r in recipients if r != "r5@d2.example")
    assert list(result.rejected) == ["r5@d2.example"]
    delivered = [r for m in server.messages for r in m.recipients]
    assert sorted(delivered) == sorted(result.accepted)  # each exactly once
    for message in server.messages:
        assert len(message.recipients) <= 3
        assert len({r.split("@")[1] for r in message.recipients}) <= 2
        assert message.data == BODY


async def test_452_too_many_recipients_continues_in_a_new_transaction() -> None:
    async def server(peer: Peer) -> None:
        await peer.greet(("250-mx.test", "250-PIPELINING", "250 ENHANCEDSTATUSCODES"))
        # First transaction: the server stops at two recipients.
        for _ in range(5):
            await peer.line()
        await peer.send(
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "250 2.1.5 Ok",
            "452 4.5.3 Error: too many recipients",
            "354 go ahead",
        )
        first = await peer.data()
        assert first.endswith(b"\r\n.\r\n")
        await peer.send("250 2.0.0 Ok: queued as AAAAAA1")
        # Then a new transaction for the recipient left over.
        assert await peer.line() == f"MAIL FROM:<{SENDER}>"
        assert await peer.line() == "RCPT TO:<c@example.test>"
        assert await peer.line() == "DATA"
        await peer.send("250 2.1.0 Ok", "250 2.1.5 Ok", "354 go")
        await peer.data()
        await peer.send("250 2.0.0 Ok: queued as BBBBBB2")
        await peer.quit()

    async with scripted(server) as stream:
        async with anyio_smtp.connect_stream(stream, ehlo_domain="c.test") as smtp:
            result = await smtp.send_mail(
                SENDER, ["a@example.test", "b@example.test", "c@example.test"], BODY
            )
    assert result.accepted == ("a@example.test", "b@example.test", "c@example.test")
    assert result.rejected == {}
    assert result.queue_id == "BBBBBB2"


async def test_452_for_every_recipient_is_a_refusal_not_a_loop() -> None:
    async with SMTPTestServer() as server:
        server.reply("RCPT", "452 4.5.3 too many recipients")
        async with anyio_smtp.connect(server.host, server.port) as smtp:
            with pytest.raises(RecipientsRefusedError) as caught:
                await smtp.send_mail(SENDER, ["a@example.test", "b@example.test"], BODY)
            assert caught.value.is_transient
    assert server.messages == []


async def test_streamed_message_over_the_limit_is_refused_before_mail() -> None:
    async with SMTPTestServer(extensions=["PIPELINING", "LIMITS RCPTMAX=1"]) as server:
        async with anyio_smtp.connect(server.host, server.port) as smtp:
            with pytest.raises(anyio_smtp.InvalidArgumentError, match="streamed"):
                await smtp.send_mail(SENDER, ["a@x.test", "b@x.test"], iter([BODY]))
            assert not smtp.closed
    assert not any(line.startswith("MAIL") for line in server.client_lines())


LHLO = ("250-lmtp.test", "250-PIPELINING", "250 ENHANCEDSTATUSCODES")


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lock-step"])
async def test_lmtp_gives_one_result_per_recipient(pipelining: bool) -> None:
    lhlo = LHLO if pipelining else ("250-lmtp.test", "250 ENHANCEDSTATUSCODES")

    async def server(peer: Peer) -> None:
        await peer.send("220 lmtp.test LMTP")
        assert await peer.lone("LHLO ") == "LHLO client.test"
        await peer.send(*lhlo)
        replies = ["250 2.1.0 Ok", "250 2.1.5 Ok", "550 5.1.1 unknown", "250 2.1.5 Ok", "354 go"]
        for reply in replies:
            await peer.line()
            if not pipelining:
                await peer.send(reply)
        if pipelining:
            await peer.send(*replies)
        await peer.data()
        # One reply per accepted recipient (a and c), in RCPT order.
        await peer.send("250 2.0.0 <a> delivered", "452 4.2.2 <c> mailbox full")
        await peer.quit()

    async with scripted(server) as stream:
        async with anyio_smtp.connect_stream(stream, ehlo_domain="client.test", lmtp=True) as smtp:
            assert smtp.lmtp
            result = await smtp.send_mail(
                SENDER, ["a@example.test", "b@example.test", "c@example.test"], BODY
            )
            assert isinstance(result, SendResult)
    assert result.accepted == ("a@example.test",)
    assert {r: reply.code for r, reply in result.rejected.items()} == {
        "b@example.test": 550,
        "c@example.test": 452,
    }
    assert {r: reply.code for r, reply in result.per_recipient.items()} == {
        "a@example.test": 250,
        "c@example.test": 452,
    }


async def test_lmtp_every_recipient_refused_after_data() -> None:
    async def server(peer: Peer) -> None:
        await peer.send("220 lmtp.test LMTP")
        await peer.lone("LHLO ")
        await peer.send(*LHLO)
        for _ in range(4):
            await peer.line()
        await peer.send("250 Ok", "250 Ok", "250 Ok", "354 go")
        await peer.data()
        await peer.send("550 5.2.1 <a> disabled", "552 5.2.2 <b> full")
        assert await peer.lone("RSET") == "RSET"
        await peer.send("250 Ok")
        await peer.quit()

    async with scripted(server) as stream:
        async with anyio_smtp.connect_stream(stream, ehlo_domain="client.test", lmtp=True) as smtp:
            with pytest.raises(RecipientsRefusedError) as caught:
                await smtp.send_mail(SENDER, ["a@example.test", "b@example.test"], BODY)
    assert {r: reply.code for r, reply in caught.value.rejected.items()} == {
        "a@example.test": 550,
        "b@example.test": 552,
    }

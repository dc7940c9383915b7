"""EnhancedStatus: RFC 3463 classification helpers on replies and errors."""

from __future__ import annotations

import pytest

from anyio_smtp import EnhancedStatus, Reply, SenderRefusedError
from anyio_smtp._protocol.replies import ReplyParser


@pytest.mark.parametrize(
    ("text", "class_", "subject", "detail", "subject_text", "meaning"),
    [
        ("2.0.0", 2, 0, 0, "other or undefined status", "other undefined status"),
        ("5.1.1", 5, 1, 1, "addressing status", "bad destination mailbox address"),
        ("4.2.2", 4, 2, 2, "mailbox status", "mailbox full"),
        ("5.3.4", 5, 3, 4, "mail system status", "message too big for system"),
        ("4.4.5", 4, 4, 5, "network and routing status", "mail system congestion"),
        ("4.5.3", 4, 5, 3, "mail delivery protocol status", "too many recipients"),
        ("5.6.7", 5, 6, 7, "message content or media status", None),
        ("5.7.8", 5, 7, 8, "security or policy status", "authentication credentials invalid"),
        ("5.9.999", 5, 9, 999, "unknown subject", None),
    ],
)
def test_parse_and_classify(
    text: str,
    class_: int,
    subject: int,
    detail: int,
    subject_text: str,
    meaning: str | None,
) -> None:
    status = EnhancedStatus.parse(text)
    assert (status.class_, status.subject, status.detail) == (class_, subject, detail)
    assert str(status) == text
    assert status.subject_text == subject_text
    assert status.meaning == meaning
    assert status.is_success is (class_ == 2)
    assert status.is_transient is (class_ == 4)
    assert status.is_permanent is (class_ == 5)


@pytest.mark.parametrize("text", ["5.1", "6.1.1", "5.1.1.1", "x.1.1", "5.1234.1", "", " 5.1.1"])
def test_parse_refuses_other_shapes(text: str) -> None:
    with pytest.raises(ValueError, match="enhanced status"):
        EnhancedStatus.parse(text)


def test_reply_and_error_expose_it() -> None:
    parser = ReplyParser()
    parser.enhanced_status_codes = True
    parser.receive_data(
        b"550-5.1.1 <x@example.org>: Recipient address rejected\r\n550 5.1.1 sorry\r\n"
    )
    reply = parser.next_reply()
    assert reply is not None
    assert reply.enhanced == EnhancedStatus(5, 1, 1)
    assert reply.message == "<x@example.org>: Recipient address rejected\nsorry"
    error = SenderRefusedError("a@example.org", reply)
    assert error.enhanced is not None
    assert error.enhanced.meaning == "bad destination mailbox address"
    assert Reply(250, ("ok",)).enhanced is None

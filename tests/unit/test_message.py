"""From an email message to an envelope and the bytes to send."""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser

import pytest

from anyio_smtp import InvalidArgumentError
from anyio_smtp._message import PreparedMessage, prepare_message


def make(headers: list[tuple[str, str]], body: str = "Hello.\n") -> EmailMessage:
    message = EmailMessage()
    for name, value in headers:
        message[name] = value
    message.set_content(body)
    return message


def header_names(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0]
    return [
        line.split(b":", 1)[0].decode() for line in head.split(b"\r\n") if line[:1] not in b" \t"
    ]


def assert_crlf_only(data: bytes) -> None:
    assert re.search(rb"(?<!\r)\n", data) is None
    assert re.search(rb"\r(?!\n)", data) is None


def test_envelope_from_from_to_cc_bcc() -> None:
    message = make(
        [
            ("From", "Alice <alice@example.com>"),
            ("To", "Bob <bob@example.org>, carol@example.org"),
            ("Cc", "dave@example.net"),
            ("Bcc", "Eve <eve@example.net>"),
            ("Subject", "hi"),
        ]
    )
    prepared = prepare_message(message)
    assert prepared.sender == "alice@example.com"
    assert set(prepared.recipients) == {
        "bob@example.org",
        "carol@example.org",
        "dave@example.net",
        "eve@example.net",
    }
    assert len(prepared.recipients) == 4
    assert isinstance(prepared.recipients, tuple)


def test_several_to_fields() -> None:
    # The default policy refuses a second To; a legacy message can carry it.
    message = Message()
    message["From"] = "a@example.com"
    message["To"] = "b@example.org"
    message["To"] = "c@example.org"
    message.set_payload("hi\n")
    assert set(prepare_message(message).recipients) == {"b@example.org", "c@example.org"}


def test_sender_preferred_over_from() -> None:
    message = make(
        [
            ("From", "Boss <boss@example.com>"),
            ("Sender", "Secretary <secretary@example.com>"),
            ("To", "b@example.org"),
        ]
    )
    assert prepare_message(message).sender == "secretary@example.com"


def test_first_from_address_when_several() -> None:
    message = make([("From", "a@example.com, b@example.com"), ("To", "c@example.org")])
    assert prepare_message(message).sender == "a@example.com"


def _resent(extra: list[tuple[str, str]]) -> EmailMessage:
    return make(
        [
            ("From", "original@example.com"),
            ("To", "first@example.org"),
            ("Cc", "firstcc@example.org"),
            ("Bcc", "firstbcc@example.org"),
            ("Resent-Date", "Mon, 1 Jan 2024 10:00:00 +0000"),
            *extra,
        ]
    )


def test_one_resent_block_gives_the_envelope() -> None:
    message = _resent(
        [
            ("Resent-From", "forwarder@example.com"),
            ("Resent-To", "new@example.org"),
            ("Resent-Cc", "newcc@example.org"),
            ("Resent-Bcc", "hidden@example.org"),
        ]
    )
    prepared = prepare_message(message)
    assert prepared.sender == "forwarder@example.com"
    assert set(prepared.recipients) == {
        "new@example.org",
        "newcc@example.org",
        "hidden@example.org",
    }
    names = header_names(prepared.data)
    assert "Resent-Bcc" not in names
    assert "Bcc" not in names
    assert b"hidden@example.org" not in prepared.data
    assert b"firstbcc@example.org" not in prepared.data
    assert "Resent-To" in names
    assert "Resent-Date" in names


def test_resent_sender_preferred_over_resent_from() -> None:
    message = _resent(
        [
            ("Resent-From", "forwarder@example.com"),
            ("Resent-Sender", "assistant@example.com"),
            ("Resent-To", "new@example.org"),
        ]
    )
    assert prepare_message(message).sender == "assistant@example.com"


def test_two_resent_blocks_refused() -> None:
    message = _resent([("Resent-From", "x@example.com"), ("Resent-To", "y@example.org")])
    message["Resent-Date"] = "Tue, 2 Jan 2024 10:00:00 +0000"
    message["Resent-From"] = "z@example.com"
    with pytest.raises(InvalidArgumentError):
        prepare_message(message)


def test_two_resent_blocks_with_overrides() -> None:
    message = _resent([("Resent-From", "x@example.com")])
    message["Resent-Date"] = "Tue, 2 Jan 2024 10:00:00 +0000"
    # The refusal is about working out the envelope; overriding it does not help here.
    with pytest.raises(InvalidArgumentError):
        prepare_message(message, sender="s@example.com", recipients=["r@example.org"])


def test_resent_block_without_recipients_refused() -> None:
    message = _resent([("Resent-From", "forwarder@example.com")])
    with pytest.raises(InvalidArgumentError, match="Resent-"):
        prepare_message(message)


def test_bcc_removed_from_bytes_but_in_envelope() -> None:
    message = make(
        [
            ("From", "a@example.com"),
            ("To", "b@example.org"),
            ("Bcc", "secret1@example.org, secret2@example.org"),
            ("Subject", "hi"),
        ]
    )
    original = message.as_bytes()
    prepared = prepare_message(message)
    assert {"secret1@example.org", "secret2@example.org"} <= set(prepared.recipients)
    assert b"secret1" not in prepared.data
    assert b"secret2" not in prepared.data
    assert "Bcc" not in header_names(prepared.data)
    # The caller's message is untouched.
    assert message["Bcc"] == "secret1@example.org, secret2@example.org"
    assert message.as_bytes() == original


def test_resent_bcc_removed_without_a_resent_block() -> None:
    message = make(
        [
            ("From", "a@example.com"),
            ("To", "b@example.org"),
            ("Resent-Bcc", "stale@example.org"),
        ]
    )
    prepared = prepare_message(message)
    assert b"stale@example.org" not in prepared.data
    assert prepared.recipients == ("b@example.org",)
    assert message["Resent-Bcc"] == "stale@example.org"


def test_overrides() -> None:
    message = make([("From", "a@example.com"), ("To", "b@example.org"), ("Bcc", "c@example.org")])
    prepared = prepare_message(message, sender="bounce@example.com", recipients=["x@example.net"])
    assert prepared.sender == "bounce@example.com"
    assert prepared.recipients == ("x@example.net",)
    assert b"c@example.org" not in prepared.data
    assert b"From: a@example.com\r\n" in prepared.data


def test_overrides_allow_a_message_without_addresses() -> None:
    message = make([("Subject", "no addresses")])
    prepared = prepare_message(message, sender="", recipients=["x@example.net"])
    assert prepared.sender == ""
    assert prepared.recipients == ("x@example.net",)


def test_sender_override_only() -> None:
    message = make([("To", "b@example.org")])
    prepared = prepare_message(message, sender="s@example.com")
    assert prepared.sender == "s@example.com"
    assert prepared.recipients == ("b@example.org",)


def test_crlf_line_endings() -> None:
    message = make(
        [("From", "a@example.com"), ("To", "b@example.org"), ("Subject", "x" * 200)],
        body="line one\nline two\n\nline four\n",
    )
    prepared = prepare_message(message)
    assert_crlf_only(prepared.data)
    assert b"line one\r\nline two\r\n\r\nline four\r\n" in prepared.data
    assert b"\r\n\r\n" in prepared.data


def test_ascii_message_needs_no_smtputf8() -> None:
    message = make([("From", "Jörg <a@example.com>"), ("To", "b@example.org"), ("Subject", "é")])
    prepared = prepare_message(message)
    assert prepared.smtputf8 is False
    assert prepared.data.isascii()


def test_non_ascii_address_needs_smtputf8() -> None:
    message = make(
        [("From", "jörg@bücher.example"), ("To", "用户@例子.广告"), ("Subject", "Grüße")]
    )
    prepared = prepare_message(message)
    assert prepared.smtputf8 is True
    assert prepared.sender == "jörg@bücher.example"
    assert prepared.recipients == ("用户@例子.广告",)
    # RFC 6532: the header fields carry UTF-8 as it is, not encoded words.
    assert "From: jörg@bücher.example\r\n".encode() in prepared.data
    assert "To: 用户@例子.广告\r\n".encode() in prepared.data
    assert b"=?utf-8?" not in prepared.data.split(b"\r\n\r\n", 1)[0].lower()
    assert_crlf_only(prepared.data)


def test_non_ascii_recipient_in_bcc_only() -> None:
    message = make([("From", "a@example.com"), ("To", "b@example.org"), ("Bcc", "jörg@example")])
    prepared = prepare_message(message)
    assert prepared.smtputf8 is True
    assert "jörg".encode() not in prepared.data


def test_non_ascii_override_needs_smtputf8() -> None:
    message = make([("From", "a@example.com"), ("To", "b@example.org")])
    assert prepare_message(message, recipients=["jörg@example.org"]).smtputf8 is True
    assert prepare_message(message, sender="jörg@example.org").smtputf8 is True


def test_utf8_policy_not_used_for_ascii_messages() -> None:
    message = make(
        [("From", "a@example.com"), ("To", "b@example.org"), ("Subject", "Grüße aus Köln")]
    )
    prepared = prepare_message(message)
    assert prepared.smtputf8 is False
    assert prepared.data.isascii()
    parsed = BytesParser(policy=policy.default).parsebytes(prepared.data)
    assert parsed["Subject"] == "Grüße aus Köln"


def test_no_sender_refused() -> None:
    message = make([("To", "b@example.org")])
    with pytest.raises(InvalidArgumentError, match="sender="):
        prepare_message(message)


def test_from_without_address_refused() -> None:
    message = make([("From", "undisclosed:;"), ("To", "b@example.org")])
    with pytest.raises(InvalidArgumentError):
        prepare_message(message)


def test_no_recipients_refused() -> None:
    message = make([("From", "a@example.com")])
    with pytest.raises(InvalidArgumentError, match="recipients="):
        prepare_message(message)


def test_empty_group_is_no_recipient() -> None:
    message = make([("From", "a@example.com"), ("To", "undisclosed-recipients:;")])
    with pytest.raises(InvalidArgumentError):
        prepare_message(message)


def test_legacy_message() -> None:
    message = Message()
    message["From"] = "Alice <alice@example.com>"
    message["To"] = "bob@example.org"
    message["Bcc"] = "hidden@example.org"
    message["Subject"] = "legacy"
    message.set_payload("line one\nline two\n")
    prepared = prepare_message(message)
    assert isinstance(prepared, PreparedMessage)
    assert prepared.sender == "alice@example.com"
    assert set(prepared.recipients) == {"bob@example.org", "hidden@example.org"}
    assert b"hidden@example.org" not in prepared.data
    assert message["Bcc"] == "hidden@example.org"
    assert prepared.smtputf8 is False
    assert_crlf_only(prepared.data)
    assert b"line one\r\nline two\r\n" in prepared.data
    assert b"Subject: legacy\r\n" in prepared.data


def test_legacy_message_with_non_ascii_address() -> None:
    message = Message()
    message["From"] = "a@example.com"
    message["To"] = "jörg@bücher.example"
    message.set_payload("hi\n")
    prepared = prepare_message(message)
    assert prepared.smtputf8 is True
    assert prepared.recipients == ("jörg@bücher.example",)
    # With SMTPUTF8 the address must be sent as UTF-8 in the header too; an RFC 2047
    # encoded word is not allowed in an address.
    assert "jörg@bücher.example".encode() in prepared.data


def test_message_policy_is_not_changed() -> None:
    message = make([("From", "jörg@example.com"), ("To", "b@example.org")])
    before = message.policy
    prepare_message(message)
    assert message.policy is before
    assert message.policy.linesep == "\n"


def test_multipart_message() -> None:
    message = make([("From", "a@example.com"), ("To", "b@example.org"), ("Bcc", "c@example.org")])
    message.add_attachment(b"\x00\x01binary", maintype="application", subtype="octet-stream")
    prepared = prepare_message(message)
    assert b"c@example.org" not in prepared.data
    assert_crlf_only(prepared.data)
    assert message.is_multipart()
    assert message["Bcc"] == "c@example.org"

"""The reply parser: framing, bounds, enhanced status codes, streaming."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anyio_smtp import RemoteProtocolError, Reply
from anyio_smtp._protocol.replies import (
    MAX_REPLY_LINE_LENGTH,
    MAX_REPLY_LINES,
    MAX_REPLY_SIZE,
    ReplyParser,
)


@dataclass(frozen=True)
class Outcome:
    replies: tuple[Reply, ...]
    failed: bool
    buffered: int | None  # None once the parser failed


def _run(chunks: Iterable[bytes], *, enhanced: bool) -> Outcome:
    parser = ReplyParser()
    parser.enhanced_status_codes = enhanced
    replies: list[Reply] = []
    try:
        for chunk in chunks:
            parser.receive_data(chunk)
            while (reply := parser.next_reply()) is not None:
                replies.append(reply)
    except RemoteProtocolError:
        return Outcome(tuple(replies), True, None)
    return Outcome(tuple(replies), False, parser.buffered)


def run_both(data: bytes, *, enhanced: bool = False) -> Outcome:
    """Feed ``data`` whole and one byte at a time; both must give the same outcome."""
    whole = _run([data], enhanced=enhanced)
    bytewise = _run([data[i : i + 1] for i in range(len(data))], enhanced=enhanced)
    assert whole == bytewise
    return whole


def parse(data: bytes, *, enhanced: bool = False) -> tuple[Reply, ...]:
    outcome = run_both(data, enhanced=enhanced)
    assert not outcome.failed
    return outcome.replies


def parse_one(data: bytes, *, enhanced: bool = False) -> Reply:
    outcome = run_both(data, enhanced=enhanced)
    assert not outcome.failed
    assert outcome.buffered == 0
    (reply,) = outcome.replies
    return reply


def assert_refused(data: bytes) -> None:
    outcome = run_both(data)
    assert outcome.failed
    # The parser itself must raise the library's error (not any other exception).
    with pytest.raises(RemoteProtocolError):
        _drain(ReplyParser(), data)


def _drain(parser: ReplyParser, data: bytes) -> list[Reply]:
    parser.receive_data(data)
    replies: list[Reply] = []
    while (reply := parser.next_reply()) is not None:
        replies.append(reply)
    return replies


def _feed_until_error(parser: ReplyParser, chunk: bytes, total: int, *, drain: bool) -> int:
    """Feed ``chunk`` until ``total`` bytes were fed; return how many were fed first."""
    fed = 0
    try:
        while fed < total:
            parser.receive_data(chunk)
            fed += len(chunk)
            if drain:
                assert parser.next_reply() is None
    except RemoteProtocolError:
        return fed
    pytest.fail(f"no RemoteProtocolError after {fed} bytes")


# -- framing ---------------------------------------------------------------------------


def test_single_line() -> None:
    assert parse_one(b"250 OK\r\n") == Reply(250, ("OK",))


def test_multiline() -> None:
    reply = parse_one(b"250-mx.example greets you\r\n250-PIPELINING\r\n250 SIZE 1000\r\n")
    assert reply.code == 250
    assert reply.lines == ("mx.example greets you", "PIPELINING", "SIZE 1000")


@pytest.mark.parametrize("data", [b"250\r\n", b"250\n", b"220\r\n"])
def test_bare_code_line(data: bytes) -> None:
    reply = parse_one(data)
    assert reply.code == int(data[:3])
    assert reply.lines == ("",)


def test_empty_text_after_space() -> None:
    # Postfix's smtp-sink ends its EHLO reply with "250 ".
    reply = parse_one(b"250-mx.example\r\n250-PIPELINING\r\n250 \r\n")
    assert reply.lines == ("mx.example", "PIPELINING", "")


def test_bare_code_ends_a_multiline_reply() -> None:
    assert parse_one(b"250-a\r\n250\r\n").lines == ("a", "")


def test_lf_only_line_endings() -> None:
    reply = parse_one(b"250-mx.example\n250 SIZE 10\n")
    assert reply.lines == ("mx.example", "SIZE 10")


def test_cr_inside_a_line_is_text() -> None:
    assert parse_one(b"250 a\rb\r\n").lines == ("a\rb",)


def test_invalid_utf8_is_replaced() -> None:
    reply = parse_one(b"550 caf\xe9 \xff\xfe\r\n")
    assert reply.code == 550
    assert reply.lines == ("caf\ufffd \ufffd\ufffd",)


def test_utf8_text_is_decoded() -> None:
    assert parse_one("250 Grüße\r\n".encode()).lines == ("Grüße",)


def test_utf8_split_across_chunks() -> None:
    data = "250 Grüße\r\n".encode()
    cut = data.index(b"\xc3") + 1  # inside the two-byte sequence of "ü"
    outcome = _run([data[:cut], data[cut:]], enhanced=False)
    assert outcome.replies == (Reply(250, ("Grüße",)),)


def test_code_change_inside_multiline_reply() -> None:
    assert_refused(b"250-a\r\n251 b\r\n")
    assert_refused(b"250-a\r\n250-b\r\n550 c\r\n")


@pytest.mark.parametrize(
    "data",
    [
        b"250\tOK\r\n",  # bad separator
        b"250_OK\r\n",
        b"2500 OK\r\n",
        b"25a OK\r\n",  # non-digit code
        b"abc OK\r\n",
        b" 250 OK\r\n",
        b"150 OK\r\n",  # first digit outside 2-5
        b"650 OK\r\n",
        b"050 OK\r\n",
        b"25\r\n",  # too short
        b"2\r\n",
        b"\r\n",
        b"\n",
        "\uff12\uff15\uff10 OK\r\n".encode(),  # full-width digits
    ],
)
def test_malformed_lines(data: bytes) -> None:
    assert_refused(data)


def test_error_after_good_reply() -> None:
    outcome = run_both(b"250 OK\r\nnonsense\r\n")
    assert outcome.failed
    assert outcome.replies == (Reply(250, ("OK",)),)


def test_several_replies_in_one_chunk() -> None:
    parser = ReplyParser()
    parser.receive_data(b"250 one\r\n251 two\r\n252-three\r\n252 four\r\n25")
    assert parser.next_reply() == Reply(250, ("one",))
    assert parser.buffered == len(b"251 two\r\n252-three\r\n252 four\r\n25")
    assert parser.next_reply() == Reply(251, ("two",))
    assert parser.next_reply() == Reply(252, ("three", "four"))
    assert parser.buffered == 2
    assert parser.next_reply() is None
    assert parser.buffered == 2
    parser.receive_data(b"3 five\r\n")
    assert parser.next_reply() == Reply(253, ("five",))
    assert parser.buffered == 0
    assert parser.next_reply() is None


def test_buffered_counts_a_partial_multiline_reply() -> None:
    parser = ReplyParser()
    parser.receive_data(b"250-first\r\n250-sec")
    assert parser.next_reply() is None
    assert parser.buffered == len(b"250-first\r\n250-sec")
    parser.receive_data(b"ond\r\n250 end\r\n")
    assert parser.next_reply() == Reply(250, ("first", "second", "end"))
    assert parser.buffered == 0


def test_buffered_leftover_in_streamed_outcome() -> None:
    outcome = run_both(b"250 a\r\n250 b\r\n421")
    assert outcome.replies == (Reply(250, ("a",)), Reply(250, ("b",)))
    assert outcome.buffered == 3


def test_empty_input() -> None:
    parser = ReplyParser()
    parser.receive_data(b"")
    assert parser.next_reply() is None
    assert parser.buffered == 0


# -- enhanced status codes -------------------------------------------------------------


def test_enhanced_status_parsed_when_enabled() -> None:
    reply = parse_one(b"550 5.1.1 Unknown user\r\n", enhanced=True)
    assert reply.enhanced_status == "5.1.1"
    assert reply.message == "Unknown user"
    assert reply.lines == ("5.1.1 Unknown user",)


def test_enhanced_status_ignored_when_disabled() -> None:
    reply = parse_one(b"550 5.1.1 Unknown user\r\n")
    assert reply.enhanced_status is None
    assert reply.message == "5.1.1 Unknown user"


def test_enhanced_status_alone_on_the_line() -> None:
    reply = parse_one(b"250 2.0.0\r\n", enhanced=True)
    assert reply.enhanced_status == "2.0.0"
    assert reply.message == ""


def test_enhanced_status_with_three_digit_parts() -> None:
    assert parse_one(b"452 4.123.456 x\r\n", enhanced=True).enhanced_status == "4.123.456"


def test_enhanced_status_class_must_match_reply_code() -> None:
    reply = parse_one(b"550 4.1.1 mismatched\r\n", enhanced=True)
    assert reply.enhanced_status is None
    assert reply.message == "4.1.1 mismatched"
    assert parse_one(b"250 5.0.0 ok\r\n", enhanced=True).enhanced_status is None


@pytest.mark.parametrize(
    "text",
    [
        "5..1 x",
        "5.7. x",
        "5.7.",
        ".5.1.1 x",
        "6.1.1 x",
        "5.1 x",
        "5.1.1000 x",
        "5.1000.1 x",
        "5.1.1x",
        "5.1.1.2 x",
        "x 5.1.1",
        "5.\u0661.1 x",  # ARABIC-INDIC DIGIT ONE is not an RFC 3463 digit
    ],
)
def test_malformed_enhanced_status_not_parsed(text: str) -> None:
    reply = parse_one(b"550 " + text.encode() + b"\r\n", enhanced=True)
    assert reply.enhanced_status is None
    assert reply.message == text


def test_enhanced_status_comes_from_the_first_line() -> None:
    reply = parse_one(b"550-5.1.1 first\r\n550-5.1.2 second\r\n550 plain third\r\n", enhanced=True)
    assert reply.enhanced_status == "5.1.1"
    assert reply.message == "first\nsecond\nplain third"
    assert reply.lines == ("5.1.1 first", "5.1.2 second", "plain third")


def test_enhanced_flag_can_change_between_replies() -> None:
    parser = ReplyParser()
    parser.receive_data(b"550 5.1.1 a\r\n550 5.1.1 b\r\n")
    first = parser.next_reply()
    parser.enhanced_status_codes = True
    second = parser.next_reply()
    assert first is not None
    assert second is not None
    assert first.enhanced_status is None
    assert second.enhanced_status == "5.1.1"


# -- the Reply value -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "positive", "intermediate", "transient", "permanent"),
    [
        (200, True, False, False, False),
        (250, True, False, False, False),
        (299, True, False, False, False),
        (300, False, True, False, False),
        (354, False, True, False, False),
        (399, False, True, False, False),
        (400, False, False, True, False),
        (421, False, False, True, False),
        (499, False, False, True, False),
        (500, False, False, False, True),
        (550, False, False, False, True),
        (599, False, False, False, True),
    ],
)
def test_reply_classes(
    code: int, positive: bool, intermediate: bool, transient: bool, permanent: bool
) -> None:
    reply = Reply(code, ("x",))
    assert reply.is_positive is positive
    assert reply.is_intermediate is intermediate
    assert reply.is_transient is transient
    assert reply.is_permanent is permanent


def test_reply_str() -> None:
    assert str(Reply(250, ("mx.example", "SIZE 10"))) == "250 mx.example SIZE 10"
    assert str(Reply(250, ("",))) == "250"
    assert str(Reply(250)) == "250"
    assert str(Reply(550, ("", "second"))) == "550 second"
    assert str(Reply(550, ("5.1.1 no",), "5.1.1")) == "550 5.1.1 no"


def test_message_without_enhanced_status_is_the_lines() -> None:
    assert Reply(250, ("a", "5.0.0 b")).message == "a\n5.0.0 b"


def test_reply_is_frozen() -> None:
    reply = Reply(250, ("x",))
    with pytest.raises(AttributeError):
        reply.code = 550  # type: ignore[misc]


# -- bounds ----------------------------------------------------------------------------


def test_line_at_the_length_limit() -> None:
    text = b"x" * (MAX_REPLY_LINE_LENGTH - 4)
    line = b"250 " + text
    assert len(line) == MAX_REPLY_LINE_LENGTH
    assert parse_one(line + b"\r\n").lines == (text.decode(),)
    assert parse_one(line + b"\n").lines == (text.decode(),)


def test_terminated_line_one_over_the_limit() -> None:
    line = b"250 " + b"x" * (MAX_REPLY_LINE_LENGTH - 3)
    assert len(line) == MAX_REPLY_LINE_LENGTH + 1
    assert_refused(line + b"\r\n")
    assert_refused(line + b"\n")


def test_unterminated_long_line_fails_without_a_newline() -> None:
    with pytest.raises(RemoteProtocolError):
        _drain(ReplyParser(), b"250 " + b"x" * (MAX_REPLY_LINE_LENGTH + 10))


def test_unterminated_line_at_the_limit_waits() -> None:
    # A line of the largest allowed length whose CR has arrived but not its LF.
    parser = ReplyParser()
    parser.receive_data(b"250 " + b"x" * (MAX_REPLY_LINE_LENGTH - 4) + b"\r")
    assert parser.next_reply() is None
    parser.receive_data(b"\n")
    reply = parser.next_reply()
    assert reply is not None
    assert reply.code == 250


TEN_MB = 10 * 1024 * 1024
CHUNK_64K = b"x" * (64 * 1024)


def test_huge_line_fails_early_in_64k_reads() -> None:
    parser = ReplyParser()
    parser.receive_data(b"250 ")
    fed = _feed_until_error(parser, CHUNK_64K, TEN_MB, drain=True)
    assert fed <= len(CHUNK_64K)


def test_huge_line_fails_early_when_only_receiving() -> None:
    # A caller that does not call next_reply between reads still gets the error.
    fed = _feed_until_error(ReplyParser(), CHUNK_64K, TEN_MB, drain=False)
    assert fed <= len(CHUNK_64K)


def test_huge_line_after_a_complete_reply_fails_early() -> None:
    # The unterminated-line bound must hold even when an earlier complete line is
    # still in the buffer (bytes received but not yet taken with next_reply).
    parser = ReplyParser()
    parser.receive_data(b"250 OK\r\n")
    fed = _feed_until_error(parser, CHUNK_64K, TEN_MB, drain=False)
    assert fed <= 2 * len(CHUNK_64K)


def test_huge_line_in_small_reads_fails_early() -> None:
    parser = ReplyParser()
    fed = 0
    try:
        while fed < 10 * MAX_REPLY_LINE_LENGTH:
            parser.receive_data(b"y" * 100)
            fed += 100
            parser.next_reply()
    except RemoteProtocolError:
        pass
    assert fed <= MAX_REPLY_LINE_LENGTH + 200


def _multiline(count: int, text: bytes = b"x") -> bytes:
    return b"250-" + text + b"\r\n" + (b"250-" + text + b"\r\n") * (count - 2) + b"250 end\r\n"


def test_line_count_at_the_limit() -> None:
    reply = parse_one(_multiline(MAX_REPLY_LINES))
    assert len(reply.lines) == MAX_REPLY_LINES


def test_line_count_over_the_limit() -> None:
    assert_refused(_multiline(MAX_REPLY_LINES + 1))


def test_line_count_over_the_limit_without_an_end() -> None:
    # The bound holds before the last line of the reply arrives.
    assert_refused(b"250-x\r\n" * (MAX_REPLY_LINES + 1))


def _reply_of_size(size: int) -> bytes:
    """A multiline reply of exactly ``size`` octets with lines of at most 1000 octets."""
    lines: list[bytes] = []
    remaining = size - len(b"250 end\r\n")
    while remaining > 0:
        length = min(1000, remaining)
        if 0 < remaining - length < 6:  # keep the last continuation line valid
            length -= 6
        lines.append(b"250-" + b"y" * (length - 6) + b"\r\n")
        remaining -= length
    data = b"".join(lines) + b"250 end\r\n"
    assert len(data) == size
    return data


def test_reply_size_at_the_limit() -> None:
    data = _reply_of_size(MAX_REPLY_SIZE)
    assert len(data.split(b"\n")) - 1 <= MAX_REPLY_LINES
    reply = parse_one(data)
    assert reply.lines[-1] == "end"


def test_reply_size_over_the_limit() -> None:
    assert_refused(_reply_of_size(MAX_REPLY_SIZE + 1))


def test_limits_are_reset_between_replies() -> None:
    data = _reply_of_size(MAX_REPLY_SIZE) * 3
    assert len(parse(data)) == 3


# -- streaming: format(x) then parse == x ----------------------------------------------

_TEXT = st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Cc")),
    max_size=60,
)


def _format(code: int, lines: Sequence[str]) -> bytes:
    out = b""
    for index, line in enumerate(lines):
        separator = b" " if index == len(lines) - 1 else b"-"
        out += str(code).encode() + separator + line.encode("utf-8") + b"\r\n"
    return out


@settings(max_examples=200, deadline=None)
@given(
    code=st.integers(200, 599),
    lines=st.lists(_TEXT, min_size=1, max_size=10),
    data=st.data(),
)
def test_parse_of_format_round_trips(code: int, lines: list[str], data: st.DataObject) -> None:
    wire = _format(code, lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    bounds = [0, *cuts, len(wire)]
    chunks = [wire[start:end] for start, end in itertools.pairwise(bounds)]
    outcome = _run(chunks, enhanced=False)
    assert not outcome.failed
    assert outcome.replies == (Reply(code, tuple(lines)),)
    assert outcome.buffered == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_fail_cleanly(data: bytes) -> None:
    # Only RemoteProtocolError may come out, and streaming matches batch.
    run_both(data)

"""Message data: line endings, dot-stuffing, the terminator, streaming equals batch."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anyio_smtp._protocol.body import BodyEncoder, EncodedBody, encode_body

END = b"\r\n.\r\n"


def normalise(data: bytes) -> bytes:
    """Every CRLF, bare CR and bare LF as CRLF (the reference for the encoder)."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)


def unstuff(encoded: bytes) -> bytes:
    """Undo the encoding as a server would: drop the terminator and one leading dot."""
    assert encoded.endswith(b".\r\n")
    payload = encoded[: -len(b".\r\n")]
    if not payload:
        return b""
    assert payload.endswith(b"\r\n")
    lines = payload[:-2].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines) + b"\r\n"


def stream(chunks: Sequence[bytes]) -> EncodedBody:
    encoder = BodyEncoder()
    out = b"".join(encoder.encode(chunk) for chunk in chunks) + encoder.finish()
    return EncodedBody(out, encoder.size, encoder.eight_bit)


def encode_checked(data: bytes) -> EncodedBody:
    """encode_body, also checked against one-byte and empty-interleaved streaming."""
    whole = encode_body(data)
    assert stream([data[i : i + 1] for i in range(len(data))]) == whole
    with_empties = [piece for i in range(len(data)) for piece in (b"", data[i : i + 1])]
    assert stream([*with_empties, b""]) == whole
    assert_well_formed(whole.data)
    return whole


def assert_well_formed(encoded: bytes) -> None:
    """The only end of data is the final one; every CR and LF is part of a CRLF."""
    assert encoded.endswith(b".\r\n")
    if encoded != b".\r\n":
        assert encoded.endswith(END)
        assert encoded.count(END) == 1
        assert not encoded.startswith(b".\r\n")
    stripped = encoded.replace(b"\r\n", b"")
    assert b"\r" not in stripped
    assert b"\n" not in stripped


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", b".\r\n"),
        (b".dotted", b"..dotted\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b"line\r\n.\r\nmore\r\n", b"line\r\n..\r\nmore\r\n.\r\n"),
        (b"..line", b"...line\r\n.\r\n"),
        (b"a.b", b"a.b\r\n.\r\n"),
        (b"a.\r\n", b"a.\r\n.\r\n"),
        (b"x\r\n..\r\n", b"x\r\n...\r\n.\r\n"),
        (b"\r\n", b"\r\n.\r\n"),
        (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
        (b"a\rb\r", b"a\r\nb\r\n.\r\n"),
        (b"a\r\nb\nc\rd", b"a\r\nb\r\nc\r\nd\r\n.\r\n"),
        (b"a\n\rb", b"a\r\n\r\nb\r\n.\r\n"),
        (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
        (b"no final line ending", b"no final line ending\r\n.\r\n"),
        (b"ends well\r\n", b"ends well\r\n.\r\n"),
        (b"Subject: x\n\n.hidden\n.\n", b"Subject: x\r\n\r\n..hidden\r\n..\r\n.\r\n"),
    ],
)
def test_vectors(data: bytes, expected: bytes) -> None:
    assert encode_checked(data).data == expected


def test_final_crlf_not_doubled() -> None:
    assert encode_checked(b"a\r\n").data == b"a\r\n.\r\n"
    assert encode_checked(b"a\n").data == b"a\r\n.\r\n"
    assert encode_checked(b"a\r").data == b"a\r\n.\r\n"


def test_blank_lines_are_kept() -> None:
    assert encode_checked(b"a\r\n\r\n\r\n").data == b"a\r\n\r\n\r\n.\r\n"


@pytest.mark.parametrize(
    "data",
    [
        b"first\n.\nMAIL FROM:<evil@example.com>\n",
        b"first\r.\rMAIL FROM:<evil@example.com>\r",
        b"first\n.\r\nMAIL FROM:<evil@example.com>\r\n",
        b"first\r\n.\nMAIL FROM:<evil@example.com>\r\n",
        b"first\r.\r\nMAIL FROM:<evil@example.com>\r\n",
        b"first\r\n.\rMAIL FROM:<evil@example.com>\r\n",
        b"first\r\n.\x00\r\nMAIL FROM:<evil@example.com>\r\n",
        b"first\x00\r\n.\r\nMAIL FROM:<evil@example.com>\r\n",
        b"\n.\n",
        b"\r.\r",
        b".\n",
        b".\r",
        b"\r\n.\r\n",
        b"\n.\r\n.\n",
    ],
)
def test_smuggling_inputs(data: bytes) -> None:
    encoded = encode_checked(data)
    assert encoded.data.count(END) == 1
    assert encoded.data.endswith(END)
    assert not encoded.data.startswith(b".\r\n")
    assert unstuff(encoded.data) == normalise(data) + (
        b"" if normalise(data).endswith(b"\r\n") else b"\r\n"
    )


def test_nul_passes_through_unchanged() -> None:
    assert encode_checked(b"a\x00b").data == b"a\x00b\r\n.\r\n"


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (b"", 0),
        (b"a", 3),  # "a\r\n"
        (b"a\r\n", 3),
        (b"a\n", 3),
        (b"a\r", 3),
        (b".a\r\n", 4),  # the stuffed dot is not counted
        (b"..\n.\n", 7),  # "..\r\n.\r\n"
        (b"a\nb\nc", 9),
    ],
)
def test_size_is_rfc1870_size(data: bytes, size: int) -> None:
    encoded = encode_checked(data)
    assert encoded.size == size
    normalised = normalise(data)
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert encoded.size == len(normalised)


@pytest.mark.parametrize(
    ("data", "eight_bit"),
    [
        (b"", False),
        (b"plain ascii\r\n\x00\x7f", False),
        (b"caf\xc3\xa9", True),
        (b"\x80", True),
        (b"\xff\r", True),
        (b"a\r\xff", True),
    ],
)
def test_eight_bit(data: bytes, eight_bit: bool) -> None:
    assert encode_checked(data).eight_bit is eight_bit


def test_accepts_bytearray_and_memoryview() -> None:
    expected = encode_body(b".x\ny")
    assert encode_body(bytearray(b".x\ny")) == expected
    assert encode_body(memoryview(b".x\ny")) == expected
    encoder = BodyEncoder()
    out = encoder.encode(bytearray(b".x\n")) + encoder.encode(memoryview(b"y")) + encoder.finish()
    assert out == expected.data


def test_cr_at_chunk_end_waits_for_its_lf() -> None:
    encoder = BodyEncoder()
    assert encoder.encode(b"a\r") == b"a"
    assert encoder.encode(b"\n.b") == b"\r\n..b"
    assert encoder.finish() == b"\r\n.\r\n"


def test_cr_at_chunk_end_then_dot() -> None:
    encoder = BodyEncoder()
    assert encoder.encode(b"a\r") == b"a"
    assert encoder.encode(b".\r") == b"\r\n.."
    assert encoder.finish() == b"\r\n.\r\n"


def test_dot_at_start_of_a_later_chunk() -> None:
    encoder = BodyEncoder()
    assert encoder.encode(b"a\r\n") == b"a\r\n"
    assert encoder.encode(b".b") == b"..b"
    assert encoder.encode(b".c") == b".c"
    assert encoder.finish() == b"\r\n.\r\n"


def test_lone_cr_chunks() -> None:
    encoder = BodyEncoder()
    assert encoder.encode(b"\r") == b""
    assert encoder.encode(b"\r") == b"\r\n"
    assert encoder.encode(b"") == b""
    assert encoder.finish() == b"\r\n.\r\n"
    assert encoder.size == 4


def test_finish_with_nothing_fed() -> None:
    encoder = BodyEncoder()
    assert encoder.finish() == b".\r\n"
    assert encoder.size == 0
    assert encoder.eight_bit is False


# -- properties ------------------------------------------------------------------------

_PIECE = st.one_of(
    st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"\x00", b"\x80", b"\xff", b"\xc3\xa9"]),
    st.sampled_from([b"\r\n.\r\n", b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"]),
    st.binary(max_size=8),
)
_BODY = st.lists(_PIECE, max_size=40).map(b"".join)


@st.composite
def _chunked(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    data = draw(_BODY)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=20)))
    bounds = [0, *cuts, len(data)]
    chunks = [data[start:end] for start, end in itertools.pairwise(bounds)]
    if draw(st.booleans()):
        chunks.insert(draw(st.integers(0, len(chunks))), b"")
    return data, chunks


@settings(max_examples=200, deadline=None)
@given(_chunked())
def test_streaming_equals_batch(case: tuple[bytes, list[bytes]]) -> None:
    data, chunks = case
    assert b"".join(chunks) == data
    assert stream(chunks) == encode_body(data)


@settings(max_examples=200, deadline=None)
@given(_BODY)
def test_byte_at_a_time_equals_batch(data: bytes) -> None:
    assert stream([data[i : i + 1] for i in range(len(data))]) == encode_body(data)


@settings(max_examples=200, deadline=None)
@given(_BODY)
def test_encoded_output_is_safe_and_reversible(data: bytes) -> None:
    encoded = encode_body(data)
    assert_well_formed(encoded.data)
    normalised = normalise(data)
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert unstuff(encoded.data) == normalised
    assert encoded.size == len(normalised)
    assert encoded.eight_bit == (not data.isascii())
    # Every line that starts with a dot was stuffed: no line is a lone ".".
    lines = encoded.data[:-3].split(b"\r\n")
    assert b"." not in lines

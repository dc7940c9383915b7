"""SASLprep (RFC 4013): the examples of §3, every step of §2, and its errors."""

from __future__ import annotations

import stringprep
import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from anyio_smtp import InvalidArgumentError
from anyio_smtp.auth._saslprep import saslprep


@pytest.mark.parametrize(
    ("text", "prepared"),
    [
        # RFC 4013 §3, examples 1 to 5.
        ("I\u00adX", "IX"),  # SOFT HYPHEN mapped to nothing
        ("user", "user"),  # no transformation
        ("USER", "USER"),  # case preserved, will not match #2
        ("\u00aa", "a"),  # output is NFKC, input in ISO 8859-1
        ("\u2168", "IX"),  # output is NFKC, will match #1
    ],
)
def test_rfc_4013_examples(text: str, prepared: str) -> None:
    assert saslprep(text) == prepared


@pytest.mark.parametrize(
    "text",
    [
        "\u0007",  # RFC 4013 §3 example 6: prohibited character
        "\u0627\u0031",  # RFC 4013 §3 example 7: bidirectional check
    ],
)
def test_rfc_4013_error_examples(text: str) -> None:
    with pytest.raises(InvalidArgumentError):
        saslprep(text)


@pytest.mark.parametrize(
    ("text", "prepared"),
    [
        ("a\u00a0b", "a b"),  # C.1.2 non-ASCII space -> SPACE
        ("a\u3000b", "a b"),  # ideographic space -> SPACE
        ("a\u2003b", "a b"),  # em space -> SPACE
        ("x\u200by", "xy"),  # zero width space: B.1, mapped to nothing
        ("x\ufe0fy", "xy"),  # variation selector: B.1
        ("\ufb01", "fi"),  # ligature, NFKC
        ("\uff21", "A"),  # fullwidth, NFKC
        ("e\u0301", "\u00e9"),  # composed by NFKC
        ("contraseña-ñü€", "contraseña-ñü€"),  # already prepared
        ("\u0627\u0031\u0628", "\u0627\u0031\u0628"),  # RandALCat at both ends: fine
        ("\u05d0\u05d1", "\u05d0\u05d1"),  # Hebrew alone
        ("pass word", "pass word"),  # ASCII space is kept
    ],
)
def test_mapping_and_normalisation(text: str, prepared: str) -> None:
    assert saslprep(text) == prepared


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a\u0000b", "prohibits"),  # C.2.1 ASCII control
        ("a\u007fb", "prohibits"),  # C.2.1 DEL
        ("a\u0085b", "prohibits"),  # C.2.2 non-ASCII control
        ("a\u200eb", "prohibits"),  # C.8 LEFT-TO-RIGHT MARK
        ("a\ue000b", "prohibits"),  # C.3 private use
        ("a\ufdd0b", "prohibits"),  # C.4 non-character
        ("a\ud800b", "prohibits"),  # C.5 surrogate
        ("a\ufff9b", "prohibits"),  # C.6 interlinear annotation anchor
        ("a\u2ff0b", "prohibits"),  # C.7 ideographic description
        ("a\U000e0001b", "prohibits"),  # C.9 tagging character
        ("\u0627a\u0628", "right-to-left"),  # RandALCat with LCat
        ("a\u0627", "right-to-left"),  # RandALCat not first
        ("\u0627a", "right-to-left"),  # RandALCat not last
        ("\u0627\u0031", "right-to-left"),  # ends in a digit
        ("\u00ad", "empty"),  # mapped to nothing at all
        ("", "empty"),
        ("a\u0221", "unassigned"),  # assigned only after Unicode 3.2
        ("pw\U0001f600", "unassigned"),  # emoji: unassigned in Unicode 3.2
    ],
)
def test_refused(text: str, reason: str) -> None:
    with pytest.raises(InvalidArgumentError, match=reason) as caught:
        saslprep(text, what="password")
    message = str(caught.value)
    assert "password" in message
    assert text not in message or not text
    assert repr(text) not in message


def test_unassigned_code_points_are_allowed_in_queries() -> None:
    assert saslprep("a\u0221", allow_unassigned=True) == "a\u0221"
    assert saslprep("pw\U0001f600", allow_unassigned=True) == "pw\U0001f600"
    # Prohibited characters stay prohibited in queries.
    with pytest.raises(InvalidArgumentError):
        saslprep("a\u0007", allow_unassigned=True)


def test_not_a_str() -> None:
    with pytest.raises(InvalidArgumentError, match="must be a str"):
        saslprep(b"user")  # type: ignore[arg-type]


_PROHIBITED = (
    stringprep.in_table_c12,
    stringprep.in_table_c21_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20), st.booleans())
@example("\u0627\u0031", False)
@example("I\u00adX", False)
def test_any_text_is_prepared_or_refused(text: str, allow_unassigned: bool) -> None:
    try:
        prepared = saslprep(text, allow_unassigned=allow_unassigned)
    except InvalidArgumentError:
        return
    assert prepared
    assert unicodedata.ucd_3_2_0.normalize("NFKC", prepared) == prepared
    for char in prepared:
        assert not any(in_table(char) for in_table in _PROHIBITED)
        assert allow_unassigned or not stringprep.in_table_a1(char)

"""SASLprep (RFC 4013): the stringprep profile for user names and passwords.

How this works: RFC 4013 §2 prepares a string in four steps, each done here
with the Unicode 3.2 tables that RFC 3454 (stringprep) is defined on, which the
standard library ships as :mod:`stringprep` and ``unicodedata.ucd_3_2_0``:

1. map: non-ASCII spaces become U+0020, "commonly mapped to nothing"
   characters (soft hyphen, zero-width joiners...) are dropped;
2. normalise with Unicode NFKC;
3. refuse the prohibited characters (controls, private use, surrogates...);
4. check the bidirectional rules of RFC 3454 §6;

and, for "stored strings", refuse code points unassigned in Unicode 3.2
(RFC 3454 §7).  Errors never show the text, which may be a password.
"""

from __future__ import annotations

import stringprep
import unicodedata
from collections.abc import Callable

from .._errors import InvalidArgumentError

__all__ = ("saslprep",)

# RFC 4013 §2.3: "The following characters are prohibited: Non-ASCII space
# characters [C.1.2], ASCII control characters [C.2.1], Non-ASCII control
# characters [C.2.2], Private Use characters [C.3], Non-character code points
# [C.4], Surrogate code points [C.5], Inappropriate for plain text characters
# [C.6], Inappropriate for canonical representation characters [C.7], Change
# display properties or deprecated characters [C.8], Tagging characters [C.9]".
_PROHIBITED: tuple[Callable[[str], bool], ...] = (
    stringprep.in_table_c12,
    stringprep.in_table_c21,
    stringprep.in_table_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
)


def _map(text: str) -> str:
    # RFC 4013 §2.1: "non-ASCII space characters [StringPrep, C.1.2] that can be
    # mapped to SPACE (U+0020)" and "the 'commonly mapped to nothing' characters
    # [StringPrep, B.1] that can be mapped to nothing".
    return "".join(
        " " if stringprep.in_table_c12(char) else char
        for char in text
        if not stringprep.in_table_b1(char)
    )


def saslprep(text: str, *, allow_unassigned: bool = False, what: str = "string") -> str:
    """Prepare ``text`` with the SASLprep profile (RFC 4013).

    :param text: the user name or password
    :param allow_unassigned: True for a "query" (RFC 3454 §7: code points
        unassigned in Unicode 3.2 pass through), False for a "stored string"
        (they are refused)
    :param what: how errors name the text (``"password"``); the value itself
        never appears in them
    :return: the prepared string
    :raises InvalidArgumentError: ``text`` is not a str, is empty once
        prepared, or holds a prohibited character, an unassigned code point
        (unless allowed) or breaks the bidirectional rules
    """
    if not isinstance(text, str):
        raise InvalidArgumentError(f"the {what} must be a str")
    # RFC 4013 §2.2: "This profile specifies using Unicode normalization form KC".
    prepared = unicodedata.ucd_3_2_0.normalize("NFKC", _map(text))
    for char in prepared:
        if any(in_table(char) for in_table in _PROHIBITED):
            raise InvalidArgumentError(
                f"the {what} contains a character that SASLprep prohibits (RFC 4013 §2.3)"
            )
        # RFC 4013 §2.5: "This profile specifies the [StringPrep, A.1] table as its
        # list of unassigned code points", prohibited in stored strings.
        if not allow_unassigned and stringprep.in_table_a1(char):
            raise InvalidArgumentError(
                f"the {what} contains a code point unassigned in Unicode 3.2, "
                "which SASLprep refuses (RFC 4013 §2.5)"
            )
    _check_bidi(prepared, what)
    if not prepared:
        raise InvalidArgumentError(f"the {what} is empty after SASLprep")
    return prepared


def _check_bidi(text: str, what: str) -> None:
    # RFC 4013 §2.4 applies RFC 3454 §6: "2) If a string contains any RandALCat
    # character, the string MUST NOT contain any LCat character.  3) If a string
    # contains any RandALCat character, a RandALCat character MUST be the first
    # character of the string, and a RandALCat character MUST be the last
    # character of the string."  (Rule 1, no C.8 characters, is checked above.)
    if not any(stringprep.in_table_d1(char) for char in text):
        return
    if (
        any(stringprep.in_table_d2(char) for char in text)
        or not stringprep.in_table_d1(text[0])
        or not stringprep.in_table_d1(text[-1])
    ):
        raise InvalidArgumentError(
            f"the {what} mixes right-to-left and left-to-right text in a way "
            "SASLprep refuses (RFC 4013 §2.4)"
        )

"""EHLO capabilities: keywords, parameters, AUTH merging, SIZE."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from anyio_smtp import Capabilities

POSTFIX = [
    "mail.example.com",
    "PIPELINING",
    "SIZE 10240000",
    "VRFY",
    "ETRN",
    "STARTTLS",
    "ENHANCEDSTATUSCODES",
    "8BITMIME",
    "DSN",
    "SMTPUTF8",
    "CHUNKING",
]


def test_greeting_is_kept_apart() -> None:
    caps = Capabilities.from_ehlo(POSTFIX)
    assert caps.greeting == "mail.example.com"
    assert "mail.example.com" not in caps
    assert "MAIL.EXAMPLE.COM" not in caps
    assert len(caps) == len(POSTFIX) - 1


def test_greeting_line_that_looks_like_a_keyword() -> None:
    caps = Capabilities.from_ehlo(["PIPELINING"])
    assert caps.greeting == "PIPELINING"
    assert "PIPELINING" not in caps
    assert len(caps) == 0


def test_empty_reply() -> None:
    caps = Capabilities.from_ehlo([])
    assert caps.greeting == ""
    assert len(caps) == 0
    assert caps.size_limit is None
    assert caps.auth_mechanisms == frozenset()


def test_lookups_ignore_case() -> None:
    caps = Capabilities.from_ehlo(["mx", "pipelining", "Size 1000", "StartTLS"])
    for name in ("PIPELINING", "pipelining", "Pipelining"):
        assert name in caps
    assert caps["size"] == ("1000",)
    assert caps["SIZE"] == ("1000",)
    assert caps.get("sIzE") == ("1000",)
    assert "starttls" in caps
    assert sorted(caps) == ["PIPELINING", "SIZE", "STARTTLS"]


def test_missing_keyword() -> None:
    caps = Capabilities.from_ehlo(POSTFIX)
    assert "AUTH" not in caps
    assert caps.get("AUTH") is None
    with pytest.raises(KeyError):
        caps["AUTH"]


def test_contains_non_str_is_false() -> None:
    caps = Capabilities.from_ehlo(POSTFIX)
    others: list[object] = [1, None, b"PIPELINING", ("PIPELINING",)]
    for other in others:
        assert other not in caps


def test_parameters() -> None:
    caps = Capabilities.from_ehlo(["mx", "SIZE 35882577", "DELIVERBY 240", "X-THING a  b\tc"])
    assert caps["SIZE"] == ("35882577",)
    assert caps["DELIVERBY"] == ("240",)
    assert caps["X-THING"] == ("a", "b", "c")
    assert caps["SIZE"] == ("35882577",)


def test_keyword_without_parameters() -> None:
    assert Capabilities.from_ehlo(POSTFIX)["PIPELINING"] == ()


def test_parameters_keep_their_case() -> None:
    assert Capabilities.from_ehlo(["mx", "X-FOO MixedCase"])["X-FOO"] == ("MixedCase",)


def test_auth_mechanisms_upper_case() -> None:
    caps = Capabilities.from_ehlo(["mx", "AUTH plain Login CRAM-MD5"])
    assert caps.auth_mechanisms == frozenset({"PLAIN", "LOGIN", "CRAM-MD5"})
    assert caps["AUTH"] == ("PLAIN", "LOGIN", "CRAM-MD5")


def test_several_auth_lines_are_merged() -> None:
    caps = Capabilities.from_ehlo(["mx", "AUTH PLAIN LOGIN", "AUTH CRAM-MD5 PLAIN"])
    assert caps["AUTH"] == ("PLAIN", "LOGIN", "CRAM-MD5")
    assert caps.auth_mechanisms == frozenset({"PLAIN", "LOGIN", "CRAM-MD5"})


def test_legacy_auth_equals_form() -> None:
    caps = Capabilities.from_ehlo(["mx", "AUTH=LOGIN PLAIN"])
    assert "AUTH" in caps
    assert "AUTH=LOGIN" not in caps
    assert caps.auth_mechanisms == frozenset({"LOGIN", "PLAIN"})


def test_legacy_and_modern_auth_merged() -> None:
    caps = Capabilities.from_ehlo(["mx", "AUTH LOGIN PLAIN", "AUTH=LOGIN XOAUTH2"])
    assert caps["AUTH"] == ("LOGIN", "PLAIN", "XOAUTH2")


def test_legacy_auth_equals_alone() -> None:
    caps = Capabilities.from_ehlo(["mx", "AUTH="])
    assert "AUTH" in caps
    assert caps.auth_mechanisms == frozenset()


def test_empty_trailing_line() -> None:
    caps = Capabilities.from_ehlo(["mx", "PIPELINING", ""])
    assert list(caps) == ["PIPELINING"]
    assert "" not in caps


def test_blank_lines_are_skipped() -> None:
    caps = Capabilities.from_ehlo(["mx", "   ", "\t", "SIZE 5"])
    assert list(caps) == ["SIZE"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("SIZE 10240000", 10240000),
        ("SIZE 1", 1),
        ("SIZE 010", 10),
        ("size 2048", 2048),
        ("SIZE", None),
        ("SIZE 0", None),
        ("SIZE 000", None),
        ("SIZE junk", None),
        ("SIZE -5", None),
        ("SIZE +5", None),
        ("SIZE 1.5", None),
        ("SIZE 10M", None),
        ("SIZE \u00b2", None),  # SUPERSCRIPT TWO: str.isdigit() says yes, int() says no
        ("SIZE \u0661\u0660", None),  # ARABIC-INDIC digits are not RFC 1870 DIGITs
        ("SIZE \uff11\uff10", None),  # FULLWIDTH digits
    ],
)
def test_size_limit(line: str, expected: int | None) -> None:
    assert Capabilities.from_ehlo(["mx", line]).size_limit == expected


def test_size_limit_absent() -> None:
    assert Capabilities.from_ehlo(["mx", "PIPELINING"]).size_limit is None


@pytest.mark.parametrize("keyword", ["STARTTLSX", "XSTARTTLS", "START", "STARTTLS-X"])
def test_keyword_not_matched_by_substring(keyword: str) -> None:
    caps = Capabilities.from_ehlo(["mx", keyword])
    assert "STARTTLS" not in caps
    assert keyword in caps


def test_keyword_is_the_first_word_only() -> None:
    caps = Capabilities.from_ehlo(["mx", "X-EXT STARTTLS"])
    assert "STARTTLS" not in caps


def test_unknown_keywords_kept() -> None:
    caps = Capabilities.from_ehlo(["mx", "X-LINK2STATE", "XEXCH50", "TURN", "X-FOO bar"])
    assert {"X-LINK2STATE", "XEXCH50", "TURN", "X-FOO"} <= set(caps)
    assert caps["X-FOO"] == ("bar",)


def test_is_a_read_only_mapping() -> None:
    caps = Capabilities.from_ehlo(POSTFIX)
    assert isinstance(caps, Mapping)
    with pytest.raises(TypeError):
        caps["NEW"] = ()  # type: ignore[index]
    with pytest.raises(TypeError):
        del caps["SIZE"]  # type: ignore[attr-defined]
    assert not hasattr(caps, "__setitem__")
    assert not hasattr(caps, "update")
    assert not hasattr(caps, "pop")


def test_parameters_are_tuples() -> None:
    caps = Capabilities.from_ehlo(POSTFIX)
    assert all(isinstance(value, tuple) for value in caps.values())


def test_constructor_copies_its_input() -> None:
    source: dict[str, tuple[str, ...]] = {"size": ("1000",)}
    caps = Capabilities(source, greeting="mx")
    source["PIPELINING"] = ()
    source["size"] = ("1",)
    assert "PIPELINING" not in caps
    assert caps["SIZE"] == ("1000",)
    assert list(caps) == ["SIZE"]


def test_default_is_empty() -> None:
    caps = Capabilities()
    assert len(caps) == 0
    assert caps.greeting == ""
    assert dict(caps) == {}


def test_mapping_views_and_equality() -> None:
    caps = Capabilities.from_ehlo(["mx", "SIZE 5", "PIPELINING"])
    assert dict(caps) == {"SIZE": ("5",), "PIPELINING": ()}
    assert set(caps.keys()) == {"SIZE", "PIPELINING"}
    assert caps == Capabilities({"size": ("5",), "pipelining": ()})
    assert caps != Capabilities({"SIZE": ("6",), "PIPELINING": ()})


def test_later_line_replaces_earlier_one() -> None:
    caps = Capabilities.from_ehlo(["mx", "SIZE 5", "size 7"])
    assert caps["SIZE"] == ("7",)


def test_repr_lists_keywords() -> None:
    text = repr(Capabilities.from_ehlo(["mx", "SIZE 5", "PIPELINING"]))
    assert text.startswith("Capabilities(")
    assert "SIZE 5" in text
    assert "PIPELINING" in text


_LINE = st.one_of(
    st.text(max_size=40),
    st.tuples(
        st.sampled_from(["SIZE", "size", "AUTH", "AUTH=", "auth=plain", "STARTTLS", ""]),
        st.text(max_size=20),
    ).map(" ".join),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_LINE, max_size=12))
@example(["mx", "SIZE \u00b2"])
def test_from_ehlo_never_raises(lines: list[str]) -> None:
    caps = Capabilities.from_ehlo(lines)
    assert caps.greeting == (lines[0] if lines else "")
    limit = caps.size_limit
    assert limit is None or limit > 0
    assert all(name == name.upper() for name in caps.auth_mechanisms)
    assert all(keyword == keyword.upper() for keyword in caps)
    assert all(keyword.lower() in caps for keyword in caps if keyword.isascii())
    repr(caps)

"""DSN (RFC 3461) and REQUIRETLS (RFC 8689) parameters, as a table."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anyio_smtp import DSN, ExtensionNotSupportedError, InvalidArgumentError, Recipient
from anyio_smtp._protocol.capabilities import Capabilities
from anyio_smtp._protocol.params import envelope_parameters, orcpt_parameter, xtext

ALL = Capabilities.from_ehlo(["mx", "DSN", "REQUIRETLS", "SMTPUTF8"])
NONE = Capabilities.from_ehlo(["mx"])
RCPTS = ("a@example.org", "b@example.org")


@pytest.mark.parametrize(
    ("dsn", "options", "mail", "rcpt"),
    [
        (None, {}, (), ((), ())),
        (DSN(ret="HDRS"), {}, ("RET=HDRS",), ((), ())),
        (DSN(ret="FULL", envid="QQ 1+2=3"), {}, ("RET=FULL", "ENVID=QQ+201+2B2+3D3"), ((), ())),
        (
            DSN(notify=frozenset({"FAILURE", "SUCCESS"})),
            {},
            (),
            (("NOTIFY=SUCCESS,FAILURE",), ("NOTIFY=SUCCESS,FAILURE",)),
        ),
        (
            DSN(notify=frozenset({"NEVER"}), orcpt=True),
            {},
            (),
            (
                ("NOTIFY=NEVER", "ORCPT=rfc822;a@example.org"),
                ("NOTIFY=NEVER", "ORCPT=rfc822;b@example.org"),
            ),
        ),
        (
            DSN(notify=frozenset({"DELAY"})),
            {
                "b@example.org": Recipient(
                    "b@example.org", notify=frozenset({"NEVER"}), orcpt="x+y@old.example"
                )
            },
            (),
            (("NOTIFY=DELAY",), ("NOTIFY=NEVER", "ORCPT=rfc822;x+2By@old.example")),
        ),
    ],
)
def test_dsn_table(
    dsn: DSN | None,
    options: dict[str, Recipient],
    mail: tuple[str, ...],
    rcpt: tuple[tuple[str, ...], ...],
) -> None:
    assert envelope_parameters(
        ALL, tls=False, recipients=RCPTS, dsn=dsn, recipient_options=options
    ) == (mail, rcpt)


def test_dsn_not_advertised_is_refused() -> None:
    with pytest.raises(ExtensionNotSupportedError) as caught:
        envelope_parameters(NONE, tls=True, recipients=RCPTS, dsn=DSN(ret="HDRS"))
    assert caught.value.name == "DSN"
    with pytest.raises(ExtensionNotSupportedError):
        envelope_parameters(
            NONE,
            tls=True,
            recipients=RCPTS,
            recipient_options={RCPTS[0]: Recipient(RCPTS[0], notify=frozenset({"NEVER"}))},
        )
    # An empty DSN asks for nothing, so it needs nothing.
    assert envelope_parameters(NONE, tls=True, recipients=RCPTS, dsn=DSN()) == ((), ((), ()))


def test_requiretls_needs_tls_and_the_extension() -> None:
    assert envelope_parameters(ALL, tls=True, recipients=RCPTS, require_tls=True)[0] == (
        "REQUIRETLS",
    )
    with pytest.raises(ExtensionNotSupportedError, match="not encrypted") as caught:
        envelope_parameters(ALL, tls=False, recipients=RCPTS, require_tls=True)
    assert caught.value.name == "REQUIRETLS"
    with pytest.raises(ExtensionNotSupportedError) as caught:
        envelope_parameters(NONE, tls=True, recipients=RCPTS, require_tls=True)
    assert caught.value.name == "REQUIRETLS"


@pytest.mark.parametrize(
    "bad",
    [
        {"ret": "ALL"},
        {"envid": ""},
        {"envid": "x" * 101},
        {"envid": "tab\there"},
        {"envid": "é"},
        {"notify": frozenset({"NEVER", "SUCCESS"})},
        {"notify": frozenset()},
        {"notify": frozenset({"SOMETIMES"})},
    ],
)
def test_invalid_dsn_options(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        DSN(**bad)  # type: ignore[arg-type]


def test_notify_is_normalised() -> None:
    lower: Any = frozenset({"delay", "failure"})
    assert DSN(notify=lower).notify == frozenset({"FAILURE", "DELAY"})
    single: Any = "never"
    assert Recipient("a@b.c", notify=single).notify == frozenset({"NEVER"})


def test_xtext_and_orcpt() -> None:
    assert xtext("a+b=c d\x01") == "a+2Bb+3Dc+20d+01"
    assert orcpt_parameter("user@example.org") == "ORCPT=rfc822;user@example.org"
    assert orcpt_parameter("jürgen@bücher.example") == (
        "ORCPT=utf-8;j\\x{FC}rgen@b\\x{FC}cher.example"
    )
    with pytest.raises(InvalidArgumentError):
        xtext("é")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x7F)))
def test_xtext_round_trips_and_is_safe(text: str) -> None:
    encoded = xtext(text)
    assert all(0x21 <= ord(c) <= 0x7E and c != "=" for c in encoded)
    # decode: "+XX" -> the character
    decoded, i = [], 0
    while i < len(encoded):
        if encoded[i] == "+":
            decoded.append(chr(int(encoded[i + 1 : i + 3], 16)))
            i += 3
        else:
            decoded.append(encoded[i])
            i += 1
    assert "".join(decoded) == text

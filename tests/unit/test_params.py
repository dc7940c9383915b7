"""plan_transfer: BODY=, SMTPUTF8, SIZE= and DATA or BDAT, decided in one place.

The table below is the rule as a caller sees it: what the server advertised and
what the message is, and either the plan or the refusal that comes before MAIL.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, get_args

import pytest

from anyio_smtp import (
    Capabilities,
    ExtensionNotSupportedError,
    InvalidArgumentError,
    MessageTooLargeError,
    SMTPError,
)
from anyio_smtp._protocol.params import Transfer, TransferPlan, plan_transfer

SMALL = 1200
LARGE = 300_000
ALL = ("8BITMIME", "SMTPUTF8", "SIZE", "CHUNKING", "BINARYMIME")


def caps(*keywords: str) -> Capabilities:
    """What a server advertising exactly ``keywords`` (EHLO lines) offers."""
    return Capabilities.from_ehlo(["mx.test", *keywords])


@dataclass(frozen=True)
class Refused:
    """The plan refuses the message: this error type, with this ``name`` if it has one."""

    error: type[SMTPError]
    name: str | None = None


@dataclass(frozen=True)
class Row:
    keywords: tuple[str, ...]
    size: int | None
    eight_bit: bool | None
    expected: TransferPlan | Refused
    binary: bool = False
    smtputf8: bool = False
    transfer: str = "auto"


def plan(
    *parameters: str, bdat: bool = False, binary: bool = False, check: bool = False
) -> TransferPlan:
    return TransferPlan(tuple(parameters), bdat, binary, check)


DATA_7BIT = plan()

TABLE: dict[str, Row] = {
    # -- plain 7-bit messages ------------------------------------------------------------
    "7bit small, nothing advertised: DATA, no parameter": Row((), SMALL, False, DATA_7BIT),
    "7bit small, 8BITMIME advertised: no BODY=": Row(("8BITMIME",), SMALL, False, DATA_7BIT),
    "7bit small, CHUNKING advertised: BDAT": Row(("CHUNKING",), SMALL, False, plan(bdat=True)),
    "7bit small, everything advertised: BDAT, only SIZE=": Row(
        ALL, SMALL, False, plan(f"SIZE={SMALL}", bdat=True)
    ),
    "7bit small, PIPELINING but no CHUNKING: DATA": Row(("PIPELINING",), SMALL, False, DATA_7BIT),
    "keywords are case-insensitive": Row(
        ("chunking", "8bitmime"), LARGE, True, plan("BODY=8BITMIME", bdat=True)
    ),
    # -- 8-bit data ----------------------------------------------------------------------
    "8bit with 8BITMIME: BODY=8BITMIME": Row(("8BITMIME",), SMALL, True, plan("BODY=8BITMIME")),
    "8bit without 8BITMIME: refused": Row(
        ("SMTPUTF8", "CHUNKING"), SMALL, True, Refused(ExtensionNotSupportedError, "8BITMIME")
    ),
    # -- SMTPUTF8 ------------------------------------------------------------------------
    "SMTPUTF8 needed and advertised": Row(
        ("8BITMIME", "SMTPUTF8"), SMALL, True, plan("BODY=8BITMIME", "SMTPUTF8"), smtputf8=True
    ),
    "SMTPUTF8 needed, 7bit data": Row(("SMTPUTF8",), SMALL, False, plan("SMTPUTF8"), smtputf8=True),
    "SMTPUTF8 needed, not advertised: refused": Row(
        ("8BITMIME",), SMALL, False, Refused(ExtensionNotSupportedError, "SMTPUTF8"), smtputf8=True
    ),
    # -- SIZE ----------------------------------------------------------------------------
    "SIZE without a limit: declared": Row(("SIZE",), 123456, False, plan("SIZE=123456")),
    "SIZE 0 means no limit": Row(("SIZE 0",), 10**9, False, plan(f"SIZE={10**9}")),
    "SIZE under the limit": Row(("SIZE 2000",), SMALL, False, plan(f"SIZE={SMALL}")),
    "SIZE exactly at the limit": Row(("SIZE 2000",), 2000, False, plan("SIZE=2000")),
    "SIZE over the limit: refused": Row(("SIZE 2000",), 2001, False, Refused(MessageTooLargeError)),
    "SIZE over the limit with CHUNKING: refused too": Row(
        ("SIZE 2000", "CHUNKING"), LARGE, False, Refused(MessageTooLargeError)
    ),
    "SIZE not advertised: not declared": Row(("8BITMIME",), 10**8, False, DATA_7BIT),
    # -- streamed: size and 8-bit-ness unknown ------------------------------------------
    "streamed, 8BITMIME, no CHUNKING: DATA, BODY=8BITMIME declared": Row(
        ("8BITMIME",), None, None, plan("BODY=8BITMIME")
    ),
    "streamed, nothing advertised: DATA, the data is checked for 8-bit": Row(
        (), None, None, plan(check=True)
    ),
    "streamed, CHUNKING and 8BITMIME: BDAT, BODY=8BITMIME": Row(
        ("CHUNKING", "8BITMIME"), None, None, plan("BODY=8BITMIME", bdat=True)
    ),
    "streamed, CHUNKING without 8BITMIME: BDAT, checked": Row(
        ("CHUNKING",), None, None, plan(bdat=True, check=True)
    ),
    "streamed, SIZE advertised but size unknown: no SIZE=": Row(
        ("SIZE 1000", "8BITMIME"), None, None, plan("BODY=8BITMIME")
    ),
    "streamed with size given: SIZE= declared": Row(
        ("SIZE", "8BITMIME"), 5000, None, plan("BODY=8BITMIME", "SIZE=5000")
    ),
    "streamed with size given over the limit: refused": Row(
        ("SIZE 4000", "8BITMIME"), 5000, None, Refused(MessageTooLargeError)
    ),
    "streamed with a small size given, CHUNKING: BDAT": Row(
        ("CHUNKING", "8BITMIME"), 5000, None, plan("BODY=8BITMIME", bdat=True)
    ),
    "streamed with a large size given, CHUNKING: BDAT": Row(
        ("CHUNKING", "8BITMIME", "SIZE"),
        LARGE,
        None,
        plan("BODY=8BITMIME", f"SIZE={LARGE}", bdat=True),
    ),
    # -- binary (NUL octets) -------------------------------------------------------------
    "binary, CHUNKING and BINARYMIME: BDAT, BODY=BINARYMIME": Row(
        ("CHUNKING", "BINARYMIME", "8BITMIME"),
        SMALL,
        True,
        plan("BODY=BINARYMIME", bdat=True, binary=True),
        binary=True,
    ),
    "binary 7bit octets, CHUNKING and BINARYMIME": Row(
        ("CHUNKING", "BINARYMIME"),
        SMALL,
        False,
        plan("BODY=BINARYMIME", bdat=True, binary=True),
        binary=True,
    ),
    "binary without BINARYMIME: BDAT with 8BITMIME": Row(
        ("CHUNKING", "8BITMIME"), SMALL, True, plan("BODY=8BITMIME", bdat=True), binary=True
    ),
    "binary, BINARYMIME without CHUNKING: 8BITMIME": Row(
        ("BINARYMIME", "8BITMIME"), SMALL, False, plan("BODY=8BITMIME"), binary=True
    ),
    "binary, large, no BINARYMIME: BDAT with 8BITMIME": Row(
        ("CHUNKING", "8BITMIME"), LARGE, True, plan("BODY=8BITMIME", bdat=True), binary=True
    ),
    "binary, neither 8BITMIME nor BINARYMIME: refused": Row(
        ("CHUNKING",), SMALL, False, Refused(ExtensionNotSupportedError, "8BITMIME"), binary=True
    ),
    "everything at once": Row(
        ALL,
        SMALL,
        True,
        plan("BODY=BINARYMIME", "SMTPUTF8", f"SIZE={SMALL}", bdat=True, binary=True),
        binary=True,
        smtputf8=True,
    ),
    # -- large messages ------------------------------------------------------------------
    "large with CHUNKING: BDAT": Row(("CHUNKING",), LARGE, False, plan(bdat=True)),
    "large 8bit with CHUNKING: BDAT, BODY=8BITMIME": Row(
        ("CHUNKING", "8BITMIME"), 10**7, True, plan("BODY=8BITMIME", bdat=True)
    ),
    "large without CHUNKING: DATA": Row(("8BITMIME",), 10**7, False, DATA_7BIT),
    # -- the caller's choice -------------------------------------------------------------
    "transfer=bdat without CHUNKING: refused": Row(
        ("8BITMIME", "PIPELINING"),
        SMALL,
        False,
        Refused(ExtensionNotSupportedError, "CHUNKING"),
        transfer="bdat",
    ),
    "transfer=bdat with CHUNKING, small message: BDAT": Row(
        ("CHUNKING",), SMALL, False, plan(bdat=True), transfer="bdat"
    ),
    "transfer=bdat, binary without BINARYMIME: BDAT with 8BITMIME": Row(
        ("CHUNKING", "8BITMIME"),
        SMALL,
        True,
        plan("BODY=8BITMIME", bdat=True),
        binary=True,
        transfer="bdat",
    ),
    "transfer=data forces DATA for a large message": Row(
        ("CHUNKING",), 10**7, False, DATA_7BIT, transfer="data"
    ),
    "transfer=data forces DATA for binary content": Row(
        ("CHUNKING", "BINARYMIME", "8BITMIME"),
        SMALL,
        True,
        plan("BODY=8BITMIME"),
        binary=True,
        transfer="data",
    ),
    "transfer=data forces DATA for a stream": Row(
        ("CHUNKING", "8BITMIME"), None, None, plan("BODY=8BITMIME"), transfer="data"
    ),
    "transfer=data, binary without 8BITMIME: refused": Row(
        ("CHUNKING", "BINARYMIME"),
        SMALL,
        False,
        Refused(ExtensionNotSupportedError, "8BITMIME"),
        binary=True,
        transfer="data",
    ),
    "transfer='BDAT' (wrong case) is not a transfer": Row(
        ALL, SMALL, False, Refused(InvalidArgumentError), transfer="BDAT"
    ),
    "transfer='chunking' is not a transfer": Row(
        ALL, SMALL, False, Refused(InvalidArgumentError), transfer="chunking"
    ),
    "a bad transfer is refused before anything else": Row(
        (), 10**9, True, Refused(InvalidArgumentError), transfer=""
    ),
}


@pytest.mark.parametrize("row", TABLE.values(), ids=TABLE.keys())
def test_plan_transfer(row: Row) -> None:
    transfer: Any = row.transfer
    options = {
        "size": row.size,
        "eight_bit": row.eight_bit,
        "binary": row.binary,
        "smtputf8": row.smtputf8,
        "transfer": transfer,
    }
    capabilities = caps(*row.keywords)
    if isinstance(row.expected, TransferPlan):
        result = plan_transfer(capabilities, **options)
        assert result == row.expected
        assert (result.parameters, result.bdat, result.binary, result.check_eight_bit) == (
            row.expected.parameters,
            row.expected.bdat,
            row.expected.binary,
            row.expected.check_eight_bit,
        )
        return
    with pytest.raises(row.expected.error) as caught:
        plan_transfer(capabilities, **options)
    assert type(caught.value) is row.expected.error
    if row.expected.name is not None:
        assert isinstance(caught.value, ExtensionNotSupportedError)
        assert caught.value.name == row.expected.name
        assert caught.value.is_permanent


def test_too_large_names_the_size_and_the_limit() -> None:
    with pytest.raises(MessageTooLargeError) as caught:
        plan_transfer(caps("SIZE 2000"), size=2001, eight_bit=False)
    assert (caught.value.size, caught.value.limit) == (2001, 2000)
    assert caught.value.is_permanent


def test_defaults_are_auto_text_without_smtputf8() -> None:
    assert plan_transfer(caps("SMTPUTF8"), size=SMALL, eight_bit=False) == DATA_7BIT
    assert plan_transfer(caps("CHUNKING"), size=LARGE, eight_bit=False) == plan(bdat=True)


# -- invariants over every combination ---------------------------------------------------

SIZES = (0, SMALL, LARGE - 1, LARGE, 3_000_000, None)
LIMITS = ("SIZE", "SIZE 0", f"SIZE {SMALL}", f"SIZE {LARGE}")
TRANSFERS: tuple[Transfer, ...] = get_args(Transfer)


def keyword_sets() -> list[tuple[str, ...]]:
    base = ("8BITMIME", "SMTPUTF8", "CHUNKING", "BINARYMIME")
    sets: list[tuple[str, ...]] = []
    for count in range(len(base) + 1):
        for chosen in itertools.combinations(base, count):
            sets.append(chosen)
            sets += [(*chosen, limit) for limit in LIMITS]
    return sets


def attempt(
    capabilities: Capabilities,
    size: int | None,
    eight_bit: bool | None,
    binary: bool,
    smtputf8: bool,
    transfer: Transfer,
) -> TransferPlan | SMTPError:
    try:
        return plan_transfer(
            capabilities,
            size=size,
            eight_bit=eight_bit,
            binary=binary,
            smtputf8=smtputf8,
            transfer=transfer,
        )
    except SMTPError as exc:
        return exc


def test_every_combination_keeps_the_rules() -> None:
    """Whatever the inputs, a plan only uses what the server offers, and says why not."""
    assert sorted(TRANSFERS) == ["auto", "bdat", "data"]
    checked = refused = 0
    combinations = list(
        itertools.product(keyword_sets(), SIZES, (False, True, None), (False, True), (False, True))
    )
    cases = [(combination, transfer) for transfer in TRANSFERS for combination in combinations]
    for (keywords, size, eight_bit, binary, smtputf8), transfer in cases:
        if eight_bit is None and binary:
            continue  # streamed content is never known to be binary
        capabilities = caps(*keywords)
        limit = capabilities.size_limit
        result = attempt(capabilities, size, eight_bit, binary, smtputf8, transfer)
        if isinstance(result, ExtensionNotSupportedError):
            assert result.name in ("8BITMIME", "SMTPUTF8", "CHUNKING")
            assert result.name not in capabilities
            refused += 1
            continue
        if isinstance(result, MessageTooLargeError):
            assert size is not None
            assert limit is not None
            assert size > limit == result.limit
            refused += 1
            continue
        assert isinstance(result, TransferPlan), result
        checked += 1
        names = [parameter.partition("=")[0] for parameter in result.parameters]
        assert len(names) == len(set(names)), result
        body = [p for p in result.parameters if p.startswith("BODY=")]
        # DATA or BDAT: the caller's choice wins; auto follows the documented rule.
        if transfer == "data":
            assert not result.bdat
        elif transfer == "bdat":
            assert result.bdat
        else:
            assert result.bdat == ("CHUNKING" in capabilities)
        if result.bdat:
            assert "CHUNKING" in capabilities
        # BINARYMIME: only for binary data, only with BDAT, only when offered.
        if result.binary:
            assert binary
            assert result.bdat
            assert "BINARYMIME" in capabilities
            assert body == ["BODY=BINARYMIME"]
        elif eight_bit or binary:
            assert body == ["BODY=8BITMIME"]
        elif eight_bit is None:
            assert body == (["BODY=8BITMIME"] if "8BITMIME" in capabilities else [])
        else:
            assert body == []
        if body == ["BODY=8BITMIME"]:
            assert "8BITMIME" in capabilities
        # Unknown 8-bit-ness that can not be declared must be watched.
        assert result.check_eight_bit == (eight_bit is None and "8BITMIME" not in capabilities)
        assert ("SMTPUTF8" in result.parameters) == smtputf8
        expected_size = [f"SIZE={size}"] if "SIZE" in capabilities and size is not None else []
        # Order on the MAIL line: BODY=, SMTPUTF8, SIZE=.
        assert result.parameters == (
            *body,
            *(["SMTPUTF8"] if smtputf8 else []),
            *expected_size,
        )
    assert checked > 1000
    assert refused > 100

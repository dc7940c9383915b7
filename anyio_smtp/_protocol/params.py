"""One decision: how a message's data is declared and carried.

Given what the server advertised and what the message is, ``plan_transfer``
chooses the ``BODY=`` parameter, whether ``SMTPUTF8`` is needed, ``SIZE=``, and
DATA or BDAT.  Everything that can be refused is refused here, before MAIL:

* RFC 6152 §3: 8-bit data only to a server that advertised 8BITMIME;
* RFC 6531 §3.4: non-ASCII addresses or header fields only with SMTPUTF8;
* RFC 3030 §3: BODY=BINARYMIME only with CHUNKING (BDAT) and BINARYMIME;
* RFC 1870 §6: a message larger than the advertised SIZE is not attempted.

The rule for DATA or BDAT (``transfer="auto"``): BDAT when the server offers
CHUNKING and the message is binary (it can only travel as BINARYMIME), large
(``BDAT_THRESHOLD`` octets or more: no dot-stuffing scan of the data), or of
unknown size (streamed: BDAT chunks need no end marker); DATA otherwise, which
every server supports and which costs the same round trips for a small message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .._errors import ExtensionNotSupportedError, InvalidArgumentError, MessageTooLargeError
from .capabilities import Capabilities

__all__ = ("BDAT_THRESHOLD", "Transfer", "TransferPlan", "plan_transfer")

#: Messages at least this large go by BDAT when the server offers CHUNKING.
BDAT_THRESHOLD = 256 * 1024

Transfer = Literal["auto", "data", "bdat"]


@dataclass(frozen=True, slots=True)
class TransferPlan:
    """How one message goes.

    :ivar parameters: the MAIL FROM parameters (``BODY=...``, ``SMTPUTF8``, ``SIZE=...``)
    :ivar bdat: send the data with BDAT chunks rather than DATA
    :ivar binary: send the data byte for byte (BODY=BINARYMIME): no line-ending
        normalisation
    :ivar check_eight_bit: the data's 8-bit-ness is unknown (streamed) and the
        server lacks 8BITMIME: refuse the message if 8-bit data turns up
    """

    parameters: tuple[str, ...]
    bdat: bool
    binary: bool
    check_eight_bit: bool


def plan_transfer(
    capabilities: Capabilities,
    *,
    size: int | None,
    eight_bit: bool | None,
    binary: bool = False,
    smtputf8: bool = False,
    transfer: Transfer = "auto",
) -> TransferPlan:
    """Decide ``BODY=``, ``SMTPUTF8``, ``SIZE=`` and DATA or BDAT for one message.

    :param size: the message size (RFC 1870: CRLF line endings, no dot-stuffing),
        None when unknown
    :param eight_bit: whether the data has octets above 127; None when unknown
    :param binary: the data is binary (NUL octets) and would best travel unchanged
    :param smtputf8: the addresses or header fields need SMTPUTF8
    :param transfer: ``"auto"``, or force ``"data"`` or ``"bdat"``
    :raises ExtensionNotSupportedError: something needed is not advertised
    :raises MessageTooLargeError: over the advertised SIZE limit
    :raises InvalidArgumentError: an unknown ``transfer``
    """
    if transfer not in ("auto", "data", "bdat"):
        raise InvalidArgumentError("transfer must be 'auto', 'data' or 'bdat'")
    chunking = "CHUNKING" in capabilities
    if transfer == "bdat" and not chunking:
        raise ExtensionNotSupportedError("CHUNKING", "transfer='bdat' was asked for")
    binarymime = binary and chunking and "BINARYMIME" in capabilities and transfer != "data"
    if transfer == "auto":
        bdat = chunking and (binarymime or size is None or size >= BDAT_THRESHOLD)
    else:
        bdat = transfer == "bdat"

    parameters: list[str] = []
    check_eight_bit = False
    if binarymime:
        parameters.append("BODY=BINARYMIME")
    elif eight_bit or binary:
        if "8BITMIME" not in capabilities:
            raise ExtensionNotSupportedError("8BITMIME", "the message contains 8-bit data")
        parameters.append("BODY=8BITMIME")
    elif eight_bit is None:
        # Streamed: declare 8BITMIME when possible (harmless for 7-bit data),
        # else watch the data and refuse it if an 8-bit octet shows up.
        if "8BITMIME" in capabilities:
            parameters.append("BODY=8BITMIME")
        else:
            check_eight_bit = True
    if smtputf8:
        if "SMTPUTF8" not in capabilities:
            raise ExtensionNotSupportedError(
                "SMTPUTF8", "the message has non-ASCII addresses or header fields"
            )
        parameters.append("SMTPUTF8")
    if "SIZE" in capabilities and size is not None:
        limit = capabilities.size_limit
        if limit is not None and size > limit:
            raise MessageTooLargeError(size, limit)
        parameters.append(f"SIZE={size}")
    return TransferPlan(tuple(parameters), bdat, binarymime, check_eight_bit)

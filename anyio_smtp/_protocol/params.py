"""One decision: how a message's data is declared and carried.

Given what the server advertised and what the message is, ``plan_transfer``
chooses the ``BODY=`` parameter, whether ``SMTPUTF8`` is needed, ``SIZE=``, and
DATA or BDAT.  Everything that can be refused is refused here, before MAIL:

* RFC 6152 §3: 8-bit data only to a server that advertised 8BITMIME;
* RFC 6531 §3.4: non-ASCII addresses or header fields only with SMTPUTF8 (a
  non-ASCII domain alone goes in A-labels instead, ``envelope_smtputf8``);
* RFC 3030 §3: BODY=BINARYMIME only with CHUNKING (BDAT) and BINARYMIME;
* RFC 1870 §6: a message larger than the advertised SIZE is not attempted.

The rule for DATA or BDAT (``transfer="auto"``): BDAT whenever the server
offers CHUNKING, DATA otherwise.  BDAT never waits for a 354 before the data,
so a message costs one round trip less, and with PIPELINING a batch can keep
many messages in flight instead of one per round trip; the data also needs no
dot-stuffing, and binary content can travel unchanged as BINARYMIME.  Pass
``transfer="data"`` for a server whose CHUNKING is not to be trusted.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .._errors import ExtensionNotSupportedError, InvalidArgumentError, MessageTooLargeError
from .capabilities import Capabilities
from .commands import idna_mailbox, needs_smtputf8

__all__ = (
    "DSN",
    "Notify",
    "Recipient",
    "Transfer",
    "TransferPlan",
    "envelope_parameters",
    "envelope_smtputf8",
    "orcpt_parameter",
    "plan_transfer",
    "xtext",
)

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
    raw_size: int | None = None,
    smtputf8: bool = False,
    transfer: Transfer = "auto",
) -> TransferPlan:
    """Decide ``BODY=``, ``SMTPUTF8``, ``SIZE=`` and DATA or BDAT for one message.

    :param size: the message size (RFC 1870: CRLF line endings, no dot-stuffing),
        None when unknown
    :param eight_bit: whether the data has octets above 127; None when unknown
    :param binary: the data is binary (NUL octets) and would best travel unchanged
    :param raw_size: the size of the data unchanged (what BINARYMIME carries)
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
    bdat = chunking if transfer == "auto" else transfer == "bdat"

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
                "SMTPUTF8", "a non-ASCII local part or header field needs it"
            )
        parameters.append("SMTPUTF8")
    if binarymime and raw_size is not None:
        size = raw_size  # sent byte for byte, so that is its size
    if "SIZE" in capabilities and size is not None:
        limit = capabilities.size_limit
        if limit is not None and size > limit:
            raise MessageTooLargeError(size, limit)
        parameters.append(f"SIZE={size}")
    return TransferPlan(tuple(parameters), bdat, binarymime, check_eight_bit)


def envelope_smtputf8(sender: str, recipients: Sequence[str], *, content: bool = False) -> bool:
    """Whether a message goes with SMTPUTF8, or with its addresses in ASCII.

    Only a non-ASCII local part (or ``content``: UTF-8 header fields) needs
    SMTPUTF8.  Otherwise every non-ASCII domain goes in A-labels (RFC 5890),
    which every server understands, whether or not it offers SMTPUTF8; so
    ``user@bücher.example`` is sent as ``user@xn--bcher-kva.example``.

    :param content: the message's header fields need SMTPUTF8
    :return: whether SMTPUTF8 is needed (else ``Mail``/``Rcpt`` take ``idna=True``)
    :raises InvalidArgumentError: a domain to send in A-labels has none (not
        a valid internationalised domain name)
    """
    if content or needs_smtputf8(sender) or any(needs_smtputf8(r) for r in recipients):
        return True
    idna_mailbox(sender, role="sender")
    for recipient in recipients:
        idna_mailbox(recipient, role="recipient")
    return False


# -- envelope options: DSN (RFC 3461) and REQUIRETLS (RFC 8689) -------------------------

Notify = Literal["NEVER", "SUCCESS", "FAILURE", "DELAY"]
_NOTIFY_ORDER = ("SUCCESS", "FAILURE", "DELAY")
#: RFC 3461 §4.4: "The ENVID ... MUST NOT exceed 100 characters".
MAX_ENVID_LENGTH = 100


@dataclass(frozen=True, slots=True)
class DSN:
    """Delivery status notification requests (RFC 3461), sent only when advertised.

    :ivar ret: ``"FULL"`` or ``"HDRS"``: how much of the message a failure
        report returns (``RET=``)
    :ivar envid: an envelope identifier echoed in the reports (``ENVID=``),
        printable ASCII, at most 100 characters
    :ivar notify: for every recipient, ``{"NEVER"}`` or any of ``"SUCCESS"``,
        ``"FAILURE"``, ``"DELAY"`` (``NOTIFY=``); a :class:`Recipient` may
        override it
    :ivar orcpt: send each recipient's own address as ``ORCPT=``
    """

    ret: Literal["FULL", "HDRS"] | None = None
    envid: str | None = None
    notify: Collection[str] | None = None
    orcpt: bool = False

    def __post_init__(self) -> None:
        if self.ret is not None and self.ret not in ("FULL", "HDRS"):
            raise InvalidArgumentError("DSN ret must be 'FULL' or 'HDRS'")
        if self.envid is not None and (
            not isinstance(self.envid, str)
            or not self.envid
            or len(self.envid) > MAX_ENVID_LENGTH
            or not all(0x20 <= ord(c) <= 0x7E for c in self.envid)
        ):
            raise InvalidArgumentError(
                f"DSN envid must be 1 to {MAX_ENVID_LENGTH} printable ASCII characters"
            )
        if self.notify is not None:
            object.__setattr__(self, "notify", check_notify(self.notify))


@dataclass(frozen=True, slots=True)
class Recipient:
    """A recipient with its own DSN requests, usable wherever an address is.

    :ivar address: the bare address
    :ivar notify: ``{"NEVER"}`` or any of ``"SUCCESS"``, ``"FAILURE"``, ``"DELAY"``
    :ivar orcpt: the original recipient address to report (``ORCPT=``)
    """

    address: str
    notify: Collection[str] | None = None
    orcpt: str | None = None

    def __post_init__(self) -> None:
        if self.notify is not None:
            object.__setattr__(self, "notify", check_notify(self.notify))
        if self.orcpt is not None and (
            not isinstance(self.orcpt, str)
            or not self.orcpt
            or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in self.orcpt)
        ):
            raise InvalidArgumentError("ORCPT must be an address without control characters")


def check_notify(notify: Iterable[str]) -> frozenset[Notify]:
    """Validate a NOTIFY set (RFC 3461 §4.1: NEVER alone, or SUCCESS/FAILURE/DELAY)."""
    if isinstance(notify, str):
        notify = {notify}
    values = frozenset(str(value).upper() for value in notify)
    if not values:
        raise InvalidArgumentError("NOTIFY needs at least one value")
    if values == {"NEVER"}:
        return frozenset({"NEVER"})
    if not values <= set(_NOTIFY_ORDER):
        raise InvalidArgumentError(
            "NOTIFY is either NEVER alone or any of SUCCESS, FAILURE and DELAY"
        )
    return frozenset(value for value in _NOTIFY_ORDER if value in values)  # type: ignore[misc]


def xtext(text: str) -> str:
    """RFC 3461 §4: ``xchar`` is "!" to "~" except "+" and "="; others are "+" HEX HEX."""
    out = []
    for char in text:
        code = ord(char)
        if 0x21 <= code <= 0x7E and char not in "+=":
            out.append(char)
        elif code < 0x80:
            out.append(f"+{code:02X}")
        else:
            raise InvalidArgumentError("xtext can only carry ASCII")
    return "".join(out)


def orcpt_parameter(address: str) -> str:
    """``ORCPT=`` for an address: ``rfc822;`` xtext, or RFC 6533 ``utf-8;`` for non-ASCII."""
    if address.isascii():
        return "ORCPT=rfc822;" + xtext(address)
    # RFC 6533 §3: utf-8-addr-xtext: QCHAR, or "\x{" HEXPOINT "}" for the rest.
    out = []
    for char in address:
        code = ord(char)
        if 0x21 <= code <= 0x7E and char not in "+=\\":
            out.append(char)
        else:
            out.append(f"\\x{{{code:X}}}")
    return "ORCPT=utf-8;" + "".join(out)


def envelope_parameters(
    capabilities: Capabilities,
    *,
    tls: bool,
    recipients: Sequence[str],
    dsn: DSN | None = None,
    recipient_options: Mapping[str, Recipient] | None = None,
    require_tls: bool = False,
) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """The MAIL and per-RCPT parameters for DSN and REQUIRETLS.

    :return: (MAIL parameters, one tuple of RCPT parameters per recipient)
    :raises ExtensionNotSupportedError: DSN or REQUIRETLS asked for but not
        advertised, or REQUIRETLS without TLS (RFC 8689 §4.1: never sent, never
        silently dropped)
    """
    options = recipient_options or {}
    mail: list[str] = []
    if require_tls:
        if not tls:
            raise ExtensionNotSupportedError(
                "REQUIRETLS", "the session is not encrypted, so the message can not require TLS"
            )
        if "REQUIRETLS" not in capabilities:
            raise ExtensionNotSupportedError("REQUIRETLS", "the message requires TLS all the way")
        mail.append("REQUIRETLS")
    wants_dsn = dsn is not None and (dsn.ret or dsn.envid or dsn.notify or dsn.orcpt)
    wants_dsn = wants_dsn or any(o.notify or o.orcpt for o in options.values())
    if wants_dsn and "DSN" not in capabilities:
        raise ExtensionNotSupportedError("DSN", "delivery status notifications were asked for")
    if dsn is not None and dsn.ret:
        mail.append(f"RET={dsn.ret}")
    if dsn is not None and dsn.envid:
        mail.append(f"ENVID={xtext(dsn.envid)}")
    rcpt: list[tuple[str, ...]] = []
    for address in recipients:
        parameters: list[str] = []
        own = options.get(address)
        notify = own.notify if own is not None and own.notify else (dsn.notify if dsn else None)
        if notify:
            parameters.append("NOTIFY=" + ",".join(sorted(notify, key=_notify_rank)))
        original = own.orcpt if own is not None and own.orcpt else None
        if original is None and dsn is not None and dsn.orcpt:
            original = address
        if original is not None:
            parameters.append(orcpt_parameter(original))
        rcpt.append(tuple(parameters))
    return tuple(mail), tuple(rcpt)


def _notify_rank(value: str) -> int:
    return _NOTIFY_ORDER.index(value) if value in _NOTIFY_ORDER else -1

"""SMTP commands: argument validation and wire formatting.

Every value that goes into a command line is checked here before any byte is
written.  CR and LF would end the command early and let the rest be read as a
second command (command injection); NUL and other control characters have no
place in SMTP and confuse servers and logs.  Failures raise
``InvalidArgumentError`` whose text names the problem but never repeats a
credential.
"""

from __future__ import annotations

import base64
import functools
import re
from dataclasses import dataclass
from typing import ClassVar

from .._errors import InvalidArgumentError
from .replies import Reply
from .state import Event

__all__ = (
    "MAX_DOMAIN_LENGTH",
    "MAX_LOCAL_PART_LENGTH",
    "MAX_PATH_LENGTH",
    "Auth",
    "AuthResponse",
    "Bdat",
    "Command",
    "Data",
    "Ehlo",
    "Greeting",
    "Helo",
    "Lhlo",
    "Mail",
    "Noop",
    "Quit",
    "Rcpt",
    "Rset",
    "StartTLS",
    "check_credential",
    "check_domain",
    "check_hostname",
    "check_esmtp_parameter",
    "check_mailbox",
    "idna_mailbox",
    "needs_smtputf8",
)

#: RFC 5321 §4.5.3.1.1: "The maximum total length of a user name or other
#: local-part is 64 octets."
MAX_LOCAL_PART_LENGTH = 64
#: RFC 5321 §4.5.3.1.2: "The maximum total length of a domain name or number is
#: 255 octets."
MAX_DOMAIN_LENGTH = 255
#: RFC 5321 §4.5.3.1.3: a path is at most 256 octets "including the punctuation
#: and element separators", i.e. 254 for the address inside the angle brackets.
MAX_PATH_LENGTH = 254

# C0 controls, DEL and C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# An unquoted local part or a domain: no white space, quotes, brackets or other
# specials of RFC 5322 (non-ASCII is allowed; it needs SMTPUTF8, checked later).
_ATOMS = re.compile(r"[^\s\"(),:;<>@\[\\\]]+")
# RFC 5321 §4.1.2: Quoted-string = DQUOTE *QcontentSMTP DQUOTE (UTF-8 allowed by RFC 6531).
_QUOTED = re.compile(r'"(?:[^"\\\x00-\x1f\x7f]|\\[\x20-\x7e])*"')
_ADDRESS_LITERAL = re.compile(r"\[[^\s\[\]\\]+\]")
# RFC 5321 §4.1.2: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"),
# esmtp-value = 1*(%d33-60 / %d62-126), widened to UTF-8 by RFC 6531 §3.3.
_ESMTP_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_ESMTP_VALUE = re.compile(r"[^\s=\x00-\x1f\x7f-\x9f]+")
_MECHANISM = re.compile(r"[A-Z0-9_-]{1,20}")


def _octets(text: str) -> int:
    return len(text.encode("utf-8"))


def _is_utf8(text: str) -> bool:
    """False for text that can not be sent as UTF-8 (lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_domain(domain: str) -> str:
    """Validate the domain (or address literal) sent with EHLO/HELO.

    :raises InvalidArgumentError: not a printable ASCII name without spaces
    """
    if not isinstance(domain, str) or not domain:
        raise InvalidArgumentError("the EHLO domain must be a non-empty string")
    if not domain.isascii() or not all(0x21 <= ord(c) <= 0x7E for c in domain):
        raise InvalidArgumentError(
            "the EHLO domain must be printable ASCII without spaces or control characters"
        )
    if len(domain) > MAX_DOMAIN_LENGTH:
        raise InvalidArgumentError(f"the EHLO domain is longer than {MAX_DOMAIN_LENGTH} octets")
    return domain


_HOSTNAME = re.compile(r"[A-Za-z0-9._:\[\]-]+")


def check_hostname(name: str, what: str = "host name") -> str:
    """Validate a host name or IP address (for connecting and TLS verification).

    A non-ASCII name is turned into its A-labels (IDNA 2008, as for addresses:
    ``straße.example`` is ``xn--strae-oqa.example``).

    :raises InvalidArgumentError: empty, or holding anything but letters,
        digits, ``.``, ``-``, ``_``, ``:`` and brackets
    """
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"the {what} must be a non-empty str")
    if not name.isascii():
        try:
            name = _a_labels(name)
        except ValueError:
            raise InvalidArgumentError(f"the {what} is not a valid host name") from None
    if not _HOSTNAME.fullmatch(name) or len(name) > MAX_DOMAIN_LENGTH:
        raise InvalidArgumentError(f"the {what} {name!r} is not a valid host name or address")
    return name


def check_mailbox(address: str, *, role: str, allow_null: bool = False) -> str:
    """Validate a bare envelope address (``local@domain``) and return it.

    :param role: ``"sender"`` or ``"recipient"``, for the error message
    :param allow_null: accept ``""``, the null reverse-path ``<>``
    :raises InvalidArgumentError: the address can not be sent as it is
    """
    if not isinstance(address, str):
        raise InvalidArgumentError(f"the {role} address must be a str")
    # Batches repeat addresses, and each is checked on the way in and again
    # when its command is built: remember the ones that passed.
    return _checked_mailbox(address, role, allow_null)


@functools.lru_cache(maxsize=4096)
def _checked_mailbox(address: str, role: str, allow_null: bool) -> str:
    if address == "":
        if allow_null:
            return address
        raise InvalidArgumentError(f"the {role} address is empty")
    if _CONTROL.search(address):
        raise InvalidArgumentError(
            f"the {role} address {address!r} contains a control character (CR, LF, NUL ...)"
        )
    if not _is_utf8(address):
        raise InvalidArgumentError(f"the {role} address {address!r} is not valid Unicode text")
    if "<" in address or ">" in address:
        raise InvalidArgumentError(
            f"the {role} address {address!r} must be a bare address, without angle "
            "brackets or a display name (email.utils.parseaddr extracts it)"
        )
    if _octets(address) > MAX_PATH_LENGTH:
        raise InvalidArgumentError(f"the {role} address is longer than {MAX_PATH_LENGTH} octets")
    # RFC 5321 §4.1.1.3: "<Postmaster>" without a domain is a valid recipient.
    if role == "recipient" and address.lower() == "postmaster":
        return address
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidArgumentError(
            f"the {role} address {address!r} is not of the form local@domain"
        )
    if not (_QUOTED.fullmatch(local) or _dot_atoms(local)):
        raise InvalidArgumentError(f"the {role} address {address!r} has an invalid local part")
    if not (_ADDRESS_LITERAL.fullmatch(domain) or _dot_atoms(domain)):
        raise InvalidArgumentError(f"the {role} address {address!r} has an invalid domain")
    if _octets(local) > MAX_LOCAL_PART_LENGTH:
        raise InvalidArgumentError(
            f"the local part of the {role} address is longer than {MAX_LOCAL_PART_LENGTH} octets"
        )
    # The domain's own limit (MAX_DOMAIN_LENGTH) can not be reached here: the
    # whole path is shorter.
    return address


def _dot_atoms(text: str) -> bool:
    return all(_ATOMS.fullmatch(part) for part in text.split("."))


def needs_smtputf8(address: str) -> bool:
    """Whether a (valid) address can only be sent with SMTPUTF8 (RFC 6531).

    Only a non-ASCII local part needs it: a non-ASCII domain has an ASCII
    form, its A-labels (:func:`idna_mailbox`).
    """
    local, _, _ = address.rpartition("@")
    return not local.isascii()


def idna_mailbox(address: str, *, role: str) -> str:
    """The address with its domain in A-labels (``xn--...``), for a session without SMTPUTF8.

    IDNA 2008 with the UTS 46 mapping (what browsers and mail services do):
    ``user@Bücher.example`` becomes ``user@xn--bcher-kva.example``.  An ASCII
    address comes back as it is.

    :param role: ``"sender"`` or ``"recipient"``, for the error message
    :raises InvalidArgumentError: the local part is not ASCII, or the domain
        is not a valid internationalised domain name
    """
    if address.isascii():
        return address
    return _idna_mailbox(address, role)


@functools.lru_cache(maxsize=1024)
def _idna_mailbox(address: str, role: str) -> str:
    local, _, domain = address.rpartition("@")
    if not local.isascii():
        raise InvalidArgumentError(
            f"the {role} address {address!r} has a non-ASCII local part: it needs SMTPUTF8"
        )
    try:
        encoded = _a_labels(domain)
    except ValueError as exc:
        raise InvalidArgumentError(
            f"the {role} address {address!r} has a domain that is not a valid "
            f"internationalised domain name ({exc})"
        ) from None
    return check_mailbox(f"{local}@{encoded}", role=role)


def _a_labels(domain: str) -> str:
    """A domain's ASCII form: each non-ASCII label as its A-label (RFC 5890).

    :raises ValueError: (an ``idna.IDNAError``) not a valid internationalised name
    """
    # The idna package (IDNA 2008 with the UTS 46 mapping, as browsers and mail
    # services do), not the stdlib codec (IDNA 2003, which turns "ß" into "ss",
    # another name).  It is no dependency of ours of its own, but anyio depends
    # on it, so it is always installed; imported here, when first needed.
    import idna

    # UTS 46 maps case, and full stops other than "." (such as "。") separate labels.
    labels = idna.uts46_remap(domain, std3_rules=False).split(".")
    return ".".join(
        label if label.isascii() else idna.alabel(label).decode("ascii") for label in labels
    )


def check_esmtp_parameter(parameter: str) -> str:
    """Validate one MAIL/RCPT parameter, ``KEYWORD`` or ``KEYWORD=value``.

    :raises InvalidArgumentError: not a valid esmtp-param (RFC 5321 §4.1.2)
    """
    if not isinstance(parameter, str):
        raise InvalidArgumentError("an ESMTP parameter must be a str")
    keyword, equals, value = parameter.partition("=")
    if (
        not _ESMTP_KEYWORD.fullmatch(keyword)
        or (equals and not _ESMTP_VALUE.fullmatch(value))
        or not _is_utf8(value)
    ):
        raise InvalidArgumentError(f"invalid ESMTP parameter {parameter!r}")
    return parameter


def check_credential(value: str, what: str) -> str:
    """Validate a user name or password (its value never appears in the error).

    :raises InvalidArgumentError: empty, not a str, or containing a control character
    """
    if not isinstance(value, str):
        raise InvalidArgumentError(f"the {what} must be a str")
    if not value:
        raise InvalidArgumentError(f"the {what} is empty")
    if _CONTROL.search(value):
        raise InvalidArgumentError(f"the {what} contains a control character")
    if not _is_utf8(value):
        raise InvalidArgumentError(f"the {what} is not valid Unicode text")
    return value


# -- commands --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """A command (or, for ``Greeting``, the reply awaited on connecting)."""

    #: How the command is named in logs and errors (never with arguments).
    name: ClassVar[str] = ""
    #: The session event of sending it (None: nothing is sent).
    event: ClassVar[Event | None] = None

    def encode(self) -> bytes:
        """The command line, CRLF included."""
        raise NotImplementedError

    def log_line(self) -> str:
        """The command as the debug transcript shows it (secrets redacted)."""
        return self.encode().decode("utf-8", "replace").rstrip("\r\n")

    def reply_event(self, reply: Reply) -> Event | None:
        """The event this reply is, when it decides the session's next state."""
        return None


@dataclass(frozen=True, slots=True)
class Greeting(Command):
    name: ClassVar[str] = "greeting"

    def encode(self) -> bytes:
        return b""

    def reply_event(self, reply: Reply) -> Event:
        return Event.GREETING_OK if reply.is_positive else Event.GREETING_REFUSED


@dataclass(frozen=True, slots=True)
class Ehlo(Command):
    domain: str
    name: ClassVar[str] = "EHLO"
    event: ClassVar[Event | None] = Event.EHLO

    def __post_init__(self) -> None:
        check_domain(self.domain)

    def encode(self) -> bytes:
        return b"EHLO " + self.domain.encode("ascii") + b"\r\n"

    def reply_event(self, reply: Reply) -> Event:
        return Event.HELLO_OK if reply.code == 250 else Event.HELLO_REFUSED


@dataclass(frozen=True, slots=True)
class Helo(Ehlo):
    name: ClassVar[str] = "HELO"
    event: ClassVar[Event | None] = Event.HELO

    def encode(self) -> bytes:
        return b"HELO " + self.domain.encode("ascii") + b"\r\n"


@dataclass(frozen=True, slots=True)
class Lhlo(Ehlo):
    """LMTP's greeting command (RFC 2033 §4.1), in place of EHLO."""

    name: ClassVar[str] = "LHLO"

    def encode(self) -> bytes:
        return b"LHLO " + self.domain.encode("ascii") + b"\r\n"


@dataclass(frozen=True, slots=True)
class StartTLS(Command):
    name: ClassVar[str] = "STARTTLS"
    event: ClassVar[Event | None] = Event.STARTTLS

    def encode(self) -> bytes:
        return b"STARTTLS\r\n"

    def reply_event(self, reply: Reply) -> Event:
        # RFC 3207 §4: "220 Ready to start TLS"; anything else leaves the link plaintext.
        return Event.STARTTLS_READY if reply.code == 220 else Event.STARTTLS_REFUSED


def _auth_reply_event(reply: Reply) -> Event:
    return Event.AUTH_CHALLENGE if reply.code == 334 else Event.AUTH_DONE


@dataclass(frozen=True, slots=True, repr=False)
class Auth(Command):
    """``AUTH <mechanism> [initial-response]`` (RFC 4954 §4)."""

    mechanism: str
    initial_response: bytes | None = None
    name: ClassVar[str] = "AUTH"
    event: ClassVar[Event | None] = Event.AUTH

    def __post_init__(self) -> None:
        if not _MECHANISM.fullmatch(self.mechanism):
            raise InvalidArgumentError(f"invalid SASL mechanism name {self.mechanism!r}")

    def encode(self) -> bytes:
        line = b"AUTH " + self.mechanism.encode("ascii")
        if self.initial_response is not None:
            # RFC 4954 §4: an empty initial response is sent as a single "=".
            line += b" " + (base64.b64encode(self.initial_response) or b"=")
        return line + b"\r\n"

    def log_line(self) -> str:
        suffix = " [redacted]" if self.initial_response is not None else ""
        return f"AUTH {self.mechanism}{suffix}"

    def __repr__(self) -> str:
        return f"Auth(mechanism={self.mechanism!r}, initial_response=[redacted])"

    def reply_event(self, reply: Reply) -> Event:
        return _auth_reply_event(reply)


@dataclass(frozen=True, slots=True, repr=False)
class AuthResponse(Command):
    """A base64 line answering a 334 challenge; ``cancel`` sends ``*`` instead."""

    data: bytes = b""
    cancel: bool = False
    name: ClassVar[str] = "AUTH response"
    event: ClassVar[Event | None] = Event.AUTH_RESPONSE

    def encode(self) -> bytes:
        if self.cancel:
            return b"*\r\n"
        return base64.b64encode(self.data) + b"\r\n"

    def log_line(self) -> str:
        return "*" if self.cancel else "[redacted]"

    def __repr__(self) -> str:
        return f"AuthResponse(data=[redacted], cancel={self.cancel})"

    def reply_event(self, reply: Reply) -> Event:
        return _auth_reply_event(reply)


def _with_parameters(line: bytes, parameters: tuple[str, ...]) -> bytes:
    for parameter in parameters:
        line += b" " + parameter.encode("utf-8")
    return line + b"\r\n"


@dataclass(frozen=True, slots=True)
class Mail(Command):
    """``MAIL FROM:<sender> [parameters]``."""

    sender: str
    parameters: tuple[str, ...] = ()
    #: Send a non-ASCII domain in A-labels (no SMTPUTF8 for this message).
    idna: bool = False
    name: ClassVar[str] = "MAIL FROM"
    event: ClassVar[Event | None] = Event.MAIL

    def __post_init__(self) -> None:
        check_mailbox(self.sender, role="sender", allow_null=True)
        if self.idna:
            idna_mailbox(self.sender, role="sender")
        for parameter in self.parameters:
            check_esmtp_parameter(parameter)

    def encode(self) -> bytes:
        sender = idna_mailbox(self.sender, role="sender") if self.idna else self.sender
        return _with_parameters(b"MAIL FROM:<" + sender.encode("utf-8") + b">", self.parameters)


@dataclass(frozen=True, slots=True)
class Rcpt(Command):
    """``RCPT TO:<recipient> [parameters]``."""

    recipient: str
    parameters: tuple[str, ...] = ()
    #: Send a non-ASCII domain in A-labels (no SMTPUTF8 for this message).
    idna: bool = False
    name: ClassVar[str] = "RCPT TO"
    event: ClassVar[Event | None] = Event.RCPT

    def __post_init__(self) -> None:
        check_mailbox(self.recipient, role="recipient")
        if self.idna:
            idna_mailbox(self.recipient, role="recipient")
        for parameter in self.parameters:
            check_esmtp_parameter(parameter)

    def encode(self) -> bytes:
        recipient = idna_mailbox(self.recipient, role="recipient") if self.idna else self.recipient
        return _with_parameters(b"RCPT TO:<" + recipient.encode("utf-8") + b">", self.parameters)


@dataclass(frozen=True, slots=True)
class Data(Command):
    name: ClassVar[str] = "DATA"
    event: ClassVar[Event | None] = Event.DATA

    def encode(self) -> bytes:
        return b"DATA\r\n"

    def reply_event(self, reply: Reply) -> Event:
        return Event.DATA_READY if reply.code == 354 else Event.DATA_REFUSED


@dataclass(frozen=True, slots=True)
class Bdat(Command):
    """``BDAT <size> [LAST]`` (RFC 3030 §2); exactly ``size`` octets of data follow."""

    size: int
    last: bool = False
    name: ClassVar[str] = "BDAT"

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise InvalidArgumentError("a BDAT chunk size must be a non-negative int")

    @property
    def event(self) -> Event:  # type: ignore[override]
        return Event.BDAT_LAST if self.last else Event.BDAT

    def encode(self) -> bytes:
        return f"BDAT {self.size}{' LAST' if self.last else ''}\r\n".encode("ascii")


@dataclass(frozen=True, slots=True)
class EndOfData(Command):
    """The end of the message data; its reply is the message's fate."""

    name: ClassVar[str] = "end of data"
    event: ClassVar[Event | None] = Event.END_OF_DATA

    def encode(self) -> bytes:
        return b""


@dataclass(frozen=True, slots=True)
class Rset(Command):
    name: ClassVar[str] = "RSET"
    event: ClassVar[Event | None] = Event.RSET

    def encode(self) -> bytes:
        return b"RSET\r\n"


@dataclass(frozen=True, slots=True)
class Noop(Command):
    name: ClassVar[str] = "NOOP"
    event: ClassVar[Event | None] = Event.NOOP

    def encode(self) -> bytes:
        return b"NOOP\r\n"


@dataclass(frozen=True, slots=True)
class Quit(Command):
    name: ClassVar[str] = "QUIT"
    event: ClassVar[Event | None] = Event.QUIT

    def encode(self) -> bytes:
        return b"QUIT\r\n"

    def reply_event(self, reply: Reply) -> Event:
        return Event.CLOSE

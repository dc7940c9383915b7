"""Command handlers of the test server: validate a command, return its reply and effect.

A handler never sends anything. It returns an :class:`Outcome`: the normal reply plus an
optional ``apply`` callback that performs the state change (start a transaction, add a
recipient, enter the data phase, ...). The session decides whether the change happens:
a reply override replaces the reply, and the change is applied only if both the normal
reply and the override are positive, so an overridden refusal acts as a real one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._rules import split_reply

if TYPE_CHECKING:
    from ._server import SMTPTestServer
    from ._session import Session

__all__ = ("HANDLERS", "Outcome", "Transaction", "ehlo_lines", "enhanced_codes", "fmt")

# ESMTP parameters the server understands, and the EHLO keyword that must have been
# advertised for each.
_MAIL_PARAMS = {
    "SIZE": "SIZE",
    "BODY": "8BITMIME",
    "SMTPUTF8": "SMTPUTF8",
    "AUTH": "AUTH",
    "RET": "DSN",
    "ENVID": "DSN",
    "REQUIRETLS": "REQUIRETLS",
}
_RCPT_PARAMS = {"NOTIFY": "DSN", "ORCPT": "DSN"}


@dataclass
class Outcome:
    """What a command handler decided: the reply, and the state change to apply."""

    reply: str
    apply: Callable[[str], None] | None = None


@dataclass
class Transaction:
    """A mail transaction in progress (after an accepted ``MAIL``)."""

    sender: str
    mail_options: tuple[str, ...]
    utf8: bool
    eight_bit: bool
    recipients: list[str] = field(default_factory=list)
    rcpt_options: list[tuple[str, ...]] = field(default_factory=list)
    #: The message data received so far with ``BDAT`` (``None``: no ``BDAT`` yet).
    chunks: bytearray | None = None
    #: Whether the ``BDAT`` data exceeded the size limit (and was not kept).
    chunks_too_big: bool = False


def enhanced_codes(extensions: Iterable[str] | None) -> bool:
    """Whether replies carry enhanced status codes (``ENHANCEDSTATUSCODES`` advertised)."""
    if extensions is None:
        return True
    return any(
        line.split()[:1] == ["ENHANCEDSTATUSCODES"] for line in (ext.upper() for ext in extensions)
    )


def fmt(enhanced: bool, code: int, status: str, text: str) -> str:
    """A reply line, with the enhanced status code if the server uses them."""
    if enhanced and status:
        return f"{code} {status} {text}"
    return f"{code} {text}"


def ehlo_lines(server: SMTPTestServer, tls: bool) -> list[str]:
    """The EHLO keywords the server advertises on a connection (with or without TLS)."""
    if server.extensions is not None:
        return [
            line
            for line in server.extensions
            if line.strip() and not (tls and line.split()[0].upper() == "STARTTLS")
        ]
    lines = [
        "PIPELINING",
        "SIZE" if server.size_limit is None else f"SIZE {server.size_limit}",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
    ]
    if server.chunking:
        lines.append("CHUNKING")
    if server.starttls_context is not None and not tls:
        lines.append("STARTTLS")
    enabled = server.users is not None or server.tokens is not None
    if enabled and server.auth_mechanisms and (tls or not server.auth_require_tls):
        lines.append("AUTH " + " ".join(server.auth_mechanisms))
    return lines


def _keywords(reply_lines: list[str]) -> frozenset[str]:
    """The EHLO keywords in an EHLO reply (every line but the first)."""
    words = set()
    for line in reply_lines[1:]:
        parts = line[4:].split()
        if parts:
            words.add(parts[0].upper())
    return frozenset(words)


def _normalize_param(param: str) -> str:
    """Upper-case the keyword of an ESMTP parameter (values can be case-sensitive)."""
    key, has_value, value = param.partition("=")
    return f"{key.upper()}{has_value}{value}"


def _parse_path(arg: str, prefix: str) -> tuple[str, list[str]] | None:
    """Parse ``FROM:<path> params`` / ``TO:<path> params`` (strictly: no space after ':').

    :return: ``(address, params)`` or ``None`` on a syntax error
    """
    if arg[: len(prefix)].upper() != prefix or arg[len(prefix) : len(prefix) + 1] != "<":
        return None
    rest = arg[len(prefix) + 1 :]
    if '"' in rest:
        # A quoted local part may contain '>'; find the first '>' outside quotes.
        quoted = False
        end = -1
        i = 0
        while i < len(rest):
            char = rest[i]
            if char == "\\" and quoted:
                i += 2
                continue
            if char == '"':
                quoted = not quoted
            elif char == ">" and not quoted:
                end = i
                break
            i += 1
    else:
        end = rest.find(">")
    if end < 0:
        return None
    address, tail = rest[:end], rest[end + 1 :]
    if tail and not tail.startswith(" "):
        return None
    if address.startswith("@") and ":" in address:
        # Obsolete source route: "<@relay1,@relay2:user@example.com>".
        address = address.split(":", 1)[1]
    if "<" in address or (" " in address and '"' not in address):
        return None
    return address, tail.split()


def _error(session: Session, code: int, status: str, text: str) -> Outcome:
    return Outcome(session.fmt(code, status, text))


def _helo(session: Session, arg: str, *, extended: bool) -> Outcome:
    name = arg.strip()
    if not name or " " in name:
        return _error(session, 501, "5.5.4", f"Syntax: {'EHLO' if extended else 'HELO'} hostname")

    def apply(reply: str) -> None:
        session.greeted = True
        session.esmtp = extended
        session.helo = name
        session.transaction = None
        session.keywords = _keywords(split_reply(reply)) if extended else frozenset()

    hostname = session.server.hostname
    if not extended:
        return Outcome(f"250 {hostname}", apply)
    lines = [hostname, *ehlo_lines(session.server, session.tls)]
    reply = "\n".join(
        f"250{' ' if i == len(lines) - 1 else '-'}{line}" for i, line in enumerate(lines)
    )
    return Outcome(reply, apply)


def _cmd_ehlo(session: Session, arg: str) -> Outcome:
    return _helo(session, arg, extended=True)


def _cmd_helo(session: Session, arg: str) -> Outcome:
    return _helo(session, arg, extended=False)


def _check_params(
    session: Session, params: list[str], allowed: Mapping[str, str]
) -> tuple[Outcome | None, dict[str, str]]:
    values: dict[str, str] = {}
    for param in params:
        key, has_value, value = param.partition("=")
        key = key.upper()
        needed = allowed.get(key)
        if needed is None or needed not in session.keywords:
            return _error(session, 555, "5.5.4", f"Unsupported parameter: {key}"), values
        if key in ("SMTPUTF8", "REQUIRETLS") and has_value:
            return _error(session, 501, "5.5.4", f"{key} takes no value"), values
        if key not in ("SMTPUTF8", "REQUIRETLS") and not value:
            return _error(session, 501, "5.5.4", f"{key} needs a value"), values
        values[key] = value
    return None, values


def _cmd_mail(session: Session, arg: str) -> Outcome:
    server = session.server
    if not session.greeted:
        return _error(session, 503, "5.5.1", "Error: send HELO/EHLO first")
    if server.require_auth and session.authenticated_as is None:
        return _error(session, 530, "5.7.0", "Authentication required")
    if session.transaction is not None:
        return _error(session, 503, "5.5.1", "Error: nested MAIL command")
    parsed = _parse_path(arg, "FROM:")
    if parsed is None:
        return _error(session, 501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]")
    address, params = parsed
    error, values = _check_params(session, params, _MAIL_PARAMS)
    if error is not None:
        return error
    if "SIZE" in values:
        if not (values["SIZE"].isascii() and values["SIZE"].isdigit()):
            return _error(session, 501, "5.5.4", "Syntax: SIZE=<number>")
        if server.size_limit is not None and int(values["SIZE"]) > server.size_limit:
            return _error(session, 552, "5.3.4", "Message size exceeds fixed limit")
    body = values.get("BODY", "7BIT").upper()
    if body not in ("7BIT", "8BITMIME"):
        return _error(session, 501, "5.5.4", "Syntax: BODY=7BIT|8BITMIME")
    utf8 = "SMTPUTF8" in values
    if not address.isascii() and not utf8:
        return _error(session, 553, "5.6.7", "Non-ASCII address needs the SMTPUTF8 parameter")
    options = tuple(_normalize_param(param) for param in params)
    transaction = Transaction(address, options, utf8, utf8 or body == "8BITMIME")

    def apply(reply: str) -> None:
        session.transaction = transaction

    return Outcome(session.ok("2.1.0"), apply)


def _cmd_rcpt(session: Session, arg: str) -> Outcome:
    transaction = session.transaction
    if transaction is None:
        return _error(session, 503, "5.5.1", "Error: need MAIL command")
    parsed = _parse_path(arg, "TO:")
    if parsed is None:
        return _error(session, 501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]")
    address, params = parsed
    if "@" not in address and address.lower() != "postmaster":
        return _error(session, 501, "5.1.3", "Bad recipient address syntax")
    error, _ = _check_params(session, params, _RCPT_PARAMS)
    if error is not None:
        return error
    if not address.isascii() and not transaction.utf8:
        return _error(session, 553, "5.6.7", "Non-ASCII address needs SMTPUTF8 in MAIL")

    options = tuple(_normalize_param(param) for param in params)

    def apply(reply: str) -> None:
        transaction.recipients.append(address)
        transaction.rcpt_options.append(options)

    return Outcome(session.ok("2.1.5"), apply)


def _cmd_data(session: Session, arg: str) -> Outcome:
    if arg.strip():
        return _error(session, 501, "5.5.4", "Syntax: DATA")
    if session.transaction is None:
        return _error(session, 503, "5.5.1", "Error: need MAIL command")
    if not session.transaction.recipients:
        return _error(session, 503, "5.5.1", "Error: need RCPT command")
    if session.transaction.chunks is not None:
        return _error(session, 503, "5.5.1", "Error: DATA after BDAT in one transaction")

    def apply(reply: str) -> None:
        session.expect_data = True

    return Outcome("354 End data with <CR><LF>.<CR><LF>", apply)


def _cmd_rset(session: Session, arg: str) -> Outcome:
    if arg.strip():
        return _error(session, 501, "5.5.4", "Syntax: RSET")

    def apply(reply: str) -> None:
        session.transaction = None

    return Outcome(session.ok("2.0.0"), apply)


def _cmd_noop(session: Session, arg: str) -> Outcome:
    return Outcome(session.ok("2.0.0"))


def _cmd_quit(session: Session, arg: str) -> Outcome:
    if arg.strip():
        return _error(session, 501, "5.5.4", "Syntax: QUIT")

    def apply(reply: str) -> None:
        session.closing = True

    return Outcome(session.fmt(221, "2.0.0", "Bye"), apply)


def _cmd_vrfy(session: Session, arg: str) -> Outcome:
    if not arg.strip():
        return _error(session, 501, "5.5.4", "Syntax: VRFY address")
    return _error(session, 252, "2.5.0", "Cannot VRFY user, but will accept message")


def _cmd_expn(session: Session, arg: str) -> Outcome:
    return _error(session, 502, "5.5.1", "EXPN not available")


def _cmd_help(session: Session, arg: str) -> Outcome:
    return _error(
        session,
        214,
        "2.0.0",
        "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
    )


def _cmd_starttls(session: Session, arg: str) -> Outcome:
    if arg.strip():
        return _error(session, 501, "5.5.4", "Syntax: STARTTLS")
    if session.tls:
        return _error(session, 503, "5.5.1", "Error: TLS already active")
    if session.server.starttls_context is None:
        return _error(session, 454, "4.7.0", "TLS not available")
    if not session.esmtp:
        return _error(session, 503, "5.5.1", "Error: send EHLO first")

    def apply(reply: str) -> None:
        session.start_tls = True

    return Outcome(session.fmt(220, "2.0.0", "Ready to start TLS"), apply)


def _cmd_bdat(session: Session, arg: str) -> Outcome:
    # A BDAT with a valid size is read and answered in _data; this answers the others.
    if "CHUNKING" not in session.keywords:
        return _error(session, 500, "5.5.2", "Error: command not recognized")
    return _error(session, 501, "5.5.4", "Syntax: BDAT size [LAST]")


#: The handler of each verb the server knows.
HANDLERS: Mapping[str, Callable[[Session, str], Outcome]] = {
    "EHLO": _cmd_ehlo,
    "HELO": _cmd_helo,
    "MAIL": _cmd_mail,
    "RCPT": _cmd_rcpt,
    "DATA": _cmd_data,
    "RSET": _cmd_rset,
    "NOOP": _cmd_noop,
    "QUIT": _cmd_quit,
    "VRFY": _cmd_vrfy,
    "EXPN": _cmd_expn,
    "HELP": _cmd_help,
    "STARTTLS": _cmd_starttls,
    "BDAT": _cmd_bdat,
    # AUTH is interactive and handled in _auth; this entry serves overrides only.
    "AUTH": _cmd_noop,
}

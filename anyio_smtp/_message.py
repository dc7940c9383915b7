"""From an ``email.message.Message`` to an SMTP envelope and the bytes to send.

The rules follow RFC 5322 §3.6.6 and ``smtplib.SMTP.send_message``: when the
message carries exactly one Resent- block, the envelope comes from the
Resent-Sender/Resent-From and Resent-To/Cc/Bcc fields; otherwise from
Sender/From and To/Cc/Bcc.  Bcc and Resent-Bcc are removed from the copy that
is sent, so blind recipients stay blind.
"""

from __future__ import annotations

import copy
import io
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._errors import InvalidArgumentError

if TYPE_CHECKING:
    from email.message import Message

__all__ = ("PreparedMessage", "prepare_message")

_ADDRESS_FIELDS = ("From", "Sender", "Reply-To", "To", "Cc", "Bcc")


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    sender: str
    recipients: tuple[str, ...]
    data: bytes
    #: The message needs SMTPUTF8 (non-ASCII addresses, UTF-8 header fields).
    smtputf8: bool


# A line break that does not start a folded continuation line: a second header
# field (or command) smuggled into the value.
_BARE_BREAK = re.compile(r"[\r\n](?![ \t])|\r(?!\n)")


def _addresses(message: Message, *fields: str) -> list[str]:
    from email.utils import getaddresses

    values: list[str] = []
    for field in fields:
        for value in message.get_all(field, []):
            text = str(value)
            if _BARE_BREAK.search(text.rstrip("\r\n")) or "\0" in text:
                raise InvalidArgumentError(
                    f"the {field} field holds a line break or NUL that is not folding"
                )
            values.append(text)
    return [address for _name, address in getaddresses(values) if address]


def prepare_message(
    message: Message,
    *,
    sender: str | None = None,
    recipients: list[str] | None = None,
) -> PreparedMessage:
    """Work out the envelope of ``message`` and serialise it with CRLF line endings.

    :param sender: overrides the sender taken from the header fields
    :param recipients: override the recipients taken from the header fields
    :raises InvalidArgumentError: more than one Resent- block, or no sender or
        recipient could be found
    """
    from email.errors import MessageError
    from email.generator import BytesGenerator
    from email.policy import SMTPUTF8, EmailPolicy

    resent_dates = message.get_all("Resent-Date", [])
    if len(resent_dates) > 1:
        raise InvalidArgumentError(
            "the message has more than one Resent- block; pass sender= and recipients="
        )
    prefix = "Resent-" if resent_dates else ""
    if sender is None:
        senders = _addresses(message, prefix + "Sender") or _addresses(message, prefix + "From")
        if not senders:
            raise InvalidArgumentError(
                f"the message has no {prefix}Sender or {prefix}From address; pass sender="
            )
        sender = senders[0]
    if recipients is None:
        recipients = _addresses(message, prefix + "To", prefix + "Bcc", prefix + "Cc")
        if not recipients:
            raise InvalidArgumentError(
                f"the message has no {prefix}To, {prefix}Cc or {prefix}Bcc address; "
                "pass recipients="
            )
    stripped = copy.copy(message)
    del stripped["Bcc"]
    del stripped["Resent-Bcc"]

    header_addresses = _addresses(
        stripped, *_ADDRESS_FIELDS, *(f"Resent-{field}" for field in _ADDRESS_FIELDS)
    )
    smtputf8 = not all(address.isascii() for address in (sender, *recipients, *header_addresses))
    policy = message.policy.clone(linesep="\r\n")
    if smtputf8:
        # RFC 6532: with SMTPUTF8 the header fields carry UTF-8 as it is.  The
        # legacy compat32 policy can not do that; email.policy.SMTPUTF8 can.
        policy = policy.clone(utf8=True) if isinstance(policy, EmailPolicy) else SMTPUTF8
    buffer = io.BytesIO()
    try:
        BytesGenerator(buffer, mangle_from_=False, policy=policy).flatten(stripped, linesep="\r\n")
    except (MessageError, UnicodeError, ValueError) as exc:
        raise InvalidArgumentError(f"the message can not be serialised: {exc}") from exc
    return PreparedMessage(sender, tuple(recipients), buffer.getvalue(), smtputf8)

"""How long a session waits, phase by phase (RFC 5321 §4.5.3.2).

RFC 5321 §4.5.3.2 asks clients to time out per command rather than per
session, and lists minimum values that suit relays (5 minutes for MAIL, 10 for
the end of data).  A submission client wants to notice a dead server sooner,
so the defaults here are one minute for every wait except the end of data,
which keeps the RFC's 10 minutes because a server may run content checks
before it answers.

A wait for a reply is bounded as a whole, from the moment the client starts
waiting, so a server that trickles a reply byte by byte still times out.
Writing message data is bounded per block (``WRITE_CHUNK`` bytes), so a large
message that keeps flowing never does.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ._errors import InvalidArgumentError
from ._protocol.commands import Bdat, Command, Data, EndOfData, Greeting, Mail, Rcpt

__all__ = ("DEFAULT_TIMEOUT", "DEFAULT_TIMEOUTS", "Timeouts")

#: The default for every wait but the end of data, in seconds.
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds allowed for each kind of wait; None means no limit.

    Pass one to ``connect(..., timeout=Timeouts(...))``; a plain number
    ``timeout=30`` means ``Timeouts.uniform(30)``.

    :ivar connect: opening the TCP connection, and each TLS handshake
    :ivar greeting: the server's greeting (RFC 5321 §4.5.3.2.1, "5 minutes")
    :ivar command: the reply to EHLO, STARTTLS, AUTH, RSET, NOOP or QUIT
    :ivar mail: the reply to MAIL (§4.5.3.2.2, "5 minutes")
    :ivar rcpt: the reply to each RCPT (§4.5.3.2.3, "5 minutes")
    :ivar data_initiation: the 354 reply to DATA (§4.5.3.2.4, "2 minutes")
    :ivar data_block: each write of message data (§4.5.3.2.5, "3 minutes")
    :ivar data_termination: the reply after the end of the data (§4.5.3.2.6,
        "10 minutes")
    """

    connect: float | None = DEFAULT_TIMEOUT
    greeting: float | None = DEFAULT_TIMEOUT
    command: float | None = DEFAULT_TIMEOUT
    mail: float | None = DEFAULT_TIMEOUT
    rcpt: float | None = DEFAULT_TIMEOUT
    data_initiation: float | None = DEFAULT_TIMEOUT
    data_block: float | None = DEFAULT_TIMEOUT
    data_termination: float | None = 600.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
            ):
                raise InvalidArgumentError(
                    f"timeout {field.name} must be a positive number of seconds or None"
                )

    @classmethod
    def uniform(cls, seconds: float | None) -> Timeouts:
        """The same limit for every wait."""
        return cls(**{field.name: seconds for field in fields(cls)})

    @classmethod
    def of(cls, timeout: float | Timeouts | None) -> Timeouts:
        """Interpret a ``timeout`` argument (a number, None or a ``Timeouts``)."""
        if isinstance(timeout, Timeouts):
            return timeout
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float))
        ):
            raise InvalidArgumentError("timeout must be a number of seconds, None or a Timeouts")
        return cls.uniform(timeout)

    def replace(self, **changes: float | None) -> Timeouts:
        """A copy with some limits changed."""
        return replace(self, **changes)

    def for_reply(self, command: Command | None) -> float | None:
        """The limit on waiting for the reply to ``command``."""
        if isinstance(command, Greeting):
            return self.greeting
        if isinstance(command, Mail):
            return self.mail
        if isinstance(command, Rcpt):
            return self.rcpt
        if isinstance(command, Data):
            return self.data_initiation
        if isinstance(command, EndOfData):
            return self.data_termination
        if isinstance(command, Bdat):
            # The reply to the last chunk is the verdict on the message.
            return self.data_termination if command.last else self.data_block
        return self.command


#: The limits a session uses unless the caller passes ``timeout``.
DEFAULT_TIMEOUTS = Timeouts()

"""Fault injection on the test server: the public ``Fault`` value and how a session acts it out.

A fault is set with ``SMTPTestServer.fault(at, fault)``; like a reply override it applies
to the next command (or point) that matches, ``times`` times. The session takes it when the
command arrives and acts it out here: close, stall, delay, ``421`` or injected bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import anyio

from ._rules import RuleBook, check_reply

if TYPE_CHECKING:
    from ._session import Session

__all__ = ("DATA_POINTS", "Fault", "FaultBook", "FaultRule", "act")

#: Where a fault with ``after_bytes`` may be set: the commands that carry message data.
DATA_POINTS = frozenset({"DATA", "BDAT"})

FaultKind = Literal["close", "stall", "delay", "shutdown", "inject"]


@dataclass(frozen=True)
class Fault:
    """A misbehaviour of :class:`~anyio_smtp.testing.SMTPTestServer`, for its ``fault()``.

    Build one with a class method: :meth:`close`, :meth:`stall`, :meth:`delay`,
    :meth:`shutdown` or :meth:`inject`. At a command, a fault acts when the command
    arrives, instead of (close, stall, shutdown), before (delay) or after (inject) the
    normal handling; at ``"GREETING"`` it acts on the greeting, at ``"EOM"`` on the reply
    to the end of message data. With ``after_bytes`` (``DATA`` and ``BDAT`` only) it acts
    once that many octets of the message's data (with ``BDAT``: of that command's chunk)
    have arrived, without waiting for the rest; data (a chunk) no longer than that is
    handled normally, and the fault is used up all the same.

    :param kind: what the server does
    :param after_bytes: for ``close``, ``stall`` and ``shutdown`` at ``DATA``/``BDAT``:
        act after this many octets of message data instead of at the command
    :param seconds: for ``delay``: how long to wait before the reply
    :param data: for ``inject``: the bytes sent right after the reply (in the same write)
    :param text: for ``shutdown``: the ``421`` reply, or ``None`` for the default text
    """

    kind: FaultKind
    after_bytes: int | None = None
    seconds: float = 0.0
    data: bytes = b""
    text: str | None = None

    def __post_init__(self) -> None:
        if self.after_bytes is not None and self.after_bytes < 0:
            raise ValueError("after_bytes must not be negative")
        if self.seconds < 0:
            raise ValueError("seconds must not be negative")
        if self.text is not None:
            check_reply(self.text)

    @classmethod
    def close(cls, *, after_bytes: int | None = None) -> Fault:
        """Close the connection without replying (to the command, or mid-data).

        :param after_bytes: close after this many octets of message data
        :return: the fault
        """
        return cls("close", after_bytes=after_bytes)

    @classmethod
    def stall(cls, *, after_bytes: int | None = None) -> Fault:
        """Stop reading and replying, and keep the connection open.

        The session then waits until the server is left (or the stream's task is
        cancelled); the client's end closing does not end it.

        :param after_bytes: stall after this many octets of message data
        :return: the fault
        """
        return cls("stall", after_bytes=after_bytes)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Wait ``seconds`` before replying (earlier queued replies are sent first).

        :param seconds: the delay
        :return: the fault
        """
        return cls("delay", seconds=seconds)

    @classmethod
    def shutdown(cls, text: str | None = None, *, after_bytes: int | None = None) -> Fault:
        """Reply ``421`` (instead of the normal reply) and close the connection.

        :param text: the reply, by default
            ``421 4.3.2 <hostname> Service shutting down, closing transmission channel``
        :param after_bytes: send the ``421`` after this many octets of message data,
            without waiting for the end of the data
        :return: the fault
        """
        return cls("shutdown", after_bytes=after_bytes, text=text)

    @classmethod
    def inject(cls, data: bytes) -> Fault:
        """Send ``data`` right after the reply, in the same write.

        For example unsolicited reply lines, or bytes after the ``220`` to ``STARTTLS``
        (before the TLS handshake), which a client must refuse to read.

        :param data: the bytes (sent as given)
        :return: the fault
        """
        return cls("inject", data=bytes(data))


@dataclass(eq=False)
class FaultRule:
    """A fault waiting for its point (a command, ``GREETING`` or ``EOM``)."""

    verb: str
    fault: Fault
    match: str | None
    remaining: int | None


class FaultBook(RuleBook[FaultRule]):
    """Faults, checked newest first; one with a count is dropped when it is used up."""

    def take_fault(self, at: str, arg: str) -> Fault | None:
        if not self.rules:
            return None
        rule = self.take(at, arg)
        return None if rule is None else rule.fault


def shutdown_text(session: Session, fault: Fault) -> str:
    if fault.text is not None:
        return fault.text
    return session.fmt(
        421,
        "4.3.2",
        f"{session.server.hostname} Service shutting down, closing transmission channel",
    )


async def act(session: Session, fault: Fault, where: str) -> bool:
    """Act out a fault that replaces the normal handling (close, stall, shutdown).

    Replies queued before it are sent first. Returns ``True`` if it did (the session is
    then closing), ``False`` for the kinds handled around the normal reply (delay,
    inject), of which ``delay`` has been waited out.
    """
    session.server._fault_fired(session.index, f"{fault.kind} {where}")
    if fault.kind == "close":
        await session.flush()
        session.closing = True
        return True
    if fault.kind == "stall":
        await session.flush()
        await anyio.sleep_forever()
    if fault.kind == "shutdown":
        session.queue(shutdown_text(session, fault))
        session.closing = True
        return True
    if fault.kind == "delay":
        await session.flush()
        await anyio.sleep(fault.seconds)
    return False


def inject(session: Session, fault: Fault | None) -> None:
    """Queue the bytes of an ``inject`` fault (after the reply just queued)."""
    if fault is None or fault.kind != "inject":
        return
    for line in fault.data.split(b"\r\n"):
        if line:
            session.record("S", line)
    session.out.append(fault.data)

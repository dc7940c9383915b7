"""The data phase of the test server: message data after ``DATA``, up to ``<CRLF>.<CRLF>``.

The data stays in the session's buffer; the terminator is found with one
``bytearray.find()`` per read and the data is un-stuffed with one ``bytes.replace()``, so
no Python code loops over single bytes.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from ._faults import act, inject
from ._messages import ReceivedMessage
from ._rules import is_positive

if TYPE_CHECKING:
    from ._rules import Rule
    from ._session import Session

__all__ = ("count_bare", "deliver", "parse_bdat", "receive_chunk", "receive_data")


def count_bare(data: bytes | bytearray) -> int:
    """Number of CR not followed by LF plus LF not preceded by CR."""
    crlf = data.count(b"\r\n")
    return (data.count(b"\r") - crlf) + (data.count(b"\n") - crlf)


async def receive_data(session: Session) -> bool:
    """Read message data up to the ``<CRLF>.<CRLF>`` terminator and answer it.

    The data is kept in ``session.buf``, starting at ``session.pos``; offsets are relative
    to ``session.pos`` because ``fill()`` may compact the buffer.

    :return: ``False`` if the stream ended first
    """
    server = session.server
    limit = server.size_limit
    # Un-stuffing removes at most one octet per three, so wire data beyond this
    # bound is certainly over the limit and need not be kept.
    cap = None if limit is None else limit + limit // 2 + 1024
    scan = 0
    discarded = 0
    bare = 0
    buf = session.buf
    fault, session.data_fault = session.data_fault, None
    while True:
        start = session.pos
        if not discarded and buf[start : start + 3] == b".\r\n":
            content_end, end = start, start + 3
            found = start
        else:
            found = buf.find(b"\r\n.\r\n", start + scan)
            content_end, end = found + 2, found + 5
        if fault is not None and fault.after_bytes is not None:
            # Act once after_bytes octets have arrived, unless the data ended before.
            after = fault.after_bytes
            if found >= 0 and discarded + end - start <= after:
                fault = None
            elif discarded + len(buf) - start >= after:
                await act(session, fault, f"after {after} octets of DATA")
                return False
        if found >= 0:
            break
        scan = max(0, len(buf) - start - 4)
        if cap is not None and len(buf) - start > cap:
            # Too big: count and drop what we have, keeping a tail that may hold the
            # start of the terminator (and never splitting a CRLF).
            cut = len(buf) - 4
            if buf[cut - 1 : cut] == b"\r":
                cut -= 1
            bare += count_bare(buf[start:cut])
            discarded += cut - start
            del buf[start:cut]
            scan = 0
        if not await session.fill():
            session.note("connection closed during message data")
            return False

    raw = bytes(buf[start:end])
    session.pos = end
    if server.refuse_pipelined_after_data and len(buf) > end:
        session.early_until = len(buf)
    bare += count_bare(raw)
    server.bare_line_ending_violations += bare
    if server.transcript_data and not discarded:
        for wire_line in raw.split(b"\r\n")[:-1]:
            session.record("C", wire_line)
    content = raw[: content_end - start]
    data = (b"\r\n" + content).replace(b"\r\n.", b"\r\n")[2:] if b"." in content else content
    return await deliver(session, data, raw, too_big=bool(discarded))


async def deliver(
    session: Session, data: bytes, raw: bytes, *, too_big: bool, rule: Rule | None = None
) -> bool:
    """Answer the end of a message's data, and keep the message if the answer is 2xx.

    A fault at ``EOM`` that closes (close, stall, shutdown) drops the message.

    :param data: the message content
    :param raw: the message as it was on the wire
    :param too_big: whether the data exceeded the size limit while it arrived
    :param rule: the override taken already (for ``BDAT ... LAST``), else an ``EOM`` one
    :return: ``False`` if a fault closed the session
    """
    server = session.server
    fault = server._faults.take_fault("EOM", data.decode("utf-8", "replace"))
    if fault is not None and await act(session, fault, "at EOM"):
        session.transaction = None
        return False
    limit = server.size_limit
    transaction = session.transaction
    session.transaction = None
    assert transaction is not None
    queue_id = ""
    if too_big or (limit is not None and len(data) > limit):
        reply = session.fmt(552, "5.3.4", "Message size exceeds fixed limit")
    else:
        queue_id = secrets.token_hex(6).upper()
        reply = session.ok("2.0.0", f"Ok: queued as {queue_id}")
    if rule is None and server._rules.has("EOM"):
        rule = server._rules.take("EOM", data.decode("utf-8", "replace"))
    if rule is not None:
        accepted = reply.startswith("2") and rule.text.startswith("2")
        reply = rule.text
        session.closing = rule.close
    else:
        accepted = reply.startswith("2")
    if accepted:
        if not transaction.eight_bit and not data.isascii():
            server.eight_bit_violations += 1
        server.messages.append(
            ReceivedMessage(
                sender=transaction.sender,
                recipients=tuple(transaction.recipients),
                data=data,
                mail_options=transaction.mail_options,
                rcpt_options=tuple(transaction.rcpt_options),
                tls=session.tls,
                authenticated_as=session.authenticated_as,
                raw=raw,
                session=session.index,
                queue_id=queue_id,
                helo=session.helo,
            )
        )
    session.queue(reply)
    inject(session, fault)
    return True


def parse_bdat(arg: str) -> tuple[int, bool] | None:
    """``BDAT <size> [LAST]`` (RFC 3030): the chunk size and whether it is the last one."""
    parts = arg.split()
    if not 1 <= len(parts) <= 2 or not (parts[0].isascii() and parts[0].isdigit()):
        return None
    if len(parts) == 2 and parts[1].upper() != "LAST":
        return None
    return int(parts[0]), len(parts) == 2


async def receive_chunk(session: Session, arg: str, size: int, last: bool) -> bool:
    """Read the chunk of a ``BDAT`` command and answer it (RFC 3030).

    The chunk is read whatever the answer will be: its octets are no commands. A ``BDAT``
    override (``reply()``) replaces the answer; on the last chunk it also decides, like an
    ``EOM`` one, whether the message is kept.

    :return: ``False`` if the stream ended or a fault closed the session
    """
    server = session.server
    buf = session.buf
    fault, session.data_fault = session.data_fault, None
    after = None if fault is None else fault.after_bytes
    while True:
        have = len(buf) - session.pos
        # Act once after_bytes octets of the chunk are in, unless the chunk is no longer.
        if fault is not None and after is not None and after < size and have >= after:
            await act(session, fault, f"after {after} octets of BDAT")
            return False
        if have >= size:
            break
        if not await session.fill():
            session.note("connection closed during a BDAT chunk")
            return False
        buf = session.buf
    chunk = bytes(buf[session.pos : session.pos + size])
    session.pos += size
    if session.pos < len(buf) and "PIPELINING" not in session.keywords:
        server.pipelining_violations += 1
    if server.transcript_data and chunk:
        for wire_line in chunk.removesuffix(b"\r\n").split(b"\r\n"):
            session.record("C", wire_line)

    rule = server._rules.take("BDAT", arg)
    transaction = session.transaction
    if transaction is None:
        reply = session.fmt(503, "5.5.1", "Error: need MAIL command")
    elif not transaction.recipients:
        reply = session.fmt(503, "5.5.1", "Error: need RCPT command")
    else:
        if transaction.chunks is None:
            transaction.chunks = bytearray()
        limit = server.size_limit
        if rule is None or is_positive(rule.text):
            if limit is not None and len(transaction.chunks) + size > limit:
                transaction.chunks_too_big = True
                transaction.chunks.clear()
            if not transaction.chunks_too_big:
                transaction.chunks += chunk
        if last:
            data = bytes(transaction.chunks)
            server.bare_line_ending_violations += count_bare(data)
            return await deliver(session, data, data, too_big=transaction.chunks_too_big, rule=rule)
        reply = session.ok("2.0.0", f"{size} octets received")
    if rule is not None:
        reply = rule.text
        session.closing = rule.close
    session.queue(reply)
    return True

"""The transaction core and a server that refuses commands sent with an end of data.

Driven without I/O: each group the pipeline composes is "written" whole and
answered the way Haraka answers, ``503`` to every command that came in the
same write as an earlier end of data (``.`` or ``BDAT LAST``).  The messages
so refused must go again, alone after each end of data, and every message gets
the outcome of its one real attempt.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from anyio_smtp import SendResult, SMTPError
from anyio_smtp._protocol.commands import Bdat, Data, Mail, Rset
from anyio_smtp._protocol.params import Transfer
from anyio_smtp._protocol.session import NEED_DATA, ReplyEvent, SMTPSession
from anyio_smtp._transaction import (
    Kind,
    Options,
    Piece,
    Pipeline,
    StreamedContent,
    Submission,
    mail_submission,
)
from tests.unit.test_transaction_properties import ready_session

EARLY = b"503 5.5.0 Bad sequence of commands - pipelined after end of DATA\r\n"


def run_group(pipeline: Pipeline, answer: Callable[[Piece, bool], bytes]) -> list[Piece]:
    """Compose one group, answer it, record the replies and finish the round.

    ``answer(piece, after_end)`` gives the server's replies to one piece;
    ``after_end`` says whether an end of data came earlier in the group.
    """
    session = pipeline.session
    assert pipeline.holding() or pipeline.needs_rset
    pieces: list[Piece] = []
    after_end = False
    for piece in pipeline.compose():
        assert not isinstance(piece, StreamedContent)
        pipeline.mark_handed(piece.owed)
        pieces.append(piece)
        session.receive_data(answer(piece, after_end))
        if any(owed.kind is Kind.FINAL for owed in piece.owed):
            after_end = True
    while session.pending:
        event = session.next_event()
        assert event is not NEED_DATA
        assert isinstance(event, ReplyEvent)
        pipeline.record(event)
    pipeline.finish_round()
    return pieces


def haraka(piece: Piece, after_end: bool) -> bytes:
    """503 to every command after an end of data; otherwise everything is accepted."""
    replies = b""
    for owed in piece.owed:
        if after_end and owed.kind is not Kind.FINAL:
            replies += EARLY
        elif owed.kind is Kind.DATA:
            replies += b"354 go ahead\r\n"
        elif owed.kind is Kind.FINAL and after_end:
            replies += EARLY  # BDAT LAST of a refused transaction
        else:
            replies += b"250 2.0.0 ok\r\n"
    return replies


def submissions(count: int, transfer: Transfer) -> list[Submission]:
    return [
        mail_submission(
            "a@client.example",
            [f"r{index}@one.example"],
            f"Subject: {index}\r\n\r\nbody {index}\r\n".encode(),
            options=Options(transfer=transfer),
        )
        for index in range(count)
    ]


def drive(
    session: SMTPSession, count: int, transfer: Transfer
) -> tuple[list[SendResult | SMTPError], list[list[Piece]]]:
    pipeline = Pipeline(session, lmtp=False, max_in_flight=16)
    for submission in submissions(count, transfer):
        pipeline.add(submission)
    groups: list[list[Piece]] = []
    outcomes: list[SendResult | SMTPError] = []
    for _ in range(4 * count + 4):
        if not (pipeline.holding() or pipeline.needs_rset):
            break
        groups.append(run_group(pipeline, haraka))
        outcomes += pipeline.take_outcomes()
    return outcomes, groups


@pytest.mark.parametrize("transfer", ["data", "bdat"])
def test_refused_messages_go_again_and_each_end_of_data_closes_its_group(
    transfer: Transfer,
) -> None:
    session = ready_session(lmtp=False, chunking=transfer == "bdat", rcpt_max=None)
    outcomes, groups = drive(session, 5, transfer)
    assert len(outcomes) == 5
    assert all(isinstance(outcome, SendResult) for outcome in outcomes), outcomes
    # Every message's MAIL was accepted exactly once.
    mails = [
        command
        for group in groups
        for piece in group
        for command in piece.commands
        if isinstance(command, Mail)
    ]
    assert len(mails) == 5 + (1 if transfer == "data" else 4)  # the refused ones, again
    # Once refused, no group holds anything after an end of data.
    refused_at = next(
        index
        for index, group in enumerate(groups)
        if any(isinstance(c, Mail) for p in group[1:] for c in p.commands)
        and any(o.kind is Kind.FINAL for p in group for o in p.owed)
    )
    for group in groups[refused_at + 1 :]:
        ends = [i for i, p in enumerate(group) if any(o.kind is Kind.FINAL for o in p.owed)]
        assert not ends or ends[-1] == len(group) - 1, group


def test_a_503_to_mail_without_an_end_of_data_before_it_is_the_outcome() -> None:
    # Lone in its group (no end of data before it): the 503 is the server's
    # answer to this message, reported (as not permanent), not retried here.
    session = ready_session(lmtp=False, chunking=False, rcpt_max=None)
    pipeline = Pipeline(session, lmtp=False, max_in_flight=16)
    pipeline.add(submissions(1, "data")[0])
    run_group(pipeline, lambda piece, after_end: EARLY * len(piece.owed))
    outcomes = list(pipeline.take_outcomes())
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], SMTPError)
    assert not outcomes[0].is_permanent
    assert pipeline.pipeline_after_end


def test_commands_in_a_group_are_what_the_server_expects() -> None:
    # Sanity of the driver: the first group holds MAIL, RCPT and DATA only.
    session = ready_session(lmtp=False, chunking=False, rcpt_max=None)
    pipeline = Pipeline(session, lmtp=False, max_in_flight=16)
    for submission in submissions(2, "data"):
        pipeline.add(submission)
    first = run_group(pipeline, haraka)
    kinds = [type(c) for p in first for c in p.commands]
    assert kinds[0] is Mail
    assert kinds[-1] is Data
    assert Rset not in kinds
    assert Bdat not in kinds

"""The session state table."""

from __future__ import annotations

from collections import deque

import pytest

from anyio_smtp import LocalProtocolError, SessionState
from anyio_smtp._protocol.state import PIPELINABLE, TRANSITIONS, Event, transition

S, E = SessionState, Event

LIVE_STATES = [state for state in SessionState if state is not S.CLOSED]


@pytest.mark.parametrize(
    ("state", "event", "target"),
    [(state, event, target) for (state, event), target in TRANSITIONS.items()],
    ids=[f"{state.name}-{event.name}" for state, event in TRANSITIONS],
)
def test_every_listed_transition_works(
    state: SessionState, event: Event, target: SessionState
) -> None:
    assert transition(state, event) is target


@pytest.mark.parametrize(
    ("state", "event", "target"),
    [
        (S.GREETING, E.GREETING_OK, S.HELLO),
        (S.GREETING, E.GREETING_REFUSED, S.CLOSED),
        (S.HELLO, E.EHLO, S.EHLO),
        (S.HELLO, E.HELO, S.EHLO),
        (S.EHLO, E.HELLO_OK, S.READY),
        (S.EHLO, E.HELLO_REFUSED, S.HELLO),
        (S.READY, E.STARTTLS, S.STARTTLS),
        (S.STARTTLS, E.STARTTLS_READY, S.TLS_HANDSHAKE),
        (S.STARTTLS, E.STARTTLS_REFUSED, S.READY),
        (S.TLS_HANDSHAKE, E.TLS_STARTED, S.HELLO),
        (S.READY, E.AUTH, S.AUTH),
        (S.AUTH, E.AUTH_CHALLENGE, S.AUTH),
        (S.AUTH, E.AUTH_RESPONSE, S.AUTH),
        (S.AUTH, E.AUTH_DONE, S.READY),
        (S.READY, E.MAIL, S.MAIL),
        (S.MAIL, E.RCPT, S.MAIL),
        (S.MAIL, E.DATA, S.DATA),
        (S.DATA, E.DATA_READY, S.BODY),
        (S.DATA, E.DATA_REFUSED, S.MAIL),
        (S.BODY, E.BODY_CHUNK, S.BODY),
        (S.BODY, E.END_OF_DATA, S.READY),
        (S.MAIL, E.RSET, S.READY),
        (S.READY, E.QUIT, S.QUIT),
        (S.QUIT, E.CLOSE, S.CLOSED),
    ],
)
def test_documented_rules(state: SessionState, event: Event, target: SessionState) -> None:
    # The rules written at the top of state.py, spelled out independently of the table.
    assert TRANSITIONS[(state, event)] is target
    assert transition(state, event) is target


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (S.GREETING, E.EHLO),
        (S.GREETING, E.MAIL),
        (S.HELLO, E.MAIL),
        (S.HELLO, E.AUTH),
        (S.HELLO, E.STARTTLS),
        (S.HELLO, E.RCPT),
        (S.EHLO, E.MAIL),
        (S.EHLO, E.EHLO),
        (S.READY, E.DATA),
        (S.READY, E.RCPT),
        (S.READY, E.BODY_CHUNK),
        (S.READY, E.END_OF_DATA),
        (S.READY, E.TLS_STARTED),
        (S.READY, E.DATA_READY),
        (S.MAIL, E.AUTH),
        (S.MAIL, E.STARTTLS),
        (S.MAIL, E.MAIL),
        (S.MAIL, E.EHLO),
        (S.MAIL, E.BODY_CHUNK),
        (S.MAIL, E.END_OF_DATA),
        (S.STARTTLS, E.MAIL),
        (S.STARTTLS, E.QUIT),
        (S.TLS_HANDSHAKE, E.EHLO),
        (S.TLS_HANDSHAKE, E.MAIL),
        (S.TLS_HANDSHAKE, E.QUIT),
        (S.AUTH, E.MAIL),
        (S.AUTH, E.STARTTLS),
        (S.AUTH, E.QUIT),
        (S.DATA, E.RCPT),
        (S.DATA, E.BODY_CHUNK),
        (S.DATA, E.RSET),
        (S.DATA, E.QUIT),
        (S.BODY, E.RSET),
        (S.BODY, E.QUIT),
        (S.BODY, E.MAIL),
        (S.QUIT, E.NOOP),
        (S.QUIT, E.MAIL),
    ],
)
def test_disallowed_transitions(state: SessionState, event: Event) -> None:
    with pytest.raises(LocalProtocolError) as info:
        transition(state, event)
    text = str(info.value)
    assert state.value in text
    assert event.value in text


@pytest.mark.parametrize("event", list(Event))
def test_nothing_leaves_closed(event: Event) -> None:
    with pytest.raises(LocalProtocolError):
        transition(S.CLOSED, event)
    assert (S.CLOSED, event) not in TRANSITIONS


@pytest.mark.parametrize("state", LIVE_STATES)
def test_close_and_421_end_every_live_state(state: SessionState) -> None:
    assert transition(state, E.CLOSE) is S.CLOSED
    assert transition(state, E.SERVICE_CLOSING) is S.CLOSED


def test_closed_is_only_reached_by_ending_events() -> None:
    into_closed = {event for (_state, event), target in TRANSITIONS.items() if target is S.CLOSED}
    assert into_closed == {E.CLOSE, E.SERVICE_CLOSING, E.GREETING_REFUSED}


def test_body_reachable_only_through_data_ready() -> None:
    into_body = {
        (state, event)
        for (state, event), target in TRANSITIONS.items()
        if target is S.BODY and state is not S.BODY
    }
    assert into_body == {(S.DATA, E.DATA_READY)}
    into_data = {
        (state, event)
        for (state, event), target in TRANSITIONS.items()
        if target is S.DATA and state is not S.DATA
    }
    assert into_data == {(S.MAIL, E.DATA)}


def test_tls_handshake_reachable_only_through_220_to_starttls() -> None:
    into = {key for key, target in TRANSITIONS.items() if target is S.TLS_HANDSHAKE}
    assert into == {(S.STARTTLS, E.STARTTLS_READY)}


def test_waiting_states_let_no_command_out() -> None:
    # RFC 2920 §3.1: EHLO, STARTTLS, DATA, QUIT ... end a group; until their reply
    # arrives no command may be sent.
    commands = {
        E.EHLO,
        E.HELO,
        E.STARTTLS,
        E.AUTH,
        E.MAIL,
        E.RCPT,
        E.DATA,
        E.RSET,
        E.NOOP,
        E.QUIT,
        E.BODY_CHUNK,
        E.END_OF_DATA,
    }
    for state in (S.GREETING, S.EHLO, S.STARTTLS, S.TLS_HANDSHAKE, S.DATA, S.QUIT):
        for event in commands:
            assert (state, event) not in TRANSITIONS, (state, event)


def test_every_state_but_closed_reachable_from_greeting() -> None:
    seen = {S.GREETING}
    queue = deque([S.GREETING])
    while queue:
        state = queue.popleft()
        for (source, _event), target in TRANSITIONS.items():
            if source is state and target not in seen:
                seen.add(target)
                queue.append(target)
    assert seen == set(SessionState)
    # ... and without passing through CLOSED (it has no way out anyway).
    live = {S.GREETING}
    queue = deque([S.GREETING])
    while queue:
        state = queue.popleft()
        for (source, _event), target in TRANSITIONS.items():
            if source is state and target is not S.CLOSED and target not in live:
                live.add(target)
                queue.append(target)
    assert live == set(LIVE_STATES)


def test_no_live_state_is_a_dead_end() -> None:
    # From every live state but QUIT, READY can be reached again without closing.
    for start in LIVE_STATES:
        if start is S.QUIT:
            continue
        seen: set[SessionState] = {start}
        queue: deque[SessionState] = deque([start])
        while queue:
            state = queue.popleft()
            for (source, event), target in TRANSITIONS.items():
                ending = event in (E.CLOSE, E.SERVICE_CLOSING)
                if source is state and not ending and target not in seen:
                    seen.add(target)
                    queue.append(target)
        assert S.READY in seen, start


def test_auth_and_starttls_are_not_pipelinable() -> None:
    assert E.AUTH not in PIPELINABLE
    assert E.AUTH_RESPONSE not in PIPELINABLE
    assert E.STARTTLS not in PIPELINABLE
    assert E.HELO not in PIPELINABLE
    assert {E.MAIL, E.RCPT, E.DATA, E.RSET} <= PIPELINABLE


def test_table_uses_only_enum_members() -> None:
    for (state, event), target in TRANSITIONS.items():
        assert isinstance(state, SessionState)
        assert isinstance(event, Event)
        assert isinstance(target, SessionState)

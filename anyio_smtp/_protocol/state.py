"""Session states and the one table of transitions between them.

Rules (each enforced by ``transition`` below and unit-tested):

* A session starts in GREETING and waits for the server's greeting.
* After a positive greeting, and again after TLS starts (RFC 3207 §4.2: the
  client "MUST discard any knowledge obtained from the server"), it is in HELLO
  and the only useful command is EHLO (or HELO).
* READY is the resting state between transactions.  STARTTLS, AUTH, MAIL, RSET,
  NOOP, EHLO and QUIT start from here.
* Commands whose reply decides what may follow (EHLO, HELO, STARTTLS, AUTH,
  DATA, QUIT) move to a waiting state that no command may leave: RFC 2920 §3.1
  says they "can only appear as the last command in a group".
* MAIL opens a transaction (MAIL); RCPT stays there; DATA waits for 354;
  message data is sent in BODY; its end goes back to READY at once, so with
  PIPELINING the next transaction may follow before the final reply.  With
  CHUNKING, BDAT chunks are sent from MAIL and the LAST one returns to READY.
* A refused transaction command does not change the state; the client resets
  with RSET (MAIL -> READY).
* A 421 reply (RFC 5321 §3.8), a QUIT reply, a broken connection or any
  protocol violation leads to CLOSED, which has no way out.
"""

from __future__ import annotations

import enum

from .._errors import LocalProtocolError

__all__ = ("GROUP_END", "PIPELINABLE", "TRANSITIONS", "Event", "SessionState", "transition")


class SessionState(enum.Enum):
    """Where an SMTP session stands."""

    GREETING = "greeting"  #: waiting for the server's greeting
    HELLO = "hello"  #: greeted (or TLS just started): EHLO must come next
    EHLO = "ehlo"  #: EHLO or HELO sent, waiting for the reply
    READY = "ready"  #: between transactions
    STARTTLS = "starttls"  #: STARTTLS sent, waiting for 220
    TLS_HANDSHAKE = "tls-handshake"  #: 220 received, the TLS handshake is due
    AUTH = "auth"  #: inside an AUTH exchange
    MAIL = "mail"  #: a mail transaction is open (MAIL sent)
    DATA = "data"  #: DATA sent, waiting for 354
    BODY = "body"  #: sending the message data
    QUIT = "quit"  #: QUIT sent
    CLOSED = "closed"  #: the session is over; nothing more can be done


class Event(enum.Enum):
    """What moves a session: a command sent or the reply that decides a waiting state."""

    # commands sent
    EHLO = "EHLO"
    HELO = "HELO"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    AUTH_RESPONSE = "AUTH response"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    BDAT = "BDAT"
    BDAT_LAST = "BDAT LAST"
    BODY_CHUNK = "message data"
    END_OF_DATA = "end of data"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    # replies and other happenings
    GREETING_OK = "positive greeting"
    GREETING_REFUSED = "negative greeting"
    HELLO_OK = "EHLO accepted"
    HELLO_REFUSED = "EHLO refused"
    STARTTLS_READY = "220 to STARTTLS"
    STARTTLS_REFUSED = "STARTTLS refused"
    TLS_STARTED = "TLS handshake done"
    AUTH_CHALLENGE = "334 challenge"
    AUTH_DONE = "AUTH finished"
    DATA_READY = "354 to DATA"
    DATA_REFUSED = "DATA refused"
    SERVICE_CLOSING = "421 reply"
    CLOSE = "session closed"


S, E = SessionState, Event

#: (state, event) -> next state.  Anything absent is not allowed.
TRANSITIONS: dict[tuple[SessionState, Event], SessionState] = {
    (S.GREETING, E.GREETING_OK): S.HELLO,
    (S.GREETING, E.GREETING_REFUSED): S.CLOSED,
    (S.HELLO, E.EHLO): S.EHLO,
    (S.HELLO, E.HELO): S.EHLO,
    (S.EHLO, E.HELLO_OK): S.READY,
    (S.EHLO, E.HELLO_REFUSED): S.HELLO,
    (S.READY, E.EHLO): S.EHLO,
    (S.READY, E.HELO): S.EHLO,
    (S.READY, E.STARTTLS): S.STARTTLS,
    (S.STARTTLS, E.STARTTLS_READY): S.TLS_HANDSHAKE,
    (S.STARTTLS, E.STARTTLS_REFUSED): S.READY,
    (S.TLS_HANDSHAKE, E.TLS_STARTED): S.HELLO,
    (S.READY, E.AUTH): S.AUTH,
    (S.AUTH, E.AUTH_CHALLENGE): S.AUTH,
    (S.AUTH, E.AUTH_RESPONSE): S.AUTH,
    (S.AUTH, E.AUTH_DONE): S.READY,
    (S.READY, E.MAIL): S.MAIL,
    (S.MAIL, E.RCPT): S.MAIL,
    # RFC 3030 §2: BDAT chunks carry the data; the LAST one ends the transaction.
    (S.MAIL, E.BDAT): S.MAIL,
    (S.MAIL, E.BDAT_LAST): S.READY,
    (S.MAIL, E.DATA): S.DATA,
    (S.DATA, E.DATA_READY): S.BODY,
    (S.DATA, E.DATA_REFUSED): S.MAIL,
    (S.BODY, E.BODY_CHUNK): S.BODY,
    (S.BODY, E.END_OF_DATA): S.READY,
    (S.READY, E.RSET): S.READY,
    (S.MAIL, E.RSET): S.READY,
    (S.READY, E.NOOP): S.READY,
    (S.MAIL, E.NOOP): S.MAIL,
    (S.HELLO, E.QUIT): S.QUIT,
    (S.READY, E.QUIT): S.QUIT,
    (S.MAIL, E.QUIT): S.QUIT,
    (S.QUIT, E.CLOSE): S.CLOSED,
}
# Every state but CLOSED can end: the server says 421, the link breaks, or the
# client gives up.
for _state in SessionState:
    if _state is not S.CLOSED:
        TRANSITIONS[(_state, E.SERVICE_CLOSING)] = S.CLOSED
        TRANSITIONS[(_state, E.CLOSE)] = S.CLOSED
del _state

#: Commands that may be sent while earlier replies are still owed, when the
#: server advertised PIPELINING (RFC 2920 §3.1).
PIPELINABLE = frozenset(
    {
        E.MAIL,
        E.RCPT,
        E.DATA,
        E.BDAT,
        E.BDAT_LAST,
        E.RSET,
        E.NOOP,
        E.QUIT,
        E.EHLO,
        E.BODY_CHUNK,
        E.END_OF_DATA,
    }
)
#: Commands after which nothing may be sent until their reply is in: RFC 2920
#: §3.1, "EHLO, DATA, VRFY, EXPN, TURN, QUIT, and NOOP ... can only appear as the
#: last command in a group", and the commands that start TLS or authentication.
GROUP_END = frozenset({E.EHLO, E.HELO, E.DATA, E.QUIT, E.NOOP, E.STARTTLS, E.AUTH, E.AUTH_RESPONSE})


def transition(state: SessionState, event: Event) -> SessionState:
    """Return the state that ``event`` leads to from ``state``.

    :raises LocalProtocolError: the event is not allowed in that state
    """
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise LocalProtocolError(
            f"{event.value} is not allowed while the session is in state {state.value!r}"
        ) from None

"""The sans-IO session, driven by bytes only."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from anyio_smtp import (
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    Reply,
    ServiceUnavailableError,
    SessionState,
    StartTLSInjectionError,
)
from anyio_smtp._protocol.commands import (
    Auth,
    AuthResponse,
    Command,
    Data,
    Ehlo,
    EndOfData,
    Greeting,
    Helo,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTLS,
)
from anyio_smtp._protocol.session import NEED_DATA, ReplyEvent, SMTPSession
from anyio_smtp._protocol.state import Event

S = SessionState
GREETING = b"220 mx.example ESMTP ready\r\n"
BYTEWISE = pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])


def state(session: SMTPSession) -> SessionState:
    return session.state


def ehlo_reply(*keywords: str) -> bytes:
    lines = ["mx.example greets client.example", *keywords]
    return b"".join(
        b"250" + (b" " if index == len(lines) - 1 else b"-") + line.encode() + b"\r\n"
        for index, line in enumerate(lines)
    )


def feed(session: SMTPSession, data: bytes, *, bytewise: bool = False) -> list[ReplyEvent]:
    """Feed ``data`` (whole or one byte at a time) and collect every complete event."""
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    events: list[ReplyEvent] = []
    for chunk in chunks:
        session.receive_data(chunk)
        while True:
            event = session.next_event()
            if event is NEED_DATA:
                break
            assert isinstance(event, ReplyEvent)
            events.append(event)
    return events


def feed_one(session: SMTPSession, data: bytes, *, bytewise: bool = False) -> ReplyEvent:
    events = feed(session, data, bytewise=bytewise)
    assert len(events) == 1
    return events[0]


def greeted(*, bytewise: bool = False) -> SMTPSession:
    session = SMTPSession()
    feed_one(session, GREETING, bytewise=bytewise)
    assert state(session) is S.HELLO
    return session


def ready(*keywords: str, bytewise: bool = False) -> SMTPSession:
    session = greeted(bytewise=bytewise)
    assert session.send(Ehlo("client.example")) == b"EHLO client.example\r\n"
    feed_one(session, ehlo_reply(*keywords), bytewise=bytewise)
    assert state(session) is S.READY
    assert session.pending == 0
    return session


def in_body(*keywords: str, bytewise: bool = False) -> SMTPSession:
    session = ready(*keywords, bytewise=bytewise)
    session.send(Mail("a@example.com"))
    feed_one(session, b"250 2.1.0 ok\r\n", bytewise=bytewise)
    session.send(Rcpt("b@example.com"))
    feed_one(session, b"250 2.1.5 ok\r\n", bytewise=bytewise)
    session.send(Data())
    feed_one(session, b"354 go ahead\r\n", bytewise=bytewise)
    assert state(session) is S.BODY
    return session


def assert_dead(session: SMTPSession) -> None:
    """The session is closed and refuses to send (the error class is checked apart)."""
    assert state(session) is S.CLOSED
    assert session.pending == 0
    with pytest.raises(ProtocolError):
        session.send(Noop())
    with pytest.raises(ProtocolError):
        session.send(Quit())
    assert state(session) is S.CLOSED


# -- greeting and hello ----------------------------------------------------------------


@BYTEWISE
def test_greeting_moves_to_hello(bytewise: bool) -> None:
    session = SMTPSession()
    assert state(session) is S.GREETING
    assert session.pending == 1
    assert session.awaiting == Greeting()
    event = feed_one(session, GREETING, bytewise=bytewise)
    assert event.command == Greeting()
    assert event.reply == Reply(220, ("mx.example ESMTP ready",))
    assert state(session) is S.HELLO
    assert session.pending == 0
    assert session.awaiting is None


@BYTEWISE
def test_multiline_greeting(bytewise: bool) -> None:
    session = SMTPSession()
    event = feed_one(session, b"220-mx.example\r\n220-more\r\n220 ready\r\n", bytewise=bytewise)
    assert event.reply.lines == ("mx.example", "more", "ready")
    assert state(session) is S.HELLO


@BYTEWISE
def test_negative_greeting_closes(bytewise: bool) -> None:
    session = SMTPSession()
    event = feed_one(session, b"554 5.7.1 go away\r\n", bytewise=bytewise)
    assert event.reply.code == 554
    assert_dead(session)


def test_nothing_may_be_sent_before_the_greeting() -> None:
    session = SMTPSession()
    with pytest.raises(LocalProtocolError):
        session.send(Ehlo("client.example"))
    # A local error changes nothing.
    assert state(session) is S.GREETING
    assert session.pending == 1
    feed_one(session, GREETING)
    assert session.send(Ehlo("client.example")) == b"EHLO client.example\r\n"


def test_need_data_until_the_reply_is_complete() -> None:
    session = SMTPSession()
    session.receive_data(b"220 mx")
    assert session.next_event() is NEED_DATA
    assert session.unread == len(b"220 mx")
    session.receive_data(b"\r\n")
    assert isinstance(session.next_event(), ReplyEvent)
    assert session.next_event() is NEED_DATA


def test_mail_not_allowed_before_ehlo() -> None:
    session = greeted()
    with pytest.raises(LocalProtocolError):
        session.send(Mail("a@example.com"))
    with pytest.raises(LocalProtocolError):
        session.check(Event.MAIL)
    session.check(Event.EHLO)
    assert state(session) is S.HELLO


@BYTEWISE
def test_ehlo_reply_becomes_capabilities(bytewise: bool) -> None:
    session = ready("PIPELINING", "SIZE 1000", "AUTH PLAIN LOGIN", "STARTTLS", bytewise=bytewise)
    caps = session.capabilities
    assert caps.greeting == "mx.example greets client.example"
    assert caps.size_limit == 1000
    assert caps.auth_mechanisms == frozenset({"PLAIN", "LOGIN"})
    assert "starttls" in caps
    assert session.extended is True
    assert session.pipelining is True


def test_capabilities_empty_before_ehlo() -> None:
    session = greeted()
    assert len(session.capabilities) == 0
    assert session.pipelining is False
    assert session.extended is False


@BYTEWISE
def test_enhanced_status_codes_used_when_advertised(bytewise: bool) -> None:
    session = ready("ENHANCEDSTATUSCODES", bytewise=bytewise)
    session.send(Mail("a@example.com"))
    event = feed_one(session, b"550 5.1.8 bad sender domain\r\n", bytewise=bytewise)
    assert event.reply.enhanced_status == "5.1.8"
    assert event.reply.message == "bad sender domain"


@BYTEWISE
def test_enhanced_status_codes_ignored_when_not_advertised(bytewise: bool) -> None:
    session = ready("PIPELINING", bytewise=bytewise)
    session.send(Mail("a@example.com"))
    event = feed_one(session, b"550 5.1.8 bad sender domain\r\n", bytewise=bytewise)
    assert event.reply.enhanced_status is None
    assert event.reply.message == "5.1.8 bad sender domain"


def test_second_ehlo_replaces_capabilities() -> None:
    session = ready("ENHANCEDSTATUSCODES", "PIPELINING")
    session.send(Ehlo("client.example"))
    feed_one(session, ehlo_reply("SIZE 5"))
    assert "PIPELINING" not in session.capabilities
    assert session.capabilities.size_limit == 5
    session.send(Noop())
    assert feed_one(session, b"250 2.0.0 ok\r\n").reply.enhanced_status is None


@BYTEWISE
def test_ehlo_refused_then_helo(bytewise: bool) -> None:
    session = greeted(bytewise=bytewise)
    session.send(Ehlo("client.example"))
    event = feed_one(session, b"502 5.5.1 command not implemented\r\n", bytewise=bytewise)
    assert event.command == Ehlo("client.example")
    assert event.reply.code == 502
    assert state(session) is S.HELLO
    assert session.send(Helo("client.example")) == b"HELO client.example\r\n"
    event = feed_one(session, b"250 mx.example\r\n", bytewise=bytewise)
    assert event.command == Helo("client.example")
    assert state(session) is S.READY
    assert session.extended is False
    assert len(session.capabilities) == 0
    assert session.capabilities.greeting == "mx.example"
    assert session.pipelining is False


@BYTEWISE
def test_helo_reply_with_keywords_gives_no_capabilities(bytewise: bool) -> None:
    session = greeted(bytewise=bytewise)
    session.send(Helo("client.example"))
    feed_one(session, b"250-mx.example\r\n250 PIPELINING\r\n", bytewise=bytewise)
    assert state(session) is S.READY
    assert len(session.capabilities) == 0
    assert session.pipelining is False


# -- without and with PIPELINING -------------------------------------------------------


def test_without_pipelining_one_command_at_a_time() -> None:
    session = ready("SIZE 100")
    session.send(Mail("a@example.com"))
    with pytest.raises(LocalProtocolError):
        session.send(Rcpt("b@example.com"))
    assert state(session) is S.MAIL
    assert session.pending == 1
    feed_one(session, b"250 ok\r\n")
    assert session.send(Rcpt("b@example.com")) == b"RCPT TO:<b@example.com>\r\n"


@pytest.mark.parametrize(
    "command",
    [Rset(), Noop(), Quit(), Ehlo("client.example")],
    ids=["RSET", "NOOP", "QUIT", "EHLO"],
)
def test_without_pipelining_nothing_while_a_reply_is_owed(command: Command) -> None:
    session = ready()
    session.send(Noop())
    with pytest.raises(LocalProtocolError):
        session.send(command)


@BYTEWISE
def test_pipelined_transaction_pairs_replies_in_order(bytewise: bool) -> None:
    session = ready("PIPELINING", bytewise=bytewise)
    mail = Mail("a@example.com", ("SIZE=10",))
    first, second = Rcpt("b@example.com"), Rcpt("c@example.com")
    sent = session.send(mail) + session.send(first) + session.send(second) + session.send(Data())
    assert sent == (
        b"MAIL FROM:<a@example.com> SIZE=10\r\n"
        b"RCPT TO:<b@example.com>\r\n"
        b"RCPT TO:<c@example.com>\r\n"
        b"DATA\r\n"
    )
    assert session.pending == 4
    assert session.awaiting == mail
    assert state(session) is S.DATA
    events = feed(
        session,
        b"250 2.1.0 sender ok\r\n250 2.1.5 b ok\r\n550 5.1.1 no c\r\n354 go\r\n",
        bytewise=bytewise,
    )
    assert [event.command for event in events] == [mail, first, second, Data()]
    assert [event.reply.code for event in events] == [250, 250, 550, 354]
    assert events[2].reply.lines == ("5.1.1 no c",)
    assert state(session) is S.BODY
    assert session.pending == 0


def test_pipelined_replies_arriving_one_at_a_time() -> None:
    session = ready("PIPELINING")
    session.send(Mail("a@example.com"))
    session.send(Rcpt("b@example.com"))
    session.send(Data())
    assert feed_one(session, b"250 ok\r\n").command == Mail("a@example.com")
    assert session.awaiting == Rcpt("b@example.com")
    assert session.pending == 2
    assert feed_one(session, b"250 ok\r\n").command == Rcpt("b@example.com")
    assert feed_one(session, b"354 go\r\n").command == Data()


def test_pipelined_group_ends_with_data() -> None:
    session = ready("PIPELINING")
    session.send(Mail("a@example.com"))
    session.send(Rcpt("b@example.com"))
    session.send(Data())
    for command in (Rset(), Noop(), Quit(), Rcpt("c@example.com"), Mail("a@example.com")):
        with pytest.raises(LocalProtocolError):
            session.send(command)
    with pytest.raises(LocalProtocolError):
        session.send_data(b"x\r\n.\r\n", end=True)
    assert session.pending == 3


@pytest.mark.parametrize(
    "command",
    [StartTLS(), Auth("PLAIN", b"\0u\0p"), Helo("client.example")],
    ids=["STARTTLS", "AUTH", "HELO"],
)
def test_commands_that_are_never_pipelined(command: Command) -> None:
    session = ready("PIPELINING", "STARTTLS", "AUTH PLAIN")
    session.send(Rset())
    with pytest.raises(LocalProtocolError):
        session.send(command)
    assert session.pending == 1


def test_noop_ends_a_pipelined_group() -> None:
    # RFC 2920 §3.1: "The EHLO, DATA, VRFY, EXPN, TURN, QUIT, and NOOP commands can
    # only appear as the last command in a group".
    session = ready("PIPELINING")
    session.send(Noop())
    with pytest.raises(LocalProtocolError):
        session.send(Mail("a@example.com"))


def test_pipelined_rset_then_new_transaction() -> None:
    session = ready("PIPELINING")
    session.send(Rset())
    session.send(Mail("a@example.com"))
    events = feed(session, b"250 reset\r\n250 ok\r\n")
    assert [event.command for event in events] == [Rset(), Mail("a@example.com")]
    assert state(session) is S.MAIL


# -- DATA and the message --------------------------------------------------------------


@BYTEWISE
def test_data_body_and_final_reply(bytewise: bool) -> None:
    session = in_body(bytewise=bytewise)
    assert session.send_data(b"Subject: x\r\n") == b"Subject: x\r\n"
    assert state(session) is S.BODY
    assert session.pending == 0
    assert session.send_data(b"\r\nhello\r\n.\r\n", end=True) == b"\r\nhello\r\n.\r\n"
    assert state(session) is S.READY
    assert session.pending == 1
    assert isinstance(session.awaiting, EndOfData)
    event = feed_one(session, b"250 2.0.0 queued as 1234\r\n", bytewise=bytewise)
    assert isinstance(event.command, EndOfData)
    assert event.reply.code == 250
    assert state(session) is S.READY
    assert session.pending == 0


def test_no_data_before_354() -> None:
    session = ready()
    session.send(Mail("a@example.com"))
    feed_one(session, b"250 ok\r\n")
    with pytest.raises(LocalProtocolError):
        session.send_data(b"x")
    session.send(Rcpt("b@example.com"))
    feed_one(session, b"250 ok\r\n")
    session.send(Data())
    with pytest.raises(LocalProtocolError):
        session.send_data(b"x")
    with pytest.raises(LocalProtocolError):
        session.send_data(b".\r\n", end=True)
    assert state(session) is S.DATA


@BYTEWISE
def test_data_refused_returns_to_the_transaction(bytewise: bool) -> None:
    session = ready(bytewise=bytewise)
    session.send(Mail("a@example.com"))
    feed_one(session, b"250 ok\r\n", bytewise=bytewise)
    session.send(Data())
    event = feed_one(session, b"554 5.5.1 no valid recipients\r\n", bytewise=bytewise)
    assert event.reply.code == 554
    assert state(session) is S.MAIL
    with pytest.raises(LocalProtocolError):
        session.send_data(b"x")
    session.send(Rset())
    feed_one(session, b"250 ok\r\n", bytewise=bytewise)
    assert state(session) is S.READY


def test_pipelining_next_transaction_before_the_final_reply() -> None:
    session = in_body("PIPELINING")
    session.send_data(b"x\r\n.\r\n", end=True)
    session.send(Mail("a@example.com"))
    events = feed(session, b"250 queued\r\n250 sender ok\r\n")
    assert isinstance(events[0].command, EndOfData)
    assert events[1].command == Mail("a@example.com")
    assert state(session) is S.MAIL


def test_without_pipelining_wait_for_the_final_reply() -> None:
    session = in_body()
    session.send_data(b"x\r\n.\r\n", end=True)
    with pytest.raises(LocalProtocolError):
        session.send(Mail("a@example.com"))


def test_reply_already_buffered_after_354_is_not_paired_with_end_of_data() -> None:
    # A server that answers the message before it was sent (here in the same
    # read as the 354) must not have that reply taken as the message's fate.
    session = ready()
    session.send(Mail("a@example.com"))
    feed_one(session, b"250 ok\r\n")
    session.send(Rcpt("b@example.com"))
    feed_one(session, b"250 ok\r\n")
    session.send(Data())
    session.receive_data(b"354 go ahead\r\n250 2.0.0 queued\r\n")
    event = session.next_event()
    assert isinstance(event, ReplyEvent)
    assert event.reply.code == 354
    assert state(session) is S.BODY
    with pytest.raises(RemoteProtocolError):
        session.send_data(b"hello\r\n.\r\n", end=True)
    assert state(session) is S.CLOSED


# -- STARTTLS --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "count"),
    [
        (b"220 go\r\nX\r\n", 3),
        (b"220 2.0.0 ready\r\n250-mx.example\r\n250 AUTH PLAIN\r\n", 32),
        (b"220 go\r\nX", 1),
        (b"220 go\r\n\r", 1),
        (b"220 go\n250 ok\n", 7),
    ],
)
def test_bytes_after_starttls_220_are_an_injection(data: bytes, count: int) -> None:
    session = ready("STARTTLS")
    assert session.send(StartTLS()) == b"STARTTLS\r\n"
    assert state(session) is S.STARTTLS
    session.receive_data(data)
    with pytest.raises(StartTLSInjectionError) as info:
        session.next_event()
    assert info.value.byte_count == count
    assert isinstance(info.value, RemoteProtocolError)
    assert str(count) in str(info.value)
    assert state(session) is S.CLOSED
    with pytest.raises(ProtocolError):
        session.start_tls()
    assert session.tls is False


@BYTEWISE
def test_starttls_220_alone_then_handshake(bytewise: bool) -> None:
    session = ready("STARTTLS", "ENHANCEDSTATUSCODES", "AUTH PLAIN", bytewise=bytewise)
    session.send(StartTLS())
    event = feed_one(session, b"220 2.0.0 Ready to start TLS\r\n", bytewise=bytewise)
    assert event.command == StartTLS()
    assert state(session) is S.TLS_HANDSHAKE
    assert session.unread == 0
    with pytest.raises(LocalProtocolError):
        session.send(Ehlo("client.example"))
    session.start_tls()
    assert session.tls is True
    assert state(session) is S.HELLO
    assert len(session.capabilities) == 0
    assert session.extended is False
    assert session.pipelining is False
    with pytest.raises(LocalProtocolError):
        session.send(Mail("a@example.com"))
    session.send(Ehlo("client.example"))
    feed_one(session, ehlo_reply("AUTH PLAIN LOGIN"), bytewise=bytewise)
    assert state(session) is S.READY
    assert session.capabilities.auth_mechanisms == frozenset({"PLAIN", "LOGIN"})
    assert "STARTTLS" not in session.capabilities
    session.send(Noop())
    # ENHANCEDSTATUSCODES was forgotten with the rest and not advertised again.
    assert feed_one(session, b"250 2.0.0 ok\r\n").reply.enhanced_status is None


def test_enhanced_status_forgotten_right_after_tls() -> None:
    session = ready("STARTTLS", "ENHANCEDSTATUSCODES")
    session.send(StartTLS())
    feed_one(session, b"220 go\r\n")
    session.start_tls()
    session.send(Ehlo("client.example"))
    event = feed_one(session, b"550 5.7.0 no\r\n")
    assert event.reply.enhanced_status is None


def test_start_tls_refuses_bytes_received_after_the_220() -> None:
    # The handshake must not start while plaintext received after the 220 is
    # still buffered: it would later be read as the server's reply over TLS.
    session = ready("STARTTLS")
    session.send(StartTLS())
    feed_one(session, b"220 go\r\n")
    session.receive_data(b"250-mx.example\r\n250 AUTH PLAIN\r\n")
    with pytest.raises(RemoteProtocolError):
        session.start_tls()
    assert state(session) is S.CLOSED
    assert session.tls is False


@BYTEWISE
def test_starttls_refused_stays_plaintext(bytewise: bool) -> None:
    session = ready("STARTTLS", "PIPELINING", bytewise=bytewise)
    session.send(StartTLS())
    event = feed_one(session, b"454 4.7.0 TLS not available\r\n", bytewise=bytewise)
    assert event.reply.code == 454
    assert state(session) is S.READY
    assert session.tls is False
    assert "PIPELINING" in session.capabilities
    with pytest.raises(LocalProtocolError):
        session.start_tls()


def test_start_tls_only_after_220() -> None:
    session = ready("STARTTLS")
    with pytest.raises(LocalProtocolError):
        session.start_tls()
    assert session.tls is False
    assert state(session) is S.READY


def test_start_tls_in_the_wrong_state_is_a_local_error_with_bytes_buffered() -> None:
    # Calling start_tls() at the wrong time is the caller's mistake; it must not be
    # reported as an injection after a 220, nor close the session.
    session = ready("STARTTLS", "PIPELINING")
    session.send(Noop())
    session.receive_data(b"250 ok\r\n")
    with pytest.raises(LocalProtocolError):
        session.start_tls()
    assert state(session) is S.READY
    assert feed(session, b"")[0].reply.code == 250


def test_tls_from_the_start() -> None:
    assert SMTPSession(tls=True).tls is True
    assert SMTPSession().tls is False


# -- unsolicited replies ---------------------------------------------------------------


@BYTEWISE
def test_unsolicited_reply_poisons_the_next_send(bytewise: bool) -> None:
    session = ready()
    data = b"250 surprise\r\n"
    for chunk in [data[i : i + 1] for i in range(len(data))] if bytewise else [data]:
        session.receive_data(chunk)
    assert session.unread == len(data)
    with pytest.raises(RemoteProtocolError) as info:
        session.send(Noop())
    assert not isinstance(info.value, LocalProtocolError)
    assert "14" in str(info.value)
    assert_dead(session)


def test_unsolicited_partial_bytes_poison_the_next_send() -> None:
    session = ready()
    session.receive_data(b"2")
    with pytest.raises(RemoteProtocolError):
        session.send(Mail("a@example.com"))
    assert_dead(session)


def test_unsolicited_garbage_poisons_the_next_send() -> None:
    session = ready()
    session.receive_data(b"garbage\r\n")
    with pytest.raises(RemoteProtocolError):
        session.send(Noop())
    assert state(session) is S.CLOSED


@BYTEWISE
def test_unsolicited_421_is_service_unavailable(bytewise: bool) -> None:
    session = ready()
    data = b"421 4.3.2 shutting down\r\n"
    for chunk in [data[i : i + 1] for i in range(len(data))] if bytewise else [data]:
        session.receive_data(chunk)
    with pytest.raises(ServiceUnavailableError) as info:
        session.send(Noop())
    assert info.value.reply.code == 421
    assert info.value.reply.lines == ("4.3.2 shutting down",)
    assert_dead(session)


@BYTEWISE
def test_unsolicited_reply_from_next_event(bytewise: bool) -> None:
    session = ready()
    with pytest.raises(RemoteProtocolError):
        feed(session, b"250 surprise\r\n", bytewise=bytewise)
    assert_dead(session)


@BYTEWISE
def test_unsolicited_421_from_next_event(bytewise: bool) -> None:
    session = ready()
    event = feed_one(session, b"421 4.4.2 idle too long\r\n", bytewise=bytewise)
    assert event.command is None
    assert event.reply.code == 421
    assert_dead(session)


def test_extra_reply_after_the_ehlo_reply() -> None:
    session = greeted()
    session.send(Ehlo("client.example"))
    session.receive_data(ehlo_reply("PIPELINING") + b"250 injected\r\n")
    event = session.next_event()
    assert isinstance(event, ReplyEvent)
    assert event.command == Ehlo("client.example")
    with pytest.raises(RemoteProtocolError):
        session.send(Mail("a@example.com"))
    assert state(session) is S.CLOSED


@BYTEWISE
def test_extra_reply_after_the_ehlo_reply_when_draining(bytewise: bool) -> None:
    session = greeted(bytewise=bytewise)
    session.send(Ehlo("client.example"))
    with pytest.raises(RemoteProtocolError):
        feed(session, ehlo_reply() + b"250 injected\r\n", bytewise=bytewise)
    assert state(session) is S.CLOSED


def test_pending_reply_bytes_are_not_unsolicited() -> None:
    # With PIPELINING, bytes for an owed reply may arrive before the next send.
    session = ready("PIPELINING")
    session.send(Mail("a@example.com"))
    session.receive_data(b"250 ok\r\n")
    session.send(Rcpt("b@example.com"))
    events = feed(session, b"250 ok\r\n")
    assert [event.command for event in events] == [Mail("a@example.com"), Rcpt("b@example.com")]


# -- 421 at any time -------------------------------------------------------------------

Setup = Callable[[bool], tuple[SMTPSession, Command]]


def _greeting(bytewise: bool) -> tuple[SMTPSession, Command]:
    return SMTPSession(), Greeting()


def _ehlo(bytewise: bool) -> tuple[SMTPSession, Command]:
    session = greeted(bytewise=bytewise)
    command = Ehlo("client.example")
    session.send(command)
    return session, command


def _helo(bytewise: bool) -> tuple[SMTPSession, Command]:
    session = greeted(bytewise=bytewise)
    command = Helo("client.example")
    session.send(command)
    return session, command


def _simple(command: Command, *keywords: str) -> Setup:
    def setup(bytewise: bool) -> tuple[SMTPSession, Command]:
        session = ready(*keywords, bytewise=bytewise)
        session.send(command)
        return session, command

    return setup


def _rcpt(bytewise: bool) -> tuple[SMTPSession, Command]:
    session = ready(bytewise=bytewise)
    session.send(Mail("a@example.com"))
    feed_one(session, b"250 ok\r\n", bytewise=bytewise)
    command = Rcpt("b@example.com")
    session.send(command)
    return session, command


def _data(bytewise: bool) -> tuple[SMTPSession, Command]:
    session, _ = _rcpt(bytewise)
    feed_one(session, b"250 ok\r\n", bytewise=bytewise)
    command = Data()
    session.send(command)
    return session, command


def _end_of_data(bytewise: bool) -> tuple[SMTPSession, Command]:
    session = in_body(bytewise=bytewise)
    session.send_data(b"x\r\n.\r\n", end=True)
    return session, EndOfData()


def _auth_response(bytewise: bool) -> tuple[SMTPSession, Command]:
    session = ready("AUTH LOGIN", bytewise=bytewise)
    session.send(Auth("LOGIN"))
    feed_one(session, b"334 VXNlcm5hbWU6\r\n", bytewise=bytewise)
    command = AuthResponse(b"user")
    session.send(command)
    return session, command


def _rset_in_mail(bytewise: bool) -> tuple[SMTPSession, Command]:
    session = ready(bytewise=bytewise)
    session.send(Mail("a@example.com"))
    feed_one(session, b"250 ok\r\n", bytewise=bytewise)
    command = Rset()
    session.send(command)
    return session, command


SETUPS: dict[str, Setup] = {
    "greeting": _greeting,
    "EHLO": _ehlo,
    "HELO": _helo,
    "STARTTLS": _simple(StartTLS(), "STARTTLS"),
    "AUTH": _simple(Auth("PLAIN", b"\0user\0pass"), "AUTH PLAIN"),
    "AUTH response": _auth_response,
    "MAIL": _simple(Mail("a@example.com")),
    "RCPT": _rcpt,
    "DATA": _data,
    "end of data": _end_of_data,
    "RSET": _simple(Rset()),
    "RSET in a transaction": _rset_in_mail,
    "NOOP": _simple(Noop()),
    "QUIT": _simple(Quit()),
}


@BYTEWISE
@pytest.mark.parametrize("name", list(SETUPS))
def test_421_in_reply_to_any_command_closes(name: str, bytewise: bool) -> None:
    session, command = SETUPS[name](bytewise)
    event = feed_one(session, b"421 4.3.2 closing down\r\n", bytewise=bytewise)
    assert event.command == command
    assert event.reply.code == 421
    assert event.reply.lines == ("4.3.2 closing down",)
    assert_dead(session)


@BYTEWISE
def test_421_inside_a_pipelined_group_clears_the_queue(bytewise: bool) -> None:
    session = ready("PIPELINING", bytewise=bytewise)
    for command in (Mail("a@example.com"), Rcpt("b@example.com"), Rcpt("c@example.com"), Data()):
        session.send(command)
    events = feed(session, b"250 ok\r\n421 4.3.2 bye\r\n", bytewise=bytewise)
    assert [event.command for event in events] == [Mail("a@example.com"), Rcpt("b@example.com")]
    assert events[1].reply.code == 421
    assert session.awaiting is None
    assert_dead(session)


def test_reply_after_421_in_a_group_is_not_paired() -> None:
    session = ready("PIPELINING")
    session.send(Mail("a@example.com"))
    session.send(Rcpt("b@example.com"))
    session.receive_data(b"421 bye\r\n250 late\r\n")
    event = session.next_event()
    assert isinstance(event, ReplyEvent)
    assert event.reply.code == 421
    with pytest.raises(RemoteProtocolError):
        session.next_event()
    assert state(session) is S.CLOSED


# -- QUIT and close --------------------------------------------------------------------


@BYTEWISE
def test_quit_reply_closes(bytewise: bool) -> None:
    session = ready(bytewise=bytewise)
    assert session.send(Quit()) == b"QUIT\r\n"
    assert state(session) is S.QUIT
    event = feed_one(session, b"221 2.0.0 bye\r\n", bytewise=bytewise)
    assert event.command == Quit()
    assert event.reply.code == 221
    assert_dead(session)


def test_421_after_the_session_closed_is_not_a_local_error() -> None:
    # The caller did nothing wrong: a 421 the server sends after QUIT's reply is
    # either reported as the server's 421 or as a remote protocol error.
    session = ready()
    session.send(Quit())
    session.receive_data(b"221 bye\r\n421 4.3.2 late\r\n")
    assert isinstance(session.next_event(), ReplyEvent)
    try:
        event = session.next_event()
    except LocalProtocolError:
        pytest.fail("a reply from the server was reported as the caller's mistake")
    except RemoteProtocolError:
        pass
    else:
        assert isinstance(event, ReplyEvent)
        assert event.reply.code == 421
    assert state(session) is S.CLOSED


@pytest.mark.parametrize("where", ["hello", "mail"])
def test_quit_from_other_states(where: str) -> None:
    session = greeted()
    if where == "mail":
        session.send(Ehlo("client.example"))
        feed_one(session, ehlo_reply())
        session.send(Mail("a@example.com"))
        feed_one(session, b"250 ok\r\n")
    session.send(Quit())
    feed_one(session, b"221 bye\r\n")
    assert state(session) is S.CLOSED


def test_any_reply_to_quit_closes() -> None:
    session = ready()
    session.send(Quit())
    feed_one(session, b"500 what\r\n")
    assert state(session) is S.CLOSED


ALL_COMMANDS: list[Command] = [
    Ehlo("client.example"),
    Helo("client.example"),
    StartTLS(),
    Auth("PLAIN", b"\0u\0p"),
    AuthResponse(b"x"),
    Mail("a@example.com"),
    Rcpt("b@example.com"),
    Data(),
    Rset(),
    Noop(),
    Quit(),
]


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=[c.name for c in ALL_COMMANDS])
def test_after_close_every_send_fails(command: Command) -> None:
    session = ready("PIPELINING", "STARTTLS", "AUTH PLAIN")
    session.close()
    assert state(session) is S.CLOSED
    with pytest.raises(LocalProtocolError):
        session.send(command)
    with pytest.raises(LocalProtocolError):
        session.send_data(b"x")
    with pytest.raises(LocalProtocolError):
        session.send_data(b".\r\n", end=True)
    with pytest.raises(LocalProtocolError):
        session.start_tls()


def test_close_is_idempotent_and_drops_pending() -> None:
    session = ready("PIPELINING")
    session.send(Mail("a@example.com"))
    session.send(Rcpt("b@example.com"))
    session.close()
    session.close()
    assert state(session) is S.CLOSED
    assert session.pending == 0
    assert session.awaiting is None


def test_close_before_the_greeting() -> None:
    session = SMTPSession()
    session.close()
    assert_dead(session)


def _after_injection(session: SMTPSession) -> None:
    session.send(StartTLS())
    session.receive_data(b"220 go\r\nX\r\n")
    with pytest.raises(StartTLSInjectionError):
        session.next_event()


def _after_malformed_reply(session: SMTPSession) -> None:
    session.send(Noop())
    session.receive_data(b"250-a\r\n550 b\r\n")
    with pytest.raises(RemoteProtocolError):
        session.next_event()


def _after_oversized_line(session: SMTPSession) -> None:
    session.send(Noop())
    with pytest.raises(RemoteProtocolError):
        session.receive_data(b"250 " + b"x" * 100_000)


def _after_unsolicited_bytes(session: SMTPSession) -> None:
    session.receive_data(b"2")
    with pytest.raises(RemoteProtocolError):
        session.send(Noop())


def _after_close_with_buffered_reply(session: SMTPSession) -> None:
    session.receive_data(b"250 late\r\n")
    session.close()


FAILURES: dict[str, Callable[[SMTPSession], None]] = {
    "STARTTLS injection": _after_injection,
    "malformed reply": _after_malformed_reply,
    "oversized line": _after_oversized_line,
    "unsolicited bytes": _after_unsolicited_bytes,
    "close() with bytes buffered": _after_close_with_buffered_reply,
}


@pytest.mark.parametrize("name", list(FAILURES))
def test_after_a_failure_every_call_is_a_local_error(name: str) -> None:
    # Once closed, the session refuses every send as a local error (the session
    # is closed), however many received bytes are still buffered, and it does
    # not report the same remote failure again.
    session = ready("STARTTLS")
    FAILURES[name](session)
    assert state(session) is S.CLOSED
    for command in (Quit(), Noop(), Mail("a@example.com")):
        with pytest.raises(LocalProtocolError):
            session.send(command)
    with pytest.raises(LocalProtocolError):
        session.send_data(b".\r\n", end=True)
    with pytest.raises(LocalProtocolError):
        session.start_tls()


# -- AUTH ------------------------------------------------------------------------------


@BYTEWISE
def test_auth_with_initial_response_succeeds(bytewise: bool) -> None:
    session = ready("AUTH PLAIN", bytewise=bytewise)
    assert session.authenticated is False
    session.send(Auth("PLAIN", b"\0user\0pass"))
    assert state(session) is S.AUTH
    event = feed_one(session, b"235 2.7.0 Authentication successful\r\n", bytewise=bytewise)
    assert event.reply.code == 235
    assert state(session) is S.READY
    assert session.authenticated is True


@BYTEWISE
def test_auth_challenge_exchange(bytewise: bool) -> None:
    session = ready("AUTH LOGIN", bytewise=bytewise)
    session.send(Auth("LOGIN"))
    assert feed_one(session, b"334 VXNlcm5hbWU6\r\n", bytewise=bytewise).reply.code == 334
    assert state(session) is S.AUTH
    assert session.send(AuthResponse(b"user")) == b"dXNlcg==\r\n"
    feed_one(session, b"334 UGFzc3dvcmQ6\r\n", bytewise=bytewise)
    session.send(AuthResponse(b"pass"))
    feed_one(session, b"235 ok\r\n", bytewise=bytewise)
    assert state(session) is S.READY
    assert session.authenticated is True


@BYTEWISE
def test_auth_failure(bytewise: bool) -> None:
    session = ready("AUTH PLAIN", bytewise=bytewise)
    session.send(Auth("PLAIN", b"\0user\0wrong"))
    event = feed_one(session, b"535 5.7.8 bad credentials\r\n", bytewise=bytewise)
    assert event.reply.code == 535
    assert state(session) is S.READY
    assert session.authenticated is False


def test_auth_cancel() -> None:
    session = ready("AUTH LOGIN")
    session.send(Auth("LOGIN"))
    feed_one(session, b"334 VXNlcm5hbWU6\r\n")
    assert session.send(AuthResponse(cancel=True)) == b"*\r\n"
    feed_one(session, b"501 5.7.0 cancelled\r\n")
    assert state(session) is S.READY
    assert session.authenticated is False


def test_no_auth_response_while_a_reply_is_owed() -> None:
    session = ready("AUTH LOGIN", "PIPELINING")
    session.send(Auth("LOGIN"))
    with pytest.raises(LocalProtocolError):
        session.send(AuthResponse(b"user"))


def test_no_transaction_during_auth() -> None:
    session = ready("AUTH LOGIN")
    session.send(Auth("LOGIN"))
    feed_one(session, b"334 VXNlcm5hbWU6\r\n")
    with pytest.raises(LocalProtocolError):
        session.send(Mail("a@example.com"))


# -- malformed input -------------------------------------------------------------------


@BYTEWISE
@pytest.mark.parametrize(
    "data",
    [b"hello\r\n", b"250-a\r\n550 b\r\n", b"099 x\r\n", b"25\r\n", b"250\tok\r\n"],
)
def test_malformed_reply_closes(data: bytes, bytewise: bool) -> None:
    session = ready()
    session.send(Noop())
    with pytest.raises(RemoteProtocolError):
        feed(session, data, bytewise=bytewise)
    assert_dead(session)


def test_malformed_greeting_closes() -> None:
    session = SMTPSession()
    with pytest.raises(RemoteProtocolError):
        feed(session, b"SSH-2.0-OpenSSH_9.6\r\n")
    assert_dead(session)


def test_oversized_line_closes_in_receive_data() -> None:
    session = ready()
    session.send(Noop())
    with pytest.raises(RemoteProtocolError):
        session.receive_data(b"250 " + b"x" * 100_000)
    assert_dead(session)


# -- a whole conversation, whole and byte by byte --------------------------------------


def _conversation(bytewise: bool) -> list[tuple[Command | None, Reply]]:
    session = SMTPSession()
    log: list[ReplyEvent] = []
    log += feed(session, b"220-mx.example\r\n220 ESMTP\r\n", bytewise=bytewise)
    session.send(Ehlo("client.example"))
    log += feed(session, ehlo_reply("PIPELINING", "ENHANCEDSTATUSCODES"), bytewise=bytewise)
    for command in (Mail("a@example.com"), Rcpt("b@example.com"), Data()):
        session.send(command)
    log += feed(session, b"250 2.1.0 ok\r\n250 2.1.5 ok\n354 go\r\n", bytewise=bytewise)
    session.send_data(b"..x\r\n.\r\n", end=True)
    session.send(Quit())
    log += feed(session, b"250 2.0.0 queued\r\n221 2.0.0 bye\r\n", bytewise=bytewise)
    assert state(session) is S.CLOSED
    return [(event.command, event.reply) for event in log]


def test_conversation_same_whole_and_byte_by_byte() -> None:
    whole = _conversation(False)
    assert whole == _conversation(True)
    assert [reply.code for _command, reply in whole] == [220, 250, 250, 250, 354, 250, 221]
    assert whole[-2][1].enhanced_status == "2.0.0"
    assert isinstance(whole[-2][0], EndOfData)

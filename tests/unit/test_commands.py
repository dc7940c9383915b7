"""Command argument validation and the exact bytes of every command."""

from __future__ import annotations

import base64

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from anyio_smtp import InvalidArgumentError
from anyio_smtp._protocol.commands import (
    MAX_DOMAIN_LENGTH,
    MAX_LOCAL_PART_LENGTH,
    MAX_PATH_LENGTH,
    Auth,
    AuthResponse,
    Data,
    Ehlo,
    Helo,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTLS,
    check_credential,
    check_domain,
    check_esmtp_parameter,
    check_hostname,
    check_mailbox,
    idna_mailbox,
    needs_smtputf8,
)
from anyio_smtp._protocol.params import envelope_smtputf8

# -- check_mailbox ---------------------------------------------------------------------

VALID = [
    "user@example.com",
    "first.last@sub.example.co.uk",
    "user+tag@example.com",
    "user-name_1!#$%&'*/=?^`{|}~@example.com",
    '"john doe"@example.com',
    '"quoted\\"quote"@example.com',
    "user@[192.0.2.1]",
    "user@[IPv6:2001:db8::1]",
    "jöran@example.com",
    "user@bücher.example",
    "用户@例子.广告",
    "a@b",
]


@pytest.mark.parametrize("address", VALID)
@pytest.mark.parametrize("role", ["sender", "recipient"])
def test_valid_mailboxes(address: str, role: str) -> None:
    assert check_mailbox(address, role=role) == address


@pytest.mark.parametrize("address", ["postmaster", "Postmaster", "POSTMASTER"])
def test_postmaster_without_domain_only_as_recipient(address: str) -> None:
    assert check_mailbox(address, role="recipient") == address
    with pytest.raises(InvalidArgumentError):
        check_mailbox(address, role="sender")


def test_null_sender_only_with_allow_null() -> None:
    assert check_mailbox("", role="sender", allow_null=True) == ""
    with pytest.raises(InvalidArgumentError):
        check_mailbox("", role="sender")
    with pytest.raises(InvalidArgumentError):
        check_mailbox("", role="recipient")


@pytest.mark.parametrize(
    "address",
    [
        "user@example.com\r\nRCPT TO:<evil@example.com>",
        "user\r@example.com",
        "user\n@example.com",
        "user@example.com\n",
        "user\x00@example.com",
        "user@exa\x00mple.com",
        "us\ter@example.com",
        "user\x01@example.com",
        "user\x1b@example.com",
        "user\x1f@example.com",
        "user\x7f@example.com",
        "user\x85@example.com",
        "user\x9f@example.com",
        '"a\rb"@example.com',
        '"a\x00b"@example.com',
        '"a\x85b"@example.com',
    ],
)
def test_control_characters_refused(address: str) -> None:
    with pytest.raises(InvalidArgumentError):
        check_mailbox(address, role="recipient")
    with pytest.raises(InvalidArgumentError):
        check_mailbox(address, role="sender", allow_null=True)


@pytest.mark.parametrize(
    "address",
    [
        "<user@example.com>",
        "user@example.com>",
        "<user@example.com",
        "Bob <bob@example.com>",
        "user<@example.com",
        "user@example.com> SIZE=1",
    ],
)
def test_angle_brackets_and_display_names_refused(address: str) -> None:
    with pytest.raises(InvalidArgumentError, match="bare address"):
        check_mailbox(address, role="recipient")


@pytest.mark.parametrize(
    "address",
    [
        "john doe@example.com",
        "user@exa mple.com",
        " user@example.com",
        "user@example.com ",
        "user @example.com",
        "user@ example.com",
        "user\u00a0@example.com",
        "user\u2028@example.com",
        "user@example.com SIZE=100",
    ],
)
def test_whitespace_outside_quotes_refused(address: str) -> None:
    with pytest.raises(InvalidArgumentError):
        check_mailbox(address, role="recipient")


@pytest.mark.parametrize(
    "address",
    [
        "userexample.com",  # missing @
        "@example.com",  # missing local part
        "user@",  # missing domain
        "@",
        "a@b@c",
        ".user@example.com",
        "user.@example.com",
        "us..er@example.com",
        "user@.example.com",
        "user@example..com",
        "user@example.com.",
        '"unterminated@example.com',
        'us"er@example.com',
        "us(er@example.com",
        "us,er@example.com",
        "us:er@example.com",
        "us;er@example.com",
        "us\\er@example.com",
        "us[er@example.com",
        "user@[192.0.2.1",
        "user@[1 2]",
        "user@[]",
        "user@ex[am]ple.com",
    ],
)
def test_malformed_addresses_refused(address: str) -> None:
    with pytest.raises(InvalidArgumentError):
        check_mailbox(address, role="recipient")


def test_non_str_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        check_mailbox(b"user@example.com", role="sender")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        check_mailbox(None, role="recipient", allow_null=True)  # type: ignore[arg-type]


def test_lone_surrogate_refused_with_invalid_argument_error() -> None:
    # A str holding a lone surrogate can not be encoded as UTF-8 at all.
    with pytest.raises(InvalidArgumentError):
        check_mailbox("us\udcffer@example.com", role="recipient")


def test_error_names_the_role() -> None:
    with pytest.raises(InvalidArgumentError, match="sender"):
        check_mailbox("nope", role="sender")
    with pytest.raises(InvalidArgumentError, match="recipient"):
        check_mailbox("nope", role="recipient")


def test_constants() -> None:
    assert MAX_LOCAL_PART_LENGTH == 64
    assert MAX_DOMAIN_LENGTH == 255
    assert MAX_PATH_LENGTH == 254


def test_local_part_length_limit() -> None:
    at_limit = "a" * MAX_LOCAL_PART_LENGTH + "@example.com"
    assert check_mailbox(at_limit, role="recipient") == at_limit
    with pytest.raises(InvalidArgumentError, match="local part"):
        check_mailbox("a" * (MAX_LOCAL_PART_LENGTH + 1) + "@example.com", role="recipient")


def test_local_part_length_counts_octets() -> None:
    at_limit = "é" * (MAX_LOCAL_PART_LENGTH // 2) + "@example.com"  # 64 octets, 32 characters
    assert check_mailbox(at_limit, role="recipient") == at_limit
    over = "é" * (MAX_LOCAL_PART_LENGTH // 2) + "a@example.com"  # 65 octets, 33 characters
    with pytest.raises(InvalidArgumentError, match="local part"):
        check_mailbox(over, role="recipient")
    quoted_over = '"' + "€" * 21 + '"@example.com'  # 65 octets, 23 characters
    with pytest.raises(InvalidArgumentError, match="local part"):
        check_mailbox(quoted_over, role="recipient")


def _domain(octets: int) -> str:
    """A syntactically valid domain of exactly ``octets`` ASCII octets."""
    labels = []
    remaining = octets
    while remaining > 0:
        size = min(63, remaining)
        if remaining - size == 1:  # a trailing "." plus an empty label is not valid
            size -= 1
        labels.append("d" * size)
        remaining -= size + 1
    domain = ".".join(labels)
    assert len(domain) == octets
    return domain


def test_path_length_limit() -> None:
    local = "a" * MAX_LOCAL_PART_LENGTH
    domain_room = MAX_PATH_LENGTH - len(local) - 1
    at_limit = f"{local}@{_domain(domain_room)}"
    assert len(at_limit) == MAX_PATH_LENGTH
    assert check_mailbox(at_limit, role="recipient") == at_limit
    over = f"{local}@{_domain(domain_room + 1)}"
    with pytest.raises(InvalidArgumentError, match=str(MAX_PATH_LENGTH)):
        check_mailbox(over, role="recipient")


def test_path_length_counts_octets() -> None:
    local = "é" * (MAX_LOCAL_PART_LENGTH // 2)  # 64 octets
    domain_room = MAX_PATH_LENGTH - 64 - 1
    at_limit = f"{local}@{_domain(domain_room)}"
    assert len(at_limit.encode()) == MAX_PATH_LENGTH
    assert check_mailbox(at_limit, role="recipient") == at_limit
    over = f"{local}@{_domain(domain_room + 1)}"
    assert len(over) < MAX_PATH_LENGTH  # in characters it would fit
    with pytest.raises(InvalidArgumentError):
        check_mailbox(over, role="recipient")


def test_idn_domain_length_counts_octets() -> None:
    # 126 "ü" are 252 octets: with "a@" that is 254 octets, the most a path may have.
    labels = ["ü" * 42] * 3
    domain = ".".join(labels)  # 3 * 84 + 2 = 254 octets
    assert len(domain.encode()) == 254
    with pytest.raises(InvalidArgumentError):
        check_mailbox("a@" + domain, role="recipient")
    shorter = ".".join(["ü" * 42, "ü" * 42, "ü" * 41])  # 252 octets
    assert check_mailbox("a@" + shorter, role="recipient") == "a@" + shorter


# -- check_domain ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "domain", ["client.example.com", "localhost", "[192.0.2.1]", "[IPv6:::1]", "a"]
)
def test_valid_ehlo_domains(domain: str) -> None:
    assert check_domain(domain) == domain


@pytest.mark.parametrize(
    "domain",
    [
        "",
        "client example",
        "client\r\nMAIL FROM:<x@y>",
        "client\n",
        "client\x00",
        "client\t",
        "client\x7f",
        "bücher.example",
        "client\u00a0",
    ],
)
def test_invalid_ehlo_domains(domain: str) -> None:
    with pytest.raises(InvalidArgumentError):
        check_domain(domain)


def test_ehlo_domain_length_limit() -> None:
    at_limit = _domain(MAX_DOMAIN_LENGTH)
    assert check_domain(at_limit) == at_limit
    with pytest.raises(InvalidArgumentError, match=str(MAX_DOMAIN_LENGTH)):
        check_domain(_domain(MAX_DOMAIN_LENGTH + 1))


def test_ehlo_domain_must_be_str() -> None:
    with pytest.raises(InvalidArgumentError):
        check_domain(b"client.example")  # type: ignore[arg-type]


# -- check_esmtp_parameter -------------------------------------------------------------


@pytest.mark.parametrize(
    "parameter",
    [
        "SMTPUTF8",
        "SIZE=1000",
        "BODY=8BITMIME",
        "RET=HDRS",
        "ENVID=QQ314159",
        "NOTIFY=SUCCESS,FAILURE",
        "ORCPT=rfc822;user+2Bx@example.com",
        "X-CUSTOM=a!b~c",
        "ENVID=ünïcode",
        "8BIT",
        "size=10",
    ],
)
def test_valid_esmtp_parameters(parameter: str) -> None:
    assert check_esmtp_parameter(parameter) == parameter


@pytest.mark.parametrize(
    "parameter",
    [
        "",
        "=1000",
        "-SIZE=1",
        "SI ZE=1",
        "SIZE =1",
        "SIZE= 1",
        "SIZE=1 2",
        "SIZE=1\t",
        "SIZE=",
        "A=b=c",
        "SIZE=1\r\nRSET",
        "SIZE=1\n",
        "SIZE\r\n",
        "X=\x00",
        "X=\x01",
        "X=\x7f",
        "X=\x85",
        "X_Y=1",
        "KÉY=1",
        "X=a\u00a0b",
    ],
)
def test_invalid_esmtp_parameters(parameter: str) -> None:
    with pytest.raises(InvalidArgumentError):
        check_esmtp_parameter(parameter)


def test_esmtp_parameter_must_be_str() -> None:
    with pytest.raises(InvalidArgumentError):
        check_esmtp_parameter(b"SIZE=1")  # type: ignore[arg-type]


# -- check_credential ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["user", "pässwörd", "p a s s", "x" * 1000, "用户"])
def test_valid_credentials(value: str) -> None:
    assert check_credential(value, "password") == value


@pytest.mark.parametrize(
    "secret",
    [
        "hunter2\r\nQUIT",
        "hunter2\n",
        "hunter2\r",
        "hunter2\x00admin",
        "hunter2\x1b",
        "hunter2\x7f",
        "hunter2\x85",
        "\thunter2",
    ],
)
def test_control_characters_in_credentials_refused_without_the_value(secret: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        check_credential(secret, "password")
    text = str(info.value)
    assert "password" in text
    assert "hunter2" not in text
    assert secret not in text
    assert repr(secret) not in text
    assert "hunter2" not in repr(info.value)
    assert all("hunter2" not in str(arg) for arg in info.value.args)


def test_empty_credential_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="user name"):
        check_credential("", "user name")


def test_credential_must_be_str() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        check_credential(b"hunter2", "password")  # type: ignore[arg-type]
    assert "hunter2" not in str(info.value)


# -- command bytes ---------------------------------------------------------------------


def test_ehlo_and_helo_bytes() -> None:
    assert Ehlo("client.example").encode() == b"EHLO client.example\r\n"
    assert Helo("client.example").encode() == b"HELO client.example\r\n"
    assert Ehlo("[192.0.2.1]").encode() == b"EHLO [192.0.2.1]\r\n"


def test_ehlo_validates_its_domain() -> None:
    with pytest.raises(InvalidArgumentError):
        Ehlo("client\r\nQUIT")
    with pytest.raises(InvalidArgumentError):
        Helo("")


def test_mail_bytes() -> None:
    assert Mail("a@example.com").encode() == b"MAIL FROM:<a@example.com>\r\n"
    assert Mail("").encode() == b"MAIL FROM:<>\r\n"
    assert (
        Mail("a@example.com", ("SIZE=1000", "BODY=8BITMIME")).encode()
        == b"MAIL FROM:<a@example.com> SIZE=1000 BODY=8BITMIME\r\n"
    )


def test_mail_with_utf8_address() -> None:
    assert (
        Mail("jöran@bücher.example", ("SMTPUTF8",)).encode()
        == "MAIL FROM:<jöran@bücher.example> SMTPUTF8\r\n".encode()
    )


def test_rcpt_bytes() -> None:
    assert Rcpt("b@example.com").encode() == b"RCPT TO:<b@example.com>\r\n"
    assert Rcpt("postmaster").encode() == b"RCPT TO:<postmaster>\r\n"
    assert (
        Rcpt("b@example.com", ("NOTIFY=NEVER",)).encode()
        == b"RCPT TO:<b@example.com> NOTIFY=NEVER\r\n"
    )
    assert Rcpt("用户@例子.广告").encode() == "RCPT TO:<用户@例子.广告>\r\n".encode()


# -- internationalised domains without SMTPUTF8 (A-labels, RFC 5890) --------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("user@bücher.example", "user@xn--bcher-kva.example"),
        ("user@Bücher.Example", "user@xn--bcher-kva.example"),
        # UTS 46: an ideographic full stop separates labels too.
        ("user@bücher。example", "user@xn--bcher-kva.example"),
        # IDNA 2008 keeps "ß" (the stdlib's IDNA 2003 codec would give "strasse").
        ("user@straße.example", "user@xn--strae-oqa.example"),
        ("a.b+c@mail.例子.测试", "a.b+c@mail.xn--fsqu00a.xn--0zwm56d"),
        ('"quoted user"@bücher.example', '"quoted user"@xn--bcher-kva.example'),
        # ASCII addresses are left exactly as they are.
        ("User@Example.COM", "User@Example.COM"),
        ("user@my_host.example", "user@my_host.example"),
        ("user@[192.0.2.1]", "user@[192.0.2.1]"),
        ("postmaster", "postmaster"),
        ("", ""),
    ],
)
def test_idna_mailbox_sends_a_labels(address: str, expected: str) -> None:
    assert idna_mailbox(address, role="recipient") == expected


@pytest.mark.parametrize(
    "address",
    [
        "user@☃.example",  # a symbol is no letter of any label (IDNA 2008)
        "user@-bü.example",
        "user@bü-.example",
        "user@a\u200db.example",  # a joiner out of context
        "user@" + "ü" * 64 + ".example",  # label over 63 octets once encoded
        "user@[ü]",
        "jörg@example.com",  # the local part has no ASCII form: SMTPUTF8 only
    ],
)
def test_idna_mailbox_refuses_what_has_no_ascii_form(address: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        idna_mailbox(address, role="recipient")
    assert "recipient" in str(caught.value)


def test_host_names_get_the_same_a_labels() -> None:
    assert check_hostname("mail.bücher.example") == "mail.xn--bcher-kva.example"
    assert check_hostname("straße.example") == "xn--strae-oqa.example"  # IDNA 2008, not "strasse"
    assert check_hostname("Mail.Example.COM") == "Mail.Example.COM"
    with pytest.raises(InvalidArgumentError):
        check_hostname("☃.example")


def test_only_a_non_ascii_local_part_needs_smtputf8() -> None:
    assert needs_smtputf8("jörg@example.com")
    assert needs_smtputf8("用户@例子.测试")
    assert not needs_smtputf8("user@bücher.example")
    assert not needs_smtputf8("user@example.com")
    assert not needs_smtputf8("postmaster")
    assert not needs_smtputf8("")


def test_envelope_smtputf8_decides_and_checks_before_any_io() -> None:
    assert not envelope_smtputf8("me@bücher.example", ["you@bücher.example"])
    assert not envelope_smtputf8("", ["you@example.com"])
    assert envelope_smtputf8("me@bücher.example", ["jörg@bücher.example"])
    assert envelope_smtputf8("jörg@bücher.example", ["you@example.com"])
    assert envelope_smtputf8("me@example.com", ["you@example.com"], content=True)
    # A domain that must go in A-labels and has none is refused ...
    with pytest.raises(InvalidArgumentError, match="recipient"):
        envelope_smtputf8("me@example.com", ["you@☃.example"])
    with pytest.raises(InvalidArgumentError, match="sender"):
        envelope_smtputf8("me@☃.example", ["you@example.com"])
    # ... but with SMTPUTF8 the server gets it as it is, and judges it.
    assert envelope_smtputf8("jörg@example.com", ["you@☃.example"])


def test_mail_and_rcpt_with_idna_send_a_labels() -> None:
    mail = Mail("me@bücher.example", ("BODY=8BITMIME",), idna=True)
    assert mail.encode() == b"MAIL FROM:<me@xn--bcher-kva.example> BODY=8BITMIME\r\n"
    assert mail.log_line() == "MAIL FROM:<me@xn--bcher-kva.example> BODY=8BITMIME"
    assert mail.sender == "me@bücher.example"
    rcpt = Rcpt("user@bücher.example", ("NOTIFY=NEVER",), idna=True)
    assert rcpt.encode() == b"RCPT TO:<user@xn--bcher-kva.example> NOTIFY=NEVER\r\n"
    assert rcpt.recipient == "user@bücher.example"
    assert Rcpt("b@example.com", idna=True).encode() == b"RCPT TO:<b@example.com>\r\n"
    assert Mail("", idna=True).encode() == b"MAIL FROM:<>\r\n"
    with pytest.raises(InvalidArgumentError):
        Rcpt("user@☃.example", idna=True)
    with pytest.raises(InvalidArgumentError):
        Mail("jörg@example.com", idna=True)


def test_mail_and_rcpt_validate_their_arguments() -> None:
    with pytest.raises(InvalidArgumentError):
        Mail("a@example.com>\r\nRCPT TO:<b@example.com")
    with pytest.raises(InvalidArgumentError):
        Mail("a@example.com", ("SIZE=1\r\nRSET",))
    with pytest.raises(InvalidArgumentError):
        Rcpt("")
    with pytest.raises(InvalidArgumentError):
        Rcpt("b@example.com", ("NOTIFY=A B",))


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (Data(), b"DATA\r\n"),
        (Rset(), b"RSET\r\n"),
        (Noop(), b"NOOP\r\n"),
        (Quit(), b"QUIT\r\n"),
        (StartTLS(), b"STARTTLS\r\n"),
    ],
)
def test_simple_command_bytes(
    command: Data | Rset | Noop | Quit | StartTLS, expected: bytes
) -> None:
    assert command.encode() == expected
    assert command.log_line() == expected.decode().rstrip("\r\n")


def test_auth_without_initial_response() -> None:
    assert Auth("LOGIN").encode() == b"AUTH LOGIN\r\n"
    assert Auth("LOGIN").log_line() == "AUTH LOGIN"


def test_auth_with_initial_response() -> None:
    payload = b"\0user\0hunter2"
    encoded = base64.b64encode(payload)
    assert Auth("PLAIN", payload).encode() == b"AUTH PLAIN " + encoded + b"\r\n"


def test_auth_empty_initial_response_is_equals_sign() -> None:
    assert Auth("EXTERNAL", b"").encode() == b"AUTH EXTERNAL =\r\n"


@pytest.mark.parametrize("mechanism", ["", "PLAIN LOGIN", "PLAIN\r\n", "plain", "X" * 21, "P=A"])
def test_auth_mechanism_name_validated(mechanism: str) -> None:
    with pytest.raises(InvalidArgumentError):
        Auth(mechanism)


def test_auth_mechanism_names_allowed() -> None:
    assert Auth("CRAM-MD5").encode() == b"AUTH CRAM-MD5\r\n"
    assert Auth("SCRAM-SHA-256").encode() == b"AUTH SCRAM-SHA-256\r\n"
    assert Auth("X" * 20).encode() == b"AUTH " + b"X" * 20 + b"\r\n"


def _assert_hidden(text: str, secret: bytes) -> None:
    assert secret.decode() not in text
    assert base64.b64encode(secret).decode() not in text
    assert "hunter2" not in text


def test_auth_log_line_and_repr_redact_the_payload() -> None:
    secret = b"\0user\0hunter2"
    command = Auth("PLAIN", secret)
    assert command.log_line() == "AUTH PLAIN [redacted]"
    for text in (command.log_line(), repr(command), str(command)):
        _assert_hidden(text, secret)
    assert "PLAIN" in repr(command)


def test_auth_response_bytes_and_redaction() -> None:
    secret = b"hunter2"
    response = AuthResponse(secret)
    assert response.encode() == base64.b64encode(secret) + b"\r\n"
    assert response.log_line() == "[redacted]"
    for text in (response.log_line(), repr(response), str(response)):
        _assert_hidden(text, secret)


def test_auth_response_empty() -> None:
    assert AuthResponse(b"").encode() == b"\r\n"


def test_auth_response_cancel() -> None:
    cancel = AuthResponse(b"hunter2", cancel=True)
    assert cancel.encode() == b"*\r\n"
    assert cancel.log_line() == "*"
    _assert_hidden(repr(cancel), b"hunter2")


def test_mail_log_line_is_the_command() -> None:
    assert Mail("a@example.com", ("SIZE=5",)).log_line() == "MAIL FROM:<a@example.com> SIZE=5"


def test_commands_are_frozen() -> None:
    mail = Mail("a@example.com")
    with pytest.raises(AttributeError):
        mail.sender = "b@example.com\r\nRSET"  # type: ignore[misc]


def test_command_names_never_carry_arguments() -> None:
    assert Mail("a@example.com").name == "MAIL FROM"
    assert Rcpt("b@example.com").name == "RCPT TO"
    assert Auth("PLAIN", b"\0u\0hunter2").name == "AUTH"
    assert AuthResponse(b"hunter2").name == "AUTH response"


# -- property: no injection through addresses ------------------------------------------

_ADDRESS = st.one_of(
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40),
    st.text(max_size=40),
    st.tuples(
        st.text(max_size=10),
        st.sampled_from(
            ["\r", "\n", "\r\n", "\x00", ">", "<", "@", " ", '"', "\x85", ".", "\udcff"]
        ),
        st.text(max_size=10),
        st.sampled_from(["@example.com", "@[1.2.3.4]", "", "@"]),
    ).map("".join),
)


@settings(max_examples=200, deadline=None)
@given(_ADDRESS)
@example("a@example.com>\r\nRCPT TO:<b@example.com")
@example("us\udcffer@example.com")
def test_mail_and_rcpt_lines_are_single_lines(address: str) -> None:
    for role, build in (("sender", Mail), ("recipient", Rcpt)):
        try:
            check_mailbox(address, role=role, allow_null=role == "sender")
        except InvalidArgumentError:
            with pytest.raises(InvalidArgumentError):
                build(address)
            continue
        line = build(address).encode()
        assert line.count(b"\r\n") == 1
        assert line.endswith(b"\r\n")
        assert b"\r" not in line[:-2]
        assert b"\n" not in line[:-2]
        assert b"\x00" not in line
        assert line.count(b"<") == 1
        assert line.count(b">") == 1

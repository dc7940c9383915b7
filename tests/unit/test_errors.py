"""The public surface and the exception tree."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import anyio_smtp
import anyio_smtp.auth
from anyio_smtp import (
    AuthenticationError,
    ConnectError,
    DataRefusedError,
    DeliveryUnknownError,
    ExtensionNotSupportedError,
    InsecureAuthError,
    InvalidArgumentError,
    LocalProtocolError,
    MessageTooLargeError,
    ProtocolError,
    RecipientsRefusedError,
    RemoteProtocolError,
    Reply,
    ReplyError,
    SenderRefusedError,
    ServerDisconnectedError,
    ServiceUnavailableError,
    SessionClosedError,
    SMTPError,
    SMTPTimeoutError,
    StartTLSInjectionError,
    TLSCertificateError,
    TLSError,
)
from anyio_smtp import _errors as errors_module

# -- __all__ ---------------------------------------------------------------------------


def _public_exceptions() -> list[type[BaseException]]:
    return [
        value
        for name, value in vars(errors_module).items()
        if not name.startswith("_")
        and inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == errors_module.__name__
    ]


def test_there_are_exceptions_to_check() -> None:
    assert len(_public_exceptions()) >= 20


@pytest.mark.parametrize("cls", _public_exceptions(), ids=lambda cls: cls.__name__)
def test_every_exception_is_exported(cls: type[BaseException]) -> None:
    assert cls.__name__ in anyio_smtp.__all__
    assert getattr(anyio_smtp, cls.__name__) is cls
    assert cls.__name__ in errors_module.__all__


def test_errors_module_all_lists_only_its_exceptions() -> None:
    assert sorted(errors_module.__all__) == sorted(cls.__name__ for cls in _public_exceptions())


def _isort_key(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 ("isort-style") keeps: CONSTANTS, then Classes, then the rest.
    if len(name) > 1 and name.isupper():
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    return group, name


@pytest.mark.parametrize("module", [anyio_smtp, anyio_smtp.auth], ids=lambda m: m.__name__)
def test_all_is_an_honest_sorted_tuple(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert isinstance(names, tuple)
    assert all(isinstance(name, str) for name in names)
    assert len(set(names)) == len(names)
    assert list(names) == sorted(names, key=_isort_key)
    for name in names:
        assert hasattr(module, name), name


def _names_bound_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    body = list(tree.body)
    for node in body:
        if isinstance(node, ast.If):
            # ``if TYPE_CHECKING:`` (names for type checkers, loaded on first use)
            # and its ``else``: what is bound there is bound in the module too.
            body += node.body + node.orelse
        elif isinstance(node, ast.ImportFrom | ast.Import):
            for alias in node.names:
                names.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names.add(target.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
    return names


@pytest.mark.parametrize("module", [anyio_smtp, anyio_smtp.auth], ids=lambda m: m.__name__)
def test_every_public_name_of_init_is_in_all(module: object) -> None:
    path = Path(module.__file__)  # type: ignore[attr-defined]
    bound = _names_bound_in(path)
    # TYPE_CHECKING is a device for type checkers, not part of the API.
    public = {
        n for n in bound if not n.startswith("_") and n not in {"annotations", "TYPE_CHECKING"}
    }
    assert public, "no names found in __init__.py"
    missing = public - set(module.__all__)  # type: ignore[attr-defined]
    assert not missing


def test_version_exported() -> None:
    assert "__version__" in anyio_smtp.__all__
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", anyio_smtp.__version__)


# -- the hierarchy ---------------------------------------------------------------------


@pytest.mark.parametrize("cls", _public_exceptions(), ids=lambda cls: cls.__name__)
def test_everything_is_an_smtp_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, SMTPError)


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (ConnectError, (ConnectionError,)),
        (ServerDisconnectedError, (ConnectionError,)),
        (ServiceUnavailableError, (ConnectionError, ReplyError)),
        (SMTPTimeoutError, (TimeoutError,)),
        (InvalidArgumentError, (ValueError,)),
        (LocalProtocolError, (ProtocolError,)),
        (RemoteProtocolError, (ProtocolError,)),
        (StartTLSInjectionError, (RemoteProtocolError,)),
        (TLSCertificateError, (TLSError,)),
        (SenderRefusedError, (ReplyError,)),
        (RecipientsRefusedError, (ReplyError,)),
        (DataRefusedError, (ReplyError,)),
        (AuthenticationError, (ReplyError,)),
    ],
)
def test_hierarchy(cls: type[BaseException], bases: tuple[type[BaseException], ...]) -> None:
    for base in bases:
        assert issubclass(cls, base)


def test_builtin_bases_only_where_meant() -> None:
    assert not issubclass(SMTPError, (ConnectionError, TimeoutError, ValueError))
    assert not issubclass(ReplyError, ConnectionError)
    assert not issubclass(RemoteProtocolError, ValueError)
    assert not issubclass(TLSError, ConnectionError)


# -- reply errors ----------------------------------------------------------------------

R421 = Reply(421, ("4.3.2 Service shutting down",), "4.3.2")
R450 = Reply(450, ("4.2.1 Mailbox busy",), "4.2.1")
R535 = Reply(535, ("5.7.8 Authentication credentials invalid",), "5.7.8")
R550 = Reply(550, ("5.1.1 No such user",), "5.1.1")
R552 = Reply(552, ("5.3.4 Message too big",), "5.3.4")


def _reply_errors(reply: Reply) -> list[ReplyError]:
    return [
        ReplyError("EHLO", reply),
        SenderRefusedError("alice@example.com", reply),
        RecipientsRefusedError({"bob@example.org": reply}),
        DataRefusedError("DATA", reply),
        DataRefusedError("end of data", reply),
        AuthenticationError("PLAIN", reply),
    ]


@pytest.mark.parametrize("reply", [R450, R550])
def test_reply_errors_carry_the_reply(reply: Reply) -> None:
    for error in _reply_errors(reply):
        assert error.reply is reply
        assert error.is_transient is reply.is_transient
        assert error.is_permanent is reply.is_permanent
        assert error.is_transient is not error.is_permanent


def test_reply_error_commands() -> None:
    assert SenderRefusedError("a@example.com", R550).command == "MAIL FROM"
    assert SenderRefusedError("a@example.com", R550).sender == "a@example.com"
    assert RecipientsRefusedError({"b@example.org": R550}).command == "RCPT TO"
    assert DataRefusedError("DATA", R550).command == "DATA"
    assert AuthenticationError("PLAIN", R535).command == "AUTH PLAIN"
    assert AuthenticationError("PLAIN", R535).mechanism == "PLAIN"


def test_recipients_refused_transient_only_when_all_are() -> None:
    all_transient = RecipientsRefusedError({"a@x.org": R450, "b@x.org": R421})
    assert all_transient.is_transient is True
    assert all_transient.is_permanent is False
    mixed = RecipientsRefusedError({"a@x.org": R450, "b@x.org": R550})
    assert mixed.is_transient is False
    assert mixed.is_permanent is False
    all_permanent = RecipientsRefusedError({"a@x.org": R550, "b@x.org": R552})
    assert all_permanent.is_transient is False
    assert all_permanent.is_permanent is True


def test_recipients_refused_keeps_every_refusal() -> None:
    rejected = {"a@x.org": R450, "b@x.org": R550}
    error = RecipientsRefusedError(rejected)
    assert dict(error.rejected) == rejected
    assert error.reply is R450
    rejected["c@x.org"] = R552
    assert "c@x.org" not in error.rejected
    with pytest.raises(TypeError):
        error.rejected["d@x.org"] = R550  # type: ignore[index]


def test_service_unavailable() -> None:
    prompted = ServiceUnavailableError("MAIL FROM", R421)
    assert prompted.reply is R421
    assert prompted.is_transient is True
    assert "MAIL FROM" in str(prompted)
    assert "421" in str(prompted)
    unprompted = ServiceUnavailableError(None, R421)
    assert "421" in str(unprompted)
    assert "unprompted" in str(unprompted)


def _reads_as_a_sentence(text: str) -> None:
    assert text
    assert text == text.strip()
    assert "\n" not in text
    assert " " in text
    assert "None" not in text


@pytest.mark.parametrize(
    ("error", "names"),
    [
        (ReplyError("EHLO", R550), ("EHLO",)),
        (ReplyError("greeting", R421, "the server refused the session"), ("session",)),
        (
            SenderRefusedError("alice@example.com", R550),
            ("sender", "alice@example.com", "MAIL FROM"),
        ),
        (SenderRefusedError("", R550), ("sender", "<>", "MAIL FROM")),
        (RecipientsRefusedError({"bob@example.org": R550}), ("recipient", "RCPT TO")),
        (
            RecipientsRefusedError({"a@x.org": R550, "b@x.org": R450}),
            ("recipients", "2"),
        ),
        (DataRefusedError("DATA", R552), ("DATA",)),
        (DataRefusedError("end of data", R552), ("message",)),
        (AuthenticationError("CRAM-MD5", R535), ("AUTH CRAM-MD5", "authentication")),
        (ServiceUnavailableError("RCPT TO", R421), ("RCPT TO",)),
    ],
)
def test_reply_error_text(error: ReplyError, names: tuple[str, ...]) -> None:
    text = str(error)
    _reads_as_a_sentence(text)
    assert str(error.reply.code) in text
    for name in names:
        assert name in text


def test_recipients_refused_text_agrees_with_the_count() -> None:
    one = str(RecipientsRefusedError({"bob@example.org": Reply(550, ("no",))}))
    assert (
        one == "the recipient <bob@example.org> was refused at RCPT TO: the server replied 550 no"
    )
    two = str(RecipientsRefusedError({"a@x.org": R550, "b@x.org": R550}))
    assert "2 recipients were refused" in two


def test_recipients_refused_text_names_each_recipient_with_its_reply() -> None:
    error = RecipientsRefusedError(
        {
            "a@x.org": Reply(550, ("5.1.1 no such user",), "5.1.1"),
            "b@x.org": Reply(450, ("4.2.1 mailbox busy", "4.2.1 try later"), "4.2.1"),
        }
    )
    assert str(error) == (
        "all 2 recipients were refused at RCPT TO: "
        "<a@x.org> 550 5.1.1 no such user; <b@x.org> 450 4.2.1 mailbox busy 4.2.1 try later"
    )
    assert error.reply is error.rejected["a@x.org"]


def test_recipients_refused_text_is_bounded() -> None:
    many = {f"user{i}@x.org": Reply(550, ("no such user " + "x" * 500,)) for i in range(1000)}
    text = str(RecipientsRefusedError(many))
    _reads_as_a_sentence(text)
    assert text.startswith("all 1000 recipients were refused at RCPT TO: <user0@x.org> 550 ")
    assert "<user4@x.org>" in text
    assert "<user5@x.org>" not in text
    assert text.endswith("; and 995 more")
    assert len(text) < 1000
    assert len(RecipientsRefusedError(many).rejected) == 1000


def test_delivery_unknown_text_names_the_recipients() -> None:
    cause = ServerDisconnectedError("the server closed the connection")
    error = DeliveryUnknownError(("a@x.org", "b@x.org"), cause)
    text = str(error)
    _reads_as_a_sentence(text)
    assert "may or may not have been delivered to <a@x.org>, <b@x.org>" in text
    assert "the server closed the connection" in text
    many = DeliveryUnknownError(tuple(f"u{i}@x.org" for i in range(40)), cause)
    assert "<u4@x.org>, and 35 more" in str(many)
    assert "<u5@x.org>" not in str(many)
    assert many.recipients == tuple(f"u{i}@x.org" for i in range(40))


def test_authentication_error_detail() -> None:
    error = AuthenticationError("LOGIN", R535, "the server asked for a third answer")
    assert "third answer" in str(error)
    assert "535" in str(error)


@pytest.mark.parametrize(
    "error",
    [
        ExtensionNotSupportedError("STARTTLS"),
        ExtensionNotSupportedError("8BITMIME", "the message contains 8-bit data"),
        MessageTooLargeError(2000, 1000),
        InsecureAuthError(),
        StartTLSInjectionError(7),
        SessionClosedError("the session is closed"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_other_errors_read_as_sentences(error: SMTPError) -> None:
    _reads_as_a_sentence(str(error))


def test_data_carrying_errors() -> None:
    extension = ExtensionNotSupportedError("SMTPUTF8")
    assert extension.name == "SMTPUTF8"
    assert "SMTPUTF8" in str(extension)
    assert extension.is_permanent is True
    assert extension.is_transient is False
    too_large = MessageTooLargeError(2000, 1000)
    assert (too_large.size, too_large.limit) == (2000, 1000)
    assert "2000" in str(too_large)
    assert "1000" in str(too_large)
    assert too_large.is_permanent is True
    injection = StartTLSInjectionError(7)
    assert injection.byte_count == 7
    assert "7" in str(injection)


@pytest.mark.parametrize(
    ("error", "transient", "permanent"),
    [
        (ConnectError("refused"), True, False),
        (ServerDisconnectedError("gone"), True, False),
        (SMTPTimeoutError("slow"), True, False),
        (TLSError("handshake failed"), False, False),
        (InvalidArgumentError("bad"), False, False),
        (LocalProtocolError("not now"), False, False),
        (RemoteProtocolError("garbage"), False, False),
        (SessionClosedError("closed"), False, False),
        (InsecureAuthError(), False, False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_transient_and_permanent_flags(error: SMTPError, transient: bool, permanent: bool) -> None:
    assert error.is_transient is transient
    assert error.is_permanent is permanent


@pytest.mark.parametrize(
    ("text", "queue_id"),
    [
        ("2.0.0 Ok: queued as 4ABC123XYZ", "4ABC123XYZ"),
        ("OK id=1tXabc-000A12-3B", "1tXabc-000A12-3B"),
        (
            "Message Queued (8F1C1E0E-3A6B-4B2C-9D1E-0A1B2C3D4E5F.1)",
            "8F1C1E0E-3A6B-4B2C-9D1E-0A1B2C3D4E5F.1",
        ),
        ("2.0.0 Ok", None),
    ],
)
def test_queue_ids_of_common_servers(text: str, queue_id: str | None) -> None:
    from anyio_smtp._result import queue_id_of

    assert queue_id_of(Reply(250, (text,))) == queue_id

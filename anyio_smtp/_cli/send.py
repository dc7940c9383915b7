"""``send``: compose or read a message and send it, or walk a session step by step."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from ._common import (
    EXIT_CODES_EPILOG,
    CLIError,
    ExitCode,
    Transcript,
    add_common_options,
    add_mode_options,
    client_ssl_context,
    dump_json,
    outcome_name,
    parse_target,
    reply_json,
)

if TYPE_CHECKING:
    import ssl

    from .. import SMTPClient
    from ..audit import AuditEvent

__all__ = ("register",)

#: ``--quit-after`` steps, in session order.
STEPS = ("connect", "greeting", "ehlo", "tls", "auth", "mail", "rcpt")
DEFAULT_PASSWORD_ENV = "ANYIO_SMTP_PASSWORD"  # noqa: S105 (a variable's name)
#: Messages at least this large get a progress bar (when stderr is a terminal).
PROGRESS_THRESHOLD = 1 << 20
_CHUNK = 64 * 1024


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "send",
        help="send a message (composed from options, or a whole .eml file) and report "
        "the outcome per recipient",
        description="Send one message through an SMTP or LMTP server. Certificates are "
        "always verified; use --ca-file to trust a private CA.",
        epilog=EXIT_CODES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_argument_group("server")
    target = where.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--server",
        metavar="HOST[:PORT]",
        help="the server: a host name or address, IPv6 in brackets ([::1]:587); "
        "the port defaults to 25 (24 with --lmtp)",
    )
    target.add_argument(
        "--socket", metavar="PATH", help="a Unix socket to speak SMTP (or LMTP) over"
    )
    where.add_argument(
        "--lmtp", action="store_true", help="speak LMTP (RFC 2033): one reply per recipient"
    )
    add_mode_options(
        where.add_mutually_exclusive_group(),
        starttls="require STARTTLS before anything else (default on ports 25 and 587)",
        tls="implicit TLS from the first byte (default on port 465)",
        plain="no TLS at all (default on other ports and on a Unix socket)",
    )
    where.add_argument(
        "--ca-file",
        metavar="FILE",
        help="trust only the CA certificates in this PEM file (default: the system's "
        "trust store); certificates are always verified",
    )
    where.add_argument(
        "--tls-hostname",
        metavar="NAME",
        help="the name the server's certificate must carry (default: the host)",
    )
    where.add_argument(
        "--ehlo", metavar="NAME", help="the name to give in EHLO (default: this host's name)"
    )

    auth = parser.add_argument_group("authentication")
    auth.add_argument("--auth", metavar="USER", help="log in as USER after TLS")
    auth.add_argument(
        "--password-file",
        metavar="FILE",
        help="read the password from the first line of FILE",
    )
    auth.add_argument(
        "--password-env",
        metavar="NAME",
        help=f"read the password from the environment variable NAME (default: "
        f"{DEFAULT_PASSWORD_ENV} when it is set; otherwise a prompt when stdin is a terminal)",
    )
    auth.add_argument(
        "--mechanism",
        metavar="NAME",
        help="the SASL mechanism, e.g. PLAIN or SCRAM-SHA-256 (default: the strongest offered)",
    )

    message = parser.add_argument_group("envelope and message")
    message.add_argument(
        "--from",
        dest="sender",
        metavar="ADDRESS",
        help="the sender (MAIL FROM and the From header); '' for the null sender",
    )
    for flag, what in (("--to", "To"), ("--cc", "Cc"), ("--bcc", "no header")):
        message.add_argument(
            flag,
            action="append",
            default=[],
            metavar="ADDRESS",
            help=f"a recipient ({what}); repeat for more",
        )
    message.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an extra header field; repeat for more (with --data: put in front of the message)",
    )
    message.add_argument("--subject", help="the Subject (default: 'test' and the date)")
    message.add_argument(
        "--body", metavar="TEXT|@FILE", help="the text of the message, or @FILE to read it"
    )
    message.add_argument(
        "--attach",
        action="append",
        default=[],
        metavar="FILE",
        help="attach a file (its MIME type guessed from its name); repeat for more",
    )
    message.add_argument(
        "--data",
        metavar="FILE",
        help="send this whole message (an .eml file, '-' for stdin) as it is; "
        "--to/--cc/--bcc are then only the envelope",
    )

    options = parser.add_argument_group("delivery options")
    options.add_argument(
        "--dsn-notify",
        metavar="WHEN",
        help="DSN NOTIFY for every recipient: NEVER, or a comma list of SUCCESS,FAILURE,DELAY",
    )
    options.add_argument(
        "--dsn-ret",
        choices=("FULL", "HDRS"),
        help="DSN RET: return the whole message or its headers in a failure report",
    )
    options.add_argument("--dsn-envid", metavar="ID", help="DSN ENVID: an envelope identifier")
    options.add_argument(
        "--require-tls",
        action="store_true",
        help="REQUIRETLS (RFC 8689): refused unless the session is TLS and the server offers it",
    )
    options.add_argument(
        "--transfer",
        choices=("auto", "data", "bdat"),
        default="auto",
        help="how the message goes: BDAT when offered (auto, the default), DATA, or BDAT",
    )
    options.add_argument(
        "--quit-after",
        choices=STEPS,
        metavar="STEP",
        help="stop after this step and say QUIT, sending no message: "
        + ", ".join(STEPS)
        + " (mail sends MAIL FROM; rcpt also RCPT TO for each recipient, and the "
        "outcome is theirs: sent, partly-refused or refused)",
    )
    add_common_options(parser)
    parser.set_defaults(run=run)


# -- the message ----------------------------------------------------------------------


def _check_header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if (
        not colon
        or not name
        or any(not (33 <= ord(c) <= 126) or c == ":" for c in name)
        or any(c in "\r\n\0" for c in value)
    ):
        raise CLIError(f"bad --header {text!r}: write it as 'Name: value' on one line")
    return name, value


def _read(path: str, what: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise CLIError(f"can not read {what} {path}: {error.strerror or error}") from error


def build_message(args: argparse.Namespace) -> bytes:
    """The message's bytes: ``--data`` as given (with ``--header`` in front), or composed."""
    headers = [_check_header(text) for text in args.header]
    if args.data is not None:
        if args.subject is not None or args.body is not None or args.attach:
            raise CLIError("--data sends a whole message: --subject, --body and --attach conflict")
        head = b"".join(f"{name}: {value}\r\n".encode() for name, value in headers)
        return head + _read(args.data, "the message")

    import email.policy
    import email.utils
    import mimetypes
    from email.message import EmailMessage

    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = args.sender or "<>"
    if args.to:
        message["To"] = ", ".join(args.to)
    if args.cc:
        message["Cc"] = ", ".join(args.cc)
    message["Subject"] = (
        args.subject if args.subject is not None else f"test {email.utils.formatdate()}"
    )
    message["Date"] = email.utils.formatdate(localtime=True)
    domain = (args.sender or "").rpartition("@")[2] or "anyio-smtp.invalid"
    message["Message-ID"] = email.utils.make_msgid(domain=domain)
    try:
        for name, value in headers:
            message[name] = value
    except (ValueError, TypeError) as error:
        raise CLIError(f"bad --header: {error}") from error
    if args.body is None:
        body = "This is a test message sent by anyio-smtp.\n"
    elif args.body.startswith("@"):
        raw = _read(args.body[1:], "the body")
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise CLIError(f"the body {args.body[1:]} is not UTF-8 text") from error
    else:
        body = args.body
    message.set_content(body)
    for path in args.attach:
        content = _read(path, "the attachment")
        kind, encoding = mimetypes.guess_type(path)
        if kind is None or encoding is not None:
            kind = "application/octet-stream"
        maintype, _, subtype = kind.partition("/")
        message.add_attachment(
            content, maintype=maintype, subtype=subtype, filename=os.path.basename(path)
        )
    return message.as_bytes()


class Progress:
    """Bytes sent and rate on a terminal's one line; nothing when disabled."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.sent = 0
        self.started = time.monotonic()
        self._shown = 0.0

    def advance(self, count: int) -> None:
        self.sent += count
        now = time.monotonic()
        if self.enabled and (now - self._shown >= 0.1 or self.sent >= self.total):
            self._shown = now
            rate = self.sent / max(now - self.started, 1e-6)
            width = 30
            filled = width * self.sent // max(self.total, 1)
            sys.stderr.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] "
                f"{_size(self.sent)} / {_size(self.total)}  {_size(int(rate))}/s "
            )
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self.sent:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


async def _chunks(data: bytes, progress: Progress) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), _CHUNK):
        chunk = bytes(view[start : start + _CHUNK])
        yield chunk
        progress.advance(len(chunk))


# -- the session ----------------------------------------------------------------------


def read_password(args: argparse.Namespace) -> str | None:
    """The password for ``--auth``, never from the command line."""
    if args.auth is None:
        if args.password_file or args.password_env or args.mechanism:
            raise CLIError("--password-file, --password-env and --mechanism need --auth USER")
        return None
    if args.password_file is not None:
        try:
            with open(args.password_file, encoding="utf-8") as file:
                return file.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as error:
            raise CLIError(f"can not read the password file {args.password_file}") from error
    name = args.password_env or (
        DEFAULT_PASSWORD_ENV if DEFAULT_PASSWORD_ENV in os.environ else None
    )
    if name is not None:
        if name not in os.environ:
            raise CLIError(f"the environment variable {name} is not set")
        return os.environ[name]
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"password for {args.auth}: ")
    raise CLIError(
        "--auth needs a password: --password-file FILE, --password-env NAME, "
        f"{DEFAULT_PASSWORD_ENV} in the environment, or a terminal to prompt on"
    )


@dataclass
class Session:
    """What the audit hook and the steps learn, for the summary and the JSON."""

    greeting: str | None = None
    tls_version: str | None = None
    tls_cipher: str | None = None
    authenticated_as: str | None = None
    mechanism: str | None = None
    rcpt_replies: dict[str, Any] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)

    def audit(self, event: AuditEvent) -> None:
        from .. import audit

        if isinstance(event, audit.GreetingReceived):
            self.greeting = event.reply.message
        elif isinstance(event, audit.TLSStarted):
            self.tls_version, self.tls_cipher = event.version, event.cipher
        elif isinstance(event, audit.Authenticated):
            self.mechanism = event.mechanism
        elif isinstance(event, audit.RecipientAccepted | audit.RecipientRejected):
            self.rcpt_replies[event.recipient] = event.reply


@dataclass(frozen=True)
class Endpoint:
    host: str | None
    port: int | None
    socket: str | None
    mode: str
    tls_hostname: str | None

    @property
    def label(self) -> str:
        if self.socket is not None:
            return self.socket
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def endpoint(args: argparse.Namespace) -> Endpoint:
    if args.socket is not None:
        if args.mode == "tls":
            raise CLIError("--tls is not available over a Unix socket (use --starttls)")
        return Endpoint(None, None, args.socket, args.mode or "plain", args.tls_hostname)
    target = parse_target(args.server)
    port = target.port or (24 if args.lmtp else 25)
    default = "tls" if port == 465 else "starttls" if port in (25, 587) else "plain"
    mode = args.mode or ("plain" if args.lmtp and args.mode is None else default)
    return Endpoint(target.host, port, None, mode, args.tls_hostname)


async def open_stream(where: Endpoint, ctx: ssl.SSLContext, timeout: float) -> Any:
    """The raw connection (``--quit-after connect`` and ``greeting``)."""
    with anyio.fail_after(timeout):
        if where.socket is not None:
            return await anyio.connect_unix(where.socket)
        assert where.host is not None
        assert where.port is not None
        if where.mode != "tls":
            return await anyio.connect_tcp(where.host, where.port)
        return await anyio.connect_tcp(
            where.host, where.port, ssl_context=ctx, tls_hostname=where.tls_hostname or where.host
        )


async def read_greeting(stream: Any, timeout: float) -> str:
    """Read the greeting by hand, say QUIT, and return the greeting's lines."""
    buffer = b""
    lines: list[str] = []
    with anyio.fail_after(timeout):
        while True:
            while b"\n" not in buffer:
                chunk = await stream.receive()
                buffer += chunk
                if len(buffer) > 65536:
                    raise CLIError("the greeting is too long", ExitCode.CONNECTION)
            line, _, buffer = buffer.partition(b"\n")
            text = line.rstrip(b"\r").decode("utf-8", "replace")
            lines.append(text)
            if text[3:4] != "-":
                break
        await stream.send(b"QUIT\r\n")
    return "\n".join(lines)


async def open_session(
    where: Endpoint,
    ctx: ssl.SSLContext,
    *,
    lmtp: bool,
    ehlo: str | None,
    timeout: float,
    audit: Callable[[AuditEvent], None],
) -> SMTPClient:
    """A session that has said EHLO (LHLO), over TLS already with ``--tls``."""
    import anyio_smtp

    common: dict[str, Any] = {"ehlo_domain": ehlo, "timeout": timeout, "audit": audit}
    if where.socket is not None:
        with anyio.fail_after(timeout):
            stream = await anyio.connect_unix(where.socket)
        return await anyio_smtp.connect_stream(
            stream, tls_hostname=where.tls_hostname, lmtp=lmtp, **common
        )
    assert where.host is not None
    assert where.port is not None
    tls = where.mode == "tls"
    if lmtp:
        return await anyio_smtp.connect_lmtp(
            where.host,
            where.port,
            tls=tls,
            ssl_context=ctx,
            tls_hostname=where.tls_hostname,
            **common,
        )
    return await anyio_smtp.connect(
        where.host,
        where.port,
        tls=tls,
        ssl_context=ctx,
        tls_hostname=where.tls_hostname,
        **common,
    )


def classify(error: BaseException) -> ExitCode:
    """The exit status for a failure of the library."""
    import anyio_smtp as smtp

    if isinstance(error, smtp.DeliveryUnknownError):
        return ExitCode.DELIVERY_UNKNOWN
    if isinstance(error, smtp.ServiceUnavailableError):
        return ExitCode.TRANSIENT
    if isinstance(error, smtp.RecipientsRefusedError):
        if all(reply.is_transient for reply in error.rejected.values()):
            return ExitCode.TRANSIENT
        return ExitCode.REFUSED
    if isinstance(error, smtp.ReplyError):
        return ExitCode.TRANSIENT if error.is_transient else ExitCode.REFUSED
    if isinstance(error, smtp.ExtensionNotSupportedError):
        return ExitCode.CONNECTION if error.name == "STARTTLS" else ExitCode.REFUSED
    if isinstance(error, smtp.MessageTooLargeError):
        return ExitCode.REFUSED
    if isinstance(error, smtp.InsecureAuthError | smtp.InvalidArgumentError | CLIError):
        return error.code if isinstance(error, CLIError) else ExitCode.USAGE
    return ExitCode.CONNECTION


@dataclass
class Outcome:
    code: ExitCode
    summary: list[str]
    data: dict[str, Any]


async def send(args: argparse.Namespace, password: str | None, message: bytes | None) -> Outcome:
    import anyio_smtp

    where = endpoint(args)
    ctx = client_ssl_context(args.ca_file)
    session = Session()
    recipients = [*args.to, *args.cc, *args.bcc]
    started = time.monotonic()
    data: dict[str, Any] = {"server": where.label, "mode": where.mode, "lmtp": args.lmtp}
    result: anyio_smtp.SendResult | None = None
    error: BaseException | None = None
    progress: Progress | None = None

    def lap(step: str) -> None:
        session.steps.append(step)
        session.timing[step] = round(time.monotonic() - started, 6)

    try:
        if args.quit_after in ("connect", "greeting"):
            stream = await open_stream(where, ctx, args.timeout)
            try:
                lap("connect")
                if args.quit_after == "greeting":
                    session.greeting = await read_greeting(stream, args.timeout)
                    lap("greeting")
            finally:
                await anyio.aclose_forcefully(stream)
        else:
            smtp = await open_session(
                where,
                ctx,
                lmtp=args.lmtp,
                ehlo=args.ehlo,
                timeout=args.timeout,
                audit=session.audit,
            )
            async with smtp:
                if smtp.tls:
                    lap("tls")
                lap("ehlo")
                if where.mode == "starttls" and args.quit_after != "ehlo":
                    await smtp.starttls(ssl_context=ctx, tls_hostname=where.tls_hostname)
                    lap("tls")
                if args.quit_after not in ("ehlo", "tls"):
                    if args.auth is not None:
                        assert password is not None
                        await smtp.login(args.auth, password, mechanism=args.mechanism)
                        session.authenticated_as = args.auth
                        lap("auth")
                    if args.quit_after in ("mail", "rcpt"):
                        await smtp.mail(args.sender)
                        lap("mail")
                    if args.quit_after == "rcpt":
                        for address in recipients:
                            try:
                                session.rcpt_replies[address] = await smtp.rcpt(address)
                            except anyio_smtp.RecipientsRefusedError as refused:
                                session.rcpt_replies.update(refused.rejected)
                        lap("rcpt")
                    if args.quit_after is None:
                        assert message is not None
                        progress = Progress(
                            len(message),
                            sys.stderr.isatty() and len(message) >= PROGRESS_THRESHOLD,
                        )
                        result = await smtp.send_mail(
                            args.sender,
                            recipients,
                            _chunks(message, progress),
                            size=len(message),
                            transfer=args.transfer,
                            dsn=_dsn(args),
                            require_tls=args.require_tls,
                        )
                        lap("data")
                with contextlib.suppress(anyio_smtp.SMTPError, OSError):
                    # The outcome is known by now: a QUIT that fails does not change it.
                    await smtp.quit()
    except (anyio_smtp.SMTPError, OSError, TimeoutError, anyio.BrokenResourceError) as caught:
        error = caught
    except CLIError as caught:
        error = caught
    finally:
        if progress is not None:
            progress.done()
    data["elapsed_s"] = round(time.monotonic() - started, 6)
    data["timing"] = session.timing
    data["steps"] = session.steps
    data["greeting"] = session.greeting
    data["tls"] = (
        None
        if session.tls_version is None
        else {"version": session.tls_version, "cipher": session.tls_cipher}
    )
    data["authenticated_as"] = session.authenticated_as
    data["mechanism"] = session.mechanism
    listed = recipients if args.quit_after in (None, "rcpt") else []
    return _outcome(args, listed, session, data, result, error)


def _outcome(
    args: argparse.Namespace,
    recipients: list[str],
    session: Session,
    data: dict[str, Any],
    result: Any,
    error: BaseException | None,
) -> Outcome:
    import anyio_smtp

    summary: list[str] = []
    per: list[dict[str, Any]] = []
    rejected: dict[str, Any] = {}
    if isinstance(error, anyio_smtp.RecipientsRefusedError):
        rejected = dict(error.rejected)
    elif result is not None:
        rejected = dict(result.rejected)
    for address in recipients:
        reply = None
        accepted = False
        if result is not None and address in result.accepted:
            accepted = True
            reply = result.per_recipient.get(address) or session.rcpt_replies.get(address)
        elif address in rejected:
            reply = rejected[address]
        else:
            reply = session.rcpt_replies.get(address)
            # --quit-after rcpt: the RCPT reply is the outcome.
            accepted = result is None and reply is not None and reply.is_positive
        if result is not None and address in result.per_recipient:
            accepted = result.per_recipient[address].is_positive
        per.append(
            {
                "address": address,
                "accepted": accepted,
                "reply": None if reply is None else reply_json(reply),
            }
        )
        if result is not None or rejected or args.quit_after == "rcpt":
            word = "accepted" if accepted else "REFUSED "
            text = "" if reply is None else f"  {reply.code} {reply.message.splitlines()[0]}"
            summary.append(f"  {word} <{address}>{text}")
    if error is not None:
        code = classify(error)
        data["error"] = {"type": type(error).__name__, "message": str(error)}
        summary.insert(0, f"{outcome_name(code)}: {error}")
    elif result is None and per:
        # --quit-after rcpt: as a message would be, by its recipients' replies.
        count = sum(1 for item in per if item["accepted"])
        code = ExitCode.SENT if count == len(per) else ExitCode.PARTLY_REFUSED
        if count == 0:
            code = ExitCode.REFUSED
        summary.insert(
            0,
            f"{outcome_name(code)}: {count} of {len(per)} recipients accepted at RCPT; "
            f"stopped after rcpt ({data['server']})",
        )
    elif result is None:
        code = ExitCode.SENT
        summary.insert(0, f"ok: stopped after {args.quit_after} ({data['server']})")
    else:
        count = sum(1 for item in per if item["accepted"])
        code = ExitCode.SENT if count == len(per) else ExitCode.PARTLY_REFUSED
        if count == 0:
            code = ExitCode.REFUSED
        data["reply"] = reply_json(result.reply)
        data["queue_id"] = result.queue_id
        queue = f" as {result.queue_id}" if result.queue_id else ""
        summary.insert(
            0,
            f"{outcome_name(code)}: {count} of {len(per)} recipients accepted{queue} "
            f"({result.reply.code} {result.reply.message.splitlines()[0]})",
        )
    if session.tls_version:
        summary.append(f"  tls: {session.tls_version} {session.tls_cipher or ''}".rstrip())
    data.setdefault("reply", None)
    data.setdefault("queue_id", None)
    data.setdefault("error", None)
    data = {"outcome": outcome_name(code), "exit_code": int(code), "recipients": per, **data}
    return Outcome(code, summary, data)


def _dsn(args: argparse.Namespace) -> Any:
    if args.dsn_notify is None and args.dsn_ret is None and args.dsn_envid is None:
        return None
    import anyio_smtp

    notify = None
    if args.dsn_notify is not None:
        notify = {word.strip().upper() for word in args.dsn_notify.split(",") if word.strip()}
    return anyio_smtp.DSN(ret=args.dsn_ret, envid=args.dsn_envid, notify=notify)


def check_steps(args: argparse.Namespace) -> None:
    """Refuse combinations that can not do what they say, before connecting."""
    where = endpoint(args)
    if args.quit_after == "auth" and args.auth is None:
        raise CLIError("--quit-after auth needs --auth USER")
    if args.quit_after == "tls" and where.mode == "plain":
        raise CLIError("--quit-after tls needs --starttls or --tls")
    if where.socket is not None and where.mode == "starttls" and where.tls_hostname is None:
        raise CLIError("--starttls over a Unix socket needs --tls-hostname NAME to verify")


def run(args: argparse.Namespace) -> int:
    try:
        if args.quit_after in (None, "mail", "rcpt") and args.sender is None:
            raise CLIError("--from is needed to send a message (--from '' for <>)")
        if args.quit_after in (None, "rcpt") and not (args.to or args.cc or args.bcc):
            raise CLIError("at least one --to, --cc or --bcc is needed")
        check_steps(args)
        password = read_password(args) if args.quit_after not in STEPS[:4] else None
        message = build_message(args) if args.quit_after is None else None
        with Transcript(args.verbose):
            outcome = anyio.run(send, args, password, message, backend=args.backend)
    except CLIError as error:
        outcome = Outcome(
            error.code,
            [f"{outcome_name(error.code)}: {error}"],
            {
                "outcome": outcome_name(error.code),
                "exit_code": int(error.code),
                "error": {"type": "UsageError", "message": str(error)},
            },
        )
    except Exception as error:
        import anyio_smtp

        if not isinstance(error, anyio_smtp.InvalidArgumentError):
            raise
        outcome = Outcome(
            ExitCode.USAGE,
            [f"usage-error: {error}"],
            {
                "outcome": "usage-error",
                "exit_code": int(ExitCode.USAGE),
                "error": {"type": type(error).__name__, "message": str(error)},
            },
        )
    if args.json:
        dump_json(outcome.data)
    else:
        for line in outcome.summary:
            print(line)
    return int(outcome.code)

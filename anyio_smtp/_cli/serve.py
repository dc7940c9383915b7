"""``serve``: a local mail catcher on SMTPTestServer, printing and storing what arrives."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from typing import TYPE_CHECKING, Any

import anyio

from ._common import CLIError, ExitCode

if TYPE_CHECKING:
    import mailbox

    from ..testing import ReceivedMessage

__all__ = ("register",)


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "serve",
        help="run a local mail catcher for developing an application: print each message "
        "received, and keep it in a Maildir or an mbox",
        description="Accept every message on a local port, print one line per message "
        "(sender, recipients, size, subject) and store it when asked. Ctrl-C stops it.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=1025,
        help="the port to listen on (default: 1025; 0 picks a free one, printed at start)",
    )
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument(
        "--starttls",
        action="store_true",
        help="offer STARTTLS with a throwaway certificate (needs trustme: "
        "pip install 'anyio_smtp[demo]'); the CA's file is printed at start",
    )
    tls.add_argument(
        "--tls",
        action="store_true",
        help="implicit TLS from the first byte, with a throwaway certificate (as --starttls)",
    )
    parser.add_argument(
        "--ca-out",
        metavar="FILE",
        help="with --starttls/--tls: where to write the throwaway CA certificate "
        "(default: a new file in the temporary folder)",
    )
    parser.add_argument(
        "--hostname", default="localhost", help="the server's name in its greeting and EHLO"
    )
    parser.add_argument(
        "--auth",
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="accept AUTH for this user (repeatable); for throwaway accounts only, as "
        "the command line is visible to other local users (see --auth-file)",
    )
    parser.add_argument(
        "--auth-file",
        metavar="FILE",
        help="accept AUTH for each USER:PASSWORD line of FILE (kept off the command line)",
    )
    store = parser.add_mutually_exclusive_group()
    store.add_argument(
        "--maildir", metavar="DIR", help="deliver each message to this Maildir (tmp/new/cur)"
    )
    store.add_argument("--mbox", metavar="FILE", help="append each message to this mbox file")
    parser.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="the event loop to run on (default: asyncio)",
    )
    parser.set_defaults(run=run)


def _tls_contexts(args: argparse.Namespace) -> tuple[Any, str | None]:
    if not (args.starttls or args.tls):
        return None, None
    from ..testing import ThrowawayCA

    names = {"localhost", "127.0.0.1", "::1", args.hostname}
    if args.host not in ("0.0.0.0", "::", ""):  # noqa: S104 (compared, not bound)
        names.add(args.host)
    try:
        ca = ThrowawayCA(*sorted(names))
    except ImportError:
        raise CLIError(
            "--starttls and --tls need trustme for the throwaway certificate: "
            "pip install 'anyio_smtp[demo]'"
        ) from None
    if args.ca_out is not None:
        path = args.ca_out
    else:
        handle, path = tempfile.mkstemp(prefix="anyio-smtp-ca-", suffix=".pem")
        os.close(handle)
    try:
        ca.write_ca_pem(path)
    except OSError as error:
        raise CLIError(f"can not write the CA certificate to {path}: {error}") from error
    return ca.server_context, path


def _users(args: argparse.Namespace) -> dict[str, str] | None:
    users: dict[str, str] = {}
    entries = [("--auth", item) for item in args.auth]
    if args.auth_file is not None:
        try:
            with open(args.auth_file, encoding="utf-8") as file:
                lines = file.read().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise CLIError(f"can not read the --auth-file {args.auth_file}") from error
        entries += [(args.auth_file, line) for line in lines if line.strip()]
    for origin, item in entries:
        user, colon, password = item.partition(":")
        if not colon or not user:
            # Never echo the entry: it may hold a password.
            raise CLIError(f"bad entry in {origin}: write each as USER:PASSWORD")
        users[user] = password
    return users or None


def _subject(data: bytes) -> str:
    import email
    import email.policy

    head = data.split(b"\r\n\r\n", 1)[0][:65536]
    message = email.message_from_bytes(head + b"\r\n\r\n", policy=email.policy.default)
    subject = message.get("Subject")
    return "" if subject is None else str(subject)


def _open_store(args: argparse.Namespace) -> mailbox.Mailbox[Any] | None:
    if args.maildir is None and args.mbox is None:
        return None
    import mailbox

    try:
        if args.maildir is not None:
            return mailbox.Maildir(args.maildir, create=True)
        return mailbox.mbox(args.mbox, create=True)
    except OSError as error:
        raise CLIError(f"can not open the mailbox: {error}") from error


def _store(box: mailbox.Mailbox[Any], received: ReceivedMessage) -> None:
    import mailbox

    if isinstance(box, mailbox.mbox):
        entry = mailbox.mboxMessage(received.data)
        entry.set_from(received.sender or "MAILER-DAEMON")
        box.lock()
        try:
            box.add(entry)
            box.flush()
        finally:
            box.unlock()
    else:
        box.add(received.data)


async def serve(args: argparse.Namespace, context: Any, ca_path: str | None) -> None:
    users = _users(args)
    box = _open_store(args)
    try:
        await _serve(args, context, ca_path, users, box)
    finally:
        if box is not None:
            box.close()


async def _serve(
    args: argparse.Namespace,
    context: Any,
    ca_path: str | None,
    users: dict[str, str] | None,
    box: mailbox.Mailbox[Any] | None,
) -> None:
    from ..testing import SMTPTestServer

    server = SMTPTestServer(
        args.hostname,
        starttls_context=context if args.starttls else None,
        tls_context=context if args.tls else None,
        users=users,
        auth_require_tls=context is not None,
    )
    try:
        listener = await anyio.create_tcp_listener(local_host=args.host, local_port=args.port)
    except OSError as error:
        raise CLIError(
            f"can not listen on {args.host}:{args.port}: {error.strerror or error}",
            ExitCode.CONNECTION,
        ) from error
    # The server's own listener is not used (it only binds 127.0.0.1 on a random port):
    # sessions come from this listener, each served by serve_stream() in the task group.
    async with listener, anyio.create_task_group() as group:
        from anyio.abc import SocketAttribute

        port = listener.extra(SocketAttribute.local_port)
        host = f"[{args.host}]" if ":" in args.host else args.host
        mode = "STARTTLS" if args.starttls else "TLS" if args.tls else "plain"
        print(f"listening on {host}:{port} ({mode})", flush=True)
        if ca_path is not None:
            print(f"CA certificate: {ca_path}", flush=True)
        if box is not None:
            print(f"storing messages in {args.maildir or args.mbox}", flush=True)
        group.start_soon(listener.serve, server.serve_stream)
        group.start_soon(_stop_on_signal, group.cancel_scope)
        seen = 0
        while True:
            messages = await server.wait_for_messages(seen + 1)
            for received in messages[seen:]:
                if box is not None:
                    _store(box, received)
                recipients = ", ".join(f"<{r}>" for r in received.recipients)
                print(
                    f"message {seen + 1}: from <{received.sender}> to {recipients}, "
                    f"{len(received.data)} bytes, subject {_subject(received.data)!r}",
                    flush=True,
                )
                seen += 1


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


def run(args: argparse.Namespace) -> int:
    try:
        if not 0 <= args.port < 65536:
            raise CLIError("--port must be from 0 to 65535")
        context, ca_path = _tls_contexts(args)
        anyio.run(serve, args, context, ca_path, backend=args.backend)
    except CLIError as error:
        print(f"anyio-smtp serve: {error}", file=sys.stderr)
        return int(error.code)
    except KeyboardInterrupt:
        pass
    print("stopped", flush=True)
    return 0

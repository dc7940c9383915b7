"""``anyio-smtp send`` in a subprocess against SMTPTestServer, on asyncio and on trio."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import anyio
import pytest

from anyio_smtp._cli._common import ExitCode
from anyio_smtp.testing import SMTPTestServer

from .helpers import (
    PASSWORD,
    USER,
    auth_server,
    cli,
    send_args,
    starttls_auth,
    tls_server_context,
    write_ca,
)


async def test_plain_send_with_attachment_json_and_transcript(
    tmp_path: Path, anyio_backend: str
) -> None:
    attachment = tmp_path / "report.csv"
    attachment.write_text("a,b\n1,2\n")
    async with SMTPTestServer() as server:
        run = await cli(
            *send_args(server.port, backend=anyio_backend),
            "--plain",
            "--cc",
            "cc@example.test",
            "--bcc",
            "hidden@example.test",
            "--subject",
            "Quarterly",
            "--header",
            "X-Marker: cli-test",
            "--body",
            "Hello there.",
            "--attach",
            str(attachment),
            "--json",
            "-v",
        )
    assert run.code == ExitCode.SENT, run
    result = run.json()
    assert result["outcome"] == "sent"
    assert result["exit_code"] == 0
    assert [r["address"] for r in result["recipients"]] == [
        "rcpt@example.test",
        "cc@example.test",
        "hidden@example.test",
    ]
    assert all(r["accepted"] and r["reply"]["code"] == 250 for r in result["recipients"])
    assert result["queue_id"] == server.messages[0].queue_id
    assert result["tls"] is None
    assert "data" in result["timing"]
    assert "C: EHLO" in run.stderr
    received = server.messages[0]
    assert received.recipients == ("rcpt@example.test", "cc@example.test", "hidden@example.test")
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert message["Subject"] == "Quarterly"
    assert message["X-Marker"] == "cli-test"
    assert message["Bcc"] is None
    assert b"hidden@example.test" not in received.data
    parts = list(message.iter_attachments())
    assert [part.get_filename() for part in parts] == ["report.csv"]
    assert parts[0].get_content_type() == "text/csv"
    assert parts[0].get_content() == "a,b\n1,2\n"


async def test_summary_on_stdout(anyio_backend: str) -> None:
    async with SMTPTestServer() as server:
        run = await cli(*send_args(server.port, backend=anyio_backend))
    assert run.code == ExitCode.SENT, run
    assert run.stdout.startswith("sent: 1 of 1 recipients accepted")
    assert "accepted <rcpt@example.test>  250" in run.stdout
    assert run.stderr == ""


async def test_starttls_auth_password_file(tmp_path: Path, anyio_backend: str) -> None:
    ca = write_ca(tmp_path / "ca.pem")
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    async with auth_server() as server:
        run = await cli(
            *send_args(server.port, backend=anyio_backend),
            "--starttls",
            "--ca-file",
            ca,
            "--tls-hostname",
            "localhost",
            "--auth",
            USER,
            "--password-file",
            str(password_file),
            "--mechanism",
            "PLAIN",
            "--json",
            "-v",
        )
    assert run.code == ExitCode.SENT, run
    result = run.json()
    assert result["tls"]["version"].startswith("TLSv1.")
    assert result["tls"]["cipher"]
    assert result["authenticated_as"] == USER
    assert result["mechanism"] == "PLAIN"
    assert server.messages[0].tls
    assert server.messages[0].authenticated_as == USER
    assert "C: EHLO" in run.stderr
    assert "C: STARTTLS" in run.stderr
    for text in (run.stdout, run.stderr):
        assert PASSWORD not in text
        assert "czNjcmV0" not in text  # base64 of the start of the password


@pytest.mark.parametrize("variable", ["ANYIO_SMTP_PASSWORD", "MY_SMTP_SECRET"])
async def test_auth_password_from_environment(
    tmp_path: Path, anyio_backend: str, variable: str
) -> None:
    ca = write_ca(tmp_path / "ca.pem")
    extra = [] if variable == "ANYIO_SMTP_PASSWORD" else ["--password-env", variable]
    async with auth_server() as server:
        run = await cli(
            *send_args(server.port, backend=anyio_backend),
            *starttls_auth(ca),
            *extra,
            "-v",
            env={variable: PASSWORD},
        )
    assert run.code == ExitCode.SENT, run
    assert server.messages[0].authenticated_as == USER
    assert PASSWORD not in run.stdout + run.stderr


async def test_auth_without_a_password_source_is_a_usage_error(anyio_backend: str) -> None:
    async with SMTPTestServer() as server:
        run = await cli(*send_args(server.port, backend=anyio_backend), "--auth", USER)
    assert run.code == ExitCode.USAGE, run
    assert "--password-file" in run.stdout
    assert server.sessions == 0


async def test_wrong_password_is_refused(tmp_path: Path, anyio_backend: str) -> None:
    ca = write_ca(tmp_path / "ca.pem")
    async with auth_server() as server:
        run = await cli(
            *send_args(server.port, backend=anyio_backend),
            *starttls_auth(ca),
            "--json",
            env={"ANYIO_SMTP_PASSWORD": "wrong"},
        )
    assert run.code == ExitCode.REFUSED, run
    assert run.json()["error"]["type"] == "AuthenticationError"
    assert "wrong" not in run.stdout
    assert server.messages == []


async def test_data_from_stdin(anyio_backend: str) -> None:
    message = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: piped\r\n\r\n.dot line\r\n"
    async with SMTPTestServer() as server:
        run = await cli(
            *send_args(server.port, backend=anyio_backend),
            "--plain",
            "--header",
            "X-Via: cli",
            "--data",
            "-",
            stdin=message,
        )
    assert run.code == ExitCode.SENT, run
    received = server.messages[0]
    assert received.recipients == ("rcpt@example.test",)
    assert received.sender == "sender@example.test"
    assert received.data == b"X-Via: cli\r\n" + message


async def test_all_recipients_refused(anyio_backend: str) -> None:
    async with SMTPTestServer() as server:
        server.reply("RCPT", "550 5.1.1 No such user")
        run = await cli(
            *send_args(server.port, "--to", "other@example.test", "--json", backend=anyio_backend)
        )
    assert run.code == ExitCode.REFUSED, run
    result = run.json()
    assert result["outcome"] == "refused"
    assert [r["accepted"] for r in result["recipients"]] == [False, False]
    assert result["recipients"][0]["reply"] == {
        "code": 550,
        "enhanced": "5.1.1",
        "text": "No such user",
    }
    assert server.messages == []


async def test_partly_refused(anyio_backend: str) -> None:
    async with SMTPTestServer() as server:
        server.reply("RCPT", "550 5.1.1 No such user", match="nobody@")
        run = await cli(
            *send_args(server.port, "--to", "nobody@example.test", "--json", backend=anyio_backend)
        )
    assert run.code == ExitCode.PARTLY_REFUSED, run
    result = run.json()
    assert result["outcome"] == "partly-refused"
    assert {r["address"]: r["accepted"] for r in result["recipients"]} == {
        "rcpt@example.test": True,
        "nobody@example.test": False,
    }
    assert server.messages[0].recipients == ("rcpt@example.test",)


@pytest.mark.parametrize("verb", ["RCPT", "MAIL", "DATA"])
async def test_transient_failure(anyio_backend: str, verb: str) -> None:
    async with SMTPTestServer() as server:
        server.reply(verb, "451 4.3.0 Try again later")
        run = await cli(*send_args(server.port, "--json", backend=anyio_backend))
    assert run.code == ExitCode.TRANSIENT, run
    assert run.json()["outcome"] == "transient-failure"


async def test_connection_refused(anyio_backend: str) -> None:
    async with SMTPTestServer() as server:
        port = server.port
    # The server's listener is closed: nothing listens on the port any more.
    run = await cli(*send_args(port, "--plain", "--json", backend=anyio_backend))
    assert run.code == ExitCode.CONNECTION, run
    assert run.json()["error"]["type"] == "ConnectError"


async def test_tls_failure_with_the_wrong_ca(tmp_path: Path, anyio_backend: str) -> None:
    import trustme

    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    async with SMTPTestServer(starttls_context=tls_server_context()) as server:
        run = await cli(
            *send_args(server.port, backend=anyio_backend), "--starttls", "--ca-file", str(other)
        )
    assert run.code == ExitCode.CONNECTION, run
    assert "certificate" in run.stdout
    assert server.messages == []
    assert "MAIL FROM:<sender@example.test>" not in server.client_lines()


async def test_starttls_not_offered_fails_closed(anyio_backend: str) -> None:
    async with SMTPTestServer() as server:
        run = await cli(*send_args(server.port, backend=anyio_backend), "--starttls")
    assert run.code == ExitCode.CONNECTION, run
    assert "STARTTLS" in run.stdout
    assert server.messages == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--server", "127.0.0.1:0"), "port"),
        (("--server", "::1"), "brackets"),
        (("--password", "x"), "unrecognized"),
        (("--header", "Bad header"), "Name: value"),
        (("--attach", "/nonexistent/file"), "can not read"),
    ],
)
async def test_usage_errors(anyio_backend: str, args: tuple[str, ...], message: str) -> None:
    run = await cli(
        "send",
        "--from",
        "a@example.test",
        "--to",
        "b@example.test",
        *(("--server", "127.0.0.1:2525") if args[0] != "--server" else ()),
        *args,
        "--backend",
        anyio_backend,
    )
    assert run.code == ExitCode.USAGE, run
    assert message in run.stdout + run.stderr


async def test_missing_from(anyio_backend: str) -> None:
    run = await cli("send", "--server", "127.0.0.1:2525", "--to", "b@example.test")
    assert run.code == ExitCode.USAGE
    assert "--from" in run.stdout


@pytest.mark.parametrize("step", ["connect", "greeting", "ehlo", "tls", "auth", "mail", "rcpt"])
async def test_quit_after(tmp_path: Path, anyio_backend: str, step: str) -> None:
    ca = write_ca(tmp_path / "ca.pem")
    async with auth_server() as server:
        run = await cli(
            "send",
            "--server",
            f"127.0.0.1:{server.port}",
            *starttls_auth(ca),
            "--from",
            "probe@example.test",
            "--to",
            "ada@example.org",
            "--quit-after",
            step,
            "--json",
            "--backend",
            anyio_backend,
            env={"ANYIO_SMTP_PASSWORD": PASSWORD},
        )
        await server.wait_until(lambda: server.sessions_closed == server.sessions == 1)
    assert run.code == ExitCode.SENT, run
    result = run.json()
    assert result["outcome"] == "sent"
    lines = [line.split(" ")[0] for line in server.client_lines()]
    expected = {
        "connect": [],
        "greeting": ["QUIT"],
        "ehlo": ["EHLO", "QUIT"],
        "tls": ["EHLO", "STARTTLS"],
        "auth": ["EHLO", "STARTTLS"],
        "mail": ["EHLO", "STARTTLS"],
        "rcpt": ["EHLO", "STARTTLS"],
    }[step]
    assert lines[: len(expected)] == expected
    assert ("MAIL" in lines) is (step in ("mail", "rcpt"))
    assert ("RCPT" in lines) is (step == "rcpt")
    assert "DATA" not in lines
    assert server.messages == []
    if step == "greeting":
        assert result["greeting"].startswith("220 ")
    if step in ("tls", "auth"):
        assert result["tls"] is not None
    assert (result["authenticated_as"] == USER) is (step in ("auth", "mail", "rcpt"))
    assert result["steps"][-1] == step if step != "ehlo" else result["steps"] == ["ehlo"]


async def test_unix_socket(tmp_path: Path, anyio_backend: str) -> None:
    path = tmp_path / "smtp.sock"
    async with (
        SMTPTestServer() as server,
        await anyio.create_unix_listener(path) as listener,
        anyio.create_task_group() as group,
    ):
        group.start_soon(listener.serve, server.serve_stream)
        run = await cli(
            "send",
            "--socket",
            str(path),
            "--from",
            "a@example.test",
            "--to",
            "b@example.test",
            "--backend",
            anyio_backend,
        )
        group.cancel_scope.cancel()
    assert run.code == ExitCode.SENT, run
    assert server.messages[0].recipients == ("b@example.test",)


async def test_dsn_options(anyio_backend: str) -> None:
    extensions = ["PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "DSN"]
    async with SMTPTestServer(extensions=extensions) as server:
        run = await cli(
            *send_args(server.port, backend=anyio_backend),
            "--dsn-notify",
            "failure,delay",
            "--dsn-ret",
            "HDRS",
            "--dsn-envid",
            "order-4711",
            "--transfer",
            "data",
        )
    assert run.code == ExitCode.SENT, run
    received = server.messages[0]
    assert "RET=HDRS" in received.mail_options
    assert "ENVID=order-4711" in received.mail_options
    assert any(option.startswith("NOTIFY=") for option in received.rcpt_options[0])
    assert "DATA" in server.client_lines()


async def test_dsn_not_offered_is_refused_before_mail(anyio_backend: str) -> None:
    async with SMTPTestServer() as server:
        run = await cli(*send_args(server.port, "--dsn-ret", "FULL", backend=anyio_backend))
    assert run.code == ExitCode.REFUSED, run
    assert "DSN" in run.stdout
    assert not any(line.startswith("MAIL") for line in server.client_lines())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--server", "127.0.0.1:2525", "--quit-after", "auth"), "needs --auth"),
        (("--server", "127.0.0.1:2525", "--plain", "--quit-after", "tls"), "needs --starttls"),
        (("--socket", "/nonexistent.sock", "--starttls"), "--tls-hostname"),
        (("--socket", "/nonexistent.sock", "--tls"), "Unix socket"),
    ],
)
async def test_impossible_combinations(
    anyio_backend: str, args: tuple[str, ...], message: str
) -> None:
    run = await cli("send", "--from", "a@example.test", "--to", "b@example.test", *args)
    assert run.code == ExitCode.USAGE, run
    assert message in run.stdout


async def test_a_failed_quit_does_not_change_the_outcome(anyio_backend: str) -> None:
    async with SMTPTestServer() as server:
        server.reply("QUIT", "421 4.3.2 Gone", close=True)
        run = await cli(*send_args(server.port, "--json", backend=anyio_backend))
    assert run.code == ExitCode.SENT, run
    assert run.json()["queue_id"] == server.messages[0].queue_id


async def test_implicit_tls_quit_after_tls(tmp_path: Path, anyio_backend: str) -> None:
    ca = write_ca(tmp_path / "ca.pem")
    async with SMTPTestServer(tls_context=tls_server_context()) as server:
        run = await cli(
            "send",
            "--server",
            f"127.0.0.1:{server.port}",
            "--tls",
            "--ca-file",
            ca,
            "--quit-after",
            "tls",
            "--json",
            "--backend",
            anyio_backend,
        )
    assert run.code == ExitCode.SENT, run
    result = run.json()
    assert result["steps"] == ["tls", "ehlo"]
    assert result["tls"]["version"].startswith("TLSv1.")


async def test_quit_after_rcpt_reports_each_recipient(anyio_backend: str) -> None:
    async with SMTPTestServer() as server:
        server.reply("RCPT", "550 5.1.1 No such user", match="nobody@")
        run = await cli(
            "send",
            "--server",
            f"127.0.0.1:{server.port}",
            "--plain",
            "--from",
            "probe@example.test",
            "--to",
            "ada@example.org",
            "--to",
            "nobody@example.org",
            "--quit-after",
            "rcpt",
            "--json",
            "--backend",
            anyio_backend,
        )
        await server.wait_until(lambda: server.sessions_closed == server.sessions == 1)
    assert run.code == ExitCode.PARTLY_REFUSED, run
    result = run.json()
    by_address = {item["address"]: item for item in result["recipients"]}
    assert by_address["ada@example.org"]["accepted"] is True
    assert by_address["nobody@example.org"]["accepted"] is False
    assert by_address["nobody@example.org"]["reply"]["code"] == 550
    assert server.messages == []
    assert server.client_lines()[-1] == "QUIT"

"""``anyio-smtp probe`` in a subprocess against SMTPTestServer, on asyncio and on trio."""

from __future__ import annotations

from pathlib import Path

from anyio_smtp._cli._common import ExitCode
from anyio_smtp.testing import SMTPTestServer

from .helpers import PASSWORD, USER, cli, tls_server_context, write_ca

KEYS = {
    "ok",
    "exit_code",
    "server",
    "mode",
    "greeting",
    "ehlo_greeting",
    "before_tls",
    "after_tls",
    "starttls_offered",
    "tls",
    "certificate",
    "verified",
    "error",
    "elapsed_s",
}


async def test_probe_starttls_json(tmp_path: Path, anyio_backend: str) -> None:
    ca = write_ca(tmp_path / "ca.pem")
    async with SMTPTestServer(
        "mx.probe.test",
        starttls_context=tls_server_context(),
        users={USER: PASSWORD},
        size_limit=1000000,
    ) as server:
        run = await cli(
            "probe",
            f"127.0.0.1:{server.port}",
            "--ca-file",
            ca,
            "--tls-hostname",
            "localhost",
            "--json",
            "--backend",
            anyio_backend,
        )
        await server.wait_until(lambda: server.sessions_closed == server.sessions)
    assert run.code == ExitCode.SENT, run
    result = run.json()
    assert set(result) >= KEYS
    assert result["ok"] is True
    assert result["greeting"].startswith("220 mx.probe.test")
    assert result["starttls_offered"] is True
    before, after = result["before_tls"], result["after_tls"]
    assert before["starttls"] is True
    assert before["auth"] == []
    assert after["starttls"] is False
    assert set(after["auth"]) >= {"PLAIN", "LOGIN"}
    assert after["size"] == 1000000
    assert "PIPELINING" in after["extensions"]
    assert result["tls"]["version"].startswith("TLSv1.")
    assert result["tls"]["cipher"]
    certificate = result["certificate"]
    assert "DNS:localhost" in certificate["san"]
    assert "IP Address:127.0.0.1" in certificate["san"]
    assert certificate["issuer"]
    assert certificate["days_left"] > 0
    assert len(certificate["sha256"]) == 64
    assert result["verified"] is True
    assert not any(line.startswith(("MAIL", "AUTH")) for line in server.client_lines())


async def test_probe_summary(tmp_path: Path, anyio_backend: str) -> None:
    ca = write_ca(tmp_path / "ca.pem")
    async with SMTPTestServer(starttls_context=tls_server_context()) as server:
        run = await cli(
            "probe", f"127.0.0.1:{server.port}", "--ca-file", ca, "--backend", anyio_backend
        )
    assert run.code == ExitCode.SENT, run
    for text in ("greeting:  220 ", "STARTTLS: offered", "after TLS:", "verified:  yes"):
        assert text in run.stdout


async def test_probe_certificate_that_does_not_verify(anyio_backend: str) -> None:
    async with SMTPTestServer(starttls_context=tls_server_context()) as server:
        run = await cli("probe", f"127.0.0.1:{server.port}", "--json", "--backend", anyio_backend)
        await server.wait_until(lambda: server.sessions_closed == server.sessions)
    assert run.code == ExitCode.CONNECTION, run
    result = run.json()
    assert result["ok"] is False
    assert result["verified"] is False
    assert result["after_tls"] is None
    assert "certificate was refused" in result["error"]["message"]
    assert len(result["certificate"]["sha256"]) == 64
    # No connection went further than the failed handshake: nothing after STARTTLS.
    for session in range(server.sessions):
        lines = server.client_lines(session)
        assert lines[-1] == "STARTTLS", lines


async def test_probe_host_name_mismatch_shows_the_certificate(
    tmp_path: Path, anyio_backend: str
) -> None:
    ca = write_ca(tmp_path / "ca.pem")
    async with SMTPTestServer(starttls_context=tls_server_context()) as server:
        run = await cli(
            "probe",
            f"127.0.0.1:{server.port}",
            "--ca-file",
            ca,
            "--tls-hostname",
            "mx.elsewhere.test",
            "--backend",
            anyio_backend,
        )
    assert run.code == ExitCode.CONNECTION, run
    assert "verified:  NO" in run.stdout
    assert "DNS:localhost" in run.stdout
    assert "mx.elsewhere.test" in run.stdout


async def test_probe_implicit_tls(tmp_path: Path, anyio_backend: str) -> None:
    ca = write_ca(tmp_path / "ca.pem")
    async with SMTPTestServer(tls_context=tls_server_context()) as server:
        run = await cli(
            "probe",
            f"127.0.0.1:{server.port}",
            "--tls",
            "--ca-file",
            ca,
            "--json",
            "--backend",
            anyio_backend,
        )
    assert run.code == ExitCode.SENT, run
    result = run.json()
    assert result["before_tls"] is None
    assert result["after_tls"] is not None
    assert result["verified"] is True


async def test_probe_no_starttls(anyio_backend: str) -> None:
    async with SMTPTestServer() as server:
        plain = await cli("probe", f"127.0.0.1:{server.port}", "--json")
        required = await cli("probe", f"127.0.0.1:{server.port}", "--require-starttls")
    assert plain.code == ExitCode.SENT, plain
    assert plain.json()["starttls_offered"] is False
    assert plain.json()["tls"] is None
    assert required.code == ExitCode.CONNECTION, required
    assert "does not offer STARTTLS" in required.stdout


async def test_probe_connection_refused(anyio_backend: str) -> None:
    async with SMTPTestServer() as server:
        port = server.port
    run = await cli("probe", f"127.0.0.1:{port}", "--json", "--backend", anyio_backend)
    assert run.code == ExitCode.CONNECTION, run
    assert run.json()["error"]["type"] == "ConnectError"

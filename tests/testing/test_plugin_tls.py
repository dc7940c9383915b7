"""ThrowawayCA, behind the smtp_tls fixture, and throwaway_tls() built on it."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

import pytest

import anyio_smtp
from anyio_smtp.testing import SMTPTestServer, ThrowawayCA, throwaway_tls

MESSAGE = b"Subject: hello\r\n\r\nHello!\r\n"


async def send_over_tls(server: SMTPTestServer, context: ssl.SSLContext, host: str) -> None:
    async with anyio_smtp.connect(
        host, server.port, tls=True, ssl_context=context, tls_hostname=host
    ) as smtp:
        await smtp.send_mail("me@example.com", ["you@example.org"], MESSAGE)


def test_the_ca_and_its_contexts() -> None:
    ca = ThrowawayCA()
    assert ca.identities == ("localhost", "127.0.0.1")
    assert repr(ca) == "<ThrowawayCA for localhost, 127.0.0.1>"
    assert ca.ca_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert ca.ca_pem_path is None
    assert ca.client_context.verify_mode == ssl.CERT_REQUIRED
    assert ca.client_context.check_hostname
    # Only this CA: nothing of the system store.
    assert len(ca.client_context.get_ca_certs()) == 1
    assert ca.new_client_context() is not ca.client_context
    assert ca.new_client_context().get_ca_certs() == ca.client_context.get_ca_certs()


def test_write_ca_pem(tmp_path: Path) -> None:
    ca = ThrowawayCA()
    written = ca.write_ca_pem(str(tmp_path / "ca.pem"))
    assert written == tmp_path / "ca.pem" == ca.ca_pem_path
    assert written.read_bytes() == ca.ca_pem
    context = ssl.create_default_context(cafile=written)
    assert context.get_ca_certs() == ca.client_context.get_ca_certs()


async def test_the_contexts_make_a_verified_connection() -> None:
    ca = ThrowawayCA()
    async with SMTPTestServer(tls_context=ca.server_context) as server:
        for host in ca.identities:
            await send_over_tls(server, ca.client_context, host)
    assert [m.tls for m in server.messages] == [True, True]


async def test_a_certificate_for_other_names_and_another_ca_are_refused() -> None:
    ours, other = ThrowawayCA("mail.example.test"), ThrowawayCA()
    assert ours.identities == ("mail.example.test",)
    async with SMTPTestServer(tls_context=ours.server_context) as server:
        with pytest.raises(anyio_smtp.TLSCertificateError):
            await send_over_tls(server, ours.client_context, "127.0.0.1")
        with pytest.raises(anyio_smtp.TLSCertificateError):
            await send_over_tls(server, other.client_context, "127.0.0.1")
    assert server.messages == []


async def test_throwaway_tls_still_returns_the_two_contexts() -> None:
    server_context, client_context = throwaway_tls()
    async with SMTPTestServer(starttls_context=server_context) as server:
        async with anyio_smtp.connect_starttls(
            server.host, server.port, ssl_context=client_context
        ) as smtp:
            await smtp.send_mail("me@example.com", ["you@example.org"], MESSAGE)
    assert [m.tls for m in server.messages] == [True]


def test_without_trustme_each_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trustme", None)
    with pytest.raises(ImportError, match=r"^ThrowawayCA needs the 'trustme' package; install"):
        ThrowawayCA()
    with pytest.raises(ImportError, match=r"^throwaway_tls\(\) needs the 'trustme' package"):
        throwaway_tls()

"""A throw-away certificate authority and a loopback server certificate for tests."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

#: Names the server certificate is valid for.
SERVER_IDENTITIES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class LoopbackCertificates:
    """PEM files of a test CA and of a server certificate it issued for loopback.

    ``ca_pem`` is what a client trusts; ``server_chain_pem`` holds the server's
    private key followed by its certificate chain (the single-file form Postfix
    reads with ``smtpd_tls_chain_files``); ``server_cert_pem`` and
    ``server_key_pem`` hold the same material split in two.
    """

    directory: Path
    ca_pem: Path
    server_chain_pem: Path
    server_cert_pem: Path
    server_key_pem: Path

    @classmethod
    def create(cls, directory: Path) -> LoopbackCertificates:
        """Make a new CA and server certificate and write them below ``directory``."""
        # Imported here: modules that only use the type (the benchmark's Haraka without
        # TLS) then work without the test dependencies installed.
        import trustme

        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="anyio_smtp test CA")
        leaf = ca.issue_cert(*SERVER_IDENTITIES)
        certificates = cls(
            directory=directory,
            ca_pem=directory / "ca.pem",
            server_chain_pem=directory / "server-chain.pem",
            server_cert_pem=directory / "server-cert.pem",
            server_key_pem=directory / "server-key.pem",
        )
        ca.cert_pem.write_to_path(str(certificates.ca_pem))
        leaf.private_key_and_cert_chain_pem.write_to_path(str(certificates.server_chain_pem))
        cert_chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        certificates.server_cert_pem.write_bytes(cert_chain)
        leaf.private_key_pem.write_to_path(str(certificates.server_key_pem))
        os.chmod(certificates.ca_pem, 0o644)
        os.chmod(certificates.server_cert_pem, 0o644)
        os.chmod(certificates.server_chain_pem, 0o600)
        os.chmod(certificates.server_key_pem, 0o600)
        return certificates

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only the test CA and checks host names."""
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_pem))

    def server_context(self) -> ssl.SSLContext:
        """A server context presenting the loopback certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.server_cert_pem), str(self.server_key_pem))
        return context

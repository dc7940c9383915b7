"""Throw-away certificates for TLS tests."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from types import ModuleType

__all__ = ("ThrowawayCA", "throwaway_tls")

_DEFAULT_IDENTITIES = ("localhost", "127.0.0.1")


def _import_trustme(user: str) -> ModuleType:
    try:
        import trustme
    except ImportError as exc:
        raise ImportError(
            f"{user} needs the 'trustme' package; install it with "
            "'pip install trustme' (it is part of the 'test' and 'demo' extras)"
        ) from exc
    return trustme


class ThrowawayCA:
    """A fresh private certificate authority, a leaf certificate it signed, and SSL contexts.

    The leaf certificate is valid for every given identity (host names and/or IP
    addresses). :attr:`server_context` presents it: pass it to
    ``SMTPTestServer(starttls_context=...)`` or ``SMTPTestServer(tls_context=...)``.
    :attr:`client_context` is built with :func:`ssl.create_default_context` (so it
    verifies certificates and host names) and trusts only this CA, not the system store.
    For code that is configured with a CA file rather than a context,
    :meth:`write_ca_pem` writes the CA certificate in PEM form.

    Needs the ``trustme`` package, which is imported only when a CA is made.

    :param identities: the names the leaf certificate is valid for; defaults to
        ``"localhost"`` and ``"127.0.0.1"``
    :raises ImportError: if ``trustme`` is not installed
    """

    def __init__(self, *identities: str) -> None:
        trustme = _import_trustme("ThrowawayCA")
        ca = trustme.CA()
        #: The names the leaf certificate is valid for.
        self.identities: tuple[str, ...] = identities or _DEFAULT_IDENTITIES
        leaf = ca.issue_cert(*self.identities)
        #: The CA certificate, PEM-encoded.
        self.ca_pem: bytes = ca.cert_pem.bytes()
        #: Server-side context holding the leaf certificate and its key.
        self.server_context: ssl.SSLContext = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(self.server_context)
        #: Client-side context that trusts this CA only.
        self.client_context: ssl.SSLContext = self.new_client_context()
        #: The file :meth:`write_ca_pem` last wrote, ``None`` before.
        self.ca_pem_path: Path | None = None

    def __repr__(self) -> str:
        return f"<ThrowawayCA for {', '.join(self.identities)}>"

    def new_client_context(self) -> ssl.SSLContext:
        """A new client-side context that trusts this CA only, as :attr:`client_context`.

        :return: a context made by :func:`ssl.create_default_context`
        """
        # Passing cadata stops create_default_context() from loading the system CAs.
        return ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))

    def write_ca_pem(self, path: str | os.PathLike[str]) -> Path:
        """Write the CA certificate to a file, in PEM form (as ``cafile=`` options expect).

        :param path: the file to write; its folder must exist
        :return: the path written, also kept as :attr:`ca_pem_path`
        """
        target = Path(path)
        target.write_bytes(self.ca_pem)
        self.ca_pem_path = target
        return target


def throwaway_tls(*identities: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Create a fresh private CA and a matching pair of SSL contexts.

    The server context holds a leaf certificate, signed by the new CA, that is valid for
    every given identity (host names and/or IP addresses). The client context is built
    with :func:`ssl.create_default_context` (so it verifies certificates and host names)
    and trusts only the new CA, not the system store. :class:`ThrowawayCA` gives the same
    contexts and the CA certificate itself.

    Needs the ``trustme`` package, which is imported only when this function is called.

    :param identities: the names the certificate is valid for; defaults to
        ``"localhost"`` and ``"127.0.0.1"``
    :return: ``(server_context, client_context)``
    :raises ImportError: if ``trustme`` is not installed
    """
    _import_trustme("throwaway_tls()")
    ca = ThrowawayCA(*identities)
    return ca.server_context, ca.client_context

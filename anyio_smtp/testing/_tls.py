"""Throw-away certificates for TLS tests."""

from __future__ import annotations

import ssl

__all__ = ("throwaway_tls",)

_DEFAULT_IDENTITIES = ("localhost", "127.0.0.1")


def throwaway_tls(*identities: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Create a fresh private CA and a matching pair of SSL contexts.

    The server context holds a leaf certificate, signed by the new CA, that is valid for
    every given identity (host names and/or IP addresses). The client context is built
    with :func:`ssl.create_default_context` (so it verifies certificates and host names)
    and trusts only the new CA, not the system store.

    Needs the ``trustme`` package, which is imported only when this function is called.

    :param identities: the names the certificate is valid for; defaults to
        ``"localhost"`` and ``"127.0.0.1"``
    :return: ``(server_context, client_context)``
    :raises ImportError: if ``trustme`` is not installed
    """
    try:
        import trustme
    except ImportError as exc:
        raise ImportError(
            "throwaway_tls() needs the 'trustme' package; install it with "
            "'pip install trustme' (it is part of the 'test' and 'demo' extras)"
        ) from exc

    ca = trustme.CA()
    leaf = ca.issue_cert(*(identities or _DEFAULT_IDENTITIES))

    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(server_context)

    # Passing cadata stops create_default_context() from loading the system CAs.
    client_context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode("ascii"))
    return server_context, client_context

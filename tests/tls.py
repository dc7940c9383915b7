"""Throwaway certificates for tests (trustme), one CA per test session."""

from __future__ import annotations

import datetime
import ssl
from functools import cache

import trustme


@cache
def shared_ca() -> trustme.CA:
    return trustme.CA()


def client_context(ca: trustme.CA | None = None) -> ssl.SSLContext:
    """A verifying client context that trusts only the test CA."""
    context = ssl.create_default_context()
    (ca or shared_ca()).configure_trust(context)
    return context


def server_context(
    *identities: str,
    ca: trustme.CA | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> ssl.SSLContext:
    """A server context with a leaf certificate for ``identities`` from the test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf = (ca or shared_ca()).issue_cert(
        *(identities or ("mx.test",)), not_before=not_before, not_after=not_after
    )
    leaf.configure_cert(context)
    return context

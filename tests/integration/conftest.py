"""Session-wide real SMTP peers on loopback: a private Postfix + Dovecot, Haraka and aiosmtpd.

The fixtures are synchronous and session-scoped, so they serve tests on every async
backend. They never skip: a server that cannot start is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from .servers.aiosmtpd_server import AiosmtpdServer
from .servers.haraka import HarakaInstance
from .servers.haraka import ensure_installed as ensure_haraka_installed
from .servers.postfix import DEFAULT_USERS, PostfixFactory, PostfixInstance
from .servers.tls import LoopbackCertificates

logger = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def loopback_certificates(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCertificates:
    """One test CA and a server certificate for localhost/127.0.0.1/::1, shared by
    every server of the session."""
    return LoopbackCertificates.create(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def postfix_factory(
    tmp_path_factory: pytest.TempPathFactory,
    loopback_certificates: LoopbackCertificates,
) -> Iterator[PostfixFactory]:
    """Start extra Postfix instances with their own settings, e.g.
    ``postfix_factory(recipient_limit=2)``; all are stopped at the end of the session.
    """
    PostfixInstance.ensure_installed()
    instances: list[PostfixInstance] = []

    def start(**options: Any) -> PostfixInstance:
        instance = PostfixInstance(**options)
        instances.append(instance)
        instance.start(tmp_path_factory.mktemp("postfix"), certificates=loopback_certificates)
        logger.info("Postfix instance started in %.2f s", instance.startup_seconds or 0.0)
        return instance

    yield start
    errors: list[str] = []
    for instance in reversed(instances):
        try:
            instance.stop()
        except RuntimeError as error:
            errors.append(str(error))
    if errors:
        raise RuntimeError("; ".join(errors))


@pytest.fixture(scope="session")
def postfix(postfix_factory: PostfixFactory) -> PostfixInstance:
    """The shared Postfix 3 + Dovecot SASL instance (default settings).

    Messages delivered by earlier tests stay in its Maildir: call ``clear()`` first,
    or look for a unique marker in the messages.
    """
    return postfix_factory()


def _start_aiosmtpd(server: AiosmtpdServer) -> Iterator[AiosmtpdServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def aiosmtpd_plain() -> Iterator[AiosmtpdServer]:
    """aiosmtpd without TLS and without AUTH."""
    yield from _start_aiosmtpd(AiosmtpdServer())


@pytest.fixture(scope="session")
def aiosmtpd_starttls(
    loopback_certificates: LoopbackCertificates,
) -> Iterator[AiosmtpdServer]:
    """aiosmtpd requiring STARTTLS, then AUTH PLAIN/LOGIN before mail is accepted."""
    yield from _start_aiosmtpd(
        AiosmtpdServer(
            certificates=loopback_certificates,
            starttls=True,
            require_starttls=True,
            users=DEFAULT_USERS,
            auth_required=True,
        )
    )


@pytest.fixture(scope="session")
def aiosmtpd_implicit_tls(
    loopback_certificates: LoopbackCertificates,
) -> Iterator[AiosmtpdServer]:
    """aiosmtpd speaking TLS from the first byte, AUTH PLAIN/LOGIN offered but optional."""
    yield from _start_aiosmtpd(
        AiosmtpdServer(
            certificates=loopback_certificates,
            implicit_tls=True,
            users=DEFAULT_USERS,
        )
    )


@pytest.fixture(scope="session")
def haraka(
    tmp_path_factory: pytest.TempPathFactory,
    loopback_certificates: LoopbackCertificates,
) -> Iterator[HarakaInstance]:
    """A private Haraka 3.3.4 on loopback: STARTTLS, AUTH PLAIN/LOGIN, implicit TLS.

    Recipients are accepted once the session is authenticated; every message goes to
    its Maildir-style folder (one file per message). Nothing leaves the machine: at the
    end of the session its log must show no DNS query and no outbound delivery.
    Messages of earlier tests stay: look for a unique marker.
    """
    ensure_haraka_installed()
    instance = HarakaInstance()
    instance.start(tmp_path_factory.mktemp("haraka"), certificates=loopback_certificates)
    logger.info("Haraka started in %.2f s", instance.startup_seconds or 0.0)
    try:
        yield instance
    finally:
        instance.stop()
    leaks = instance.leaks()
    if leaks:
        raise RuntimeError("Haraka reached beyond loopback:\n" + "\n".join(leaks[:20]))

"""The real Postfix + Dovecot of the integration tests, for the command line's tests."""

from tests.integration.conftest import loopback_certificates, postfix, postfix_factory

__all__ = ("loopback_certificates", "postfix", "postfix_factory")

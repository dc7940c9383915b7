"""Integration tests against real SMTP servers running on loopback."""

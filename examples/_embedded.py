"""Shared by the examples: run against an embedded test server when no host is given."""

from __future__ import annotations

import argparse
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anyio_smtp.testing import SMTPTestServer


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    username: str
    password: str
    ssl_context: ssl.SSLContext | None  # None: the system's trusted CAs
    tls_hostname: str | None


def parse_args(description: str, default_port: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", help="SMTP server (default: an embedded local test server)")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--user", help="login name; the password is read from $SMTP_PASSWORD")
    parser.add_argument("--to", default="alice@example.test", help="recipient")
    return parser.parse_args()


@asynccontextmanager
async def embedded_server(*, implicit_tls: bool) -> AsyncIterator[tuple[SMTPTestServer, Target]]:
    """A throwaway local server with STARTTLS (or implicit TLS) and one user."""
    from anyio_smtp.testing import SMTPTestServer, throwaway_tls

    server_context, client_context = throwaway_tls("localhost")
    username, password = "me@example.test", "example password"
    async with SMTPTestServer(
        users={username: password},
        tls_context=server_context if implicit_tls else None,
        starttls_context=None if implicit_tls else server_context,
    ) as server:
        yield (
            server,
            Target(server.host, server.port, username, password, client_context, "localhost"),
        )


@asynccontextmanager
async def target(args: argparse.Namespace, *, implicit_tls: bool) -> AsyncIterator[Target]:
    """The server named on the command line, or a throwaway local one."""
    if args.host:
        yield Target(
            args.host, args.port, args.user or "", os.environ.get("SMTP_PASSWORD", ""), None, None
        )
        return
    async with embedded_server(implicit_tls=implicit_tls) as (server, local):
        yield local
        for message in server.messages:
            print(f"The embedded server received a message for {', '.join(message.recipients)}:")
            print(message.data.decode("utf-8", "replace"))

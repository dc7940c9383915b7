"""The README's way of calling the client from synchronous code, run as it is written.

The code block of the README section "From synchronous code" runs here unchanged but
for its settings, which point at a local test server running in an event loop of its
own, in another thread: first its script part (``anyio.run``), then its application
part (a blocking portal kept open, called from several threads at once); and once more
as a program of its own, which must end and close its sessions politely.
"""

from __future__ import annotations

import ast
import atexit
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal

from anyio_smtp.testing import SMTPTestServer, throwaway_tls
from tests.tls import server_context, shared_ca

README = Path(__file__).resolve().parent.parent / "README.md"
MARKER = "<!-- The code below runs in tests/test_sync_usage.py, on asyncio and on trio. -->\n"
USER, PASSWORD = "me@example.test", "sync-usage-Pa55"


def readme_code(settings: str = "") -> tuple[str, str]:
    """The README's settings lines, and its code with ``settings`` in their place."""
    text = README.read_text(encoding="utf-8")
    assert text.count(MARKER) == 1
    match = re.match(r"```python\n(.*?\n)```\n", text.split(MARKER, 1)[1], re.DOTALL)
    assert match is not None, "the marker must be followed by a python code block"
    head, rest = match[1].split("\n# Settings\n", 1)
    own, body = rest.split("\n\n", 1)
    return own, f"{head}\n# Settings\n{settings}\n\n{body}"


def assigned_names(code: str) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(code).body:
        assert isinstance(node, ast.Assign), "the settings are plain assignments"
        for target in node.targets:
            elements = target.elts if isinstance(target, ast.Tuple) else [target]
            names.update(element.id for element in elements if isinstance(element, ast.Name))
    return names


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_readme_sends_from_synchronous_code(backend: str) -> None:
    settings_code, code = readme_code()
    server_tls, client_tls = throwaway_tls("localhost", "127.0.0.1")
    server = SMTPTestServer(starttls_context=server_tls, users={USER: PASSWORD})
    # The server has an event loop of its own, in another thread.
    with (
        start_blocking_portal(backend) as server_portal,
        server_portal.wrap_async_context_manager(server),
    ):
        settings = {
            "BACKEND": backend,
            "SMTP_HOST": server.host,
            "SMTP_PORT": server.port,
            "SMTP_USER": USER,
            "SMTP_PASSWORD": PASSWORD,
            "SSL_CONTEXT": client_tls,
        }
        assert assigned_names(settings_code) == set(settings)
        namespace: dict[str, Any] = {"__name__": "readme_sync_usage", **settings}
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102
        app = namespace["_smtp"]
        atexit.unregister(app.close)
        try:
            # The script's message went in a session of its own.
            assert namespace["result"].reply.code == 250
            assert server.sessions == 1

            def request(index: int) -> Any:
                message = EmailMessage()
                message["From"], message["To"] = USER, f"user{index}@example.org"
                message["Subject"] = f"request {index}"
                message.set_content(f"request {index}\n")
                return namespace["send_email"](message)

            with ThreadPoolExecutor(max_workers=3) as threads:
                results = list(threads.map(request, range(6)))
            assert [result.accepted for result in results] == [
                (f"user{index}@example.org",) for index in range(6)
            ]
            pool = namespace["pool"]
            assert 1 <= pool.connections_opened <= 3
        finally:
            app.close()
        received = sorted(message.recipients for message in server.messages)
        assert received == sorted(
            [("you@example.org",)] + [(f"user{index}@example.org",) for index in range(6)]
        )
        for message in server.messages:
            assert message.tls
            assert message.authenticated_as == USER
        assert b"Sent from synchronous code." in server.messages[0].data


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_readme_program_closes_its_sessions_when_it_exits(backend: str) -> None:
    """Run as a program of its own, the README's code ends, saying QUIT, when it is done."""
    server = SMTPTestServer(
        starttls_context=server_context("localhost", "127.0.0.1"), users={USER: PASSWORD}
    )
    ca = shared_ca().cert_pem.bytes().decode("ascii")
    with (
        start_blocking_portal(backend) as server_portal,
        server_portal.wrap_async_context_manager(server),
    ):
        settings = {
            "BACKEND": repr(backend),
            "SMTP_HOST, SMTP_PORT": f"{server.host!r}, {server.port}",
            "SMTP_USER, SMTP_PASSWORD": f"{USER!r}, {PASSWORD!r}",
            "SSL_CONTEXT": f"ssl.create_default_context(cadata={ca!r})",
        }
        lines = "\n".join(f"{names} = {value}" for names, value in settings.items())
        settings_code, code = readme_code(lines)
        assert assigned_names(settings_code) == assigned_names(lines)
        program = code + "\nsend_email(message)\n"
        done = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert server.sessions == 2
        # The pool's session (the second) was closed politely, by the atexit hook.
        assert server.client_lines(1)[-1] == "QUIT"
        assert len(server.messages) == 2

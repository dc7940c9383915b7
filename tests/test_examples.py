"""The examples and the demo run for real against the embedded server."""

from __future__ import annotations

import importlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from anyio_smtp._demo import run_demo

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def examples() -> Iterator[None]:
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield
    finally:
        sys.path.remove(str(EXAMPLES))


def load(name: str) -> ModuleType:
    return importlib.import_module(name)


@pytest.mark.parametrize("implicit_tls", [False, True], ids=["starttls", "implicit-tls"])
async def test_examples_send_through_tls_and_auth(examples: None, implicit_tls: bool) -> None:
    module = load("implicit_tls_send" if implicit_tls else "starttls_send")
    embedded = load("_embedded")
    async with embedded.embedded_server(implicit_tls=implicit_tls) as (server, target):
        result = await module.send(target, "alice@example.test")
    assert result.reply.code == 250
    (message,) = server.messages
    assert message.tls
    assert message.authenticated_as == "me@example.test"
    assert message.recipients == ("alice@example.test",)
    assert b"Sent with anyio_smtp." in message.data


def test_demo_sends_on_asyncio_and_trio() -> None:
    out = io.StringIO()
    assert run_demo(("asyncio", "trio"), out=out) == 0
    text = out.getvalue()
    for backend in ("asyncio", "trio"):
        assert f"Hello from anyio_smtp on {backend}" in text
    assert "C: STARTTLS" in text
    assert "C: [redacted]" in text or "C: AUTH PLAIN [redacted]" in text
    assert "demo password" not in text
    assert "carol@example.test>" in text  # the Bcc recipient is in the envelope ...
    assert "Bcc:" not in text  # ... but not in the message
    assert text.count("| .") >= 2  # the dot-leading line and the lone dot arrived intact

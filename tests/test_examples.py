"""The examples and the demo run for real against the embedded server."""

from __future__ import annotations

import importlib
import io
import subprocess
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


def _demo_without(modules: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m anyio_smtp demo ARGS`` in a process where ``modules`` can not be imported."""
    code = (
        "import runpy, sys\n"
        f"for name in {modules!r}:\n"
        "    sys.modules[name] = None\n"
        f"sys.argv = ['python -m anyio_smtp', 'demo', *{args!r}]\n"
        "runpy.run_module('anyio_smtp', run_name='__main__', alter_sys=True)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("modules", "args", "installs"),
    [
        (("trustme",), (), ["'anyio_smtp[demo]'"]),
        (("trio",), (), ["'anyio_smtp[trio]'", "--backend asyncio"]),
        (("trio",), ("--backend", "trio"), ["'anyio_smtp[trio]'"]),
        (("trustme", "trio"), (), ["'anyio_smtp[demo]'", "'anyio_smtp[trio]'"]),
    ],
)
def test_the_demo_says_what_to_install_when_a_dependency_is_missing(
    modules: tuple[str, ...], args: tuple[str, ...], installs: list[str]
) -> None:
    done = _demo_without(modules, *args)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    for text in installs:
        assert text in done.stderr
    assert done.stderr.count("pip install") == len(modules)


def test_the_demo_on_asyncio_does_not_need_trio() -> None:
    done = _demo_without(("trio",), "--backend", "asyncio")
    assert done.returncode == 0, done.stderr
    assert "OK: the message was sent and received on asyncio." in done.stdout

"""The code of the documentation site (docs/) is type-checked, and run where it can be.

Every ```python block of every page under docs/ is type-checked with ``mypy --strict``,
as a module of its own.  An HTML comment right above a block says more about it, as
items separated by ``;``:

``<!-- context: NAME -->``
    The block is a fragment: it goes into the body of ``async def snippet(...)`` of the
    context ``NAME`` of :data:`CONTEXTS`, whose parameters (``smtp``, ``pool``,
    ``messages`` ...) and helpers are the names the fragment may use.

``<!-- run -->``
    The block also runs, on asyncio and on trio, against a local
    :class:`~anyio_smtp.testing.SMTPTestServer`: a fragment through its context's
    ``snippet``, a module by calling each of its ``async def test_...`` functions (a
    parameter named ``smtp_server`` gets a started server).

The site itself is built (``mkdocs build --strict``) by ``.ci/run``; here it is built
too when MkDocs is installed, to check that the API reference names every public name.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

import anyio_smtp
import anyio_smtp.audit
import anyio_smtp.auth
import anyio_smtp.testing
from anyio_smtp.testing import SMTPTestServer
from tests.tools import need

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

_FENCE = re.compile(
    r"(?:<!--(?P<options>[^>]*)-->\s*\n)?^```python\n(?P<code>.*?)^```\s*$", re.M | re.S
)

# What a fragment may use.  Each context defines ``snippet``; its parameters are what
# the runner of a fragment passes in.
_HEADER = """\
from __future__ import annotations

import contextlib
import functools
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from email.message import EmailMessage

import anyio

import anyio_smtp
import anyio_smtp.auth
from anyio_smtp.testing import SMTPTestServer

Outcome = anyio_smtp.SendResult | anyio_smtp.SMTPError
"""

CONTEXTS: dict[str, str] = {
    # An open session, a batch of messages and one message.
    "client": _HEADER
    + """

def record(item: anyio_smtp.BatchItem, outcome: Outcome) -> None:
    print(type(item).__name__, outcome)


async def snippet(
    smtp: anyio_smtp.SMTPClient,
    messages: Sequence[anyio_smtp.BatchItem],
    message: EmailMessage,
    sender: str,
    rcpt: str,
) -> None:
{body}
""",
    # A pool of sessions, entered, and the same batch.
    "pool": _HEADER
    + """

def record(item: anyio_smtp.BatchItem, outcome: Outcome) -> None:
    print(type(item).__name__, outcome)


async def snippet(
    pool: anyio_smtp.SMTPPool,
    messages: Sequence[anyio_smtp.BatchItem],
    message: EmailMessage,
) -> None:
{body}
""",
}

SENDER, RCPT = "me@example.test", "you@example.test"


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the block's first line of code in the page
    code: str
    context: str | None
    run: bool

    @property
    def name(self) -> str:
        page = self.page.relative_to(DOCS).with_suffix("").as_posix()
        return f"{re.sub(r'[^A-Za-z0-9]+', '_', page)}_{self.line}"

    def source(self) -> tuple[str, int]:
        """The module that is checked, and the line of the block's first line in it."""
        if self.context is None:
            return self.code, 1
        template = CONTEXTS[self.context]
        head = template.split("{body}")[0]
        lines = self.code.splitlines(keepends=True)
        body = "".join(f"    {line}" if line.strip() else "\n" for line in lines)
        return template.replace("{body}", body.rstrip("\n")), head.count("\n") + 1


def _options(text: str | None) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in (text or "").split(";"):
        key, _, value = item.partition(":")
        if key.strip():
            options[key.strip()] = value.strip()
    return options


def blocks() -> list[Block]:
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            options = _options(match["options"])
            unknown = set(options) - {"context", "run"}
            assert not unknown, f"{page}: unknown code block options {unknown}"
            context = options.get("context") or None
            assert context is None or context in CONTEXTS, f"{page}: no context {context!r}"
            line = text.count("\n", 0, match.start("code")) + 1
            found.append(Block(page, line, match["code"], context, "run" in options))
    return found


BLOCKS = blocks()


def test_the_pages_have_code_blocks() -> None:
    assert len(BLOCKS) >= 10
    assert any(block.run for block in BLOCKS)


def test_every_code_block_type_checks(tmp_path: Path) -> None:
    api = need("mypy.api")
    files: dict[str, tuple[Block, int]] = {}
    for block in BLOCKS:
        source, first = block.source()
        path = tmp_path / f"{block.name}.py"
        path.write_text(source, encoding="utf-8")
        files[path.name] = (block, first)
    out, err, status = api.run(
        [
            "--strict",
            "--python-version=3.11",
            f"--config-file={ROOT / 'pyproject.toml'}",
            f"--cache-dir={ROOT / '.mypy_cache'}",
            "--no-error-summary",
            *(str(tmp_path / name) for name in files),
        ]
    )

    def where(match: re.Match[str]) -> str:
        block, first = files[Path(match[1]).name]
        line = int(match[2]) - first + block.line
        return f"{block.page.relative_to(ROOT)}:{line}:"

    report = re.sub(r"^(\S+\.py):(\d+):", where, out, flags=re.M)
    assert status == 0, f"mypy --strict on the code of docs/:\n{report}{err}"


# -- running ---------------------------------------------------------------------------


def _load(block: Block, tmp_path: Path) -> ModuleType:
    source, _ = block.source()
    path = tmp_path / f"{block.name}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(block.name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[block.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[block.name]
    return module


def _batch() -> list[anyio_smtp.BatchItem]:
    batch: list[anyio_smtp.BatchItem] = [
        (SENDER, [f"user{n}@example.test"], f"Subject: {n}\r\n\r\nMessage {n}.\r\n")
        for n in range(5)
    ]
    batch.append(_message())
    return batch


def _message() -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = SENDER, RCPT, "Hello"
    message.set_content("Hello.\n")
    return message


async def _run_fragment(block: Block, module: ModuleType) -> None:
    snippet: Callable[..., Awaitable[None]] = module.snippet
    async with SMTPTestServer(users={SENDER: "secret"}, auth_require_tls=False) as server:
        opener = anyio_smtp.connect(*server.address, allow_insecure_auth=True)
        if block.context == "client":
            async with opener as smtp:
                await snippet(smtp, _batch(), _message(), SENDER, RCPT)
        else:

            def factory() -> anyio_smtp.SessionOpener:
                return anyio_smtp.connect(*server.address, allow_insecure_auth=True)

            async with anyio_smtp.SMTPPool(factory, max_connections=2) as pool:
                await snippet(pool, _batch(), _message())
        assert server.messages, "the code sent nothing"


async def _run_tests(module: ModuleType) -> None:
    tests = [
        test
        for name, test in vars(module).items()
        if name.startswith("test_") and inspect.iscoroutinefunction(test)
    ]
    assert tests, "a runnable module defines async test functions"
    for test in tests:
        parameters = inspect.signature(test).parameters
        assert set(parameters) <= {"smtp_server"}, f"unknown fixtures of {test.__name__}"
        if "smtp_server" in parameters:
            async with SMTPTestServer() as server:
                await test(smtp_server=server)
        else:
            await test()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize(
    "block", [block for block in BLOCKS if block.run], ids=lambda block: block.name
)
def test_runnable_code_blocks_run(block: Block, backend: str, tmp_path: Path) -> None:
    module = _load(block, tmp_path)

    async def run() -> None:
        with anyio.fail_after(20):
            if block.context is None:
                await _run_tests(module)
            else:
                await _run_fragment(block, module)

    anyio.run(run, backend=backend)


# -- the site ----------------------------------------------------------------------------


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    assert spec is not None
    assert spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    return hooks


def test_the_cli_reference_covers_every_command() -> None:
    hooks = _hooks()
    from anyio_smtp.__main__ import build_parser

    page = hooks.on_page_markdown(f"# Command line\n\n{hooks.MARKER}\n")
    assert hooks.MARKER not in page
    parser = build_parser()
    for action in parser._actions:
        choices: Any = getattr(action, "choices", None)
        if isinstance(choices, dict):
            for name in choices:
                assert f"`{parser.prog} {name}`" in page
                assert f"{{ #cli-{name} }}" in page
    assert "--backend" in page


def test_the_cli_reference_of_nested_commands_aliases_and_groups() -> None:
    parser = argparse.ArgumentParser(prog="python -m anyio_smtp")
    commands = parser.add_subparsers(dest="command", required=True)
    send = commands.add_parser("send", aliases=["s"], help="send one message | or more")
    send.add_argument("host", help="the server, <name> or <address>")
    send.add_argument("--port", type=int, default=587, help="its port (default: %(default)s)")
    send.add_argument("--to", action="append", required=True, metavar="<address>")
    tls = send.add_argument_group("TLS", "how the connection is protected")
    tls.add_argument("--tls", choices=["starttls", "implicit"], default="starttls")
    send.add_subparsers(dest="how").add_parser("dry-run", help="say what would be sent")

    page = _hooks().render(parser)

    assert "## `python -m anyio_smtp` { #cli }" in page
    assert "### `python -m anyio_smtp send` { #cli-send }" in page
    assert "#### `python -m anyio_smtp send host dry-run` { #cli-send-dry-run }" in page
    assert "| [`send (s)`](#cli-send) | send one message \\| or more | |" in page
    assert "| [`dry-run`](#cli-send-dry-run) |" in page
    assert "| `host` | the server, &lt;name&gt; or &lt;address&gt; |  |" in page
    assert "| `--port PORT` | its port (default: 587) | `587` |" in page
    assert "| `--to <address>` | Required. |  |" in page  # a code span shows it as it is
    assert "**TLS**\n\nhow the connection is protected" in page
    assert "Choices: `starttls`, `implicit`. | `starttls` |" in page
    assert page.count("### `python -m anyio_smtp send`") == 1  # once, not once per alias


def test_the_site_builds_and_documents_every_public_name(tmp_path: Path) -> None:
    need("mkdocs")
    need("mkdocstrings")
    site = tmp_path / "site"
    # Not --quiet: it hides the warnings from --strict too.
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr
    for module, page in (
        (anyio_smtp, "anyio_smtp"),
        (anyio_smtp.auth, "auth"),
        (anyio_smtp.audit, "audit"),
        (anyio_smtp.testing, "testing"),
    ):
        html = (site / "reference" / page / "index.html").read_text(encoding="utf-8")
        missing = [
            name
            for name in module.__all__
            # A module (anyio_smtp.audit) has a page of its own.
            if name != "__version__"
            and not isinstance(getattr(module, name), ModuleType)
            and f'id="{module.__name__}.{name}"' not in html
        ]
        assert not missing, f"not in the reference of {module.__name__}: {missing}"

"""What ``import anyio_smtp`` loads: a check of the import cost that does not time anything.

Each module below is a large part of the import time and is needed only by some
programs (``email`` for ``send_message``, ``ssl`` for TLS, ``json`` for a refused
OAuth token, ...).  They are loaded where they are used; this checks, in a fresh
interpreter, that a plain import does not bring them back.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Never loaded by ``import anyio_smtp``.
NOT_LOADED = (
    "email",
    "email.message",
    "json",
    "ssl",
    "anyio.streams.tls",
    "hashlib",
    "hmac",
    "secrets",
    "trustme",
    "trio",
    "anyio_smtp.testing",
    "anyio_smtp._demo",
)
#: Loaded only if anyio itself loads them (it does import ``inspect``).
NOT_ADDED = ("inspect",)


def _modules_after(code: str) -> dict[str, list[str]]:
    script = (
        "import sys\n"
        "import anyio\n"
        "after_anyio = sorted(sys.modules)\n"
        f"{code}\n"
        "after = sorted(sys.modules)\n"
        "import json\n"
        "print(json.dumps({'anyio': after_anyio, 'all': after}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, list[str]] = json.loads(done.stdout)
    return result


def test_a_plain_import_loads_nothing_of_the_package_yet() -> None:
    # The public names are loaded on first use (module __getattr__), so a
    # program that imports the package at start-up pays nothing until it sends.
    modules = _modules_after("import anyio_smtp\nassert anyio_smtp.__version__")
    ours = {name for name in modules["all"] if name.startswith("anyio_smtp.")}
    assert ours == {"anyio_smtp._lazy"}, sorted(ours)  # the loader itself only


def test_the_client_leaves_the_heavy_modules_unloaded() -> None:
    modules = _modules_after(
        "import anyio_smtp\n"
        "from anyio_smtp import SMTPClient, SMTPPool, connect, connect_starttls\n"
    )
    loaded = set(modules["all"])
    assert {"anyio_smtp._client", "anyio_smtp._pool", "anyio_smtp._connect"} <= loaded
    assert loaded.isdisjoint(NOT_LOADED), sorted(loaded.intersection(NOT_LOADED))
    added = loaded - set(modules["anyio"])
    assert added.isdisjoint(NOT_ADDED), sorted(added.intersection(NOT_ADDED))


def test_every_public_name_resolves_and_is_listed() -> None:
    import anyio_smtp

    names = set(anyio_smtp.__all__) - {"__version__"}
    assert names == set(anyio_smtp._HOMES)
    for name in sorted(names):
        value = getattr(anyio_smtp, name)
        assert value is not None
        if isinstance(value, type):
            assert value.__module__.startswith("anyio_smtp.")
    assert set(anyio_smtp.__all__) <= set(dir(anyio_smtp))
    star = _modules_after("from anyio_smtp import *\nassert SMTPPool and audit and Reply")
    assert "anyio_smtp._pool" in star["all"]


def test_an_unknown_name_is_an_attribute_error() -> None:
    import anyio_smtp

    with pytest.raises(AttributeError, match="not_a_name"):
        anyio_smtp.not_a_name  # type: ignore[attr-defined]  # noqa: B018


def test_the_names_type_checkers_see_are_the_names_loaded() -> None:
    # The imports under TYPE_CHECKING (what type checkers and the API reference
    # see) and the table of homes must say the same.
    import ast
    from pathlib import Path

    import anyio_smtp

    tree = ast.parse(Path(anyio_smtp.__file__).read_text(encoding="utf-8"))
    (block,) = (
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    )
    seen: dict[str, str] = {}
    for node in ast.walk(block):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            home = "anyio_smtp" + ("." + node.module if node.module else "")
            for alias in node.names:
                seen[alias.name] = home if node.module else f"anyio_smtp.{alias.name}"
    assert seen == anyio_smtp._HOMES


def test_the_audit_events_are_reachable_after_a_plain_import() -> None:
    modules = _modules_after(
        "import anyio_smtp\nassert anyio_smtp.audit.AuditEvent.name == 'event'\n"
        "assert 'audit' in anyio_smtp.__all__"
    )
    assert "anyio_smtp.audit" in modules["all"]


def test_an_email_message_is_recognised_without_importing_email_first() -> None:
    modules = _modules_after(
        "from anyio_smtp._types import is_email_message as is_message\n"
        "assert not is_message(b'Subject: x')\n"
        "assert 'email' not in sys.modules\n"
        "from email.message import EmailMessage, Message\n"
        "assert is_message(EmailMessage()) and is_message(Message())\n"
        "assert not is_message('Subject: x')\n"
    )
    assert "email.message" in modules["all"]

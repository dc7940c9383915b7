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


def test_a_plain_import_leaves_the_heavy_modules_unloaded() -> None:
    modules = _modules_after("import anyio_smtp")
    loaded = set(modules["all"])
    assert "anyio_smtp._client" in loaded
    assert loaded.isdisjoint(NOT_LOADED), sorted(loaded.intersection(NOT_LOADED))
    added = loaded - set(modules["anyio"])
    assert added.isdisjoint(NOT_ADDED), sorted(added.intersection(NOT_ADDED))


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

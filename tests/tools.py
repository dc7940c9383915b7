"""Optional tools some tests need: skipped on a developer's machine without them, never in CI."""

from __future__ import annotations

import os
from types import ModuleType
from typing import NoReturn

import pytest


def need(module: str, *, minversion: str | None = None) -> ModuleType:
    """Import ``module`` for a test; without it, skip the test, or fail it when ``CI`` is set.

    ``.ci/run`` installs every tool the tests use, so in CI a missing one is a
    broken set-up, not a reason to skip.
    """
    try:
        found: ModuleType = pytest.importorskip(module, minversion=minversion)
    except pytest.skip.Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs {module}: {exc}")
        raise
    return found


def unavailable(reason: str) -> NoReturn:
    """Something a test needs from the machine is missing: skip, or fail when ``CI`` is set."""
    if os.environ.get("CI"):
        pytest.fail(f"CI needs this: {reason}")
    pytest.skip(reason)

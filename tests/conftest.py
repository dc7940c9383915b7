"""Test configuration shared by every test.

Every async test runs on both anyio backends.  The backends are listed here
explicitly so that a missing trio fails loudly instead of quietly testing
asyncio alone.
"""

from __future__ import annotations

import inspect

import pytest

BACKENDS = ("asyncio", "trio")


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(
    collector: pytest.Module | pytest.Class, name: str, obj: object
) -> None:
    # Hand every coroutine test to anyio's pytest plugin, on both backends.  This
    # runs before parametrisation, so it combines with @pytest.mark.parametrize.
    if collector.istestfunction(obj, name) and inspect.iscoroutinefunction(obj):
        pytest.mark.usefixtures("anyio_backend")(pytest.mark.anyio(obj))

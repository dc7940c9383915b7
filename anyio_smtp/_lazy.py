"""Public names loaded on first use: the module ``__getattr__`` of a package's ``__init__``.

A package lists where each public name lives; importing the package then loads
none of those modules, and the first use of a name loads its home (PEP 562).
Type checkers never see the functions made here (they are defined under
``if not TYPE_CHECKING``), so for them a misspelt name stays an error.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

__all__ = ("lazy_names",)


def lazy_names(
    package: str,
    homes: Mapping[str, str],
    namespace: MutableMapping[str, Any],
    names: Sequence[str],
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``.

    :param homes: each public name and the module that defines it; a name whose
        home is ``package.name`` is that submodule itself
    :param namespace: the package's ``globals()``, where a loaded name is kept
    :param names: the package's ``__all__``
    """

    def __getattr__(name: str) -> object:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(home)
        value = module if home == f"{package}.{name}" else getattr(module, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__

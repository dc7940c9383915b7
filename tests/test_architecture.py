"""The layering of ``anyio_smtp``, checked: no import cycle, and the sans-I/O core stays so."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "anyio_smtp"
#: Modules that decide without doing I/O: they import no anyio, socket or ssl.
SANS_IO = ("_protocol", "_transaction", "auth._exchange")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module of the package ``path`` imports, at any depth of its code."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    # Imports for type checking only are no runtime dependency.
    for block in ast.walk(tree):
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING":
            block.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {target for target in imports_of(path) if target in modules and target != name}
        for name, path in modules.items()
    }


def test_no_import_cycle_inside_the_package() -> None:
    edges = graph()
    # A package imports its own modules to re-export them; that is no cycle.
    for name in list(edges):
        edges[name] = {t for t in edges[name] if not name.startswith(t + ".") or t == name}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == []


def test_the_graph_sees_known_edges() -> None:
    # The check above is only as good as the graph: make sure it is not empty.
    edges = graph()
    assert "anyio_smtp._channel" in edges["anyio_smtp._engine"]
    assert "anyio_smtp._engine" in edges["anyio_smtp._client"]
    assert "anyio_smtp._client" not in edges["anyio_smtp._engine"]


def test_the_core_does_no_io() -> None:
    edges = {name: imports_of(path) for name, path in _modules().items()}
    for name, imported in edges.items():
        if any(name == f"anyio_smtp.{m}" or name.startswith(f"anyio_smtp.{m}.") for m in SANS_IO):
            io = {m for m in imported if m.split(".")[0] in ("anyio", "socket", "ssl", "trio")}
            assert io == set(), f"{name} imports {io}"


def _modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}

"""The package's structure: no import circle among ``ledger`` modules, and nothing below the
``Ledger`` façade (``ledger.core``) imports it (issue 8 item 2).

Every ``import`` statement counts, wherever it is (module top, a function body, an
``if TYPE_CHECKING:`` block): a circle that only type checkers see is still one a reader has
to walk. ``from package import name`` is an edge to ``package.name`` when that is a module,
else to ``package`` itself. Importing a submodule also runs its parents' ``__init__``; those
are not counted as edges (they are the package's own re-exports, and counting them would
make every ``__init__`` that re-exports its submodules a "circle").
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "ledger"
#: Modules allowed to import ``ledger.core``: the package's front, the entry point, the
#: command line, the metering proxy and the testing helpers (they are above the façade).
MAY_IMPORT_CORE = ("ledger", "ledger.__main__", "ledger.cli", "ledger.proxy", "ledger.testing")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))
            if "migrations" not in p.relative_to(ROOT).parts}


def imported(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The ``ledger`` modules that module ``name`` (at ``path``) imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ledger":
                    yield _known(alias.name, known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "ledger":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield sub if sub in known else _known(target, known)


def _known(name: str, known: set[str]) -> str:
    while name not in known and "." in name:  # e.g. `import ledger.x.y` of a package path
        name = name.rpartition(".")[0]
    return name


@functools.cache
def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: {t for t in imported(name, path, known) if t != name}
            for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_imports_of_every_kind() -> None:
    """Issue 8 item 2: relative, absolute, function-local and TYPE_CHECKING imports all count."""
    edges = graph()
    assert "ledger.core" in edges["ledger"]                          # from .core import ...
    assert "ledger.store.ops" in edges["ledger.store.reports"]      # from .ops import ...
    assert "ledger.transport" in edges["ledger"]                    # inside __getattr__
    assert "ledger.core" in edges["ledger.testing"]                 # from ..core import ...
    assert "ledger.reports" in edges["ledger.core"]                 # under TYPE_CHECKING
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_in_the_package() -> None:
    """Issue 8 item 2: no cycle among ``ledger`` modules, not even one only type checkers see."""
    assert cycles(graph()) == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_only_the_front_imports_the_ledger_facade(name: str) -> None:
    """Issue 8 item 2: no module below ``ledger.core`` imports it (it delegates downwards)."""
    allowed = any(name == m or name.startswith(m + ".") for m in MAY_IMPORT_CORE if m != "ledger")
    if name in ("ledger", "ledger.__main__") or allowed:
        return
    assert "ledger.core" not in graph()[name], f"{name} imports ledger.core"

"""The project's modules import one way: no circle among them, and no private name taken from another module.

Every import counts, wherever it is written: at the top, under `if TYPE_CHECKING:` (an annotation-only import is
still a dependency, and a back-import there hides a circle) or inside a function (a lazy import is one too). `from
package import name` depends on `package.name` where that is a module of the project, else on the package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("oomtools", "workload", "infra")


def modules() -> dict[str, Path]:
    """The project's modules by dotted name (a package by its own name, for its __init__.py)."""
    found = {"__main__": ROOT / "__main__.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, list[str], int]]:
    """(the project module imported, the names taken from it, the line) for each import in one module."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package up
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            taken = []
            for alias in node.names:
                if f"{source}.{alias.name}" in known:
                    yield f"{source}.{alias.name}", [], node.lineno
                else:
                    taken.append(alias.name)
            if taken and source in known:
                yield source, taken, node.lineno


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {target for target, _, _ in imports(name, path, known) if target != name} for name, path in known.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of more than one module (Tarjan's algorithm), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_cycle_finder_finds_a_circle_and_nothing_in_a_line() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_module_of_the_project_imports_one_that_imports_it_back() -> None:
    assert cycles(graph()) == []


def test_no_private_name_is_imported_from_another_module() -> None:
    known = modules()
    private = [
        f"{path.relative_to(ROOT)}:{line} imports {', '.join(n for n in names if n.startswith('_'))} from {source}"
        for name, path in known.items()
        for source, names, line in imports(name, path, known)
        if any(n.startswith("_") and not n.startswith("__") for n in names)
    ]
    assert private == []

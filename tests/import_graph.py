"""The project's module import graph, computed from the source with `ast` (no module is imported),
and its strongly connected components: every group of modules that import each other in a circle.

Used by tests/test_import_cycles.py; `python tests/import_graph.py` prints the cycles it finds.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

NOT_PACKAGES = {"tests", "bench", "scripts", "build", "docs", "data", "deploy"}


def top_level_packages(root: Path) -> list[str]:
    """Every directory at the root with an __init__.py (a new top-level package is found by itself)."""
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and (p / "__init__.py").is_file() and p.name not in NOT_PACKAGES and not p.name.startswith("."))


def module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `module` imports: every import statement, at any depth (functions and
    TYPE_CHECKING blocks too: a lazy import is still a dependency)."""

    def nearest(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    targets: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found = nearest(alias.name)
                if found:
                    targets.add(found)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                found = nearest(f"{source}.{alias.name}") if f"{source}.{alias.name}" in known else nearest(source)
                if found:
                    targets.add(found)
    targets.discard(module)
    return targets


def import_graph(root: Path, packages: Iterable[str] | None = None) -> dict[str, set[str]]:
    known = module_files(root, top_level_packages(root) if packages is None else packages)
    return {module: _imported(module, path, known) for module, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def describe(component: list[str], graph: dict[str, set[str]]) -> str:
    """One cycle, with the imports that close it (each member's imports of the other members)."""
    members = set(component)
    edges = [f"{module} -> {target}" for module in component for target in sorted(graph[module] & members)]
    return f"{len(component)} modules import each other: " + "; ".join(edges)


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    graph = import_graph(root)
    for component in cycles(graph):
        print(describe(component, graph))

"""The package's modules import each other without a cycle: read from the source, every import counted
(also those inside functions and under TYPE_CHECKING), so a cycle hidden behind a late import shows too."""

from __future__ import annotations

import ast
from pathlib import Path

import compose_ckpt

PACKAGE = Path(compose_ckpt.__file__).parent


def module_names() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name, for its __init__.py)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("compose_ckpt", *path.relative_to(PACKAGE).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported(path: Path, name: str, modules: set[str]) -> set[str]:
    """The package's modules that the module `name` at `path` imports: `from X import y` counts as X.y when
    that is a module, else as X."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per dot after the first
                base = ".".join(filter(None, [package.rsplit(".", node.level - 1)[0], base]))
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
    return {module for module in found if module in modules and module != name}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as the modules along it, or None (a depth-first search keeping its path)."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node):], node]
        if node in done:
            return None
        for target in sorted(graph[node]):
            if (found := visit(target, [*path, node])) is not None:
                return found
        done.add(node)
        return None

    return next((found for node in sorted(graph) if (found := visit(node, [])) is not None), None)


def test_no_import_cycle_in_the_package() -> None:
    modules = module_names()
    graph = {name: imported(path, name, set(modules)) for name, path in modules.items()}
    assert cycle(graph) is None, " -> ".join(cycle(graph) or [])


def test_the_check_finds_a_cycle() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None

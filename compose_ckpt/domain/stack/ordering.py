"""Dependency order of services: what must be restored before what."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from compose_ckpt.errors import ComposeFileError


def dependency_levels(dependencies: Mapping[str, Iterable[str]], selected: Iterable[str]) -> list[list[str]]:
    """Group `selected` services into levels; each level depends only on earlier ones.

    Dependencies outside `selected` are taken as already satisfied. Services of
    one level can be restored in parallel. A cycle is an error naming it.
    """
    wanted = list(dict.fromkeys(selected))
    remaining = {name: {dep for dep in dependencies.get(name, ()) if dep in wanted and dep != name} for name in wanted}
    levels: list[list[str]] = []
    while remaining:
        ready = [name for name in wanted if name in remaining and not remaining[name]]
        if not ready:
            raise ComposeFileError(f"depends_on forms a cycle: {' -> '.join(_a_cycle(remaining))}")
        levels.append(ready)
        for name in ready:
            del remaining[name]
        for deps in remaining.values():
            deps.difference_update(ready)
    return levels


def _a_cycle(graph: Mapping[str, set[str]]) -> list[str]:
    """One cycle in a graph where every node has an unresolved dependency."""
    path = [next(iter(graph))]
    while path.count(path[-1]) < 2:
        path.append(sorted(graph[path[-1]])[0])
    return path[path.index(path[-1]):]

"""The domain's wings import only downward: transport over host over stack over store (domain/__init__.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import compose_ckpt.domain

DOMAIN = Path(compose_ckpt.domain.__file__).parent
WINGS = ["store", "stack", "host", "transport"]  # bottom first


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def _wing_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if parts[:2] == ["compose_ckpt", "domain"] and len(parts) > 2 and parts[2] in WINGS else None


def test_every_domain_module_lives_in_a_wing_or_is_a_shared_contract() -> None:
    loose = sorted(p.name for p in DOMAIN.glob("*.py") if p.name != "__init__.py")
    assert loose == ["ports.py", "requests.py"]


def test_no_wing_imports_a_wing_above_it() -> None:
    upward = []
    for wing in WINGS:
        for path in sorted((DOMAIN / wing).glob("*.py")):
            for module in _imported_modules(path):
                target = _wing_of(module)
                if target is not None and WINGS.index(target) > WINGS.index(wing):
                    upward.append(f"{wing}/{path.name} imports {module}")
    assert upward == []


def test_the_shared_contracts_import_no_wing_but_the_store() -> None:
    reached = {_wing_of(module) for path in (DOMAIN / "ports.py", DOMAIN / "requests.py")
               for module in _imported_modules(path)}
    assert reached <= {None, "store"}


ENGINE = DOMAIN.parent / "engine"
# Engine modules the domain may import: the package's values (ContainerInfo, RestartPolicy...), and pure
# functions over Docker's JSON and CRIU's log that do no I/O.
PURE_ENGINE_MODULES = {"types", "specs", "criu_log"}


def test_the_domain_reaches_docker_and_the_host_only_through_the_port() -> None:
    reached: dict[str, set[str]] = {}
    for path in sorted(DOMAIN.rglob("*.py")):
        for module in _imported_modules(path):
            parts = module.split(".")
            if parts[0] in ("docker", "requests") or (
                    parts[:2] == ["compose_ckpt", "engine"] and len(parts) > 2 and (ENGINE / f"{parts[2]}.py").exists()
                    and parts[2] not in PURE_ENGINE_MODULES):
                reached.setdefault(str(path.relative_to(DOMAIN)), set()).add(parts[2] if parts[0] == "compose_ckpt" else parts[0])
    assert reached == {}

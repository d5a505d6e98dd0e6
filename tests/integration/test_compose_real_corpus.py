"""Real compose projects (tests/integration/compose_real, origins in its README) against ``docker compose config``.

Every YAML file there is a case (``-f FILE`` from its folder), and so is every folder holding a default
compose file (no ``-f``: discovery, ``.override`` and ``.env`` as compose does them). Nothing is inherited
from the caller's environment but PATH and HOME. The shipped resolver must agree with compose on every
case (same project, or both refuse); the in-house loader (hosts without compose) must agree too, except
where ``BUILTIN_DIFFERS`` names the case and why. ``agreement()`` gives the figures the README quotes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from compose_ckpt.compose import ProjectOptions, load_project
from compose_ckpt.compose.discovery import DEFAULT_FILES
from compose_ckpt.compose.loader import load_project as load_builtin
from compose_ckpt.errors import CkptError
from tests.integration.test_compose_oracle import summary_of_compose, summary_of_ours

pytestmark = pytest.mark.engine

CORPUS = Path(__file__).parent / "compose_real"

# case id -> why the in-house loader cannot agree (compose agrees with itself on all of them).
BUILTIN_DIFFERS: dict[str, str] = {}


@dataclass(frozen=True)
class RealCase:
    id: str
    cwd: Path
    files: tuple[str, ...]


def real_cases() -> list[RealCase]:
    cases = []
    for path in sorted(CORPUS.rglob("*")):
        if path.is_file() and path.suffix in (".yml", ".yaml"):
            cases.append(RealCase(str(path.relative_to(CORPUS)), path.parent, (path.name,)))
        elif path.is_dir() and any((path / name).is_file() for name in DEFAULT_FILES):
            cases.append(RealCase(f"{path.relative_to(CORPUS)}/", path, ()))
    return cases


def environment() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/")}


def oracle(case: RealCase) -> dict[str, Any] | None:
    """compose's resolved project, or None when compose refuses it."""
    args = [arg for f in case.files for arg in ("-f", f)]
    result = subprocess.run(["docker", "compose", *args, "config", "--format", "json"], cwd=case.cwd,
                            env=environment(), capture_output=True, text=True, timeout=60)
    return json.loads(result.stdout) if result.returncode == 0 else None


def verdict(load: Any, case: RealCase, expected: dict[str, Any] | None, environ: dict[str, str]) -> str | None:
    """None when ``load`` agrees with compose on the case, else what differs."""
    try:
        project = load(ProjectOptions(files=case.files, environ=environ, cwd=case.cwd))
    except CkptError as err:
        return None if expected is None else f"refused what compose loads: {err.message}"
    if expected is None:
        return "loaded what compose refuses"
    ours = (project.name, summary_of_ours(project))
    theirs = (expected["name"], summary_of_compose(expected))
    return None if ours == theirs else f"differs: ours {ours} compose {theirs}"


@pytest.fixture(scope="module", autouse=True)
def docker_compose() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("`docker compose` is not available")
        pytest.skip("`docker compose` is not available")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in real_cases()])
def test_shipped_resolver_agrees(case: RealCase) -> None:
    assert verdict(load_project, case, oracle(case), environment()) is None


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in real_cases()])
def test_builtin_loader_agrees(case: RealCase) -> None:
    difference = verdict(load_builtin, case, oracle(case), {**environment(), "COMPOSE_CKPT_COMPOSE": "builtin"})
    if case.id in BUILTIN_DIFFERS:
        assert difference is not None, f"now agrees: drop it from BUILTIN_DIFFERS ({BUILTIN_DIFFERS[case.id]})"
    else:
        assert difference is None


def test_the_corpus_has_both_verdicts() -> None:
    """Cases compose loads and cases it refuses, so both directions of agreement are exercised."""
    verdicts = [oracle(case) is not None for case in real_cases()]
    assert len(verdicts) >= 100 and any(verdicts) and not all(verdicts)


def agreement() -> dict[str, int]:
    """The README's figures: `python -c 'from tests.integration.test_compose_real_corpus import agreement as a; print(a())'`."""
    figures = {"cases": 0, "compose_loads": 0, "shipped_agrees": 0, "builtin_agrees": 0}
    for case in real_cases():
        expected = oracle(case)
        figures["cases"] += 1
        figures["compose_loads"] += expected is not None
        figures["shipped_agrees"] += verdict(load_project, case, expected, environment()) is None
        builtin_env = {**environment(), "COMPOSE_CKPT_COMPOSE": "builtin"}
        figures["builtin_agrees"] += verdict(load_builtin, case, expected, builtin_env) is None
    return figures

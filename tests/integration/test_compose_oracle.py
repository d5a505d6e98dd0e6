"""Both resolvers against the real ``docker compose config``, case by case.

Each case is a folder of ``compose_corpus`` plus the flags and environment to
run with. All sides get exactly the same environment (nothing inherited but
PATH and HOME) and must agree on the project name and, for every active
service, on image, container_name, depends_on (implicit ones included),
network_mode, profiles, labels and replicas; or must all fail. The resolvers:
``load_project`` as shipped (it delegates to compose where installed) and the
in-house loader alone (``COMPOSE_CKPT_COMPOSE=builtin``: hosts without compose).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from compose_ckpt.compose import ProjectOptions, load_project
from compose_ckpt.compose.loader import load_project as load_builtin
from compose_ckpt.errors import CkptError

pytestmark = pytest.mark.engine

CORPUS = Path(__file__).parent / "compose_corpus"
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Case:
    id: str
    folder: str
    cwd: str = "."  # inside the folder
    files: tuple[str, ...] = ()
    project_name: str | None = None
    project_directory: str | None = None
    profiles: tuple[str, ...] = ()
    env_files: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    both_fail: bool = False

    def compose_args(self) -> list[str]:
        args = [arg for f in self.files for arg in ("-f", f)]
        args += [arg for p in self.profiles for arg in ("--profile", p)]
        args += [arg for e in self.env_files for arg in ("--env-file", e)]
        if self.project_name:
            args += ["-p", self.project_name]
        if self.project_directory:
            args += ["--project-directory", self.project_directory]
        return args


CASES = [
    # overrides: the automatic compose.override.yaml, then a third file with -f
    Case("override-auto", "overrides", profiles=("web",)),
    Case("override-three-files", "overrides", files=("compose.yaml", "compose.override.yaml", "prod.yaml"), profiles=("edge",)),
    Case("override-explicit-skips-auto", "overrides", files=("compose.yaml", "prod.yaml"), profiles=("*",)),
    # profiles
    Case("profiles-none", "profiles"),
    Case("profiles-flag", "profiles", profiles=("debug",)),
    Case("profiles-env", "profiles", env={"COMPOSE_PROFILES": "monitoring , tools"}),
    Case("profiles-flag-beats-env", "profiles", profiles=("tools",), env={"COMPOSE_PROFILES": "debug"}),
    Case("profiles-unknown-is-noop", "profiles", profiles=("no-such-profile",)),
    Case("profiles-disabled-dependency", "profiles", profiles=("broken",), both_fail=True),
    Case("profiles-star-is-everything", "profiles", profiles=("*",)),
    # interpolation: every form, .env, process env over .env, --env-file
    Case("interpolation-dotenv", "interpolation", env={"OVERRIDDEN": "from-process", "REGISTRY": "", "TAG": ""}),
    Case("interpolation-env-file", "interpolation", env_files=("alt.env",), env={"OVERRIDDEN": "x"}),
    Case("required-var-missing", "required_var", both_fail=True),
    Case("required-var-empty", "required_var", env={"BUSYBOX_TAG": ""}, both_fail=True),
    Case("required-var-set", "required_var", env={"BUSYBOX_TAG": "1.36"}),
    # depends_on forms and conditions, anchors, replicas
    Case("depends-on-forms", "dependencies"),
    Case("depends-on-undefined-service", "undefined_dependency", both_fail=True),
    Case("anchors-and-merge-keys", "anchors"),
    Case("replicas-and-scale", "replicas"),
    Case("replicas-from-variable", "replicas", env={"WORKERS": "7"}),
    # project names
    Case("name-from-key", "name_key"),
    Case("name-from-key-interpolated", "name_key", env={"STACK_PREFIX": "Team_A"}),
    Case("name-from-flag", "name_key", project_name="flag-name"),
    Case("name-from-env", "name_key", env={"COMPOSE_PROJECT_NAME": "env_name"}),
    Case("name-flag-invalid", "name_key", project_name="Bad.Name", both_fail=True),
    Case("name-and-profiles-from-dotenv", "name_dotenv"),
    Case("name-from-folder-found-in-parent", "My.App_Dir", cwd="nested/deeper"),
    Case("project-directory", "My.App_Dir", cwd="nested", project_directory=".."),
    # COMPOSE_FILE
    Case("compose-file-from-dotenv", "compose_file_env"),
    Case("compose-file-env-separator", "compose_file_env", env={"COMPOSE_FILE": "conf/dev.yml;conf/base.yml", "COMPOSE_PATH_SEPARATOR": ";"}),
    # extends in the same file and from another file
    Case("extends-same-file", "extends", profiles=("full",)),
    Case("extends-other-file", "extends_file"),
    # issue #12: implicit dependencies, include, !reset/!override, multi-document files, merge-then-validate
    Case("implicit-dependencies", "implicit_deps"),
    Case("include-with-env-file", "include", env={"APP_TAG": "1.36"}),
    Case("reset-and-override-tags", "reset_override"),
    Case("multi-document-file", "multi_document"),
    Case("required-false-only-in-override", "required_false_override", files=("compose.yaml", "override.yaml")),
    Case("required-false-override-missing-alone", "required_false_override", files=("override.yaml",), both_fail=True),
    # ... and what compose refuses
    Case("missing-env-file", "missing_env_file", both_fail=True),
    Case("undefined-network", "undefined_network", both_fail=True),
    Case("undefined-volume", "undefined_volume", both_fail=True),
    Case("schema-error", "schema_error", both_fail=True),
    Case("disabled-service-references-are-not-checked", "disabled_references"),
    Case("enabled-service-references-are-checked", "disabled_references", profiles=("debug",), both_fail=True),
]


@pytest.fixture(scope="module")
def docker_compose() -> str:
    docker = shutil.which("docker")
    available = docker is not None and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    if not available:
        message = "`docker compose` is not available"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return docker  # type: ignore[return-value]


def oracle_and_options(case: Case, docker_compose: str) -> tuple[subprocess.CompletedProcess[str], ProjectOptions]:
    cwd = CORPUS / case.folder / case.cwd
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/"), **case.env}
    oracle = subprocess.run(
        [docker_compose, "compose", *case.compose_args(), "config", "--format", "json"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )
    options = ProjectOptions(
        files=case.files,
        project_name=case.project_name,
        project_directory=case.project_directory,
        profiles=case.profiles,
        env_files=case.env_files,
        environ=env,
        cwd=cwd,
    )
    return oracle, options


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_shipped_resolver_agrees_with_docker_compose(case: Case, docker_compose: str) -> None:
    oracle, options = oracle_and_options(case, docker_compose)
    if case.both_fail:
        assert oracle.returncode != 0, f"docker compose accepted it:\n{oracle.stdout}"
        with pytest.raises(CkptError):
            load_project(options)
        return
    assert oracle.returncode == 0, oracle.stderr
    assert_agree(load_project(options), json.loads(oracle.stdout))


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_builtin_loader_agrees_with_docker_compose(case: Case, docker_compose: str) -> None:
    oracle, options = oracle_and_options(case, docker_compose)
    options = ProjectOptions(**{**vars(options), "environ": {**(options.environ or {}), "COMPOSE_CKPT_COMPOSE": "builtin"}})
    if case.both_fail:
        assert oracle.returncode != 0, f"docker compose accepted it:\n{oracle.stdout}"
        with pytest.raises(CkptError):
            load_builtin(options)
        return
    assert oracle.returncode == 0, oracle.stderr
    assert_agree(load_builtin(options), json.loads(oracle.stdout))


def assert_agree(project: Any, expected: dict[str, Any]) -> None:
    assert project.name == expected["name"]
    assert summary_of_ours(project) == summary_of_compose(expected)


def summary_of_ours(project: Any) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "image": s.image,
            "container_name": s.container_name,
            "depends_on": {d.service: (d.condition, d.required) for d in s.depends_on},
            "network_mode": s.network_mode,
            "profiles": list(s.profiles),
            "labels": dict(s.labels),
            "replicas": s.replicas,
        }
        for name, s in project.services.items()
    }


def summary_of_compose(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    def unescape(value: str | None) -> str | None:
        return None if value is None else value.replace("$$", "$")  # `config` re-escapes $

    summary = {}
    for name, s in config["services"].items():
        replicas = (s.get("deploy") or {}).get("replicas")
        summary[name] = {
            "image": unescape(s.get("image")),
            "container_name": unescape(s.get("container_name")),
            "depends_on": {dep: (e["condition"], e["required"]) for dep, e in (s.get("depends_on") or {}).items()},
            "network_mode": unescape(s.get("network_mode")),
            "profiles": s.get("profiles", []),
            "labels": {k: unescape(v) for k, v in (s.get("labels") or {}).items()},
            "replicas": replicas if replicas is not None else s.get("scale", 1),
        }
    return summary


def test_corpus_cases_cover_every_folder() -> None:
    folders = {p.name for p in CORPUS.iterdir() if p.is_dir()}
    assert folders == {c.folder for c in CASES}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES if c.both_fail and not c.project_name])
def test_config_of_what_compose_refuses_exits_3_naming_the_file(case: Case, docker_compose: str) -> None:
    """Through the real CLI and the real compose: exit 3, a file of the case named, compose's own words shown."""
    cwd = CORPUS / case.folder / case.cwd
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/"), **case.env}
    done = subprocess.run([sys.executable, "-m", "compose_ckpt", *case.compose_args(), "config", "--json"],
                          cwd=cwd, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stdout == ""
    assert str(CORPUS / case.folder) in done.stderr.splitlines()[0], done.stderr
    assert "docker compose: " in done.stderr

"""The compose file `adopt` writes and its `.env` change: pure text, read back by the in-house loader.

That compose 2.26 reads it the same way and keeps the stack restorable is proven in
tests/integration/test_holders.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from compose_ckpt.compose import ComposeProject, ProjectOptions
from compose_ckpt.compose.loader import load_project
from compose_ckpt.const import HOLDER_IMAGE, LABEL_HOLDER_FOR, LABEL_NETWORK_HOLDER
from compose_ckpt.domain.stack.adopt import drift
from compose_ckpt.domain.stack.adoptfile import (
    GENERATED_FILE,
    EnvChange,
    Metadata,
    body,
    changed_services,
    generated_services,
    inputs_digest,
    read_metadata,
    render,
    with_setting,
    without_setting,
)
from compose_ckpt.domain.stack.project import Project
from compose_ckpt.engine import ContainerInfo
from compose_ckpt.errors import ConflictError
from tests.fakes import UntouchableEngine

# As `docker compose config --format json` prints them (compose 2.26.1).
CONFIG: dict[str, Any] = {
    "web": {"image": "busybox", "ports": [{"mode": "ingress", "target": 8080, "published": "18080", "protocol": "tcp"}],
            "networks": {"front": {"aliases": ["www"]}, "back": None}, "hostname": "webhost", "dns": ["1.1.1.1"],
            "sysctls": {"net.core.somaxconn": "1024", "kernel.shm_rmid_forced": "1"}, "profiles": ["site"]},
    "db": {"image": "busybox", "container_name": "the-db", "networks": {"back": None}},
    "side": {"image": "busybox", "network_mode": "service:web"},
    "tool": {"image": "busybox", "network_mode": "host"},
}


def test_holders_own_the_namespace_and_services_join_them() -> None:
    services = generated_services(CONFIG)
    assert list(services) == ["web-net", "web", "db-net", "db", "side"]  # nothing for the host-network one
    holder = services["web-net"]
    assert holder["image"] == HOLDER_IMAGE and holder["pull_policy"] == "never"  # never pulled from a registry
    assert holder["ports"] == CONFIG["web"]["ports"] and holder["hostname"] == "webhost" and holder["dns"] == ["1.1.1.1"]
    assert holder["networks"] == {"front": {"aliases": ["web", "www"]}, "back": {"aliases": ["web"]}}
    assert holder["sysctls"] == {"net.core.somaxconn": "1024"} and holder["profiles"] == ["site"]
    assert holder["labels"] == {LABEL_HOLDER_FOR: "web"} and holder["restart"] == "unless-stopped"
    assert services["db-net"]["networks"] == {"back": {"aliases": ["db", "the-db"]}}  # its container name resolves
    assert services["side"] == {"network_mode": "service:web-net"}  # never left in a namespace nobody owns
    text = render(services, Metadata(EnvChange("created"), "digest"))
    assert "ports: !reset ''" in text and "networks: !reset ''" in text and "hostname: !reset ''" in text
    assert "sysctls: !override\n      kernel.shm_rmid_forced: '1'" in text


def test_a_service_named_like_a_holder_is_refused() -> None:
    with pytest.raises(ConflictError, match="web-net"):
        generated_services({"web": {"image": "x"}, "web-net": {"image": "y"}})


def test_the_in_house_loader_reads_the_generated_file_as_compose_does(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(
        "services:\n  web:\n    image: busybox\n    ports: ['18080:8080']\n    hostname: h\n"
        "  side:\n    image: busybox\n    network_mode: service:web\n")
    config: dict[str, dict[str, Any]] = {"web": {"image": "busybox", "ports": [{"target": 8080, "published": "18080"}], "hostname": "h"},
              "side": {"image": "busybox", "network_mode": "service:web"}}
    (tmp_path / GENERATED_FILE).write_text(render(generated_services(config), Metadata(EnvChange("created"), "d")))
    (tmp_path / ".env").write_bytes(with_setting(None, "COMPOSE_FILE", f"compose.yaml:{GENERATED_FILE}")[0])
    project = load_project(ProjectOptions(cwd=tmp_path, environ={}))
    assert list(project.services) == ["web", "side", "web-net"]
    assert project.services["web"].network_mode == "service:web-net"
    assert project.services["web"].labels == {LABEL_NETWORK_HOLDER: "web-net"}
    assert project.services["side"].network_mode == "service:web-net"
    assert project.services["web-net"].labels == {LABEL_HOLDER_FOR: "web"}
    assert [dep.service for dep in project.services["web"].depends_on] == ["web-net"]


@pytest.mark.parametrize("before", [None, b"", b"A=1\n", b"A=1", b"A=1\r\nCOMPOSE_FILE=a.yml\r\nB=2\r\n",
                                    b"COMPOSE_FILE=x.yml\nexport COMPOSE_FILE=a.yml:b.yml\n"],
                         ids=["none", "empty", "lines", "no-final-newline", "crlf-replaced", "last-wins"])
def test_env_is_changed_in_one_line_and_restored_exactly(before: bytes | None) -> None:
    after, change = with_setting(before, "COMPOSE_FILE", f"a.yml:{GENERATED_FILE}")
    assert after.count(f"COMPOSE_FILE=a.yml:{GENERATED_FILE}".encode()) == 1
    if before:
        assert after.startswith(before.split(b"COMPOSE_FILE")[0])  # what came before is kept
    metadata = read_metadata(render({}, Metadata(change, "d")))
    assert metadata is not None and metadata.env == change  # the record survives the file
    assert without_setting(after, "COMPOSE_FILE", metadata.env) == before


@pytest.mark.parametrize("before", [None, b"A=1", b"COMPOSE_PROJECT_NAME=theirs\nCOMPOSE_FILE=a.yml\n"],
                         ids=["none", "no-final-newline", "both-replaced"])
def test_the_project_name_is_written_beside_and_both_are_undone_exactly(before: bytes | None) -> None:
    """adopt given -p also names the project in `.env`, so that plain compose in the folder finds it."""
    with_file, file_change = with_setting(before, "COMPOSE_FILE", f"a.yml:{GENERATED_FILE}")
    after, name_change = with_setting(with_file, "COMPOSE_PROJECT_NAME", "shop")
    assert after.count(b"COMPOSE_PROJECT_NAME=shop") == 1 and after.count(b"COMPOSE_FILE=") == 1
    assert inputs_digest([b"a"], after) == inputs_digest([b"a"], b"A=1\n" if before == b"A=1" else before)
    metadata = read_metadata(render({}, Metadata(file_change, "d", name_change)))
    assert metadata is not None and metadata.project_env == name_change
    undone = without_setting(after, "COMPOSE_PROJECT_NAME", metadata.project_env)
    assert undone is not None and without_setting(undone, "COMPOSE_FILE", metadata.env) == before


def test_drift_is_a_changed_block_not_a_changed_digest() -> None:
    written = render(generated_services(CONFIG), Metadata(EnvChange("created"), "old"))
    assert changed_services(written, generated_services(CONFIG)) == []
    moved = {**CONFIG, "web": {**CONFIG["web"], "ports": [{"target": 8080, "published": "18081"}]}, "new": {"image": "x"}}
    assert changed_services(written, generated_services(moved)) == ["new", "new-net", "web-net"]
    assert body(written) == body(render(generated_services(CONFIG), Metadata(EnvChange("created"), "new")))
    assert inputs_digest([b"a"], b"X=1\nCOMPOSE_FILE=x\n") == inputs_digest([b"a"], b"X=1\n")
    assert inputs_digest([b"a"], None) != inputs_digest([b"b"], None)
    assert read_metadata("services: {}\n") is None


class FakeCompose:
    """`docker compose config` of the user's files: the services it is given, counting calls."""

    def __init__(self, services: dict[str, Any]) -> None:
        self.services = services
        self.calls = 0

    def config(self, files: Sequence[Path], project_name: str, working_dir: Path) -> dict[str, Any]:
        self.calls += 1
        return {"services": self.services}

    def up(self, files: Sequence[Path], project_name: str, working_dir: Path, services: Sequence[str]) -> None:
        raise AssertionError("drift never brings anything up")


def adopted_project(folder: Path, user_file: bytes, registered: bool = True) -> Project:
    """A project as loaded after `adopt`: its user file, the generated file and `.env`."""
    files = [folder / "compose.yaml", *([folder / GENERATED_FILE] if registered else [])]
    contents = [(folder / "compose.yaml").read_bytes(), *([(folder / GENERATED_FILE).read_bytes()] if registered else [])]
    assert contents[0] == user_file
    compose = ComposeProject(name="p", working_dir=folder, config_files=tuple(files), services={}, disabled_services=(),
                             file_contents=tuple(contents))
    return Project(compose, NoContainers())


class NoContainers(UntouchableEngine):
    """Lists no container (none was made without the generated file) and is asked nothing else."""

    def list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        return []


def test_drift_runs_compose_only_when_the_inputs_changed(tmp_path: Path) -> None:
    user = b"services:\n  web:\n    ports: ['1:80']\n"
    (tmp_path / "compose.yaml").write_bytes(user)
    env, change = with_setting(None, "COMPOSE_FILE", f"compose.yaml:{GENERATED_FILE}")
    (tmp_path / ".env").write_bytes(env)
    metadata = Metadata(change, inputs_digest([user], None))
    (tmp_path / GENERATED_FILE).write_text(render(generated_services(CONFIG), metadata))
    compose = FakeCompose(CONFIG)
    assert drift(adopted_project(tmp_path, user), lambda: compose) is None and compose.calls == 0

    edited = user + b"# a comment\n"
    (tmp_path / "compose.yaml").write_bytes(edited)
    assert drift(adopted_project(tmp_path, edited), lambda: compose) is None and compose.calls == 1  # same file

    compose.services = {**CONFIG, "web": {**CONFIG["web"], "ports": [{"target": 8080, "published": "18081"}]}}
    said = drift(adopted_project(tmp_path, edited), lambda: compose)
    assert said is not None and "for web-net" in said and "compose-ckpt adopt" in said
    unregistered = drift(adopted_project(tmp_path, edited, registered=False), lambda: compose)
    assert unregistered is not None and "does not read it" in unregistered

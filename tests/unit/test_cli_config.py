"""`compose-ckpt config`: the resolved project for people and scripts, with the in-house loader (no compose,
no engine needed). The same command through docker compose is in tests/integration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compose_ckpt.cli.main import run
from compose_ckpt.compose.loader import load_project
from compose_ckpt.compose.model import ProjectOptions
from compose_ckpt.domain.stack.ordering import dependency_levels
from compose_ckpt.domain.stack.project import Project
from tests.fakes import UntouchableEngine

VPN_STACK = """
services:
  app:
    image: local/busybox
    network_mode: "service:vpn"
  vpn:
    image: local/busybox
    deploy: {replicas: 1}
  db:
    image: local/debian:bookworm
    container_name: the-db
    depends_on:
      vpn: {condition: service_healthy, required: false}
"""


@pytest.fixture(autouse=True)
def builtin_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPOSE_CKPT_COMPOSE", "builtin")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/compose-ckpt-tests.sock")  # config must not need it
    for name in ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES"):
        monkeypatch.delenv(name, raising=False)


def test_config_json_has_the_stable_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "compose.yaml").write_text(VPN_STACK)
    assert run(["-f", str(tmp_path / "compose.yaml"), "-p", "vpn-stack", "config", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "name": "vpn-stack",
        "services": {
            "app": {"image": "local/busybox", "container_name": None, "network_mode": "service:vpn", "replicas": 1,
                    "depends_on": {"vpn": {"condition": "service_started", "required": True}}},
            "db": {"image": "local/debian:bookworm", "container_name": "the-db", "network_mode": None, "replicas": 1,
                   "depends_on": {"vpn": {"condition": "service_healthy", "required": False}}},
            "vpn": {"image": "local/busybox", "container_name": None, "network_mode": None, "replicas": 1, "depends_on": {}},
        },
    }


def test_config_for_people(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "compose.yaml").write_text(VPN_STACK)
    assert run(["-f", str(tmp_path / "compose.yaml"), "config"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"project {tmp_path.name.lower()}")
    assert "service:vpn" in out and "the-db" in out


def test_config_of_an_invalid_file_exits_3_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  app:\n    image: a\n   bad: indent\n")
    assert run(["-f", str(tmp_path / "compose.yaml"), "config", "--json"]) == 3
    captured = capsys.readouterr()
    assert captured.out == "" and f"{tmp_path / 'compose.yaml'}:4: " in captured.err


def test_restore_order_follows_the_implicit_dependency(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(VPN_STACK)
    project = Project(load_project(ProjectOptions(cwd=tmp_path, environ={})), UntouchableEngine())
    assert dependency_levels(project.dependencies(), ["app", "db", "vpn"]) == [["vpn"], ["app", "db"]]

"""The pure parts of delegating to ``docker compose``: finding a binary we may run, reading what it prints,
locating the file and line of what it refuses. Running the real compose is in tests/integration."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from compose_ckpt.compose.reference import BUILTIN, OVERRIDE_VARIABLE, find_compose, project_from_config
from compose_ckpt.compose.resolve import _locate


def plugin(folder: Path, mode: int = 0o755) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "docker-compose"
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)
    return path


def test_the_users_plugin_folder_comes_first(tmp_path: Path) -> None:
    path = plugin(tmp_path / "cfg" / "cli-plugins")
    (tmp_path / "cfg").chmod(0o755)
    assert find_compose({"DOCKER_CONFIG": str(tmp_path / "cfg")}) == path


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o644], ids=["group-writable", "world-writable", "not-executable"])
def test_a_binary_others_could_replace_is_not_run(tmp_path: Path, mode: int) -> None:
    path = plugin(tmp_path / "cfg" / "cli-plugins", mode)
    assert find_compose({"DOCKER_CONFIG": str(tmp_path / "cfg")}) != path


def test_a_folder_others_could_write_is_not_trusted(tmp_path: Path) -> None:
    folder = tmp_path / "cfg" / "cli-plugins"
    path = plugin(folder)
    folder.chmod(folder.stat().st_mode | stat.S_IWOTH)
    assert find_compose({"DOCKER_CONFIG": str(tmp_path / "cfg")}) != path


def test_the_override_variable(tmp_path: Path) -> None:
    assert find_compose({OVERRIDE_VARIABLE: BUILTIN}) is None
    assert find_compose({OVERRIDE_VARIABLE: "/opt/compose"}) == Path("/opt/compose")


def test_compose_output_becomes_the_model() -> None:
    printed = {
        "name": "p",
        "services": {
            "app": {"image": "reg/app:$${TAG}", "network_mode": "service:vpn", "container_name": "a$$b",
                    "depends_on": {"vpn": {"condition": "service_started", "required": True, "restart": True},
                                   "db": {"condition": "service_healthy", "required": False}},
                    "labels": {"cost": "$$5"}, "deploy": {"replicas": 3}, "profiles": ["x"]},
            "vpn": {"build": {"context": "."}, "scale": 2},
            "db": {"image": "db"},
        },
    }
    project = project_from_config(printed, Path("/w"), (Path("/w/compose.yaml"),), (b"",))
    app = project.services["app"]
    assert (app.image, app.container_name, app.labels["cost"]) == ("reg/app:${TAG}", "a$b", "$5")
    assert app.network_mode == "service:vpn" and app.replicas == 3 and app.profiles == ("x",)
    assert {(d.service, d.condition, d.required) for d in app.depends_on} == {
        ("vpn", "service_started", True), ("db", "service_healthy", False)}
    assert project.services["vpn"].has_build and project.services["vpn"].replicas == 2
    assert project.services["db"].replicas == 1 and project.services["db"].network_mode is None
    document = project.as_dict()
    assert list(document["services"]) == ["app", "db", "vpn"]
    assert document["services"]["app"] == {
        "image": "reg/app:${TAG}", "container_name": "a$b",
        "depends_on": {"db": {"condition": "service_healthy", "required": False},
                       "vpn": {"condition": "service_started", "required": True}},
        "network_mode": "service:vpn", "replicas": 3}


def test_compose_errors_are_located(tmp_path: Path) -> None:
    base = tmp_path / "compose.yaml"
    base.write_text("services:\n  web:\n    image: a\n  db:\n    image: b\n    networks: [nope]\n")
    over = tmp_path / "override.yaml"
    over.write_text("services:\n  web:\n    ports: [x]\n")
    files = (base, over)
    assert _locate(f"validating {over}: services.web.ports.0 must be ...", files) == (over, 3)
    assert _locate('service "db" refers to undefined network nope: invalid compose project', files) == (base, 6)
    assert _locate("service 'db' has neither an image nor a build section", files) == (base, 4)
    assert _locate("error while interpolating services.db.image: required variable X", files) == (base, 5)
    assert _locate("services.web.deploy.replicas: can't set container_name", files) == (over, 2)
    assert _locate("something compose says about no key", files) == (None, None)
    assert _locate("something compose says about no key", (base,)) == (base, None)


def test_an_unreadable_file_is_located_without_a_line(tmp_path: Path) -> None:
    missing = tmp_path / "gone.yaml"
    assert _locate(f"validating {missing}: services.web must be a mapping", (missing,)) == (missing, None)
    assert os.path.exists(tmp_path)

"""The pure parts of delegating to ``docker compose``: finding a binary we may run, reading what it prints,
locating the file and line of what it refuses. Running the real compose is in tests/integration."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from compose_ckpt.compose.docker_compose import BUILTIN, OVERRIDE_VARIABLE, find_compose, project_from_config
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


# --- the subprocess, with stand-ins for compose (shell scripts) ----------------------------------------------


def stand_in(tmp_path: Path, script: str) -> Path:
    path = tmp_path / "bin" / "docker-compose"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    (tmp_path / "compose.yaml").write_text("services:\n  app:\n    image: a\n")
    return path


def load_with(binary: Path, tmp_path: Path) -> object:
    from compose_ckpt.compose import ProjectOptions, load_project

    return load_project(ProjectOptions(cwd=tmp_path, environ={"COMPOSE_CKPT_COMPOSE": str(binary), "PATH": os.environ["PATH"]}))


def test_a_compose_that_ignores_sigterm_is_killed_at_the_time_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from compose_ckpt.compose import docker_compose
    from compose_ckpt.errors import ComposeFileError

    monkeypatch.setattr(docker_compose, "TIMEOUT_SECONDS", 1.0)
    binary = stand_in(tmp_path, f"trap '' TERM\necho $$ > {tmp_path}/pid\nwhile true; do sleep 0.1; done\n")
    started = time.monotonic()
    with pytest.raises(ComposeFileError, match="did not finish reading the files within 1 s"):
        load_with(binary, tmp_path)
    assert time.monotonic() - started < 10
    pid = int((tmp_path / "pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_a_compose_that_grows_is_killed_at_the_memory_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from compose_ckpt.compose import docker_compose
    from compose_ckpt.errors import ComposeFileError

    monkeypatch.setattr(docker_compose, "MAX_RSS_BYTES", 64 * 1024**2)
    grow = "import time\nx = []\nwhile True:\n    x.append(bytearray(8 * 2**20)); time.sleep(0.01)\n"
    binary = stand_in(tmp_path, f"exec {sys.executable} -c '{grow}'\n")
    with pytest.raises(ComposeFileError, match="needed more than 64 MiB"):
        load_with(binary, tmp_path)


def test_compose_refusal_becomes_exit_3_with_its_words(tmp_path: Path) -> None:
    from compose_ckpt.errors import ComposeFileError

    binary = stand_in(tmp_path, "echo 'time=\"x\" level=warning msg=\"obsolete\"' >&2\n"
                                "echo 'service \"app\" refers to undefined network n: invalid compose project' >&2\nexit 15\n")
    with pytest.raises(ComposeFileError) as caught:
        load_with(binary, tmp_path)
    assert caught.value.exit_code == 3 and caught.value.path == str(tmp_path / "compose.yaml")
    assert caught.value.message.endswith("refers to undefined network n: invalid compose project")
    assert "obsolete" not in caught.value.message


def test_output_that_is_not_json_is_an_error(tmp_path: Path) -> None:
    from compose_ckpt.errors import ComposeFileError

    with pytest.raises(ComposeFileError, match="something other than JSON"):
        load_with(stand_in(tmp_path, "echo not json\n"), tmp_path)


def test_an_alias_bomb_in_an_included_or_extended_file_is_refused_before_compose_runs(tmp_path: Path) -> None:
    from compose_ckpt.compose import ProjectOptions, load_project
    from compose_ckpt.errors import ComposeFileError

    never = tmp_path / "never-run"  # a compose that must not be started
    never.write_text("#!/bin/sh\ntouch ran\n")
    never.chmod(0o755)
    lines = ['x-l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"x-l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "bomb.yaml").write_text("\n".join(lines) + "\nservices:\n  b: {image: x, x-bomb: *l8}\n")
    (tmp_path / "mid.yaml").write_text("services:\n  m: {extends: {file: deep/bomb.yaml, service: b}}\n")
    (tmp_path / "compose.yaml").write_text("include:\n  - path: [mid.yaml]\nservices:\n  a: {image: x}\n")
    with pytest.raises(ComposeFileError, match="bomb.yaml.*more than 1000000 values"):
        load_project(ProjectOptions(cwd=tmp_path, environ={"COMPOSE_CKPT_COMPOSE": str(never)}))
    assert not (tmp_path / "ran").exists()


def test_compose_answers_in_the_background_while_the_caller_goes_on(tmp_path: Path) -> None:
    from compose_ckpt.compose import ProjectOptions, start_loading

    go = tmp_path / "go"  # the stand-in answers only once the caller has had its turn
    printed = '{"name": "p", "services": {"app": {"image": "a"}}}'
    binary = stand_in(tmp_path, f"while [ ! -e {go} ]; do sleep 0.01; done\necho '{printed}'\n")
    project = start_loading(ProjectOptions(cwd=tmp_path, environ={"COMPOSE_CKPT_COMPOSE": str(binary), "PATH": os.environ["PATH"]}))
    assert not project.done()
    go.touch()
    assert list(project.result(timeout=60).services) == ["app"]


def test_a_fault_in_the_files_is_raised_before_compose_starts(tmp_path: Path) -> None:
    from compose_ckpt.compose import ProjectOptions, start_loading
    from compose_ckpt.errors import ComposeFileError

    never = tmp_path / "never-run"
    never.write_text("#!/bin/sh\ntouch ran\n")
    never.chmod(0o755)
    with pytest.raises(ComposeFileError):
        start_loading(ProjectOptions(cwd=tmp_path, files=("missing.yaml",), environ={"COMPOSE_CKPT_COMPOSE": str(never)}))
    assert not (tmp_path / "ran").exists()


def test_networks_given_an_ipam_config_are_read_from_the_printed_project() -> None:
    printed = {"name": "p", "services": {}, "networks": {
        "given": {"name": "p_given", "ipam": {"config": [{"subnet": "10.8.0.0/24", "gateway": "10.8.0.1"}]}},
        "picked": {"name": "p_picked", "ipam": {}},
        "outside": {"name": "outside", "external": True},
    }}
    project = project_from_config(printed, Path("/w"), (Path("/w/compose.yaml"),), (b"",))
    assert project.ipam_given == {"p_given"}

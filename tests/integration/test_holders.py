"""Network holders on Docker 28.5.2 (`make engine-28`), the engine that restores only adopted containers.

The stack: kv (redis with a key), api (an in-memory counter, calls the others by name) and web (a
counter served on a published port). Every test here runs against engine-28 whatever
COMPOSE_CKPT_TEST_ENGINE says; under CI=true a missing engine is a failure. After `adopt`, every command
is typed in the project folder with no flag: the project is named in its compose file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing

import pytest

from compose_ckpt.engine import Engine
from compose_ckpt.errors import CkptError
from tests.integration.conftest import engine_missing
from tests.integration.second_engine import free_port
from tests.integration.stack import COUNTER, ENGINE_28_HOST, REPO, Stack, http_get, run_docker
from tests.polling import let_run, wait_for

pytestmark = pytest.mark.engine


@pytest.fixture(autouse=True)
def on_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """DOCKER_HOST at engine-28 for this test, its CLI calls and its teardown (set up first, undone last)."""
    try:
        connected = Engine.connect(ENGINE_28_HOST)
        version = connected.info().server_version
    except CkptError as exc:
        engine_missing(f"{ENGINE_28_HOST}: {exc} (run `make engine-28`)")
        raise
    if not version.startswith("28."):
        engine_missing(f"{ENGINE_28_HOST} runs Docker {version}, not 28")
    monkeypatch.setenv("DOCKER_HOST", ENGINE_28_HOST)
    yield
    connected.close()


def holder_stack(port: int, name: str = "", web_env: str = "first", web_image: str = "local/busybox:latest") -> str:
    return f"""{f"name: {name}" if name else ""}
services:
  kv:
    image: local/debian:bookworm
    command: ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
  api:
    image: local/busybox:latest
    command: ["sh", "-c", "{COUNTER}"]
    depends_on: [kv, web]
  web:
    image: {web_image}
    command: ["sh", "-c", "httpd -p 8080 -h /www; {COUNTER.replace('/tmp/count', '/www/count')}"]
    environment: {{EDITION: {web_env}}}
    tmpfs: [/www]
    ports: ["{port}:8080"]
"""


def networks(stack: Stack) -> list[str]:
    return run_docker("network", "ls", "--filter", f"label=com.docker.compose.project={stack.project}",
                      "--format", "{{.Name}}").stdout.split()


def ids(stack: Stack) -> dict[str, str]:
    lines = run_docker("ps", "-a", "--filter", f"label=com.docker.compose.project={stack.project}",
                       "--format", "{{.Names}} {{.ID}}").stdout.splitlines()
    return dict(line.split() for line in lines)


def web_count(stack: Stack, via: str = "api") -> int:
    """web's counter, fetched by name from another service (so DNS and the holder's aliases work)."""
    container = stack.containers(via)[0]
    return int(run_docker("exec", container, "wget", "-q", "-O", "-", "http://web:8080/count").stdout)


def kv_by_name(stack: Stack) -> str:
    container = stack.containers("api")[0]
    reply = run_docker("exec", container, "sh", "-c", "printf 'GET visits\\r\\nQUIT\\r\\n' | nc kv 6379").stdout
    return reply.split()[1] if reply.startswith("$") else reply.strip()


def in_folder(stack: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A command run in the project's folder as its user types it: no -p, -f or any other flag of ours."""
    done = subprocess.run(list(args), cwd=stack.folder, capture_output=True, text=True, timeout=300)
    assert not check or done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def compose(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return in_folder(stack, "docker", "compose", *args)


def ckpt(stack: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return in_folder(stack, sys.executable, "-m", "compose_ckpt", *args, check=check)


def assert_all_taken(stack: Stack, name: str, containers: int = 3) -> None:
    """`snapshot` in the folder takes every service (never skips one), each container in the restorable form."""
    taken = json.loads(ckpt(stack, "snapshot", "--name", name, "--json").stdout)
    assert sorted(taken["services"]) == ["api", "kv", "web"] and taken["skipped"] == {}, taken
    assert len(taken["containers"]) == containers, taken["containers"]
    ps = json.loads(ckpt(stack, "ps", "--json").stdout)
    assert {row["network"] for row in ps["containers"]} == {"adopted"} and all(row["restorable"] for row in ps["containers"])
    assert ps["drift"] is None


USERS_ENV = b"# the user's own\nCOMPOSE_FILE=compose.yaml\nKEEP=1"  # its own COMPOSE_FILE, no end of line


@pytest.fixture
def adopted(start_stack: Callable[..., Stack], project_name: str) -> tuple[Stack, int]:
    """The stack named in its compose file (so that nothing is passed on the command line), adopted."""
    port = free_port()
    stack = start_stack(holder_stack(port, project_name), settle=0.5, adopt=False)
    (stack.folder / ".env").write_bytes(USERS_ENV)  # adopt keeps it, unadopt restores it exactly
    planned = ckpt(stack, "adopt", "--dry-run")
    assert "compose.ckpt.yaml" in planned.stdout and "COMPOSE_FILE=compose.yaml:compose.ckpt.yaml" in planned.stdout
    assert not (stack.folder / "compose.ckpt.yaml").exists()
    refused = ckpt(stack, "adopt", check=False)  # no terminal to ask on: refused, nothing changed
    assert refused.returncode == 2 and "--yes" in refused.stderr and not (stack.folder / "compose.ckpt.yaml").exists()
    done = json.loads(ckpt(stack, "adopt", "--yes", "-t", "0", "--json").stdout)
    assert done["holders"] == {"kv": "kv-net", "api": "api-net", "web": "web-net"}
    assert (stack.folder / ".env").read_bytes() == USERS_ENV.replace(b"compose.yaml", b"compose.yaml:compose.ckpt.yaml")
    assert json.loads(ckpt(stack, "adopt", "--json").stdout)["changed"] is False  # idempotent
    stack.redis("set", "visits", "42")
    let_run(1)  # the services run a moment after compose (re)started them
    return stack, port


def test_plain_compose_keeps_an_adopted_stack_restorable(adopted: tuple[Stack, int]) -> None:
    """Each everyday compose command, typed in the project folder, leaves every service running and restorable."""
    stack, port = adopted
    names = {f"{stack.project}-{service}-1" for service in ("kv", "api", "web")}
    holders = {f"{stack.project}-{service}-net-1" for service in ("kv", "api", "web")}
    assert set(ids(stack)) == names | holders
    assert_all_taken(stack, "adopted")

    (stack.folder / "compose.yaml").write_text(holder_stack(port, stack.project, web_env="second"))
    compose(stack, "up", "-d")  # an edit: compose recreates web, joined to its holder, which keeps the port
    assert_all_taken(stack, "edited")
    for step in (("up", "-d", "--force-recreate"), ("restart",), ("stop",), ("start",)):
        compose(stack, *step)
        if step != ("stop",):
            assert_all_taken(stack, "-".join(step).strip("-"))
    compose(stack, "up", "-d", "--scale", "api=2")  # the replicas share api's holder (docs/engine.md)
    assert_all_taken(stack, "scaled", containers=4)
    compose(stack, "up", "-d", "--scale", "api=1")
    assert_all_taken(stack, "scaled-back")
    compose(stack, "down")  # takes the holders and the network too
    assert ids(stack) == {} and networks(stack) == []
    compose(stack, "up", "-d")
    assert_all_taken(stack, "down-up")
    run_docker("tag", "local/busybox:latest", f"local/busybox:{stack.project}")
    try:
        (stack.folder / "compose.yaml").write_text(holder_stack(port, stack.project, "second", f"local/busybox:{stack.project}"))
        compose(stack, "up", "-d")  # an image change
        assert_all_taken(stack, "new-image")
        stack.redis("set", "visits", "43")
        let_run(1)  # the services run a moment after compose (re)started them
        before = {service: stack.count(stack.containers(service)[0]) for service in ("api",)}
        ckpt(stack, "snapshot", "--stop", "--name", "final")
        restored = json.loads(ckpt(stack, "restore", "final", "--json").stdout)
        assert {c["verified"] for c in restored["containers"]} == {"memory layout"}
        assert stack.redis("get", "visits") == "43" and kv_by_name(stack) == "43"
        assert stack.count(stack.containers("api")[0]) >= before["api"] > 5  # went on, not from 1
        assert web_count(stack) > 5 and int(http_get(port, "/count")) > 5  # by name and on the published port
    finally:
        compose(stack, "down", "-t", "0")
        run_docker("rmi", f"local/busybox:{stack.project}", check=False)


def test_drift_is_reported_and_unadopt_restores_the_project(adopted: tuple[Stack, int]) -> None:
    stack, port = adopted
    moved = free_port()
    (stack.folder / "compose.yaml").write_text(holder_stack(moved, stack.project))  # a new published port
    ps = ckpt(stack, "ps", "--json")
    assert "compose.ckpt.yaml" in json.loads(ps.stdout)["drift"]
    assert "compose-ckpt adopt" in ckpt(stack, "ps").stderr
    assert "compose-ckpt adopt" in ckpt(stack, "snapshot", "--name", "drifted").stderr  # said, and taken
    doctor = json.loads(ckpt(stack, "doctor", "--json", check=False).stdout)
    assert any("compose-ckpt adopt" in (check.get("remedy") or "") for check in doctor["checks"] if check["status"] == "warn")
    ckpt(stack, "adopt", "--yes", "-t", "0")  # regenerated: the holder publishes the new port
    assert json.loads(ckpt(stack, "ps", "--json").stdout)["drift"] is None
    let_run(1)  # the services run a moment after compose (re)started them
    assert int(http_get(moved, "/count")) > 0

    undone = ckpt(stack, "unadopt", "--yes", "-t", "0")
    assert "3 network holders removed, 3 containers recreated" in undone.stdout, undone.stdout
    assert (stack.folder / ".env").read_bytes() == USERS_ENV
    assert not (stack.folder / "compose.ckpt.yaml").exists()
    assert set(ids(stack)) == {f"{stack.project}-{service}-1" for service in ("kv", "api", "web")}
    ps_rows = json.loads(ckpt(stack, "ps", "--json").stdout)["containers"]
    assert {row["network"] for row in ps_rows} == {"own netns"}


def test_containers_made_with_f_are_named_and_adopt_brings_every_service_back(adopted: tuple[Stack, int]) -> None:
    """`docker compose -f compose.yaml` reads the user's file alone: compose makes the services anew with
    namespaces of their own, and web, left `created`, cannot bind the port its holder keeps. ps names them and
    the remedy; `compose-ckpt adopt` brings every service back joined to its holder, web included."""
    stack, _ = adopted
    failed = in_folder(stack, "docker", "compose", "-f", "compose.yaml", "up", "-d", check=False)
    assert failed.returncode != 0 and "port is already allocated" in failed.stderr, failed.stderr
    drift = json.loads(ckpt(stack, "ps", "--json").stdout)["drift"]
    assert drift and f"{stack.project}-web-1" in drift and "without compose.ckpt.yaml" in drift, drift
    ckpt(stack, "adopt", "--yes", "-t", "0")
    let_run(1)  # the services run a moment after compose (re)started them
    assert_all_taken(stack, "back")


def test_adopt_leaves_a_finished_job_its_container(start_stack: Callable[..., Stack], project_name: str) -> None:
    """A one-shot job that finished (exit 0) keeps its container through adopt, so that the snapshot skips it
    rather than failing on a service without one; compose recreates it joined to its holder at the next `up`."""
    job = '  init:\n    image: local/busybox:latest\n    command: ["sh", "-c", "exit 0"]\n'
    stack = start_stack(holder_stack(free_port(), project_name) + job, settle=0.5, adopt=False)
    finished = wait_for("init to finish", lambda: stack.states()[f"{stack.project}-init-1"] == "exited" or None)
    assert finished and (before := stack.containers("init"))
    ckpt(stack, "adopt", "--yes", "-t", "0")
    let_run(1)  # the services run a moment after compose (re)started them
    taken = json.loads(ckpt(stack, "snapshot", "--json").stdout)
    assert sorted(taken["services"]) == ["api", "kv", "web"] and list(taken["skipped"]) == ["init"], taken
    assert stack.containers("init") == before


def test_a_project_named_with_p_is_named_in_env_for_plain_compose(start_stack: Callable[..., Stack]) -> None:
    """Started and adopted with -p (no `name:`, the folder named otherwise): adopt names the project in `.env`
    too, so that plain compose in the folder acts on it rather than on a second copy named after the folder;
    unadopt removes the `.env` it created."""
    stack = start_stack(holder_stack(free_port()), settle=0.5, adopt=False)
    stack.ckpt_ok("adopt", "--yes", "-t", "0")
    adopted = ids(stack)
    compose(stack, "up", "-d")
    assert ids(stack) == adopted
    let_run(1)  # the services run a moment after compose (re)started them
    assert_all_taken(stack, "named")
    ckpt(stack, "unadopt", "--yes", "-t", "0")
    assert not (stack.folder / ".env").exists() and not (stack.folder / "compose.ckpt.yaml").exists()


def test_non_adopted_stack_is_refused_with_the_remedy_and_keeps_running(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack(holder_stack(free_port()), settle=1.5, adopt=False)
    before = stack.counts_of("api")
    refused = stack.ckpt("snapshot", "--stop")
    assert refused.returncode == 1, refused.stderr
    assert "compose-ckpt adopt" in refused.stderr and "kv" in refused.stderr and "moby#50750" in refused.stderr
    assert set(stack.states().values()) == {"running"}
    assert all(stack.count(c) > value for c, value in before.items())  # never frozen
    assert [s["status"] for s in stack.snapshots()] == []  # nothing recorded
    ps = json.loads(stack.ckpt_ok("ps", "--json").stdout)["containers"]
    assert {row["network"] for row in ps} == {"own netns"} and not any(row["restorable"] for row in ps)
    doctor = json.loads(stack.ckpt("doctor", "--json").stdout)
    needs = next(check for check in doctor["checks"] if check["name"] == "network holders")
    assert needs["status"] == "warn" and "compose-ckpt adopt" in needs["remedy"]


def test_restore_after_the_daemon_restarts(adopted: tuple[Stack, int]) -> None:
    """Holders come back with the daemon (restart policy), then the services are restored into them."""
    stack, port = adopted
    stack.ckpt_ok("snapshot", "--stop", "--name", "reboot")
    for step in ("stop", "up"):
        done = subprocess.run([str(REPO / "scripts" / "engine-28"), step], capture_output=True, text=True)
        assert done.returncode == 0, f"engine-28 {step}: {done.stdout}{done.stderr}"
    stack.ckpt_ok("restore", "reboot")
    assert stack.redis("get", "visits") == "42"
    assert kv_by_name(stack) == "42" and int(http_get(port, "/count")) > 5


def test_a_stack_adopted_with_label_based_holders_is_converted(start_stack: Callable[..., Stack], project_name: str) -> None:
    """The earlier form, a one-off holder `<container>-holder` beside compose's containers, built here as that
    version of adopt built it: `adopt` replaces it by the holder service, and plain compose keeps the result."""
    port = free_port()
    stack = start_stack(holder_stack(port, project_name), settle=0.5, adopt=False)
    with closing(Engine.connect(ENGINE_28_HOST)) as engine:
        image = engine.ensure_holder_image()
    web = f"{stack.project}-web-1"
    compose_labels = [f"--label=com.docker.compose.project={stack.project}", "--label=com.docker.compose.service=web"]
    run_docker("rm", "-f", web)
    run_docker("run", "-d", "--name", f"{web}-holder", *compose_labels, "--label=com.docker.compose.oneoff=True",
               f"--label=compose-ckpt.holder-for={web}", f"--network={stack.project}_default", "--network-alias=web",
               "-p", f"{port}:8080", image)
    run_docker("run", "-d", "--name", web, *compose_labels, "--label=com.docker.compose.oneoff=False",
               "--label=com.docker.compose.container-number=1", f"--label=compose-ckpt.network-holder={web}-holder",
               f"--network=container:{web}-holder", "--tmpfs=/www", "local/busybox:latest",
               "sh", "-c", f"httpd -p 8080 -h /www; {COUNTER.replace('/tmp/count', '/www/count').replace('$$', '$')}")
    assert {row["network"] for row in json.loads(ckpt(stack, "ps", "--json").stdout)["containers"]} == {"adopted", "own netns"}

    converted = json.loads(ckpt(stack, "adopt", "--yes", "-t", "0", "--json").stdout)
    assert f"{web}-holder" in converted["recreated"] and web in converted["recreated"]
    assert set(ids(stack)) == {f"{stack.project}-{name}" for name in
                               ("kv-1", "api-1", "web-1", "kv-net-1", "api-net-1", "web-net-1")}
    compose(stack, "up", "-d")
    let_run(1)  # the services run a moment after compose (re)started them
    assert_all_taken(stack, "converted")
    assert int(http_get(port, "/count")) > 0

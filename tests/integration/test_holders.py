"""Network holders on Docker 28.5.2 (`make engine-28`), the engine that restores only adopted containers.

The stack: kv (redis with a key), api (2 replicas, in-memory counters, calls the others by name) and
web (a counter served on a published port). Every test here runs against engine-28 whatever
COMPOSE_CKPT_TEST_ENGINE says, and those marked `both_engines` (plain `docker compose` on an adopted
stack, which works the same on any Docker version) against the default Docker 26 too; under CI=true a
missing engine is a failure.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from compose_ckpt.engine import Engine
from compose_ckpt.errors import CkptError
from tests.integration.conftest import engine_missing
from tests.integration.second_engine import free_port
from tests.integration.stack import COUNTER, ENGINE_28_HOST, REPO, Stack, http_get, run_docker

pytestmark = pytest.mark.engine


DOCKER_26_HOST = "unix:///var/run/docker.sock"
_MAJOR = {DOCKER_26_HOST: "26", ENGINE_28_HOST: "28"}


@pytest.fixture(autouse=True)
def on_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """DOCKER_HOST at engine-28 (or the engine `both_engines` passes) for this test, its CLI calls and its
    teardown (set up first, undone last)."""
    host = getattr(request, "param", ENGINE_28_HOST)
    try:
        connected = Engine.connect(host)
        version = connected.info().server_version
    except CkptError as exc:
        engine_missing(f"{host}: {exc} (run `make engine` and `make engine-28`)")
        raise
    if not version.startswith(_MAJOR[host] + "."):
        engine_missing(f"{host} runs Docker {version}, not {_MAJOR[host]}")
    monkeypatch.setenv("DOCKER_HOST", host)
    yield
    connected.close()


both_engines = pytest.mark.parametrize("on_engine", list(_MAJOR), indirect=True, ids=["docker26", "docker28"])


def holder_stack(port: int) -> str:
    return f"""
services:
  kv:
    image: local/debian:bookworm
    command: ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
  api:
    image: local/busybox:latest
    command: ["sh", "-c", "{COUNTER}"]
    depends_on: [kv, web]
    deploy:
      replicas: 2
  web:
    image: local/busybox:latest
    command: ["sh", "-c", "httpd -p 8080 -h /www; {COUNTER.replace('/tmp/count', '/www/count')}"]
    tmpfs: [/www]
    ports: ["{port}:8080"]
"""


def service_names(stack: Stack) -> list[str]:
    return sorted(f"{stack.project}-{name}" for name in ("kv-1", "api-1", "api-2", "web-1"))


def holder_names(stack: Stack) -> list[str]:
    return [f"{name}-holder" for name in service_names(stack)]


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


@pytest.fixture
def adopted(start_stack: Callable[..., Stack]) -> tuple[Stack, int]:
    port = free_port()
    stack = start_stack(holder_stack(port), settle=1.5, adopt=False)
    done = stack.ckpt_ok("adopt", "--yes", "-t", "1", "--json")  # a cold restart: state set before it would be gone
    rows = json.loads(done.stdout)["containers"]
    assert sorted(r["container"] for r in rows if r["action"] == "adopted") == sorted(
        f"{stack.project}-{name}" for name in ("kv-1", "api-1", "api-2", "web-1"))
    assert {r["holder"] for r in rows} == {f"{r['container']}-holder" for r in rows}  # one per replica
    stack.redis("set", "visits", "42")
    time.sleep(1.5)
    return stack, port


def test_adopted_stack_survives_snapshot_down_and_restore(adopted: tuple[Stack, int]) -> None:
    stack, port = adopted
    stack.redis("set", "visits", "43")
    before = ids(stack)
    stack.compose("up", "-d")  # plain compose leaves an adopted stack alone
    assert ids(stack) == before
    names = sorted(f"{stack.project}-{n}" for n in ("kv-1", "api-1", "api-2", "web-1"))
    assert sorted(stack.states()) == names and set(stack.states().values()) == {"running"}
    # `ps -a` lists the holders as one-off containers of their service, as it lists `docker compose run` ones
    listed = stack.compose("ps", "-a", "--format", "{{.Name}}").stdout.split()
    assert sorted(listed) == sorted([*names, *(f"{name}-holder" for name in names)])
    ps = json.loads(stack.ckpt_ok("ps", "--json").stdout)["containers"]
    assert {row["network"] for row in ps} == {"adopted"} and all(row["restorable"] for row in ps)

    stack.ckpt_ok("snapshot", "--stop", "--name", "s28")
    stack.compose("down", "-t", "0")  # removes the service containers; the holders are one-off containers
    assert stack.states() == {} and set(ids(stack)) == {f"{name}-holder" for name in names}

    restored = json.loads(stack.ckpt_ok("restore", "s28", "--json").stdout)
    assert all(c["recreated"] for c in restored["containers"])
    assert {c["verified"] for c in restored["containers"]} == {"memory layout"}
    assert stack.redis("get", "visits") == "43"
    counts = stack.counts_of("api")
    assert len(counts) == 2 and all(value > 5 for value in counts.values()), counts  # went on, not from 1
    assert kv_by_name(stack) == "43"  # api reaches kv by name
    assert web_count(stack) > 5  # and web
    assert int(http_get(port, "/count")) > 5  # the published port serves
    after = ids(stack)
    stack.compose("up", "-d")
    assert ids(stack) == after

    # down --remove-orphans takes the holders and the network too, then restore brings back all.
    stack.compose("down", "-t", "0", "--remove-orphans")
    assert ids(stack) == {}
    assert stack.project + "_default" not in run_docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    stack.ckpt_ok("restore", "s28")
    assert stack.redis("get", "visits") == "43"
    assert kv_by_name(stack) == "43" and int(http_get(port, "/count")) > 5


@both_engines
def test_adopt_is_idempotent_and_compose_commands_work(adopted: tuple[Stack, int]) -> None:
    stack, port = adopted
    before = ids(stack)
    again = json.loads(stack.ckpt_ok("adopt", "--yes", "--json").stdout)["containers"]
    assert {row["action"] for row in again} == {"already adopted"}
    assert ids(stack) == before
    # ps lists the service containers; ps -a the holders too, as one-off containers of their service
    assert sorted(stack.compose("ps", "--format", "{{.Name}}").stdout.split()) == service_names(stack)
    listed = dict(line.split() for line in stack.compose("ps", "-a", "--format", "{{.Name}} {{.Service}}").stdout.splitlines())
    assert sorted(listed) == sorted(service_names(stack) + holder_names(stack))
    assert all(listed[f"{name}-holder"] == listed[name] for name in service_names(stack))
    # exec and logs reach the service containers, never their holders (which have no shell and log nothing)
    for index in ("1", "2"):
        assert stack.compose("exec", "-T", "--index", index, "api", "cat", "/tmp/count").stdout.strip().isdigit()
    assert stack.compose("exec", "-T", "api", "cat", "/tmp/count").stdout.strip().isdigit()
    assert "Ready to accept connections" in stack.compose("logs", "kv").stdout
    for up in (("up", "-d"), ("up", "-d", "--remove-orphans")):  # holders are not orphans: their service exists
        stack.compose(*up)
        assert ids(stack) == before
    # stop leaves the holders running, so start and restart rejoin them: same containers, same names
    stack.compose("stop", "-t", "0")
    assert set(stack.states().values()) == {"exited"}
    stack.compose("start")
    stack.compose("restart", "-t", "0", "api")
    assert set(stack.states().values()) == {"running"} and ids(stack) == before
    time.sleep(1)
    stack.redis("set", "visits", "7")  # a cold start: kv is empty again
    assert kv_by_name(stack) == "7" and web_count(stack) > 0 and int(http_get(port, "/count")) > 0
    # kill takes the holders too (compose includes one-off containers there): adopt starts them again
    stack.compose("kill")
    assert "cannot join network" in stack.compose("start", check=False).stderr
    started = json.loads(stack.ckpt_ok("adopt", "--yes", "--json").stdout)["containers"]
    assert {row["action"] for row in started} == {"holder started"}
    assert set(stack.states().values()) == {"exited"}  # the service containers are the user's to start
    stack.compose("start")
    assert set(stack.states().values()) == {"running"} and ids(stack) == before


@both_engines
def test_plain_down_leaves_the_holders_and_the_network(adopted: tuple[Stack, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """No labelling makes a plain `down` take the holders while `up` leaves them alone (docs/engine.md):
    pinned here so that a compose that changes this is noticed."""
    stack, port = adopted
    done = stack.compose("down", "-t", "0")
    assert "Resource is still in use" in done.stderr  # the network: the holders are on it
    assert stack.states() == {} and sorted(ids(stack)) == holder_names(stack)
    assert networks(stack) == [f"{stack.project}_default"]
    failed = stack.compose("up", "-d", check=False)  # the abandoned web holder keeps the published port
    assert failed.returncode != 0 and "port is already allocated" in failed.stderr, failed.stderr
    ps = json.loads(stack.ckpt_ok("ps", "--json").stdout)
    assert sorted(ps["abandoned_holders"]) == holder_names(stack)
    assert "docker compose down --remove-orphans" in stack.ckpt_ok("ps").stderr

    # adopt replaces the abandoned holders by new ones; then plain `up -d` starts the stack
    rows = json.loads(stack.ckpt_ok("adopt", "--yes", "-t", "0", "--json").stdout)["containers"]
    assert {row["action"] for row in rows} == {"adopted"} and len(rows) == 4
    stack.compose("up", "-d")
    assert set(stack.states().values()) == {"running"}
    assert json.loads(stack.ckpt_ok("ps", "--json").stdout)["abandoned_holders"] == []
    time.sleep(1)
    stack.redis("set", "visits", "9")
    assert kv_by_name(stack) == "9" and int(http_get(port, "/count")) > 0

    # down --remove-orphans (here through COMPOSE_REMOVE_ORPHANS=1) takes containers, holders and network
    monkeypatch.setenv("COMPOSE_REMOVE_ORPHANS", "1")
    done = stack.compose("down", "-t", "0")
    assert ids(stack) == {} and networks(stack) == [], done.stderr


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

"""The two ways a dump reaches the store, against the real engine (Docker 26, or engine-28 with adopted stacks):
the daemon's own runtime straight into the store, and the Docker API as the fallback; both restore the data.
A SIGKILL while runc dumps leaves runc to finish, and `recover` puts the stack back."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable

import pytest

from compose_ckpt.engine import Engine, procfs
from compose_ckpt.engine.runtime import find_runtime
from tests.integration.stack import Stack, run_docker
from tests.integration.test_faults import ENGINE_API, run_until, sigkill
from tests.polling import wait_for

pytestmark = pytest.mark.engine
KEY_BYTES = 1024**2


# A redis to fill with `debug populate`, restarted by Docker if it ends (held back by --stop), asking for a
# CRIU option of its own (passed to runc by the direct path).
REDIS = """
services:
  kv:
    image: local/debian:bookworm
    command: ["redis-server", "--enable-debug-command", "yes", "--save", "", "--appendonly", "no",
              "--protected-mode", "no"]
    restart: always
    labels:
      compose-ckpt.criu-options: "file-locks"
"""


def filled(start_stack: Callable[..., Stack], keys: int) -> Stack:
    stack = start_stack(REDIS)
    wait_for("redis to answer", lambda: stack.redis("ping") == "PONG")
    assert stack.redis("debug", "populate", str(keys), "key", str(KEY_BYTES)) == "OK"
    return stack


def dumps(stack: Stack, snapshot: str) -> list[dict[str, object]]:
    return list(json.loads(stack.ckpt_ok("inspect", snapshot, "--json").stdout)["containers"])


def test_the_runtime_found_is_the_one_the_daemon_runs_the_container_with(engine: Engine,
                                                                          start_stack: Callable[..., Stack]) -> None:
    """The truth is runc's own view of its state root: it knows the container, by the daemon's pid for it."""
    stack = start_stack(REDIS)
    container = engine.inspect(stack.containers("kv")[0])
    assert container is not None
    runtime = find_runtime(container.id, container.pid)
    daemon = engine.daemon_pid()
    assert daemon is not None and runtime.root == f"{procfs.daemon_exec_root(daemon)}/runtime-runc/moby"
    state = json.loads(subprocess.run([runtime.binary, "--root", runtime.root, "state", container.id],
                                      capture_output=True, text=True, check=True).stdout)
    assert (state["id"], state["pid"], state["status"]) == (container.id, container.pid, "running")


@pytest.mark.parametrize("mode", [[], ["--stop"]], ids=["leave-running", "stop"])
def test_a_snapshot_dumps_through_the_runtime_into_the_store_and_restores_the_data(
        engine: Engine, start_stack: Callable[..., Stack], mode: list[str]) -> None:
    stack = filled(start_stack, 64)
    digest = stack.redis("debug", "digest")
    container = engine.inspect(stack.containers("kv")[0])
    assert container is not None
    estimate = engine.memory_estimate(container)

    done = stack.ckpt_ok("--progress", "plain", "snapshot", *mode, "--name", "direct", "--json")

    [dump] = json.loads(done.stdout)["containers"]
    assert (dump["dump_path"], dump["dump_fallback"]) == ("runtime", None)
    assert isinstance(dump["size"], int) and dump["size"] > 64 * KEY_BYTES
    # the total shown is the container's anonymous memory, about what CRIU wrote (here within a few %)
    assert estimate is not None and abs(estimate - dump["size"]) < 0.1 * dump["size"], (estimate, dump["size"])
    assert re.search(r"kv-1: dumping \d+\.\d MiB of ~\d+\.\d MiB", done.stderr), done.stderr
    assert dumps(stack, "direct")[0]["dump_rate"] == pytest.approx(dump["size"] / dump["dump_seconds"])
    assert "runtime, full" in stack.ckpt_ok("inspect", "direct").stdout
    kv = stack.containers("kv")[0]
    assert not run_docker("checkpoint", "ls", kv).stdout.splitlines()[1:]  # nothing went through the daemon's folder
    if mode:  # runc ended it: Docker records a kill, and its held restart policy did not start it fresh
        assert run_docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", kv).stdout.split() == ["exited", "137"]
    else:
        stack.redis("flushall")
    stack.ckpt_ok("restore", "direct", *([] if mode else ["--force"]))
    assert stack.redis("dbsize") == "64" and stack.redis("debug", "digest") == digest
    assert stack.restart_policies()[f"{stack.project}-kv-1"] == "always"  # (on Docker 28 its holder is listed too)


def test_the_docker_api_is_the_fallback_and_the_snapshot_says_why(start_stack: Callable[..., Stack]) -> None:
    stack = filled(start_stack, 16)
    digest = stack.redis("debug", "digest")
    done = subprocess.run([*stack_cli(stack), "snapshot", "--name", "api", "--json"], cwd=stack.folder,
                          capture_output=True, text=True, env={**os.environ, "COMPOSE_CKPT_DUMP_PATH": ENGINE_API},
                          timeout=300)
    assert done.returncode == 0, done.stderr
    [dump] = dumps(stack, "api")
    assert dump["dump_path"] == "engine-api" and "COMPOSE_CKPT_DUMP_PATH=engine-api" in str(dump["dump_fallback"])
    assert dump["dump_rate"] is None
    assert "dumped through the Docker API because" in stack.ckpt_ok("inspect", "api").stdout
    stack.redis("flushall")
    stack.ckpt_ok("restore", "api", "--force")
    assert stack.redis("debug", "digest") == digest


def stack_cli(stack: Stack) -> list[str]:
    return [sys.executable, "-m", "compose_ckpt", "-p", stack.project]


@pytest.mark.parametrize("mode", [[], ["--stop"]], ids=["leave-running", "stop"])
def test_a_kill_while_runc_dumps_is_recovered(start_stack: Callable[..., Stack], mode: list[str]) -> None:
    """Killed at the first report of bytes written, which only comes while runc runs: runc, no longer our
    child's child, finishes on its own; `recover` waits for it and puts the service back with its data."""
    stack = filled(start_stack, 600)
    digest = stack.redis("debug", "digest")

    def at_bytes(process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if " MiB/s" in line:
                sigkill(process)
                return

    killed = run_until(stack, ["snapshot", *mode, "--name", "cut"], "dumping", at_bytes)
    if killed.returncode != -9:
        pytest.skip("the dump ended before its first report of bytes written (a very fast disk)")
    assert [s["status"] for s in stack.snapshots()] == ["incomplete"]

    recovered = stack.ckpt("recover")

    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert set(stack.states().values()) == {"running"}
    assert stack.redis("debug", "digest") == digest
    assert [s["status"] for s in stack.snapshots()] == ["failed"]
    kv = stack.containers("kv")[0]
    assert not run_docker("checkpoint", "ls", kv).stdout.splitlines()[1:]
    assert stack.restart_policies()[f"{stack.project}-kv-1"] == "always"  # (on Docker 28 its holder is listed too)

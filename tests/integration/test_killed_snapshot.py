"""SIGKILL a snapshot at any moment, including while the daemon is still dumping a large container:
`recover` waits for the daemon's dump, never deletes the only copy of a state, and ends with every
container running with its state, saying so; or, when a state is really gone, exits 1 saying which."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.stack import BUSYBOX, COUNTER, DEBIAN, Stack, counter_services, run_docker
from tests.integration.test_faults import ENGINE_API, run_until, sigkill
from tests.polling import let_run

pytestmark = pytest.mark.engine

# `big` holds ~300 MiB that CRIU must write, so its dump takes seconds and a kill lands inside it.
BIG_STACK = f"""
services:
  big:
    image: {DEBIAN}
    command: ["sh", "-c", "python3 -c 'import time; b = b\\"x\\" * (300 << 20); time.sleep(10**6)' & {COUNTER}"]
  kept:
    image: {BUSYBOX}
    command: ["sh", "-c", "{COUNTER}"]
    restart: unless-stopped
""" + counter_services("small")


def kill_after(seconds: float) -> Callable[[subprocess.Popen[str]], None]:
    def kill(process: subprocess.Popen[str]) -> None:
        let_run(seconds)  # on purpose: the kill lands this far into the phase
        sigkill(process)
    return kill


def assert_all_running_with_state(stack: Stack, before: dict[str, int]) -> None:
    assert set(stack.states().values()) == {"running"}, stack.states()
    stack.assert_counting_on(before)


def no_docker_checkpoints(stack: Stack) -> bool:
    return not any(run_docker("checkpoint", "ls", c).stdout.splitlines()[1:]
                   for service in ("big", "kept", "small") for c in stack.containers(service))


# By default the daemon's own runtime dumps straight into the store: runc, our child, goes on after the kill.
@pytest.mark.parametrize("args, phase, delay, dump_path", [
    (["snapshot", "--stop"], "dumping", 0.5, None),  # runc goes on dumping `big` after the kill
    (["snapshot", "--stop"], "dumping", 0.5, ENGINE_API),  # the daemon goes on dumping `big` for seconds
    (["snapshot", "--stop"], "dumping", 3.0, ENGINE_API),
    (["snapshot"], "dumping", 0.2, None),  # leave-running: `big` stays frozen while dumped
    (["snapshot"], "dumping", 1.5, ENGINE_API),
    (["snapshot", "--stop"], "waiting for exit", 0.0, None),  # dumps done, containers ending
    (["snapshot", "--stop"], "saving", 0.0, ENGINE_API),  # checkpoints half in the store (saving by hard link is quick)
], ids=["stop-early-in-dump", "stop-early-in-dump-engine-api", "stop-late-in-dump-engine-api", "leave-running-in-dump",
        "leave-running-in-dump-engine-api", "stop-exiting", "stop-saving"])
def test_recover_after_a_kill_at_any_moment(start_stack: Callable[..., Stack], args: list[str], phase: str,
                                             delay: float, dump_path: str | None) -> None:
    stack = start_stack(BIG_STACK, settle=4)
    before = stack.counts_of("big", "kept", "small")

    killed = run_until(stack, [*args, "--name", "cut"], phase, kill_after(delay), dump_path)
    assert killed.returncode == -9, killed.stderr
    recovered = stack.ckpt("--progress", "plain", "recover")

    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert "nothing to recover" not in recovered.stdout
    for service in ("big", "kept", "small"):
        line = next(text for text in recovered.stdout.splitlines() if text.startswith(f"{stack.project}-{service}-1:"))
        assert "running with its state" in line, recovered.stdout
    assert_all_running_with_state(stack, before)
    assert [(s["name"], s["status"]) for s in stack.snapshots()] == [("cut", "failed")]
    assert no_docker_checkpoints(stack)


@pytest.mark.parametrize("dump_path", [None, ENGINE_API], ids=["runtime", "engine-api"])
def test_recover_says_which_state_is_lost_instead_of_nothing_to_recover(
        start_stack: Callable[..., Stack], isolated_store: Path, dump_path: str | None) -> None:
    stack = start_stack("services:\n" + counter_services("one", "two"))
    killed = run_until(stack, ["snapshot", "--stop", "--name", "cut"], "waiting for exit", sigkill, dump_path)
    assert killed.returncode == -9
    one = f"{stack.project}-one-1"
    run_docker("wait", one)
    # Someone deletes the only copy of its state: the daemon's checkpoint, or the store's when the daemon's
    # runtime dumped it straight there.
    if dump_path == ENGINE_API:
        run_docker("checkpoint", "rm", one, "ckpt-cut")
    else:
        shutil.rmtree(isolated_store / "projects" / stack.project / "cut" / "checkpoints" / one)

    recovered = stack.ckpt("recover")

    assert recovered.returncode == 1, recovered.stdout + recovered.stderr
    assert f"{one}: exited without a checkpoint: its in-memory state is lost" in recovered.stderr
    assert f"{stack.project}-two-1: restored from the checkpoint" in recovered.stderr
    assert stack.states()[f"{stack.project}-two-1"] == "running"
    assert "start them fresh" in recovered.stderr
    assert [s["status"] for s in stack.snapshots()] == ["failed"]  # nothing more to try
    assert stack.ckpt_ok("recover").stdout.strip() == "nothing to recover"

"""Surviving a reboot: `snapshot --stop` holds back restart policies, so nothing starts fresh when the
daemon comes back, and a plain `restore` brings every service back with its state and its policy.

The reboot is a stop and start of a second dockerd (tests/integration/second_engine.py), so the shared
default engine keeps running for everyone else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.second_engine import SecondEngine
from tests.integration.stack import BUSYBOX, COUNTER, Stack
from tests.integration.test_faults import ENGINE_API, run_until, sigkill, tiny_disk  # noqa: F401 - tiny_disk is a fixture
from tests.polling import holds_for

pytestmark = pytest.mark.engine

POLICIES = {"always": "always", "unless": "unless-stopped", "retry": "on-failure:3", "plain": None}


def policy_stack() -> str:
    """One in-memory counter per restart policy (none for `plain`)."""
    blocks = []
    for service, policy in POLICIES.items():
        restart = f"    restart: {policy}\n" if policy else ""
        blocks.append(f"  {service}:\n    image: {BUSYBOX}\n    command: [\"sh\", \"-c\", \"{COUNTER}\"]\n{restart}")
    return "services:\n" + "".join(blocks)


@pytest.fixture
def rebootable(second: SecondEngine, tmp_path: Path, project_name: str) -> Iterator[tuple[Stack, SecondEngine]]:
    second.copy_image_from_first(BUSYBOX)
    folder = tmp_path / "stack"
    folder.mkdir()
    (folder / "compose.yaml").write_text(policy_stack())
    stack = Stack(folder, project_name, host=second.unix)
    stack.compose("up", "-d")
    stack.wait_counting(*POLICIES)
    yield stack, second
    stack.down()


@pytest.fixture
def stack(start_stack: Callable[..., Stack]) -> Stack:
    return start_stack(policy_stack())


def inspect(stack: Stack, snapshot: str) -> dict[str, Any]:
    return dict(json.loads(stack.ckpt_ok("inspect", snapshot, "--json").stdout))


def counts(stack: Stack) -> dict[str, int]:
    return stack.counts_of(*POLICIES)


def test_snapshot_stop_survives_a_daemon_restart_and_restore_puts_policies_back(
        rebootable: tuple[Stack, SecondEngine]) -> None:
    stack, second = rebootable
    policies = stack.restart_policies()
    assert sorted(policies.values()) == sorted(p or "no" for p in POLICIES.values())
    before = counts(stack)

    stack.ckpt_ok("snapshot", "--stop", "--name", "before-reboot")
    assert set(stack.restart_policies().values()) == {"no"}  # held back while the stack is down
    recorded = {c["container"]: c["restart_policy"]
                for c in inspect(stack, "before-reboot")["containers"]}
    assert recorded == {name: (policy if policy != "no" else None) for name, policy in policies.items()}

    second.reboot()
    # A daemon starts `always` containers right after it comes up: watch it not do so.
    holds_for("nothing started fresh", lambda: set(stack.states().values()) == {"exited"}, 2)

    restored = stack.ckpt_ok("restore", "--json")
    assert "memory layout" in restored.stdout
    assert set(stack.states().values()) == {"running"}
    stack.assert_counting_on(before)
    assert stack.restart_policies() == policies


PHASES = ["holding restart policy", "pausing", "dumping", "waiting for exit", "saving"]


@pytest.mark.parametrize("phase", PHASES)
def test_a_snapshot_killed_at_any_moment_leaves_the_policies_as_they_were(stack: Stack, phase: str) -> None:
    policies = stack.restart_policies()
    before = counts(stack)

    # Only checkpoints dumped through the Docker API are saved after the window.
    killed = run_until(stack, ["snapshot", "--stop"], phase, sigkill, ENGINE_API if phase == "saving" else None)
    assert killed.returncode == -signal.SIGKILL

    recovered = stack.ckpt_ok("recover")
    assert stack.restart_policies() == policies, recovered.stdout
    assert set(stack.states().values()) == {"running"}, stack.states()
    stack.assert_counting_on(before)


def test_a_failed_snapshot_puts_the_policies_back(stack: Stack, tiny_disk: Path) -> None:  # noqa: F811
    policies = stack.restart_policies()
    done = subprocess.run([sys.executable, "-m", "compose_ckpt", "-p", stack.project, "snapshot", "--stop"],
                          cwd=stack.folder, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COMPOSE_CKPT_HOME": str(tiny_disk)})
    assert done.returncode == 1 and "No space left" in done.stderr
    assert stack.restart_policies() == policies
    assert set(stack.states().values()) == {"running"}


def test_restore_puts_the_policy_on_recreated_containers(stack: Stack) -> None:
    policies = stack.restart_policies()
    stack.ckpt_ok("snapshot", "--stop", "--name", "gone")
    assert [(s["name"], s["kind"]) for s in stack.snapshots()] == [("gone", "clean-stop")]
    assert "clean stop" in stack.ckpt_ok("ls").stdout and "clean stop" in stack.ckpt_ok("inspect", "gone").stdout
    stack.compose("rm", "-f")
    assert stack.restart_policies() == {}
    stack.ckpt_ok("restore", "gone")
    assert stack.restart_policies() == policies
    assert set(stack.states().values()) == {"running"}


def test_a_leave_running_snapshot_does_not_touch_policies(stack: Stack) -> None:
    policies = stack.restart_policies()
    stack.ckpt_ok("snapshot", "--name", "live")
    assert [(s["name"], s["kind"]) for s in stack.snapshots()] == [("live", "live")]
    assert stack.restart_policies() == policies
    assert all(c["restart_policy"] is None for c in inspect(stack, "live")["containers"])
    stack.ckpt_ok("restore", "live", "--force")
    assert stack.restart_policies() == policies

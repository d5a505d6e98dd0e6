"""The commands the host hook runs (`host shutdown` before Docker stops, `host boot` once it is back),
against a second dockerd whose stop and start stand in for the reboot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.second_engine import SecondEngine
from tests.integration.stack import BUSYBOX, COUNTER, Stack
from tests.polling import holds_for, wait_for

pytestmark = pytest.mark.engine

STACK = f"""services:
  plain:
    image: {BUSYBOX}
    command: ["sh", "-c", "{COUNTER}"]
  always:
    image: {BUSYBOX}
    command: ["sh", "-c", "{COUNTER}"]
    restart: always
    depends_on: [plain]
"""


@pytest.fixture
def stack(second: SecondEngine, tmp_path: Path, project_name: str) -> Iterator[Stack]:
    second.copy_image_from_first(BUSYBOX)
    (tmp_path / "compose.yaml").write_text(STACK)
    stack = Stack(tmp_path, project_name, host=second.unix)
    stack.compose("up", "-d")
    stack.wait_counting("plain", "always")
    yield stack
    stack.down()


def hook(stack: Stack, action: str) -> list[dict[str, Any]]:
    """`compose-ckpt host ACTION --project P --json`, as the unit runs it (no compose files: from the labels)."""
    done = stack.ckpt("host", action, "--project", stack.project, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return list(json.loads(done.stdout)["projects"])


def test_shutdown_then_reboot_then_boot_carries_the_stack_on(stack: Stack, second: SecondEngine) -> None:
    policies = stack.restart_policies()
    before = stack.counts_of("plain", "always")

    [shut] = hook(stack, "shutdown")
    assert shut["action"] == "snapshot" and shut["snapshot"].startswith("shutdown-")
    assert set(stack.states().values()) == {"exited"} and set(stack.restart_policies().values()) == {"no"}

    second.reboot()
    # A daemon starts `always` containers right after it comes up: watch it not do so.
    holds_for("restart: always did not start it fresh", lambda: set(stack.states().values()) == {"exited"}, 2)

    [booted] = hook(stack, "boot")
    assert booted["action"] == "restored" and booted["snapshot"] == shut["snapshot"], booted
    after = stack.counts_of("plain", "always")
    assert all(after[c] >= before[c] for c in before), f"a counter started over: {before} -> {after}"
    assert stack.restart_policies() == policies
    assert hook(stack, "boot")[0]["action"] == "skipped"  # running: nothing to do

    # An unplanned reboot (no shutdown hook): Docker starts `always` fresh, `plain` stays down, and the
    # clean stop is no longer safe: the stack ran after it.
    second.reboot()
    wait_for("Docker to start `always` fresh", lambda: "running" in stack.states().values())
    [running] = hook(stack, "boot")
    assert running["action"] == "skipped" and "already running" in running["detail"]
    stack.compose("stop", "-t", "0")
    [stale] = hook(stack, "boot")
    assert stale["action"] == "skipped" and f"newer state on disk than snapshot {shut['snapshot']}" in stale["detail"]


def test_shutdown_skips_a_stopped_project_and_boot_one_without_snapshots(stack: Stack) -> None:
    [fresh] = hook(stack, "boot")
    assert fresh["action"] == "skipped" and "already running" in fresh["detail"]
    stack.compose("stop", "-t", "0")
    [nothing] = hook(stack, "shutdown")
    assert nothing["action"] == "skipped" and nothing["detail"] == "not running"
    [none] = hook(stack, "boot")
    assert none["action"] == "skipped" and none["detail"] == "no complete snapshot"


def test_shutdown_keeps_the_last_two_of_its_own_snapshots(stack: Stack) -> None:
    stack.ckpt_ok("snapshot", "--name", "mine")
    names = []
    for _ in range(3):
        names.append(hook(stack, "shutdown")[0]["snapshot"])
        assert hook(stack, "boot")[0]["action"] == "restored"
    assert [s["name"] for s in stack.snapshots()] == ["mine", *names[1:]]

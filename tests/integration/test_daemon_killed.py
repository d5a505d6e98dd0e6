"""The Docker daemon killed (SIGKILL) in the middle of a restore or a snapshot, on a second daemon so
the shared one keeps running: the first command reports the real error and what state each container
is in; once the daemon is back, `restore --force` (or `recover`) brings the state back."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.integration.second_engine import SecondEngine
from tests.integration.stack import BUSYBOX, COUNTER, Stack
from tests.integration.test_faults import run_until
from tests.polling import let_run

pytestmark = pytest.mark.engine

# ~400 MiB held by awk, so that CRIU works for a while and the kill lands inside it: dumps through the
# runtime and restores through the container's root take a second or so for that at disk speed.
STACK = f"""
services:
  mem:
    image: {BUSYBOX}
    command: ["sh", "-c", "awk 'BEGIN {{ s = sprintf(\\"%400000000s\\", \\"\\"); while (1) system(\\"sleep 1\\") }}' & {COUNTER}"]
  small:
    image: {BUSYBOX}
    command: ["sh", "-c", "{COUNTER}"]
"""


@pytest.fixture
def on_second(second: SecondEngine, monkeypatch: pytest.MonkeyPatch) -> Iterator[SecondEngine]:
    """Every docker and compose-ckpt command of the test goes to the second daemon."""
    if second.docker("image", "inspect", BUSYBOX, check=False).returncode != 0:
        second.copy_image_from_first(BUSYBOX)
    monkeypatch.setenv("DOCKER_HOST", second.unix)
    yield second


def kill_daemon(engine: SecondEngine, delay: float) -> Callable[[subprocess.Popen[str]], None]:
    def kill(_: subprocess.Popen[str]) -> None:
        let_run(delay)  # on purpose: the kill lands this far into the phase
        engine.kill_and_start_again()
    return kill


@pytest.mark.parametrize("delay", [0.0, 0.3, 0.6])
def test_restore_after_the_daemon_was_killed_during_a_restore(on_second: SecondEngine,
                                                              start_stack: Callable[..., Stack], delay: float) -> None:
    stack = start_stack(STACK, settle=3)
    stack.ckpt_ok("snapshot", "--stop", "--name", "keep")

    cut = run_until(stack, ["restore", "keep"], "restoring", kill_daemon(on_second, delay))

    assert cut.returncode != 0 and "Traceback" not in cut.stderr, cut.stderr
    assert "delete checkpoint" not in cut.stderr  # the restore's own error, not a cleanup's
    again = stack.ckpt("restore", "keep", "--force")
    assert again.returncode == 0, again.stdout + again.stderr
    assert set(stack.states().values()) == {"running"}
    assert min(stack.counts_of("mem", "small").values()) > 10  # restored, not started fresh


@pytest.mark.parametrize("delay", [0.0, 0.2])  # runc dumps the 400 MiB in about half a second here
def test_a_daemon_killed_mid_snapshot_is_reported_as_it_is_and_recover_says_what_came_back(
        on_second: SecondEngine, start_stack: Callable[..., Stack], delay: float) -> None:
    stack = start_stack(STACK, settle=3)

    cut = run_until(stack, ["snapshot", "--stop", "--name", "cut"], "dumping", kill_daemon(on_second, delay))

    assert cut.returncode != 0 and "Traceback" not in cut.stderr, cut.stderr
    assert "left running as before" not in cut.stderr  # the containers were not looked at... or are not running
    assert "recover" in cut.stderr
    assert [s["status"] for s in stack.snapshots()] in (["incomplete"], ["failed"])
    recovered = stack.ckpt("recover")
    output = recovered.stdout + recovered.stderr
    assert "nothing to recover" not in output or [s["status"] for s in stack.snapshots()] == ["failed"]
    for container in (f"{stack.project}-mem-1", f"{stack.project}-small-1"):
        if "nothing to recover" not in output:
            assert f"{container}:" in output, output
    # One line per container (the summary line says it of them all): with dumps through the runtime, runc
    # finishes both dumps whatever happens to the daemon, and both come back.
    running_with_state = sum(1 for line in output.splitlines()
                             if line.startswith(f"{stack.project}-") and "running with its state" in line)
    assert (recovered.returncode == 0) == (running_with_state == 2), output
    # A dump the daemon finished is restored; one it was killed in cannot be: that container is named,
    # its checkpoint kept (and the snapshot `incomplete`) or its state called lost.
    status = [s["status"] for s in stack.snapshots()]
    assert status == ["failed"] or (status == ["incomplete"] and "is kept" in output), output

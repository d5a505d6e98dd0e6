"""The fault matrix: whatever goes wrong, the stack ends running with its state, or stopped with a
complete snapshot to restore; never half of each. Exit code and message say what happened."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.stack import Stack, counter_services, run_docker

pytestmark = pytest.mark.engine
REPO = Path(__file__).resolve().parents[2]

FOUR_COUNTERS = "services:\n" + counter_services("c1", "c2", "c3", "c4")
# COMPOSE_CKPT_DUMP_PATH: dumps through the Docker API, whose checkpoints are saved into the store after the
# frozen window (the `saving` phase); by default a local engine's own runtime dumps straight into the store.
ENGINE_API = "engine-api"


@pytest.fixture
def stack(start_stack: Callable[..., Stack]) -> Stack:
    return start_stack(FOUR_COUNTERS)


def services(stack: Stack) -> list[str]:
    return [f"c{i}" for i in range(1, 5)]


def assert_running_with_state(stack: Stack, before: dict[str, int]) -> None:
    assert set(stack.states().values()) == {"running"}, stack.states()
    stack.assert_counting_on(before)


def run_until(stack: Stack, args: list[str], phase: str | Callable[[subprocess.Popen[str], str], bool], then: object,
              dump_path: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run compose-ckpt with plain progress lines; on the first line of `phase` (or the first line for which the
    predicate `phase` holds), call `then(process)`. `dump_path`: its COMPOSE_CKPT_DUMP_PATH."""
    env = None if dump_path is None else {**os.environ, "COMPOSE_CKPT_DUMP_PATH": dump_path}
    process = subprocess.Popen([sys.executable, "-m", "compose_ckpt", "--progress", "plain", "-p", stack.project, *args],
                               cwd=stack.folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if phase(process, line) if callable(phase) else line.rstrip().endswith(f": {phase}"):
            then(process)  # type: ignore[operator]
            break
    stdout, rest = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, "".join(seen) + rest)


def sigkill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)


@pytest.mark.parametrize("args, phase, dump_path", [
    (["snapshot"], "dumping", None),  # every container frozen, dumps under way
    (["snapshot"], "resuming", None),  # some containers resumed, some still frozen
    (["snapshot", "--stop"], "dumping", None),  # some already ended by their dump
    (["snapshot", "--stop"], "dumping", ENGINE_API),  # the same, the daemon dumping
    (["snapshot", "--stop"], "saving", ENGINE_API),  # all ended, checkpoints half saved
], ids=["after-pause", "before-unpause", "stop-mid-dump", "stop-mid-dump-engine-api", "stop-mid-save"])
def test_a_killed_snapshot_is_recovered_by_the_next_command(stack: Stack, args: list[str], phase: str,
                                                             dump_path: str | None) -> None:
    before = stack.counts_of(*services(stack))

    killed = run_until(stack, args, phase, sigkill, dump_path)

    assert killed.returncode == -signal.SIGKILL
    assert [s["status"] for s in stack.snapshots()] == ["incomplete"]
    listed = stack.ckpt("ls")
    assert "compose-ckpt recover" in listed.stderr
    assert stack.ckpt("restore").returncode == 4  # an incomplete snapshot is never restored
    assert_running_with_state(stack, before)  # ... and that restore command recovered the stack first
    assert [s["status"] for s in stack.snapshots()] == ["failed"]


def test_recover_alone_puts_a_frozen_stack_back(stack: Stack) -> None:
    before = stack.counts_of(*services(stack))
    run_until(stack, ["snapshot"], "dumping", sigkill)
    done = stack.ckpt_ok("recover")
    assert "unpaused" in done.stdout
    assert_running_with_state(stack, before)
    assert stack.ckpt_ok("recover").stdout.strip() == "nothing to recover"


def test_a_forced_restore_killed_while_saving_the_current_state_leaves_nothing_frozen(stack: Stack) -> None:
    """Killed as it starts the second safety checkpoint (one at a time): the first container is frozen, dumped
    and not set aside yet. `recover` thaws what it froze: every service runs on from its current state."""
    stack.ckpt_ok("snapshot", "--name", "s")
    before = stack.counts_of(*services(stack))
    saving: list[str] = []

    def on_second_save(process: subprocess.Popen[str], line: str) -> bool:
        if line.rstrip().endswith(": saving current state"):
            saving.append(line)
        return len(saving) == 2

    killed = run_until(stack, ["restore", "s", "--force", "--parallel", "1"], on_second_save, sigkill)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "paused" in stack.states().values(), stack.states()
    recovered = stack.ckpt_ok("recover")
    assert "unpaused (frozen by an interrupted restore --force)" in recovered.stdout, recovered.stdout
    assert_running_with_state(stack, before)
    assert stack.ckpt_ok("recover").stdout.strip() == "nothing to recover"


def test_a_half_written_manifest_file_is_ignored(stack: Stack, isolated_store: Path) -> None:
    stack.ckpt_ok("snapshot", "--name", "good")
    folder = isolated_store / "projects" / stack.project / "good"
    (folder / ".manifest.json.tmp").write_text('{"name": "go')  # a writer killed mid-write leaves this
    assert [(s["name"], s["status"]) for s in stack.snapshots()] == [("good", "complete")]
    stack.ckpt_ok("restore", "good", "--force")


def engine_script(action: str) -> None:
    subprocess.run([str(REPO / "scripts/engine"), action], check=True, capture_output=True, timeout=300)


@pytest.mark.restarts_engine
def test_the_daemon_going_away_mid_snapshot_never_leaves_a_complete_snapshot(stack: Stack) -> None:
    try:
        cut = run_until(stack, ["snapshot", "--stop"], "dumping", lambda _: engine_script("stop"))
    finally:
        engine_script("up")
    assert cut.returncode != 0 and "Traceback" not in cut.stderr
    assert "Docker daemon" in cut.stderr or "failed" in cut.stderr
    assert "complete" not in [s["status"] for s in stack.snapshots()]
    # The daemon stopped the containers itself; the project works again from a fresh start.
    stack.compose("up", "-d")
    stack.wait_counting(*services(stack))
    stack.ckpt_ok("snapshot", "--name", "after")
    assert [s["status"] for s in stack.snapshots()][-1] == "complete"


@pytest.mark.restarts_engine
def test_the_daemon_going_away_mid_restore_leaves_the_snapshot_restorable(stack: Stack) -> None:
    stack.ckpt_ok("snapshot", "--stop", "--name", "keep")
    try:
        cut = run_until(stack, ["restore", "keep"], "restoring", lambda _: engine_script("stop"))
    finally:
        engine_script("up")
    assert cut.returncode != 0 and "Traceback" not in cut.stderr
    stack.ckpt_ok("restore", "keep", "--force")
    assert set(stack.states().values()) == {"running"}
    assert min(stack.counts_of(*services(stack)).values()) > 5  # restored, not started fresh


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    mount.mkdir()
    # mode=0700: a fresh tmpfs is 1777, and a store home others can write is refused
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("mode", [[], ["--stop"]], ids=["leave-running", "stop"])
def test_a_full_disk_while_saving_checkpoints_rolls_back(stack: Stack, tiny_disk: Path, mode: list[str]) -> None:
    before = stack.counts_of(*services(stack))
    done = subprocess.run([sys.executable, "-m", "compose_ckpt", "-p", stack.project, "snapshot", *mode],
                          cwd=stack.folder, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COMPOSE_CKPT_HOME": str(tiny_disk)})
    assert done.returncode == 1 and "No space left" in done.stderr and "Traceback" not in done.stderr
    assert_running_with_state(stack, before)
    for container in stack.containers("c1"):
        assert run_docker("checkpoint", "ls", container).stdout.strip() in ("", "CHECKPOINT NAME")


def test_a_full_disk_while_exporting_leaves_no_archive(stack: Stack, tiny_disk: Path) -> None:
    stack.ckpt_ok("snapshot", "--name", "big")
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\0" * 240 * 1024)  # leaves ~16 KiB: less than the compressed archive
    done = stack.ckpt("export", "big", "-o", str(tiny_disk / "stack.ckpt"))
    assert done.returncode == 1 and "No space left" in done.stderr and "Traceback" not in done.stderr
    assert list(tiny_disk.iterdir()) == [filler]


def test_a_container_that_dies_right_after_its_restore_fails_the_restore(start_stack: Callable[..., Stack],
                                                                         tmp_path: Path) -> None:
    stack = start_stack("""
services:
  fragile:
    image: local/busybox:latest
    command: ["sh", "-c", "while [ ! -f /tmp/die ]; do sleep 0.05; done; exit 3"]
""", settle=0.2)
    stack.ckpt_ok("snapshot", "--stop", "--name", "doomed")
    container = stack.containers("fragile")[0]
    (tmp_path / "die").write_text("")
    run_docker("cp", str(tmp_path / "die"), f"{container}:/tmp/die")  # the restored loop will see it
    done = stack.ckpt("restore", "doomed")
    assert done.returncode == 1 and "right after its restore" in done.stderr and "exit code 3" in done.stderr

"""The core decisions of `recover`, on a fake stack (tests/fakes.py FakeStack) whose snapshot command was
killed at each phase: paused containers are unpaused, those its dump ended are restored from the checkpoint
it kept (Docker's copy, else the store's), held restart policies come back once their container runs, and
the snapshot ends `failed`, never `complete`; a container that cannot be brought back keeps its checkpoint
and its held policy, the snapshot stays `incomplete`, and `recover` fails (exit code 1) until it is back.
The real engine's side: tests/integration/test_recover*.py and test_kill*.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from compose_ckpt.domain.requests import SnapshotRequest
from compose_ckpt.domain.stack import recovery
from compose_ckpt.domain.stack.held_policies import held_policies
from compose_ckpt.domain.stack.recovery import recover_project
from compose_ckpt.domain.stack.snapshot import take_snapshot
from compose_ckpt.domain.store.manifest import SnapshotStatus
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.errors import ExitCode, NotFoundError, RecoveryFailed
from tests.fakes import CommandKilled, FakeStack

STACK = {"db": (), "cache": (), "web": ("db", "cache")}
NAMES = ["p-db-1", "p-cache-1", "p-web-1"]


@pytest.fixture(autouse=True)
def no_quiet_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake's daemon is never still dumping: no need to watch it stay quiet."""
    monkeypatch.setattr(recovery, "QUIET_SECONDS", 0.0)


def processes(stack: FakeStack) -> dict[str, int]:
    return {c.name: c.process for c in stack.containers.values()}


def killed_snapshot(stack: FakeStack, store: SnapshotStore, what: str, name: str, *, stop: bool) -> None:
    """Snapshot `s` killed at that call; then the next command comes, with nothing failing on purpose."""
    stack.kill_at(what, name)
    with pytest.raises(CommandKilled):
        take_snapshot(stack.project(), store, SnapshotRequest(name="s", stop=stop, parallel=1, ignore_rootfs=True))
    stack.revive()
    assert store.load("p", "s").status is SnapshotStatus.INCOMPLETE
    stack.calls.clear()


KILLS = [
    pytest.param(True, False, "policy no", "p-cache-1", id="stop-holding-policies"),
    pytest.param(True, False, "pause", "p-cache-1", id="stop-pausing"),
    pytest.param(True, False, "dump", "p-cache-1", id="stop-dumping"),
    pytest.param(True, False, "save", "p-cache-1", id="stop-saving"),
    pytest.param(True, False, "delete", "p-cache-1", id="stop-dropping-dockers-copies"),
    pytest.param(True, True, "dump", "p-web-1", id="stop-runtime-dumping"),
    pytest.param(False, False, "dump", "p-cache-1", id="live-dumping"),
    pytest.param(False, False, "unpause", "p-cache-1", id="live-resuming"),
    pytest.param(False, True, "unpause", "p-cache-1", id="live-runtime-resuming"),
]


@pytest.mark.parametrize("stop, direct, what, name", KILLS)
def test_recover_puts_every_container_back_running_its_own_process_and_marks_the_snapshot_failed(
        tmp_path: Path, stop: bool, direct: bool, what: str, name: str) -> None:
    stack, store = FakeStack(STACK, direct=direct), SnapshotStore(tmp_path)
    before = processes(stack)
    killed_snapshot(stack, store, what, name, stop=stop)
    lines = recover_project(stack, "p", store)
    assert len(lines) >= len(NAMES)
    assert stack.state() == dict.fromkeys(NAMES, "running")
    assert processes(stack) == before  # unpaused or restored from the kept checkpoint, never started fresh
    assert not any(what == "start" for what, _ in stack.calls)
    assert stack.policies() == dict.fromkeys(NAMES, "always")
    assert held_policies(store, "p") == {}
    assert all(not c.checkpoints for c in stack.containers.values())  # dropped once their container runs
    assert [m.status for m in store.list("p")] == [SnapshotStatus.FAILED]
    assert not (store.snapshot_dir("p", "s") / "checkpoints").exists()
    with pytest.raises(NotFoundError):
        store.latest_complete("p")


@pytest.mark.parametrize("stop, direct, what, name", KILLS)
def test_recover_gives_a_policy_back_only_once_its_container_runs_and_drops_a_checkpoint_only_after(
        tmp_path: Path, stop: bool, direct: bool, what: str, name: str) -> None:
    stack, store = FakeStack(STACK, direct=direct), SnapshotStore(tmp_path)
    killed_snapshot(stack, store, what, name, stop=stop)
    recover_project(stack, "p", store)
    for container in NAMES:
        calls = [what for what, name in stack.calls if name == container]
        running_again = max((i for i, what in enumerate(calls) if what in ("unpause", "start from checkpoint")),
                            default=-1)
        assert all(i > running_again for i, what in enumerate(calls) if what in ("policy always", "delete")), calls


def test_a_container_recover_cannot_restore_keeps_its_checkpoint_and_held_policy_and_recover_fails_until_it_is_back(
        tmp_path: Path) -> None:
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    before = processes(stack)
    killed_snapshot(stack, store, "dump", "p-cache-1", stop=True)
    stack.fail("start from checkpoint", "p-db-1")
    with pytest.raises(RecoveryFailed, match="could not put back p-db-1") as failed:
        recover_project(stack, "p", store)
    assert failed.value.exit_code is ExitCode.FAILURE
    assert "tries again with the checkpoints kept" in (failed.value.hint or "")
    assert stack.state() == {"p-db-1": "exited", "p-cache-1": "running", "p-web-1": "running"}
    assert list(stack.by_name("p-db-1").checkpoints) == ["ckpt-s"]
    assert stack.by_name("p-db-1").policy.name == "no"  # a reboot must not start it fresh over its state
    assert [m.status for m in store.list("p")] == [SnapshotStatus.INCOMPLETE]

    assert recover_project(stack, "p", store)  # the next attempt brings it back
    assert stack.state() == dict.fromkeys(NAMES, "running")
    assert processes(stack) == before
    assert stack.policies() == dict.fromkeys(NAMES, "always")
    assert [m.status for m in store.list("p")] == [SnapshotStatus.FAILED]


@pytest.mark.parametrize("direct", [False, True], ids=["engine-api", "runtime"])
def test_a_snapshot_rolled_back_part_way_is_finished_by_recover(tmp_path: Path, direct: bool) -> None:
    """The failed snapshot could not start db again from its checkpoint (see test_core_snapshot.py): recover
    does it from the checkpoint kept (Docker's, or the store's the runtime wrote), then gives its policy back."""
    stack, store = FakeStack(STACK, direct=direct), SnapshotStore(tmp_path)
    before = processes(stack)
    stack.fail("dump", "p-web-1")
    stack.fail("start from checkpoint", "p-db-1")
    with pytest.raises(Exception, match="not: p-db-1"):
        take_snapshot(stack.project(), store, SnapshotRequest(name="s", stop=True, parallel=1, ignore_rootfs=True))
    recover_project(stack, "p", store)
    assert stack.state() == dict.fromkeys(NAMES, "running")
    assert processes(stack) == before
    assert stack.policies() == dict.fromkeys(NAMES, "always")
    assert all(not c.checkpoints for c in stack.containers.values())
    assert [m.status for m in store.list("p")] == [SnapshotStatus.FAILED]


def test_a_container_started_fresh_since_is_reported_lost_and_the_snapshot_settled_failed(tmp_path: Path) -> None:
    """Its state is gone for good: `recover` says so (exit code 1), the snapshot is `failed` (not blocking the
    next one), and the kept checkpoint of a container that runs something else now is dropped."""
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    killed_snapshot(stack, store, "dump", "p-cache-1", stop=True)
    stack.start(stack.by_name("p-db-1").id)  # `docker start p-db-1`
    stack.calls.clear()
    with pytest.raises(RecoveryFailed, match="p-db-1") as failed:
        recover_project(stack, "p", store)
    assert failed.value.exit_code is ExitCode.FAILURE
    assert any("started fresh since" in line for line in failed.value.details)
    assert "lost" in (failed.value.hint or "")
    assert stack.state() == dict.fromkeys(NAMES, "running")
    assert all(not c.checkpoints for c in stack.containers.values())
    assert [m.status for m in store.list("p")] == [SnapshotStatus.FAILED]


def test_a_container_stopped_during_its_killed_dump_is_reported_lost_not_retried_forever(tmp_path: Path) -> None:
    """cache was being dumped through the API when the command was killed, and was stopped before its dump
    was (the daemon restarted, someone ran `docker stop`): no checkpoint of it exists, only the empty folder
    the snapshot made for it in the store. That is no state to try again with: recover says it is lost and
    settles the snapshot (`failed`), rather than failing every later command on a restore that cannot work."""
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    killed_snapshot(stack, store, "dump", "p-cache-1", stop=True)
    stack.by_name("p-cache-1").status = "exited"
    with pytest.raises(RecoveryFailed, match="p-cache-1") as failed:
        recover_project(stack, "p", store)
    assert "lost" in (failed.value.hint or "")
    assert any("p-cache-1: exited without a checkpoint" in line for line in failed.value.details)
    assert stack.state() == {"p-db-1": "running", "p-cache-1": "exited", "p-web-1": "running"}
    assert [m.status for m in store.list("p")] == [SnapshotStatus.FAILED]
    assert recover_project(stack, "p", store) == []  # settled: nothing left for the next command to trip on


def test_the_next_snapshot_recovers_a_killed_one_first(tmp_path: Path) -> None:
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    before = processes(stack)
    killed_snapshot(stack, store, "dump", "p-cache-1", stop=False)
    take_snapshot(stack.project(), store, SnapshotRequest(name="s2", parallel=1, ignore_rootfs=True))
    assert processes(stack) == before
    assert {m.name: m.status for m in store.list("p")} == {"s": SnapshotStatus.FAILED, "s2": SnapshotStatus.COMPLETE}
    first_new_pause = stack.calls.index(("pause", "p-db-1"))
    assert stack.calls.index(("unpause", "p-db-1")) < first_new_pause  # thawed by the recovery, then frozen anew

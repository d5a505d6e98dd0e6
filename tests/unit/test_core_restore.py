"""The core decisions of a restore, on a fake stack (tests/fakes.py FakeStack) and a snapshot it took: the
order containers come back in (dependencies first), when held restart policies are given back, and what a
failure leaves: what runs, what is put back from the safety checkpoints of `restore --force`, and in which
order. The real engine's side: tests/integration (test_restore_*.py, test_force_restore*.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from compose_ckpt.domain.requests import RestoreRequest, SnapshotRequest
from compose_ckpt.domain.stack import restore as restore_module
from compose_ckpt.domain.stack.held_policies import held_policies
from compose_ckpt.domain.stack.parallel import ProgressEvent
from compose_ckpt.domain.stack.recovery import recover_project
from compose_ckpt.domain.stack.restore import SAVING, RestoreResult, restore_snapshot
from compose_ckpt.domain.stack.snapshot import take_snapshot
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.errors import ConflictError, RestoreFailed
from tests.fakes import Call, CommandKilled, FakeStack

STACK = {"db": (), "cache": (), "web": ("db", "cache")}
NAMES = ["p-db-1", "p-cache-1", "p-web-1"]
DEPENDENCIES = {"p-db-1", "p-cache-1"}


@pytest.fixture(autouse=True)
def no_settling(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake's restored processes do not die later: no need to wait and look again."""
    monkeypatch.setattr(restore_module, "SETTLE_SECONDS", 0.0)


def snapshot_of(stack: FakeStack, store: SnapshotStore, *, stop: bool, layers: bool = False) -> dict[str, int]:
    """Take snapshot `s`; return the process each container ran in it; forget the calls it made."""
    take_snapshot(stack.project(), store, SnapshotRequest(name="s", stop=stop, parallel=1, ignore_rootfs=not layers))
    stack.calls.clear()
    return {c.name: c.process for c in stack.containers.values()}


def restore(stack: FakeStack, store: SnapshotStore, *, force: bool = False, safety: bool = True) -> RestoreResult:
    return restore_snapshot(stack, "p", store, RestoreRequest(snapshot="s", force=force, parallel=1,
                                                              safety_checkpoint=safety))


def processes(stack: FakeStack) -> dict[str, int]:
    return {c.name: c.process for c in stack.containers.values()}


def first(calls: list[Call], what: str, name: str) -> int:
    return calls.index((what, name))


def last(calls: list[Call], what: str, name: str) -> int:
    return max(i for i, call in enumerate(calls) if call == (what, name))


def test_a_restore_starts_the_dependencies_before_the_services_that_depend_on_them(tmp_path: Path) -> None:
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    recorded = snapshot_of(stack, store, stop=True)
    result = restore(stack, store)
    calls = stack.calls
    web_starts = first(calls, "start from checkpoint", "p-web-1")
    assert all(first(calls, "start from checkpoint", name) < web_starts for name in DEPENDENCIES)
    for name in NAMES:  # placed, started from it, then Docker's copy dropped (the store keeps the snapshot)
        assert first(calls, "place", name) < first(calls, "start from checkpoint", name) < first(calls, "delete", name)
    assert stack.state() == dict.fromkeys(NAMES, "running")
    assert processes(stack) == recorded
    assert [c.verified for c in result.containers] == ["memory layout"] * 3
    assert all(record.last_restore is not None for record in store.load("p", "s").containers)
    assert all(not c.checkpoints for c in stack.containers.values())


def test_held_policies_are_given_back_only_once_every_container_runs_restored(tmp_path: Path) -> None:
    """Not before: `always` on a container whose restore then fails would have Docker start it fresh."""
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    snapshot_of(stack, store, stop=True)
    restore(stack, store)
    calls = stack.calls
    last_start = max(last(calls, "start from checkpoint", name) for name in NAMES)
    assert all(first(calls, "policy always", name) > last_start for name in NAMES)
    assert stack.policies() == dict.fromkeys(NAMES, "always")
    assert held_policies(store, "p") == {}


def test_a_removed_container_is_recreated_with_its_policy_held_until_it_runs_restored(tmp_path: Path) -> None:
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    recorded = snapshot_of(stack, store, stop=True)
    del stack.containers[stack.by_name("p-web-1").id]  # docker rm
    restore(stack, store)
    web = stack.by_name("p-web-1")
    calls = stack.calls
    assert first(calls, "create", "p-web-1") < first(calls, "start from checkpoint", "p-web-1") \
        < first(calls, "policy always", "p-web-1")
    assert ("policy no", "p-web-1") not in calls  # created with `no` already
    assert web.status == "running" and web.process == recorded["p-web-1"] and web.policy.name == "always"


def test_running_containers_are_refused_without_force_and_nothing_is_touched(tmp_path: Path) -> None:
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    snapshot_of(stack, store, stop=False)
    with pytest.raises(ConflictError, match="running"):
        restore(stack, store)
    assert stack.calls == []


@pytest.mark.parametrize("failing", NAMES)
def test_a_failed_restore_starts_nothing_that_depends_on_the_failed_container_and_keeps_policies_held(
        tmp_path: Path, failing: str) -> None:
    """No rollback of what was restored (it runs the snapshot's state, as asked), but nothing that depends on a
    container that did not come back is started; restart policies stay held (`no`): no container is
    started fresh by Docker over its checkpoint; Docker's copies of the checkpoints are dropped."""
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    recorded = snapshot_of(stack, store, stop=True)
    stack.fail("start from checkpoint", failing)
    with pytest.raises(RestoreFailed, match=f"restore of {failing} failed") as failed:
        restore(stack, store)
    started = [name for what, name in stack.calls if what == "start from checkpoint"]
    if failing in DEPENDENCIES:
        assert "p-web-1" not in started
    assert stack.state() == {name: "running" if name in started else "exited" for name in NAMES}
    assert all(processes(stack)[name] == recorded[name] for name in started)
    assert any(line.startswith(f"restored before the failure: {', '.join(started) or 'none'};")
               for line in failed.value.details)
    assert stack.policies() == dict.fromkeys(NAMES, "no")
    assert {held.container for held in held_policies(store, "p").values()} == set(NAMES)
    assert all(not c.checkpoints for c in stack.containers.values())
    assert not any(what == "start" for what, _ in stack.calls)  # nothing started fresh
    assert all(record.last_restore is None for record in store.load("p", "s").containers)  # no restore noted


def test_force_sets_aside_every_running_container_with_a_safety_checkpoint_before_killing_any(
        tmp_path: Path) -> None:
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    recorded = snapshot_of(stack, store, stop=False)
    stack.move_on()
    restore(stack, store, force=True)
    calls = stack.calls
    first_kill = min(first(calls, "kill", name) for name in NAMES)
    for name in NAMES:  # frozen, so that nothing happens between its safety checkpoint and the kill
        assert first(calls, "pause", name) < first(calls, "dump", name) < first_kill
    assert processes(stack) == recorded
    assert all(not c.checkpoints for c in stack.containers.values())  # safety checkpoints dropped once restored


def test_a_failed_forced_restore_puts_back_what_ran_before_from_the_safety_checkpoints(tmp_path: Path) -> None:
    """web's restore fails after db and cache were restored: those are killed again, and all three come back
    from their safety checkpoints, their layers first (the checkpoints hold those files open)."""
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    snapshot_of(stack, store, stop=False, layers=True)
    stack.move_on()
    before = processes(stack)
    stack.fail("start from checkpoint", "p-web-1")
    with pytest.raises(RestoreFailed, match="restore of p-web-1 failed") as failed:
        restore(stack, store, force=True)
    calls = stack.calls
    for name in DEPENDENCIES:  # restored from the snapshot, then killed again
        assert first(calls, "start from checkpoint", name) < last(calls, "kill", name)
    for name in NAMES:
        undone = last(calls, "write layer", name)
        assert undone > first(calls, "write layer", name)  # the layer as it was before the restore
        assert undone < last(calls, "start from checkpoint", name) < last(calls, "delete", name)
        assert f"{name}: running again with its state from before the restore" in failed.value.details
    assert stack.state() == dict.fromkeys(NAMES, "running")
    assert processes(stack) == before
    assert all(not c.checkpoints for c in stack.containers.values())


def test_a_safety_checkpoint_that_cannot_be_taken_stops_the_restore_before_anything_is_killed(
        tmp_path: Path) -> None:
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    snapshot_of(stack, store, stop=False)
    stack.move_on()
    before = processes(stack)
    stack.fail("dump", "p-cache-1")
    with pytest.raises(RestoreFailed, match="nothing was changed, every service runs as before"):
        restore(stack, store, force=True)
    assert {what for what, _ in stack.calls} <= {"pause", "dump", "unpause", "delete"}
    assert stack.state() == dict.fromkeys(NAMES, "running")
    assert processes(stack) == before
    assert all(not c.checkpoints for c in stack.containers.values())  # the safety checkpoints taken are dropped


def test_without_safety_checkpoints_a_failed_forced_restore_leaves_the_unrestored_containers_stopped(
        tmp_path: Path) -> None:
    """--no-safety-checkpoint discards the state that ran: there is nothing to put back."""
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    recorded = snapshot_of(stack, store, stop=False)
    stack.move_on()
    stack.fail("start from checkpoint", "p-web-1")
    with pytest.raises(RestoreFailed):
        restore(stack, store, force=True, safety=False)
    assert "dump" not in {what for what, _ in stack.calls}
    assert stack.state() == {"p-db-1": "running", "p-cache-1": "running", "p-web-1": "exited"}
    assert processes(stack)["p-db-1"] == recorded["p-db-1"]


@pytest.mark.parametrize("what", ["kill", "write layer"])
def test_a_forced_restore_that_fails_before_any_start_puts_every_container_back_from_its_safety_checkpoint(
        tmp_path: Path, what: str) -> None:
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    snapshot_of(stack, store, stop=False, layers=True)
    stack.move_on()
    before = processes(stack)
    stack.fail(what, "p-cache-1")
    with pytest.raises(Exception, match=f"{what} of p-cache-1 failed"):
        restore(stack, store, force=True)
    assert not any(what == "place" for what, _ in stack.calls)
    assert stack.state() == dict.fromkeys(NAMES, "running")
    assert processes(stack) == before
    assert all(not c.checkpoints for c in stack.containers.values())


def test_a_restore_of_some_services_touches_only_their_containers(tmp_path: Path) -> None:
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    recorded = snapshot_of(stack, store, stop=True)
    restore_snapshot(stack, "p", store, RestoreRequest(snapshot="s", services=("db",), parallel=1))
    assert {name for _, name in stack.calls} == {"p-db-1"}
    assert stack.state() == {"p-db-1": "running", "p-cache-1": "exited", "p-web-1": "exited"}
    assert processes(stack)["p-db-1"] == recorded["p-db-1"]
    assert stack.policies() == {"p-db-1": "always", "p-cache-1": "no", "p-web-1": "no"}  # theirs still held


def test_a_stack_started_without_restore_gets_its_held_policies_back_before_the_next_snapshot_reads_them(
        tmp_path: Path) -> None:
    """After a --stop snapshot the user starts the stack fresh (`docker compose start`): the policies still
    `no` are given back first, so the next --stop snapshot records `always`, not `no`, and its restore gives
    `always` back."""
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    snapshot_of(stack, store, stop=True)
    for name in NAMES:
        stack.start(stack.by_name(name).id)
    take_snapshot(stack.project(), store, SnapshotRequest(name="s2", stop=True, parallel=1, ignore_rootfs=True))
    assert {r.container_name: r.restart_policy for r in store.load("p", "s2").containers} == \
        dict.fromkeys(NAMES, "always")
    restore_snapshot(stack, "p", store, RestoreRequest(snapshot="s2", parallel=1))
    assert stack.policies() == dict.fromkeys(NAMES, "always")
    assert held_policies(store, "p") == {}


def test_safety_checkpoints_dumped_into_the_store_show_their_bytes_and_a_failure_puts_back_from_there(
        tmp_path: Path) -> None:
    """With the daemon's runtime at hand the safety checkpoints go into the store (private, bytes shown), and
    the rollback places each for the daemon before its start; none is left once every container runs."""
    stack, store = FakeStack(STACK, direct=True), SnapshotStore(tmp_path)
    snapshot_of(stack, store, stop=False)
    stack.move_on()
    before = processes(stack)
    stack.fail("start from checkpoint", "p-web-1")
    stack.estimate = 2  # what the engine says each container's memory is: a dump's estimated total
    events: list[tuple[str, str | ProgressEvent]] = []
    with pytest.raises(RestoreFailed, match="restore of p-web-1 failed") as failed:
        restore_snapshot(stack, "p", store, RestoreRequest(snapshot="s", force=True, parallel=1),
                         progress=lambda name, phase: events.append((name, phase)))
    calls = stack.calls
    for name in NAMES:
        assert (name, ProgressEvent(SAVING, 1, 2, estimated=True)) in events  # the fake's dump writes 1 byte
        assert last(calls, "place", name) < last(calls, "start from checkpoint", name)
        assert f"{name}: running again with its state from before the restore" in failed.value.details
    assert processes(stack) == before
    assert all(not c.checkpoints for c in stack.containers.values())
    assert list((store.project_dir("p") / ".safety").iterdir()) == []


def test_safety_checkpoints_in_the_store_are_removed_after_a_restore_that_succeeds(tmp_path: Path) -> None:
    stack, store = FakeStack(STACK, direct=True), SnapshotStore(tmp_path)
    recorded = snapshot_of(stack, store, stop=False)
    stack.move_on()
    restore(stack, store, force=True)
    assert processes(stack) == recorded
    assert list((store.project_dir("p") / ".safety").iterdir()) == []


def killed_forced_restore(stack: FakeStack, store: SnapshotStore, step: str, container: str) -> None:
    """`restore --force` killed at `step` of `container`."""
    stack.kill_at(step, container)
    with pytest.raises(CommandKilled):
        restore(stack, store, force=True)


def test_recover_puts_back_from_the_store_what_a_killed_forced_restore_set_aside(tmp_path: Path) -> None:
    stack, store = FakeStack(STACK, direct=True), SnapshotStore(tmp_path)
    snapshot_of(stack, store, stop=False)
    stack.move_on()
    before = processes(stack)
    killed_forced_restore(stack, store, "start from checkpoint", "p-db-1")
    stack.revive()
    lines = recover_project(stack, "p", store)
    for name in NAMES:
        assert f"{name}: running again with its state from before the restore" in lines
    assert processes(stack) == before
    assert list((store.project_dir("p") / ".safety").iterdir()) == []


def test_recover_removes_the_safety_checkpoints_of_a_forced_restore_killed_before_it_noted_them(
        tmp_path: Path) -> None:
    """Killed while it dumped web: db's and cache's are in the store, never to be put back (nothing was killed)."""
    stack, store = FakeStack(STACK, direct=True), SnapshotStore(tmp_path)
    snapshot_of(stack, store, stop=False)
    killed_forced_restore(stack, store, "dump", "p-web-1")
    assert len(list((store.project_dir("p") / ".safety").iterdir())) == 1
    stack.revive()
    recover_project(stack, "p", store)
    assert list((store.project_dir("p") / ".safety").iterdir()) == []


def test_recover_thaws_what_a_forced_restore_killed_while_dumping_had_frozen(tmp_path: Path) -> None:
    """Killed while it dumped web for its safety checkpoint: what it had frozen is thawed by the next command's
    recovery, running with its state (nothing was killed)."""
    stack, store = FakeStack(STACK, direct=True), SnapshotStore(tmp_path)
    snapshot_of(stack, store, stop=False)
    stack.move_on()
    before = processes(stack)
    killed_forced_restore(stack, store, "dump", "p-web-1")
    stack.revive()
    assert any(container.paused for container in stack.list_containers({}))

    lines = recover_project(stack, "p", store)

    assert not any(container.paused for container in stack.list_containers({}))
    assert any("unpaused (frozen by an interrupted restore --force)" in line for line in lines)
    assert processes(stack) == before and store.freezing("p") is None

"""The core decisions of a snapshot, on a fake stack (tests/fakes.py FakeStack): which containers are frozen,
dumped and resumed, in which order; and what a failure at each step puts back, and in which order.

What every failure must leave, whatever the step: each container running the very process it ran before
(nothing started fresh, nothing left paused or stopped), its restart policy as it was, no checkpoint left in
the daemon's folder or the store, and the snapshot `failed`, never `complete`. The exact call sequences of
two cases are pinned in test_snapshot_rollback_order.py; the real engine's side in
tests/integration/test_snapshot_rollback.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from compose_ckpt.domain.requests import SnapshotRequest
from compose_ckpt.domain.stack.held_policies import held_policies
from compose_ckpt.domain.stack.parallel import ProgressEvent
from compose_ckpt.domain.stack.snapshot import take_snapshot
from compose_ckpt.domain.store.manifest import SnapshotStatus
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.errors import SnapshotFailed
from tests.fakes import PROCESS_FILE, FakeStack, grouped

STACK = {"db": (), "cache": (), "web": ("db", "cache")}
NAMES = ["p-db-1", "p-cache-1", "p-web-1"]
ALL = set(NAMES)


def snapshot(stack: FakeStack, store: SnapshotStore, *, stop: bool, layers: bool = False) -> None:
    # One at a time: the steps before a failure are then always the same.
    take_snapshot(stack.project(), store, SnapshotRequest(name="s", stop=stop, parallel=1, ignore_rootfs=not layers))


def test_a_live_snapshot_freezes_every_container_before_the_first_dump_and_resumes_them_after_the_last(
        tmp_path: Path) -> None:
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    before = {c.name: c.process for c in stack.containers.values()}
    snapshot(stack, store, stop=False)
    assert grouped(stack.calls) == [("pause", ALL), ("dump", ALL), ("unpause", ALL), ("save", ALL), ("delete", ALL)]
    assert stack.state() == dict.fromkeys(NAMES, "running")
    assert {c.name: c.process for c in stack.containers.values()} == before
    manifest = store.load("p", "s")
    assert manifest.status is SnapshotStatus.COMPLETE and not manifest.stopped
    assert all(r.restart_policy is None for r in manifest.containers)  # nothing held back by a live snapshot


def test_the_layers_are_copied_while_frozen(tmp_path: Path) -> None:
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    snapshot(stack, store, stop=False, layers=True)
    assert grouped(stack.calls)[:3] == [("pause", ALL), ("dump", ALL), ("read layer", ALL)]
    assert grouped(stack.calls)[3] == ("unpause", ALL)


def test_a_stop_snapshot_holds_every_restart_policy_before_the_freeze_and_keeps_them_held(tmp_path: Path) -> None:
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    snapshot(stack, store, stop=True)
    assert grouped(stack.calls) == [("policy no", ALL), ("pause", ALL), ("dump", ALL), ("save", ALL), ("delete", ALL)]
    assert stack.state() == dict.fromkeys(NAMES, "exited")
    assert stack.policies() == dict.fromkeys(NAMES, "no")  # neither the dump's end nor a reboot starts them fresh
    manifest = store.load("p", "s")
    assert manifest.status is SnapshotStatus.COMPLETE
    assert {r.container_name: r.restart_policy for r in manifest.containers} == dict.fromkeys(NAMES, "always")
    assert {held.container for held in held_policies(store, "p").values()} == ALL  # until a restore gives them back


def test_a_runtime_dump_needs_no_save_and_leaves_nothing_in_the_daemons_folder(tmp_path: Path) -> None:
    stack, store = FakeStack(STACK, direct=True), SnapshotStore(tmp_path)
    snapshot(stack, store, stop=False)
    assert grouped(stack.calls) == [("pause", ALL), ("dump", ALL), ("unpause", ALL)]
    assert all(not c.checkpoints for c in stack.containers.values())
    assert store.load("p", "s").status is SnapshotStatus.COMPLETE


STEPS = ("pause", "dump", "read layer", "save")
FAILURES = [pytest.param(what, name, id=f"{what}-{name}") for what in STEPS for name in NAMES]
# The runtime's dumps are in the store already: only the engine API's path saves after the window.
FAILURES_BY_PATH = [pytest.param(what, name, direct, id=f"{what}-{name}-{'runtime' if direct else 'engine-api'}")
                    for direct in (False, True) for what in STEPS for name in NAMES if not (direct and what == "save")]


@pytest.mark.parametrize("stop", [False, True], ids=["live", "stop"])
@pytest.mark.parametrize("what, name, direct", FAILURES_BY_PATH)
def test_a_failure_at_any_step_leaves_every_container_running_its_own_process_with_its_policy(
        tmp_path: Path, what: str, name: str, stop: bool, direct: bool) -> None:
    stack, store = FakeStack(STACK, direct=direct), SnapshotStore(tmp_path)
    before = {c.name: c.process for c in stack.containers.values()}
    stack.fail(what, name)
    with pytest.raises(SnapshotFailed, match=f"while .* {name}") as failed:
        snapshot(stack, store, stop=stop, layers=True)
    assert failed.value.message.endswith("; every service was left running as before")
    assert stack.state() == dict.fromkeys(NAMES, "running")
    assert {c.name: c.process for c in stack.containers.values()} == before  # resumed or restored, never fresh
    assert stack.policies() == dict.fromkeys(NAMES, "always")
    assert held_policies(store, "p") == {}
    assert all(not c.checkpoints for c in stack.containers.values())  # the daemon's copies deleted
    assert [m.status for m in store.list("p")] == [SnapshotStatus.FAILED]
    assert not (store.snapshot_dir("p", "s") / "checkpoints").exists()
    assert not (store.snapshot_dir("p", "s") / "layers").exists()


@pytest.mark.parametrize("what, name", [pytest.param("policy no", name, id=f"holding-{name}") for name in NAMES]
                         + [pytest.param("wait", name, id=f"waiting-for-exit-{name}") for name in NAMES])
def test_a_stop_snapshot_that_fails_holding_a_policy_or_waiting_for_an_exit_puts_everything_back(
        tmp_path: Path, what: str, name: str) -> None:
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    before = {c.name: c.process for c in stack.containers.values()}
    stack.fail(what, name)
    with pytest.raises(SnapshotFailed, match=name):
        snapshot(stack, store, stop=True)
    assert stack.state() == dict.fromkeys(NAMES, "running")
    assert {c.name: c.process for c in stack.containers.values()} == before
    assert stack.policies() == dict.fromkeys(NAMES, "always")
    assert held_policies(store, "p") == {}
    assert all(not c.checkpoints for c in stack.containers.values())
    assert [m.status for m in store.list("p")] == [SnapshotStatus.FAILED]
    if what == "policy no":
        assert "pause" not in {what for what, _ in stack.calls}


@pytest.mark.parametrize("what, name", FAILURES)
def test_a_policy_comes_back_only_once_its_container_runs_again(tmp_path: Path, what: str, name: str) -> None:
    """`always` back on a container still stopped would let Docker start it fresh over its checkpoint."""
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    stack.fail(what, name)
    with pytest.raises(SnapshotFailed):
        snapshot(stack, store, stop=True, layers=True)
    for container in NAMES:
        calls = [what for what, name in stack.calls if name == container]
        back = calls.index("policy always")
        running_again = max((i for i, what in enumerate(calls) if what in ("unpause", "start from checkpoint")),
                            default=-1)
        assert running_again < back, f"{container}: {calls}"


@pytest.mark.parametrize("stop", [False, True], ids=["live", "stop"])
def test_a_failed_pause_stops_the_snapshot_before_any_dump_and_thaws_every_container_it_froze(
        tmp_path: Path, stop: bool) -> None:
    stack, store = FakeStack(STACK), SnapshotStore(tmp_path)
    stack.fail("pause", "p-cache-1")
    with pytest.raises(SnapshotFailed, match="while pausing p-cache-1"):
        snapshot(stack, store, stop=stop)
    assert "dump" not in {what for what, _ in stack.calls}
    paused = [name for what, name in stack.calls if what == "pause"]
    assert "p-db-1" in paused
    assert sorted(name for what, name in stack.calls if what == "unpause") == sorted(paused)


@pytest.mark.parametrize("direct", [False, True], ids=["engine-api", "runtime"])
def test_a_stopped_container_that_cannot_be_restarted_keeps_its_checkpoint_and_its_held_policy(
        tmp_path: Path, direct: bool) -> None:
    """The rollback cannot bring db back: the snapshot stays `incomplete` with db's checkpoint (the daemon's
    copy, the only one, or the store's that the runtime wrote), for `recover`; and db's policy stays `no` (a
    reboot must not start it fresh over that state). The others are back."""
    stack, store = FakeStack(STACK, direct=direct), SnapshotStore(tmp_path)
    stack.fail("dump", "p-web-1")
    stack.fail("start from checkpoint", "p-db-1")
    with pytest.raises(SnapshotFailed) as failed:
        snapshot(stack, store, stop=True)
    assert "2 of 3 containers are running again, not: p-db-1" in failed.value.message
    assert "compose-ckpt recover" in (failed.value.hint or "")
    assert stack.state() == {"p-db-1": "exited", "p-cache-1": "running", "p-web-1": "running"}
    if direct:  # the copy placed for the failed start is dropped: the store's is the state
        assert (store.checkpoint_dir("p", "s", "p-db-1") / PROCESS_FILE).is_file()
    assert list(stack.by_name("p-db-1").checkpoints) == ([] if direct else ["ckpt-s"])
    assert stack.policies() == {"p-db-1": "no", "p-cache-1": "always", "p-web-1": "always"}
    assert {held.container for held in held_policies(store, "p").values()} == {"p-db-1"}
    assert [m.status for m in store.list("p")] == [SnapshotStatus.INCOMPLETE]


def test_a_dump_written_into_the_store_reports_its_bytes_out_of_the_memory_the_engine_estimates(
        tmp_path: Path) -> None:
    stack, store = FakeStack(STACK, direct=True), SnapshotStore(tmp_path)
    stack.estimate = 5
    events: list[tuple[str, str | ProgressEvent]] = []
    take_snapshot(stack.project(), store, SnapshotRequest(name="s", stop=False, parallel=1, ignore_rootfs=True),
                  progress=lambda name, phase: events.append((name, phase)))
    for name in ("p-db-1", "p-cache-1", "p-web-1"):
        assert (name, ProgressEvent("dumping", 1, 5, estimated=True)) in events  # the fake's dump writes 1 byte

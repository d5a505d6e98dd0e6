"""A snapshot killed half-way, and two commands on one project at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest

from compose_ckpt.domain.store.manifest import ContainerRecord, Manifest, SnapshotStatus, now_iso
from compose_ckpt.domain.store.store import SnapshotStore, default_home
from compose_ckpt.engine import Engine
from tests.integration.stack import Stack, counter_services

pytestmark = pytest.mark.engine

TWO_COUNTERS = "services:\n" + counter_services("a", "b")


@pytest.fixture
def stack(start_stack: Callable[..., Stack]) -> Stack:
    return start_stack(TWO_COUNTERS)


def leave_interrupted_snapshot(engine: Engine, stack: Stack, *, stopped: bool) -> None:
    """The state a SIGKILLed `snapshot` leaves: containers frozen and dumped (and, with --stop, killed),
    an `incomplete` manifest, Docker still holding the checkpoints."""
    containers = [engine.inspect(c) for s in ("a", "b") for c in stack.containers(s)]
    records = []
    for container in containers:
        assert container is not None
        engine.pause(container.id)
        engine.checkpoint_create(container.id, "ckpt-killed", leave_running=True)
        records.append(ContainerRecord(service=container.labels["com.docker.compose.service"],
                                       container_id=container.id, container_name=container.name, number=1,
                                       image=container.image, image_id=container.image_id, checkpoint="ckpt-killed"))
        if stopped:
            engine.kill(container.id)
    SnapshotStore(default_home()).write(Manifest(
        name="killed", project=stack.project, created=now_iso(), status=SnapshotStatus.INCOMPLETE,
        stopped=stopped, compose_files=[], compose_hash="", services=["a", "b"], dependencies={},
        containers=records,
    ))


@pytest.mark.parametrize("stopped", [False, True], ids=["paused", "killed-after-dump"])
def test_next_command_recovers_a_killed_snapshot(engine: Engine, stack: Stack, stopped: bool) -> None:
    before = stack.counts_of("a", "b")
    leave_interrupted_snapshot(engine, stack, stopped=stopped)
    assert [(s["name"], s["status"]) for s in stack.snapshots()] == [("killed", "incomplete")]

    refused = stack.ckpt("restore")  # never picks the incomplete snapshot; recovers the stack first
    assert refused.returncode == 4 and "no complete snapshot" in refused.stderr

    assert set(stack.states().values()) == {"running"}
    stack.assert_counting_on(before)  # state kept, not a fresh start
    listed = stack.snapshots()
    assert [(s["name"], s["status"]) for s in listed] == [("killed", "failed")]
    assert "interrupted" in stack.ckpt_ok("inspect", "killed", "--json").stdout
    stack.ckpt_ok("snapshot", "--name", "after")  # and the project works normally again


def test_a_second_snapshot_waits_for_the_first_or_gives_up(stack: Stack) -> None:
    store = SnapshotStore(default_home())
    held = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        with store.locked(stack.project):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    held.wait(5)
    try:
        impatient = subprocess.run(
            [sys.executable, "-m", "compose_ckpt", "-p", stack.project, "snapshot"], cwd=stack.folder,
            capture_output=True, text=True, env={**os.environ, "COMPOSE_CKPT_LOCK_TIMEOUT": "1"}, timeout=60,
        )
        assert impatient.returncode == 6 and "another compose-ckpt command" in impatient.stderr
        threading.Timer(1.5, release.set).start()
        stack.ckpt_ok("snapshot", "--name", "patient")  # waits for the holder, then succeeds
    finally:
        release.set()
        holder.join()
    assert [(s["name"], s["status"]) for s in stack.snapshots()] == [("patient", "complete")]

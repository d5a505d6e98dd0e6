"""The engine adapter's raw checkpoint calls, proven against the real engine."""

from __future__ import annotations

import io
import subprocess
import tarfile

import pytest

from compose_ckpt.const import LABEL_HELPER
from compose_ckpt.engine import Engine
from tests.integration.conftest import TEST_LABEL
from tests.integration.stack import BUSYBOX, run_docker
from tests.polling import wait_for, wait_for_change

pytestmark = pytest.mark.engine

# No network: these calls need none, and the default bridge (docker0) is not ours to rely on: a test
# daemon elsewhere on the host may have removed it.

# A counter held only in a shell variable; the file just lets the test read it.
COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.1; done"


def read_counter(container: str) -> int:
    return int(run_docker("exec", container, "cat", "/tmp/count").stdout)


def test_checkpoint_and_restore_continue_the_counter(engine: Engine, labelled: dict[str, str], test_id: str) -> None:
    name = f"ckpt-roundtrip-{test_id}"
    label_args = [arg for key, value in labelled.items() for arg in ("--label", f"{key}={value}")]
    run_docker("run", "-d", "--name", name, "--network", "none", *label_args, BUSYBOX, "sh", "-c", COUNTER)
    wait_for("the counter to pass 5", lambda: run_docker("exec", name, "cat", "/tmp/count", check=False).stdout.strip()
             not in ("", "1", "2", "3", "4", "5"))
    container = engine.inspect(name)
    assert container is not None and container.running
    before = engine.fingerprint(container)

    engine.checkpoint_create(container.id, "c1", leave_running=False)
    at_checkpoint = read_counter_from_file_after_exit(engine, container.id)
    assert "c1" in engine.checkpoint_list(container.id)

    engine.start_from_checkpoint(container.id, "c1")
    restored = engine.inspect(container.id)
    assert restored is not None and restored.running
    first = read_counter(name)
    later = wait_for_change("the restored counter to move", lambda: read_counter(name), first)
    # A fresh start would count from 1 again; a restore goes on from the checkpoint.
    assert first >= at_checkpoint > 5
    assert later > first
    assert before is not None and engine.fingerprint(restored) == before

    engine.checkpoint_delete(container.id, "c1")
    assert engine.checkpoint_list(container.id) == []


def read_counter_from_file_after_exit(engine: Engine, container_id: str) -> int:
    """Wait until the checkpointed container has exited (a restore before that fails), then read its count."""
    assert engine.wait_exited(container_id, timeout=30).exited
    raw = subprocess.run(["docker", "cp", f"{container_id}:/tmp/count", "-"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
        member = archive.extractfile("count")
        assert member is not None
        return int(member.read())


def test_fingerprint_changes_on_a_fresh_start(engine: Engine, labelled: dict[str, str], test_id: str) -> None:
    name = f"ckpt-fresh-{test_id}"
    label_args = [arg for key, value in labelled.items() for arg in ("--label", f"{key}={value}")]
    run_docker("run", "-d", "--name", name, "--network", "none", *label_args, BUSYBOX, "sleep", "300")
    first = engine.inspect(name)
    assert first is not None
    before = engine.fingerprint(first)
    run_docker("restart", "-t", "0", name)
    second = engine.inspect(name)
    assert second is not None and before is not None
    assert engine.fingerprint(second) != before


def test_removing_a_volume_first_removes_a_helper_container_left_on_it(engine: Engine, labelled: dict[str, str],
                                                                        test_id: str) -> None:
    """As a volume copy cut by its daemon going away leaves it: a created helper holding the volume."""
    volume = f"ckpt-helper-left-{test_id}"
    run_docker("volume", "create", volume)
    try:
        run_docker("create", "--label", f"{LABEL_HELPER}={volume}", "--label", f"{TEST_LABEL}={test_id}",
                   "-v", f"{volume}:/data", BUSYBOX, "true")
        engine.remove_volume(volume)
        assert not engine.volume_exists(volume)
        assert not engine.list_containers(labelled)
    finally:
        run_docker("volume", "rm", "-f", volume, check=False)


def test_removing_a_container_removes_the_checkpoint_helpers_a_killed_command_left_for_it(
        engine: Engine, labelled: dict[str, str], test_id: str) -> None:
    """A command killed while it placed or read a checkpoint leaves its created helper, which bind-mounts the
    container's checkpoint folder; removing the container removes it too (the helper is of no use alone)."""
    label_args = [arg for key, value in labelled.items() for arg in ("--label", f"{key}={value}")]
    container_id = run_docker("create", "--network", "none", *label_args, BUSYBOX, "true").stdout.strip()
    run_docker("create", "--network", "none", "--label", f"{LABEL_HELPER}={container_id}", *label_args, BUSYBOX, "true")
    assert len(engine.list_containers(labelled)) == 2

    engine.remove(container_id)

    assert not engine.list_containers(labelled)

"""containerd's copy of a checkpoint per restore (engine/ctrd_copies.py), against the real engine.

Both engines here run containerd without XDG_RUNTIME_DIR or TMPDIR: it unpacks into /tmp. Folders are
told apart by content, so that other tests restoring at the same time do not disturb the counts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compose_ckpt.engine import Engine
from compose_ckpt.engine.ctrd_copies import containerd_temp_folders
from compose_ckpt.engine.tar_stream import UPLOAD_ID_FILE
from tests.integration.stack import BUSYBOX, run_docker
from tests.integration.test_engine_roundtrip import COUNTER
from tests.polling import wait_for

pytestmark = pytest.mark.engine
CONTAINERD_TEMP = Path("/tmp")


def image_sizes(folder: Path) -> dict[str, int]:
    return {entry.name: entry.stat().st_size for entry in folder.iterdir() if entry.name != UPLOAD_ID_FILE}


def copies_of(images: Path) -> list[Path]:
    """`ctrd-checkpoint*` folders holding the very CRIU images in `images` (every file's name and bytes)."""
    sizes = image_sizes(images)
    found = []
    for folder in CONTAINERD_TEMP.glob("ctrd-checkpoint*"):
        try:
            if folder.is_symlink() or image_sizes(folder) != sizes:
                continue
            if all((folder / name).read_bytes() == (images / name).read_bytes() for name in sizes):
                found.append(folder)
        except OSError:  # removed meanwhile by another test's restore
            continue
    return found


def checkpointed(engine: Engine, container: str, name: str, keep: Path) -> Path:
    """Checkpoint the running `container` as `name` (it exits); a copy of its images in `keep`."""
    info = engine.inspect(container)
    assert info is not None and info.running
    engine.checkpoint_create(info.id, name, leave_running=False)
    assert engine.wait_exited(info.id, timeout=30).exited
    engine.copy_checkpoint_out(info.id, name, keep / name)
    return keep / name


def docker_start_from_checkpoint(name: str, container: str) -> None:
    """`docker start --checkpoint`, retried on the daemon's transient `already exists`."""
    def attempt() -> subprocess.CompletedProcess[str] | None:
        started = run_docker("start", "--checkpoint", name, container, check=False)
        return started if started.returncode == 0 or "already exists" not in started.stderr else None

    started = wait_for("a start past containerd's transient `already exists`", attempt, timeout=10, interval=0.5)
    assert started.returncode == 0, started.stderr


def test_a_restore_leaves_no_copy_of_its_checkpoint(engine: Engine, labelled: dict[str, str], test_id: str,
                                                     tmp_path: Path) -> None:
    pid = engine.daemon_pid()
    assert pid is not None
    assert CONTAINERD_TEMP in {folder.path.resolve() for folder in containerd_temp_folders(pid)}
    name = f"ckpt-ctrd-copy-{test_id}"
    label_args = [arg for key, value in labelled.items() for arg in ("--label", f"{key}={value}")]
    # The host's network namespace: Docker 28 restores no container with one of its own (docs/engine.md).
    run_docker("run", "-d", "--name", name, "--network", "host", *label_args, BUSYBOX, "sh", "-c", COUNTER)
    wait_for("the counter to start", lambda: run_docker("exec", name, "cat", "/tmp/count", check=False).returncode == 0)

    # The fact: a plain `docker start --checkpoint` leaves a full copy of the images behind.
    plain = checkpointed(engine, name, "plain", tmp_path)
    docker_start_from_checkpoint("plain", name)
    leaked = copies_of(plain)
    assert len(leaked) == 1, leaked
    doctor = subprocess.run([sys.executable, "-m", "compose_ckpt", "doctor", "--json"], capture_output=True, text=True,
                            timeout=120)
    copies = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "restore-copies")
    assert copies["status"] == "warn" and " in /tmp (" in copies["detail"], copies
    assert "`rm -rf /tmp/ctrd-checkpoint*`" in copies["remedy"]
    shutil.rmtree(leaked[0])

    # compose-ckpt removes the copy of its own restore.
    ours = checkpointed(engine, name, "ours", tmp_path)
    container = engine.inspect(name)
    assert container is not None
    engine.start_from_checkpoint(container.id, "ours")
    restored = engine.inspect(name)
    assert restored is not None and restored.running
    assert copies_of(ours) == []

"""Restores that put the page images inside the container's own root (engine/pages_in_root.py), against
the real engine: the route is used, the memory comes back whole, nothing is left in the writable layer or
in containerd's temp folder, the fallback, a hostile container, and a kill while the pages are placed."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from compose_ckpt.engine import Engine, PagesRoute, pages_in_root
from compose_ckpt.engine.pages_in_root import FOLDER_PREFIX
from compose_ckpt.errors import EngineError
from tests.integration.stack import BUSYBOX, COUNTER, DEBIAN, Stack, run_docker
from tests.integration.test_faults import run_until, sigkill
from tests.polling import wait_for

pytestmark = pytest.mark.engine
MIB = 1024**2
KEYS = 96  # MiB of values redis holds: its page images are a little more

KV = f"""
services:
  kv:
    image: {DEBIAN}
    command: ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no",
              "--enable-debug-command", "yes"]
"""


def upper_dir(container: str) -> Path:
    return Path(run_docker("inspect", "--format", "{{.GraphDriver.Data.UpperDir}}", container).stdout.strip())


def placed_folders(container: str) -> list[str]:
    """Page folders in the container's writable layer, and in its root as the container sees it."""
    in_layer = [name for name in os.listdir(upper_dir(container)) if name.startswith(FOLDER_PREFIX)]
    if run_docker("inspect", "--format", "{{.State.Running}}", container).stdout.strip() != "true":
        return in_layer
    seen = run_docker("exec", container, "ls", "-a", "/").stdout.split()
    return in_layer + [name for name in seen if name.startswith(FOLDER_PREFIX)]


@pytest.fixture
def kv(start_stack: Callable[..., Stack]) -> Stack:
    stack = start_stack(KV)
    assert stack.redis("debug", "populate", str(KEYS), "key", str(MIB)) == "OK"
    return stack


def test_a_restore_places_the_pages_in_the_container_root_and_leaves_nothing_behind(kv: Stack) -> None:
    digest = kv.redis("debug", "digest")
    kv.ckpt_ok("snapshot", "--stop", "--name", "big")

    done = kv.ckpt_ok("--progress", "plain", "restore", "big", "--json")

    (restored,) = json.loads(done.stdout)["containers"]
    assert restored["pages"] == PagesRoute.CONTAINER_ROOT.value
    assert restored["page_bytes"] >= KEYS * MIB
    assert re.search(r": placing pages \S+ \S+ of \S+ \S+, \S+ \S+/s$", done.stderr, re.MULTILINE), done.stderr
    assert kv.redis("debug", "digest") == digest and kv.redis("dbsize") == str(KEYS)
    (container,) = kv.containers("kv")
    assert placed_folders(container) == []
    assert kv.containerd_copies() == []
    (recorded,) = json.loads(kv.ckpt_ok("inspect", "big", "--json").stdout)["containers"]
    assert recorded["last_restore"]["pages"] == PagesRoute.CONTAINER_ROOT.value
    assert recorded["last_restore"]["page_bytes"] == restored["page_bytes"]


@pytest.fixture
def immutable_layer(kv: Stack) -> Iterator[Path]:
    """The kv container's writable layer, made immutable (nothing can be created in it) until the test ends."""
    (container,) = kv.containers("kv")
    upper = upper_dir(container)
    yield upper
    subprocess.run(["chattr", "-i", str(upper)], check=True)


def test_a_layer_that_takes_no_files_restores_through_containerd(kv: Stack, immutable_layer: Path) -> None:
    digest = kv.redis("debug", "digest")
    kv.ckpt_ok("snapshot", "--stop", "--name", "big")
    subprocess.run(["chattr", "+i", str(immutable_layer)], check=True)

    done = kv.ckpt_ok("--progress", "plain", "restore", "big", "--json")

    (restored,) = json.loads(done.stdout)["containers"]
    assert restored["pages"] == PagesRoute.CONTAINERD.value and restored["page_bytes"] == 0
    assert "page images through containerd: the container's root takes no new files" in done.stderr
    assert kv.redis("debug", "digest") == digest


@pytest.fixture
def counter(engine: Engine, labelled: dict[str, str], test_id: str) -> str:
    name = f"ckpt-pages-{test_id}"
    label_args = [arg for key, value in labelled.items() for arg in ("--label", f"{key}={value}")]
    # The host's network namespace: Docker 28 restores no container with one of its own (docs/engine.md).
    run_docker("run", "-d", "--name", name, "--network", "host", *label_args, BUSYBOX, "sh", "-c",
               COUNTER.replace("$$", "$"))
    wait_for("the counter to pass 5", lambda: run_docker("exec", name, "cat", "/tmp/count", check=False).stdout.strip()
             not in ("", "1", "2", "3", "4", "5"))
    return name


def stopped_at_checkpoint(engine: Engine, container: str, keep: Path) -> Path:
    """Checkpoint the running container (it exits); a copy of its images in `keep`, Docker's dropped."""
    info = engine.inspect(container)
    assert info is not None and info.running
    engine.checkpoint_create(info.id, "taken", leave_running=False)
    engine.wait_exited(info.id, timeout=30)
    engine.copy_checkpoint_out(info.id, "taken", keep)
    engine.checkpoint_delete(info.id, "taken")
    return keep


def test_a_hostile_container_only_spoils_its_own_restore(engine: Engine, counter: str, tmp_path: Path) -> None:
    """What a container can do to the placed files (it owns its root): swap the page image for a link to a
    host file, replace the folder by a link to a host folder, plant links with the folder's prefix. The
    restore then fails for that container alone, and every host file stays as it was."""
    images = stopped_at_checkpoint(engine, counter, tmp_path / "images")
    info = engine.inspect(counter)
    assert info is not None
    upper = upper_dir(counter)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "pages-1.img").write_bytes(b"host data")
    (victim / "secret").write_bytes(b"host secret")
    os.symlink(victim, upper / f"{FOLDER_PREFIX}planted")  # made by the container before the restore

    for swap in ("file", "folder"):
        placed = engine.place_checkpoint(info.id, f"attempt-{swap}", images)
        assert placed.pages is PagesRoute.CONTAINER_ROOT
        (folder,) = [name for name in os.listdir(upper) if name.startswith(FOLDER_PREFIX) and name != f"{FOLDER_PREFIX}planted"]
        if swap == "file":
            (upper / folder / "pages-1.img").unlink()
            os.symlink(victim / "pages-1.img", upper / folder / "pages-1.img")
        else:
            for entry in (upper / folder).iterdir():
                entry.unlink()
            (upper / folder).rmdir()
            os.symlink(victim, upper / folder)

        with pytest.raises(EngineError):  # CRIU looked for the host's path inside the container: not there
            engine.start_from_checkpoint(info.id, f"attempt-{swap}")

        assert [name for name in os.listdir(upper) if name.startswith(FOLDER_PREFIX)] == []  # links unlinked
        assert sorted(os.listdir(victim)) == ["pages-1.img", "secret"]  # nothing followed
        assert (victim / "pages-1.img").read_bytes() == b"host data"
        engine.checkpoint_delete(info.id, f"attempt-{swap}")

    # The same images, placed untouched, still restore it.
    engine.place_checkpoint(info.id, "clean", images)
    engine.start_from_checkpoint(info.id, "clean")
    assert int(run_docker("exec", counter, "cat", "/tmp/count").stdout) > 5


def test_a_page_folder_in_a_writable_layer_is_never_copied_into_a_snapshot(engine: Engine, counter: str) -> None:
    run_docker("exec", counter, "sh", "-c", f"mkdir /{FOLDER_PREFIX}x && echo m > /{FOLDER_PREFIX}x/pages-1.img "
                                             "&& echo k > /kept")
    info = engine.inspect(counter)
    assert info is not None

    layer = b"".join(engine.trees.read_layer(info))

    names = tarfile.open(fileobj=io.BytesIO(layer)).getnames()
    assert "ckpt-tree/kept" in names
    assert not [name for name in names if FOLDER_PREFIX in name]


def test_a_restore_killed_while_placing_pages_leaves_nothing_after_the_next_command(kv: Stack) -> None:
    digest = kv.redis("debug", "digest")
    kv.ckpt_ok("snapshot", "--stop", "--name", "big")
    (container,) = kv.containers("kv")

    killed = run_until(kv, ["restore", "big"], "placing pages", sigkill)  # the folder is made, the copy begins
    assert killed.returncode == -signal.SIGKILL
    assert placed_folders(container), "the kill landed after the restore had cleaned up"

    recovered = kv.ckpt_ok("recover")

    assert "removed the page images an interrupted restore left" in recovered.stdout
    assert placed_folders(container) == []
    done = kv.ckpt_ok("restore", "big", "--force", "--json")
    assert json.loads(done.stdout)["containers"][0]["pages"] == PagesRoute.CONTAINER_ROOT.value
    assert kv.redis("debug", "digest") == digest
    assert placed_folders(container) == []


def test_a_checkpoint_docker_took_itself_restores_through_the_root_and_stays_whole(
        engine: Engine, counter: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the safety checkpoints of `restore --force` and a rollback's checkpoints are put back."""
    info = engine.inspect(counter)
    assert info is not None
    engine.checkpoint_create(info.id, "own", leave_running=False)
    engine.wait_exited(info.id, timeout=30)
    folder = Path(engine.info().docker_root_dir, "containers", info.id, "checkpoints", "own")
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    placed: list[pages_in_root.PlacedPages] = []
    place = pages_in_root.place

    def spied(*args: Any) -> pages_in_root.PlacedPages:
        placed.append(place(*args))
        return placed[-1]

    monkeypatch.setattr(pages_in_root, "place", spied)

    engine.start_from_checkpoint(info.id, "own")

    assert len(placed) == 1 and "pages-1.img" in placed[0].names  # the route was taken
    assert int(run_docker("exec", counter, "cat", "/tmp/count").stdout) > 5  # restored, not started fresh
    assert placed_folders(counter) == []
    assert engine.checkpoint_list(info.id) == ["own"]  # the linked copy is gone, the checkpoint whole
    assert {path.name: path.read_bytes() for path in folder.iterdir() if not path.is_symlink()} == before
    engine.checkpoint_delete(info.id, "own")

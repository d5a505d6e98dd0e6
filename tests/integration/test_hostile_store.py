"""A hostile local user against the real engine: planted store folders, tampered links and manifests.

The planting runs as `nobody` for real (setpriv); compose-ckpt runs as root, as users run it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from compose_ckpt.engine import Engine
from tests.integration.stack import Stack, counter_services
from tests.other_user import as_nobody

pytestmark = pytest.mark.skipif(shutil.which("setpriv") is None, reason="acting as another user needs setpriv")
COMPOSE = "services:\n" + counter_services("a")


def ckpt(stack: Stack, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "compose_ckpt", "-p", stack.project, *args], cwd=stack.folder,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "COMPOSE_CKPT_HOME": str(home)})


def assert_still_counting(stack: Stack, before: dict[str, int]) -> None:
    assert set(stack.states().values()) == {"running"}
    stack.assert_counting_on(before)  # the same processes, going on


def test_snapshot_refuses_a_store_folder_another_user_planted(start_stack: Callable[..., Stack],
                                                              shared: Path) -> None:
    """The issue's case: nobody pre-creates <home>/projects/P/nightly/checkpoints/P-a-1, world-writable, and
    would read the process memory from the pages-*.img root's snapshot put there."""
    stack = start_stack(COMPOSE)
    home = shared / "home"
    home.mkdir()
    home.chmod(0o1777)
    container = stack.containers("a")[0]
    name = next(iter(stack.states()))
    planted = home / "projects" / stack.project / "nightly" / "checkpoints" / name
    as_nobody(f"mkdir -p -m 777 {planted} && chmod -R 777 {home}/projects")
    before = stack.counts_of("a")

    done = ckpt(stack, home, "snapshot", "--name", "nightly")
    assert done.returncode == 7 and f"refusing {home}" in done.stderr, done.stderr
    assert stat.S_IMODE(home.stat().st_mode) == 0o1777  # refused, not chmodded

    home.chmod(0o700)  # the owner closes the home, but what nobody planted inside stays
    done = ckpt(stack, home, "snapshot", "--name", "nightly")
    assert done.returncode == 7 and "owned by uid 65534" in done.stderr, done.stderr
    assert list(planted.iterdir()) == []  # no checkpoint file ever went there
    assert_still_counting(stack, before)
    assert container in stack.containers("a")


@pytest.mark.parametrize("link", ["folder", "file"])
def test_restore_never_follows_a_tampered_checkpoint_link(engine: Engine, start_stack: Callable[..., Stack],
                                                          isolated_store: Path, link: str) -> None:
    """The issue's case: checkpoints/<container> -> /etc made `restore --force` copy /etc into Docker's folder;
    likewise pages-1.img -> /etc/shadow."""
    stack = start_stack(COMPOSE)
    stack.ckpt_ok("snapshot", "--name", "s1")
    name = next(iter(stack.states()))
    folder = isolated_store / "projects" / stack.project / "s1" / "checkpoints" / name
    if link == "folder":
        shutil.rmtree(folder)
        os.symlink("/etc", folder)
    else:
        (folder / "pages-1.img").unlink()
        os.symlink("/etc/shadow", folder / "pages-1.img")
    before = stack.counts_of("a")

    done = stack.ckpt("restore", "s1", "--force")
    assert done.returncode == 7 and "it is a link" in done.stderr, done.stderr
    assert_still_counting(stack, before)  # refused before anything was killed
    container = engine.inspect(name)
    assert container is not None
    docker_folder = Path(engine.info().docker_root_dir, "containers", container.id, "checkpoints")
    assert not (docker_folder / "ckpt-s1").exists()  # nothing of /etc was copied

    listed = stack.snapshots()
    assert [(s["name"], s["status"]) for s in listed] == [("s1", "invalid")] and "it is a link" in listed[0]["error"]
    stack.ckpt_ok("rm", "s1")
    assert os.path.isdir("/etc/ssl") and not os.path.lexists(folder)  # the link went, /etc stayed


def test_a_manifest_another_user_rewrote_is_not_restored(engine: Engine, start_stack: Callable[..., Stack],
                                                         shared: Path) -> None:
    """A manifest of nobody's recording the container privileged with / bind-mounted: restore must not create it."""
    stack = start_stack(COMPOSE)
    home = shared / "home"
    assert ckpt(stack, home, "snapshot", "--stop", "--name", "s1").returncode == 0
    manifest = home / "projects" / stack.project / "s1" / "manifest.json"
    document = json.loads(manifest.read_text())
    for record in document["containers"]:
        record["inspect"]["HostConfig"].update(Privileged=True, Binds=["/:/host"])
    manifest.write_text(json.dumps(document))
    os.chown(manifest, 65534, 65534)  # what nobody planted while the folder was open to them
    stack.compose("rm", "-f", "-s")  # restore would recreate the container from the recorded configuration

    done = ckpt(stack, home, "restore", "s1")
    assert done.returncode == 7 and "owned by uid 65534" in done.stderr, done.stderr
    assert stack.containers("a") == []  # nothing was created, privileged or not
    listed = json.loads(ckpt(stack, home, "ls", "--json").stdout)
    assert [(s["name"], s["status"]) for s in listed] == [("s1", "invalid")]


def test_a_real_snapshot_is_private_to_its_owner(start_stack: Callable[..., Stack], isolated_store: Path) -> None:
    """CRIU's image files are 0644 in Docker's folder; in the store every file is 0600 and every folder 0700."""
    stack = start_stack(COMPOSE)
    stack.ckpt_ok("snapshot", "--name", "s1")
    paths = [isolated_store, *isolated_store.rglob("*")]
    assert any(p.name.startswith("pages-") for p in paths)
    loose = {str(p): oct(stat.S_IMODE(p.lstat().st_mode)) for p in paths
             if stat.S_IMODE(p.lstat().st_mode) != (0o700 if p.is_dir() else 0o600) or p.is_symlink()}
    assert loose == {}

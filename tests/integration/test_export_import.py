"""export on one engine, import on another (a second dockerd with its own store), restore there."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zstandard

from compose_ckpt.engine import Engine
from tests.integration.second_engine import SecondEngine
from tests.integration.stack import Stack, counter_services, run_docker

pytestmark = pytest.mark.engine


@pytest.fixture
def private_image(engine: Engine, test_id: str) -> Iterator[str]:
    """An image only the first engine has, so the second one certainly lacks it: a build of its own (a label
    makes its id differ from busybox's, which the second engine may hold; images are matched by id)."""
    tag = f"local/ckpt-only-{test_id}:1"
    done = subprocess.run(["docker", "build", "--network", "none", "-t", tag, "-"], capture_output=True, text=True,
                          input=f"FROM local/busybox:latest\nLABEL compose-ckpt.test.only={test_id}\n")
    assert done.returncode == 0, done.stderr
    yield tag
    run_docker("rmi", tag, check=False)


@pytest.fixture
def stack(start_stack: Callable[..., Stack], project_name: str, private_image: str,
          second: SecondEngine) -> Iterator[Stack]:
    started = start_stack("services:\n" + counter_services("one", "two", image=private_image)
                          + "    depends_on: [one]\n", settle=1.5)
    yield started
    started.down()  # now, not at start_stack's teardown: private_image's removal needs its containers gone
    for name in ("one", "two"):
        second.docker("rm", "-f", f"{project_name}-{name}-1", check=False)
    second.docker("network", "rm", f"{project_name}_default", check=False)
    second.docker("rmi", private_image, check=False)


def on_target(second: SecondEngine, home: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """compose-ckpt as run on the other host: its own store, its own engine."""
    env = {**os.environ, "COMPOSE_CKPT_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "compose_ckpt", "-H", second.tcp, *args],
                          capture_output=True, env=env, input=stdin, timeout=300)


def test_export_import_restore_on_another_engine(stack: Stack, second: SecondEngine, tmp_path: Path) -> None:
    stack.ckpt_ok("snapshot", "--stop", "--name", "moving")
    archive = tmp_path / "stack.ckpt"
    exported = json.loads(stack.ckpt_ok("export", "moving", "-o", str(archive), "--with-images", "--json").stdout)
    assert exported["images"] and archive.stat().st_mode & 0o077 == 0
    home = tmp_path / "other-host"

    imported = on_target(second, home, "import", str(archive), "--json")
    assert imported.returncode == 0, imported.stderr.decode()
    document = json.loads(imported.stdout)
    assert document["snapshot"] == "moving" and sorted(document["created_containers"]) == [
        f"{stack.project}-one-1", f"{stack.project}-two-1"]
    assert document["loaded_images"]

    listed = on_target(second, home, "-p", stack.project, "ls", "--json")
    assert [(s["name"], s["status"]) for s in json.loads(listed.stdout)] == [("moving", "complete")]
    restored = on_target(second, home, "-p", stack.project, "restore", "--json")
    assert restored.returncode == 0, restored.stderr.decode()
    for service in ("one", "two"):
        count = int(second.docker("exec", f"{stack.project}-{service}-1", "cat", "/tmp/count").stdout)
        assert count > 5, f"{service} started fresh on the target"


def test_import_without_images_names_the_missing_ones_and_writes_nothing(
        stack: Stack, second: SecondEngine, tmp_path: Path, private_image: str) -> None:
    stack.ckpt_ok("snapshot", "--name", "noimg")
    archive = tmp_path / "noimg.ckpt"
    stack.ckpt_ok("export", "noimg", "-o", str(archive))
    home = tmp_path / "other-host"

    refused = on_target(second, home, "import", str(archive))

    assert refused.returncode == 4
    assert private_image in refused.stderr.decode() and "--with-images" in refused.stderr.decode()
    assert on_target(second, home, "-p", stack.project, "ls", "--json").stdout.strip() == b"[]"
    assert second.docker("ps", "-a", "-q", "--filter", f"name={stack.project}").stdout == b""
    assert list((home / "tmp").iterdir()) == []  # the staging folder is gone


def test_a_flipped_byte_is_refused_before_the_engine_is_touched(stack: Stack, tmp_path: Path) -> None:
    stack.ckpt_ok("snapshot", "--name", "flip")
    archive = tmp_path / "flip.ckpt"
    stack.ckpt_ok("export", "flip", "-o", str(archive))
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    stack.ckpt_ok("rm", "flip")

    refused = stack.ckpt("import", str(archive))

    assert refused.returncode == 7 and "Traceback" not in refused.stderr
    assert stack.snapshots() == []


def crafted_archive(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return zstandard.ZstdCompressor().compress(raw.getvalue())


@pytest.mark.parametrize("evil", ["traversal", "symlink"])
def test_a_crafted_archive_is_refused_with_nothing_written(stack: Stack, tmp_path: Path, evil: str) -> None:
    outside = tmp_path / "outside"
    if evil == "traversal":
        info = tarfile.TarInfo(f"checkpoints/x/../../../../{outside}")
        info.size = 4
        members = [(info, b"evil")]
    else:
        info = tarfile.TarInfo("checkpoints/x/link")
        info.type = tarfile.SYMTYPE
        info.linkname = str(outside)
        members = [(info, b"")]
    archive = tmp_path / "evil.ckpt"
    archive.write_bytes(crafted_archive(members))

    refused = stack.ckpt("import", str(archive))

    assert refused.returncode == 7 and "Traceback" not in refused.stderr
    assert not outside.exists()
    assert stack.snapshots() == []

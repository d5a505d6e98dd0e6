"""Page images placed in a container's root (engine/pages_in_root.py), on a folder laid out as the daemon's
overlay2 layers are: which containers qualify, what placing and removing do, and that links a container
planted are never followed. That CRIU reads them there is proven in tests/integration/test_pages_in_root.py."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from compose_ckpt.engine import ContainerInfo
from compose_ckpt.engine.api import body_chunks, body_length
from compose_ckpt.engine.pages_in_root import (
    FOLDER_PREFIX,
    ContainerRoot,
    emptied_tar,
    new_folder_name,
    page_images,
    pages_tar,
    place,
    remove,
)
from compose_ckpt.engine.tar_stream import tar_stream


def container(driver: str = "overlay2", **data: str) -> ContainerInfo:
    attrs: dict[str, Any] = {"Id": "c" * 64, "GraphDriver": {"Name": driver, "Data": data}}
    return ContainerInfo.from_inspect(attrs)


@pytest.fixture
def root(tmp_path: Path) -> ContainerRoot:
    layer = tmp_path / "docker" / "overlay2" / "abc"
    (layer / "diff").mkdir(parents=True)
    (layer / "merged").mkdir()
    found = ContainerRoot.of(container(MergedDir=str(layer / "merged"), UpperDir=str(layer / "diff")),
                             str(tmp_path / "docker"))
    assert found is not None
    return found


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "pages-1.img").write_bytes(b"a" * 5000)
    (folder / "pages-2.img").write_bytes(b"b" * 300)
    (folder / "pagemap-1.img").write_bytes(b"map")
    return page_images(folder)


@pytest.mark.parametrize("found", [
    container("vfs", MergedDir="/var/lib/docker/vfs/x", UpperDir="/var/lib/docker/vfs/y"),
    container(),  # the containerd image store: no folders given
    container(MergedDir="/var/lib/docker/overlay2/abc/merged", UpperDir="/elsewhere/abc/diff"),
    container(MergedDir="/tmp/abc/merged", UpperDir="/tmp/abc/diff"),
    container(MergedDir="/var/lib/docker/overlay2/../abc/merged", UpperDir="/var/lib/docker/overlay2/../abc/diff"),
], ids=["vfs", "image-store", "split", "outside-root", "dot-dot"])
def test_only_an_overlay2_layer_of_the_daemon_qualifies(found: ContainerInfo) -> None:
    assert ContainerRoot.of(found, "/var/lib/docker") is None


def test_the_pages_are_copied_into_a_new_private_folder_and_removed(root: ContainerRoot, images: list[Path]) -> None:
    seen: list[tuple[int, int]] = []

    placed = place(root, images, lambda done, total: seen.append((done, total)))

    assert [image.name for image in images] == ["pages-1.img", "pages-2.img"] == placed.names
    assert placed.size == 5300 and seen[0] == (0, 5300) and seen[-1] == (5300, 5300)
    folder = root.upper / placed.folder.lstrip("/")
    assert folder.name.startswith(FOLDER_PREFIX) and folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "pages-1.img").read_bytes() == b"a" * 5000
    assert (folder / "pages-1.img").stat().st_mode & 0o777 == 0o600
    assert (folder / "pages-1.img").stat().st_ino != images[0].stat().st_ino  # a copy, never the store's file
    assert remove(root) == [folder.name]
    assert os.listdir(root.upper) == []


def test_links_the_container_planted_are_unlinked_never_followed(root: ContainerRoot, images: list[Path],
                                                                tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "pages-1.img").write_bytes(b"host")
    os.symlink(victim, root.upper / f"{FOLDER_PREFIX}folder")
    os.symlink(victim / "pages-1.img", root.upper / f"{FOLDER_PREFIX}file")
    (root.upper / "kept").write_text("the container's own file")
    placed = place(root, images, lambda done, total: None)
    inside = root.upper / placed.folder.lstrip("/")
    (inside / "pages-2.img").unlink()
    os.symlink(victim / "pages-1.img", inside / "pages-2.img")  # swapped while the restore ran

    assert sorted(remove(root)) == sorted([f"{FOLDER_PREFIX}folder", f"{FOLDER_PREFIX}file", inside.name])

    assert os.listdir(root.upper) == ["kept"]
    assert (victim / "pages-1.img").read_bytes() == b"host"


def test_a_failed_copy_leaves_nothing(root: ContainerRoot, images: list[Path]) -> None:
    images[1].unlink()  # not a file any more by the time it is copied: the first one is placed already
    images[1].mkdir()

    with pytest.raises(OSError):
        place(root, images, lambda done, total: None)

    assert os.listdir(root.upper) == []


# --- through the Docker API: the tars sent to the archive endpoint ---------------------------------------

def members(chunks: Iterable[bytes]) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    found = {}
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r") as archive:
        for member in archive.getmembers():
            body = archive.extractfile(member) if member.isfile() else None
            found[member.name] = (member, body.read() if body else b"")
    return found


def test_the_pages_tar_holds_a_private_folder_of_the_page_images(images: list[Path]) -> None:
    progress: list[tuple[int, int]] = []
    name = new_folder_name()

    found = members(body_chunks(pages_tar(name, images), lambda done, total: progress.append((done, total))))

    assert name.startswith(FOLDER_PREFIX) and len(name) == len(FOLDER_PREFIX) + 32
    assert found[name][0].isdir() and found[name][0].mode == 0o700
    assert {n for n in found if n != name} == {f"{name}/pages-1.img", f"{name}/pages-2.img"}
    assert found[f"{name}/pages-1.img"][1] == b"a" * 5000 and found[f"{name}/pages-1.img"][0].mode == 0o600
    total = body_length(pages_tar(name, images))
    assert progress[0] == (0, total) and progress[-1] == (total, total) and total > 5300


def test_the_emptied_tar_replaces_the_folder_by_one_empty_file() -> None:
    found = members([emptied_tar(f"{FOLDER_PREFIX}{'0' * 32}")])

    ((member, body),) = found.values()
    assert member.name == f"{FOLDER_PREFIX}{'0' * 32}" and member.isfile() and body == b""


def test_the_checkpoint_tar_links_its_page_images_to_the_placed_folder(images: list[Path]) -> None:
    folder = images[0].parent

    found = members(tar_stream(folder, "ckpt", {"pages-1.img": "/.p/pages-1.img", "pages-2.img": "/.p/pages-2.img"}))

    assert found["ckpt/pages-1.img"][0].issym() and found["ckpt/pages-1.img"][0].linkname == "/.p/pages-1.img"
    assert found["ckpt/pages-2.img"][0].issym()
    assert found["ckpt/pagemap-1.img"][1] == b"map"  # the rest as it is
    assert "ckpt/compose-ckpt-upload-id" in found

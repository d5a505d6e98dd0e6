"""Which `ctrd-checkpoint*` folders count as containerd's copy of a restored checkpoint, on fake folders.

That containerd makes them and that a restore leaves none behind is proven in
tests/integration/test_ctrd_copies.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from compose_ckpt.engine.ctrd_copies import (
    CheckpointImages,
    TempFolder,
    checkpoint_images,
    existing_copies,
    remove_copies,
)
from compose_ckpt.engine.tar_stream import UPLOAD_ID_FILE

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")


def make_checkpoint(folder: Path, pstree: bytes = b"pstree", upload_id: bytes = b"id-1") -> Path:
    folder.mkdir(mode=0o700)
    for name, data in (("inventory.img", b"inventory"), ("pstree.img", pstree), ("pages-1.img", b"secret" * 100),
                       (UPLOAD_ID_FILE, upload_id)):
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture
def temp(tmp_path: Path) -> TempFolder:
    folder = tmp_path / "tmp"
    folder.mkdir(mode=0o1777)
    os.chmod(folder, 0o1777)
    return TempFolder(folder, frozenset({0, os.geteuid()}), str(folder))


@pytest.fixture
def placed(tmp_path: Path) -> CheckpointImages:
    images = checkpoint_images(make_checkpoint(tmp_path / "placed"))
    assert images is not None
    return images


def test_removes_the_new_copy_of_the_placed_checkpoint(temp: TempFolder, placed: CheckpointImages) -> None:
    before = existing_copies([temp])
    copy = make_checkpoint(temp.path / "ctrd-checkpoint123")
    assert remove_copies([temp], before, [placed]) == [copy]
    assert not copy.exists()


def test_leaves_copies_made_before_the_restore(temp: TempFolder, placed: CheckpointImages) -> None:
    old = make_checkpoint(temp.path / "ctrd-checkpoint1")
    assert remove_copies([temp], existing_copies([temp]), [placed]) == []
    assert old.is_dir()


@pytest.mark.parametrize("change", [
    {"pstree": b"another process tree"},  # another checkpoint
    {"upload_id": b"id-2"},  # the same checkpoint, restored by someone else at the same time
])
def test_leaves_copies_of_other_checkpoints(temp: TempFolder, placed: CheckpointImages, change: dict[str, bytes]) -> None:
    before = existing_copies([temp])
    other = make_checkpoint(temp.path / "ctrd-checkpoint2", **change)
    assert remove_copies([temp], before, [placed]) == []
    assert (other / "pages-1.img").is_file()


def test_leaves_a_copy_with_other_file_names(temp: TempFolder, placed: CheckpointImages) -> None:
    before = existing_copies([temp])
    other = make_checkpoint(temp.path / "ctrd-checkpoint3")
    (other / "pages-2.img").write_bytes(b"more")
    assert remove_copies([temp], before, [placed]) == []
    assert other.is_dir()


def test_never_follows_a_link_named_like_a_copy(tmp_path: Path, temp: TempFolder, placed: CheckpointImages) -> None:
    """A hostile user links `ctrd-checkpointX` to a folder of theirs, or of anyone, matching in content."""
    before = existing_copies([temp])
    target = make_checkpoint(tmp_path / "precious")
    (temp.path / "ctrd-checkpointX").symlink_to(target)
    assert remove_copies([temp], before, [placed]) == []
    assert (target / "pages-1.img").is_file()


def test_never_reads_through_a_link_inside(tmp_path: Path, temp: TempFolder, placed: CheckpointImages) -> None:
    """An image file that is a link is not read (it would disclose the target's bytes by a match)."""
    before = existing_copies([temp])
    copy = make_checkpoint(temp.path / "ctrd-checkpoint4")
    (copy / "pstree.img").unlink()
    (copy / "pstree.img").symlink_to(tmp_path / "placed" / "pstree.img")
    assert remove_copies([temp], before, [placed]) == []
    assert copy.is_dir()


def test_removing_a_copy_removes_links_in_it_not_their_targets(tmp_path: Path, temp: TempFolder,
                                                                placed: CheckpointImages) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep")
    placed_folder = tmp_path / "placed2"
    make_checkpoint(placed_folder)
    (placed_folder / "link").symlink_to(outside)
    with_link = checkpoint_images(placed_folder)
    assert with_link is not None
    before = existing_copies([temp])
    copy = make_checkpoint(temp.path / "ctrd-checkpoint5")
    (copy / "link").symlink_to(outside)
    assert remove_copies([temp], before, [with_link]) == [copy]
    assert (outside / "keep").read_bytes() == b"keep"


def test_leaves_a_writable_folder(temp: TempFolder, placed: CheckpointImages) -> None:
    before = existing_copies([temp])
    copy = make_checkpoint(temp.path / "ctrd-checkpoint6")
    os.chmod(copy, 0o777)
    assert remove_copies([temp], before, [placed]) == []
    assert copy.is_dir()


@as_root
def test_leaves_a_folder_of_another_user(temp: TempFolder, placed: CheckpointImages) -> None:
    before = existing_copies([temp])
    copy = make_checkpoint(temp.path / "ctrd-checkpoint7")
    os.chown(copy, 12345, 12345)
    assert remove_copies([temp], before, [placed]) == []
    assert copy.is_dir()


def test_a_folder_without_criu_images_identifies_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert checkpoint_images(tmp_path / "empty") is None


def test_several_attempts_each_remove_their_copy(tmp_path: Path, temp: TempFolder) -> None:
    """A retried restore gives the checkpoint a new upload id per attempt; containerd may copy each."""
    first = make_checkpoint(tmp_path / "first", upload_id=b"a")
    attempts = [checkpoint_images(first)]
    (first / UPLOAD_ID_FILE).write_bytes(b"b")
    attempts.append(checkpoint_images(first))
    before = existing_copies([temp])
    copies = [make_checkpoint(temp.path / f"ctrd-checkpoint{n}", upload_id=n.encode()) for n in "ab"]
    assert sorted(remove_copies([temp], before, [a for a in attempts if a is not None])) == copies

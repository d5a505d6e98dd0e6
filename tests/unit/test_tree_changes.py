"""The rule that finds what changed in a folder since its pre-copy (domain/stack/tree_changes.py), on real files."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from compose_ckpt.domain.stack.tree_changes import RACY_MARGIN_NS, ROOT, changes_since, index_tree
from compose_ckpt.domain.store import safefs

LATER = 10 * RACY_MARGIN_NS  # a copy that began well after the files were written: none of them is racy


def began_after_writes() -> int:
    return time.time_ns() + LATER


def test_nothing_changed_reads_nothing_again(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("one")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b").write_text("two")
    index = index_tree(tmp_path)
    assert set(index) == {ROOT, "./a", "./d", "./d/b"}
    assert changes_since(index, index, index_tree(tmp_path), began_after_writes()).empty


def test_a_rewrite_that_keeps_size_and_mtime_is_seen_through_its_ctime(tmp_path: Path) -> None:
    target = tmp_path / "d" / "value"
    target.parent.mkdir()
    target.write_text("1111")
    index = index_tree(tmp_path)
    before = target.stat()
    for _ in range(100_000):  # until the clock ticks: within one tick only the racy rule sees a write
        target.write_text("2222")
        if target.stat().st_ctime_ns != before.st_ctime_ns:
            break
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    changes = changes_since(index, index, index_tree(tmp_path), began_after_writes())
    assert changes.changed == [ROOT, "./d", "./d/value"] and changes.removed == []


def test_an_entry_written_too_close_to_the_copy_is_read_again_even_when_its_record_is_equal(tmp_path: Path) -> None:
    (tmp_path / "fresh").write_text("x")
    index = index_tree(tmp_path)
    began = index["./fresh"].ctime_ns + RACY_MARGIN_NS  # within the margin: racily clean
    assert "./fresh" in changes_since(index, index, index, began).changed
    assert changes_since(index, index, index, began + 1 + LATER).empty


def test_deleted_new_and_made_then_removed_during_the_copy(tmp_path: Path) -> None:
    (tmp_path / "gone").write_text("x")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "inner").write_text("y")
    before = index_tree(tmp_path)
    copied = {**before, "./during": dataclasses.replace(before["./gone"], inode=1)}  # in the copy only
    (tmp_path / "gone").unlink()
    (tmp_path / "old" / "inner").unlink()
    (tmp_path / "old").rmdir()
    (tmp_path / "new").write_text("z")
    changes = changes_since(before, copied, index_tree(tmp_path), began_after_writes())
    assert sorted(changes.removed) == ["./during", "./gone", "./old"]  # not old/inner: old goes whole
    assert changes.changed == [ROOT, "./new"]


def test_a_type_change_is_removed_first_and_hard_links_are_read_together(tmp_path: Path) -> None:
    (tmp_path / "swap").mkdir()
    (tmp_path / "first").write_text("1")
    os.link(tmp_path / "first", tmp_path / "second")
    before = index_tree(tmp_path)
    (tmp_path / "swap").rmdir()
    (tmp_path / "swap").write_text("now a file")
    now = index_tree(tmp_path)
    # the linked file's inode, as if only one name was seen changing
    now["./first"] = dataclasses.replace(now["./first"], size=99)
    changes = changes_since(before, before, now, began_after_writes())
    assert changes.removed == ["./swap"]
    assert {"./swap", "./first", "./second"} <= set(changes.changed)
    assert changes.changed.index(ROOT) == 0


def test_remove_inside_never_follows_a_link_on_the_way(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep")
    root = tmp_path / "copy"
    root.mkdir()
    (root / "dir").symlink_to(outside)
    safefs.remove_inside(root, "./dir/victim")
    assert (outside / "victim").read_text() == "keep"
    (root / "tree").mkdir()
    (root / "tree" / "link").symlink_to(outside)
    safefs.remove_inside(root, "./tree")
    assert not (root / "tree").exists() and (outside / "victim").exists()
    safefs.remove_inside(root, "./dir")
    assert not (root / "dir").is_symlink() and (outside / "victim").exists()


class RacingListing:
    """os.scandir's listing of a folder, where a writer removes the entry `gone` just before it is yielded."""

    def __init__(self, listing: Any, gone: str) -> None:
        self.listing, self.gone = listing, gone

    def __enter__(self) -> RacingListing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.listing.close()

    def __iter__(self) -> Iterator[os.DirEntry[str]]:
        for entry in self.listing:
            if entry.name == self.gone:
                os.unlink(entry.path)
            yield entry


def test_entries_removed_while_the_index_is_taken_are_left_out_of_it(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The stack still writes during the index before a pre-copy: a file removed between its folder's listing
    # and its lstat, and a folder removed before it is listed, are as if the index had been taken later.
    for name in ("keep", "gone"):
        (tmp_path / name).write_text(name)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner").write_text("inner")
    listed = os.scandir

    def racing(path: Any) -> Any:
        if not isinstance(path, str):  # safefs lists folders by descriptor
            return listed(path)
        if path.endswith("/sub"):
            safefs.remove_inside(tmp_path, "./sub")
        return RacingListing(listed(path), "gone")

    monkeypatch.setattr(os, "scandir", racing)
    index = index_tree(tmp_path)
    monkeypatch.undo()
    assert set(index) == {ROOT, "./keep", "./sub"}
    assert changes_since(index, index, index_tree(tmp_path), began_after_writes()).removed == ["./sub"]

"""What changed in a folder since it was copied: the rule that lets a copy be made while the stack runs.

A volume is copied while its services still write to it (the pre-copy); once the stack is frozen only
the entries that changed since are read again. The contract:
- `index_tree` records each entry's (type and mode, owner, size, mtime_ns, ctime_ns, inode) by lstat,
  links never followed, taken BEFORE the copy reads anything. Any write after that moves the entry's
  ctime (the kernel sets it, no process can set it back), so its record differs later.
- Filesystem timestamps are coarse (a clock tick, a second on some filesystems): a write in the same
  tick as the index keeps the recorded ctime. So, as git's index does with "racily clean" entries, an
  entry whose recorded mtime or ctime is not at least `RACY_MARGIN_NS` older than the moment the index
  began counts as changed whatever its record says, and is read again.
- Entries gone since, or present in the copy but not in the folder any more (made and removed during
  the copy), are removed from the copy; an entry whose type differs from the copy's is removed and read
  again; every name sharing an inode with a changed entry is read again (hard links stay links), and so
  is every folder above a changed or removed entry (the copy's folder times changed when it did).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

ROOT = "."
# Two seconds: the coarsest timestamps of a local filesystem (FAT); ext4 and xfs keep nanoseconds.
RACY_MARGIN_NS = 2_000_000_000


@dataclass(frozen=True)
class EntryState:
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    links: int

    @classmethod
    def of(cls, info: os.stat_result) -> EntryState:
        return cls(info.st_mode, info.st_uid, info.st_gid, info.st_size, info.st_mtime_ns, info.st_ctime_ns,
                   info.st_ino, info.st_nlink)

    def same_type(self, other: EntryState) -> bool:
        return stat.S_IFMT(self.mode) == stat.S_IFMT(other.mode)

    def racy(self, began_ns: int) -> bool:
        return max(self.mtime_ns, self.ctime_ns) >= began_ns - RACY_MARGIN_NS


TreeIndex = dict[str, EntryState]  # "./a/b" -> state; the folder itself is ROOT


def index_tree(folder: Path) -> TreeIndex:
    """Every entry under `folder`, by lstat, without crossing into another filesystem or following a link.

    The stack may still write to the folder (the index before a pre-copy): an entry removed between its
    folder's listing and its lstat, or a folder removed before it is listed, is left out, as if the index
    had been taken a moment later (an entry missing from the index counts as changed, see `changes_since`)."""
    top = folder.lstat()
    index = {ROOT: EntryState.of(top)}
    pending = [(str(folder), ROOT)]
    while pending:
        path, name = pending.pop()
        try:
            listing = os.scandir(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        with listing:
            for entry in listing:
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                relative = f"{name}/{entry.name}"
                index[relative] = EntryState.of(info)
                if stat.S_ISDIR(info.st_mode) and info.st_dev == top.st_dev:
                    pending.append((entry.path, relative))
    return index


@dataclass(frozen=True)
class TreeChanges:
    removed: list[str]  # to remove from the copy first, deepest first
    changed: list[str]  # to read again, each folder before what it holds

    @property
    def empty(self) -> bool:
        return not self.removed and not self.changed


def changes_since(before: TreeIndex, copied: TreeIndex, now: TreeIndex, began_ns: int) -> TreeChanges:
    """`before`: the folder's index taken when the copy began (at `began_ns`, wall clock); `copied`: the
    copy's own index once it was written; `now`: the folder's index now (frozen)."""
    changed = {name for name, state in now.items()
               if (old := before.get(name)) is None or old != state or old.racy(began_ns)}
    removed = {name for name in copied.keys() | before.keys() if name not in now}
    removed |= {name for name in changed if name in copied and not copied[name].same_type(now[name])}
    inodes = {now[name].inode for name in changed if now[name].links > 1 and not stat.S_ISDIR(now[name].mode)}
    changed |= {name for name, state in now.items() if state.inode in inodes and not stat.S_ISDIR(state.mode)}
    for name in list(changed | removed):
        changed.update(_parents(name))
    changed &= now.keys()  # a removed entry's removed folder is not read again
    removed = {name for name in removed if not any(parent in removed for parent in _parents(name))}
    return TreeChanges(removed=sorted(removed, key=_depth, reverse=True), changed=sorted(changed, key=_depth))


def _parents(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:end]) for end in range(1, len(parts))]


def _depth(name: str) -> tuple[int, str]:
    return name.count("/"), name

"""CRIU's logs: the key lines of a failed dump or restore, and the restore log caught before containerd
deletes it."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import ClassVar

_CRIU_LOG = re.compile(r"(/\S+/(?:criu-dump|criu-restore|restore|dump)\.log)")
# Logged just before `External socket is used`: `ino` is the outside end, `peer_ino` the dumped process's own.
_RUNAWAY = re.compile(r"Runaway socket: ino (\d+) peer_ino (\d+) .*? name (\S+)")
_DUMPING_UNIX = re.compile(r"unix: \s*Dumping: ino (\d+) peer_ino \d+ .*? name (\S+)")
# The process's own end of a connection whose peer is in another network namespace, invisible to CRIU.
_PEER_ELSEWHERE = re.compile(r"Unix socket (\d+) not found")
# The form of the lines criu_log_key_lines adds: the socket's path ("" when not known), its inode, and the inode
# of the outside end ("" when not known). The domain reads them back.
EXTERNAL_UNIX_SOCKET = re.compile(r"unix socket (\S*) ?\(inode (\d+)\) is connected to (?:inode (\d+), outside|a socket in)")


def criu_log_key_lines(message: str, captured: str | None = None, limit: int = 8) -> list[str]:
    """The `Error (...)` lines of the CRIU log a daemon error message names: from `captured` (the log's
    text, read while it existed) or else from the file, when readable here."""
    match = _CRIU_LOG.search(message)
    if captured is None and not match:
        return []
    where = match.group(1) if match else "restore.log"
    note = " (read while the restore ran: containerd deletes it)" if captured is not None else ""
    if captured is None:
        try:
            captured = Path(where).read_text(errors="replace")
        except OSError:
            why = "; containerd deletes a failed restore's log" if "restore" in Path(where).name else ""
            return [f"CRIU log: {where} (not readable from here{why})"]
    errors = [line.strip() for line in captured.splitlines() if "Error (" in line]
    return [f"CRIU log: {where}{note}", *errors[-limit:], *_external_unix_sockets(captured)]


def _external_unix_sockets(log: str) -> list[str]:
    """One line per unix connection to a process CRIU does not dump (`External socket is used`), naming both
    inodes and the socket's path: CRIU's error line names neither."""
    paths = {int(ino): name for ino, name in _DUMPING_UNIX.findall(log)}
    lines = []
    for outside, own, name in _RUNAWAY.findall(log):
        path = name if name != "null" else paths.get(int(own), "null")
        path = "(unnamed)" if path == "null" else path
        lines.append(f"unix socket {path} (inode {own}) is connected to inode {outside}, outside the dumped "
                     "process tree")
    lines += [f"unix socket (inode {own}) is connected to a socket in another network namespace (another "
              "container's, or the host's)" for own in _PEER_ELSEWHERE.findall(log)]
    return lines


class RestoreLogCatcher:
    """Holds CRIU's restore log open from the moment it appears, so that it can still be read after
    containerd has deleted it. A retried restore writes a new log: the newest one is kept.

    One thread looks for the logs of every restore under way (they run in parallel) every POLL_SECONDS:
    waking a thread up costs several times more CPU than looking, and a thread per restore, each waking
    200 times a second, took CPU from the very CRIU restores it watched."""

    POLL_SECONDS = 0.005
    _active: ClassVar[set[RestoreLogCatcher]] = set()  # the catchers inside their `with`
    _active_lock: ClassVar[threading.Lock] = threading.Lock()
    _watcher: ClassVar[threading.Thread | None] = None

    def __init__(self, candidates: list[Path]) -> None:
        self._candidates = candidates
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._lock = threading.Lock()  # between the watcher's look and this catcher's end
        self._stopped = False

    def __enter__(self) -> RestoreLogCatcher:
        if self._candidates:
            cls = RestoreLogCatcher
            with cls._active_lock:
                cls._active.add(self)
                if cls._watcher is None:
                    cls._watcher = threading.Thread(target=cls._watch, name="criu-restore-logs", daemon=True)
                    cls._watcher.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _stop(self) -> None:
        with RestoreLogCatcher._active_lock:
            RestoreLogCatcher._active.discard(self)
        with self._lock:  # a look under way ends first; none comes after
            self._stopped = True

    @classmethod
    def _watch(cls) -> None:
        """Until no restore is under way: look for each one's log."""
        while True:
            time.sleep(cls.POLL_SECONDS)
            with cls._active_lock:
                catchers = list(cls._active)
                if not catchers:
                    cls._watcher = None
                    return
            for catcher in catchers:
                catcher._look()

    def _look(self) -> None:
        with self._lock:
            if self._stopped:
                return
            for path in self._candidates:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
                except OSError:
                    continue
                info = os.fstat(fd)
                if (info.st_dev, info.st_ino) == self._inode:
                    os.close(fd)
                    continue
                if self._fd is not None:
                    os.close(self._fd)
                self._fd, self._inode = fd, (info.st_dev, info.st_ino)

    def text(self) -> str | None:
        """The log as far as written, once the restore has ended (call inside the `with`)."""
        self._stop()
        if self._fd is None:
            return None
        return os.pread(self._fd, 16 * 1024**2, 0).decode(errors="replace")


def restore_log_paths(exec_root: Path, container_id: str) -> list[Path]:
    """Where CRIU writes its restore log: `work/restore.log` in the task's bundle, which lies in the
    daemon's own containerd state (under its exec-root `exec_root`) or in a system containerd's."""
    states = [exec_root / "containerd" / "daemon", Path("/run/containerd")]
    return [state / "io.containerd.runtime.v2.task" / "moby" / container_id / "work" / "restore.log"
            for state in states]

"""CRIU's logs: the key lines of a failed dump or restore, and the restore log caught before containerd
deletes it."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

_CRIU_LOG = re.compile(r"(/\S+/(?:criu-dump|criu-restore|restore|dump)\.log)")


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
            return [f"CRIU log: {where} (not readable from here; containerd deletes a failed restore's log)"]
    errors = [line.strip() for line in captured.splitlines() if "Error (" in line]
    return [f"CRIU log: {where}{note}", *errors[-limit:]]


class RestoreLogCatcher:
    """Holds CRIU's restore log open from the moment it appears, so that it can still be read after
    containerd has deleted it. A retried restore writes a new log: the newest one is kept."""

    POLL_SECONDS = 0.005

    def __init__(self, candidates: list[Path]) -> None:
        self._candidates = candidates
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> RestoreLogCatcher:
        if self._candidates:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _watch(self) -> None:
        while not self._stop.wait(self.POLL_SECONDS):
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
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._fd is None:
            return None
        return os.pread(self._fd, 16 * 1024**2, 0).decode(errors="replace")

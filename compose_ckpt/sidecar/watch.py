"""The sidecar's file watching: its config file (changed: reload) and its trigger folder (a file: run now).

The watcher only tells: `on_config()` when the config file was written or replaced,
`on_trigger(name)` for each file in the trigger folder, including those already there
when the folder starts being watched. It runs on watchdog's thread; the daemon's
callbacks post to its main thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from compose_ckpt.domain.store import safefs
from compose_ckpt.errors import CkptError
from compose_ckpt.sidecar.log import Log


class FileWatcher:
    def __init__(self, config_file: Path, log: Log, on_config: Callable[[], None],
                 on_trigger: Callable[[str], None]) -> None:
        self._config_file = config_file.absolute()
        self._log = log
        self._on_config = on_config
        self._on_trigger = on_trigger
        self._observer: BaseObserver = Observer()
        self._trigger_watch: ObservedWatch | None = None

    def start(self, trigger_dir: Path) -> None:
        folder = self._config_file.parent
        if folder.is_dir():
            self._observer.schedule(_Handler(lambda path: path == self._config_file, lambda path: self._on_config()),
                                    str(folder))
        else:
            self._log.warning("config_not_watched", file=self._config_file, why=f"{folder} does not exist")
        self.watch_trigger_dir(trigger_dir)
        self._observer.start()

    def watch_trigger_dir(self, folder: Path) -> None:
        """Watch `folder` for trigger files instead of the folder watched so far."""
        if self._trigger_watch is not None:
            self._observer.unschedule(self._trigger_watch)
            self._trigger_watch = None
        try:  # a file there starts a snapshot: a folder others can write is refused, a missing one made 0700
            safefs.trusted_chain(folder, create=True)
        except (OSError, CkptError) as exc:
            self._log.error("trigger_dir_failed", folder=folder, error=str(exc))
            return
        self._trigger_watch = self._observer.schedule(
            _Handler(lambda path: path.parent == folder.absolute() and path.is_file(), self._trigger), str(folder))
        for existing in sorted(folder.iterdir()):  # dropped while the sidecar was not watching
            if existing.is_file():
                self._trigger(existing)

    def stop(self) -> None:
        self._observer.stop()

    def _trigger(self, path: Path) -> None:
        if not path.name.startswith("."):  # editors' and tools' temporary files
            self._on_trigger(path.name)


class _Handler(FileSystemEventHandler):
    """Calls `action(path)` when a file that `wanted(path)` accepts is complete: closed after
    writing, or renamed into place (reacting on creation would read it half-written)."""

    def __init__(self, wanted: Callable[[Path], bool], action: Callable[[Path], None]) -> None:
        self.wanted = wanted
        self.action = action

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type not in ("closed", "moved"):
            return
        path = Path(os.fsdecode(event.dest_path if event.event_type == "moved" else event.src_path))
        if self.wanted(path):
            self.action(path)

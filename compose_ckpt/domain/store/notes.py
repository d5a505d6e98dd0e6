"""The notes a command keeps in its project's folder while it works, so that the next command can finish or
undo what it left if it is killed: they are the store's project files (see store.py's layout)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from compose_ckpt.domain.store.names import NAME_PATTERN

RESTORING = ".restoring"
SET_ASIDE = ".set-aside"
FREEZING = ".freezing"
MOVING = ".moving"
MAX_NOTE_BYTES = 32 * 1024**2
_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class SetAside:
    """A container `restore --force` killed after taking its safety checkpoint: put back from it if the restore fails."""

    name: str
    container_id: str
    checkpoint: str


class CommandNotes:
    """Mixed into SnapshotStore, which keeps the project files these are written to."""

    def read_project_file(self, project_name: str, name: str, limit: int) -> bytes | None:
        raise NotImplementedError

    def write_project_file(self, project_name: str, name: str, data: bytes) -> None:
        raise NotImplementedError

    def remove_project_file(self, project_name: str, name: str) -> None:
        raise NotImplementedError

    def note_restoring(self, project_name: str, container_ids: list[str]) -> None:
        """Record the containers a restore is about to place page images in, for `restoring` after a kill."""
        self.write_project_file(project_name, RESTORING, "".join(f"{cid}\n" for cid in container_ids).encode())

    def restoring(self, project_name: str) -> list[str]:
        """The ids `note_restoring` recorded and `done_restoring` has not cleared: those of a killed restore."""
        text = self.read_project_file(project_name, RESTORING, MAX_NOTE_BYTES) or b""
        return [line for line in text.decode(errors="replace").split() if _CONTAINER_ID.fullmatch(line)]

    def note_set_aside(self, project_name: str, entries: list[SetAside]) -> None:
        """Record the containers a `restore --force` killed and has not put back yet, in the order to put them
        back, for `set_aside` after a kill or a rollback that could not finish (none: the note is removed)."""
        if not entries:
            self.remove_project_file(project_name, SET_ASIDE)
            return
        lines = "".join(f"{e.name} {e.container_id} {e.checkpoint}\n" for e in entries)
        self.write_project_file(project_name, SET_ASIDE, lines.encode())

    def set_aside(self, project_name: str) -> list[SetAside]:
        """What `note_set_aside` recorded last, in order; lines that are not what it writes are left out."""
        text = self.read_project_file(project_name, SET_ASIDE, MAX_NOTE_BYTES) or b""
        entries = []
        for line in text.decode(errors="replace").splitlines():
            parts = line.split(" ")
            if len(parts) == 3 and NAME_PATTERN.match(parts[0]) and _CONTAINER_ID.fullmatch(parts[1]) \
                    and NAME_PATTERN.match(parts[2]):
                entries.append(SetAside(*parts))
        return entries

    def done_restoring(self, project_name: str) -> None:
        self.remove_project_file(project_name, RESTORING)

    def note_freezing(self, project_name: str, checkpoint: str, since: float, container_ids: list[str]) -> None:
        """Record the containers a `restore --force` freezes for its safety checkpoint `checkpoint` (asked for after
        `since`, epoch seconds): after a kill they would stay frozen, and `recover` thaws them (`freezing`)."""
        self.write_project_file(project_name, FREEZING, json.dumps([checkpoint, since, container_ids]).encode())

    def freezing(self, project_name: str) -> tuple[str, float, list[str]] | None:
        text = self.read_project_file(project_name, FREEZING, MAX_NOTE_BYTES)
        try:
            checkpoint, since, ids = json.loads(text or "null")
            return str(checkpoint), float(since), [str(i) for i in ids if _CONTAINER_ID.fullmatch(str(i))]
        except (ValueError, TypeError):  # none, or not what note_freezing writes
            return None

    def done_freezing(self, project_name: str) -> None:
        self.remove_project_file(project_name, FREEZING)

    def note_moving(self, project_name: str, record: dict[str, Any]) -> None:
        """Record what a live migration under way has done so far, for the next one after a kill."""
        self.write_project_file(project_name, MOVING, json.dumps(record).encode())

    def moving(self, project_name: str) -> dict[str, Any] | None:
        """What `note_moving` recorded and `done_moving` has not cleared: a live migration that was killed."""
        text = self.read_project_file(project_name, MOVING, MAX_NOTE_BYTES)
        if text is None:
            return None
        try:
            record = json.loads(text)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def done_moving(self, project_name: str) -> None:
        self.remove_project_file(project_name, MOVING)

"""Undo what a killed snapshot left behind, before the next command touches the project.

A snapshot killed with SIGKILL cannot roll itself back: its containers may be
paused, still being dumped by the daemon (which carries on with a request
whose client has gone), or already stopped at their checkpoint; its manifest
stays `incomplete`. Whoever next takes the project lock finds it and, per
container:

1. waits while the daemon may still be dumping it (acting then would thaw a
   half-dumped process, or read a half-written checkpoint);
2. puts it back running with its state: unpauses it, or restores it from the
   checkpoint the killed run took (Docker's copy, else the store's);
3. never deletes the only copy of a state: a checkpoint is dropped only once
   its container runs again.

Every container's end state is reported. When one is left without its state,
`RecoveryFailed` says so (and the snapshot stays `incomplete`, its checkpoint
kept, when a later attempt could still bring it back).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from compose_ckpt.domain.ports import EnginePort
from compose_ckpt.domain.stack.containers import start_order
from compose_ckpt.domain.stack.filesystem import remove_files
from compose_ckpt.domain.stack.held_policies import release
from compose_ckpt.domain.stack.parallel import ProgressCallback
from compose_ckpt.domain.store.manifest import ContainerRecord, Manifest, SnapshotStatus
from compose_ckpt.domain.store.notes import SetAside
from compose_ckpt.domain.store.safety import remove_safety_checkpoints, safety_checkpoint, safety_checkpoint_names
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.engine import ContainerInfo, ProcessFingerprint
from compose_ckpt.errors import CkptError, NotFoundError, RecoveryFailed

# The hand-overs between runc, containerd and the daemon during one dump leave gaps of a few tenths of a
# second with nothing visible: a dump counts as over once nothing is seen for this long.
QUIET_SECONDS = 2.0
POLL_SECONDS = 0.2


def dump_wait_seconds() -> float:
    """How long to wait for dumps still under way (a 1 GiB container takes ~20 s here)."""
    return float(os.environ.get("COMPOSE_CKPT_DUMP_WAIT", "900"))


def recover_project(engine: EnginePort, project_name: str, store: SnapshotStore, *,
                    progress: ProgressCallback = lambda name, phase: None) -> list[str]:
    """`compose-ckpt recover`: what snapshot and restore do first anyway, on its own."""
    with store.locked(project_name):
        return recover_interrupted(engine, project_name, store, progress=progress, strict=True)


def recover_interrupted(engine: EnginePort, project_name: str, store: SnapshotStore, *,
                        progress: ProgressCallback = lambda name, phase: None, strict: bool = False) -> list[str]:
    """Recover every `incomplete` snapshot of project `project_name`; the caller holds the project lock.

    Returns one line per container: what was done and the state it is in. Raises RecoveryFailed
    (with those lines) while a kept checkpoint may still bring a container back, so that no new
    command works over it; with `strict` (the `recover` command, whose job is to say so) also when
    a state is lost for good. That loss is recorded in the snapshot, now `failed`, and must not
    block the next snapshot or restore of containers the user has started fresh since."""
    total = _Outcome(lines=_remove_placed_pages(engine, project_name, store))
    total.lines += _thaw_left_frozen(engine, project_name, store, progress)
    for manifest in store.list(project_name):
        if manifest.status is SnapshotStatus.INCOMPLETE:
            outcome = _Recovery(engine, store, manifest, progress).run()
            total.lines += outcome.lines
            total.left += outcome.left
            total.retry = total.retry or outcome.retry
    # A rollback left undone does not block the next command (a restore over those containers may be what
    # the user wants now); `recover` says what it could not put back.
    lines, left = put_back_set_aside(engine, store, project_name, progress)
    total.lines += lines
    if (total.left or left) and (strict or total.retry):
        raise RecoveryFailed(
            f"could not put back {', '.join(total.left + left)} with its state after an interrupted snapshot "
            "or restore",
            details=total.lines,
            hint=("Each line above says what is left; `compose-ckpt recover` tries again with the checkpoints kept."
                  if total.retry else
                  "Those in-memory states are lost; start them fresh (`docker compose up -d`)."),
        )
    return total.lines


def _remove_placed_pages(engine: EnginePort, project_name: str, store: SnapshotStore) -> list[str]:
    """Remove the page images a killed restore left in its containers' roots (see
    `SnapshotStore.note_restoring`); one line per container they were found in. Kept noted while the
    engine cannot be asked: the next command tries again."""
    lines = []
    for container_id in store.restoring(project_name):
        try:
            if engine.remove_placed_pages(container_id):
                lines.append(f"{container_id[:12]}: removed the page images an interrupted restore left in its root")
        except NotFoundError:
            continue  # the container is gone, and its layer with it
        except CkptError:
            return lines
    store.done_restoring(project_name)
    return lines


def put_back_set_aside(engine: EnginePort, store: SnapshotStore, project_name: str, progress: ProgressCallback,
                       only: Collection[str] | None = None) -> tuple[list[str], list[str]]:
    """Finish the rollback of a failed (or killed) `restore --force`: put back each container it killed and
    noted (`SnapshotStore.note_set_aside`; with `only`, those of these ids) from its safety checkpoint, in
    the noted order (dependencies first, by address: each gets its address back). One running (restored
    from the snapshot by the restore that failed as a whole) is killed first. The note keeps what could not
    be put back, for the next `recover`. Returns a line per container and the names left without their state."""
    lines: list[str] = []
    left: list[str] = []
    remaining = store.set_aside(project_name)
    for entry in list(remaining):
        if only is not None and entry.container_id not in only:
            continue
        progress(entry.name, "putting back its state from before the restore")
        kept = safety_checkpoint(store, project_name, entry.checkpoint, entry.name)
        try:
            lines.append(_put_back(engine, entry, kept))
        except CkptError as exc:
            where = (f"in the store ({kept}): `compose-ckpt recover` tries again" if kept else
                     f"as checkpoint {entry.checkpoint}: `compose-ckpt recover` tries again, or "
                     f"`docker start --checkpoint {entry.checkpoint} {entry.name}`")
            lines.append(f"{entry.name}: NOT put back ({exc}); its state from before the restore is kept {where}")
            left.append(entry.name)
            continue
        remove_safety_checkpoints(store, project_name, entry.checkpoint, entry.name)
        remaining.remove(entry)
        store.note_set_aside(project_name, remaining)
    if only is None:  # those of a restore killed before it noted them: never to be put back
        for checkpoint in set(safety_checkpoint_names(store, project_name)) - {entry.checkpoint for entry in remaining}:
            remove_safety_checkpoints(store, project_name, checkpoint)
    return lines, left


def _put_back(engine: EnginePort, entry: SetAside, kept: Path | None) -> str:
    """Restore one container from its safety checkpoint: the store's copy (`kept`, placed for the daemon
    first), else the daemon's own."""
    container = engine.inspect(entry.container_id)
    if container is None:
        return f"{entry.name}: removed since; its state from before the restore went with it"
    if kept is None and entry.checkpoint not in engine.checkpoint_list(container.id):
        return f"{entry.name}: {container.status}; its checkpoint from before the restore is gone, and its state with it"
    if not container.exited:
        engine.kill(container.id)  # restored from the snapshot, but the restore as a whole failed
    engine.wait_exited(container.id, timeout=60)
    try:
        if kept is not None:
            engine.place_checkpoint(container.id, entry.checkpoint, kept)
        engine.start_from_checkpoint(container.id, entry.checkpoint)
    except CkptError:
        if kept is not None:  # the store keeps it: the placed copy would only be in the way of the next attempt
            with contextlib.suppress(CkptError):
                engine.checkpoint_delete(container.id, entry.checkpoint)
        raise
    with contextlib.suppress(CkptError):
        engine.checkpoint_delete(container.id, entry.checkpoint)
    return f"{entry.name}: running again with its state from before the restore"


@dataclass
class _Outcome:
    lines: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # containers not running with their state
    retry: bool = False  # a checkpoint was kept: a later attempt may still bring its container back


def _holds_files(folder: Path) -> bool:
    """A checkpoint folder of the store with something in it: a dump through the Docker API leaves an
    empty one when it is killed before its files were saved into it."""
    try:
        with os.scandir(folder) as entries:
            return any(entries)
    except OSError:
        return False


class _Recovery:
    def __init__(self, engine: EnginePort, store: SnapshotStore, manifest: Manifest, progress: ProgressCallback) -> None:
        self.engine = engine
        self.store = store
        self.manifest = manifest
        self.progress = progress
        self.outcome = _Outcome()

    def run(self) -> _Outcome:
        if self._wait_for_dumps():
            order = start_order(self.manifest, {r.container_name: r.inspect for r in self.manifest.containers})
            by_name = {record.container_name: record for record in self.manifest.containers}
            for record in (by_name[name] for name in order):  # dependencies first, each at its address
                self._recover(record)
                self._put_policy_back(record)
        if not self.outcome.retry:
            shutil.rmtree(self.store.snapshot_dir(self.manifest.project, self.manifest.name) / "checkpoints",
                          ignore_errors=True)
            remove_files(self.store, self.manifest.project, self.manifest.name)
            self.manifest.status = SnapshotStatus.FAILED
        self.manifest.error = ("interrupted before it completed; recovery: "
                               + ("; ".join(self.outcome.lines) or "nothing to undo"))
        self.store.write(self.manifest)
        return self.outcome

    def _wait_for_dumps(self) -> bool:
        """Wait until the daemon has visibly finished every dump the killed run may have started."""
        since = datetime.fromisoformat(self.manifest.created.replace("Z", "+00:00")).timestamp()
        busy = _wait_until_no_dump(self.engine, {r.container_name: (r.container_id, r.checkpoint)
                                                 for r in self.manifest.containers}, since, self.progress)
        if busy:
            self.outcome.lines.append(f"the daemon is still dumping {', '.join(busy)}; nothing was touched")
            self.outcome.left += busy
            self.outcome.retry = True
        return not busy


    def _recover(self, record: ContainerRecord) -> None:
        name = record.container_name
        try:
            container = self.engine.inspect(record.container_id)
            if container is None:
                self.outcome.lines.append(f"{name}: removed since; nothing to put back")
                return
            in_docker = record.checkpoint in self.engine.checkpoint_list(container.id)
            saved = self.store.checkpoint_dir(self.manifest.project, self.manifest.name, name)
            if container.paused:
                container = _unpause(self.engine, container, self.progress)
            if container.paused:
                self.outcome.lines.append(f"{name}: unpaused; running with its state")
            elif container.running:
                self._running(record, container)
            elif in_docker or _holds_files(saved):
                self._restore(record, container, in_docker)
                if record.container_name in self.outcome.left:
                    return  # its checkpoint is the only copy of its state: kept
                in_docker = True  # it is there now: placed from the store's copy when it was not
            else:
                self.outcome.lines.append(
                    f"{name}: {container.status} without a checkpoint: its in-memory state is lost "
                    f"(the daemon or someone else stopped it); `docker start {name}` starts it fresh")
                self.outcome.left.append(name)
            if in_docker:
                self.engine.checkpoint_delete(container.id, record.checkpoint)
        except CkptError as exc:
            self.outcome.lines.append(f"{name}: could not be checked or put back ({exc}); "
                                      "its checkpoint, if any, is kept")
            self.outcome.left.append(name)
            self.outcome.retry = True

    def _put_policy_back(self, record: ContainerRecord) -> None:
        """The restart policy a --stop snapshot held back: it may have been set to `no` before the kill.
        Not on a container whose checkpoint is kept for another attempt: `no` keeps a reboot from
        starting it fresh over that state."""
        name = record.container_name
        if record.held_policy is None or (name in self.outcome.left and self.outcome.retry):
            return
        try:
            self.engine.set_restart_policy(record.container_id, record.held_policy)
        except CkptError as exc:
            if self.engine.inspect(record.container_id) is not None:
                self.outcome.lines.append(f"{name}: could not put restart policy {record.held_policy.as_text()} "
                                          f"back ({exc}); `docker update --restart {record.held_policy.as_text()} {name}`")
            return
        release(self.store, self.manifest.project, [record.container_id])
        self.outcome.lines.append(f"{name}: restart policy {record.held_policy.as_text()} put back")

    def _restore(self, record: ContainerRecord, container: ContainerInfo, in_docker: bool) -> None:
        """Bring back a container stopped at its checkpoint: Docker's copy is complete when present (no
        dump is running any more), else the store's is (Docker's are dropped only once all are saved)."""
        name = record.container_name
        self.progress(name, "restoring from the interrupted snapshot's checkpoint")
        try:
            if not in_docker:
                self.engine.place_checkpoint(container.id, record.checkpoint,
                                             self.store.checkpoint_dir(self.manifest.project, self.manifest.name, name))
            self.engine.start_from_checkpoint(container.id, record.checkpoint)
        except CkptError as exc:
            kept = " ".join([str(exc), *exc.details[:3]])
            if in_docker:
                again = f"`compose-ckpt recover` tries again, or `docker start --checkpoint {record.checkpoint} {name}`"
            else:
                # The copy placed from the store may link to page images that are gone now: the next attempt
                # places the store's again.
                with contextlib.suppress(CkptError):
                    self.engine.checkpoint_delete(container.id, record.checkpoint)
                again = "`compose-ckpt recover` tries again"
            self.outcome.lines.append(
                f"{name}: {container.status}; its restore from the checkpoint the killed snapshot took failed "
                f"({kept}). The checkpoint is kept: {again}")
            self.outcome.left.append(name)
            self.outcome.retry = True
            return
        self.outcome.lines.append(f"{name}: restored from the checkpoint the killed snapshot took; running with its state")


    def _running(self, record: ContainerRecord, container: ContainerInfo) -> None:
        """A container already running again: with its state, unless it was started fresh since."""
        fingerprint = self.engine.fingerprint(container)
        if record.fingerprint and fingerprint and fingerprint != ProcessFingerprint.from_text(record.fingerprint):
            self.outcome.lines.append(f"{record.container_name}: running, but started fresh since (a restart "
                                      "policy or a manual start): its state from before the snapshot is lost")
            self.outcome.left.append(record.container_name)
            return
        self.outcome.lines.append(f"{record.container_name}: running with its state")


def _wait_until_no_dump(engine: EnginePort, dumps: dict[str, tuple[str, str]], since: float,
                        progress: ProgressCallback) -> list[str]:
    """Wait until no dump of `dumps` (name -> (container id, checkpoint), requested after `since`) is seen running
    for a moment; returns the names still dumping when the wait ran out (none: all done)."""
    deadline = time.monotonic() + dump_wait_seconds()
    quiet_from: float | None = None
    announced: set[str] = set()
    while True:
        busy = [name for name, (container_id, checkpoint) in dumps.items()
                if _dumping(engine, container_id, checkpoint, since)]
        now = time.monotonic()
        if not busy:
            quiet_from = quiet_from or now
            if now - quiet_from >= QUIET_SECONDS:
                return []
        else:
            quiet_from = None
            for name in set(busy) - announced:
                progress(name, "waiting for the daemon to finish its dump")
            announced.update(busy)
        if now > deadline:
            return busy
        time.sleep(POLL_SECONDS)


def _dumping(engine: EnginePort, container_id: str, checkpoint: str, since: float) -> bool:
    try:
        return engine.dump_in_progress(container_id, checkpoint, since)
    except CkptError:
        return False  # gone, or the daemon is gone: nothing of it is dumping


def _thaw_left_frozen(engine: EnginePort, project_name: str, store: SnapshotStore,
                      progress: ProgressCallback) -> list[str]:
    """Thaw the containers a killed `restore --force` froze for its safety checkpoints and had not set aside
    yet (`SnapshotStore.note_freezing`), once no dump of them runs; one line per container thawed. Those set
    aside are put back from their safety checkpoints (`put_back_set_aside`)."""
    noted = store.freezing(project_name)
    if noted is None:
        return []
    checkpoint, since, container_ids = noted
    set_aside = {entry.container_id for entry in store.set_aside(project_name)}
    frozen = {c.name: c for cid in container_ids if cid not in set_aside
              if (c := engine.inspect(cid)) is not None and c.paused}
    if not frozen:  # no dump to wait for
        store.done_freezing(project_name)
        return []
    busy = _wait_until_no_dump(engine, {name: (c.id, checkpoint) for name, c in frozen.items()}, since, progress)
    if busy:  # the next command tries again
        return [f"the daemon is still dumping {', '.join(busy)}; left frozen for now"]
    lines = []
    for name, container in frozen.items():
        if _unpause(engine, container, progress).paused:
            lines.append(f"{name}: unpaused (frozen by an interrupted restore --force); running with its state")
        else:
            lines.append(f"{name}: ended while frozen; its state is lost, start it fresh (`docker compose up -d`)")
    store.done_freezing(project_name)
    return lines


def _unpause(engine: EnginePort, container: ContainerInfo, progress: ProgressCallback) -> ContainerInfo:
    """Thaw a frozen container; returns it as before when thawed, or as it is now when its process
    had already ended: a dump with exit ends it, and Docker shows it paused for a few more seconds."""
    progress(container.name, "unpausing")
    try:
        engine.unpause(container.id)
        return container
    except CkptError:
        return engine.wait_exited(container.id, timeout=30)

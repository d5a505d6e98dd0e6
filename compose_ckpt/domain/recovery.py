"""Undo what a killed snapshot left behind, before the next command touches the project.

A snapshot killed with SIGKILL cannot roll itself back: its containers may be
paused, or (with --stop) already stopped at their checkpoint, and its
manifest stays `incomplete`. Whoever next takes the project lock finds it,
puts every container back to running with its state, and marks it `failed`.
"""

from __future__ import annotations

import shutil

from compose_ckpt.domain.filesystem import remove_files
from compose_ckpt.domain.manifest import Manifest, SnapshotStatus
from compose_ckpt.domain.store import SnapshotStore
from compose_ckpt.engine import Engine
from compose_ckpt.errors import CkptError


def recover_project(engine: Engine, store: SnapshotStore, project: str) -> list[str]:
    """`compose-ckpt recover`: what snapshot and restore do first anyway, on its own."""
    with store.locked(project):
        return recover_interrupted(engine, store, project)


def recover_interrupted(engine: Engine, store: SnapshotStore, project: str) -> list[str]:
    """Recover every `incomplete` snapshot of `project`; the caller holds the project lock.

    Returns what was done, one line per container touched."""
    actions: list[str] = []
    for manifest in store.list(project):
        if manifest.status is SnapshotStatus.INCOMPLETE:
            actions += _recover(engine, store, manifest)
    return actions


def _recover(engine: Engine, store: SnapshotStore, manifest: Manifest) -> list[str]:
    actions: list[str] = []
    for record in manifest.containers:
        try:
            container = engine.inspect(record.container_id)
            if container is None:
                continue
            in_docker = record.checkpoint in engine.checkpoint_list(container.id)
            saved = store.checkpoint_dir(manifest.project, manifest.name, record.container_name)
            if container.paused:
                engine.unpause(container.id)
                actions.append(f"{container.name}: unpaused")
            elif container.exited and manifest.stopped and (in_docker or saved.is_dir()):
                # Killed after its dump: Docker's copy is complete if still there, else the store's is
                # (Docker's copies are dropped only once every one has been saved).
                if not in_docker:
                    engine.place_checkpoint(container.id, record.checkpoint, saved)
                engine.start_from_checkpoint(container.id, record.checkpoint)
                in_docker = True
                actions.append(f"{container.name}: restored from the interrupted snapshot's checkpoint")
            if in_docker:
                engine.checkpoint_delete(container.id, record.checkpoint)
        except CkptError as exc:
            actions.append(f"{record.container_name}: could not recover: {exc}")
    shutil.rmtree(store.snapshot_dir(manifest.project, manifest.name) / "checkpoints", ignore_errors=True)
    remove_files(store, manifest.project, manifest.name)
    manifest.status = SnapshotStatus.FAILED
    manifest.error = "interrupted before it completed; recovered: " + ("; ".join(actions) or "nothing to undo")
    store.write(manifest)
    return actions

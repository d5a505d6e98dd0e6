"""The requests the front ends (the CLI, the sidecar) make of the domain: plain values, checked when made.

A name in a request is refused where the request is built, before anything is locked, stopped or asked of
the engine. This module imports nothing heavy, so that the CLI can build a request while it parses, before
the domain and the engine client load (it lets that load overlap with compose and the engine's answers).
"""

from __future__ import annotations

from dataclasses import dataclass

from compose_ckpt.const import DEFAULT_PARALLEL
from compose_ckpt.domain.store.names import validate_name


@dataclass(frozen=True)
class SnapshotRequest:
    services: tuple[str, ...] = ()
    name: str | None = None
    stop: bool = False
    parallel: int = DEFAULT_PARALLEL
    ignore_rootfs: bool = False  # leave the containers' writable-layer changes out
    with_volumes: bool = False  # copy the named volumes too
    precopy: bool = True  # with_volumes: copy them before the freeze, then only what changed while frozen

    def __post_init__(self) -> None:
        if self.name is not None:  # refused where the request is made, before anything is locked or asked
            validate_name(self.name)


@dataclass(frozen=True)
class RestoreRequest:
    snapshot: str | None = None  # None: the latest complete snapshot
    services: tuple[str, ...] = ()
    force: bool = False
    parallel: int = DEFAULT_PARALLEL
    # --force checkpoints what runs before killing it, and puts it back from there if the restore fails
    safety_checkpoint: bool = True
    ignore_volumes: bool = False  # keep the volumes' current content even when the snapshot holds a copy
    # restore onto the image a tag names now when the very image a container was checkpointed on is gone
    allow_other_image: bool = False

    def __post_init__(self) -> None:
        if self.snapshot is not None:  # refused where the request is made, before the lock creates the project's folder
            validate_name(self.snapshot)


@dataclass(frozen=True)
class MigrateRequest:
    snapshot: str | None = None  # None: take one now, with --stop
    keep_source: bool = False
    ignore_volumes: bool = False  # the target already shares the volumes' storage: do not copy them
    parallel: int = DEFAULT_PARALLEL

    def __post_init__(self) -> None:
        if self.snapshot is not None:  # refused where the request is made, before anything is stopped
            validate_name(self.snapshot)

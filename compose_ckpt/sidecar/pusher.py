"""Pushing scheduled snapshots to a registry, on a thread of its own so it never delays the next snapshot.

A job with `push=REF` hands each completed snapshot here. The pusher uploads
it (tags: the snapshot's name, and REF's tag when it has one), then applies the
job's `keep` in the registry: the job's artifacts beyond the newest `keep` are
deleted by digest. A failed attempt is retried after growing delays; a newer
snapshot of the same job replaces one still waiting, since retention would
delete the older one anyway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from compose_ckpt.domain.ports import RegistryPort
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.domain.transport.push import prune_registry, push_snapshot
from compose_ckpt.errors import CkptError
from compose_ckpt.registry.client import RegistryClient
from compose_ckpt.registry.reference import Reference
from compose_ckpt.sidecar.log import Log
from compose_ckpt.sidecar.metrics import Metrics
from compose_ckpt.sidecar.policy import StackJob

BACKOFF = (5.0, 15.0, 45.0, 120.0, 300.0, 600.0)  # seconds before each retry; then the push is given up


@dataclass
class _Pending:
    job: StackJob
    snapshot: str
    attempts: int = 0
    not_before: float = 0.0  # monotonic


class Pusher:
    def __init__(self, store: SnapshotStore, metrics: Metrics, log: Log, *, backoff: Sequence[float] = BACKOFF,
                 connect: Callable[[Reference], AbstractContextManager[RegistryPort]] = RegistryClient) -> None:
        self._store = store
        self._metrics = metrics
        self._log = log
        self._backoff = tuple(backoff)
        self._connect = connect
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._condition = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="pusher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Start no new attempt; one in progress is left to its daemon thread (blobs it sent are harmless)."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()

    def waiting(self) -> dict[tuple[str, str], str]:
        """The snapshot each job has waiting for its push (first try or retry), by job."""
        with self._condition:
            return {key: pending.snapshot for key, pending in self._pending.items()}

    def submit(self, job: StackJob, snapshot: str) -> None:
        with self._condition:
            waiting = self._pending.get(job.key)
            if waiting is not None:
                self._log.warning("push_superseded", project=job.project_name, job=job.job, snapshot=waiting.snapshot,
                                  by=snapshot)
            self._pending[job.key] = _Pending(job, snapshot)
            self._condition.notify_all()

    def _work(self) -> None:
        while True:
            with self._condition:
                item = self._next()
                if item is None:
                    return
            self._attempt(item)

    def _next(self) -> _Pending | None:
        """Wait (holding the condition) for the pending push due first; None when stopping."""
        while not self._stopping:
            now = time.monotonic()
            due = min(self._pending.values(), key=lambda p: p.not_before, default=None)
            if due is not None and due.not_before <= now:
                del self._pending[due.job.key]
                return due
            self._condition.wait(None if due is None else due.not_before - now)
        return None

    def _attempt(self, item: _Pending) -> None:
        job, reference = item.job, item.job.push
        assert reference is not None
        if not self._store.exists(job.project_name, item.snapshot):
            self._log.warning("push_dropped", project=job.project_name, job=job.job, snapshot=item.snapshot,
                              why="the snapshot was removed before it could be pushed")
            return
        tags = [item.snapshot] + ([reference.tag] if reference.tag and reference.tag != item.snapshot else [])
        try:
            with self._connect(reference) as client:
                result = push_snapshot(self._store, job.project_name, item.snapshot, client, tags)
                keep = job.retention.keep if job.retention else None
                pruned = prune_registry(client, job.project_name, keep, tag_prefix=job.prefix) if keep else None
        except CkptError as exc:
            self._failed(item, exc.message)
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not end the pusher thread
            self._failed(item, f"internal error: {type(exc).__name__}: {exc}")
            return
        removed = pruned.removed_tags if pruned else []
        self._metrics.pushed(job.key, time.time(), result.uploaded_bytes, len(pruned.removed_digests) if pruned else 0,
                             item.snapshot)
        self._log.info("push_done", project=job.project_name, job=job.job, snapshot=item.snapshot,
                       reference=result.reference, digest=result.digest, uploaded_bytes=result.uploaded_bytes,
                       registry_pruned=",".join(removed) or None)

    def _failed(self, item: _Pending, error: str) -> None:
        job = item.job
        self._metrics.push_failed(job.key, error, time.time())
        if item.attempts >= len(self._backoff):
            self._log.error("push_gave_up", project=job.project_name, job=job.job, snapshot=item.snapshot, error=error,
                            attempts=item.attempts + 1)
            return
        delay = self._backoff[item.attempts]
        self._log.error("push_failed", project=job.project_name, job=job.job, snapshot=item.snapshot, error=error,
                        retry_in_seconds=delay)
        with self._condition:
            if job.key not in self._pending:  # a newer snapshot of the job goes first
                self._pending[job.key] = _Pending(job, item.snapshot, item.attempts + 1, time.monotonic() + delay)
                self._condition.notify_all()

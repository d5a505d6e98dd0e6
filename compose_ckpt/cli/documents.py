"""The JSON documents `--json` prints, one function per shape, from the domain's results (`rm`, `recover`
and `config` print theirs, a list or the compose project's own mapping, in place).

Their keys are a stable interface for scripts, listed in docs/cli.md: add keys, never rename or drop one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compose_ckpt.domain.host.doctor import Report
    from compose_ckpt.domain.host.reboot import Outcome
    from compose_ckpt.domain.stack.adopt import AdoptionPlan
    from compose_ckpt.domain.stack.overview import StackOverview
    from compose_ckpt.domain.stack.restore import RestoreResult
    from compose_ckpt.domain.store.manifest import Manifest, TreeCopy
    from compose_ckpt.domain.store.store import Leftover
    from compose_ckpt.domain.transport.live_migrate import LiveMigrateResult
    from compose_ckpt.domain.transport.migrate import MigrateResult, MigrateViaResult
    from compose_ckpt.domain.transport.pull import PullResult
    from compose_ckpt.domain.transport.push import PushResult
    from compose_ckpt.domain.transport.transfer import ExportResult, ImportResult

Document = dict[str, Any]


def snapshot_summary(manifest: Manifest) -> Document:
    """A snapshot as `ls` lists it."""
    return {
        "name": manifest.name, "project": manifest.project, "created": manifest.created,
        "received": manifest.received, "imported_from": manifest.imported_from,
        "status": manifest.status.value, "stopped": manifest.stopped, "kind": manifest.kind,
        "services": manifest.services,
        "size": manifest.size, "error": manifest.error,
    }


def snapshot_details(manifest: Manifest) -> Document:
    """A snapshot as `snapshot` and `inspect` show it: the summary, then per container and volume."""
    return {
        **snapshot_summary(manifest),
        "skipped": manifest.skipped, "compose_files": manifest.compose_files, "compose_hash": manifest.compose_hash,
        "freeze_seconds": manifest.freeze_seconds, "total_seconds": manifest.total_seconds,
        "phases": manifest.phases, "engine": manifest.engine,
        "containers": [
            {"service": r.service, "container": r.container_name, "container_id": r.container_id,
             "image": r.image, "image_id": r.image_id, "size": r.size, "dump_seconds": r.dump_seconds,
             "dump_path": r.dump_path or None, "dump_fallback": r.dump_fallback, "dump_rate": r.dump_rate,
             "layer": _tree_copy(r.layer), "restart_policy": r.restart_policy,
             "last_restore": vars(r.last_restore) if r.last_restore else None}
            for r in manifest.containers
        ],
        "with_volumes": manifest.has_volumes,
        "volumes": [{"name": v.name, "copy": _tree_copy(v.copy)} for v in manifest.volume_records],
        "binds": [vars(b) for b in manifest.binds],
    }


def _tree_copy(copy: TreeCopy | None) -> Document | None:
    """A layer or volume copy: tree size, bytes stored (compressed), copy time inside the frozen window and,
    for a volume pre-copied while the stack ran, the entries read again while frozen."""
    return None if copy is None else {"size": copy.size, "stored": copy.stored, "seconds": copy.seconds,
                                      "reread": copy.reread}


def stack_overview(overview: StackOverview) -> Document:
    return {"project": overview.project, "containers": [vars(c) for c in overview.containers],
            "abandoned_holders": overview.abandoned_holders, "drift": overview.drift}


def adoption(project: str, plan: AdoptionPlan, *, undo: bool, dry_run: bool) -> Document:
    """What `adopt` or `unadopt` changes (or, with --dry-run, would change)."""
    return {"project": project, "adopted": not undo, "changed": plan.needed, "dry_run": dry_run,
            "files": [str(change.path) for change in plan.files if change.changed],
            "holders": dict(plan.holders), "recreated": [c.name for c in plan.in_the_way],
            "services": list(plan.services)}


def pruned(removed: Sequence[Manifest], leftovers: list[Leftover], kept_imported: list[Manifest]) -> Document:
    return {"removed": [m.name for m in removed], "removed_leftovers": [vars(f) for f in leftovers],
            "kept_imported": [{"name": m.name, "received": m.received, "imported_from": m.imported_from}
                              for m in kept_imported]}


def restored(result: RestoreResult) -> Document:
    return {"snapshot": result.snapshot.name, "project": result.snapshot.project,
            "phases": result.phases, "containers": [vars(c) for c in result.containers],
            "warnings": result.warnings, "not_in_snapshot": [vars(c) for c in result.not_in_snapshot]}


def exported(result: ExportResult, snapshot: str, project: str, output: str) -> Document:
    return {"snapshot": snapshot, "project": project, "output": output, "bytes": result.bytes_in,
            "images": result.images}


def imported(result: ImportResult) -> Document:
    return {"snapshot": result.manifest.name, "project": result.manifest.project, "warnings": result.warnings,
            "host_access": result.host_access, "loaded_images": result.loaded_images,
            "created_containers": result.created_containers}


def pulled(result: PullResult) -> Document:
    stored = result.imported
    return {"reference": result.reference, "digest": result.digest, "snapshot": stored.manifest.name,
            "project": stored.manifest.project, "downloaded_bytes": result.downloaded_bytes,
            "reused_bytes": result.reused_bytes, "warnings": stored.warnings, "host_access": stored.host_access,
            "loaded_images": stored.loaded_images, "created_containers": stored.created_containers}


def pushed(result: PushResult, snapshot: str, project: str) -> Document:
    return {"snapshot": snapshot, "project": project, "reference": result.reference, "digest": result.digest,
            "blobs": result.blobs, "uploaded_blobs": result.uploaded_blobs, "bytes": result.bytes,
            "uploaded_bytes": result.uploaded_bytes, "images": result.images}


def migrated(result: MigrateResult, target: str) -> Document:
    return {"snapshot": result.snapshot.name, "project": result.snapshot.project, "target": target,
            "seconds": result.seconds, "warnings": result.warnings, "source_removed": result.source_removed,
            "containers": [vars(c) for c in result.restored]}


def migrated_live(result: LiveMigrateResult, target: str) -> Document:
    return {"snapshot": result.snapshot.name, "project": result.snapshot.project, "target": target,
            "live": True, "downtime_seconds": result.downtime, "bytes_before_downtime": result.bytes_before,
            "bytes_during_downtime": result.bytes_during, "volume_entries_during_downtime": result.volume_entries,
            "page_bytes_sent_while_dumping": result.pages_while_dumping,
            "memory_precopy": result.memory_precopy, "seconds": result.seconds, "warnings": result.warnings,
            "source_removed": result.source_removed, "containers": [vars(c) for c in result.restored]}


def migrated_via(result: MigrateViaResult, pull_reference: str) -> Document:
    return {"snapshot": result.snapshot.name, "project": result.snapshot.project, "via": result.pushed.reference,
            "digest": result.pushed.digest, "pull": pull_reference, "seconds": result.seconds,
            "uploaded_bytes": result.pushed.uploaded_bytes, "source_removed": False}


def doctor(report: Report) -> Document:
    return {"ok": report.can_checkpoint, "checks": [check.as_dict() for check in report.checks]}


def reboot_outcomes(outcomes: list[Outcome]) -> Document:
    """What `host shutdown` or `host boot` did, per project."""
    return {"projects": [vars(o) for o in outcomes]}

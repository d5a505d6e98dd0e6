"""Which snapshots `prune` removes: pure rules over manifests, no I/O."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta

from compose_ckpt.domain.store.manifest import Manifest, SnapshotStatus
from compose_ckpt.errors import UsageError

_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `1h30m`, `7d`, `2w` -> timedelta."""
    cleaned = text.strip().lower()
    parts = _DURATION_PART.findall(cleaned)
    if not cleaned or "".join(f"{n}{u}" for n, u in parts) != cleaned:
        raise UsageError(f"invalid duration {text!r}", hint="Use a number and unit, e.g. 90s, 15m, 1h30m, 7d, 2w.")
    try:
        return timedelta(seconds=sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts))
    except (OverflowError, ValueError):  # beyond timedelta's 999999999 days, or past int()'s digit limit
        raise UsageError(f"duration {text[:40]!r} is too long", hint="Use at most a few years.") from None


def to_prune(manifests: Sequence[Manifest], keep: int, older_than: timedelta | None, now: datetime) -> list[Manifest]:
    """Complete snapshots beyond the `keep` newest (and, with `older_than`, only those older than it),
    plus every failed or incomplete one (the caller holds the project lock, so none is in progress).

    New and old are by when a snapshot entered the store (Manifest.entered): an imported one counts from
    its import, whatever date it carries."""
    if keep < 0:
        raise UsageError("--keep must be 0 or more")
    complete = sorted((m for m in manifests if m.status is SnapshotStatus.COMPLETE), key=_entered, reverse=True)
    beyond = complete[keep:]
    if older_than is not None:
        beyond = [m for m in beyond if now - m.entered > older_than]
    broken = [m for m in manifests if m.status is not SnapshotStatus.COMPLETE]
    return sorted([*beyond, *broken], key=_entered)


def imported_deciding(manifests: Sequence[Manifest], doomed: Sequence[Manifest]) -> list[Manifest]:
    """The imported or pulled snapshots kept among the newest while snapshots taken here are removed:
    prune says so, as they decided which local ones go."""
    removed = {m.name for m in doomed}
    if not any(m.imported_from is None and m.status is SnapshotStatus.COMPLETE for m in doomed):
        return []
    return [m for m in manifests if m.imported_from is not None and m.status is SnapshotStatus.COMPLETE
            and m.name not in removed]


def _entered(manifest: Manifest) -> datetime:
    return manifest.entered

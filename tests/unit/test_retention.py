from datetime import UTC, datetime, timedelta

import pytest

from compose_ckpt.domain.store.manifest import Manifest, SnapshotStatus
from compose_ckpt.domain.store.retention import parse_duration, to_prune
from compose_ckpt.errors import UsageError

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def snapshot(name: str, hours_ago: float, status: SnapshotStatus = SnapshotStatus.COMPLETE) -> Manifest:
    created = (NOW - timedelta(hours=hours_ago)).isoformat().replace("+00:00", "Z")
    return Manifest(name=name, project="p", created=created, status=status, stopped=False,
                    compose_files=[], compose_hash="", services=["s"], dependencies={})


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("1h30m", 5400), ("7d", 604800), ("2W", 1209600)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "7", "d", "7x", "1h 30m", "-1d", "1.5h"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="invalid duration"):
        parse_duration(text)


def test_keep_newest_complete_and_drop_broken_ones() -> None:
    snaps = [snapshot("a", 5), snapshot("b", 4), snapshot("c", 3), snapshot("d", 2),
             snapshot("x", 1, SnapshotStatus.FAILED), snapshot("y", 0.5, SnapshotStatus.INCOMPLETE)]
    assert [m.name for m in to_prune(snaps, keep=2, older_than=None, now=NOW)] == ["a", "b", "x", "y"]


def test_older_than_spares_recent_snapshots_beyond_keep() -> None:
    snaps = [snapshot("a", 50), snapshot("b", 30), snapshot("c", 3), snapshot("d", 2)]
    assert [m.name for m in to_prune(snaps, keep=1, older_than=timedelta(days=1), now=NOW)] == ["a", "b"]


def test_negative_keep_is_refused() -> None:
    with pytest.raises(UsageError):
        to_prune([], keep=-1, older_than=None, now=NOW)

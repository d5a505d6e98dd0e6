"""A snapshot made elsewhere is as new as its arrival here, whatever date it carries: `ls`, the latest for
a plain `restore` and `prune` go by when each snapshot entered the store, a date more than a day ahead is
refused, and prune says when an imported snapshot made it remove local ones."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from compose_ckpt.cli.main import run
from compose_ckpt.domain.store.manifest import Manifest
from compose_ckpt.domain.store.retention import imported_deciding, to_prune
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.errors import ArchiveError, ConflictError
from tests.hostile_registry import HostileRegistry
from tests.unit.test_bad_names_and_manifests import PROJECT, manifest
from tests.unit.test_pull_hostile import pull, registry  # noqa: F401 (fixture)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def keep(store: SnapshotStore, snapshot: Manifest) -> None:
    store.write(snapshot)
    store.checkpoint_dir(PROJECT, snapshot.name, "proj-web-1").mkdir(parents=True)


@pytest.fixture
def store(isolated_store: Path) -> Iterator[SnapshotStore]:
    """`mine` taken here at NOW; `theirs` imported a minute later, dated 20 hours ahead (a fast clock)."""
    home = SnapshotStore(isolated_store)
    keep(home, dataclasses.replace(manifest("mine"), created=stamp(NOW)))
    keep(home, dataclasses.replace(manifest("theirs"), created=stamp(NOW + timedelta(hours=20)),
                                   received=stamp(NOW + timedelta(minutes=1)), imported_from="archive /tmp/x"))
    yield home


def test_snapshots_are_ordered_by_when_they_entered_the_store(store: SnapshotStore) -> None:
    keep(store, dataclasses.replace(manifest("later"), created=stamp(NOW + timedelta(minutes=2))))

    assert [m.name for m in store.list(PROJECT)] == ["mine", "theirs", "later"]
    assert store.latest_complete(PROJECT).name == "later"  # not `theirs`, for all its date
    doomed = to_prune(store.list(PROJECT), 1, None, NOW + timedelta(minutes=3))
    assert [m.name for m in doomed] == ["mine", "theirs"]
    assert imported_deciding(store.list(PROJECT), doomed) == []  # the one kept was taken here


def test_prune_says_when_an_imported_snapshot_is_kept_in_place_of_local_ones(
        store: SnapshotStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["-p", PROJECT, "prune", "--keep", "1"]) == 0

    output = capsys.readouterr()
    assert "removed 1 snapshots: mine" in output.out
    assert "kept theirs, imported from archive /tmp/x" in output.err and "snapshots taken here were removed" in output.err
    assert [m.name for m in store.list(PROJECT)] == ["theirs"]


def test_a_snapshot_dated_more_than_a_day_ahead_is_refused(registry: HostileRegistry,  # noqa: F811
                                                         tmp_path: Path) -> None:
    document = registry.manifest("v1")
    config = json.loads(registry.blobs[document["config"]["digest"]])
    config["created"] = "2099-01-01T00:00:00.000Z"
    body = json.dumps(config).encode()
    document["config"].update(digest=registry.add_blob(body), size=len(body))
    assert document["config"]["digest"] == "sha256:" + hashlib.sha256(body).hexdigest()
    registry.put("v1", document)

    with pytest.raises(ArchiveError, match="more than a day from now"):
        pull(registry, tmp_path)


def test_the_snapshots_to_remove_are_chosen_and_removed_under_the_projects_lock(store: SnapshotStore) -> None:
    """prune, the sidecar's retention and `host shutdown` all remove through `remove_chosen`: while the rule
    chooses, no other command can take or restore a snapshot of the project."""
    def oldest(listed: Sequence[Manifest]) -> list[Manifest]:
        with pytest.raises(ConflictError), store.locked(PROJECT, wait=0):
            pass  # held by remove_chosen
        return [listed[0]]

    listed, removed = store.remove_chosen(PROJECT, oldest)
    assert [m.name for m in listed] == ["mine", "theirs"] and [m.name for m in removed] == ["mine"]
    assert [m.name for m in store.list(PROJECT)] == ["theirs"]
    with store.locked(PROJECT, wait=0):
        pass  # released

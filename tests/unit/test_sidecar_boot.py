"""Restore on boot: which exited services come back from which snapshot, and why the others do not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from compose_ckpt.const import LABEL_PROJECT, LABEL_SERVICE
from compose_ckpt.domain.host.reboot import LIVE_SNAPSHOT, RAN_AFTER
from compose_ckpt.domain.store.manifest import Manifest, SnapshotStatus, TreeCopy, VolumeRecord
from compose_ckpt.engine import ContainerInfo
from compose_ckpt.sidecar.boot import NO_SNAPSHOT, NO_VOLUMES, BootRestore, boot_plan
from compose_ckpt.sidecar.policy import BootMode, ContainerPolicy, LabelRules, parse_container

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def docker_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"  # Docker writes nanoseconds


def policy(service: str, mode: str = "true", *, started: datetime | None = T0, status: str = "exited",
           project_name: str = "shop", number: int = 1) -> ContainerPolicy:
    container = ContainerInfo.from_inspect({
        "Id": f"id-{service}-{number}", "Name": f"/{project_name}-{service}-{number}",
        "State": {"Status": status, "StartedAt": docker_time(started) if started else "0001-01-01T00:00:00Z"},
        "Config": {"Labels": {LABEL_PROJECT: project_name, LABEL_SERVICE: service, "compose-ckpt.enable": "true",
                              "compose-ckpt.restore-on-boot": mode}},
    })
    parsed, problems = parse_container(container, LabelRules())
    assert parsed is not None and problems == []
    return parsed


def snapshot(name: str, at: datetime, *, stopped: bool, services: tuple[str, ...] = ("db", "web"),
             status: SnapshotStatus = SnapshotStatus.COMPLETE) -> Manifest:
    return Manifest(name=name, project="shop", created=iso(at), status=status, stopped=stopped, compose_files=[],
                    compose_hash="", services=list(services), dependencies={})


def test_a_clean_stop_after_the_last_start_is_restored() -> None:
    plan, skips = boot_plan([policy("db"), policy("web")],
                            {"shop": [snapshot("s1", T0 + timedelta(hours=1), stopped=True)]})
    assert plan == [BootRestore("shop", "s1", ("db", "web"), BootMode.SAFE)] and skips == []


def test_a_live_snapshot_is_skipped_with_the_reason() -> None:
    plan, skips = boot_plan([policy("db")], {"shop": [snapshot("clean", T0 - timedelta(hours=2), stopped=True),
                                                      snapshot("live", T0 + timedelta(hours=1), stopped=False)]})
    assert plan == []
    assert [(s.service, s.reason) for s in skips] == [("db", LIVE_SNAPSHOT)]
    assert "newer state on disk than snapshot live" in skips[0].message


def test_a_container_started_after_the_clean_stop_is_skipped() -> None:
    """A --stop snapshot, then the stack was restored (or started fresh) and ran: its disk moved on."""
    taken = T0 + timedelta(hours=1)
    plan, skips = boot_plan([policy("db", started=taken + timedelta(seconds=1))],
                            {"shop": [snapshot("s1", taken, stopped=True)]})
    assert plan == [] and [(s.reason, s.service) for s in skips] == [(RAN_AFTER, "db")]
    assert "newer state on disk than snapshot s1" in skips[0].message and "shop-db-1" in skips[0].message


def test_one_replica_that_ran_after_the_snapshot_skips_the_service() -> None:
    taken = T0 + timedelta(hours=1)
    replicas = [policy("web", number=1), policy("web", number=2, started=taken + timedelta(minutes=5))]
    plan, skips = boot_plan(replicas, {"shop": [snapshot("s1", taken, stopped=True)]})
    assert plan == [] and [s.reason for s in skips] == [RAN_AFTER]


def test_failed_incomplete_and_other_services_snapshots_do_not_count() -> None:
    snapshots = [snapshot("good", T0 + timedelta(hours=1), stopped=True),
                 snapshot("failed", T0 + timedelta(hours=2), stopped=True, status=SnapshotStatus.FAILED),
                 snapshot("half", T0 + timedelta(hours=3), stopped=True, status=SnapshotStatus.INCOMPLETE),
                 snapshot("web-only", T0 + timedelta(hours=4), stopped=False, services=("web",))]
    plan, skips = boot_plan([policy("db")], {"shop": snapshots})
    assert plan == [BootRestore("shop", "good", ("db",), BootMode.SAFE)] and skips == []


@pytest.mark.parametrize("snapshots", [[], [snapshot("web-only", T0 + timedelta(hours=1), stopped=True, services=("web",))]])
def test_no_snapshot_of_the_service(snapshots: list[Manifest]) -> None:
    plan, skips = boot_plan([policy("db")], {"shop": snapshots})
    assert plan == [] and [s.reason for s in skips] == [NO_SNAPSHOT]


def test_running_services_and_services_without_the_label_are_left_alone() -> None:
    plan, skips = boot_plan([policy("db", status="running"), policy("web", "false")],
                            {"shop": [snapshot("s1", T0 + timedelta(hours=1), stopped=False)]})
    assert plan == [] and skips == []


def test_rollback_needs_a_snapshot_with_volumes() -> None:
    plan, skips = boot_plan([policy("db", "rollback")], {"shop": [snapshot("s1", T0 + timedelta(hours=1), stopped=False)]})
    assert plan == [] and [s.reason for s in skips] == [NO_VOLUMES] and "s1" in skips[0].message


def test_rollback_takes_the_latest_snapshot_with_volumes_even_a_live_one() -> None:
    """Files and memory go back together, so newer files on disk are no reason to skip."""
    with_volumes = snapshot("vols", T0 + timedelta(hours=1), stopped=False)
    with_volumes.volume_records = [VolumeRecord("shop_data", copy=TreeCopy(size=10, stored=5, seconds=0.1, sha256="0" * 64))]
    newer = snapshot("newer", T0 + timedelta(hours=2), stopped=True)
    plan, skips = boot_plan([policy("db", "rollback", started=T0 + timedelta(hours=3))], {"shop": [with_volumes, newer]})
    assert plan == [BootRestore("shop", "vols", ("db",), BootMode.ROLLBACK)] and skips == []


def test_projects_and_snapshots_are_planned_apart() -> None:
    plans, skips = boot_plan(
        [policy("db"), policy("app", project_name="blog"), policy("web", started=T0 + timedelta(days=1))],
        {"shop": [snapshot("s1", T0 + timedelta(hours=1), stopped=True)],
         "blog": [Manifest(name="b1", project="blog", created=iso(T0 + timedelta(hours=1)), status=SnapshotStatus.COMPLETE,
                           stopped=True, compose_files=[], compose_hash="", services=["app"], dependencies={})]})
    assert sorted(plans, key=lambda p: p.project_name) == [BootRestore("blog", "b1", ("app",), BootMode.SAFE),
                                                      BootRestore("shop", "s1", ("db",), BootMode.SAFE)]
    assert [(s.service, s.reason) for s in skips] == [("web", RAN_AFTER)]


@pytest.mark.parametrize("value, mode", [("true", BootMode.SAFE), ("yes", BootMode.SAFE), ("false", BootMode.OFF),
                                         ("rollback", BootMode.ROLLBACK), ("Rollback", BootMode.ROLLBACK)])
def test_label_values(value: str, mode: BootMode) -> None:
    assert policy("db", value).restore_on_boot is mode

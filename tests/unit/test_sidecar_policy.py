import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from compose_ckpt.const import LABEL_CRIU_OPTIONS, LABEL_NETWORK_HOLDER, LABEL_PROJECT, LABEL_SERVICE
from compose_ckpt.domain.store.manifest import Manifest, SnapshotStatus
from compose_ckpt.engine import ContainerInfo
from compose_ckpt.sidecar.policy import (
    BootMode,
    ContainerPolicy,
    JobSettings,
    LabelRules,
    Problem,
    Retention,
    StackJob,
    manual_job,
    parse_container,
    plan,
)
from compose_ckpt.sidecar.schedule import EverySchedule, parse_schedule

UTC = UTC
RULES = LabelRules()
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def container(name: str, labels: dict[str, str], project_name: str = "shop", service: str | None = None,
              status: str = "running") -> ContainerInfo:
    compose = {LABEL_PROJECT: project_name, LABEL_SERVICE: service or name} if project_name else {}
    return ContainerInfo(id=f"id-{name}", name=name, image="img", image_id="sha256:x", status=status, pid=1,
                         exit_code=0, labels={**compose, **labels}, started_at="", attrs={})


def parsed(c: ContainerInfo, rules: LabelRules = RULES) -> tuple[ContainerPolicy | None, list[Problem]]:
    return parse_container(c, rules)


@pytest.mark.parametrize("value", ["true", "True", "TRUE", "1", "yes"])
def test_enable_values(value: str) -> None:
    policy, problems = parsed(container("web", {"compose-ckpt.enable": value, "compose-ckpt.schedule": "@hourly"}))
    assert problems == [] and policy is not None and set(policy.jobs) == {"default"}


@pytest.mark.parametrize("labels", [{}, {"compose-ckpt.enable": "false"}, {"compose-ckpt.enable": "0"},
                                    {"compose-ckpt.enable": "no"}, {"other.enable": "true"}])
def test_containers_not_enabled_are_ignored_silently(labels: dict[str, str]) -> None:
    assert parsed(container("web", labels)) == (None, [])


def test_compose_ckpts_own_labels_are_not_the_sidecars_to_read() -> None:
    """After `adopt` (Docker 28/29) a service carries compose-ckpt.network-holder; with criu-options it
    carries compose-ckpt.criu-options: under the default prefix they are ours, not unknown sidecar labels."""
    policy, problems = parsed(container("web", {"compose-ckpt.enable": "true", "compose-ckpt.schedule": "@hourly",
                                                LABEL_NETWORK_HOLDER: "shop-web-net-1",
                                                LABEL_CRIU_OPTIONS: "tcp-established"}))
    assert problems == [] and policy is not None and set(policy.jobs) == {"default"}


def test_defaults_of_a_labelled_container() -> None:
    policy, _ = parsed(container("web", {"compose-ckpt.enable": "true", "compose-ckpt.schedule": "@every 90s"}))
    assert policy is not None
    spec = policy.jobs["default"]
    assert spec.schedule == EverySchedule("@every 90s", timedelta(seconds=90))
    assert spec.retention == Retention(None, None) and spec.leave_running is True
    assert policy.restore_on_boot is BootMode.OFF and policy.present


def test_named_jobs_have_their_own_retention_and_inherit_container_wide_fields() -> None:
    policy, problems = parsed(container("web", {
        "compose-ckpt.enable": "true", "compose-ckpt.max-age": "30d", "compose-ckpt.leave-running": "false",
        "compose-ckpt.hourly.schedule": "@hourly", "compose-ckpt.hourly.keep": "24",
        "compose-ckpt.daily.schedule": "0 3 * * *", "compose-ckpt.daily.keep": "7", "compose-ckpt.daily.max-age": "7d",
    }))
    assert problems == [] and policy is not None
    assert set(policy.jobs) == {"hourly", "daily"}  # no container-wide schedule: no default job
    assert policy.jobs["hourly"].retention == Retention(24, timedelta(days=30))
    assert policy.jobs["daily"].retention == Retention(7, timedelta(days=7))
    assert not policy.jobs["daily"].leave_running


def test_config_jobs_and_defaults_apply_under_the_labels() -> None:
    rules = LabelRules(defaults=JobSettings(keep=5, schedule=parse_schedule("@daily", UTC)), restore_on_boot=BootMode.SAFE,
                       jobs={"often": JobSettings(schedule=parse_schedule("@every 1m", UTC), keep=2)})
    policy, problems = parsed(container("web", {"compose-ckpt.enable": "1", "compose-ckpt.often.keep": "3"}), rules)
    assert problems == [] and policy is not None
    assert policy.restore_on_boot is BootMode.SAFE
    assert policy.jobs["default"].schedule == parse_schedule("@daily", UTC)
    assert policy.jobs["default"].retention.keep == 5
    assert policy.jobs["often"].retention.keep == 3  # the label wins over the config job


def test_a_custom_prefix() -> None:
    rules = LabelRules(prefix="acme.ckpt")
    policy, _ = parsed(container("web", {"acme.ckpt.enable": "true", "acme.ckpt.schedule": "@hourly",
                                         "compose-ckpt.enable": "false"}), rules)
    assert policy is not None and set(policy.jobs) == {"default"}


@pytest.mark.parametrize("label, value, message", [
    ("compose-ckpt.schedule", "every day", "invalid schedule"),
    ("compose-ckpt.keep", "two", "invalid keep"),
    ("compose-ckpt.keep", "0", "invalid keep"),
    ("compose-ckpt.max-age", "7 days", "invalid duration"),
    ("compose-ckpt.leave-running", "maybe", "invalid boolean"),
    ("compose-ckpt.restore-on-boot", "sure", "invalid restore-on-boot"),
    ("compose-ckpt.kep", "2", "unknown label"),
    ("compose-ckpt.daily.keep.extra", "2", "unknown label"),
])
def test_a_bad_container_wide_label_skips_the_container_and_names_the_label(label: str, value: str, message: str) -> None:
    policy, problems = parsed(container("web", {"compose-ckpt.enable": "true", "compose-ckpt.schedule": "@hourly",
                                                label: value}))
    assert policy is None
    assert [(p.container, p.label) for p in problems] == [("web", label)]
    assert message in problems[0].message


def test_a_bad_job_label_skips_only_that_job() -> None:
    policy, problems = parsed(container("web", {
        "compose-ckpt.enable": "true", "compose-ckpt.schedule": "@hourly",
        "compose-ckpt.daily.schedule": "@daily", "compose-ckpt.daily.keep": "-1",
        "compose-ckpt.weekly.keep": "4",  # no schedule for this job
    }))
    assert policy is not None and set(policy.jobs) == {"default"}
    assert sorted(p.label for p in problems) == ["compose-ckpt.daily.keep", "compose-ckpt.weekly.schedule"]


def test_bad_enable_value_and_non_compose_containers_are_reported() -> None:
    _, problems = parsed(container("web", {"compose-ckpt.enable": "ja"}))
    assert [p.label for p in problems] == ["compose-ckpt.enable"]
    _, problems = parsed(container("solo", {"compose-ckpt.enable": "true"}, project_name=""))
    assert [p.label for p in problems] == [LABEL_PROJECT]


def policies(*containers: ContainerInfo) -> list[ContainerPolicy]:
    found = [parsed(c) for c in containers]
    return [policy for policy, _ in found if policy is not None]


EVERY_3S = {"compose-ckpt.enable": "true", "compose-ckpt.schedule": "@every 3s", "compose-ckpt.keep": "2"}


def test_containers_of_one_project_sharing_a_job_make_one_stack_job() -> None:
    jobs, problems = plan(policies(
        container("shop-db-1", EVERY_3S, service="db"),
        container("shop-web-1", {**EVERY_3S, "compose-ckpt.daily.schedule": "@daily"}, service="web"),
        container("shop-web-2", {**EVERY_3S, "compose-ckpt.daily.schedule": "@daily"}, service="web"),
        container("blog-app-1", EVERY_3S, project_name="blog", service="app"),
        container("shop-cache-1", {"compose-ckpt.enable": "true"}, service="cache"),  # no job
    ), RULES)
    assert problems == []
    assert [(j.project_name, j.job, j.services, j.prefix) for j in jobs] == [
        ("blog", "default", ("app",), "auto-default-"),
        ("shop", "daily", ("web",), "auto-daily-"),
        ("shop", "default", ("db", "web"), "auto-default-"),
    ]
    assert jobs[2].retention == Retention(2, None)


def test_exited_containers_leave_the_job_and_paused_ones_stay() -> None:
    jobs, _ = plan(policies(container("shop-db-1", EVERY_3S, service="db", status="paused"),
                            container("shop-web-1", EVERY_3S, service="web", status="exited")), RULES)
    assert [j.services for j in jobs] == [("db",)]


def test_containers_that_disagree_on_a_job_skip_it_for_the_project() -> None:
    jobs, problems = plan(policies(
        container("shop-db-1", EVERY_3S, service="db"),
        container("shop-web-1", {**EVERY_3S, "compose-ckpt.keep": "5"}, service="web"),
        container("blog-app-1", EVERY_3S, project_name="blog", service="app"),
    ), RULES)
    assert [j.project_name for j in jobs] == ["blog"]
    assert [(p.container, p.label) for p in problems] == [("shop-db-1, shop-web-1", "compose-ckpt.keep")]


def test_manual_job() -> None:
    found = policies(
        container("shop-db-1", {**EVERY_3S, "compose-ckpt.restore-on-boot": "true"}, service="db", status="exited"),
        container("shop-web-1", {**EVERY_3S, "compose-ckpt.restore-on-boot": "yes"}, service="web"),
        container("shop-cache-1", {"compose-ckpt.enable": "true"}, service="cache"),
        container("blog-app-1", {"compose-ckpt.enable": "true"}, project_name="blog", service="app", status="exited"),
    )
    job = manual_job("shop", found)
    assert (job.services, job.prefix, job.retention) == (("cache", "web"), "manual-", None)


def test_snapshot_names_sort_by_time() -> None:
    job = StackJob("shop", "hourly", ("web",), "auto-hourly-")
    assert job.snapshot_name(datetime(2026, 3, 1, 9, 5, 7, 123456, tzinfo=UTC)) == "auto-hourly-20260301-090507-123"


def manifest(name: str, hours_ago: float, status: SnapshotStatus = SnapshotStatus.COMPLETE) -> Manifest:
    created = (NOW - timedelta(hours=hours_ago)).isoformat().replace("+00:00", "Z")
    return Manifest(name=name, project="shop", created=created, status=status, stopped=False,
                    compose_files=[], compose_hash="", services=["web"], dependencies={})


SNAPSHOTS = [manifest("auto-hourly-a", 50), manifest("auto-hourly-b", 30), manifest("mine-by-hand", 40),
             manifest("auto-daily-a", 45), manifest("auto-hourly-c", 2),
             manifest("auto-hourly-d", 1, SnapshotStatus.FAILED), manifest("auto-hourly-e", 0.5)]


@pytest.mark.parametrize("retention, removed", [
    (Retention(keep=2), ["auto-hourly-a", "auto-hourly-b", "auto-hourly-d"]),
    (Retention(max_age=timedelta(days=1)), ["auto-hourly-a", "auto-hourly-b", "auto-hourly-d"]),
    (Retention(keep=1, max_age=timedelta(hours=40)), ["auto-hourly-a", "auto-hourly-d"]),
    (Retention(), ["auto-hourly-d"]),  # no retention: only the failed one goes
])
def test_retention_prunes_only_the_jobs_own_snapshots(retention: Retention, removed: list[str]) -> None:
    assert [m.name for m in retention.select(SNAPSHOTS, "auto-hourly-", NOW)] == removed


def test_with_volumes_container_wide_and_per_job() -> None:
    policy, problems = parsed(container("web", {
        "compose-ckpt.enable": "true", "compose-ckpt.schedule": "@hourly", "compose-ckpt.with-volumes": "true",
        "compose-ckpt.daily.schedule": "@daily", "compose-ckpt.daily.with-volumes": "false",
        "compose-ckpt.weekly.schedule": "@weekly",
    }))
    assert problems == [] and policy is not None
    assert {name: spec.with_volumes for name, spec in policy.jobs.items()} == {
        "default": True, "daily": False, "weekly": True}
    (job,) = [j for j in plan([policy], RULES)[0] if j.job == "default"]
    assert job.with_volumes
    _, bad = parsed(container("web", {"compose-ckpt.enable": "true", "compose-ckpt.with-volumes": "maybe"}))
    assert bad and "invalid boolean" in bad[0].message


def test_push_labels_per_job_inherit_and_must_agree() -> None:
    from compose_ckpt.registry.reference import parse_reference

    push = {**EVERY_3S, "compose-ckpt.push": "reg.io:5000/team/shop", "compose-ckpt.daily.schedule": "@daily",
            "compose-ckpt.offsite.schedule": "@hourly", "compose-ckpt.offsite.push": "backup.io/shop:latest"}
    jobs, problems = plan(policies(container("shop-db-1", push, service="db"),
                                   container("shop-web-1", push, service="web")), RULES)
    assert problems == []
    assert {j.job: j.push for j in jobs} == {"daily": parse_reference("reg.io:5000/team/shop"),
                                             "default": parse_reference("reg.io:5000/team/shop"),
                                             "offsite": parse_reference("backup.io/shop:latest")}
    jobs, problems = plan(policies(container("shop-db-1", push, service="db"),
                                   container("shop-web-1", {**push, "compose-ckpt.push": "other.io/x"}, service="web")),
                          RULES)
    assert {p.label for p in problems} == {"compose-ckpt.push", "compose-ckpt.daily.push"}  # both jobs inherit it
    assert [j.job for j in jobs] == ["offsite"]


@pytest.mark.parametrize("value", ["reg.io/app@sha256:" + "a" * 64, "Bad/Ref", "reg.io/app:-x"])
def test_a_bad_push_label_skips_the_container_and_names_the_label(value: str) -> None:
    policy, problems = parsed(container("shop-web-1", {**EVERY_3S, "compose-ckpt.push": value}))
    assert policy is None and [p.label for p in problems] == ["compose-ckpt.push"]


def test_a_snapshot_made_elsewhere_under_the_jobs_prefix_is_not_the_jobs_own() -> None:
    """Pulled as `auto-hourly-z`, it would otherwise count among the newest and have the sidecar remove the
    job's real snapshots without a word."""
    pulled = dataclasses.replace(manifest("auto-hourly-z", 0.1), imported_from="registry.example/team/app@sha256:ab",
                                 received=NOW.isoformat().replace("+00:00", "Z"))
    removed = Retention(keep=2).select([*SNAPSHOTS, pulled], "auto-hourly-", NOW)
    assert [m.name for m in removed] == ["auto-hourly-a", "auto-hourly-b", "auto-hourly-d"]

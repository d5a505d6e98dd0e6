"""From container labels to stack jobs: pure rules, no I/O.

A container opts in with `<prefix>.enable=true`. Its default job comes from
`<prefix>.schedule`, named jobs from `<prefix>.<job>.schedule`; retention and
leave-running of a job are taken, first found, from `<prefix>.<job>.<field>`,
the config file's `jobs.<job>`, `<prefix>.<field>`, the config's `defaults`.
Containers of one compose project sharing a job become one `StackJob`: one
consistent snapshot of exactly those services.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta, tzinfo
from enum import Enum

from compose_ckpt.const import LABEL_PROJECT, LABEL_SERVICE, OWN_LABELS
from compose_ckpt.domain.store.manifest import Manifest
from compose_ckpt.domain.store.retention import parse_duration, to_prune
from compose_ckpt.engine import ContainerInfo
from compose_ckpt.errors import UsageError
from compose_ckpt.registry.reference import Reference, parse_reference
from compose_ckpt.sidecar.schedule import Schedule, parse_schedule

DEFAULT_PREFIX = "compose-ckpt"
DEFAULT_JOB = "default"
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")
# Label (and config) field names, as users write them.
SCHEDULE, KEEP, MAX_AGE, LEAVE_RUNNING, PUSH = "schedule", "keep", "max-age", "leave-running", "push"
WITH_VOLUMES = "with-volumes"
ENABLE, RESTORE_ON_BOOT = "enable", "restore-on-boot"
JOB_FIELDS = (SCHEDULE, KEEP, MAX_AGE, LEAVE_RUNNING, PUSH, WITH_VOLUMES)
CONTAINER_FIELDS = (ENABLE, RESTORE_ON_BOOT)


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise UsageError(f"invalid boolean {value!r}", hint="Use true/false, 1/0 or yes/no.")


class BootMode(str, Enum):
    """What `restore-on-boot` asks for; see `compose_ckpt.sidecar.boot` for the rules."""

    OFF = "false"
    SAFE = "true"  # only from a clean-stop snapshot after which the container did not run again
    ROLLBACK = "rollback"  # from the latest snapshot that holds the volumes too: files and memory go back together


def parse_boot_mode(value: object) -> BootMode:
    if isinstance(value, str) and value.strip().lower() == BootMode.ROLLBACK.value:
        return BootMode.ROLLBACK
    try:
        return BootMode.SAFE if parse_bool(value) else BootMode.OFF
    except UsageError:
        raise UsageError(f"invalid restore-on-boot {value!r}", hint="Use true, false or rollback.") from None


def parse_keep(value: object) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise UsageError(f"invalid keep {value!r}: a count of snapshots, 1 or more")
    return int(text)


class SettingError(UsageError):
    """A bad value of one setting (`name` as users write it: keep, max-age, ...)."""

    def __init__(self, name: str, cause: UsageError) -> None:
        super().__init__(f"{name}: {cause.message}", hint=cause.hint)
        self.name = name


def parse_push(value: object) -> Reference:
    """Where a job's snapshots go: a registry repository, tagged with each snapshot's name (and REF's tag, if any)."""
    reference = parse_reference(str(value).strip())
    if reference.digest:
        raise UsageError(f"invalid push {value!r}: a repository (optionally with a tag), not a digest")
    return reference


def validate_job_name(name: str) -> str:
    if not JOB_NAME.match(name):
        raise UsageError(f"invalid job name {name!r}", hint="Use 1-40 letters, digits, '_' or '-'.")
    return name


@dataclass(frozen=True)
class JobSettings:
    """Settings of a job as one source gives them; None where that source says nothing."""

    schedule: Schedule | None = None
    keep: int | None = None
    max_age: timedelta | None = None
    leave_running: bool | None = None
    push: Reference | None = None
    with_volumes: bool | None = None

    @classmethod
    def parse(cls, values: Mapping[str, object], zone: tzinfo) -> JobSettings:
        """From {field: raw value}; a bad value raises SettingError naming its field."""
        parsers = {SCHEDULE: lambda v: parse_schedule(str(v), zone), KEEP: parse_keep,
                   MAX_AGE: lambda v: parse_duration(str(v)), LEAVE_RUNNING: parse_bool, PUSH: parse_push,
                   WITH_VOLUMES: parse_bool}
        parsed: dict[str, object] = {}
        for name, raw in values.items():
            if raw is None:
                continue
            try:
                parsed[name.replace("-", "_")] = parsers[name](raw)
            except UsageError as exc:
                raise SettingError(name, exc) from None
        return cls(**parsed)  # type: ignore[arg-type]

    def over(self, base: JobSettings) -> JobSettings:
        """These settings, with `base` filling what they leave unset."""
        return replace(base, **{f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None})


@dataclass(frozen=True)
class Retention:
    """Which of a job's own snapshots to remove: `to_prune` (as `compose-ckpt prune`) over them alone. An
    imported or pulled snapshot is never the job's own, whatever its name: it neither counts among the kept
    nor is removed.

    The `keep` newest are always kept; with `max-age`, older ones only once past it;
    with `max-age` alone, every one past it."""

    keep: int | None = None
    max_age: timedelta | None = None

    def select(self, manifests: Sequence[Manifest], prefix: str, now: datetime) -> list[Manifest]:
        mine = [m for m in manifests if m.name.startswith(prefix) and m.imported_from is None]
        keep = self.keep if self.keep is not None else (0 if self.max_age else len(mine))
        return to_prune(mine, keep, self.max_age, now)


@dataclass(frozen=True)
class JobSpec:
    """A job's settings once resolved: it has a schedule, and says how to snapshot and what to keep."""

    schedule: Schedule
    retention: Retention
    leave_running: bool
    push: Reference | None = None  # registry repository each snapshot is pushed to
    with_volumes: bool = False  # copy the named volumes too (snapshot --with-volumes)


@dataclass(frozen=True)
class Problem:
    """A label that cannot be used; what it affects is skipped, the rest goes on."""

    container: str
    label: str
    message: str


@dataclass(frozen=True)
class ContainerPolicy:
    """What the labels of one enabled compose container ask for."""

    container: str
    project_name: str
    service: str
    present: bool  # running or paused: part of the stack's scheduled snapshots
    restore_on_boot: BootMode
    jobs: Mapping[str, JobSpec]
    last_started: datetime | None = None  # when the container last started; None: never


@dataclass(frozen=True)
class StackJob:
    """One consistent snapshot of some services of a project, named `<prefix><time>`."""

    project_name: str
    job: str
    services: tuple[str, ...]
    prefix: str
    leave_running: bool = True
    schedule: Schedule | None = None
    retention: Retention | None = None  # None: kept until removed by hand
    push: Reference | None = None
    with_volumes: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.project_name, self.job)

    def snapshot_name(self, now: datetime) -> str:
        """Sortable by time, to the millisecond, like the CLI's default names."""
        return self.prefix + now.astimezone(UTC).strftime("%Y%m%d-%H%M%S-%f")[:-3]


def auto_prefix(job: str) -> str:
    return f"auto-{job}-"


MANUAL_PREFIX = "manual-"


@dataclass(frozen=True)
class LabelRules:
    """The label prefix and the config file's defaults that label parsing applies."""

    prefix: str = DEFAULT_PREFIX
    zone: tzinfo = UTC
    defaults: JobSettings = field(default_factory=JobSettings)
    restore_on_boot: BootMode = BootMode.OFF
    jobs: Mapping[str, JobSettings] = field(default_factory=dict)

    def label(self, name: str, job: str | None = None) -> str:
        return f"{self.prefix}.{job}.{name}" if job and job != DEFAULT_JOB else f"{self.prefix}.{name}"


def parse_container(container: ContainerInfo, rules: LabelRules) -> tuple[ContainerPolicy | None, list[Problem]]:
    """The container's policy (None when not enabled or unusable) and the problems found in its labels.

    A bad container-wide label skips the container; a bad job label skips that job only."""
    labels = container.labels
    enable_label = rules.label(ENABLE)
    if enable_label not in labels:
        return None, []
    try:
        if not parse_bool(labels[enable_label]):
            return None, []
    except UsageError as exc:
        return None, [Problem(container.name, enable_label, exc.message)]
    project_name, service = labels.get(LABEL_PROJECT), labels.get(LABEL_SERVICE)
    if not project_name or not service:
        return None, [Problem(container.name, LABEL_PROJECT, "not a compose container (no compose project or "
                                                              "service label); only compose stacks are snapshotted")]
    top, per_job, problems = _split_labels(container.name, labels, rules)
    try:
        restore_on_boot = parse_boot_mode(top.pop(RESTORE_ON_BOOT, rules.restore_on_boot.value))
    except UsageError as exc:
        problems.append(Problem(container.name, rules.label(RESTORE_ON_BOOT), exc.message))
    try:
        container_settings = JobSettings.parse(top, rules.zone)
    except SettingError as exc:
        problems.append(Problem(container.name, rules.label(exc.name), exc.message))
    if problems:
        return None, problems
    jobs: dict[str, JobSpec] = {}
    for job in sorted({DEFAULT_JOB, *rules.jobs, *per_job}):
        spec, problem = _resolve_job(container.name, job, per_job.get(job, {}), container_settings, rules)
        if spec is not None:
            jobs[job] = spec
        if problem is not None:
            problems.append(problem)
    policy = ContainerPolicy(container=container.name, project_name=project_name, service=service,
                             present=not container.exited, restore_on_boot=restore_on_boot, jobs=jobs,
                             last_started=container.last_started)
    return policy, problems


def _split_labels(container: str, labels: Mapping[str, str], rules: LabelRules
                  ) -> tuple[dict[str, str], dict[str, dict[str, str]], list[Problem]]:
    """Our labels, as container-wide fields, fields per named job, and the ones that fit neither."""
    top: dict[str, str] = {}
    per_job: dict[str, dict[str, str]] = {}
    problems: list[Problem] = []
    for key, value in labels.items():
        if not key.startswith(rules.prefix + ".") or key in OWN_LABELS:
            continue
        parts = key[len(rules.prefix) + 1:].split(".")
        if len(parts) == 1 and parts[0] in JOB_FIELDS + CONTAINER_FIELDS:
            if parts[0] != ENABLE:
                top[parts[0]] = value
        elif len(parts) == 2 and JOB_NAME.match(parts[0]) and parts[1] in JOB_FIELDS:
            per_job.setdefault(parts[0], {})[parts[1]] = value
        else:
            problems.append(Problem(container, key, "unknown label (fields: " + ", ".join(
                (*CONTAINER_FIELDS, *JOB_FIELDS)) + "; per job: <job>.schedule|keep|max-age|leave-running|push|with-volumes)"))
    return top, per_job, problems


def _resolve_job(container: str, job: str, labels: Mapping[str, str], container_settings: JobSettings,
                 rules: LabelRules) -> tuple[JobSpec | None, Problem | None]:
    try:
        own = JobSettings.parse(labels, rules.zone)
    except SettingError as exc:
        return None, Problem(container, rules.label(exc.name, job), f"{exc.message}; job {job} skipped")
    configured = rules.jobs.get(job, JobSettings())
    # The schedule is the job's own: a named job never inherits the container-wide (default job's) one.
    schedule = own.schedule or configured.schedule
    if job == DEFAULT_JOB:
        schedule = schedule or container_settings.schedule or rules.defaults.schedule
    if schedule is None:
        if labels:
            return None, Problem(container, rules.label(SCHEDULE, job), f"job {job} has no schedule; job skipped")
        return None, None
    settings = own.over(configured).over(container_settings).over(rules.defaults)
    leave_running = True if settings.leave_running is None else settings.leave_running
    return JobSpec(schedule, Retention(settings.keep, settings.max_age), leave_running, settings.push,
                   bool(settings.with_volumes)), None


def plan(policies: Iterable[ContainerPolicy], rules: LabelRules) -> tuple[list[StackJob], list[Problem]]:
    """One StackJob per (project, job) over the present containers that have the job.

    Containers that disagree on a job's settings make that job of that project skipped."""
    members: dict[tuple[str, str], list[tuple[ContainerPolicy, JobSpec]]] = {}
    for policy in policies:
        if policy.present:
            for job, spec in policy.jobs.items():
                members.setdefault((policy.project_name, job), []).append((policy, spec))
    jobs: list[StackJob] = []
    problems: list[Problem] = []
    for (project_name, job), entries in sorted(members.items()):
        spec = entries[0][1]
        odd = [(policy, other) for policy, other in entries if other != spec]
        if odd:
            names = f"{entries[0][0].container}, {odd[0][0].container}"
            problems.append(Problem(names, rules.label(_first_difference(spec, odd[0][1]), job),
                                    f"containers of project {project_name} disagree on job {job}; job skipped"))
            continue
        services = tuple(sorted({policy.service for policy, _ in entries}))
        jobs.append(StackJob(project_name, job, services, auto_prefix(job), spec.leave_running, spec.schedule, spec.retention,
                             spec.push, spec.with_volumes))
    return jobs, problems


def _first_difference(one: JobSpec, other: JobSpec) -> str:
    if one.schedule != other.schedule:
        return SCHEDULE
    if one.leave_running != other.leave_running:
        return LEAVE_RUNNING
    if one.push != other.push:
        return PUSH
    if one.with_volumes != other.with_volumes:
        return WITH_VOLUMES
    return KEEP if one.retention.keep != other.retention.keep else MAX_AGE


def manual_job(project_name: str, policies: Iterable[ContainerPolicy]) -> StackJob:
    """A snapshot of every present enabled service of the project, now; the sidecar never prunes it."""
    services = tuple(sorted({p.service for p in policies if p.project_name == project_name and p.present}))
    if not services:
        raise UsageError(f"project {project_name} has no running container labelled for compose-ckpt")
    return StackJob(project_name, "manual", services, MANUAL_PREFIX)

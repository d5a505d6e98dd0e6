"""`compose-ckpt doctor`: can checkpoint/restore work on this engine, and if not, why."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from compose_ckpt.const import CRIU_CONFIG_ANNOTATION, LABEL_CRIU_OPTIONS, LABEL_PROJECT, RUNC_CRIU_CONFIG
from compose_ckpt.domain.host.versions import version_tuple
from compose_ckpt.domain.ports import ComposePort, EnginePort
from compose_ckpt.domain.stack.adopt import drift
from compose_ckpt.domain.stack.held_policies import held_policies
from compose_ckpt.domain.stack.holders import needs_holders, network_form
from compose_ckpt.domain.stack.project import Project
from compose_ckpt.domain.stack.remedies import CRIU_MISSING, remedy_for
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.engine import ContainerInfo, CriuOptions
from compose_ckpt.engine.types import EngineInfo
from compose_ckpt.errors import CkptError

CRIU_RECOMMENDED = (4, 2)
BROKEN_RESTORE_MAJORS = (28, 29)
LOW_DISK_BYTES = 2 * 1024**3


class Status(str, Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    remedy: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}


@dataclass(frozen=True)
class Report:
    checks: list[Check]

    @property
    def can_checkpoint(self) -> bool:
        return all(check.status is not Status.FAIL for check in self.checks)


def run_checks(connect: Callable[[], EnginePort], store_home: Path,
               project_here: Callable[[EnginePort], Project] | None = None,
               compose: Callable[[], ComposePort] | None = None) -> Report:
    """Run every check. `connect` returns an engine or raises EngineUnavailable; `project_here`, when given,
    resolves the compose project here on that engine, for the checks of its containers (network holders, held
    restart policies) and of its adoption, for which `compose` runs `docker compose` (adopt.drift). A project
    that cannot be resolved (no compose files here) is left out of those checks."""
    try:
        engine = connect()
        info = engine.info()
    except CkptError as exc:
        return Report([Check("daemon", Status.FAIL, exc.message, exc.hint or "")])
    checks = [
        Check("daemon", Status.OK, f"reachable at {engine.base_url}"),
        Check("api", Status.OK, f"Docker {info.server_version}, API {info.api_version}"),
        _docker_version(info),
        _experimental(info),
        Check("cgroup", Status.OK, f"cgroup v{info.cgroup_version}, kernel {info.kernel_version}"),
    ]
    pid = engine.daemon_pid()
    if pid is not None:
        checks += _host_checks(engine, info, pid)
    elif info.local:
        checks.append(Check(
            "host", Status.WARN,
            f"cannot tell which process serves {engine.socket_path or engine.base_url} (socket activation?): "
            "the daemon's CRIU, capabilities and disk not checked",
            "Check the CRIU on that daemon's PATH yourself (`criu --version`, `criu check`); CRIU 4.2 or newer.",
        ))
    else:
        checks.append(
            Check("host", Status.WARN, f"the engine at {engine.base_url} runs on another host (or is reached over "
                  "the network): its CRIU, capabilities and disk cannot be checked from here",
                  "Run `compose-ckpt doctor` on the Docker host itself for those checks.")
        )
    checks.append(_disk("store", store_home))
    checks.append(_staging_leftovers(store_home))
    project = _resolved(project_here, engine)
    containers = _containers(project) if project is not None else []
    if project_here is not None and needs_holders(info.server_version):
        checks.append(_network_holders(info, containers))
    if options := _restore_options(engine, containers):
        checks.append(options)
    if held := _held_policies(store_home, containers):
        checks.append(held)
    drifted = _drift(project, compose) if project is not None and compose is not None else None
    if drifted:
        checks.append(Check("adoption", Status.WARN, drifted, "Run `compose-ckpt adopt` in the project folder."))
    return Report(checks)


def _restore_options(engine: EnginePort, containers: list[tuple[str, ContainerInfo]],
                     runc_conf: Path = RUNC_CRIU_CONFIG) -> Check | None:
    """Whether the CRIU options a service's label asks for reach its restores too. The label reaches dumps only:
    a restore is `docker start --checkpoint`, for which runc reads options from one file alone, the one the
    container's org.criu.config annotation names, else /etc/criu/runc.conf (docs/checkpoint-paths.md). None
    when no container of the project has such a label, or the engine's files cannot be read from here."""
    asking, lacking = [], []
    for _, container in containers:
        try:
            wanted = CriuOptions.from_words(container.labels.get(LABEL_CRIU_OPTIONS, "")).words()
        except ValueError:
            continue  # `snapshot` refuses such a label, saying why
        if not wanted:
            continue
        config = criu_config_of((container.attrs.get("HostConfig") or {}).get("Annotations") or {}, runc_conf)
        held = engine.criu_config_options(config) if config else set()
        if held is None:
            return None
        asking.append(container.name)
        missing = [word for word in wanted if word not in held]
        if missing:
            lacking.append(f"{container.name} lacks {', '.join(missing)} "
                           f"({f'not in {config}' if config else 'its org.criu.config annotation is empty'})")
    if not asking:
        return None
    if not lacking:
        return Check("restore options", Status.OK,
                     f"the CRIU options of the {LABEL_CRIU_OPTIONS} labels reach restores too: {', '.join(asking)}")
    return Check("restore options", Status.WARN,
                 f"the {LABEL_CRIU_OPTIONS} label reaches dumps only; for restores runc reads the container's "
                 f"org.criu.config file, else {runc_conf}: " + "; ".join(lacking),
                 "Give restores the same options: `compose-ckpt host install --tcp-established` (runc.conf, every "
                 "container), or an org.criu.config annotation naming a root-owned file that holds them "
                 "(docs/checkpoint-paths.md). Else a snapshot that needed them does not restore.")


def criu_config_of(annotations: dict[str, str], runc_conf: Path = RUNC_CRIU_CONFIG) -> Path | None:
    """The one CRIU configuration file runc gives CRIU for a container with these annotations, its dumps and
    restores alike: the file org.criu.config names, else runc.conf; None when that annotation is empty (runc
    then names none)."""
    if CRIU_CONFIG_ANNOTATION not in annotations:
        return runc_conf
    return Path(annotations[CRIU_CONFIG_ANNOTATION]) if annotations[CRIU_CONFIG_ANNOTATION] else None


def _resolved(project_here: Callable[[EnginePort], Project] | None, engine: EnginePort) -> Project | None:
    """The compose project here, or None without one (no compose files, or compose files that do not load)."""
    try:
        return project_here(engine) if project_here is not None else None
    except CkptError:
        return None


def _containers(project: Project) -> list[tuple[str, ContainerInfo]]:
    """The (service, container) pairs of the project's active services; none when they cannot be listed."""
    try:
        return [(entry.service, c) for entry in project.resolve(project.select([])) for c in entry.containers]
    except CkptError:
        return []


def _drift(project: Project, compose: Callable[[], ComposePort]) -> str | None:
    """What of the project's adoption no longer matches its compose files; None when that cannot be told."""
    try:
        return drift(project, compose)
    except CkptError:
        return None


def _held_policies(store_home: Path, containers: list[tuple[str, ContainerInfo]]) -> Check | None:
    """The restart policies a `snapshot --stop` holds back from the project's containers (`no` until then)."""
    projects = {c.labels[LABEL_PROJECT] for _, c in containers if c.labels.get(LABEL_PROJECT)}
    try:
        held = [entry for name in sorted(projects) for entry in held_policies(SnapshotStore(store_home), name).values()]
    except CkptError as exc:
        return Check("restart policies", Status.WARN, exc.message, exc.hint or "")
    if not held:
        return None
    return Check("restart policies", Status.WARN,
                 "held back (the container runs with `no` until then): " + ", ".join(
                     f"{entry.policy.as_text()} of {entry.container} (snapshot {entry.snapshot})" for entry in held),
                 "`compose-ckpt restore` puts each back once its container runs restored; a container started "
                 "otherwise gets it back at the next compose-ckpt command on the project (`ps`, `snapshot`).")


def _network_holders(info: EngineInfo, containers: list[tuple[str, ContainerInfo]]) -> Check:
    """On Docker 28+: which of the project's containers this engine can restore, and which need `adopt`."""
    forms = [(service, c.name, network_form(c.attrs)) for service, c in containers]
    restorable = [f"{name} ({form.value})" for _, name, form in forms if form.restorable_on(info.server_version)]
    needing = [(service, name) for service, name, form in forms if not form.restorable_on(info.server_version)]
    if not needing:
        return Check("network holders", Status.OK, f"restorable here: {', '.join(restorable) or 'no containers'}")
    return Check("network holders", Status.WARN,
                 f"need adopt: {', '.join(name for _, name in needing)}; restorable: {', '.join(restorable) or 'none'}",
                 "Run `compose-ckpt adopt` once (a cold restart of each): snapshot refuses them until then.")


def _docker_version(info: EngineInfo) -> Check:
    major = _major(info.server_version)
    if major in BROKEN_RESTORE_MAJORS:
        return Check(
            "docker-version", Status.WARN,
            f"Docker {info.server_version} cannot restore containers with a network namespace of their own "
            "(moby#50750, containerd#12141): only adopted ones (joined to a network holder), network_mode host "
            "or service:X",
            "Run `compose-ckpt adopt` once in each project (docs/engine.md), or use Docker 26 or 27.",
        )
    return Check("docker-version", Status.OK, f"Docker {info.server_version} has no known restore breakage")


def _experimental(info: EngineInfo) -> Check:
    if info.experimental:
        return Check("experimental", Status.OK, "experimental features enabled")
    return Check(
        "experimental", Status.FAIL, "experimental features are off: Docker refuses checkpoints",
        'Add {"experimental": true} to /etc/docker/daemon.json and restart the daemon.',
    )


def _host_checks(engine: EnginePort, info: EngineInfo, pid: int) -> list[Check]:
    """Checks of the very daemon process addressed (pid), on this host."""
    criu = engine.criu_probe()
    checks: list[Check] = []
    if criu.path is None:
        checks.append(Check("criu", Status.FAIL, f"no criu on the PATH of the daemon (pid {pid}): {criu.search_path}",
                            CRIU_MISSING))
    elif version_tuple(criu.version) < CRIU_RECOMMENDED:
        checks.append(Check("criu", Status.WARN, f"criu {criu.version} at {criu.path} (daemon pid {pid})",
                            "CRIU before 4.2 fails on recent kernels (vDSO bounds, SO_PASSCRED); use 4.2 or newer."))
    else:
        checks.append(Check("criu", Status.OK, f"criu {criu.version} at {criu.path} (daemon pid {pid})"))
    if criu.path is not None:
        checks.append(
            Check("criu-check", Status.OK, criu.check_output) if criu.check_ok
            else Check("criu-check", Status.FAIL, criu.check_output,
                       remedy_for(criu.check_output) or "Run `criu check --all` as root to see which kernel feature is missing.")
        )
        checks.append(_memory_tracking(engine))
    if engine.daemon_can_dump_any_uid():
        checks.append(Check("capabilities", Status.OK, "CAP_SYS_RESOURCE held: processes of any uid can be dumped"))
    else:
        checks.append(Check(
            "capabilities", Status.WARN,
            "CAP_SYS_RESOURCE is missing: CRIU cannot dump processes running as a non-root uid "
            "(`Can't get rlimit 0: Operation not permitted`)",
            "Run dockerd with full root capabilities, or run checkpointed services as root inside their containers.",
        ))
    if engine.runc_tcp_established():
        checks.append(Check("tcp-established", Status.OK,
                            f"on: {RUNC_CRIU_CONFIG} lets CRIU checkpoint established TCP connections"))
    else:
        checks.append(Check(
            "tcp-established", Status.WARN,
            f"off: no `tcp-established` line in {RUNC_CRIU_CONFIG}, so containers with established TCP "
            "connections (an app connected to its database) cannot be checkpointed",
            f"`compose-ckpt host install --project NAME --tcp-established` adds it (showing the change), or add "
            f"the line to {RUNC_CRIU_CONFIG} yourself, or per container set the annotation org.criu.config "
            "to a file holding it. Peers outside the snapshot must tolerate the pause.",
        ))
    checks.append(_disk("disk", Path(info.docker_root_dir)))
    checks.append(_containerd_copies(engine))
    return checks


def _memory_tracking(engine: EnginePort) -> Check:
    """Pre-copy (dumping most memory before the freeze) needs the kernel to track what is written after.
    compose-ckpt always dumps all memory while the stack is frozen; this says whether the kernel could do
    better, so that the frozen window of a big service is understood."""
    tracks = engine.dirty_memory_tracking()
    full = ("a live snapshot freezes the stack while all of its memory is dumped (at disk speed where the "
            "daemon's own runtime dumps it, see docs/checkpoint-paths.md)")
    if tracks is False:
        return Check("memory-tracking", Status.WARN,
                     f"off: this kernel has no dirty-memory tracking (`criu check --feature mem_dirty_track`), so "
                     f"pre-copy cannot work here: {full}",
                     "A kernel built with CONFIG_MEM_SOFT_DIRTY (most distribution kernels) has it.")
    state = "on: the kernel tracks dirty memory" if tracks else "unknown: CRIU does not say whether the kernel tracks dirty memory"
    return Check("memory-tracking", Status.OK, f"{state}; compose-ckpt does no pre-copy yet: {full}")


def _containerd_copies(engine: EnginePort) -> Check:
    """The copies of restored checkpoints containerd left behind (compose-ckpt removes those of its own
    restores; plain `docker start --checkpoint` and older versions leave them): process memory, on disk or in RAM."""
    found = engine.containerd_leftovers()
    if not found:
        return Check("restore-copies", Status.OK, "no checkpoint copies left in containerd's temp folder")
    where = ", ".join(f"{f.count} in {f.folder} ({f.size / 1024**3:.1f} GiB)" for f in found)
    paths = " ".join(f.pattern for f in found)
    return Check("restore-copies", Status.WARN,
                 f"copies of restored checkpoints (process memory, secrets included) containerd left behind: {where}",
                 f"Remove them while no checkpoint or restore runs (a dump works in such a folder too): `rm -rf {paths}`")


def _staging_leftovers(store_home: Path) -> Check:
    """What killed imports and pulls left in the store's tmp/ (process memory, as any snapshot)."""
    try:
        found = SnapshotStore(store_home).staging_leftovers(remove=False)
    except CkptError as exc:  # an untrusted store: the store check of every other command says so too
        return Check("store-leftovers", Status.WARN, exc.message, exc.hint or "")
    if not found:
        return Check("store-leftovers", Status.OK, f"nothing left by killed imports or pulls in {store_home}/tmp")
    listed = ", ".join(f"{Path(f.path).name} ({f.size / 1024**2:.1f} MiB{', resumable' if f.resumable else ''})"
                       for f in found)
    return Check("store-leftovers", Status.WARN,
                 f"{len(found)} folders left by killed imports or pulls in {store_home}/tmp (checkpoint memory): {listed}",
                 "`compose-ckpt prune` removes them; a resumable one is a pull's verified download, which the same "
                 "pull run again resumes from.")


def _disk(name: str, path: Path) -> Check:
    free = shutil.disk_usage(_existing_parent(path)).free
    text = f"{free / 1024**3:.1f} GiB free under {path}"
    if free < LOW_DISK_BYTES:
        return Check(name, Status.WARN, text, "Checkpoints need about as much disk as the containers' memory.")
    return Check(name, Status.OK, text)


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _major(version: str) -> int:
    return version_tuple(version)[0]

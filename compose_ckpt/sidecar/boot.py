"""Which exited services the sidecar restores when it starts, and from which snapshot: pure rules, no I/O.

Restoring memory over files that are newer than it corrupts a database, so by
default (`restore-on-boot=true`) a service is restored only from its latest
complete snapshot when that snapshot is a clean stop (taken with --stop) and
none of the service's containers started after it was taken: then nothing on
disk is newer than the checkpoint. With `restore-on-boot=rollback` the latest
complete snapshot that holds the volumes too is used, rolling files and memory
back together. Anything else is skipped, with the reason, and Docker's own
start of the container is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from compose_ckpt.domain.host.reboot import reboot_hazard
from compose_ckpt.domain.store.manifest import Manifest, SnapshotStatus
from compose_ckpt.sidecar.policy import BootMode, ContainerPolicy

# Why a service was skipped (the `reason` label of the skip metric), besides reboot_hazard's reasons.
NO_SNAPSHOT, NO_VOLUMES = "no-snapshot", "no-volumes"


@dataclass(frozen=True)
class BootRestore:
    """Restore these services of a project from this snapshot."""

    project_name: str
    snapshot: str
    services: tuple[str, ...]
    mode: BootMode


@dataclass(frozen=True)
class BootSkip:
    project_name: str
    service: str
    reason: str  # one of the constants above
    message: str  # for people, naming the snapshot


def boot_plan(policies: Iterable[ContainerPolicy], snapshots: Mapping[str, Sequence[Manifest]]
              ) -> tuple[list[BootRestore], list[BootSkip]]:
    """The restores to run (grouped by project and snapshot) and the services skipped, with why.

    `policies`: the labelled containers; the services asked for are those with restore-on-boot whose
    containers are not running. `snapshots`: each such project's snapshots, oldest first."""
    wanted: dict[tuple[str, str], list[ContainerPolicy]] = {}
    for policy in policies:
        if policy.restore_on_boot is not BootMode.OFF:
            wanted.setdefault((policy.project_name, policy.service), []).append(policy)
    chosen: dict[tuple[str, str, BootMode], list[str]] = {}
    skips: list[BootSkip] = []
    for (project_name, service), containers in sorted(wanted.items()):
        if all(c.present for c in containers):
            continue
        # Containers of one service that disagree: the safe rule wins.
        mode = BootMode.ROLLBACK if all(c.restore_on_boot is BootMode.ROLLBACK for c in containers) else BootMode.SAFE
        complete = [m for m in snapshots.get(project_name, ()) if m.status is SnapshotStatus.COMPLETE and service in m.services]
        verdict = (_rollback_source(project_name, service, complete) if mode is BootMode.ROLLBACK
                   else _safe_source(project_name, service, containers, complete))
        if isinstance(verdict, BootSkip):
            skips.append(verdict)
        else:
            chosen.setdefault((project_name, verdict.name, mode), []).append(service)
    restores = [BootRestore(project_name, snapshot, tuple(services), mode)
                for (project_name, snapshot, mode), services in chosen.items()]
    return restores, skips


def _safe_source(project_name: str, service: str, containers: list[ContainerPolicy],
                 complete: list[Manifest]) -> Manifest | BootSkip:
    if not complete:
        return BootSkip(project_name, service, NO_SNAPSHOT, f"no complete snapshot of {project_name} holds {service}")
    latest = complete[-1]
    hazard = reboot_hazard(latest, [(c.container, c.last_started) for c in containers])
    if hazard is not None:
        return BootSkip(project_name, service, hazard.reason, hazard.message)
    return latest


def _rollback_source(project_name: str, service: str, complete: list[Manifest]) -> Manifest | BootSkip:
    with_volumes = [m for m in complete if m.has_volumes]
    if not with_volumes:
        latest = f" (the latest, {complete[-1].name}, has none)" if complete else ""
        return BootSkip(project_name, service, NO_VOLUMES,
                        f"restore-on-boot=rollback needs a complete snapshot of {project_name} that holds {service} "
                        f"and its volumes{latest}")
    return with_volumes[-1]

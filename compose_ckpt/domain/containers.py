"""Recreating a snapshot's containers from the configuration recorded when it was taken."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from compose_ckpt.const import HOLDER_IMAGE
from compose_ckpt.domain.holders import rebuilt_holder, with_recorded_address
from compose_ckpt.domain.manifest import ContainerRecord, Manifest
from compose_ckpt.domain.ordering import dependency_levels
from compose_ckpt.domain.parallel import ProgressCallback
from compose_ckpt.domain.ports import EnginePort
from compose_ckpt.engine import NO_RESTART, ContainerInfo
from compose_ckpt.engine.specs import joined_container, referenced_containers
from compose_ckpt.errors import CkptError


def recreate_containers(engine: EnginePort, manifest: Manifest, records: Sequence[ContainerRecord],
                        progress: ProgressCallback, *, start_holders: bool = True) -> dict[str, ContainerInfo]:
    """Create (not start) each container in `records` as recorded, with the networks and volumes it needs.

    Same names and compose labels as before, so `docker compose` sees them as its own. Containers that
    join another's namespaces or volumes are created after it, pointing at it by name. A
    restart policy the snapshot held back stays held back (`no`) until the restore has verified the container.
    Their network holders are created too, started unless `start_holders` is off (import and pull start nothing)."""
    if not records:
        return {}
    ensure_networks_and_volumes(engine, manifest)
    ensure_holders(engine, manifest, records, progress, start=start_holders)
    references = container_references(manifest)
    by_name = {record.container_name: record for record in records}
    created = {}
    for level in dependency_levels(_referenced_names(records, references), list(by_name)):
        for name in level:
            progress(name, "recreating")
            held = NO_RESTART if by_name[name].held_policy else None
            created[name] = engine.create_container(by_name[name].inspect, references, restart_policy=held)
    return created


def ensure_networks_and_volumes(engine: EnginePort, manifest: Manifest) -> None:
    for network in manifest.networks:
        if not engine.network_exists(network["Name"]):
            engine.create_network(network)
    for volume in manifest.volumes:
        if not engine.volume_exists(volume["Name"]):
            engine.create_volume(volume)


def container_references(manifest: Manifest) -> dict[str, str]:
    """Recorded container ids (of the containers and their holders) -> the names they are recreated under."""
    references = {record.container_id: record.container_name for record in manifest.containers}
    for record in manifest.containers:
        if record.holder:
            references[str(record.holder["Id"])] = _name(record.holder)
    return references


def implicit_dependencies(manifest: Manifest) -> dict[str, list[str]]:
    """depends_on plus what joining implies: a service that joins another's network, ipc or pid
    namespace or takes its volumes (`service:X`, `volumes_from`) starts after it."""
    service_of = {record.container_name: record.service for record in manifest.containers}
    references = container_references(manifest)
    dependencies = {service: list(deps) for service, deps in manifest.dependencies.items()}
    for record in manifest.containers:
        for target in referenced_containers(record.inspect):
            service = service_of.get(references.get(target, target))
            if service and service != record.service:
                dependencies.setdefault(record.service, []).append(service)
    return dependencies


def ensure_holders(engine: EnginePort, manifest: Manifest, records: Sequence[ContainerRecord],
                   progress: ProgressCallback, *, start: bool = True) -> list[str]:
    """Every recorded network holder of `records` exists and runs (exists only, without `start`), recreated
    from our template where gone (at its recorded addresses when free). Returns the names of containers
    that joined a holder since replaced: they were removed, to be recreated joined to the new one."""
    stale: list[str] = []
    for record in records:
        if not record.holder:
            continue
        name = _name(record.holder)
        holder = engine.inspect(name)
        if holder is None:
            progress(name, "recreating network holder")
            spec = rebuilt_holder(record.container_name, record.holder, engine.ensure_holder_image())
            ensure_networks_and_volumes(engine, manifest)
            create_holder(engine, spec, start=start)
        elif not holder.running and start:
            progress(name, "starting network holder")
            engine.start(holder.id)
        holder = engine.inspect(name)
        app = engine.inspect(record.container_name)
        if holder is not None and app is not None and \
                joined_container(app.network_mode) != holder.id:
            engine.remove(app.id)
            stale.append(record.container_name)
    return stale


def create_holder(engine: EnginePort, spec: Mapping[str, Any], *, start: bool = True) -> str:
    """Create (and start, unless `start` is off) a network holder from `spec` (holder_spec or
    rebuilt_holder, never a record as it is), at its recorded addresses when they are free, else at any.

    Docker accepts a fixed address only on networks with a configured subnet."""
    try:
        created = engine.create_container(with_recorded_address(spec))
        if start:
            engine.start(created.id)
        return created.id
    except CkptError:
        leftover = engine.inspect(_name(spec))
        if leftover is not None:
            engine.remove(leftover.id)
    created = engine.create_container(dict(spec))
    if not start:
        return created.id
    try:
        engine.start(created.id)
    except CkptError:
        engine.remove(created.id)
        raise
    return created.id


def holders_as_built(manifest: Manifest) -> dict[str, dict[str, Any]]:
    """Container name -> the holder it would get, as our template rebuilds it from the record (for review)."""
    return {record.container_name: rebuilt_holder(record.container_name, record.holder, HOLDER_IMAGE)
            for record in manifest.containers if record.holder}


def recorded_holders(records: Sequence[ContainerRecord]) -> list[str]:
    """The names of the network holders `records` were joined to."""
    return list(dict.fromkeys(_name(record.holder) for record in records if record.holder))


def _name(recorded: Mapping[str, Any]) -> str:
    return str(recorded["Name"]).lstrip("/")


def _referenced_names(records: Sequence[ContainerRecord], references: Mapping[str, str]) -> dict[str, list[str]]:
    return {record.container_name: [references.get(target, target) for target in referenced_containers(record.inspect)]
            for record in records}

"""Recreating a snapshot's containers from the configuration recorded when it was taken."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from compose_ckpt.const import HOLDER_IMAGE, LABEL_PROJECT
from compose_ckpt.domain.ports import EnginePort
from compose_ckpt.domain.stack.holders import rebuilt_holder, with_recorded_address
from compose_ckpt.domain.stack.ordering import dependency_levels
from compose_ckpt.domain.stack.parallel import ProgressCallback
from compose_ckpt.domain.store.manifest import ContainerRecord, Manifest
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.engine import NO_RESTART, ContainerInfo, RestartPolicy
from compose_ckpt.engine.specs import joined_container, referenced_containers
from compose_ckpt.errors import CkptError, ConflictError, EngineError, NotFoundError

# Docker's refusal of a fixed address on a network whose subnet the engine chose (`... only when connecting to
# networks with user configured subnets`), or on the default bridge (`... on user defined networks only`).
_NO_FIXED_ADDRESS = "user specified IP address is supported"


def recreate_containers(engine: EnginePort, manifest: Manifest, records: Sequence[ContainerRecord],
                        progress: ProgressCallback, connected: Collection[str] = (), *,
                        start_holders: bool = True, allow_other_image: bool = False) -> dict[str, ContainerInfo]:
    """Create (not start) each container in `records` as recorded, with the networks and volumes it needs.

    Same image (see `recorded_image`), names and compose labels as before, so `docker compose` sees them as
    its own; the containers in `connected` ask for their recorded addresses too (where free), so that their
    TCP connections can come back. Containers that join another's
    namespaces or volumes are created after it, pointing at it by name. A restart policy the snapshot held
    back stays held back (`no`) until the restore has verified the container. `connected`: the containers
    whose checkpoints hold TCP connections (see `check_networks`). Their network holders are created too,
    started unless `start_holders` is off (import and pull start nothing)."""
    if not records:
        return {}
    images = {record.container_name: recorded_image(engine, record, allow_other_image) for record in records}
    ensure_networks_and_volumes(engine, manifest, connected)
    ensure_holders(engine, manifest, records, progress, connected, start=start_holders)
    references = container_references(manifest)
    by_name = {record.container_name: record for record in records}
    in_use = _AddressesInUse(engine)
    created = {}
    for level in dependency_levels(_referenced_names(records, references), list(by_name)):
        for name in level:
            progress(name, "recreating")
            held = NO_RESTART if by_name[name].held_policy else None
            recorded = by_name[name].inspect
            recorded = {**recorded, "Config": {**recorded["Config"], "Image": images[name]}}
            if name in connected:
                created[name] = _create_at_recorded_address(engine, recorded, references, held, in_use)
            else:  # any free address, as compose gives: a recorded one may still be held (a daemon killed mid-restore)
                created[name] = engine.create_container(recorded, references, restart_policy=held)
    return created


def recorded_image(engine: EnginePort, record: ContainerRecord, allow_other_image: bool) -> str:
    """The image to recreate `record`'s container from: the very one it was checkpointed on (by its tag while
    the tag names it, else by its id), since its memory belongs with that image's files. When that image is
    gone: with `allow_other_image` what the tag names now, else NotFoundError naming both."""
    if engine.image_id(record.image) == record.image_id:
        return record.image
    if engine.image_id(record.image_id) is not None:
        return record.image_id
    now = engine.image_id(record.image)
    if allow_other_image and now is not None:
        return record.image
    moved = f"; {record.image} names {now[:19]} now" if now else ""
    raise NotFoundError(
        f"the image {record.container_name} was checkpointed on is gone: {record.image} ({record.image_id}){moved}",
        hint="Its memory belongs with that image's files. Bring that very image back (`docker load` of a saved copy, "
             "or `docker pull` by digest)" + (", or pass --allow-other-image to restore onto the image the tag "
                                             "names now (old memory over new files: it may misbehave)." if now else "."))


def _create_at_recorded_address(engine: EnginePort, recorded: dict[str, Any], references: dict[str, str],
                                restart_policy: RestartPolicy | None, in_use: _AddressesInUse) -> ContainerInfo:
    """Create the container asking for its recorded addresses, where no other container holds them now.

    Docker refuses a fixed address on a network the engine chose the subnet of (one `docker compose up`
    made): there the container is created without, and gets its address when it starts."""
    networks = (recorded.get("NetworkSettings") or {}).get("Networks") or {}
    pinned = with_recorded_address(recorded, {network: in_use.on(network) for network in networks})
    try:
        return engine.create_container(pinned, references, restart_policy=restart_policy)
    except EngineError as exc:
        if _NO_FIXED_ADDRESS not in exc.message:
            raise
    return engine.create_container(recorded, references, restart_policy=restart_policy)


def take_recorded_addresses(engine: EnginePort, manifest: Manifest, created: Mapping[str, ContainerInfo],
                            connected: Collection[str], made_networks: Collection[str]) -> None:
    """The containers `created` (not started) at any free address take their recorded addresses where their
    checkpoints hold TCP connections (`connected`), keeping all else they hold (a live move's page images).
    A network such a container is on is made again with its recorded subnets when it has others, if this
    command made it (`made_networks`: only `created` containers are on it), and those containers attached
    to it again; a connected one is attached again at its recorded addresses. Raises CkptError when that
    cannot be done: a network the engine had before, with other subnets (the restore says the same), or one
    whose recorded subnet another network holds now."""
    by_name = {record.container_name: record for record in manifest.containers}
    existing = {network["Name"]: network for network in engine.list_networks()}
    for network in manifest.networks:
        name = network["Name"]
        on_it = [c for c in created if name in recorded_endpoints(by_name[c])]
        if not any(c in connected for c in on_it):
            continue
        remake = name not in existing or bool(network_subnets(network) - network_subnets(existing[name]))
        if remake and name not in made_networks:
            raise ConflictError(f"network {name} has other subnets on the target than when the snapshot was taken")
        attach = on_it if remake else [c for c in on_it if c in connected]
        for container in attach:
            engine.disconnect_network(name, created[container].id)
        if remake:
            engine.remove_network(name)
            engine.create_network(network, recorded_subnets=True)
        in_use = _AddressesInUse(engine)
        for container in attach:
            recorded = by_name[container].inspect
            if container in connected:
                recorded = with_recorded_address(recorded, {name: in_use.on(name)})
            engine.connect_network(name, created[container].id, recorded["NetworkSettings"]["Networks"][name])


class _AddressesInUse:
    """The addresses other containers hold on each network now, read once per network."""

    def __init__(self, engine: EnginePort) -> None:
        self.engine = engine
        self.found: dict[str, set[str]] = {}

    def on(self, network: str) -> set[str]:
        if network not in self.found:
            try:
                attached = self.engine.inspect_network(network).get("Containers") or {}
            except NotFoundError:
                attached = {}
            self.found[network] = {str(endpoint.get(key) or "").split("/")[0] for endpoint in attached.values()
                                   for key in ("IPv4Address", "IPv6Address")} - {""}
        return self.found[network]


def connected_containers(store: SnapshotStore, manifest: Manifest) -> set[str]:
    """The containers whose checkpoints hold established TCP connections (CRIU writes one tcp-stream image
    each): a connection comes back only at the address it was made from."""
    return {record.container_name for record in manifest.containers
            if any(store.checkpoint_dir(manifest.project, manifest.name, record.container_name).glob("tcp-stream-*.img"))}


def recorded_endpoints(record: ContainerRecord) -> dict[str, dict[str, Any]]:
    """Network name -> the recorded endpoint that holds the container's addresses: its own, or its holder's."""
    source = record.holder or record.inspect
    return dict((source.get("NetworkSettings") or {}).get("Networks") or {})


def ensure_networks_and_volumes(engine: EnginePort, manifest: Manifest, connected: Collection[str] = ()) -> None:
    """Create the recorded networks and volumes that are missing (see `check_networks` for the subnets)."""
    for network, recorded_subnets in check_networks(engine, manifest, connected):
        engine.create_network(network, recorded_subnets=recorded_subnets)
    for volume in manifest.volumes:
        if not engine.volume_exists(volume["Name"]):
            engine.create_volume(volume)


def check_networks(engine: EnginePort, manifest: Manifest,
                   connected: Collection[str]) -> list[tuple[dict[str, Any], bool]]:
    """The recorded networks missing on the engine, each with whether it is to be created with its recorded
    IPAM config (subnets, ranges, gateways): those it was given (see `_configured`, as `docker compose up`
    would create them again) and those a container of `connected` is on, whose TCP connections come back
    only at its recorded address. The others get subnets the engine picks, as `docker compose up` would: a
    subnet the engine once picked may be another engine's on the same host, whose routes a second bridge
    with it would shadow.

    Refuses (ConflictError, before anything is changed) when a network needs its recorded subnets and could
    not have them: it exists with other subnets (recreated since), or is missing and another network holds
    its subnet."""
    if not manifest.networks:
        return []
    existing = {network["Name"]: network for network in engine.list_networks()}
    missing: list[tuple[dict[str, Any], bool]] = []
    for network in manifest.networks:
        name = network["Name"]
        needs = _why_recorded_subnets(manifest, network, connected)
        if name in existing:
            if needs and network_subnets(network) - network_subnets(existing[name]):
                raise ConflictError(
                    f"network {name} has other subnets ({_listed(network_subnets(existing[name]))}) than when the "
                    f"snapshot was taken ({_listed(network_subnets(network))}): {needs}",
                    hint="Take the stack down (`docker compose down` removes its network) and restore again: "
                         "restore recreates the network as recorded. Nothing was changed.")
            continue
        holder = next(((subnet, other) for subnet in network_subnets(network) for other in existing.values()
                       if other["Name"] != name and any(subnet.overlaps(theirs) for theirs in network_subnets(other)
                                                        if theirs.version == subnet.version)), None)
        if holder is not None and needs:
            subnet, other = holder
            project = (other.get("Labels") or {}).get(LABEL_PROJECT)
            raise ConflictError(
                f"cannot recreate network {name} with its recorded subnet {subnet}: network {other['Name']}"
                + (f" (compose project {project})" if project else "") + f" holds it; {needs}",
                hint=f"Free the subnet (`docker network rm {other['Name']}`"
                     + (f", or take that stack down: `docker compose -p {project} down`" if project else "")
                     + ") and run the command again. Nothing was changed.")
        missing.append((network, bool(needs)))
    return missing


def _why_recorded_subnets(manifest: Manifest, network: Mapping[str, Any], connected: Collection[str]) -> str:
    """Why `network` is to be recreated with its recorded subnets ("" when any subnet does)."""
    name = network["Name"]
    on_it = [record for record in manifest.containers if name in recorded_endpoints(record)]
    reasons = []
    if fixed := sorted(record.container_name for record in on_it
                       if any((recorded_endpoints(record)[name].get("IPAMConfig") or {}).values())):
        reasons.append(f"{', '.join(fixed)} {'has a fixed address' if len(fixed) == 1 else 'have fixed addresses'} "
                       "on it (ipv4_address/ipv6_address)")
    if name in manifest.ipam_given or _configured(network):
        reasons.append("its IPAM config was given")
    if tcp := sorted(record.container_name for record in on_it if record.container_name in connected):
        reasons.append(_connections_of(tcp))
    return "; ".join(reasons)


def _configured(network: Mapping[str, Any]) -> bool:
    """Whether the recorded IPAM config holds what only a user gives (the engine picks one subnet per address
    family, with its gateway): ip ranges, auxiliary addresses, a subnet without gateway, several subnets."""
    entries = [entry for entry in (network.get("IPAM") or {}).get("Config") or [] if isinstance(entry, dict)]
    families = [subnet.version for subnet in network_subnets(network)]
    return (any(entry.get("IPRange") or entry.get("AuxiliaryAddresses") or not entry.get("Gateway") for entry in entries)
            or len(families) != len(set(families)))


def network_subnets(network: Mapping[str, Any]) -> set[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The subnets of a `docker network inspect` document's IPAM config."""
    found = set()
    for entry in (network.get("IPAM") or {}).get("Config") or []:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            found.add(ipaddress.ip_network(entry.get("Subnet"), strict=False))
    return found


def _listed(subnets: Collection[object]) -> str:
    return ", ".join(sorted(map(str, subnets))) or "none"


def _connections_of(containers: Sequence[str]) -> str:
    return (f"the checkpoints of {', '.join(containers)} hold TCP connections, which come back only at the "
            "addresses recorded with them")


def container_references(manifest: Manifest) -> dict[str, str]:
    """Recorded container ids (of the containers and their holders) -> the names they are recreated under."""
    references = {record.container_id: record.container_name for record in manifest.containers}
    for record in manifest.containers:
        if record.holder:
            references[str(record.holder["Id"])] = _name(record.holder)
    return references


def address_key(attrs: Mapping[str, Any]) -> tuple[int, int]:
    """Sort key: the IPv4 address in a container's `docker inspect` document (those without one last).

    Docker gives a starting container the lowest free address of its network (when it asks for none): those
    started again in the order of the addresses they had get each their own back."""
    for endpoint in ((attrs.get("NetworkSettings") or {}).get("Networks") or {}).values():
        with contextlib.suppress(ValueError):
            return (0, int(ipaddress.IPv4Address(endpoint.get("IPAddress") or "")))
    return (1, 0)


def start_order(manifest: Manifest, containers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The names of `containers` (name -> its inspect document, for its address) in the order to start them
    again after a failure: dependencies first, as restore does, and within a level by address (see
    `address_key`), so that each gets its address back and its connections with it."""
    service_of = {record.container_name: record.service for record in manifest.containers}
    levels = dependency_levels(implicit_dependencies(manifest), [service_of.get(name, "") for name in containers])
    return [name for level in levels for name in
            sorted((n for n in containers if service_of.get(n, "") in level), key=lambda n: address_key(containers[n]))]


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
                   progress: ProgressCallback, connected: Collection[str] = (), *, start: bool = True) -> list[str]:
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
            ensure_networks_and_volumes(engine, manifest, connected)
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


def joining_elsewhere(engine: EnginePort, manifest: Manifest, records: Sequence[ContainerRecord],
                      kept: Mapping[str, ContainerInfo]) -> list[str]:
    """The names of `kept` containers (restored into as they are) that do not join the container their record
    joined: its namespaces or volumes (`container:<id>`, `volumes_from`) are another container's, one removed
    since or one that is recreated here (as after a failed `docker compose up`, or `up --force-recreate X`
    without the services joining X). Restoring into them would fail or join the wrong one: they are to be
    recreated as recorded, after what they join."""
    references = container_references(manifest)
    replaced = {record.container_name for record in records if record.container_name not in kept}
    stale: list[str] = []
    changed = True
    while changed:  # a container recreated makes those joining it stale in turn
        changed = False
        for record in records:
            current = kept.get(record.container_name)
            if current is None or record.container_name in stale:
                continue
            joined_now = set(referenced_containers(current.attrs))
            for target in referenced_containers(record.inspect):
                name = references.get(target, target)
                found = None if name in replaced or name in stale else engine.inspect(name)
                if found is None or not joined_now & {found.id, found.name}:
                    stale.append(record.container_name)
                    changed = True
                    break
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

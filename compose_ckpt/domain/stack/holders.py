"""Network holders: the form in which a container can be restored on Docker 28 and 29.

Docker 28.0 and later cannot restore a container that owns its network namespace
(moby#50750: the daemon configures the network of a task created from a checkpoint
through /proc/0). It can restore one that joins another container's namespace.
So, as in a Kubernetes pod, a tiny holder container owns the namespace (networks,
IP, aliases including the service name, published ports, hostname, DNS settings)
and the service container joins it (`container:<holder>`).

`adopt` declares the holders as compose services (adoptfile.py): compose creates,
keeps and removes them, labelled `compose-ckpt.holder-for=<service>`, and the
service containers joined to them carry `compose-ckpt.network-holder`. Holders of
the earlier form (one-off containers `<container>-holder` beside compose's) are
recognised here too: `ps` names those no container joins any more, `adopt`
converts them. A snapshot records each joined container's holder, so that a
restore recreates the holder first.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping, Sequence
from enum import Enum
from typing import Any

from compose_ckpt.const import HOLDER_SUFFIX, LABEL_HOLDER_FOR, LABEL_NETWORK_HOLDER, LABEL_ONEOFF, LABEL_PROJECT
from compose_ckpt.domain.ports import EnginePort
from compose_ckpt.engine import ContainerInfo
from compose_ckpt.engine.specs import joined_container
from compose_ckpt.errors import ConflictError, NeedsAdoption

FIRST_VERSION_NEEDING_HOLDERS = 28  # moby#50750, unfixed through 29.x
_NAMESPACE_SETTINGS = ("Hostname", "Domainname", "ExposedPorts", "MacAddress")
_NAMESPACE_HOST_SETTINGS = ("NetworkMode", "PortBindings", "PublishAllPorts", "Dns", "DnsOptions", "DnsSearch",
                            "ExtraHosts", "Links")


class NetworkForm(str, Enum):
    ADOPTED = "adopted"  # joins the network namespace of its own holder
    HOST = "host"  # network_mode: host
    SHARED = "shared"  # joins another container's namespace (network_mode: service:X / container:X)
    OWN = "own netns"  # bridge, custom networks or none: its own namespace

    def restorable_on(self, docker_version: str) -> bool:
        return self is not NetworkForm.OWN or not needs_holders(docker_version)


def needs_holders(docker_version: str) -> bool:
    """True for the Docker versions that restore only containers without a network namespace of their own."""
    try:
        major = int(docker_version.split(".", 1)[0])
    except ValueError:
        return False
    return major >= FIRST_VERSION_NEEDING_HOLDERS


def network_form(attrs: Mapping[str, Any]) -> NetworkForm:
    """The network form of a container, from its `docker inspect` document."""
    mode = str((attrs.get("HostConfig") or {}).get("NetworkMode") or "")
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    if joined_container(mode):
        return NetworkForm.ADOPTED if labels.get(LABEL_NETWORK_HOLDER) else NetworkForm.SHARED
    return NetworkForm.HOST if mode == "host" else NetworkForm.OWN


def refuse_unrestorable(engine: EnginePort, containers: Sequence[tuple[str, str, Mapping[str, Any]]], action: str) -> None:
    """On Docker 28 and later, refuse `action` when any (service, container name, inspect document) in
    `containers` owns its network namespace: Docker could not restore it. Says how to adopt them."""
    own = [(service, name) for service, name, attrs in containers if network_form(attrs) is NetworkForm.OWN]
    version = engine.info().server_version if own else ""
    if not own or not needs_holders(version):
        return
    raise NeedsAdoption(
        f"cannot {action}: Docker {version} cannot restore containers with a network namespace of their own "
        f"(moby#50750), and these have one: {', '.join(name for _, name in own)}",
        hint="Run `compose-ckpt adopt` once (a cold restart of each container): it joins each to a network holder "
             "declared in the project's compose files, the form this engine restores. Nothing was changed. "
             "See docs/engine.md.",
    )


def stale_join(engine: EnginePort, container: ContainerInfo) -> str | None:
    """Why `container` runs in a network namespace no running container owns, or None: it joins
    (`container:<id>`) one that was removed or stopped since, as after `docker compose up -d --force-recreate X`
    for the X it joins. Docker could not restore it there: its join target is gone."""
    target = joined_container(container.network_mode)
    if target is None or not (container.running or container.paused):
        return None
    joined = engine.inspect(target)
    if joined is None:
        return f"{container.name} joins the network namespace of container {target[:12]}, which no longer exists"
    if not (joined.running or joined.paused):
        return f"{container.name} joins the network namespace of {joined.name}, which is {joined.status}"
    return None


def refuse_stale_joins(engine: EnginePort, containers: Sequence[tuple[str, ContainerInfo]], action: str) -> None:
    """Refuse `action` when any (service, container) runs in a namespace no running container owns."""
    stale = [(service, reason) for service, container in containers if (reason := stale_join(engine, container))]
    if stale:
        services = " ".join(dict.fromkeys(service for service, _ in stale))
        raise ConflictError(f"cannot {action}: {'; '.join(reason for _, reason in stale)} (it was recreated "
                            "without the containers that join it)",
                            hint=f"Recreate them joined to the running one: `docker compose up -d --force-recreate {services}`.")


def abandoned_holders(engine: EnginePort, project_name: str) -> list[ContainerInfo]:
    """The project's network holders that their service container does not join (any more): gone, or
    recreated with a namespace of its own, as after a plain `docker compose down` and `up`."""
    abandoned = []
    for holder in engine.list_containers({LABEL_PROJECT: project_name, LABEL_ONEOFF: "True"}):
        owner = holder.labels.get(LABEL_HOLDER_FOR)
        if not owner:
            continue  # a `docker compose run` container
        app = engine.inspect(owner)
        if app is None or joined_container(app.network_mode) != holder.id:
            abandoned.append(holder)
    return abandoned


def holder_name(container_name: str) -> str:
    return f"{container_name}{HOLDER_SUFFIX}"


def holder_spec(app: Mapping[str, Any], image: str) -> dict[str, Any]:
    """A recorded-inspect-like document for the holder of the container `app` (an inspect document)."""
    name = str(app["Name"]).lstrip("/")
    config, host = app["Config"], app["HostConfig"]
    labels = {key: value for key, value in (config.get("Labels") or {}).items() if key.startswith("com.docker.compose.")}
    labels.update({LABEL_ONEOFF: "True", LABEL_HOLDER_FOR: name})
    service = labels.get("com.docker.compose.service")
    networks: dict[str, Any] = copy.deepcopy((app.get("NetworkSettings") or {}).get("Networks") or {})
    for endpoint in networks.values():
        # The holder answers for the service and its container: both names must resolve to it.
        endpoint["Aliases"] = sorted({*(endpoint.get("Aliases") or []), name, *([service] if service else [])})
    sysctls = {key: value for key, value in (host.get("Sysctls") or {}).items() if key.startswith("net.")}
    holder_config = {key: config.get(key) for key in _NAMESPACE_SETTINGS}
    holder_host = {key: host.get(key) for key in _NAMESPACE_HOST_SETTINGS}
    # It runs one static binary that waits for signals: it needs no capability.
    holder_host.update({"Sysctls": sysctls or None, "RestartPolicy": {"Name": "unless-stopped"}, "CapDrop": ["ALL"]})
    return {
        "Name": holder_name(name),
        "Config": {**holder_config, "Image": image, "Labels": labels, "StopSignal": "SIGKILL", "Cmd": None},
        "HostConfig": holder_host,
        "NetworkSettings": {"Networks": networks},
    }


def rebuilt_holder(container_name: str, recorded: Mapping[str, Any], image: str) -> dict[str, Any]:
    """The recorded holder of `container_name`, as our own template (holder_spec) makes it: only its network
    facts (networks, addresses, aliases, ports, hostname, DNS, `net.*` sysctls) and compose labels come from
    the record, which may come from a snapshot made elsewhere; image, command, capabilities, mounts and
    every other setting are ours."""
    spec = holder_spec({**recorded, "Name": f"/{container_name}"}, image)
    labels = (recorded.get("Config") or {}).get("Labels") or {}
    if labels.get(LABEL_ONEOFF) != "True":
        # A holder service of adopt's compose file: compose's own container, under its own name and labels.
        spec["Name"] = str(recorded["Name"]).lstrip("/")
        spec["Config"]["Labels"] = {**{key: str(value) for key, value in labels.items()
                                       if key.startswith("com.docker.compose.")},
                                    LABEL_HOLDER_FOR: str(labels.get(LABEL_HOLDER_FOR) or "")}
    spec["Id"] = recorded.get("Id")
    return spec


def with_recorded_address(spec: Mapping[str, Any], in_use: Mapping[str, Collection[str]] | None = None) -> dict[str, Any]:
    """`spec` asking for the IPv4 and IPv6 addresses it had on each network, except those `in_use` (network
    -> addresses another container holds there now). Docker accepts a fixed address only on networks with
    a configured subnet; the caller falls back to any address."""
    pinned = copy.deepcopy(dict(spec))
    for network, endpoint in ((pinned.get("NetworkSettings") or {}).get("Networks") or {}).items():
        wanted = dict(endpoint.get("IPAMConfig") or {})
        for key, recorded in (("IPv4Address", "IPAddress"), ("IPv6Address", "GlobalIPv6Address")):
            address = endpoint.get(recorded)
            if address and not wanted.get(key) and address not in (in_use or {}).get(network, ()):
                wanted[key] = address
        if wanted:
            endpoint["IPAMConfig"] = wanted
    return pinned

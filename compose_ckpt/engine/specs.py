"""Create requests built from recorded `docker inspect` documents, in the form Docker accepts.

A container that joins another's namespaces (`network_mode: service:X`, `ipc`/`pid`
`service:X`, `volumes_from`) is recorded with the other's id, which is gone once
that container was recreated: `references` maps such old ids to the names the
containers are recreated under. A container in another's network namespace also
records settings that belong to that namespace (hostname, ports, DNS, extra
hosts, MAC address, links, `net.*` sysctls), which Docker refuses on create
("conflicting options: hostname and the network mode"): they are left out, the
namespace's owner has them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CONTAINER_PREFIX = "container:"
# Settings of a network namespace that Docker refuses on a container joining another's.
_NETNS_CONFIG = ("Hostname", "Domainname", "ExposedPorts", "MacAddress")
_NETNS_HOST_CONFIG: dict[str, Any] = {"PortBindings": {}, "PublishAllPorts": False, "Dns": [], "DnsOptions": [],
                                      "DnsSearch": [], "ExtraHosts": None, "Links": None}
_ENDPOINT_KEYS = ("Aliases", "IPAMConfig", "Links", "DriverOpts")


def joined_container(mode: str) -> str | None:
    """The container a `container:X` network/ipc/pid mode names, else None."""
    return mode[len(CONTAINER_PREFIX):] if mode.startswith(CONTAINER_PREFIX) else None


def referenced_containers(recorded: Mapping[str, Any]) -> list[str]:
    """Ids or names of the containers this one joins or takes volumes from: they must exist first."""
    host = recorded.get("HostConfig") or {}
    joined = [joined_container(host.get(key) or "") for key in ("NetworkMode", "IpcMode", "PidMode")]
    volumes_from = [entry.split(":", 1)[0] for entry in host.get("VolumesFrom") or []]
    return [ref for ref in [*joined, *volumes_from] if ref]


def create_body(recorded: Mapping[str, Any], references: Mapping[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    """The name and the POST /containers/create body that recreate the recorded container."""
    references = references or {}
    config = dict(recorded["Config"])
    host = dict(recorded["HostConfig"])
    for key in ("NetworkMode", "IpcMode", "PidMode"):
        target = joined_container(host.get(key) or "")
        if target:
            host[key] = CONTAINER_PREFIX + references.get(target, target)
    if host.get("VolumesFrom"):
        host["VolumesFrom"] = [_renamed_volumes_from(entry, references) for entry in host["VolumesFrom"]]
    networks: dict[str, Any] = (recorded.get("NetworkSettings") or {}).get("Networks") or {}
    endpoints = {network: endpoint_config(endpoint) for network, endpoint in networks.items()}
    if joined_container(host.get("NetworkMode") or ""):
        for key in _NETNS_CONFIG:
            config.pop(key, None)
        host.update(_NETNS_HOST_CONFIG)
        host["Sysctls"] = {k: v for k, v in (host.get("Sysctls") or {}).items() if not k.startswith("net.")} or None
        endpoints = {}
    body = {**config, "HostConfig": host, "NetworkingConfig": {"EndpointsConfig": endpoints}}
    return str(recorded["Name"]).lstrip("/"), body


def endpoint_config(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a recorded network endpoint that a create or connect request takes."""
    return {key: recorded.get(key) for key in _ENDPOINT_KEYS}


def _renamed_volumes_from(entry: str, references: Mapping[str, str]) -> str:
    source, _, mode = entry.partition(":")
    source = references.get(source, source)
    return f"{source}:{mode}" if mode else source

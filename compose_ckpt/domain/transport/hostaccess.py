"""The host-access review: what a snapshot made elsewhere would let its containers do to this host.

`import` and `pull` store a snapshot made by someone else and create its containers from the
configuration it records. That configuration is untrusted. Holders are never created from it (they are
rebuilt from compose-ckpt's own template, domain/stack/holders.py); everything else that is created from it
(containers, named volumes, networks) is reviewed here against an ALLOW-list: what compose-ckpt records
for an ordinary compose service on a bridge network, with named volumes, tmpfs, resource limits and the
engine's default confinement. Anything else, including every setting this module does not know, is a
finding, spelled out for the user, who must accept them (a prompt, or `--trust-host-access`) before
anything is stored or created.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compose_ckpt.const import LABEL_PROJECT
from compose_ckpt.domain.ports import EnginePort
from compose_ckpt.domain.store.manifest import Manifest
from compose_ckpt.engine.specs import CONTAINER_PREFIX
from compose_ckpt.errors import NotFoundError, UsageError

# What Docker masks and makes read-only in every unprivileged container: a record may add to these lists,
# never leave one out (an empty list would unmask /proc/kcore and make /proc/sys writable).
DEFAULT_MASKED = frozenset({"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                            "/sys/devices/virtual/powercap"})
DEFAULT_READONLY = frozenset({"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"})
# Kernel settings a container's own namespaces hold (Docker refuses the others anyway).
_NAMESPACED_SYSCTLS = ("net.", "kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.")
_CONFINING_OPTIONS = frozenset({"no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"})
# Resource limits a container may set as it likes: none lets it take the host's memory or CPUs from others
# (memlock pins memory, rtprio/rttime/nice let an unprivileged process take real-time or higher priority).
_ULIMITS = frozenset({"nofile", "nproc", "core", "cpu", "data", "fsize", "stack", "as", "locks", "sigpending",
                      "msgqueue"})
_LOG_DRIVERS = frozenset({"", "json-file", "local", "none"})
_LOG_OPTIONS = frozenset({"max-size", "max-file", "compress", "labels", "labels-regex", "env", "env-regex", "tag",
                          "mode", "max-buffer-size"})
_NETWORK_OPTIONS = frozenset({"com.docker.network.driver.mtu", "com.docker.network.bridge.enable_icc",
                              "com.docker.network.bridge.enable_ip_masquerade", "com.docker.network.enable_ipv4",
                              "com.docker.network.enable_ipv6"})
# HostConfig settings that only limit the container or shape it inside its own namespaces: any value.
_FREE = frozenset({
    "RestartPolicy", "AutoRemove", "ConsoleSize", "Dns", "DnsOptions", "DnsSearch", "ExtraHosts", "GroupAdd",
    "ReadonlyRootfs", "Tmpfs", "ShmSize", "Isolation", "CpuShares", "Memory", "NanoCpus",
    "BlkioWeight", "CpuPeriod", "CpuQuota", "CpusetCpus", "CpusetMems", "MemoryReservation", "MemorySwap",
    "MemorySwappiness", "PidsLimit", "CpuCount", "CpuPercent", "IOMaximumIOps",
    "IOMaximumBandwidth", "KernelMemory", "KernelMemoryTCP", "CapDrop", "Init", "CgroupnsMode",
})


def shown(value: Any) -> str:
    """A recorded value fit for a terminal: printable characters only, bounded."""
    return "".join(c if c.isprintable() else "?" for c in str(value))[:200]


def _empty(value: Any) -> bool:
    return value is None or value is False or value in ("", 0, [], {})


@dataclass(frozen=True)
class _Known:
    """What the snapshot itself creates: the containers (and holders) one may join, the networks it records."""

    containers: frozenset[str]
    networks: frozenset[str]
    volumes: frozenset[str]


Rule = Callable[[Any, _Known], list[str]]


def _binds(value: Any, known: _Known) -> list[str]:
    found = []
    for bind in value or []:
        source = str(bind).split(":", 1)[0]
        if "/" in source or not source:  # a volume name has no slash; anything else is a host path
            found.append(f"bind mount of the host's {shown(source)}")
        else:
            found += _volume(source, known)
    return found


def _volume(name: Any, known: _Known) -> list[str]:
    """A named volume the snapshot does not record is one of this host's, with its data."""
    return [] if not name or name in known.volumes else [
        f"mounts this host's volume {shown(name)}, which the snapshot does not record"]


def _mounts(value: Any, known: _Known) -> list[str]:
    found = []
    for mount in value or []:
        mount = mount if isinstance(mount, dict) else {}
        kind = mount.get("Type")
        if kind == "volume" and _empty(((mount.get("VolumeOptions") or {}).get("DriverConfig") or {}).get("Options")) \
                and _empty(((mount.get("VolumeOptions") or {}).get("DriverConfig") or {}).get("Name")):
            found += _volume(mount.get("Source"), known)
            continue
        if kind == "tmpfs":
            continue
        if kind == "volume":
            found.append(f"volume {shown(mount.get('Source'))} made with driver options "
                         f"{shown((mount.get('VolumeOptions') or {}).get('DriverConfig'))}")
        else:
            found.append(f"{shown(kind)} mount of the host's {shown(mount.get('Source'))}")
    return found


def _network_mode(value: Any, known: _Known) -> list[str]:
    mode = str(value or "")
    if mode in ("", "default", "bridge", "none") or mode in known.networks:
        return []
    return _namespace("network", mode, known)


def _namespace(kind: str, mode: str, known: _Known) -> list[str]:
    if mode.startswith(CONTAINER_PREFIX):
        target = mode[len(CONTAINER_PREFIX):]
        return [] if target in known.containers else [f"joins the {kind} namespace of container {shown(target)}, "
                                                          "which the snapshot does not hold"]
    return [f"the host's {kind} namespace" if mode == "host" else f"{kind} mode {shown(mode)}"]


def _mode(kind: str, allowed: tuple[str, ...]) -> Rule:
    def check(value: Any, known: _Known) -> list[str]:
        mode = str(value or "")
        return [] if mode in allowed else _namespace(kind, mode, known)
    return check


def _ports(value: Any, known: _Known) -> list[str]:
    found = []
    for port, bindings in (value or {}).items():
        for binding in bindings or [{}]:
            binding = binding if isinstance(binding, dict) else {}
            address = binding.get("HostIp") or "every address"
            found.append(f"publishes port {shown(port)} on the host ({shown(address)}, "
                         f"port {shown(binding.get('HostPort') or 'any')})")
    return found


def _volumes_from(value: Any, known: _Known) -> list[str]:
    sources = [str(entry).split(":", 1)[0] for entry in value or []]
    return [f"takes the volumes of container {shown(source)}, which the snapshot does not hold"
            for source in sources if source not in known.containers]


def _links(value: Any, known: _Known) -> list[str]:
    """Legacy links (`/target:/self/alias`) hand the linked container's environment to this one."""
    targets = [str(link).split(":", 1)[0].lstrip("/") for link in value or []]
    return [f"links to container {shown(target)}, which the snapshot does not hold (and sees its environment)"
            for target in targets if target not in known.containers]


def _oom_score(value: Any, known: _Known) -> list[str]:
    return [] if value is None or isinstance(value, int) and value >= 0 else [
        f"out-of-memory score {shown(value)} (the host's own processes are killed before it)"]


def _ulimits(value: Any, known: _Known) -> list[str]:
    return [f"resource limit {shown(limit.get('Name') if isinstance(limit, dict) else limit)} "
            f"(soft {shown(limit.get('Soft') if isinstance(limit, dict) else '?')}, "
            f"hard {shown(limit.get('Hard') if isinstance(limit, dict) else '?')})"
            for limit in value or [] if not isinstance(limit, dict) or limit.get("Name") not in _ULIMITS]


def _each(label: str, key: str | None = None) -> Rule:
    def check(value: Any, known: _Known) -> list[str]:
        return [f"{label} {shown(item.get(key) if key and isinstance(item, dict) else item)}" for item in value or []]
    return check


def _only_empty(label: str) -> Rule:
    def check(value: Any, known: _Known) -> list[str]:
        return [] if _empty(value) else [f"{label} {shown(value)}"]
    return check


def _security_options(value: Any, known: _Known) -> list[str]:
    return [f"security option {shown(option)}" for option in value or [] if option not in _CONFINING_OPTIONS]


def _sysctls(value: Any, known: _Known) -> list[str]:
    return [f"kernel setting {shown(key)}={shown(setting)}" for key, setting in (value or {}).items()
            if not str(key).startswith(_NAMESPACED_SYSCTLS)]


def _defaults_kept(label: str, defaults: frozenset[str]) -> Rule:
    def check(value: Any, known: _Known) -> list[str]:
        if value is None:
            return []  # the engine applies its defaults
        missing = defaults - {str(path) for path in value or []}
        return [f"{label} {shown(', '.join(sorted(missing)))}"] if missing else []
    return check


def _log_config(value: Any, known: _Known) -> list[str]:
    config = value if isinstance(value, dict) else {}
    options = set((config.get("Config") or {}).keys())
    if (config.get("Type") or "") in _LOG_DRIVERS and options <= _LOG_OPTIONS:
        return []
    return [f"log driver {shown(config.get('Type'))} with options {shown(sorted(options))}"]


def _runtime(value: Any, known: _Known) -> list[str]:
    return [] if value in (None, "", "runc") else [f"runtime {shown(value)}"]


def _privileged(value: Any, known: _Known) -> list[str]:
    return ["privileged mode (every device and capability of the host)"] if value is not False and value else []


HOST_CONFIG_RULES: dict[str, Rule] = {
    "Binds": _binds,
    "Mounts": _mounts,
    "ContainerIDFile": _only_empty("writes its id to the host's file"),
    "LogConfig": _log_config,
    "NetworkMode": _network_mode,
    "PortBindings": _ports,
    "PublishAllPorts": _only_empty("publishes every exposed port on the host:"),
    "VolumeDriver": _only_empty("volume driver"),
    "VolumesFrom": _volumes_from,
    "Links": _links,
    "OomScoreAdj": _oom_score,
    "OomKillDisable": _only_empty("the out-of-memory killer spares it:"),
    "Ulimits": _ulimits,
    "CapAdd": _each("capability"),
    "IpcMode": _mode("IPC", ("", "private", "shareable", "none")),
    "PidMode": _mode("PID", ("",)),
    "UTSMode": _mode("UTS", ("",)),
    "UsernsMode": _mode("user", ("",)),
    "Cgroup": _only_empty("cgroup"),
    "CgroupParent": _only_empty("cgroup parent"),
    "Privileged": _privileged,
    "SecurityOpt": _security_options,
    "StorageOpt": _only_empty("storage options"),
    "Runtime": _runtime,
    "Sysctls": _sysctls,
    "Devices": _each("device", "PathOnHost"),
    "DeviceCgroupRules": _each("device cgroup rule"),
    "DeviceRequests": _only_empty("device requests"),
    "BlkioWeightDevice": _only_empty("I/O weight of host devices"),
    "BlkioDeviceReadBps": _only_empty("I/O limit of host devices"),
    "BlkioDeviceWriteBps": _only_empty("I/O limit of host devices"),
    "BlkioDeviceReadIOps": _only_empty("I/O limit of host devices"),
    "BlkioDeviceWriteIOps": _only_empty("I/O limit of host devices"),
    "CpuRealtimePeriod": _only_empty("real-time CPU period"),
    "CpuRealtimeRuntime": _only_empty("real-time CPU runtime"),
    "MaskedPaths": _defaults_kept("unmasks", DEFAULT_MASKED),
    "ReadonlyPaths": _defaults_kept("makes writable", DEFAULT_READONLY),
    "Annotations": _only_empty("runtime annotations"),
}


def review_container(recorded: Mapping[str, Any], known: _Known) -> list[str]:
    """What one recorded `docker inspect` document (a container, or a holder rebuilt from our template)
    reaches outside the container: every HostConfig setting outside the allow-list."""
    found: list[str] = []
    for key, value in (recorded.get("HostConfig") or {}).items():
        rule = HOST_CONFIG_RULES.get(key)
        if rule is not None:
            found += rule(value, known)
        elif key not in _FREE and not _empty(value):
            found.append(f"setting HostConfig.{shown(key)} = {shown(value)}")
    for network, endpoint in ((recorded.get("NetworkSettings") or {}).get("Networks") or {}).items():
        if network not in known.networks and network not in ("bridge", "none"):
            found.append(f"joins network {shown(network)}, which the snapshot does not record")
        if isinstance(endpoint, dict) and not _empty(endpoint.get("DriverOpts")):
            found.append(f"driver options {shown(endpoint['DriverOpts'])} on network {shown(network)}")
    return found


def _review_volume(recorded: Mapping[str, Any]) -> list[str]:
    if recorded.get("Driver") in (None, "", "local") and _empty(recorded.get("Options")):
        return []
    options = ", ".join(f"{shown(k)}={shown(v)}" for k, v in (recorded.get("Options") or {}).items())
    return [f"volume {shown(recorded.get('Name'))}: driver {shown(recorded.get('Driver'))}"
            + (f" with options {options} (such options can mount any host path or device)" if options else "")]


def _review_network(recorded: Mapping[str, Any]) -> list[str]:
    options = set((recorded.get("Options") or {}).keys())
    ipam = recorded.get("IPAM") or {}
    if recorded.get("Driver") in (None, "", "bridge") and options <= _NETWORK_OPTIONS \
            and ipam.get("Driver") in (None, "", "default") and _empty(ipam.get("Options")):
        return []
    return [f"network {shown(recorded.get('Name'))}: driver {shown(recorded.get('Driver'))}, options "
            f"{shown(recorded.get('Options'))}, address driver {shown(ipam.get('Driver'))}"]


def review_host_access(manifest: Manifest, holders: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every way the snapshot's recorded configuration reaches its host, one line per container, volume or
    network; empty for an ordinary stack. `holders`: container name -> the holder it would get (as rebuilt
    from our template)."""
    known = _Known(
        containers=frozenset({*(r.container_id for r in manifest.containers), *(r.container_name for r in manifest.containers),
                              *(str(r.holder.get("Id")) for r in manifest.containers if r.holder),
                              *(str(spec["Name"]).lstrip("/") for spec in holders.values())}),
        networks=frozenset(str(network.get("Name")) for network in manifest.networks),
        volumes=frozenset(str(volume.get("Name")) for volume in manifest.volumes),
    )
    findings = []
    for record in manifest.containers:
        for what, recorded in ((f"container {record.container_name}", record.inspect),
                               (f"network holder of {record.container_name}", holders.get(record.container_name))):
            reach = review_container(recorded, known) if recorded else []
            if reach:
                findings.append(f"{what}: " + "; ".join(reach))
    for volume in manifest.volumes:
        findings += _review_volume(volume)
    for network in manifest.networks:
        findings += _review_network(network)
    return findings


def pinned_subnets(engine: EnginePort, manifest: Manifest, checkpoints: dict[str, Path]) -> list[str]:
    """The networks the import would create with the snapshot's own subnets (its IPAM config asks for them,
    its containers have fixed addresses, or their checkpoints hold TCP connections; see `check_networks`):
    a bridge with a subnet the snapshot chose takes this host's traffic to it (its LAN's, a VPN's)."""
    from compose_ckpt.domain.stack.containers import check_networks, network_subnets

    connected = {name for name, folder in checkpoints.items() if any(folder.glob("tcp-stream-*.img"))}
    return [f"network {shown(network.get('Name'))}: created with the snapshot's subnets "
            f"{shown(', '.join(sorted(map(str, network_subnets(network)))))}; this host's traffic to them would "
            "go to that network" for network, pinned in check_networks(engine, manifest, connected) if pinned]


def this_hosts_own(engine: EnginePort, manifest: Manifest, holders: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The containers, holders, volumes and networks the snapshot records that this engine has already, for
    another compose project (or none): a restore would put the snapshot's memory into such a container, as
    it is configured here (never reviewed), its containers would use this host's data and join this host's
    containers, and a restore would write the snapshot's copy of such a volume over its data. The snapshot's
    own project's are expected: its earlier import, or the stack it was taken of. `holders`: as for
    `review_host_access`."""
    found = []
    restored_into = "a restore would put the snapshot's memory into it, as it is configured here"
    joined = "the snapshot's container would join its network namespace"
    for name, fate in [*((record.container_name, restored_into) for record in manifest.containers),
                       *((str(spec["Name"]).lstrip("/"), joined) for spec in holders.values())]:
        container = engine.inspect(name)
        if container is not None and container.labels.get(LABEL_PROJECT) != manifest.project:
            found.append(f"container {shown(name)} is this host's ({_owner({'Labels': container.labels})}): {fate}")
    for volume in manifest.volumes:
        try:
            existing = engine.inspect_volume(str(volume.get("Name")))
        except NotFoundError:
            continue
        if _project_of(existing) != manifest.project:
            found.append(f"volume {shown(volume.get('Name'))} is this host's ({_owner(existing)}): the snapshot's "
                         "containers would use its data, and a restore with volumes would overwrite it")
    networks = {str(network.get("Name")): network for network in engine.list_networks()}
    for network in manifest.networks:
        there = networks.get(str(network.get("Name")))
        if there is not None and _project_of(there) != manifest.project:
            found.append(f"network {shown(network.get('Name'))} is this host's ({_owner(there)}): the snapshot's "
                         "containers would join the containers on it")
    return found


def _project_of(resource: Mapping[str, Any]) -> str | None:
    return (resource.get("Labels") or {}).get(LABEL_PROJECT)


def _owner(resource: Mapping[str, Any]) -> str:
    project = _project_of(resource)
    return f"compose project {shown(project)}" if project else "no compose project's"


HostAccessConsent = Callable[[list[str]], bool]  # shown the findings, says whether to go on


def require_consent(findings: list[str], consent: HostAccessConsent) -> None:
    """Go on only when there is nothing to accept, or the user accepted it; else refuse, naming it all."""
    if findings and not consent(findings):
        raise UsageError("the snapshot's recorded configuration reaches outside its containers: nothing was stored "
                         "or created", details=findings,
                         hint="Read the list. Pass --trust-host-access to accept it (only for a snapshot whose "
                              "source you trust), or run the command in a terminal to be asked.")

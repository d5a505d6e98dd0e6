"""Why a dump failed, told from /proc: the connections CRIU cannot take, and who holds their other ends."""

from __future__ import annotations

from compose_ckpt.domain.ports import EnginePort
from compose_ckpt.engine import ContainerInfo
from compose_ckpt.engine.criu_log import EXTERNAL_UNIX_SOCKET
from compose_ckpt.engine.types import SocketOwner

Members = dict[str, tuple[str, ContainerInfo]]  # container id -> (its service, the container) of a snapshot


def unix_socket_ends(engine: EnginePort, members: Members, details: list[str]) -> list[str]:
    """Both ends of each unix connection CRIU refused, found by their inodes in /proc: which container
    (or `docker exec` session, or host process) holds each."""
    sockets = [(path or f"inode {own}", int(own), int(outside) if outside else None)
               for path, own, outside in EXTERNAL_UNIX_SOCKET.findall("\n".join(details))]
    if not sockets or not engine.info().local:
        return []
    owners = engine.socket_owners({inode for _, own, outside in sockets for inode in (own, outside) if inode})
    lines = []
    for path, own, outside in sockets:
        ours = " and ".join(_describe_owner(engine, members, owner) for owner in owners[own]) or "a process of the snapshot"
        if outside is None:  # its peer is in another network namespace: CRIU's log does not say which
            theirs = "a process in another container or on the host (not in its network namespace)"
        else:
            theirs = " and ".join(_describe_owner(engine, members, h) for h in owners[outside]) or "a process that has ended since"
        lines.append(f"{ours} holds unix socket {path}, connected to {theirs}: CRIU dumps each container's own "
                     "process tree and cannot take a connection to a process outside it")
    return lines


def _describe_owner(engine: EnginePort, members: Members, owner: SocketOwner) -> str:
    process = f"pid {owner.pid} {owner.command}"
    if owner.container_id is None:
        return f"a process on the host, outside any container ({process})"
    member = members.get(owner.container_id)
    container = member[1] if member else engine.inspect(owner.container_id)
    if container is None:
        return f"container {owner.container_id[:12]} ({process})"
    if container.pid and not engine.descends_from(owner.pid, container.pid):
        return f"a `docker exec` session in {container.name} ({process}, not started by its main process)"
    service = f"service {member[0]} " if member else ""
    return f"{service}{container.name} ({process})"


def peers_outside(engine: EnginePort, members: Members) -> list[str]:
    """Services connected to an address no container of this snapshot has: only frozen ends agree."""
    inside = {"127.0.0.1", "::1"}
    for _, container in members.values():
        inside.update(container.addresses)
    lines = []
    for service, container in sorted(members.values(), key=lambda member: member[1].name):
        if container.network_mode == "host" or not engine.info().local:
            continue  # the host's own sockets, or another host's /proc: nothing to tell
        outside = sorted({f"{ip}:{port}" for ip, port in engine.established_peers(container.pid) if ip not in inside})
        if outside:
            lines.append(f"service {service} ({container.name}) is connected to {', '.join(outside)}, outside "
                         "the snapshot: that end is not frozen with it")
    return lines

"""What the daemon's own machine shows when it is this one (`EngineInfo.local`): its CRIU, its capabilities,
runc's options, the processes and sockets of its containers, containerd's leftovers. Read through procfs.py
and ctrd_copies.py; of an engine on another host nothing can be read (None, False or nothing)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from compose_ckpt.engine import ctrd_copies, procfs
from compose_ckpt.engine.connection import Connection
from compose_ckpt.engine.types import ContainerdLeftovers, ContainerInfo, CriuProbe, ProcessFingerprint, SocketOwner


class LocalDaemon(Connection):
    """The daemon's machine, read from /proc and its files."""

    def criu_version(self) -> str | None:
        """Version of the criu the daemon runs (found on its PATH); None when the daemon is not known here."""
        return procfs.daemon_criu_version(self.daemon_pid())

    def criu_probe(self) -> CriuProbe:
        """The criu on the daemon's PATH (ours when the daemon's cannot be read) and what `criu check` says."""
        return procfs.probe_criu(procfs.daemon_path(self.daemon_pid()))

    def dirty_memory_tracking(self) -> bool | None:
        """Whether the kernel under the daemon tracks dirty memory (what CRIU's pre-copy needs); None when
        not known (an engine on another host, or no criu)."""
        if not self.info().local:
            return None
        return procfs.dirty_memory_tracking(procfs.daemon_path(self.daemon_pid()))

    def daemon_can_dump_any_uid(self) -> bool:
        """Whether the daemon holds CAP_SYS_RESOURCE, without which CRIU cannot dump a process of another uid."""
        pid = self.daemon_pid()
        return pid is not None and procfs.has_capability(pid, procfs.CAP_SYS_RESOURCE)

    def runc_tcp_established(self) -> bool:
        """Whether runc's CRIU options on this machine let it dump established TCP connections."""
        return procfs.runc_tcp_established()

    def criu_config_options(self, config: Path) -> set[str] | None:
        """The options a CRIU configuration file of the daemon's machine holds (none when it cannot be read);
        None for an engine on another host, whose files cannot be read from here."""
        return procfs.criu_config_options(config) if self.info().local else None

    def containerd_leftovers(self) -> list[ContainerdLeftovers]:
        """The copies of restored checkpoints containerd left in its temp folders (none known elsewhere)."""
        pid = self.daemon_pid()
        return [] if pid is None else ctrd_copies.leftovers(pid)

    def socket_owners(self, inodes: set[int]) -> dict[int, list[SocketOwner]]:
        """The processes holding each socket of `inodes`, and the container each runs in."""
        return procfs.socket_owners(inodes)

    def descends_from(self, pid: int, ancestor: int) -> bool:
        """Whether process `pid` is `ancestor` or one of its descendants."""
        return procfs.descends_from(pid, ancestor)

    def established_peers(self, pid: int) -> list[tuple[str, int]]:
        """The remote (address, port) of every established TCP connection in the network namespace of `pid`."""
        return procfs.established_peers(pid)

    def hold_resets(self, pid: int) -> bool:
        """Keep the network namespace of process `pid` (a running container's) from answering TCP packets with
        resets, as CRIU's lock keeps the namespace a container was dumped in: a rule in its own OUTPUT chain,
        until `release_resets`. True when it is in place; False for an engine on another host, or when
        iptables cannot run here."""
        return self.info().local and _resets_rule(pid, "-I")

    def release_resets(self, pid: int) -> None:
        """Remove the rule `hold_resets` put in the network namespace of `pid` (gone with it if it ended)."""
        if self.info().local:
            _resets_rule(pid, "-D")

    def memory_estimate(self, container: ContainerInfo) -> int | None:
        """About the bytes a dump of the container writes: its cgroup's anonymous and shared memory (see
        `procfs.anonymous_memory`). None for an engine on another host, or when this host does not show it."""
        if not container.pid or not self.info().local:
            return None
        return procfs.anonymous_memory(container.pid)

    def fingerprint(self, container: ContainerInfo) -> ProcessFingerprint | None:
        """Memory-layout fingerprint of the container's init process; None when /proc shows none."""
        if not container.pid or not self.info().local:
            return None
        return procfs.process_fingerprint(container.pid)


def _resets_rule(pid: int, action: str) -> bool:
    """Insert (`-I`) or delete (`-D`) the rule dropping outgoing TCP resets in the network namespace of `pid`."""
    command = ["nsenter", "-t", str(pid), "-n", "iptables", "-w", action, "OUTPUT", "-p", "tcp",
               "--tcp-flags", "RST", "RST", "-j", "DROP"]
    try:
        return subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False

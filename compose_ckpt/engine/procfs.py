"""Facts about the Docker daemon's own machine (when that is this one), read from /proc and by running CRIU.

Only meaningful when the engine is local (`EngineInfo.local`); `doctor` says so otherwise.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import socket
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from compose_ckpt.const import RUNC_CRIU_CONFIG, TCP_ESTABLISHED
from compose_ckpt.engine.types import CriuProbe, ProcessFingerprint, SocketOwner

CAP_SYS_RESOURCE = 24
DEFAULT_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
DEFAULT_EXEC_ROOT = "/var/run/docker"
DEFAULT_DAEMON_CONFIG = "/etc/docker/daemon.json"


def daemon_pid_for_socket(socket_path: str) -> int | None:
    """Pid of the dockerd listening on the unix socket `socket_path` (SO_PEERCRED), or None.

    Only the default socket falls back to `daemon_pid()`: with socket activation the peer is
    systemd, and guessing for any other socket would describe another daemon than the one addressed."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2)
            probe.connect(socket_path)
            pid, _, _ = struct.unpack("3i", probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except OSError:
        pid = 0
    if pid > 0 and process_name(pid) == "dockerd":
        return int(pid)
    return daemon_pid() if socket_path in DEFAULT_SOCKETS else None


def process_name(pid: int) -> str:
    """/proc/PID/comm; "" when the process is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def daemon_exec_root(pid: int) -> Path:
    """The daemon's --exec-root (where containerd keeps each task's bundle), from its command line or config."""
    try:
        argv = [arg.decode(errors="replace") for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        argv = []
    config = _flag(argv, "--config-file") or DEFAULT_DAEMON_CONFIG
    chosen = _flag(argv, "--exec-root")
    if chosen is None:
        try:
            chosen = json.loads(Path(config).read_text()).get("exec-root")
        except (OSError, ValueError, AttributeError):
            chosen = None
    return Path(chosen or DEFAULT_EXEC_ROOT)


def _flag(argv: list[str], name: str) -> str | None:
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def daemon_pid() -> int | None:
    """Pid of a running dockerd: the one its default pid file names, else the first found in /proc."""
    for pidfile in (Path("/var/run/docker.pid"), Path("/var/run/compose-ckpt-dockerd.pid")):
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{pid}").exists():
            return pid
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "dockerd":
                    return int(entry.name)
            except OSError:
                continue
    return None


def daemon_path(pid: int | None) -> str:
    """The PATH the daemon (and so runc) searches; ours when it cannot be read."""
    found = process_environ(pid).get("PATH") if pid is not None else None
    return found or os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")


def process_environ(pid: int) -> dict[str, str]:
    """The environment process `pid` started with; {} when it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if b"=" in item)
    return {key: value for key, _, value in pairs}


def criu_version(search_path: str) -> str | None:
    criu = shutil.which("criu", path=search_path)
    if criu is None:
        return None
    match = re.search(r"Version:\s*([0-9.]+)", _run([criu, "--version"]))
    return match.group(1) if match else None


def daemon_criu_version(pid: int | None) -> str | None:
    """Version of the criu the daemon `pid` runs (found on its PATH); None when there is no such daemon here."""
    return criu_version(daemon_path(pid)) if pid is not None else None


def probe_criu(search_path: str) -> CriuProbe:
    criu = shutil.which("criu", path=search_path)
    if criu is None:
        return CriuProbe(None, None, "criu not found", False, search_path)
    check = _run([criu, "check"]).strip().splitlines()
    last = check[-1] if check else "no output"
    return CriuProbe(criu, criu_version(search_path), last, last == "Looks good.", search_path)


def dirty_memory_tracking(search_path: str) -> bool | None:
    """Whether the kernel tracks the memory a process dirties (soft-dirty bits), which memory pre-copy
    (CRIU pre-dumps) needs: `criu check --feature mem_dirty_track`. None when no criu is found."""
    criu = shutil.which("criu", path=search_path)
    if criu is None:
        return None
    try:
        done = subprocess.run([criu, "check", "--feature", "mem_dirty_track"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.returncode == 0


def has_capability(pid: int | None, capability: int) -> bool:
    """Whether the process (ourselves when pid is None) holds `capability` in its effective set."""
    status = Path(f"/proc/{pid}/status" if pid else "/proc/self/status")
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> capability & 1)
    return False


def runc_tcp_established(config: Path = RUNC_CRIU_CONFIG) -> bool:
    """runc passes CRIU the options in /etc/criu/runc.conf; `tcp-established` lets it dump live connections."""
    return TCP_ESTABLISHED in criu_config_options(config)


def criu_config_options(config: Path) -> set[str]:
    """The lines of a CRIU configuration file (`tcp-established`, `work-dir /x`), comments and a leading `--`
    left out; none when it cannot be read (CRIU then ignores it too)."""
    try:
        lines = config.read_text().splitlines()
    except OSError:
        return set()
    return {line.split("#", 1)[0].strip().removeprefix("--") for line in lines} - {""}


def established_peers(pid: int) -> list[tuple[str, int]]:
    """The remote (address, port) of every established TCP connection in the network namespace of `pid`."""
    peers = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "01":  # TCP_ESTABLISHED
                address, _, port = fields[2].partition(":")
                if len(address) == width:
                    peers.append((_proc_address(address), int(port, 16)))
    return peers


_CONTAINER_CGROUP = re.compile(r"[/-]([0-9a-f]{64})(?:\.scope)?$", re.MULTILINE)


def socket_owners(inodes: set[int]) -> dict[int, list[SocketOwner]]:
    """The processes holding an open descriptor of each socket inode, found by one walk of /proc."""
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    found: dict[int, list[SocketOwner]] = {inode: [] for inode in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        held = {wanted[target] for target in _open_files(pid) if target in wanted}
        if not held:
            continue
        try:
            cgroups = (entry / "cgroup").read_text()
        except OSError:
            continue  # ended meanwhile
        container = _CONTAINER_CGROUP.search(cgroups)
        for inode in held:
            found[inode].append(SocketOwner(pid, process_name(pid), container.group(1) if container else None))
    return found


def descends_from(pid: int, ancestor: int) -> bool:
    """Whether `ancestor` is `pid` or one of its parents (a process `docker exec` started is not a
    descendant of the container's main process)."""
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])
    return pid == ancestor


def _proc_address(hex_address: str) -> str:
    """/proc/net/tcp writes addresses as host-order 32-bit words in hex."""
    raw = b"".join(int(hex_address[i:i + 8], 16).to_bytes(4, "little") for i in range(0, len(hex_address), 8))
    address = ipaddress.ip_address(raw)
    return str(getattr(address, "ipv4_mapped", None) or address)  # ::ffff:a.b.c.d is an IPv4 peer


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return done.stdout + done.stderr


def started_after(pid: int, epoch_seconds: float) -> bool:
    """Whether process `pid` started after `epoch_seconds` (a daemon restarted since then)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return False
    ticks = int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22: start time in clock ticks after boot
    return boot + ticks / os.sysconf("SC_CLK_TCK") > epoch_seconds


def dump_in_progress_here(daemon: int, container_id: str, checkpoint_dir: Path, since: float) -> bool:
    """Whether the daemon `daemon` on this host may still be dumping the container into `checkpoint_dir`,
    for a request made after `since` (epoch seconds); see `Engine.dump_in_progress`."""
    if started_after(daemon, since):
        return False  # a restarted daemon finishes no dump of its predecessor
    if checkpoint_dir.is_dir() and not any(checkpoint_dir.iterdir()):
        return True  # created, nothing extracted yet: CRIU or containerd are still at it
    return checkpoint_activity(daemon, container_id, checkpoint_dir)


def checkpoint_activity(daemon: int, container_id: str, checkpoint_dir: Path) -> bool:
    """Whether the daemon visibly works on a checkpoint of `container_id` (or on some checkpoint whose
    owner cannot be told), as seen in /proc: runc checkpointing it; containerd (a child of the daemon)
    holding a `ctrd-checkpoint` image folder open; the daemon writing into `checkpoint_dir`."""
    workers = {daemon} | children(daemon)
    needle = container_id.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"runc") and b"checkpoint" in argv and needle in argv:
            return True
    prefix = str(checkpoint_dir)
    for pid in workers:
        for target in _open_files(pid):
            if target.startswith(prefix) or "/ctrd-checkpoint" in target:
                return True
    return False


def children(parent: int) -> set[int]:
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == parent:
                found.add(int(entry.name))
    return found


def _open_files(pid: int) -> list[str]:
    folder = Path(f"/proc/{pid}/fd")
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    targets = []
    for name in names:
        try:
            targets.append(os.readlink(folder / name))
        except OSError:
            continue
    return targets


def remove_stale_runc_state(daemon: int, container_id: str) -> bool:
    """Delete runc's state of a container the daemon considers stopped (`runc delete --force`, which
    also kills a process a crashed daemon's restore left behind). A daemon killed during a restore
    leaves it, and runc then refuses every later restore: `container with given ID already exists`.
    Returns whether there was such state."""
    root = daemon_exec_root(daemon) / "runtime-runc" / "moby"
    state = root / container_id
    if not state.is_dir():
        return False
    for mount_point in _mounts_under(state):  # runc restore's criu-root bind mount blocks its removal
        _run(["umount", "-l", mount_point])
    runc = shutil.which("runc", path=daemon_path(daemon))
    if runc is not None:
        _run([runc, "--root", str(root), "delete", "--force", container_id])
    shutil.rmtree(root / container_id, ignore_errors=True)  # when runc could not: its state folder alone
    return True


def _mounts_under(folder: Path) -> list[str]:
    """Mount points at or below `folder` in our mount namespace, deepest first."""
    prefix = str(folder)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[4] for line in lines if len(line.split()) > 4]
    return sorted((p for p in points if p == prefix or p.startswith(prefix + "/")), key=len, reverse=True)


@dataclass(frozen=True)
class HostMount:
    """A mount of the daemon's mount namespace and its propagation (/proc/PID/mountinfo)."""

    mountpoint: str
    shared: bool  # in a peer group (`shared:N`)
    slave: bool  # receives mounts from a peer group (`master:N`)


def mount_table(pid: int) -> list[HostMount]:
    """The mounts `pid` sees; [] when they cannot be read."""
    try:
        return parse_mountinfo(Path(f"/proc/{pid}/mountinfo").read_text())
    except OSError:
        return []


def parse_mountinfo(text: str) -> list[HostMount]:
    table = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        optional = fields[6:fields.index("-", 6)]
        # The kernel writes space, tab, newline and backslash in a mount point as octal escapes.
        mountpoint = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        table.append(HostMount(mountpoint, any(o.startswith("shared:") for o in optional),
                               any(o.startswith("master:") for o in optional)))
    return table


def mount_holding(table: list[HostMount], path: str) -> HostMount | None:
    """The mount `path` lies on: the last mounted of the deepest mount points that are `path` or one of its
    folders. Compared by whole folder names: /var/lib/docker does not hold /var/lib/docker28 (moby's own
    check compares strings, see docs/engine.md)."""
    found = None
    for mount in table:  # in mount order: a later mount on the same point covers the earlier one
        point = mount.mountpoint.rstrip("/")
        if (path == mount.mountpoint or path.startswith(point + "/")) and (
                found is None or len(point) >= len(found.mountpoint.rstrip("/"))):
            found = mount
    return found


def can_join_peer_group(table: list[HostMount], path: str, mounted_later: bool) -> bool | None:
    """Whether CRIU can make a restored mount a slave of the peer group of `path` here: the kernel takes a
    shared or slave source only. `mounted_later`: the daemon mounts `path` itself when the container
    starts (its root file system), and a new mount is in a peer group only beneath a shared one.
    None when no mount holds `path`."""
    holder = mount_holding(table, path)
    if holder is None:
        return None
    return holder.shared if mounted_later else holder.shared or holder.slave


def process_fingerprint(pid: int) -> ProcessFingerprint | None:
    """The memory-layout fields of /proc/PID/stat (47..51); None when they cannot be read."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat_line[stat_line.rindex(")") + 2 :].split()  # fields from 3 on; comm may hold spaces
    values = [int(value) for value in fields[44:49]]  # fields 47..51
    if len(values) < 5 or not any(values):  # zeros: no permission to read them
        return None
    return ProcessFingerprint(*values)


CGROUP_ROOT = Path("/sys/fs/cgroup")
# What CRIU writes as page images, as the memory controller counts it: anonymous memory (cgroup v1 `total_rss`,
# v2 `anon`, which holds the copied-on-write pages of private file mappings too) and shared memory
# (`shmem`: shared anonymous mappings, and tmpfs files, which CRIU writes compressed instead). Page cache
# is left out: CRIU does not write what is in files.
_ANONYMOUS = {"v1": ("total_rss", "total_shmem", "total_swap"), "v2": ("anon", "shmem")}


def anonymous_memory(pid: int) -> int | None:
    """The anonymous and shared memory of the cgroup that process `pid` runs in (its container's), in bytes:
    about what a dump of the container writes. None when this host's /proc and /sys do not show it."""
    try:
        lines = (Path("/proc") / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    groups = dict(line.split(":", 2)[1:] for line in lines if line.count(":") >= 2)
    for controllers, path in groups.items():
        if "memory" in controllers.split(","):
            return _memory_stat(CGROUP_ROOT / controllers / path.lstrip("/"), "v1")
    if "" in groups and (CGROUP_ROOT / "cgroup.controllers").is_file():  # the unified hierarchy alone
        folder = CGROUP_ROOT / groups[""].lstrip("/")
        stat = _memory_stat(folder, "v2")
        return None if stat is None else stat + _read_int(folder / "memory.swap.current")
    return None


def _memory_stat(folder: Path, version: str) -> int | None:
    try:
        text = (folder / "memory.stat").read_text()
    except OSError:
        return None
    counts = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
    wanted = [int(counts[key]) for key in _ANONYMOUS[version] if counts.get(key, "").strip().isdigit()]
    return sum(wanted) if wanted else None


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0

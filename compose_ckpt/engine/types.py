"""Values the engine adapter hands to the domain: plain dataclasses, no Docker objects."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any


@dataclass(frozen=True)
class ContainerInfo:
    """What the domain needs to know about one container, read from `docker inspect`."""

    id: str
    name: str
    image: str  # the image reference the container was created from
    image_id: str
    status: str  # created | running | paused | restarting | exited | dead
    pid: int  # host pid of the container's init process, 0 when not running
    exit_code: int
    labels: dict[str, str]
    started_at: str
    attrs: dict[str, Any] = field(repr=False, compare=False)  # the raw inspect document

    @property
    def running(self) -> bool:
        """Running and not paused."""
        return self.status == "running"

    @property
    def paused(self) -> bool:
        return self.status == "paused"

    @property
    def exited(self) -> bool:
        return self.status in ("created", "exited", "dead")

    @property
    def last_started(self) -> datetime | None:
        """When the container last started (a restore from a checkpoint counts); None when it never did."""
        if not self.started_at or self.started_at.startswith("0001-"):
            return None
        # Docker writes nanoseconds; fromisoformat takes at most microseconds.
        text = re.sub(r"(\.\d{6})\d+", r"\1", self.started_at).replace("Z", "+00:00")
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            return None

    @property
    def network_mode(self) -> str:
        """HostConfig.NetworkMode: `host`, `container:ID`, a network name, or "" (the default bridge)."""
        return str((self.attrs.get("HostConfig") or {}).get("NetworkMode") or "")

    @property
    def network_names(self) -> list[str]:
        """The networks the container is attached to (NetworkSettings.Networks), built-in ones included."""
        return list((self.attrs.get("NetworkSettings") or {}).get("Networks") or {})

    @property
    def addresses(self) -> set[str]:
        """Its IPv4 and IPv6 addresses on those networks."""
        networks = (self.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        return {address for n in networks.values() for address in (n.get("IPAddress"), n.get("GlobalIPv6Address"))
                if address}

    @property
    def volume_names(self) -> list[str]:
        """The named volumes it mounts (Mounts of type volume)."""
        return [m["Name"] for m in self.attrs.get("Mounts") or [] if m.get("Type") == "volume"]

    @property
    def rootfs_dir(self) -> str | None:
        """Where the daemon mounts its root file system on its host when it starts (overlay2's MergedDir);
        None when the storage driver does not say (the containerd image store)."""
        data = (self.attrs.get("GraphDriver") or {}).get("Data") or {}
        return data.get("MergedDir") or None

    @property
    def mount_sources(self) -> dict[str, str]:
        """Container path -> host path of its volumes and bind mounts (Mounts[].Destination and Source)."""
        return {m["Destination"]: m["Source"] for m in self.attrs.get("Mounts") or []
                if m.get("Destination") and m.get("Source")}

    @property
    def restart_policy(self) -> RestartPolicy:
        recorded = (self.attrs.get("HostConfig") or {}).get("RestartPolicy") or {}
        return RestartPolicy(recorded.get("Name") or "no", int(recorded.get("MaximumRetryCount") or 0))

    @classmethod
    def from_inspect(cls, attrs: dict[str, Any]) -> ContainerInfo:
        state = attrs.get("State") or {}
        config = attrs.get("Config") or {}
        return cls(
            id=attrs["Id"],
            name=attrs.get("Name", "").lstrip("/"),
            image=config.get("Image", ""),
            image_id=attrs.get("Image", ""),
            status=state.get("Status", "unknown"),
            pid=int(state.get("Pid") or 0),
            exit_code=int(state.get("ExitCode") or 0),
            labels=dict(config.get("Labels") or {}),
            started_at=state.get("StartedAt", ""),
            attrs=attrs,
        )


@dataclass(frozen=True)
class RestartPolicy:
    """A container's restart policy (HostConfig.RestartPolicy), written as `docker run --restart` takes it."""

    name: str  # no | always | unless-stopped | on-failure ("" in some inspect documents means no)
    maximum_retry_count: int = 0  # on-failure only; 0: no limit

    NAMES = ("no", "always", "unless-stopped", "on-failure")

    @property
    def restarts(self) -> bool:
        """Whether Docker may start the container on its own (after it ends, or when the daemon starts)."""
        return self.name not in ("", "no")

    def as_text(self) -> str:
        return f"{self.name}:{self.maximum_retry_count}" if self.maximum_retry_count else self.name

    @classmethod
    def from_text(cls, text: str) -> RestartPolicy:
        """`always`, `on-failure:3`, ...; ValueError for anything else."""
        name, colon, count = text.partition(":")
        if name not in cls.NAMES or (colon and (name != "on-failure" or not count.isdigit() or not count.isascii())):
            raise ValueError(f"not a restart policy: {text!r}")
        return cls(name, int(count or 0))

    def as_api(self) -> dict[str, object]:
        return {"Name": self.name, "MaximumRetryCount": self.maximum_retry_count}


NO_RESTART = RestartPolicy("no")


@dataclass(frozen=True)
class EngineInfo:
    """Versions and settings of the Docker engine, from `docker info` and `docker version`."""

    server_version: str
    api_version: str
    experimental: bool
    docker_root_dir: str
    cgroup_version: str
    kernel_version: str
    architecture: str
    operating_system: str
    storage_driver: str
    containerd_version: str
    runc_version: str
    local: bool  # the daemon runs on this host and its files are readable here


@dataclass(frozen=True)
class ProcessFingerprint:
    """Memory-layout addresses of a container's init process (/proc/PID/stat fields 47-51).

    The kernel randomises them at every fresh start (ASLR); CRIU restores them
    exactly. Equal fingerprints before the checkpoint and after the restore show
    that the container was really restored and not silently started fresh.
    """

    start_brk: int
    arg_start: int
    arg_end: int
    env_start: int
    env_end: int

    def as_text(self) -> str:
        return f"{self.start_brk}:{self.arg_start}:{self.arg_end}:{self.env_start}:{self.env_end}"

    @classmethod
    def from_text(cls, text: str) -> ProcessFingerprint:
        start_brk, arg_start, arg_end, env_start, env_end = (int(part) for part in text.split(":"))
        return cls(start_brk, arg_start, arg_end, env_start, env_end)


# The container events that change what is running (a re-create shows as destroy + start).
CONTAINER_ACTIONS = ("start", "die", "destroy", "rename")


@dataclass(frozen=True)
class ContainerEvent:
    """One `docker events` entry about a container."""

    action: str  # one of CONTAINER_ACTIONS
    container_id: str
    attributes: dict[str, str]  # the container's labels, plus name and image
    time: float  # epoch seconds


class PagesRoute(str, Enum):
    """How a restore's page images reach CRIU (see engine/pages_in_root.py)."""

    CONTAINER_ROOT = "container-root"  # placed inside the container's own root: containerd copies only the rest
    CONTAINERD = "containerd"  # the whole checkpoint through containerd's content store and temp folder


@dataclass(frozen=True)
class PlacedCheckpoint:
    """What placing a checkpoint for `docker start --checkpoint` did."""

    fitted: list[str]  # container paths of the mounts restored private, as this host has them
    pages: PagesRoute
    page_bytes: int  # bytes of page images placed in the container's root (0 through containerd)
    why_containerd: str = ""  # why the page images took containerd's way, when it matters to a user


class DumpPath(str, Enum):
    """How a container's memory reached the store."""

    RUNTIME = "runtime"  # the daemon's own OCI runtime (runc) dumped it straight into the store
    ENGINE_API = "engine-api"  # the Docker API's checkpoint create, then copied out of the daemon's folder


@dataclass(frozen=True)
class CriuOptions:
    """CRIU options compose-ckpt asks for itself (the direct path passes them to runc; the Docker API cannot,
    there only /etc/criu/runc.conf and the org.criu.config annotation count)."""

    tcp_established: bool = False  # dump established TCP connections (both ends should be frozen together)
    file_locks: bool = False  # dump held file locks (flock, POSIX locks)

    def runc_flags(self) -> list[str]:
        return [flag for on, flag in ((self.tcp_established, "--tcp-established"), (self.file_locks, "--file-locks"))
                if on]

    def words(self) -> list[str]:
        """As the label and a CRIU configuration file name them: `tcp-established`, `file-locks`."""
        return [flag.removeprefix("--") for flag in self.runc_flags()]

    @classmethod
    def from_words(cls, words: str) -> CriuOptions:
        """`tcp-established,file-locks` (a container label's value); ValueError for anything else."""
        chosen = {word.strip() for word in words.replace(" ", ",").split(",") if word.strip()}
        known = {"tcp-established", "file-locks"}
        if chosen - known:
            raise ValueError(f"unknown CRIU option {sorted(chosen - known)[0]!r} (known: {', '.join(sorted(known))})")
        return cls(tcp_established="tcp-established" in chosen, file_locks="file-locks" in chosen)


NO_CRIU_OPTIONS = CriuOptions()


@dataclass(frozen=True)
class DumpResult:
    """What one checkpoint create did."""

    path: DumpPath
    size: int = 0  # bytes written into the store (RUNTIME); 0 for ENGINE_API, whose files are still the daemon's
    fallback: str | None = None  # why the direct path was not taken (ENGINE_API only; None: never tried)


@dataclass
class DumpProgress:
    """Whether a dump still runs, told by the snapshot to whoever reads its files as CRIU writes them."""

    ended: threading.Event = field(default_factory=threading.Event)
    ok: bool = False  # set before `ended`: the dump wrote a complete checkpoint

    def end(self, ok: bool) -> None:
        self.ok = ok
        self.ended.set()


@dataclass(frozen=True)
class CriuProbe:
    """The criu the daemon's runc runs, as found on the daemon's PATH."""

    path: str | None  # the criu runc will run, found on the daemon's PATH
    version: str | None
    check_output: str  # last line of `criu check`
    check_ok: bool
    search_path: str  # the PATH searched


@dataclass(frozen=True)
class SocketOwner:
    """A process with an open descriptor of a socket (not a network holder: that is a container)."""

    pid: int
    command: str
    container_id: str | None  # the Docker container whose cgroup holds the process; None: a host process


@dataclass(frozen=True)
class ContainerdLeftovers:
    """The `ctrd-checkpoint*` folders in one containerd temp folder."""

    folder: str
    count: int
    size: int  # bytes in their regular files
    pattern: str  # a shell pattern naming them

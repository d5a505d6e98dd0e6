"""A second Docker daemon on this machine, standing in for another host in migration tests.

It has its own data-root, exec-root, pid file, unix socket and bridge (named
after the engine, never shared: test sessions run side by side on this
machine, and a daemon whose bridge another session deleted fails every
`docker run` on it with exit 125), and
also listens on tcp://127.0.0.1 so that tests reach it the way they would
reach a remote engine (compose-ckpt then moves checkpoints through the API,
not the file system). Started and stopped by pid, never by process name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from compose_ckpt.const import LABEL_HELPER
from tests.polling import wait_for

DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # CRIU wrapper first


@dataclass(frozen=True)
class Network:
    """The address pool a second engine's networks take their subnets from (its default bridge's too, the
    bridge having no address of its own), apart from the first daemon's default pools."""

    pool: str


SECOND = Network("base=10.214.0.0/16,size=24")
# The engine with private mounts runs beside `SECOND` in one test session: a pool of its own.
PRIVATE_MOUNTS = Network("base=10.216.0.0/16,size=24")


@dataclass
class SecondEngine:
    root: Path
    exec_root: Path
    tcp: str
    unix: str
    process: subprocess.Popen[bytes]
    arguments: list[str]  # dockerd's command line
    bridge: str  # its default bridge, its own

    def docker(self, *args: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["docker", "-H", self.unix, *args], check=check, capture_output=True, input=input)

    def helpers(self) -> set[str]:
        """The ids of compose-ckpt's helper containers on this engine (a test compares before and after)."""
        listing = self.docker("ps", "-a", "-q", "--no-trunc", "--filter", f"label={LABEL_HELPER}").stdout.decode()
        return set(listing.split())

    def copy_image_from_first(self, image: str) -> None:
        saved = subprocess.run(["docker", "save", image], check=True, capture_output=True).stdout
        self.docker("load", input=saved)

    def reboot(self) -> None:
        """Stop the daemon as a host shutdown does (SIGTERM: it stops the containers), and start it again on
        the same folders, as after a reboot."""
        stop_daemon(self.process)
        self._start_again()

    def kill_and_start_again(self) -> None:
        """SIGKILL the daemon (a crash, an OOM kill), wait until it and its containerd are gone, start it
        again on the same folders: its containers are found exited, as after a reboot."""
        containerd = [pid for pid in _children(self.process.pid)]
        self.process.kill()
        self.process.wait()
        wait_for("the killed daemon's containerd to end",
                 lambda: not any(Path(f"/proc/{pid}").exists() for pid in containerd))
        self._start_again()

    def stop_daemon(self) -> None:
        """Stop the daemon as `reboot` does, without starting it again (`start_again` does)."""
        stop_daemon(self.process)

    def start_again(self) -> None:
        self._start_again()

    def _start_again(self) -> None:
        if subprocess.run(["ip", "link", "show", self.bridge], capture_output=True).returncode != 0:
            _make_bridge(self.bridge)
        log = open(self.root / "dockerd.log", "ab")
        host_bridge = _default_bridge_address()
        self.process = subprocess.Popen(self.arguments, stdout=log, stderr=log, env=daemon_environment(self.root),
                                        start_new_session=True)
        try:
            wait_for("the second dockerd to start again", lambda: self.docker("info", check=False).returncode == 0,
                     timeout=120)
        except AssertionError:
            tail = (self.root / "dockerd.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the second dockerd did not start again:\n{tail}") from None
        _put_back_default_bridge(host_bridge)

    def stop(self) -> None:
        stop_daemon(self.process)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        remove_daemon_folders(self.root, self.exec_root)


def daemon_environment(root: Path) -> dict[str, str]:
    """The daemon finds our criu on PATH; its containerd unpacks each restored checkpoint into a folder of
    TMPDIR and never removes it (containerd#10166): a TMPDIR of its own goes with the engine's folders, where
    /tmp would keep a copy of every restore this engine made, which compose-ckpt, seeing a remote engine,
    cannot clean."""
    temporary = root / "tmp"
    temporary.mkdir(mode=0o700, exist_ok=True)
    return {**os.environ, "PATH": DAEMON_PATH, "TMPDIR": str(temporary)}


def stop_daemon(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as a host shutdown sends (the daemon stops its containers); SIGKILL after a minute."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def remove_daemon_folders(*folders: Path) -> None:
    """Unmount what a daemon left mounted at or under its folders (mounts stacked on one point too), then
    remove them."""
    for folder in folders:
        for point in _mounts_at_or_under(folder):
            subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _mounts_at_or_under(folder: Path) -> list[str]:
    """Every mount at or below `folder` (a point twice when two mounts are stacked on it), deepest first."""
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    prefix = str(folder)
    return sorted((p for p in points if p == prefix or p.startswith(prefix + "/")), key=len, reverse=True)


def _slave_only_mount(folder: Path) -> None:
    """Make `folder` a mount that receives mounts from a peer group but is in none itself (`master:N`
    without `shared:`), as where dockerd runs in a mount namespace of its own: the daemon leaves such a
    data root as it is, and the mounts it makes beneath it for containers are private."""
    folder.mkdir(parents=True)
    for command in (["mount", "--bind", folder, folder], ["mount", "--make-shared", folder],
                    ["mount", "--bind", folder, folder], ["mount", "--make-slave", folder]):
        subprocess.run([str(arg) for arg in command], check=True, capture_output=True)


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _default_bridge_address() -> str | None:
    """The host's docker0 address (CIDR), None without one."""
    shown = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", "docker0"], capture_output=True, text=True)
    fields = shown.stdout.split()
    return fields[fields.index("inet") + 1] if shown.returncode == 0 and "inet" in fields else None


def _put_back_default_bridge(address: str | None) -> None:
    """A dockerd (26.1) started again on its data root deletes the host's docker0, whatever its --bridge:
    it drops its stale default network, whose recorded bridge name is the default one (seen here with a
    throwaway daemon in a netns of its own). The first engine owns docker0; give it back."""
    if address is None or subprocess.run(["ip", "link", "show", "docker0"], capture_output=True).returncode == 0:
        return
    for command in (["ip", "link", "add", "docker0", "type", "bridge"], ["ip", "addr", "add", address, "dev", "docker0"],
                    ["ip", "link", "set", "docker0", "up"]):
        subprocess.run(command, capture_output=True)


def _make_bridge(bridge: str) -> None:
    """A bridge without an address: the daemon gives it a subnet of its pool."""
    for command in (["ip", "link", "add", bridge, "type", "bridge"], ["ip", "link", "set", bridge, "up"]):
        subprocess.run(command, check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_second_engine(private_mounts: bool = False, network: Network | None = None,
                        data_size: str | None = None) -> SecondEngine:
    """`private_mounts`: its data root is a slave-only mount (see _slave_only_mount), so the root file
    systems of its containers are private, where the first engine's are slaves of its shared data root.
    `network`: a pool of its own (a bench or test beside the session's engines). `data_size`:
    its data root is a tmpfs of that size (`64m`), to fill its disk."""
    network = network or (PRIVATE_MOUNTS if private_mounts else SECOND)
    tag = uuid.uuid4().hex[:8]
    root = Path(f"/var/lib/ckpt-engine2-{tag}")
    exec_root = Path(f"/run/ckpt2-{tag}")  # short: unix socket paths are limited to 108 bytes
    root.mkdir(parents=True)
    exec_root.mkdir(parents=True)
    if private_mounts:
        _slave_only_mount(root / "data")
    if data_size is not None:
        (root / "data").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={data_size},mode=0710", "tmpfs", str(root / "data")],
                       check=True, capture_output=True)
    bridge = f"ckb-{tag}"  # 12 characters: interface names are limited to 15
    _make_bridge(bridge)
    config = root / "daemon.json"
    config.write_text(json.dumps({}))  # --experimental is passed as a flag; a flag and a config key may not both set it
    unix = f"unix://{exec_root}/docker.sock"
    tcp = f"tcp://127.0.0.1:{free_port()}"
    log = open(root / "dockerd.log", "ab")
    arguments = ["dockerd", "--experimental", "--config-file", str(config), "--data-root", str(root / "data"),
                 "--exec-root", str(exec_root), "--pidfile", str(exec_root / "docker.pid"), "-H", unix, "-H", tcp,
                 "--tls=false", "--bridge", bridge, "--default-address-pool", network.pool, "--iptables=false"]
    process = subprocess.Popen(arguments, stdout=log, stderr=log, env=daemon_environment(root),
                               start_new_session=True)
    engine = SecondEngine(root, exec_root, tcp, unix, process, arguments, bridge)
    try:
        wait_for("the second dockerd to answer or end",
                 lambda: process.poll() is not None or engine.docker("info", check=False).returncode == 0)
    except AssertionError:
        pass
    if process.poll() is None and engine.docker("info", check=False).returncode == 0:
        return engine
    engine.stop()
    raise RuntimeError(f"the second dockerd did not start; see {root / 'dockerd.log'}")

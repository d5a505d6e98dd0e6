"""Facts about the host the Docker daemon runs on, read from /proc and by running CRIU.

Only meaningful when the engine is local (`EngineInfo.local`); `doctor` says so otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CAP_SYS_RESOURCE = 24
RUNC_CRIU_CONFIG = Path("/etc/criu/runc.conf")


@dataclass(frozen=True)
class CriuProbe:
    path: str | None  # the criu runc will run, found on the daemon's PATH
    version: str | None
    check_output: str  # last line of `criu check`
    check_ok: bool


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
    if pid is not None:
        try:
            for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                if item.startswith(b"PATH="):
                    return item[5:].decode()
        except OSError:
            pass
    return os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")


def criu_version(search_path: str) -> str | None:
    criu = shutil.which("criu", path=search_path)
    if criu is None:
        return None
    match = re.search(r"Version:\s*([0-9.]+)", _run([criu, "--version"]))
    return match.group(1) if match else None


def probe_criu(search_path: str) -> CriuProbe:
    criu = shutil.which("criu", path=search_path)
    if criu is None:
        return CriuProbe(None, None, "criu not found", False)
    check = _run([criu, "check"]).strip().splitlines()
    last = check[-1] if check else "no output"
    return CriuProbe(criu, criu_version(search_path), last, last == "Looks good.")


def has_capability(pid: int | None, capability: int) -> bool:
    """Whether the process (ourselves when pid is None) holds `capability` in its effective set."""
    status = Path(f"/proc/{pid}/status" if pid else "/proc/self/status")
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> capability & 1)
    return False


def runc_tcp_established() -> bool:
    """runc passes CRIU the options in /etc/criu/runc.conf; `tcp-established` lets it dump live connections."""
    try:
        return any(line.strip() == "tcp-established" for line in RUNC_CRIU_CONFIG.read_text().splitlines())
    except OSError:
        return False


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return done.stdout + done.stderr

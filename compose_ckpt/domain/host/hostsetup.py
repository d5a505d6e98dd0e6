"""`compose-ckpt host install/uninstall`: the hook that snapshots stacks at shutdown and restores them at boot.

With systemd: one unit, `compose-ckpt-host.service`, ordered after (and
requiring) docker.service. Starting it (at boot, once Docker is up) runs
`compose-ckpt host boot`; stopping it runs `compose-ckpt host shutdown`, and
since it is ordered after docker.service, systemd stops it, and so takes the
snapshots, before it stops Docker (at shutdown, and on `systemctl restart
docker` too). Without systemd: an init script, /etc/init.d/compose-ckpt, with
the same two commands for `start` and `stop` (LSB headers: after docker at
start, before it at stop).

`host install` also offers to add `tcp-established` to /etc/criu/runc.conf,
which runc hands to CRIU, so that services connected to each other can be
checkpointed; the rest of that file is kept as it is.

Files are written through a temporary file renamed into place, so a reader
sees the old or the new file, and no link already at the path is followed.
"""

from __future__ import annotations

import difflib
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from compose_ckpt.const import ENV_HOME, RUNC_CRIU_CONFIG, TCP_ESTABLISHED
from compose_ckpt.domain.store.names import validate_name
from compose_ckpt.errors import CkptError, UsageError

UNIT_NAME = "compose-ckpt-host.service"
UNIT_DIR = Path("etc/systemd/system")
INIT_SCRIPT = Path("etc/init.d/compose-ckpt")
STOP_TIMEOUT_SECONDS = 900  # a large stack's checkpoints take minutes; systemd would kill the hook sooner


class InitSystem(str, Enum):
    AUTO = "auto"
    SYSTEMD = "systemd"
    SCRIPT = "script"


@dataclass(frozen=True)
class HostFile:
    path: Path  # where it goes, under the install root
    text: str
    mode: int


@dataclass(frozen=True)
class HostPlan:
    """What `host install` writes: the hook files, and the runc.conf change (None: none needed or wanted)."""

    root: Path
    init: InitSystem  # SYSTEMD or SCRIPT, never AUTO
    project_names: tuple[str, ...]
    files: tuple[HostFile, ...]
    runc_conf: HostFile | None
    runc_diff: str


def detect_init(root: Path) -> InitSystem:
    return InitSystem.SYSTEMD if (root / "run/systemd/system").is_dir() else InitSystem.SCRIPT


def hook_command(executable: Path, project_names: tuple[str, ...], action: str) -> str:
    home = os.environ.get(ENV_HOME)
    env = f"{ENV_HOME}={shlex.quote(home)} " if home else ""
    flags = " ".join(f"--project {project_name}" for project_name in project_names)  # validated names: nothing to quote
    return f"{env}{shlex.quote(str(executable))} --progress plain host {action} {flags}"


def systemd_unit(executable: Path, project_names: tuple[str, ...]) -> str:
    home = os.environ.get(ENV_HOME)
    environment = f"Environment={ENV_HOME}={home}\n" if home else ""
    flags = " ".join(f"--project {project_name}" for project_name in project_names)
    binary = str(executable)
    return f"""# Written by `compose-ckpt host install`; `compose-ckpt host uninstall` removes it.
# Stopping this unit (at shutdown, before Docker stops, and on a restart of docker.service)
# snapshots the stacks and leaves them stopped at their checkpoint; starting it (once Docker
# is up) restores each one whose snapshot nothing ran after.
[Unit]
Description=compose-ckpt: snapshot Compose stacks before Docker stops, restore them when it is back
After=docker.service
Requires=docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
{environment}# "-": a stack that cannot be restored must not leave the unit failed, or its stop would not run.
ExecStart=-{binary} --progress plain host boot {flags}
ExecStop={binary} --progress plain host shutdown {flags}
TimeoutStartSec={STOP_TIMEOUT_SECONDS}
TimeoutStopSec={STOP_TIMEOUT_SECONDS}

[Install]
WantedBy=multi-user.target
"""


def init_script(executable: Path, project_names: tuple[str, ...]) -> str:
    return f"""#!/bin/sh
# Written by `compose-ckpt host install`; `compose-ckpt host uninstall` removes it.
# Enable it with your init system (Debian: `update-rc.d compose-ckpt defaults`; OpenRC, runit and
# others: run `$0 stop` before Docker stops and `$0 start` once it is up).
### BEGIN INIT INFO
# Provides:          compose-ckpt
# Required-Start:    docker
# Required-Stop:     docker
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: snapshot Compose stacks before Docker stops, restore them when it is back
### END INIT INFO
case "$1" in
  start) {hook_command(executable, project_names, "boot")} || true ;;
  stop) {hook_command(executable, project_names, "shutdown")} ;;
  restart|force-reload) "$0" stop; "$0" start ;;
  status) exit 0 ;;
  *) echo "usage: $0 start|stop" >&2; exit 3 ;;
esac
"""


def with_tcp_established(current: str) -> str | None:
    """`current` runc.conf text with a `tcp-established` line added; None when it has one already."""
    if any(line.strip() == TCP_ESTABLISHED for line in current.splitlines()):
        return None
    separator = "" if not current or current.endswith("\n") else "\n"
    return (f"{current}{separator}# Added by `compose-ckpt host install`: lets CRIU checkpoint established TCP "
            f"connections\n# (services connected to each other, frozen together).\n{TCP_ESTABLISHED}\n")


def installed_executable(python: Path) -> Path:
    """The compose-ckpt command the hook runs: the one beside `python` (this interpreter: a venv or pip
    install), else the one on PATH."""
    beside = python.parent / "compose-ckpt"
    if beside.exists():
        return beside
    found = shutil.which("compose-ckpt")
    if found is None:
        raise UsageError("cannot find the compose-ckpt command to run from the hook", hint="Install it with pip first.")
    return Path(found).resolve()


def plan_install(root: Path, executable: Path, project_names: list[str], init: InitSystem, tcp_established: bool,
                 runc_conf: Path | None = None) -> HostPlan:
    if not project_names:
        raise UsageError("name at least one project", hint="`compose-ckpt host install --project NAME` (repeatable).")
    chosen = tuple(dict.fromkeys(validate_name(p, "project name") for p in project_names))
    init = detect_init(root) if init is InitSystem.AUTO else init
    if init is InitSystem.SYSTEMD:
        files: tuple[HostFile, ...] = (HostFile(root / UNIT_DIR / UNIT_NAME, systemd_unit(executable, chosen), 0o644),)
    else:
        files = (HostFile(root / INIT_SCRIPT, init_script(executable, chosen), 0o755),)
    conf_path = runc_conf or root / RUNC_CRIU_CONFIG.relative_to("/")
    conf, diff = None, ""
    if tcp_established:
        current = _read_text(conf_path)
        changed = with_tcp_established(current)
        if changed is not None:
            conf = HostFile(conf_path, changed, _mode_of(conf_path, 0o644))
            diff = "".join(difflib.unified_diff(current.splitlines(True), changed.splitlines(True),
                                                str(conf_path), f"{conf_path} (new)"))
    return HostPlan(root, init, chosen, files, conf, diff)


def install(plan: HostPlan) -> list[str]:
    """Write the plan's files and enable the hook; return what was done, one line each."""
    done = []
    for item in plan.files:
        write_atomically(item)
        done.append(f"wrote {item.path}")
    if plan.runc_conf is not None:
        write_atomically(plan.runc_conf)
        done.append(f"added {TCP_ESTABLISHED} to {plan.runc_conf.path}")
    if plan.init is InitSystem.SYSTEMD:
        done += _enable_unit(plan.root)
    else:
        done += _enable_script(plan.root)
    return done


def uninstall(root: Path, dry_run: bool = False) -> list[str]:
    """Remove the hook (either kind). The unit is stopped without taking snapshots: its ExecStop goes first."""
    unit = root / UNIT_DIR / UNIT_NAME
    script = root / INIT_SCRIPT
    wants = root / UNIT_DIR / "multi-user.target.wants" / UNIT_NAME
    present = [path for path in (unit, wants, script) if path.exists() or path.is_symlink()]
    if not present:
        return ["nothing installed"]
    if dry_run:
        return [f"would remove {path}" for path in present]
    done = []
    live = _systemd_live(root)
    if unit.exists() and live:
        # Stopping the unit as installed would run `host shutdown`: drop its ExecStop first.
        text = "\n".join(line for line in unit.read_text().splitlines() if not line.startswith("ExecStop="))
        write_atomically(HostFile(unit, text + "\n", 0o644))
        _run(["systemctl", "daemon-reload"])
        _run(["systemctl", "disable", "--now", UNIT_NAME])
    if script.exists() and root == Path("/") and shutil.which("update-rc.d"):
        _run(["update-rc.d", "-f", "compose-ckpt", "remove"])
    for path in present:
        path.unlink(missing_ok=True)
        done.append(f"removed {path}")
    if live:
        _run(["systemctl", "daemon-reload"])
    return done


def verify_unit(path: Path) -> str | None:
    """`systemd-analyze verify`'s complaints about the unit, "" when none; None when the tool is not here."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return None
    done = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    return (done.stdout + done.stderr).strip() if done.returncode else ""


def write_atomically(item: HostFile) -> None:
    """Write through a new temporary file in the same folder, then rename it over the path."""
    item.path.parent.mkdir(parents=True, exist_ok=True)
    temporary = item.path.with_name(f".{item.path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, item.mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(item.text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, item.mode)  # the umask may have taken bits off
        os.replace(temporary, item.path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise CkptError(f"cannot write {item.path}: {exc.strerror or exc}", hint="Run as root.") from exc


def _enable_unit(root: Path) -> list[str]:
    wants = root / UNIT_DIR / "multi-user.target.wants" / UNIT_NAME
    if _systemd_live(root):
        _run(["systemctl", "daemon-reload"])
        # Started now, so that its stop (the snapshots) runs at the next shutdown.
        _run(["systemctl", "enable", "--now", UNIT_NAME])
        return [f"enabled and started {UNIT_NAME}"]
    wants.parent.mkdir(parents=True, exist_ok=True)
    if not wants.is_symlink():
        wants.symlink_to(Path("/") / UNIT_DIR / UNIT_NAME)
    return [f"enabled {UNIT_NAME} (linked from {wants.parent}); it starts at the next boot"]


def _enable_script(root: Path) -> list[str]:
    if root == Path("/") and shutil.which("update-rc.d"):
        _run(["update-rc.d", "compose-ckpt", "defaults"])
        return ["enabled /etc/init.d/compose-ckpt (update-rc.d)"]
    return ["enable it with your init system: run `/etc/init.d/compose-ckpt stop` before Docker stops and "
            "`/etc/init.d/compose-ckpt start` once it is up"]


def _systemd_live(root: Path) -> bool:
    return root == Path("/") and Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise CkptError(f"`{' '.join(command)}` failed: {(done.stderr or done.stdout).strip()}")


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise CkptError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _mode_of(path: Path, default: int) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return default

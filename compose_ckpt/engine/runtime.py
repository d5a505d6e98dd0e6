"""The daemon's own OCI runtime, found for one container and called directly to dump it into the store.

Why: through the Docker API a checkpoint goes CRIU -> containerd's temporary folder -> a tar in
containerd's content store -> untarred into the daemon's checkpoint folder, each byte written three or four
times (bench/README.md). The very runtime the daemon uses, run on the same container with the same state
root, writes each page once, where we ask.

Contract (read from the running container, never assumed):
- the task's shim is the parent of the container's init process, a `containerd-shim-runc-*` started with
  `-namespace NS -id <container id>`; its working folder is the task's bundle;
- the bundle's `options.json` (the daemon's runtime options, as containerd hands them to the shim) names
  the runtime binary (`binary_name`, looked up on the shim's own PATH, as the shim does) and the state root
  (`root`; the shim adds NS), which holds `<id>/state.json`; containerd's defaults when absent;
- the binary answers `--version` as runc does;
- the shim runs in our user and mount namespaces (not a rootless daemon), and we are root.
When any of these does not hold, `find_runtime` raises `DirectDumpUnavailable` saying which, and the
adapter uses the Docker API instead.

`runtime_checkpoint` runs `runc --root R checkpoint --image-path <store folder> --work-path <private temp
folder> [--leave-running] [CRIU options] <id>` in the shim's environment, as the shim runs it (runc
runs the criu it finds on that PATH, the one the daemon's own checkpoints use). runc still reads /etc/criu/runc.conf and the container's
org.criu.config annotation, as for the daemon. runc is started in a session of its own: a Ctrl-C of
compose-ckpt does not cut a dump in half, and a killed compose-ckpt leaves runc to finish (recovery sees it
working in /proc, like the daemon's own dumps, and waits for it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from compose_ckpt.engine import procfs
from compose_ckpt.engine.criu_log import criu_log_key_lines
from compose_ckpt.engine.types import CriuOptions
from compose_ckpt.errors import EngineError

CONTAINERD_DEFAULT_ROOT = "/run/containerd/runc"  # the runc shim's root when the options name none
SHIM_PREFIX = "containerd-shim-runc-"
PROGRESS_SECONDS = 0.5
SEIZE_RETRIES = 1
MAX_OPTIONS_BYTES = 64 * 1024
PROC = Path("/proc")
_RUNC_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


class DirectDumpUnavailable(Exception):
    """The daemon's runtime cannot be called directly for this container: the message says why."""


@dataclass(frozen=True)
class Runtime:
    """The runtime binary and state root the daemon's shim uses for one container."""

    binary: str
    root: str  # runc's --root: the options' root plus the shim's namespace
    environment: dict[str, str]  # the shim's, which runc gets from it: its PATH finds the daemon's criu

    @property
    def search_path(self) -> str:
        return self.environment.get("PATH") or os.defpath


def find_runtime(container_id: str, init_pid: int) -> Runtime:
    """The runtime serving `container_id`, whose init process is `init_pid` (see the contract above)."""
    if os.geteuid() != 0:
        raise DirectDumpUnavailable("compose-ckpt does not run as root")
    if init_pid <= 0:
        raise DirectDumpUnavailable("the container has no running process")
    shim = _parent(init_pid)
    argv = _argv(shim)
    if not argv or not Path(argv[0]).name.startswith(SHIM_PREFIX):
        name = Path(argv[0]).name if argv else "gone"
        raise DirectDumpUnavailable(f"its task is not served by a runc shim ({name})")
    if _flag(argv, "-id") != container_id or not (namespace := _flag(argv, "-namespace")):
        raise DirectDumpUnavailable("its shim does not name this container")
    for kind in ("user", "mnt"):
        if _namespace(shim, kind) != _namespace(os.getpid(), kind):
            raise DirectDumpUnavailable(f"the daemon's shim runs in another {kind} namespace (a rootless daemon?)")
    options = _runtime_options(shim)
    name = str(options.get("binary_name") or "runc")
    environment = procfs.process_environ(shim)
    binary = name if "/" in name else shutil.which(name, path=environment.get("PATH") or os.defpath)
    if binary is None or not os.access(binary, os.X_OK):
        raise DirectDumpUnavailable(f"runtime {name} not found on the shim's PATH")
    root = str(Path(str(options.get("root") or CONTAINERD_DEFAULT_ROOT), namespace))
    if not Path(root, container_id, "state.json").is_file():
        raise DirectDumpUnavailable(f"no runtime state of the container under {root}")
    if not _is_runc(binary):
        raise DirectDumpUnavailable(f"runtime {binary} does not answer as runc does")
    return Runtime(binary, root, environment)


def _parent(pid: int) -> int:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError as exc:
        raise DirectDumpUnavailable(f"its init process {pid} is gone") from exc
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _argv(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def _flag(argv: list[str], name: str) -> str | None:
    for index, arg in enumerate(argv[:-1]):
        if arg in (name, "-" + name):
            return argv[index + 1]
    return None


def _namespace(pid: int, kind: str) -> str:
    try:
        return os.readlink(PROC / str(pid) / "ns" / kind)
    except OSError:
        return f"unreadable {kind} namespace of {pid}"


def _runtime_options(shim: int) -> dict[str, object]:
    """The bundle's options.json (absent: the shim's defaults)."""
    try:
        bundle = os.readlink(PROC / str(shim) / "cwd")
        with open(Path(bundle, "options.json"), "rb") as source:
            raw = source.read(MAX_OPTIONS_BYTES)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise DirectDumpUnavailable(f"cannot read its shim's runtime options ({exc.strerror})") from exc
    try:
        options = json.loads(raw)
    except ValueError as exc:
        raise DirectDumpUnavailable("its shim's runtime options are not JSON") from exc
    if not isinstance(options, dict):
        raise DirectDumpUnavailable("its shim's runtime options are not a JSON object")
    return options


@cache
def _is_runc(binary: str) -> bool:
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.startswith("runc version")


def runtime_checkpoint(runtime: Runtime, container_id: str, images: Path, *, leave_running: bool,
                       options: CriuOptions, on_bytes: Callable[[int], None] = lambda done: None) -> int:
    """Dump the container into the existing private folder `images`; returns the bytes written there.
    `on_bytes` gets the bytes written so far every PROGRESS_SECONDS while runc works. Raises EngineError
    with the key lines of CRIU's log when the dump fails (the container is then as it was).
    A dump CRIU gave up before touching memory, because a process stayed in uninterruptible sleep past its
    freeze timeout (a slow disk's writeback, seen under load), is tried once more."""
    flags = [*(["--leave-running"] if leave_running else []), *options.runc_flags()]
    attempts = 0
    while True:
        attempts += 1
        work, status = _run_runc(runtime, container_id, images, flags, on_bytes)
        if status == 0:
            shutil.rmtree(work, ignore_errors=True)
            return folder_bytes(images)
        error = EngineError(f"checkpoint {container_id[:12]} by {runtime.binary}: "
                            f"{runc_message(_read(work / 'runc.out'), status)}")
        error.details = criu_log_key_lines(str(work / "dump.log"))
        seize_timed_out = _seize_timed_out(work / "dump.log")
        if seize_timed_out and attempts <= SEIZE_RETRIES:
            shutil.rmtree(work, ignore_errors=True)
            _empty(images)
            continue
        if seize_timed_out:
            error.details.append(f"a process stayed in uninterruptible sleep (state D: usually waiting on a busy "
                                 f"disk) past CRIU's freeze timeout, {attempts} times; try again when the disk "
                                 "is less busy")
        raise error


def _run_runc(runtime: Runtime, container_id: str, images: Path, flags: list[str],
              on_bytes: Callable[[int], None]) -> tuple[Path, int]:
    """runc's work folder and exit status. The work folder holds CRIU's log and runc's output: private (0700,
    made exclusively), off the store's disk, so that a full store still gets its error told."""
    work = Path(tempfile.mkdtemp(prefix="compose-ckpt-dump-"))
    argv = [runtime.binary, "--root", runtime.root, "checkpoint", "--image-path", str(images), "--work-path",
            str(work), *flags, container_id]
    with open(work / "runc.out", "wb") as output:
        # umask 077: CRIU creates the images with the mode the umask leaves; they hold process memory (0600).
        dumping = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                   stdout=output, stderr=subprocess.STDOUT,
                                   env={**runtime.environment, "PATH": runtime.search_path}, start_new_session=True,
                                   umask=0o077)
        try:
            _watch(dumping, images, on_bytes)
        finally:
            dumping.wait()  # never leave before runc is done: what follows (unpause, rollback) needs it finished
    return work, dumping.returncode


def _seize_timed_out(log: Path) -> bool:
    """CRIU stopped at its freeze timeout, while seizing the processes: nothing was dumped or changed."""
    text = _read(log) or ""
    return "Timeout reached" in text and "Unseizable non-zombie" in text


def _empty(images: Path) -> None:
    """Remove what a failed attempt wrote: CRIU writes its images flat, as regular files."""
    for entry in os.scandir(images):
        if entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)


def runc_message(output: str | None, status: int) -> str:
    """What runc said last: the `msg` of its log line (`criu failed: type NOTIFY errno 0`), else the line."""
    lines = (output or "").strip().splitlines()
    if not lines:
        return f"exit status {status}"
    said = _RUNC_MSG.search(lines[-1])
    if not said:
        return lines[-1]
    try:  # Go's quoting, which JSON reads: `exec: \"criu\"` is `exec: "criu"`, which the remedies match
        message = str(json.loads(f'"{said.group(1)}"'))
    except ValueError:
        message = said.group(1)
    return message.split("\n")[0]


def _watch(dumping: subprocess.Popen[bytes], images: Path, on_bytes: Callable[[int], None]) -> None:
    """Until runc ends: the size of `images`, every PROGRESS_SECONDS."""
    while True:
        try:
            dumping.wait(timeout=PROGRESS_SECONDS)
            return
        except subprocess.TimeoutExpired:
            on_bytes(folder_bytes(images))


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def folder_bytes(folder: Path) -> int:
    """Bytes in the regular files directly inside `folder` (CRIU writes its images flat)."""
    total = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total


"""docker compose itself, the reference implementation, run as its user would run it.

It resolves a project (``docker compose config --format json``), and `ComposeCli` (the domain's
`ComposePort`) runs `config` and `up -d` for `adopt` and `unadopt`, which change the project's compose
files and let compose itself bring the containers to the new form, so that they are exactly what the
user's own `docker compose` creates and keeps.

Contract:
- The compose v2 binary is looked for where the Docker CLI looks for plugins
  (``$DOCKER_CONFIG/cli-plugins``, ``~/.docker/cli-plugins``, then the system
  folders) and run directly, not through ``docker``: that halves the cost
  (about 35 ms instead of 70 ms) for the same program. A binary, or a folder
  holding it, that another user could replace is skipped.
  ``COMPOSE_CKPT_COMPOSE`` overrides the search: a path to the binary, or
  ``builtin`` for the in-house loader.
- It runs with the caller's flags, environment and cwd, so it sees exactly
  what ``docker compose`` would. Whatever it accepts is accepted, whatever it
  refuses is refused (exit 3).
- It never hangs and never eats the host: compose 2.26 grows without bound on
  an alias bomb and ignores SIGTERM while it does, so files with aliases are
  measured first (aliases expanded, linear in the file), and the process is
  killed (SIGKILL) past ``TIMEOUT_SECONDS`` or ``MAX_RSS_BYTES`` of memory.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from compose_ckpt.compose.model import (
    CONDITIONS,
    ComposeProject,
    ProjectOptions,
    ServiceConfig,
    ServiceDependency,
    ipam_given,
)
from compose_ckpt.errors import ComposeFileError, EngineError, UsageError

OVERRIDE_VARIABLE = "COMPOSE_CKPT_COMPOSE"
BUILTIN = "builtin"
PLUGIN_NAME = "docker-compose"
SYSTEM_PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)
TIMEOUT_SECONDS = 60.0
MAX_RSS_BYTES = 1024**3
_POLL_SECONDS = 0.01


def find_compose(environ: Mapping[str, str]) -> Path | None:
    """The compose binary to delegate to, or None for the in-house loader."""
    chosen = environ.get(OVERRIDE_VARIABLE, "")
    if chosen == BUILTIN:
        return None
    if chosen:
        return Path(chosen)
    config_dir = environ.get("DOCKER_CONFIG") or os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".docker")
    for folder in (os.path.join(config_dir, "cli-plugins"), *SYSTEM_PLUGIN_DIRS):
        candidate = Path(folder) / PLUGIN_NAME
        if _trusted(candidate):
            return candidate
    return None


def _trusted(path: Path) -> bool:
    """An executable file that only root or we could have put there (the file and its folder)."""
    try:
        facts = [os.stat(path), os.stat(path.parent)]
    except OSError:
        return False
    owners = {0, os.geteuid()}
    return (stat.S_ISREG(facts[0].st_mode) and bool(facts[0].st_mode & stat.S_IXUSR)
            and all(f.st_uid in owners and not f.st_mode & (stat.S_IWGRP | stat.S_IWOTH) for f in facts))


def compose_arguments(options: ProjectOptions) -> list[str]:
    """The global flags of ``docker compose`` for these options."""
    args = [arg for f in options.files for arg in ("-f", f)]
    args += [arg for p in options.profiles for arg in ("--profile", p)]
    args += [arg for e in options.env_files for arg in ("--env-file", e)]
    if options.project_name is not None:
        args += ["-p", options.project_name]
    if options.project_directory is not None:
        args += ["--project-directory", options.project_directory]
    return args


class ComposeRefused(Exception):
    """``docker compose config`` failed; ``message`` is its own error text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def start_config(binary: Path, options: ProjectOptions, environ: Mapping[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``docker compose config --format json``; ``read_config`` waits for its answer."""
    argv = [str(binary), *compose_arguments(options), "config", "--format", "json"]
    try:
        return subprocess.Popen(argv, cwd=cwd, env=dict(environ), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as err:
        raise ComposeFileError(f"cannot run {binary}: {err.strerror or err}",
                               hint=f"set {OVERRIDE_VARIABLE}=builtin to use compose-ckpt's own loader") from None


def read_config(binary: Path, process: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The resolved project as the started compose prints it, or ComposeRefused with compose's message."""
    try:
        out, stderr = _bounded(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise ComposeRefused(_last_words(stderr.decode("utf-8", "replace")))
    try:
        document = json.loads(out)
    except RecursionError:  # an included file nested deeper than Python's JSON parser goes
        raise ComposeFileError("the resolved project is nested too deeply to read") from None
    except ValueError:
        raise ComposeFileError(f"{binary} printed something other than JSON for `config --format json`") from None
    if not isinstance(document, dict):
        raise ComposeFileError(f"{binary} printed unexpected JSON for `config --format json`")
    return document


def _bounded(process: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """communicate(), but SIGKILL past the time or memory bound (compose ignores SIGTERM while it loads)."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while True:
        try:
            return process.communicate(timeout=_POLL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise ComposeFileError(f"docker compose did not finish reading the files within {TIMEOUT_SECONDS:.0f} s",
                                   hint="look for YAML aliases that expand into a huge tree")
        if _rss_bytes(process.pid) > MAX_RSS_BYTES:
            process.kill()
            raise ComposeFileError(f"docker compose needed more than {MAX_RSS_BYTES // 1024**2} MiB to read the files",
                                   hint="look for YAML aliases that expand into a huge tree")


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


_LOG_LINE = re.compile(r'^time="[^"]*" level=(\w+) msg="(.*)"$')


def _last_words(stderr: str) -> str:
    """Compose's error: its log lines' messages (warnings left out), or its plain text."""
    words = []
    for line in filter(str.strip, stderr.strip().splitlines()):
        logged = _LOG_LINE.match(line)
        if logged is None:
            words.append(line)
        elif logged.group(1) not in ("warning", "info", "debug"):
            words.append(logged.group(2))
    return "\n".join(words) or "docker compose failed without saying why"


# --- the printed project -> our model ----------------------------------------------------------------------


def project_from_config(document: Mapping[str, Any], working_dir: Path, files: tuple[Path, ...],
                        contents: tuple[bytes, ...]) -> ComposeProject:
    """compose's resolved project (active services only) as a ComposeProject."""
    services = {str(name): _service(str(name), raw) for name, raw in (document.get("services") or {}).items()}
    return ComposeProject(name=str(document["name"]), working_dir=working_dir, config_files=files,
                          services=services, disabled_services=(), file_contents=contents,
                          ipam_given=ipam_given(str(document["name"]), document.get("networks") or {}))


def _service(name: str, raw: Mapping[str, Any]) -> ServiceConfig:
    deploy = raw.get("deploy") or {}
    replicas = deploy.get("replicas")
    depends_on = raw.get("depends_on") or {}
    return ServiceConfig(
        name=name,
        image=_literal(raw.get("image")),
        container_name=_literal(raw.get("container_name")),
        depends_on=tuple(
            ServiceDependency(str(dep), entry.get("condition") if entry.get("condition") in CONDITIONS else CONDITIONS[0],
                              bool(entry.get("required", True)))
            for dep, entry in depends_on.items()
        ),
        profiles=tuple(str(p) for p in raw.get("profiles") or ()),
        labels={str(k): _literal(v) or "" for k, v in (raw.get("labels") or {}).items()},
        replicas=int(replicas if replicas is not None else raw.get("scale", 1)),
        has_build="build" in raw,
        network_mode=_literal(raw.get("network_mode")),
    )


def _literal(value: Any) -> str | None:
    """A string as compose meant it: `config` prints every literal ``$`` doubled, so it can be read again."""
    return None if value is None else str(value).replace("$$", "$")


UP_TIMEOUT_SECONDS = 900.0


class ComposeCli:
    def __init__(self, options: ProjectOptions, environ: Mapping[str, str], cwd: Path, docker_host: str | None) -> None:
        binary = find_compose(environ)
        if binary is None:
            raise UsageError("this needs the docker compose plugin (compose v2), which was not found",
                             hint="Install it (Debian: docker-compose; Docker's own packages: docker-compose-plugin).")
        self.binary = binary
        self.options = options
        self.environ = dict(environ)
        if docker_host:  # the engine compose-ckpt was pointed at with -H
            self.environ.pop("DOCKER_CONTEXT", None)
            self.environ["DOCKER_HOST" if "://" in docker_host else "DOCKER_CONTEXT"] = docker_host
        self.cwd = cwd

    def _with_files(self, files: Sequence[Path], project_name: str, working_dir: Path) -> ProjectOptions:
        return replace(self.options, files=tuple(str(f) for f in files), project_name=project_name,
                       project_directory=str(working_dir))

    def config(self, files: Sequence[Path], project_name: str, working_dir: Path) -> dict[str, Any]:
        """The project made of `files` as compose resolves it, every profile enabled."""
        options = replace(self._with_files(files, project_name, working_dir), profiles=("*",))
        try:
            return read_config(self.binary, start_config(self.binary, options, self.environ, self.cwd))
        except ComposeRefused as refused:
            raise ComposeFileError(f"docker compose: {refused.message}") from None

    def up(self, files: Sequence[Path], project_name: str, working_dir: Path, services: Sequence[str]) -> None:
        """`docker compose up -d SERVICE...` on the project made of `files`."""
        argv = [str(self.binary), *compose_arguments(self._with_files(files, project_name, working_dir)),
                "up", "-d", "--quiet-pull", *services]
        try:
            done = subprocess.run(argv, cwd=self.cwd, env=self.environ, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=UP_TIMEOUT_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise EngineError(f"docker compose up did not finish: {err}") from None
        if done.returncode != 0:
            said = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise EngineError(f"docker compose up failed: {said[-1] if said else 'without saying why'}",
                              details=said[-10:])

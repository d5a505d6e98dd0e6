"""``docker compose`` run for a project, as its user would run it (the domain's `ComposePort`).

`adopt` and `unadopt` change the project's compose files; compose itself then brings the containers to
the new form (`up -d`), so that they are exactly what the user's own `docker compose` creates and keeps.
It runs with the caller's global flags, environment and cwd, on the engine compose-ckpt talks to.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from compose_ckpt.compose.docker_compose import (
    ComposeRefused,
    compose_arguments,
    find_compose,
    read_config,
    start_config,
)
from compose_ckpt.compose.model import ProjectOptions
from compose_ckpt.errors import ComposeFileError, EngineError, UsageError

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

"""What every command gets in `ctx.obj`: the global options, and the objects they lead to (the engine, the
compose project, the store, the progress display), each made when a command first asks for it.

The domain and the engine client load lazily, per command, so that `--help` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compose_ckpt.cli.options import ProgressMode
from compose_ckpt.errors import CkptError

if TYPE_CHECKING:
    from concurrent.futures import Future

    from compose_ckpt.cli.progress import Display
    from compose_ckpt.compose import ComposeProject, ProjectOptions
    from compose_ckpt.compose.docker_compose import ComposeCli
    from compose_ckpt.domain.stack.project import Project
    from compose_ckpt.domain.store.store import SnapshotStore
    from compose_ckpt.engine import Engine


@dataclass(frozen=True)
class GlobalOptions:
    files: tuple[str, ...]
    project_name: str | None
    project_directory: str | None
    profiles: tuple[str, ...]
    env_files: tuple[str, ...]
    docker_host: str | None  # -H: the Docker daemon to talk to
    progress: ProgressMode

    def connect(self) -> Engine:
        from compose_ckpt.engine import Engine

        return Engine.connect(self.docker_host)

    def compose_project(self) -> ComposeProject:
        return self.start_compose_project().result()

    def start_compose_project(self) -> Future[ComposeProject]:
        """Resolve the compose project in the background: its files are read and checked now (a fault in them
        is raised now), and `docker compose config` runs in another process while this one goes on."""
        from compose_ckpt.compose import start_loading

        return start_loading(self._project_options())

    def _project_options(self) -> ProjectOptions:
        from compose_ckpt.compose import ProjectOptions

        return ProjectOptions(files=self.files, project_name=self.project_name,
                              project_directory=self.project_directory, profiles=self.profiles,
                              env_files=self.env_files)

    def project(self, loading: Future[ComposeProject] | None = None) -> Project:
        """The compose project (`loading`: as started by the caller, else started here), with its containers
        looked up on the selected engine.

        `docker compose config` (~40 ms) runs while this process loads the domain and the engine client and
        connects (as long again), so resolving through compose adds next to nothing; an invalid project is
        still reported before an unreachable engine."""
        loading = loading or self.start_compose_project()
        from compose_ckpt.domain.stack.project import Project

        try:
            engine, engine_error = self.connect(), None
        except CkptError as exc:
            engine, engine_error = None, exc
        compose = loading.result()
        if engine_error is not None:
            raise engine_error
        assert engine is not None
        return Project(compose, engine)

    def resolve_project_name(self) -> str:
        """-p when given (no compose files needed, e.g. after an import), else from the compose files."""
        if self.project_name:
            from compose_ckpt.domain.store.names import validate_name

            return validate_name(self.project_name, "project name")
        return str(self.compose_project().name)

    def compose_cli(self) -> ComposeCli:
        """`docker compose` for the project, with compose-ckpt's global flags, on the engine it talks to."""
        from compose_ckpt.compose.docker_compose import ComposeCli

        return ComposeCli(self._project_options(), os.environ, Path.cwd(), self.docker_host)

    @contextmanager
    def show_progress(self, title: str) -> Iterator[Display]:
        """The progress display on stderr while the domain works (see --progress), headed `title`; ended before
        the result prints."""
        from compose_ckpt.cli.progress import open_display

        display = open_display(self.progress.value, title)
        try:
            yield display
        except BaseException:
            display.close(ok=False)
            raise
        display.close(ok=True)


def open_store() -> SnapshotStore:
    """The snapshot store of this user (see domain/store/store.py for its place and layout)."""
    from compose_ckpt.domain.store.store import SnapshotStore, default_home

    return SnapshotStore(default_home())

"""`adopt` and `unadopt`: network holders as part of the compose model (see adoptfile.py for the file).

`adopt` writes the generated compose file beside the user's and registers it in the project's `.env`
(`COMPOSE_FILE`), then lets compose bring the containers to that form: the containers that would keep a
holder from binding their ports (the ones that own their namespace, and holders of the earlier
label-based form with the containers joined to them) are stopped (with their own stop timeout) and
removed, and `docker compose up -d` recreates them, a cold restart each. From then on plain `docker
compose` creates, keeps and removes the holders like any service. If compose fails, the files are put
back and compose brings the stack up as it was. `unadopt` is the reverse. Both are idempotent.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from compose_ckpt.compose import ProjectOptions
from compose_ckpt.compose.interpolation import parse_dotenv
from compose_ckpt.compose.loader import load_project
from compose_ckpt.const import LABEL_CONFIG_FILES, LABEL_HOLDER_FOR, LABEL_ONEOFF, LABEL_PROJECT, LABEL_SERVICE
from compose_ckpt.domain.ports import ComposePort
from compose_ckpt.domain.stack import adoptfile
from compose_ckpt.domain.stack.holders import NetworkForm, network_form, stale_join
from compose_ckpt.domain.stack.parallel import ProgressCallback
from compose_ckpt.domain.stack.project import Project
from compose_ckpt.engine import ContainerInfo
from compose_ckpt.engine.specs import joined_container
from compose_ckpt.errors import CkptError, ConflictError, NotFoundError, UsageError


@dataclass(frozen=True)
class FileChange:
    path: Path
    before: bytes | None  # None: not there
    after: bytes | None  # None: removed

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        before = (self.before or b"").decode("utf-8", "replace").splitlines(keepends=True)
        after = (self.after or b"").decode("utf-8", "replace").splitlines(keepends=True)
        return "".join(difflib.unified_diff(before, after, f"{self.path} (before)", f"{self.path} (after)"))


@dataclass(frozen=True)
class AdoptionPlan:
    project: str
    folder: Path
    user_files: tuple[Path, ...]
    files: tuple[FileChange, ...]  # the generated file, then .env
    holders: Mapping[str, str]  # service -> its holder service (empty when undoing)
    in_the_way: tuple[ContainerInfo, ...]  # removed before compose runs: joined ones first
    services: tuple[str, ...]  # what compose brings up afterwards (those that were running)

    @property
    def needed(self) -> bool:
        return any(change.changed for change in self.files) or bool(self.in_the_way)

    @property
    def holders_in_the_way(self) -> int:
        """How many of the containers in the way are network holders (removed, not recreated)."""
        return sum(1 for container in self.in_the_way if container.labels.get(LABEL_HOLDER_FOR))

    def compose_files(self, adopted: bool) -> list[Path]:
        return [*self.user_files, *([self.folder / adoptfile.GENERATED_FILE] if adopted else [])]


def plan_adoption(project: Project, compose: ComposePort, environ: Mapping[str, str],
                  env_files: Sequence[str] = ()) -> AdoptionPlan:
    """What `adopt` would change: the generated file and `.env` (written anew when the user's files changed),
    and the containers in the way of the holders."""
    folder, generated = _where(project, environ, env_files)
    user_files = tuple(path for path in project.compose.config_files if path != generated)
    existing = _read(generated)
    metadata = _metadata(generated, existing) if existing is not None else None
    services = compose.config(list(user_files), project.name, folder).get("services") or {}
    env_path = folder / ".env"
    env_before = _read(env_path)
    separator = _path_separator(env_before, environ)
    listed = separator.join(_relative(path, folder) for path in (*user_files, generated))
    env_after, change = adoptfile.with_setting(env_before, adoptfile.COMPOSE_FILE, listed)
    project_change = None
    if _name_in_folder(user_files, folder, environ) != project.name:  # it was given -p
        env_after, project_change = adoptfile.with_setting(env_after, adoptfile.COMPOSE_PROJECT_NAME, project.name)
    if metadata is not None:  # written by an earlier adopt: the original .env is what its record says
        change, project_change = metadata.env, metadata.project_env or project_change
    contents = [_read(path) or b"" for path in user_files]
    text = adoptfile.render(adoptfile.generated_services(services),
                            adoptfile.Metadata(change, adoptfile.inputs_digest(contents, env_before), project_change))
    after = text.encode()
    if existing is not None and adoptfile.body(existing.decode("utf-8", "replace")) == adoptfile.body(text):
        after = existing  # only the digest differs (a comment changed, say): nothing to regenerate
    holders = {name: adoptfile.holder_service(name) for name, config in services.items() if adoptfile.owns_namespace(config)}
    in_the_way = _in_the_way(project, set(holders))
    moved = [name for name, config in services.items() if name in holders or _joins(config, holders)]
    moved += [c.labels.get(LABEL_SERVICE, "") for c in in_the_way if stale_join(project.engine, c)]
    return AdoptionPlan(project.name, folder, user_files,
                        (FileChange(generated, existing, after), FileChange(env_path, env_before, env_after)),
                        holders, tuple(in_the_way), _running(project, list(dict.fromkeys(moved))))


def plan_undo(project: Project, environ: Mapping[str, str], env_files: Sequence[str] = ()) -> AdoptionPlan:
    """What `unadopt` would change: the generated file removed, `.env` as it was, the holders and the
    containers joined to them removed (compose then recreates the services in their own namespaces)."""
    folder, generated = _where(project, environ, env_files)
    existing = _read(generated)
    if existing is None:
        raise NotFoundError(f"project {project.name} is not adopted: there is no {generated}")
    metadata = _metadata(generated, existing)
    env_path = folder / ".env"
    env_before = _read(env_path)
    env_after = env_before
    if env_after is not None and metadata.project_env is not None:  # undone in the reverse order of adopt's
        env_after = adoptfile.without_setting(env_after, adoptfile.COMPOSE_PROJECT_NAME, metadata.project_env)
    if env_after is not None:
        env_after = adoptfile.without_setting(env_after, adoptfile.COMPOSE_FILE, metadata.env)
    holders = [c for c in project.engine.list_containers({LABEL_PROJECT: project.name}) if c.labels.get(LABEL_HOLDER_FOR)]
    holder_ids = {holder.id for holder in holders}
    joined = [c for c in project.engine.list_containers({LABEL_PROJECT: project.name})
              if joined_container(c.network_mode) in holder_ids]
    user_files = tuple(path for path in project.compose.config_files if path != generated)
    holder_services = {name: name for name in project.holder_services}
    moved = [name for name, config in project.compose.services.items()
             if _joins({"network_mode": config.network_mode}, holder_services)]
    return AdoptionPlan(project.name, folder, user_files,
                        (FileChange(generated, existing, None), FileChange(env_path, env_before, env_after)),
                        {}, (*joined, *holders), _running(project, moved))


def apply(plan: AdoptionPlan, project: Project, compose: ComposePort, *, adopted: bool,
          stop_timeout: int | None = None, progress: ProgressCallback = lambda name, phase: None) -> None:
    """Write the files, remove what is in the way, let compose bring the services up in the new form.
    On failure the files are put back and compose brings the stack up in its earlier form."""
    engine = project.engine
    if adopted and plan.holders:
        engine.ensure_holder_image()  # compose never pulls it (pull_policy: never)
    for change in plan.files:
        _write(change.path, change.after)
    try:
        for container in plan.in_the_way:
            progress(container.name, "removing (compose recreates it)")
            current = engine.inspect(container.id)
            if current is not None and (current.running or current.paused):
                engine.stop(current.id, stop_timeout)
            if current is not None:
                engine.remove(current.id)
        progress(plan.project, "docker compose up -d")
        compose.up(plan.compose_files(adopted), plan.project, plan.folder, plan.services)
    except CkptError as failure:
        for change in plan.files:
            _write(change.path, change.before)
        try:
            compose.up(plan.compose_files(not adopted), plan.project, plan.folder, plan.services)
        except CkptError as again:
            failure.details = [*failure.details, f"bringing the stack back as it was failed too: {again.message}"]
            failure.hint = "Run `docker compose up -d` in the project folder."
        else:
            failure.message += "; the files and the stack are back as they were"
        raise


def _where(project: Project, environ: Mapping[str, str], env_files: Sequence[str]) -> tuple[Path, Path]:
    if env_files:
        raise UsageError("adopt registers its file in the project's .env, which --env-file replaces",
                         hint="Run it without --env-file.")
    if environ.get("COMPOSE_FILE"):
        raise UsageError("COMPOSE_FILE is set in the environment, where it overrides the project's .env",
                         hint=f"Unset it, or add {adoptfile.GENERATED_FILE} to it yourself.")
    folder = project.compose.working_dir
    return folder, folder / adoptfile.GENERATED_FILE


def _name_in_folder(user_files: Sequence[Path], folder: Path, environ: Mapping[str, str]) -> str | None:
    """The project name `docker compose` gives the user's files in `folder` with no -p (COMPOSE_PROJECT_NAME,
    the files' `name:`, else the folder's name); None when compose-ckpt's own reading of the files fails where
    compose's did not (then adopt names the project, to be sure)."""
    try:
        return load_project(ProjectOptions(files=tuple(map(str, user_files)), environ=environ, cwd=folder)).name
    except CkptError:
        return None


def _metadata(path: Path, data: bytes) -> adoptfile.Metadata:
    metadata = adoptfile.read_metadata(data.decode("utf-8", "replace"))
    if metadata is None:
        raise ConflictError(f"{path} is in the way: it was not written by compose-ckpt adopt",
                            hint="Rename it; adopt writes its compose file under that name.")
    return metadata


def _in_the_way(project: Project, held: set[str]) -> list[ContainerInfo]:
    """The containers to remove before compose creates the holders: those of held services that own their
    namespace (they hold the ports), label-based holders with the containers joined to them (the earlier
    form of adoption, converted), and those running in a namespace no running container owns (a stale join,
    as after `docker compose up -d --force-recreate` of the holder alone): Docker could not restore them."""
    listed = project.engine.list_containers({LABEL_PROJECT: project.name})
    old_holders = [c for c in listed if c.labels.get(LABEL_HOLDER_FOR) and c.labels.get(LABEL_ONEOFF) == "True"]
    old_ids = {holder.id for holder in old_holders}
    joined = [c for c in listed if joined_container(c.network_mode) in old_ids]
    stale = [c for c in listed if c not in joined and stale_join(project.engine, c)]
    own = [c for service in held if service in project.compose.services for c in project.containers(service, listed)
           if network_form(c.attrs) is NetworkForm.OWN and _meant_to_run(c)]
    return [*joined, *stale, *own, *old_holders]


def _meant_to_run(container: ContainerInfo) -> bool:
    """Running, paused, or `created` by an `up` that failed half-way (a port taken, say): compose brings it up
    again in the new form. One that exited (a finished job, or stopped by the user) is left as it is, so that
    a service never loses its container: compose recreates it at the next `up`."""
    return container.running or container.paused or container.status == "created"


def _made_with(container: ContainerInfo, generated: Path) -> bool:
    """Whether compose read `generated` when it made `container` (its config_files label; by file name, as the
    folder may be spelled another way)."""
    files = container.labels.get(LABEL_CONFIG_FILES)
    return files is None or generated.name in {Path(path).name for path in files.split(",")}


def _joins(config: Mapping[str, object], holders: Mapping[str, str]) -> bool:
    """A service that joins (`network_mode: service:X`) one of `holders`' keys."""
    mode = str(config.get("network_mode") or "")
    return mode.startswith("service:") and mode.removeprefix("service:") in holders


def _running(project: Project, services: Sequence[str]) -> tuple[str, ...]:
    """Of `services`, those with a container meant to run: compose brings them up again in the new form (the
    others stay as they are until the user's next `docker compose up`)."""
    listed = project.engine.list_containers({LABEL_PROJECT: project.name})
    return tuple(name for name in services if name in project.compose.services
                 and any(_meant_to_run(c) for c in project.containers(name, listed)))


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write(path: Path, data: bytes | None) -> None:
    """Put `data` at `path` (None: remove it), keeping the mode of the file it replaces."""
    from compose_ckpt.domain.store.safefs import write_output_file

    if data is None:
        path.unlink(missing_ok=True)
        return
    try:
        mode = os.lstat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644  # compose files and .env as an editor makes them
    write_output_file(path, lambda handle: handle.write(data))
    os.chmod(path, mode)


def _path_separator(env: bytes | None, environ: Mapping[str, str]) -> str:
    """COMPOSE_PATH_SEPARATOR as compose reads it (the environment, then .env), else the OS's."""
    dotenv = parse_dotenv(env.decode("utf-8", "replace"), environ) if env else {}
    return environ.get("COMPOSE_PATH_SEPARATOR") or dotenv.get("COMPOSE_PATH_SEPARATOR") or os.pathsep


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def drift(project: Project, compose: Callable[[], ComposePort]) -> str | None:
    """What no longer matches in an adopted project, or None (also when it is not adopted): the generated
    file not among the files compose reads, containers compose made without it (`docker compose -f`), or the
    user's files changed so that it says something else (a port, a network, an alias, a new service).
    `compose` is called only when the inputs changed."""
    folder = project.compose.working_dir
    generated = folder / adoptfile.GENERATED_FILE
    existing = _read(generated)
    metadata = adoptfile.read_metadata(existing.decode("utf-8", "replace")) if existing is not None else None
    if existing is None or metadata is None:
        return None
    if generated not in project.compose.config_files:
        return (f"{generated.name} declares the network holders, but compose does not read it here (COMPOSE_FILE in "
                f"{folder / '.env'}, or -f): run `compose-ckpt adopt` in the project folder to register it again")
    bypassed = sorted(c.name for c in project.engine.list_containers({LABEL_PROJECT: project.name})
                      if _meant_to_run(c) and not _made_with(c, generated))
    if bypassed:
        return (f"{', '.join(bypassed)} {'was' if len(bypassed) == 1 else 'were'} made by `docker compose` without "
                f"{generated.name} (given -f?), so not joined to the network holders: run `docker compose up -d` in the "
                f"project folder without -f (COMPOSE_FILE in .env names your files and {generated.name}), or "
                "`compose-ckpt adopt`")
    read = dict(zip(project.compose.config_files, project.compose.file_contents))  # none when from labels
    user_files = [path for path in project.compose.config_files if path != generated]
    contents = [read[path] if path in read else _read(path) or b"" for path in user_files]
    if adoptfile.inputs_digest(contents, _read(folder / ".env")) == metadata.inputs:
        return None
    services = adoptfile.generated_services(compose().config(user_files, project.name, folder).get("services") or {})
    changed = adoptfile.changed_services(existing.decode("utf-8", "replace"), services)
    if not changed:
        return None
    return (f"the compose files changed since `compose-ckpt adopt` wrote {generated.name}, which no longer matches "
            f"them for {', '.join(changed)}: run `compose-ckpt adopt` to regenerate it")

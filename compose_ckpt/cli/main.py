"""`compose-ckpt`: options like `docker compose`, one command per operation.

Commands parse their options, call the domain, and print. Errors are caught
once, in `run`, and turned into a message and an exit code.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, NoReturn, TypeVar

import typer

from compose_ckpt import __version__
from compose_ckpt.const import DEFAULT_PARALLEL
from compose_ckpt.errors import CkptError, Declined, ExitCode, NotFoundError, UsageError
from compose_ckpt.output import (
    console,
    err_console,
    escape,
    human_size,
    parse_time,
    print_error,
    print_json,
    print_table,
    print_warnings,
    relative_time,
)

if TYPE_CHECKING:  # the domain and the engine client load lazily, per command, so that --help stays fast
    from concurrent.futures import Future

    from compose_ckpt.cli.progress import Display
    from compose_ckpt.compose import ComposeProject, ProjectOptions
    from compose_ckpt.compose.runner import ComposeCli
    from compose_ckpt.domain.host.reboot import Outcome
    from compose_ckpt.domain.ports import EnginePort
    from compose_ckpt.domain.requests import MigrateRequest
    from compose_ckpt.domain.stack.project import Project
    from compose_ckpt.domain.store.manifest import Manifest, TreeCopy
    from compose_ckpt.domain.store.store import SnapshotStore
    from compose_ckpt.engine import ContainerInfo, Engine
    from compose_ckpt.registry.client import RegistryClient

T = TypeVar("T")

app = typer.Typer(
    name="compose-ckpt",
    help="Checkpoint and restore whole Docker Compose stacks with CRIU.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class ProgressMode(str, Enum):
    AUTO = "auto"  # tty when stderr is a terminal, else plain
    TTY = "tty"  # one line per container, updated in place
    PLAIN = "plain"  # a line per phase (for logs and scripts that follow the work)
    QUIET = "quiet"  # nothing but errors


@dataclass(frozen=True)
class GlobalOptions:
    files: tuple[str, ...]
    project_name: str | None
    project_directory: str | None
    profiles: tuple[str, ...]
    env_files: tuple[str, ...]
    host: str | None
    progress: ProgressMode

    def connect(self) -> Engine:
        from compose_ckpt.engine import Engine

        return Engine.connect(self.host)


@dataclass
class _RunState:
    """What `run` needs once the command is over, set by the callback when the options are parsed."""

    verbose: bool = False


_run_state = _RunState()


def _version(value: bool) -> None:
    if value:
        print(f"compose-ckpt {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    file: Annotated[list[str] | None, typer.Option("--file", "-f", metavar="FILE", help="Compose file (repeatable, merged in order).")] = None,
    project_name: Annotated[str | None, typer.Option("--project-name", "-p", metavar="NAME", help="Project name (default: as docker compose derives it).")] = None,
    project_directory: Annotated[str | None, typer.Option("--project-directory", metavar="DIR", help="Project folder (default: the first compose file's folder).")] = None,
    profile: Annotated[list[str] | None, typer.Option("--profile", metavar="PROFILE", help="Enable a compose profile (repeatable).")] = None,
    env_file: Annotated[list[str] | None, typer.Option("--env-file", metavar="FILE", help="Environment file instead of .env (repeatable).")] = None,
    host: Annotated[str | None, typer.Option("--host", "-H", metavar="HOST", help="Docker daemon to use (default: DOCKER_HOST or the local socket).")] = None,
    progress: Annotated[ProgressMode, typer.Option("--progress", help="Progress on stderr: tty (lines updated in place), plain (a line per phase), quiet, or auto (tty on a terminal, else plain).")] = ProgressMode.AUTO,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show tracebacks of unexpected errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    _run_state.verbose = verbose
    ctx.obj = GlobalOptions(
        files=tuple(file or ()),
        project_name=project_name,
        project_directory=project_directory,
        profiles=tuple(profile or ()),
        env_files=tuple(env_file or ()),
        host=host,
        progress=progress,
    )


JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document (stable, see docs/cli.md).")]


def _checked_name(value: str | None) -> str | None:
    """Refuse a bad snapshot name while parsing, before anything connects to the engine or the store: every
    command's snapshot name goes through here (the domain's requests check again, for the sidecar)."""
    from compose_ckpt.domain.store.names import validate_name

    return validate_name(value) if value is not None else None


def _checked_names(values: list[str]) -> list[str]:
    """`rm`'s names, every one checked before the lock creates the project's folder."""
    from compose_ckpt.domain.store.names import validate_name

    return [validate_name(value) for value in values]


@app.command()
def doctor(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Check that this Docker engine can checkpoint and restore, and say how to fix what cannot."""
    from compose_ckpt.domain.host.doctor import run_checks
    from compose_ckpt.domain.store.store import default_home

    options: GlobalOptions = ctx.obj
    report = run_checks(options.connect, default_home(), lambda engine: _project_containers(options, engine),
                        lambda engine: _adoption_drift(options, engine))
    if as_json:
        print_json({"ok": report.can_checkpoint, "checks": [check.as_dict() for check in report.checks]})
    else:
        colours = {"ok": "green", "warn": "yellow", "fail": "red"}
        for check in report.checks:
            status = check.status.value
            console.print(f"[{colours[status]}]{status:>4}[/]  {check.name:<16} {escape(check.detail)}", soft_wrap=True)
            if check.remedy and status != "ok":
                console.print(f"{'':<22}-> {escape(check.remedy)}", soft_wrap=True)
        if report.can_checkpoint:
            console.print("checkpoint/restore can work with this engine")
    if not report.can_checkpoint:
        raise CkptError("checkpoint/restore cannot work with this engine", hint="Fix the checks marked fail.")


def _project_containers(options: GlobalOptions, engine: EnginePort) -> list[tuple[str, ContainerInfo]]:
    """The (service, container) pairs of the compose project here, for doctor; none without compose files."""
    from compose_ckpt.domain.stack.project import Project

    try:
        project = Project(_compose_project(options), engine)
        return [(entry.service, c) for entry in project.resolve(project.select([])) for c in entry.containers]
    except CkptError:
        return []


def _adoption_drift(options: GlobalOptions, engine: EnginePort) -> str | None:
    """What of the adoption of the project here no longer matches its compose files, for doctor; None without
    compose files."""
    from compose_ckpt.domain.stack.adopt import drift
    from compose_ckpt.domain.stack.project import Project

    try:
        return drift(Project(_compose_project(options), engine), lambda: _compose_cli(options))
    except CkptError:
        return None


def _store() -> SnapshotStore:
    from compose_ckpt.domain.store.store import SnapshotStore, default_home

    return SnapshotStore(default_home())


def _compose_project(options: GlobalOptions) -> ComposeProject:
    return _start_compose_project(options).result()


def _start_compose_project(options: GlobalOptions) -> Future[ComposeProject]:
    """Resolve the compose project in the background: its files are read and checked now (a fault in them is
    raised now), and `docker compose config` runs in another process while this one goes on."""
    from compose_ckpt.compose import start_loading

    return start_loading(_project_options(options))


def _project_options(options: GlobalOptions) -> ProjectOptions:
    from compose_ckpt.compose import ProjectOptions

    return ProjectOptions(files=options.files, project_name=options.project_name,
                          project_directory=options.project_directory, profiles=options.profiles,
                          env_files=options.env_files)


def _project(options: GlobalOptions, loading: Future[ComposeProject] | None = None) -> Project:
    """The compose project (`loading`: as started by the caller, else started here), with its containers
    looked up on the selected engine.

    `docker compose config` (~40 ms) runs while this process loads the domain and the engine client and
    connects (as long again), so resolving through compose adds next to nothing; an invalid project is still
    reported before an unreachable engine."""
    loading = loading or _start_compose_project(options)
    from compose_ckpt.domain.stack.project import Project

    try:
        engine, engine_error = options.connect(), None
    except CkptError as exc:
        engine, engine_error = None, exc
    compose = loading.result()
    if engine_error is not None:
        raise engine_error
    assert engine is not None
    return Project(compose, engine)


def _project_name(options: GlobalOptions) -> str:
    """-p when given (no compose files needed, e.g. after an import), else from the compose files."""
    if options.project_name:
        from compose_ckpt.domain.store.names import validate_name

        return validate_name(options.project_name, "project name")
    return str(_compose_project(options).name)


@contextmanager
def _progress(options: GlobalOptions, title: str) -> Iterator[Display]:
    """The progress display on stderr while the domain works (see --progress), headed `title`; ended before
    the result prints."""
    from compose_ckpt.cli.progress import open_display

    display = open_display(options.progress.value, title)
    try:
        yield display
    except BaseException:
        display.close(ok=False)
        raise
    display.close(ok=True)


def _summary(manifest: Manifest) -> dict[str, Any]:
    return {
        "name": manifest.name, "project": manifest.project, "created": manifest.created,
        "received": manifest.received, "imported_from": manifest.imported_from,
        "status": manifest.status.value, "stopped": manifest.stopped, "kind": manifest.kind,
        "services": manifest.services,
        "size": manifest.size, "error": manifest.error,
    }


def _details(manifest: Manifest) -> dict[str, Any]:
    return {
        **_summary(manifest),
        "skipped": manifest.skipped, "compose_files": manifest.compose_files, "compose_hash": manifest.compose_hash,
        "freeze_seconds": manifest.freeze_seconds, "total_seconds": manifest.total_seconds,
        "phases": manifest.phases, "engine": manifest.engine, "error": manifest.error,
        "containers": [
            {"service": r.service, "container": r.container_name, "container_id": r.container_id,
             "image": r.image, "image_id": r.image_id, "size": r.size, "dump_seconds": r.dump_seconds,
             "dump_path": r.dump_path or None, "dump_fallback": r.dump_fallback, "dump_rate": r.dump_rate,
             "layer": _tree_copy(r.layer), "restart_policy": r.restart_policy,
             "last_restore": vars(r.last_restore) if r.last_restore else None}
            for r in manifest.containers
        ],
        "with_volumes": manifest.has_volumes,
        "volumes": [{"name": v.name, "copy": _tree_copy(v.copy)} for v in manifest.volume_records],
        "binds": [vars(b) for b in manifest.binds],
    }


def _tree_copy(copy: TreeCopy | None) -> dict[str, Any] | None:
    """A layer or volume copy for --json: tree size, bytes stored (compressed), copy time inside the frozen
    window and, for a volume pre-copied while the stack ran, the entries read again while frozen."""
    return None if copy is None else {"size": copy.size, "stored": copy.stored, "seconds": copy.seconds,
                                      "reread": copy.reread}


Services = Annotated[list[str] | None, typer.Argument(metavar="SERVICE", help="Services to include (default: all active services).", show_default=False)]
Parallel = Annotated[int, typer.Option("--parallel", min=1, max=64, help="Containers worked on at once.")]


@app.command()
def snapshot(
    ctx: typer.Context,
    services: Services = None,
    name: Annotated[str | None, typer.Option("--name", callback=_checked_name, help="Snapshot name (default: the UTC time, sortable).")] = None,
    stop: Annotated[bool, typer.Option("--stop", help="Leave the stack stopped (for a reboot or a migration).")] = False,
    with_volumes: Annotated[bool, typer.Option("--with-volumes", help="Copy the named volumes the containers mount too: each one before the freeze, then only what changed since while frozen.")] = False,
    no_precopy: Annotated[bool, typer.Option("--no-precopy", help="With --with-volumes, copy each volume whole while frozen (no temporary copy of it in the store's folder before the freeze).")] = False,
    ignore_rootfs: Annotated[bool, typer.Option("--ignore-rootfs", help="Leave out the containers' writable-layer changes.")] = False,
    parallel: Parallel = DEFAULT_PARALLEL,
    as_json: JsonOption = False,
) -> None:
    """Checkpoint the stack as one consistent snapshot: freeze all, dump all, then resume (or stop)."""
    from compose_ckpt.domain.requests import SnapshotRequest
    from compose_ckpt.domain.stack.timing import Phases

    options: GlobalOptions = ctx.obj
    phases = Phases.since_process_start()
    request = SnapshotRequest(services=tuple(services or ()), name=name, stop=stop, parallel=parallel,
                              ignore_rootfs=ignore_rootfs, with_volumes=with_volumes,
                              precopy=not no_precopy)  # the name is checked here
    with phases.timed("resolve"):
        loading = _start_compose_project(options)
        from compose_ckpt.domain.stack.snapshot import take_snapshot, unhealthy_after_resume  # loads while compose runs

        project = _project(options, loading)
    with _progress(options, "snapshot") as progress:
        manifest = take_snapshot(project, _store(), request, progress=progress, phases=phases)
    from compose_ckpt.domain.stack.adopt import drift

    print_warnings([drifted] if (drifted := drift(project, lambda: _compose_cli(options))) else [])
    for service, reason in manifest.skipped.items():
        err_console.print(f"note: skipped {escape(service)} ({escape(reason)}): nothing running to checkpoint; "
                          "restore leaves it alone")
    for container, interval in unhealthy_after_resume(manifest):
        err_console.print(f"note: Docker shows {escape(container)} unhealthy until its next health probe, {interval:g} s "
                          "after the resume (it marks a paused container unhealthy; no API call resets that): a "
                          "service that waits for it to be healthy cannot start until then (see docs/limits.md)")
    if as_json:
        print_json(_details(manifest))
        return
    state = "stopped" if manifest.stopped else "running"
    console.print(
        f"snapshot [bold]{manifest.name}[/] of {manifest.project}: {len(manifest.containers)} containers, "
        f"{human_size(manifest.size)}, frozen {manifest.freeze_seconds:.2f}s, left {state}",
    )


@app.command()
def restore(
    ctx: typer.Context,
    snapshot: Annotated[str | None, typer.Argument(metavar="SNAPSHOT", callback=_checked_name, help="Snapshot (default: the latest complete one).", show_default=False)] = None,
    services: Services = None,
    force: Annotated[bool, typer.Option("--force", help="Kill running containers and restore over their state (checkpointed first, put back if the restore fails).")] = False,
    no_safety_checkpoint: Annotated[bool, typer.Option("--no-safety-checkpoint", help="With --force: do not checkpoint the running containers first; their current state is lost even if the restore fails.")] = False,
    ignore_volumes: Annotated[bool, typer.Option("--ignore-volumes", help="Keep the volumes' current content, even when the snapshot holds a copy.")] = False,
    allow_other_image: Annotated[bool, typer.Option("--allow-other-image", help="When the very image a container was checkpointed on is gone (or it runs another one now), restore onto the image its tag names now: old memory over new files.")] = False,
    parallel: Parallel = DEFAULT_PARALLEL,
    as_json: JsonOption = False,
) -> None:
    """Bring the stack back from a snapshot, dependencies first, recreating missing containers."""
    from compose_ckpt.domain.requests import RestoreRequest
    from compose_ckpt.domain.stack.timing import Phases

    options: GlobalOptions = ctx.obj
    phases = Phases.since_process_start()
    request = RestoreRequest(snapshot=snapshot, services=tuple(services or ()), force=force, parallel=parallel,
                             safety_checkpoint=not no_safety_checkpoint, ignore_volumes=ignore_volumes,
                             allow_other_image=allow_other_image)  # name checked
    with phases.timed("prepare"):
        project_name = _project_name(options)
        engine = options.connect()
        # The engine's facts, needed first thing, are read on a thread from connect on: the domain loads meanwhile.
        from compose_ckpt.domain.stack.restore import restore_snapshot
    with _progress(options, "restore") as progress:
        result = restore_snapshot(engine, project_name, _store(), request, progress=progress, phases=phases)
    for extra in result.not_in_snapshot:
        held = sum(record.service == extra.service for record in result.snapshot.containers)
        err_console.print(f"note: {escape(extra.container)} ({escape(extra.state)}) is not in snapshot "
                          f"{escape(result.snapshot.name)}, which holds {held} of {escape(extra.service)}'s containers "
                          f"(scaled up after it): left as it is, with its own state, not the snapshot's; "
                          f"`docker rm -f {escape(extra.container)}` if it should not run")
    if as_json:
        print_json({"snapshot": result.snapshot.name, "project": result.snapshot.project,
                    "phases": result.phases, "containers": [vars(c) for c in result.containers],
                    "warnings": result.warnings, "not_in_snapshot": [vars(c) for c in result.not_in_snapshot]})
        return
    print_warnings(result.warnings)
    print_table(["SERVICE", "CONTAINER", "RECREATED", "VERIFIED BY"],
                [(c.service, c.container, "yes" if c.recreated else "no", c.verified) for c in result.containers])
    console.print(f"restored {len(result.containers)} containers from snapshot {result.snapshot.name}")


@app.command()
def ps(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the project as resolved: services, containers, their network form, whether a snapshot would take them."""
    from compose_ckpt.domain.stack.adopt import drift
    from compose_ckpt.domain.stack.held_policies import still_held
    from compose_ckpt.domain.stack.holders import abandoned_holders, network_form, stale_join

    options: GlobalOptions = ctx.obj
    project = _project(options)
    version = project.engine.info().server_version
    held = still_held(project.engine, _store(), project.name)
    rows: list[dict[str, Any]] = []
    stale: list[str] = []
    for entry in project.resolve(project.select([])):
        for c in entry.containers:
            form = network_form(c.attrs)
            restorable = form.restorable_on(version)
            network = form.value
            if reason := stale_join(project.engine, c):
                network, restorable = "stale join", False
                stale.append(reason)
            rows.append({"service": entry.service, "container": c.name, "state": c.status,
                         "snapshot": c.running and restorable, "network": network, "restorable": restorable,
                         "held_policy": held[c.id].policy.as_text() if c.id in held else None})
    missing = [name for name in project.select([]) if not any(row["service"] == name for row in rows)]
    rows += [{"service": name, "container": None, "state": "missing", "snapshot": False, "network": None,
              "restorable": False, "held_policy": None} for name in missing]
    abandoned = [holder.name for holder in abandoned_holders(project.engine, project.name)]
    drifted = drift(project, lambda: _compose_cli(options))
    if as_json:
        print_json({"project": project.name, "containers": rows, "abandoned_holders": abandoned, "drift": drifted})
        return
    console.print(f"project {project.name}")
    print_table(["SERVICE", "CONTAINER", "STATE", "NETWORK", "SNAPSHOT"],
                [(r["service"], r["container"] or "-",
                  r["state"] + (f" (restart policy {r['held_policy']} held back)" if r["held_policy"] else ""),
                  "-" if r["network"] is None else r["network"] + ("" if r["restorable"] else f" (needs adopt on Docker {version})"),
                  "yes" if r["snapshot"] else "no") for r in rows], names=2)
    if abandoned:
        print_warnings([f"network holders that no container joins (a plain `docker compose down` leaves them): "
                        f"{', '.join(abandoned)}. They keep the published ports, the service names and the network: "
                        "`docker compose down --remove-orphans` removes them, `compose-ckpt restore` reuses them, "
                        "`compose-ckpt adopt` replaces them"])
    print_warnings([*([drifted] if drifted else []),
                    *(f"{reason}: recreate it with `docker compose up -d --force-recreate` of its service" for reason in stale)])


@app.command()
def config(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the project as resolved (by docker compose where installed): services, images, dependencies. No engine needed."""
    document = _compose_project(ctx.obj).as_dict()
    if as_json:
        print_json(document)
        return
    console.print(f"project {document['name']}")
    print_table(["SERVICE", "IMAGE", "CONTAINER NAME", "DEPENDS ON", "NETWORK MODE", "REPLICAS"], [
        (name, s["image"] or "-", s["container_name"] or "-",
         ", ".join(s["depends_on"]) or "-",
         s["network_mode"] or "-", s["replicas"])
        for name, s in document["services"].items()
    ])


@app.command()
def adopt(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before changing the files and restarting containers.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change, change nothing.")] = False,
    undo: Annotated[bool, typer.Option("--undo", help="Return the project to its form before adopt (as `unadopt`).")] = False,
    timeout: Annotated[int | None, typer.Option("--timeout", "-t", min=0, help="Seconds to wait for each container to stop before killing it (default: its own stop timeout).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Declare a network holder per service in a compose file of the project, the form Docker 28 and 29 can
    restore, registered in the project's .env so that plain `docker compose` keeps it (one cold restart each)."""
    _adoption(ctx.obj, undo=undo, yes=yes, dry_run=dry_run, timeout=timeout, as_json=as_json)


@app.command()
def unadopt(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before changing the files and restarting containers.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change, change nothing.")] = False,
    timeout: Annotated[int | None, typer.Option("--timeout", "-t", min=0, help="Seconds to wait for each container to stop before killing it (default: its own stop timeout).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Undo `adopt`: remove its compose file, restore .env, let compose recreate the services without holders."""
    _adoption(ctx.obj, undo=True, yes=yes, dry_run=dry_run, timeout=timeout, as_json=as_json)


def _compose_cli(options: GlobalOptions) -> ComposeCli:
    """`docker compose` for the project, with compose-ckpt's global flags, on the engine it talks to."""
    from compose_ckpt.compose.runner import ComposeCli

    return ComposeCli(_project_options(options), os.environ, Path.cwd(), options.host)


def _adoption(options: GlobalOptions, *, undo: bool, yes: bool, dry_run: bool, timeout: int | None, as_json: bool) -> None:
    from compose_ckpt.domain.stack.adopt import apply, plan_adoption, plan_undo

    project = _project(options)
    compose = _compose_cli(options)
    with _store().locked(project.name):
        plan = (plan_undo(project, os.environ, options.env_files) if undo
                else plan_adoption(project, compose, os.environ, options.env_files))
        document = {"project": project.name, "adopted": not undo, "changed": plan.needed, "dry_run": dry_run,
                    "files": [str(change.path) for change in plan.files if change.changed],
                    "holders": dict(plan.holders), "recreated": [c.name for c in plan.in_the_way],
                    "services": list(plan.services)}
        if not as_json:
            for change in plan.files:
                if change.changed:
                    console.print(change.diff(), markup=False, end="")
        if not plan.needed or dry_run:
            if as_json:
                print_json(document)
            else:
                console.print("nothing to change" if not plan.needed else "dry run: nothing was changed")
            return
        if not yes:
            recreated = ", ".join(c.name for c in plan.in_the_way) or "none"
            question = (f"{'unadopt' if undo else 'adopt'} changes the files above, then `docker compose up -d` recreates "
                        f"the services in that form; these containers restart from a cold start (their in-memory state "
                        f"is lost): {recreated}. Go on?")
            if not sys.stdin.isatty():
                raise UsageError(question.replace(" Go on?", ""), hint="Pass --yes to confirm, --dry-run to only look.")
            if not typer.confirm(question):
                raise Declined()
        with _progress(options, "unadopt" if undo else "adopt") as progress:
            apply(plan, project, compose, adopted=not undo, stop_timeout=timeout, progress=progress)
    if as_json:
        print_json(document)
        return
    verb = "unadopted" if undo else "adopted"
    console.print(f"{verb} project {project.name}: {len(plan.holders)} network holders, "
                  f"{len(plan.in_the_way)} containers recreated by docker compose")


@app.command("ls")
def list_snapshots(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List this project's snapshots, oldest first."""
    store = _store()
    project_name = _project_name(ctx.obj)
    manifests = store.list(project_name)
    if as_json:
        print_json([_summary(m) for m in manifests])
        return
    now = datetime.now(UTC)
    print_table(["NAME", "CREATED", "AGE", "STATUS", "KIND", "SERVICES", "SIZE"],
                [(m.name, _to_seconds(m.created), _age(m.created, now), m.status.value, _KIND_TEXT[m.kind],
                  ",".join(m.services), human_size(m.size)) for m in manifests],
                drop=["SERVICES", "CREATED", "KIND"])
    for invalid in (m for m in manifests if m.status.value == "invalid"):
        err_console.print(f"[yellow]invalid:[/] {escape(invalid.name)}: {escape(invalid.error or '')}; "
                          "it is never restored; `compose-ckpt rm` or `prune` removes it")
    if any(m.status.value == "incomplete" for m in manifests):
        err_console.print("[yellow]hint:[/] an incomplete snapshot is being taken now or its command was killed; "
                          "if killed, `compose-ckpt recover` puts its containers back (snapshot and restore do it too)")


def _to_seconds(created: str) -> str:
    """A manifest's time without its milliseconds (`2026-12-06T22:40:01Z`), for tables."""
    moment = parse_time(created)
    return created if moment is None else moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _age(created: str, now: datetime) -> str:
    moment = parse_time(created)
    return "-" if moment is None else relative_time(moment, now)


_KIND_TEXT = {"clean-stop": "clean stop", "live": "live"}
_KIND_MEANING = {
    "clean-stop": "the stack was stopped at this checkpoint, so nothing on disk is newer than its memory: "
                  "safe to restore after a reboot, as long as nothing started the stack since",
    "live": "the stack ran on after this checkpoint, so its volumes may hold newer data than its memory: "
            "restoring it after a reboot rolls memory back over them",
}


@app.command()
def inspect(ctx: typer.Context, snapshot: Annotated[str, typer.Argument(metavar="SNAPSHOT", callback=_checked_name, help="Snapshot name.")], as_json: JsonOption = False) -> None:
    """Show one snapshot: per container its image, checkpoint size and dump time."""
    manifest = _store().load(_project_name(ctx.obj), snapshot)
    document = _details(manifest)
    if as_json:
        print_json(document)
        return
    console.print(
        f"snapshot {manifest.name} of {manifest.project}, {manifest.status.value}, created {manifest.created} "
        f"({_age(manifest.created, datetime.now(UTC))}), "
        f"frozen {manifest.freeze_seconds:.2f}s, total {manifest.total_seconds:.2f}s",
    )
    console.print(f"{_KIND_TEXT[manifest.kind]}: {_KIND_MEANING[manifest.kind]}")
    if manifest.phases:
        console.print("phases: " + ", ".join(f"{phase} {seconds:.2f}s" for phase, seconds in manifest.phases.items()))
    if manifest.error:
        console.print(f"error: {escape(manifest.error)}")
    print_table(["SERVICE", "CONTAINER", "IMAGE", "SIZE", "DUMP", "DUMPED BY", "LAYER"],
                [(c["service"], c["container"], c["image"], human_size(c["size"]), _dump_text(c),
                  _DUMP_PATH_TEXT.get(c["dump_path"], "not recorded"),
                  _copy_text(c["layer"]) if c["layer"] else "not copied") for c in document["containers"]],
                names=3, drop=["IMAGE", "DUMPED BY", "DUMP"])
    for c in document["containers"]:
        if c["dump_fallback"]:
            console.print(f"{escape(c['container'])}: dumped through the Docker API because {escape(c['dump_fallback'])}")
    restores = [c for c in document["containers"] if c["last_restore"]]
    if restores:
        print_table(["CONTAINER", "LAST RESTORE", "PAGES", "PLACED", "RESTORE"],
                    [(c["container"], _to_seconds(c["last_restore"]["at"]), _pages_text(c["last_restore"]),
                      f"{c['last_restore']['place_seconds']:.2f}s", f"{c['last_restore']['restore_seconds']:.2f}s")
                     for c in restores], drop=["PLACED"])
    if document["volumes"]:
        print_table(["VOLUME", "COPY"], [(v["name"], _copy_text(v["copy"]) if v["copy"] else "not copied (no --with-volumes)")
                                         for v in document["volumes"]])
    if document["binds"]:
        print_table(["BIND MOUNT (not copied)", "CONTAINER", "PATH"],
                    [(b["source"], b["container"], b["destination"] + (" (ro)" if b["read_only"] else ""))
                     for b in document["binds"]], names=2)


def _pages_text(restored: dict[str, Any]) -> str:
    """How the page images reached CRIU, with the placing rate when they went into the container's root."""
    if restored["pages"] != "container-root":
        return "through containerd"
    rate = restored["page_bytes"] / max(restored["place_seconds"], 1e-3)
    return f"in container root, {human_size(restored['page_bytes'])} at {human_size(int(rate))}/s"


# Every dump is a full one, taken while the stack is frozen: no pre-copy (see docs/checkpoint-paths.md).
_DUMP_PATH_TEXT = {"runtime": "runtime, full", "engine-api": "Docker API, full"}


def _dump_text(container: dict[str, Any]) -> str:
    """Dump time, and its rate into the store when the dump wrote there itself."""
    rate = f" ({human_size(int(container['dump_rate']))}/s)" if container["dump_rate"] else ""
    return f"{container['dump_seconds']:.2f}s{rate}"


def _copy_text(copy: dict[str, Any]) -> str:
    text = f"{human_size(copy['size'])} ({human_size(copy['stored'])} stored) in {copy['seconds']:.2f}s"
    if copy.get("reread") is not None:
        text += f" frozen (pre-copied, {copy['reread']} entries read again)"
    return text


@app.command()
def recover(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Put back the containers a killed snapshot left frozen or stopped (and mark it failed), or a failed restore --force killed.

    snapshot and restore do this first on their own; this runs it alone."""
    from compose_ckpt.domain.stack.recovery import recover_project

    options: GlobalOptions = ctx.obj
    with _progress(options, "recover") as progress:
        actions = recover_project(options.connect(), _project_name(options), _store(), progress=progress)
    if as_json:
        print_json({"actions": actions})
        return
    for action in actions:
        console.print(action)
    console.print("nothing to recover" if not actions else "every container is running with its state")


@app.command()
def rm(ctx: typer.Context, snapshots: Annotated[list[str], typer.Argument(metavar="SNAPSHOT", callback=_checked_names, help="Snapshot names.")],
       as_json: JsonOption = False) -> None:
    """Remove snapshots and their checkpoint files."""
    store = _store()
    project_name = _project_name(ctx.obj)
    with store.locked(project_name):
        for name in snapshots:
            store.remove(project_name, name)
            if not as_json:
                console.print(f"removed {name}")
    if as_json:
        print_json({"removed": snapshots})


@app.command()
def prune(
    ctx: typer.Context,
    keep: Annotated[int, typer.Option("--keep", min=0, help="Complete snapshots to keep, newest first.")],
    older_than: Annotated[str | None, typer.Option("--older-than", metavar="DURATION", help="Only remove snapshots older than this (e.g. 7d, 12h).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Remove all but the newest complete snapshots, and every failed or incomplete one."""
    from datetime import UTC, datetime

    from compose_ckpt.domain.store.retention import imported_deciding, parse_duration, to_prune

    store = _store()
    project_name = _project_name(ctx.obj)
    age = parse_duration(older_than) if older_than else None
    with store.locked(project_name):
        manifests = store.list(project_name)
        doomed = to_prune(manifests, keep, age, datetime.now(UTC))
        deciding = imported_deciding(manifests, doomed)
        for manifest in doomed:
            store.remove(project_name, manifest.name)
    leftovers = store.staging_leftovers(remove=True)  # of any project: what killed imports and pulls left
    if as_json:
        print_json({"removed": [m.name for m in doomed], "removed_leftovers": [vars(f) for f in leftovers],
                    "kept_imported": [{"name": m.name, "received": m.received, "imported_from": m.imported_from}
                                      for m in deciding]})
        return
    print_warnings([f"kept {m.name}, imported from {m.imported_from} at {m.received}: it counts among the newest "
                    "(by when it entered this store), so snapshots taken here were removed in its place"
                    for m in deciding])
    for leftover in leftovers:
        console.print(f"removed {leftover.path} ({human_size(leftover.size)}), left by a killed "
                      + ("pull (the next pull of that artifact downloads it again)" if leftover.resumable
                         else "import or pull"))
    console.print(f"removed {len(doomed)} snapshots" + (f": {', '.join(m.name for m in doomed)}" if doomed else ""))


@app.command()
def export(
    ctx: typer.Context,
    snapshot: Annotated[str, typer.Argument(metavar="SNAPSHOT", callback=_checked_name, help="Snapshot to export.")],
    output: Annotated[str, typer.Option("--output", "-o", metavar="FILE", help="Archive to write (zstd-compressed tar), or - for stdout.")],
    with_images: Annotated[bool, typer.Option("--with-images", help="Include the images (docker save), so the target needs no registry.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Write a snapshot into one archive: manifest, checkpoints, compose files, a sha256 for every member."""
    from compose_ckpt.domain.transport.transfer import export_snapshot

    options: GlobalOptions = ctx.obj
    project_name = _project_name(options)
    engine = options.connect() if with_images else None
    if output == "-" and sys.stdout.isatty():
        raise UsageError("refusing to write an archive to a terminal", hint="Redirect stdout, or use -o FILE.")
    with _progress(options, "export") as progress:
        if output == "-":
            result = export_snapshot(_store(), project_name, snapshot, sys.stdout.buffer, images_from=engine, progress=progress)
        else:
            result = _export_to_file(Path(output), lambda out: export_snapshot(
                _store(), project_name, snapshot, out, images_from=engine, progress=progress))
    summary = {"snapshot": snapshot, "project": project_name, "output": output, "bytes": result.bytes_in, "images": result.images}
    if as_json and output != "-":
        print_json(summary)
    elif output != "-":
        console.print(f"exported {snapshot} of {project_name} to {output} ({human_size(result.bytes_in)} before compression"
                      + (f", images: {', '.join(result.images)})" if result.images else ")"))


def _export_to_file(path: Path, write: Callable[[BinaryIO], T]) -> T:
    """A private temporary file renamed into place: no planted link is followed, no partial archive is left."""
    from compose_ckpt.domain.store.safefs import write_output_file

    try:
        return write_output_file(path, write)
    except OSError as exc:  # -o names a missing folder, a folder, or a place we may not write
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


TrustHostAccessOption = Annotated[bool, typer.Option("--trust-host-access", help="Accept what the snapshot's recorded configuration reaches of this host (bind mounts, privileges, host namespaces, published ports...) without being asked. Without it the list is shown and asked about on a terminal, refused otherwise.")]


def _host_access_consent(trust: bool, display: Display) -> Callable[[list[str]], bool]:
    """import and pull: accept the host-access findings with --trust-host-access, else ask on a terminal
    (the progress display ends first: a question under a display redrawn in place could not be read)."""
    def consent(findings: list[str]) -> bool:
        if trust:
            return True
        if not sys.stdin.isatty():
            return False  # the domain refuses, listing them
        display.close(ok=True)
        err_console.print("[bold]The snapshot's recorded configuration reaches outside its containers:[/]")
        for finding in findings:
            err_console.print(f"  {finding}", markup=False, soft_wrap=True)
        if not typer.confirm("Store it and create its containers with this access to the host?", default=False,
                             err=True):
            raise Declined()
        return True
    return consent


def _print_host_access(findings: list[str]) -> None:
    print_warnings([f"host access accepted: {finding}" for finding in findings])


@app.command("import")
def import_(
    ctx: typer.Context,
    archive: Annotated[str, typer.Argument(metavar="FILE", help="Archive made by export, or - for stdin.")],
    name: Annotated[str | None, typer.Option("--name", callback=_checked_name, help="Import the snapshot under another name.")] = None,
    trust_host_access: TrustHostAccessOption = False,
    as_json: JsonOption = False,
) -> None:
    """Verify an archive, then load its images, store its snapshot and create its containers on this engine."""
    from compose_ckpt.domain.stack.parallel import bytes_reporter
    from compose_ckpt.domain.transport.transfer import import_snapshot

    options: GlobalOptions = ctx.obj
    engine = options.connect()
    expected = options.project_name
    try:
        source = sys.stdin.buffer if archive == "-" else open(archive, "rb")
    except OSError as exc:
        raise NotFoundError(f"cannot open {archive}: {exc.strerror}") from None
    origin = "an archive on stdin" if archive == "-" else f"archive {Path(archive).resolve()}"
    with source, _progress(options, "import") as progress:
        read = bytes_reporter(progress, "archive" if archive == "-" else Path(archive).name, "reading", _file_size(source))
        result = import_snapshot(_store(), engine, source, rename=name, expected_project=expected, progress=progress,
                                 byte_progress=read, consent=_host_access_consent(trust_host_access, progress),
                                 origin=origin)
    manifest = result.manifest
    if as_json:
        print_json({"snapshot": manifest.name, "project": manifest.project, "warnings": result.warnings,
                    "host_access": result.host_access, "loaded_images": result.loaded_images,
                    "created_containers": result.created_containers})
        return
    print_warnings(result.warnings)
    _print_host_access(result.host_access)
    console.print(f"imported snapshot {manifest.name} of project {manifest.project}: "
                  f"{len(result.created_containers)} containers created, {len(result.loaded_images)} images loaded; "
                  f"restore it with `compose-ckpt -p {manifest.project} restore {manifest.name}`")


def _file_size(source: BinaryIO) -> int | None:
    """The size of a regular file (for progress); None for a pipe."""
    import os
    import stat

    info = os.fstat(source.fileno())
    return info.st_size if stat.S_ISREG(info.st_mode) else None


InsecureOption = Annotated[bool, typer.Option("--insecure", help="Allow plain HTTP to this registry (it has no TLS). Loopback registries are allowed without it.")]


def _registry_client(reference: str, insecure: bool) -> RegistryClient:
    from compose_ckpt.registry.client import RegistryClient
    from compose_ckpt.registry.reference import parse_reference

    return RegistryClient(parse_reference(reference), insecure=insecure)


@app.command()
def migrate(
    ctx: typer.Context,
    to: Annotated[str | None, typer.Option("--to", metavar="HOST", help="Target engine: a Docker host URL (unix://, tcp://, ssh://) or a context name.")] = None,
    via: Annotated[str | None, typer.Option("--via", metavar="REF", help="Instead of --to: push to this registry reference and leave the source stopped; the target pulls and restores.")] = None,
    snapshot: Annotated[str | None, typer.Argument(metavar="SNAPSHOT", callback=_checked_name, help="Snapshot to move (default: take one now, with --stop).", show_default=False)] = None,
    keep_source: Annotated[bool, typer.Option("--keep-source", help="Keep the source containers, stopped, instead of removing them.")] = False,
    insecure: InsecureOption = False,
    ignore_volumes: Annotated[bool, typer.Option("--ignore-volumes", help="Do not copy the named volumes (the target already shares their storage).")] = False,
    live: Annotated[bool, typer.Option("--live", help="With --to: copy the images and volumes while the stack runs, then stop it only for the dump, the volume changes and the restore (see docs/live.md).")] = False,
    parallel: Parallel = DEFAULT_PARALLEL,
    as_json: JsonOption = False,
) -> None:
    """Move the stack to another Docker engine; the source is removed only once the target runs restored."""
    from compose_ckpt.domain.requests import MigrateRequest
    from compose_ckpt.domain.transport.migrate import migrate as migrate_stack
    from compose_ckpt.engine import Engine

    request = MigrateRequest(snapshot=snapshot, keep_source=keep_source, parallel=parallel, ignore_volumes=ignore_volumes)
    if (to is None) == (via is None):
        raise UsageError("give exactly one of --to HOST (direct) and --via REF (through a registry)")
    options: GlobalOptions = ctx.obj
    if via is not None:
        if live:
            raise UsageError("--live moves the stack to an engine reached from here: use it with --to, not --via")
        _migrate_via(options, via, insecure, request, as_json)
        return
    assert to is not None
    project = _project(options)
    target = Engine.connect(to)
    if live:
        _migrate_live(options, project, target, request, as_json)
        return
    with _progress(options, "migrate") as progress:
        result = migrate_stack(project, _store(), target, request, progress=progress)
    if as_json:
        print_json({"snapshot": result.snapshot.name, "project": result.snapshot.project, "target": target.base_url,
                    "seconds": result.seconds, "warnings": result.warnings, "source_removed": result.source_removed,
                    "containers": [vars(c) for c in result.restored]})
        return
    print_warnings(result.warnings)
    print_table(["SERVICE", "CONTAINER", "VERIFIED BY"], [(c.service, c.container, c.verified) for c in result.restored])
    timing = ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in result.seconds.items())
    source = "removed from" if result.source_removed else "kept stopped on"
    console.print(f"migrated {result.snapshot.project} to {to} ({timing}); {source} the source")


def _migrate_live(options: GlobalOptions, project: Project, target: Engine, request: MigrateRequest,
                  as_json: bool) -> None:
    from compose_ckpt.domain.transport.live_migrate import migrate_live

    with _progress(options, "migrate --live") as progress:
        result = migrate_live(project, _store(), target, request, progress=progress)
    if as_json:
        print_json({"snapshot": result.snapshot.name, "project": result.snapshot.project, "target": target.base_url,
                    "live": True, "downtime_seconds": result.downtime, "bytes_before_downtime": result.bytes_before,
                    "bytes_during_downtime": result.bytes_during, "volume_entries_during_downtime": result.volume_entries,
                    "memory_precopy": result.memory_precopy, "seconds": result.seconds, "warnings": result.warnings,
                    "source_removed": result.source_removed, "containers": [vars(c) for c in result.restored]})
        return
    print_warnings(result.warnings)
    print_table(["SERVICE", "CONTAINER", "VERIFIED BY"], [(c.service, c.container, c.verified) for c in result.restored])
    timing = ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in result.seconds.items())
    source = "removed from" if result.source_removed else "kept stopped on"
    console.print(f"migrated {result.snapshot.project} to {target.base_url} live: downtime {result.downtime:.2f}s; "
                  f"sent {human_size(result.bytes_before)} before it, {human_size(result.bytes_during)} during it "
                  f"({timing}); memory pre-copy {result.memory_precopy}; {source} the source")


host_app = typer.Typer(help="Survive reboots without a cold start: a hook that snapshots stacks before Docker stops "
                            "and restores them when it is back.", no_args_is_help=True)
app.add_typer(host_app, name="host")
Projects = Annotated[list[str], typer.Option("--project", metavar="NAME", help="A compose project (repeatable).")]


def _print_outcomes(outcomes: list[Outcome], as_json: bool) -> None:
    if as_json:
        print_json({"projects": [vars(o) for o in outcomes]})
    else:
        for outcome in outcomes:
            console.print(f"{outcome.project}: {outcome.action}: {escape(outcome.detail)}", soft_wrap=True)
    failed = [o.project for o in outcomes if o.failed]
    if failed:
        raise CkptError(f"failed for {', '.join(failed)}", hint="Each project's line above says why.")


@host_app.command("shutdown")
def host_shutdown(ctx: typer.Context, project_names: Projects, as_json: JsonOption = False) -> None:
    """Snapshot each running project with --stop (what the hook runs before Docker stops)."""
    from compose_ckpt.domain.host.reboot import shutdown

    options: GlobalOptions = ctx.obj
    _print_outcomes(shutdown(options.connect(), project_names, _store()), as_json)


@host_app.command("boot")
def host_boot(ctx: typer.Context, project_names: Projects, as_json: JsonOption = False) -> None:
    """Restore each project from its latest snapshot if that is a clean stop nothing ran after (what the hook
    runs once Docker is back); leave the others to Docker, saying why."""
    from compose_ckpt.domain.host.reboot import boot

    options: GlobalOptions = ctx.obj
    _print_outcomes(boot(options.connect(), project_names, _store()), as_json)


@host_app.command("install")
def host_install(
    project_names: Projects,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the files and the runc.conf change; write nothing.")] = False,
    init: Annotated[str, typer.Option("--init", metavar="auto|systemd|script", help="Hook kind: a systemd unit, or an init script for hosts without systemd.")] = "auto",
    tcp_established: Annotated[bool | None, typer.Option("--tcp-established/--no-tcp-established", help="Add `tcp-established` to /etc/criu/runc.conf (default: ask).", show_default=False)] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Answer yes to the question about runc.conf.")] = False,
    root: Annotated[Path, typer.Option("--root", metavar="DIR", help="Install under DIR instead of / (for images and tests).")] = Path("/"),
) -> None:
    """Install the reboot hook for these projects (systemd unit ordered against docker.service, or an init script)."""
    from compose_ckpt.domain.host import hostsetup

    try:
        kind = hostsetup.InitSystem(init)
    except ValueError:
        raise UsageError(f"--init must be auto, systemd or script, not {init!r}") from None
    executable = _installed_executable()
    wanted = tcp_established is not False
    plan = hostsetup.plan_install(root, executable, project_names, kind, wanted)
    for item in plan.files:
        console.print(f"--- {item.path} (mode {item.mode:o})")
        console.print(escape(item.text), soft_wrap=True, end="")
    if plan.runc_conf is not None:
        console.print(f"--- change to {plan.runc_conf.path}: lets CRIU checkpoint services connected to each other")
        console.print(escape(plan.runc_diff), soft_wrap=True, end="")
    elif wanted:
        console.print("runc.conf already has tcp-established")
    if dry_run:
        console.print("dry run: nothing written")
        return
    if plan.runc_conf is not None and tcp_established is None and not yes:
        if not sys.stdin.isatty():
            raise UsageError("not changing runc.conf without asking",
                             hint="Pass --tcp-established (or --yes) to add it, or --no-tcp-established to leave it.")
        if not typer.confirm(f"Add tcp-established to {plan.runc_conf.path}?", default=False):
            plan = hostsetup.plan_install(root, executable, project_names, kind, tcp_established=False)
    for line in hostsetup.install(plan):
        console.print(line)
    if plan.init is hostsetup.InitSystem.SYSTEMD:
        problems = hostsetup.verify_unit(plan.files[0].path)
        if problems:
            err_console.print(f"[yellow]warning:[/] systemd-analyze verify: {escape(problems)}")


@host_app.command("uninstall")
def host_uninstall(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be removed.")] = False,
    root: Annotated[Path, typer.Option("--root", metavar="DIR", help="Uninstall under DIR instead of /.")] = Path("/"),
) -> None:
    """Remove the reboot hook (without taking snapshots). runc.conf is left as it is."""
    from compose_ckpt.domain.host import hostsetup

    for line in hostsetup.uninstall(root, dry_run):
        console.print(line)


def _installed_executable() -> Path:
    """The compose-ckpt command next to this Python (a venv or pip install), else the one on PATH."""
    beside = Path(sys.executable).parent / "compose-ckpt"
    if beside.exists():
        return beside
    import shutil

    found = shutil.which("compose-ckpt")
    if found is None:
        raise UsageError("cannot find the compose-ckpt command to run from the hook", hint="Install it with pip first.")
    return Path(found).resolve()


def _migrate_via(options: GlobalOptions, via: str, insecure: bool, request: MigrateRequest, as_json: bool) -> None:
    from compose_ckpt.domain.transport.migrate import migrate_via_registry

    project = _project(options)
    with _registry_client(via, insecure) as client:
        if client.reference.digest:
            raise UsageError(f"cannot push to a digest ({via})", hint="Give a tag, or none (the snapshot name).")
        with _progress(options, "migrate") as progress:
            result = migrate_via_registry(project, _store(), client, request, progress=progress)
        pushed, manifest = result.pushed, result.snapshot
        pull_reference = str(client.reference.with_digest(pushed.digest))
    if as_json:
        print_json({"snapshot": manifest.name, "project": manifest.project, "via": pushed.reference,
                    "digest": pushed.digest, "pull": pull_reference, "seconds": result.seconds,
                    "uploaded_bytes": pushed.uploaded_bytes, "source_removed": False})
        return
    timing = ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in result.seconds.items())
    console.print(f"pushed {manifest.project} snapshot {manifest.name} to {pushed.reference} ({timing}); the stack is "
                  f"kept stopped on the source. On the target run:\n"
                  f"  compose-ckpt pull {pull_reference}\n  compose-ckpt -p {manifest.project} restore {manifest.name}")


@app.command()
def push(
    ctx: typer.Context,
    snapshot: Annotated[str, typer.Argument(metavar="SNAPSHOT", callback=_checked_name, help="Snapshot to push.")],
    reference: Annotated[str, typer.Argument(metavar="REF", help="registry[:port]/repository[:tag]; without a tag, the snapshot's name is the tag.")],
    with_images: Annotated[bool, typer.Option("--with-images", help="Include the images (docker save), for targets that cannot pull them.")] = False,
    insecure: InsecureOption = False,
    as_json: JsonOption = False,
) -> None:
    """Upload a snapshot to an OCI registry as one artifact; blobs the registry already has are not sent again."""
    from compose_ckpt.domain.transport.registry import push_snapshot

    options: GlobalOptions = ctx.obj
    project_name = _project_name(options)
    with _registry_client(reference, insecure) as client:
        if client.reference.digest:
            raise UsageError(f"cannot push to a digest ({reference})", hint="Give a tag, or none (the snapshot name).")
        tag = client.reference.tag or snapshot
        engine = options.connect() if with_images else None
        with _progress(options, "push") as progress:
            result = push_snapshot(_store(), project_name, snapshot, client, [tag], images_from=engine, progress=progress)
    if as_json:
        print_json({"snapshot": snapshot, "project": project_name, "reference": result.reference, "digest": result.digest,
                    "blobs": result.blobs, "uploaded_blobs": result.uploaded_blobs, "bytes": result.bytes,
                    "uploaded_bytes": result.uploaded_bytes, "images": result.images})
        return
    console.print(f"pushed {snapshot} of {project_name} to {result.reference} ({result.digest}): "
                  f"{result.uploaded_blobs} of {result.blobs} blobs uploaded, {human_size(result.uploaded_bytes)} sent "
                  f"for {human_size(result.bytes)}")


@app.command()
def pull(
    ctx: typer.Context,
    reference: Annotated[str, typer.Argument(metavar="REF", help="registry[:port]/repository:tag or @sha256:digest (default tag: latest).")],
    name: Annotated[str | None, typer.Option("--name", callback=_checked_name, help="Store the snapshot under another name.")] = None,
    insecure: InsecureOption = False,
    trust_host_access: TrustHostAccessOption = False,
    as_json: JsonOption = False,
) -> None:
    """Download a pushed snapshot, verify every blob, then store it and create its containers, as import does."""
    from compose_ckpt.domain.transport.registry import pull_snapshot

    options: GlobalOptions = ctx.obj
    with _registry_client(reference, insecure) as client:
        engine = options.connect()
        with _progress(options, "pull") as progress:
            result = pull_snapshot(_store(), engine, client, rename=name, expected_project=options.project_name,
                                   progress=progress, consent=_host_access_consent(trust_host_access, progress))
    imported = result.imported
    manifest = imported.manifest
    if as_json:
        print_json({"reference": result.reference, "digest": result.digest, "snapshot": manifest.name,
                    "project": manifest.project, "downloaded_bytes": result.downloaded_bytes,
                    "reused_bytes": result.reused_bytes, "warnings": imported.warnings,
                    "host_access": imported.host_access, "loaded_images": imported.loaded_images,
                    "created_containers": imported.created_containers})
        return
    print_warnings(imported.warnings)
    _print_host_access(imported.host_access)
    console.print(f"pulled snapshot {manifest.name} of project {manifest.project} from {result.reference} "
                  f"({human_size(result.downloaded_bytes)} downloaded): {len(imported.created_containers)} containers "
                  f"created; restore it with `compose-ckpt -p {manifest.project} restore {manifest.name}`")


def run(argv: list[str] | None = None, prog_name: str = "compose-ckpt") -> int:
    """Run the CLI and return its exit code; the one place where errors become messages."""
    args = sys.argv[1:] if argv is None else argv
    _run_state.verbose = False
    try:
        # Standalone mode: Typer prints usage errors itself and exits through SystemExit.
        app(args=args, prog_name=prog_name)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else ExitCode.FAILURE
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return ExitCode.INTERRUPTED
    except CkptError as exc:
        print_error(exc)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - anything unexpected is a bug: say so, briefly
        if _run_state.verbose:
            raise
        err_console.print(f"internal error: {type(exc).__name__}: {exc} (run with --verbose for the traceback)")
        return ExitCode.FAILURE
    return ExitCode.OK


def exit_with(code: int) -> NoReturn:
    """End the process with `code`.

    The interpreter's last act would be a full garbage collection over everything the command imported
    (10-20 ms of CPU, as much as the own work of a small snapshot); frozen, those objects are skipped. They
    are released as at any exit; compose-ckpt keeps nothing that needs a collected cycle's finalizer to run
    (files are closed by `with`, temporary files removed explicitly)."""
    gc.freeze()
    sys.exit(code)


def entry() -> None:
    exit_with(run())

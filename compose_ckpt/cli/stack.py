"""Commands on a running stack: snapshot, restore, recover, ps, config, adopt, unadopt."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from compose_ckpt.cli import documents
from compose_ckpt.cli.context import GlobalOptions, open_store
from compose_ckpt.cli.options import JsonOption, Parallel, Services, checked_name
from compose_ckpt.const import DEFAULT_PARALLEL
from compose_ckpt.errors import Declined, UsageError
from compose_ckpt.output import (
    console,
    counted,
    err_console,
    escape,
    human_size,
    print_json,
    print_table,
    print_warnings,
)

if TYPE_CHECKING:
    from compose_ckpt.domain.stack.adopt import AdoptionPlan
    from compose_ckpt.domain.stack.restore import RestoreResult
    from compose_ckpt.domain.store.manifest import Manifest


def snapshot(
    ctx: typer.Context,
    services: Services = None,
    name: Annotated[str | None, typer.Option("--name", callback=checked_name, help="Snapshot name (default: the UTC time, sortable).")] = None,
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
        loading = options.start_compose_project()
        from compose_ckpt.domain.stack.snapshot import take_snapshot  # loads while compose runs

        project = options.project(loading)
    with options.show_progress("snapshot") as progress:
        manifest = take_snapshot(project, open_store(), request, progress=progress, phases=phases)
    from compose_ckpt.domain.stack.adopt import drift

    print_warnings([drifted] if (drifted := drift(project, options.compose_cli)) else [])
    _print_snapshot_notes(manifest)
    if as_json:
        print_json(documents.snapshot_details(manifest))
        return
    state = "stopped" if manifest.stopped else "running"
    console.print_fitted([f"snapshot [bold]{manifest.name}[/] of {manifest.project}: "
                          f"{counted(len(manifest.containers), 'container')}", human_size(manifest.size),
                          f"frozen {manifest.freeze_seconds:.2f}s", f"left {state}"], drop=[3, 1])


def _print_snapshot_notes(manifest: Manifest) -> None:
    """What the snapshot left alone, and what Docker shows wrongly for a while after it."""
    from compose_ckpt.domain.stack.snapshot import unhealthy_after_resume

    for service, reason in manifest.skipped.items():
        err_console.print(f"note: skipped {escape(service)} ({escape(reason)}): nothing running to checkpoint; "
                          "restore leaves it alone")
    for container, interval in unhealthy_after_resume(manifest):
        err_console.print(f"note: Docker shows {escape(container)} unhealthy until its next health probe, {interval:g} s "
                          "after the resume (it marks a paused container unhealthy; no API call resets that): a "
                          "service that waits for it to be healthy cannot start until then (see docs/limits.md)")


def restore(
    ctx: typer.Context,
    snapshot: Annotated[str | None, typer.Argument(metavar="SNAPSHOT", callback=checked_name, help="Snapshot (default: the latest complete one).", show_default=False)] = None,
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
        project_name = options.resolve_project_name()
        engine = options.connect()
        # The engine's facts, needed first thing, are read on a thread from connect on: the domain loads meanwhile.
        from compose_ckpt.domain.stack.restore import restore_snapshot
    with options.show_progress("restore") as progress:
        result = restore_snapshot(engine, project_name, open_store(), request, progress=progress, phases=phases)
    _print_not_in_snapshot(result)
    if as_json:
        print_json(documents.restored(result))
        return
    print_warnings(result.warnings)
    print_table(["SERVICE", "CONTAINER", "RECREATED", "VERIFIED BY"],
                [(c.service, c.container, "yes" if c.recreated else "no", c.verified) for c in result.containers])
    console.print(f"restored {counted(len(result.containers), 'container')} from snapshot {result.snapshot.name}")


def _print_not_in_snapshot(result: RestoreResult) -> None:
    """Replicas scaled up after the snapshot: restore leaves them running as they are."""
    for extra in result.not_in_snapshot:
        held = sum(record.service == extra.service for record in result.snapshot.containers)
        err_console.print(f"note: {escape(extra.container)} ({escape(extra.state)}) is not in snapshot "
                          f"{escape(result.snapshot.name)}, which holds {held} of {escape(extra.service)}'s containers "
                          f"(scaled up after it): left as it is, with its own state, not the snapshot's; "
                          f"`docker rm -f {escape(extra.container)}` if it should not run")


def recover(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Put back the containers a killed snapshot left frozen or stopped (and mark it failed), or a failed restore --force killed.

    snapshot and restore do this first on their own; this runs it alone."""
    from compose_ckpt.domain.stack.recovery import recover_project

    options: GlobalOptions = ctx.obj
    with options.show_progress("recover") as progress:
        actions = recover_project(options.connect(), options.resolve_project_name(), open_store(), progress=progress)
    if as_json:
        print_json({"actions": actions})
        return
    for action in actions:
        console.print(action)
    console.print("nothing to recover" if not actions else "every container is running with its state")


def ps(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the project as resolved: services, containers, their network form, whether a snapshot would take them."""
    from compose_ckpt.domain.stack.overview import STALE_JOIN, stack_overview

    options: GlobalOptions = ctx.obj
    overview = stack_overview(options.project(), open_store(), options.compose_cli)
    if as_json:
        print_json(documents.stack_overview(overview))
        return
    console.print(f"project {overview.project}")
    print_table(["SERVICE", "CONTAINER", "STATE", "NETWORK", "SNAPSHOT"],
                [(c.service, c.container or "-",
                  c.state + (f" (restart policy {c.held_policy} held back)" if c.held_policy else ""),
                  "-" if c.network is None
                  else c.network + ("" if c.restorable or c.network == STALE_JOIN
                                    else f" (needs adopt on Docker {overview.engine_version})"),
                  "yes" if c.snapshot else "no") for c in overview.containers], names=2)
    if overview.abandoned_holders:
        print_warnings([f"network holders that no container joins (a plain `docker compose down` leaves them): "
                        f"{', '.join(overview.abandoned_holders)}. They keep the published ports, the service names "
                        "and the network: `docker compose down --remove-orphans` removes them, `compose-ckpt restore` "
                        "reuses them, `compose-ckpt adopt` replaces them"])
    print_warnings([*([overview.drift] if overview.drift else []),
                    *(f"{reason}: recreate it with `docker compose up -d --force-recreate` of its service"
                      for reason in overview.stale_joins)])


def config(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the project as resolved (by docker compose where installed): services, images, dependencies. No engine needed."""
    options: GlobalOptions = ctx.obj
    document = options.compose_project().as_dict()
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


AdoptYes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before changing the files and restarting containers.")]
AdoptDryRun = Annotated[bool, typer.Option("--dry-run", help="Show what would change, change nothing.")]
StopTimeout = Annotated[int | None, typer.Option("--timeout", "-t", min=0, help="Seconds to wait for each container to stop before killing it (default: its own stop timeout).")]


def adopt(
    ctx: typer.Context,
    yes: AdoptYes = False,
    dry_run: AdoptDryRun = False,
    undo: Annotated[bool, typer.Option("--undo", help="Return the project to its form before adopt (as `unadopt`).")] = False,
    timeout: StopTimeout = None,
    as_json: JsonOption = False,
) -> None:
    """Declare a network holder per service in a compose file of the project, the form Docker 28 and 29 can
    restore, registered in the project's .env so that plain `docker compose` keeps it (one cold restart each)."""
    _adoption(ctx.obj, undo=undo, yes=yes, dry_run=dry_run, timeout=timeout, as_json=as_json)


def unadopt(
    ctx: typer.Context,
    yes: AdoptYes = False,
    dry_run: AdoptDryRun = False,
    timeout: StopTimeout = None,
    as_json: JsonOption = False,
) -> None:
    """Undo `adopt`: remove its compose file, restore .env, let compose recreate the services without holders."""
    _adoption(ctx.obj, undo=True, yes=yes, dry_run=dry_run, timeout=timeout, as_json=as_json)


def _adoption(options: GlobalOptions, *, undo: bool, yes: bool, dry_run: bool, timeout: int | None, as_json: bool) -> None:
    from compose_ckpt.domain.stack.adopt import apply, plan_adoption, plan_undo

    project = options.project()
    compose = options.compose_cli()
    with open_store().locked(project.name):
        plan = (plan_undo(project, os.environ, options.env_files) if undo
                else plan_adoption(project, compose, os.environ, options.env_files))
        document = documents.adoption(project.name, plan, undo=undo, dry_run=dry_run)
        if not as_json:
            for change in plan.files:
                if change.changed:
                    console.print(change.diff(), markup=False, end="")
        if not plan.needed or dry_run:
            if as_json:
                print_json(document)
            else:
                recreated = ", ".join(c.name for c in plan.in_the_way)
                console.print("nothing to change" if not plan.needed else "dry run: nothing was changed"
                              + (f"; it would recreate {recreated}" if recreated else ""))
            return
        if not yes:
            _confirm_adoption(plan, undo)
        with options.show_progress("unadopt" if undo else "adopt") as progress:
            apply(plan, project, compose, adopted=not undo, stop_timeout=timeout, progress=progress)
    if as_json:
        print_json(document)
        return
    if undo:
        console.print(f"unadopted project {project.name}: {counted(plan.holders_in_the_way, 'network holder')} removed, "
                      f"{counted(len(plan.in_the_way) - plan.holders_in_the_way, 'container')} recreated by docker compose")
        return
    console.print(f"adopted project {project.name}: {counted(len(plan.holders), 'network holder')}, "
                  f"{counted(len(plan.in_the_way), 'container')} recreated by docker compose")


def _confirm_adoption(plan: AdoptionPlan, undo: bool) -> None:
    """Ask before containers lose their memory to a cold restart; without a terminal to ask on, refuse."""
    recreated = ", ".join(c.name for c in plan.in_the_way) or "none"
    question = (f"{'unadopt' if undo else 'adopt'} changes the files above, then `docker compose up -d` recreates "
                f"the services in that form; these containers restart from a cold start (their in-memory state "
                f"is lost): {recreated}. Go on?")
    if not sys.stdin.isatty():
        raise UsageError(question.replace(" Go on?", ""), hint="Pass --yes to confirm, --dry-run to only look.")
    if not typer.confirm(question):
        raise Declined()

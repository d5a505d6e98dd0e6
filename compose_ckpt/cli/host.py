"""Commands about this host: `doctor`, and the `host` sub-app (the reboot hook and what it runs)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from compose_ckpt.cli import documents
from compose_ckpt.cli.context import GlobalOptions, open_store
from compose_ckpt.cli.options import JsonOption
from compose_ckpt.errors import CkptError, UsageError
from compose_ckpt.output import console, err_console, escape, print_json

if TYPE_CHECKING:
    from compose_ckpt.domain.host.reboot import Outcome


def doctor(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Check that this Docker engine can checkpoint and restore, and say how to fix what cannot."""
    from compose_ckpt.domain.host.doctor import run_checks
    from compose_ckpt.domain.stack.project import Project
    from compose_ckpt.domain.store.store import default_home

    options: GlobalOptions = ctx.obj
    report = run_checks(options.connect, default_home(), lambda engine: Project(options.compose_project(), engine),
                        options.compose_cli)
    if as_json:
        print_json(documents.doctor(report))
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


host_app = typer.Typer(help="Survive reboots without a cold start: a hook that snapshots stacks before Docker stops "
                            "and restores them when it is back.", no_args_is_help=True)
Projects = Annotated[list[str], typer.Option("--project", metavar="NAME", help="A compose project (repeatable).")]


@host_app.command("shutdown")
def host_shutdown(ctx: typer.Context, project_names: Projects, as_json: JsonOption = False) -> None:
    """Snapshot each running project with --stop (what the hook runs before Docker stops)."""
    from compose_ckpt.domain.host.reboot import shutdown

    options: GlobalOptions = ctx.obj
    _print_outcomes(shutdown(options.connect(), project_names, open_store()), as_json)


@host_app.command("boot")
def host_boot(ctx: typer.Context, project_names: Projects, as_json: JsonOption = False) -> None:
    """Restore each project from its latest snapshot if that is a clean stop nothing ran after (what the hook
    runs once Docker is back); leave the others to Docker, saying why."""
    from compose_ckpt.domain.host.reboot import boot

    options: GlobalOptions = ctx.obj
    _print_outcomes(boot(options.connect(), project_names, open_store()), as_json)


def _print_outcomes(outcomes: list[Outcome], as_json: bool) -> None:
    if as_json:
        print_json(documents.reboot_outcomes(outcomes))
    else:
        for outcome in outcomes:
            console.print(f"{outcome.project}: {outcome.action}: {escape(outcome.detail)}", soft_wrap=True)
    failed = [o.project for o in outcomes if o.failed]
    if failed:
        raise CkptError(f"failed for {', '.join(failed)}", hint="Each project's line above says why.")


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
    executable = hostsetup.installed_executable(Path(sys.executable))
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


"""`compose-ckpt`: options like `docker compose`, one command per operation.

Commands parse their options, call the domain, and print. Errors are caught
once, in `run`, and turned into a message and an exit code.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from compose_ckpt import __version__
from rich.markup import escape

from compose_ckpt.cli.output import console, err_console, print_error, print_json, print_table
from compose_ckpt.errors import CkptError, ExitCode

app = typer.Typer(
    name="compose-ckpt",
    help="Checkpoint and restore whole Docker Compose stacks with CRIU.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass(frozen=True)
class GlobalOptions:
    files: tuple[str, ...]
    project_name: str | None
    project_directory: str | None
    profiles: tuple[str, ...]
    env_files: tuple[str, ...]
    host: str | None

    def connect(self) -> Any:
        from compose_ckpt.engine import Engine

        return Engine.connect(self.host)


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
    verbose: Annotated[bool, typer.Option("--verbose", help="Show tracebacks of unexpected errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    ctx.obj = GlobalOptions(
        files=tuple(file or ()),
        project_name=project_name,
        project_directory=project_directory,
        profiles=tuple(profile or ()),
        env_files=tuple(env_file or ()),
        host=host,
    )


JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document (stable, see README).")]


@app.command()
def doctor(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Check that this Docker engine can checkpoint and restore, and say how to fix what cannot."""
    from compose_ckpt.domain.doctor import run_checks
    from compose_ckpt.domain.store import default_home

    options: GlobalOptions = ctx.obj
    report = run_checks(options.connect, default_home())
    if as_json:
        print_json({"ok": report.can_checkpoint, "checks": [check.as_dict() for check in report.checks]})
    else:
        colours = {"ok": "green", "warn": "yellow", "fail": "red"}
        for check in report.checks:
            status = check.status.value
            console.print(f"[{colours[status]}]{status:>4}[/]  {check.name:<16} {escape(check.detail)}", highlight=False, soft_wrap=True)
            if check.remedy and status != "ok":
                console.print(f"{'':<22}-> {escape(check.remedy)}", highlight=False, soft_wrap=True)
        verdict = "can" if report.can_checkpoint else "cannot"
        console.print(f"checkpoint/restore {verdict} work with this engine")
    if not report.can_checkpoint:
        raise typer.Exit(ExitCode.FAILURE)


def run(argv: list[str] | None = None, prog_name: str = "compose-ckpt") -> int:
    """Run the CLI and return its exit code; the one place where errors become messages."""
    args = sys.argv[1:] if argv is None else argv
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
        if "--verbose" in args:
            raise
        err_console.print(f"internal error: {type(exc).__name__}: {exc} (run with --verbose for the traceback)", highlight=False)
        return ExitCode.FAILURE
    return ExitCode.OK


def entry() -> None:
    sys.exit(run())

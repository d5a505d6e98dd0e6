"""`compose-ckpt`: options like `docker compose`, one command per operation.

This module wires the app: the global options, every command in the order `--help` lists them (each family
of commands in a module of its own: stack, store, transport, host), and `run`, the one place where an error
becomes a message and an exit code. Commands parse their options, call the domain, and print; they end in
error only by raising a `CkptError` (compose_ckpt/errors.py).
"""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass
from typing import Annotated, NoReturn

import typer

from compose_ckpt import __version__
from compose_ckpt.cli import host, stack, store, transport
from compose_ckpt.cli.context import GlobalOptions
from compose_ckpt.cli.options import ProgressMode
from compose_ckpt.errors import CkptError, ExitCode
from compose_ckpt.output import err_console, print_error

app = typer.Typer(
    name="compose-ckpt",
    help="Checkpoint and restore whole Docker Compose stacks with CRIU.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


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
    docker_host: Annotated[str | None, typer.Option("--host", "-H", metavar="HOST", help="Docker daemon to use (default: DOCKER_HOST or the local socket).")] = None,
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
        docker_host=docker_host,
        progress=progress,
    )


app.command()(host.doctor)
app.command()(stack.snapshot)
app.command()(stack.restore)
app.command()(stack.ps)
app.command()(stack.config)
app.command()(stack.adopt)
app.command()(stack.unadopt)
app.command("ls")(store.list_snapshots)
app.command()(store.inspect)
app.command()(stack.recover)
app.command()(store.rm)
app.command()(store.prune)
app.command()(transport.export)
app.command("import")(transport.import_)
app.command()(transport.migrate)
app.command()(transport.push)
app.command()(transport.pull)
app.add_typer(host.host_app, name="host")


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

"""`compose-ckpt-sidecar`: `serve` runs the daemon; `run PROJECT [JOB]` snapshots one project now.

`run` works on its own (it is meant for `docker exec <sidecar> compose-ckpt-sidecar run
PROJECT`): it reads the labels, takes the snapshot and applies the job's retention,
holding the same project lock as the daemon and the CLI, and exits with the CLI's codes.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from compose_ckpt.errors import CkptError, ExitCode
from compose_ckpt.output import console, print_error, print_json

app = typer.Typer(name="compose-ckpt-sidecar", help="Scheduled snapshots of labelled compose stacks.",
                  add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None)

ConfigOption = Annotated[str | None, typer.Option(
    "--config", metavar="FILE", envvar="COMPOSE_CKPT_SIDECAR_CONFIG",
    help="YAML config file, watched and reloaded on change (default: /etc/compose-ckpt/sidecar.yaml).")]


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Watch Docker for labelled containers and snapshot their stacks on schedule until SIGTERM."""
    from compose_ckpt.domain.store import SnapshotStore, default_home
    from compose_ckpt.sidecar.config import config_path
    from compose_ckpt.sidecar.daemon import Sidecar
    from compose_ckpt.sidecar.log import Log
    from compose_ckpt.sidecar.schedule import zone_from_env

    Sidecar(config_path(config), zone_from_env(), SnapshotStore(default_home()), Log()).serve()


@app.command()
def run(
    project_name: Annotated[str, typer.Argument(metavar="PROJECT", help="Compose project with labelled containers.")],
    job: Annotated[str | None, typer.Argument(
        metavar="JOB", show_default=False,
        help="Run this job now, with its retention (default: a manual snapshot, never pruned by the sidecar).")] = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Snapshot PROJECT's labelled services now."""
    from compose_ckpt.domain.store import SnapshotStore, default_home
    from compose_ckpt.engine import Engine
    from compose_ckpt.sidecar.config import config_path, load_config
    from compose_ckpt.sidecar.runner import Runner, discover
    from compose_ckpt.sidecar.schedule import zone_from_env

    zone = zone_from_env()
    engine = Engine.connect()
    found = discover(engine, load_config(config_path(config), zone).rules(zone))
    result = Runner(engine, SnapshotStore(default_home())).run(found.job(project_name, job))
    if as_json:
        print_json({"project": project_name, "snapshot": result.snapshot, "services": list(result.services),
                    "pruned": result.pruned, "seconds": result.seconds})
        return
    pruned = f"; pruned {', '.join(result.pruned)}" if result.pruned else ""
    console.print(f"snapshot {result.snapshot} of {project_name} ({', '.join(result.services)}) "
                  f"in {result.seconds:.2f}s{pruned}", highlight=False)


def entry() -> None:
    """Errors become a message and the CLI's exit codes, here only."""
    try:
        app(prog_name="compose-ckpt-sidecar")
    except CkptError as exc:
        print_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(ExitCode.INTERRUPTED)

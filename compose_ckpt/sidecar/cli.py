"""`compose-ckpt-sidecar`: `serve` runs the daemon; `run PROJECT [JOB]` snapshots one project now; `status`
shows what the running daemon reports at /status.

`run` works on its own (it is meant for `docker exec <sidecar> compose-ckpt-sidecar run
PROJECT`): it reads the labels, takes the snapshot and applies the job's retention,
holding the same project lock as the daemon and the CLI, and exits with the CLI's codes.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from compose_ckpt.errors import CkptError, ExitCode
from compose_ckpt.output import console, counted, print_error, print_json

app = typer.Typer(name="compose-ckpt-sidecar", help="Scheduled snapshots of labelled compose stacks.",
                  add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None)

ConfigOption = Annotated[str | None, typer.Option(
    "--config", metavar="FILE", envvar="COMPOSE_CKPT_SIDECAR_CONFIG",
    help="YAML config file, watched and reloaded on change (default: /etc/compose-ckpt/sidecar.yaml).")]


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Watch Docker for labelled containers and snapshot their stacks on schedule until SIGTERM."""
    from compose_ckpt.domain.store.store import SnapshotStore, default_home
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
    from compose_ckpt.domain.store.store import SnapshotStore, default_home
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
                  f"in {result.seconds:.2f}s{pruned}")


@app.command()
def status(
    config: ConfigOption = None,
    url: Annotated[str | None, typer.Option("--url", metavar="URL", help="The sidecar's address (default: "
                                            "http://127.0.0.1:<http-port of the config>).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the /status document as it is.")] = False,
) -> None:
    """Show every scheduled job of the running sidecar: last snapshot, next run, retention, last error, push."""
    import json
    import urllib.request
    from datetime import UTC, datetime

    from compose_ckpt.output import escape
    from compose_ckpt.sidecar.config import config_path, load_config
    from compose_ckpt.sidecar.schedule import zone_from_env
    from compose_ckpt.sidecar.status import error_lines, push_lines, retention_text, snapshot_lines, when

    if url is None:
        port = load_config(config_path(config), zone_from_env()).http_port
        if port == 0:
            raise CkptError("the sidecar serves no HTTP (http-port: 0 in its config)", hint="Set http-port, or pass --url.")
        url = f"http://127.0.0.1:{port}"
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=10) as response:
            document = json.loads(response.read())
    except (OSError, ValueError) as exc:  # refused, timed out, or not our JSON
        raise CkptError(f"cannot read the sidecar's status at {url}: {exc}",
                          hint="Is `compose-ckpt-sidecar serve` running, with this http-port?") from None
    if as_json:
        print_json(document)
        return
    from rich.padding import Padding
    from rich.table import Table

    now = datetime.now(UTC)
    engine = "reachable" if document["engine_up"] else "[bold red]unreachable[/]"
    console.print(f"Docker engine {engine}; {counted(len(document['jobs']), 'scheduled job')}")
    for job in document["jobs"]:
        last_run = job["last_run"]
        state = "[dim]no run yet[/]" if last_run is None else "[green]ok[/]" if last_run["ok"] else "[bold red]failed[/]"
        console.print(f"\n[bold]{escape(job['project'])}[/] / {escape(job['job'])}  {state}")
        # The page's cells, one fact a line; a line too long for the terminal wraps under its own column.
        rows = [("services", [", ".join(job["services"])]),
                ("schedule", [job["schedule"] or "-", f"next {when(job['next_run'], now)}"]),
                ("retention", [retention_text(job["retention"])]),
                ("last", snapshot_lines(job, now)),
                ("runs", [f"{job['runs']}, {job['failures']} failed"]),
                ("error", error_lines(job, now) or ["none"]),
                ("push", push_lines(job, now))]
        facts = Table.grid(padding=(0, 1))
        facts.add_column(min_width=10, no_wrap=True)
        facts.add_column(overflow="fold")
        for label, lines in rows:
            facts.add_row(label, "\n".join(escape(line) for line in lines))
        if console.is_terminal:
            console.print(Padding(facts, (0, 0, 0, 2), expand=False))
        else:
            console.print_unsqueezed(Padding(facts, (0, 0, 0, 2), expand=False))
    for problem in document["problems"]:
        console.print(f"[yellow]label problem:[/] {escape(problem['container'])} {escape(problem['label'])}: "
                      f"{escape(problem['message'])}")


def entry() -> None:
    """Errors become a message and the CLI's exit codes, here only."""
    try:
        app(prog_name="compose-ckpt-sidecar")
    except CkptError as exc:
        print_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(ExitCode.INTERRUPTED)

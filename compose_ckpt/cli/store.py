"""Commands on the snapshot store: ls, inspect, rm, prune. None of them needs the engine."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from compose_ckpt.cli import documents
from compose_ckpt.cli.context import GlobalOptions, open_store
from compose_ckpt.cli.options import JsonOption, checked_name, checked_names
from compose_ckpt.output import (
    console,
    err_console,
    escape,
    human_size,
    parse_time,
    print_json,
    print_table,
    print_warnings,
    relative_time,
)


def list_snapshots(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List this project's snapshots, oldest first."""
    options: GlobalOptions = ctx.obj
    stored = open_store()
    manifests = stored.list(options.resolve_project_name())
    if as_json:
        print_json([documents.snapshot_summary(m) for m in manifests])
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


def inspect(ctx: typer.Context, snapshot: Annotated[str, typer.Argument(metavar="SNAPSHOT", callback=checked_name, help="Snapshot name.")], as_json: JsonOption = False) -> None:
    """Show one snapshot: per container its image, checkpoint size and dump time."""
    options: GlobalOptions = ctx.obj
    manifest = open_store().load(options.resolve_project_name(), snapshot)
    document = documents.snapshot_details(manifest)
    if as_json:
        print_json(document)
        return
    console.print_wrapped(
        f"snapshot {manifest.name} of {manifest.project}, {manifest.status.value}, created {manifest.created} "
        f"({_age(manifest.created, datetime.now(UTC))}), "
        f"frozen {manifest.freeze_seconds:.2f}s, total {manifest.total_seconds:.2f}s",
    )
    console.print_wrapped(f"{_KIND_TEXT[manifest.kind]}: {_KIND_MEANING[manifest.kind]}")
    if manifest.phases:
        console.print_wrapped("phases: " + ", ".join(f"{phase} {seconds:.2f}s" for phase, seconds in manifest.phases.items()))
    if manifest.error:
        console.print_wrapped(f"error: {escape(manifest.error)}")
    _print_containers(document["containers"])
    if document["volumes"]:
        print_table(["VOLUME", "COPY"], [(v["name"], _copy_text(v["copy"]) if v["copy"] else "not copied (no --with-volumes)")
                                         for v in document["volumes"]])
    if document["binds"]:
        print_table(["BIND MOUNT (not copied)", "CONTAINER", "PATH"],
                    [(b["source"], b["container"], b["destination"] + (" (ro)" if b["read_only"] else ""))
                     for b in document["binds"]], names=2)


def _print_containers(containers: list[dict[str, Any]]) -> None:
    """`inspect`'s tables of the containers: their dumps, then their last restores."""
    print_table(["SERVICE", "CONTAINER", "IMAGE", "SIZE", "DUMP", "DUMPED BY", "LAYER"],
                [(c["service"], c["container"], c["image"], human_size(c["size"]), _dump_text(c),
                  _DUMP_PATH_TEXT.get(c["dump_path"], "not recorded"),
                  _copy_text(c["layer"]) if c["layer"] else "not copied") for c in containers],
                names=3, drop=["IMAGE", "DUMPED BY", "DUMP"])
    for c in containers:
        if c["dump_fallback"]:
            console.print(f"{escape(c['container'])}: dumped through the Docker API because {escape(c['dump_fallback'])}")
    restores = [c for c in containers if c["last_restore"]]
    if restores:
        print_table(["CONTAINER", "LAST RESTORE", "PAGES", "PLACED", "RESTORE"],
                    [(c["container"], _to_seconds(c["last_restore"]["at"]), _pages_text(c["last_restore"]),
                      f"{c['last_restore']['place_seconds']:.2f}s", f"{c['last_restore']['restore_seconds']:.2f}s")
                     for c in restores], drop=["PLACED", "PAGES"])


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


def rm(ctx: typer.Context, snapshots: Annotated[list[str], typer.Argument(metavar="SNAPSHOT", callback=checked_names, help="Snapshot names.")],
       as_json: JsonOption = False) -> None:
    """Remove snapshots and their checkpoint files."""
    options: GlobalOptions = ctx.obj
    stored = open_store()
    project_name = options.resolve_project_name()
    with stored.locked(project_name):
        for name in snapshots:
            stored.remove(project_name, name)
            if not as_json:
                console.print(f"removed {name}")
    if as_json:
        print_json({"removed": snapshots})


def prune(
    ctx: typer.Context,
    keep: Annotated[int, typer.Option("--keep", min=0, help="Complete snapshots to keep, newest first.")],
    older_than: Annotated[str | None, typer.Option("--older-than", metavar="DURATION", help="Only remove snapshots older than this (e.g. 7d, 12h).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Remove all but the newest complete snapshots, and every failed or incomplete one."""
    from compose_ckpt.domain.store.retention import imported_deciding, parse_duration, to_prune

    options: GlobalOptions = ctx.obj
    stored = open_store()
    project_name = options.resolve_project_name()
    age = parse_duration(older_than) if older_than else None
    manifests, doomed = stored.remove_chosen(project_name, lambda listed: to_prune(listed, keep, age, datetime.now(UTC)))
    deciding = imported_deciding(manifests, doomed)
    leftovers = stored.staging_leftovers(remove=True)  # of any project: what killed imports and pulls left
    if as_json:
        print_json(documents.pruned(doomed, leftovers, deciding))
        return
    print_warnings([f"kept {m.name}, imported from {m.imported_from} at {m.received}: it counts among the newest "
                    "(by when it entered this store), so snapshots taken here were removed in its place"
                    for m in deciding])
    for leftover in leftovers:
        console.print(f"removed {leftover.path} ({human_size(leftover.size)}), left by a killed "
                      + ("pull (the next pull of that artifact downloads it again)" if leftover.resumable
                         else "import or pull"))
    console.print(f"removed {len(doomed)} snapshots" + (f": {', '.join(m.name for m in doomed)}" if doomed else ""))

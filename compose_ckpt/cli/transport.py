"""Commands that move a snapshot or a stack to another place: export, import (an archive), push, pull (an OCI
registry), migrate (another engine, directly or through a registry)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, BinaryIO, TypeVar

import typer

from compose_ckpt.cli import documents
from compose_ckpt.cli.context import GlobalOptions, open_store
from compose_ckpt.cli.options import InsecureOption, JsonOption, Parallel, TrustHostAccessOption, checked_name
from compose_ckpt.const import DEFAULT_PARALLEL
from compose_ckpt.errors import Declined, NotFoundError, UsageError
from compose_ckpt.output import console, counted, err_console, human_size, print_json, print_table, print_warnings

if TYPE_CHECKING:
    from compose_ckpt.cli.progress import Display
    from compose_ckpt.domain.requests import MigrateRequest
    from compose_ckpt.domain.transport.live_migrate import LiveMigrateResult
    from compose_ckpt.domain.transport.migrate import MigrateResult
    from compose_ckpt.registry.client import RegistryClient

T = TypeVar("T")


def export(
    ctx: typer.Context,
    snapshot: Annotated[str, typer.Argument(metavar="SNAPSHOT", callback=checked_name, help="Snapshot to export.")],
    output: Annotated[str, typer.Option("--output", "-o", metavar="FILE", help="Archive to write (zstd-compressed tar), or - for stdout.")],
    with_images: Annotated[bool, typer.Option("--with-images", help="Include the images (docker save), so the target needs no registry.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Write a snapshot into one archive: manifest, checkpoints, compose files, a sha256 for every member."""
    from compose_ckpt.domain.transport.transfer import export_snapshot

    options: GlobalOptions = ctx.obj
    project_name = options.resolve_project_name()
    engine = options.connect() if with_images else None
    if output == "-" and sys.stdout.isatty():
        raise UsageError("refusing to write an archive to a terminal", hint="Redirect stdout, or use -o FILE.")
    with options.show_progress("export") as progress:
        if output == "-":
            result = export_snapshot(open_store(), project_name, snapshot, sys.stdout.buffer, images_from=engine,
                                     progress=progress)
        else:
            result = _export_to_file(Path(output), lambda out: export_snapshot(
                open_store(), project_name, snapshot, out, images_from=engine, progress=progress))
    if output == "-":
        return  # stdout holds the archive
    if as_json:
        print_json(documents.exported(result, snapshot, project_name, output))
    else:
        console.print(f"exported {snapshot} of {project_name} to {output} ({human_size(result.bytes_in)} before compression"
                      + (f", images: {', '.join(result.images)})" if result.images else ")"))


def _export_to_file(path: Path, write: Callable[[BinaryIO], T]) -> T:
    """A private temporary file renamed into place: no planted link is followed, no partial archive is left."""
    from compose_ckpt.domain.store.safefs import write_output_file

    try:
        return write_output_file(path, write)
    except OSError as exc:  # -o names a missing folder, a folder, or a place we may not write
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def host_access_consent(trust: bool, display: Display) -> Callable[[list[str]], bool]:
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


def import_(
    ctx: typer.Context,
    archive: Annotated[str, typer.Argument(metavar="FILE", help="Archive made by export, or - for stdin.")],
    name: Annotated[str | None, typer.Option("--name", callback=checked_name, help="Import the snapshot under another name.")] = None,
    trust_host_access: TrustHostAccessOption = False,
    as_json: JsonOption = False,
) -> None:
    """Verify an archive, then load its images, store its snapshot and create its containers on this engine."""
    from compose_ckpt.domain.stack.parallel import bytes_reporter
    from compose_ckpt.domain.transport.transfer import import_snapshot

    options: GlobalOptions = ctx.obj
    engine = options.connect()
    try:
        source = sys.stdin.buffer if archive == "-" else open(archive, "rb")
    except OSError as exc:
        raise NotFoundError(f"cannot open {archive}: {exc.strerror}") from None
    origin = "an archive on stdin" if archive == "-" else f"archive {Path(archive).resolve()}"
    with source, options.show_progress("import") as progress:
        read = bytes_reporter(progress, "archive" if archive == "-" else Path(archive).name, "reading", _file_size(source))
        result = import_snapshot(open_store(), engine, source, rename=name, expected_project=options.project_name,
                                 progress=progress, byte_progress=read,
                                 consent=host_access_consent(trust_host_access, progress), origin=origin)
    if as_json:
        print_json(documents.imported(result))
        return
    print_warnings(result.warnings)
    _print_host_access(result.host_access)
    manifest = result.manifest
    console.print(f"imported snapshot {manifest.name} of project {manifest.project}: "
                  f"{counted(len(result.created_containers), 'container')} created, "
                  f"{counted(len(result.loaded_images), 'image')} loaded; "
                  f"restore it with `compose-ckpt -p {manifest.project} restore {manifest.name}`")


def _file_size(source: BinaryIO) -> int | None:
    """The size of a regular file (for progress); None for a pipe."""
    import os
    import stat

    info = os.fstat(source.fileno())
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _registry_client(reference: str, insecure: bool) -> RegistryClient:
    from compose_ckpt.registry.client import RegistryClient
    from compose_ckpt.registry.reference import parse_reference

    return RegistryClient(parse_reference(reference), insecure=insecure)


def _push_client(reference: str, insecure: bool) -> RegistryClient:
    """A client for pushing to `reference`, which names a tag or none: a digest cannot be pushed to."""
    client = _registry_client(reference, insecure)
    if client.reference.digest:
        raise UsageError(f"cannot push to a digest ({reference})", hint="Give a tag, or none (the snapshot name).")
    return client


def push(
    ctx: typer.Context,
    snapshot: Annotated[str, typer.Argument(metavar="SNAPSHOT", callback=checked_name, help="Snapshot to push.")],
    reference: Annotated[str, typer.Argument(metavar="REF", help="registry[:port]/repository[:tag]; without a tag, the snapshot's name is the tag.")],
    with_images: Annotated[bool, typer.Option("--with-images", help="Include the images (docker save), for targets that cannot pull them.")] = False,
    insecure: InsecureOption = False,
    as_json: JsonOption = False,
) -> None:
    """Upload a snapshot to an OCI registry as one artifact; blobs the registry already has are not sent again."""
    from compose_ckpt.domain.transport.push import push_snapshot

    options: GlobalOptions = ctx.obj
    project_name = options.resolve_project_name()
    with _push_client(reference, insecure) as client:
        tag = client.reference.tag or snapshot
        engine = options.connect() if with_images else None
        with options.show_progress("push") as progress:
            result = push_snapshot(open_store(), project_name, snapshot, client, [tag], images_from=engine,
                                   progress=progress)
    if as_json:
        print_json(documents.pushed(result, snapshot, project_name))
        return
    console.print(f"pushed {snapshot} of {project_name} to {result.reference} ({result.digest}): "
                  f"{result.uploaded_blobs} of {result.blobs} blobs uploaded, {human_size(result.uploaded_bytes)} sent "
                  f"for {human_size(result.bytes)}")


def pull(
    ctx: typer.Context,
    reference: Annotated[str, typer.Argument(metavar="REF", help="registry[:port]/repository:tag or @sha256:digest (default tag: latest).")],
    name: Annotated[str | None, typer.Option("--name", callback=checked_name, help="Store the snapshot under another name.")] = None,
    insecure: InsecureOption = False,
    trust_host_access: TrustHostAccessOption = False,
    as_json: JsonOption = False,
) -> None:
    """Download a pushed snapshot, verify every blob, then store it and create its containers, as import does."""
    from compose_ckpt.domain.transport.pull import pull_snapshot

    options: GlobalOptions = ctx.obj
    with _registry_client(reference, insecure) as client:
        engine = options.connect()
        with options.show_progress("pull") as progress:
            result = pull_snapshot(open_store(), engine, client, rename=name, expected_project=options.project_name,
                                   progress=progress, consent=host_access_consent(trust_host_access, progress))
    if as_json:
        print_json(documents.pulled(result))
        return
    imported, manifest = result.imported, result.imported.manifest
    print_warnings(imported.warnings)
    _print_host_access(imported.host_access)
    console.print(f"pulled snapshot {manifest.name} of project {manifest.project} from {result.reference} "
                  f"({human_size(result.downloaded_bytes)} downloaded): {counted(len(imported.created_containers), 'container')} "
                  f"created; restore it with `compose-ckpt -p {manifest.project} restore {manifest.name}`")


def migrate(
    ctx: typer.Context,
    to: Annotated[str | None, typer.Option("--to", metavar="HOST", help="Target engine: a Docker host URL (unix://, tcp://, ssh://) or a context name.")] = None,
    via: Annotated[str | None, typer.Option("--via", metavar="REF", help="Instead of --to: push to this registry reference and leave the source stopped; the target pulls and restores.")] = None,
    snapshot: Annotated[str | None, typer.Argument(metavar="SNAPSHOT", callback=checked_name, help="Snapshot to move (default: take one now, with --stop).", show_default=False)] = None,
    keep_source: Annotated[bool, typer.Option("--keep-source", help="Keep the source containers, stopped, instead of removing them.")] = False,
    insecure: InsecureOption = False,
    ignore_volumes: Annotated[bool, typer.Option("--ignore-volumes", help="Do not copy the named volumes (the target already shares their storage).")] = False,
    live: Annotated[bool, typer.Option("--live", help="With --to: copy the images and volumes while the stack runs, then stop it only for the dump, the volume changes and the restore (see docs/live.md).")] = False,
    parallel: Parallel = DEFAULT_PARALLEL,
    as_json: JsonOption = False,
) -> None:
    """Move the stack to another Docker engine; the source is removed only once the target runs restored."""
    from compose_ckpt.domain.requests import MigrateRequest

    request = MigrateRequest(snapshot=snapshot, keep_source=keep_source, parallel=parallel, ignore_volumes=ignore_volumes)
    if (to is None) == (via is None):
        raise UsageError("give exactly one of --to HOST (direct) and --via REF (through a registry)")
    options: GlobalOptions = ctx.obj
    if via is not None:
        if live:
            raise UsageError("--live moves the stack to an engine reached from here: use it with --to, not --via")
        _migrate_via(options, via, insecure, request, as_json)
    else:
        assert to is not None
        _migrate_to(options, to, live, request, as_json)


def _migrate_to(options: GlobalOptions, to: str, live: bool, request: MigrateRequest, as_json: bool) -> None:
    """migrate --to: straight to the target engine, with the stack stopped throughout or (--live) only at the end."""
    from compose_ckpt.domain.transport.live_migrate import LiveMigrateResult, migrate_live
    from compose_ckpt.domain.transport.migrate import migrate as migrate_stack
    from compose_ckpt.engine import Engine

    project = options.project()
    target = Engine.connect(to)
    result: MigrateResult | LiveMigrateResult
    with options.show_progress("migrate --live" if live else "migrate") as progress:
        if live:
            result = migrate_live(project, open_store(), target, request, progress=progress)
        else:
            result = migrate_stack(project, open_store(), target, request, progress=progress)
    if as_json:
        print_json(documents.migrated_live(result, target.base_url) if isinstance(result, LiveMigrateResult)
                   else documents.migrated(result, target.base_url))
        return
    print_warnings(result.warnings)
    print_table(["SERVICE", "CONTAINER", "VERIFIED BY"], [(c.service, c.container, c.verified) for c in result.restored])
    console.print(_migrated_text(result, to, target.base_url))


def _migrated_text(result: MigrateResult | LiveMigrateResult, to: str, target: str) -> str:
    from compose_ckpt.domain.transport.live_migrate import LiveMigrateResult

    timing = ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in result.seconds.items())
    source = "removed from" if result.source_removed else "kept stopped on"
    if not isinstance(result, LiveMigrateResult):
        return f"migrated {result.snapshot.project} to {to} ({timing}); {source} the source"
    return (f"migrated {result.snapshot.project} to {target} live: downtime {result.downtime:.2f}s; "
            f"sent {human_size(result.bytes_before)} before it, {human_size(result.bytes_during)} during it "
            f"({human_size(result.pages_while_dumping)} of page images while they were dumped) "
            f"({timing}); memory pre-copy {result.memory_precopy}; {source} the source")


def _migrate_via(options: GlobalOptions, via: str, insecure: bool, request: MigrateRequest, as_json: bool) -> None:
    """migrate --via: push to a registry and leave the source stopped; the target pulls and restores."""
    from compose_ckpt.domain.transport.migrate import migrate_via_registry

    project = options.project()
    with _push_client(via, insecure) as client:
        with options.show_progress("migrate") as progress:
            result = migrate_via_registry(project, open_store(), client, request, progress=progress)
        pull_reference = str(client.reference.with_digest(result.pushed.digest))
    if as_json:
        print_json(documents.migrated_via(result, pull_reference))
        return
    timing = ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in result.seconds.items())
    manifest = result.snapshot
    console.print(f"pushed {manifest.project} snapshot {manifest.name} to {result.pushed.reference} ({timing}); the stack is "
                  f"kept stopped on the source. On the target run:\n"
                  f"  compose-ckpt pull {pull_reference}\n  compose-ckpt -p {manifest.project} restore {manifest.name}")

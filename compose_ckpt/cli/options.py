"""The option and argument types more than one command takes, each with its one help text.

Snapshot names are checked here, while Typer parses them, before anything connects to the engine or opens
the store (the domain's requests check them again, for the sidecar).
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer


class ProgressMode(str, Enum):
    AUTO = "auto"  # tty when stderr is a terminal, else plain
    TTY = "tty"  # one line per container, updated in place
    PLAIN = "plain"  # a line per phase (for logs and scripts that follow the work)
    QUIET = "quiet"  # nothing but errors


def checked_name(value: str | None) -> str | None:
    """A snapshot name, refused at parse time when it is not a valid one."""
    from compose_ckpt.domain.store.names import validate_name

    return validate_name(value) if value is not None else None


def checked_names(values: list[str]) -> list[str]:
    """`rm`'s names, every one checked before the lock creates the project's folder."""
    from compose_ckpt.domain.store.names import validate_name

    return [validate_name(value) for value in values]


JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document (stable, see docs/cli.md).")]
Services = Annotated[list[str] | None, typer.Argument(metavar="SERVICE", help="Services to include (default: all active services).", show_default=False)]
Parallel = Annotated[int, typer.Option("--parallel", min=1, max=64, help="Containers worked on at once.")]
InsecureOption = Annotated[bool, typer.Option("--insecure", help="Allow plain HTTP to this registry (it has no TLS). Loopback registries are allowed without it.")]
TrustHostAccessOption = Annotated[bool, typer.Option("--trust-host-access", help="Accept what the snapshot's recorded configuration reaches of this host (bind mounts, privileges, host namespaces, published ports...) without being asked. Without it the list is shown and asked about on a terminal, refused otherwise.")]

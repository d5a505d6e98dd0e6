"""Printing for both front ends (the CLI and the sidecar's command): JSON for scripts, tables and
errors for people. It sits below them, so neither front end imports the other.

rich is imported on the first line printed for people: `--json` output and
`--help` never pay for it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from compose_ckpt.errors import CkptError

if TYPE_CHECKING:
    from rich.console import Console


class _LazyConsole:
    """A rich Console, made when first used."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr

    @cached_property
    def _console(self) -> Console:
        from rich.console import Console

        return Console(stderr=self._stderr, soft_wrap=True)

    def print(self, *objects: Any, **options: Any) -> None:
        self._console.print(*objects, **options)

    def print_unsqueezed(self, renderable: Any) -> None:
        """Print at the renderable's natural width even where it exceeds the terminal's (or a pipe's
        80 columns): rich would otherwise cut cells short with an ellipsis."""
        from rich.measure import Measurement

        natural = Measurement.get(self._console, self._console.options.update(max_width=sys.maxsize), renderable)
        width = self._console.width
        try:
            self._console.width = max(width, natural.maximum)
            self._console.print(renderable)
        finally:
            self._console.width = width


console = _LazyConsole(stderr=False)
err_console = _LazyConsole(stderr=True)


def escape(text: str) -> str:
    """`text` shown as is, not read as rich markup."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=False) + "\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.table import Table

    table = Table(*headers, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    console.print_unsqueezed(table)  # a cut name cannot be told from another one, nor copied


def print_warnings(warnings: Sequence[str]) -> None:
    """Warnings go to stderr, so that --json output on stdout stays one document."""
    for warning in warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)


def print_error(error: CkptError) -> None:
    err_console.print(f"[bold red]error:[/] {escape(error.message)}", highlight=False, soft_wrap=True)
    for line in error.details:
        err_console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    if error.hint:
        err_console.print(f"[yellow]hint:[/] {escape(error.hint)}", highlight=False, soft_wrap=True)


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")

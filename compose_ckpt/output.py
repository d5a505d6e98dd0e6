"""Printing for both front ends (the CLI and the sidecar's command): JSON for scripts, tables and
errors for people. It sits below them, so neither front end imports the other.

rich is imported on the first line printed for people: `--json` output and
`--help` never pay for it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
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

        return Console(stderr=self._stderr, soft_wrap=True)  # our text is not rich's to colour

    def print(self, *objects: Any, **options: Any) -> None:
        self._console.print(*objects, **options)

    @property
    def is_terminal(self) -> bool:
        return self._console.is_terminal

    @property
    def width(self) -> int:
        return self._console.width

    def natural_width(self, renderable: Any) -> int:
        """How wide `renderable` is with no limit."""
        from rich.measure import Measurement

        return Measurement.get(self._console, self._console.options.update(max_width=sys.maxsize), renderable).maximum

    def minimum_width(self, renderable: Any) -> int:
        """The least width `renderable` can be printed in without cutting anything (its cells wrapped)."""
        from rich.measure import Measurement

        return Measurement.get(self._console, self._console.options.update(max_width=sys.maxsize), renderable).minimum

    def print_wrapped(self, text: str) -> None:
        """Prose: on a terminal wrapped between words at its width, not cut mid-word by the terminal; to a pipe
        one line. (Other lines are left for the terminal to wrap, so that a command in them copies whole.)"""
        self._console.print(text, soft_wrap=not self._console.is_terminal)

    def print_fitted(self, parts: Sequence[str], drop: Sequence[int]) -> None:
        """`parts` joined by ", " on one line. On a terminal too narrow for all of them, the parts at the
        indexes in `drop` are left out, in that order, until it fits: the line a command ends with stays one
        line under its progress display. To a pipe, every part."""
        from rich.text import Text

        kept = list(range(len(parts)))
        for index in drop if self._console.is_terminal else ():
            if Text.from_markup(", ".join(parts[i] for i in kept)).cell_len <= self._console.width:
                break
            kept.remove(index)
        self._console.print(", ".join(parts[i] for i in kept))

    def print_unsqueezed(self, renderable: Any) -> None:
        """Print at the renderable's natural width even where it exceeds the terminal's (or a pipe's
        80 columns): rich would otherwise cut cells short with an ellipsis."""
        width = self._console.width
        try:
            self._console.width = max(width, self.natural_width(renderable))
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


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, names: int = 1,
                drop: Sequence[str] = ()) -> None:
    """A table for people. Its first `names` columns are never cut nor wrapped.

    On a terminal too narrow for it, the columns in `drop` are left out, in that order, until it fits; then
    the other columns wrap at spaces, and if that is not enough, within words. A table whose names alone
    leave no room is printed at its natural width (the terminal wraps its rows), as is any table printed to a
    pipe, with every column: never cut, as a cut name cannot be told from another one, nor copied."""
    from rich.table import Table

    def table(columns: list[int], wrap: bool, widths: dict[int, int] | None = None) -> Table:
        made = Table(box=None, pad_edge=False, header_style="bold")
        for index in columns:
            made.add_column(headers[index], no_wrap=index < names or not wrap, overflow="fold",
                            width=(widths or {}).get(index))
        for row in rows:
            made.add_row(*(str(row[index]) for index in columns))
        return made

    columns = list(range(len(headers)))
    if console.is_terminal:
        for header in (None, *drop):
            if header is not None:
                columns.remove(headers.index(header))
            if console.natural_width(table(columns, wrap=False)) <= console.width:
                console.print(table(columns, wrap=False))
                return
        if console.minimum_width(table(columns, wrap=True)) <= console.width:
            console.print(table(columns, wrap=True))
            return
        widths = _folded_widths(headers, rows, columns, names, console.width)
        if widths is not None:
            console.print(table(columns, wrap=True, widths=widths))
            return
    console.print_unsqueezed(table(columns, wrap=False))


# The least width a folded column is given: narrower, its words would break every few letters.
_FOLDED_MINIMUM = 6


def _folded_widths(headers: Sequence[str], rows: Sequence[Sequence[Any]], columns: list[int], names: int,
                   width: int) -> dict[int, int] | None:
    """Widths for the columns after the names, so that the table fits `width` with each name column whole:
    what the names leave is shared in proportion to each column's natural width; None if too little is left.
    (rich's own squeeze, its last resort, narrows the name columns too.)"""
    from rich.cells import cell_len

    natural = {index: max(cell_len(str(cell)) for cell in (headers[index], *(row[index] for row in rows)))
               for index in columns}
    folded = [index for index in columns if index >= names]
    left = width - 2 * (len(columns) - 1) - sum(natural[index] for index in columns if index < names)
    if not folded:
        return None
    wanted = sum(natural[index] for index in folded)
    least = {index: min(natural[index], max(_FOLDED_MINIMUM, *map(cell_len, headers[index].split())))
             for index in folded}  # a header word whole
    if left < sum(least.values()):
        return None
    widths = {index: max(least[index], natural[index] * left // wanted) for index in folded}
    while sum(widths.values()) > left:  # the least widths may overshoot: take it back from the widest
        widest = max(widths, key=lambda index: widths[index] - least[index])
        widths[widest] -= 1
    return widths


def print_warnings(warnings: Sequence[str]) -> None:
    """Warnings go to stderr, so that --json output on stdout stays one document."""
    for warning in warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}")


def print_error(error: CkptError) -> None:
    err_console.print(f"[bold red]error:[/] {escape(error.message)}", soft_wrap=True)
    for line in error.details:
        err_console.print(f"  {line}", markup=False, soft_wrap=True)
    if error.hint:
        err_console.print(f"[yellow]hint:[/] {escape(error.hint)}", soft_wrap=True)


def relative_time(then: datetime, now: datetime) -> str:
    """`3 min ago`, `in 2 h`: how far `then` is from `now`, roughly, for people."""
    seconds = (now - then).total_seconds()
    span = abs(seconds)
    if span < 1:
        return "now"
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if span >= size:
            amount = int(span // size)
            text = f"{amount} {'day' if unit == 'days' and amount == 1 else unit}"
            return f"{text} ago" if seconds > 0 else f"in {text}"
    raise AssertionError("unreachable")


def parse_time(text: str) -> datetime | None:
    """An ISO time as the manifests and the sidecar write it (UTC when no zone is given); None if it is not one."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def counted(count: int, noun: str) -> str:
    """`1 container`, `5 containers`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")

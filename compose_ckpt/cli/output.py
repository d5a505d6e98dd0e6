"""Printing helpers for the CLI: JSON for scripts, tables and errors for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from compose_ckpt.errors import CkptError

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=False) + "\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(*headers, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    console.print(table)


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

"""What a long command shows on stderr while it works (`--progress`).

The domain reports (item, phase) from its worker threads, a phase that moves bytes with its byte counts
(domain/stack/parallel.py's ProgressEvent). Two displays read those reports:
- plain: one line per phase as it starts, `  1.23s web-1: dumping`; a phase that moves bytes adds a line with
  its bytes and rate at most once a second and when it ends, `  3.40s web-1: dumping 1.2 GiB, 512.0 MiB/s`.
  For logs, pipes and scripts that wait for a phase.
- live (on a terminal): one line per item updated in place with its phase, bytes, rate and time, under a
  header that ends as the command's summary, like `docker compose up`.
The clock is passed in, so both are tested without waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from compose_ckpt.domain.stack.parallel import ProgressEvent, event_of
from compose_ckpt.output import counted, escape, human_size

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

Clock = Callable[[], float]


class Display(Protocol):
    """A progress callback that is told when the command's work has ended."""

    def __call__(self, name: str, phase: str | ProgressEvent) -> None: ...

    def close(self, ok: bool) -> None: ...


class NoDisplay:
    """--progress quiet."""

    def __call__(self, name: str, phase: str | ProgressEvent) -> None:
        pass

    def close(self, ok: bool) -> None:
        pass

# Plain mode prints a phase's byte counts at most this often (seconds), per item.
PLAIN_BYTES_INTERVAL = 1.0


def bytes_text(done: int, total: int | None, seconds: float, *, estimated: bool = False) -> str:
    """`1.2 GiB of 2.0 GiB, 512.0 MiB/s`: what moved, out of what (when known; `of ~2.0 GiB` when estimated),
    and how fast on average."""
    moved = human_size(done) if total is None else f"{human_size(done)} of {'~' * estimated}{human_size(total)}"
    if seconds <= 0:
        return moved
    return f"{moved}, {human_size(int(done / seconds))}/s"


@dataclass
class _Item:
    """One item's current phase, as last reported."""

    phase: str
    began: float  # when this phase started
    done: int | None = None
    total: int | None = None
    estimated: bool = False
    counted_at: float = 0.0  # when `done` was reported: the rate is over the bytes' own time, not the phase's
    printed_done: int | None = None  # plain mode: the byte count last printed, and when
    printed_at: float = 0.0

    @classmethod
    def start(cls, event: ProgressEvent, now: float) -> _Item:
        return cls(event.phase, now, event.done, event.total, event.estimated, counted_at=now, printed_at=now)

    def update(self, event: ProgressEvent, now: float) -> None:
        """Take in a later report of the same phase (counts not given are kept)."""
        if event.done is not None:
            self.done, self.counted_at = event.done, now
        if event.total is not None:
            self.total, self.estimated = event.total, event.estimated

    def bytes_text(self) -> str | None:
        return None if self.done is None else bytes_text(self.done, self.total, self.counted_at - self.began,
                                                            estimated=self.estimated)

    @property
    def warns(self) -> bool:
        return self.phase.startswith("skipped")


def open_display(mode: str, title: str) -> Display:
    """The display `--progress mode` asks for (auto: live on a terminal, else plain), started; `title` heads
    the live one (the command's name)."""
    import sys

    if mode == "quiet":
        return NoDisplay()
    if mode == "tty" or (mode == "auto" and sys.stderr.isatty()):
        from rich.console import Console

        return LiveProgress(Console(stderr=True, force_terminal=True), title)
    from compose_ckpt.output import err_console

    return PlainProgress(lambda line: err_console.print(line))


class PlainProgress:
    """Lines for logs and pipes: each phase once as it starts, byte counts now and then (module docstring)."""

    def __init__(self, write: Callable[[str], None], clock: Clock = time.monotonic) -> None:
        self._write = write
        self._clock = clock
        self._started = clock()
        self._items: dict[str, _Item] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str, phase: str | ProgressEvent) -> None:
        event = event_of(phase)
        with self._lock:
            now = self._clock()
            item = self._items.get(name)
            if item is None or item.phase != event.phase:
                if item is not None:
                    self._flush_bytes(name, item, now)
                item = self._items[name] = _Item.start(event, now)
                self._line(name, item.phase, now)
            else:
                item.update(event, now)
            if item.done is not None and item.done != item.printed_done and (
                    now - item.printed_at >= PLAIN_BYTES_INTERVAL or item.done == item.total):
                self._print_bytes(name, item, now)

    def close(self, ok: bool) -> None:  # noqa: ARG002 - same call as the live display's
        """Print the byte counts not printed yet, so that the last line of each phase has its final count."""
        with self._lock:
            now = self._clock()
            for name, item in self._items.items():
                self._flush_bytes(name, item, now)

    def _flush_bytes(self, name: str, item: _Item, now: float) -> None:
        if item.done is not None and item.done != item.printed_done:
            self._print_bytes(name, item, now)

    def _print_bytes(self, name: str, item: _Item, now: float) -> None:
        item.printed_done, item.printed_at = item.done, now
        self._line(name, f"{item.phase} {item.bytes_text()}", now)

    def _line(self, name: str, text: str, now: float) -> None:
        self._write(f"[dim]{now - self._started:6.2f}s[/] {escape(name)}: {escape(text)}")


@dataclass
class _Row:
    """One line of the live display: the item's phase now, and what its phases with bytes moved."""

    item: _Item
    first_seen: float
    moved: list[str] = field(default_factory=list)  # `dumping 1.2 GiB, 512.0 MiB/s`, once its phase is over

    def keep_bytes(self) -> None:
        text = self.item.bytes_text()
        if text is not None:
            self.moved.append(f"{self.item.phase} {text}")
            self.item.done = None


# Colours and marks as `docker compose` shows its states: green done, bold yellow warning, bold red error,
# blue timers and header.
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_DONE, _WARN, _ERROR, _STOPPED = "[green]✔[/]", "[bold yellow]![/]", "[bold red]✘[/]", "[dim]-[/]"


class LiveProgress:
    """On a terminal: a header and one line per item, redrawn in place (rich's Live); see the module docstring.

    Lines keep to one row each whatever the terminal's width: the phase text gives way first (cut with an
    ellipsis), the name and the time do not."""

    def __init__(self, console: Console, title: str, clock: Clock = time.monotonic, auto_refresh: bool = True) -> None:
        self._console = console
        self._title = title
        self._clock = clock
        self._started = clock()
        self._rows: dict[str, _Row] = {}
        self._ended: float | None = None
        self._ok = True
        self._lock = threading.Lock()
        from rich.live import Live

        self._live = Live(get_renderable=self.render, console=console, refresh_per_second=8, auto_refresh=auto_refresh)
        self._live.start()

    def __call__(self, name: str, phase: str | ProgressEvent) -> None:
        event = event_of(phase)
        with self._lock:
            now = self._clock()
            row = self._rows.get(name)
            if row is None:
                self._rows[name] = _Row(_Item.start(event, now), now)
            elif row.item.phase != event.phase:
                row.keep_bytes()
                row.item = _Item.start(event, now)
            else:
                row.item.update(event, now)

    def close(self, ok: bool) -> None:
        """Show the end: every line marked done (or left where it stopped), the header as the summary."""
        with self._lock:
            self._ended, self._ok = self._clock(), ok
            for row in self._rows.values():
                row.keep_bytes()
        self._live.stop()  # draws the last frame, then leaves it on the screen

    def refresh(self) -> None:
        """Draw now (the display draws 8 times a second on its own unless made with auto_refresh=False)."""
        self._live.refresh()

    def render(self) -> RenderableType:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            now = self._ended if self._ended is not None else self._clock()
            table = Table.grid(padding=(0, 1), expand=True)
            table.add_column(width=2, justify="right", no_wrap=True)
            table.add_column(no_wrap=True)
            table.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
            table.add_column(justify="right", no_wrap=True)
            for name, row in self._rows.items():
                table.add_row(self._mark(row, now), Text(name), self._phase_text(row, now),
                              f"[blue]{now - row.first_seen:.1f}s[/]")
            return Group(self._header(now), table)

    def _header(self, now: float) -> RenderableType:
        from rich.table import Table

        elapsed = f"{now - self._started:.1f}s"
        if self._ended is None:
            text = f"[blue][+][/] {escape(self._title)}: [yellow]{len(self._rows)}[/] under way"
        elif self._ok:
            text = f"[blue][+][/] {escape(self._title)} [green]done[/]: {counted(len(self._rows), 'item')}"
        else:
            text = f"[bold red]✘[/] {escape(self._title)} [bold red]failed[/]"
        header = Table.grid(expand=True)
        header.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
        header.add_column(justify="right", no_wrap=True)
        header.add_row(text, f"[blue]{elapsed}[/]")
        return header

    def _mark(self, row: _Row, now: float) -> str:
        if row.item.warns:
            return _WARN
        if self._ended is not None:
            return _DONE if self._ok else _STOPPED
        return f"[blue]{_SPINNER[int(now * 8) % len(_SPINNER)]}[/]"

    def _phase_text(self, row: _Row, now: float) -> str:
        if row.item.warns:
            return f"[yellow]{escape(row.item.phase)}[/]"
        if self._ended is None:
            moving = row.item.bytes_text()
            return escape(row.item.phase if moving is None else f"{row.item.phase} {moving}")
        if not self._ok:
            return f"[dim]stopped while {escape(row.item.phase)}[/]"
        return "[green]done[/]" + (f" [dim]({escape('; '.join(row.moved))})[/]" if row.moved else "")

"""What a long command shows on stderr while it works (`--progress`).

The domain reports (item, phase) from its worker threads, a phase that moves bytes with its byte counts
(domain/parallel.py's ProgressEvent). Two displays read those reports:
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
from dataclasses import dataclass

from compose_ckpt.domain.parallel import ProgressEvent, event_of
from compose_ckpt.output import escape, human_size

Clock = Callable[[], float]

# Plain mode prints a phase's byte counts at most this often (seconds), per item.
PLAIN_BYTES_INTERVAL = 1.0


def bytes_text(done: int, total: int | None, seconds: float) -> str:
    """`1.2 GiB of 2.0 GiB, 512.0 MiB/s`: what moved, out of what (when known), and how fast on average."""
    moved = human_size(done) if total is None else f"{human_size(done)} of {human_size(total)}"
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
    printed_done: int | None = None  # plain mode: the byte count last printed, and when
    printed_at: float | None = None

    def __post_init__(self) -> None:
        if self.printed_at is None:
            self.printed_at = self.began

    def update(self, event: ProgressEvent) -> None:
        """Take in a later report of the same phase (counts not given are kept)."""
        if event.done is not None:
            self.done = event.done
        if event.total is not None:
            self.total = event.total

    def bytes_text(self, now: float) -> str | None:
        return None if self.done is None else bytes_text(self.done, self.total, now - self.began)


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
                item = self._items[name] = _Item(event.phase, now, event.done, event.total)
                self._line(name, item.phase, now)
            else:
                item.update(event)
            if item.done is not None and item.done != item.printed_done and (
                    now - (item.printed_at or 0.0) >= PLAIN_BYTES_INTERVAL or item.done == item.total):
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
        self._line(name, f"{item.phase} {item.bytes_text(now)}", now)

    def _line(self, name: str, text: str, now: float) -> None:
        self._write(f"[dim]{now - self._started:6.2f}s[/] {escape(name)}: {escape(text)}")

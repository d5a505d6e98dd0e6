"""Run one call per item on a bounded thread pool, keeping results and failures apart."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from compose_ckpt.const import DEFAULT_PARALLEL

__all__ = ["DEFAULT_PARALLEL", "ParallelOutcome", "ProgressCallback", "ProgressEvent", "SharedCount", "bytes_reporter",
           "counted", "describe_failures", "event_of", "run_parallel"]


@dataclass(frozen=True)
class ProgressEvent:
    """Where one item's work stands: its phase and, for work that moves bytes, how many so far.

    `done` counts from 0 at the start of the phase and only grows; `total` is given when known in advance
    (a layer copy's or an upload's is), or `estimated` (a dump's, from the memory its container holds: CRIU
    decides which pages it writes). A phase with bytes is announced once with its
    bytes unknown (the plain string form), then reported as they move, as often as the work finds cheap:
    the display throttles, not the domain."""

    phase: str
    done: int | None = None
    total: int | None = None
    estimated: bool = False  # `total` is an estimate: `done` may end below or above it

    def __str__(self) -> str:
        return self.phase


# Called from any worker thread with (item name, phase) as work progresses: pausing, dumping, ... A plain
# string is a phase with no byte counts; a ProgressEvent adds them. Receivers take both (see event_of).
ProgressCallback = Callable[[str, "str | ProgressEvent"], None]


def event_of(phase: str | ProgressEvent) -> ProgressEvent:
    """A progress report as an event, whichever form it was sent in."""
    return phase if isinstance(phase, ProgressEvent) else ProgressEvent(phase)


def bytes_reporter(progress: ProgressCallback, name: str, phase: str, total: int | None = None, *,
                   estimated: bool = False) -> Callable[[int], None]:
    """For code that counts bytes (`moved(done)`): each count reported as `phase` of `name`."""
    return lambda done: progress(name, ProgressEvent(phase, done, total, estimated))


class SharedCount:
    """Bytes that several threads move for one item, reported as one running total."""

    def __init__(self, moved: Callable[[int], None]) -> None:
        self._moved = moved
        self._done = 0
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        with self._lock:
            self._done += count
            self._moved(self._done)


def counted(chunks: Iterable[bytes], moved: Callable[[int], None]) -> Iterator[bytes]:
    """`chunks` passed on unchanged, `moved` told the bytes passed so far after each one."""
    done = 0
    for chunk in chunks:
        yield chunk
        done += len(chunk)
        moved(done)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class ParallelOutcome(Generic[K, V]):
    """What one `run_parallel` gave: each item's result, or the exception its call raised."""

    results: dict[K, V] = field(default_factory=dict)
    failures: dict[K, Exception] = field(default_factory=dict)

    def raise_first(self) -> None:
        """For callers with nothing to undo: re-raise the first failure, if any."""
        for exc in self.failures.values():
            raise exc


def run_parallel(items: Sequence[K], call: Callable[[K], V], workers: int) -> ParallelOutcome[K, V]:
    """Call `call(item)` for every item, at most `workers` at a time; wait for all of them."""
    outcome: ParallelOutcome[K, V] = ParallelOutcome()
    if not items:
        return outcome
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        futures = {item: pool.submit(call, item) for item in items}
        for item, future in futures.items():
            try:
                outcome.results[item] = future.result()
            except Exception as exc:  # noqa: BLE001 - collected and reported by the caller
                outcome.failures[item] = exc
    return outcome


def describe_failures(failures: dict[str, Exception]) -> list[str]:
    """One line per failed item, then that error's own detail lines (such as CRIU's log), indented."""
    lines: list[str] = []
    for item, exc in sorted(failures.items()):
        lines.append(f"{item}: {exc}")
        lines.extend(f"  {line}" for line in getattr(exc, "details", []))
    return lines

"""Run one call per item on a bounded thread pool, keeping results and failures apart."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from compose_ckpt.const import DEFAULT_PARALLEL

__all__ = ["DEFAULT_PARALLEL", "Outcome", "ProgressCallback", "describe_failures", "run_parallel"]

# Called with (container name, phase) as work progresses: pausing, dumping, ...
ProgressCallback = Callable[[str, str], None]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class Outcome(Generic[K, V]):
    results: dict[K, V] = field(default_factory=dict)
    failures: dict[K, Exception] = field(default_factory=dict)

    def raise_first(self) -> None:
        """For callers with nothing to undo: re-raise the first failure, if any."""
        for exc in self.failures.values():
            raise exc


def run_parallel(items: Sequence[K], call: Callable[[K], V], workers: int) -> Outcome[K, V]:
    """Call `call(item)` for every item, at most `workers` at a time; wait for all of them."""
    outcome: Outcome[K, V] = Outcome()
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

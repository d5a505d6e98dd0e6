"""The sidecar's run pool: each job's run on a thread of its own, at most `concurrency` at once.

One run per job at a time (a job due again while its run goes on is skipped, and
counted); a run waits for a slot, then calls the runner and reports the outcome to
the metrics and the log itself. The daemon's main thread launches runs, resizes the
pool on reload and asks it to report runs past the timeout; nothing else.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from compose_ckpt.errors import CkptError, NeedsAdoption
from compose_ckpt.sidecar.log import Log
from compose_ckpt.sidecar.metrics import Key, Metrics
from compose_ckpt.sidecar.policy import StackJob
from compose_ckpt.sidecar.runner import RunResult

POLL = 0.5  # a run waiting for a slot sees `cancelled` this soon


class JobRunner(Protocol):
    """What the pool asks of `sidecar.runner.Runner`: one run of one job."""

    def run(self, job: StackJob) -> RunResult: ...


class Slots:
    """At most `limit` runs at once; the limit can change on reload."""

    def __init__(self, limit: int) -> None:
        self._condition = threading.Condition()
        self._limit = limit
        self._used = 0

    def resize(self, limit: int) -> None:
        with self._condition:
            self._limit = limit
            self._condition.notify_all()

    def acquire(self, cancelled: threading.Event) -> bool:
        """Wait for a free slot; False when `cancelled` is set first."""
        with self._condition:
            while self._used >= self._limit:
                if cancelled.is_set():
                    return False
                self._condition.wait(POLL)
            if cancelled.is_set():
                return False
            self._used += 1
            return True

    def release(self) -> None:
        with self._condition:
            self._used -= 1
            self._condition.notify()


@dataclass
class _Run:
    job: StackJob
    reason: str
    started: float | None = None  # on the pool's clock; None while waiting for a slot
    timed_out: bool = False
    thread: threading.Thread = field(init=False)


class RunPool:
    """`cancelled` is the daemon stopping: runs still waiting for a slot give up; runs in progress go on.
    `clock` is monotonic seconds (the tests pass their own)."""

    def __init__(self, runner: JobRunner, metrics: Metrics, log: Log, concurrency: int, cancelled: threading.Event,
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self._runner = runner
        self._metrics = metrics
        self._log = log
        self._slots = Slots(concurrency)
        self._cancelled = cancelled
        self._clock = clock
        self._runs: dict[Key, _Run] = {}
        self._lock = threading.Lock()
        self._needing_adoption: set[Key] = set()  # jobs refused for it, logged once until a run succeeds

    def resize(self, concurrency: int) -> None:
        self._slots.resize(concurrency)

    def launch(self, job: StackJob, reason: str) -> None:
        """Start a run of `job` (`reason`: schedule, trigger; for the log), or skip it if one is still going."""
        with self._lock:
            if job.key in self._runs:
                self._metrics.skipped(job.key)
                self._log.warning("run_skipped", project=job.project_name, job=job.job, reason=reason,
                                  why="the previous run of this job is still going")
                return
            run = self._runs[job.key] = _Run(job, reason)
            run.thread = threading.Thread(target=self._run, args=(run,), name=f"run-{job.project_name}-{job.job}")
        run.thread.start()

    def in_progress(self) -> int:
        """Runs that hold a slot (not those waiting for one)."""
        with self._lock:
            return len([r for r in self._runs.values() if r.started is not None])

    def join(self) -> None:
        """Wait until every run launched so far has ended."""
        with self._lock:
            running = list(self._runs.values())
        for run in running:
            run.thread.join()

    def check_timeouts(self, limit_seconds: float) -> None:
        """Report each run going on for longer than `limit_seconds`, once."""
        now = self._clock()
        with self._lock:
            late = [r for r in self._runs.values()
                    if r.started is not None and not r.timed_out and now - r.started > limit_seconds]
            for run in late:
                run.timed_out = True
        for run in late:
            # Interrupting a frozen stack would be worse than waiting: report, and let it finish or roll back.
            self._metrics.timed_out(run.job.key, time.time())
            self._log.error("run_timeout", project=run.job.project_name, job=run.job.job, limit_seconds=limit_seconds)

    def _run(self, run: _Run) -> None:
        try:
            if not self._slots.acquire(self._cancelled):
                return  # shutting down before it could start
            try:
                run.started = self._clock()
                self._run_job(run.job, run.reason, run.started)
            finally:
                self._slots.release()
        finally:
            with self._lock:
                del self._runs[run.job.key]

    def _run_job(self, job: StackJob, reason: str, started: float) -> None:
        self._log.info("run_started", project=job.project_name, job=job.job, reason=reason,
                       services=",".join(job.services))
        try:
            result = self._runner.run(job)
        except NeedsAdoption as exc:
            # Not a failure of the sidecar: nothing was frozen. Say it once, count it every time.
            self._metrics.needs_adoption(job.key)
            if job.key not in self._needing_adoption:
                self._needing_adoption.add(job.key)
                self._log.error("needs_adoption", project=job.project_name, job=job.job, error=exc.message,
                                hint=exc.hint)
        except CkptError as exc:
            self._metrics.finished(job.key, False, self._clock() - started, time.time(), error=exc.message)
            self._log.error("run_failed", project=job.project_name, job=job.job, error=exc.message, hint=exc.hint,
                            details="; ".join(exc.details) or None)
        except Exception as exc:  # noqa: BLE001 - a bug must not take the daemon down
            self._metrics.finished(job.key, False, self._clock() - started, time.time(),
                                   error=f"internal error: {type(exc).__name__}: {exc}")
            self._log.error("run_failed", project=job.project_name, job=job.job,
                            error=f"internal error: {type(exc).__name__}: {exc}")
        else:
            if result.drift:
                self._metrics.adoption_drift(job.key)
                self._log.warning("adoption_drift", project=job.project_name, job=job.job, error=result.drift,
                                  hint="Run `compose-ckpt adopt` in the project folder.")
            self._needing_adoption.discard(job.key)
            self._metrics.finished(job.key, True, result.seconds, time.time(), pruned=len(result.pruned),
                                   snapshot=result.snapshot)
            self._log.info("run_done", project=job.project_name, job=job.job, snapshot=result.snapshot,
                           seconds=result.seconds, pruned=",".join(result.pruned) or None,
                           push="queued" if result.push_queued else None)

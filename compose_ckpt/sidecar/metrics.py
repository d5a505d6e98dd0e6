"""Counters of job runs, shown as Prometheus text at /metrics, the health /healthz reports, and the last
outcomes (snapshot, error, push) that /status and the page at / show."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace

Key = tuple[str, str]  # (project_name, job)

PREFIX = "compose_ckpt_sidecar_"


@dataclass
class JobStats:
    runs: int = 0
    failures: int = 0
    skips: int = 0
    timeouts: int = 0
    needs_adoption: int = 0
    adoption_drift: int = 0
    pruned: int = 0
    last_success: float | None = None
    last_duration: float | None = None
    duration_sum: float = 0.0
    last_failed: bool = False
    pushes: int = 0
    push_failures: int = 0
    pushed_bytes: int = 0
    registry_pruned: int = 0
    last_push_success: float | None = None
    # For /status: what the last run and the last push did, and the last error of each (Unix times).
    last_run_at: float | None = None
    last_snapshot: str | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    last_pushed: str | None = None
    last_push_error: str | None = None
    last_push_error_at: float | None = None


# Per-job series: name, type, help, value (None: not shown yet).
_SERIES: tuple[tuple[str, str, str, Callable[[JobStats], float | int | None]], ...] = (
    ("runs_total", "counter", "Job runs that finished, successful or not.", lambda s: s.runs),
    ("failures_total", "counter", "Job runs that failed (the stack was rolled back).", lambda s: s.failures),
    ("skips_total", "counter", "Scheduled runs skipped because the previous run of the job was still going.",
     lambda s: s.skips),
    ("timeouts_total", "counter", "Runs that took longer than run-timeout (reported failed, left to finish).",
     lambda s: s.timeouts),
    ("pruned_total", "counter", "Snapshots removed by the job's retention.", lambda s: s.pruned),
    ("needs_adoption_total", "counter", "Runs refused before anything was frozen: on Docker 28+ the stack has "
     "containers with their own network namespace (run `compose-ckpt adopt`).", lambda s: s.needs_adoption),
    ("adoption_drift_total", "counter", "Runs of an adopted stack whose compose files changed so that the file "
     "`adopt` wrote no longer matches them (run `compose-ckpt adopt`).", lambda s: s.adoption_drift),
    ("last_success_timestamp_seconds", "gauge", "When the job last succeeded (Unix time).", lambda s: s.last_success),
    ("last_run_duration_seconds", "gauge", "How long the job's last run took.", lambda s: s.last_duration),
    ("pushes_total", "counter", "Snapshots pushed to the job's registry.", lambda s: s.pushes),
    ("push_failures_total", "counter", "Push attempts that failed (each is retried with backoff).",
     lambda s: s.push_failures),
    ("pushed_bytes_total", "counter", "Compressed bytes uploaded to the registry (blobs it lacked).",
     lambda s: s.pushed_bytes),
    ("registry_pruned_total", "counter", "Artifacts deleted from the registry by the job's retention.",
     lambda s: s.registry_pruned),
    ("last_push_success_timestamp_seconds", "gauge", "When a snapshot of the job was last pushed (Unix time).",
     lambda s: s.last_push_success),
)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[Key, JobStats] = defaultdict(JobStats)
        self.engine_up = False
        self.scheduled = 0
        self._boot: dict[tuple[str, str], int] = defaultdict(int)  # (project_name, outcome) -> services or restores

    def boot_skipped(self, project_name: str, reason: str) -> None:
        """A restore-on-boot service left alone, and why (no-snapshot, live-snapshot, ran-after-snapshot, ...)."""
        with self._lock:
            self._boot[(project_name, reason)] += 1

    def boot_restored(self, project_name: str, ok: bool) -> None:
        with self._lock:
            self._boot[(project_name, "restored" if ok else "failed")] += 1

    def finished(self, key: Key, ok: bool, seconds: float, at: float, pruned: int = 0, *,
                 snapshot: str | None = None, error: str | None = None) -> None:
        with self._lock:
            stats = self._jobs[key]
            stats.runs += 1
            stats.failures += 0 if ok else 1
            stats.pruned += pruned
            stats.last_duration = seconds
            stats.duration_sum += seconds
            stats.last_failed = not ok
            stats.last_run_at = at
            if ok:
                stats.last_success = at
                stats.last_snapshot = snapshot
            else:
                stats.last_error, stats.last_error_at = error, at

    def pushed(self, key: Key, at: float, uploaded_bytes: int, pruned: int, snapshot: str | None = None) -> None:
        with self._lock:
            stats = self._jobs[key]
            stats.pushes += 1
            stats.pushed_bytes += uploaded_bytes
            stats.registry_pruned += pruned
            stats.last_push_success = at
            stats.last_pushed = snapshot

    def push_failed(self, key: Key, error: str | None = None, at: float | None = None) -> None:
        with self._lock:
            stats = self._jobs[key]
            stats.push_failures += 1
            stats.last_push_error, stats.last_push_error_at = error, at

    def job_stats(self) -> dict[Key, JobStats]:
        """A copy of every job's numbers, for /status."""
        with self._lock:
            return {key: replace(stats) for key, stats in self._jobs.items()}

    def skipped(self, key: Key) -> None:
        with self._lock:
            self._jobs[key].skips += 1

    def needs_adoption(self, key: Key) -> None:
        with self._lock:
            self._jobs[key].needs_adoption += 1

    def adoption_drift(self, key: Key) -> None:
        with self._lock:
            self._jobs[key].adoption_drift += 1

    def timed_out(self, key: Key, at: float | None = None) -> None:
        with self._lock:
            stats = self._jobs[key]
            stats.timeouts += 1
            stats.last_failed = True
            stats.last_error, stats.last_error_at = "the run took longer than run-timeout (left to finish)", at

    def forget_failures(self, keys: list[Key]) -> None:
        """Jobs that no longer exist no longer count against health (their counters stay)."""
        with self._lock:
            for key in keys:
                if key in self._jobs:
                    self._jobs[key].last_failed = False

    def health(self) -> tuple[bool, str]:
        with self._lock:
            if not self.engine_up:
                return False, "engine unreachable"
            failing = sorted(f"{project_name}/{job}" for (project_name, job), s in self._jobs.items() if s.last_failed)
        return (False, "last run failed: " + ", ".join(failing)) if failing else (True, "ok")

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        with self._lock:
            jobs = sorted(self._jobs.items())
            lines = [
                f"# HELP {PREFIX}engine_up Whether the Docker engine answered the last call.",
                f"# TYPE {PREFIX}engine_up gauge", f"{PREFIX}engine_up {int(self.engine_up)}",
                f"# HELP {PREFIX}jobs Jobs on the timetable.",
                f"# TYPE {PREFIX}jobs gauge", f"{PREFIX}jobs {self.scheduled}",
            ]
            for name, kind, text, value in _SERIES:
                lines += [f"# HELP {PREFIX}{name} {text}", f"# TYPE {PREFIX}{name} {kind}"]
                lines += [f"{PREFIX}{name}{{{_labels(key)}}} {_number(value(s))}"
                          for key, s in jobs if value(s) is not None]
            lines += [f"# HELP {PREFIX}boot_restores_total Restore-on-boot outcomes at start: restores (restored, "
                      "failed) and services skipped, by reason.", f"# TYPE {PREFIX}boot_restores_total counter"]
            lines += [f'{PREFIX}boot_restores_total{{project="{_escape(project_name)}",outcome="{_escape(outcome)}"}} {count}'
                      for (project_name, outcome), count in sorted(self._boot.items())]
            lines += [f"# HELP {PREFIX}run_duration_seconds Duration of job runs.",
                      f"# TYPE {PREFIX}run_duration_seconds summary"]
            for key, s in jobs:
                lines += [f"{PREFIX}run_duration_seconds_sum{{{_labels(key)}}} {_number(s.duration_sum)}",
                          f"{PREFIX}run_duration_seconds_count{{{_labels(key)}}} {s.runs}"]
        return "\n".join(lines) + "\n"


def _labels(key: Key) -> str:
    project_name, job = key
    return f'project="{_escape(project_name)}",job="{_escape(job)}"'


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float | int | None) -> str:
    return repr(round(value, 6)) if isinstance(value, float) else str(value)

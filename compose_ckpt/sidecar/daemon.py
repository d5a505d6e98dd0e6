"""`compose-ckpt-sidecar serve`: the loop that keeps the timetable and starts runs.

One main thread owns the state (config, timetable, what is running). Other
threads only post messages to it: the Docker event reader (containers came or
went: resync), the file watcher (config changed: reload; a trigger file:
run now) and the run threads, which report to metrics and the log themselves.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo, UTC
from pathlib import Path
from types import FrameType

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from compose_ckpt.const import LABEL_PROJECT
from compose_ckpt.domain import safefs
from compose_ckpt.domain.store import SnapshotStore
from compose_ckpt.engine import Engine
from compose_ckpt.errors import CkptError, NeedsAdoption
from compose_ckpt.sidecar.config import SidecarConfig, load_config
from compose_ckpt.sidecar.http import StatusServer
from compose_ckpt.sidecar.log import Log
from compose_ckpt.sidecar.metrics import Key, Metrics
from compose_ckpt.sidecar.boot import boot_plan
from compose_ckpt.sidecar.policy import ENABLE, BootMode, Problem, StackJob
from compose_ckpt.sidecar.pusher import Pusher
from compose_ckpt.sidecar.runner import Discovery, Runner, discover
from compose_ckpt.sidecar.timetable import Timetable

EVENT_WINDOW = 5.0  # seconds per /events request: reconnects, and picks up a new label prefix, this often
TICK = 0.5  # the main loop looks at signals and timeouts at least this often
RETRY = 2.0  # seconds between attempts while the engine is unreachable


@dataclass(frozen=True)
class Message:
    kind: str  # "resync" | "reload" | "trigger"
    argument: str = ""


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
                self._condition.wait(TICK)
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
    started: float | None = None  # monotonic; None while waiting for a slot
    timed_out: bool = False
    thread: threading.Thread = field(init=False)


class Sidecar:
    def __init__(self, config_file: Path, zone: tzinfo, store: SnapshotStore, log: Log) -> None:
        self.config_file = config_file.absolute()
        self.zone = zone
        self.store = store
        self.log = log
        self.config: SidecarConfig = load_config(self.config_file, zone)  # invalid at start: refuse to start
        self.metrics = Metrics()
        self.pusher = Pusher(store, self.metrics, log)
        self.timetable = Timetable()
        self.inbox: queue.Queue[Message] = queue.Queue()
        self.stopping = threading.Event()
        self.slots = Slots(self.config.concurrency)
        self.runs: dict[tuple[str, str], _Run] = {}
        self.runs_lock = threading.Lock()
        self.discovery = Discovery([], [], [])  # as of the last resync
        self.reported: set[Problem] = set()
        self.needing_adoption: set[Key] = set()  # jobs refused for it, logged once until a run succeeds
        self.engine_known: bool | None = None  # whether the engine answered last time; None: not asked yet
        self.engine: Engine | None = None
        self.runner: Runner | None = None
        self.http: StatusServer | None = None
        self.observer: BaseObserver = Observer()
        self.trigger_watch: ObservedWatch | None = None

    # --- life cycle ------------------------------------------------------------

    def serve(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.log.info("starting", config=self.config_file, pid=os.getpid(), **self._config_fields())
        self._start_http()
        self._watch_files()
        self.pusher.start()
        if self._connect():
            threading.Thread(target=self._read_events, name="events", daemon=True).start()
            self._restore_on_boot()
            self._loop()
        self._shut_down()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only set a flag: the main thread may hold any lock at this moment.
        self.stopping.set()

    def _connect(self) -> bool:
        """Connect and read the labelled containers once; retry while the engine is unreachable."""
        while not self.stopping.is_set():
            try:
                self.engine = self.engine or Engine.connect()
                self.runner = self.runner or Runner(self.engine, self.store, self.pusher)
            except CkptError as exc:
                self._engine_state(False, exc.message)
                self.stopping.wait(RETRY)
                continue
            if self._resync():
                return True
            self.stopping.wait(RETRY)
        return False

    def _loop(self) -> None:
        next_resync = time.monotonic() + self.config.resync_interval.total_seconds()
        while not self.stopping.is_set():
            wakeup = self.timetable.next_wakeup()
            wait = TICK if wakeup is None else (wakeup - datetime.now(UTC)).total_seconds()
            try:
                messages = [self.inbox.get(timeout=min(max(wait, 0.0), TICK))]
            except queue.Empty:
                messages = []
            while not self.inbox.empty():
                messages.append(self.inbox.get_nowait())
            if self.stopping.is_set():
                break
            for message in messages:
                if message.kind == "reload":
                    self._reload()
                elif message.kind == "trigger":
                    self._trigger(message.argument)
            if any(m.kind in ("resync", "reload") for m in messages) or time.monotonic() >= next_resync:
                self._resync()
                next_resync = time.monotonic() + self.config.resync_interval.total_seconds()
            for job in self.timetable.due(datetime.now(UTC)):
                self._launch(job, "schedule")
            self._check_timeouts()

    def _shut_down(self) -> None:
        """Start nothing new; let runs in progress finish (or roll back) so no snapshot is left half-written."""
        with self.runs_lock:
            running = list(self.runs.values())
        self.log.info("stopping", runs_in_progress=len([r for r in running if r.started is not None]))
        for run in running:
            run.thread.join()
        self.pusher.stop()
        self.observer.stop()
        if self.http is not None:
            self.http.stop()
        self.log.info("stopped")

    # --- discovery -------------------------------------------------------------

    def _resync(self) -> bool:
        assert self.engine is not None
        try:
            found = discover(self.engine, self.config.rules(self.zone))
        except CkptError as exc:
            self._engine_state(False, str(exc))
            return False
        self._engine_state(True)
        self.discovery = found
        self._report(found)
        changed, removed = self.timetable.update(found.jobs, datetime.now(UTC))
        for entry in changed:
            job = entry.job
            assert job.schedule is not None and job.retention is not None
            self.log.info("job_scheduled", project=job.project_name, job=job.job, schedule=job.schedule.text,
                          services=",".join(job.services), keep=job.retention.keep,
                          max_age_seconds=int(job.retention.max_age.total_seconds()) if job.retention.max_age else None,
                          leave_running=job.leave_running, push=str(job.push) if job.push else None,
                          with_volumes=job.with_volumes,
                          next_run=entry.next_run.isoformat(timespec="seconds"))
        for project_name, job_name in removed:
            self.log.info("job_unscheduled", project=project_name, job=job_name)
        self.metrics.forget_failures(removed)
        self.metrics.scheduled = len(self.timetable.entries)
        return True

    def _report(self, found: Discovery) -> None:
        """Log each label problem once, when it appears."""
        current = set(found.problems)
        for problem in sorted(current - self.reported, key=lambda p: (p.container, p.label)):
            self.log.error("bad_label", container=problem.container, label=problem.label, problem=problem.message)
        self.reported = current

    def _engine_state(self, up: bool, error: str | None = None) -> None:
        """Log when the engine becomes reachable or unreachable, not at every failed retry."""
        if up != self.engine_known:
            if up:
                self.log.info("engine_reachable")
            else:
                self.log.error("engine_unreachable", error=error)
        self.engine_known = up
        self.metrics.engine_up = up

    def _read_events(self) -> None:
        """Post a resync for every start, die, destroy or rename of a labelled container."""
        since = time.time()
        while not self.stopping.is_set():
            until = time.time() + EVENT_WINDOW
            assert self.engine is not None
            try:
                for event in self.engine.events(f"{self.config.label_prefix}.{ENABLE}", since, until):
                    self.log.info("container_event", action=event.action, container=event.attributes.get("name"),
                                  project=event.attributes.get(LABEL_PROJECT))
                    self.inbox.put(Message("resync"))
                since = until
            except CkptError as exc:  # the adapter turns a stream cut by a daemon restart into this too
                self._engine_state(False, str(exc))
                self.stopping.wait(RETRY)
                self.inbox.put(Message("resync"))  # events missed meanwhile: read everything again

    # --- runs -----------------------------------------------------------------

    def _launch(self, job: StackJob, reason: str) -> None:
        with self.runs_lock:
            if job.key in self.runs:
                self.metrics.skipped(job.key)
                self.log.warning("run_skipped", project=job.project_name, job=job.job, reason=reason,
                                 why="the previous run of this job is still going")
                return
            run = self.runs[job.key] = _Run(job, reason)
            run.thread = threading.Thread(target=self._run, args=(run,), name=f"run-{job.project_name}-{job.job}")
        run.thread.start()

    def _run(self, run: _Run) -> None:
        job = run.job
        try:
            if not self.slots.acquire(self.stopping):
                return  # shutting down before it could start
            try:
                assert self.runner is not None
                run.started = time.monotonic()
                self.log.info("run_started", project=job.project_name, job=job.job, reason=run.reason,
                              services=",".join(job.services))
                try:
                    result = self.runner.run(job)
                except NeedsAdoption as exc:
                    # Not a failure of the sidecar: nothing was frozen. Say it once, count it every time.
                    self.metrics.needs_adoption(job.key)
                    if job.key not in self.needing_adoption:
                        self.needing_adoption.add(job.key)
                        self.log.error("needs_adoption", project=job.project_name, job=job.job, error=exc.message,
                                       hint=exc.hint)
                except CkptError as exc:
                    self.metrics.finished(job.key, False, time.monotonic() - run.started, time.time())
                    self.log.error("run_failed", project=job.project_name, job=job.job, error=exc.message, hint=exc.hint,
                                   details="; ".join(exc.details) or None)
                except Exception as exc:  # noqa: BLE001 - a bug must not take the daemon down
                    self.metrics.finished(job.key, False, time.monotonic() - run.started, time.time())
                    self.log.error("run_failed", project=job.project_name, job=job.job,
                                   error=f"internal error: {type(exc).__name__}: {exc}")
                else:
                    self.needing_adoption.discard(job.key)
                    self.metrics.finished(job.key, True, result.seconds, time.time(), pruned=len(result.pruned))
                    self.log.info("run_done", project=job.project_name, job=job.job, snapshot=result.snapshot,
                                  seconds=result.seconds, pruned=",".join(result.pruned) or None,
                                  push="queued" if result.push_queued else None)
            finally:
                self.slots.release()
        finally:
            with self.runs_lock:
                del self.runs[job.key]

    def _check_timeouts(self) -> None:
        limit = self.config.run_timeout.total_seconds()
        with self.runs_lock:
            late = [r for r in self.runs.values()
                    if r.started is not None and not r.timed_out and time.monotonic() - r.started > limit]
            for run in late:
                run.timed_out = True
        for run in late:
            # Interrupting a frozen stack would be worse than waiting: report, and let it finish or roll back.
            self.metrics.timed_out(run.job.key)
            self.log.error("run_timeout", project=run.job.project_name, job=run.job.job, limit_seconds=limit)

    def _trigger(self, file_name: str) -> None:
        """A file `PROJECT` in the trigger folder: a manual snapshot now; `PROJECT.JOB`: that job now."""
        try:
            (self.config.trigger_dir / file_name).unlink()
        except FileNotFoundError:
            return  # one drop makes several file events; the first one took it
        project_name, _, job_name = file_name.partition(".")
        try:
            job = self.discovery.job(project_name, job_name or None)
        except CkptError as exc:
            self.log.error("trigger_refused", file=file_name, error=exc.message)
            return
        self._launch(job, "trigger")

    def _restore_on_boot(self) -> None:
        """Restore the exited restore-on-boot services that can be restored safely; say why for the others."""
        assert self.runner is not None
        projects = sorted({p.project_name for p in self.discovery.policies if p.restore_on_boot is not BootMode.OFF})
        snapshots = {}
        for project_name in projects:
            try:
                snapshots[project_name] = self.store.list(project_name)
            except CkptError as exc:
                self.log.error("boot_restore_failed", project=project_name, error=exc.message)
        restores, skips = boot_plan(self.discovery.policies, snapshots)
        for skip in skips:
            self.metrics.boot_skipped(skip.project_name, skip.reason)
            self.log.warning("boot_restore_skipped", project=skip.project_name, service=skip.service, reason=skip.reason,
                             why=skip.message)
        for plan in restores:
            self.log.info("boot_restore_started", project=plan.project_name, snapshot=plan.snapshot,
                          services=",".join(plan.services), mode=plan.mode.name.lower())
            try:
                result = self.runner.restore(plan)
            except CkptError as exc:
                self.metrics.boot_restored(plan.project_name, False)
                self.log.error("boot_restore_failed", project=plan.project_name, error=exc.message, hint=exc.hint,
                               details="; ".join(exc.details) or None)
                continue
            self.metrics.boot_restored(plan.project_name, True)
            self.log.info("boot_restore_done", project=plan.project_name, snapshot=result.snapshot.name,
                          containers=",".join(c.container for c in result.containers))
        if restores:
            self._resync()

    # --- config and files ----------------------------------------------------------

    def _config_fields(self) -> dict[str, object]:
        c = self.config
        return {"label_prefix": c.label_prefix, "concurrency": c.concurrency,
                "resync_seconds": int(c.resync_interval.total_seconds()),
                "run_timeout_seconds": int(c.run_timeout.total_seconds()), "http_port": c.http_port,
                "trigger_dir": c.trigger_dir, "extra_jobs": ",".join(c.jobs) or None}

    def _reload(self) -> None:
        try:
            new = load_config(self.config_file, self.zone)
        except CkptError as exc:
            self.log.error("config_invalid", file=self.config_file, error=exc.message, kept="the previous config")
            return
        if new == self.config:
            return  # one save often makes several file events
        old, self.config = self.config, new
        self.log.info("config_reloaded", **self._config_fields())
        self.slots.resize(new.concurrency)
        if new.http_port != old.http_port:
            if self.http is not None:
                self.http.stop()
                self.http = None
            self._start_http()
        if new.trigger_dir != old.trigger_dir:
            self._watch_trigger_dir()

    def _start_http(self) -> None:
        if self.config.http_port == 0:
            return
        try:
            self.http = StatusServer(self.metrics, self.config.http_port)
        except OSError as exc:
            self.log.error("http_failed", port=self.config.http_port, error=str(exc))
            return
        self.http.start()
        self.log.info("http_listening", port=self.config.http_port)

    def _watch_files(self) -> None:
        folder = self.config_file.parent
        if folder.is_dir():
            self.observer.schedule(_Handler(lambda path: path == self.config_file, self._post_reload), str(folder))
        else:
            self.log.warning("config_not_watched", file=self.config_file, why=f"{folder} does not exist")
        self._watch_trigger_dir()
        self.observer.start()

    def _post_reload(self, path: Path) -> None:
        self.inbox.put(Message("reload"))

    def _watch_trigger_dir(self) -> None:
        if self.trigger_watch is not None:
            self.observer.unschedule(self.trigger_watch)
            self.trigger_watch = None
        folder = self.config.trigger_dir
        try:  # a file there starts a snapshot: a folder others can write is refused, a missing one made 0700
            safefs.trusted_chain(folder, create=True)
        except (OSError, CkptError) as exc:
            self.log.error("trigger_dir_failed", folder=folder, error=str(exc))
            return
        self.trigger_watch = self.observer.schedule(
            _Handler(lambda path: path.parent == folder.absolute() and path.is_file(), self._post_trigger), str(folder))
        for existing in sorted(folder.iterdir()):  # dropped while the sidecar was not watching
            if existing.is_file():
                self._post_trigger(existing)

    def _post_trigger(self, path: Path) -> None:
        if not path.name.startswith("."):  # editors' and tools' temporary files
            self.inbox.put(Message("trigger", path.name))


class _Handler(FileSystemEventHandler):
    """Calls `action(path)` when a file that `wanted(path)` accepts is complete: closed after
    writing, or renamed into place (reacting on creation would read it half-written)."""

    def __init__(self, wanted: Callable[[Path], bool], action: Callable[[Path], None]) -> None:
        self.wanted = wanted
        self.action = action

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type not in ("closed", "moved"):
            return
        path = Path(os.fsdecode(event.dest_path if event.event_type == "moved" else event.src_path))
        if self.wanted(path):
            self.action(path)

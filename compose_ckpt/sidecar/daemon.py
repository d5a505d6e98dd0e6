"""`compose-ckpt-sidecar serve`: the loop that keeps the timetable and starts runs.

One main thread owns the state (config, timetable, discovery). Other threads only
post messages to it: the Docker event reader (containers came or went: resync) and
the file watcher (`watch.py`: config changed: reload; a trigger file: run now). Runs
go to the run pool (`runs.py`), whose threads report to metrics and the log themselves.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from types import FrameType
from typing import Any

from compose_ckpt.const import LABEL_PROJECT
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.engine import Engine
from compose_ckpt.errors import CkptError
from compose_ckpt.sidecar.boot import boot_plan
from compose_ckpt.sidecar.config import SidecarConfig, load_config
from compose_ckpt.sidecar.http import StatusServer
from compose_ckpt.sidecar.log import Log
from compose_ckpt.sidecar.metrics import Metrics
from compose_ckpt.sidecar.policy import ENABLE, BootMode, Problem, StackJob
from compose_ckpt.sidecar.pusher import Pusher
from compose_ckpt.sidecar.runner import Discovery, Runner, discover
from compose_ckpt.sidecar.runs import RunPool
from compose_ckpt.sidecar.status import sidecar_status
from compose_ckpt.sidecar.timetable import Timetable
from compose_ckpt.sidecar.watch import FileWatcher

EVENT_WINDOW = 5.0  # seconds per /events request: reconnects, and picks up a new label prefix, this often
TICK = 0.5  # the main loop looks at signals and timeouts at least this often
RETRY = 2.0  # seconds between attempts while the engine is unreachable


@dataclass(frozen=True)
class Message:
    kind: str  # "resync" | "reload" | "trigger"
    argument: str = ""


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
        self.discovery = Discovery([], [], [])  # as of the last resync
        self.reported: set[Problem] = set()
        self.engine_known: bool | None = None  # whether the engine answered last time; None: not asked yet
        self.engine: Engine | None = None
        self.runner: Runner | None = None
        self.runs: RunPool | None = None  # made with the runner, once the engine answers
        self.http: StatusServer | None = None
        # The timetable as /status shows it: replaced whole by the main thread, read by the HTTP threads.
        self.schedule_view: list[tuple[StackJob, datetime]] = []
        self.watcher = FileWatcher(self.config_file, log, on_config=lambda: self.inbox.put(Message("reload")),
                                   on_trigger=lambda name: self.inbox.put(Message("trigger", name)))

    # --- life cycle ------------------------------------------------------------

    def serve(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.log.info("starting", config=self.config_file, pid=os.getpid(), **self._config_fields())
        self._start_http()
        self.watcher.start(self.config.trigger_dir)
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
                self.runs = self.runs or RunPool(self.runner, self.metrics, self.log, self.config.concurrency,
                                                 self.stopping)
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
            assert self.runs is not None
            for job in self.timetable.due(datetime.now(UTC)):
                self.runs.launch(job, "schedule")
            self._publish_schedule()
            self.runs.check_timeouts(self.config.run_timeout.total_seconds())

    def _shut_down(self) -> None:
        """Start nothing new; let runs in progress finish (or roll back) so no snapshot is left half-written."""
        self.log.info("stopping", runs_in_progress=self.runs.in_progress() if self.runs else 0)
        if self.runs is not None:
            self.runs.join()
        self.pusher.stop()
        self.watcher.stop()
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
        self._publish_schedule()
        return True

    def _publish_schedule(self) -> None:
        self.schedule_view = [(entry.job, entry.next_run) for entry in self.timetable.entries.values()]

    def status(self) -> dict[str, Any]:
        """What /status and the page at / show (see sidecar/status.py); called on the HTTP threads."""
        return sidecar_status(self.schedule_view, self.metrics.job_stats(), self.pusher.waiting(), self.store,
                              engine_up=self.metrics.engine_up, problems=self.discovery.problems,
                              label_prefix=self.config.label_prefix, now=datetime.now(UTC))

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
        assert self.runs is not None
        self.runs.launch(job, "trigger")

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
        if self.runs is not None:
            self.runs.resize(new.concurrency)
        if new.http_port != old.http_port:
            if self.http is not None:
                self.http.stop()
                self.http = None
            self._start_http()
        if new.trigger_dir != old.trigger_dir:
            self.watcher.watch_trigger_dir(new.trigger_dir)

    def _start_http(self) -> None:
        if self.config.http_port == 0:
            return
        try:
            self.http = StatusServer(self.metrics, self.config.http_port, self.status)
        except OSError as exc:
            self.log.error("http_failed", port=self.config.http_port, error=str(exc))
            return
        self.http.start()
        self.log.info("http_listening", port=self.config.http_port)

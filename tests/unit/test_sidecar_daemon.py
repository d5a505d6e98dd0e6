"""Timetable, metrics, the log, the run pool (with a fake runner instead of the engine), file watching and triggers."""

import io
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.errors import NeedsAdoption, SnapshotFailed
from compose_ckpt.sidecar.config import SidecarConfig
from compose_ckpt.sidecar.daemon import Sidecar
from compose_ckpt.sidecar.log import Log, format_line
from compose_ckpt.sidecar.metrics import Metrics
from compose_ckpt.sidecar.policy import Retention, StackJob
from compose_ckpt.sidecar.runner import RunResult
from compose_ckpt.sidecar.runs import RunPool, Slots
from compose_ckpt.sidecar.schedule import parse_schedule
from compose_ckpt.sidecar.timetable import Timetable
from compose_ckpt.sidecar.watch import FileWatcher

UTC = UTC
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def job(project_name: str = "shop", name: str = "default", schedule: str = "@every 10s",
        services: tuple[str, ...] = ("web",)) -> StackJob:
    return StackJob(project_name, name, services, f"auto-{name}-", True, parse_schedule(schedule, UTC), Retention(2))


def test_timetable_keeps_the_next_run_of_unchanged_schedules() -> None:
    table = Timetable()
    changed, removed = table.update([job(), job(name="daily", schedule="@daily")], NOW)
    assert [e.next_run for e in changed] == [NOW + timedelta(seconds=10), datetime(2026, 3, 2, tzinfo=UTC)]
    later = NOW + timedelta(seconds=4)
    changed, removed = table.update([job(services=("db", "web")), job(name="daily", schedule="@hourly")], later)
    assert [(e.job.job, e.next_run) for e in changed] == [
        ("default", NOW + timedelta(seconds=10)),  # more services, same schedule: same time
        ("daily", datetime(2026, 3, 1, 13, tzinfo=UTC)),  # new schedule: new time
    ]
    assert table.update([job(name="daily", schedule="@hourly")], later) == ([], [("shop", "default")])


def test_timetable_due_moves_jobs_on() -> None:
    table = Timetable()
    table.update([job(), job(project_name="blog", schedule="@every 30s")], NOW)
    assert table.next_wakeup() == NOW + timedelta(seconds=10)
    assert table.due(NOW + timedelta(seconds=5)) == []
    at = NOW + timedelta(seconds=11)  # a second late
    assert [j.project_name for j in table.due(at)] == ["shop"]
    assert table.next_wakeup() == NOW + timedelta(seconds=20)  # on schedule again: the delay is not carried on


def test_timetable_skips_ticks_missed_while_late_instead_of_bursting() -> None:
    table = Timetable()
    table.update([job()], NOW)
    assert [j.project_name for j in table.due(NOW + timedelta(seconds=35))] == ["shop"]  # 10, 20 and 30 were due
    assert table.next_wakeup() == NOW + timedelta(seconds=40)
    assert table.due(NOW + timedelta(seconds=36)) == []


def test_metrics_text_and_health() -> None:
    metrics = Metrics()
    assert metrics.health() == (False, "engine unreachable")
    metrics.engine_up = True
    metrics.finished(("shop", "default"), True, 1.5, 1700000000.0, pruned=1)
    metrics.finished(('we"ird', "daily"), False, 0.25, 1700000001.0)
    metrics.skipped(("shop", "default"))
    text = metrics.render()
    assert 'compose_ckpt_sidecar_runs_total{project="shop",job="default"} 1' in text
    assert 'compose_ckpt_sidecar_skips_total{project="shop",job="default"} 1' in text
    assert 'compose_ckpt_sidecar_pruned_total{project="shop",job="default"} 1' in text
    assert 'compose_ckpt_sidecar_failures_total{project="we\\"ird",job="daily"} 1' in text
    assert 'compose_ckpt_sidecar_last_success_timestamp_seconds{project="shop",job="default"} 1700000000.0' in text
    assert 'compose_ckpt_sidecar_run_duration_seconds_count{project="shop",job="default"} 1' in text
    assert "# TYPE compose_ckpt_sidecar_runs_total counter" in text
    assert metrics.health() == (False, 'last run failed: we"ird/daily')
    metrics.forget_failures([('we"ird', "daily")])
    assert metrics.health() == (True, "ok")


def test_log_lines_are_logfmt() -> None:
    line = format_line("info", "run_done", {"project": "shop", "error": 'say "hi"\nbye', "none": None}, NOW)
    assert line == 'time=2026-03-01T12:00:00.000Z level=info event=run_done project=shop error="say \\"hi\\"\\nbye"'


def test_log_writes_one_logfmt_line_per_event_to_its_own_stream() -> None:
    first, second = io.StringIO(), io.StringIO()
    Log(first).error("run_failed", project="shop", details=None, seconds=1.5)
    Log(second).warning("run_skipped", why="still going")
    stamp = r"time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(stamp + " level=error event=run_failed project=shop seconds=1.5\n", first.getvalue())
    assert re.fullmatch(stamp + ' level=warning event=run_skipped why="still going"\n', second.getvalue())


def test_slots_cap_runs_and_give_up_when_cancelled() -> None:
    slots, cancelled = Slots(1), threading.Event()
    assert slots.acquire(cancelled)
    outcomes: list[bool] = []
    waiting = threading.Thread(target=lambda: outcomes.append(slots.acquire(cancelled)))
    waiting.start()
    waiting.join(0.3)
    assert outcomes == []  # the one slot is held: a second run waits (a failure here is real, never a slow machine)
    slots.release()
    waiting.join(5)
    assert outcomes == [True]  # and gets the slot once it is free
    slots.resize(2)
    assert slots.acquire(cancelled)  # a reload that raises the limit lets one more in at once
    giving_up = threading.Thread(target=lambda: outcomes.append(slots.acquire(cancelled)))
    giving_up.start()
    cancelled.set()
    giving_up.join(5)
    assert outcomes == [True, False]  # full, and the daemon stops: it gives up instead of waiting on


class FakeRunner:
    """Blocks every run until released; fails when told to."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.fail = False
        self.needs_adoption = False
        self.drift: str | None = None

    def run(self, job: StackJob) -> RunResult:
        self.started.set()
        self.release.wait(5)
        if self.needs_adoption:
            raise NeedsAdoption("cannot snapshot: Docker 28.5.2 cannot restore ...", hint="Run `compose-ckpt adopt web`")
        if self.fail:
            raise SnapshotFailed("snapshot failed while dumping shop-web-1")
        return RunResult("auto-default-x", job.services, ["auto-default-old"], 0.5, drift=self.drift)


@dataclass
class Pool:
    runs: RunPool
    runner: FakeRunner
    metrics: Metrics
    out: io.StringIO
    clock: list[float]  # monotonic seconds, moved on by the test


def pool(concurrency: int = 2) -> Pool:
    runner, metrics, out, clock = FakeRunner(), Metrics(), io.StringIO(), [100.0]
    runs = RunPool(runner, metrics, Log(out), concurrency, threading.Event(), clock=lambda: clock[0])
    return Pool(runs, runner, metrics, out, clock)


def test_a_run_still_going_makes_the_next_tick_skip() -> None:
    p = pool()
    p.runs.launch(job(), "schedule")
    assert p.runner.started.wait(5)
    p.runs.launch(job(), "schedule")
    p.runs.launch(job(project_name="blog"), "schedule")  # another job is not held up
    p.runner.release.set()
    p.runs.join()
    text = p.metrics.render()
    assert 'compose_ckpt_sidecar_skips_total{project="shop",job="default"} 1' in text
    assert 'compose_ckpt_sidecar_runs_total{project="shop",job="default"} 1' in text
    assert 'compose_ckpt_sidecar_runs_total{project="blog",job="default"} 1' in text
    assert "event=run_skipped project=shop job=default" in p.out.getvalue()
    assert p.runs.in_progress() == 0
    p.runs.launch(job(), "schedule")  # over: the job runs again
    p.runs.join()
    assert 'compose_ckpt_sidecar_runs_total{project="shop",job="default"} 2' in p.metrics.render()


def test_a_failed_run_is_logged_and_makes_health_fail() -> None:
    p = pool()
    p.metrics.engine_up = True
    p.runner.fail = True
    p.runner.release.set()
    p.runs.launch(job(), "schedule")
    p.runs.join()
    assert "level=error event=run_failed project=shop job=default" in p.out.getvalue()
    assert p.metrics.health() == (False, "last run failed: shop/default")


def test_an_adopted_stack_whose_compose_files_drifted_is_logged_and_counted_and_still_taken() -> None:
    p = pool()
    p.metrics.engine_up = True
    p.runner.drift = "the compose files changed since `compose-ckpt adopt` wrote compose.ckpt.yaml"
    p.runner.release.set()
    p.runs.launch(job(), "schedule")
    p.runs.join()
    assert "level=warning event=adoption_drift project=shop job=default" in p.out.getvalue()
    assert "Run `compose-ckpt adopt`" in p.out.getvalue()
    text = p.metrics.render()
    assert 'compose_ckpt_sidecar_adoption_drift_total{project="shop",job="default"} 1' in text
    assert 'compose_ckpt_sidecar_failures_total{project="shop",job="default"} 0' in text
    assert p.metrics.health() == (True, "ok")


def test_a_stack_needing_adoption_is_logged_once_and_counted_not_failed() -> None:
    p = pool()
    p.metrics.engine_up = True
    p.runner.needs_adoption = True
    p.runner.release.set()
    for _ in range(3):
        p.runs.launch(job(), "schedule")
        p.runs.join()
    assert p.out.getvalue().count("event=needs_adoption") == 1 and "compose-ckpt adopt web" in p.out.getvalue()
    assert 'compose_ckpt_sidecar_needs_adoption_total{project="shop",job="default"} 3' in p.metrics.render()
    assert p.metrics.health() == (True, "ok")
    p.runner.needs_adoption = False  # adopted: runs succeed, and a relapse is logged again
    p.runs.launch(job(), "schedule")
    p.runs.join()
    p.runner.needs_adoption = True
    p.runs.launch(job(), "schedule")
    p.runs.join()
    assert p.out.getvalue().count("event=needs_adoption") == 2


def test_a_run_past_the_timeout_is_reported_once() -> None:
    p = pool()
    p.runs.launch(job(), "schedule")
    assert p.runner.started.wait(5)
    p.runs.check_timeouts(1.0)
    p.clock[0] += 2
    p.runs.check_timeouts(1.0)
    p.runs.check_timeouts(1.0)
    p.runner.release.set()
    p.runs.join()
    assert p.out.getvalue().count("event=run_timeout") == 1
    assert "event=run_timeout project=shop job=default limit_seconds=1.0" in p.out.getvalue()
    assert 'compose_ckpt_sidecar_timeouts_total{project="shop",job="default"} 1' in p.metrics.render()


def test_trigger_files_are_reported_by_name_those_already_there_too(tmp_path: Path) -> None:
    folder = tmp_path / "trigger"
    folder.mkdir(mode=0o700)
    for name in ("shop", "blog.daily", ".shop.swp"):
        (folder / name).write_text("")
    (folder / "sub").mkdir()
    names: list[str] = []
    FileWatcher(tmp_path / "sidecar.yaml", Log(io.StringIO()), on_config=lambda: None,
                on_trigger=names.append).watch_trigger_dir(folder)
    assert names == ["blog.daily", "shop"]  # not temporary files, not folders


def daemon(tmp_path: Path) -> tuple[Sidecar, io.StringIO]:
    out = io.StringIO()
    config = tmp_path / "sidecar.yaml"
    config.write_text("http-port: 0\n")
    return Sidecar(config, UTC, SnapshotStore(tmp_path / "store"), Log(out)), out


def test_a_trigger_file_for_an_unknown_project_is_refused_and_removed(tmp_path: Path) -> None:
    sidecar, out = daemon(tmp_path)
    sidecar.config = SidecarConfig(http_port=0, trigger_dir=tmp_path)
    (tmp_path / "nosuch").write_text("")
    sidecar._trigger("nosuch")
    assert not (tmp_path / "nosuch").exists()
    assert "event=trigger_refused file=nosuch" in out.getvalue()

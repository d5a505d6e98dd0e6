"""The sidecar at a glance: every scheduled job with its last snapshot, next run, retention, last error and
push state, as one JSON document (`GET /status`), an HTML page (`GET /`) and terminal tables
(`compose-ckpt-sidecar status`).

The document is built from what the daemon knows (its timetable, the run and push outcomes in Metrics)
and from the store (the job's newest complete snapshot); the page and the tables only read the document.
Names come from container labels, so the page escapes every value it shows: it has no script, loads
nothing from elsewhere (CSS inline) and refreshes itself with a meta refresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from compose_ckpt.domain.store.manifest import Manifest, SnapshotStatus
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.errors import CkptError
from compose_ckpt.output import counted, human_size, parse_time, relative_time
from compose_ckpt.sidecar.metrics import JobStats, Key
from compose_ckpt.sidecar.policy import Problem, StackJob

REFRESH_SECONDS = 10
WRAPPING_COLUMNS = (4, 5, 6)  # retention, last error, push: their lines wrap; names and times do not


def _iso(moment: datetime | float | None) -> str | None:
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def sidecar_status(schedule: Sequence[tuple[StackJob, datetime]], stats: dict[Key, JobStats],
                   waiting_pushes: dict[Key, str], store: SnapshotStore, *, engine_up: bool,
                   problems: Sequence[Problem], label_prefix: str, now: datetime) -> dict[str, Any]:
    """The document of `GET /status` (its fields are listed in sidecar/README.md)."""
    listed: dict[str, list[Manifest] | str] = {}
    for project_name in sorted({job.project_name for job, _ in schedule}):
        try:
            listed[project_name] = store.list(project_name)
        except CkptError as exc:
            listed[project_name] = exc.message
    jobs = []
    for job, next_run in sorted(schedule, key=lambda entry: entry[0].key):
        numbers = stats.get(job.key, JobStats())
        manifests = listed[job.project_name]
        jobs.append({
            "project": job.project_name, "job": job.job, "services": list(job.services),
            "schedule": job.schedule.text if job.schedule else None, "next_run": _iso(next_run),
            "retention": {"keep": job.retention.keep if job.retention else None,
                          "max_age_seconds": int(job.retention.max_age.total_seconds())
                          if job.retention and job.retention.max_age else None},
            "leave_running": job.leave_running, "with_volumes": job.with_volumes,
            "last_snapshot": _last_snapshot(manifests, job.prefix) if isinstance(manifests, list) else None,
            "store_error": manifests if isinstance(manifests, str) else None,
            "runs": numbers.runs, "failures": numbers.failures,
            "last_run": None if numbers.last_run_at is None else {
                "at": _iso(numbers.last_run_at), "ok": not numbers.last_failed, "seconds": numbers.last_duration},
            "last_error": None if numbers.last_error is None else {
                "message": numbers.last_error, "at": _iso(numbers.last_error_at)},
            "push": None if job.push is None else {
                "to": str(job.push), "pushes": numbers.pushes, "failures": numbers.push_failures,
                "last_pushed": numbers.last_pushed, "last_pushed_at": _iso(numbers.last_push_success),
                "waiting": waiting_pushes.get(job.key),
                "last_error": None if numbers.last_push_error is None else {
                    "message": numbers.last_push_error, "at": _iso(numbers.last_push_error_at)}},
        })
    return {"generated": _iso(now), "engine_up": engine_up, "label_prefix": label_prefix, "jobs": jobs,
            "problems": [{"container": p.container, "label": p.label, "message": p.message} for p in problems]}


def _last_snapshot(manifests: list[Manifest], prefix: str) -> dict[str, Any] | None:
    mine = [m for m in manifests if m.name.startswith(prefix) and m.status is SnapshotStatus.COMPLETE]
    if not mine:
        return None
    last = mine[-1]  # the store lists oldest first
    return {"name": last.name, "created": last.created, "size": last.size, "seconds": last.total_seconds,
            "frozen_seconds": last.freeze_seconds, "stopped": last.stopped}


# --- for people ---------------------------------------------------------------------


def when(text: str | None, now: datetime) -> str:
    """An ISO time with how long ago (or until) it is: `2026-12-06T22:40:00Z (3 min ago)`."""
    moment = parse_time(text) if text else None
    if text is None or moment is None:
        return text or "-"
    return f"{text} ({relative_time(moment, now)})"


def retention_text(retention: dict[str, Any]) -> str:
    parts = []
    if retention["keep"] is not None:
        parts.append(f"keep {retention['keep']}")
    if retention["max_age_seconds"] is not None:
        parts.append(f"max age {retention['max_age_seconds'] // 86400} days" if retention["max_age_seconds"] % 86400 == 0
                     else f"max age {retention['max_age_seconds']} s")
    return ", ".join(parts) or "kept until removed"


def snapshot_lines(job: dict[str, Any], now: datetime) -> list[str]:
    """The last snapshot: name, time, size, duration, frozen window; or why there is none."""
    last = job["last_snapshot"]
    if last is None:
        return [f"none yet ({job['store_error']})" if job["store_error"] else "none yet"]
    return [last["name"], when(last["created"], now),
            f"{human_size(last['size'])} in {last['seconds']:.2f}s, frozen {last['frozen_seconds']:.2f}s"]


def error_lines(job: dict[str, Any], now: datetime) -> list[str]:
    error = job["last_error"]
    return [] if error is None else [error["message"], when(error["at"], now)]


def push_lines(job: dict[str, Any], now: datetime) -> list[str]:
    push = job["push"]
    if push is None:
        return ["not pushed"]
    lines = [f"to {push['to']}"]
    if push["last_pushed"]:
        lines.append(f"pushed {push['last_pushed']} {when(push['last_pushed_at'], now)}")
    if push["waiting"]:
        lines.append(f"waiting: {push['waiting']}")
    if push["last_error"]:
        lines.append(f"failed {counted(push['failures'], 'time')}, last: {push['last_error']['message']} "
                     f"{when(push['last_error']['at'], now)}")
    return lines


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d1d1f; background: #fff; }
h1 { font-size: 1.3em; margin: 0 0 .2em; }
p.meta { color: #555; margin: 0 0 1em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: .45em .6em; border-bottom: 1px solid #ddd; }
th { background: #f4f4f6; font-weight: 600; }
td div { white-space: nowrap; } td.wrap div { white-space: normal; min-width: 9em; }
td div + div { color: #555; font-size: .92em; }
.ok { color: #1a7f37; font-weight: 600; } .failed { color: #c62828; font-weight: 600; }
.down { color: #c62828; font-weight: 600; } .none { color: #777; }
.error { color: #c62828; }
code { font: 13px ui-monospace, monospace; }
"""


def render_page(document: dict[str, Any], now: datetime) -> str:
    """The HTML page of `GET /`: one row per job; every value escaped."""
    rows = []
    for job in document["jobs"]:
        state = ("none", "no run yet") if job["last_run"] is None else \
            ("ok", "ok") if job["last_run"]["ok"] else ("failed", "failed")
        rows.append("<tr>" + "".join(f'<td class="wrap">{cell}</td>' if index in WRAPPING_COLUMNS else f"<td>{cell}</td>"
                                     for index, cell in enumerate((
            _cell([f"<strong>{escape(job['project'])}</strong>", f"job {escape(job['job'])}",
                   "services: " + escape(", ".join(job["services"]))]),
            _cell([f"<code>{escape(job['schedule'] or '-')}</code>", "next: " + escape(when(job["next_run"], now))]),
            _cell([f'<span class="{state[0]}">{state[1]}</span>',
                   f"{job['runs']} runs, {job['failures']} failed"]),
            _cell([escape(line) for line in snapshot_lines(job, now)]),
            _cell([escape(retention_text(job["retention"])),
                   ("leaves the stack running" if job["leave_running"] else "stops the stack")
                   + (", with volumes" if job["with_volumes"] else "")]),
            _cell([f'<span class="error">{escape(line)}</span>' if index == 0 else escape(line)
                   for index, line in enumerate(error_lines(job, now))] or ['<span class="none">none</span>']),
            _cell([escape(line) for line in push_lines(job, now)]),
        ))) + "</tr>")
    problems = "".join(f"<li><code>{escape(p['container'])}</code> {escape(p['label'])}: {escape(p['message'])}</li>"
                       for p in document["problems"])
    engine = '<span class="ok">reachable</span>' if document["engine_up"] else '<span class="down">unreachable</span>'
    body = (f"<h1>compose-ckpt sidecar</h1>"
            f"<p class=\"meta\">Docker engine {engine} · {len(document['jobs'])} scheduled jobs · "
            f"as of {escape(document['generated'])} · refreshes every {REFRESH_SECONDS} s · "
            f"<a href=\"/status\">JSON</a> · <a href=\"/metrics\">metrics</a></p>"
            "<table><thead><tr><th>Stack</th><th>Schedule</th><th>Last run</th><th>Last snapshot</th>"
            "<th>Retention</th><th>Last error</th><th>Registry push</th></tr></thead><tbody>"
            + ("".join(rows) or '<tr><td colspan="7" class="none">no scheduled jobs: label containers with '
                                f'<code>{escape(document["label_prefix"])}.enable=true</code> and a schedule</td></tr>')
            + "</tbody></table>"
            + (f"<h2>Label problems</h2><ul>{problems}</ul>" if problems else ""))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>compose-ckpt sidecar</title><style>{_STYLE}</style></head><body>{body}</body></html>\n")


def _cell(lines: list[str]) -> str:
    """Lines already escaped, one <div> each."""
    return "".join(f"<div>{line}</div>" for line in lines)

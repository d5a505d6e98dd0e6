"""The sidecar's /status document and its page: what they say of each job, and that label text stays text."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.registry.reference import parse_reference
from compose_ckpt.sidecar.metrics import Metrics
from compose_ckpt.sidecar.policy import Problem, Retention, StackJob
from compose_ckpt.sidecar.schedule import parse_schedule
from compose_ckpt.sidecar.status import render_page, sidecar_status
from tests.terminal import Terminal
from tests.unit.test_store import manifest, with_checkpoint

NOW = datetime(2026, 12, 6, 22, 0, tzinfo=UTC)
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def job(name: str = "hourly", **fields: object) -> StackJob:
    settings: dict[str, object] = {"schedule": parse_schedule("@hourly", UTC), "retention": Retention(keep=24),
                                   **fields}
    return StackJob("proj", name, ("web",), f"auto-{name}-", **settings)  # type: ignore[arg-type]


def stored(tmp_path: Path, *names: str) -> SnapshotStore:
    store = SnapshotStore(tmp_path)
    for name in names:
        store.write(manifest(name))
        with_checkpoint(store, name)
    return store


def test_each_job_shows_its_last_snapshot_next_run_retention_last_error_and_push(tmp_path: Path) -> None:
    store = stored(tmp_path, "auto-hourly-1", "auto-hourly-2", "manual-1")
    metrics = Metrics()
    hourly, daily = job(), job("daily", push=parse_reference("127.0.0.1:5000/proj/snaps"))
    metrics.finished(hourly.key, False, 1.5, NOW.timestamp() - 600, error="checkpoint of proj-web-1 failed")
    metrics.finished(hourly.key, True, 2.0, NOW.timestamp() - 60, snapshot="auto-hourly-2")
    metrics.push_failed(daily.key, "registry unreachable", NOW.timestamp() - 30)
    document = sidecar_status([(hourly, NOW + timedelta(minutes=30)), (daily, NOW + timedelta(hours=5))],
                              metrics.job_stats(), {daily.key: "auto-daily-9"}, store, engine_up=True, problems=[],
                              label_prefix="compose-ckpt", now=NOW)
    first, second = document["jobs"]
    assert (first["job"], second["job"]) == ("daily", "hourly")  # sorted by project, then job
    assert second["last_snapshot"]["name"] == "auto-hourly-2" and second["last_snapshot"]["size"] == 10
    assert second["next_run"] == "2026-12-06T22:30:00Z" and second["retention"] == {"keep": 24, "max_age_seconds": None}
    assert second["last_run"] == {"at": "2026-12-06T21:59:00Z", "ok": True, "seconds": 2.0}
    assert second["last_error"] == {"message": "checkpoint of proj-web-1 failed", "at": "2026-12-06T21:50:00Z"}
    assert (second["runs"], second["failures"], second["push"]) == (2, 1, None)
    assert first["last_snapshot"] is None and first["last_run"] is None
    assert first["push"] == {"to": "127.0.0.1:5000/proj/snaps", "pushes": 0, "failures": 1, "last_pushed": None,
                             "last_pushed_at": None, "waiting": "auto-daily-9",
                             "last_error": {"message": "registry unreachable", "at": "2026-12-06T21:59:30Z"}}

    page = render_page(document, NOW)
    for shown in ("auto-hourly-2", "2026-12-06T22:30:00Z (in 30 min)", "keep 24", "(10 min ago)",
                  "checkpoint of proj-web-1 failed", "waiting: auto-daily-9", "registry unreachable"):
        assert shown in page, shown
    assert '<meta http-equiv="refresh"' in page


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_names_from_labels_stay_text_on_the_page(tmp_path: Path) -> None:
    hostile = StackJob(HOSTILE, HOSTILE[:40].replace("<", "x"), (HOSTILE,), "auto-x-",
                       schedule=parse_schedule("@hourly", UTC), retention=Retention(keep=1))
    metrics = Metrics()
    metrics.finished(hostile.key, False, 1.0, NOW.timestamp(), error=HOSTILE)
    document = sidecar_status([(hostile, NOW)], metrics.job_stats(), {}, SnapshotStore(tmp_path), engine_up=False,
                              problems=[Problem(HOSTILE, HOSTILE, HOSTILE)], label_prefix=HOSTILE, now=NOW)
    elements = _Elements()
    elements.feed(render_page(document, NOW))
    assert not elements.tags & {"script", "img", "iframe", "link", "object"}
    assert not {name for name in elements.attributes if name.startswith("on")} and "src" not in elements.attributes
    assert HOSTILE in "".join(elements.text)  # shown as the text it is


def test_the_server_serves_the_page_and_the_json_and_the_status_command_prints_them(tmp_path: Path) -> None:
    import json
    import socket
    import urllib.request

    from typer.testing import CliRunner

    from compose_ckpt.sidecar.cli import app
    from compose_ckpt.sidecar.http import StatusServer

    store = stored(tmp_path, "auto-hourly-1")
    metrics = Metrics()
    hourly = job()
    metrics.finished(hourly.key, False, 1.5, NOW.timestamp() - 600, error="checkpoint of proj-web-1 failed")
    metrics.finished(hourly.key, True, 2.0, NOW.timestamp() - 60, snapshot="auto-hourly-1")
    with socket.socket() as probe:  # a free port for the server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = StatusServer(metrics, port, lambda: sidecar_status(
        [(hourly, NOW + timedelta(minutes=30))], metrics.job_stats(), {}, store, engine_up=True, problems=[],
        label_prefix="compose-ckpt", now=NOW), bind_address="127.0.0.1")
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(url + "/") as page:
            assert page.headers["Content-Type"] == "text/html; charset=utf-8"
            assert "default-src 'none'" in page.headers["Content-Security-Policy"]
            assert "auto-hourly-1" in page.read().decode()
        with urllib.request.urlopen(url + "/status") as document:
            assert json.loads(document.read())["jobs"][0]["last_snapshot"]["name"] == "auto-hourly-1"
        printed = CliRunner().invoke(app, ["status", "--url", url])
        assert printed.exit_code == 0, printed.output
        for shown in ("proj / hourly  ok", "auto-hourly-1", "keep 24", "checkpoint of proj-web-1 failed", "not pushed"):
            assert shown in printed.output, printed.output
        assert json.loads(CliRunner().invoke(app, ["status", "--url", url, "--json"]).output)["engine_up"] is True
        # On a narrow terminal each fact wraps between words under its own column, never back to the margin.
        terminal = Terminal([sys.executable, "-c", "from compose_ckpt.sidecar.cli import entry; entry()", "status", "--url", url],
                            columns=40)
        assert terminal.finish(timeout=60) == 0
        lines = terminal.lines()
        facts = lines[lines.index("proj / hourly  ok") + 1:]
        assert all(line.startswith("  ") for line in facts), "\n".join(lines)
        assert max(len(line.rstrip()) for line in terminal.written_lines()) <= 40
        assert " ".join(line[13:] for line in facts).count("checkpoint of proj-web-1 failed") == 1
    finally:
        server.stop()
    refused = CliRunner().invoke(app, ["status", "--url", url])
    assert refused.exit_code == 1 and "cannot read the sidecar's status" in str(refused.exception or refused.output)

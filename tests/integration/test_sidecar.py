"""The sidecar image, run as a container against the real engine, as users run it.

Each sidecar gets its own label prefix (`ckptside<id>`), so it sees only the
containers of its own test; the stack, the sidecar container and the image are
removed afterwards. The module's tests share one stack and one sidecar and run
in file order; the last one stops the sidecar.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from compose_ckpt.const import ENV_HOME
from compose_ckpt.domain.store.manifest import SnapshotStatus
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.engine import Engine
from tests.integration.browser import render
from tests.integration.conftest import adopt_if_needed
from tests.integration.stack import BUSYBOX, COUNTER, Stack, daemon_socket, run_docker
from tests.polling import holds_for, wait_for

pytestmark = pytest.mark.engine
REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = "/etc/compose-ckpt"
TRIGGER_DIR = "/run/compose-ckpt/trigger"
PORT = 9321


def counter_service(prefix: str, labels: dict[str, str], depends_on: str | None = None) -> str:
    lines = [f"    image: {BUSYBOX}", f'    command: ["sh", "-c", "{COUNTER}"]', '    restart: "no"']
    if depends_on:
        lines.append(f"    depends_on: [{depends_on}]")
    lines.append("    labels:")
    lines += [f'      {prefix}.{key}: "{value}"' for key, value in labels.items()]
    return "\n".join(lines)


@dataclass
class Sidecar:
    name: str
    prefix: str
    config_dir: Path
    trigger_dir: Path

    def logs(self) -> str:
        return run_docker("logs", self.name).stderr

    def events(self, event: str, **fields: str) -> list[str]:
        wanted = [f"event={event}", *(f"{key}={value}" for key, value in fields.items())]
        return [line for line in self.logs().splitlines() if all(f" {w}" in line for w in wanted)]

    def exec(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_docker("exec", self.name, *args, check=False)

    def http(self, path: str) -> tuple[int, str]:
        """GET from inside the container (no port is published)."""
        url = f"http://127.0.0.1:{PORT}{path}"
        script = ("import sys, urllib.request, urllib.error\n"
                  f"try:\n    r = urllib.request.urlopen({url!r}, timeout=5)\n"
                  "except urllib.error.HTTPError as e:\n    r = e\n"
                  "sys.stdout.write(f'{r.status}\\n{r.read().decode()}')\n")
        status, _, body = self.exec("python3", "-c", script).stdout.partition("\n")
        return int(status), body

    def status(self) -> str:
        """What `compose-ckpt-sidecar status` prints in the container (the config may be mid-test: --url)."""
        printed = self.exec("compose-ckpt-sidecar", "status", "--url", f"http://127.0.0.1:{PORT}")
        assert printed.returncode == 0, printed.stderr
        return printed.stdout

    def write_config(self, text: str) -> None:
        path = self.config_dir / "sidecar.yaml"
        temporary = path.with_name(".sidecar.yaml.tmp")
        temporary.write_text(text)
        temporary.replace(path)  # as editors and config tools do: a rename, never a half-written file


@pytest.fixture(scope="module")
def sidecar_image(engine: Engine) -> Iterator[str]:
    tag = f"ckptside{uuid.uuid4().hex[:8]}/sidecar:test"
    built = subprocess.run(["make", "sidecar-image", f"SIDECAR_IMAGE={tag}"], cwd=REPO,
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, f"make sidecar-image failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}"
    yield tag
    run_docker("rmi", "-f", tag, check=False)


def start_sidecar(image: str, name: str, prefix: str, folder: Path, store: Path) -> Sidecar:
    config_dir, trigger_dir = folder / "config", folder / "trigger"
    config_dir.mkdir()
    trigger_dir.mkdir()
    sidecar = Sidecar(name, prefix, config_dir, trigger_dir)
    sidecar.write_config(f"label-prefix: {prefix}\nresync-interval: 10s\n")
    # No network: it needs only the socket, and its HTTP is read from inside (the default bridge may be gone
    # while another daemon on this machine runs, see ENGINE-FACTS).
    run_docker("run", "-d", "--name", name, "--network", "none",
               "-v", f"{daemon_socket()}:/var/run/docker.sock",
               "-v", f"{store}:{store}", "-e", f"{ENV_HOME}={store}",
               "-v", f"{config_dir}:{CONFIG_DIR}", "-v", f"{trigger_dir}:{TRIGGER_DIR}", image, "serve")
    wait_for("the sidecar to start", lambda: sidecar.events("engine_reachable"))
    return sidecar


def counts(stack: Stack) -> dict[str, int]:
    """The counters of services one and two."""
    return stack.counts_of("one", "two")


def log_time(line: str) -> datetime:
    return datetime.fromisoformat(re.search(r"^time=(\S+)", line).group(1).replace("Z", "+00:00"))  # type: ignore[union-attr]


# --- scheduled runs, labels, triggers, config, health -------------------------------


@dataclass
class Running:
    stack: Stack
    sidecar: Sidecar
    store: Path


@pytest.fixture(scope="module")
def running(sidecar_image: str, tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> Iterator[Running]:
    test_id = uuid.uuid4().hex[:8]
    prefix = project = f"ckptside{test_id}"
    folder = tmp_path_factory.mktemp("sidecar")
    every = {"enable": "true", "schedule": "@every 3s", "keep": "2"}
    bad = {"enable": "true", "schedule": "every 3 seconds"}
    (folder / "compose.yaml").write_text("services:\n"
                                         f"  one:\n{counter_service(prefix, every)}\n"
                                         f"  two:\n{counter_service(prefix, every, depends_on='one')}\n"
                                         f"  bad:\n{counter_service(prefix, bad)}\n")
    stack = Stack(folder, project)
    store = folder / "store"
    try:
        stack.compose("up", "-d")
        adopt_if_needed(engine, stack)
        yield Running(stack, start_sidecar(sidecar_image, f"{project}-sidecar", prefix, folder, store), store)
    finally:
        run_docker("rm", "-f", f"{project}-sidecar", check=False)
        stack.down()


@pytest.fixture
def live(running: Running, monkeypatch: pytest.MonkeyPatch) -> Running:
    """The shared stack and sidecar; the CLI run by the test uses the sidecar's store."""
    monkeypatch.setenv(ENV_HOME, str(running.store))
    return running


def done_runs(sidecar: Sidecar, job: str = "default") -> list[str]:
    return sidecar.events("run_done", project=sidecar.prefix, job=job)


def test_scheduled_runs_every_3s(live: Running) -> None:
    sidecar = live.sidecar
    scheduled = sidecar.events("job_scheduled", project=sidecar.prefix, job="default")
    assert "services=one,two" in scheduled[0] and "keep=2" in scheduled[0]
    next_run = datetime.fromisoformat(re.search(r"next_run=(\S+)", scheduled[0]).group(1))  # type: ignore[union-attr]
    assert 2 <= (next_run - log_time(scheduled[0])).total_seconds() <= 4  # its first run 3 s ahead, to the second
    # Counted, not timed: under load a run may outlast the interval, and the next tick is then skipped.
    def three_runs() -> list[str] | None:
        runs = done_runs(sidecar)
        return runs if len(runs) >= 3 else None

    runs = wait_for("3 scheduled runs", three_runs, timeout=90)
    assert all("snapshot=auto-default-" in line for line in runs)
    assert len({re.search(r"snapshot=(\S+)", line).group(1) for line in runs}) == len(runs)  # type: ignore[union-attr]


def test_bad_labels_are_logged_once_and_skipped(live: Running) -> None:
    sidecar = live.sidecar
    bad = f"{sidecar.prefix}-bad-1"
    wait_for("a resync", lambda: len(done_runs(sidecar)) >= 1)
    lines = sidecar.events("bad_label", container=bad, label=f"{sidecar.prefix}.schedule")
    assert len(lines) == 1 and "level=error" in lines[0] and "invalid schedule" in lines[0]
    assert all("bad" not in line.split("services=")[1] for line in sidecar.events("job_scheduled"))


def test_trigger_file_and_exec_run_snapshot_now(live: Running) -> None:
    sidecar, stack = live.sidecar, live.stack
    (sidecar.trigger_dir / stack.project).write_text("")
    wait_for("the triggered run", lambda: done_runs(sidecar, job="manual"))
    assert not (sidecar.trigger_dir / stack.project).exists()

    done = sidecar.exec("compose-ckpt-sidecar", "run", stack.project, "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["snapshot"].startswith("manual-") and document["services"] == ["one", "two"]
    manual = [s for s in stack.snapshots() if s["name"].startswith("manual-")]
    assert len(manual) == 2 and {s["status"] for s in manual} == {"complete"}

    unknown = sidecar.exec("compose-ckpt-sidecar", "run", stack.project, "nosuchjob")
    assert unknown.returncode == 4 and "has no job nosuchjob" in unknown.stderr


def test_config_change_applies_without_restart(live: Running) -> None:
    sidecar = live.sidecar
    sidecar.write_config(f"label-prefix: {sidecar.prefix}\nresync-interval: 10s\n"
                         "jobs:\n  nightly:\n    schedule: '0 0 3 * * *'\n    keep: 7\n")
    line = wait_for("the new job", lambda: sidecar.events("job_scheduled", project=sidecar.prefix, job="nightly"))
    assert "schedule=\"0 0 3 * * *\"" in line[0] and "keep=7" in line[0]
    assert sidecar.events("config_reloaded")

    sidecar.write_config("concurrency: many\n")
    wait_for("the invalid config to be refused", lambda: sidecar.events("config_invalid"))
    holds_for("the previous config still holds", lambda: not sidecar.events("job_unscheduled"), 1)
    assert len(sidecar.events("starting")) == 1
    assert run_docker("inspect", "-f", "{{.State.Running}} {{.RestartCount}}", sidecar.name).stdout.split() == ["true", "0"]


def test_cli_and_sidecar_share_the_project_lock(live: Running) -> None:
    """The CLI snapshots the project while the sidecar does every 3 s: one waits for the other, none fails,
    and every manifest in the store stays readable."""
    stack = live.stack
    for index in range(4):
        stack.ckpt_ok("snapshot", "one", "two", "--name", f"cli-{index}")
    store = SnapshotStore(live.store)
    # Both looks under the lock: a sidecar run between them would add a folder (its manifest comes last).
    with store.locked(stack.project):
        listed = store.list(stack.project)
        folders = [p for p in (live.store / "projects" / stack.project).iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(listed) == len(folders), "a manifest in the store cannot be read"
    assert [m.status for m in listed if m.name.startswith("cli-")] == [SnapshotStatus.COMPLETE] * 4


def test_healthz_and_metrics(live: Running) -> None:
    sidecar, stack = live.sidecar, live.stack
    wait_for("a run", lambda: done_runs(sidecar))
    assert sidecar.http("/healthz") == (200, "ok\n")
    status, text = sidecar.http("/metrics")
    assert status == 200
    labels = f'{{project="{stack.project}",job="default"}}'
    runs = re.search(rf"^compose_ckpt_sidecar_runs_total{re.escape(labels)} (\d+)$", text, re.M)
    assert runs and int(runs.group(1)) >= 1
    for series in ("failures_total", "skips_total", "last_success_timestamp_seconds", "run_duration_seconds_sum"):
        assert f"compose_ckpt_sidecar_{series}{labels} " in text
    assert "compose_ckpt_sidecar_engine_up 1" in text

    # A paused container cannot be checkpointed: the next run fails, and health says so until one succeeds.
    two = stack.containers("two")[0]
    # Retry: a snapshot in progress may hold it paused for a moment.
    wait_for("pausing two", lambda: run_docker("pause", two, check=False).returncode == 0)
    try:
        wait_for("a failed run", lambda: sidecar.events("run_failed", project=stack.project), timeout=15)
        status, body = sidecar.http("/healthz")
        assert status == 503 and f"{stack.project}/default" in body
        # ... and so does `compose-ckpt-sidecar status` (a run may succeed in between only once two runs again).
        printed = sidecar.status()
        assert re.search(rf"^{stack.project} / default  failed$", printed, re.M), printed
    finally:
        run_docker("unpause", two)
    wait_for("health to come back", lambda: sidecar.http("/healthz")[0] == 200, timeout=15)


def test_status_and_page_after_scheduled_runs_and_a_failed_one(live: Running) -> None:
    """Runs after test_healthz_and_metrics, whose paused container failed a run: /status and the page at / say
    what the log and the store say, and the page reads so in a real browser (chromium, in the sidecar's network)."""
    sidecar, stack = live.sidecar, live.stack
    store = SnapshotStore(live.store)

    def newest_complete() -> str:
        return [m.name for m in store.list(stack.project)
                if m.name.startswith("auto-default-") and m.status is SnapshotStatus.COMPLETE][-1]

    failed = sidecar.events("run_failed", project=stack.project)[-1]
    stored_before = newest_complete()
    status, body = sidecar.http("/status")
    assert status == 200
    document = json.loads(body)
    job = next(j for j in document["jobs"] if (j["project"], j["job"]) == (stack.project, "default"))
    assert job["services"] == ["one", "two"] and job["schedule"] == "@every 3s"
    assert job["retention"] == {"keep": 2, "max_age_seconds": None} and job["push"] is None
    shown = job["last_snapshot"]["name"]
    assert shown >= stored_before  # names sort by time: the newest, or one newer than we looked
    assert wait_for("its run_done", lambda: any(f"snapshot={shown}" in line for line in done_runs(sidecar)))
    assert job["last_snapshot"]["size"] > 0 and job["last_snapshot"]["frozen_seconds"] > 0
    assert job["failures"] >= 1 and job["runs"] > job["failures"]
    assert job["last_error"]["message"] and job["last_error"]["message"] in failed.replace('\\"', '"')
    assert datetime.fromisoformat(job["next_run"].replace("Z", "+00:00")) > datetime.fromisoformat(
        document["generated"].replace("Z", "+00:00")) - timedelta(seconds=3)
    assert any(p["container"] == f"{stack.project}-bad-1" for p in document["problems"])
    assert document["engine_up"] is True

    pid = int(run_docker("inspect", "-f", "{{.State.Pid}}", sidecar.name).stdout)
    stored_before = newest_complete()
    dom = render(f"http://127.0.0.1:{PORT}/", network_of_pid=pid)
    text = re.sub(r"<[^>]+>", " ", dom)
    row = next(r for r in dom.split("<tr>") if stack.project in r and "job default" in r)
    names = re.findall(r"auto-default-\d{8}-\d{6}-\d{3}", row)
    assert names and names[0] >= stored_before, row
    for expected in ("@every 3s", "keep 2", "services: one, two", "failed", job["last_error"]["message"][:40]):
        assert expected in html.unescape(row), expected
    assert "Label problems" in text and f"{stack.project}-bad-1" in text
    assert '<meta http-equiv="refresh"' in dom

    # The terminal's view: the same job, its last snapshot, failures and last error.
    printed = sidecar.status()
    job_lines = printed.split(f"\n{stack.project} / default  ")[1].split("\n\n")[0]
    fields: dict[str, list[str]] = {}
    label = ""
    for line in job_lines.splitlines()[1:]:  # `  label      fact`, then `             next fact`
        label = line[:13].strip() or label
        fields.setdefault(label, []).append(line[13:].rstrip())
    assert fields["services"] == ["one, two"] and fields["schedule"][0] == "@every 3s"
    assert fields["schedule"][1].startswith("next ")
    assert fields["retention"] == ["keep 2"] and fields["push"] == ["not pushed"]
    assert fields["last"][0] >= stored_before and "frozen" in fields["last"][2]
    assert re.fullmatch(r"\d+, [1-9]\d* failed", fields["runs"][0]), fields["runs"]
    assert fields["error"][0] == job["last_error"]["message"]
    assert f"label problem: {stack.project}-bad-1" in printed


def test_sigterm_then_two_kept_and_each_restores(live: Running) -> None:
    sidecar, stack = live.sidecar, live.stack
    wait_for("pruning", lambda: any("pruned=auto-default-" in line for line in done_runs(sidecar)))
    run_docker("stop", "-t", "60", sidecar.name)
    assert sidecar.logs().splitlines()[-1].endswith("event=stopped")
    snapshots = stack.snapshots()
    assert not [s for s in snapshots if s["status"] == "incomplete"]
    kept = [s["name"] for s in snapshots if s["name"].startswith("auto-default-") and s["status"] == "complete"]
    assert len(kept) == 2, snapshots

    newest, older = reversed(kept)
    for name in (newest, older):
        before = counts(stack)
        restored = json.loads(stack.ckpt_ok("restore", name, "--force", "--json").stdout)
        assert [c["service"] for c in restored["containers"]] == ["one", "two"]  # dependencies first
        after = counts(stack)
        for container, value in after.items():
            assert value > 20, f"{container} counts {value}: started fresh, not restored"
            if name == older:  # 3 s before the newest: the counter went back in time
                assert value < before[container], f"{container}: {before[container]} before, {value} after"


# --- restore on boot ------------------------------------------------------------------


def test_restore_on_boot_skips_a_live_snapshot_and_restores_a_clean_stop(sidecar_image: str, tmp_path: Path,
                                                                          isolated_store: Path) -> None:
    prefix = project = f"ckptside{uuid.uuid4().hex[:8]}"
    labels = {"enable": "true", "restore-on-boot": "true", "schedule": "@hourly"}
    (tmp_path / "compose.yaml").write_text(f"services:\n  one:\n{counter_service(prefix, labels)}\n"
                                           f"  two:\n{counter_service(prefix, labels, depends_on='one')}\n")
    stack = Stack(tmp_path, project)
    try:
        stack.compose("up", "-d")
        stack.wait_counting("one", "two")
        # A live snapshot, then the host loses power: the services ran on after it, their disks may be newer.
        stack.ckpt_ok("snapshot", "--name", "live-one")
        for container in (*stack.containers("one"), *stack.containers("two")):
            run_docker("kill", container)
        (tmp_path / "first").mkdir()
        first = start_sidecar(sidecar_image, f"{project}-sidecar1", prefix, tmp_path / "first", isolated_store)
        skipped = wait_for("the boot restore to be skipped",
                           lambda: first.events("boot_restore_skipped", project=project, reason="live-snapshot"))
        assert len(skipped) == 2 and "newer state on disk than snapshot live-one" in skipped[0], first.logs()
        assert not first.events("boot_restore_started")
        assert set(stack.states().values()) == {"exited"}  # left alone
        _, metrics = first.http("/metrics")
        assert f'boot_restores_total{{project="{project}",outcome="live-snapshot"}} 2' in metrics
        run_docker("rm", "-f", first.name)

        # A planned reboot: snapshot --stop, nothing ran after it: restored where it stopped.
        stack.compose("up", "-d")
        stack.wait_counting("one", "two", at_least=21)
        stopped_at = counts(stack)
        stack.ckpt_ok("snapshot", "--stop", "--name", "clean-one")
        (tmp_path / "second").mkdir()
        second = start_sidecar(sidecar_image, f"{project}-sidecar2", prefix, tmp_path / "second", isolated_store)
        line = wait_for("the boot restore", lambda: second.events("boot_restore_done", project=project), timeout=60)
        assert "snapshot=clean-one" in line[0], second.logs()
        assert set(stack.states().values()) == {"running"}
        assert all(value > 20 for value in stopped_at.values()), stopped_at
        stack.assert_counting_on(stopped_at)
        _, metrics = second.http("/metrics")
        assert f'boot_restores_total{{project="{project}",outcome="restored"}} 1' in metrics
        wait_for("the job after the restore", lambda: second.events("job_scheduled", project=project))
    finally:
        for number in (1, 2):
            run_docker("rm", "-f", f"{project}-sidecar{number}", check=False)
        stack.down()


def test_restore_on_boot_rollback_takes_memory_and_volume_back_together(sidecar_image: str, tmp_path: Path,
                                                                        isolated_store: Path) -> None:
    """restore-on-boot=rollback: from a live snapshot that holds the volume, files written after it go too."""
    prefix = project = f"ckptside{uuid.uuid4().hex[:8]}"
    labels = {"enable": "true", "restore-on-boot": "rollback", "schedule": "@hourly"}
    (tmp_path / "compose.yaml").write_text(
        f"services:\n  one:\n{counter_service(prefix, labels)}\n    volumes: [data:/data]\nvolumes:\n  data:\n")
    stack = Stack(tmp_path, project)
    try:
        stack.compose("up", "-d")
        container = stack.containers("one")[0]
        stack.docker("exec", container, "sh", "-c", "echo before > /data/state")
        stack.wait_counting("one", at_least=11)
        stack.ckpt_ok("snapshot", "--with-volumes", "--name", "with-data")
        stack.docker("exec", container, "sh", "-c", "echo after > /data/state")  # newer than the snapshot
        run_docker("kill", container)

        sidecar = start_sidecar(sidecar_image, f"{project}-sidecar", prefix, tmp_path, isolated_store)
        line = wait_for("the boot restore", lambda: sidecar.events("boot_restore_done", project=project), timeout=60)
        assert "snapshot=with-data" in line[0], sidecar.logs()
        assert sidecar.events("boot_restore_started", project=project, mode="rollback")
        assert stack.docker("exec", container, "cat", "/data/state").stdout.strip() == "before"
        assert stack.count(container) > 10  # its memory came back too, not a fresh start
    finally:
        run_docker("rm", "-f", f"{project}-sidecar", check=False)
        stack.down()


# --- the bundled example ------------------------------------------------------------------


def test_the_bundled_example_at_a_glance_after_a_scheduled_run_and_a_failed_one(sidecar_image: str, tmp_path: Path,
                                                                                 engine: Engine) -> None:
    """examples/sidecar as shipped but for what a test must change (compose.override.yaml): this test's image,
    its hourly job every 3 s, the store and trigger folders here, no published port. After a scheduled run
    /status shows its snapshot; while a run fails the page in chromium, /status and `status` say so."""
    project = f"ckptex{uuid.uuid4().hex[:8]}"
    shutil.copytree(REPO / "examples" / "sidecar", tmp_path, dirs_exist_ok=True)
    store, trigger = tmp_path / "store", tmp_path / "trigger"
    trigger.mkdir()
    every = '    labels:\n      compose-ckpt.hourly.schedule: "@every 3s"\n'
    (tmp_path / "compose.override.yaml").write_text(
        f"services:\n  kv:\n{every}  counter:\n{every}  ckpt-sidecar:\n    image: {sidecar_image}\n"
        f"    ports: !reset []\n    environment:\n      {ENV_HOME}: {store}\n    volumes: !override\n"
        f"      - {daemon_socket()}:/var/run/docker.sock\n      - {store}:{store}\n"
        f"      - ./config:{CONFIG_DIR}:ro\n      - {trigger}:{TRIGGER_DIR}\n")
    stack = Stack(tmp_path, project)
    sidecar = Sidecar(f"{project}-ckpt-sidecar-1", "compose-ckpt", tmp_path / "config", trigger)
    try:
        stack.compose("up", "-d")
        adopt_if_needed(engine, stack)
        wait_for("a scheduled run", lambda: sidecar.events("run_done", project=project, job="hourly"), timeout=90)
        jobs = {j["job"]: j for j in json.loads(sidecar.http("/status")[1])["jobs"] if j["project"] == project}
        assert jobs["hourly"]["last_run"]["ok"] and jobs["hourly"]["last_snapshot"]["name"].startswith("auto-hourly-")
        assert jobs["hourly"]["services"] == ["counter", "kv"] and jobs["daily"]["schedule"] == "0 3 * * *"

        counter = stack.containers("counter")[0]
        wait_for("pausing counter", lambda: run_docker("pause", counter, check=False).returncode == 0)
        try:
            wait_for("a failed run", lambda: sidecar.events("run_failed", project=project, job="hourly"), timeout=30)
            document = json.loads(sidecar.http("/status")[1])
            pid = int(run_docker("inspect", "-f", "{{.State.Pid}}", sidecar.name).stdout)
            dom = render(f"http://127.0.0.1:{PORT}/", network_of_pid=pid)
            printed = sidecar.status()
        finally:
            run_docker("unpause", counter)
        hourly = next(j for j in document["jobs"] if (j["project"], j["job"]) == (project, "hourly"))
        assert hourly["last_run"]["ok"] is False and "paused" in hourly["last_error"]["message"]
        rows = {job: html.unescape(next(r for r in dom.split("<tr>") if project in r and f"job {job}<" in r))
                for job in ("hourly", "daily")}
        assert '<span class="failed">failed</span>' in rows["hourly"] and hourly["last_snapshot"]["name"] in rows["hourly"]
        assert hourly["last_error"]["message"] in rows["hourly"] and "keep 24" in rows["hourly"]
        assert "no run yet" in rows["daily"] and "0 3 * * *" in rows["daily"] and "max age 30 days" in rows["daily"]
        assert f"{project} / hourly  failed" in printed and f"{project} / daily  no run yet" in printed
    finally:
        stack.down()

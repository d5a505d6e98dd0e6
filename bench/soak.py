#!/usr/bin/env python3
"""Soak test of the sidecar image: 10 labelled counters in 3 compose projects, snapshotted on a schedule.

Starts `compose-ckpt/sidecar:dev` (built by `make sidecar-image`; this script builds nothing) with its own
label prefix and a private COMPOSE_CKPT_HOME, lets it run for --minutes at `@every` --every with keep=--keep,
samples its memory every ~10 s, then reads /metrics and its logfmt logs (runs, failures, skips, start drift),
stops it and restores the newest snapshot of each project with `compose-ckpt restore --force`, checking that
the containers run and the in-memory counters go on from the snapshot instead of starting from 0.

Stdlib only. Everything it creates (projects `ckptsoak<random>-a/b/c`, the sidecar container, helper
containers, the temp folder with the store) is removed at the end, also on failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO_CLI = BENCH.parent / ".venv" / "bin" / "compose-ckpt"
CLI = str(REPO_CLI) if REPO_CLI.exists() else (shutil.which("compose-ckpt") or "compose-ckpt")
IMAGE = "compose-ckpt/sidecar:dev"
COUNTER = "i=0; while true; do i=$$((i+1)); echo $$i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.1; done"
LAYOUT = {"a": 4, "b": 3, "c": 3}  # services per project: 10 containers
FIELD = re.compile(r'([\w.-]+)=("(?:\\.|[^"\\])*"|\S*)')


def sh(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True) -> str:
    proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} -> rc {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc.stdout + (proc.stderr if not check else "")


def seconds(text: str) -> float:
    """`5s`, `1m30s`, `2h` -> seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def logfmt(line: str) -> dict[str, str]:
    return {k: v[1:-1].replace('\\"', '"').replace("\\\\", "\\") if v.startswith('"') else v
            for k, v in FIELD.findall(line)}


def stamp(event: dict[str, str]) -> datetime:
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00"))


def stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "median": None, "p95": None, "max": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"n": len(values), "median": round(statistics.median(ordered), 3), "p95": round(p95, 3),
            "max": round(ordered[-1], 3)}


def sample_memory(cid: str, pid: int) -> dict[str, Any]:
    """The sidecar's cgroup (v1 host path, else `docker stats`) and its main process's VmRSS, in MiB."""
    mib = 2**20
    sample: dict[str, Any] = {"t": round(time.time(), 1)}
    cgroup = Path("/sys/fs/cgroup/memory/docker") / cid
    if cgroup.exists():
        usage = int((cgroup / "memory.usage_in_bytes").read_text())
        stat = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
        sample.update(usage=round(usage / mib, 2), rss=round(int(stat["total_rss"]) / mib, 2),
                      cache=round(int(stat["total_cache"]) / mib, 2),
                      stats=round((usage - int(stat["total_inactive_file"])) / mib, 2))  # what `docker stats` shows
    else:
        sample["stats_text"] = sh("docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", cid).strip()
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        sample["vmrss"] = round(int(re.search(r"VmRSS:\s+(\d+)", status.read_text()).group(1)) / 1024, 2)  # type: ignore[union-attr]
    return sample


def drift(events: list[dict[str, str]], every: float) -> tuple[list[float], dict[str, float]]:
    """Start times against the ideal grid t0 + k*every of each job (t0: first next_run after job_scheduled).

    A job's ticks are its starts and its skips; skips logged before run i-1 ended belong before run i."""
    values: list[float] = []
    final: dict[str, float] = {}
    for project in sorted({e["project"] for e in events if "project" in e}):
        mine = [e for e in events if e.get("project") == project and e.get("job") == "default"]
        scheduled = [e for e in mine if e["event"] == "job_scheduled"]
        if not scheduled:
            continue
        t0 = stamp(scheduled[0]) + timedelta(seconds=every)  # next_run itself is logged to the second only
        starts = [stamp(e) for e in mine if e["event"] == "run_started" and e.get("reason") == "schedule"]
        ends = [stamp(e) for e in mine if e["event"] in ("run_done", "run_failed")]
        skips = [stamp(e) for e in mine if e["event"] == "run_skipped"]
        for i, start in enumerate(starts):
            k = i + (sum(1 for s in skips if s < ends[i - 1]) if i else 0)
            values.append((start - (t0 + timedelta(seconds=k * every))).total_seconds())
        if starts:
            final[project] = round(values[-1], 3)
    return values, final


def restore_check(project: str, folder: Path, env: dict[str, str]) -> dict[str, Any]:
    """Restore the newest complete snapshot; running, counters not from 0, going on."""
    listed = json.loads(sh(CLI, "-p", project, "ls", "--json", cwd=folder, env=env))
    complete = [s["name"] for s in listed if s["status"] == "complete"]
    result: dict[str, Any] = {"snapshots": [(s["name"], s["status"]) for s in listed], "restored": None, "ok": False}
    if not complete:
        return result
    names = sh("docker", "compose", "-p", project, "ps", "-a", "--format", "{{.Name}}", cwd=folder).split()

    def count() -> dict[str, int]:
        return {c: int(re.sub(r"\D", "", sh("docker", "exec", c, "cat", "/tmp/count", check=False)) or 0) for c in names}

    before = count()
    proc = subprocess.run([CLI, "-p", project, "restore", complete[-1], "--force", "--json"], cwd=folder, env=env,
                          capture_output=True, text=True, check=False)
    states = set(sh("docker", "inspect", "-f", "{{.State.Status}}", *names).split())
    after = count()
    time.sleep(1.5)
    later = count()
    ok = (proc.returncode == 0 and states == {"running"}
          and all(20 < after[c] <= before[c] and later[c] > after[c] for c in names))
    result.update(restored=complete[-1], rc=proc.returncode, stderr=proc.stderr.strip()[-1000:], states=sorted(states),
                  before=before, after=after, later=later, ok=ok)
    return result


class Sampler(threading.Thread):
    def __init__(self, cid: str, pid: int, period: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.cid, self.pid, self.period = cid, pid, period
        self.samples: list[dict[str, Any]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while True:
            try:
                self.samples.append(sample_memory(self.cid, self.pid))
            except (OSError, RuntimeError, AttributeError) as exc:
                self.samples.append({"t": round(time.time(), 1), "error": str(exc)})
            if self.halt.wait(self.period):
                return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the sidecar runs")
    parser.add_argument("--every", default="5s", help="the schedule's interval (`@every` value)")
    parser.add_argument("--keep", type=int, default=3, help="complete snapshots each project keeps")
    parser.add_argument("--out", type=Path, default=BENCH / "soak-results.json", help="JSON results file")
    args = parser.parse_args()
    every = seconds(args.every)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally block on kill
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        print(f"no image {IMAGE}: run `make sidecar-image` (or `make soak`)", file=sys.stderr)
        return 2

    prefix = f"ckptsoak{secrets.token_hex(3)}"
    sidecar = f"{prefix}-sidecar"
    work = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    store = work / "home"
    env = {**os.environ, "COMPOSE_CKPT_HOME": str(store)}
    projects = {f"{prefix}-{tag}": work / tag for tag in LAYOUT}
    labels = {f"{prefix}.enable": "true", f"{prefix}.schedule": f"@every {args.every}", f"{prefix}.keep": str(args.keep)}
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "image": IMAGE, "minutes": args.minutes,
                               "every": args.every, "keep": args.keep, "layout": dict(zip(projects, LAYOUT.values()))}
    try:
        for (project, folder), n in zip(projects.items(), LAYOUT.values()):
            folder.mkdir()
            services = {f"c{i}": {"image": "local/busybox:latest", "command": ["sh", "-c", COUNTER],
                                  "restart": "no", "labels": labels} for i in range(1, n + 1)}
            (folder / "compose.yaml").write_text(json.dumps({"services": services}, indent=2))  # JSON is YAML
            sh("docker", "compose", "-p", project, "up", "-d", "--wait", cwd=folder)
        for sub in ("config", "trigger"):
            (work / sub).mkdir()
        (work / "config" / "sidecar.yaml").write_text(f"label-prefix: {prefix}\n")
        cid = sh("docker", "run", "-d", "--name", sidecar, "-v", "/var/run/docker.sock:/var/run/docker.sock",
                 "-v", f"{store}:{store}", "-e", f"COMPOSE_CKPT_HOME={store}", "-v", f"{work / 'config'}:/etc/compose-ckpt",
                 "-v", f"{work / 'trigger'}:/run/compose-ckpt/trigger", IMAGE, "serve").strip()
        pid = int(sh("docker", "inspect", "-f", "{{.State.Pid}}", cid))
        sampler = Sampler(cid, pid)
        sampler.start()
        print(f"{sidecar}: {len(projects)} projects, {sum(LAYOUT.values())} containers, @every {args.every}, "
              f"keep {args.keep}, {args.minutes:g} min ...", flush=True)
        deadline = time.monotonic() + args.minutes * 60
        while time.monotonic() < deadline:
            time.sleep(min(30.0, max(0.0, deadline - time.monotonic())))
            done = sh("docker", "logs", sidecar, check=False).count("event=run_done")
            state = sh("docker", "inspect", "-f", "{{.State.Status}} restarts={{.RestartCount}}", sidecar).strip()
            print(f"  {time.strftime('%H:%M:%S')} {state} run_done={done} mem={sampler.samples[-1]}", flush=True)
        script = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9321/metrics', timeout=10).read().decode())"
        metrics_text = sh("docker", "exec", sidecar, "python3", "-c", script, check=False)
        sampler.halt.set()
        sampler.join()
        stopped = time.monotonic()
        sh("docker", "stop", "-t", "120", sidecar)
        results["stop_seconds"] = round(time.monotonic() - stopped, 1)
        results["sidecar_state"] = sh("docker", "inspect", "-f", "{{.State.ExitCode}} oom={{.State.OOMKilled}} "
                                      "restarts={{.RestartCount}}", sidecar).strip()
        log_lines = sh("docker", "logs", sidecar, check=False).splitlines()
        events = [logfmt(line) for line in log_lines if line.startswith("time=")]

        def count(name: str) -> dict[str, int]:
            return {p: sum(1 for e in events if e["event"] == name and e.get("project") == p) for p in projects}

        def metric(series: str) -> dict[str, float | None]:
            found = {p: re.search(rf'^compose_ckpt_sidecar_{series}{{project="{re.escape(p)}",job="default"}} (\S+)$',
                                  metrics_text, re.M) for p in projects}
            return {p: float(m.group(1)) if m else None for p, m in found.items()}

        values, final = drift(events, every)
        results.update(
            logs={name: count(name) for name in ("run_started", "run_done", "run_failed", "run_skipped", "run_timeout",
                                                 "job_scheduled")},
            metrics={s: metric(s) for s in ("runs_total", "failures_total", "skips_total", "timeouts_total",
                                            "pruned_total", "run_duration_seconds_count", "run_duration_seconds_sum")},
            failures=[{k: e.get(k) for k in ("time", "project", "error", "hint", "details")}
                      for e in events if e["event"] == "run_failed"],
            skips=[{k: e.get(k) for k in ("time", "project", "why")} for e in events if e["event"] == "run_skipped"],
            other_problems=[line for line in log_lines if (" level=error " in line and "event=run_failed" not in line)
                            or "Traceback" in line][:50],
            run_seconds=stats([float(e["seconds"]) for e in events if e["event"] == "run_done"]),
            drift_seconds=stats(values), drift_final_seconds=final, last_log_line=log_lines[-1] if log_lines else None,
            memory_samples=sampler.samples, sidecar_log=log_lines)
        good = [s for s in sampler.samples if "vmrss" in s]
        for key in ("vmrss", "rss", "stats", "usage"):
            series = [s[key] for s in good if key in s]
            if series:
                results.setdefault("memory_mib", {})[key] = {"start": series[0], "end": series[-1], "max": max(series)}
        results["restore"] = {p: restore_check(p, folder, env) for p, folder in projects.items()}
    finally:
        for project, folder in projects.items():
            ids = sh("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}", check=False).split()
            helpers = [h for c in ids for h in sh("docker", "ps", "-aq", "--filter", f"label=compose-ckpt.helper-for={c}",
                                                  check=False).split()]
            if helpers:
                sh("docker", "rm", "-f", *helpers, check=False)
            if folder.exists():
                sh("docker", "compose", "-p", project, "down", "-v", "-t", "0", cwd=folder, check=False)
        sh("docker", "rm", "-f", sidecar, check=False)
        shutil.rmtree(work, ignore_errors=True)
        if "restore" not in results:
            print("soak aborted; cleaned up", file=sys.stderr)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("sidecar_state", "logs", "metrics", "run_seconds", "drift_seconds",
                                              "drift_final_seconds", "memory_mib")}, indent=1))
    for p, r in results["restore"].items():
        print(f"restore {p} {r['restored']}: {'ok' if r['ok'] else 'FAILED'} after={r.get('after')} later={r.get('later')}")
    failed = bool(results["failures"]) or not all(r["ok"] for r in results["restore"].values())
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The 2 GiB service: compose-ckpt against plain `docker checkpoint` on one big container, in one run.

A redis (`redis-server --enable-debug-command yes` from local/debian:bookworm) holding 2 GiB
(`debug populate 2000 key 1048576`), the data checked before every measurement. Rows (medians over
--repeat rounds; the two sides of a row alternate which goes first):
  live    the frozen window of a leave-running `compose-ckpt snapshot` (its `freeze_seconds`) vs plain
          `docker checkpoint create --leave-running` of the same container (wall clock)
  stop    `compose-ckpt snapshot --stop` vs plain `docker checkpoint create` + `docker wait`
  floors  the raw dump by the daemon's own runtime, as compose-ckpt finds it (`runc --root R checkpoint
          --leave-running --image-path DIR --work-path DIR2 <id>` of the paused container, DIR beside the
          store), and a `dd` of 2 GiB with fdatasync into that same folder (the disk)
Where compose-ckpt's time goes: the `phases` of `--json`, and each dump's path and rate.

Like bench/run.py: --docker-host for another local engine, --adopt for Docker 28 (adopt the service after `up`).
Everything it creates (compose project `ckptbig<random>`, a work folder under bench/, checkpoints) is removed
at the end, also on failure, Ctrl-C or SIGTERM. Writes bench/bigservice-results.json; exit 1 when a round failed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from run import CLI, CommandError, machine, median, ratio, run, timed

from compose_ckpt.engine.runtime import find_runtime

BENCH = Path(__file__).resolve().parent
KEYS = 2000
KEY_BYTES = 1024**2
# Ratios against plain docker in the same run (issue 22).
TARGETS = {"live": 0.15, "stop": 0.2}
REDIS = ["redis-server", "--enable-debug-command", "yes", "--save", "", "--appendonly", "no", "--protected-mode", "no"]


class BigService:
    """One compose project with the redis service, in its own folder under the work dir."""

    def __init__(self, work: Path, adopt: bool) -> None:
        self.name = f"ckptbig{secrets.token_hex(3)}"
        self.folder = work / self.name
        self.folder.mkdir()
        self.adopt = adopt
        services = {"redis": {"image": "local/debian:bookworm", "command": REDIS}}
        (self.folder / "compose.yaml").write_text(json.dumps({"services": services}, indent=2))  # JSON is YAML
        self.home = work / "home"
        self.env = {**os.environ, "COMPOSE_CKPT_HOME": str(self.home)}
        self.id = ""

    def compose(self, *args: str) -> str:
        return run("docker", "compose", "-p", self.name, *args, cwd=self.folder)

    def cli(self, *args: str) -> Any:
        out = run(CLI, "-p", self.name, *args, cwd=self.folder, env=self.env)
        return json.loads(out) if "--json" in args else out

    def up(self) -> None:
        self.compose("up", "-d", "--force-recreate")
        if self.adopt:
            self.cli("adopt", "--yes")
        self.id = run("docker", "ps", "-aq", "--no-trunc", "--filter", f"label=com.docker.compose.project={self.name}",
                      "--filter", "label=com.docker.compose.service=redis").split()[0]
        self.fill()

    def down(self) -> None:
        subprocess.run(["docker", "compose", "-p", self.name, "down", "-v", "-t", "0", "--remove-orphans"],
                       cwd=self.folder, capture_output=True, check=False)

    def redis(self, *args: str) -> str:
        return run("docker", "exec", self.id, "redis-cli", *args).strip()

    def state(self) -> str:
        return run("docker", "inspect", "-f", "{{.State.Status}}", self.id).strip()

    def fill(self) -> None:
        """Running, holding the 2 GiB: created afresh and populated when it is not (not timed). Recreated, not
        `docker start`ed: on Docker 28 an adopted container ended by its checkpoint did not come back that way."""
        if self.state() != "running":
            self.down()
            self.up()
            return
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "exec", self.id, "redis-cli", "ping"], capture_output=True,
                             text=True, check=False).stdout.strip() != "PONG":
            if time.monotonic() > deadline:
                raise RuntimeError("redis never answered")
            time.sleep(0.2)
        if self.redis("dbsize") != str(KEYS):
            said = self.redis("debug", "populate", str(KEYS), "key", str(KEY_BYTES))
            if said != "OK":  # redis-cli exits 0 even on ERR
                raise RuntimeError(f"debug populate: {said}")
        if self.redis("dbsize") != str(KEYS):
            raise RuntimeError("redis does not hold the 2 GiB")

    def pid(self) -> int:
        return int(run("docker", "inspect", "-f", "{{.State.Pid}}", self.id).strip())


class Rounds:
    def __init__(self, service: BigService, work: Path, repeat: int) -> None:
        self.service = service
        self.work = work
        self.repeat = repeat
        self.samples: dict[str, list[float]] = {}
        self.phases: dict[str, list[dict[str, float]]] = {"live": [], "stop": []}
        self.dumps: dict[str, list[dict[str, Any]]] = {"live": [], "stop": []}
        self.errors: list[dict[str, Any]] = []
        self.load: list[float] = []

    def add(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(round(value, 3))

    def guarded(self, what: str, action: Callable[[int], None], r: int) -> None:
        """One side of one round; a failure is recorded, the service started fresh, and the bench goes on."""
        self.load.append(round(os.getloadavg()[0], 2))
        try:
            self.service.fill()
            action(r)
        except (CommandError, RuntimeError, json.JSONDecodeError, subprocess.SubprocessError) as exc:
            record = exc.record if isinstance(exc, CommandError) else {"error": str(exc)}
            self.errors.append({"during": f"{what} round {r}", **record})
            print(f"  ! {what} round {r}: {exc}", file=sys.stderr)
            self.reset()

    def reset(self) -> None:
        """A fresh service after a failed round; waits up to 2 min for a daemon being restarted (on a shared
        machine others restart it now and then)."""
        deadline = time.monotonic() + 120
        while True:
            subprocess.run([CLI, "-p", self.service.name, "recover"], cwd=self.service.folder, env=self.service.env,
                           capture_output=True, check=False)
            self.service.down()
            try:
                self.service.up()
                return
            except (CommandError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(3)

    def alternating(self, sides: list[tuple[str, Callable[[int], None]]]) -> None:
        for r in range(self.repeat):
            for label, side in sides if r % 2 == 0 else list(reversed(sides)):
                print(f"  {label} round {r} ...", flush=True)
                self.guarded(label, side, r)

    # --- live: leave-running ------------------------------------------------------------------------------

    def plain_live(self, r: int) -> None:
        cid = self.service.id
        try:
            self.add("plain_live", timed(lambda: run("docker", "checkpoint", "create", "--leave-running", cid,
                                                     f"rawlive{r}"))[0])
        finally:
            subprocess.run(["docker", "checkpoint", "rm", cid, f"rawlive{r}"], capture_output=True, check=False)

    def ours_live(self, r: int) -> None:
        try:
            seconds, doc = timed(lambda: self.service.cli("snapshot", "--name", f"live{r}", "--json"))
            self.snapshot_done("live", doc, seconds)
        finally:
            self.service.cli("prune", "--keep", "0")

    # --- stop ---------------------------------------------------------------------------------------------

    def plain_stop(self, r: int) -> None:
        cid = self.service.id
        try:
            self.add("plain_stop", timed(lambda: (run("docker", "checkpoint", "create", cid, f"raw{r}"),
                                                  run("docker", "wait", cid)))[0])
        finally:
            subprocess.run(["docker", "checkpoint", "rm", cid, f"raw{r}"], capture_output=True, check=False)

    def ours_stop(self, r: int) -> None:
        try:
            seconds, doc = timed(lambda: self.service.cli("snapshot", "--stop", "--name", f"stop{r}", "--json"))
            if self.service.state() != "exited":
                raise RuntimeError(f"after snapshot --stop the service is {self.service.state()}")
            self.snapshot_done("stop", doc, seconds)
        finally:
            self.service.cli("prune", "--keep", "0")

    def snapshot_done(self, kind: str, doc: dict[str, Any], seconds: float) -> None:
        if doc.get("status") != "complete":
            raise RuntimeError(f"snapshot is {doc.get('status')}: {doc.get('error')}")
        self.add(f"ours_{kind}", seconds)
        self.add(f"ours_{kind}_freeze", doc["freeze_seconds"])
        self.phases[kind].append(doc["phases"])
        container = doc["containers"][0]
        self.dumps[kind].append({key: container[key] for key in ("size", "dump_seconds", "dump_path", "dump_fallback")})

    # --- floors ------------------------------------------------------------------------------------------

    def runtime_floor(self, r: int) -> None:
        """The daemon's runtime alone, on the paused container, into a folder beside the store."""
        runtime = find_runtime(self.service.id, self.service.pid())
        images, scratch = self.work / f"floor{r}", Path(tempfile.mkdtemp(prefix="floor-work-", dir=self.work))
        images.mkdir(mode=0o700)
        run("docker", "pause", self.service.id)
        try:
            self.add("runc_floor", timed(lambda: run(
                runtime.binary, "--root", runtime.root, "checkpoint", "--leave-running", "--image-path", str(images),
                "--work-path", str(scratch), self.service.id, env={**runtime.environment, "PATH": runtime.search_path}))[0])
        finally:
            run("docker", "unpause", self.service.id)
            shutil.rmtree(images, ignore_errors=True)
            shutil.rmtree(scratch, ignore_errors=True)

    def disk_floor(self, r: int) -> None:
        target = self.work / f"dd{r}"
        try:
            self.add("dd_floor", timed(lambda: run("dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={KEYS}",
                                                   "conv=fdatasync", "status=none"))[0])
        finally:
            target.unlink(missing_ok=True)


def phase_medians(documents: list[dict[str, float]]) -> dict[str, float | None]:
    names = list(dict.fromkeys(name for doc in documents for name in doc))
    return {name: median([doc[name] for doc in documents if name in doc]) for name in names}


def table(results: dict[str, Any]) -> list[dict[str, Any]]:
    m = results["medians"]
    out = []
    for metric, base, ours, target in (
            ("2 GiB leave-running: frozen window vs plain checkpoint --leave-running", m.get("plain_live"),
             m.get("ours_live_freeze"), TARGETS["live"]),
            ("2 GiB snapshot --stop vs plain checkpoint + wait", m.get("plain_stop"), m.get("ours_stop"), TARGETS["stop"]),
            ("2 GiB raw runtime dump (floor) vs plain checkpoint --leave-running", m.get("plain_live"), m.get("runc_floor"), None),
            ("dd 2 GiB + fdatasync (disk floor) vs plain checkpoint --leave-running", m.get("plain_live"), m.get("dd_floor"), None)):
        value = ratio(ours, base)
        out.append({"metric": metric, "baseline_s": base, "ours_s": ours, "ratio": value, "target": target,
                    "met": None if value is None or target is None else value <= target})
    return out


def print_results(results: dict[str, Any]) -> None:
    def fmt(v: Any) -> str:
        return "-" if v is None else ("yes" if v is True else "NO" if v is False else f"{v:.3f}" if isinstance(v, float) else str(v))

    header = ["metric", "baseline_s", "ours_s", "ratio", "target", "met"]
    lines = [header] + [[fmt(row[h]) for h in header] for row in results["table"]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(line, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for kind in ("live", "stop"):
        phases = results["phases"][kind]
        print(f"  {kind} phases: " + "  ".join(f"{name} {value:.3f}" for name, value in phases.items() if value is not None))
        for dump in results["dumps"][kind][-1:]:
            rate = dump["size"] / dump["dump_seconds"] / 1e6 if dump["dump_seconds"] else 0
            print(f"  {kind} dump: {dump['dump_path']}, {dump['size'] / 2**30:.2f} GiB in {dump['dump_seconds']:.2f} s "
                  f"({rate:.0f} MB/s)" + (f", fallback: {dump['dump_fallback']}" if dump["dump_fallback"] else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="rounds per measurement; the median is reported")
    parser.add_argument("--out", type=Path, default=BENCH / "bigservice-results.json", help="JSON results file")
    parser.add_argument("--docker-host", help="a local engine's unix:// socket (default: DOCKER_HOST)")
    parser.add_argument("--adopt", action="store_true", help="adopt the service after `up` (Docker 28 and later)")
    args = parser.parse_args()
    if args.docker_host:
        if not args.docker_host.startswith("unix://"):
            parser.error("--docker-host: a unix:// socket of an engine on this machine")
        os.environ["DOCKER_HOST"] = args.docker_host
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks on kill
    started = time.monotonic()
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "cli": CLI,
                               "repeat": args.repeat, "adopted": args.adopt}
    work = Path(tempfile.mkdtemp(prefix=".work-big-", dir=BENCH))
    service = BigService(work, args.adopt)
    rounds = Rounds(service, work, args.repeat)
    try:
        print(f"2 GiB redis ({service.name}) ...", flush=True)
        service.up()
        rounds.alternating([("plain checkpoint --leave-running", rounds.plain_live),
                            ("compose-ckpt snapshot", rounds.ours_live)])
        rounds.alternating([("plain checkpoint + wait", rounds.plain_stop),
                            ("compose-ckpt snapshot --stop", rounds.ours_stop)])
        rounds.alternating([("raw runtime dump", rounds.runtime_floor), ("dd", rounds.disk_floor)])
    finally:
        service.down()
        shutil.rmtree(work, ignore_errors=True)
    results.update(samples=rounds.samples, medians={key: median(values) for key, values in rounds.samples.items()},
                   phases={kind: phase_medians(docs) for kind, docs in rounds.phases.items()}, dumps=rounds.dumps,
                   cli_errors=rounds.errors, elapsed_seconds=round(time.monotonic() - started, 1),
                   load_average={"min": min(rounds.load, default=None), "median": median(rounds.load),
                                 "max": max(rounds.load, default=None)})
    results["table"] = table(results)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print_results(results)
    load = results["load_average"]
    print(f"\nDocker {results['machine']['docker']}{' (adopted)' if args.adopt else ''}; load average "
          f"{load['min']}-{load['max']} (median {load['median']}); {len(rounds.errors)} failed rounds; "
          f"elapsed {results['elapsed_seconds']} s; wrote {args.out}")
    return 1 if rounds.errors else 0


if __name__ == "__main__":
    sys.exit(main())

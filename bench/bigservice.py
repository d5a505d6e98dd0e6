#!/usr/bin/env python3
"""The 2 GiB service: compose-ckpt against plain `docker checkpoint` on one big container, dump and restore, in one run.

A redis (`redis-server --enable-debug-command yes` from local/debian:bookworm) holding 2 GiB
(`debug populate 2000 key 1048576`), the data checked before every measurement. Rows (medians over
--repeat rounds; the two sides of a row alternate which goes first):
  live     the frozen window of a leave-running `compose-ckpt snapshot` (its `freeze_seconds`) vs plain
           `docker checkpoint create --leave-running` of the same container (wall clock)
  stop     `compose-ckpt snapshot --stop` vs plain `docker checkpoint create` + `docker wait`
  restore  `compose-ckpt restore` of a `--stop` snapshot (taken once, not timed) vs `docker start --checkpoint`
           of the same checkpoint's files, copied into Docker's checkpoint folder (not timed); the container is
           killed before each side and `debug digest` must be the one from before the snapshot after it; the
           store's page images are read once before our side (not timed), as the plain side's copy leaves its
           own in the page cache
  floors   the raw dump by the daemon's own runtime, as compose-ckpt finds it (`runc --root R checkpoint
           --leave-running --image-path DIR --work-path DIR2 <id>` of the paused container, DIR beside the
           store), and a `dd` of 2 GiB with fdatasync into that same folder (the disk)
Where the time goes: the `phases` of `--json`, each dump's path and rate, each restore's per-container phases
and pages route, CRIU's own time of every dump and restore on both sides (from its logs: the service names a
CRIU config file, annotation `org.criu.config`, whose `work-dir` keeps them), and before each restore side the
machine's memory waiting for the disk (Dirty + Writeback, `*_restore_dirty_mib`).

--rows picks rows (default all). Like bench/run.py: --docker-host for another local engine, --adopt for Docker 28
(adopt the service after `up`). Everything it creates (compose project `ckptbench<random>big`, a work folder under
bench/, checkpoints, containerd's copies of the plain restores) is removed at the end, also on failure, Ctrl-C
or SIGTERM. Writes bench/bigservice-results.json (or --out); exit 1 when a round failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from run import (
    CLI,
    SEED_RETRIES,
    CommandError,
    Stack,
    machine,
    median,
    phase_medians,
    print_table,
    ratio,
    retried,
    run,
    timed,
)

from compose_ckpt.engine.runtime import find_runtime

BENCH = Path(__file__).resolve().parent
KEYS = 2000
KEY_BYTES = 1024**2
ROWS = ("live", "stop", "restore", "floors")
# Ratios against plain docker in the same run (issue 22).
TARGETS = {"live": 0.15, "stop": 0.2, "restore": 0.25}
REDIS = ["redis-server", "--enable-debug-command", "yes", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
BASE = "base"  # the --stop snapshot the restore rows restore


class BigService(Stack):
    """The redis service, one compose project (bench/run.py's Stack: its folder, CRIU's logs, adopt, reset)."""

    def __init__(self, work: Path, adopt: bool) -> None:
        super().__init__(work, "big", {"redis": {"image": "local/debian:bookworm", "command": REDIS}}, adopt)
        self.root = Path(run("docker", "info", "--format", "{{.DockerRootDir}}").strip())

    @property
    def id(self) -> str:
        return self.ids[0]

    def redis(self, *args: str) -> str:
        return run("docker", "exec", self.id, "redis-cli", *args).strip()

    def state(self) -> str:
        return run("docker", "inspect", "-f", "{{.State.Status}}", self.id).strip()

    def pid(self) -> int:
        return int(run("docker", "inspect", "-f", "{{.State.Pid}}", self.id).strip())

    def fill(self) -> None:
        """Running, holding the 2 GiB: created afresh and populated when it is not (not timed). Recreated, not
        `docker start`ed: on Docker 28 an adopted container ended by its checkpoint did not come back that way."""
        if not self.ids or self.state() != "running":
            self.down()
            self.up()
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

    def kill(self) -> None:
        """Exited, as after a reboot (not timed)."""
        subprocess.run(["docker", "kill", self.id], capture_output=True, check=False)
        run("docker", "wait", self.id)

    def checkpoint_files(self) -> Path:
        """The store's checkpoint folder of the container in snapshot BASE."""
        container = run("docker", "inspect", "-f", "{{.Name}}", self.id).strip().lstrip("/")
        return Path(self.env["COMPOSE_CKPT_HOME"], "projects", self.name, BASE, "checkpoints", container)

    def remove_containerd_copies(self) -> None:
        """containerd leaves its copy of each plain restore's checkpoint in its temp folder (/tmp here)."""
        for folder in Path("/tmp").glob("ctrd-checkpoint*"):
            try:
                if any(cid.encode() in (folder / "cgroup.img").read_bytes() for cid in self.ids):
                    shutil.rmtree(folder)
            except OSError:
                continue


def dirty_mib() -> float:
    """Memory waiting to be written to disk, machine-wide (Dirty + Writeback): a 2 GiB copy made on top of a
    large backlog is throttled to the disk's speed, whoever made the backlog."""
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return sum(int(fields[name].split()[0]) for name in ("Dirty", "Writeback")) / 1024


def read_through(folder: Path) -> None:
    """Read the page images in `folder` once: into the page cache, as far as memory allows."""
    for image in folder.glob("pages-*.img"):
        with open(image, "rb") as source:
            while source.read(16 * 1024**2):
                pass


class Rounds:
    def __init__(self, service: BigService, work: Path, repeat: int) -> None:
        self.service = service
        self.work = work
        self.repeat = repeat
        self.samples: dict[str, list[float]] = {}
        self.phases: dict[str, list[dict[str, float]]] = {"live": [], "stop": [], "restore": []}
        self.dumps: dict[str, list[dict[str, Any]]] = {"live": [], "stop": []}
        self.restores: list[dict[str, Any]] = []  # per container of each restore: seconds, pages route and bytes
        self.criu: dict[str, list[float]] = {}  # CRIU's own seconds: ours_dump, plain_dump, ours_restore, ...
        self.errors: list[dict[str, Any]] = []
        self.load: list[float] = []
        self.digest = ""

    def add(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(round(value, 3))

    def criu_time(self, side: str, kind: str) -> None:
        """CRIU's own time of the dump or restore just done (its log is then removed)."""
        self.criu.setdefault(f"{side}_{kind}", []).extend(self.service.criu_seconds(kind))

    def guarded(self, what: str, action: Callable[[int], None], r: int, before: Callable[[], None],
                after_failure: Callable[[], None]) -> None:
        """One side of one round; a failure is recorded, the service put back, and the bench goes on."""
        self.load.append(round(os.getloadavg()[0], 2))
        try:
            before()
            action(r)
        except (CommandError, RuntimeError, json.JSONDecodeError, subprocess.SubprocessError, OSError) as exc:
            record = exc.record if isinstance(exc, CommandError) else {"error": str(exc)}
            self.errors.append({"during": f"{what} round {r}", **record})
            print(f"  ! {what} round {r}: {exc}", file=sys.stderr)
            after_failure()

    def alternating(self, sides: list[tuple[str, Callable[[int], None]]], before: Callable[[], None],
                    after_failure: Callable[[], None]) -> None:
        for r in range(self.repeat):
            for label, side in sides if r % 2 == 0 else list(reversed(sides)):
                print(f"  {label} round {r} ...", flush=True)
                self.guarded(label, side, r, before, after_failure)

    def dump_rows(self, kinds: list[str]) -> None:
        """Dumps start from the running, filled service; a failed one from a fresh service (Stack.reset)."""
        sides: dict[str, list[tuple[str, Callable[[int], None]]]] = {"live": [("plain checkpoint --leave-running", self.plain_live), ("compose-ckpt snapshot", self.ours_live)],
            "stop": [("plain checkpoint + wait", self.plain_stop), ("compose-ckpt snapshot --stop", self.ours_stop)]}
        for kind in kinds:
            self.alternating(sides[kind], self.service.fill, self.service.reset)

    def restore_rows(self) -> None:
        """Restores start from the exited container; a failed one is left to `recover`, the snapshot kept."""
        self.service.fill()
        self.digest = self.service.redis("debug", "digest")
        self.service.cli("snapshot", "--stop", "--name", BASE)
        self.service.criu_seconds("dump")  # not a measured dump: its log goes
        self.alternating([("plain docker start --checkpoint", self.plain_restore),
                          ("compose-ckpt restore", self.ours_restore)], self.service.kill, self.recover)

    def floor_rows(self) -> None:
        self.alternating([("raw runtime dump", self.runtime_floor), ("dd", self.disk_floor)], self.service.fill,
                         self.service.reset)

    def recover(self) -> None:
        subprocess.run([CLI, "-p", self.service.name, "recover"], cwd=self.service.folder, env=self.service.env,
                       capture_output=True, check=False)

    # --- live: leave-running ------------------------------------------------------------------------------

    def plain_live(self, r: int) -> None:
        cid = self.service.id
        try:
            self.add("plain_live", timed(lambda: run("docker", "checkpoint", "create", "--leave-running", cid,
                                                     f"rawlive{r}"))[0])
            self.criu_time("plain", "dump")
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
            self.criu_time("plain", "dump")
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
        self.criu_time("ours", "dump")
        container = doc["containers"][0]
        self.dumps[kind].append({key: container[key] for key in ("size", "dump_seconds", "dump_path", "dump_fallback")})

    # --- restore ------------------------------------------------------------------------------------------

    def same_data(self, what: str) -> None:
        if self.service.redis("debug", "digest") != self.digest:
            raise RuntimeError(f"{what}: the data came back different")

    def plain_restore(self, r: int) -> None:
        name, cid = f"plain{r}", self.service.id
        shutil.copytree(self.service.checkpoint_files(), self.service.root / "containers" / cid / "checkpoints" / name)
        self.add("plain_restore_dirty_mib", dirty_mib())
        try:
            seconds, _ = timed(lambda: retried(partial(run, "docker", "start", "--checkpoint", name, cid)))
            self.same_data("docker start --checkpoint")
            self.add("plain_restore", seconds)
            self.criu_time("plain", "restore")
        finally:
            subprocess.run(["docker", "checkpoint", "rm", cid, name], capture_output=True, check=False)
            self.service.remove_containerd_copies()

    def ours_restore(self, r: int) -> None:  # noqa: ARG002 - called like the plain side
        read_through(self.service.checkpoint_files())
        self.add("ours_restore_dirty_mib", dirty_mib())
        seconds, doc = timed(lambda: self.service.cli("restore", BASE, "--json"))
        self.same_data("compose-ckpt restore")
        self.add("ours_restore", seconds)
        self.phases["restore"].append(doc["phases"])
        self.restores.extend({key: c[key] for key in ("seconds", "pages", "page_bytes")} for c in doc["containers"])
        self.restores[-1]["phases"] = doc["phases"]
        self.criu_time("ours", "restore")

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
            self.criu_time("raw", "dump")
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


def table(results: dict[str, Any]) -> list[dict[str, Any]]:
    m = results["medians"]
    out = []
    for metric, base, ours, target in (
            ("2 GiB leave-running: frozen window vs plain checkpoint --leave-running", m.get("plain_live"),
             m.get("ours_live_freeze"), TARGETS["live"]),
            ("2 GiB snapshot --stop vs plain checkpoint + wait", m.get("plain_stop"), m.get("ours_stop"), TARGETS["stop"]),
            ("2 GiB restore vs plain docker start --checkpoint", m.get("plain_restore"), m.get("ours_restore"),
             TARGETS["restore"]),
            ("2 GiB raw runtime dump (floor) vs plain checkpoint --leave-running", m.get("plain_live"), m.get("runc_floor"), None),
            ("dd 2 GiB + fdatasync (disk floor) vs plain checkpoint --leave-running", m.get("plain_live"), m.get("dd_floor"), None)):
        if ours is None and base is None:
            continue  # a row not run (--rows)
        value = ratio(ours, base)
        out.append({"metric": metric, "baseline_s": base, "ours_s": ours, "ratio": value, "target": target,
                    "met": None if value is None or target is None else value <= target})
    return out


def print_details(results: dict[str, Any]) -> None:
    def line(label: str, values: dict[str, Any]) -> None:
        print(f"  {label:<26} " + "  ".join(f"{name} {value:.3f}" for name, value in values.items() if value is not None))

    for kind in ("live", "stop", "restore"):
        if results["phases"][kind]:
            line(f"{kind} phases", results["phases"][kind])
        for dump in results["dumps"].get(kind, [])[-1:]:
            rate = dump["size"] / dump["dump_seconds"] / 1e6 if dump["dump_seconds"] else 0
            print(f"  {kind} dump: {dump['dump_path']}, {dump['size'] / 2**30:.2f} GiB in {dump['dump_seconds']:.2f} s "
                  f"({rate:.0f} MB/s)" + (f", fallback: {dump['dump_fallback']}" if dump["dump_fallback"] else ""))
    restore = results["restore_per_container"]
    if restore["seconds"]:
        line("restore, per container", restore["seconds"])
        print(f"  restore pages: {', '.join(restore['pages'])}, {restore['page_bytes'] / 2**30:.2f} GiB")
    if results["criu"]:
        line("CRIU's own", results["criu"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="rounds per measurement; the median is reported")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"rows to measure, comma separated ({', '.join(ROWS)})")
    parser.add_argument("--out", type=Path, default=BENCH / "bigservice-results.json", help="JSON results file")
    parser.add_argument("--docker-host", help="a local engine's unix:// socket (default: DOCKER_HOST)")
    parser.add_argument("--adopt", action="store_true", help="adopt the service after `up` (Docker 28 and later)")
    args = parser.parse_args()
    chosen = [row.strip() for row in args.rows.split(",") if row.strip()]
    if not chosen or set(chosen) - set(ROWS):
        parser.error(f"--rows: some of {', '.join(ROWS)}")
    if args.docker_host:
        if not args.docker_host.startswith("unix://"):
            parser.error("--docker-host: a unix:// socket of an engine on this machine")
        os.environ["DOCKER_HOST"] = args.docker_host
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks on kill
    started = time.monotonic()
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "cli": CLI,
                               "repeat": args.repeat, "adopted": args.adopt, "rows": chosen}
    work = Path(tempfile.mkdtemp(prefix=".work-big-", dir=BENCH))
    service = BigService(work, args.adopt)
    rounds = Rounds(service, work, args.repeat)
    try:
        print(f"2 GiB redis ({service.name}) ...", flush=True)
        rounds.dump_rows([kind for kind in ("live", "stop") if kind in chosen])
        if "restore" in chosen:
            rounds.restore_rows()
        if "floors" in chosen:
            rounds.floor_rows()
    finally:
        service.down()
        service.remove_containerd_copies()
        shutil.rmtree(work, ignore_errors=True)
    per_container = ("copy_in", "restore", "clean_up", "verify")
    results.update(
        samples=rounds.samples, medians={key: median(values) for key, values in rounds.samples.items()},
        phases={kind: phase_medians(docs) for kind, docs in rounds.phases.items()}, dumps=rounds.dumps,
        restore_per_container={
            "seconds": {name: median([c["seconds"][name] for c in rounds.restores if name in c["seconds"]])
                        for name in per_container},
            "pages": sorted({c["pages"] for c in rounds.restores}),
            "page_bytes": max((c["page_bytes"] for c in rounds.restores), default=0),
            "each": rounds.restores},
        criu={key: median(values) for key, values in rounds.criu.items()}, seed_retries=SEED_RETRIES,
        cli_errors=rounds.errors, elapsed_seconds=round(time.monotonic() - started, 1),
        load_average={"min": min(rounds.load, default=None), "median": median(rounds.load),
                      "max": max(rounds.load, default=None), "each_side": rounds.load})
    results["table"] = table(results)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print_table(results["table"])
    print_details(results)
    load = results["load_average"]
    print(f"\nDocker {results['machine']['docker']}{' (adopted)' if args.adopt else ''}; load average "
          f"{load['min']}-{load['max']} (median {load['median']}); {len(rounds.errors)} failed rounds; "
          f"elapsed {results['elapsed_seconds']} s; wrote {args.out}")
    return 1 if rounds.errors else 0


if __name__ == "__main__":
    sys.exit(main())

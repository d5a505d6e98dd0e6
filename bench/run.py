#!/usr/bin/env python3
"""Benchmark compose-ckpt against plain `docker checkpoint` loops on the local engine.

Measured in one run (medians over --repeat rounds, each round alternating which side goes first):
  snapshot N   `compose-ckpt snapshot --stop` vs a sequential `docker checkpoint create` loop + wait for exit
  restore N    `compose-ckpt restore` vs a sequential `docker start --checkpoint` loop
  freeze 8     `freeze_seconds` of a leave-running snapshot of the 8-service stack (from `inspect --json`)
  1 GiB        `compose-ckpt snapshot --stop` vs `docker checkpoint create` + wait of a 1 GiB python3 service
  --help       `compose-ckpt --help` vs `python3 -c pass` (median of 10)

Stdlib only. Everything it creates (compose projects `ckptbench<random>...`, a work folder under bench/,
checkpoints) is removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO_CLI = BENCH.parent / ".venv" / "bin" / "compose-ckpt"
CLI = str(REPO_CLI) if REPO_CLI.exists() else (shutil.which("compose-ckpt") or "compose-ckpt")
RUN_ID = secrets.token_hex(3)
COUNTER = "i=0; while true; do i=$$((i+1)); sleep 0.1; done"  # $$: compose escapes $
BIG = "b=bytearray(1<<30); print('ready', flush=True); import time; [time.sleep(1) for _ in iter(int,1)]"
PARALLEL: list[str] = []  # ["--parallel", "N"] when --parallel is given, else the CLI's default
TARGETS = {"snapshot": 0.45, "restore": 0.5, "freeze": 1.0, "big": 1.05, "export": 1.2, "help": 0.25}


class CommandError(RuntimeError):
    def __init__(self, args: list[str], proc: subprocess.CompletedProcess[str]) -> None:
        self.record: dict[str, Any] = {"command": " ".join(args), "rc": proc.returncode,
                       "stdout": proc.stdout.strip()[-2000:], "stderr": proc.stderr.strip()[-2000:]}
        super().__init__(f"{self.record['command']} -> rc {proc.returncode}: {self.record['stderr']}")


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CommandError(list(args), proc)
    return proc.stdout


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


class Stack:
    """One compose project in its own folder under the work dir; the CLI runs in that folder."""

    def __init__(self, work: Path, tag: str, services: dict[str, dict[str, Any]]) -> None:
        self.name = f"ckptbench{RUN_ID}{tag}"
        self.folder = work / self.name
        self.folder.mkdir()
        # JSON is YAML: no third-party YAML writer needed.
        (self.folder / "compose.yaml").write_text(json.dumps({"services": services}, indent=2))
        self.env = {**os.environ, "COMPOSE_CKPT_HOME": str(work / "home")}
        self.ids: list[str] = []

    def compose(self, *args: str) -> str:
        return run("docker", "compose", "-p", self.name, *args, cwd=self.folder)

    def up(self) -> None:
        self.compose("up", "-d", "--force-recreate", "--wait")
        self.ids = self.compose("ps", "-aq").split()

    def down(self) -> None:
        subprocess.run(["docker", "compose", "-p", self.name, "down", "-v", "-t", "0"],
                       cwd=self.folder, capture_output=True, check=False)

    def cli(self, *args: str) -> Any:
        out = run(CLI, "-p", self.name, *args, cwd=self.folder, env=self.env)
        return json.loads(out) if "--json" in args else out

    def states(self) -> set[str]:
        return set(run("docker", "inspect", "-f", "{{.State.Status}}", *self.ids).split())

    def expect(self, state: str) -> None:
        if self.states() != {state}:
            raise RuntimeError(f"{self.name}: expected all {state}, got {self.states()}")

    def reset(self) -> None:
        """Back to a fresh running stack after a failed round."""
        subprocess.run([CLI, "-p", self.name, "prune", "--keep", "0"], cwd=self.folder, env=self.env,
                       capture_output=True, check=False)
        self.up()


def counter_stack(work: Path, n: int) -> Stack:
    services = {f"c{i}": {"image": "local/busybox:latest", "command": ["sh", "-c", COUNTER]}
                for i in range(1, n + 1)}
    return Stack(work, f"n{n}", services)


# --- the two ways of snapshotting and restoring a stack ---------------------------------------

def seed_snapshot(stack: Stack, name: str) -> None:
    for cid in stack.ids:
        run("docker", "checkpoint", "create", cid, name)
    run("docker", "wait", *stack.ids)  # returns once every container has exited


SEED_RETRIES: list[str] = []  # engine races the seed's loop hit and retried (see README)


def seed_restore(stack: Stack, name: str) -> None:
    for cid in stack.ids:
        for attempt in range(3):
            try:
                run("docker", "start", "--checkpoint", name, cid)
                break
            except CommandError as exc:  # containerd's "content sha256:...: already exists" race
                if "already exists" not in exc.record["stderr"] or attempt == 2:
                    raise
                SEED_RETRIES.append(exc.record["stderr"])
                time.sleep(0.5)


def seed_cleanup(stack: Stack, name: str) -> None:
    for cid in stack.ids:
        subprocess.run(["docker", "checkpoint", "rm", cid, name], capture_output=True, check=False)


def ours_snapshot(stack: Stack, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = stack.cli("snapshot", "--stop", "--name", name, "--json", *PARALLEL)
    if doc.get("status") != "complete":
        raise RuntimeError(f"snapshot {name} is {doc.get('status')}: {doc.get('error')}")
    return doc


def ours_restore(stack: Stack, name: str) -> None:
    stack.cli("restore", name, "--json", *PARALLEL)


class Bench:
    def __init__(self, repeat: int) -> None:
        self.repeat = repeat
        self.errors: list[dict[str, Any]] = []

    def guarded(self, what: str, stack: Stack, action: Callable[[int], None], r: int) -> None:
        """Run one round; on failure record it, reset the stack and go on."""
        try:
            action(r)
        except (CommandError, RuntimeError, json.JSONDecodeError) as exc:
            record = exc.record if isinstance(exc, CommandError) else {"error": str(exc)}
            self.errors.append({"during": what, **record})
            print(f"  ! {what}: {exc}", file=sys.stderr)
            stack.reset()

    def stack_round_trip(self, stack: Stack, n: int) -> dict[str, Any]:
        samples: dict[str, list[float]] = {"seed_snapshot": [], "ours_snapshot": [],
                                           "seed_restore": [], "ours_restore": []}

        def round_trip(side: str, snapshot: Callable[[Stack, str], Any], restore: Callable[[Stack, str], Any],
                       cleanup: Callable[[Stack, str], Any]) -> Callable[[int], None]:
            def one(r: int) -> None:
                name = f"{side}{r}"
                try:
                    t, _ = timed(lambda: snapshot(stack, name))
                    stack.expect("exited")
                    samples[f"{side}_snapshot"].append(t)
                    t, _ = timed(lambda: restore(stack, name))
                    stack.expect("running")
                    samples[f"{side}_restore"].append(t)
                finally:
                    cleanup(stack, name)
            return one

        seed = round_trip("seed", seed_snapshot, seed_restore, seed_cleanup)
        ours = round_trip("ours", ours_snapshot, ours_restore, lambda s, _: s.cli("prune", "--keep", "0"))

        for r in range(self.repeat):
            sides = [("seed", seed), ("compose-ckpt", ours)]
            for label, side in sides if r % 2 == 0 else reversed(sides):
                time.sleep(1)  # let the counters run between operations
                self.guarded(f"{label} round trip n={n} round {r}", stack, side, r)
        return {"services": n, "samples": {k: [round(v, 3) for v in vs] for k, vs in samples.items()},
                **{k: median(vs) for k, vs in samples.items()}}

    def freeze(self, stack: Stack) -> dict[str, Any]:
        freeze: list[float] = []
        total: list[float] = []
        engine: dict[str, Any] = {}

        def one(r: int) -> None:
            stack.cli("snapshot", "--name", f"live{r}", "--json", *PARALLEL)
            stack.expect("running")
            doc = stack.cli("inspect", f"live{r}", "--json")
            freeze.append(doc["freeze_seconds"])
            engine.update(doc.get("engine") or {})
            total.append(doc["total_seconds"])
            stack.cli("prune", "--keep", "0")

        for r in range(self.repeat):
            time.sleep(1)
            self.guarded(f"leave-running snapshot round {r}", stack, one, r)
        return {"services": len(stack.ids), "samples": freeze, "freeze_seconds": median(freeze),
                "total_seconds": median(total), "engine": engine}

    def big(self, work: Path) -> dict[str, Any]:
        service = {"image": "local/debian:bookworm", "command": ["python3", "-c", BIG]}
        stack = Stack(work, "big", {"mem": service})
        samples: dict[str, list[float]] = {"seed_snapshot": [], "ours_snapshot": [], "seed_export": [], "ours_export": []}
        extra: dict[str, Any] = {}
        try:
            stack.up()
            cid = stack.ids[0]

            def fresh() -> None:
                """(Re)start the container fresh and wait until its 1 GiB is allocated and touched."""
                wanted = run("docker", "logs", cid).count("ready") + 1
                if stack.states() == {"running"}:
                    wanted -= 1  # the first round: `up` already started it
                else:
                    run("docker", "start", cid)
                deadline = time.monotonic() + 60
                while run("docker", "logs", cid).count("ready") < wanted:
                    if time.monotonic() > deadline:
                        raise RuntimeError("1 GiB service never printed ready")
                    time.sleep(0.2)
                time.sleep(1)

            def seed(r: int) -> None:
                fresh()
                try:
                    t, _ = timed(lambda: (run("docker", "checkpoint", "create", cid, f"raw{r}"),
                                          run("docker", "wait", cid)))
                    stack.expect("exited")
                    samples["seed_snapshot"].append(t)
                finally:
                    subprocess.run(["docker", "checkpoint", "rm", cid, f"raw{r}"], capture_output=True, check=False)

            def ours(r: int) -> None:
                fresh()
                try:
                    t, doc = timed(lambda: ours_snapshot(stack, f"big{r}"))
                    stack.expect("exited")
                    samples["ours_snapshot"].append(t)
                    extra.update(size_bytes=doc["size"], dump_seconds=doc["containers"][0]["dump_seconds"],
                                 total_seconds=doc["total_seconds"])
                    export_round(stack, work, f"big{r}", samples)
                finally:
                    stack.cli("prune", "--keep", "0")

            for r in range(self.repeat):
                sides = [("seed", seed), ("compose-ckpt", ours)]
                for label, side in sides if r % 2 == 0 else reversed(sides):
                    self.guarded(f"1 GiB {label} round {r}", stack, side, r)
                    cid = stack.ids[0]  # a reset after a failure recreates it
        finally:
            stack.down()
        return {"samples": {k: [round(v, 3) for v in vs] for k, vs in samples.items()},
                **{k: median(vs) for k, vs in samples.items()}, "last_snapshot": extra}


def export_round(stack: Stack, work: Path, snapshot: str, samples: dict[str, list[float]]) -> None:
    """`compose-ckpt export` of the snapshot against `tar -c DIR | zstd -1` of its checkpoint folder."""
    folder = work / "home" / "projects" / stack.name / snapshot / "checkpoints"
    archive, plain = work / "export.ckpt", work / "plain.tar.zst"
    try:
        t_seed, _ = timed(lambda: run("sh", "-c", f"tar -C {folder} -c . | zstd -1 -q -f -o {plain}"))
        t_ours, _ = timed(lambda: stack.cli("export", snapshot, "-o", str(archive)))
        samples["seed_export"].append(t_seed)
        samples["ours_export"].append(t_ours)
    finally:
        archive.unlink(missing_ok=True)
        plain.unlink(missing_ok=True)


def help_times(count: int = 10) -> dict[str, Any]:
    def sample(cmd: list[str]) -> list[float]:
        return [timed(lambda: subprocess.run(cmd, capture_output=True, check=True))[0] for _ in range(count)]

    ours = sample([CLI, "--help"])
    python = sample([sys.executable, "-c", "pass"])
    return {"ours": median(ours), "python": median(python), "samples": [round(v, 3) for v in ours]}


def ratio(ours: float | None, base: float | None) -> float | None:
    return round(ours / base, 3) if ours is not None and base else None


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per reported number: what, baseline, ours, ratio, target, met."""
    out: list[dict[str, Any]] = []

    def add(metric: str, base: float | None, ours: float | None, value: float | None,
            target: float | None, strict: bool = False) -> None:
        met = None if value is None or target is None else (value < target if strict else value <= target)
        out.append({"metric": metric, "baseline_s": base, "ours_s": ours, "ratio": ratio(ours, base),
                    "target": target, "met": met})

    for kind in ("snapshot", "restore"):
        for st in results["stacks"]:
            base, ours = st[f"seed_{kind}"], st[f"ours_{kind}"]
            target = TARGETS[kind] if st["services"] == 8 else None
            add(f"{kind} {st['services']} services", base, ours, ratio(ours, base), target)
    if results.get("freeze"):
        f = results["freeze"]["freeze_seconds"]
        add(f"freeze window, {results['freeze']['services']} services (s)", None, f, f, TARGETS["freeze"])
    if results.get("big"):
        b = results["big"]
        add("1 GiB snapshot --stop", b["seed_snapshot"], b["ours_snapshot"],
            ratio(b["ours_snapshot"], b["seed_snapshot"]), TARGETS["big"])
        add("1 GiB export vs tar | zstd -1", b["seed_export"], b["ours_export"],
            ratio(b["ours_export"], b["seed_export"]), TARGETS["export"])
    h = results["help"]
    add("--help (s)", h["python"], h["ours"], h["ours"], TARGETS["help"], strict=True)
    return out


def print_table(table: list[dict[str, Any]]) -> None:
    def fmt(v: Any) -> str:
        return "-" if v is None else ("yes" if v is True else "NO" if v is False else f"{v:.3f}" if isinstance(v, float) else str(v))

    header = ["metric", "baseline_s", "ours_s", "ratio", "target", "met"]
    lines = [header] + [[fmt(row[h]) for h in header] for row in table]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(line, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def machine() -> dict[str, Any]:
    info = json.loads(run("docker", "info", "--format", "{{json .}}"))
    os_name = next((line.split("=", 1)[1].strip('"') for line in Path("/etc/os-release").read_text().splitlines()
                    if line.startswith("PRETTY_NAME=")), platform.system())
    return {"cpus": info.get("NCPU"), "os": os_name, "kernel": info.get("KernelVersion"),
            "docker": info.get("ServerVersion"), "cgroup": info.get("CgroupVersion"),
            "memory_gib": round(info.get("MemTotal", 0) / 2**30, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,4,8,16", help="services per stack, comma separated")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per measurement; the median is reported")
    parser.add_argument("--skip-big", action="store_true", help="skip the 1 GiB service")
    parser.add_argument("--parallel", type=int, help="pass --parallel N to snapshot/restore (default: the CLI's)")
    parser.add_argument("--out", type=Path, default=BENCH / "results.json", help="JSON results file")
    args = parser.parse_args()
    if args.parallel:
        PARALLEL.extend(["--parallel", str(args.parallel)])
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks on kill

    bench = Bench(args.repeat)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
                               "cli": CLI, "repeat": args.repeat, "parallel": args.parallel, "stacks": []}
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=".work-", dir=BENCH))
    stacks: list[Stack] = []
    try:
        print("compose-ckpt --help x10 ...", flush=True)
        results["help"] = help_times()
        for n in sorted(set(sizes) | {8}):
            stack = counter_stack(work, n)
            stacks.append(stack)
            print(f"{n}-service stack ({stack.name}) ...", flush=True)
            stack.up()
            if n in sizes:
                results["stacks"].append(bench.stack_round_trip(stack, n))
            if n == 8:
                print("leave-running snapshots of the 8-service stack ...", flush=True)
                results["freeze"] = bench.freeze(stack)
                results["machine"]["criu"] = results["freeze"]["engine"].get("criu")
            stack.down()
        if not args.skip_big:
            print("1 GiB service ...", flush=True)
            results["big"] = bench.big(work)
    finally:
        for stack in stacks:
            stack.down()
        shutil.rmtree(work, ignore_errors=True)
    results["table"] = rows(results)
    results["cli_errors"] = bench.errors
    results["seed_retries"] = SEED_RETRIES
    results["elapsed_seconds"] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print_table(results["table"])
    print(f"\n{len(bench.errors)} failed rounds; elapsed {results['elapsed_seconds']} s; wrote {args.out}")
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Benchmark compose-ckpt against plain `docker checkpoint` loops on the local engine.

Measured in one run (medians over --repeat rounds, each round alternating which side goes first):
  snapshot N   `compose-ckpt snapshot --stop` vs a sequential `docker checkpoint create` loop + `docker wait`
  restore N    `compose-ckpt restore` vs a sequential `docker start --checkpoint` loop
  live 8       leave-running `compose-ckpt snapshot` vs sequential `docker checkpoint create --leave-running`,
               and its freeze window (`freeze_seconds`)
  phases       where compose-ckpt's time goes (`phases` of `--json`), beside the floors: CRIU's own dump and
               restore time (from its logs: every bench service names a CRIU config file, annotation
               `org.criu.config`, whose `work-dir` keeps them) and the bare API calls (1 service)
  1 GiB        (--big) `compose-ckpt snapshot --stop` vs `docker checkpoint create` + wait of a 1 GiB service,
               and `compose-ckpt export` vs `tar | zstd -1`
  --help       `compose-ckpt --help` vs `python3 -c pass` (median of 10)

--docker-host runs it all against another local engine (a unix socket). --adopt (needed on Docker 28 and later,
which restore nothing else, moby#50750) adopts every stack (`compose-ckpt adopt --yes`) right after `up`, so
both sides dump and restore the same containers, each joined to its network holder.

Stdlib only. Everything it creates (compose projects `ckptbench<random>...` with their network holders and
networks, a work folder under bench/, checkpoints) is removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO_CLI = BENCH.parent / ".venv" / "bin" / "compose-ckpt"
CLI = str(REPO_CLI) if REPO_CLI.exists() else (shutil.which("compose-ckpt") or "compose-ckpt")
RUN_ID = secrets.token_hex(3)
COUNTER = "i=0; while true; do i=$$((i+1)); sleep 0.1; done"  # $$: compose escapes $
BIG = "b=bytearray(1<<30); print('ready', flush=True); import time; [time.sleep(1) for _ in iter(int,1)]"
PARALLEL: list[str] = []  # ["--parallel", "N"] when --parallel is given, else the CLI's default
# Ratios against the baseline of the same run (at the size given), except freeze and help: seconds.
TARGETS = {("snapshot", 1): 1.3, ("restore", 1): 1.3, ("live", 8): 0.45, ("restore", 8): 0.5,
           "freeze": 0.8, "big": 1.05, "export": 1.2, "help": 0.15}
CRIU_TIME = re.compile(r"^\((\d+\.\d+)\)", re.MULTILINE)


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


LAST_CLIENT_CPU = [0.0]  # CPU seconds of the commands (docker CLI, compose-ckpt) the last timed() ran


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    """Wall-clock seconds of `action`; the CPU its commands used (not the daemon's) goes to LAST_CLIENT_CPU."""
    start, cpu = time.perf_counter(), children_cpu()
    result = action()
    LAST_CLIENT_CPU[0] = children_cpu() - cpu
    return time.perf_counter() - start, result


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


class Stack:
    """One compose project in its own folder under the work dir; the CLI runs in that folder.
    `adopt`: each container is joined to a network holder after `up` (the form Docker 28+ restores)."""

    def __init__(self, work: Path, tag: str, services: dict[str, dict[str, Any]], adopt: bool = False) -> None:
        self.name = f"ckptbench{RUN_ID}{tag}"
        self.adopt = adopt
        self.folder = work / self.name
        self.folder.mkdir()
        self.criu_dirs: list[Path] = []
        for service, config in services.items():  # CRIU keeps its logs where the bench can read them
            criu_dir = self.folder / "criu" / service
            criu_dir.mkdir(parents=True)
            (criu_dir / "criu.conf").write_text(f"work-dir {criu_dir}\n")
            config["annotations"] = {"org.criu.config": str(criu_dir / "criu.conf")}
            self.criu_dirs.append(criu_dir)
        # JSON is YAML: no third-party YAML writer needed.
        (self.folder / "compose.yaml").write_text(json.dumps({"services": services}, indent=2))
        self.env = {**os.environ, "COMPOSE_CKPT_HOME": str(work / "home")}
        self.ids: list[str] = []

    def compose(self, *args: str) -> str:
        return run("docker", "compose", "-p", self.name, *args, cwd=self.folder)

    def up(self) -> None:
        self.compose("up", "-d", "--force-recreate", "--wait")
        if self.adopt:  # a cold restart of each container, not measured
            self.cli("adopt", "--yes")
        # The service containers only: `adopt` makes each network holder a compose service of its own, labelled
        # compose-ckpt.holder-for (a plain loop that checkpointed those too would wait forever: they restart).
        listed = run("docker", "ps", "-a", "--no-trunc", "--filter", f"label=com.docker.compose.project={self.name}",
                     "--filter", "label=com.docker.compose.oneoff=False",
                     "--format", '{{.ID}} {{.Label "compose-ckpt.holder-for"}}').splitlines()
        self.ids = [line.split()[0] for line in listed if len(line.split()) == 1]

    def down(self) -> None:
        """Containers, volumes and networks; --remove-orphans takes the network holders too."""
        subprocess.run(["docker", "compose", "-p", self.name, "down", "-v", "-t", "0", "--remove-orphans"],
                       cwd=self.folder, capture_output=True, check=False)

    def cli(self, *args: str) -> Any:
        out = run(CLI, "-p", self.name, *args, cwd=self.folder, env=self.env)
        return json.loads(out) if "--json" in args else out

    def states(self) -> set[str]:
        return set(run("docker", "inspect", "-f", "{{.State.Status}}", *self.ids).split())

    def expect(self, state: str) -> None:
        if self.states() != {state}:
            raise RuntimeError(f"{self.name}: expected all {state}, got {self.states()}")

    def criu_seconds(self, kind: str) -> list[float]:
        """CRIU's own time of each service's last `kind` (dump or restore): the last timestamp of its log,
        which is then removed so that the next reading is of the next run."""
        seconds = []
        for criu_dir in self.criu_dirs:
            log = criu_dir / f"{kind}.log"
            if log.exists():
                stamps = CRIU_TIME.findall(log.read_text(errors="replace"))
                if stamps:
                    seconds.append(float(stamps[-1]))
                log.unlink()
        return seconds

    def reset(self) -> None:
        """Back to a fresh running stack after a failed round; waits up to 2 min for a daemon being restarted
        (on a shared machine others restart it now and then)."""
        deadline = time.monotonic() + 120
        while True:
            subprocess.run([CLI, "-p", self.name, "prune", "--keep", "0"], cwd=self.folder, env=self.env,
                           capture_output=True, check=False)
            self.down()  # from scratch: `up --force-recreate` would put adopted containers back in own namespaces
            try:
                self.up()
                return
            except CommandError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(3)


def counter_stack(work: Path, n: int, adopt: bool) -> Stack:
    services = {f"c{i}": {"image": "local/busybox:latest", "command": ["sh", "-c", COUNTER]}
                for i in range(1, n + 1)}
    return Stack(work, f"n{n}", services, adopt)


# --- the two ways of snapshotting and restoring a stack ---------------------------------------

def seed_snapshot(stack: Stack, name: str) -> None:
    for cid in stack.ids:
        run("docker", "checkpoint", "create", cid, name)
    run("docker", "wait", *stack.ids)  # returns once every container has exited


def seed_snapshot_live(stack: Stack, name: str) -> None:
    for cid in stack.ids:
        run("docker", "checkpoint", "create", "--leave-running", cid, name)


SEED_RETRIES: list[str] = []  # engine races the seed's loop hit and retried (see README)


def retried(action: Callable[[], Any]) -> None:
    """containerd's `content sha256:...: already exists` race: retried like a user would (0.5 s, 3 tries)."""
    for attempt in range(3):
        try:
            action()
            return
        except (CommandError, ApiCallError) as exc:
            text = exc.record["stderr"] if isinstance(exc, CommandError) else str(exc)
            if "already exists" not in text or attempt == 2:
                raise
            SEED_RETRIES.append(text)
            time.sleep(0.5)


def seed_restore(stack: Stack, name: str) -> None:
    for cid in stack.ids:
        retried(partial(run, "docker", "start", "--checkpoint", name, cid))


def seed_cleanup(stack: Stack, name: str) -> None:
    for cid in stack.ids:
        subprocess.run(["docker", "checkpoint", "rm", cid, name], capture_output=True, check=False)


class ApiCallError(RuntimeError):
    pass


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=120)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def docker_socket() -> str:
    """The unix socket of the engine under test (DOCKER_HOST, which main sets from --docker-host)."""
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")


def api(method: str, url: str, body: Any = None) -> None:
    """One bare Engine API call over the local socket: what any client must wait for at least."""
    connection = _UnixConnection(docker_socket())
    try:
        connection.request(method, url, body=None if body is None else json.dumps(body),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        if response.status >= 400:
            raise ApiCallError(f"{method} {url} -> {response.status}: {data.decode(errors='replace')}")
    finally:
        connection.close()


def api_snapshot(stack: Stack, name: str) -> None:
    for cid in stack.ids:
        api("POST", f"/containers/{cid}/checkpoints", {"CheckpointID": name, "Exit": True})
    for cid in stack.ids:
        api("POST", f"/containers/{cid}/wait?condition=not-running")


def api_restore(stack: Stack, name: str) -> None:
    for cid in stack.ids:
        retried(partial(api, "POST", f"/containers/{cid}/start?checkpoint={name}"))


def ours_snapshot(stack: Stack, name: str, *flags: str) -> dict[str, Any]:
    doc: dict[str, Any] = stack.cli("snapshot", *flags, "--name", name, "--json", *PARALLEL)
    if doc.get("status") != "complete":
        raise RuntimeError(f"snapshot {name} is {doc.get('status')}: {doc.get('error')}")
    return doc


def ours_restore(stack: Stack, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = stack.cli("restore", name, "--json", *PARALLEL)
    return doc


class Bench:
    def __init__(self, repeat: int, adopt: bool) -> None:
        self.repeat = repeat
        self.adopt = adopt
        self.errors: list[dict[str, Any]] = []
        self.load: list[float] = []  # the 1-minute load average at the start of every round

    def guarded(self, what: str, stack: Stack, action: Callable[[int], None], r: int) -> None:
        """Run one round; on failure record it, reset the stack and go on."""
        self.load.append(round(os.getloadavg()[0], 2))
        try:
            action(r)
        except (CommandError, ApiCallError, RuntimeError, json.JSONDecodeError) as exc:
            record = exc.record if isinstance(exc, CommandError) else {"error": str(exc)}
            self.errors.append({"during": what, **record})
            print(f"  ! {what}: {exc}", file=sys.stderr)
            stack.reset()

    def alternating(self, what: str, stack: Stack, sides: list[tuple[str, Callable[[int], None]]]) -> None:
        """--repeat rounds of every side, the order turned round every other round."""
        for r in range(self.repeat):
            for label, side in sides if r % 2 == 0 else list(reversed(sides)):
                time.sleep(1)  # let the counters run between operations
                self.guarded(f"{label} {what} round {r}", stack, side, r)

    def stack_round_trip(self, stack: Stack, n: int) -> dict[str, Any]:
        """snapshot --stop then restore, each side from the same running stack; with 1 service also the
        bare API calls. Ours: the phases of every round; all sides: CRIU's own time per container."""
        samples: dict[str, list[float]] = {f"{side}_{op}": [] for side in ("seed", "ours", "api")
                                           for op in ("snapshot", "restore")}
        phases: dict[str, list[dict[str, float]]] = {"snapshot": [], "restore": [], "restore_containers": []}
        criu: dict[str, list[float]] = {"dump": [], "restore": []}
        client_cpu: dict[str, list[float]] = {f"{side}_{op}": [] for side in ("seed", "ours") for op in ("snapshot", "restore")}
        # The plain restores that did not meet containerd's `already exists` race: most of them do, and each
        # retry waits 0.5 s, which the medians above include (as a user would wait).
        unraced: dict[str, list[float]] = {"seed": [], **({"api": []} if n == 1 else {})}

        def round_trip(side: str, snapshot: Callable[[Stack, str], Any], restore: Callable[[Stack, str], Any],
                       cleanup: Callable[[Stack, str], Any]) -> Callable[[int], None]:
            def one(r: int) -> None:
                name = f"{side}{r}"
                stack.criu_seconds("dump"), stack.criu_seconds("restore")  # forget earlier runs
                try:
                    t, doc = timed(lambda: snapshot(stack, name))
                    stack.expect("exited")
                    samples[f"{side}_snapshot"].append(t)
                    client_cpu.get(f"{side}_snapshot", []).append(LAST_CLIENT_CPU[0])
                    criu["dump"].extend(stack.criu_seconds("dump"))
                    if side == "ours":
                        phases["snapshot"].append(doc["phases"])
                    retries = len(SEED_RETRIES)
                    t, doc = timed(lambda: restore(stack, name))
                    stack.expect("running")
                    samples[f"{side}_restore"].append(t)
                    if side in unraced and len(SEED_RETRIES) == retries:
                        unraced[side].append(t)
                    client_cpu.get(f"{side}_restore", []).append(LAST_CLIENT_CPU[0])
                    criu["restore"].extend(stack.criu_seconds("restore"))
                    if side == "ours":
                        phases["restore"].append(doc["phases"])
                        phases["restore_containers"].extend(c["seconds"] for c in doc["containers"])
                finally:
                    cleanup(stack, name)
            return one

        sides = [("seed", round_trip("seed", seed_snapshot, seed_restore, seed_cleanup)),
                 ("compose-ckpt", round_trip("ours", lambda st, nm: ours_snapshot(st, nm, "--stop"), ours_restore,
                                             lambda st, _: st.cli("prune", "--keep", "0")))]
        if n == 1:
            sides.append(("api", round_trip("api", api_snapshot, api_restore, seed_cleanup)))
        self.alternating(f"round trip n={n}", stack, sides)
        return {"services": n, "samples": {k: [round(v, 3) for v in vs] for k, vs in samples.items()},
                **{k: median(vs) for k, vs in samples.items()},
                "phases": {kind: phase_medians(docs) for kind, docs in phases.items()},
                "criu": {kind: median(values) for kind, values in criu.items()},
                "client_cpu": {kind: median(values) for kind, values in client_cpu.items()},
                "restore_without_race": {side: median(values) for side, values in unraced.items() if values},
                "rounds_without_race": {side: len(values) for side, values in unraced.items()}}

    def live(self, stack: Stack) -> dict[str, Any]:
        """Leave-running snapshots: ours (with its freeze window) against the sequential loop."""
        samples: dict[str, list[float]] = {"seed_live": [], "ours_live": [], "freeze": []}
        phases: list[dict[str, float]] = []
        engine: dict[str, Any] = {}
        criu: list[float] = []

        def seed(r: int) -> None:
            stack.criu_seconds("dump")
            try:
                samples["seed_live"].append(timed(lambda: seed_snapshot_live(stack, f"rawlive{r}"))[0])
                stack.expect("running")
            finally:
                seed_cleanup(stack, f"rawlive{r}")

        def ours(r: int) -> None:
            stack.criu_seconds("dump")
            try:
                t, doc = timed(lambda: ours_snapshot(stack, f"live{r}"))
                stack.expect("running")
                samples["ours_live"].append(t)
                samples["freeze"].append(doc["freeze_seconds"])
                phases.append(doc["phases"])
                criu.extend(stack.criu_seconds("dump"))
                engine.update(doc.get("engine") or {})
            finally:
                stack.cli("prune", "--keep", "0")

        self.alternating("leave-running snapshot", stack, [("seed", seed), ("compose-ckpt", ours)])
        return {"services": len(stack.ids), "samples": samples,
                **{k: median(vs) for k, vs in samples.items()}, "freeze_seconds": median(samples["freeze"]),
                "phases": phase_medians(phases), "criu_dump": median(criu), "engine": engine}

    def big(self, work: Path) -> dict[str, Any]:
        service = {"image": "local/debian:bookworm", "command": ["python3", "-c", BIG]}
        stack = Stack(work, "big", {"mem": service}, self.adopt)
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
                    t, doc = timed(lambda: ours_snapshot(stack, f"big{r}", "--stop"))
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


def compile_cli() -> str | None:
    """Write the bytecode of the compose-ckpt being measured, as installing its wheel does; returns its folder.

    An editable install has none, and where PYTHONDONTWRITEBYTECODE is set (as on the shared machines) Python
    never writes it: every command would compile the whole package again, 40-50 ms of CPU that no installed
    compose-ckpt spends."""
    python = Path(CLI).with_name("python")
    if not python.exists():
        return None  # not a venv's script: leave it as it is installed
    folder = run(str(python), "-c", "import compose_ckpt, os; print(os.path.dirname(compose_ckpt.__file__))").strip()
    run(str(python), "-m", "compileall", "-q", folder)
    return folder


def help_times(count: int = 10) -> dict[str, Any]:
    def sample(cmd: list[str]) -> list[float]:
        return [timed(lambda: subprocess.run(cmd, capture_output=True, check=True))[0] for _ in range(count)]

    ours = sample([CLI, "--help"])
    python = sample([sys.executable, "-c", "pass"])
    return {"ours": median(ours), "python": median(python), "samples": [round(v, 3) for v in ours]}


def phase_medians(documents: list[dict[str, float]]) -> dict[str, float | None]:
    """Per phase, the median over the rounds, in the order the phases ran."""
    names = list(dict.fromkeys(name for document in documents for name in document))
    return {name: median([document[name] for document in documents if name in document]) for name in names}


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

    for kind, label in (("snapshot", "snapshot --stop"), ("restore", "restore")):
        for st in results["stacks"]:
            base, ours = st[f"seed_{kind}"], st[f"ours_{kind}"]
            add(f"{label} {st['services']} services", base, ours, ratio(ours, base), TARGETS.get((kind, st["services"])))
    if results.get("live"):
        live = results["live"]
        n = live["services"]
        add(f"snapshot {n} services, leave running", live["seed_live"], live["ours_live"],
            ratio(live["ours_live"], live["seed_live"]), TARGETS.get(("live", n)))
        add(f"freeze window, {n} services (s)", None, live["freeze_seconds"], live["freeze_seconds"], TARGETS["freeze"])
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


def print_phases(results: dict[str, Any]) -> None:
    """Where compose-ckpt's time went (medians), beside the floors: CRIU's own time, the bare API calls."""
    def line(label: str, phases: dict[str, float | None]) -> None:
        print(f"  {label:<28} " + "  ".join(f"{name} {value:.3f}" for name, value in phases.items() if value is not None))

    for st in results["stacks"]:
        n = st["services"]
        print(f"{n} service{'s' if n > 1 else ''}:")
        line("snapshot --stop phases", st["phases"]["snapshot"])
        line("restore phases", st["phases"]["restore"])
        line("restore, per container", st["phases"]["restore_containers"])
        line("CRIU's own, per container", st["criu"])
        line("CPU of the commands", st["client_cpu"])
        if st.get("api_snapshot") is not None:
            line("bare API calls", {"checkpoint+wait": st["api_snapshot"], "start --checkpoint": st["api_restore"]})
        if "rounds_without_race" in st:
            rounds = ", ".join(f"{side} {count} of {results['repeat']}" for side, count in st["rounds_without_race"].items())
            line(f"plain restores, no race ({rounds})", st["restore_without_race"])
    if results.get("live"):
        live = results["live"]
        print(f"{live['services']} services, leave running:")
        line("snapshot phases", live["phases"])
        line("CRIU's own dump, per container", {"dump": live["criu_dump"]})


def machine() -> dict[str, Any]:
    info = json.loads(run("docker", "info", "--format", "{{json .}}"))
    server = json.loads(run("docker", "version", "--format", "{{json .Server}}"))
    components = {c.get("Name", "").lower(): c.get("Version") for c in server.get("Components") or []}
    os_name = next((line.split("=", 1)[1].strip('"') for line in Path("/etc/os-release").read_text().splitlines()
                    if line.startswith("PRETTY_NAME=")), platform.system())
    return {"cpus": info.get("NCPU"), "os": os_name, "kernel": info.get("KernelVersion"),
            "docker_host": os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
            "docker": info.get("ServerVersion"), "containerd": components.get("containerd"),
            "runc": components.get("runc"), "cgroup": info.get("CgroupVersion"),
            "memory_gib": round(info.get("MemTotal", 0) / 2**30, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,8", help="services per stack, comma separated (8 is always run)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per measurement; the median is reported")
    parser.add_argument("--big", action="store_true", help="also the 1 GiB service (snapshot --stop and export)")
    parser.add_argument("--parallel", type=int, help="pass --parallel N to snapshot/restore (default: the CLI's)")
    parser.add_argument("--out", type=Path, default=BENCH / "results.json", help="JSON results file")
    parser.add_argument("--docker-host", help="a local engine's unix:// socket (default: DOCKER_HOST, else the "
                                              "default engine); docker, compose and compose-ckpt all use it")
    parser.add_argument("--adopt", action="store_true",
                        help="adopt every stack after `up` (Docker 28 and later restore nothing else)")
    args = parser.parse_args()
    if args.docker_host:
        if not args.docker_host.startswith("unix://"):  # CRIU's logs and the bare API calls need the local host
            parser.error("--docker-host: a unix:// socket of an engine on this machine")
        os.environ["DOCKER_HOST"] = args.docker_host
    if args.parallel:
        PARALLEL.extend(["--parallel", str(args.parallel)])
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks on kill

    adopt: bool = args.adopt
    bench = Bench(args.repeat, adopt)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "cli": CLI,
                               "repeat": args.repeat, "parallel": args.parallel, "adopted": adopt, "stacks": []}
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=".work-", dir=BENCH))
    stacks: list[Stack] = []
    try:
        results["compiled"] = compile_cli()
        print("compose-ckpt --help x10 ...", flush=True)
        results["help"] = help_times()
        for n in sorted(set(sizes) | {8}):
            stack = counter_stack(work, n, adopt)
            stacks.append(stack)
            print(f"{n}-service stack ({stack.name}{', adopted' if adopt else ''}) ...", flush=True)
            stack.up()
            if n in sizes:
                results["stacks"].append(bench.stack_round_trip(stack, n))
            if n == 8:
                print("leave-running snapshots of the 8-service stack ...", flush=True)
                results["live"] = bench.live(stack)
                results["machine"]["criu"] = results["live"]["engine"].get("criu")
            stack.down()
        if args.big:
            print("1 GiB service ...", flush=True)
            results["big"] = bench.big(work)
    finally:
        for stack in stacks:
            stack.down()
        shutil.rmtree(work, ignore_errors=True)
    results["table"] = rows(results)
    results["cli_errors"] = bench.errors
    results["seed_retries"] = SEED_RETRIES
    results["load_average"] = {"min": min(bench.load, default=None), "median": median(bench.load),
                               "max": max(bench.load, default=None), "samples": bench.load}
    results["elapsed_seconds"] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print_table(results["table"])
    print()
    print_phases(results)
    load = results["load_average"]
    print(f"\nDocker {results['machine']['docker']}{' (adopted stacks)' if adopt else ''}; load average "
          f"{load['min']}-{load['max']} (median {load['median']}) during the rounds")
    print(f"{len(bench.errors)} failed rounds; elapsed {results['elapsed_seconds']} s; wrote {args.out}")
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())

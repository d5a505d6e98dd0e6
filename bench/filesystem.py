#!/usr/bin/env python3
"""Benchmark the filesystem part of a snapshot (issue 11) against its baselines, in one run.

  layer     `compose-ckpt snapshot` of 8 services that each wrote to their writable layer, with the layer
            copy (the default) vs `--ignore-rootfs`; medians over --repeat rounds, alternating which goes
            first. Target: at most 1.10.
  volume    a 1 GiB named volume (half random, half text): the copy `snapshot --with-volumes` takes while
            frozen (`volumes[].copy.seconds`) vs `tar -c <volume folder> | zstd -1` of the same data, side by
            side; and how much longer the frozen window gets. Target: at most 1.2.
  precopy   a 2 GiB named volume its service appends to: the frozen window of `snapshot --with-volumes`
            (pre-copy before the freeze, only the changes while frozen) vs the same with `--no-precopy`
            (the whole volume copied while frozen, as before issue 24); medians, alternating which goes
            first. Target: at most 0.2.
  restore   the extra time `restore --force` takes to put the volume back (vs `--ignore-volumes`, from the
            `prepare` phase of --json) vs `zstd -d | tar -x` of the baseline's archive into an empty folder.
            Target: at most 1.2.

Stdlib only; everything it creates (projects `ckptfsbench<random>`, a work folder) is removed at the end.
Run as root on the engine host (the volume is filled and read through its host folder for the baselines).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO_CLI = BENCH.parent / ".venv" / "bin" / "compose-ckpt"
CLI = str(REPO_CLI) if REPO_CLI.exists() else (shutil.which("compose-ckpt") or "compose-ckpt")
ERRORS: list[str] = []
TARGETS = {"layer": 1.10, "volume": 1.2, "restore": 1.2, "precopy": 0.2}
# Each service appends to a log in its writable layer and has written a few files there, as real ones do.
WRITER = ("mkdir -p /var/app; i=0; while [ $$i -lt 200 ]; do echo data $$i > /var/app/f$$i; i=$$((i+1)); done; "
          "exec 3>>/tmp/app.log; while true; do echo tick >&3; sleep 0.1; done")


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} -> {done.returncode}: {done.stderr.strip()[-1500:]}")
    return done.stdout


def wait_for_engine(limit: float = 120.0) -> None:
    """Others restart the shared engine now and then: wait for it to answer again."""
    deadline = time.monotonic() + limit
    time.sleep(3)
    while subprocess.run(["docker", "info"], capture_output=True).returncode != 0 and time.monotonic() < deadline:
        time.sleep(3)


def timed_shell(command: str) -> float:
    began = time.monotonic()
    run("sh", "-c", command)
    return time.monotonic() - began


class Stack:
    def __init__(self, work: Path, name: str, services: dict[str, Any], volumes: dict[str, Any]) -> None:
        self.name = name
        self.folder = work / name
        self.folder.mkdir()
        (self.folder / "compose.yaml").write_text(json.dumps({"services": services, "volumes": volumes}))
        self.env = {**os.environ, "COMPOSE_CKPT_HOME": str(work / "home")}

    def compose(self, *args: str) -> str:
        return run("docker", "compose", "-p", self.name, *args, cwd=self.folder)

    def cli(self, *args: str) -> Any:
        """Run the CLI; retried twice after a failure (the shared engine sometimes fails a freeze), each
        failure kept in ERRORS and reported with the results."""
        for attempt in range(3):
            try:
                out = run(CLI, "-p", self.name, *args, cwd=self.folder, env=self.env)
                return json.loads(out) if "--json" in args else out
            except RuntimeError as exc:
                ERRORS.append(str(exc)[:400])
                if attempt == 2:
                    raise
                wait_for_engine()
                subprocess.run(["docker", "compose", "-p", self.name, "up", "-d", "--wait"], cwd=self.folder,
                               capture_output=True, check=False)  # a daemon restart stopped the stack
                # A failed snapshot keeps its name: prune drops failed ones (and keeps the complete ones).
                subprocess.run([CLI, "-p", self.name, "prune", "--keep", "1000"], cwd=self.folder, env=self.env,
                               capture_output=True, check=False)
        raise AssertionError("unreachable")

    def down(self) -> None:
        subprocess.run(["docker", "compose", "-p", self.name, "down", "-v", "-t", "0"], cwd=self.folder,
                       capture_output=True, check=False)


def layer_rounds(work: Path, repeat: int) -> dict[str, Any]:
    services = {f"s{i}": {"image": "local/busybox:latest", "command": ["sh", "-c", WRITER]} for i in range(8)}
    stack = Stack(work, f"ckptfsbench{secrets.token_hex(3)}l", services, {})
    samples: dict[str, list[float]] = {"with": [], "without": [], "copy": []}
    try:
        stack.compose("up", "-d", "--wait")
        time.sleep(2)
        for index in range(repeat):
            order = ["with", "without"] if index % 2 == 0 else ["without", "with"]
            for side in order:
                name = f"{side}-{index}"
                flags = [] if side == "with" else ["--ignore-rootfs"]
                began = time.monotonic()
                document = stack.cli("snapshot", *flags, "--name", name, "--json")
                samples[side].append(time.monotonic() - began)
                if side == "with":
                    samples["copy"].append(document["phases"].get("copy files", 0.0))
                stack.cli("rm", name)
    finally:
        stack.down()
    with_median, without_median = statistics.median(samples["with"]), statistics.median(samples["without"])
    return {"with_layers_s": round(with_median, 3), "ignore_rootfs_s": round(without_median, 3),
            "copy_phase_s": round(statistics.median(samples["copy"]), 3),
            "ratio": round(with_median / without_median, 3), "samples": samples}


def fill(folder: Path) -> int:
    """1 GiB: 512 MiB of random bytes in 64 files, 512 MiB of text in 2048 files."""
    total = 0
    for index in range(64):
        (folder / f"random-{index}.bin").write_bytes(os.urandom(8 * 1024**2))
        total += 8 * 1024**2
    line = b"2026-11-29T21:00:00Z INFO request served path=/api/items status=200 bytes=5123\n"
    block = line * (256 * 1024 // len(line) + 1)
    text = (folder / "logs")
    text.mkdir()
    for index in range(2048):
        (text / f"log-{index}.txt").write_bytes(block[:256 * 1024])
        total += 256 * 1024
    return total


def volume_rounds(work: Path, repeat: int) -> dict[str, Any]:
    services = {"db": {"image": "local/busybox:latest", "volumes": ["data:/data"],
                       "command": ["sh", "-c", "exec 3>>/data/journal; while true; do echo x >&3; sleep 0.1; done"]}}
    stack = Stack(work, f"ckptfsbench{secrets.token_hex(3)}v", services, {"data": {}})
    result: dict[str, Any] = {}
    samples: dict[str, list[float]] = {k: [] for k in ("ours_copy", "tar_zstd", "freeze_with", "freeze_without",
                                                       "restore_with", "restore_without", "unzstd_untar")}
    try:
        stack.compose("up", "-d", "--wait")
        volume = f"{stack.name}_data"
        folder = Path(json.loads(run("docker", "volume", "inspect", volume))[0]["Mountpoint"])
        result["bytes"] = fill(folder)
        baseline = work / "baseline.tar.zst"
        target = work / "untar"
        for index in range(repeat):
            name = f"vol-{index}"
            document = stack.cli("snapshot", "--with-volumes", "--name", name, "--json")
            (copy,) = [v["copy"] for v in document["volumes"]]
            samples["ours_copy"].append(copy["seconds"])
            samples["freeze_with"].append(document["freeze_seconds"])
            samples["tar_zstd"].append(timed_shell(f"tar -C {folder} -c . | zstd -1 -q -T0 -f -o {baseline}"))
            plain = stack.cli("snapshot", "--name", f"plain-{index}", "--json")
            samples["freeze_without"].append(plain["freeze_seconds"])
            for ignore in ([], ["--ignore-volumes"]) if index % 2 == 0 else (["--ignore-volumes"], []):
                restored = stack.cli("restore", name, "--force", "--no-safety-checkpoint", *ignore, "--json")
                samples["restore_without" if ignore else "restore_with"].append(restored["phases"]["prepare"])
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            samples["unzstd_untar"].append(timed_shell(f"zstd -d -q -c {baseline} | tar -C {target} -x"))
            shutil.rmtree(target)
            stack.cli("rm", name, f"plain-{index}")
        result["stored_bytes"] = copy["stored"]
        result["baseline_bytes"] = baseline.stat().st_size
    finally:
        stack.down()
    med = {key: statistics.median(values) for key, values in samples.items()}
    result.update({
        "ours_copy_s": round(med["ours_copy"], 3), "tar_zstd_s": round(med["tar_zstd"], 3),
        "copy_ratio": round(med["ours_copy"] / med["tar_zstd"], 3),
        "freeze_growth_s": round(med["freeze_with"] - med["freeze_without"], 3),
        "restore_extra_s": round(med["restore_with"] - med["restore_without"], 3),
        "unzstd_untar_s": round(med["unzstd_untar"], 3),
        "restore_ratio": round((med["restore_with"] - med["restore_without"]) / med["unzstd_untar"], 3),
        "samples": samples,
    })
    return result


def precopy_rounds(work: Path, repeat: int) -> dict[str, Any]:
    services = {"db": {"image": "local/busybox:latest", "volumes": ["data:/data"],
                       "command": ["sh", "-c", "exec 3>>/data/journal; while true; do echo x >&3; sleep 0.01; done"]}}
    stack = Stack(work, f"ckptfsbench{secrets.token_hex(3)}p", services, {"data": {}})
    samples: dict[str, list[float]] = {"precopy": [], "whole": [], "reread": []}
    result: dict[str, Any] = {}
    try:
        stack.compose("up", "-d", "--wait")
        folder = Path(json.loads(run("docker", "volume", "inspect", f"{stack.name}_data"))[0]["Mountpoint"])
        (folder / "one").mkdir()
        (folder / "two").mkdir()
        result["bytes"] = fill(folder / "one") + fill(folder / "two")
        for index in range(repeat):
            for side in ("precopy", "whole") if index % 2 == 0 else ("whole", "precopy"):
                name = f"{side}-{index}"
                flags = ["--no-precopy"] if side == "whole" else []
                document = stack.cli("snapshot", "--with-volumes", *flags, "--name", name, "--json")
                samples[side].append(document["freeze_seconds"])
                if side == "precopy":
                    samples["reread"].extend(v["copy"]["reread"] for v in document["volumes"])
                    result["precopy_phases"] = document["phases"]
                stack.cli("rm", name)
    finally:
        stack.down()
    precopy, whole = statistics.median(samples["precopy"]), statistics.median(samples["whole"])
    result.update({"frozen_precopy_s": round(precopy, 3), "frozen_whole_s": round(whole, 3),
                   "ratio": round(precopy / whole, 3), "samples": samples})
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output", type=Path, default=BENCH / "filesystem-results.json")
    parser.add_argument("--only", choices=["layer", "volume", "precopy"], action="append",
                        help="run only these rounds (default: all); results go to --output")
    args = parser.parse_args()
    rounds = {"layer": layer_rounds, "volume": volume_rounds, "precopy": precopy_rounds}
    chosen = args.only or list(rounds)
    work = BENCH / f".work-fs-{secrets.token_hex(3)}"
    work.mkdir(mode=0o700)
    try:
        results: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "load_1m": os.getloadavg()[0], "kernel": platform.release(),
                        "docker": run("docker", "version", "-f", "{{.Server.Version}}").strip()},
            **{part: rounds[part](work, args.repeat) for part in chosen},
            "targets": TARGETS,
            "errors": ERRORS,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_1m_after"] = os.getloadavg()[0]
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    if "layer" in results:
        layer = results["layer"]
        print(f"layer:   {layer['with_layers_s']}s with, {layer['ignore_rootfs_s']}s --ignore-rootfs: "
              f"x{layer['ratio']} (target <= {TARGETS['layer']})")
    if "volume" in results:
        volume = results["volume"]
        print(f"volume:  copy {volume['ours_copy_s']}s vs tar|zstd -1 {volume['tar_zstd_s']}s: "
              f"x{volume['copy_ratio']} (target <= {TARGETS['volume']}); frozen window +{volume['freeze_growth_s']}s")
        print(f"restore: +{volume['restore_extra_s']}s vs zstd -d|tar -x {volume['unzstd_untar_s']}s: "
              f"x{volume['restore_ratio']} (target <= {TARGETS['restore']})")
    if "precopy" in results:
        precopy = results["precopy"]
        print(f"precopy: frozen {precopy['frozen_precopy_s']}s with the pre-copy vs {precopy['frozen_whole_s']}s "
              f"copying the whole volume while frozen: x{precopy['ratio']} (target <= {TARGETS['precopy']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

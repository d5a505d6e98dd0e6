"""Whole-stack migration time, broken into snapshot / transfer / restore (`compose-ckpt migrate --json`).

The target is a second dockerd on this machine (as in the integration tests), reached over tcp, so
checkpoints travel through the Docker API and images stream from `docker save` into `docker load`.
Run from the repository root: `.venv/bin/python bench/migrate.py [--repeat N] [--big]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.integration.second_engine import start_second_engine  # noqa: E402 - needs the repo on the path

CLI = str(REPO / ".venv" / "bin" / "compose-ckpt")
COUNTER = "i=0; while true; do i=$$((i+1)); sleep 0.1; done"
BIG = "b = bytearray(1 << 30); import time; [time.sleep(1) for _ in iter(int, 1)]"


def compose_text(big: bool) -> str:
    services = {
        "kv": {"image": "local/debian:bookworm",
               "command": ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"]},
        **{f"c{i}": {"image": "local/busybox:latest", "command": ["sh", "-c", COUNTER], "depends_on": ["kv"]}
           for i in (1, 2)},
    }
    if big:
        services["mem"] = {"image": "local/debian:bookworm", "command": ["python3", "-c", BIG]}
    return json.dumps({"services": services}, indent=2)


def one_round(work: Path, target: str, big: bool) -> dict[str, float]:
    project = f"ckptbenchmig{uuid.uuid4().hex[:6]}"
    folder = work / project
    folder.mkdir()
    (folder / "compose.yaml").write_text(compose_text(big))
    env = {**os.environ, "COMPOSE_CKPT_HOME": str(work / "home")}
    subprocess.run(["docker", "compose", "-p", project, "up", "-d", "--wait"], cwd=folder, check=True, capture_output=True)
    time.sleep(5 if big else 1)  # the 1 GiB service allocates and touches its memory first
    try:
        started = time.perf_counter()
        done = subprocess.run([CLI, "-p", project, "migrate", "--to", target, "--json"], cwd=folder, env=env,
                              capture_output=True, text=True, check=True)
        seconds = json.loads(done.stdout)["seconds"]
        return {**seconds, "total": round(time.perf_counter() - started, 3)}
    finally:
        subprocess.run(["docker", "compose", "-p", project, "down", "-v", "-t", "0"], cwd=folder, capture_output=True)
        subprocess.run(["docker", "-H", target, "rm", "-f", *subprocess.run(
            ["docker", "-H", target, "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
            capture_output=True, text=True).stdout.split()], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--big", action="store_true", help="add a 1 GiB-memory service to the stack")
    parser.add_argument("--out", default=str(REPO / "bench" / "migrate-results.json"))
    args = parser.parse_args()
    second = start_second_engine()
    try:
        with tempfile.TemporaryDirectory(prefix="ckptbench-migrate-") as temporary:
            rounds = [one_round(Path(temporary), second.tcp, args.big) for _ in range(args.repeat)]
    finally:
        second.stop()
    medians = {phase: round(statistics.median(r[phase] for r in rounds), 3) for phase in rounds[0]}
    Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "big": args.big,
                                          "rounds": rounds, "median": medians}, indent=2) + "\n")
    print("phase      median s   (rounds)")
    for phase, value in medians.items():
        print(f"{phase:<10} {value:>8.3f}   {[r[phase] for r in rounds]}")


if __name__ == "__main__":
    main()

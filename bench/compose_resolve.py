"""What resolving a compose project costs: compose itself (the plugin run directly, as compose-ckpt does)
against the in-house loader, in the same run, on a 1-service project and on real projects.

    .venv/bin/python bench/compose_resolve.py [--repeat 20] [--out bench/compose-resolve-results.json]

Rows (medians of --repeat runs, alternating which side goes first):
- `load_project` in-process: delegated (subprocess of the compose plugin) vs in-house (COMPOSE_CKPT_COMPOSE=builtin);
  this is what a snapshot or restore pays on top of everything else.
- the same as CPU time (ours plus the compose child's), which a busy machine does not inflate.
- `docker compose config` through the docker CLI, for comparison (what delegating through `docker` would cost).
- `compose-ckpt config --json` and `ps --json` as commands, both ways (Python start-up included); `ps`
  resolves the project and asks the engine, like the first step of a snapshot (compose runs while the
  engine client loads).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from compose_ckpt.compose import ProjectOptions, load_project  # noqa: E402

ONE_SERVICE = "services:\n  app:\n    image: local/busybox\n    command: [sleep, infinity]\n"
REAL = {
    "netbox-docker (5 services, anchors)": REPO / "tests/integration/compose_real/netbox-docker",
    "immich + extends.file (4 services)": REPO / "tests/integration/compose_real/immich-hwaccel",
    "awesome-compose/nextcloud-redis-mariadb": REPO / "tests/integration/compose_real/awesome-compose/nextcloud-redis-mariadb",
}


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def median_cpu_seconds(run: Callable[[], object], repeat: int) -> float:
    """CPU time (ours and our children's, user + system): unlike wall time, not inflated by a busy machine."""
    def cpu() -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    samples = []
    for _ in range(repeat):
        started = cpu()
        run()
        samples.append(cpu() - started)
    return statistics.median(samples)


def environment(mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    if mode == "builtin":
        env["COMPOSE_CKPT_COMPOSE"] = "builtin"
    return env


def measure(folder: Path, repeat: int) -> dict[str, float]:
    def loader(mode: str) -> Callable[[], object]:
        return lambda: load_project(ProjectOptions(cwd=folder, environ=environment(mode)))

    def command(*argv: str, mode: str = "auto") -> Callable[[], object]:
        return lambda: subprocess.run(argv, cwd=folder, env=environment(mode), check=True, capture_output=True)

    cli = [sys.executable, "-m", "compose_ckpt", "-p", "ckptbench-resolve"]
    loader("auto")(), loader("builtin")()  # warm the page cache and imports
    pairs = {
        "load_project": (loader("builtin"), loader("auto")),
        "command config --json": (command(*cli, "config", "--json", mode="builtin"), command(*cli, "config", "--json")),
        "command ps --json": (command(*cli, "ps", "--json", mode="builtin"), command(*cli, "ps", "--json")),
    }
    result: dict[str, float] = {}
    for name, (builtin, delegated) in pairs.items():
        samples: dict[str, list[float]] = {"in-house": [], "compose": []}
        for round_ in range(repeat):  # alternate which side goes first
            sides = [("in-house", builtin), ("compose", delegated)]
            for side, run in sides if round_ % 2 == 0 else reversed(sides):
                samples[side].append(median_seconds(run, 1))
        result.update({f"{name}: {side}": statistics.median(times) for side, times in samples.items()})
    result["load_project CPU: in-house"] = median_cpu_seconds(loader("builtin"), repeat)
    result["load_project CPU: compose"] = median_cpu_seconds(loader("auto"), repeat)
    result["docker compose config (via docker CLI)"] = median_seconds(
        command("docker", "compose", "config", "--format", "json"), repeat)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", default=str(REPO / "bench" / "compose-resolve-results.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ckptbench-resolve-") as work:
        one = Path(work) / "one"
        one.mkdir()
        (one / "compose.yaml").write_text(ONE_SERVICE)
        projects = {"1 service": one, **REAL}
        results = {name: measure(folder, args.repeat) for name, folder in projects.items()}
    print(f"{'project':<42} {'row':<40} {'seconds':>8}")
    for name, rows in results.items():
        for row, seconds in rows.items():
            print(f"{name:<42} {row:<40} {seconds:8.4f}")
        ratio = rows["load_project: compose"] / rows["load_project: in-house"]
        print(f"{name:<42} {'load_project ratio compose / in-house':<40} {ratio:8.2f}")
    Path(args.out).write_text(json.dumps({"repeat": args.repeat, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The 2 GiB service, restore side: `compose-ckpt restore` against plain `docker start --checkpoint` of the
same checkpoint, in one run.

A redis (`redis-server --enable-debug-command yes` from local/debian:bookworm) holding 2 GiB
(`debug populate 2000 key 1048576`), snapshotted once with `compose-ckpt snapshot --stop` (not timed). Rows
(medians over --repeat rounds; the two sides alternate which goes first; before each side the container is
killed, not timed; after each, `debug digest` must equal the one taken before the snapshot):
  restore  `compose-ckpt restore` of that snapshot (wall clock) vs the same checkpoint's files copied into
           Docker's checkpoint folder (not timed) and `docker start --checkpoint` (wall clock)
  floor    `dd` of as many bytes as the page images hold, with fdatasync, into the daemon's data root
Where compose-ckpt's time goes: the phases of `restore --json`, and per container the copy_in (the page
images into the container's root included) and restore seconds, the pages route and bytes.

--docker-host for another local engine, --adopt for Docker 28 (adopt the service after `up`). Everything it
creates (compose project `ckptbigr<random>`, a work folder under bench/, checkpoints, containerd's copies of
the plain restores) is removed at the end, also on failure, Ctrl-C or SIGTERM. Writes
bench/bigrestore-results.json (or --out); exit 1 when a round failed.
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
from pathlib import Path
from typing import Any

from run import CLI, CommandError, machine, median, phase_medians, ratio, run, timed

BENCH = Path(__file__).resolve().parent
KEYS = 2000
KEY_BYTES = 1024**2
TARGET = 0.25  # compose-ckpt restore / plain docker start --checkpoint (issue 22)
REDIS = ["redis-server", "--enable-debug-command", "yes", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
SNAPSHOT = "base"


class BigService:
    def __init__(self, work: Path, adopt: bool) -> None:
        self.name = f"ckptbigr{secrets.token_hex(3)}"
        self.folder = work / self.name
        self.folder.mkdir()
        self.adopt = adopt
        services = {"redis": {"image": "local/debian:bookworm", "command": REDIS}}
        (self.folder / "compose.yaml").write_text(json.dumps({"services": services}, indent=2))  # JSON is YAML
        self.home = work / "home"
        self.env = {**os.environ, "COMPOSE_CKPT_HOME": str(self.home)}
        self.id = ""
        self.root = Path(run("docker", "info", "--format", "{{.DockerRootDir}}").strip())

    def cli(self, *args: str) -> Any:
        out = run(CLI, "-p", self.name, *args, cwd=self.folder, env=self.env)
        return json.loads(out) if "--json" in args else out

    def up(self) -> None:
        run("docker", "compose", "-p", self.name, "up", "-d", cwd=self.folder)
        if self.adopt:
            self.cli("adopt", "--yes")
        self.id = run("docker", "ps", "-aq", "--no-trunc", "--filter", f"label=com.docker.compose.project={self.name}",
                      "--filter", "label=com.docker.compose.service=redis").split()[0]
        while subprocess.run(["docker", "exec", self.id, "redis-cli", "ping"], capture_output=True, text=True,
                             check=False).stdout.strip() != "PONG":
            time.sleep(0.2)
        said = self.redis("debug", "populate", str(KEYS), "key", str(KEY_BYTES))
        if said != "OK" or self.redis("dbsize") != str(KEYS):  # redis-cli exits 0 even on ERR
            raise RuntimeError(f"debug populate: {said}")

    def down(self) -> None:
        subprocess.run(["docker", "compose", "-p", self.name, "down", "-v", "-t", "0", "--remove-orphans"],
                       cwd=self.folder, capture_output=True, check=False)

    def redis(self, *args: str) -> str:
        return run("docker", "exec", self.id, "redis-cli", *args).strip()

    def stop(self) -> None:
        subprocess.run(["docker", "kill", self.id], capture_output=True, check=False)
        run("docker", "wait", self.id)

    def checkpoint_files(self) -> Path:
        container = run("docker", "inspect", "-f", "{{.Name}}", self.id).strip().lstrip("/")
        return self.home / "projects" / self.name / SNAPSHOT / "checkpoints" / container

    def page_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.checkpoint_files().glob("pages-*.img"))

    def remove_containerd_copies(self) -> None:
        """containerd leaves its copy of each plain restore's checkpoint in /tmp (its temp folder here)."""
        for folder in Path("/tmp").glob("ctrd-checkpoint*"):
            try:
                if self.id.encode() in (folder / "cgroup.img").read_bytes():
                    shutil.rmtree(folder)
            except OSError:
                continue


class Rounds:
    def __init__(self, service: BigService, repeat: int, digest: str) -> None:
        self.service = service
        self.repeat = repeat
        self.digest = digest
        self.samples: dict[str, list[float]] = {"ours": [], "plain": [], "disk": []}
        self.phases: list[dict[str, float]] = []
        self.containers: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.load: list[float] = []

    def check(self, what: str) -> None:
        if self.service.redis("debug", "digest") != self.digest:
            raise RuntimeError(f"{what}: the data came back different")

    def ours(self, r: int) -> None:  # noqa: ARG002 - same call as plain
        seconds, document = timed(lambda: self.service.cli("restore", SNAPSHOT, "--json"))
        self.check("compose-ckpt restore")
        self.samples["ours"].append(round(seconds, 3))
        self.phases.append(document["phases"])
        self.containers.extend({key: c[key] for key in ("seconds", "pages", "page_bytes")}
                               for c in document["containers"])

    def plain(self, r: int) -> None:
        name = f"plain{r}"
        shutil.copytree(self.service.checkpoint_files(), self.service.root / "containers" / self.service.id
                        / "checkpoints" / name)
        try:
            seconds, _ = timed(lambda: run("docker", "start", "--checkpoint", name, self.service.id))
            self.check("docker start --checkpoint")
            self.samples["plain"].append(round(seconds, 3))
        finally:
            subprocess.run(["docker", "checkpoint", "rm", self.service.id, name], capture_output=True, check=False)
            self.service.remove_containerd_copies()

    def disk(self) -> None:
        target = self.service.root / f".bigrestore-floor-{secrets.token_hex(3)}"
        blocks = max(1, self.service.page_bytes() // 2**26)
        try:
            seconds, _ = timed(lambda: run("dd", "if=/dev/zero", f"of={target}", "bs=64M", f"count={blocks}",
                                           "conv=fdatasync"))
        finally:
            target.unlink(missing_ok=True)
        self.samples["disk"].append(round(seconds, 3))

    def go(self) -> None:
        sides = [("ours", self.ours), ("plain", self.plain)]
        for r in range(self.repeat):
            for label, side in sides if r % 2 == 0 else list(reversed(sides)):
                print(f"  {label} round {r} ...", flush=True)
                self.load.append(round(os.getloadavg()[0], 2))
                self.service.stop()
                try:
                    side(r)
                except (CommandError, RuntimeError, json.JSONDecodeError, OSError) as exc:
                    record = exc.record if isinstance(exc, CommandError) else {"error": str(exc)}
                    self.errors.append({"during": f"{label} round {r}", **record})
                    print(f"  ! {label} round {r}: {exc}", file=sys.stderr)
            self.disk()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="rounds per side; the median is reported")
    parser.add_argument("--out", type=Path, default=BENCH / "bigrestore-results.json", help="JSON results file")
    parser.add_argument("--docker-host", help="a local engine's unix:// socket (default: DOCKER_HOST, else the default engine)")
    parser.add_argument("--adopt", action="store_true", help="adopt the service after `up` (Docker 28 and later)")
    args = parser.parse_args()
    if args.docker_host:
        if not args.docker_host.startswith("unix://"):
            parser.error("--docker-host: a unix:// socket of an engine on this machine")
        os.environ["DOCKER_HOST"] = args.docker_host
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks on kill

    work = Path(tempfile.mkdtemp(prefix=".work-", dir=BENCH))
    service = BigService(work, args.adopt)
    started = time.monotonic()
    try:
        service.up()
        digest = service.redis("debug", "digest")
        service.cli("snapshot", "--stop", "--name", SNAPSHOT)
        rounds = Rounds(service, args.repeat, digest)
        rounds.go()
    finally:
        service.down()
        service.remove_containerd_copies()
        shutil.rmtree(work, ignore_errors=True)
    ours, plain, disk = (median(rounds.samples[key]) for key in ("ours", "plain", "disk"))
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "cli": CLI, "repeat": args.repeat,
        "adopted": args.adopt, "samples": rounds.samples, "load": rounds.load, "errors": rounds.errors,
        "row": {"ours": ours, "plain": plain, "ratio": ratio(ours, plain), "target": TARGET,
                "met": (ratio(ours, plain) or 99) <= TARGET, "disk_floor": disk},
        "phases": phase_medians(rounds.phases),
        "per_container": {"copy_in": median([c["seconds"].get("copy_in", 0.0) for c in rounds.containers]),
                          "restore": median([c["seconds"].get("restore", 0.0) for c in rounds.containers]),
                          "pages": sorted({c["pages"] for c in rounds.containers}),
                          "page_bytes": max((c["page_bytes"] for c in rounds.containers), default=0)},
        "seconds": round(time.monotonic() - started, 1),
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    row = results["row"]
    print(f"2 GiB restore: compose-ckpt {ours}s, docker start --checkpoint {plain}s, ratio {row['ratio']} "
          f"(target <= {TARGET}: {'met' if row['met'] else 'NOT met'}); disk floor {disk}s")
    print(f"  phases {results['phases']}; per container {results['per_container']}")
    return 1 if rounds.errors else 0


if __name__ == "__main__":
    sys.exit(main())

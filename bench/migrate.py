"""Whole-stack migration time, broken into snapshot / transfer / restore (`compose-ckpt migrate --json`).

`--live`: the downtime of `migrate --live` vs today's `migrate` on the same stack, side by side in one run
(issue 24): a redis holding 2 GiB that a writer service changes at about 10 MiB/s, with a 2 GiB named
volume; each side on a fresh copy of the stack, alternating which goes first. The live side's data is
checked: the volume's files on the target equal the source's (which the freeze left as they were), and
redis on the target has every key, the populated ones with the digests they had before the move.
After the rounds, `floor`: the same bytes as the page images put alone into a container on the target, plus
the rounds' CRIU restore, the least a move that copies the memory during its downtime takes here.

The target is a second dockerd on this machine (as in the integration tests), reached over tcp, so
checkpoints travel through the Docker API and images stream from `docker save` into `docker load`.
Run from the repository root: `.venv/bin/python bench/migrate.py [--repeat N] [--big]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.integration.second_engine import Network, start_second_engine  # noqa: E402 - needs the repo on the path

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


# An address pool of the bench's own: the test sessions of others use the second engines' ones.
BENCH_NETWORK = Network("base=10.242.0.0/16,size=24")
LIVE_TARGET = 0.15
# About 10 MiB/s: a 1 MiB value every 0.1 s, over 200 keys of its own. The writer runs in redis's container
# and talks to it over a unix socket: a TCP connection open at the freeze needs CRIU's tcp-established,
# which this shared machine's /etc/criu/runc.conf does not set.
KV = ("redis-server --save '' --appendonly no --protected-mode no --enable-debug-command yes "
      "--unixsocket /tmp/redis.sock & until [ -S /tmp/redis.sock ]; do sleep 0.1; done; i=0; "
      "while true; do head -c 1048576 /dev/urandom | redis-cli -s /tmp/redis.sock -x set w:$$((i % 200)) >/dev/null; "
      "i=$$((i+1)); sleep 0.1; done")
SAMPLE_KEYS = [f"key:{n}" for n in range(0, 2000, 97)]


def live_stack() -> str:
    return json.dumps({"services": {
        "kv": {"image": "local/debian:bookworm", "command": ["sh", "-c", KV], "volumes": ["data:/data"]},
    }, "volumes": {"data": {}}}, indent=2)


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} -> {done.returncode}: {(done.stdout + done.stderr)[-2000:]}")
    return done.stdout


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def running(phases: dict[str, float]) -> float:
    """The seconds of a snapshot's phases before its freeze (`pause`), while the stack still served: resolving,
    recording, the volume pre-copy that `migrate` too has made since issue 24."""
    before = 0.0
    for phase, seconds in phases.items():  # in the order they ran
        if phase == "pause":
            return before
        before += seconds
    return 0.0


def live_round(work: Path, target: str, live: bool, cli: str = CLI) -> dict[str, object]:
    """One move of a fresh copy of the stack; `cli`: the compose-ckpt to move it with (another build's, for
    the stop-the-world side as an earlier version did it)."""
    project = f"ckptbenchlive{uuid.uuid4().hex[:6]}"
    folder = work / project
    folder.mkdir()
    (folder / "compose.yaml").write_text(live_stack())
    env = {**os.environ, "COMPOSE_CKPT_HOME": str(work / "home")}
    run("docker", "compose", "-p", project, "up", "-d", "--wait", cwd=folder)
    kv = f"{project}-kv-1"
    try:
        run("docker", "exec", kv, "redis-cli", "debug", "populate", "2000", "key", "1048576")
        volume = Path(json.loads(run("docker", "volume", "inspect", f"{project}_data"))[0]["Mountpoint"])
        for index in range(128):  # 2 GiB of random files
            (volume / f"file-{index}.bin").write_bytes(os.urandom(16 * 1024**2))
        digests = run("docker", "exec", kv, "redis-cli", "debug", "digest-value", *SAMPLE_KEYS).split()
        time.sleep(5)  # the writer runs at its pace, the volume files are older than the racy margin
        flags = ["--live"] if live else []
        started = time.perf_counter()
        document = json.loads(run(cli, "-p", project, "migrate", *flags, "--to", target, "--json", cwd=folder, env=env))
        total = round(time.perf_counter() - started, 3)
        result: dict[str, object] = {"live": live, "cli": cli, "total": total, "seconds": document["seconds"]}
        details = json.loads(run(cli, "-p", project, "inspect", document["snapshot"], "--json", cwd=folder, env=env))
        result["snapshot_phases"] = details["phases"]  # where the time went: the snapshot's own phases
        result["containers"] = [{key: c[key] for key in ("container", "size", "dump_seconds", "last_restore")}
                                for c in details["containers"]]
        if live:
            result.update({key: document[key] for key in ("downtime_seconds", "bytes_before_downtime",
                                                          "bytes_during_downtime", "memory_precopy")})
            target_volume = Path(json.loads(run("docker", "-H", target, "volume", "inspect", f"{project}_data"))[0]
                                 ["Mountpoint"])
            same_files = tree_digest(target_volume) == tree_digest(volume)
            keys = int(run("docker", "-H", target, "exec", kv, "redis-cli", "dbsize").strip())
            same_digests = run("docker", "-H", target, "exec", kv, "redis-cli", "debug", "digest-value",
                               *SAMPLE_KEYS).split() == digests
            result["data_equal"] = {"volume_files": same_files, "keys": keys, "all_keys": keys == 2200,
                                    "populated_digests": same_digests}
        else:  # stop-the-world: the stack is down from its snapshot's freeze to the end of the restore
            result["downtime_seconds"] = round(sum(document["seconds"].values()) - running(details["phases"]), 3)
        return result
    finally:
        subprocess.run(["docker", "compose", "-p", project, "down", "-v", "-t", "0"], cwd=folder, capture_output=True)
        leftovers = subprocess.run(["docker", "-H", target, "ps", "-aq", "--filter",
                                    f"label=com.docker.compose.project={project}"], capture_output=True, text=True)
        subprocess.run(["docker", "-H", target, "rm", "-f", *leftovers.stdout.split()], capture_output=True)
        subprocess.run(["docker", "-H", target, "volume", "rm", f"{project}_data"], capture_output=True)
        subprocess.run(["docker", "-H", target, "network", "rm", f"{project}_default"], capture_output=True)


def upload_floor(work: Path, target: str, size: int, repeat: int) -> list[float]:
    """Seconds to put `size` bytes (one file, as a plain tar with its length, as the page images go) into a
    container on the target through its archive endpoint, with nothing else running: what moving the memory
    costs at least when its only way in is the target's API. The file is read once before, as a just-written
    dump is in the page cache."""
    folder = work / "floor"
    (folder / "pages").mkdir(parents=True)
    with open(folder / "pages" / "pages-1.img", "wb") as image:
        for _ in range(size // (64 * 1024**2)):
            image.write(os.urandom(64 * 1024**2))
        image.write(os.urandom(size % (64 * 1024**2)))
    run("tar", "-cf", str(folder / "pages.tar"), "-C", str(folder), "pages")
    with open(folder / "pages.tar", "rb") as written:
        while written.read(64 * 1024**2):
            pass
    container = run("docker", "-H", target, "create", "local/debian:bookworm", "true").strip()
    if target.startswith("unix://"):
        socket, base = ["--unix-socket", target.removeprefix("unix://")], "http://engine"
    else:
        socket, base = [], target.replace("tcp://", "http://")
    seconds = []
    try:
        for _ in range(repeat):
            started = time.perf_counter()
            run("curl", "-sf", "-X", "PUT", "-T", str(folder / "pages.tar"), *socket,
                f"{base}/containers/{container}/archive?path=/tmp")
            seconds.append(round(time.perf_counter() - started, 3))
            run("docker", "-H", target, "rm", "-f", container)
            container = run("docker", "-H", target, "create", "local/debian:bookworm", "true").strip()
    finally:
        subprocess.run(["docker", "-H", target, "rm", "-f", container], capture_output=True)
        subprocess.run(["rm", "-rf", str(folder)])
    return seconds


def live_main(repeat: int, out: Path, local_target: bool, sides: tuple[bool, ...], earlier_cli: str | None) -> None:
    second = start_second_engine(network=BENCH_NETWORK)
    target = second.unix if local_target else second.tcp
    load = os.getloadavg()[0]
    rounds: list[dict[str, object]] = []
    try:
        second.copy_image_from_first("local/debian:bookworm")
        with tempfile.TemporaryDirectory(prefix="ckptbench-live-") as temporary:
            for index in range(repeat):
                for side in sides if index % 2 == 0 else tuple(reversed(sides)):
                    rounds.append(live_round(Path(temporary), target, side))
                if earlier_cli:  # today's `migrate` as an earlier build does it, after this build's sides
                    rounds.append(live_round(Path(temporary), target, False, earlier_cli))
            page_bytes = statistics.median(c["last_restore"]["page_bytes"] for c in live_containers(rounds))
            upload = upload_floor(Path(temporary), target, int(page_bytes), repeat)
    finally:
        second.stop()
    live = statistics.median(float(str(r["downtime_seconds"])) for r in rounds if r["live"])
    plain = statistics.median([float(str(r["downtime_seconds"])) for r in rounds if not r["live"] and r["cli"] == CLI]
                              or [float("nan")])
    earlier = [float(str(r["downtime_seconds"])) for r in rounds if r["cli"] != CLI]
    summary: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "load_1m": [load, os.getloadavg()[0]],
        "downtime_live_s": live, "downtime_migrate_s": plain, "ratio": round(live / plain, 3),
        "downtime_migrate_earlier_build_s": statistics.median(earlier) if earlier else None,
        "ratio_to_earlier_build": round(live / statistics.median(earlier), 3) if earlier else None,
        "floor": floor(rounds, upload, live),
        "target": LIVE_TARGET, "target_engine": "unix socket (this host)" if local_target else "tcp",
        "rounds": rounds}
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"downtime: migrate --live {live:.2f}s vs migrate {plain:.2f}s: x{summary['ratio']} "
          f"(target <= {LIVE_TARGET})")
    print(f"floor: the memory's upload alone {summary['floor']['upload_s']}s + CRIU's restore "
          f"{summary['floor']['criu_restore_s']}s = {summary['floor']['seconds']}s; --live is "
          f"x{summary['floor']['live_ratio']} of it")
    if earlier:
        print(f"migrate by {earlier_cli}: {summary['downtime_migrate_earlier_build_s']:.2f}s: "
              f"x{summary['ratio_to_earlier_build']}")
    for entry in rounds:
        print(json.dumps(entry))


def live_containers(rounds: list[dict[str, object]]) -> list[dict[str, Any]]:
    """The containers of the `--live` rounds, as `inspect --json` gave them."""
    return [c for r in rounds if r["live"] for c in cast(list[dict[str, Any]], r["containers"])]


def floor(rounds: list[dict[str, object]], upload: list[float], downtime: float) -> dict[str, Any]:
    """The least a stop-and-copy move of this memory costs here: its upload into the target (measured alone)
    then CRIU's restore reading it (the live rounds' own). The dump overlaps the upload, so it adds nothing.
    `downtime`: the live rounds' median, given as a ratio of it."""
    restore = statistics.median(float(c["last_restore"]["restore_seconds"]) for c in live_containers(rounds))
    seconds = round(statistics.median(upload) + restore, 3)
    return {"upload_rounds_s": upload, "upload_s": statistics.median(upload), "criu_restore_s": restore,
            "seconds": seconds, "live_ratio": round(downtime / seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--big", action="store_true", help="add a 1 GiB-memory service to the stack")
    parser.add_argument("--out", default=str(REPO / "bench" / "migrate-results.json"))
    parser.add_argument("--live", action="store_true", help="migrate --live vs migrate, downtime (issue 24)")
    parser.add_argument("--local-target", action="store_true",
                        help="--live: reach the target over its unix socket, as an engine of this host")
    parser.add_argument("--earlier-cli", help="--live: also time `migrate` by this compose-ckpt (an earlier build)")
    parser.add_argument("--only-live", action="store_true", help="--live: no stop-the-world side (phases only)")
    args = parser.parse_args()
    if args.live:
        live_main(args.repeat, Path(args.out), args.local_target, (True,) if args.only_live else (True, False),
                  args.earlier_cli)
        return
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

#!/usr/bin/env python3
"""Benchmark `compose-ckpt push` against `compose-ckpt export` of the same 1 GiB snapshot, in one run.

Needs `make engine` and `make registry` (127.0.0.1:5000). One python3 service holds 1 GiB of memory
(--fill random: incompressible, the worst case; --fill half: half of it compressible). Per round,
alternating which goes first:
  export   `compose-ckpt export SNAPSHOT -o FILE` to a local file (zstd level 3, sha256 of every member)
  push     `compose-ckpt push SNAPSHOT 127.0.0.1:5000/ckptbench<id>/r<round>:big` to a fresh repository
           (the registry links no blob into it yet, so every blob is sent)
Then the floor: the very blobs the first push sent (downloaded from the registry) uploaded again by curl to
a fresh repository, POST then PUT with the digest per blob, 4 at a time as push's workers: what any client
must make the registry do, with nothing read, hashed or compressed on the client's side but the files. And a
second snapshot of the unchanged stack (taken leaving it running) is pushed to the same repository: the
bytes it uploads, against the first push's.

CPU seconds are user + system: of the CLI (or curl) from getrusage, and of the registry process from
/proc/<pid>/stat before and after, so push's CPU splits into client and registry.

Stdlib only; it reuses bench/run.py's helpers. Everything it creates is removed at the end (the registry's
blob store keeps the blobs until its garbage collection, as with any deleted artifact).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from run import BENCH, CLI, RUN_ID, Stack, machine, median, run, timed

REGISTRY = "127.0.0.1:5000"
# 1 GiB of memory, touched: all random (incompressible, the worst case for push and export alike), or
# half random and half a repeated 1 KiB block (compressible, closer to real process memory).
FILLS = {
    "random": "b=bytearray(os.urandom(1<<30))",
    "half": "b=bytearray(os.urandom(1<<29)) + bytearray(os.urandom(1024) * (1<<19))",
}
HOLD = "; print('ready', flush=True); import time; [time.sleep(1) for _ in iter(int,1)]"
TARGET = 1.3


def registry_cpu_seconds() -> float:
    """CPU time (user + system) the registry of `make registry` has used so far, from its pid file."""
    pid = Path("/var/run/compose-ckpt-registry.pid").read_text().strip()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cli_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def download_blobs(repository: str, tag: str, folder: Path) -> list[tuple[str, Path]]:
    """Every blob of the pushed artifact (config and chunks, each once), into `folder`."""
    base = f"http://{REGISTRY}/v2/{repository}"
    request = urllib.request.Request(f"{base}/manifests/{tag}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        manifest = json.loads(response.read())
    blobs = []
    for digest in dict.fromkeys(d["digest"] for d in [manifest["config"], *manifest["layers"]]):
        path = folder / digest.split(":")[1]
        with urllib.request.urlopen(f"{base}/blobs/{digest}", timeout=300) as response, path.open("wb") as out:
            shutil.copyfileobj(response, out, 1024**2)
        blobs.append((digest, path))
    return blobs


def curl_upload(repository: str, blobs: list[tuple[str, Path]]) -> None:
    """Upload `blobs` as push does (POST opens an upload, one PUT sends the bytes and the digest), 4 at a time,
    with two curl processes: one for the POSTs, one for the PUTs."""
    start = f"http://{REGISTRY}/v2/{repository}/blobs/uploads/"
    locations = run("curl", "-sS", "-f", "-X", "POST", "-w", "%header{location}\n",
                    *[arg for _ in blobs for arg in ("-o", "/dev/null", start)]).split()
    puts = ["curl", "-sS", "-f", "-Z", "--parallel-max", "4", "-H", "Expect:"]  # requests sends no Expect either
    for (digest, path), location in zip(blobs, locations, strict=True):
        puts += ["-o", "/dev/null", "-T", str(path), f"{location}{'&' if '?' in location else '?'}digest={digest}"]
    run(*puts)


def delete_repository(repository: str) -> None:
    """Delete every manifest of the bench's repository (by digest, as retention does)."""
    base = f"http://{REGISTRY}/v2/{repository}"
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    try:
        with urllib.request.urlopen(f"{base}/tags/list", timeout=30) as response:
            tags = json.loads(response.read()).get("tags") or []
    except OSError:
        return
    for tag in tags:
        head = urllib.request.Request(f"{base}/manifests/{tag}", method="HEAD", headers=accept)
        try:
            with urllib.request.urlopen(head, timeout=30) as response:
                digest = response.headers["Docker-Content-Digest"]
            with urllib.request.urlopen(urllib.request.Request(f"{base}/manifests/{digest}", method="DELETE"), timeout=30):
                pass
        except OSError:
            continue


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported")
    parser.add_argument("--fill", choices=sorted(FILLS), default="random", help="what the 1 GiB of memory holds")
    parser.add_argument("--out", type=Path, help="JSON results file (default: bench/registry-results-FILL.json)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=10).close()  # fails early without `make registry`

    work = Path(tempfile.mkdtemp(prefix=".work-", dir=BENCH))
    command = ["python3", "-c", "import os; " + FILLS[args.fill] + HOLD]
    stack = Stack(work, f"push{args.fill}", {"mem": {"image": "local/debian:bookworm", "command": command}})
    samples: dict[str, list[float]] = {k: [] for k in (
        "export", "push", "floor", "export_cpu", "push_cpu", "push_client_cpu", "push_registry_cpu",
        "floor_client_cpu", "floor_registry_cpu")}
    repositories: list[str] = []
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "cli": CLI,
                               "repeat": args.repeat, "fill": args.fill,
                               "load_average_before": [round(v, 1) for v in os.getloadavg()]}
    try:
        stack.up()
        deadline = time.monotonic() + 120
        while "ready" not in run("docker", "logs", stack.ids[0]):
            if time.monotonic() > deadline:
                raise RuntimeError("the 1 GiB service never printed ready")
            time.sleep(0.5)
        first = stack.cli("snapshot", "--name", "big", "--json")
        results["snapshot_bytes"] = first["size"]
        archive = work / "big.ckpt"
        pushed: dict[str, Any] = {}
        for r in range(args.repeat):
            repository = f"ckptbench{RUN_ID}/r{r}"
            repositories.append(repository)

            def export() -> None:
                cpu = cli_cpu_seconds()
                t, _ = timed(lambda: stack.cli("export", "big", "-o", str(archive)))
                samples["export"].append(t)
                samples["export_cpu"].append(cli_cpu_seconds() - cpu)
                results["archive_bytes"] = archive.stat().st_size
                archive.unlink()

            def push(repository: str = repository) -> None:
                client, registry = cli_cpu_seconds(), registry_cpu_seconds()
                t, doc = timed(lambda: stack.cli("push", "big", f"{REGISTRY}/{repository}:big", "--json"))
                samples["push"].append(t)
                samples["push_client_cpu"].append(cli_cpu_seconds() - client)
                samples["push_registry_cpu"].append(registry_cpu_seconds() - registry)
                samples["push_cpu"].append(samples["push_client_cpu"][-1] + samples["push_registry_cpu"][-1])
                pushed.update(doc)

            for label, side in [("export", export), ("push", push)][:: 1 if r % 2 == 0 else -1]:
                print(f"round {r}: {label} ...", flush=True)
                side()
        if shutil.which("curl"):
            blobs_dir = work / "blobs"
            blobs_dir.mkdir()
            blobs = download_blobs(repositories[0], "big", blobs_dir)
            for r in range(args.repeat):
                print(f"round {r}: floor (curl uploads the same {len(blobs)} blobs) ...", flush=True)
                repository = f"ckptbench{RUN_ID}/floor{r}"
                client, registry = cli_cpu_seconds(), registry_cpu_seconds()
                t, _ = timed(functools.partial(curl_upload, repository, blobs))
                samples["floor"].append(t)
                samples["floor_client_cpu"].append(cli_cpu_seconds() - client)
                samples["floor_registry_cpu"].append(registry_cpu_seconds() - registry)
            shutil.rmtree(blobs_dir)
        print("second snapshot of the unchanged stack, pushed to the same repository ...", flush=True)
        stack.cli("snapshot", "--name", "again", "--json")
        again = stack.cli("push", "again", f"{REGISTRY}/{repositories[-1]}:again", "--json")
        results["first_push"] = {k: pushed[k] for k in ("blobs", "uploaded_blobs", "bytes", "uploaded_bytes")}
        results["second_push"] = {k: again[k] for k in ("blobs", "uploaded_blobs", "bytes", "uploaded_bytes")}
    finally:
        stack.down()
        for repository in repositories:
            delete_repository(repository)
        shutil.rmtree(work, ignore_errors=True)
    results["samples"] = {k: [round(v, 3) for v in vs] for k, vs in samples.items()}
    export_s, push_s = median(samples["export"]), median(samples["push"])
    results["export_seconds"], results["push_seconds"] = export_s, push_s
    results["push_over_export"] = round(push_s / export_s, 3) if push_s and export_s else None
    export_cpu, push_cpu = median(samples["export_cpu"]), median(samples["push_cpu"])
    results["cpu_seconds"] = {"export": export_cpu, "push_with_registry": push_cpu,
                              "push_client": median(samples["push_client_cpu"]),
                              "push_registry": median(samples["push_registry_cpu"]),
                              "floor_curl": median(samples["floor_client_cpu"]),
                              "floor_registry": median(samples["floor_registry_cpu"]),
                              "ratio": round(push_cpu / export_cpu, 3) if push_cpu and export_cpu else None}
    floor_s = median(samples["floor"])
    results["floor_seconds"] = floor_s
    results["floor_over_export"] = round(floor_s / export_s, 3) if floor_s and export_s else None
    second = results["second_push"]["uploaded_bytes"] / max(results["first_push"]["uploaded_bytes"], 1)
    results["second_push_share"] = round(second, 4)
    results["load_average_after"] = [round(v, 1) for v in os.getloadavg()]
    out = args.out or BENCH / f"registry-results-{args.fill}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    cpu = results["cpu_seconds"]
    print(f"\n1 GiB: export {export_s:.2f} s, push {push_s:.2f} s, ratio {results['push_over_export']} "
          f"(target <= {TARGET}); curl floor {floor_s} s, ratio {results['floor_over_export']}; CPU seconds "
          f"export {export_cpu:.2f}, push {cpu['push_client']} + registry {cpu['push_registry']}, "
          f"floor curl {cpu['floor_curl']} + registry {cpu['floor_registry']}; "
          f"second push of the unchanged stack uploads {second:.2%} of the first (target < 5%); wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

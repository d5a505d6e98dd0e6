"""Snapshots made by someone else, imported into the real engine: nothing they record runs, nothing
privileged is created without the user's word, no host folder is touched (docs/security.md)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import zstandard

from tests.hostile_registry import HostileRegistry, serving
from tests.integration.stack import BUSYBOX, Stack, counter_services

pytestmark = pytest.mark.engine

HOLDER_ID = "9" * 64


def edited_archive(archive: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """The archive with its manifest changed by `edit`, and SHA256SUMS made to match, as an attacker would."""
    members: list[tuple[tarfile.TarInfo, bytes]] = []
    with zstandard.ZstdDecompressor().stream_reader(archive.open("rb")) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            reader = tar.extractfile(member)
            members.append((member, reader.read() if reader else b""))
    out = io.BytesIO()
    sums = []
    with tarfile.open(fileobj=out, mode="w") as tar:
        for member, data in members:
            if member.name == "SHA256SUMS":
                continue
            if member.name == "manifest.json":
                document = json.loads(data)
                edit(document)
                data = json.dumps(document).encode()
                member.size = len(data)
            if member.isfile():
                sums.append(f"{hashlib.sha256(data).hexdigest()}  {member.name}\n")
            tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
        listing = "".join(sums).encode()
        info = tarfile.TarInfo("SHA256SUMS")
        info.size = len(listing)
        tar.addfile(info, io.BytesIO(listing))
    crafted = archive.with_name("crafted-" + archive.name)
    crafted.write_bytes(zstandard.ZstdCompressor().compress(out.getvalue()))
    return crafted


@pytest.fixture
def exported(start_stack: Callable[..., Stack], tmp_path: Path) -> tuple[Stack, Path]:
    """A one-service stack's snapshot as an archive; the stack's containers removed, as on another host."""
    stack = start_stack("services:\n" + counter_services("one"))
    stack.ckpt_ok("snapshot", "--stop", "--name", "theirs")
    archive = tmp_path / "theirs.ckpt"
    stack.ckpt_ok("export", "theirs", "-o", str(archive))
    stack.ckpt_ok("rm", "theirs")
    stack.compose("rm", "-f", "-s")
    return stack, archive


def host_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "host-folder"
    folder.mkdir()
    return folder


def inspect(stack: Stack, name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(stack.docker("inspect", name).stdout)[0]
    return document


def planting_holder(stack: Stack, folder: Path) -> Callable[[dict[str, Any]], None]:
    """An edit giving the snapshot's container a recorded holder that, created as recorded, would run
    privileged as root with the host's `folder` mounted, and write into it."""
    container = f"{stack.project}-one-1"

    def plant(document: dict[str, Any]) -> None:
        [record] = document["containers"]
        network = f"{stack.project}_default"
        record["inspect"]["HostConfig"]["NetworkMode"] = f"container:{HOLDER_ID}"
        record["holder"] = {
            "Id": HOLDER_ID, "Name": f"/{container}-holder",
            "Config": {"Image": record["image"], "Entrypoint": ["sh", "-c", "id -u > /host/owned"],
                       "Labels": {"com.docker.compose.project": stack.project}},
            "HostConfig": {"Privileged": True, "Binds": [f"{folder}:/host"], "NetworkMode": network,
                           "CapAdd": ["ALL"], "PidMode": "host", "SecurityOpt": ["seccomp=unconfined"]},
            "NetworkSettings": {"Networks": {network: {"Aliases": ["one"]}}},
        }
    return plant


@contextmanager
def served_with_config_edited(stack: Stack, edit: Callable[[dict[str, Any]], None]) -> Iterator[
        tuple[HostileRegistry, dict[str, Any]]]:
    """Snapshot `theirs` pushed to a fake registry as team/app:v1 and gone from here, its snapshot manifest (the
    artifact's config) edited by `edit`: the registry and the OCI manifest it serves."""
    with serving() as registry:
        stack.ckpt_ok("push", "theirs", f"{registry.address}/team/app:v1")
        stack.ckpt_ok("rm", "theirs")
        stack.compose("rm", "-f", "-s")
        document = registry.manifest("v1")
        config = json.loads(registry.blobs[document["config"]["digest"]])
        edit(config)
        body = json.dumps(config).encode()
        document["config"].update(digest=registry.add_blob(body), size=len(body))
        registry.put("v1", document)
        yield registry, document


def assert_built_from_our_template_and_not_started(stack: Stack, folder: Path) -> None:
    container = f"{stack.project}-one-1"
    holder = inspect(stack, f"{container}-holder")
    assert holder["State"]["Status"] == "created"  # created, never started
    assert holder["Config"]["Image"] == "compose-ckpt/holder:1" and holder["Config"]["Entrypoint"] == ["/pause"]
    assert holder["HostConfig"]["Privileged"] is False and holder["HostConfig"]["CapDrop"] == ["ALL"]
    assert not holder["HostConfig"]["Binds"] and not holder["Mounts"] and not holder["HostConfig"]["CapAdd"]
    assert holder["HostConfig"]["PidMode"] == "" and not holder["HostConfig"]["SecurityOpt"]
    assert inspect(stack, container)["State"]["Status"] == "created"
    assert list(folder.iterdir()) == []


def test_a_recorded_holder_is_rebuilt_from_our_template_and_import_starts_nothing(
        exported: tuple[Stack, Path], tmp_path: Path) -> None:
    stack, archive = exported
    folder = host_folder(tmp_path)

    imported = stack.ckpt("import", str(edited_archive(archive, planting_holder(stack, folder))), "--json")

    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["host_access"] == []  # nothing of the recorded holder is used
    assert_built_from_our_template_and_not_started(stack, folder)


def test_the_same_from_a_registry_that_serves_it_by_tag(start_stack: Callable[..., Stack], tmp_path: Path) -> None:
    stack = start_stack("services:\n" + counter_services("one"))
    stack.ckpt_ok("snapshot", "--stop", "--name", "theirs")
    folder = host_folder(tmp_path)
    with served_with_config_edited(stack, planting_holder(stack, folder)) as (registry, _):
        pulled = stack.ckpt("pull", f"{registry.address}/team/app:v1", "--json")

    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout)["host_access"] == []
    assert_built_from_our_template_and_not_started(stack, folder)


def test_a_privileged_container_with_a_host_folder_needs_the_users_word_and_is_never_started(
        exported: tuple[Stack, Path], tmp_path: Path) -> None:
    stack, archive = exported
    container = f"{stack.project}-one-1"
    folder = host_folder(tmp_path)

    def escalate(document: dict[str, Any]) -> None:
        [record] = document["containers"]
        record["inspect"]["Config"]["Entrypoint"] = ["sh", "-c", "id -u > /host/owned"]
        record["inspect"]["HostConfig"].update({"Privileged": True, "Binds": [f"{folder}:/host"],
                                                "SecurityOpt": ["apparmor=unconfined"]})
    crafted = edited_archive(archive, escalate)

    refused = stack.ckpt("import", str(crafted))  # stdin is not a terminal: no one to ask

    assert refused.returncode == 2, refused.stderr
    assert "privileged" in refused.stderr and f"bind mount of the host's {folder}" in refused.stderr
    assert "apparmor=unconfined" in refused.stderr and "--trust-host-access" in refused.stderr
    assert stack.snapshots() == [] and stack.docker("ps", "-a", "-q", "--filter", f"name={container}").stdout == ""

    accepted = stack.ckpt("import", str(crafted), "--trust-host-access", "--json")

    assert accepted.returncode == 0, accepted.stderr
    [finding] = json.loads(accepted.stdout)["host_access"]
    assert finding.startswith(f"container {container}: ") and "privileged mode" in finding
    assert inspect(stack, container)["State"]["Status"] == "created"  # restore, not import, starts it
    assert list(folder.iterdir()) == [] and os.path.isdir(folder)


def test_a_pull_reaching_the_host_by_other_keys_is_refused_before_its_blobs_then_created_unstarted_when_trusted(
        start_stack: Callable[..., Stack], tmp_path: Path) -> None:
    """The same review for pull, with other ways in: a bind in `Mounts`, a host device, a capability, an OOM
    shield and a real-time priority limit. Refused, nothing but the snapshot's manifest is downloaded."""
    stack = start_stack("services:\n" + counter_services("one"))
    container = f"{stack.project}-one-1"
    stack.ckpt_ok("snapshot", "--stop", "--name", "theirs")
    folder = host_folder(tmp_path)

    def reach_the_host(config: dict[str, Any]) -> None:
        [record] = config["containers"]
        record["inspect"]["Config"]["Entrypoint"] = ["sh", "-c", "id -u > /host/owned"]
        record["inspect"]["HostConfig"].update({
            "Mounts": [{"Type": "bind", "Source": str(folder), "Target": "/host"}],
            "Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/host-null", "CgroupPermissions": "rwm"}],
            "CapAdd": ["SYS_ADMIN"], "OomScoreAdj": -1000, "Ulimits": [{"Name": "rtprio", "Soft": 99, "Hard": 99}]})

    with served_with_config_edited(stack, reach_the_host) as (registry, document):
        refused = stack.ckpt("pull", f"{registry.address}/team/app:v1")  # stdin is not a terminal

        assert refused.returncode == 2, refused.stderr
        for word in (f"bind mount of the host's {folder}", "device /dev/null", "capability SYS_ADMIN",
                     "out-of-memory score -1000", "resource limit rtprio", "--trust-host-access"):
            assert word in refused.stderr
        assert registry.blob_gets == [document["config"]["digest"]]
        assert stack.snapshots() == [] and stack.docker("ps", "-a", "-q", "--filter", f"name={container}").stdout == ""

        accepted = stack.ckpt("pull", f"{registry.address}/team/app:v1", "--trust-host-access", "--json")

    assert accepted.returncode == 0, accepted.stderr
    [finding] = json.loads(accepted.stdout)["host_access"]
    assert finding.startswith(f"container {container}: ")
    created = inspect(stack, container)
    assert created["State"]["Status"] == "created" and [m["Source"] for m in created["Mounts"]] == [str(folder)]
    assert list(folder.iterdir()) == []


def test_a_network_the_snapshot_gives_its_own_subnet_needs_the_users_word(
        start_stack: Callable[..., Stack], tmp_path: Path) -> None:
    """Its IPAM config asks for a subnet (an ip range), which import would give the bridge it creates: one the
    snapshot chose could be this host's LAN. Listed; created only once accepted."""
    stack = start_stack("services:\n" + counter_services("one") + "networks:\n  default:\n    ipam:\n      config:\n"
                        "        - subnet: 10.213.77.0/24\n          ip_range: 10.213.77.128/25\n")
    stack.ckpt_ok("snapshot", "--stop", "--name", "theirs")
    archive = tmp_path / "theirs.ckpt"
    stack.ckpt_ok("export", "theirs", "-o", str(archive))
    stack.ckpt_ok("rm", "theirs")
    stack.down()

    refused = stack.ckpt("import", str(archive))

    assert refused.returncode == 2, refused.stderr
    assert f"network {stack.project}_default: created with the snapshot's subnets 10.213.77.0/24" in refused.stderr
    assert stack.snapshots() == [] and stack.docker("network", "ls", "-q", "--filter",
                                                    f"name={stack.project}_default").stdout == ""
    stack.ckpt_ok("import", str(archive), "--trust-host-access")
    network = json.loads(stack.docker("network", "inspect", f"{stack.project}_default").stdout)[0]
    assert [entry["Subnet"] for entry in network["IPAM"]["Config"]] == ["10.213.77.0/24"]


def test_a_volume_this_host_has_for_another_project_needs_the_users_word(
        exported: tuple[Stack, Path], tmp_path: Path) -> None:
    """The snapshot records the volume, so it is not foreign to it: but this host has it, with another
    project's data, which the snapshot's container would mount."""
    stack, archive = exported
    theirs = f"{stack.project}-bank_secrets"
    stack.docker("volume", "create", "--label", "com.docker.compose.project=bank", theirs)
    try:
        def take(document: dict[str, Any]) -> None:
            document["volumes"].append({"Name": theirs, "Driver": "local"})
            [record] = document["containers"]
            record["inspect"]["HostConfig"]["Mounts"] = [{"Type": "volume", "Source": theirs, "Target": "/secrets"}]

        refused = stack.ckpt("import", str(edited_archive(archive, take)))

        assert refused.returncode == 2, refused.stderr
        assert f"volume {theirs} is this host's (compose project bank)" in refused.stderr
        assert stack.snapshots() == []
    finally:
        stack.down()  # a container created despite all would hold the volume
        stack.docker("volume", "rm", "-f", theirs, check=False)


def test_a_container_this_host_has_for_another_project_needs_the_users_word(exported: tuple[Stack, Path]) -> None:
    """import leaves a container of the recorded name as it is, and restore would put the snapshot's memory
    into it, with whatever binds and privileges it has here: another project's is listed."""
    stack, archive = exported
    container = f"{stack.project}-one-1"
    stack.docker("create", "--name", container, "--label", "com.docker.compose.project=bank", BUSYBOX, "true")

    refused = stack.ckpt("import", str(archive))

    assert refused.returncode == 2, refused.stderr
    assert f"container {container} is this host's (compose project bank)" in refused.stderr
    assert stack.snapshots() == []

"""Every manifest field is checked against what compose-ckpt may have written there: types, ranges, names, ids."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pytest

from compose_ckpt.domain.store.manifest import (
    BIND_RULES,
    MANIFEST_RULES,
    RECORD_RULES,
    RESTORE_RULES,
    TREE_COPY_RULES,
    VOLUME_RULES,
    BindMount,
    ContainerRecord,
    Manifest,
    ManifestError,
    RestoreRecord,
    SnapshotStatus,
    TreeCopy,
    VolumeRecord,
    now_iso,
)

CONTAINER_ID = "0123456789abcdef" * 4
IMAGE_ID = "sha256:" + "fedcba9876543210" * 4


def good_document() -> dict[str, Any]:
    """What a real snapshot of one redis container records (inspect trimmed to what restore reads)."""
    record = ContainerRecord(
        service="kv", container_id=CONTAINER_ID, container_name="shop-kv-1", number=1, image="redis:7.2",
        image_id=IMAGE_ID, checkpoint="ckpt-nightly", size=12_345_678, dump_seconds=0.31,
        fingerprint="94371840:140737488346000:140737488346020:140737488346020:140737488347000",
        inspect={"Id": CONTAINER_ID, "Name": "/shop-kv-1", "Config": {"Image": "redis:7.2"},
                 "HostConfig": {"Privileged": False, "Binds": None}, "NetworkSettings": {"Networks": {}}},
        layer=TreeCopy(size=10240, stored=312, seconds=0.01, sha256="5e" * 32),
    )
    manifest = Manifest(
        name="nightly", project="shop", created=now_iso(), status=SnapshotStatus.COMPLETE, stopped=False,
        compose_files=["/srv/shop/compose.yaml", "/srv/shop/compose.override.yml"], compose_hash="ab" * 32,
        services=["kv", "web"], dependencies={"web": ["kv"], "kv": []}, containers=[record],
        networks=[{"Name": "shop_default", "Driver": "bridge"}], volumes=[{"Name": "shop_data"}],
        engine={"docker": "26.1.5+dfsg1", "api": "1.45", "kernel": "6.18.0", "criu": "4.2.1"},
        freeze_seconds=0.42, total_seconds=1.5, phases={"startup": 0.2, "copy files": 0.1},
        volume_records=[VolumeRecord("shop_data", "12:4096:1796000000123456789",
                                     TreeCopy(size=20480, stored=900, seconds=0.02, sha256="7a" * 32))],
        binds=[BindMount(container="shop-kv-1", source="/srv/shop/conf", destination="/conf", read_only=True)],
    )
    return manifest.to_dict()


def test_every_field_has_a_rule() -> None:
    """A field added to the manifest without a rule here would be trusted unchecked."""
    for rules, kind in ((MANIFEST_RULES, Manifest), (RECORD_RULES, ContainerRecord), (TREE_COPY_RULES, TreeCopy),
                        (VOLUME_RULES, VolumeRecord), (BIND_RULES, BindMount), (RESTORE_RULES, RestoreRecord)):
        assert set(rules) == {f.name for f in dataclasses.fields(kind)}, kind


def test_a_real_manifest_is_valid() -> None:
    document = good_document()
    assert Manifest.from_dict(copy.deepcopy(document), "test").to_dict() == document


Edit = Callable[[dict[str, Any]], None]


def top(key: str, value: Any) -> Edit:
    return lambda document: document.__setitem__(key, value)


def record(key: str, value: Any) -> Edit:
    return lambda document: document["containers"][0].__setitem__(key, value)


def recorded_config(key: str, value: Any) -> Edit:
    return lambda document: document["containers"][0]["inspect"].__setitem__(key, value)


def twice(document: dict[str, Any]) -> None:
    document["containers"].append(copy.deepcopy(document["containers"][0]))


BAD: dict[str, Edit] = {
    # sizes, seconds and counts are bounded: nothing overflows when printed, summed or compared
    "size-2**63": record("size", 2**63), "size-above-1PiB": record("size", 2**50 + 1),
    "size-float": record("size", 1.5), "size-bool": record("size", True),
    "dump-nan": record("dump_seconds", math.nan), "dump-inf": record("dump_seconds", math.inf),
    "freeze-nan": top("freeze_seconds", math.nan), "total-years": top("total_seconds", 10**9),
    "number-negative": record("number", -1), "number-huge": record("number", 10**7),
    "format-true": top("format", True), "format-float": top("format", 1.0),
    # ids are what Docker gives out
    "container-id-short": record("container_id", "abc"), "container-id-upper": record("container_id", "A" * 64),
    "image-id-no-algorithm": record("image_id", "f" * 64), "image-id-short": record("image_id", "sha256:1"),
    "image-with-space": record("image", "redis 7"), "image-with-newline": record("image", "redis\n"),
    "image-huge": record("image", "r" * 600),
    "fingerprint-garbage": record("fingerprint", "1:2:3"), "fingerprint-text": record("fingerprint", "a:b:c:d:e"),
    # names
    "service-with-slash": record("service", "../kv"), "services-twice": top("services", ["kv", "kv", "web"]),
    "service-list-with-number": top("services", ["kv", 5]),
    "dependency-on-a-path": top("dependencies", {"web": ["../kv"]}),
    "network-name-path": top("networks", [{"Name": "../net"}]), "network-without-name": top("networks", [{}]),
    "volume-name-number": top("volumes", [{"Name": 5}]),
    "engine-key-odd": top("engine", {"Docker Version": "26"}), "engine-value-escape": top("engine", {"docker": "\x1b[2J"}),
    "project-upper-path": top("project", "a/b"), "checkpoint-dotdot": record("checkpoint", ".."),
    # paths
    "compose-file-relative": top("compose_files", ["compose.yaml"]),
    "compose-file-newline": top("compose_files", ["/srv/a\n/etc/shadow"]),
    "compose-files-many": top("compose_files", [f"/srv/{n}.yaml" for n in range(101)]),
    "compose-hash-short": top("compose_hash", "abc"),
    # enums and shapes
    "status-invalid": top("status", "invalid"), "status-unknown": top("status", "restored"),
    "created-naive": top("created", "2026-01-01T00:00:00"), "error-huge": top("error", "e" * (2**20 + 1)),
    "containers-too-many": top("containers", [{}] * 1001),
    "container-twice": twice,
    # the recorded configuration must describe this very container: restore recreates from it
    # filesystem state: copies, volumes, bind mounts
    "layer-size-2**63": lambda d: d["containers"][0]["layer"].__setitem__("size", 2**63),
    "layer-sha-short": lambda d: d["containers"][0]["layer"].__setitem__("sha256", "5e"),
    "layer-list": record("layer", [1]), "volume-name-path": lambda d: d["volume_records"][0].__setitem__("name", "../x"),
    "volume-twice": lambda d: d["volume_records"].append(copy.deepcopy(d["volume_records"][0])),
    "volume-copy-string": lambda d: d["volume_records"][0].__setitem__("copy", "all"),
    "bind-relative-source": lambda d: d["binds"][0].__setitem__("source", "conf"),
    "bind-of-another-container": lambda d: d["binds"][0].__setitem__("container", "victim-1"),
    "phases-negative": top("phases", {"dump": -1}), "phases-escape": top("phases", {"\x1b[2J": 1}),
    "config-other-id": recorded_config("Id", "f" * 64), "config-other-name": recorded_config("Name", "/victim"),
    "config-without-hostconfig": recorded_config("HostConfig", None), "config-config-list": recorded_config("Config", []),
}


@pytest.mark.parametrize("edit", BAD.values(), ids=BAD.keys())
def test_a_field_out_of_bounds_is_refused(edit: Edit) -> None:
    document = good_document()
    edit(document)
    with pytest.raises(ManifestError, match="invalid manifest test"):
        Manifest.from_dict(document, "test")


def test_an_empty_recorded_configuration_is_allowed() -> None:
    """Older snapshots and recovery records carry none: such containers are restored in place only."""
    document = good_document()
    document["containers"][0]["inspect"] = {}
    assert Manifest.from_dict(document, "test").containers[0].inspect == {}


def test_fields_added_for_snapshots_made_elsewhere_are_left_out_while_unset() -> None:
    """A snapshot taken here writes none of them, so versions before them still read its manifest."""
    document = good_document()
    assert not {"files", "received", "imported_from"} & document.keys()
    document.update(received=now_iso(), imported_from="archive /tmp/x")
    assert Manifest.from_dict(document, "test").to_dict()["imported_from"] == "archive /tmp/x"

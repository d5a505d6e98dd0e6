"""Images carried by a snapshot made elsewhere: `docker load` names every tag its archive lists, so an image
archive naming anything but its own reference is refused, and one taking a name this host already uses
for another image is listed for the host-access review."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from compose_ckpt.domain.store.manifest import Manifest
from compose_ckpt.domain.transport.transfer import _image_replacements, image_key
from compose_ckpt.errors import ArchiveError
from tests.fakes import UntouchableEngine
from tests.unit.test_manifest_validation import IMAGE_ID, good_document


class Images(UntouchableEngine):
    def __init__(self, present: dict[str, str]) -> None:
        super().__init__()
        self.present = present

    def image_id(self, reference: str) -> str | None:
        return self.present.get(reference)


def saved(tmp_path: Path, **indexes: Any) -> dict[str, list[Path]]:
    """A `docker save`-like archive holding the given index files (manifest.json, repositories, index.json)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, document in {"blobs/sha256/ab": b"layer", **indexes}.items():
            data = document if isinstance(document, bytes) else json.dumps(document).encode()
            info = tarfile.TarInfo(name.replace("_", ".") if name != "blobs/sha256/ab" else name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "000000"
    path.write_bytes(raw.getvalue())
    return {image_key(IMAGE_ID): [path]}


OWN = {"manifest_json": [{"RepoTags": ["redis:7.2"]}], "repositories": {"redis": {"7.2": "x"}},
       "index_json": {"manifests": [{"annotations": {"io.containerd.image.name": "docker.io/library/redis:7.2"}}]}}


def manifest() -> Manifest:
    return Manifest.from_dict(good_document(), "test")


def test_an_image_named_as_recorded_is_loaded_without_a_word_unless_it_replaces_this_hosts(tmp_path: Path) -> None:
    staged = saved(tmp_path, **OWN)
    assert _image_replacements(Images({}), manifest(), staged) == []
    assert _image_replacements(Images({"redis:7.2": IMAGE_ID}), manifest(), staged) == []
    [replaced] = _image_replacements(Images({"redis:7.2": "sha256:" + "0" * 64}), manifest(), staged)
    assert "image redis:7.2" in replaced and "replaces this host's sha256:000000000000" in replaced


@pytest.mark.parametrize("index,document", [
    ("manifest_json", [{"RepoTags": ["redis:7.2", "ubuntu:latest"]}]),
    ("repositories", {"redis": {"7.2": "x"}, "debian": {"bookworm": "x"}}),
    ("index_json", {"manifests": [{"annotations": {"io.containerd.image.name": "docker.io/library/ubuntu:latest"}}]}),
])
def test_an_image_archive_naming_other_images_is_refused(tmp_path: Path, index: str, document: Any) -> None:
    staged = saved(tmp_path, **{**OWN, index: document})
    with pytest.raises(ArchiveError, match="would also be tagged"):
        _image_replacements(Images({}), manifest(), staged)


def test_an_image_taking_the_name_of_compose_ckpts_holder_image_is_refused(tmp_path: Path) -> None:
    """Holders of every stack on this host run compose-ckpt/holder:1 in their network namespace: a snapshot
    must not bring its own, even where this host has none yet."""
    document = good_document()
    document["containers"][0]["image"] = "compose-ckpt/holder:1"
    staged = saved(tmp_path, manifest_json=[{"RepoTags": ["compose-ckpt/holder:1"]}])
    with pytest.raises(ArchiveError, match="compose-ckpt's own images"):
        _image_replacements(Images({}), Manifest.from_dict(document, "test"), staged)

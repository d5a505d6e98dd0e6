"""Property tests of the archive reader: damage of any shape is refused as ArchiveError, never anything else.

Whatever the input, `read_archive` either returns the archive exactly as it was written (every byte verified)
or raises ArchiveError, leaving no staging folder behind. Bounded by the hypothesis profile in tests/conftest.py.
"""

from __future__ import annotations

import functools
import io
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zstandard
from hypothesis import example, given, settings
from hypothesis import strategies as st

from compose_ckpt.domain.transport.archive import ArchiveWriter, StagedArchive, read_archive
from compose_ckpt.errors import ArchiveError
from tests.unit.test_archive import MANIFEST, entry, signed, tar_zst
from tests.unit.timebox import time_limit

CONTENTS = {
    "manifest.json": b'{"name": "snap", "project": "proj"}',
    "compose/0-compose.yaml": b"services:\n  web:\n    image: busybox\n",
    "checkpoints/web-1/pages-1.img": bytes(range(256)) * 4,
    "checkpoints/web-1/sub/core.img": b"core",
    "images/abc/000000": b"layer-0",
    "images/abc/000001": b"layer-1",
}


@functools.cache
def original() -> bytes:
    out = io.BytesIO()
    with ArchiveWriter(out) as writer:
        for name, data in CONTENTS.items():
            writer.add_bytes(name, data)
    return out.getvalue()


@functools.cache
def original_tar() -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(original())


def staged_contents(staged: StagedArchive) -> dict[str, bytes]:
    return {str(p.relative_to(staged.root)): p.read_bytes() for p in staged.root.rglob("*") if p.is_file()}


def read_or_refuse(data: bytes) -> dict[str, bytes] | None:
    """The staged files of a readable archive, None for a refused one; anything else fails the test."""
    with tempfile.TemporaryDirectory() as folder, time_limit(10):
        staging = Path(folder) / "staging"
        try:
            staged = read_archive(io.BytesIO(data), staging)
        except ArchiveError:
            assert not staging.exists(), "a refused archive left its staging folder behind"
            return None
        contents = staged_contents(staged)
        assert staged.manifest == contents["manifest.json"]
        return contents


@dataclass(frozen=True)
class Mutation:
    kind: str  # flip, insert, delete, truncate
    position: float  # where, as a fraction of the current length
    data: bytes  # flip: the XOR mask's first byte; insert: the bytes; delete: len() is how many

    def apply(self, blob: bytes) -> bytes:
        at = min(int(self.position * len(blob)), max(len(blob) - 1, 0))
        if self.kind == "flip":
            return blob[:at] + bytes([blob[at] ^ (self.data[0] or 1)]) + blob[at + 1:] if blob else blob
        if self.kind == "insert":
            return blob[:at] + self.data + blob[at:]
        if self.kind == "delete":
            return blob[:at] + blob[at + len(self.data):]
        return blob[:at]


mutations = st.lists(st.builds(
    Mutation,
    kind=st.sampled_from(["flip", "insert", "delete", "truncate"]),
    position=st.floats(min_value=0, max_value=1),
    data=st.binary(min_size=1, max_size=600),
), min_size=1, max_size=4)


def mutated(blob: bytes, changes: list[Mutation]) -> bytes:
    for change in changes:
        blob = change.apply(blob)
    return blob


def test_the_unmutated_archive_reads_back() -> None:
    assert read_or_refuse(original()) == CONTENTS


@given(mutations)
@example([Mutation("truncate", 0.5, b"x")])
@example([Mutation("insert", 1.0, b"\x28\xb5\x2f\xfd")])  # a second zstd frame's magic after the first
def test_mutated_compressed_bytes_are_refused_or_read_back_exactly(changes: list[Mutation]) -> None:
    contents = read_or_refuse(mutated(original(), changes))
    assert contents is None or contents == CONTENTS


@given(mutations)
@example([Mutation("delete", 0.0, b"x" * 512)])  # the first header gone: the manifest's data read as a header
@example([Mutation("flip", 0.3, b"\x80")])
@settings(max_examples=200)
def test_mutated_tar_in_an_intact_zstd_frame_is_refused_or_read_back_exactly(changes: list[Mutation]) -> None:
    """The zstd frame checksum catches most damage of compressed bytes; this puts the damage past it, into tar."""
    compressed = zstandard.ZstdCompressor(write_checksum=True).compress(mutated(original_tar(), changes))
    contents = read_or_refuse(compressed)
    assert contents is None or contents == CONTENTS


@given(st.text(min_size=0, max_size=300), st.binary(max_size=64))
@example("checkpoints/web/../../../etc/cron.d/x", b"pwned")
@example("checkpoints/web/\u2025/x", b"")
def test_any_member_name_is_refused_or_staged_inside_the_staging_folder(name: str, data: bytes) -> None:
    archive = tar_zst(signed(MANIFEST, entry(name, data)))
    contents = read_or_refuse(archive)
    if contents is not None:  # then the name fits the layout, and the file is where the name says
        assert contents == {"manifest.json": MANIFEST[1], name: data}


def test_a_member_name_fitting_the_layout_is_staged() -> None:
    """The control case of the property above: it must not pass by refusing everything."""
    name = "checkpoints/web-1/pages-2.img"
    assert read_or_refuse(tar_zst(signed(MANIFEST, entry(name, b"p")))) == {"manifest.json": MANIFEST[1], name: b"p"}


@given(st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
       st.dictionaries(st.sampled_from(["path", "size", "mtime", "uid", "linkpath", "uname", "hdrcharset",
                                        "GNU.sparse.size", "GNU.sparse.map", "comment"]),
                       st.text(max_size=40), max_size=4))
def test_absurd_pax_records_are_refused_or_read(tar_format: int, headers: dict[str, str]) -> None:
    info, data = entry("checkpoints/web/pages.img", b"pages")
    info.pax_headers = headers
    out = io.BytesIO()
    try:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT if headers else tar_format) as tar:
            for member, payload in signed(MANIFEST, (info, data)):
                tar.addfile(member, io.BytesIO(payload))
    except (ValueError, UnicodeError):  # tarfile itself will not write some of these
        return
    read_or_refuse(zstandard.ZstdCompressor(write_checksum=True).compress(out.getvalue()))

"""The snapshot archive: round trips, and the reader's refusal of every damaged or hostile archive.

Hostile archives are built here by hand with tarfile + zstandard, so each one
carries exactly one defect (and a correct SHA256SUMS unless that is the defect).
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import tarfile
from pathlib import Path

import pytest
import zstandard

from compose_ckpt.domain.transport import archive
from compose_ckpt.domain.transport.archive import ArchiveWriter, read_archive
from compose_ckpt.errors import ArchiveError, ExitCode

Entry = tuple[tarfile.TarInfo, bytes]


def entry(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **attrs: object) -> Entry:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def signed(*entries: Entry) -> list[Entry]:
    """The entries followed by a correct SHA256SUMS of their regular files."""
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {info.name}\n" for info, data in entries if info.isfile())
    return [*entries, entry("SHA256SUMS", sums.encode())]


def tar_zst(entries: list[Entry]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return zstd(raw.getvalue())


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


def untar(archive_bytes: bytes) -> list[Entry]:
    """The members of an archive, to tamper with and put back together with tar_zst."""
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(archive_bytes)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return [(info, tar.extractfile(info).read()) for info in tar]  # type: ignore[union-attr]


MANIFEST = entry("manifest.json", b'{"name": "snap"}')


def refused(tmp_path: Path, data: bytes, *words: str, max_bytes: int = 1024**3) -> ArchiveError:
    """Assert the reader refuses `data` with a message holding every word, leaving no staging behind."""
    staging = tmp_path / "staging"
    with pytest.raises(ArchiveError) as caught:
        read_archive(io.BytesIO(data), staging, max_bytes=max_bytes)
    message = str(caught.value).lower()
    for word in words:
        assert word.lower() in message, message
    assert caught.value.exit_code == ExitCode.ARCHIVE
    assert not staging.exists()
    return caught.value


@pytest.fixture
def source_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "pages-1.img").write_bytes(random.Random(7).randbytes(3000))  # fixed, so damage tests repeat
    (tree / "sub" / "inventory.img").write_bytes(b"inv")
    (tree / "sub" / "deeper" / "empty.img").write_bytes(b"")
    return tree


@pytest.fixture
def valid(tmp_path: Path, source_tree: Path) -> bytes:
    compose = tmp_path / "compose.yaml"
    compose.write_text("services: {}\n")
    out = io.BytesIO()
    with ArchiveWriter(out) as writer:
        writer.add_bytes("manifest.json", b'{"name": "snap"}')
        writer.add_file("compose/compose.yaml", compose)
        writer.add_bytes("compose/empty.yaml", b"")
        writer.add_tree("checkpoints/web-1", source_tree)
        writer.add_stream("images/web", [b"abcdefghij", b"", b"klm"], chunk_size=4)
        writer.add_stream("images/db", [b"12345678"], chunk_size=4)
        writer.add_stream("images/empty", [], chunk_size=4)
    return out.getvalue()


def test_round_trip_of_every_member_kind(tmp_path: Path, valid: bytes, source_tree: Path) -> None:
    staged = read_archive(io.BytesIO(valid), tmp_path / "staging")

    assert staged.manifest == b'{"name": "snap"}'
    assert {name: path.read_bytes() for name, path in staged.compose_files.items()} == {
        "compose.yaml": b"services: {}\n", "empty.yaml": b""}
    assert list(staged.checkpoints) == ["web-1"]
    restored = staged.checkpoints["web-1"]
    originals = sorted(p.relative_to(source_tree) for p in source_tree.rglob("*") if p.is_file())
    assert sorted(p.relative_to(restored) for p in restored.rglob("*") if p.is_file()) == originals
    for relative in originals:
        assert (restored / relative).read_bytes() == (source_tree / relative).read_bytes()
    # A stream is cut at chunk_size whatever the incoming pieces; no empty tail, but an empty stream keeps one chunk.
    assert {key: [p.read_bytes() for p in chunks] for key, chunks in staged.images.items()} == {
        "web": [b"abcd", b"efgh", b"ijkl", b"m"], "db": [b"1234", b"5678"], "empty": [b""]}
    assert [p.name for p in staged.images["web"]] == ["000000", "000001", "000002", "000003"]
    # Private: the staging folder and every file are the owner's only.
    assert staged.root.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in staged.root.rglob("*") if p.is_file()} == {0o600}


def test_sha256sums_is_last_complete_and_members_are_reproducible(valid: bytes) -> None:
    entries = untar(valid)
    *members, (sums_info, sums) = entries
    assert sums_info.name == "SHA256SUMS"
    listed = {name: digest for digest, name in (line.split("  ") for line in sums.decode().splitlines())}
    assert listed == {info.name: hashlib.sha256(data).hexdigest() for info, data in members}
    assert {(info.mode, info.uid, info.gid, info.mtime) for info, _ in entries} == {(0o600, 0, 0, 0)}
    assert all(info.isfile() for info, _ in entries)


def test_writer_counts_bytes_and_reader_reports_compressed_progress(tmp_path: Path) -> None:
    out = io.BytesIO()
    with ArchiveWriter(out) as writer:
        writer.add_bytes("manifest.json", b"{}")
        writer.add_stream("images/x", [os.urandom(5000)], chunk_size=1024)
        assert writer.bytes_in == 5002
    seen: list[int] = []
    read_archive(io.BytesIO(out.getvalue()), tmp_path / "staging", progress=seen.append)
    assert seen and seen == sorted(seen) and seen[-1] == len(out.getvalue())


class Pipe:
    """A write-only stream, like a pipe or stdout: seeking or asking the position fails."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def flush(self) -> None:
        pass

    def seekable(self) -> bool:
        return False

    def seek(self, *args: object) -> int:
        raise OSError("pipe: cannot seek")

    def tell(self) -> int:
        raise OSError("pipe: cannot tell")


def test_writer_never_seeks_and_leaves_out_open(tmp_path: Path, source_tree: Path) -> None:
    pipe = Pipe()
    with ArchiveWriter(pipe, threads=2) as writer:  # type: ignore[arg-type]
        writer.add_bytes("manifest.json", b"{}")
        writer.add_tree("checkpoints/c", source_tree)
    writer.close()  # a second close is harmless
    staged = read_archive(io.BytesIO(bytes(pipe.data)), tmp_path / "staging")
    assert (staged.checkpoints["c"] / "pages-1.img").read_bytes() == (source_tree / "pages-1.img").read_bytes()


def test_archive_of_a_writer_that_failed_midway_is_refused(tmp_path: Path) -> None:
    out = io.BytesIO()
    with pytest.raises(RuntimeError), ArchiveWriter(out, threads=0) as writer:  # threads buffer more output
        writer.add_bytes("manifest.json", b"{}")
        writer.add_bytes("images/x/000000", os.urandom(3_000_000))
        raise RuntimeError("docker save died")
    assert out.getvalue()  # something was written, but it never ends
    refused(tmp_path, out.getvalue(), "damaged or truncated")


def test_writer_refuses_symlinks_and_names_outside_the_layout(tmp_path: Path, source_tree: Path) -> None:
    (source_tree / "link").symlink_to("/etc/passwd")
    writer = ArchiveWriter(io.BytesIO())
    with pytest.raises(ArchiveError, match="only regular files"):
        writer.add_tree("checkpoints/c", source_tree)
    with pytest.raises(ArchiveError, match="not part of the layout"):
        writer.add_bytes("compose/sub/dir", b"")
    writer.add_bytes("manifest.json", b"")
    with pytest.raises(ArchiveError, match="twice"):
        writer.add_bytes("manifest.json", b"")


def test_reader_wants_a_fresh_staging_folder_and_leaves_an_existing_one_alone(tmp_path: Path, valid: bytes) -> None:
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / "keep").write_text("mine")
    with pytest.raises(FileExistsError):
        read_archive(io.BytesIO(valid), tmp_path / "staging")
    assert (tmp_path / "staging" / "keep").read_text() == "mine"


@pytest.mark.parametrize(("name", "problem"), [
    ("/etc/passwd", "absolute path"),
    ("../x", "'..'"),
    ("checkpoints/a/../../x", "'..'"),
    ("checkpoints/a//b", "empty path component"),
    ("checkpoints\\a\\b", "backslash"),
    ("checkpoints/a/b\x07c", "not a plain name"),
    ("checkpoints/.hidden/x", "not a plain name"),
    ("compose/sub/dir", "not part of the layout"),
    ("etc/passwd", "not part of the layout"),
    ("images/web/1", "not part of the layout"),
])
def test_reader_refuses_unsafe_names(tmp_path: Path, name: str, problem: str) -> None:
    error = refused(tmp_path, tar_zst(signed(MANIFEST, entry(name, b"x"))), "unsafe archive member", problem)
    assert repr(name) in str(error)


@pytest.mark.parametrize(("kind", "what"), [
    (tarfile.SYMTYPE, "symlink"),
    (tarfile.LNKTYPE, "hard link"),
    (tarfile.CHRTYPE, "character device"),
    (tarfile.BLKTYPE, "block device"),
    (tarfile.FIFOTYPE, "fifo"),
    (tarfile.CONTTYPE, "tar type"),
])
def test_reader_refuses_members_that_are_not_files_or_folders(tmp_path: Path, kind: bytes, what: str) -> None:
    evil = entry("checkpoints/web/evil", kind=kind, linkname="/etc/shadow")
    refused(tmp_path, tar_zst(signed(MANIFEST, evil)), "checkpoints/web/evil", what)


def test_reader_accepts_folder_members(tmp_path: Path) -> None:
    folder = entry("checkpoints/web", kind=tarfile.DIRTYPE, mode=0o700)
    staged = read_archive(io.BytesIO(tar_zst(signed(MANIFEST, folder))), tmp_path / "staging")
    assert list(staged.checkpoints) == ["web"]


def test_reader_refuses_tampered_archives(tmp_path: Path, valid: bytes) -> None:
    *members, sums = untar(valid)
    manifest = members[0]
    changed = (members[1][0], b"X" + members[1][1][1:])  # same size, one byte different
    extra = entry("checkpoints/web-1/extra.img", b"x")
    clash = entry("checkpoints/web-1/pages-1.img/inner", b"x")
    cases = {
        "sha256 does not match": [manifest, changed, *members[2:], sums],
        f"not listed in SHA256SUMS: {extra[0].name}": [*members, extra, sums],
        "listed in SHA256SUMS but missing": [manifest, *members[2:], sums],
        "duplicate archive member 'manifest.json'": [*members, manifest, sums],
        "comes after SHA256SUMS": [*members, sums, extra],
        "SHA256SUMS is missing": members,
        "malformed SHA256SUMS": [*members, entry("SHA256SUMS", sums[1].replace(b"  ", b" ", 1))],
        "has no manifest.json": signed(*(members[1:])),
        "clashes with another member": signed(*members, clash),
    }
    for problem, entries in cases.items():
        refused(tmp_path, tar_zst(entries), problem)


def test_reader_refuses_image_chunks_with_a_gap(tmp_path: Path) -> None:
    gap = signed(MANIFEST, entry("images/web/000000", b"a"), entry("images/web/000002", b"c"))
    refused(tmp_path, tar_zst(gap), "image 'web'", "not consecutive", "000000, 000002")


def test_reader_refuses_sizes_beyond_the_limit(tmp_path: Path, valid: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    huge = tarfile.TarInfo("images/web/000000")
    huge.size = 2**40  # declared only: the reader must refuse before reading any of it
    refused(tmp_path, zstd(huge.tobuf(tarfile.PAX_FORMAT)), "images/web/000000", "beyond the size limit")
    refused(tmp_path, valid, "beyond the size limit", max_bytes=1000)
    monkeypatch.setattr(archive, "MAX_MEMBERS", 3)
    refused(tmp_path, valid, "more than 3 members")


def test_reader_refuses_damaged_input(tmp_path: Path, valid: bytes) -> None:
    # (A few header and padding bytes of zstd are redundant: flipping them changes nothing, so they are avoided.)
    for offset in (0, 4, len(valid) // 3, len(valid) // 2, len(valid) - 4, len(valid) - 1):
        flipped = bytearray(valid)
        flipped[offset] ^= 0x01
        refused(tmp_path, bytes(flipped), "damaged")
    for cut in (1, 4, 20, len(valid) // 2, len(valid) - 4, len(valid) - 1):
        refused(tmp_path, valid[:cut], "damaged or truncated")
    refused(tmp_path, b"", "damaged or truncated", "empty")
    refused(tmp_path, os.urandom(4096), "damaged or truncated")
    refused(tmp_path, valid + b"trailing", "after the end")
    refused(tmp_path, valid + valid, "after the end")
    # A whole zstd frame holding a tar cut off in the middle of a member.
    tar = zstandard.ZstdDecompressor().decompressobj().decompress(valid)
    refused(tmp_path, zstd(tar[:2000]), "damaged or truncated")


def test_an_archive_larger_than_the_free_space_is_refused_as_its_members_declare_it(
        tmp_path: Path, valid: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    from compose_ckpt.errors import CkptError

    real = os.statvfs

    def nearly_full(path: object) -> os.statvfs_result:
        status = real(path)  # type: ignore[arg-type]
        return os.statvfs_result((status.f_bsize, 1, status.f_blocks, 0, 100, *tuple(status)[5:]))
    monkeypatch.setattr(os, "statvfs", nearly_full)

    with pytest.raises(CkptError, match="need more than the 100 bytes free"):
        read_archive(io.BytesIO(valid), tmp_path / "staging")
    assert not (tmp_path / "staging").exists()

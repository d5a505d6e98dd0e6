"""More hostile archives, beyond tests/unit/test_archive.py, and `import` refusing them before the engine.

The CLI's `import` connects to the engine before it reads the archive, so the import path is tested at
`transfer.import_snapshot` with an engine that fails the test when it is touched at all.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard

from compose_ckpt.domain.store.manifest import ContainerRecord, Manifest, SnapshotStatus, now_iso
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.domain.transport.archive import ArchiveWriter, read_archive
from compose_ckpt.domain.transport.transfer import import_snapshot
from compose_ckpt.errors import ArchiveError, CkptError, ExitCode, UsageError
from tests.fakes import UntouchableEngine
from tests.unit.test_archive import MANIFEST, Entry, entry, refused, signed, source_tree, tar_zst, valid, zstd
from tests.unit.timebox import time_limit

__all__ = ["source_tree", "valid"]  # fixtures shared with test_archive.py


def raw_tar(entries: list[Entry], tar_format: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tar_format) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return out.getvalue()


def pax(name: str, data: bytes = b"x", **headers: str) -> Entry:
    """A regular member whose PAX header carries `headers` (which tarfile applies over the plain header)."""
    info, _ = entry(name, data)
    info.pax_headers = headers
    return info, data


# --- links, duplicates, sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["../../victim", "/tmp/victim", "manifest.json", "checkpoints/web/pages.img"])
def test_a_hard_link_then_a_write_through_it_is_refused_at_the_link(tmp_path: Path, target: str) -> None:
    """The classic escape: link a member to a file outside, then write the member's contents through the link."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    link = entry("checkpoints/web/pages.img", kind=tarfile.LNKTYPE, linkname=target)
    payload = entry("checkpoints/web/pages.img", b"overwritten")
    refused(tmp_path, tar_zst(signed(MANIFEST, link, payload)), "hard link")
    assert victim.read_bytes() == b"untouched"


@pytest.mark.parametrize("listed", ["first", "second"])
def test_a_member_twice_with_different_contents(tmp_path: Path, listed: str) -> None:
    one, two = entry("checkpoints/web/pages.img", b"one"), entry("checkpoints/web/pages.img", b"two")
    sums = entry("SHA256SUMS", b"%s  checkpoints/web/pages.img\n%s  manifest.json\n" % (
        hashlib.sha256(b"one" if listed == "first" else b"two").hexdigest().encode(),
        hashlib.sha256(MANIFEST[1]).hexdigest().encode()))
    refused(tmp_path, tar_zst([MANIFEST, one, two, sums]), "duplicate archive member 'checkpoints/web/pages.img'")


@pytest.mark.parametrize("order", ["file-then-folder", "folder-then-file"])
def test_a_name_both_file_and_folder(tmp_path: Path, order: str) -> None:
    file, folder = entry("checkpoints/web", b"x"), entry("checkpoints/web", kind=tarfile.DIRTYPE)
    members = [file, folder] if order == "file-then-folder" else [folder, file]
    refused(tmp_path, tar_zst(signed(MANIFEST, *members)), "checkpoints/web")


@pytest.mark.parametrize("size", ["1" + "0" * 30, "-5", str(2**63)])
def test_absurd_sizes_in_a_pax_header(tmp_path: Path, size: str) -> None:
    refused(tmp_path, tar_zst([MANIFEST, pax("checkpoints/web/pages.img", size=size)]), "checkpoints/web/pages.img")


def test_a_huge_size_in_a_gnu_base256_header(tmp_path: Path) -> None:
    info = tarfile.TarInfo("images/web/000000")
    info.size = 2**62  # only GNU's base-256 number field can hold it
    refused(tmp_path, zstd(info.tobuf(tarfile.GNU_FORMAT)), "images/web/000000", "beyond the size limit")


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK])
def test_a_huge_extension_header_is_refused_before_it_is_read(tmp_path: Path, kind: bytes) -> None:
    """tarfile reads PAX and GNU long-name headers into memory whole: 256 MiB of them (from a few KiB of zstd)
    must be refused from the declared size, not read."""
    header = tarfile.TarInfo("././@LongLink")
    header.type = kind
    header.size = 256 * 1024**2
    compressor = zstandard.ZstdCompressor(write_checksum=True).compressobj()
    chunks = [compressor.compress(header.tobuf(tarfile.GNU_FORMAT))]
    chunks += [compressor.compress(bytes(1024**2)) for _ in range(256)]
    data = b"".join(chunks) + compressor.flush()
    started = time.monotonic()
    refused(tmp_path, data, "extension header declares 268435456 bytes")
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("sixteenth", range(1, 16))
def test_zstd_cut_at_every_sixteenth(tmp_path: Path, valid: bytes, sixteenth: int) -> None:
    refused(tmp_path, valid[: len(valid) * sixteenth // 16], "damaged or truncated")


# --- names: PAX paths and GNU long names ----------------------------------------------------------------------


@pytest.mark.parametrize(("path", "problem"), [
    ("../../etc/passwd", "'..'"),
    ("/etc/passwd", "absolute path"),
    ("", "empty path component"),
    ("checkpoints/web/a\x00b", "not a plain name"),
    ("checkpoints/web/" + "a" * 100_000, "longer than 1000 characters"),
    ("checkpoints/" + "a/" * 5_000 + "x", "longer than 1000 characters"),  # plain, but too deep to stage
    ("checkpoints/web/\udcff\udcfe", "not a plain name"),  # non-UTF-8 bytes, as tarfile decodes them
])
def test_absurd_paths_in_a_pax_header(tmp_path: Path, path: str, problem: str) -> None:
    """The PAX path replaces the harmless plain name of the member."""
    member = pax("checkpoints/web/harmless.img", path=path)
    if "\udcff" in path:
        member[0].pax_headers = {"hdrcharset": "BINARY", "path": path}
    refused(tmp_path, tar_zst(signed(MANIFEST, member)), "unsafe archive member", problem)


def test_a_pax_global_header_renaming_every_member(tmp_path: Path) -> None:
    glob, _ = entry("pax_global_header")
    glob.type = tarfile.XGLTYPE
    glob.pax_headers = {"path": "../escape"}
    raw = glob.tobuf(tarfile.PAX_FORMAT) + raw_tar(signed(MANIFEST), tarfile.USTAR_FORMAT)
    refused(tmp_path, zstd(raw), "'..'")


def test_gnu_long_names_inside_the_layout_are_staged(tmp_path: Path) -> None:
    name = "checkpoints/web/" + "p" * 150 + ".img"  # longer than the 100 bytes of a plain header
    staged = read_archive(io.BytesIO(zstd(raw_tar(signed(MANIFEST, entry(name, b"pages")), tarfile.GNU_FORMAT))),
                          tmp_path / "staging")
    assert (staged.checkpoints["web"] / ("p" * 150 + ".img")).read_bytes() == b"pages"


def test_gnu_long_names_with_traversal_are_refused(tmp_path: Path) -> None:
    name = "checkpoints/" + "a/" * 60 + "../" * 62 + "escape"
    refused(tmp_path, zstd(raw_tar(signed(MANIFEST, entry(name, b"x")), tarfile.GNU_FORMAT)), "'..'")


# --- modes -------------------------------------------------------------------------------------------------------


def test_mode_bits_of_members_are_not_applied(tmp_path: Path) -> None:
    """setuid, setgid, sticky and world-writable bits in the archive never reach the staged files."""
    folder = entry("checkpoints/web", kind=tarfile.DIRTYPE, mode=0o7777)
    setuid = entry("checkpoints/web/run.img", b"\x7fELF", mode=0o6777)
    staged = read_archive(io.BytesIO(tar_zst(signed(MANIFEST, folder, setuid))), tmp_path / "staging")
    assert (staged.checkpoints["web"] / "run.img").stat().st_mode & 0o7777 == 0o600
    assert staged.checkpoints["web"].stat().st_mode & 0o7022 == 0


# --- import: verified before the engine is touched ---------------------------------------------------------------


def snapshot_archive(edit: dict[str, Any] | None = None) -> bytes:
    """A signed archive of one complete snapshot, its manifest changed by `edit`."""
    record = ContainerRecord(service="web", container_id="a" * 64, container_name="proj-web-1", number=1,
                             image="img", image_id="sha256:" + "1" * 64, checkpoint="ckpt", size=5)
    manifest = Manifest(name="snap1", project="proj", created=now_iso(), status=SnapshotStatus.COMPLETE,
                        stopped=True, compose_files=[], compose_hash="", services=["web"],
                        dependencies={"web": []}, containers=[record])
    out = io.BytesIO()
    with ArchiveWriter(out) as writer:
        writer.add_bytes("manifest.json", json.dumps({**manifest.to_dict(), **(edit or {})}).encode())
        writer.add_bytes("checkpoints/proj-web-1/pages-1.img", b"pages")
    return out.getvalue()


@pytest.mark.parametrize(("archive", "rename", "error", "message"), [
    (snapshot_archive()[:-10], None, ArchiveError, "damaged or truncated"),
    (b"", None, ArchiveError, "empty"),
    (snapshot_archive({"status": "incomplete"}), None, ArchiveError, "incomplete snapshot"),
    (snapshot_archive({"created": 5}), None, ArchiveError, "manifest is invalid"),
    (snapshot_archive({"project": "../../etc"}), None, ArchiveError, "manifest is invalid"),
    (snapshot_archive({"engine": ["x86_64"]}), None, ArchiveError, "manifest is invalid"),
    (snapshot_archive({"containers": []}), None, ArchiveError, "do not match its manifest"),
    (snapshot_archive(), "../escape", UsageError, "invalid snapshot name"),
], ids=["truncated", "empty", "incomplete", "created-number", "project-traversal", "engine-list",
        "checkpoints-not-in-manifest", "bad-rename"])
def test_import_refuses_before_the_engine(tmp_path: Path, archive: bytes, rename: str | None,
                                          error: type[CkptError], message: str) -> None:
    store = SnapshotStore(tmp_path / "home")
    engine = UntouchableEngine()
    with pytest.raises(error, match=message) as caught:
        import_snapshot(store, engine, io.BytesIO(archive), rename=rename)
    assert engine.used == []
    assert caught.value.exit_code in (ExitCode.ARCHIVE, ExitCode.USAGE)
    assert not (store.home / "projects").exists()
    assert list((store.home / "tmp").iterdir()) == []  # the staging folder is gone


def test_import_of_a_huge_deeply_nested_manifest_is_an_archive_error(tmp_path: Path) -> None:
    out = io.BytesIO()
    with ArchiveWriter(out) as writer:
        writer.add_bytes("manifest.json", b"[" * 200_000 + b"]" * 200_000)
    engine = UntouchableEngine()
    with time_limit(10), pytest.raises(ArchiveError, match="manifest is invalid"):
        import_snapshot(SnapshotStore(tmp_path / "home"), engine, io.BytesIO(out.getvalue()))
    assert engine.used == []

"""The snapshot archive: one zstd-compressed tar, written and read as streams.

Layout of the tar (every name is checked against it, on writing and on reading):

    manifest.json                       the snapshot manifest (opaque bytes here)
    compose/<file>                      copies of the compose files
    checkpoints/<container>/<path...>   the CRIU image files of one container
    layers/<container>.tar.zst          a container's writable-layer changes (see domain/stack/filesystem.py)
    volumes/<volume>.tar.zst            a named volume's content, when the snapshot holds it
    images/<key>/<NNNNNN>               `docker save` of one image, cut into numbered chunks
    SHA256SUMS                          last: "<sha256>  <name>" for every other file member

Archives travel between hosts, so the reader trusts nothing: it stages members
one by one under a fresh private folder, refuses anything outside the layout
before writing it, and checks every byte against SHA256SUMS at the end.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, cast

import zstandard

from compose_ckpt.errors import ArchiveError, CkptError

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
MAX_MEMBERS = 100_000
DEFAULT_CHUNK_SIZE = 64 * 1024**2

_TREE_FOLDERS = ("layers", "volumes")
_TREE_SUFFIX = ".tar.zst"
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
_CHUNK_NAME = re.compile(r"[0-9]{6}")
_SUMS_LINE = re.compile(r"([0-9a-f]{64})  (\S+)")
_MAX_NAME = 1000  # a member name; deeper paths would fail to stage (ENAMETOOLONG) rather than be refused
_MAX_SUMS_BYTES = 64 * 1024**2  # SHA256SUMS is read into memory; 100000 long lines fit
_IO_SIZE = 1024**2
# A zstd block can expand about 32000 times, so feeding the decompressor small
# pieces bounds the memory a hostile archive can make us allocate (~64 MiB).
_ZSTD_FEED = 2048
# tarfile reads a PAX or GNU long-name header into memory whole, before handing us its member:
# member names here are at most a few hundred bytes, so a larger header is refused unread.
_MAX_HEADER_BYTES = 1024**2
_HEADER_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                 tarfile.GNUTYPE_LONGLINK)
_TYPE_NAMES = {tarfile.SYMTYPE: "a symlink", tarfile.LNKTYPE: "a hard link", tarfile.CHRTYPE: "a character device",
               tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a FIFO"}


def _name_problem(name: str, folder: bool) -> str | None:
    """Say what is wrong with a member name, or None if it fits the layout."""
    if len(name) > _MAX_NAME:
        return f"longer than {_MAX_NAME} characters"
    if name.startswith("/"):
        return "absolute path"
    if "\\" in name:
        return "backslash in path"
    parts = name.split("/")
    if ".." in parts:
        return "'..' in path"
    if "" in parts:
        return "empty path component"
    for part in parts:
        if not _COMPONENT.fullmatch(part):
            return f"{part!r} is not a plain name (letters, digits, '_.-', not starting with '_.-', at most 200)"
    top, rest = parts[0], parts[1:]
    if folder:
        fits = (top == "checkpoints" or (top == "images" and len(rest) <= 1)
                or (top in ("compose", *_TREE_FOLDERS) and not rest))
    else:
        fits = (name == MANIFEST or (top == "compose" and len(rest) == 1) or (top == "checkpoints" and len(rest) >= 2)
                or (top == "images" and len(rest) == 2 and _CHUNK_NAME.fullmatch(rest[1]) is not None)
                or (top in _TREE_FOLDERS and len(rest) == 1 and rest[0].endswith(_TREE_SUFFIX)))
    if not fits:
        return ("not part of the layout (manifest.json, compose/<file>, checkpoints/<container>/..., "
                "images/<key>/<NNNNNN>, layers/<container>.tar.zst, volumes/<volume>.tar.zst)")
    return None


def check_name(name: str, *, folder: bool = False) -> None:
    problem = _name_problem(name, folder)
    if problem:
        raise ArchiveError(f"unsafe archive member {name!r}: {problem}")


class MemberWriter:
    """Where a snapshot's members go: an archive, or blobs in a registry (domain/transport/push.py).

    Subclasses store single members (`add_bytes`, `add_file`); folders and streams of unknown
    length are cut into such members here, the same way for every destination."""

    def add_bytes(self, path: str, data: bytes) -> None:
        raise NotImplementedError

    def add_file(self, path: str, source: Path) -> None:
        raise NotImplementedError

    def add_tree(self, prefix: str, folder: Path) -> None:
        """Add every regular file under `folder` as prefix/<relative path>; empty folders are not kept."""
        if not stat.S_ISDIR(folder.lstat().st_mode):
            raise ArchiveError(f"refusing to archive {folder}: not a folder")
        for entry in sorted(folder.rglob("*")):
            mode = entry.lstat().st_mode
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):  # a symlink could point anywhere on the host
                raise ArchiveError(f"refusing to archive {entry}: only regular files and folders are allowed")
            self.add_file(f"{prefix}/{entry.relative_to(folder).as_posix()}", entry)

    def add_stream(self, prefix: str, chunks: Iterable[bytes], chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        """Store a byte stream of unknown length as prefix/000000, prefix/000001, ...

        tar wants each member's size before its data, so one chunk is buffered at a time.
        An empty stream still gets an (empty) 000000, so the key survives the round trip.
        """
        buffer = bytearray()
        index = 0
        for piece in chunks:
            buffer += piece
            while len(buffer) >= chunk_size:
                self.add_bytes(f"{prefix}/{index:06d}", bytes(buffer[:chunk_size]))
                del buffer[:chunk_size]
                index += 1
        if buffer or index == 0:
            self.add_bytes(f"{prefix}/{index:06d}", bytes(buffer))


class ArchiveWriter(MemberWriter):
    """Writes an archive to any binary stream, never seeking and never spilling to disk."""

    def __init__(self, out: BinaryIO, *, level: int = 3, threads: int = -1,
                 moved: Callable[[int], None] | None = None) -> None:
        """`moved` is told `bytes_in` as it grows (for progress)."""
        self._out = out
        self._moved = moved
        # The frame checksum lets the reader notice a flipped byte before it even reaches our sha256s.
        # threads=-1: zstd compresses on worker threads (one per core) while this one reads and hashes.
        compressor = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
        self._zstd = compressor.stream_writer(out, closefd=False)
        self._buffer = memoryview(bytearray(_IO_SIZE))
        self._written = 0  # tar bytes so far, for the final padding
        self._sums: dict[str, str] = {}
        self._closed = False
        self.bytes_in = 0

    def add_bytes(self, path: str, data: bytes) -> None:
        self._add(path, len(data), io.BytesIO(data))

    def add_file(self, path: str, source: Path) -> None:
        with source.open("rb") as raw:
            self._add(path, os.fstat(raw.fileno()).st_size, raw)

    def close(self) -> None:
        """Append SHA256SUMS and end the tar and the zstd frame; `out` stays open."""
        if self._closed:
            return
        self._closed = True
        sums = "".join(f"{digest}  {path}\n" for path, digest in self._sums.items()).encode()
        self._member(SUMS, len(sums), io.BytesIO(sums))
        # End of archive: two zero blocks, then zeros up to a whole record, as tarfile writes it.
        self._write(bytes(2 * tarfile.BLOCKSIZE + -(self._written + 2 * tarfile.BLOCKSIZE) % tarfile.RECORDSIZE))
        self._zstd.close()  # type: ignore[no-untyped-call]  # zstandard ships no hints for it
        self._out.flush()

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # On failure leave the output unfinished (no SHA256SUMS, no frame end): readers refuse it.
        if exc_type is None:
            self.close()

    def _add(self, path: str, size: int, raw: BinaryIO) -> None:
        check_name(path)
        if path in self._sums:
            raise ArchiveError(f"archive member {path!r} added twice")
        self._sums[path] = self._member(path, size, raw)

    def _member(self, path: str, size: int, raw: BinaryIO) -> str:
        """Write one tar member (header, data, padding) and return the data's sha256.

        Written here rather than through tarfile, whose stream mode copies every byte through
        two more buffers: the data is read once into one buffer, hashed, and handed to zstd."""
        self._write(_tar_info(path, size).tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))
        digest = hashlib.sha256()
        remaining = size
        while remaining:
            count = raw.readinto(self._buffer[:min(remaining, _IO_SIZE)])  # type: ignore[attr-defined]
            if not count:
                raise ArchiveError(f"{path} shrank while it was being archived")
            digest.update(self._buffer[:count])
            self._write(self._buffer[:count])
            remaining -= count
            self.bytes_in += count
            if self._moved:
                self._moved(self.bytes_in)
        self._write(bytes(-size % tarfile.BLOCKSIZE))
        return digest.hexdigest()

    def _write(self, data: bytes | memoryview) -> None:
        self._zstd.write(data)
        self._written += len(data)


def _tar_info(path: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)  # defaults: uid/gid 0, no user names, mtime 0: reproducible
    info.size = size
    info.mode = 0o600  # checkpoints hold process memory, secrets included
    return info


class _ZstdSource:
    """The decompressed stream, for tarfile.

    Unlike zstandard's stream_reader, which ends quietly when its input is cut
    off mid-frame, this notices a frame that never ends and data after its end.
    """

    def __init__(self, source: BinaryIO, progress: Callable[[int], None] | None) -> None:
        self._source = source
        self._progress = progress
        self._decompressor = zstandard.ZstdDecompressor().decompressobj()
        self._pending = memoryview(b"")
        self._output = bytearray()
        self.bytes_read = 0

    def read(self, size: int) -> bytes:
        while len(self._output) < size and not self._decompressor.eof:
            if not self._pending:
                self._pending = memoryview(self._next_input())
            piece, self._pending = self._pending[:_ZSTD_FEED], self._pending[_ZSTD_FEED:]
            self._output += self._decompressor.decompress(piece)
        data = bytes(self._output[:size])
        del self._output[:size]
        return data

    def finish(self, max_bytes: int) -> None:
        """Read to the end of the frame, which verifies its checksum, and make sure nothing follows.

        Called as soon as tar stops, before the sums are checked, so that damage is reported
        as damage even when it made tar stop early (tar takes a garbled header for the end).
        """
        left = 0
        while chunk := self.read(_IO_SIZE):
            left += len(chunk)
            if left > max_bytes:
                break
        if left > tarfile.RECORDSIZE:  # more than tar's end padding
            raise ArchiveError("damaged or truncated archive: the tar ends early or has data after its end")
        if self._decompressor.unused_data or self._pending or self._source.read(1):
            raise ArchiveError("damaged or truncated archive: unexpected data after the end of the zstd frame")

    def _next_input(self) -> bytes:
        data = self._source.read(_IO_SIZE)
        if not data:
            raise ArchiveError("damaged or truncated archive: " + ("the input is empty" if self.bytes_read == 0
                                                                    else "the compressed stream ends too early"))
        self.bytes_read += len(data)
        if self._progress:
            self._progress(self.bytes_read)
        return data


class _BoundedTarInfo(tarfile.TarInfo):
    """A tar header whose extension headers (PAX, GNU long names) are refused when too large to hold in memory."""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _HEADER_TYPES and self.size > _MAX_HEADER_BYTES:
            raise ArchiveError(f"damaged or unsafe archive: a tar extension header declares {self.size} bytes "
                               f"(at most {_MAX_HEADER_BYTES})")
        return super()._proc_member(tar)  # type: ignore[misc,no-any-return]


@dataclass(frozen=True)
class StagedArchive:
    root: Path  # the staging folder
    manifest: bytes
    compose_files: dict[str, Path]  # file name -> staged path
    checkpoints: dict[str, Path]  # container -> staged folder
    images: dict[str, list[Path]]  # key -> chunk files in order
    layers: dict[str, Path]  # container -> staged copy of its writable-layer changes
    volumes: dict[str, Path]  # volume -> staged copy of its content


def read_archive(source: BinaryIO, staging: Path, *, max_bytes: int = 64 * 1024**3,
                 progress: Callable[[int], None] | None = None) -> StagedArchive:
    """Unpack and verify an archive into `staging`, which must not exist yet.

    `progress` is called with the number of compressed bytes read from `source` so far.
    On any error `staging` is removed again, so nothing unverified is left behind.
    """
    staging.mkdir(mode=0o700)  # FileExistsError: we only ever delete a folder we created
    try:
        try:
            return _unpack(_ZstdSource(source, progress), staging, max_bytes)
        # ValueError: tarfile parsing a hostile PAX record, such as int() of GNU.sparse.size=''
        except (zstandard.ZstdError, tarfile.TarError, EOFError, ValueError) as error:
            raise ArchiveError(f"damaged or truncated archive: {error}") from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _unpack(stream: _ZstdSource, root: Path, max_bytes: int) -> StagedArchive:
    hashes: dict[str, str] = {}
    seen: set[str] = set()
    listed: dict[str, str] | None = None
    total = 0
    status = os.statvfs(root)
    free = status.f_bavail * status.f_frsize
    with tarfile.open(fileobj=cast(IO[bytes], stream), mode="r|", bufsize=_IO_SIZE, tarinfo=_BoundedTarInfo) as tar:
        for count, member in enumerate(tar, start=1):
            name = member.name
            if count > MAX_MEMBERS:
                raise ArchiveError(f"the archive has more than {MAX_MEMBERS} members")
            if listed is not None:
                raise ArchiveError(f"archive member {name!r} comes after {SUMS}, which must be last")
            if name in seen:
                raise ArchiveError(f"duplicate archive member {name!r}")
            seen.add(name)
            if not (member.isdir() or member.type in (tarfile.REGTYPE, tarfile.AREGTYPE)):
                kind = _TYPE_NAMES.get(member.type, f"of tar type {member.type!r}")
                raise ArchiveError(f"archive member {name!r} is {kind}: "
                                   "only regular files and folders are allowed")
            if not (name == SUMS and member.isfile()):
                check_name(name, folder=member.isdir())
            total += member.size
            if member.size < 0 or total > max_bytes or (name == SUMS and member.size > _MAX_SUMS_BYTES):
                raise ArchiveError(f"archive member {name!r} declares {member.size} bytes: negative or "
                                   f"beyond the size limit ({max_bytes} bytes in all)")
            if total > free:  # what the members declare is what they take: refused before it fills the disk
                raise CkptError(f"the archive's files need more than the {free} bytes free under {root.parent}",
                                hint="Free some space (`compose-ckpt prune`, `docker system prune`) and import again.")
            data = tar.extractfile(member)
            try:
                if name == SUMS:
                    listed = _parse_sums(data.read() if data else b"")
                elif data is None:
                    (root / name).mkdir(parents=True, exist_ok=True)
                else:
                    hashes[name] = stage_file(data, root / name)
            except (FileExistsError, NotADirectoryError) as error:
                raise ArchiveError(f"archive member {name!r} clashes with another member's path") from error
    stream.finish(max_bytes)
    _verify(hashes, listed)
    return staged_archive(root)


def stage_file(data: IO[bytes], target: Path) -> str:
    """Write one member to a new private file, returning its sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    with os.fdopen(os.open(target, flags, 0o600), "wb") as out:
        while chunk := data.read(_IO_SIZE):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _parse_sums(data: bytes) -> dict[str, str]:
    text = data.decode("ascii", errors="replace")
    lines = text.split("\n")
    if lines.pop() != "":
        raise ArchiveError(f"malformed {SUMS}: it does not end with a newline")
    listed: dict[str, str] = {}
    for line in lines:
        match = _SUMS_LINE.fullmatch(line)
        if not match or match[2] in listed:
            raise ArchiveError(f"malformed {SUMS}: bad or repeated line {line[:120]!r}")
        listed[match[2]] = match[1]
    return listed


def _verify(hashes: dict[str, str], listed: dict[str, str] | None) -> None:
    if listed is None:
        raise ArchiveError(f"{SUMS} is missing: the archive is incomplete or was not made by compose-ckpt")
    problems = {
        f"not listed in {SUMS}": hashes.keys() - listed.keys(),
        f"listed in {SUMS} but missing from the archive": listed.keys() - hashes.keys(),
        "whose sha256 does not match (damaged or tampered with)":
            {n for n in hashes.keys() & listed.keys() if hashes[n] != listed[n]},
    }
    for problem, names in problems.items():
        if names:
            ordered = sorted(names)
            raise ArchiveError(f"archive members {problem}: {', '.join(ordered[:5])}", details=ordered)
    if MANIFEST not in hashes:
        raise ArchiveError(f"the archive has no {MANIFEST}")


def staged_archive(root: Path) -> StagedArchive:
    """Describe what was staged; the folder holds only verified members, so listing it is safe."""

    def children(folder: str) -> dict[str, Path]:
        base = root / folder
        return {path.name: path for path in sorted(base.iterdir())} if base.is_dir() else {}

    images: dict[str, list[Path]] = {}
    for key, folder in children("images").items():
        chunks = sorted(folder.iterdir())
        if [chunk.name for chunk in chunks] != [f"{i:06d}" for i in range(len(chunks))]:
            found = ", ".join(chunk.name for chunk in chunks[:5]) or "none"
            raise ArchiveError(f"image {key!r}: chunks are not consecutive from 000000 (found {found})")
        images[key] = chunks
    return StagedArchive(root=root, manifest=(root / MANIFEST).read_bytes(), compose_files=children("compose"),
                         checkpoints=children("checkpoints"), images=images,
                         layers=_trees(children("layers")), volumes=_trees(children("volumes")))


def _trees(files: dict[str, Path]) -> dict[str, Path]:
    """layers/ or volumes/ by container or volume name (the member names were checked: they end in .tar.zst)."""
    return {name.removesuffix(_TREE_SUFFIX): path for name, path in files.items()}

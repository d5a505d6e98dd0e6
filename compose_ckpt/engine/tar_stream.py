"""Checkpoint folders as tar streams, both ways, for engines reached through a helper container;
and the upload id every placed checkpoint gets."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from compose_ckpt.errors import EngineError

# A restore makes the daemon upload the checkpoint folder, as a tar, into containerd's content store.
# A daemon killed during that upload can leave the tar's content behind, and from then on every upload
# of the same folder fails with `content sha256:...: already exists` (moby does not accept an existing
# blob there). A file with a fresh random id, which CRIU ignores, gives every upload its own digest.
UPLOAD_ID_FILE = "compose-ckpt-upload-id"


def write_upload_id(folder: Path) -> None:
    marker = folder / UPLOAD_ID_FILE
    marker.unlink(missing_ok=True)  # may be a hard link shared with the store's copy: never write through it
    descriptor = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as sink:
        sink.write(uuid.uuid4().hex)


def tar_stream(folder: Path, arcname: str, links: dict[str, str] | None = None) -> Iterator[bytes]:
    """A tar of `folder` (named `arcname` inside) with a fresh upload id, produced by a thread while it is
    sent: no temp file. `links` (file name -> link target): those files of the folder go as symbolic links
    to the target instead (page images placed elsewhere, see engine/pages_in_root.py)."""
    links = links or {}
    left_out = {f"{arcname}/{name}" for name in links} | {f"{arcname}/{UPLOAD_ID_FILE}"}

    def write(archive: tarfile.TarFile) -> None:
        archive.add(folder, arcname=arcname, filter=lambda m: None if m.name in left_out else m)
        for name, target in sorted(links.items()):
            link = tarfile.TarInfo(f"{arcname}/{name}")
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, target, 0o777
            archive.addfile(link)
        upload_id = uuid.uuid4().hex.encode()
        member = tarfile.TarInfo(f"{arcname}/{UPLOAD_ID_FILE}")
        member.size, member.mode = len(upload_id), 0o600
        archive.addfile(member, io.BytesIO(upload_id))

    return produced_tar(write, f"reading checkpoint files from {folder}")


def produced_tar(write: Callable[[tarfile.TarFile], None], doing: str) -> Iterator[bytes]:
    """The tar that `write` makes, produced by a thread while it is read: no temp file. A failure of
    `write` raises EngineError saying what was being `doing`."""
    read_end, write_end = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with os.fdopen(write_end, "wb") as sink, tarfile.open(fileobj=sink, mode="w|") as archive:
                # File bodies in big reads: page images run to gigabytes (typeshed lacks the attribute).
                archive.copybufsize = 1024**2  # type: ignore[attr-defined]
                write(archive)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer below
            failure.append(exc)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    with os.fdopen(read_end, "rb") as source:
        while chunk := source.read(1024**2):
            yield chunk
    producer.join()
    if failure:
        raise EngineError(f"{doing} failed: {failure[0]}")


def extract_tree(stream: Iterable[bytes], name: str, destination: Path) -> int:
    """Write the regular files of a tar stream whose members sit under `name/` into `destination`."""
    total = 0
    with tarfile.open(fileobj=IterReader(stream), mode="r|") as archive:
        for member in archive:
            parts = Path(member.name).parts
            if not parts or parts[0] != name or ".." in parts or member.name.startswith("/"):
                raise EngineError(f"unexpected member {member.name!r} in checkpoint {name} from the engine")
            target = destination.joinpath(*parts[1:])
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True, mode=0o700)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                source = archive.extractfile(member)
                assert source is not None
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                with os.fdopen(os.open(target, flags, 0o600), "wb") as sink:
                    shutil.copyfileobj(source, sink, 1024**2)
                total += member.size
            else:
                raise EngineError(f"unexpected {member.type!r} member {member.name!r} in checkpoint {name}")
    return total


class IterReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (the SDK's archive streams)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

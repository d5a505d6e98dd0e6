"""Page images sent to another engine while CRIU still writes them (`migrate --live`, docs/live.md).

Why. A live move's downtime used to be the dump, then the upload of the page images into the target
container's root, one after the other. The upload (the target daemon's archive endpoint) is the slowest
step; started as soon as CRIU starts writing, it overlaps the dump and the container's exit.

How, through the archive endpoint alone (no process of ours runs on the target):
- CRIU writes a checkpoint's page images one after the other (`pages-1.img`, `pages-2.img`, ..., in the
  order of their numbers), each only appended to, and starts the next only once the previous is done. So
  every image but the newest is complete, and the newest is complete once the dump has ended.
- Each image goes as a tar of its own (the folder, then the image) in a PUT of its own. A complete image
  is sent with its size. The newest one, still growing, is sent as it grows under a declared size: the
  dump's estimate of what is left (the container's memory, less the images already complete), with a
  small margin. When it ends shorter, the rest is zeros: CRIU reads a page image at the offsets its
  pagemap gives and never past them, so trailing zeros are never read (tested against the real engine).
- When the image outgrows its declared size, or ends so much shorter that the zeros would cost more than
  sending it again, that upload is dropped (the connection closed mid-body) and the image is sent again,
  exactly, once complete; the next ones are then sent only once complete. A dropped upload leaves a
  partial file that the next one of the same name replaces.
- Once the dump has ended, each image's size is checked against the bytes taken from it; the restore uses
  the images sent early only when all match the checkpoint in the store, else it sends them itself.
"""

from __future__ import annotations

import io
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from compose_ckpt.engine.types import DumpProgress

_PAGES = re.compile(r"pages-(\d+)\.img")
_SLICE = 64 * 1024**2  # a progress report per slice sent
_BLOCK = 8 * 1024**2  # blocks read for a body that goes through the SDK
_ZEROS = bytes(1024**2)
_POLL_SECONDS = 0.005  # how often a growing image is looked at again when all of it is sent
MARGIN = 8 * 1024**2  # added to the estimate of a growing image's size (plus 1/200 of it)


class SizeMissed(Exception):
    """A growing image did not end within its declared size: its upload is dropped and sent again exactly."""


def ordered_page_images(folder: Path) -> list[Path]:
    """The page images in `folder`, in the order CRIU wrote them (their numbers); regular files only."""
    found = []
    for entry in os.scandir(folder):
        matched = _PAGES.fullmatch(entry.name)
        if matched and entry.is_file(follow_symlinks=False):
            found.append((int(matched.group(1)), Path(entry.path)))
    return [path for _, path in sorted(found)]


def declared_size(estimate: int, complete: int) -> int:
    """The size to declare for the growing image: what the estimate leaves after the complete ones, plus a margin."""
    left = max(estimate - complete, 0)
    return left + left // 200 + MARGIN


@dataclass
class GrowingFile:
    """A page image CRIU is still writing, sent as it grows as exactly `size` bytes: the image, then zeros."""

    path: Path
    size: int  # declared
    complete: Callable[[], bool]  # whether the writer is done with the file
    taken: int = field(default=0, init=False)  # bytes of the file sent (the rest of `size` was zeros)

    def send(self, sock: socket.socket, on_step: Callable[[int], None]) -> None:
        with _opened(self.path) as source:
            for offset, count, from_file in self._spans(source.fileno()):
                if from_file:
                    done = 0
                    while done < count:
                        done += sock.sendfile(source, offset + done, count - done)
                else:
                    for start in range(0, count, len(_ZEROS)):
                        sock.sendall(_ZEROS[:min(len(_ZEROS), count - start)])
                on_step(offset + count)

    def chunks(self) -> Iterator[bytes]:
        with _opened(self.path) as source:
            for offset, count, from_file in self._spans(source.fileno()):
                for start in range(0, count, _BLOCK):
                    length = min(_BLOCK, count - start)
                    yield os.pread(source.fileno(), length, offset + start) if from_file else bytes(length)

    def _spans(self, descriptor: int) -> Iterator[tuple[int, int, bool]]:
        """(offset, bytes, from the file or zeros) as the file grows, until `size` bytes; SizeMissed when it
        outgrows them, or ends so much shorter that sending the zeros would cost more than sending it again."""
        offset = 0
        while True:
            done = self.complete()  # read before the size: a file complete now has its final size below
            end = os.fstat(descriptor).st_size
            if end > self.size:
                raise SizeMissed(f"{self.path.name} outgrew the {self.size} bytes declared for it")
            if offset < end:
                count = min(_SLICE, end - offset)
                yield offset, count, True
                offset += count
                continue
            if done:
                break
            time.sleep(_POLL_SECONDS)
        if self.size - end > end:
            raise SizeMissed(f"{self.path.name} ended at {end} bytes, far short of the {self.size} declared")
        self.taken = end
        if self.size > end:
            yield end, self.size - end, False


def _opened(path: Path) -> io.FileIO:
    """The file opened for reading, never through a link."""
    return io.FileIO(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")


@dataclass
class SentEarly:
    """The page images of one container sent before its restore: the folder in its root, and the bytes taken
    from each image (its size in the store once the dump has ended)."""

    folder: str
    taken: dict[str, int] = field(default_factory=dict)

    def matches(self, images: list[Path]) -> bool:
        return {image.name: image.stat().st_size for image in images} == self.taken and bool(images)


Upload = Callable[[Path, "GrowingFile | None"], None]


def send_while_dumped(folder: Path, dump: DumpProgress, estimate: int | None, upload: Upload) -> dict[str, int] | None:
    """Send each page image CRIU writes into `folder` through `upload(image, growing)` (growing: None for a
    complete image, sent with its size), as early as the rules of the module allow. Returns the bytes taken
    from each image, or None when the dump failed."""
    taken: dict[str, int] = {}
    guessing = estimate is not None
    while True:
        ended = dump.ended.is_set()  # read before the listing: once ended, the listing is final
        images = ordered_page_images(folder)
        for position, image in enumerate(images):
            if image.name in taken:
                continue
            if dump.ended.is_set() and not dump.ok:
                return None
            newest = position == len(images) - 1
            if ended or not newest:
                upload(image, None)
                taken[image.name] = image.stat().st_size
            elif guessing and estimate is not None:
                growing = GrowingFile(image, declared_size(estimate, sum(taken.values())),
                                      _completion(folder, image, dump))
                try:
                    upload(image, growing)
                    taken[image.name] = growing.taken
                except SizeMissed:
                    guessing = False  # sent again, exactly, once complete
        if ended:
            break
        time.sleep(_POLL_SECONDS * 4)
    return taken if dump.ok else None


def _completion(folder: Path, image: Path, dump: DumpProgress) -> Callable[[], bool]:
    """Whether `image` is complete: the dump has ended, or CRIU has started an image after it."""
    return lambda: dump.ended.is_set() or ordered_page_images(folder)[-1] != image

"""Page images sent while CRIU writes them (engine/pages_stream.py): what goes out, when, and the fallbacks."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from compose_ckpt.engine import pages_in_root, pages_placement, pages_stream
from compose_ckpt.engine.pages_stream import GrowingFile, SizeMissed, declared_size, send_while_dumped
from compose_ckpt.engine.types import DumpProgress

MIB = 1024**2


class Writer:
    """Appends to page images in a folder from a thread, as CRIU does: one image after the other."""

    def __init__(self, folder: Path, sizes: list[int], *, ok: bool = True) -> None:
        self.folder, self.sizes, self.ok = folder, sizes, ok
        self.dump = DumpProgress()
        self.contents: dict[str, bytes] = {}
        self.thread = threading.Thread(target=self._write)

    def start(self) -> Writer:
        self.thread.start()
        return self

    def _write(self) -> None:
        for number, size in enumerate(self.sizes, start=1):
            name = f"pages-{number}.img"
            data = bytes([number]) * size
            with open(self.folder / name, "wb") as image:
                for start in range(0, size, 256 * 1024):
                    image.write(data[start:start + 256 * 1024])
                    image.flush()
                    time.sleep(0.001)
            self.contents[name] = data
        (self.folder / "pagemap-1.img").write_bytes(b"not pages")
        self.dump.end(self.ok)


def received(growing: GrowingFile | None, image: Path) -> bytes:
    """What an upload of `image` would put on the target: the growing file's body as sent, or the whole file."""
    if growing is None:
        return image.read_bytes()
    return b"".join(growing.chunks())


def test_a_single_growing_image_goes_out_while_written_and_ends_in_zeros(tmp_path: Path) -> None:
    writer = Writer(tmp_path, [24 * MIB])
    uploads: list[tuple[str, bool, bytes]] = []
    writer.start()
    while not (tmp_path / "pages-1.img").exists():
        time.sleep(0.001)
    taken = send_while_dumped(tmp_path, writer.dump, 24 * MIB,
                              lambda image, growing: uploads.append((image.name, growing is not None,
                                                                     received(growing, image))))
    assert taken == {"pages-1.img": 24 * MIB}
    [(name, growing, body)] = uploads
    assert (name, growing) == ("pages-1.img", True)
    assert len(body) == declared_size(24 * MIB, 0)
    assert body[:24 * MIB] == writer.contents["pages-1.img"] and not any(body[24 * MIB:])


def test_complete_images_go_with_their_size_and_a_missed_guess_is_sent_again_exactly(tmp_path: Path) -> None:
    # The estimate covers all three images: the first is far shorter than declared, so its guess is dropped
    # and every image goes once complete.
    writer = Writer(tmp_path, [1 * MIB, 2 * MIB, 3 * MIB])
    uploads: list[tuple[str, bool, int]] = []

    def upload(image: Path, growing: GrowingFile | None) -> None:
        body = received(growing, image)
        uploads.append((image.name, growing is not None, len(body)))

    writer.start()
    taken = send_while_dumped(tmp_path, writer.dump, 40 * MIB, upload)
    assert taken == {"pages-1.img": 1 * MIB, "pages-2.img": 2 * MIB, "pages-3.img": 3 * MIB}
    exact = [(name, size) for name, growing, size in uploads if not growing]
    assert exact == [("pages-1.img", 1 * MIB), ("pages-2.img", 2 * MIB), ("pages-3.img", 3 * MIB)]


def test_an_image_that_outgrows_its_declared_size_is_dropped_then_sent_exactly(tmp_path: Path) -> None:
    writer = Writer(tmp_path, [20 * MIB])
    uploads: list[tuple[bool, int]] = []

    def upload(image: Path, growing: GrowingFile | None) -> None:
        uploads.append((growing is not None, len(received(growing, image))))

    writer.start()
    while not (tmp_path / "pages-1.img").exists():
        time.sleep(0.001)
    taken = send_while_dumped(tmp_path, writer.dump, 1 * MIB, upload)  # the estimate was far too low
    assert taken == {"pages-1.img": 20 * MIB}
    assert uploads == [(False, 20 * MIB)]  # the dropped upload raised before it was counted


def test_a_failed_dump_sends_nothing_more_and_says_so(tmp_path: Path) -> None:
    writer = Writer(tmp_path, [1 * MIB], ok=False).start()
    assert send_while_dumped(tmp_path, writer.dump, None, lambda image, growing: None) is None


def test_without_an_estimate_only_complete_images_go(tmp_path: Path) -> None:
    writer = Writer(tmp_path, [2 * MIB, 1 * MIB]).start()
    growing_seen: list[bool] = []
    taken = send_while_dumped(tmp_path, writer.dump, None,
                              lambda image, growing: growing_seen.append(growing is not None))
    assert taken == {"pages-1.img": 2 * MIB, "pages-2.img": 1 * MIB} and growing_seen == [False, False]


def test_a_growing_file_sent_on_a_socket_is_the_file_then_zeros(tmp_path: Path) -> None:
    image = tmp_path / "pages-1.img"
    image.write_bytes(b"x" * 5000)
    growing = GrowingFile(image, 9000, lambda: True)
    left, right = socket.socketpair()
    steps: list[int] = []
    with left, right:
        sender = threading.Thread(target=growing.send, args=(left, steps.append))
        sender.start()
        body = b""
        while len(body) < 9000:
            body += right.recv(65536)
        sender.join()
    assert body == b"x" * 5000 + bytes(4000) and growing.taken == 5000 and steps[-1] == 9000


def test_zeros_that_would_cost_more_than_the_file_are_not_sent(tmp_path: Path) -> None:
    image = tmp_path / "pages-1.img"
    image.write_bytes(b"x" * 100)
    with pytest.raises(SizeMissed):
        list(GrowingFile(image, 10_000, lambda: True).chunks())


def test_images_are_taken_in_criu_order_links_left_out(tmp_path: Path) -> None:
    for name in ("pages-10.img", "pages-2.img", "pagemap-1.img"):
        (tmp_path / name).write_bytes(b"p")
    (tmp_path / "pages-3.img").symlink_to(tmp_path / "pages-2.img")
    assert [p.name for p in pages_stream.ordered_page_images(tmp_path)] == ["pages-2.img", "pages-10.img"]


def test_on_the_daemons_host_the_images_are_copied_into_the_root_as_they_grow(tmp_path: Path) -> None:
    dumped, layer = tmp_path / "checkpoint", tmp_path / "layer"
    dumped.mkdir()
    (layer / "diff").mkdir(parents=True)
    root = pages_in_root.ContainerRoot(layer / "merged", layer / "diff")  # not mounted: the upper folder
    writer = Writer(dumped, [3 * MIB, 5 * MIB]).start()
    reports: list[int] = []
    placed = pages_in_root.place_while_written(root, dumped, writer.dump, lambda done, total: reports.append(done))
    assert placed is not None and placed.size == 8 * MIB and placed.names == ["pages-1.img", "pages-2.img"]
    folder = layer / "diff" / placed.folder.lstrip("/")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == writer.contents
    assert oct(folder.stat().st_mode & 0o777) == "0o700" and reports[-1] == 8 * MIB
    assert pages_placement.matches(placed, dumped)


def test_a_failed_dump_leaves_nothing_in_the_root(tmp_path: Path) -> None:
    dumped, layer = tmp_path / "checkpoint", tmp_path / "layer"
    dumped.mkdir()
    (layer / "diff").mkdir(parents=True)
    writer = Writer(dumped, [1 * MIB], ok=False).start()
    root = pages_in_root.ContainerRoot(layer / "merged", layer / "diff")
    assert pages_in_root.place_while_written(root, dumped, writer.dump, lambda done, total: None) is None
    assert list((layer / "diff").iterdir()) == []

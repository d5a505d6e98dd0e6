"""CRIU's mount images, and which host mounts can give a restored mount its peer group back.

criu_images/docker26-volume.img is CRIU 4.2's own mountpoints image of a busybox container with a named
volume, dumped by Docker 26.1.5 on a host whose Docker data root is a shared mount: its root file system
(master 11) and the volume (master 1) were slaves of the host's mounts."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from compose_ckpt.engine.criu_images import MountImageError, external_slaves, read_mounts, without_masters
from compose_ckpt.engine.procfs import HostMount, can_join_peer_group, mount_holding, mount_table, parse_mountinfo

DUMPED = (Path(__file__).parent / "criu_images" / "docker26-volume.img").read_bytes()
MAGIC = struct.pack("<II", 0x54564319, 0x55563928)


def record(mnt_id: int, mountpoint: str, shared: int = 0, master: int = 0) -> bytes:
    """A minimal mnt_entry (fields 2, 7, 10, 11) framed as CRIU frames it."""
    body = bytes([0x10, mnt_id]) + bytes([0x3A, len(mountpoint)]) + mountpoint.encode()
    body += bytes([0x50, shared]) if shared else b""
    body += bytes([0x58, master]) if master else b""
    return struct.pack("<I", len(body)) + body


def test_the_dumped_image_names_root_and_volume_as_slaves_of_the_host() -> None:
    mounts = read_mounts(DUMPED)
    assert len(mounts) == 29
    by_point = {m.mountpoint: m for m in mounts}
    assert (by_point["/"].master_id, by_point["/data"].master_id) == (11, 1)
    assert all(m.master_id == 0 for m in mounts if m.mountpoint not in ("/", "/data"))
    assert [m.mountpoint for m in external_slaves(mounts)] == ["/data", "/"]


def test_dropping_a_master_changes_that_field_only() -> None:
    root = next(m for m in read_mounts(DUMPED) if m.mountpoint == "/")
    fitted = without_masters(DUMPED, {root.mnt_id})
    assert len(fitted) == len(DUMPED) - 2  # the key byte and the one-byte value 11
    before, after = read_mounts(DUMPED), read_mounts(fitted)
    assert [m for m in after if m.mountpoint != "/"] == [m for m in before if m.mountpoint != "/"]
    assert next(m for m in after if m.mountpoint == "/").master_id == 0
    assert [m.mountpoint for m in external_slaves(after)] == ["/data"]
    assert without_masters(fitted, {root.mnt_id}) == fitted
    assert without_masters(DUMPED, set()) == DUMPED  # every other byte as CRIU wrote it


def test_a_slave_of_a_peer_group_inside_the_container_is_not_external() -> None:
    image = MAGIC + record(1, "/", master=7) + record(2, "/mnt", shared=5) + record(3, "/mnt2", master=5)
    assert [m.mountpoint for m in external_slaves(read_mounts(image))] == ["/"]


@pytest.mark.parametrize("image", [
    b"", DUMPED[:7], b"\0" * 8 + DUMPED[8:], DUMPED[:-1], MAGIC + b"\x05\0\0", MAGIC + struct.pack("<I", 2) + b"\x10\x80",
    MAGIC + struct.pack("<I", 2) + b"\x0b\x00",  # wire type 3 (a group), which mnt_entry never holds
    MAGIC + struct.pack("<I", 3) + b"\x3a\x02/",  # a string longer than its record
])
def test_anything_else_is_refused(image: bytes) -> None:
    with pytest.raises(MountImageError):
        read_mounts(image)


MOUNTINFO = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
45 27 254:0 /var/lib/docker /var/lib/docker rw,relatime shared:1 - ext4 /dev/vda rw
50 27 254:0 /srv/slave /srv/slave rw,relatime master:3 - ext4 /dev/vda rw
51 27 254:0 /srv/with\\040space /srv/with\\040space rw shared:4 master:3 - ext4 /dev/vda rw
52 27 254:0 /srv/slave /srv/slave rw,relatime - ext4 /dev/vda rw
"""


def test_the_mount_table_reads_propagation_and_escaped_names() -> None:
    assert parse_mountinfo(MOUNTINFO + "garbage\n") == [
        HostMount("/", False, False), HostMount("/var/lib/docker", True, False), HostMount("/srv/slave", False, True),
        HostMount("/srv/with space", True, True), HostMount("/srv/slave", False, False)]
    assert mount_table(-1) == []


TABLE = [HostMount("/", False, False), HostMount("/var/lib/docker", True, False),
         HostMount("/srv/slave", False, True)]


@pytest.mark.parametrize("path, holder", [
    ("/var/lib/docker/overlay2/x/merged", "/var/lib/docker"),
    ("/var/lib/docker", "/var/lib/docker"),
    ("/var/lib/docker28/overlay2/x/merged", "/"),  # not on /var/lib/docker, whatever the string says
    ("/srv/slave/volume", "/srv/slave"),
])
def test_a_path_lies_on_the_deepest_mount_of_its_folders(path: str, holder: str) -> None:
    found = mount_holding(TABLE, path)
    assert found is not None and found.mountpoint == holder


def test_the_last_mount_on_a_point_covers_the_earlier_one() -> None:
    covered = [*TABLE, HostMount("/srv/slave", False, False)]
    assert mount_holding(covered, "/srv/slave/x") == HostMount("/srv/slave", False, False)
    assert mount_holding([], "/x") is None


@pytest.mark.parametrize("path, mounted_later, joinable", [
    ("/var/lib/docker/overlay2/x/merged", True, True),  # a new mount beneath a shared one is shared
    ("/var/lib/docker28/overlay2/x/merged", True, False),  # beneath a private one: private
    ("/srv/slave/x/merged", True, False),  # beneath a slave: private too
    ("/var/lib/docker/volumes/v/_data", False, True),  # an existing folder on a shared mount
    ("/srv/slave/v", False, True),  # on a slave mount: the kernel takes a slave as the source
    ("/tmp/x", False, False),
])
def test_which_sources_can_give_a_restored_mount_its_peer_group(path: str, mounted_later: bool,
                                                                joinable: bool) -> None:
    assert can_join_peer_group(TABLE, path, mounted_later) is joinable
    assert can_join_peer_group([], path, mounted_later) is None

"""The network holder image: one static executable that does nothing, forever, built here.

No registry and no toolchain are needed on the user's host: the executable is a
hand-assembled ELF file of one page (a `pause()` loop on x86-64, `ppoll()` with
no descriptors on arm64), written into a one-file tar and imported. Holders are
created with StopSignal SIGKILL: as a namespace's init without signal handlers,
the process ignores SIGTERM, and has nothing to shut down anyway.
"""

from __future__ import annotations

import io
import struct
import tarfile

from compose_ckpt.errors import EngineError

_LOAD_ADDRESS = 0x400000
_HEADERS = 64 + 56  # ELF header + one program header

# machine number (e_machine) and the loop's code, per `docker info` architecture.
_CODE = {
    # mov eax, 34 (pause); syscall; jmp back to the mov
    "x86_64": (62, bytes.fromhex("b822000000" "0f05" "ebf7")),
    # mov x0..x3, #0; mov x8, #73 (ppoll); svc #0; b back to the first mov
    "aarch64": (183, struct.pack("<7I", 0xD2800000, 0xD2800001, 0xD2800002, 0xD2800003,
                                 0xD2800928, 0xD4000001, 0x17FFFFFA)),
}


def pause_executable(architecture: str) -> bytes:
    """A static ELF executable for `architecture` that sleeps until it is killed."""
    try:
        machine, code = _CODE[architecture]
    except KeyError:
        raise EngineError(f"no network holder executable for the {architecture} architecture",
                          hint=f"Supported: {', '.join(_CODE)}.") from None
    size = _HEADERS + len(code)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, version 1, System V
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, _LOAD_ADDRESS + _HEADERS, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    program = struct.pack("<IIQQQQQQ", 1, 5, 0, _LOAD_ADDRESS, _LOAD_ADDRESS, size, size, 0x1000)  # PT_LOAD, R+X
    return header + program + code


def holder_rootfs(architecture: str) -> bytes:
    """A tar holding only /pause, ready for `docker import`."""
    executable = pause_executable(architecture)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        member = tarfile.TarInfo("pause")
        member.size, member.mode = len(executable), 0o755
        archive.addfile(member, io.BytesIO(executable))
    return buffer.getvalue()

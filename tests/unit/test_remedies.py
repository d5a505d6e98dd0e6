"""Remedies are read from the daemon's error and CRIU's log lines; the most specific cause wins."""

from __future__ import annotations

import pytest

from compose_ckpt.domain.stack.remedies import (
    CRIU_MISSING,
    CRIU_TOO_OLD,
    TCP_REMEDY,
    UNIX_SOCKET_REMEDY,
    remedies_for,
    remedy_for,
)
from compose_ckpt.engine.criu_log import EXTERNAL_UNIX_SOCKET, criu_log_key_lines
from compose_ckpt.errors import EngineError

NOISE = "(00.03) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted"


@pytest.mark.parametrize("text, expected", [
    ('exec: "criu": executable file not found in $PATH', CRIU_MISSING),
    ("Error (criu/vdso.c:88): vdso: Unexpected rt vDSO area bounds", CRIU_TOO_OLD),
    (f"{NOISE} Error (criu/files-reg.c:2353): Can't open file data/a.aof on restore: No such file or directory",
     "(/data/a.aof)"),
    (f"{NOISE} Error (criu/files-reg.c:2160): File var/log/x.log has bad size 10 (expect 4)", "changed size"),
    (f"{NOISE} Error (criu/sk-inet.c:830): Can't bind inet socket (id 9): Address already in use", "port"),
    ("Error (criu/mount.c:1): mnt: Can't mount at ./srv: No such file or directory", "mount"),
    # CRIU 4.2's lines, restoring on engine-28 a checkpoint Docker 26 took: the cgroupd line is noise
    ("1: Error (criu/mount-v2.c:897): mnt-v2: Failed to copy sharing from -1:/var/lib/docker28/volumes/v/_data to 62: "
     "Invalid argument Error (criu/cgroup.c:2055): cg: cgroupd: recv req error: No such file or directory",
     "mount propagation"),
    ("Error (criu/sk-inet.c:1): inet: Connected TCP socket, consider using --tcp-established", "tcp-established"),
    ("Error (criu/cr-dump.c:1): Can't get rlimit 0: Operation not permitted", "CAP_SYS_RESOURCE"),
])
def test_the_cause_names_its_remedy(text: str, expected: str) -> None:
    remedy = remedy_for(text)
    assert remedy is not None and expected in remedy


def test_sandbox_noise_alone_is_no_cause() -> None:
    assert remedy_for(NOISE) is None


def test_captured_log_text_is_used_when_the_file_is_gone() -> None:
    message = "criu failed: type NOTIFY errno 0\nlog file: /run/x/moby/abc/work/restore.log: unknown"
    lines = criu_log_key_lines(message, "(0.1) info\n(0.2) Error (criu/a.c:1): gone\n")
    assert lines[0].startswith("CRIU log: /run/x/moby/abc/work/restore.log (read while the restore ran")
    assert lines[1:] == ["(0.2) Error (criu/a.c:1): gone"]
    assert "not readable" in criu_log_key_lines(message)[0]


def test_an_external_unix_socket_is_named_by_path_and_inodes() -> None:
    """CRIU 4.2's lines around `External socket is used` (a `docker exec` session connected to the listener)."""
    log = "\n".join([
        "(00.25) unix: \tDumping: ino 741254 peer_ino 743727 family    1 type    1 state  1 name /sock/app.sock",
        "(00.62) unix: \tRunaway socket: ino 743727 peer_ino 741254 family    1 type    1 state  1 name null",
        "(00.62) Error (criu/sk-unix.c:874): unix: External socket is used. Consider using --ext-unix-sk option.",
        "(00.70) Error (criu/sk-unix.c:351): unix: Unix socket 797021 not found",
    ])
    lines = criu_log_key_lines("log /run/x/criu-dump.log", log)
    assert lines[-2:] == [
        "unix socket /sock/app.sock (inode 741254) is connected to inode 743727, outside the dumped process tree",
        "unix socket (inode 797021) is connected to a socket in another network namespace (another container's, "
        "or the host's)"]
    assert EXTERNAL_UNIX_SOCKET.findall("\n".join(lines)) == [("/sock/app.sock", "741254", "743727"),
                                                             ("", "797021", "")]
    assert remedy_for(log) == UNIX_SOCKET_REMEDY


def test_two_causes_failing_together_get_both_remedies() -> None:
    failures = {
        "p-client-1": EngineError("checkpoint failed", details=["Error (criu/sk-unix.c:874): unix: External socket is used."]),
        "p-talker-1": EngineError("checkpoint failed", details=["Error (criu/sk-inet.c:200): Connected TCP socket"]),
        "p-other-1": EngineError("checkpoint failed", details=["Error (criu/sk-inet.c:200): Connected TCP socket"]),
    }
    assert remedies_for(failures) == f"{UNIX_SOCKET_REMEDY} Also: {TCP_REMEDY}"

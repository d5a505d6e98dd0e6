"""The CRIU restore log catcher: it holds each restore's log open from the moment it appears, for every
restore under way at once, with one watcher thread. Whether a log is held is read from /proc (the kernel),
not from the catcher."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

from compose_ckpt.engine.criu_log import RestoreLogCatcher
from tests.polling import wait_for

WAIT_SECONDS = 30.0  # generous: a bound for a loaded machine, not a speed check


def held_open(path: Path) -> bool:
    """Whether this process holds `path` open (a deleted file reads `path (deleted)`)."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


def wait_until(condition: Callable[[], bool]) -> None:
    wait_for("the condition", condition, timeout=WAIT_SECONDS, interval=0.01)


def test_each_of_several_restores_keeps_its_log_after_it_is_deleted(tmp_path: Path) -> None:
    logs = [tmp_path / f"task{i}" / "restore.log" for i in range(3)]
    catchers = [RestoreLogCatcher([tmp_path / "elsewhere" / "restore.log", log]) for log in logs]
    for catcher in catchers:
        catcher.__enter__()
    try:
        for i, log in enumerate(logs):
            log.parent.mkdir()
            log.write_text(f"(0.1) Error (criu/files.c:{i}): restore {i} failed\n")
        for log in logs:
            wait_until(partial(held_open, log))
            log.unlink()  # as containerd does once the restore has failed
        assert [thread.name for thread in threading.enumerate()].count("criu-restore-logs") == 1  # one for all
        texts = [catcher.text() for catcher in catchers]
    finally:
        for catcher in catchers:
            catcher.__exit__(None, None, None)
    assert texts == [f"(0.1) Error (criu/files.c:{i}): restore {i} failed\n" for i in range(3)]


def test_a_retried_restore_keeps_the_newest_log(tmp_path: Path) -> None:
    log = tmp_path / "restore.log"
    with RestoreLogCatcher([log]) as catcher:
        log.write_text("first attempt\n")
        wait_until(lambda: held_open(log))
        log.unlink()
        log.write_text("second attempt\n")
        wait_until(lambda: held_open(log))  # the new file, not the deleted one
        assert catcher.text() == "second attempt\n"


def test_no_log_and_no_watcher_left_behind(tmp_path: Path) -> None:
    with RestoreLogCatcher([tmp_path / "never" / "restore.log"]) as catcher:
        assert catcher.text() is None
    wait_until(lambda: not any(thread.name == "criu-restore-logs" for thread in threading.enumerate()))

"""A command run in a real pseudo-terminal, its output read through a terminal emulator (pyte) into a screen:
what a user would see, after every cursor move and erased line, not the bytes written."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pyte


class Terminal:
    """`argv` on a terminal of `columns` x `rows` (stdout and stderr; stdin stays a pipe, for the test to write)."""

    def __init__(self, argv: list[str], *, cwd: Path | None = None, columns: int = 100, rows: int = 30,
                 env: dict[str, str] | None = None) -> None:
        self.screen = pyte.Screen(columns, rows)
        self._stream = pyte.ByteStream(self.screen)
        self.screens: list[list[str]] = []  # the screen after each read, for what was shown along the way
        self._written = bytearray()
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        environment = {key: value for key, value in (env or os.environ).items() if key not in ("COLUMNS", "LINES")}
        environment.update(TERM="xterm-256color")
        self.process = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE, stdout=slave, stderr=slave,
                                        env=environment, start_new_session=True)
        os.close(slave)
        self._master = master

    def lines(self) -> list[str]:
        """The screen's lines down to the last one not blank, right-trimmed."""
        shown = [line.rstrip() for line in self.screen.display]
        while shown and not shown[-1]:
            shown.pop()
        return shown

    def written_lines(self) -> list[str]:
        """The lines as the command wrote them, its escape sequences left out: longer than the terminal's
        width, a line is one the terminal wrapped, not the command."""
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", self._written.decode(errors="replace"))
        return text.replace("\r\n", "\n").split("\n")

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode())
        self.process.stdin.flush()

    def wait_for(self, condition: Callable[[list[str]], bool], timeout: float = 60) -> list[str]:
        """Read output until the screen meets `condition`; fail after `timeout` seconds, showing the screen."""
        deadline = time.monotonic() + timeout
        while not condition(self.lines()):
            if time.monotonic() > deadline or not self._read(deadline - time.monotonic()):
                raise AssertionError("the screen never showed what was expected:\n" + "\n".join(self.lines()))
        return self.lines()

    def finish(self, timeout: float = 300) -> int:
        """Read until the command has exited and said all; return its exit status."""
        deadline = time.monotonic() + timeout
        while self._read(deadline - time.monotonic()):
            pass
        try:
            return self.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            os.close(self._master)

    def _read(self, timeout: float) -> bool:
        """Feed what the command wrote within `timeout` to the screen; False at the end of its output."""
        if timeout <= 0:
            return False
        ready, _, _ = select.select([self._master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self._master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            return False
        if not data:
            return False
        self._stream.feed(data)
        self._written += data
        self.screens.append(self.lines())
        return True

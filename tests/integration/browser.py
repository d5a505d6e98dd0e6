"""Pages as a real browser renders them: Debian's chromium, headless (scripts/engine installs it)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path


def render(url: str, *, network_of_pid: int | None = None, screenshot: Path | None = None,
           size: tuple[int, int] = (1280, 560)) -> str:
    """The page's DOM once chromium has loaded and laid it out; with `network_of_pid`, browsed from inside that
    process's network namespace (a container with no published port); `screenshot`: also save a PNG of it."""
    browser = shutil.which("chromium")
    assert browser, "chromium is missing: scripts/engine (make engine) installs it"
    with tempfile.TemporaryDirectory(prefix="ckpt-chromium-") as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                   "--hide-scrollbars", f"--window-size={size[0]},{size[1]}"]
        command += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
        if network_of_pid is not None:
            command = ["nsenter", f"--net=/proc/{network_of_pid}/ns/net", *command]
        done = subprocess.run([*command, url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"chromium failed on {url}:\n{done.stderr[-2000:]}"
    return done.stdout

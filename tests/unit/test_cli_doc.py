"""docs/cli.md's command reference is the app's own `--help`: a flag added without `make cli-doc` fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_cli_reference_agrees_with_help() -> None:
    done = subprocess.run([sys.executable, "scripts/cli_doc.py", "--check"], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


def test_every_command_has_a_section() -> None:
    text = (REPO / "docs" / "cli.md").read_text()
    for command in ("snapshot", "restore", "ls", "inspect", "export", "import", "migrate", "push", "pull",
                    "host boot", "host install"):
        assert f"### `compose-ckpt {command}`" in text, command

"""The names compose-ckpt turns into folder and checkpoint names: checked before anything uses them.

A module of its own, importing nothing heavy, so that the CLI can refuse a bad
name while it parses the options, before the domain and the engine client load.
"""

from __future__ import annotations

import re

from compose_ckpt.errors import UsageError

# Docker's own rule for checkpoint names, and safe as a folder name.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def validate_name(name: str, what: str = "snapshot name") -> str:
    if not NAME_PATTERN.match(name):
        raise UsageError(
            f"invalid {what} {name!r}",
            hint="Use 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit.",
        )
    return name

"""Version strings as Docker and CRIU print them, made comparable."""

from __future__ import annotations


def version_tuple(version: str | None) -> tuple[int, ...]:
    """`26.1.5+dfsg1` -> (26, 1, 5); a part without digits counts 0, a missing version is (0,)."""
    parts = []
    for part in (version or "0").split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)

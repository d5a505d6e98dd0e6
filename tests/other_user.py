"""Acting as another local user, for the tests that treat every other user as hostile (needs root and setpriv)."""

from __future__ import annotations

import subprocess


def as_nobody(script: str) -> None:
    """Run a shell script as the unprivileged `nobody`."""
    subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", "sh", "-ec", script],
                   check=True)


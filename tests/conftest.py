"""Shared test settings: every test gets its own snapshot store."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from compose_ckpt.const import ENV_HOME


@pytest.fixture(autouse=True)
def isolated_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point COMPOSE_CKPT_HOME at a fresh folder so no test sees another's snapshots."""
    home = tmp_path / "ckpt-home"
    monkeypatch.setenv(ENV_HOME, str(home))
    return home


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder everybody can reach (mode 0755, owned by root), like /var/lib or /srv: for the tests that treat
    every other local user as hostile (tests/other_user.py)."""
    folder = Path(tempfile.mkdtemp(prefix="ckpt-hostile-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


# Property tests (tests/unit/test_fuzz_*.py): the same examples on every run, a bounded number of them, and
# no per-example deadline (a loaded CI machine is slow, not wrong). HYPOTHESIS_PROFILE=dev explores more.
import os  # noqa: E402

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, max_examples=100, deadline=None, database=None,
                          print_blob=True)
settings.register_profile("dev", max_examples=1000, deadline=None, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

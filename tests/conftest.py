"""Shared test settings: every test gets its own snapshot store."""

from __future__ import annotations

from pathlib import Path

import pytest

from compose_ckpt.const import ENV_HOME


@pytest.fixture(autouse=True)
def isolated_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point COMPOSE_CKPT_HOME at a fresh folder so no test sees another's snapshots."""
    home = tmp_path / "ckpt-home"
    monkeypatch.setenv(ENV_HOME, str(home))
    return home

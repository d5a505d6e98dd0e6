"""What a live snapshot tells about the services Docker shows unhealthy after their pause."""

from __future__ import annotations

from typing import Any

from compose_ckpt.domain.stack.snapshot import DEFAULT_PROBE_INTERVAL_SECONDS, unhealthy_after_resume
from compose_ckpt.domain.store.manifest import ContainerRecord, Manifest, SnapshotStatus, now_iso


def snapshot(stopped: bool, healthchecks: dict[str, dict[str, Any] | None]) -> Manifest:
    records = [ContainerRecord(service=name, container_id=name * 64, container_name=f"p-{name}-1", number=1,
                               image="img", image_id="sha256:" + "1" * 64, checkpoint="ckpt-s",
                               inspect={"Config": {"Healthcheck": check} if check else {}})
               for name, check in healthchecks.items()]
    return Manifest(name="s", project="p", created=now_iso(), status=SnapshotStatus.COMPLETE, stopped=stopped,
                    compose_files=[], compose_hash="", services=list(healthchecks), dependencies={}, containers=records)


def test_each_healthchecked_container_of_a_live_snapshot_with_its_probe_interval() -> None:
    checks: dict[str, dict[str, Any] | None] = {
        "a": {"Test": ["CMD", "true"], "Interval": 15_000_000_000},
        "b": {"Test": ["CMD-SHELL", "true"]},  # Docker's default interval
        "c": {"Test": ["NONE"]},  # the image's healthcheck switched off
        "d": None,
    }
    assert unhealthy_after_resume(snapshot(False, checks)) == [("p-a-1", 15.0), ("p-b-1", DEFAULT_PROBE_INTERVAL_SECONDS)]
    assert unhealthy_after_resume(snapshot(True, checks)) == []  # stopped at the checkpoint: nothing resumed

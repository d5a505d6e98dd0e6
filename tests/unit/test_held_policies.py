"""Restart policies held back by `snapshot --stop` are kept per container in the store until they are back on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from compose_ckpt.domain.stack.held_policies import FILE, HeldPolicy, held_policies, hold, put_back_on_running, release
from compose_ckpt.domain.store.manifest import ManifestError
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.engine import ContainerInfo, RestartPolicy
from tests.fakes import UntouchableEngine

ALWAYS = RestartPolicy("always")


class Engine(UntouchableEngine):
    """Containers by id with a status and a policy; records the policies set."""

    def __init__(self, containers: dict[str, tuple[str, str]]) -> None:
        super().__init__()
        self.containers = containers  # id -> (status, policy name)
        self.set: list[tuple[str, str]] = []

    def inspect(self, ref: str) -> ContainerInfo | None:
        if ref not in self.containers:
            return None
        status, policy = self.containers[ref]
        return ContainerInfo(id=ref, name=f"p-{ref}-1", image="img", image_id="sha256:" + "1" * 64, status=status,
                             pid=1, exit_code=0, labels={}, started_at="",
                             attrs={"HostConfig": {"RestartPolicy": {"Name": policy}}})

    def set_restart_policy(self, container_id: str, policy: RestartPolicy) -> None:
        self.set.append((container_id, policy.as_text()))


def test_a_policy_comes_back_on_a_container_found_running_and_stays_held_while_stopped(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    hold(store, "p", [HeldPolicy(cid, f"p-{cid}-1", ALWAYS, "s") for cid in ("up", "down", "gone", "changed")])
    engine = Engine({"up": ("running", "no"), "down": ("exited", "no"), "changed": ("running", "on-failure")})

    lines = put_back_on_running(engine, store, "p")

    assert engine.set == [("up", "always")]  # `changed` got a policy from someone since: theirs stays
    assert lines == ["p-up-1: restart policy always, held back by snapshot s, put back (it runs again, started "
                     "without `compose-ckpt restore`)"]
    assert list(held_policies(store, "p")) == ["down"]  # still stopped at its checkpoint: restore's job
    release(store, "p", ["down"])
    assert held_policies(store, "p") == {}


def test_a_damaged_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.write_project_file("p", FILE, b'{"x": {"container": "c", "policy": "sometimes", "snapshot": "s"}}')
    with pytest.raises(ManifestError, match="cannot be read") as refused:
        held_policies(store, "p")
    assert refused.value.hint is not None and "docker update --restart" in refused.value.hint

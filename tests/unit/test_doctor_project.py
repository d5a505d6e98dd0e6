"""What `doctor` checks of the compose project here (domain/host/doctor.py), on a fake stack: the restart
policies held back from its containers, and a folder without a project (or one that does not load) left out
of those checks rather than failing the report. The real engine's side: tests/integration/test_doctor.py."""

from __future__ import annotations

from pathlib import Path

from compose_ckpt.domain.host.doctor import Report, run_checks
from compose_ckpt.domain.ports import ComposePort, EnginePort
from compose_ckpt.domain.stack.held_policies import HeldPolicy, hold
from compose_ckpt.domain.stack.project import Project
from compose_ckpt.domain.store.store import SnapshotStore
from compose_ckpt.engine import RestartPolicy
from compose_ckpt.errors import ComposeFileError
from tests.fakes import FakeStack


class RemoteStack(FakeStack):
    """The fake stack on an engine doctor reaches over the network: its host is not checked from here."""

    @property
    def base_url(self) -> str:
        return "tcp://elsewhere:2376"


def no_compose() -> ComposePort:
    raise AssertionError("docker compose is run only for an adopted project whose files changed")


def checks(report: Report) -> dict[str, str]:
    return {check.name: check.detail for check in report.checks}


def test_the_policies_held_back_from_the_projects_containers_are_named(tmp_path: Path) -> None:
    stack = RemoteStack({"db": (), "web": ("db",)})
    web = stack.by_name("p-web-1")
    hold(SnapshotStore(tmp_path), "p", [HeldPolicy(web.id, web.name, RestartPolicy("always"), "s")])
    web.status = "exited"
    report = run_checks(lambda: stack, tmp_path, lambda engine: stack.project(), no_compose)
    assert "always of p-web-1 (snapshot s)" in checks(report)["restart policies"]
    assert report.can_checkpoint


def test_a_folder_without_a_project_is_left_out_of_the_project_checks(tmp_path: Path) -> None:
    stack = RemoteStack({"web": ()})
    web = stack.by_name("p-web-1")
    hold(SnapshotStore(tmp_path), "p", [HeldPolicy(web.id, web.name, RestartPolicy("always"), "s")])

    def no_project(engine: EnginePort) -> Project:
        raise ComposeFileError("no compose file here")

    report = run_checks(lambda: stack, tmp_path, no_project, no_compose)
    assert "restart policies" not in checks(report) and "adoption" not in checks(report)
    assert report.can_checkpoint

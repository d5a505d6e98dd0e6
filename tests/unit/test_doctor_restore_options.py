"""doctor's `restore options`: the CRIU options a service's label asks for reach its dumps only; its restores read
the file of the container's org.criu.config annotation, else /etc/criu/runc.conf (docs/checkpoint-paths.md)."""

from __future__ import annotations

from pathlib import Path

from compose_ckpt.const import LABEL_CRIU_OPTIONS
from compose_ckpt.domain.host import doctor
from compose_ckpt.domain.host.doctor import Check, Status
from compose_ckpt.engine import ContainerInfo
from tests.fakes import UntouchableEngine


class LocalFiles(UntouchableEngine):
    """An engine on this machine: its CRIU configuration files are these test files."""

    def criu_config_options(self, config: Path) -> set[str] | None:
        return {line.strip().removeprefix("--") for line in config.read_text().splitlines()} if config.exists() else set()


class Remote(UntouchableEngine):
    def criu_config_options(self, config: Path) -> set[str] | None:
        return None


def _restore_options(containers: list[tuple[str, ContainerInfo]], runc_conf: Path) -> Check | None:
    return doctor._restore_options(LocalFiles(), containers, runc_conf)


def container(name: str, options: str | None, annotation: str | None = None) -> tuple[str, ContainerInfo]:
    labels = {LABEL_CRIU_OPTIONS: options} if options is not None else {}
    annotations = {"org.criu.config": annotation} if annotation is not None else {}
    return name, ContainerInfo(id=name * 8, name=f"p-{name}-1", image="img", image_id="sha256:" + "1" * 64,
                               status="running", pid=42, exit_code=0, labels=labels, started_at="",
                               attrs={"HostConfig": {"Annotations": annotations}})


def test_no_label_no_check(tmp_path: Path) -> None:
    assert _restore_options([container("web", None), container("db", "")], tmp_path / "runc.conf") is None


def test_options_missing_from_runc_conf_are_named(tmp_path: Path) -> None:
    runc_conf = tmp_path / "runc.conf"
    runc_conf.write_text("# host-wide\ntcp-established\n")
    check = _restore_options([container("app", "tcp-established,file-locks"), container("kv", "tcp-established")],
                             runc_conf)
    assert check is not None and check.status is Status.WARN
    assert f"p-app-1 lacks file-locks (not in {runc_conf})" in check.detail and "p-kv-1" not in check.detail
    assert "host install --tcp-established" in check.remedy


def test_the_annotations_file_replaces_runc_conf(tmp_path: Path) -> None:
    runc_conf, own = tmp_path / "runc.conf", tmp_path / "app.conf"
    runc_conf.write_text("tcp-established\nfile-locks\n")
    own.write_text("--file-locks\n")
    check = _restore_options([container("app", "tcp-established,file-locks", str(own))], runc_conf)
    assert check is not None and check.status is Status.WARN
    assert check.detail.endswith(f"p-app-1 lacks tcp-established (not in {own})")
    own.write_text("tcp-established\nfile-locks\n")
    check = _restore_options([container("app", "tcp-established,file-locks", str(own))], runc_conf)
    assert check is not None and check.status is Status.OK and "p-app-1" in check.detail


def test_an_empty_annotation_names_no_file(tmp_path: Path) -> None:
    runc_conf = tmp_path / "runc.conf"
    runc_conf.write_text("tcp-established\n")
    check = _restore_options([container("app", "tcp-established", "")], runc_conf)
    assert check is not None and "its org.criu.config annotation is empty" in check.detail


def test_a_missing_file_gives_nothing(tmp_path: Path) -> None:
    check = _restore_options([container("app", "tcp-established", str(tmp_path / "gone.conf"))], tmp_path / "runc.conf")
    assert check is not None and check.status is Status.WARN and "gone.conf" in check.detail


def test_an_engine_elsewhere_gets_no_check(tmp_path: Path) -> None:
    assert doctor._restore_options(Remote(), [container("app", "tcp-established")], tmp_path / "runc.conf") is None

"""The pure parts of the direct dump path: CRIU options from a label, the dump rate,
and the runtime lookup refusing a process no runc shim serves (read from this machine's /proc)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from compose_ckpt.domain.store.manifest import ContainerRecord
from compose_ckpt.engine import CriuOptions
from compose_ckpt.engine.runtime import (
    DirectDumpUnavailable,
    Runtime,
    find_runtime,
    folder_bytes,
    runc_message,
    runtime_checkpoint,
)
from compose_ckpt.errors import EngineError


@pytest.mark.parametrize("words, flags", [
    ("", []),
    ("tcp-established", ["--tcp-established"]),
    ("file-locks, tcp-established", ["--tcp-established", "--file-locks"]),
    ("file-locks file-locks", ["--file-locks"]),
])
def test_criu_options_from_a_label(words: str, flags: list[str]) -> None:
    assert CriuOptions.from_words(words).runc_flags() == flags


@pytest.mark.parametrize("words", ["tcp-established,shell-job", "--tcp-established", "ext-unix-sk"])
def test_an_unknown_criu_option_is_refused_by_name(words: str) -> None:
    with pytest.raises(ValueError, match="unknown CRIU option"):
        CriuOptions.from_words(words)


def record(path: str, size: int, seconds: float) -> ContainerRecord:
    return ContainerRecord(service="s", container_id="a" * 64, container_name="p-s-1", number=1, image="i",
                           image_id="sha256:" + "b" * 64, checkpoint="ckpt-x", size=size, dump_seconds=seconds,
                           dump_path=path)


def test_the_dump_rate_is_known_only_for_dumps_written_straight_into_the_store() -> None:
    assert record("runtime", 1000, 2.0).dump_rate == 500.0
    assert record("engine-api", 1000, 2.0).dump_rate is None  # its time went to the daemon, its bytes copied after
    assert record("", 1000, 2.0).dump_rate is None  # an older snapshot


def test_a_process_no_runc_shim_serves_has_no_runtime_to_call() -> None:
    """This test's own process: its parent is pytest's launcher, not a containerd shim."""
    with pytest.raises(DirectDumpUnavailable, match="not served by a runc shim|does not run as root"):
        find_runtime("c" * 64, os.getpid())
    with pytest.raises(DirectDumpUnavailable):
        find_runtime("c" * 64, 0)


def test_folder_bytes_counts_the_files_in_the_folder_not_links(tmp_path: Path) -> None:
    (tmp_path / "pages-1.img").write_bytes(b"x" * 1000)
    (tmp_path / "core.img").write_bytes(b"y" * 10)
    (tmp_path / "link").symlink_to(tmp_path / "pages-1.img")
    assert folder_bytes(tmp_path) == 1010
    assert folder_bytes(tmp_path / "missing") == 0


@pytest.mark.parametrize("output, said", [
    ('time="2026-12-06T23:38:44Z" level=error msg="criu failed: type NOTIFY errno 0\\nlog file: /tmp/x/dump.log"\n',
     "criu failed: type NOTIFY errno 0"),
    ('time="2026-12-07T00:04:00Z" level=error msg="CRIU version check failed: exec: \\"criu\\": executable file not '
     'found in $PATH"\n', 'CRIU version check failed: exec: "criu": executable file not found in $PATH'),
    ("", "exit status 1"),
    ("container is not running\n", "container is not running"),
])
def test_runcs_last_word_is_told_without_its_log_decoration(output: str, said: str) -> None:
    assert runc_message(output, 1) == said


# A stand-in for runc: it writes a page and CRIU's log where runc would, and fails while seizing as often as
# its counter file says; a process in uninterruptible sleep cannot be forced on purpose on a real engine.
FAKE_RUNC = """#!/bin/sh
while [ $# -gt 1 ]; do
  case "$1" in --image-path) images=$2;; --work-path) work=$2;; esac
  shift
done
echo x > "$images/pages-1.img"
left=$(cat "$COUNTER"); echo $((left - 1)) > "$COUNTER"
if [ "$left" -gt 0 ]; then
  printf '%s\\n' "(10.03) Error (criu/cr-dump.c:1655): Timeout reached. Try to interrupt: 0" \\
    "(10.03) Error (compel/src/lib/infect.c:262): Unseizable non-zombie 13110 found, state D, err -1/4" \\
    > "$work/dump.log"
  echo 'level=error msg="criu failed: type NOTIFY errno 0"'; exit 1
fi
"""


@pytest.mark.parametrize("timeouts, succeeds", [(0, True), (1, True), (2, False)])
def test_a_dump_cut_at_criu_freeze_timeout_is_tried_once_more(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timeouts: int, succeeds: bool) -> None:
    runc = tmp_path / "runc"
    runc.write_text(FAKE_RUNC)
    runc.chmod(0o700)
    counter = tmp_path / "left"
    counter.write_text(str(timeouts))
    images = tmp_path / "images"
    images.mkdir()
    runtime = Runtime(str(runc), "/nowhere", {"COUNTER": str(counter), "PATH": os.defpath})

    def dump() -> int:
        return runtime_checkpoint(runtime, "c" * 64, images, leave_running=True, options=CriuOptions.from_words(""))

    if succeeds:
        assert dump() == 2
        assert [p.name for p in images.iterdir()] == ["pages-1.img"]
    else:
        with pytest.raises(EngineError) as raised:
            dump()
        assert "criu failed" in raised.value.message
        assert "uninterruptible sleep" in raised.value.details[-1]


def test_other_dump_failures_are_not_tried_again(tmp_path: Path) -> None:
    runc = tmp_path / "runc"
    runc.write_text("#!/bin/sh\necho once >> \"$COUNTER\"\necho 'level=error msg=\"criu failed\"'\nexit 1\n")
    runc.chmod(0o700)
    counter = tmp_path / "runs"
    images = tmp_path / "images"
    images.mkdir()
    with pytest.raises(EngineError):
        runtime_checkpoint(Runtime(str(runc), "/nowhere", {"COUNTER": str(counter)}), "c" * 64, images,
                           leave_running=False, options=CriuOptions.from_words(""))
    assert counter.read_text() == "once\n"

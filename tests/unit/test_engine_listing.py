"""Engine calls over a scripted transport: what the adapter asks the engine, and what it makes of the answers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pytest

from compose_ckpt.engine import Engine
from compose_ckpt.engine.api import ApiError, BodyPart, SentCallback, Unreachable
from compose_ckpt.errors import EngineError, EngineUnavailable


class ScriptedTransport:
    def __init__(self, gone: frozenset[str] = frozenset(), wait: BaseException | None = None) -> None:
        self.gone = gone
        self.wait = wait
        self.calls: list[tuple[str, str, Any]] = []

    def call(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None,
             timeout: float | None = None) -> Any:
        self.calls.append((method, path, params))
        if path == "/containers/json":
            return [{"Id": "a"}, {"Id": "b"}, {"Id": "c"}]
        if path.endswith("/wait") and self.wait is not None:
            raise self.wait
        if path.endswith("/json"):
            cid = path.split("/")[2]
            if cid in self.gone:
                raise ApiError(404, f"No such container: {cid}")
            return {"Id": cid, "Name": f"/{cid}", "State": {"Status": "exited"}, "Config": {"Labels": {}}}
        return None

    def stream(self, method: str, path: str, params: dict[str, Any] | None = None,
               chunks: Iterable[bytes] | None = None) -> Iterator[bytes]:
        raise AssertionError(f"no streamed request expected here: {method} {path}")

    def upload(self, path: str, params: dict[str, Any] | None, parts: Sequence[BodyPart],
               on_sent: SentCallback) -> None:
        raise AssertionError(f"no upload expected here: {path}")

    def close(self) -> None:
        pass


def engine(transport: ScriptedTransport) -> Engine:
    return Engine(transport, "unix:///fake.sock", sdk_client=lambda: pytest.fail("the docker SDK is not needed here"))


def test_a_container_removed_between_listing_and_inspection_is_left_out() -> None:
    transport = ScriptedTransport(gone=frozenset({"b"}))
    found = engine(transport).list_containers({"com.docker.compose.project": "p"})
    assert [c.id for c in found] == ["a", "c"]
    assert transport.calls[0] == ("GET", "/containers/json",
                                  {"all": True, "filters": {"label": ["com.docker.compose.project=p"]}})
    assert [c.id for c in engine(ScriptedTransport(gone=frozenset({"a"}))).containers_with_label("x")] == ["b", "c"]


def test_waiting_for_exit_asks_the_engine_once_instead_of_polling() -> None:
    transport = ScriptedTransport()
    assert engine(transport).wait_exited("a", timeout=5).exited
    assert [(method, path) for method, path, _ in transport.calls] == [
        ("POST", "/containers/a/wait"), ("GET", "/containers/a/json")]
    assert transport.calls[0][2] == {"condition": "not-running"}


def test_a_wait_past_its_timeout_says_so_and_a_lost_daemon_says_that() -> None:
    with pytest.raises(EngineError, match="did not exit within 5 s"):
        engine(ScriptedTransport(wait=Unreachable("timed out", timed_out=True))).wait_exited("a", timeout=5)
    with pytest.raises(EngineUnavailable, match="cannot reach the Docker daemon"):
        engine(ScriptedTransport(wait=Unreachable("refused"))).wait_exited("a", timeout=5)


class FreezeFailsOnce(ScriptedTransport):
    def call(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None,
             timeout: float | None = None) -> Any:
        if path.endswith("/pause") and not any(p.endswith("/pause") for _, p, _ in self.calls):
            self.calls.append((method, path, params))
            raise ApiError(500, "cannot pause container a: OCI runtime pause failed: unable to freeze: unknown")
        return super().call(method, path, params, body, timeout)


def test_a_freeze_runc_gave_up_on_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("compose_ckpt.engine.translation.RETRY_DELAYS", (0.0,))
    transport = FreezeFailsOnce()
    engine(transport).pause("a")
    assert [path for _, path, _ in transport.calls] == ["/containers/a/pause", "/containers/a/pause"]

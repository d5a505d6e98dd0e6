"""Removing a network or a volume: one already gone is fine, any other refusal is the engine's error."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pytest

from compose_ckpt.engine.api import ApiError, BodyPart, SentCallback
from compose_ckpt.engine.networks_volumes import NetworkVolumeCalls
from compose_ckpt.errors import EngineError, NotFoundError


class _Answering:
    """A transport whose DELETE calls fail with one status (none: they succeed), and that records them."""

    def __init__(self, status: int | None) -> None:
        self.status = status
        self.deleted: list[str] = []

    def call(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None,
             timeout: float | None = None) -> Any:
        if method == "GET":  # the volume's leftover helper containers: none
            return []
        assert method == "DELETE"
        self.deleted.append(path)
        if self.status is not None:
            raise ApiError(self.status, "refused")
        return None

    def stream(self, method: str, path: str, params: dict[str, Any] | None = None,
               chunks: Iterable[bytes] | None = None) -> Iterator[bytes]:
        raise AssertionError("not used")

    def upload(self, path: str, params: dict[str, Any] | None, parts: Sequence[BodyPart],
               on_sent: SentCallback) -> None:
        raise AssertionError("not used")

    def close(self) -> None:
        pass


def _calls(transport: _Answering) -> NetworkVolumeCalls:
    return NetworkVolumeCalls(transport, "unix:///fake.sock", lambda: None)


REMOVALS: list[tuple[str, Callable[[NetworkVolumeCalls, str], None], str]] = [
    ("network", NetworkVolumeCalls.remove_network, "/networks/shop_default"),
    ("volume", NetworkVolumeCalls.remove_volume, "/volumes/shop_default"),
]


@pytest.mark.parametrize(("kind", "remove", "path"), REMOVALS, ids=[r[0] for r in REMOVALS])
@pytest.mark.parametrize("status", [None, 404])
def test_a_removal_or_one_already_gone_is_fine(kind: str, remove: Callable[[NetworkVolumeCalls, str], None],
                                                path: str, status: int | None) -> None:
    transport = _Answering(status)
    remove(_calls(transport), "shop_default")
    assert transport.deleted == [path]


@pytest.mark.parametrize(("kind", "remove", "path"), REMOVALS, ids=[r[0] for r in REMOVALS])
def test_any_other_refusal_is_raised_with_what_was_removed(kind: str, remove: Callable[[NetworkVolumeCalls, str], None],
                                                            path: str) -> None:
    with pytest.raises(EngineError) as raised:
        remove(_calls(_Answering(409)), "shop_default")
    assert not isinstance(raised.value, NotFoundError)
    assert f"remove {kind} shop_default" in str(raised.value)

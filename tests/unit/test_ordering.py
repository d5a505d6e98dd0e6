import pytest

from compose_ckpt.domain.stack.ordering import dependency_levels
from compose_ckpt.errors import ComposeFileError


def test_dependencies_come_first_and_independent_services_share_a_level() -> None:
    deps = {"web": ["api"], "api": ["db", "cache"], "db": [], "cache": [], "worker": ["db"]}
    levels = dependency_levels(deps, ["web", "api", "db", "cache", "worker"])
    assert levels == [["db", "cache"], ["api", "worker"], ["web"]]


def test_unselected_dependencies_are_ignored() -> None:
    assert dependency_levels({"web": ["api"], "api": ["db"]}, ["web", "db"]) == [["web", "db"]]


def test_a_cycle_is_named() -> None:
    with pytest.raises(ComposeFileError, match="cycle: (a -> b -> a|b -> a -> b)"):
        dependency_levels({"a": ["b"], "b": ["a"], "c": []}, ["a", "b", "c"])

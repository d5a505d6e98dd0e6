"""Property tests of compose variable interpolation: any template gives a string or a ComposeFileError.

Bounded by the hypothesis profile in tests/conftest.py, and each call by a timer.
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from compose_ckpt.compose.interpolation import interpolate, interpolate_tree, parse_dotenv
from compose_ckpt.errors import ComposeFileError
from tests.unit.timebox import time_limit

NAMES = ["A", "B", "_x", "VERY_LONG_NAME_1", "a1"]
# Templates built from the pieces of the syntax, so that most examples reach past the first `${`.
PIECES = ["$", "$$", "{", "}", "${", ":", "-", "?", "+", ":-", ":?", ":+", "=", " ", "\\", "'", '"', "#", "\n",
          "1", "\u00e9", "\x00", *NAMES]
templates = st.one_of(st.lists(st.sampled_from(PIECES), max_size=30).map("".join), st.text(max_size=50))
environments = st.dictionaries(st.sampled_from(NAMES), st.one_of(st.just(""), templates), max_size=4)


def interpolated_or_refused(template: str, environ: dict[str, str]) -> str | None:
    with time_limit(5):
        try:
            result = interpolate(template, environ)
        except ComposeFileError as error:
            assert error.message and error.exit_code == 3
            return None
    assert isinstance(result, str)
    return result


@given(templates, environments)
@example("${A:-" * 2000 + "}" * 2000, {})  # nested past Python's recursion limit
@example("${A:?" + "${" * 500, {"A": "x"})
@example("$" * 10_000 + "{A}", {"A": "v"})
def test_any_template_gives_text_or_a_compose_file_error(template: str, environ: dict[str, str]) -> None:
    interpolated_or_refused(template, environ)


@given(st.text(max_size=80), environments)
def test_text_with_every_dollar_doubled_comes_back_unchanged(text: str, environ: dict[str, str]) -> None:
    assert interpolate(text.replace("$", "$$"), environ) == text


@given(st.sampled_from(NAMES), st.text(max_size=30), st.text(max_size=30).filter(lambda t: "$" not in t and "}" not in t))
def test_set_variables_are_substituted_in_every_form(name: str, value: str, default: str) -> None:
    environ = {name: value}
    present = bool(value)
    assert interpolate(f"${{{name}}}", environ) == value
    assert interpolate(f"${{{name}:-{default}}}", environ) == (value if present else default)
    assert interpolate(f"${{{name}-{default}}}", environ) == value
    assert interpolate(f"${{{name}:+{default}}}", environ) == (default if present else "")
    assert interpolate(f"${{{name}+{default}}}", environ) == default


trees: st.SearchStrategy[Any] = st.recursive(
    st.one_of(templates, st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False)),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=20,
)


def same_shape(before: Any, after: Any) -> bool:
    if isinstance(before, dict):
        return isinstance(after, dict) and before.keys() == after.keys() and all(
            same_shape(before[key], after[key]) for key in before)
    if isinstance(before, list):
        return isinstance(after, list) and len(before) == len(after) and all(map(same_shape, before, after))
    return isinstance(after, str) if isinstance(before, str) else after == before


@given(trees, environments)
def test_a_tree_keeps_its_shape_or_the_error_names_the_file(tree: Any, environ: dict[str, str]) -> None:
    with time_limit(5):
        try:
            result = interpolate_tree(tree, environ, source="compose.yaml")
        except ComposeFileError as error:
            assert error.path == "compose.yaml" and error.message.startswith("compose.yaml: ")
            return
    assert same_shape(tree, result)


@given(st.lists(st.one_of(templates, st.sampled_from(["A=1", "export B='x'", 'C="a\\nb', "# c", "D", "=x"])),
                max_size=6).map("\n".join), environments)
@example('A="' + "\\" * 10_000, {})
def test_any_dotenv_text_gives_variables_or_an_error_with_its_line(text: str, environ: dict[str, str]) -> None:
    with time_limit(5):
        try:
            values = parse_dotenv(text, environ, source=".env")
        except ComposeFileError as error:
            # Lines as str.splitlines() counts them (it also breaks at \x0b, \x0c, \x1c-\x1e, \x85, \u2028...).
            assert error.path == ".env" and error.line is not None and 1 <= error.line <= len(text.splitlines())
            return
    assert all(isinstance(key, str) and isinstance(value, str) for key, value in values.items())

"""Interpolation and .env parsing; expected values were checked against docker compose 2.26."""

from __future__ import annotations

import pytest

from compose_ckpt.compose.interpolation import interpolate, interpolate_tree, parse_dotenv
from compose_ckpt.errors import ComposeFileError

ENV = {"SET": "value", "EMPTY": "", "lower": "small"}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${SET}", "value"),
        ("$SET", "value"),
        ("pre-$SET.post", "pre-value.post"),
        ("$SET_MORE", ""),  # the name runs on over "_MORE"
        ("${UNSET}", ""),
        ("${lower}", "small"),
        # default: ":-" when unset or empty, "-" only when unset
        ("${UNSET:-d}", "d"),
        ("${EMPTY:-d}", "d"),
        ("${SET:-d}", "value"),
        ("${UNSET-d}", "d"),
        ("${EMPTY-d}", ""),
        # alternative: ":+" when set and non-empty, "+" when set
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        # required, satisfied
        ("${SET:?msg}", "value"),
        ("${EMPTY?msg}", ""),
        # nesting
        ("${UNSET:-${EMPTY:-${SET}}}", "value"),
        ("${UNSET:-a${SET}b}c", "avaluebc"),
        ("${SET:+[${UNSET:-x}]}", "[x]"),
        ("${UNSET:-a}b}", "ab}"),  # the first balanced brace closes
        ("${UNSET:-{x}", "{x"),
        # escaping and stray dollars
        ("$$SET", "$SET"),
        ("$${SET}", "${SET}"),
        ("$$$SET", "$value"),
        ("${UNSET:-$$}", "$"),
        ("costs 5$", "costs 5$"),
        ("$1 $-", "$1 $-"),
        ("no variables", "no variables"),
    ],
)
def test_interpolate(template: str, expected: str) -> None:
    assert interpolate(template, ENV) == expected


@pytest.mark.parametrize("template", ["${", "${SET", "${SET:x}", "${1}", "${ SET}", "${SET }", "${UNSET:-${SET}", "${A.b}"])
def test_malformed_braces_are_errors(template: str) -> None:
    with pytest.raises(ComposeFileError, match="invalid interpolation format") as err:
        interpolate(template, ENV)
    assert err.value.hint and "$$" in err.value.hint


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("${UNSET:?set it please}", "required variable UNSET is missing a value: set it please"),
        ("${EMPTY:?no empties}", "required variable EMPTY is missing a value: no empties"),
        ("${UNSET?}", "required variable UNSET is missing a value"),
        ("${UNSET:?needs ${SET}}", "required variable UNSET is missing a value: needs value"),
    ],
)
def test_missing_required_variable(template: str, message: str) -> None:
    with pytest.raises(ComposeFileError) as err:
        interpolate(template, ENV)
    assert err.value.message == message
    assert "UNSET" in (err.value.hint or "") or "EMPTY" in (err.value.hint or "")


def test_default_is_interpolated_even_when_unused() -> None:
    # compose evaluates the default eagerly, so its errors always surface
    with pytest.raises(ComposeFileError, match="required variable UNSET"):
        interpolate("${SET:-${UNSET:?inner}}", ENV)


def test_tree_interpolates_values_not_keys_nor_non_strings() -> None:
    tree = {"services": {"a": {"image": "img:${SET}", "labels": {"${SET}": "$SET"}, "scale": 2, "list": ["$SET", None, True]}}}
    assert interpolate_tree(tree, ENV) == {
        "services": {"a": {"image": "img:value", "labels": {"${SET}": "value"}, "scale": 2, "list": ["value", None, True]}}
    }


def test_tree_errors_name_the_key_path_and_file() -> None:
    tree = {"services": {"web": {"environment": ["OK=1", "X=${NOPE:?give NOPE}"]}}}
    with pytest.raises(ComposeFileError) as err:
        interpolate_tree(tree, ENV, source="/p/compose.yaml")
    assert str(err.value) == "/p/compose.yaml: services.web.environment[1]: required variable NOPE is missing a value: give NOPE"
    assert err.value.path == "/p/compose.yaml"


DOTENV = """\
# a comment
export EXPORTED=yes
UNQUOTED=  spaced value   # inline comment
HASH=a#b
SINGLE='literal $SET \\n' # comment
DOUBLE="tab\\there \\"quoted\\" \\$SET ${SET}"
MULTI="line one
line two"
REF=${EXPORTED}-${NOPE:-default}
FROM_PROCESS=$SET
EMPTY=
BARE_SET
BARE_UNSET
"""


def test_parse_dotenv() -> None:
    assert parse_dotenv(DOTENV, {"SET": "process", "BARE_SET": "from process"}) == {
        "EXPORTED": "yes",
        "UNQUOTED": "spaced value",
        "HASH": "a#b",
        "SINGLE": "literal $SET \\n",
        "DOUBLE": 'tab\there "quoted" $SET process',
        "MULTI": "line one\nline two",
        "REF": "yes-default",
        "FROM_PROCESS": "process",
        "EMPTY": "",
        "BARE_SET": "from process",
    }


def test_dotenv_references_prefer_the_process_environment() -> None:
    assert parse_dotenv("A=file\nB=$A", {"A": "process"}) == {"A": "file", "B": "process"}


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('OK=1\nBAD="never closed\nMORE=2', 2, "unterminated quoted value for BAD"),
        ("OK=1\nA B=1", 2, "invalid variable name 'A B'"),
        ("=1", 1, "invalid variable name ''"),
        ("A=${NEED:?in dotenv}", 1, "A: required variable NEED is missing a value: in dotenv"),
    ],
)
def test_dotenv_errors_carry_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ComposeFileError) as err:
        parse_dotenv(text, {}, source="/p/.env")
    assert (err.value.path, err.value.line) == ("/p/.env", line)
    assert message in err.value.message

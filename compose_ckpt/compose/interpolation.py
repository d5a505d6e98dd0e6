"""Variable interpolation and ``.env`` files, as ``docker compose`` v2 does them.

Forms: ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alt}``, ``${VAR+alt}`` and ``$$``
for a literal ``$``. The text after an operator is itself interpolated, so
``${A:-${B:-x}}`` nests; like compose, it is interpolated even when unused,
so an error inside a default always surfaces. A ``$`` that starts none of
these forms (``$1``, ``a$``) stays literal, as in compose; a malformed
``${...}`` is an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from compose_ckpt.errors import ComposeFileError

_NAME = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
_OPERATORS = (":-", "-", ":?", "?", ":+", "+")


def interpolate(template: str, environ: Mapping[str, str]) -> str:
    """Substitute the variables of ``template`` from ``environ``; unset ``$VAR`` gives ""."""
    try:
        return _interpolate(template, environ)
    except RecursionError:  # ${A:-${A:-...}} nested hundreds deep
        raise ComposeFileError(f"interpolation nested too deeply in {template[:80]!r}...") from None


def _interpolate(template: str, environ: Mapping[str, str]) -> str:
    out: list[str] = []
    pos = 0
    while (dollar := template.find("$", pos)) >= 0:
        out.append(template[pos:dollar])
        following = template[dollar + 1 : dollar + 2]
        if following == "$":
            out.append("$")
            pos = dollar + 2
        elif following == "{":
            end = _closing_brace(template, dollar)
            if end < 0:
                raise _invalid(template)
            out.append(_substitute_braced(template[dollar + 2 : end], template, environ))
            pos = end + 1
        elif name := _NAME.match(template, dollar + 1):
            out.append(environ.get(name.group(), ""))
            pos = name.end()
        else:
            out.append("$")
            pos = dollar + 1
    out.append(template[pos:])
    return "".join(out)


def _invalid(template: str) -> ComposeFileError:
    return ComposeFileError(f"invalid interpolation format {template!r}", hint="write a literal $ as $$")


def _closing_brace(template: str, start: int) -> int:
    """Index of the ``}`` closing the ``${`` at ``start``, counting nested ``${``; -1 if none."""
    depth = 0
    i = start
    while i < len(template):
        if template.startswith("${", i):
            depth += 1
            i += 2
            continue
        if template[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _substitute_braced(body: str, template: str, environ: Mapping[str, str]) -> str:
    name_match = _NAME.match(body)
    if name_match is None:
        raise _invalid(template)
    name, rest = name_match.group(), body[name_match.end() :]
    value = environ.get(name)
    if not rest:
        return value or ""
    operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
    if operator is None:
        raise _invalid(template)
    argument = _interpolate(rest[len(operator) :], environ)
    # The ":" forms treat an empty value as unset.
    present = bool(value) if operator.startswith(":") else value is not None
    if operator.endswith("?"):
        if not present:
            message = f"required variable {name} is missing a value"
            raise ComposeFileError(f"{message}: {argument}" if argument else message, hint=f"set {name} in the environment or in .env")
        return value or ""
    if operator.endswith("-"):
        return (value or "") if present else argument
    return argument if present else ""  # the "+" forms


def interpolate_tree(node: Any, environ: Mapping[str, str], *, source: str | None = None, where: str = "") -> Any:
    """Interpolate every string value (never a key) in a parsed YAML tree.

    ``where`` is the dotted key path so far; errors name it and ``source`` (the file).
    """
    if isinstance(node, dict):
        return {
            key: interpolate_tree(value, environ, source=source, where=f"{where}.{key}" if where else str(key))
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [interpolate_tree(item, environ, source=source, where=f"{where}[{i}]") for i, item in enumerate(node)]
    if not isinstance(node, str):
        return node
    try:
        return interpolate(node, environ)
    except ComposeFileError as err:
        raise ComposeFileError(f"{where}: {err.message}", path=source, hint=err.hint) from None


# --- .env files -------------------------------------------------------------

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$$"}  # "$$": kept literal by interpolate


def parse_dotenv(text: str, environ: Mapping[str, str], *, source: str | None = None) -> dict[str, str]:
    """Read a compose ``.env`` file.

    ``KEY=value``, optional ``export``, ``#`` comments (after a space when
    inline), single quotes literal, double quotes with escapes and multi-line
    values. Values are interpolated from ``environ`` first, then from keys
    defined earlier in the file. A bare ``KEY`` copies ``environ[KEY]`` if set.
    """
    values: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        lineno, line = index + 1, lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, has_value, raw = line.partition("=")
        key = key.strip()
        if not key or any(c.isspace() for c in key):
            raise ComposeFileError(f"invalid variable name {key!r}", path=source, line=lineno)
        if not has_value:
            if key in environ:
                values[key] = environ[key]
            continue
        raw = raw.lstrip()
        quote = raw[:1]
        if quote in ("'", '"'):
            # A quoted value may run over several lines, up to its closing quote.
            while (end := _closing_quote(raw, quote)) < 0:
                if index >= len(lines):
                    raise ComposeFileError(f"unterminated quoted value for {key}", path=source, line=lineno)
                raw += "\n" + lines[index]
                index += 1
            content = raw[1:end]
        else:
            content = re.split(r"\s#", raw, maxsplit=1)[0].strip()
        if quote == "'":
            values[key] = content
            continue
        if quote == '"':
            content = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), content)
        try:
            values[key] = interpolate(content, {**values, **environ})
        except ComposeFileError as err:
            raise ComposeFileError(f"{key}: {err.message}", path=source, line=lineno, hint=err.hint) from None
    return values


def _closing_quote(raw: str, quote: str) -> int:
    i = 1
    while i < len(raw):
        if raw[i] == "\\" and quote == '"':
            i += 2
            continue
        if raw[i] == quote:
            return i
        i += 1
    return -1

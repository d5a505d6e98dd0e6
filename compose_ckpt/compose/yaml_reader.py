"""Reading compose files: bytes, UTF-8 text, and YAML as compose reads it, within bounds.

``parse_yaml`` reads YAML as compose does (only true/false are booleans, a key repeated in a mapping is an
error, ``!reset``/``!override`` recorded under ``RESET_KEYS``/``OVERRIDE_KEYS``) and refuses a tree larger
than ``MAX_VALUES`` or deeper than ``MAX_DEPTH`` with its aliases expanded; ``check_bounds`` does that on the
YAML nodes alone, before anything is built (``resolve.py`` runs it before handing a file to compose).
Errors name the file and, where known, the line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import yaml

from compose_ckpt.errors import ComposeFileError

# Bounds on a parsed file, counted with aliases expanded: an alias bomb ("billion laughs") is
# small as YAML but exponential as a tree, and interpolation walks the tree recursively.
MAX_DEPTH = 100
MAX_VALUES = 1_000_000


class _YamlLoader(yaml.SafeLoader):
    """YAML as compose reads it: only true/false are booleans (not yes/no/on/off),
    and a key repeated in one mapping is an error rather than silently overwritten."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # merged keys may legitimately be redefined
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # refused with its line by SafeLoader's construct_mapping below
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"mapping key {key!r} is defined twice", key_node.start_mark)
            seen.add(key)
        mapping = super().construct_mapping(node, deep=deep)
        for tag, marker in (("!reset", RESET_KEYS), ("!override", OVERRIDE_KEYS)):
            tagged = [str(k.value) for k, v in node.value if v.tag == tag and isinstance(k, yaml.ScalarNode)]
            if tagged:
                mapping[marker] = tagged
        return mapping

    def construct_override(self, node: yaml.Node) -> Any:
        """``!override VALUE``: the value itself; the mapping holding it records that it replaces, not merges."""
        if isinstance(node, yaml.MappingNode):
            return self.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return self.construct_sequence(node, deep=True)
        return self.construct_scalar(node)  # type: ignore[arg-type]


# ``key: !reset ...`` and ``key: !override ...`` are recorded in the mapping holding them, under keys no YAML
# text can produce (NUL is not allowed in YAML), so the merge can drop or replace those keys.
RESET_KEYS = "\x00reset"
OVERRIDE_KEYS = "\x00override"
_YamlLoader.add_constructor("!reset", lambda loader, node: None)
_YamlLoader.add_constructor("!override", _YamlLoader.construct_override)
_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def parse_yaml(data: bytes, path: Path) -> list[dict[str, Any]]:
    """The file's documents (compose merges several in one file in order, like several files)."""
    try:
        documents = [d for d in yaml.load_all(decode(data, path), Loader=_YamlLoader) if d is not None]  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else None
        raise ComposeFileError(f"invalid YAML: {err.problem}", path=str(path), line=line) from None
    except yaml.YAMLError as err:
        raise ComposeFileError(f"invalid YAML: {err}", path=str(path)) from None
    except RecursionError:
        raise ComposeFileError(f"invalid YAML: nested more than {MAX_DEPTH} levels deep", path=str(path)) from None
    if not documents:
        raise ComposeFileError("empty compose file", path=str(path))
    for document in documents:
        if not isinstance(document, dict):
            raise ComposeFileError("the top level must be a mapping", path=str(path))
        _check_expanded_size(document, path)
    return documents


def _check_expanded_size(document: dict[str, Any], path: Path) -> None:
    """Refuse a tree that is recursive, deeper than MAX_DEPTH or, aliases expanded, larger than MAX_VALUES.

    Sizes are memoised per node, so a shared (aliased) node is measured once: linear in the YAML, never
    in its expansion."""
    _measure_tree(document, lambda node: list(node.values()) if isinstance(node, dict) else node,
                  lambda node: isinstance(node, (dict, list)), lambda node: None, {}, path)


def check_bounds(data: bytes, path: Path) -> None:
    """Refuse a file whose YAML, aliases expanded, exceeds MAX_VALUES or MAX_DEPTH, without building it.

    Works on the node graph (aliases are shared nodes, every tag accepted), memoised per node: linear in
    the text. YAML that does not parse is left to the caller's parser, which reports it with its line."""
    try:
        documents = list(yaml.compose_all(data, Loader=NodeLoader))
    except (yaml.YAMLError, RecursionError) as err:
        if isinstance(err, yaml.YAMLError) and "nesting depth" not in str(err):  # else libyaml's own bound (1000)
            return
        raise ComposeFileError(f"invalid YAML: nested more than {MAX_DEPTH} levels deep", path=str(path)) from None
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth), aliases expanded
    for document in documents:
        _measure(document, measured, path)


class NodeLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Only composes nodes; libyaml's parser when available."""


def _measure(root: yaml.Node | None, measured: dict[int, tuple[int, int]], path: Path) -> None:
    if isinstance(root, yaml.CollectionNode):
        _measure_tree(root, lambda node: [part for pair in node.value for part in pair]
                      if isinstance(node, yaml.MappingNode) else node.value,
                      lambda node: isinstance(node, yaml.CollectionNode), lambda node: node.start_mark.line + 1,
                      measured, path)


def _measure_tree(root: Any, children_of: Callable[[Any], list[Any]], is_collection: Callable[[Any], bool],
                  line_of: Callable[[Any], int | None], measured: dict[int, tuple[int, int]], path: Path) -> None:
    """The walk both bounds checks share (over built data and over YAML nodes): sizes memoised in `measured`
    (id(node) -> (values, depth), aliases expanded); a node met again on its own path is a recursive alias."""
    entered: set[int] = set()  # the nodes on the current path
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        children = children_of(node)
        if done:
            entered.discard(id(node))
            sizes = [measured.get(id(child), (1, 0)) for child in children]
            values = 1 + sum(size for size, _ in sizes)
            depth = 1 + max((depth for _, depth in sizes), default=0)
            if values > MAX_VALUES or depth > MAX_DEPTH:
                what = f"holds more than {MAX_VALUES} values once its aliases are expanded" if values > MAX_VALUES \
                    else f"is nested more than {MAX_DEPTH} levels deep"
                raise ComposeFileError(f"the file {what}", path=str(path), line=line_of(node))
            measured[id(node)] = (values, depth)
        elif id(node) in entered:
            raise ComposeFileError("an alias refers to a node that contains it", path=str(path), line=line_of(node))
        elif id(node) not in measured:
            entered.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if is_collection(child))


def absolute(base: Path, path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute against ``base`` and normalised (``..`` folded), like Go's filepath.Abs."""
    return Path(os.path.normpath(base / path))


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ComposeFileError("file not found", path=str(path)) from None
    except PermissionError:
        raise ComposeFileError("permission denied", path=str(path), hint="check the file's owner and mode") from None
    except IsADirectoryError:
        raise ComposeFileError("is a directory, not a file", path=str(path)) from None
    except OSError as err:
        raise ComposeFileError(f"cannot read: {err.strerror or err}", path=str(path)) from None


def decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ComposeFileError("not UTF-8 text", path=str(path)) from None

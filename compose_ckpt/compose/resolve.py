"""``load_project``: the project exactly as ``docker compose`` resolves it.

Where compose v2 is installed, it resolves the project (``docker_compose.py``):
every rule of the compose spec, as the user's own ``docker compose up`` will
apply it, with no second implementation to drift. compose-ckpt keeps only
what compose does not print: the files (found as compose finds them, and
hashed) and, when compose refuses a project, an error that names file and
line (from the in-house loader when it finds the same fault, else by
locating the key compose names). Without compose, the in-house loader
(``loader.py``) resolves the project on its own. ``start_loading`` does the
same in two steps, for callers with work of their own meanwhile: the files
are read and checked at once, compose's answer is awaited through a future.
"""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import yaml

from compose_ckpt.compose import loader
from compose_ckpt.compose.discovery import Located, locate
from compose_ckpt.compose.docker_compose import (
    ComposeRefused,
    find_compose,
    project_from_config,
    read_config,
    start_config,
)
from compose_ckpt.compose.model import ComposeProject, ProjectOptions
from compose_ckpt.compose.yaml_reader import NodeLoader, check_bounds
from compose_ckpt.errors import CkptError, ComposeFileError


def load_project(options: ProjectOptions) -> ComposeProject:
    return start_loading(options).result()


def start_loading(options: ProjectOptions) -> Future[ComposeProject]:
    """``load_project`` for a caller with other work to do meanwhile (the CLI loads the domain and connects to
    the engine): the files are found, read and measured now, and a fault found in them is raised now; compose
    then resolves the project in its own process, and the future holds the project or compose's refusal."""
    located = locate(options)
    binary = find_compose(located.environ)
    if binary is None:
        loaded: Future[ComposeProject] = Future()
        loaded.set_result(_own_loader(options, located.files))
        return loaded
    _check_bounds(located.files, located.contents)
    process = start_config(binary, options, located.environ, located.cwd)
    waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compose-config")
    project = waiter.submit(_from_compose, binary, process, options, located)
    waiter.shutdown(wait=False)  # its one thread ends once compose has answered
    return project


def _own_loader(options: ProjectOptions, files: tuple[Path, ...]) -> ComposeProject:
    try:
        return loader.load_project(options)
    except ComposeFileError as own:
        raise _placed(own, own.message, files) from None


def _from_compose(binary: Path, process: subprocess.Popen[bytes], options: ProjectOptions,
                  located: Located) -> ComposeProject:
    try:
        document = read_config(binary, process)
    except ComposeRefused as refused:
        raise _explained(refused.message, options, located.files) from None
    project = project_from_config(document, located.working_dir, located.files, located.contents)
    if any(b"profiles" in data for data in located.contents):  # compose prints only the active services
        declared = dict.fromkeys(name for data in located.contents for name in _declared_services(data))
        project = replace(project, disabled_services=tuple(n for n in declared if n not in project.services))
    return project


MAX_REFERENCED_FILES = 200


def _check_bounds(files: tuple[Path, ...], contents: tuple[bytes, ...]) -> None:
    """Measure every file compose will read (included and extended ones too, as far as their paths are
    literal) before compose tries to expand an alias bomb in one of them."""
    pending, seen = list(zip(files, contents)), set[Path]()
    while pending and len(seen) < MAX_REFERENCED_FILES:
        path, data = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        check_bounds(data, path)
        if b"include" in data or b"extends" in data:
            for referenced in _referenced_files(data, path):
                try:
                    pending.append((referenced, referenced.read_bytes()))
                except OSError:
                    pass  # compose reports it


def _referenced_files(data: bytes, path: Path) -> list[Path]:
    """The files a compose file includes or extends from, where named without variables."""
    names: list[yaml.Node] = []
    for document in _nodes(data):
        if not isinstance(document, yaml.MappingNode):
            continue
        for key, value in document.value:
            if key.value == "include" and isinstance(value, yaml.SequenceNode):
                for entry in value.value:
                    target = _entry(entry, "path") if isinstance(entry, yaml.MappingNode) else entry
                    names += target.value if isinstance(target, yaml.SequenceNode) else [target] if target else []
            elif key.value == "services" and isinstance(value, yaml.MappingNode):
                for _, service in value.value:
                    extends = _entry(service, "extends") if isinstance(service, yaml.MappingNode) else None
                    other = _entry(extends, "file") if isinstance(extends, yaml.MappingNode) else None
                    names += [other] if other else []
    return [path.parent / str(node.value) for node in names
            if isinstance(node, yaml.ScalarNode) and node.value and "$" not in str(node.value)]


def _entry(mapping: yaml.MappingNode, name: str) -> yaml.Node | None:
    return next((value for key, value in mapping.value if isinstance(key, yaml.ScalarNode) and key.value == name), None)


def _explained(message: str, options: ProjectOptions, files: tuple[Path, ...]) -> CkptError:
    """compose's refusal as an error naming file and line.

    The in-house loader's own error is preferred when it refuses the project too (it gives the line of
    YAML faults, which compose reports without the file); compose's message goes with it."""
    said = f"docker compose: {message}"
    try:
        loader.load_project(options)
    except CkptError as own:
        if "not supported" not in own.message:  # a limit of ours says nothing about compose's refusal
            own = _placed(own, message, files) if isinstance(own, ComposeFileError) else own
            own.details = [*own.details, said]
            return own
    path, line = _locate(message, files)
    return ComposeFileError(message, path=str(path) if path else None, line=line)


def _placed(error: ComposeFileError, compose_message: str, files: tuple[Path, ...]) -> ComposeFileError:
    """An error about the merged project (no file yet) pinned to where its subject is defined, when it can be."""
    if error.path is not None:
        return error
    path, line = _locate(error.message, files)
    if path is None:
        path, line = _locate(compose_message, files)
    return error if path is None else ComposeFileError(error.message, path=str(path), line=line, hint=error.hint)


_KEY_PATTERNS = (
    re.compile(r"^validating \S+: ((?:services|networks|volumes|configs|secrets)(?:\.[\w.-]+)?)"),
    re.compile(r"error while interpolating ((?:services|networks|volumes|configs|secrets)\.[\w.-]+)"),
    re.compile(r"^((?:services|networks|volumes|configs|secrets)\.[\w.-]+)"),
)
_SERVICE = re.compile(r"""service ["']([^"']+)["']""")
# What a message about a service is about, after its name: the key to point at.
_SERVICE_KEYS = (("undefined network", "networks"), ("undefined volume", "volumes"), ("depends on", "depends_on"),
                 ("extends", "extends"))


def _locate(message: str, files: tuple[Path, ...]) -> tuple[Path | None, int | None]:
    """The file (and line) a compose error message is about, as well as it can be told: the file it names,
    else the file defining most of the key it names (the last such file, as the last one wins a merge)."""
    named = [path for path in files if str(path) in message]
    keys = _key_path(message)
    found = [(*_deepest_key(keys, path), path) for path in named or files]
    depth, line, path = max(reversed(found), key=lambda entry: entry[0], default=(0, None, None)) if keys else (0, None, None)
    if depth:
        return path, line
    if named or len(files) == 1:
        return (named or list(files))[0], None
    return None, None


def _key_path(message: str) -> list[str]:
    first = message.splitlines()[0] if message else ""
    for pattern in _KEY_PATTERNS:
        match = pattern.search(first)
        if match:
            return match.group(1).split(".")
    service = _SERVICE.search(first)
    if service is None:
        return []
    rest = first[service.end():]
    return ["services", service.group(1), *[key for phrase, key in _SERVICE_KEYS if phrase in rest][:1]]


def _nodes(data: bytes) -> list[yaml.Node]:
    try:
        return [node for node in yaml.compose_all(data, Loader=NodeLoader) if node is not None]
    except (yaml.YAMLError, RecursionError):
        return []


def _declared_services(data: bytes) -> list[str]:
    return [str(name.value) for document in _nodes(data) if isinstance(document, yaml.MappingNode)
            for key, services in document.value if key.value == "services" and isinstance(services, yaml.MappingNode)
            for name, _ in services.value]


def _deepest_key(keys: list[str], path: Path) -> tuple[int, int | None]:
    """How many leading keys of ``keys`` ``path`` defines, and the (1-based) line of the last of them."""
    try:
        documents = _nodes(path.read_bytes())
    except OSError:
        return 0, None
    best: tuple[int, int | None] = (0, None)
    for node in documents:
        for depth, key in enumerate(keys, 1):
            if not isinstance(node, yaml.MappingNode):
                break
            entry = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)
            if entry is None:
                break
            if depth >= best[0]:
                best = (depth, entry[0].start_mark.line + 1)
            node = entry[1]
    return best

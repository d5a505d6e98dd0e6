"""Where a project lives and what it is called, before any of its YAML is built (loader.py's steps 1-3).

``locate`` finds the files (``-f``, ``COMPOSE_FILE``, else ``compose.yaml`` & co. searched from cwd
upwards, with the override sibling), the variables (the process environment, then ``.env`` values it does
not set: the first ``.env`` from the folder compose would work in before knowing the files, then the
project directory's own) and the folders; ``decide_project_name`` applies ``-p`` >
``COMPOSE_PROJECT_NAME`` > top-level ``name:`` > the project folder's name, normalised.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compose_ckpt.compose.interpolation import interpolate_tree, parse_dotenv
from compose_ckpt.compose.model import ProjectOptions
from compose_ckpt.compose.services import string_value
from compose_ckpt.compose.yaml_reader import absolute, decode, read_file
from compose_ckpt.errors import ComposeFileError, UsageError

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
OVERRIDE_FILES = ("compose.override.yml", "compose.override.yaml", "docker-compose.override.yml", "docker-compose.override.yaml")
_VALID_PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


@dataclass(frozen=True)
class Located:
    """Where a project lives before any YAML is read: its files, variables and folders."""

    files: tuple[Path, ...]
    contents: tuple[bytes, ...]
    env: dict[str, str]
    environ: dict[str, str]  # the process environment alone
    working_dir: Path
    cwd: Path


def locate(options: ProjectOptions) -> Located:
    """Steps 1-2: the files (read once, so hashes match what was parsed), the variables and the folders."""
    environ = dict(os.environ if options.environ is None else options.environ)
    cwd = absolute(Path.cwd(), options.cwd or ".")
    project_dir = absolute(cwd, options.project_directory) if options.project_directory else None
    files, env = _config_files_and_environment(options, environ, cwd, project_dir)
    contents = tuple(read_file(path) for path in files)
    return Located(tuple(files), contents, env, environ, project_dir or files[0].parent, cwd)


def _config_files_and_environment(
    options: ProjectOptions, environ: dict[str, str], cwd: Path, project_dir: Path | None
) -> tuple[list[Path], dict[str, str]]:
    if "-" in options.files:
        raise UsageError("reading a compose file from stdin (-f -) is not supported", hint="pass the file's path instead")
    # Compose reads a first .env before it knows the files, since that .env may
    # set COMPOSE_FILE. It comes from the folder compose would work in so far.
    files = [absolute(cwd, f) for f in options.files] or _compose_file_variable(environ, cwd)
    found = [] if files else _discover(project_dir or cwd)
    candidates = files or found
    first_dir = project_dir or (candidates[0].parent if candidates else cwd)
    env_files = [absolute(cwd, f) for f in options.env_files] or [first_dir / ".env"]
    env = with_dotenv(environ, env_files, required=bool(options.env_files))
    if not files:
        files = _compose_file_variable(env, cwd) or found
    if not files:
        raise ComposeFileError(
            f"no compose file found in {project_dir or cwd} or any parent folder",
            hint=f"create one of {', '.join(DEFAULT_FILES)}, or name one with -f",
        )
    # The project directory's own .env then fills in what is still unset.
    working_dir = project_dir or files[0].parent
    if not options.env_files and working_dir != first_dir:
        env = with_dotenv(env, [working_dir / ".env"], required=False)
    return files, env


def _compose_file_variable(env: Mapping[str, str], cwd: Path) -> list[Path]:
    separator = env.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
    return [absolute(cwd, f) for f in env.get("COMPOSE_FILE", "").split(separator) if f]


def _discover(start: Path) -> list[Path]:
    """The first default file in ``start`` or its nearest parent having one, plus its override."""
    for folder in (start, *start.parents):
        main = next((folder / n for n in DEFAULT_FILES if (folder / n).is_file()), None)
        if main is not None:
            override = next((folder / n for n in OVERRIDE_FILES if (folder / n).is_file()), None)
            return [main, override] if override else [main]
    return []


def with_dotenv(environ: dict[str, str], paths: list[Path], *, required: bool) -> dict[str, str]:
    """``environ`` plus the variables of ``paths`` it does not set (later files win among them)."""
    loaded: dict[str, str] = {}
    for path in paths:
        if not required and not path.is_file():
            continue
        text = decode(read_file(path), path)
        loaded.update(parse_dotenv(text, {**loaded, **environ}, source=str(path)))
    return {**loaded, **environ}


def normalise_project_name(name: str) -> str:
    """Compose's normalisation: lowercase, keep [a-z0-9_-], no leading '_' or '-'."""
    return re.sub(r"[^a-z0-9_-]", "", name.lower()).lstrip("_-")


def decide_project_name(flag: str | None, env: Mapping[str, str], documents: list[dict[str, Any]], files: Sequence[Path], working_dir: Path) -> str:
    for source, value in (("-p", flag), ("COMPOSE_PROJECT_NAME", env.get("COMPOSE_PROJECT_NAME"))):
        if value:
            if not _VALID_PROJECT_NAME.fullmatch(value):
                raise UsageError(
                    f"invalid project name {value!r} (from {source})",
                    hint="use lowercase letters, digits, '-' and '_', starting with a letter or digit",
                )
            return value
    for document, path in reversed(list(zip(documents, files))):
        if document.get("name") is not None:
            declared = interpolate_tree(document["name"], env, source=str(path), where="name")
            declared = normalise_project_name(string_value(declared, "name", path))
            if declared:
                return declared
    name = normalise_project_name(working_dir.name)
    if not name:
        raise UsageError(f"cannot derive a project name from folder {working_dir.name!r}", hint="name the project with -p")
    return name

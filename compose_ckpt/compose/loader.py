"""Read a compose project the way ``docker compose`` v2 (2.26) does.

``load_project`` runs these steps, each a function below:

1. Variables: the process environment, then ``.env`` values it does not set.
   The first ``.env`` comes from the directory compose would work in before
   knowing ``COMPOSE_FILE`` (``--project-directory``, else the first ``-f``
   or ``$COMPOSE_FILE`` file's folder, else the folder where a default file
   is found, else cwd); ``--env-file`` replaces it.
2. Files: ``-f``, else ``COMPOSE_FILE`` (split on ``COMPOSE_PATH_SEPARATOR``,
   relative to cwd), else ``compose.yaml`` & co. searched from cwd upwards,
   with its ``*.override.*`` sibling. Once the project directory is known,
   its own ``.env`` fills in what is still unset.
3. Project name: ``-p`` > ``COMPOSE_PROJECT_NAME`` > top-level ``name:`` >
   the project folder's name, normalised.
4. Each file: YAML, interpolation (with ``COMPOSE_PROJECT_NAME`` set to the
   name), per-file validation of the keys we use, ``extends`` in that file.
5. Merge files in order, then apply profiles and check dependencies.

Only the keys compose-ckpt needs are validated and kept; others are ignored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from compose_ckpt.compose.interpolation import interpolate_tree, parse_dotenv
from compose_ckpt.compose.model import CONDITIONS, ComposeProject, ProjectOptions, ServiceConfig, ServiceDependency
from compose_ckpt.errors import ComposeFileError, UsageError

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
OVERRIDE_FILES = ("compose.override.yml", "compose.override.yaml", "docker-compose.override.yml", "docker-compose.override.yaml")
_VALID_PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_VALID_SERVICE_NAME = re.compile(r"[a-zA-Z0-9._-]+")
# Bounds on a parsed file, counted with aliases expanded: an alias bomb ("billion laughs") is
# small as YAML but exponential as a tree, and interpolation walks the tree recursively.
MAX_DEPTH = 100
MAX_VALUES = 1_000_000

# A service reduced to what we keep, after validation: image, container_name,
# labels (dict), depends_on (name -> {condition, required?}), profiles (list),
# scale, replicas (from deploy.replicas), build (True), extends (service name).
Service = dict[str, Any]


def load_project(options: ProjectOptions) -> ComposeProject:
    try:
        return _load_project(options)
    except RecursionError:  # depends_on or extends chains are followed recursively
        raise ComposeFileError("services depend on or extend each other in chains too long to follow",
                               hint="shorten the depends_on and extends chains") from None


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
    cwd = _absolute(Path.cwd(), options.cwd or ".")
    project_dir = _absolute(cwd, options.project_directory) if options.project_directory else None
    files, env = _config_files_and_environment(options, environ, cwd, project_dir)
    contents = tuple(_read(path) for path in files)
    return Located(tuple(files), contents, env, environ, project_dir or files[0].parent, cwd)


def _load_project(options: ProjectOptions) -> ComposeProject:
    located = locate(options)
    files, contents, env, working_dir = located.files, located.contents, located.env, located.working_dir
    documents = [_parse_yaml(data, path) for data, path in zip(contents, files)]

    name = _project_name(options.project_name, env, documents, files, working_dir)
    env["COMPOSE_PROJECT_NAME"] = name  # compose exposes the final name to interpolation
    services: dict[str, Service] = {}
    for document, path in zip(documents, files):
        for service_name, service in _file_services(document, env, path).items():
            services[service_name] = _merge(services[service_name], service) if service_name in services else service

    configs = {service_name: _service_config(service_name, service) for service_name, service in services.items()}
    enabled = _enabled_profiles(options.profiles, env)
    active = {n: c for n, c in configs.items() if not c.profiles or "*" in enabled or enabled & set(c.profiles)}
    _check_services(active, configs)
    return ComposeProject(
        name=name,
        working_dir=working_dir,
        config_files=tuple(files),
        services=active,
        disabled_services=tuple(n for n in configs if n not in active),
        file_contents=contents,
    )


# --- 1-2. environment and file discovery ------------------------------------


def _config_files_and_environment(
    options: ProjectOptions, environ: dict[str, str], cwd: Path, project_dir: Path | None
) -> tuple[list[Path], dict[str, str]]:
    if "-" in options.files:
        raise UsageError("reading a compose file from stdin (-f -) is not supported", hint="pass the file's path instead")
    # Compose reads a first .env before it knows the files, since that .env may
    # set COMPOSE_FILE. It comes from the folder compose would work in so far.
    files = [_absolute(cwd, f) for f in options.files] or _compose_file_variable(environ, cwd)
    found = [] if files else _discover(project_dir or cwd)
    candidates = files or found
    first_dir = project_dir or (candidates[0].parent if candidates else cwd)
    env_files = [_absolute(cwd, f) for f in options.env_files] or [first_dir / ".env"]
    env = _with_dotenv(environ, env_files, required=bool(options.env_files))
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
        env = _with_dotenv(env, [working_dir / ".env"], required=False)
    return files, env


def _compose_file_variable(env: Mapping[str, str], cwd: Path) -> list[Path]:
    separator = env.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
    return [_absolute(cwd, f) for f in env.get("COMPOSE_FILE", "").split(separator) if f]


def _discover(start: Path) -> list[Path]:
    """The first default file in ``start`` or its nearest parent having one, plus its override."""
    for folder in (start, *start.parents):
        main = next((folder / n for n in DEFAULT_FILES if (folder / n).is_file()), None)
        if main is not None:
            override = next((folder / n for n in OVERRIDE_FILES if (folder / n).is_file()), None)
            return [main, override] if override else [main]
    return []


def _with_dotenv(environ: dict[str, str], paths: list[Path], *, required: bool) -> dict[str, str]:
    """``environ`` plus the variables of ``paths`` it does not set (later files win among them)."""
    loaded: dict[str, str] = {}
    for path in paths:
        if not required and not path.is_file():
            continue
        text = _decode(_read(path), path)
        loaded.update(parse_dotenv(text, {**loaded, **environ}, source=str(path)))
    return {**loaded, **environ}


# --- 3. project name --------------------------------------------------------


def normalise_project_name(name: str) -> str:
    """Compose's normalisation: lowercase, keep [a-z0-9_-], no leading '_' or '-'."""
    return re.sub(r"[^a-z0-9_-]", "", name.lower()).lstrip("_-")


def _project_name(flag: str | None, env: Mapping[str, str], documents: list[dict[str, Any]], files: Sequence[Path], working_dir: Path) -> str:
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
            declared = normalise_project_name(_string(declared, "name", path))
            if declared:
                return declared
    name = normalise_project_name(working_dir.name)
    if not name:
        raise UsageError(f"cannot derive a project name from folder {working_dir.name!r}", hint="name the project with -p")
    return name


# --- 4. one file ------------------------------------------------------------


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
        return super().construct_mapping(node, deep=deep)


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _parse_yaml(data: bytes, path: Path) -> dict[str, Any]:
    try:
        document = yaml.load(_decode(data, path), Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else None
        hint = "YAML tags such as !reset and !override are not supported" if isinstance(err, yaml.constructor.ConstructorError) else None
        raise ComposeFileError(f"invalid YAML: {err.problem}", path=str(path), line=line, hint=hint) from None
    except yaml.YAMLError as err:
        raise ComposeFileError(f"invalid YAML: {err}", path=str(path)) from None
    except RecursionError:
        raise ComposeFileError(f"invalid YAML: nested more than {MAX_DEPTH} levels deep", path=str(path)) from None
    if document is None:
        raise ComposeFileError("empty compose file", path=str(path))
    if not isinstance(document, dict):
        raise ComposeFileError("the top level must be a mapping", path=str(path))
    _check_expanded_size(document, path)
    return document


def _check_expanded_size(document: dict[str, Any], path: Path) -> None:
    """Refuse a tree that is recursive, deeper than MAX_DEPTH or, aliases expanded, larger than MAX_VALUES.

    Sizes are memoised per node, so a shared (aliased) node is measured once: linear in the YAML, never
    in its expansion."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth), aliases expanded
    entered: set[int] = set()  # the nodes on the current path
    stack: list[tuple[Any, bool]] = [(document, False)]
    while stack:
        node, done = stack.pop()
        children = list(node.values()) if isinstance(node, dict) else node
        if done:
            entered.discard(id(node))
            sizes = [measured.get(id(child), (1, 0)) for child in children]
            values = 1 + sum(size for size, _ in sizes)
            depth = 1 + max((depth for _, depth in sizes), default=0)
            if values > MAX_VALUES or depth > MAX_DEPTH:
                what = f"holds more than {MAX_VALUES} values once its aliases are expanded" if values > MAX_VALUES \
                    else f"is nested more than {MAX_DEPTH} levels deep"
                raise ComposeFileError(f"the file {what}", path=str(path))
            measured[id(node)] = (values, depth)
        elif id(node) in entered:
            raise ComposeFileError("an alias refers to a node that contains it", path=str(path))
        elif id(node) not in measured:
            entered.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if isinstance(child, (dict, list)))


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
    entered: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)] if isinstance(root, yaml.CollectionNode) else []
    while stack:
        node, done = stack.pop()
        children = [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else node.value
        if done:
            entered.discard(id(node))
            sizes = [measured.get(id(child), (1, 0)) for child in children]
            values = 1 + sum(size for size, _ in sizes)
            depth = 1 + max((depth for _, depth in sizes), default=0)
            if values > MAX_VALUES or depth > MAX_DEPTH:
                what = f"holds more than {MAX_VALUES} values once its aliases are expanded" if values > MAX_VALUES \
                    else f"is nested more than {MAX_DEPTH} levels deep"
                raise ComposeFileError(f"the file {what}", path=str(path), line=node.start_mark.line + 1)
            measured[id(node)] = (values, depth)
        elif id(node) in entered:
            raise ComposeFileError("an alias refers to a node that contains it", path=str(path), line=node.start_mark.line + 1)
        elif id(node) not in measured:
            entered.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if isinstance(child, yaml.CollectionNode))


def _file_services(document: dict[str, Any], env: Mapping[str, str], path: Path) -> dict[str, Service]:
    """The services of one file: interpolated, validated, their ``extends`` resolved."""
    document = interpolate_tree(document, env, source=str(path))
    if "include" in document:
        # Silently leaving out the included services would make a snapshot miss part of the stack.
        raise ComposeFileError("`include` is not supported yet", path=str(path),
                               hint="List the included files with -f instead.")
    raw_services = document.get("services") or {}
    if not isinstance(raw_services, dict):
        raise ComposeFileError("services must be a mapping", path=str(path))
    services = {}
    for name, raw in raw_services.items():
        if not isinstance(name, str) or not _VALID_SERVICE_NAME.fullmatch(name):
            raise ComposeFileError(f"invalid service name {name!r}", path=str(path), hint="use letters, digits, '.', '_' and '-'")
        services[name] = _validate_service(name, raw, path)
    return {name: _resolve_extends(name, services, path, ()) for name in services}


def _validate_service(name: str, raw: Any, path: Path) -> Service:
    where = f"services.{name}"
    if not isinstance(raw, dict):
        raise ComposeFileError(f"{where} must be a mapping", path=str(path))
    service: Service = {}
    for key in ("image", "container_name"):
        if raw.get(key) is not None:
            service[key] = _string(raw[key], f"{where}.{key}", path)
    if raw.get("labels") is not None:
        service["labels"] = _labels(raw["labels"], f"{where}.labels", path)
    if raw.get("depends_on") is not None:
        service["depends_on"] = _depends_on(raw["depends_on"], f"{where}.depends_on", path)
    if raw.get("profiles") is not None:
        profiles = raw["profiles"]
        if not isinstance(profiles, list):
            raise ComposeFileError(f"{where}.profiles must be a list", path=str(path))
        service["profiles"] = [_string(p, f"{where}.profiles", path) for p in profiles]
    if raw.get("scale") is not None:
        service["scale"] = _count(raw["scale"], f"{where}.scale", path)
    deploy = raw.get("deploy")
    if deploy is not None and not isinstance(deploy, dict):
        raise ComposeFileError(f"{where}.deploy must be a mapping", path=str(path))
    if deploy and deploy.get("replicas") is not None:
        service["replicas"] = _count(deploy["replicas"], f"{where}.deploy.replicas", path)
    if raw.get("build") is not None:
        service["build"] = True
    if raw.get("extends") is not None:
        service["extends"] = _extends_target(raw["extends"], f"{where}.extends", path)
    return service


def _string(value: Any, where: str, path: Path) -> str:
    if not isinstance(value, str):
        raise ComposeFileError(f"{where} must be a string, not {type(value).__name__}", path=str(path))
    return value


def _count(value: Any, where: str, path: Path) -> int:
    """A non-negative integer; strings are cast, as compose does after interpolation."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ComposeFileError(f"{where} must be a non-negative integer, not {value!r}", path=str(path))
    return value


def _labels(value: Any, where: str, path: Path) -> dict[str, str]:
    if isinstance(value, list):
        # "- key=value"; a bare "- key" means an empty value.
        pairs = [_string(item, where, path).partition("=")[::2] for item in value]
        return dict(pairs)
    if isinstance(value, dict):
        return {str(k): _scalar_text(v) for k, v in value.items()}
    raise ComposeFileError(f"{where} must be a mapping or a list of key=value", path=str(path))


def _scalar_text(value: Any) -> str:
    """A YAML scalar as compose prints it in a label: true, 1.5, 1000, ""."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _depends_on(value: Any, where: str, path: Path) -> dict[str, dict[str, Any]]:
    """Both forms as {service: {condition, [required]}}.

    The short form states the defaults explicitly, so it resets a longer entry
    from an earlier file, as in compose; the long form keeps ``required`` unset
    until after merging, so an override may change just the condition.
    """
    if isinstance(value, list):
        return {_string(item, where, path): {"condition": "service_started", "required": True} for item in value}
    if not isinstance(value, dict):
        raise ComposeFileError(f"{where} must be a list of services or a mapping", path=str(path))
    entries = {}
    for service, entry in value.items():
        entry_where = f"{where}.{service}"
        if not isinstance(entry, dict):
            raise ComposeFileError(f"{entry_where} must be a mapping with a condition", path=str(path))
        if entry.get("condition") not in CONDITIONS:
            raise ComposeFileError(f"{entry_where}.condition must be one of {', '.join(CONDITIONS)}", path=str(path))
        if "required" in entry and not isinstance(entry["required"], bool):
            raise ComposeFileError(f"{entry_where}.required must be true or false", path=str(path))
        entries[str(service)] = {k: entry[k] for k in ("condition", "required") if k in entry}
    return entries


def _extends_target(value: Any, where: str, path: Path) -> str:
    if isinstance(value, dict):
        if value.get("file") is not None:
            raise ComposeFileError(
                f"{where}.file: extending a service from another file is not supported",
                path=str(path),
                hint="copy the service into this file, or merge the files with -f",
            )
        return _string(value.get("service"), f"{where}.service", path)
    return _string(value, where, path)


def _resolve_extends(name: str, services: dict[str, Service], path: Path, chain: tuple[str, ...]) -> Service:
    service = services[name]
    base_name = service.get("extends")
    if base_name is None:
        return service
    if name in chain:
        raise ComposeFileError(f"circular extends: {' -> '.join((*chain, name))}", path=str(path))
    if base_name not in services:
        raise ComposeFileError(f"service {name!r} extends unknown service {base_name!r}", path=str(path))
    base = _resolve_extends(base_name, services, path, (*chain, name))
    own = {k: v for k, v in service.items() if k != "extends"}
    return _merge(base, own)


# --- 5. merge, profiles, checks ---------------------------------------------


def _merge(base: Service, override: Service) -> Service:
    """Compose's override rules for the keys we keep: labels and depends_on merge
    by key (each dependency entry field by field), profiles are unioned, the rest is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if key == "labels":
            merged[key] = {**base.get(key, {}), **value}
        elif key == "depends_on":
            earlier = base.get(key, {})
            merged[key] = {**earlier, **{dep: {**earlier.get(dep, {}), **entry} for dep, entry in value.items()}}
        elif key == "profiles":
            merged[key] = list(dict.fromkeys([*base.get(key, []), *value]))
        else:
            merged[key] = value
    return merged


def _service_config(name: str, service: Service) -> ServiceConfig:
    scale, replicas = service.get("scale"), service.get("replicas")
    if scale is not None and replicas is not None and scale != replicas:
        raise ComposeFileError(f"service {name!r} sets scale ({scale}) and deploy.replicas ({replicas}) to different values")
    count = replicas if replicas is not None else scale if scale is not None else 1
    if service.get("container_name") and count > 1:
        raise ComposeFileError(
            f"service {name!r} sets container_name and {count} replicas; container names must be unique",
            hint="drop container_name or run a single replica",
        )
    return ServiceConfig(
        name=name,
        image=service.get("image"),
        container_name=service.get("container_name"),
        depends_on=tuple(
            ServiceDependency(dep, entry["condition"], entry.get("required", True)) for dep, entry in service.get("depends_on", {}).items()
        ),
        profiles=tuple(service.get("profiles", ())),
        labels=service.get("labels", {}),
        replicas=count,
        has_build=service.get("build", False),
    )


def _enabled_profiles(flags: tuple[str, ...], env: Mapping[str, str]) -> set[str]:
    """``--profile`` values, else COMPOSE_PROFILES split on commas; "*" enables all."""
    if flags:
        return set(flags)
    return {p.strip() for p in env.get("COMPOSE_PROFILES", "").split(",") if p.strip()}


def _check_services(active: Mapping[str, ServiceConfig], every: Mapping[str, ServiceConfig]) -> None:
    for config in active.values():
        if config.image is None and not config.has_build:
            raise ComposeFileError(f"service {config.name!r} has neither an image nor a build section")
        for dep in config.depends_on:
            if dep.service not in every:
                raise ComposeFileError(f"service {config.name!r} depends on undefined service {dep.service!r}")
            if dep.required and dep.service not in active:
                raise ComposeFileError(
                    f"service {config.name!r} depends on {dep.service!r}, which is disabled by its profiles",
                    hint=f"enable one of these profiles with --profile: {', '.join(every[dep.service].profiles)}",
                )
    _check_no_cycle(active)


def _check_no_cycle(active: Mapping[str, ServiceConfig]) -> None:
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            cycle = " -> ".join((*path[path.index(name) :], name))
            raise ComposeFileError(f"dependency cycle: {cycle}")
        if name in done or name not in active:
            return
        for dep in active[name].depends_on:
            visit(dep.service, (*path, name))
        done.add(name)

    for name in active:
        visit(name, ())


# --- file reading -----------------------------------------------------------


def _absolute(base: Path, path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute against ``base`` and normalised (``..`` folded), like Go's filepath.Abs."""
    return Path(os.path.normpath(base / path))


def _read(path: Path) -> bytes:
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


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ComposeFileError("not UTF-8 text", path=str(path)) from None

"""Read a compose project the way ``docker compose`` v2 (2.26) does, without it.

This is the fallback for hosts without the compose plugin (``resolve.py``
prefers compose itself); ``tests/integration`` holds it to compose's answers
on the same corpus. ``load_project`` runs these steps, each a function below:

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
4. Each document of each file (several per file merge in order): YAML with
   ``!reset``/``!override``, interpolation (``COMPOSE_PROJECT_NAME`` set to
   the name), the keys compose's schema allows, its ``include``s (each a
   project of its own, with its own folder and env file), ``extends`` in
   this file or another (whose relative paths resolve in its own folder).
5. Merge in order, then: depends_on conditions, profiles, implicit
   dependencies (``network_mode``/``ipc``/``pid: service:X``, ``links``,
   ``volumes_from``), and what compose refuses for active services: missing
   env files, undefined services, networks and volumes, cycles.

Only the keys compose-ckpt needs are kept; the others are checked by name only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
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

# The keys compose 2.26's schema allows (besides x-*): anything else is refused there, so here too.
TOP_LEVEL_KEYS = frozenset({"configs", "include", "name", "networks", "secrets", "services", "version", "volumes"})
SERVICE_KEYS = frozenset({
    "annotations", "attach", "blkio_config", "build", "cap_add", "cap_drop", "cgroup", "cgroup_parent", "command",
    "configs", "container_name", "cpu_count", "cpu_percent", "cpu_period", "cpu_quota", "cpu_rt_period",
    "cpu_rt_runtime", "cpu_shares", "cpus", "cpuset", "credential_spec", "depends_on", "deploy", "develop",
    "device_cgroup_rules", "devices", "dns", "dns_opt", "dns_search", "domainname", "entrypoint", "env_file",
    "environment", "expose", "extends", "external_links", "extra_hosts", "gpus", "group_add", "healthcheck",
    "hostname", "image", "init", "ipc", "isolation", "label_file", "labels", "links", "logging", "mac_address",
    "mem_limit", "mem_reservation", "mem_swappiness", "memswap_limit", "network_mode", "networks",
    "oom_kill_disable", "oom_score_adj", "pid", "pids_limit", "platform", "ports", "post_start", "pre_stop",
    "privileged", "profiles", "pull_policy", "read_only", "restart", "runtime", "scale", "secrets", "security_opt",
    "shm_size", "stdin_open", "stop_grace_period", "stop_signal", "storage_opt", "sysctls", "tmpfs", "tty",
    "ulimits", "user", "userns_mode", "uts", "volumes", "volumes_from", "working_dir",
})

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
    documents = [(document, path) for data, path in zip(contents, files) for document in _parse_yaml(data, path)]

    name = _project_name(options.project_name, env, [d for d, _ in documents], [p for _, p in documents], working_dir)
    env["COMPOSE_PROJECT_NAME"] = name  # compose exposes the final name to interpolation
    model = _merged_model(documents, env, working_dir, ())
    _check_conditions(model.services, files[0])

    configs = {service_name: _service_config(service_name, service) for service_name, service in model.services.items()}
    enabled = _enabled_profiles(options.profiles, env)
    active = {n: c for n, c in configs.items() if not c.profiles or "*" in enabled or enabled & set(c.profiles)}
    _check_services(active, configs)
    _check_references({n: model.services[n] for n in active}, model)
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


def _parse_yaml(data: bytes, path: Path) -> list[dict[str, Any]]:
    """The file's documents (compose merges several in one file in order, like several files)."""
    try:
        documents = [d for d in yaml.load_all(_decode(data, path), Loader=_YamlLoader) if d is not None]  # noqa: S506 - a SafeLoader subclass
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

@dataclass
class _Model:
    """What the loader keeps of a project (or of one file of it): services and the declared networks and volumes."""

    services: dict[str, Service] = field(default_factory=dict)
    networks: set[str] = field(default_factory=set)
    volumes: set[str] = field(default_factory=set)


def _merged_model(documents: list[tuple[dict[str, Any], Path]], env: Mapping[str, str], base: Path,
                  including: tuple[Path, ...]) -> _Model:
    """Documents merged in order, each with its ``include``s and ``extends`` resolved; ``base`` resolves relative paths."""
    model = _Model()
    for document, path in documents:
        _check_keys(document, TOP_LEVEL_KEYS, "(root)", path)
        document = interpolate_tree(document, env, source=str(path))
        own = _file_model(document, env, path, base)
        for included in _includes(document.get("include"), env, path, (*including, path)):
            clash = sorted(set(included.services) & (set(model.services) | set(own.services)))
            if clash:
                raise ComposeFileError(f"services.{clash[0]} conflicts with an included service of the same name", path=str(path))
            _add(model, included)
        _add(model, own)
    return model


def _add(model: _Model, part: _Model) -> None:
    for name, service in part.services.items():
        model.services[name] = _merge(model.services[name], service) if name in model.services else service
    model.networks |= part.networks
    model.volumes |= part.volumes


def _file_model(document: dict[str, Any], env: Mapping[str, str], path: Path, base: Path) -> _Model:
    """One interpolated document: its services validated, their ``extends`` resolved."""
    raw_services = document.get("services") or {}
    if not isinstance(raw_services, dict):
        raise ComposeFileError("services must be a mapping", path=str(path))
    services = {}
    for name, raw in raw_services.items():
        if not isinstance(name, str) or not _VALID_SERVICE_NAME.fullmatch(name):
            raise ComposeFileError(f"invalid service name {name!r}", path=str(path), hint="use letters, digits, '.', '_' and '-'")
        services[name] = _validate_service(name, raw, path, base)
    resolved = {name: _resolve_extends(name, services, path, env, ()) for name in services}
    return _Model(resolved, _declared(document, "networks", path), _declared(document, "volumes", path))


def _declared(document: dict[str, Any], key: str, path: Path) -> set[str]:
    value = document.get(key) or {}
    if not isinstance(value, dict):
        raise ComposeFileError(f"{key} must be a mapping", path=str(path))
    return {str(name) for name in value if name not in (RESET_KEYS, OVERRIDE_KEYS)}


def _includes(value: Any, env: Mapping[str, str], path: Path, chain: tuple[Path, ...]) -> list[_Model]:
    """``include:`` entries, each a project of its own (paths relative to the including file)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ComposeFileError("include must be a list", path=str(path))
    models = []
    for entry in value:
        entry = {"path": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or entry.get("path") is None:
            raise ComposeFileError("include entries must be a path or a mapping with a path", path=str(path))
        paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
        files = [_absolute(path.parent, _string(p, "include.path", path)) for p in paths]
        cycle = [f for f in files if f in chain]
        if cycle:
            raise ComposeFileError(f"include cycle: {' -> '.join(map(str, (*chain, cycle[0])))}", path=str(path))
        project_dir = _absolute(path.parent, entry["project_directory"]) if entry.get("project_directory") else files[0].parent
        env_files = entry.get("env_file")
        env_paths = [_absolute(path.parent, e) for e in ([env_files] if isinstance(env_files, str) else env_files or [])]
        included_env = _with_dotenv(dict(env), env_paths or [project_dir / ".env"], required=bool(env_paths))
        try:
            documents = [(d, f) for f in files for d in _parse_yaml(_read(f), f)]
        except ComposeFileError as err:
            raise ComposeFileError(f"include: {err.message}", path=str(path)) from None
        models.append(_merged_model(documents, included_env, project_dir, chain))
    return models


def _validate_service(name: str, raw: Any, path: Path, base: Path) -> Service:
    where = f"services.{name}"
    if not isinstance(raw, dict):
        raise ComposeFileError(f"{where} must be a mapping", path=str(path))
    _check_keys(raw, SERVICE_KEYS, where, path)
    service: Service = {"reset": set(raw.get(RESET_KEYS, ())), "override": set(raw.get(OVERRIDE_KEYS, ()))}
    for key in ("image", "container_name", "network_mode", "ipc", "pid"):
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
    for key in ("links", "volumes_from"):
        if raw.get(key) is not None:
            service[key] = _string_list(raw[key], f"{where}.{key}", path)
    if raw.get("networks") is not None:
        service["networks"] = _networks(raw["networks"], f"{where}.networks", path)
    if raw.get("volumes") is not None:
        service["volumes"] = _named_volumes(raw["volumes"], f"{where}.volumes", path)
    if raw.get("env_file") is not None:
        service["env_file"] = _env_files(raw["env_file"], f"{where}.env_file", path, base)
    return service


def _check_keys(mapping: dict[Any, Any], allowed: frozenset[str], where: str, path: Path) -> None:
    unknown = [str(k) for k in mapping if k not in allowed and k not in (RESET_KEYS, OVERRIDE_KEYS)
               and not str(k).startswith("x-")]
    if unknown:
        raise ComposeFileError(f"{where}: additional property {unknown[0]} is not allowed", path=str(path))


def _string_list(value: Any, where: str, path: Path) -> list[str]:
    if not isinstance(value, list):
        raise ComposeFileError(f"{where} must be a list", path=str(path))
    return [_string(item, where, path) for item in value]


def _networks(value: Any, where: str, path: Path) -> list[str]:
    if isinstance(value, dict):
        return [str(name) for name in value if name not in (RESET_KEYS, OVERRIDE_KEYS)]
    return _string_list(value, where, path)


def _named_volumes(value: Any, where: str, path: Path) -> list[str]:
    """The named volumes a service mounts (``name:/path`` or ``{type: volume, source: name}``), not binds."""
    names = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, str):
            source, sep, _ = item.partition(":")
            if sep and source and not source.startswith((".", "/", "~", "$")) and "/" not in source:
                names.append(source)
        elif isinstance(item, dict) and item.get("type", "volume") == "volume" and item.get("source"):
            names.append(str(item["source"]))
    if not isinstance(value, list):
        raise ComposeFileError(f"{where} must be a list", path=str(path))
    return names


def _env_files(value: Any, where: str, path: Path, base: Path) -> list[str]:
    """The required env files (absolute): compose refuses an active service whose env file is missing."""
    required = []
    for entry in [value] if isinstance(value, (str, dict)) else value if isinstance(value, list) else [None]:
        item = {"path": entry} if isinstance(entry, str) else entry
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise ComposeFileError(f"{where} must be a path, a list of paths or of {{path, required}}", path=str(path))
        if item.get("required", True) is not False:
            required.append(str(_absolute(base, os.path.expanduser(item["path"]))))
    return required


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
    from an earlier file, as in compose; the long form keeps ``condition`` and
    ``required`` unset until after merging (compose merges, then validates), so
    an override may change just one of them.
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
        if entry.get("condition", CONDITIONS[0]) not in CONDITIONS:  # may come from a file merged later
            raise ComposeFileError(f"{entry_where}.condition must be one of {', '.join(CONDITIONS)}", path=str(path))
        if "required" in entry and not isinstance(entry["required"], bool):
            raise ComposeFileError(f"{entry_where}.required must be true or false", path=str(path))
        entries[str(service)] = {k: entry[k] for k in ("condition", "required") if k in entry}
    return entries


def _extends_target(value: Any, where: str, path: Path) -> tuple[str, Path | None]:
    """(service, the file it is in, None for this file)."""
    if isinstance(value, dict):
        other = value.get("file")
        return (_string(value.get("service"), f"{where}.service", path),
                None if other is None else _absolute(path.parent, _string(other, f"{where}.file", path)))
    return _string(value, where, path), None


def _resolve_extends(name: str, services: dict[str, Service], path: Path, env: Mapping[str, str],
                     chain: tuple[tuple[Path, str], ...]) -> Service:
    service = services[name]
    if "extends" not in service:
        return service
    here = (path, name)
    if here in chain:
        steps = " -> ".join(f"{n} ({p.name})" for p, n in (*chain, here))
        raise ComposeFileError(f"circular extends: {steps}", path=str(path))
    base_name, other = service["extends"]
    if other is not None and other != path:  # the other file's own relative paths resolve against its folder
        base_file = _absolute(other, ".")
        documents = [interpolate_tree(d, env, source=str(base_file)) for d in _parse_yaml(_read(base_file), base_file)]
        base_services: dict[str, Service] = {}
        for document in documents:
            for base_service_name, base_raw in (_file_raw_services(document, base_file)).items():
                validated = _validate_service(base_service_name, base_raw, base_file, base_file.parent)
                base_services[base_service_name] = (_merge(base_services[base_service_name], validated)
                                                    if base_service_name in base_services else validated)
        services, path = base_services, base_file
    if base_name not in services:
        raise ComposeFileError(f"service {name!r} extends unknown service {base_name!r}", path=str(path))
    base = _resolve_extends(base_name, services, path, env, (*chain, here))
    own = {k: v for k, v in service.items() if k != "extends"}
    return _merge(base, own)


def _file_raw_services(document: dict[str, Any], path: Path) -> dict[str, Any]:
    raw_services = document.get("services") or {}
    if not isinstance(raw_services, dict):
        raise ComposeFileError("services must be a mapping", path=str(path))
    return {str(k): v for k, v in raw_services.items()}


# --- 5. merge, profiles, checks ---------------------------------------------


def _merge(base: Service, override: Service) -> Service:
    """Compose's override rules for the keys we keep: labels and depends_on merge
    by key (each dependency entry field by field), profiles are unioned, the rest is replaced.
    A key tagged ``!reset`` in the override is dropped, one tagged ``!override`` is replaced whole."""
    merged = {k: v for k, v in base.items() if k not in override.get("reset", ())}
    merged["reset"], merged["override"] = override.get("reset", set()), override.get("override", set())
    for key, value in override.items():
        if key in ("reset", "override"):
            continue
        if key in override.get("override", ()):
            merged[key] = value
        elif key == "labels":
            merged[key] = {**base.get(key, {}), **value}
        elif key == "depends_on":
            earlier = base.get(key, {})
            merged[key] = {**earlier, **{dep: {**earlier.get(dep, {}), **entry} for dep, entry in value.items()}}
        elif key in ("profiles", "networks", "volumes", "links", "volumes_from", "env_file"):
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
            ServiceDependency(dep, entry["condition"], entry.get("required", True))
            for dep, entry in {**_implicit_dependencies(service), **service.get("depends_on", {})}.items()
        ),
        profiles=tuple(service.get("profiles", ())),
        labels=service.get("labels", {}),
        replicas=count,
        has_build=service.get("build", False),
        network_mode=service.get("network_mode"),
    )


def _check_conditions(services: Mapping[str, Service], first_file: Path) -> None:
    """Each depends_on entry has a condition once the files are merged (compose checks then, naming the first file)."""
    for name, service in services.items():
        missing = next((dep for dep, entry in service.get("depends_on", {}).items() if "condition" not in entry), None)
        if missing is not None:
            raise ComposeFileError(f"services.{name}.depends_on.{missing}: condition is required", path=str(first_file))


def _implicit_dependencies(service: Service) -> dict[str, dict[str, Any]]:
    """The services compose makes this one depend on without a depends_on entry: those whose namespaces
    it joins (network_mode, ipc, pid ``service:X``), it links to, or whose volumes it mounts."""
    names = [service[key].removeprefix("service:") for key in ("network_mode", "ipc", "pid")
             if service.get(key, "").startswith("service:")]
    names += [link.partition(":")[0] for link in service.get("links", ())]
    names += [source.partition(":")[0] for source in service.get("volumes_from", ()) if not source.startswith("container:")]
    return {name: {"condition": CONDITIONS[0], "required": True} for name in names}


def _check_references(active: Mapping[str, Service], model: _Model) -> None:
    """Env files of the active services must exist, and the networks and named volumes they use must be
    declared, as compose demands (of disabled services it asks neither)."""
    for name, service in active.items():
        missing = next((env_file for env_file in service.get("env_file", ()) if not os.path.isfile(env_file)), None)
        if missing is not None:
            raise ComposeFileError(f"services.{name}.env_file: env file {missing} not found")
        for network in service.get("networks", ()):
            if network != "default" and network not in model.networks:
                raise ComposeFileError(f"service {name!r} refers to undefined network {network!r}",
                                       hint="declare it under the top-level networks: key")
        for volume in service.get("volumes", ()):
            if volume not in model.volumes:
                raise ComposeFileError(f"service {name!r} refers to undefined volume {volume!r}",
                                       hint="declare it under the top-level volumes: key")


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

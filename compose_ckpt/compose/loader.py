"""Read a compose project the way ``docker compose`` v2 (2.26) does, without it.

This is the fallback for hosts without the compose plugin (``resolve.py``
prefers compose itself); ``tests/integration`` holds it to compose's answers
on the same corpus. ``load_project`` runs these steps: 1-3 in ``discovery.py``, the
YAML of 4 in ``yaml_reader.py``, its services in ``services.py``, the rest below:

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compose_ckpt.compose.discovery import decide_project_name, locate, with_dotenv
from compose_ckpt.compose.interpolation import interpolate_tree
from compose_ckpt.compose.model import (
    CONDITIONS,
    ComposeProject,
    ProjectOptions,
    ServiceConfig,
    ServiceDependency,
    ipam_given,
)
from compose_ckpt.compose.services import (
    TOP_LEVEL_KEYS,
    Service,
    check_keys,
    merge_services,
    resolve_extends,
    string_value,
    validate_service,
)
from compose_ckpt.compose.yaml_reader import OVERRIDE_KEYS, RESET_KEYS, absolute, parse_yaml, read_file
from compose_ckpt.errors import ComposeFileError

_VALID_SERVICE_NAME = re.compile(r"[a-zA-Z0-9._-]+")


def load_project(options: ProjectOptions) -> ComposeProject:
    try:
        return _load_project(options)
    except RecursionError:  # depends_on or extends chains are followed recursively
        raise ComposeFileError("services depend on or extend each other in chains too long to follow",
                               hint="shorten the depends_on and extends chains") from None


def _load_project(options: ProjectOptions) -> ComposeProject:
    located = locate(options)
    files, contents, env, working_dir = located.files, located.contents, located.env, located.working_dir
    documents = [(document, path) for data, path in zip(contents, files) for document in parse_yaml(data, path)]

    name = decide_project_name(options.project_name, env, [d for d, _ in documents], [p for _, p in documents], working_dir)
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
        ipam_given=ipam_given(name, model.network_definitions),
    )


@dataclass
class _Model:
    """What the loader keeps of a project (or of one file of it): services and the declared networks and volumes."""

    services: dict[str, Service] = field(default_factory=dict)
    networks: set[str] = field(default_factory=set)
    volumes: set[str] = field(default_factory=set)
    network_definitions: dict[str, Any] = field(default_factory=dict)  # the last file's definition of each


def _merged_model(documents: list[tuple[dict[str, Any], Path]], env: Mapping[str, str], base: Path,
                  including: tuple[Path, ...]) -> _Model:
    """Documents merged in order, each with its ``include``s and ``extends`` resolved; ``base`` resolves relative paths."""
    model = _Model()
    for document, path in documents:
        check_keys(document, TOP_LEVEL_KEYS, "(root)", path)
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
        model.services[name] = merge_services(model.services[name], service) if name in model.services else service
    model.networks |= part.networks
    model.volumes |= part.volumes
    model.network_definitions.update(part.network_definitions)


def _file_model(document: dict[str, Any], env: Mapping[str, str], path: Path, base: Path) -> _Model:
    """One interpolated document: its services validated, their ``extends`` resolved."""
    raw_services = document.get("services") or {}
    if not isinstance(raw_services, dict):
        raise ComposeFileError("services must be a mapping", path=str(path))
    services = {}
    for name, raw in raw_services.items():
        if not isinstance(name, str) or not _VALID_SERVICE_NAME.fullmatch(name):
            raise ComposeFileError(f"invalid service name {name!r}", path=str(path), hint="use letters, digits, '.', '_' and '-'")
        services[name] = validate_service(name, raw, path, base)
    resolved = {name: resolve_extends(name, services, path, env, ()) for name in services}
    networks = _declared(document, "networks", path)
    definitions = {name: (document.get("networks") or {})[name] for name in networks}
    return _Model(resolved, networks, _declared(document, "volumes", path), definitions)


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
        files = [absolute(path.parent, string_value(p, "include.path", path)) for p in paths]
        cycle = [f for f in files if f in chain]
        if cycle:
            raise ComposeFileError(f"include cycle: {' -> '.join(map(str, (*chain, cycle[0])))}", path=str(path))
        project_dir = absolute(path.parent, entry["project_directory"]) if entry.get("project_directory") else files[0].parent
        env_files = entry.get("env_file")
        env_paths = [absolute(path.parent, e) for e in ([env_files] if isinstance(env_files, str) else env_files or [])]
        included_env = with_dotenv(dict(env), env_paths or [project_dir / ".env"], required=bool(env_paths))
        try:
            documents = [(d, f) for f in files for d in parse_yaml(read_file(f), f)]
        except ComposeFileError as err:
            raise ComposeFileError(f"include: {err.message}", path=str(path)) from None
        models.append(_merged_model(documents, included_env, project_dir, chain))
    return models


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

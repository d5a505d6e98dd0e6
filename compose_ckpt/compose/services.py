"""One service of a compose file: its keys checked against compose's schema and reduced to what we keep.

``validate_service`` keeps image, container_name, labels, depends_on, profiles, scale and replicas,
build, extends, links, volumes_from, networks, named volumes and required env files (a ``Service``);
``resolve_extends`` follows ``extends`` in this file or another (whose relative paths resolve in its own
folder); ``merge_services`` applies compose's override rules when files or documents merge.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from compose_ckpt.compose.interpolation import interpolate_tree
from compose_ckpt.compose.model import CONDITIONS
from compose_ckpt.compose.yaml_reader import OVERRIDE_KEYS, RESET_KEYS, absolute, parse_yaml, read_file
from compose_ckpt.errors import ComposeFileError

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


def validate_service(name: str, raw: Any, path: Path, base: Path) -> Service:
    where = f"services.{name}"
    if not isinstance(raw, dict):
        raise ComposeFileError(f"{where} must be a mapping", path=str(path))
    check_keys(raw, SERVICE_KEYS, where, path)
    service: Service = {"reset": set(raw.get(RESET_KEYS, ())), "override": set(raw.get(OVERRIDE_KEYS, ()))}
    for key in ("image", "container_name", "network_mode", "ipc", "pid"):
        if raw.get(key) is not None:
            service[key] = string_value(raw[key], f"{where}.{key}", path)
    if raw.get("labels") is not None:
        service["labels"] = _labels(raw["labels"], f"{where}.labels", path)
    if raw.get("depends_on") is not None:
        service["depends_on"] = _depends_on(raw["depends_on"], f"{where}.depends_on", path)
    if raw.get("profiles") is not None:
        profiles = raw["profiles"]
        if not isinstance(profiles, list):
            raise ComposeFileError(f"{where}.profiles must be a list", path=str(path))
        service["profiles"] = [string_value(p, f"{where}.profiles", path) for p in profiles]
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


def check_keys(mapping: dict[Any, Any], allowed: frozenset[str], where: str, path: Path) -> None:
    unknown = [str(k) for k in mapping if k not in allowed and k not in (RESET_KEYS, OVERRIDE_KEYS)
               and not str(k).startswith("x-")]
    if unknown:
        raise ComposeFileError(f"{where}: additional property {unknown[0]} is not allowed", path=str(path))


def _string_list(value: Any, where: str, path: Path) -> list[str]:
    if not isinstance(value, list):
        raise ComposeFileError(f"{where} must be a list", path=str(path))
    return [string_value(item, where, path) for item in value]


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
            required.append(str(absolute(base, os.path.expanduser(item["path"]))))
    return required


def string_value(value: Any, where: str, path: Path) -> str:
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
        pairs = [string_value(item, where, path).partition("=")[::2] for item in value]
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
        return {string_value(item, where, path): {"condition": "service_started", "required": True} for item in value}
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
        return (string_value(value.get("service"), f"{where}.service", path),
                None if other is None else absolute(path.parent, string_value(other, f"{where}.file", path)))
    return string_value(value, where, path), None


def resolve_extends(name: str, services: dict[str, Service], path: Path, env: Mapping[str, str],
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
        base_file = absolute(other, ".")
        documents = [interpolate_tree(d, env, source=str(base_file)) for d in parse_yaml(read_file(base_file), base_file)]
        base_services: dict[str, Service] = {}
        for document in documents:
            for base_service_name, base_raw in (_file_raw_services(document, base_file)).items():
                validated = validate_service(base_service_name, base_raw, base_file, base_file.parent)
                base_services[base_service_name] = (merge_services(base_services[base_service_name], validated)
                                                    if base_service_name in base_services else validated)
        services, path = base_services, base_file
    if base_name not in services:
        raise ComposeFileError(f"service {name!r} extends unknown service {base_name!r}", path=str(path))
    base = resolve_extends(base_name, services, path, env, (*chain, here))
    own = {k: v for k, v in service.items() if k != "extends"}
    return merge_services(base, own)


def _file_raw_services(document: dict[str, Any], path: Path) -> dict[str, Any]:
    raw_services = document.get("services") or {}
    if not isinstance(raw_services, dict):
        raise ComposeFileError("services must be a mapping", path=str(path))
    return {str(k): v for k, v in raw_services.items()}


def merge_services(base: Service, override: Service) -> Service:
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

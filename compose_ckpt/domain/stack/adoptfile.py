"""The compose file `adopt` writes beside the user's: network holders as ordinary compose services.

Contract:
- For each service S that would own a network namespace (no `network_mode`, or `bridge`/`none`), the file
  declares a holder service `S-net` (compose-ckpt's holder image, never pulled) that owns S's namespace:
  S's ports, exposed ports, networks with their aliases plus S's name (and its container_name), hostname,
  domain name, DNS settings, extra hosts, links, MAC address and `net.*` sysctls, S's profiles (active
  exactly when S is), `restart: unless-stopped`. S itself gets `network_mode: service:S-net`, the label
  naming its holder, and `!reset` on each of those keys it had (`!override` on sysctls when other ones
  stay). A service joining S's namespace (`network_mode: service:S`) joins `S-net` instead, so that
  recreating S never leaves it in a namespace no container owns.
- Replicas of S (`--scale`, `deploy.replicas`) all join the one `S-net`: compose resolves
  `network_mode: service:X` to X's first container, so a holder per replica cannot be written in compose.
  They share one namespace, as the containers of a Kubernetes pod do (they cannot bind the same port).
- The file starts with a comment line holding its metadata (JSON): how the project's `.env` was changed,
  to undo exactly that, and the digest of the inputs it was generated from (the user's compose files and
  `.env`), so that an unchanged project is recognised without running compose.
- `.env`: `COMPOSE_FILE` lists the files compose read before, then this one (joined with
  `COMPOSE_PATH_SEPARATOR`, else the OS's), replacing the line that set it, else appended; `.env` is
  created when there was none. When compose in that folder with no flag would name the project otherwise
  (it was given -p), `COMPOSE_PROJECT_NAME` names it, the same way, so that plain `docker compose` there
  acts on the adopted project.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from compose_ckpt.const import HOLDER_IMAGE, HOLDER_SERVICE_SUFFIX, LABEL_HOLDER_FOR, LABEL_NETWORK_HOLDER
from compose_ckpt.errors import ConflictError

GENERATED_FILE = "compose.ckpt.yaml"
_METADATA = "# compose-ckpt adopt: "
_HEADER = ("# Written by `compose-ckpt adopt`: network holders for Docker 28+ (docs/engine.md). Do not edit;\n"
           "# `compose-ckpt adopt` regenerates it, `compose-ckpt unadopt` removes it and restores .env.\n")
# The keys of a service that belong to its network namespace: they move to the holder.
NAMESPACE_KEYS = ("ports", "expose", "networks", "hostname", "domainname", "dns", "dns_opt", "dns_search",
                  "extra_hosts", "links", "external_links", "mac_address")
COMPOSE_FILE = "COMPOSE_FILE"
COMPOSE_PROJECT_NAME = "COMPOSE_PROJECT_NAME"
_WRITTEN_KEYS = (COMPOSE_FILE, COMPOSE_PROJECT_NAME)  # the `.env` settings adopt may write


class _Reset:
    """`key: !reset`: the key is dropped from what the files before set."""


class _Override:
    """`key: !override VALUE`: VALUE replaces what the files before set, instead of merging with it."""

    def __init__(self, value: Any) -> None:
        self.value = value


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Reset, lambda dumper, _: dumper.represent_scalar("!reset", ""))
_Dumper.add_representer(_Override, lambda dumper, data: dumper.represent_mapping("!override", data.value))


def holder_service(service: str) -> str:
    return f"{service}{HOLDER_SERVICE_SUFFIX}"


def owns_namespace(config: Mapping[str, Any]) -> bool:
    """A service (compose's resolved config) whose containers get a network namespace of their own."""
    return str(config.get("network_mode") or "bridge") in ("bridge", "none", "default")


def generated_services(services: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The `services:` of the generated file for the user's services (`docker compose config --format json`'s
    `services`, all profiles enabled)."""
    held = {name for name, config in services.items() if owns_namespace(config)}
    clash = sorted(holder_service(name) for name in held if holder_service(name) in services)
    if clash:
        raise ConflictError(f"the project already has services named {', '.join(clash)}, the names of network holders",
                            hint="Rename them; adopt names the holder of service S `S-net`.")
    generated: dict[str, Any] = {}
    for name, config in services.items():
        mode = str(config.get("network_mode") or "")
        joined = mode.removeprefix("service:") if mode.startswith("service:") else None
        if name in held:
            generated[holder_service(name)] = _holder(name, config)
            generated[name] = _moved_onto_holder(name, config)
        elif joined in held:
            generated[name] = {"network_mode": f"service:{holder_service(joined)}"}
    return generated


def _holder(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    holder: dict[str, Any] = {"image": HOLDER_IMAGE, "pull_policy": "never"}
    mode = str(config.get("network_mode") or "")
    if mode in ("bridge", "none"):
        holder["network_mode"] = mode
    for key in NAMESPACE_KEYS:
        if config.get(key) not in (None, [], {}, ""):
            holder[key] = config[key]
    if mode not in ("bridge", "none"):
        names = [name, *([config["container_name"]] if config.get("container_name") else [])]
        networks = dict(config.get("networks") or {"default": None})
        holder["networks"] = {network: {**(endpoint or {}), "aliases": sorted({*(endpoint or {}).get("aliases", []), *names})}
                              for network, endpoint in networks.items()}
    sysctls = {key: value for key, value in (config.get("sysctls") or {}).items() if key.startswith("net.")}
    if sysctls:
        holder["sysctls"] = sysctls
    if config.get("profiles"):
        holder["profiles"] = list(config["profiles"])
    # It runs one static binary that waits for signals: it needs no capability (as holders.holder_spec).
    holder.update({"labels": {LABEL_HOLDER_FOR: name}, "cap_drop": ["ALL"], "restart": "unless-stopped",
                   "stop_signal": "SIGKILL"})
    return holder


def _moved_onto_holder(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    moved: dict[str, Any] = {"network_mode": f"service:{holder_service(name)}",
                             "labels": {LABEL_NETWORK_HOLDER: holder_service(name)}}
    for key in NAMESPACE_KEYS:
        if key in config:
            moved[key] = _Reset()
    sysctls = config.get("sysctls") or {}
    if any(key.startswith("net.") for key in sysctls):
        kept = {key: value for key, value in sysctls.items() if not key.startswith("net.")}
        moved["sysctls"] = _Override(kept) if kept else _Reset()
    return moved


@dataclass(frozen=True)
class EnvChange:
    """How one setting of `.env` was changed: `created` (there was no `.env`), `appended` (no line set it) or
    `replaced` (`line` is the original line, without its end of line)."""

    how: str
    line: str | None = None
    added_newline: bool = False  # appended to a last line that had no end of line

    def as_dict(self) -> dict[str, Any]:
        return {"how": self.how, "line": self.line, "added_newline": self.added_newline}

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> EnvChange:
        return cls(str(document["how"]), document.get("line"), bool(document.get("added_newline")))


@dataclass(frozen=True)
class Metadata:
    env: EnvChange  # of COMPOSE_FILE
    inputs: str  # inputs_digest() of what the file was generated from
    project_env: EnvChange | None = None  # of COMPOSE_PROJECT_NAME, when adopt wrote it


def render(services: Mapping[str, Any], metadata: Metadata) -> str:
    record = {"env": metadata.env.as_dict(), "inputs": metadata.inputs,
              **({"project_env": metadata.project_env.as_dict()} if metadata.project_env else {})}
    header = _METADATA + json.dumps(record, sort_keys=True)
    body = yaml.dump({"services": dict(services)}, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    return f"{header}\n{_HEADER}{body}"


def read_metadata(text: str) -> Metadata | None:
    """The metadata of a generated file, None when `text` is not one."""
    first = text.split("\n", 1)[0]
    if not first.startswith(_METADATA):
        return None
    try:
        document = json.loads(first.removeprefix(_METADATA))
        project_env = document.get("project_env")
        return Metadata(EnvChange.from_dict(document["env"]), str(document["inputs"]),
                        EnvChange.from_dict(project_env) if project_env else None)
    except (ValueError, KeyError, TypeError):
        return None


def body(text: str) -> str:
    """A generated file without its metadata line: what is compared to find drift."""
    return text.split("\n", 1)[1] if "\n" in text else ""


def inputs_digest(files: Sequence[bytes], env: bytes | None) -> str:
    """sha256 of the user's compose files and `.env` without the lines adopt writes."""
    digest = hashlib.sha256()
    for data in files:
        digest.update(len(data).to_bytes(8, "big") + data)
    if env is not None:
        written = [_setting_line(key) for key in _WRITTEN_KEYS]
        digest.update(b"".join(line for line in env.splitlines(keepends=True) if not any(w.match(line) for w in written)))
    return digest.hexdigest()


def with_setting(env: bytes | None, key: str, value: str) -> tuple[bytes, EnvChange]:
    """`.env` (None: none yet) with `key=value`, and how it was changed."""
    line = f"{key}={value}".encode()
    if env is None:
        return line + b"\n", EnvChange("created")
    lines = env.splitlines(keepends=True)
    index = _last_line_setting(lines, key)
    if index is not None:  # the last one wins, as in compose's reading
        existing = lines[index]
        lines[index] = line + existing[len(existing.rstrip(b"\r\n")):]
        return b"".join(lines), EnvChange("replaced", existing.rstrip(b"\r\n").decode("utf-8", "surrogateescape"))
    joiner = b"" if not env or env.endswith(b"\n") else b"\n"
    return env + joiner + line + b"\n", EnvChange("appended", added_newline=bool(joiner))


def without_setting(env: bytes, key: str, change: EnvChange) -> bytes | None:
    """`.env` as it was before `with_setting` made `change` to `key` (None: remove the file). Lines the user
    added or changed since are kept; only the line of `key` is put back."""
    lines = env.splitlines(keepends=True)
    index = _last_line_setting(lines, key)
    if index is not None:
        if change.how == "replaced" and change.line is not None:
            ending = lines[index][len(lines[index].rstrip(b"\r\n")):]
            lines[index] = change.line.encode("utf-8", "surrogateescape") + ending
        else:
            del lines[index]
            if change.added_newline and index == len(lines) and lines:
                lines[-1] = lines[-1].rstrip(b"\r\n")
    restored = b"".join(lines)
    return None if change.how == "created" and not restored else restored


def _setting_line(key: str) -> re.Pattern[bytes]:
    return re.compile(rb"^[ \t]*(?:export[ \t]+)?" + re.escape(key.encode()) + rb"[ \t]*=")


def _last_line_setting(lines: Sequence[bytes], key: str) -> int | None:
    line = _setting_line(key)
    return next((i for i in reversed(range(len(lines))) if line.match(lines[i])), None)


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!reset", lambda loader, node: _Reset())
_Loader.add_constructor("!override", lambda loader, node: _Override(loader.construct_mapping(node, deep=True)))  # type: ignore[arg-type]


def changed_services(text: str, services: Mapping[str, Any]) -> list[str]:
    """The services whose block in the generated file `text` differs from what `services` (the current
    `generated_services`) says: added, removed or changed."""
    try:
        written = (yaml.load(text, Loader=_Loader) or {}).get("services") or {}  # noqa: S506 (a safe loader)
    except yaml.YAMLError:
        return sorted(services)
    current = yaml.load(yaml.dump(dict(services), Dumper=_Dumper), Loader=_Loader)  # noqa: S506
    return sorted(name for name in {*written, *current} if _plain(written.get(name)) != _plain(current.get(name)))


def _plain(value: Any) -> Any:
    """`value` with the tags as comparable markers."""
    if isinstance(value, _Reset):
        return "!reset"
    if isinstance(value, _Override):
        return ("!override", _plain(value.value))
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value

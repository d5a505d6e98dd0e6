"""The compose project as compose-ckpt sees it: plain, frozen values.

Only what checkpointing needs is kept (names, images, ordering, scale); every
other compose key is read past. The loader in ``loader.py`` builds these.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")


@dataclass(frozen=True)
class ServiceDependency:
    service: str
    condition: str = "service_started"
    # required=False: compose starts the service even if this dependency is missing.
    required: bool = True


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    image: str | None
    container_name: str | None
    depends_on: tuple[ServiceDependency, ...]
    profiles: tuple[str, ...]
    labels: Mapping[str, str]
    replicas: int  # deploy.replicas, else scale, else 1
    has_build: bool
    network_mode: str | None = None  # as compose prints it: "host", "service:vpn", "container:ID", ...


@dataclass(frozen=True)
class ComposeProject:
    name: str
    working_dir: Path
    config_files: tuple[Path, ...]  # absolute, in merge order
    services: Mapping[str, ServiceConfig]  # active services only, in file order
    disabled_services: tuple[str, ...]  # excluded by profiles
    # The bytes the project was loaded from, so the hash matches what was parsed
    # even if the files change on disk afterwards.
    file_contents: tuple[bytes, ...] = field(default=(), repr=False)
    # The networks (as Docker names them) whose `ipam.config` the files give: Docker shows a network given
    # a subnet and gateway exactly like one it picked them for, so a restore learns which from here.
    ipam_given: frozenset[str] = frozenset()

    def as_dict(self) -> dict[str, Any]:
        """The stable ``config --json`` document: name and, per active service (by name), what a snapshot uses."""
        return {
            "name": self.name,
            "services": {
                name: {
                    "image": service.image,
                    "container_name": service.container_name,
                    "depends_on": {dep.service: {"condition": dep.condition, "required": dep.required}
                                   for dep in sorted(service.depends_on, key=lambda dep: dep.service)},
                    "network_mode": service.network_mode,
                    "replicas": service.replicas,
                }
                for name, service in sorted(self.services.items())
            },
        }

    def config_hash(self) -> str:
        """sha256 hex digest of the config files' bytes, concatenated in merge order."""
        return hashlib.sha256(b"".join(self.file_contents)).hexdigest()


def ipam_given(project_name: str, networks: Mapping[str, Any]) -> frozenset[str]:
    """Of a project's top-level `networks` (key -> definition, interpolated), the Docker names of those given an
    `ipam.config` (their `name:`, else `<project>_<key>`), as `docker compose` creates them."""
    given = set()
    for key, definition in networks.items():
        if isinstance(definition, Mapping) and not definition.get("external") \
                and isinstance(definition.get("ipam"), Mapping) and definition["ipam"].get("config"):
            given.add(str(definition.get("name") or f"{project_name}_{key}"))
    return frozenset(given)


@dataclass(frozen=True)
class ProjectOptions:
    """The compose CLI's global flags, plus the environment and cwd they apply to."""

    files: tuple[str, ...] = ()  # -f
    project_name: str | None = None  # -p
    project_directory: str | None = None  # --project-directory
    profiles: tuple[str, ...] = ()  # --profile
    env_files: tuple[str, ...] = ()  # --env-file, replaces the default .env
    environ: Mapping[str, str] | None = None  # None: os.environ
    cwd: Path | None = None  # None: Path.cwd()

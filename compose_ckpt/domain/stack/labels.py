"""A compose project rebuilt from the labels docker compose puts on its containers.

The sidecar sees containers, not compose files: compose records on each
container its project, service, dependencies, config files and working folder,
which is all that snapshot and restore need (see `compose.model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from compose_ckpt.compose import ComposeProject, ServiceConfig, ServiceDependency
from compose_ckpt.compose.model import CONDITIONS
from compose_ckpt.const import (
    LABEL_CONFIG_FILES,
    LABEL_DEPENDS_ON,
    LABEL_ONEOFF,
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_WORKING_DIR,
)
from compose_ckpt.engine import ContainerInfo
from compose_ckpt.errors import UsageError


def parse_depends_on(text: str) -> tuple[ServiceDependency, ...]:
    """`kv:service_started:false,db:service_healthy:true` (service:condition:restart) -> dependencies."""
    dependencies = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        service, _, rest = entry.partition(":")
        condition = rest.partition(":")[0] or "service_started"
        if not service or condition not in CONDITIONS:
            raise UsageError(f"invalid {LABEL_DEPENDS_ON} entry {entry!r}",
                             hint="compose writes entries as service:condition:restart, comma-separated.")
        dependencies.append(ServiceDependency(service=service, condition=condition))
    return tuple(dependencies)


def compose_project_from_labels(project_name: str, containers: Sequence[ContainerInfo]) -> ComposeProject:
    """The compose project `project` as its containers' labels describe it (one-off `run` containers ignored)."""
    members = [c for c in containers
               if c.labels.get(LABEL_PROJECT) == project_name and c.labels.get(LABEL_ONEOFF, "False") != "True"
               and c.labels.get(LABEL_SERVICE)]
    if not members:
        raise UsageError(f"no container carries the label {LABEL_PROJECT}={project_name}")
    by_service: dict[str, list[ContainerInfo]] = {}
    for container in sorted(members, key=lambda c: c.name):
        by_service.setdefault(container.labels[LABEL_SERVICE], []).append(container)
    services = {
        name: ServiceConfig(
            name=name, image=replicas[0].image, container_name=None,  # found by labels, like compose itself
            depends_on=parse_depends_on(replicas[0].labels.get(LABEL_DEPENDS_ON, "")),
            profiles=(), labels=dict(replicas[0].labels), replicas=len(replicas), has_build=False,
        )
        for name, replicas in by_service.items()
    }
    first = members[0].labels
    config_files = tuple(Path(p) for p in first.get(LABEL_CONFIG_FILES, "").split(",") if p)
    return ComposeProject(name=project_name, working_dir=Path(first.get(LABEL_WORKING_DIR) or "/"),
                          config_files=config_files, services=services, disabled_services=())

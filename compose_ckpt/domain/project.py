"""A compose project as it runs: its services and the containers that belong to each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from compose_ckpt.compose import ComposeProject
from compose_ckpt.const import LABEL_CONTAINER_NUMBER, LABEL_ONEOFF, LABEL_PROJECT, LABEL_SERVICE
from compose_ckpt.engine import ContainerInfo, Engine
from compose_ckpt.errors import ConflictError, NotFoundError, UsageError


@dataclass(frozen=True)
class ServiceContainers:
    service: str
    containers: tuple[ContainerInfo, ...]


class Project:
    def __init__(self, compose: ComposeProject, engine: Engine) -> None:
        self.compose = compose
        self.engine = engine

    @property
    def name(self) -> str:
        return self.compose.name

    def dependencies(self) -> dict[str, list[str]]:
        return {name: [dep.service for dep in service.depends_on] for name, service in self.compose.services.items()}

    def select(self, requested: Sequence[str]) -> list[str]:
        """The requested service names (all active services when none), checked against the project."""
        known = list(self.compose.services)
        unknown = [name for name in requested if name not in known]
        if unknown:
            disabled = [name for name in unknown if name in self.compose.disabled_services]
            hint = "Enable its profile with --profile." if disabled else None
            raise UsageError(
                f"no such service in project {self.name}: {', '.join(unknown)} (services: {', '.join(known) or 'none'})",
                hint=hint,
            )
        return list(dict.fromkeys(requested)) or known

    def containers(self, service: str, listed: Sequence[ContainerInfo] | None = None) -> list[ContainerInfo]:
        """The service's containers: by container_name when set, else by compose labels, in number order.

        `listed`: the project's labelled containers, when the caller has already listed them."""
        config = self.compose.services[service]
        if config.container_name:
            container = self.engine.inspect(config.container_name)
            return [container] if container else []
        if listed is None:
            listed = self.engine.list_containers({LABEL_PROJECT: self.name, LABEL_SERVICE: service})
        found = [c for c in listed
                 if c.labels.get(LABEL_SERVICE) == service and c.labels.get(LABEL_ONEOFF, "False") != "True"]
        return sorted(found, key=lambda c: int(c.labels.get(LABEL_CONTAINER_NUMBER, "0") or 0))

    def resolve(self, services: Sequence[str]) -> list[ServiceContainers]:
        """One listing of the project's containers for all services, rather than one per service."""
        by_label = any(not self.compose.services[name].container_name for name in services)
        listed = self.engine.list_containers({LABEL_PROJECT: self.name}) if by_label else []
        return [ServiceContainers(name, tuple(self.containers(name, listed))) for name in services]

    def running_containers(self, services: Sequence[str]) -> list[ServiceContainers]:
        """Like `resolve`, but every service must have containers and all of them must be running."""
        resolved = self.resolve(services)
        for entry in resolved:
            if not entry.containers:
                raise NotFoundError(
                    f"service {entry.service} of project {self.name} has no container",
                    hint="Start the stack first (`docker compose up -d`), or check -p/-f name the right project.",
                )
            not_running = [c for c in entry.containers if not c.running]
            if not_running:
                states = ", ".join(f"{c.name} is {c.status}" for c in not_running)
                raise ConflictError(f"service {entry.service} is not running: {states}",
                                    hint="Only running containers can be checkpointed; start or unpause them first.")
        return resolved

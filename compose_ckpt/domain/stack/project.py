"""A compose project as it runs: its services and the containers that belong to each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from compose_ckpt.compose import ComposeProject
from compose_ckpt.const import LABEL_CONTAINER_NUMBER, LABEL_HOLDER_FOR, LABEL_ONEOFF, LABEL_PROJECT, LABEL_SERVICE
from compose_ckpt.domain.ports import EnginePort
from compose_ckpt.engine import ContainerInfo
from compose_ckpt.errors import ConflictError, NotFoundError, UsageError


@dataclass(frozen=True)
class ServiceContainers:
    service: str
    containers: tuple[ContainerInfo, ...]


class Project:
    def __init__(self, compose: ComposeProject, engine: EnginePort) -> None:
        self.compose = compose
        self.engine = engine

    @property
    def name(self) -> str:
        return self.compose.name

    @property
    def holder_services(self) -> list[str]:
        """The network holder services `adopt` declared (adoptfile.py): recorded with the services they hold
        the namespace of, never taken as services of their own."""
        return [name for name, service in self.compose.services.items() if service.labels.get(LABEL_HOLDER_FOR)]

    def dependencies(self) -> dict[str, list[str]]:
        holders = set(self.holder_services)
        return {name: [dep.service for dep in service.depends_on if dep.service not in holders]
                for name, service in self.compose.services.items() if name not in holders}

    def select(self, requested: Sequence[str]) -> list[str]:
        """The requested service names (all active services but network holders when none), checked against
        the project."""
        holders = self.holder_services
        known = [name for name in self.compose.services if name not in holders]
        held = [name for name in requested if name in holders]
        if held:
            raise UsageError(f"{', '.join(held)}: the network holder of "
                             f"{', '.join(self.compose.services[name].labels[LABEL_HOLDER_FOR] for name in held)}, "
                             "recorded and restored with it", hint="Name the service it holds the namespace of.")
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

    def running_containers(self, services: Sequence[str]) -> tuple[list[ServiceContainers], dict[str, str]]:
        """The running containers of `services`, and the services left out, each with the reason.

        A service is left out when it has no running container and every one it has finished on its
        own (exit code 0: a one-shot job). Any other service must have containers, all running or finished
        so: one left `created` (never started: its start or a dependency's failed, as when `docker compose
        up` fails) or ended with an error is refused, as its state would be left out without a word."""
        taken: list[ServiceContainers] = []
        skipped: dict[str, str] = {}
        for entry in self.resolve(services):
            if not entry.containers:
                raise NotFoundError(
                    f"service {entry.service} of project {self.name} has no container",
                    hint="Start the stack first (`docker compose up -d`), or check -p/-f name the right project.",
                )
            in_the_way = [c for c in entry.containers if not c.running and not _finished(c)]
            if in_the_way:
                states = ", ".join(f"{c.name} is {_state(c)}" for c in in_the_way)
                raise ConflictError(f"service {entry.service} is not running: {states}",
                                    hint="Only running containers can be checkpointed; start or unpause them first "
                                         "(`docker compose up -d`), or remove the ones not meant to run.")
            running = tuple(c for c in entry.containers if c.running)
            if running:
                taken.append(ServiceContainers(entry.service, running))
            else:
                skipped[entry.service] = ", ".join(f"{c.name} {_state(c)}" for c in entry.containers)
        if not taken:
            raise ConflictError(f"no service of project {self.name} is running: {', '.join(skipped.values())}",
                                hint="Start the stack first (`docker compose up -d`).")
        return taken, skipped


def _finished(container: ContainerInfo) -> bool:
    """Ended on its own with success: a one-shot job, nothing in memory to keep."""
    return container.status == "exited" and container.exit_code == 0


def _state(container: ContainerInfo) -> str:
    if container.status == "created":
        error = str((container.attrs.get("State") or {}).get("Error") or "")
        return f"never started ({error})" if error else "never started"
    if container.status == "exited":
        return f"exited with code {container.exit_code}"
    return container.status

"""A stack as `ps` shows it: per service and container, whether a snapshot would take it and whether this
engine could restore it; and what is out of order around it (stale joins, abandoned network holders, an
adoption its compose files no longer match).

Looking is not quite read-only: restart policies held back by a `snapshot --stop` are put back on the
containers found running again (held_policies.still_held), as every command that looks at a project does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from compose_ckpt.domain.ports import ComposePort
from compose_ckpt.domain.stack.adopt import drift
from compose_ckpt.domain.stack.held_policies import still_held
from compose_ckpt.domain.stack.holders import abandoned_holders, network_form, stale_join
from compose_ckpt.domain.stack.project import Project
from compose_ckpt.domain.store.store import SnapshotStore

STALE_JOIN = "stale join"  # the network of a container whose join target is gone
MISSING = "missing"  # the state of a service without a container


@dataclass(frozen=True)
class ContainerOverview:
    service: str
    container: str | None  # None: the service has no container (state MISSING)
    state: str  # Docker's status of the container, or MISSING
    snapshot: bool  # a snapshot would take it: it runs, in a form this engine can restore
    network: str | None  # its network form (holders.NetworkForm), STALE_JOIN, or None without a container
    restorable: bool  # this engine could restore it in its network form
    held_policy: str | None  # its restart policy, held back by a `snapshot --stop` until it runs restored


@dataclass(frozen=True)
class StackOverview:
    project: str
    engine_version: str
    containers: list[ContainerOverview]  # in the project's service order, missing services last
    stale_joins: list[str]  # why each container with a stale join cannot be restored
    abandoned_holders: list[str]  # names of network holders no container joins any more
    drift: str | None  # what no longer matches in an adopted project, or None


def stack_overview(project: Project, store: SnapshotStore, compose: Callable[[], ComposePort]) -> StackOverview:
    """The overview of `project`'s active services; `compose` runs `docker compose config` if the adoption
    check needs it."""
    version = project.engine.info().server_version
    held = still_held(project.engine, store, project.name)
    services = project.select([])
    rows: list[ContainerOverview] = []
    stale: list[str] = []
    for entry in project.resolve(services):
        for container in entry.containers:
            form = network_form(container.attrs)
            restorable, network = form.restorable_on(version), form.value
            if reason := stale_join(project.engine, container):
                network, restorable = STALE_JOIN, False
                stale.append(reason)
            policy = held[container.id].policy.as_text() if container.id in held else None
            rows.append(ContainerOverview(entry.service, container.name, container.status,
                                          container.running and restorable, network, restorable, policy))
    rows += [ContainerOverview(name, None, MISSING, False, None, False, None)
             for name in services if not any(row.service == name for row in rows)]
    abandoned = [holder.name for holder in abandoned_holders(project.engine, project.name)]
    return StackOverview(project.name, version, rows, stale, abandoned, drift(project, compose))

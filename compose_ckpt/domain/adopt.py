"""`adopt`: put running services into the restorable form, each container joined to its network holder.

A one-time cold restart per container: it is stopped (gracefully, with its own stop
timeout), removed, its holder created with the namespace's settings, and the container
created again as it was, joined to the holder, and started if it was running. A
container that fails half-way is put back as it was. Containers that join the
adopted one's namespace (`network_mode: service:X`) or take its ipc, pid or volumes
are recreated after it, joined to its new self.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from compose_ckpt.const import LABEL_HOLDER_FOR, LABEL_NETWORK_HOLDER, LABEL_SERVICE
from compose_ckpt.domain.containers import create_holder
from compose_ckpt.domain.holders import NetworkForm, holder_name, holder_spec, joined_spec, network_form
from compose_ckpt.domain.ordering import dependency_levels
from compose_ckpt.domain.parallel import DEFAULT_PARALLEL, ProgressCallback, run_parallel
from compose_ckpt.domain.ports import EnginePort
from compose_ckpt.domain.project import Project
from compose_ckpt.domain.store import SnapshotStore
from compose_ckpt.engine import ContainerInfo
from compose_ckpt.engine.specs import referenced_containers
from compose_ckpt.errors import CkptError, EngineError


@dataclass(frozen=True)
class AdoptionPlan:
    service: str
    container: ContainerInfo
    form: NetworkForm
    level: int  # dependency level of the service: a level is adopted at once, after the one before

    @property
    def needed(self) -> bool:
        return self.form is NetworkForm.OWN


@dataclass(frozen=True)
class AdoptedContainer:
    service: str
    container: str
    holder: str | None
    action: str  # adopted | already adopted | host network (no holder needed) | shares a namespace | rejoined


def plan_adoption(project: Project, services: Sequence[str]) -> list[AdoptionPlan]:
    """Every container of the selected services (dependencies first) with its network form."""
    selected = project.select(services)
    levels = dependency_levels(project.dependencies(), selected)
    return [AdoptionPlan(service, container, network_form(container.attrs), index)
            for index, level in enumerate(levels) for service in level for container in project.containers(service)]


def adopt(project: Project, store: SnapshotStore, plans: Sequence[AdoptionPlan], *,
          progress: ProgressCallback = lambda name, phase: None, parallel: int = DEFAULT_PARALLEL,
          stop_timeout: int | None = None) -> list[AdoptedContainer]:
    """Adopt what `plans` say needs it, a dependency level at a time (containers of one level at once:
    each waits out its own stop timeout). Stops at the first level with a failure; what was adopted stays."""
    engine = project.engine
    results: list[AdoptedContainer] = []
    with store.locked(project.name):
        for level in sorted({plan.level for plan in plans}):
            members = [plan for plan in plans if plan.level == level]
            for plan in members:
                if not plan.needed and all(row.container != plan.container.name for row in results):  # not rejoined
                    holder = plan.container.labels.get(LABEL_NETWORK_HOLDER)
                    action = _SKIPPED[plan.form]
                    if holder and plan.form is NetworkForm.ADOPTED and _start_stopped_holder(engine, holder, progress):
                        action = "holder started"
                    results.append(AdoptedContainer(plan.service, plan.container.name, holder, action))
            needed = [plan for plan in members if plan.needed]
            outcome = run_parallel(range(len(needed)), partial(_adopt_indexed, engine, needed, progress, stop_timeout), parallel)
            for index, plan in enumerate(needed):
                if index in outcome.results:
                    results.append(outcome.results[index])
                    results += _rejoin_dependents(engine, project, plan.container,
                                                  outcome.results[index].holder or "", progress)
            outcome.raise_first()
    return results


def _adopt_indexed(engine: EnginePort, plans: Sequence[AdoptionPlan], progress: ProgressCallback,
                   stop_timeout: int | None, index: int) -> AdoptedContainer:
    plan = plans[index]
    current = engine.inspect(plan.container.id)
    if current is None:
        raise EngineError(f"container {plan.container.name} disappeared before it could be adopted")
    progress(current.name, "adopting")
    holder = adopt_container(engine, current, stop_timeout)
    progress(current.name, "adopted")
    return AdoptedContainer(plan.service, current.name, holder, "adopted")


def _rejoin_dependents(engine: EnginePort, project: Project, adopted: ContainerInfo, holder: str,
                       progress: ProgressCallback) -> list[AdoptedContainer]:
    rejoined = []
    for dependent in _dependents(engine, project, adopted.id):
        progress(dependent.name, "rejoining")
        _rejoin(engine, dependent, adopted)
        rejoined.append(AdoptedContainer(dependent.labels.get(LABEL_SERVICE, ""), dependent.name, holder, "rejoined"))
    return rejoined


def _start_stopped_holder(engine: EnginePort, holder: str, progress: ProgressCallback) -> bool:
    """Start `holder` if it exists but is not running (`docker compose kill` kills holders too, and
    compose cannot start a container joined to a stopped one); True when it was started."""
    found = engine.inspect(holder)
    if found is None or found.running or found.paused:
        return False
    progress(holder, "starting holder")
    engine.start(found.id)
    return True


_SKIPPED = {
    NetworkForm.ADOPTED: "already adopted",
    NetworkForm.HOST: "host network (no holder needed)",
    NetworkForm.SHARED: "shares a namespace (no holder needed)",
}


def adopt_container(engine: EnginePort, container: ContainerInfo, stop_timeout: int | None = None) -> str:
    """Replace `container` by its holder and itself joined to it; return the holder's name.
    `stop_timeout`: seconds before a stop kills (default: the container's own).

    On failure the container is recreated as it was (and started if it was running)."""
    recorded = container.attrs
    was_running = container.running or container.paused
    holder = holder_name(container.name)
    spec = holder_spec(recorded, engine.ensure_holder_image())
    in_the_way = engine.inspect(holder)
    if in_the_way is not None and in_the_way.labels.get(LABEL_HOLDER_FOR) != container.name:
        raise EngineError(f"a container named {holder} is in the way of {container.name}'s network holder",
                          hint=f"Remove it (`docker rm -f {holder}`) and adopt again.")
    if in_the_way is not None:
        # Its container was removed (a plain `docker compose down`) and created anew with a namespace of
        # its own: the old holder only keeps the ports and names the new one must get.
        engine.remove(in_the_way.id)
    if was_running:
        engine.stop(container.id, stop_timeout)
    engine.remove(container.id)
    created: list[str] = []
    try:
        holder_id = create_holder(engine, spec)
        created.append(holder_id)
        app = engine.create_container(joined_spec(recorded, holder))
        created.append(app.id)
        if was_running:
            engine.start(app.id)
    except CkptError:
        for container_id in reversed(created):
            engine.remove(container_id)
        _put_back(engine, recorded, was_running)
        raise
    return holder


def _put_back(engine: EnginePort, recorded: dict[str, Any], was_running: bool) -> None:
    restored = engine.create_container(recorded)
    if was_running:
        engine.start(restored.id)


def _dependents(engine: EnginePort, project: Project, container_id: str) -> list[ContainerInfo]:
    """The project's containers that join or take from the container `container_id`."""
    return [c for service in project.select([]) for c in project.containers(service)
            if container_id in referenced_containers(c.attrs)]


def _rejoin(engine: EnginePort, dependent: ContainerInfo, adopted: ContainerInfo) -> None:
    """Recreate `dependent` pointing at the adopted container's new self (as compose would, so that
    `docker compose up` finds it as it expects): its network is then the holder's, through it."""
    was_running = dependent.running or dependent.paused
    if was_running:
        engine.stop(dependent.id)
    engine.remove(dependent.id)
    rejoined = engine.create_container(dependent.attrs, {adopted.id: adopted.name})
    if was_running:
        engine.start(rejoined.id)

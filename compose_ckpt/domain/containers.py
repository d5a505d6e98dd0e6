"""Recreating a snapshot's containers from the configuration recorded when it was taken."""

from __future__ import annotations

from collections.abc import Sequence

from compose_ckpt.domain.manifest import ContainerRecord, Manifest
from compose_ckpt.domain.parallel import ProgressCallback
from compose_ckpt.engine import ContainerInfo, Engine


def recreate_containers(engine: Engine, manifest: Manifest, records: Sequence[ContainerRecord],
                        progress: ProgressCallback) -> dict[str, ContainerInfo]:
    """Create (not start) each container in `records` as recorded, with the networks and volumes it needs.

    Same names and compose labels as before, so `docker compose` sees them as its own."""
    if not records:
        return {}
    for network in manifest.networks:
        if not engine.network_exists(network["Name"]):
            engine.create_network(network)
    for volume in manifest.volumes:
        if not engine.volume_exists(volume["Name"]):
            engine.create_volume(volume)
    created = {}
    for record in records:
        progress(record.container_name, "recreating")
        created[record.container_name] = engine.create_container(record.inspect)
    return created

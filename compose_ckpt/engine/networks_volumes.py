"""Network and volume calls: inspect, list, create from a recorded document, remove."""

from __future__ import annotations

from typing import Any

from compose_ckpt.engine.api import path_of
from compose_ckpt.engine.connection import Connection
from compose_ckpt.engine.specs import endpoint_config
from compose_ckpt.engine.translation import translated
from compose_ckpt.errors import NotFoundError

# The parts of a recorded network's IPAM config that a create request takes.
_IPAM_KEYS = ("Subnet", "IPRange", "Gateway", "AuxiliaryAddresses")


class NetworkVolumeCalls(Connection):
    """The network and volume endpoints of the Engine API."""

    def remove_network(self, name: str) -> None:
        """Remove a network; one that is already gone is fine."""
        self._delete_if_present(f"remove network {name}", path_of("/networks/{0}", name))

    def network_exists(self, name: str) -> bool:
        try:
            self.inspect_network(name)
            return True
        except NotFoundError:
            return False

    def inspect_network(self, name: str) -> dict[str, Any]:
        with translated(f"inspect network {name}"):
            return dict(self._http.call("GET", path_of("/networks/{0}", name)))

    def list_networks(self) -> list[dict[str, Any]]:
        """Every network of the engine, as GET /networks lists them (with their IPAM config and labels)."""
        with translated("list networks"):
            return [dict(network) for network in self._http.call("GET", "/networks")]

    def create_network(self, recorded: dict[str, Any], *, recorded_subnets: bool) -> None:
        """Create a network like the recorded `docker network inspect` document: its driver and options, and
        with `recorded_subnets` its IPAM config (subnets, ranges, gateways), so that its containers can get
        their addresses back; else the engine picks the subnets."""
        ipam = recorded.get("IPAM") or {}
        config = [{key: entry[key] for key in _IPAM_KEYS if entry.get(key)}
                  for entry in ipam.get("Config") or [] if isinstance(entry, dict) and entry.get("Subnet")]
        body = {
            "Name": recorded["Name"], "Driver": recorded.get("Driver"), "Options": recorded.get("Options") or None,
            "Labels": recorded.get("Labels") or None, "Internal": bool(recorded.get("Internal")),
            "Attachable": bool(recorded.get("Attachable")), "EnableIPv6": bool(recorded.get("EnableIPv6")),
            "IPAM": {"Driver": ipam.get("Driver") or "default", "Config": config if recorded_subnets else [],
                     "Options": ipam.get("Options")},
        }
        with translated(f"create network {recorded['Name']}"):
            self._http.call("POST", "/networks/create", body=body)

    def connect_network(self, name: str, container_id: str, recorded: dict[str, Any]) -> None:
        """Attach a container to a network with the settings of a recorded endpoint (aliases, fixed addresses,
        links, driver options)."""
        body = {"Container": container_id, "EndpointConfig": endpoint_config(recorded)}
        with translated(f"connect {container_id[:12]} to network {name}"):
            self._http.call("POST", path_of("/networks/{0}/connect", name), body=body)

    def disconnect_network(self, name: str, container_id: str) -> None:
        with translated(f"disconnect {container_id[:12]} from network {name}"):
            self._http.call("POST", path_of("/networks/{0}/disconnect", name),
                            body={"Container": container_id, "Force": True})

    def inspect_volume(self, name: str) -> dict[str, Any]:
        with translated(f"inspect volume {name}"):
            return dict(self._http.call("GET", path_of("/volumes/{0}", name)))

    def volume_exists(self, name: str) -> bool:
        try:
            self.inspect_volume(name)
            return True
        except NotFoundError:
            return False

    def create_volume(self, recorded: dict[str, Any]) -> None:
        body = {"Name": recorded["Name"], "Driver": recorded.get("Driver"),
                "DriverOpts": recorded.get("Options") or None, "Labels": recorded.get("Labels") or None}
        with translated(f"create volume {recorded['Name']}"):
            self._http.call("POST", "/volumes/create", body=body)

    def remove_volume(self, name: str) -> None:
        """Remove a volume; one that is already gone is fine. First our own helper containers left on it,
        which would keep it "in use": a copy cut by its daemon going away could not remove its helper."""
        self._remove_helpers_of(name, f"volume {name}")
        self._delete_if_present(f"remove volume {name}", path_of("/volumes/{0}", name))

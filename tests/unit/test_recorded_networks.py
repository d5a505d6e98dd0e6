"""Which recorded networks restore recreates with their recorded subnets, and what it refuses before anything is
changed: a container whose checkpoint holds TCP connections needs its recorded address back. The engine is
faked; the same against the real engine is tests/integration/test_recorded_addresses.py."""

from __future__ import annotations

from typing import Any

import pytest

from compose_ckpt.const import LABEL_PROJECT
from compose_ckpt.domain.stack.containers import check_networks, take_recorded_addresses
from compose_ckpt.domain.stack.holders import with_recorded_address
from compose_ckpt.domain.store.manifest import ContainerRecord, Manifest, SnapshotStatus, now_iso
from compose_ckpt.engine import ContainerInfo
from compose_ckpt.errors import ConflictError
from tests.fakes import UntouchableEngine


def network(name: str, subnet: str, project: str | None = None, **given: str) -> dict[str, Any]:
    """A network as `docker network inspect` shows it; one whose subnet the engine picked has just its gateway."""
    gateway = subnet.replace(".0/", ".1/").split("/")[0]
    return {"Name": name, "IPAM": {"Config": [{"Subnet": subnet, "Gateway": gateway, **given}]},
            "Labels": {LABEL_PROJECT: project} if project else {}}


class Networks(UntouchableEngine):
    def __init__(self, *networks: dict[str, Any]) -> None:
        super().__init__()
        self.networks = list(networks)

    def list_networks(self) -> list[dict[str, Any]]:
        return self.networks


def manifest(*networks: dict[str, Any], fixed: bool = False) -> Manifest:
    endpoints: dict[str, Any] = {"p_default": {"IPAddress": "172.26.0.2"}}
    if fixed:  # compose's `ipv4_address`
        endpoints["p_default"]["IPAMConfig"] = {"IPv4Address": "172.26.0.2"}
    record = ContainerRecord(service="db", container_id="d" * 64, container_name="p-db-1", number=1, image="img",
                             image_id="sha256:" + "1" * 64, checkpoint="ckpt-s",
                             inspect={"NetworkSettings": {"Networks": endpoints}})
    return Manifest(name="s", project="p", created=now_iso(), status=SnapshotStatus.COMPLETE, stopped=True,
                    compose_files=[], compose_hash="", services=["db"], dependencies={}, containers=[record],
                    networks=list(networks) or [network("p_default", "172.26.0.0/16"), network("p_other", "172.27.0.0/16")])


def test_only_networks_with_connections_on_them_get_their_recorded_subnets() -> None:
    planned = check_networks(Networks(), manifest(), connected={"p-db-1"})
    assert [(n["Name"], recorded) for n, recorded in planned] == [("p_default", True), ("p_other", False)]
    assert [recorded for _, recorded in check_networks(Networks(), manifest(), connected=())] == [False, False]


def test_a_subnet_taken_by_another_network_is_refused_naming_it_when_connections_need_it() -> None:
    engine = Networks(network("q_default", "172.26.0.0/24", project="q"))
    with pytest.raises(ConflictError) as refused:
        check_networks(engine, manifest(), connected={"p-db-1"})
    assert ("cannot recreate network p_default with its recorded subnet 172.26.0.0/16: network q_default "
            "(compose project q) holds it; the checkpoints of p-db-1 hold TCP connections") in refused.value.message
    assert refused.value.hint and "docker compose -p q down" in refused.value.hint
    assert check_networks(engine, manifest(), connected=())[0][1] is False  # no connection: any subnet does


def test_an_existing_network_with_another_subnet_is_refused_when_connections_need_the_old_one() -> None:
    engine = Networks(network("p_default", "172.29.0.0/16", project="p"))
    with pytest.raises(ConflictError, match=r"network p_default has other subnets \(172.29.0.0/16\) than when the "
                                            r"snapshot was taken \(172.26.0.0/16\)"):
        check_networks(engine, manifest(), connected={"p-db-1"})
    assert [n["Name"] for n, _ in check_networks(engine, manifest(), connected=())] == ["p_other"]


def test_recorded_addresses_are_asked_for_unless_another_container_holds_them() -> None:
    spec = {"NetworkSettings": {"Networks": {
        "a": {"IPAddress": "172.26.0.2", "GlobalIPv6Address": "fd00::2"},
        "b": {"IPAddress": "172.27.0.2"},
    }}}
    pinned = with_recorded_address(spec, {"b": {"172.27.0.2"}})["NetworkSettings"]["Networks"]
    assert pinned["a"]["IPAMConfig"] == {"IPv4Address": "172.26.0.2", "IPv6Address": "fd00::2"}
    assert "IPAMConfig" not in pinned["b"]


def test_networks_given_their_ipam_config_or_holding_fixed_addresses_get_their_recorded_subnets() -> None:
    ranged = network("p_default", "172.26.0.0/16", IPRange="172.26.5.0/24")
    two = {**network("p_other", "10.1.0.0/24"), "IPAM": {"Config": [*network("x", "10.1.0.0/24")["IPAM"]["Config"],
                                                                 *network("x", "10.2.0.0/24")["IPAM"]["Config"]]}}
    planned = check_networks(Networks(), manifest(ranged, two), connected=())
    assert [recorded for _, recorded in planned] == [True, True]
    planned = check_networks(Networks(), manifest(fixed=True), connected=())
    assert [(n["Name"], recorded) for n, recorded in planned] == [("p_default", True), ("p_other", False)]


def test_a_fixed_address_whose_subnet_is_taken_is_refused_naming_what_holds_it() -> None:
    engine = Networks(network("q_default", "172.26.0.0/24", project="q"))
    with pytest.raises(ConflictError) as refused:
        check_networks(engine, manifest(fixed=True), connected=())
    assert ("network q_default (compose project q) holds it; p-db-1 has a fixed address on it"
            in refused.value.message), refused.value.message


class Attaching(Networks):
    """Networks with the calls that attach containers, each one noted."""

    def __init__(self, *networks: dict[str, Any]) -> None:
        super().__init__(*networks)
        self.calls: list[tuple[Any, ...]] = []

    def inspect_network(self, name: str) -> dict[str, Any]:
        return {"Containers": {}}

    def disconnect_network(self, name: str, container_id: str) -> None:
        self.calls.append(("disconnect", name, container_id))

    def remove_network(self, name: str) -> None:
        self.calls.append(("remove", name))

    def create_network(self, recorded: dict[str, Any], *, recorded_subnets: bool) -> None:
        self.calls.append(("create", recorded["Name"], recorded_subnets))

    def connect_network(self, name: str, container_id: str, recorded: dict[str, Any]) -> None:
        self.calls.append(("connect", name, container_id, (recorded.get("IPAMConfig") or {}).get("IPv4Address")))


def made(*names: str) -> dict[str, ContainerInfo]:
    """Containers created (not started) on the target before the freeze, at any free address."""
    return {name: ContainerInfo(id=f"id-{name}", name=name, image="img", image_id="sha256:1", status="created", pid=0,
                                exit_code=0, labels={}, started_at="", attrs={}) for name in names}


def two_on_one_network() -> Manifest:
    """`p-db-1` (its checkpoint holds TCP connections) and `p-app-1`, both on p_default."""
    stack = manifest(network("p_default", "172.26.0.0/16"))
    app = ContainerRecord(service="app", container_id="a" * 64, container_name="p-app-1", number=1, image="img",
                          image_id="sha256:" + "1" * 64, checkpoint="ckpt-s",
                          inspect={"NetworkSettings": {"Networks": {"p_default": {"IPAddress": "172.26.0.3"}}}})
    stack.containers.append(app)
    return stack


def test_containers_made_early_take_their_recorded_addresses_on_their_network_made_again() -> None:
    # The network this move made before the freeze got a subnet the engine picked: it is made again with the
    # recorded one, and both containers attached again, the connected one at its recorded address.
    engine = Attaching(network("p_default", "10.242.3.0/24"))
    take_recorded_addresses(engine, two_on_one_network(), made("p-db-1", "p-app-1"), {"p-db-1"}, ["p_default"])
    assert engine.calls == [("disconnect", "p_default", "id-p-db-1"), ("disconnect", "p_default", "id-p-app-1"),
                            ("remove", "p_default"), ("create", "p_default", True),
                            ("connect", "p_default", "id-p-db-1", "172.26.0.2"),
                            ("connect", "p_default", "id-p-app-1", None)]


def test_on_a_network_with_the_recorded_subnet_only_the_connected_container_is_attached_again() -> None:
    engine = Attaching(network("p_default", "172.26.0.0/16"))
    take_recorded_addresses(engine, two_on_one_network(), made("p-db-1", "p-app-1"), {"p-db-1"}, [])
    assert engine.calls == [("disconnect", "p_default", "id-p-db-1"), ("connect", "p_default", "id-p-db-1", "172.26.0.2")]


def test_a_network_the_target_had_before_with_another_subnet_is_not_made_again() -> None:
    engine = Attaching(network("p_default", "10.242.3.0/24"))
    with pytest.raises(ConflictError, match="network p_default has other subnets on the target"):
        take_recorded_addresses(engine, two_on_one_network(), made("p-db-1", "p-app-1"), {"p-db-1"}, [])
    assert engine.calls == []
    take_recorded_addresses(engine, two_on_one_network(), made("p-db-1", "p-app-1"), set(), [])  # no connection
    assert engine.calls == []

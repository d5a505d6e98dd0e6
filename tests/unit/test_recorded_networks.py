"""Which recorded networks restore recreates with their recorded subnets, and what it refuses before anything is
changed: a container whose checkpoint holds TCP connections needs its recorded address back. The engine is
faked; the same against the real engine is tests/integration/test_recorded_addresses.py."""

from __future__ import annotations

from typing import Any

import pytest

from compose_ckpt.const import LABEL_PROJECT
from compose_ckpt.domain.stack.containers import check_networks
from compose_ckpt.domain.stack.holders import with_recorded_address
from compose_ckpt.domain.store.manifest import ContainerRecord, Manifest, SnapshotStatus, now_iso
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

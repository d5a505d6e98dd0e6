"""The typed views of a container's inspect document that the domain reads instead of raw keys."""

from typing import Any

from compose_ckpt.engine.types import ContainerInfo


def _info(attrs: dict[str, Any]) -> ContainerInfo:
    return ContainerInfo.from_inspect({"Id": "c" * 64, "Name": "/p-web-1", **attrs})


def test_networks_addresses_mode_and_volumes_come_from_the_inspect_document() -> None:
    info = _info({
        "HostConfig": {"NetworkMode": "p_default"},
        "NetworkSettings": {"Networks": {"p_default": {"IPAddress": "172.18.0.2", "GlobalIPv6Address": ""},
                                         "p_back": {"IPAddress": "", "GlobalIPv6Address": "fd00::2"}}},
        "Mounts": [{"Type": "volume", "Name": "p_data"}, {"Type": "bind", "Source": "/srv"}],
    })
    assert info.network_mode == "p_default"
    assert info.network_names == ["p_default", "p_back"]
    assert info.addresses == {"172.18.0.2", "fd00::2"}
    assert info.volume_names == ["p_data"]


def test_a_sparse_document_has_no_networks_addresses_or_volumes() -> None:
    info = _info({"HostConfig": None, "NetworkSettings": {"Networks": None}, "Mounts": None})
    assert (info.network_mode, info.network_names, info.addresses, info.volume_names) == ("", [], set(), [])

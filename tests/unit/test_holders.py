"""Network holders and recreate requests: pure transformations of recorded inspect documents.

That Docker accepts them and restores the result on Docker 28 is proven in
tests/integration/test_holders.py."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from compose_ckpt.const import LABEL_HOLDER_FOR, LABEL_NETWORK_HOLDER, LABEL_ONEOFF
from compose_ckpt.domain.stack.holders import (
    NetworkForm,
    holder_spec,
    needs_holders,
    network_form,
    rebuilt_holder,
    with_recorded_address,
)
from compose_ckpt.engine.holder_image import holder_rootfs, pause_executable
from compose_ckpt.engine.specs import create_body, referenced_containers
from compose_ckpt.errors import EngineError


def app(**host: Any) -> dict[str, Any]:
    return {
        "Id": "a" * 64, "Name": "/p-web-1",
        "Config": {"Hostname": "aaaaaaaaaaaa", "Domainname": "", "ExposedPorts": {"80/tcp": {}}, "Image": "img",
                   "Labels": {"com.docker.compose.project": "p", "com.docker.compose.service": "web",
                              "com.docker.compose.oneoff": "False", "com.docker.compose.config-hash": "h", "other": "x"}},
        "HostConfig": {"NetworkMode": "p_default", "PortBindings": {"80/tcp": [{"HostPort": "8080"}]},
                       "Dns": ["10.0.0.2"], "ExtraHosts": ["db:10.0.0.3"], "Sysctls": {"net.core.somaxconn": "1024",
                       "kernel.msgmax": "65536"}, "Mounts": None, **host},
        "Mounts": [{"Type": "volume", "Name": "anon123", "Destination": "/data", "RW": True}],
        "NetworkSettings": {"Networks": {"p_default": {"Aliases": ["p-web-1", "web"], "IPAddress": "172.20.0.5",
                                                       "IPAMConfig": None, "Links": None, "DriverOpts": None}}},
    }


def test_network_forms_and_engines() -> None:
    assert network_form(app()) is NetworkForm.OWN
    assert network_form(app(NetworkMode="host")) is NetworkForm.HOST
    assert network_form(app(NetworkMode="container:" + "b" * 64)) is NetworkForm.SHARED
    assert network_form(adopted_app()) is NetworkForm.ADOPTED
    assert [needs_holders(v) for v in ("26.1.5", "27.5.1", "28.5.2+dfsg4", "29.1.0", "")] == [False, False, True, True, False]
    assert not NetworkForm.OWN.restorable_on("28.5.2") and NetworkForm.OWN.restorable_on("26.1.5")
    assert all(form.restorable_on("29.0.0") for form in (NetworkForm.ADOPTED, NetworkForm.HOST, NetworkForm.SHARED))


def test_holder_owns_the_namespace_and_answers_for_the_service() -> None:
    holder = holder_spec(app(), "compose-ckpt/holder:1")
    assert holder["Name"] == "p-web-1-holder"
    assert holder["Config"]["Hostname"] == "aaaaaaaaaaaa" and holder["Config"]["ExposedPorts"] == {"80/tcp": {}}
    labels = holder["Config"]["Labels"]
    assert labels[LABEL_ONEOFF] == "True" and labels[LABEL_HOLDER_FOR] == "p-web-1" and "other" not in labels
    assert labels["com.docker.compose.service"] == "web"  # so `down --remove-orphans` takes it with the service
    assert holder["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostPort": "8080"}]}
    assert holder["HostConfig"]["Sysctls"] == {"net.core.somaxconn": "1024"}
    assert holder["NetworkSettings"]["Networks"]["p_default"]["Aliases"] == ["p-web-1", "web"]
    pinned = with_recorded_address(holder)["NetworkSettings"]["Networks"]["p_default"]
    assert pinned["IPAMConfig"] == {"IPv4Address": "172.20.0.5"}
    name, body = create_body(holder)
    assert name == "p-web-1-holder" and body["Hostname"] == "aaaaaaaaaaaa"
    assert body["NetworkingConfig"]["EndpointsConfig"]["p_default"]["Aliases"] == ["p-web-1", "web"]


def test_a_recorded_holder_service_is_rebuilt_from_our_template_under_its_own_name() -> None:
    """A holder compose made from adopt's file keeps its name and compose labels, so that compose keeps it;
    everything else comes from our template, whatever the record says."""
    recorded = app(CapAdd=["SYS_ADMIN"], Binds=["/:/host"], Privileged=True)
    recorded["Name"] = "/p-web-net-1"
    recorded["Config"]["Labels"].update({"com.docker.compose.service": "web-net", LABEL_HOLDER_FOR: "web"})
    recorded["Config"]["Cmd"] = ["sh", "-c", "evil"]
    spec = rebuilt_holder("p-web-1", recorded, "compose-ckpt/holder:1")
    assert spec["Name"] == "p-web-net-1" and spec["Config"]["Cmd"] is None and spec["Config"]["Image"] == "compose-ckpt/holder:1"
    labels = spec["Config"]["Labels"]
    assert labels[LABEL_ONEOFF] == "False" and labels["com.docker.compose.service"] == "web-net"
    assert labels[LABEL_HOLDER_FOR] == "web" and "other" not in labels
    assert spec["HostConfig"]["CapDrop"] == ["ALL"] and "CapAdd" not in spec["HostConfig"]
    assert "Binds" not in spec["HostConfig"] and "Privileged" not in spec["HostConfig"]
    assert spec["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostPort": "8080"}]}


def adopted_app() -> dict[str, Any]:
    """A container as compose creates it from `adopt`'s file: joined to its holder, labelled with it."""
    joined = app(NetworkMode="container:p-web-net-1")
    joined["Config"]["Labels"][LABEL_NETWORK_HOLDER] = "web-net"
    return joined


def test_joined_container_drops_what_docker_refuses() -> None:
    name, body = create_body(adopted_app())
    assert name == "p-web-1"
    for refused in ("Hostname", "Domainname", "ExposedPorts", "MacAddress"):
        assert refused not in body
    host = body["HostConfig"]
    assert host["NetworkMode"] == "container:p-web-net-1"
    assert host["PortBindings"] == {} and host["Dns"] == [] and host["ExtraHosts"] is None
    assert host["Sysctls"] == {"kernel.msgmax": "65536"}
    assert body["NetworkingConfig"] == {"EndpointsConfig": {}}


def test_references_to_recreated_containers_are_renamed() -> None:
    old_net, old_ipc, old_vol = "1" * 64, "2" * 64, "3" * 64
    side = app(NetworkMode=f"container:{old_net}", IpcMode=f"container:{old_ipc}", PidMode="host",
               VolumesFrom=[f"{old_vol}:ro", "keep"])
    assert referenced_containers(side) == [old_net, old_ipc, old_vol, "keep"]
    _, body = create_body(side, {old_net: "p-net-1", old_ipc: "p-ipc-1", old_vol: "p-vol-1"})
    host = body["HostConfig"]
    assert (host["NetworkMode"], host["IpcMode"], host["PidMode"]) == ("container:p-net-1", "container:p-ipc-1", "host")
    assert host["VolumesFrom"] == ["p-vol-1:ro", "keep"]
    assert "Hostname" not in body


def test_holder_image_is_one_tiny_static_executable(tmp_path: Path) -> None:
    executable = pause_executable("x86_64")
    assert len(executable) < 200 and executable.startswith(b"\x7fELF")
    assert pause_executable("aarch64")[18] == 183  # e_machine
    with pytest.raises(EngineError, match="s390x"):
        pause_executable("s390x")
    assert len(holder_rootfs("x86_64")) <= 10240
    if subprocess.run(["uname", "-m"], capture_output=True, text=True).stdout.strip() == "x86_64":
        path = tmp_path / "pause"
        path.write_bytes(executable)
        path.chmod(0o755)
        with pytest.raises(subprocess.TimeoutExpired):  # it sleeps until killed
            subprocess.run([str(path)], timeout=0.5)

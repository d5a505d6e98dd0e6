"""The host-access review of a snapshot made elsewhere: an allow-list of what an ordinary compose service
records; anything else is listed, in words, before import or pull store or create anything."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from compose_ckpt.domain.stack.containers import holders_as_built
from compose_ckpt.domain.store.manifest import Manifest
from compose_ckpt.domain.transport.hostaccess import pinned_subnets, require_consent, review_host_access, this_hosts_own
from compose_ckpt.engine import ContainerInfo
from compose_ckpt.errors import NotFoundError, UsageError
from tests.fakes import UntouchableEngine
from tests.unit.test_manifest_validation import IMAGE_ID, good_document

# What Docker 26 records for a compose service with a named volume, an anonymous volume, a tmpfs, a
# restart policy and a healthcheck (docker inspect, HostConfig, verbatim), on the project's network.
ORDINARY_HOST_CONFIG: dict[str, Any] = {
    "Binds": None, "ContainerIDFile": "", "LogConfig": {"Type": "json-file", "Config": {}},
    "NetworkMode": "shop_default", "PortBindings": {}, "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
    "AutoRemove": False, "VolumeDriver": "", "VolumesFrom": None, "ConsoleSize": [0, 0], "CapAdd": None,
    "CapDrop": None, "CgroupnsMode": "host", "Dns": None, "DnsOptions": None, "DnsSearch": None, "ExtraHosts": [],
    "GroupAdd": None, "IpcMode": "private", "Cgroup": "", "Links": None, "OomScoreAdj": 0, "PidMode": "",
    "Privileged": False, "PublishAllPorts": False, "ReadonlyRootfs": False, "SecurityOpt": None,
    "Tmpfs": {"/tmp/t": ""}, "UTSMode": "", "UsernsMode": "", "ShmSize": 67108864, "Runtime": "runc",
    "Isolation": "", "CpuShares": 0, "Memory": 0, "NanoCpus": 0, "CgroupParent": "", "BlkioWeight": 0,
    "BlkioWeightDevice": None, "BlkioDeviceReadBps": None, "BlkioDeviceWriteBps": None, "BlkioDeviceReadIOps": None,
    "BlkioDeviceWriteIOps": None, "CpuPeriod": 0, "CpuQuota": 0, "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0,
    "CpusetCpus": "", "CpusetMems": "", "Devices": None, "DeviceCgroupRules": None, "DeviceRequests": None,
    "MemoryReservation": 0, "MemorySwap": 0, "MemorySwappiness": None, "OomKillDisable": False, "PidsLimit": None,
    "Ulimits": None, "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
    "Mounts": [{"Type": "volume", "Source": "shop_data", "Target": "/srv", "VolumeOptions": {}},
               {"Type": "volume", "Target": "/anonymous", "VolumeOptions": {}}],
    "MaskedPaths": ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                    "/sys/devices/virtual/powercap"],
    "ReadonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
}
HOLDER: dict[str, Any] = {"Id": "9" * 64, "Name": "/shop-kv-1-holder", "Config": {"Hostname": "kv", "Labels": {}},
          "HostConfig": {"NetworkMode": "shop_default"},
          "NetworkSettings": {"Networks": {"shop_default": {"Aliases": ["kv"], "IPAddress": "172.20.0.2"}}}}


def manifest(host_config: dict[str, Any] | None = None, **top: Any) -> Manifest:
    document = good_document()
    document["containers"][0]["inspect"]["HostConfig"] = copy.deepcopy(host_config or ORDINARY_HOST_CONFIG)
    document.update(top)
    return Manifest.from_dict(document, "test")


def findings(manifest: Manifest) -> list[str]:
    return review_host_access(manifest, holders_as_built(manifest))


def test_an_ordinary_service_reaches_nothing_of_its_host() -> None:
    assert findings(manifest()) == []
    linked = {**ORDINARY_HOST_CONFIG, "Links": ["/shop-kv-1:/shop-kv-1/kv"], "OomScoreAdj": 500,
              "Ulimits": [{"Name": "nofile", "Soft": 65536, "Hard": 65536}]}
    assert findings(manifest(linked)) == []  # links among its own containers, limits that only limit


# Each: a change to the ordinary HostConfig, and a word the finding must contain.
WAYS_IN: dict[str, tuple[dict[str, Any], str]] = {
    "privileged": ({"Privileged": True}, "privileged"),
    "bind": ({"Binds": ["/:/host:rw"]}, "bind mount of the host's /"),
    "bind-mount": ({"Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/s"}]}, "docker.sock"),
    "volume-driver-options": ({"Mounts": [{"Type": "volume", "Source": "x", "Target": "/x", "VolumeOptions": {
        "DriverConfig": {"Name": "local", "Options": {"type": "none", "o": "bind", "device": "/etc"}}}}]}, "/etc"),
    "seccomp": ({"SecurityOpt": ["seccomp=unconfined"]}, "seccomp=unconfined"),
    "apparmor": ({"SecurityOpt": ["apparmor=unconfined"]}, "apparmor=unconfined"),
    "label": ({"SecurityOpt": ["label=disable"]}, "label=disable"),
    "device-cgroup-rules": ({"DeviceCgroupRules": ["c *:* rwm"]}, "c *:* rwm"),
    "userns": ({"UsernsMode": "host"}, "host's user namespace"),
    "pid": ({"PidMode": "host"}, "host's PID namespace"),
    "ipc": ({"IpcMode": "host"}, "host's IPC namespace"),
    "uts": ({"UTSMode": "host"}, "host's UTS namespace"),
    "network": ({"NetworkMode": "host"}, "host's network namespace"),
    "other-container": ({"NetworkMode": "container:" + "e" * 64}, "does not hold"),
    "volumes-from": ({"VolumesFrom": ["docker-daemon-helper"]}, "docker-daemon-helper"),
    "cgroup-parent": ({"CgroupParent": "/system.slice"}, "cgroup parent"),
    "devices": ({"Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda"}]}, "/dev/sda"),
    "caps": ({"CapAdd": ["SYS_ADMIN"]}, "SYS_ADMIN"),
    "sysctls": ({"Sysctls": {"kernel.core_pattern": "|/tmp/x"}}, "kernel.core_pattern"),
    "runtime": ({"Runtime": "io.containerd.runsc.v1"}, "runsc"),
    "ports": ({"PortBindings": {"22/tcp": [{"HostIp": "", "HostPort": "2222"}]}}, "2222"),
    "all-ports": ({"PublishAllPorts": True}, "every exposed port"),
    "unmasked": ({"MaskedPaths": []}, "/proc/kcore"),
    "writable-proc": ({"ReadonlyPaths": []}, "/proc/sys"),
    "id-file": ({"ContainerIDFile": "/etc/cron.d/x"}, "/etc/cron.d/x"),
    "log-driver": ({"LogConfig": {"Type": "syslog", "Config": {"syslog-address": "udp://1.2.3.4:514"}}}, "syslog"),
    "gpus": ({"DeviceRequests": [{"Driver": "nvidia", "Count": -1}]}, "device requests"),
    "annotations": ({"Annotations": {"org.criu.config": "/etc/shadow"}}, "org.criu.config"),
    "unknown-setting": ({"SomethingNew": {"Path": "/"}}, "HostConfig.SomethingNew"),
    "foreign-volume": ({"Mounts": [{"Type": "volume", "Source": "bank_secrets", "Target": "/s"}]}, "bank_secrets"),
    "foreign-volume-bind": ({"Binds": ["bank_secrets:/s"]}, "volume bank_secrets, which the snapshot does not"),
    "image-mount": ({"Mounts": [{"Type": "image", "Source": "attacker/tools", "Target": "/t"}]}, "attacker/tools"),
    "powercap-unmasked": ({"MaskedPaths": sorted(ORDINARY_HOST_CONFIG["MaskedPaths"][:-1])}, "powercap"),
    "links": ({"Links": ["/bank-db-1:/shop-kv-1/db"]}, "links to container bank-db-1"),
    "oom-score": ({"OomScoreAdj": -1000}, "out-of-memory score -1000"),
    "oom-kill-disable": ({"OomKillDisable": True}, "out-of-memory killer spares it"),
    "ulimit-rtprio": ({"Ulimits": [{"Name": "rtprio", "Soft": 99, "Hard": 99}]}, "resource limit rtprio"),
    "ulimit-memlock": ({"Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048},
                                    {"Name": "memlock", "Soft": -1, "Hard": -1}]}, "resource limit memlock"),
}


@pytest.mark.parametrize("change,word", WAYS_IN.values(), ids=WAYS_IN.keys())
def test_every_way_into_the_host_is_listed(change: dict[str, Any], word: str) -> None:
    [finding] = findings(manifest({**ORDINARY_HOST_CONFIG, **change}))
    assert finding.startswith("container shop-kv-1: ") and word in finding


def test_joining_a_network_the_snapshot_does_not_record_is_listed() -> None:
    document = good_document()
    document["containers"][0]["inspect"]["HostConfig"] = copy.deepcopy(ORDINARY_HOST_CONFIG)
    document["containers"][0]["inspect"]["NetworkSettings"] = {"Networks": {
        "shop_default": {"Aliases": ["kv"]}, "bridge": {}, "other_project_backend": {}}}
    [finding] = findings(Manifest.from_dict(document, "test"))
    assert "joins network other_project_backend, which the snapshot does not record" in finding


def test_volumes_and_networks_made_with_options_are_listed_and_values_are_made_printable() -> None:
    host_path = {"Name": "shop_data", "Driver": "local", "Options": {"type": "none", "o": "bind", "device": "/root"}}
    macvlan = {"Name": "shop_default", "Driver": "macvlan", "Options": {"parent": "eth0"}}
    bridge = {"Name": "shop_lan", "Driver": "bridge", "Options": {"com.docker.network.bridge.name": "br0"}}
    listed = findings(manifest(volumes=[host_path], networks=[macvlan, bridge]))
    assert [line.split(":")[0] for line in listed] == ["volume shop_data", "network shop_default", "network shop_lan"]
    assert "device=/root" in listed[0] and "eth0" in listed[1] and "br0" in listed[2]
    [escape] = findings(manifest({**ORDINARY_HOST_CONFIG, "Binds": ["/etc\x1b[2J:/e"]}))
    assert "/etc?[2J" in escape


def test_a_recorded_holder_is_rebuilt_from_our_template_whatever_it_records() -> None:
    evil = copy.deepcopy(HOLDER)
    evil["Config"].update({"Entrypoint": ["sh", "-c", "echo owned > /host/x"], "Image": "attacker/root", "User": "0"})
    evil["HostConfig"].update({"Privileged": True, "Binds": ["/:/host"], "CapAdd": ["ALL"], "PidMode": "host",
                               "SecurityOpt": ["seccomp=unconfined"], "Devices": [{"PathOnHost": "/dev/mem"}]})
    document = good_document()
    document["containers"][0]["inspect"]["HostConfig"] = copy.deepcopy(ORDINARY_HOST_CONFIG)
    document["containers"][0]["inspect"]["HostConfig"]["NetworkMode"] = "container:" + HOLDER["Id"]
    document["containers"][0]["holder"] = evil
    recorded = Manifest.from_dict(document, "test")

    built = holders_as_built(recorded)["shop-kv-1"]

    assert findings(recorded) == []  # nothing of it is used, so there is nothing to accept
    assert built["Config"]["Image"] == "compose-ckpt/holder:1" and "Entrypoint" not in built["Config"]
    assert built["HostConfig"]["CapDrop"] == ["ALL"] and "Privileged" not in built["HostConfig"]
    assert not {"Binds", "Mounts", "CapAdd", "PidMode", "SecurityOpt", "Devices"} & built["HostConfig"].keys()
    assert built["Name"] == "shop-kv-1-holder" and built["NetworkSettings"]["Networks"]["shop_default"]["IPAddress"]
    document["containers"][0]["holder"]["HostConfig"]["PortBindings"] = {"80/tcp": [{"HostPort": "8080"}]}
    [ports] = findings(Manifest.from_dict(document, "test"))
    assert ports.startswith("network holder of shop-kv-1: publishes port 80/tcp")


def test_a_holder_not_named_after_its_container_is_refused() -> None:
    document = good_document()
    for name in ("/somebody-else", "/shop-db-net-1", "/other-kv-net-1"):
        document["containers"][0]["holder"] = {**HOLDER, "Name": name}
        with pytest.raises(Exception, match="not named after it"):
            Manifest.from_dict(document, "test")
    document["containers"][0]["holder"] = {**HOLDER, "Name": "/shop-kv-net-1"}  # adopt's holder service kv-net
    assert Manifest.from_dict(document, "test").containers[0].holder is not None


def test_consent_is_needed_only_when_something_is_listed() -> None:
    require_consent([], lambda found: False)
    require_consent(["x"], lambda found: True)
    with pytest.raises(UsageError, match="nothing was stored") as refused:
        require_consent(["container a: privileged"], lambda found: False)
    assert refused.value.details == ["container a: privileged"] and "--trust-host-access" in (refused.value.hint or "")



class _Display:
    closed = False

    def __call__(self, name: str, phase: object) -> None:
        pass

    def close(self, ok: bool) -> None:
        self.closed = True


@pytest.mark.parametrize("terminal,answer,trust", [(False, None, False), (True, True, False), (True, False, False),
                                                    (False, None, True)])
def test_the_cli_asks_on_a_terminal_refuses_without_one_and_trusts_only_when_told(
        monkeypatch: pytest.MonkeyPatch, terminal: bool, answer: bool | None, trust: bool) -> None:
    import sys

    import typer

    from compose_ckpt.cli.transport import host_access_consent as _host_access_consent
    from compose_ckpt.errors import Declined

    asked: list[str] = []
    monkeypatch.setattr(sys.stdin, "isatty", lambda: terminal)

    def confirm(question: str, **options: object) -> bool | None:
        asked.append(question)
        return answer
    monkeypatch.setattr(typer, "confirm", confirm)
    display = _Display()
    consent = _host_access_consent(trust, display)

    if answer is False:
        with pytest.raises(Declined):  # exit 1, "declined: nothing was changed"
            consent(["container a: privileged mode"])
    else:
        assert consent(["container a: privileged mode"]) is (trust or bool(answer))
    assert bool(asked) == (terminal and not trust) and display.closed == bool(asked)


class _Networks(UntouchableEngine):
    def __init__(self, networks: list[dict[str, Any]]) -> None:
        super().__init__()
        self.networks = networks

    def list_networks(self) -> list[dict[str, Any]]:
        return self.networks

    def inspect(self, name: str) -> ContainerInfo | None:
        return None


def test_a_network_made_with_the_snapshots_own_subnet_is_listed(tmp_path: Path) -> None:
    """A network recreated with its recorded subnet (a container's checkpoint holds TCP connections, or the
    IPAM config was given): one the snapshot chose (this host's LAN, say) would take that traffic. Networks
    the engine gives a subnet, or that exist already, are not listed."""
    document = good_document()
    lan = {"Subnet": "192.168.1.0/24", "Gateway": "192.168.1.1"}
    document["networks"] = [{"Name": "shop_default", "Driver": "bridge", "IPAM": {"Config": [lan]}}]
    document["containers"][0]["inspect"]["NetworkSettings"] = {"Networks": {"shop_default": {"Aliases": ["kv"]}}}
    checkpoint = tmp_path / "shop-kv-1"
    checkpoint.mkdir()
    assert pinned_subnets(_Networks([]), Manifest.from_dict(document, "test"), {"shop-kv-1": checkpoint}) == []

    (checkpoint / "tcp-stream-1a2b.img").touch()
    [connected] = pinned_subnets(_Networks([]), Manifest.from_dict(document, "test"), {"shop-kv-1": checkpoint})
    (checkpoint / "tcp-stream-1a2b.img").unlink()
    document["networks"][0]["IPAM"]["Config"][0]["IPRange"] = "192.168.1.128/25"
    [configured] = pinned_subnets(_Networks([]), Manifest.from_dict(document, "test"), {"shop-kv-1": checkpoint})

    for finding in (connected, configured):
        assert finding.startswith("network shop_default: created with the snapshot's subnets 192.168.1.0/24")
    existing = {"Name": "shop_default", "IPAM": {"Config": [lan]}}
    assert pinned_subnets(_Networks([existing]), Manifest.from_dict(document, "test"), {"shop-kv-1": checkpoint}) == []


class _Existing(_Networks):
    def __init__(self, networks: list[dict[str, Any]], volumes: dict[str, dict[str, Any]]) -> None:
        super().__init__(networks)
        self.volumes = volumes

    def inspect_volume(self, name: str) -> dict[str, Any]:
        if name not in self.volumes:
            raise NotFoundError(f"no volume {name}")
        return self.volumes[name]


def test_volumes_and_networks_this_host_has_for_another_project_are_listed() -> None:
    """Recorded by the snapshot, so not "foreign" to it; but this host's, with its data and its containers."""
    document = good_document()
    document["networks"] = [{"Name": "bank_backend", "Driver": "bridge"}, {"Name": "shop_default", "Driver": "bridge"}]
    document["volumes"] = [{"Name": "bank_secrets"}, {"Name": "shop_data"}, {"Name": "shop_cache"}]
    recorded = Manifest.from_dict(document, "test")
    shop = {"Labels": {"com.docker.compose.project": "shop"}}
    engine = _Existing([{"Name": "bank_backend", "Labels": {"com.docker.compose.project": "bank"}},
                        {"Name": "shop_default", **shop}],
                       {"bank_secrets": {"Labels": None}, "shop_data": shop})

    listed = this_hosts_own(engine, recorded, {})

    assert listed == ["volume bank_secrets is this host's (no compose project's): the snapshot's containers would "
                      "use its data, and a restore with volumes would overwrite it",
                      "network bank_backend is this host's (compose project bank): the snapshot's containers "
                      "would join the containers on it"]
    assert this_hosts_own(_Existing([], {}), recorded, {}) == []


def test_a_container_or_holder_this_host_has_for_another_project_is_listed() -> None:
    """A restore would put the snapshot's memory into it, with the binds and privileges it has here."""
    document = good_document()
    document["containers"][0]["inspect"]["HostConfig"]["NetworkMode"] = "container:" + HOLDER["Id"]
    document["containers"][0]["holder"] = HOLDER
    recorded = Manifest.from_dict(document, "test")

    class Containers(_Existing):
        def inspect(self, name: str) -> ContainerInfo | None:
            labels = {"shop-kv-1": {"com.docker.compose.project": "bank"}, "shop-kv-1-holder": {}}.get(name)
            return None if labels is None else ContainerInfo(
                id="c" * 64, name=name, image="redis:7.2", image_id=IMAGE_ID, status="exited", pid=0, exit_code=0,
                labels=labels, started_at="", attrs={})

    assert this_hosts_own(Containers([], {}), recorded, holders_as_built(recorded)) == [
        "container shop-kv-1 is this host's (compose project bank): a restore would put the snapshot's memory "
        "into it, as it is configured here",
        "container shop-kv-1-holder is this host's (no compose project's): the snapshot's container would join "
        "its network namespace"]

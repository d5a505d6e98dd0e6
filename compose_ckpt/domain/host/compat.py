"""Can a snapshot taken on one engine be restored on another? Say what differs."""

from __future__ import annotations

from dataclasses import dataclass, field

from compose_ckpt.domain.host.versions import version_tuple
from compose_ckpt.domain.ports import EnginePort


@dataclass
class Compatibility:
    blockers: list[str] = field(default_factory=list)  # restore cannot work
    warnings: list[str] = field(default_factory=list)  # restore may work; the user should know


def check_target(recorded: dict[str, str], target: EnginePort) -> Compatibility:
    """Compare the engine facts recorded in a manifest with the target engine."""
    info = target.info()
    result = Compatibility()
    if recorded.get("architecture") and recorded["architecture"] != info.architecture:
        result.blockers.append(f"CPU architecture differs: snapshot {recorded['architecture']}, target {info.architecture}")
    if not info.experimental:
        result.blockers.append("the target engine does not run with experimental features (no checkpoints)")
    for key, mine in (("docker", info.server_version), ("kernel", info.kernel_version)):
        if recorded.get(key) and recorded[key] != mine:
            result.warnings.append(f"{key} differs: snapshot {recorded[key]}, target {mine}")
    target_criu = target.criu_version()
    if recorded.get("criu") and target_criu and version_tuple(target_criu) < version_tuple(recorded["criu"]):
        result.warnings.append(f"the target's CRIU {target_criu} is older than the snapshot's {recorded['criu']}")
    return result

"""The engine adapter: the only part of compose-ckpt that talks to Docker.

`adapter.Engine` is the domain's `EnginePort`; it puts together one module of calls per resource
(`containers`, `checkpoints`, `networks_volumes`, `images`, `trees`) over one `connection` (`api` is
the raw HTTP, `contexts` the docker SDK for tcp:// and ssh://, `translation` turns Docker's errors into
ours). Work on the daemon's own machine, when that is this one: `local_checkpoints` (dumps through the
daemon's runc in `runtime`; restores placed by `pages_placement`, `pages_in_root`, `hardlinks` and
`mount_propagation`; containerd's leftover copies removed by `ctrd_copies`) and `local_daemon` (what
the domain asks about that machine), both over `procfs`. Checkpoint files: `criu_images` and
`criu_log` read CRIU's images and logs, `tar_stream` moves checkpoint folders to and from remote
engines. `specs` builds create requests from recorded inspect documents, `holder_image` the network
holder's image; `types` holds the values handed to the domain.
"""

from compose_ckpt.engine.adapter import Engine
from compose_ckpt.engine.types import (
    NO_CRIU_OPTIONS,
    NO_RESTART,
    ContainerEvent,
    ContainerInfo,
    CriuOptions,
    DumpPath,
    DumpResult,
    EngineInfo,
    PagesRoute,
    PlacedCheckpoint,
    ProcessFingerprint,
    RestartPolicy,
)

__all__ = ["NO_CRIU_OPTIONS", "NO_RESTART", "ContainerEvent", "ContainerInfo", "CriuOptions", "DumpPath", "DumpResult",
           "Engine", "EngineInfo", "PagesRoute", "PlacedCheckpoint", "ProcessFingerprint", "RestartPolicy"]

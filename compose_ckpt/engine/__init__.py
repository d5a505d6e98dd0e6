"""The engine adapter: the only part of compose-ckpt that talks to Docker."""

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

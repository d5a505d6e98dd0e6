"""The engine adapter: the only part of compose-ckpt that talks to Docker."""

from compose_ckpt.engine import host
from compose_ckpt.engine.adapter import Engine
from compose_ckpt.engine.types import ContainerEvent, ContainerInfo, EngineInfo, ProcessFingerprint

__all__ = ["ContainerEvent", "ContainerInfo", "Engine", "EngineInfo", "ProcessFingerprint", "host"]

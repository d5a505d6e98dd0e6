"""docker SDK clients for the hosts `engine.api`'s own unix transport does not serve: tcp://, ssh://,
Docker contexts (read from the docker CLI's files), and what DOCKER_HOST and DOCKER_TLS_* select."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from compose_ckpt.errors import EngineUnavailable

START_HINT = (
    "Start the Docker daemon (in this repository: `make engine`; on a systemd host: "
    "`sudo systemctl start docker`), or point DOCKER_HOST or -H/--host at a running engine."
)


def sdk_client_for(host: str | None, where: str, timeout: int) -> Any:
    """docker.DockerClient for a tcp://, ssh:// or context host, or what DOCKER_HOST and DOCKER_TLS_* select."""
    import docker
    import docker.errors

    try:
        if host and "://" not in host:
            return client_for_context(host, timeout)
        if host:
            return docker.DockerClient(base_url=host, timeout=timeout, use_ssh_client=host.startswith("ssh://"))
        return docker.from_env(timeout=timeout)
    except docker.errors.DockerException as exc:
        raise EngineUnavailable(f"Cannot reach the Docker daemon at {where}: {exc}", hint=START_HINT) from exc


def client_for_context(name: str, timeout: int) -> Any:
    """A client for a Docker context (`docker context ls`), read from the docker CLI's own files.

    docker-py's ContextAPI looks in the wrong folder when ~/.docker/config.json
    does not exist, so the context's meta.json and TLS files are read here.
    """
    import docker
    import docker.errors
    import docker.tls

    if name == "default":
        return docker.from_env(timeout=timeout)
    config_dir = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    digest = hashlib.sha256(name.encode()).hexdigest()
    try:
        meta = json.loads((config_dir / "contexts" / "meta" / digest / "meta.json").read_text())
        endpoint = meta["Endpoints"]["docker"]
        host = str(endpoint["Host"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise docker.errors.DockerException(f"no usable Docker context named {name!r} in {config_dir}") from exc
    tls_dir = config_dir / "contexts" / "tls" / digest / "docker"
    tls: docker.tls.TLSConfig | bool = False
    if tls_dir.is_dir():
        cert = (str(tls_dir / "cert.pem"), str(tls_dir / "key.pem")) if (tls_dir / "cert.pem").exists() else None
        ca = str(tls_dir / "ca.pem") if (tls_dir / "ca.pem").exists() else None
        verify = False if endpoint.get("SkipTLSVerify") else (ca or True)
        tls = docker.tls.TLSConfig(client_cert=cert, ca_cert=ca, verify=verify)
    return docker.DockerClient(base_url=host, tls=tls, timeout=timeout, use_ssh_client=host.startswith("ssh://"))

"""Names shared across layers: compose labels, our own labels, environment variables, files of the host."""

from __future__ import annotations

from pathlib import Path

# Labels docker compose puts on the containers it creates (compose v1 const.py names).
LABEL_PROJECT = "com.docker.compose.project"
LABEL_SERVICE = "com.docker.compose.service"
LABEL_CONTAINER_NUMBER = "com.docker.compose.container-number"
LABEL_ONEOFF = "com.docker.compose.oneoff"
LABEL_WORKING_DIR = "com.docker.compose.project.working_dir"
LABEL_CONFIG_FILES = "com.docker.compose.project.config_files"
LABEL_DEPENDS_ON = "com.docker.compose.depends_on"  # service:condition:restart,...

# Our own label: on the short-lived helper containers that move checkpoint files through the API.
LABEL_HELPER = "compose-ckpt.helper-for"

# Network holders (see domain/stack/holders.py): on a holder, the name of the service container it holds the
# network namespace for; on that service container, the holder's name.
LABEL_HOLDER_FOR = "compose-ckpt.holder-for"
LABEL_NETWORK_HOLDER = "compose-ckpt.network-holder"
HOLDER_IMAGE = "compose-ckpt/holder:1"
HOLDER_SUFFIX = "-holder"  # a holder is named after its service container: <container>-holder
HOLDER_SERVICE_SUFFIX = "-net"  # `adopt` names the holder service of service S: S-net

# Environment variables read by compose-ckpt itself.
ENV_HOME = "COMPOSE_CKPT_HOME"  # where the snapshot store lives
ENV_LOCK_TIMEOUT = "COMPOSE_CKPT_LOCK_TIMEOUT"  # seconds to wait for another command on the same project
# `engine-api`: dump through the Docker API even where the daemon's own runtime could be called (see
# engine/runtime.py); `auto` (the default): the runtime where it can be, else the Docker API.
ENV_DUMP_PATH = "COMPOSE_CKPT_DUMP_PATH"
# A container label: CRIU options for its dumps, e.g. `tcp-established,file-locks` (direct dumps only).
LABEL_CRIU_OPTIONS = "compose-ckpt.criu-options"
# The labels above that compose-ckpt itself reads or writes: the sidecar's labels share their prefix by default,
# so it leaves these alone rather than call them unknown.
OWN_LABELS = frozenset({LABEL_HELPER, LABEL_HOLDER_FOR, LABEL_NETWORK_HOLDER, LABEL_CRIU_OPTIONS})
# pull gives each blob max(MIN_SECONDS, its size / MIN_RATE) seconds: a registry sending slower is cut off
ENV_PULL_MIN_RATE = "COMPOSE_CKPT_PULL_MIN_RATE"  # bytes per second, default 65536
ENV_PULL_MIN_SECONDS = "COMPOSE_CKPT_PULL_MIN_SECONDS"  # default 120

# Containers worked on at once by default. Measured on 2 cores (bench/README.md): 8 concurrent dumps or
# restores beat 4.
DEFAULT_PARALLEL = 8

# Names of checkpoints we create inside Docker start with this, so they are recognisable.
CHECKPOINT_PREFIX = "ckpt-"

# runc hands CRIU the options in this file: `host install --tcp-established` adds the line, `doctor` reads it.
RUNC_CRIU_CONFIG = Path("/etc/criu/runc.conf")
TCP_ESTABLISHED = "tcp-established"
# A container's own CRIU configuration file: runc reads it instead of RUNC_CRIU_CONFIG, for dumps and restores.
CRIU_CONFIG_ANNOTATION = "org.criu.config"

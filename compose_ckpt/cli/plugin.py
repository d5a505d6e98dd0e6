"""`docker ckpt ...`: compose-ckpt as a Docker CLI plugin.

The Docker CLI finds `docker-ckpt` in ~/.docker/cli-plugins, asks it for
metadata with `docker-cli-plugin-metadata`, then runs it as
`docker-ckpt ckpt ARGS...` for `docker ckpt ARGS...`.
"""

from __future__ import annotations

import json
import sys

from compose_ckpt import __version__
from compose_ckpt.cli.main import exit_with, run

PLUGIN_NAME = "ckpt"
METADATA = {
    "SchemaVersion": "0.1.0",
    "Vendor": "compose-ckpt",
    "Version": __version__,
    "ShortDescription": "Checkpoint and restore whole Compose stacks with CRIU",
}


def entry() -> None:
    args = sys.argv[1:]
    if args[:1] == ["docker-cli-plugin-metadata"]:
        print(json.dumps(METADATA))
        return
    if args[:1] == [PLUGIN_NAME]:
        args = args[1:]
    exit_with(run(args, prog_name=f"docker {PLUGIN_NAME}"))

"""Registry credentials as `docker login` left them: $DOCKER_CONFIG/config.json (default ~/.docker).

Docker's order: a `credHelpers` entry for the registry, else the `credsStore`
helper, else the `auths` entry (base64 `user:password`, or an identity token).
A helper is the program `docker-credential-<name>`, asked with `get` and the
server on stdin; it answers `{"Username": ..., "Secret": ...}`, where the
user name `<token>` means the secret is an identity (refresh) token.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from compose_ckpt.errors import RegistryError, UsageError
from compose_ckpt.registry.reference import DOCKER_HUB

_HUB_SERVER = "https://index.docker.io/v1/"  # the key docker login uses for Docker Hub
_HUB_NAMES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_HELPER_TIMEOUT = 60


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    identity_token: str | None = None  # exchanged for a bearer token (OAuth refresh_token grant)
    registry_token: str | None = None  # used as the bearer token as it is

    @property
    def anonymous(self) -> bool:
        return not (self.username or self.identity_token or self.registry_token)


ANONYMOUS = Credentials()


def config_path() -> Path:
    folder = os.environ.get("DOCKER_CONFIG")
    return Path(folder) / "config.json" if folder else Path.home() / ".docker" / "config.json"


def _address_of(key: str) -> str:
    """`https://host:5000/v1/` -> `host:5000`; keys are written with and without scheme and path."""
    for scheme in ("https://", "http://"):
        if key.startswith(scheme):
            key = key[len(scheme):]
    return key.split("/", 1)[0]


def _matches(key: str, registry: str) -> bool:
    address = _address_of(key)
    return address == registry or (registry == DOCKER_HUB and address in _HUB_NAMES)


def load_credentials(registry: str, path: Path | None = None) -> Credentials:
    """Credentials for `registry` (host[:port], docker.io for Hub); anonymous when none are configured."""
    path = path or config_path()
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return ANONYMOUS
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read Docker's credentials in {path}: {exc}",
                         hint="Fix or remove the file, or run `docker login` again.") from exc
    if not isinstance(config, dict):
        raise UsageError(f"{path} is not a JSON object")
    server = _HUB_SERVER if registry == DOCKER_HUB else registry
    helpers = config.get("credHelpers") or {}
    helper = next((name for key, name in helpers.items() if _matches(key, registry)), None) if isinstance(helpers, dict) else None
    if helper is None and isinstance(config.get("credsStore"), str) and config["credsStore"]:
        helper = config["credsStore"]
    if helper:
        return _from_helper(str(helper), server)
    auths = config.get("auths") or {}
    entry = next((value for key, value in auths.items() if _matches(key, registry)), None) if isinstance(auths, dict) else None
    return _from_auths_entry(entry, path) if isinstance(entry, dict) else ANONYMOUS


def _from_auths_entry(entry: dict[str, object], path: Path) -> Credentials:
    username, password = entry.get("username"), entry.get("password")
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            username, _, password = base64.b64decode(str(entry["auth"]), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: an `auth` entry is not base64 of user:password") from exc
    identity = entry.get("identitytoken")
    registry_token = entry.get("registrytoken")
    return Credentials(
        username=str(username) if username else None, password=str(password) if password else None,
        identity_token=str(identity) if identity else None, registry_token=str(registry_token) if registry_token else None,
    )


def _from_helper(helper: str, server: str) -> Credentials:
    program = f"docker-credential-{helper}"
    try:
        answer = subprocess.run([program, "get"], input=server.encode(), capture_output=True, timeout=_HELPER_TIMEOUT)
    except FileNotFoundError:
        raise RegistryError(f"Docker's config names the credential helper {program}, which is not on PATH",
                            hint="Install it, or remove credsStore/credHelpers from ~/.docker/config.json.") from None
    except subprocess.TimeoutExpired:
        raise RegistryError(f"the credential helper {program} did not answer within {_HELPER_TIMEOUT} s") from None
    if answer.returncode != 0:
        message = answer.stdout.decode(errors="replace").strip() or answer.stderr.decode(errors="replace").strip()
        if "credentials not found" in message.lower():
            return ANONYMOUS
        raise RegistryError(f"the credential helper {program} failed: {message[:300]}")
    try:
        document = json.loads(answer.stdout)
        username, secret = str(document.get("Username") or ""), str(document.get("Secret") or "")
    except (ValueError, AttributeError) as exc:
        raise RegistryError(f"the credential helper {program} answered something that is not its JSON") from exc
    if username == "<token>":
        return Credentials(identity_token=secret or None)
    return Credentials(username=username or None, password=secret or None)

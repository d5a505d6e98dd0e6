"""Image-style references, `[registry[:port]/]path[:tag][@sha256:digest]`, parsed as Docker does.

The first path component names the registry when it has a `.` or a `:` or is
`localhost`; otherwise the reference is on Docker Hub (`docker.io`, one-component
paths under `library/`). Grammar: distribution's reference package (regexp.go).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from compose_ckpt.errors import UsageError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"  # where docker.io's API actually answers

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
                   r"|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?")
TAG_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
_MAX_PATH = 255  # distribution's limit on the repository name


@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port] as written (docker.io for Docker Hub)
    repository: str  # path inside the registry, e.g. team/app
    tag: str | None = None
    digest: str | None = None

    @property
    def api_address(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def is_loopback(self) -> bool:
        """127.0.0.0/8, ::1 or localhost: plain HTTP is allowed there without --insecure, as Docker does."""
        name = self.registry.rsplit(":", 1)[0] if not self.registry.startswith("[") else self.registry[1:].split("]")[0]
        if name == "localhost":
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    def with_tag(self, tag: str) -> Reference:
        return replace(self, tag=check_tag(tag), digest=None)

    def with_digest(self, digest: str) -> Reference:
        return replace(self, tag=None, digest=digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def check_tag(tag: str) -> str:
    if not TAG_PATTERN.fullmatch(tag):
        raise UsageError(f"invalid tag {tag!r}", hint="A tag is 1-128 letters, digits, '_', '.' or '-', "
                                                      "not starting with '.' or '-'.")
    return tag


def parse_reference(text: str) -> Reference:
    """Parse REF; any deviation from the grammar is a UsageError that says which part is wrong."""
    def bad(why: str) -> UsageError:
        return UsageError(f"invalid registry reference {text!r}: {why}",
                          hint="Write it like registry.example:5000/team/app:tag (or @sha256:<digest>).")

    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not DIGEST_PATTERN.fullmatch(digest):
            raise bad("the digest must be sha256: and 64 lowercase hex digits")
    tag = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not TAG_PATTERN.fullmatch(tag):
            raise bad(f"{tag!r} is not a valid tag")
    parts = rest.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, path = first, parts[1:]
        if not _HOST.fullmatch(registry):
            raise bad(f"{registry!r} is not a host name or address with an optional port")
    else:
        registry, path = DOCKER_HUB, parts
        if len(path) == 1:
            path = ["library", *path]
    for component in path:
        if not _PATH_COMPONENT.fullmatch(component):
            raise bad(f"{component!r} is not a valid repository path component "
                      "(lowercase letters and digits, separated by '.', '_', '__' or '-')")
    repository = "/".join(path)
    if len(repository) > _MAX_PATH:
        raise bad(f"the repository path is longer than {_MAX_PATH} characters")
    return Reference(registry=registry.lower() if registry == DOCKER_HUB else registry, repository=repository,
                     tag=tag, digest=digest)

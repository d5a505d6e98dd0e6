"""What to do about a failed dump or restore, read from the daemon's error and CRIU's log lines.

The most specific cause wins: a restore log always holds sandbox noise such as
`Can't setup RLIMIT_NOFILE`, so restore causes are matched before dump causes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_MISSING_FILE = re.compile(r"Can't open file (\S+) on restore: No such file or directory")
_RESIZED_FILE = re.compile(r"File (\S+) has bad size")
_UNIX_PEER_GONE = re.compile(r"Unix socket \d+ not found")
# Logged by every restore where CRIU lacks CAP_SYS_RESOURCE, harmless: not a cause.
_SANDBOX_NOISE = re.compile(r"rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted")

CRIU_MISSING = ("The Docker daemon finds no `criu` on its PATH. Install CRIU 4.2 or newer on the daemon's "
                "host (in this repository: `make engine`) where the daemon's PATH finds it (e.g. /usr/local/sbin), "
                "restart the daemon, and check with `compose-ckpt doctor`.")
CRIU_TOO_OLD = ("This CRIU is too old for the kernel (`Unexpected rt vDSO area bounds`: CRIU before 4.2 on recent "
                "kernels). Install CRIU 4.2 or newer where the daemon's PATH finds it; `compose-ckpt doctor` checks it.")
TCP_REMEDY = ("A service has an established TCP connection. Let CRIU checkpoint it: "
              "`compose-ckpt host install --project NAME --tcp-established` adds `tcp-established` to "
              "/etc/criu/runc.conf on the Docker host (showing the change first), or set the container "
              "annotation org.criu.config to a file holding that line. Connections between services of one "
              "snapshot are frozen together and carry on; a peer outside the snapshot must tolerate the pause.")
UNIX_SOCKET_REMEDY = ("A unix socket connects a process of the snapshot with one outside its container's process tree: "
                      "another service sharing the socket through a volume, or a `docker compose exec` / `docker exec` "
                      "session connected to it (a database shell, `redis-cli -s`). CRIU cannot take such a "
                      "connection (`External socket is used`; on the other end `Unix socket N not found`). End the "
                      "exec session, or have the services talk over TCP instead of a shared unix socket, or close the "
                      "connection before the snapshot; the lines above name both ends.")
PRIVATE_MOUNTS = ("The checkpoint was taken where the container's root file system and volumes were slaves of the "
                  "host's shared mounts, and where this engine would mount them they are private: CRIU cannot "
                  "restore that link (mount propagation). compose-ckpt fits the checkpoint to the host when it "
                  "reaches the engine through its unix socket on that host: run the import and restore there. "
                  "Or make the mount holding Docker's data root shared on that host (`findmnt -o TARGET,PROPAGATION "
                  "-T /var/lib/docker`, then `mount --make-shared TARGET`). See docs/engine.md.")


def remedy_for(text: str) -> str | None:
    """A remedy for the common reasons CRIU refuses a dump or a restore, or None."""
    text = _SANDBOX_NOISE.sub("", text)
    if '"criu": executable file not found' in text or "criu: executable file not found" in text:
        return CRIU_MISSING
    if "vDSO" in text or "vdso" in text:
        return CRIU_TOO_OLD
    if missing := _MISSING_FILE.search(text):
        return (f"A file the process had open at checkpoint time is gone (/{missing.group(1)}): CRIU needs every "
                "open file back where it was, in volumes and the container's writable layer alike. Put it back "
                "(e.g. restore the volume from the same moment as the snapshot), or take a new snapshot.")
    if resized := _RESIZED_FILE.search(text):
        return (f"A file the process had open changed size after the checkpoint (/{resized.group(1)}; e.g. a log "
                "or append-only file written later): CRIU refuses it. Restore the volume's files from the same "
                "moment as the snapshot, or take a new snapshot.")
    if "Can't bind inet socket back" in text and "Cannot assign requested address" in text:
        return ("A TCP connection comes back only at the address its container had at checkpoint time, and the "
                "container did not get that address back (the lines above say why, when it could be seen: its "
                "network recreated with another subnet, or another container holding the address). Free the "
                "address, or take the stack down (`docker compose down`) and restore it whole: restore recreates "
                "the networks and containers at their recorded addresses.")
    if "Address already in use" in text:
        return ("A port the service listened on is taken on the host or by another container. "
                "Free it (`ss -ltnp` shows who holds it) and restore again.")
    if "Failed to copy sharing" in text:
        return PRIVATE_MOUNTS
    if re.search(r"mount|mnt", text) and "No such file or directory" in text:
        return ("A mount the container had at checkpoint time is missing (a bind-mount source or volume was "
                "removed). Recreate it, then restore again.")
    if "External socket is used" in text or _UNIX_PEER_GONE.search(text):
        return UNIX_SOCKET_REMEDY
    if "Connected TCP socket" in text or "tcp-established" in text:
        return TCP_REMEDY
    if "rlimit" in text or "Operation not permitted" in text:
        return ("CRIU lacks a capability to dump a process running under another uid (CAP_SYS_RESOURCE). "
                "Run dockerd with full root capabilities, or run the service as root; `compose-ckpt doctor` checks this.")
    if "unsupported" in text.lower() or "Can't dump" in text:
        return "A process holds a file or socket CRIU cannot dump; the CRIU log lines above name it."
    return None


def remedies_for(failures: Mapping[str, BaseException]) -> str | None:
    """The remedy of each failed item's own cause, each said once: two causes failing together get both."""
    found: list[str] = []
    for exc in failures.values():
        remedy = remedy_for(" ".join([str(exc), *getattr(exc, "details", [])]))
        if remedy and remedy not in found:
            found.append(remedy)
    return " Also: ".join(found) or None

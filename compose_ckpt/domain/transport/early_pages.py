"""`migrate --live`: the target's containers made before the freeze, and their page images sent while CRIU writes them.

Why. Inside a live move's downtime the memory used to go one step after the other: the dump into the store,
the container's exit, then the upload of the page images into the new container's root on the target (the
slowest step: the target daemon's archive endpoint), then CRIU's restore. Sending the page images as CRIU
writes them overlaps the upload with the dump and the exit.

How.
- Before the freeze (the containers are recorded and still run), each container the target lacks is created
  there as the restore would create it (`recreate_containers`), at any free address, as compose gives: a
  network made there with its recorded subnet could shadow the routes of the stack still running, when the
  target shares this host's network. The names are noted in the move's record first, so that a failure, or
  the next move after a kill, removes them. Whose checkpoint holds TCP connections is known only after the
  dump: during the downtime those containers take their recorded addresses (their networks made again with
  the recorded subnets, as the restore would make them), keeping the page images sent into them
  (`readdress_for_connections`).
- For each container the daemon's runtime dumps into the store, a thread sends the page images into its new
  container's root as they are written (engine/pages_stream.py). The restore finds the containers made,
  waits for each one's sending only when it comes to place its checkpoint (the volume changes and its
  preparation run meanwhile), and links to the page images sent instead of sending them again.
- None of this is needed for the move to work: when the target cannot be prepared (a recorded subnet another
  network holds there, for instance) or a sending fails, the restore does what it did before, and the
  downtime is that much longer. An engine on this host takes no early sending (its restore copies the page
  images in the kernel).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from compose_ckpt.domain.ports import EnginePort
from compose_ckpt.domain.stack.containers import recorded_holders, recreate_containers, take_recorded_addresses
from compose_ckpt.domain.stack.parallel import ProgressCallback, ProgressEvent
from compose_ckpt.domain.store.manifest import ContainerRecord, Manifest
from compose_ckpt.domain.transport.migrate import remove_from_target
from compose_ckpt.engine import ContainerInfo
from compose_ckpt.engine.types import DumpProgress
from compose_ckpt.errors import CkptError

SENDING_PAGES = "sending page images"


class PagesAhead:
    """The DumpWatcher of a live move (domain/stack/snapshot.py)."""

    def __init__(self, target: EnginePort, progress: ProgressCallback,
                 note_created: Callable[[list[str]], None]) -> None:
        self.target = target
        self.progress = progress
        self.note_created = note_created  # keeps the names in the move's record before they exist
        self.created: dict[str, ContainerInfo] = {}
        self.made: list[str] = []  # every container and holder made on the target, in the order to remove them
        self.threads: list[threading.Thread] = []
        self.failures: dict[str, str] = {}  # container name -> why its page images were not sent early
        self.sent: dict[str, int] = {}  # container name -> bytes of page images sent while it was dumped

    def recorded(self, manifest: Manifest) -> None:
        missing = [r for r in manifest.containers if self.target.inspect(r.container_name) is None]
        holders = [name for name in recorded_holders(missing) if self.target.inspect(name) is None]
        if not missing:
            return
        self.made = [r.container_name for r in missing] + holders
        self.note_created(self.made)
        try:
            self.created = recreate_containers(self.target, manifest, missing, self.progress)
        except CkptError as exc:
            self.progress(manifest.project, f"page images are sent after the dump: the target could not be "
                                            f"prepared before it ({exc.message})")

    def dump_started(self, record: ContainerRecord, into: Path, estimate: int | None, dump: DumpProgress) -> None:
        container = self.created.get(record.container_name)
        if container is None:
            return
        thread = threading.Thread(target=self._send, args=(record.container_name, container.id, into, estimate, dump),
                                  name=f"pages-ahead-{record.container_name}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def readdress_for_connections(self, manifest: Manifest, connected: set[str], networks: list[str]) -> list[str]:
        """The checkpoints of `connected` hold TCP connections, which come back only at their recorded addresses
        (and networks with their recorded subnets): the containers made here take those, keeping the page
        images sent into them (`take_recorded_addresses`). Where they cannot (network holders, a subnet taken
        on the target), what was made here is removed (the containers, holders, and `networks`, those the
        target lacked) and the restore makes them again, sending the page images itself. Returns a line for
        each thing that could not be removed."""
        moving = connected & set(self.created)
        if not moving:
            return []
        why = "network holders" if any(r.holder for r in manifest.containers if r.container_name in self.created) else ""
        if not why:
            try:
                take_recorded_addresses(self.target, manifest, self.created, connected, networks)
                self.progress(", ".join(sorted(moving)),
                              "TCP connections: the containers made early take their recorded addresses")
                return []
            except CkptError as exc:
                why = exc.message
        self.wait()
        self.progress(", ".join(sorted(connected)), f"TCP connections: the target's containers are made again at "
                                                    f"their recorded addresses ({why})")
        self.created = {}
        return remove_from_target(self.target, self.made, (), self.progress, networks)

    def wait(self) -> None:
        """Until every sending has ended (each ends soon after its dump); a failed one is said, not raised."""
        for thread in self.threads:
            thread.join()
        for name, why in self.failures.items():
            self.progress(name, f"page images sent again by the restore: {why}")

    def _send(self, name: str, container_id: str, into: Path, estimate: int | None, dump: DumpProgress) -> None:
        line = f"{name} (target)"

        def sent(done: int, total: int) -> None:
            self.progress(line, ProgressEvent(SENDING_PAGES, done, total, estimated=True))

        try:
            self.sent[name] = self.target.send_pages_early(container_id, into, dump, estimate, sent)
        except (CkptError, OSError) as exc:
            self.failures[name] = getattr(exc, "message", None) or str(exc)

"""Image calls: look up, save and load as streams, and the network holder's image."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from compose_ckpt.const import HOLDER_IMAGE, LABEL_HOLDER_FOR
from compose_ckpt.engine.api import path_of
from compose_ckpt.engine.connection import Connection
from compose_ckpt.engine.holder_image import holder_rootfs
from compose_ckpt.engine.translation import translated
from compose_ckpt.errors import NotFoundError


class ImageCalls(Connection):
    """The image endpoints of the Engine API."""

    def image_id(self, reference: str) -> str | None:
        """The id of the image `reference` names on this engine, or None."""
        try:
            with translated(f"inspect image {reference}"):
                return str(self._http.call("GET", path_of("/images/{0}/json", reference))["Id"])
        except NotFoundError:
            return None

    def save_image(self, reference: str) -> Iterator[bytes]:
        """`docker save` of one image (with its tag), streamed."""
        with translated(f"save image {reference}"):
            yield from self._api.get_image(reference, chunk_size=1024**2)

    def load_image(self, chunks: Iterable[bytes]) -> None:
        """`docker load` from a stream."""
        with translated("load image"):
            for _ in self._api.load_image(chunks):
                pass

    def ensure_holder_image(self) -> str:
        """The network holder image (see holder_image.py), imported on first use; returns its reference."""
        if self.image_id(HOLDER_IMAGE) is None:
            repository, tag = HOLDER_IMAGE.rsplit(":", 1)
            rootfs = holder_rootfs(self.info().architecture)
            changes = ['ENTRYPOINT ["/pause"]', f"LABEL {LABEL_HOLDER_FOR}=image"]
            with translated(f"import image {HOLDER_IMAGE}"):
                self._api.import_image_from_data(rootfs, repository=repository, tag=tag, changes=changes)
        return HOLDER_IMAGE

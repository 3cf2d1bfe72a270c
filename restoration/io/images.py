"""Folders of images read whole: every image under a folder, prefix or URI, decoded, for
evaluation and validation (the restore job streams its inputs instead)."""

from __future__ import annotations

import numpy as np

from restoration.io import storage
from restoration.io.codec import decode_image


def read_images(images: str, limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """(file name, pixels) of the images under a folder/URI, sorted by name; ``limit``: the first
    ``limit`` of them.

    Raises:
        ValueError: no image there, or a ``limit`` below 1.
    """
    uris = storage.list_images(images)
    if not uris:
        raise ValueError(f"no images found under {images}")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        uris = uris[:limit]
    return [(uri.rsplit("/", 1)[-1], decode_image(storage.read_bytes(uri)).pixels) for uri in uris]

"""A fine-tuning worker's images: its disjoint shard of the training images, decoded to 8-bit
RGB (unusable files counted, not fatal), the lines it says about them, and the validation images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from restoration.io import storage
from restoration.io.codec import ImageDecodeError, decode_image
from restoration.io.images import read_images
from restoration.io.pixels import to_uint8


@dataclass
class LoadedImages:
    """Decoded training images of one worker's shard; unreadable files are counted, not fatal."""

    names: list[str]
    pixels: list[np.ndarray]  # HxWx3 uint8
    bad: list[tuple[str, str]]  # (uri, reason)


def load_training_images(uris: list[str], *, min_size: int = 0) -> LoadedImages:
    """Decode images to 8-bit RGB (16-bit is rounded, gray repeated, alpha dropped).

    Files that cannot be read or decoded, or are smaller than ``min_size`` on a side, are
    skipped and listed in ``bad`` with the reason.

    Raises:
        ValueError: ``uris`` is empty, or none of the images can be used (the message shows the
            first reasons).
    """
    if not uris:
        raise ValueError("no training images to load")
    names, pixels, bad = [], [], []
    for uri in uris:
        try:
            image = decode_image(storage.read_bytes(uri))
        except (ImageDecodeError, OSError, ValueError) as exc:
            bad.append((uri, storage.redact(str(exc))))
            continue
        p = to_uint8(image.pixels)
        if p.shape[-1] == 1:
            p = np.repeat(p, 3, axis=-1)
        p = p[..., :3]
        if min(p.shape[:2]) < min_size:
            bad.append((uri, f"smaller than the {min_size}-pixel training crop ({p.shape[1]}x{p.shape[0]})"))
            continue
        names.append(uri.rsplit("/", 1)[-1])
        pixels.append(np.ascontiguousarray(p))
    if not names:
        reasons = "; ".join(f"{u}: {r}" for u, r in bad[:3])
        raise ValueError(f"none of the {len(uris)} images could be used ({reasons})")
    return LoadedImages(names, pixels, bad)


@dataclass
class Shard:
    """One worker's decoded training images; ``usable``/``bad`` count this worker's images."""

    images: LoadedImages | None
    usable: int
    bad: int


def load_shard(uris: list[str], *, rank: int, world_size: int, min_size: int) -> Shard:
    """Worker ``rank``'s disjoint shard (every ``world_size``-th image from ``rank``), decoded;
    unusable images are counted, and a shard with none is ``Shard(None, 0, n)``."""
    shard = uris[rank::world_size]
    try:
        images = load_training_images(shard, min_size=min_size)
    except ValueError:
        return Shard(None, 0, len(shard))
    return Shard(images, len(images.names), len(images.bad))


def shard_messages(shard: Shard, rank: int, world_size: int, total_usable: int, total_bad: int,
                   empty_shards: int) -> list[str]:
    """The lines a worker prints about the shards (rank 0: the totals; others: their own skipped
    images), given the totals over all workers.

    Raises:
        ValueError: some worker has no usable image (every worker raises, so all stop together).
    """
    if shard.images is None or empty_shards:
        raise ValueError(f"{empty_shards} of {world_size} workers have no usable training images "
                         f"({total_bad} of {total_usable + total_bad} images could not be used); "
                         "use fewer --workers or more images")
    bad = shard.images.bad
    if rank == 0:
        return [f"training on {total_usable} images over {world_size} worker(s)"
                + (f"; skipped {total_bad} unusable, e.g. {bad[0][0]}: {bad[0][1]}" if bad else
                   f"; skipped {total_bad} unusable" if total_bad else "")]
    return [f"[worker {rank}] skipped {shard.bad} training images, e.g. {bad[0][0]}: {bad[0][1]}"] if bad else []


@dataclass
class WorkerImages:
    """What one worker trains and validates on: its shard, and (rank 0) the validation images."""

    shard: Shard
    validation: list[tuple[str, np.ndarray]]


def load_worker_images(train_uris: list[str], val_uris: list[str], *, rank: int, world_size: int,
                       min_size: int) -> WorkerImages:
    """Worker ``rank``'s shard of ``train_uris`` (:func:`load_shard`) and, on rank 0, every image
    under the ``val_uris`` folders (the others validate nothing)."""
    shard = load_shard(train_uris, rank=rank, world_size=world_size, min_size=min_size)
    validation = [item for uri in val_uris for item in read_images(uri)] if rank == 0 else []
    return WorkerImages(shard, validation)

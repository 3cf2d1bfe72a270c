"""A fine-tuning worker's images: its disjoint shard of the training images, decoded to 8-bit
RGB (unusable files counted, not fatal), the lines it says about them, and the validation images.
Training on pairs, each target image comes with its input (the degraded image the model is to
restore, ``1 / scale`` of its size): :func:`match_pairs` pairs two listings by relative path."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from restoration.io import storage
from restoration.io.codec import ImageDecodeError, decode_image
from restoration.io.images import read_images
from restoration.io.pixels import to_uint8


@dataclass
class LoadedImages:
    """Decoded training images of one worker's shard; unreadable files are counted, not fatal.
    ``inputs``: for training on pairs, each image's input (``1 / scale`` of its size), else None."""

    names: list[str]
    pixels: list[np.ndarray]  # HxWx3 uint8
    bad: list[tuple[str, str]]  # (uri, reason)
    inputs: list[np.ndarray] | None = None  # HxWx3 uint8, paired with pixels


def _rgb8(uri: str) -> np.ndarray:
    """An image file as 8-bit RGB (16-bit rounded, gray repeated, alpha dropped)."""
    p = to_uint8(decode_image(storage.read_bytes(uri)).pixels)
    if p.shape[-1] == 1:
        p = np.repeat(p, 3, axis=-1)
    return np.ascontiguousarray(p[..., :3])


def load_training_images(uris: list[str], *, min_size: int = 0, inputs: list[str] | None = None,
                         scale: int = 1) -> LoadedImages:
    """Decode images to 8-bit RGB (16-bit is rounded, gray repeated, alpha dropped); with
    ``inputs`` (one URI per image), each image's input too, which must be ``1 / scale`` of its
    size.

    Files that cannot be read or decoded, are smaller than ``min_size`` on a side, or whose
    input does not fit them, are skipped and listed in ``bad`` with the reason.

    Raises:
        ValueError: ``uris`` is empty, or none of the images can be used (the message shows the
            first reasons).
    """
    if not uris:
        raise ValueError("no training images to load")
    names, pixels, paired, bad = [], [], [], []
    for index, uri in enumerate(uris):
        try:
            p = _rgb8(uri)
        except (ImageDecodeError, OSError, ValueError) as exc:
            bad.append((uri, storage.redact(str(exc))))
            continue
        if min(p.shape[:2]) < min_size:
            bad.append((uri, f"smaller than the {min_size}-pixel training crop ({p.shape[1]}x{p.shape[0]})"))
            continue
        if inputs is not None:
            try:
                lq = _rgb8(inputs[index])
            except (ImageDecodeError, OSError, ValueError) as exc:
                bad.append((inputs[index], storage.redact(str(exc))))
                continue
            if (lq.shape[0] * scale, lq.shape[1] * scale) != p.shape[:2]:
                bad.append((inputs[index], f"input {lq.shape[1]}x{lq.shape[0]} does not fit its target "
                                           f"{p.shape[1]}x{p.shape[0]} at scale {scale}"))
                continue
            paired.append(lq)
        names.append(uri.rsplit("/", 1)[-1])
        pixels.append(p)
    if not names:
        reasons = "; ".join(f"{u}: {r}" for u, r in bad[:3])
        raise ValueError(f"none of the {len(uris)} images could be used ({reasons})")
    return LoadedImages(names, pixels, bad, paired if inputs is not None else None)


def match_pairs(targets: list[str], target_root: str, inputs: list[str], input_root: str) -> tuple[list[str], list[str], int]:
    """Pair two listings by their path relative to their roots, extension aside (a restore job
    keeps the input's relative path; its format may differ): ``(targets, inputs, unmatched)``,
    the targets that have an input, theirs in the same order, and how many targets have none."""
    def key(uri: str, root: str) -> str:
        relative = uri[len(root):].lstrip("/") if uri.startswith(root) else uri.rsplit("/", 1)[-1]
        return relative.rsplit(".", 1)[0] if "." in relative.rsplit("/", 1)[-1] else relative

    found = {key(uri, input_root): uri for uri in inputs}
    matched = [(uri, found[key(uri, target_root)]) for uri in targets if key(uri, target_root) in found]
    return [t for t, _ in matched], [i for _, i in matched], len(targets) - len(matched)


@dataclass
class Shard:
    """One worker's decoded training images; ``usable``/``bad`` count this worker's images."""

    images: LoadedImages | None
    usable: int
    bad: int


def load_shard(uris: list[str], *, rank: int, world_size: int, min_size: int, inputs: list[str] | None = None,
               scale: int = 1) -> Shard:
    """Worker ``rank``'s disjoint shard (every ``world_size``-th image from ``rank``, with its
    input when training on pairs), decoded; unusable images are counted, and a shard with none
    is ``Shard(None, 0, n)``."""
    shard = uris[rank::world_size]
    try:
        images = load_training_images(shard, min_size=min_size, scale=scale,
                                      inputs=None if inputs is None else inputs[rank::world_size])
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
    """What one worker trains and validates on: its shard, and (rank 0) the validation images,
    or, training on pairs, the validation pairs ``(name, target, input)``."""

    shard: Shard
    validation: list[tuple[str, np.ndarray]]
    validation_pairs: list[tuple[str, np.ndarray, np.ndarray]] | None = None


def load_worker_images(train_uris: list[str], val_uris: list[str], *, rank: int, world_size: int,
                       min_size: int, train_inputs: list[str] | None = None, val_inputs: list[str] | None = None,
                       scale: int = 1) -> WorkerImages:
    """Worker ``rank``'s shard of ``train_uris`` (:func:`load_shard`, with ``train_inputs``
    when training on pairs) and, on rank 0, every image under the ``val_uris`` folders, or with
    ``val_inputs`` every validation pair (the other workers validate nothing)."""
    shard = load_shard(train_uris, rank=rank, world_size=world_size, min_size=min_size, inputs=train_inputs,
                       scale=scale)
    if rank != 0:
        return WorkerImages(shard, [])
    if val_inputs is not None:
        loaded = load_training_images(val_uris, inputs=val_inputs, scale=scale)
        pairs = list(zip(loaded.names, loaded.pixels, loaded.inputs or [], strict=True))
        return WorkerImages(shard, [], pairs)
    return WorkerImages(shard, [item for uri in val_uris for item in read_images(uri)])

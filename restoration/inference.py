"""Inference for any image size: batching, overlapped tiles with feathered blending, CPU or CUDA.

``Predictor`` wraps a model for restoration of whole images:

- images up to ``tile`` pixels on each side go through the model whole, same-sized ones batched;
- larger ones are cut into ``tile`` x ``tile`` tiles overlapping by ``overlap`` pixels; each tile's
  output is weighted by a window that ramps linearly from ~0 to 1 across the overlap, so tiles
  blend without visible seams;
- on CUDA it runs under bf16 autocast and channels_last; a CUDA out-of-memory error retries the
  image with half the tile size (down to ``min_tile``).

Tensors are float32 CHW RGB (or 1-channel gray) in [0, 1]; gray images are run as RGB and
averaged back to one channel, so gray stays gray.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from restoration.checkpoint import Checkpoint, load_checkpoint
from restoration.codec import pixels_to_tensor, tensor_to_pixels
from restoration.model import FusedRestorationNet

log = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> Tensor:
    """1-D blending weights: linear ramps over ``overlap`` pixels on sides shared with a neighbour."""
    w = torch.ones(length)
    if overlap > 0:
        ramp = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
        n = min(overlap, length)
        if not at_start:
            w[:n] = torch.minimum(w[:n], ramp[:n])
        if not at_end:
            w[-n:] = torch.minimum(w[-n:], ramp[:n].flip(0))
    return w


@dataclass(frozen=True)
class TilingPlan:
    """Where the tiles of an image of size (height, width) lie."""

    height: int
    width: int
    tile: int
    overlap: int

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """(top, left, tile_height, tile_width) of every tile."""
        th, tw = min(self.tile, self.height), min(self.tile, self.width)
        return [
            (top, left, th, tw)
            for top in _tile_starts(self.height, self.tile, self.overlap)
            for left in _tile_starts(self.width, self.tile, self.overlap)
        ]


class Predictor:
    """Restores whole images with a ``FusedRestorationNet``.

    Args:
        model: the network (moved to ``device`` and set to eval mode).
        device: ``"cpu"``, ``"cuda"``, a torch.device, or None for CUDA when available.
        tile: tile side in input pixels; images larger than this are tiled. 0 disables tiling.
        overlap: overlap between neighbouring tiles, in input pixels.
        batch_size: images or tiles per forward pass.
        amp: bf16 autocast on CUDA (ignored on CPU, where it is slower).
        channels_last: memory format for convolutions.
        min_tile: smallest tile tried after CUDA out-of-memory errors.
        ensemble: geometric self-ensemble: the mean of the outputs for 1, 2, 4 or 8 flips and
            transpositions of the input (``ENSEMBLE_SIZES``), each undone on its output. Costs as
            many forward passes; gains a little PSNR (see MODEL_CARD.md).
    """

    def __init__(
        self,
        model: FusedRestorationNet,
        *,
        device: str | torch.device | None = None,
        tile: int = 512,
        overlap: int = 32,
        batch_size: int = 4,
        amp: bool = True,
        channels_last: bool = True,
        min_tile: int = 128,
        ensemble: int = 1,
    ) -> None:
        if ensemble not in ENSEMBLE_SIZES:
            raise ValueError(f"ensemble must be one of {ENSEMBLE_SIZES}, got {ensemble}")
        if tile < 0 or (tile and tile <= 2 * overlap):
            raise ValueError(f"tile must be 0 (no tiling) or larger than 2 * overlap ({2 * overlap}), got {tile}")
        if overlap < 0:
            raise ValueError(f"overlap must be >= 0, got {overlap}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device).eval()
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.tile = tile
        self.overlap = overlap
        self.batch_size = batch_size
        self.amp = amp and self.device.type == "cuda"
        self.min_tile = min_tile
        self.scale = model.config.scale
        self.needs_mask = model.config.task == "inpaint"
        self.ensemble = ensemble

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> "Predictor":
        checkpoint = load_checkpoint(path)
        predictor = cls(checkpoint.model, **kwargs)
        predictor.checkpoint = checkpoint
        return predictor

    # -- core ----------------------------------------------------------------------------------

    def _autocast(self):
        if self.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward(self, lq: Tensor, mask: Tensor | None) -> Tensor:
        """(N, 3, h, w) -> (N, 3, h*scale, w*scale) float32 on the CPU."""
        lq = lq.to(self.device, non_blocking=True)
        if self.channels_last:
            lq = lq.contiguous(memory_format=torch.channels_last)
        if mask is not None:
            mask = mask.to(self.device, non_blocking=True)
        with torch.inference_mode(), self._autocast():
            # Member 0 is the identity, so ensemble=1 is the plain forward pass.
            out = sum(_undo(self.model(_apply(lq, flips), None if mask is None else _apply(mask, flips)).float(), flips)
                      for flips in _ENSEMBLE_TRANSFORMS[: self.ensemble])
        return (out / self.ensemble).cpu()

    def _check(self, lq: Tensor, mask: Tensor | None) -> None:
        if lq.dim() != 3 or lq.shape[0] not in (1, 3):
            raise ValueError(f"expected an image tensor (C, H, W) with C in (1, 3), got {tuple(lq.shape)}")
        if self.needs_mask:
            if mask is None:
                raise ValueError("the inpainting model needs a mask (1, H, W), 1 = missing pixel")
            if mask.shape != (1, *lq.shape[1:]):
                raise ValueError(f"mask must have shape (1, {lq.shape[1]}, {lq.shape[2]}), got {tuple(mask.shape)}")

    def _restore_tiled(self, lq: Tensor, mask: Tensor | None, tile: int) -> Tensor:
        """One RGB image (3, H, W) through overlapping tiles; returns (3, H*s, W*s)."""
        _, height, width = lq.shape
        s = self.scale
        plan = TilingPlan(height, width, tile, self.overlap)
        boxes = plan.boxes()
        out = torch.zeros(3, height * s, width * s)
        weight = torch.zeros(1, height * s, width * s)
        for i in range(0, len(boxes), self.batch_size):
            chunk = boxes[i : i + self.batch_size]
            tiles = torch.stack([lq[:, t : t + h, l : l + w] for t, l, h, w in chunk])
            tile_masks = torch.stack([mask[:, t : t + h, l : l + w] for t, l, h, w in chunk]) if mask is not None else None
            results = self._forward(tiles, tile_masks)
            for (t, l, h, w), res in zip(chunk, results):
                wy = _ramp(h * s, self.overlap * s, t == 0, t + h == height)
                wx = _ramp(w * s, self.overlap * s, l == 0, l + w == width)
                win = (wy[:, None] * wx[None, :])[None]
                out[:, t * s : (t + h) * s, l * s : (l + w) * s] += res * win
                weight[:, t * s : (t + h) * s, l * s : (l + w) * s] += win
        return out / weight

    def _restore_rgb(self, lq: Tensor, mask: Tensor | None) -> Tensor:
        tile = self.tile
        while True:
            try:
                if tile == 0 or max(lq.shape[-2:]) <= tile:
                    return self._forward(lq[None], None if mask is None else mask[None])[0]
                return self._restore_tiled(lq, mask, tile)
            except torch.cuda.OutOfMemoryError:
                smaller = max(tile // 2 if tile else 512, 1)
                if smaller < self.min_tile or smaller <= 2 * self.overlap:
                    raise
                log.warning("CUDA out of memory with tile %s; retrying with tile %s", tile or "none", smaller)
                torch.cuda.empty_cache()
                tile = smaller

    # -- public --------------------------------------------------------------------------------

    def restore(self, lq: Tensor, mask: Tensor | None = None) -> Tensor:
        """Restore one image (C, H, W), C in (1, 3); returns (C, H*scale, W*scale), not clipped."""
        return self.restore_many([lq], None if mask is None else [mask])[0]

    def restore_many(self, images: list[Tensor], masks: list[Tensor] | None = None) -> list[Tensor]:
        """Restore a list of images; same-sized small images share forward passes."""
        if masks is not None and len(masks) != len(images):
            raise ValueError(f"got {len(images)} images but {len(masks)} masks")
        results: list[Tensor | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, lq in enumerate(images):
            mask = masks[i] if masks is not None else None
            self._check(lq, mask)
            if self.tile and max(lq.shape[-2:]) > self.tile:
                results[i] = self._restore_one(lq, mask)
            else:
                groups.setdefault(tuple(lq.shape[-2:]), []).append(i)
        for indices in groups.values():
            for j in range(0, len(indices), self.batch_size):
                chunk = indices[j : j + self.batch_size]
                batch = torch.stack([_as_rgb(images[i]) for i in chunk])
                mask_batch = torch.stack([masks[i] for i in chunk]) if masks is not None else None
                try:
                    out = self._forward(batch, mask_batch)
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    out = [self._restore_one(images[i], masks[i] if masks is not None else None) for i in chunk]
                    for i, res in zip(chunk, out):
                        results[i] = res
                    continue
                for i, res in zip(chunk, out):
                    results[i] = _like(res, images[i])
        return results  # type: ignore[return-value]

    def _restore_one(self, lq: Tensor, mask: Tensor | None) -> Tensor:
        return _like(self._restore_rgb(_as_rgb(lq), mask), lq)

    def restore_pixels(self, pixels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Restore an HxWxC uint8/uint16 array; returns the same dtype and channel count."""
        lq = pixels_to_tensor(pixels)
        mask_t = None if mask is None else torch.from_numpy(np.asarray(mask, dtype=np.float32))[None]
        restored = self.restore(lq, mask_t)
        return tensor_to_pixels(restored.clamp(0, 1), dtype=pixels.dtype)


ENSEMBLE_SIZES = (1, 2, 4, 8)
# (flip width, flip height, transpose) per member, in order: the first 2, 4 or 8 form the ensemble.
_ENSEMBLE_TRANSFORMS = [(False, False, False), (True, False, False), (False, True, False), (True, True, False),
                        (False, False, True), (True, False, True), (False, True, True), (True, True, True)]


def _apply(x: Tensor, flips: tuple[bool, bool, bool]) -> Tensor:
    if flips[0]:
        x = x.flip(-1)
    if flips[1]:
        x = x.flip(-2)
    return x.transpose(-1, -2) if flips[2] else x


def _undo(x: Tensor, flips: tuple[bool, bool, bool]) -> Tensor:
    if flips[2]:
        x = x.transpose(-1, -2)
    if flips[1]:
        x = x.flip(-2)
    return x.flip(-1) if flips[0] else x


def _as_rgb(x: Tensor) -> Tensor:
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x


def _like(restored: Tensor, source: Tensor) -> Tensor:
    """Back to the source's channel count: gray in, gray out."""
    return restored.mean(dim=0, keepdim=True) if source.shape[0] == 1 else restored

"""Inference for any image size: batching, overlapped tiles with feathered blending, CPU or CUDA.

``Predictor`` wraps a model for restoration of whole images:

- images up to ``tile`` pixels on each side go through the model whole, same-sized ones batched;
- larger ones are cut into ``tile`` x ``tile`` tiles overlapping by ``overlap`` pixels, and
  ``tile_batch_size`` tiles of one image share each forward pass, which runs on all of torch's
  threads; each tile's output is weighted by a window that ramps linearly from ~0 to 1 across the
  overlap, so tiles blend without visible seams;
- on the CPU a forward pass holds at most ``pass_pixels`` output pixels (512 x 512 by default):
  bigger passes spill out of the caches and run slower per pixel;
- ``precision="auto"`` runs under bf16 autocast on CUDA and on CPUs that compute bf16 natively
  (AVX512-BF16 or AMX, see :func:`cpu_has_fast_bf16`), fp32 elsewhere; ``"fp32"`` forces fp32;
- channels_last memory format; on the CPU, batch norms are folded into the preceding
  convolutions of a private copy of the model (:func:`fold_batch_norms`);
- a CUDA out-of-memory error retries the image with half the tile size (down to ``min_tile``);
- ``strength`` in [0, 1] scales the model's change: ``lq + strength * (model(lq) - lq)``, with
  ``lq`` at the output size (bicubic for super-resolution, as the model upsamples).

Tensors are float32 CHW RGB (or 1-channel gray) in [0, 1]; gray images are run as RGB and
averaged back to one channel, so gray stays gray.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ValidatorFunctionWrapHandler, field_validator, model_validator
from torch import Tensor, nn

from restoration.config import SettingError, Settings, at_least, check, one_of, within
from restoration.io.pixels import pixels_to_tensor, tensor_to_pixels
from restoration.models.checkpoint import load_checkpoint
from restoration.models.interface import ModelTraits, RestorationModel

log = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


PRECISIONS = ("auto", "fp32", "bf16")
# Output pixels per forward pass on the CPU: on the shipped denoiser (2 threads, bf16), passes of
# 512 x 512 run at 0.24 s/Mpix, of 1024 x 1024 (or four 512 x 512 images) at 0.37 s/Mpix.
CPU_PASS_PIXELS = 512 * 512
WHOLE_IMAGE_SIDE = 2048
"""Models that discourage tiling (:attr:`ModelTraits.tiling`) take whole images up to this many
pixels on a side; larger ones go through tiles this large."""
WIDE_OVERLAP = 128
"""Overlap of those large tiles, in input pixels."""
_FAST_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (AVX512-BF16 or AMX-BF16).

    Only there do bf16 convolutions beat fp32 (about 2x on AVX512-BF16); elsewhere oneDNN
    emulates bf16 and it is slower than fp32. Read from torch's CPU capabilities, or from the
    ``/proc/cpuinfo`` flags where torch does not report them.
    """
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        try:
            found = capabilities()
            return any(bool(found.get(flag)) for flag in _FAST_BF16_FLAGS)
        except RuntimeError:
            pass
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return any(flag in flags for flag in _FAST_BF16_FLAGS)


def check_predictor_settings(config: PredictorConfig, traits: ModelTraits) -> None:
    """Raise ValueError (naming the setting) for predictor settings a model cannot take: a noise
    level for a model without a noise map, bf16 for a model that is not safe in it. The runs call
    it on the driver, before any worker starts."""
    if config.noise_level is not None and not traits.noise_level:
        raise ValueError(f"predictor.noise_level: {traits.architecture} models take no noise-level map")
    if config.precision == "bf16" and "bf16" not in traits.dtypes:
        raise ValueError(f"predictor.precision bf16: {traits.architecture} models are not safe in bf16; use fp32")


def _resolve_precision(precision: str, device: torch.device, traits: ModelTraits) -> str:
    """``"bf16"`` or ``"fp32"``: what ``precision`` (one of ``PRECISIONS``) means on ``device``
    for a model with ``traits`` (``auto`` picks bf16 only where it was measured to cost at most
    0.05 dB, ``traits.auto_bf16``)."""
    if precision != "auto":
        return precision
    if not traits.auto_bf16:
        return "fp32"
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16()):
        return "bf16"
    return "fp32"


def fold_batch_norms(model: nn.Module, probe: tuple[Tensor, ...]) -> tuple[nn.Module, int]:
    """A copy of ``model`` (in eval mode) with each batch norm that directly follows a
    convolution folded into that convolution's weights and bias, and replaced by the identity.

    Which batch norm follows which convolution is found by running ``probe`` (the model's
    inputs, e.g. a small image) through the copy: a batch norm whose input is the very tensor a
    convolution returned. The folded copy is checked against ``model`` on the probe; if they
    disagree (a convolution output used elsewhere too), the unfolded copy is returned.

    Returns the copy and the number of batch norms folded. Later changes to ``model``'s weights
    do not reach the copy.
    """
    folded = copy.deepcopy(model).eval()
    outputs: dict[int, tuple[nn.Conv2d, Tensor]] = {}
    calls: dict[int, int] = {}
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []

    def after_conv(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        calls[id(module)] = calls.get(id(module), 0) + 1
        outputs[id(output)] = (module, output)  # the tensor is kept so that its id is not reused

    def after_norm(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        calls[id(module)] = calls.get(id(module), 0) + 1
        source = outputs.get(id(inputs[0]))
        if source is not None and source[1] is inputs[0]:
            pairs.append((source[0], module))

    hooks = []
    for module in folded.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(after_conv))
        elif isinstance(module, nn.BatchNorm2d) and module.track_running_stats:
            hooks.append(module.register_forward_hook(after_norm))
    try:
        with torch.no_grad():
            expected = folded(*probe)
    finally:
        for hook in hooks:
            hook.remove()
    outputs.clear()
    # A module called twice (shared weights) cannot be folded for one of its uses only.
    pairs = [(conv, norm) for conv, norm in pairs if calls[id(conv)] == 1 and calls[id(norm)] == 1]
    if not pairs:
        return folded, 0
    parents = {id(child): (parent, name) for parent in folded.modules() for name, child in parent.named_children()}
    with torch.no_grad():
        for conv, norm in pairs:
            conv.weight, conv.bias = torch.nn.utils.fusion.fuse_conv_bn_weights(
                conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias)
            parent, name = parents[id(norm)]
            setattr(parent, name, nn.Identity())
        got = folded(*probe)
    # Folding reorders float32 arithmetic only; anything more is a convolution output with a
    # second consumer, which folding would have changed.
    tolerance = 1e-4 * max(1.0, float(expected.abs().max()))
    if not torch.allclose(got, expected, rtol=0, atol=tolerance):
        log.warning("folding batch norms changed the model's output by %.2e; running it unfolded",
                    float((got - expected).abs().max()))
        return copy.deepcopy(model).eval(), 0
    return folded, len(pairs)


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


class PredictorConfig(Settings):
    """The settings of a :class:`Predictor`: the ``predictor`` section of a restore run's config
    (``--set predictor.KEY=VALUE``), checked when it is made so that a bad value fails in one
    line before any worker starts.

    Attributes:
        device: ``cpu``, ``cuda``, ``cuda:N``; None: CUDA when the process has a GPU, else CPU.
        threads: torch intra-op threads per process on CPU (None: left as they are; the Ray job
            sizes them from the cluster).
        tile: tile side in input pixels; images larger than this on a side go through
            overlapping tiles. 0: never tile; else more than twice ``overlap``.
        overlap: overlap between neighbouring tiles, in input pixels.
        batch_size: same-sized whole images per forward pass (at most).
        tile_batch_size: tiles of one image per forward pass (at most; None: ``batch_size``).
        pass_pixels: most output pixels in one forward pass, over its batch; a pass always
            holds at least one image or tile. None: :data:`CPU_PASS_PIXELS` (512 x 512) on the
            CPU, where a pass of 4 such images runs 1.5x slower per pixel than 4 passes of one
            (measured on the shipped denoiser), and no limit on CUDA. 0: no limit.
        precision: ``auto`` (bf16 autocast on CUDA and on CPUs with hardware bf16, see
            :func:`cpu_has_fast_bf16`; fp32 elsewhere), ``bf16`` (on any device) or ``fp32``. On
            the shipped denoiser bf16 changes PSNR by less than 0.05 dB.
        channels_last: memory format for convolutions.
        fold_batch_norm: run a copy of the model with its batch norms folded into the
            convolutions (:func:`fold_batch_norms`; same outputs up to float rounding, fewer
            passes over memory). None: on the CPU only. The copy is made when the Predictor is
            built, so later changes to the model's weights are not seen.
        min_tile: smallest tile tried after CUDA out-of-memory errors.
        ensemble: geometric self-ensemble: the mean of the outputs for 1, 2, 4 or 8 flips and
            transpositions of the input (:data:`ENSEMBLE_SIZES`), each undone on its output.
            Costs as many forward passes; gains a little PSNR (see MODEL_CARD.md).
        strength: how much of the model's change to apply, in [0, 1]: the output is
            ``lq + strength * (model(lq) - lq)`` with ``lq`` at the output size (its bicubic
            upsampling for super-resolution, as the model's own). 0 returns the input without
            running the model; 1 is the model as trained. Recorded in every manifest row.
        noise_level: sigma (0..255) of the noise-level map of the models that take one
            (DRUNet, FFDNet-style); None: 15. An error for models that take none.
    """

    section: ClassVar[str] = "predictor"

    device: str | None = None
    threads: Annotated[int, at_least(1)] | None = None
    tile: int = 512
    overlap: Annotated[int, at_least(0, ">= 0 pixels")] = 32
    batch_size: Annotated[int, at_least(1, ">= 1 (images or tiles per forward pass)")] = 4
    tile_batch_size: Annotated[int, at_least(1, ">= 1 (tiles per forward pass) or null (predictor.batch_size)")] | None = None
    pass_pixels: Annotated[int, at_least(0, ">= 0 (0: no limit) or null (the device's default)")] | None = None
    precision: Annotated[str, one_of(PRECISIONS)] = "auto"
    channels_last: bool = True
    fold_batch_norm: bool | None = None
    min_tile: Annotated[int, at_least(1, ">= 1 pixel")] = 128
    ensemble: Annotated[int, check(lambda v: v in ENSEMBLE_SIZES, "one of 1, 2, 4, 8")] = 1
    strength: float = 1.0
    noise_level: Annotated[float, within(0, 255, "a sigma in [0, 255] or null")] | None = None

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        if value not in (None, "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", str(value)):
            raise SettingError(f"must be cpu, cuda, cuda:N or null, got {value!r}")
        return value

    @field_validator("strength", mode="wrap")
    @classmethod
    def _strength(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> float:
        """A number (not a string, a boolean or null) in [0, 1]."""
        if (isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
                or not (math.isfinite(value) and 0.0 <= value <= 1.0)):
            raise SettingError(f"must be in [0, 1] (0: the input unchanged, 1: the model as trained), got {value!r}")
        return handler(float(value))

    @model_validator(mode="after")
    def _tile(self) -> PredictorConfig:
        if self.tile < 0 or (self.tile and self.tile <= 2 * self.overlap):
            raise SettingError(f"must be 0 (no tiling) or more than 2 * {self.section}.overlap = "
                               f"{2 * self.overlap} pixels, got {self.tile}", field="tile")
        return self


class Predictor:
    """Restores whole images with any :class:`RestorationModel`, as ``config`` (a
    :class:`PredictorConfig`) says.

    Args:
        model: the network (moved to the device and set to eval mode; converted to channels_last
            when ``config.channels_last``).
        config: the settings (default: ``PredictorConfig()``).
        device: ``"cpu"``, ``"cuda"``, a torch.device; None: ``config.device``, else CUDA when
            available.

    ``config.precision`` and ``config.fold_batch_norm`` resolve to what runs: ``self.precision``
    is ``"bf16"`` or ``"fp32"``, ``self.amp`` whether bf16 autocast is on,
    ``self.folded_batch_norms`` how many batch norms were folded.
    """

    def __init__(self, model: RestorationModel, config: PredictorConfig | None = None, *,
                 device: str | torch.device | None = None) -> None:
        config = config or PredictorConfig()
        if not isinstance(config, PredictorConfig):
            raise TypeError(f"config must be a PredictorConfig, got {type(config).__name__}")
        self.config = config
        device = device if device is not None else config.device
        self.device = torch.device(device) if device is not None else default_device()
        self.traits = model.traits
        self.precision = _resolve_precision(config.precision, self.device, self.traits)
        self.amp = self.precision == "bf16"
        self.model = model.to(self.device).eval()
        self.channels_last = config.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.tile, self.overlap = config.tile, max(config.overlap, self.traits.min_overlap)
        if self.tile and self.traits.tiling != "supported":
            # Tiling discouraged (attention over the whole image): whole images up to
            # WHOLE_IMAGE_SIDE, larger ones in tiles that large with a wide overlap.
            self.tile, self.overlap = max(self.tile, WHOLE_IMAGE_SIDE), max(self.overlap, WIDE_OVERLAP)
        if self.tile:
            # Tiles of at least the model's minimum, and of a size its size rule needs no padding
            # for: padded tile edges would differ from the whole image's.
            multiple = self.traits.multiple_of
            self.tile = -(-max(self.tile, self.traits.min_size, 2 * self.overlap + 1) // multiple) * multiple
        check_predictor_settings(config, self.traits)
        if config.noise_level is not None:
            model.noise_level = float(config.noise_level)
        self.batch_size = config.batch_size
        self.tile_batch_size = config.tile_batch_size or config.batch_size
        pass_pixels = config.pass_pixels
        if pass_pixels is None:
            pass_pixels = CPU_PASS_PIXELS if self.device.type == "cpu" else 0
        self.pass_pixels = pass_pixels
        self.min_tile = config.min_tile
        self.scale = self.traits.scale
        self.needs_mask = self.traits.takes_mask
        self.ensemble = config.ensemble
        self.strength = float(config.strength)
        # What the forward passes run: the model itself, or its folded copy.
        self.network: nn.Module = self.model
        self.folded_batch_norms = 0
        fold_batch_norm = config.fold_batch_norm
        if fold_batch_norm is None:
            fold_batch_norm = self.device.type == "cpu" and self.traits.fold_batch_norm
        if fold_batch_norm:
            self.network, self.folded_batch_norms = fold_batch_norms(self.model, self._probe())
            if self.channels_last:
                self.network = self.network.to(memory_format=torch.channels_last)

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: PredictorConfig | None = None, *,
                        device: str | torch.device | None = None) -> "Predictor":
        checkpoint = load_checkpoint(path)
        predictor = cls(checkpoint.model, config, device=device)
        predictor.checkpoint = checkpoint
        return predictor

    # -- core ----------------------------------------------------------------------------------

    def _probe(self) -> tuple[Tensor, ...]:
        """A small input for the model (a 64 x 64 image, and a mask for inpainting) on the device."""
        generator = torch.Generator().manual_seed(0)
        side = max(64, self.traits.min_size)
        image = torch.rand(1, 3, side, side, generator=generator).to(self.device)
        if self.needs_mask:
            return image, (torch.rand(1, 1, side, side, generator=generator) < 0.3).float().to(self.device)
        return (image,)

    def _autocast(self):
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward(self, lq: Tensor, mask: Tensor | None) -> Tensor:
        """(N, 3, h, w) -> (N, 3, h*scale, w*scale) float32 on the CPU (the model, before strength)."""
        lq = lq.to(self.device, non_blocking=True)
        if self.channels_last:
            lq = lq.contiguous(memory_format=torch.channels_last)
        if mask is not None:
            mask = mask.to(self.device, non_blocking=True)
        with torch.inference_mode(), self._autocast():
            # Member 0 is the identity, so ensemble=1 is the plain forward pass.
            out = sum(_undo(self.network(_apply(lq, flips), None if mask is None else _apply(mask, flips)).float(), flips)
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
        windows: dict[tuple[int, int, bool, bool, bool, bool], Tensor] = {}
        per_pass = self._per_pass(self.tile_batch_size, boxes[0][2] * boxes[0][3])
        for i in range(0, len(boxes), per_pass):
            chunk = boxes[i : i + per_pass]
            tiles = torch.stack([lq[:, t : t + h, l : l + w] for t, l, h, w in chunk])
            tile_masks = torch.stack([mask[:, t : t + h, l : l + w] for t, l, h, w in chunk]) if mask is not None else None
            results = self._forward(tiles, tile_masks)
            for (t, l, h, w), res in zip(chunk, results):
                # Tiles of one shape and one set of image edges share a blending window.
                key = (h, w, t == 0, t + h == height, l == 0, l + w == width)
                win = windows.get(key)
                if win is None:
                    wy = _ramp(h * s, self.overlap * s, key[2], key[3])
                    wx = _ramp(w * s, self.overlap * s, key[4], key[5])
                    win = windows[key] = (wy[:, None] * wx[None, :])[None]
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

    def _per_pass(self, most: int, input_pixels: int) -> int:
        """How many images or tiles of ``input_pixels`` share a forward pass: at most ``most``,
        and within ``pass_pixels`` output pixels (at least one)."""
        if not self.pass_pixels:
            return most
        return max(1, min(most, self.pass_pixels // (input_pixels * self.scale**2)))

    def _at_output_size(self, lq: Tensor) -> Tensor:
        """The input (C, H, W) at the output size: itself, or bicubic as the SR model upsamples."""
        if self.scale == 1:
            return lq
        return F.interpolate(lq[None], scale_factor=self.scale, mode="bicubic", align_corners=False)[0]

    def _with_strength(self, restored: Tensor, lq: Tensor) -> Tensor:
        """``lq + strength * (restored - lq)``, ``lq`` at the output size; restored as is at 1."""
        if self.strength == 1.0:
            return restored
        base = self._at_output_size(lq)
        return base + self.strength * (restored - base)

    # -- public --------------------------------------------------------------------------------

    def restore(self, lq: Tensor, mask: Tensor | None = None) -> Tensor:
        """Restore one image (C, H, W), C in (1, 3); returns (C, H*scale, W*scale), not clipped."""
        return self.restore_many([lq], None if mask is None else [mask])[0]

    def restore_batch(self, lq: Tensor, mask: Tensor | None = None) -> Tensor:
        """Restore a batch (N, C, H, W), C in (1, 3), float in [0, 1] (noise may exceed it), with
        ``mask`` (N, 1, H, W) for inpainting; returns (N, C, H*scale, W*scale) float32 on the CPU,
        not clipped. Gray (C = 1) runs as RGB and comes back gray; precision, tiling, ensemble and
        strength as for every method of this Predictor. (The validation pass of a training loop
        can use it, or ``restore_many`` for images of different sizes.)"""
        if lq.dim() != 4:
            raise ValueError(f"expected a batch tensor (N, C, H, W) with C in (1, 3), got {tuple(lq.shape)}")
        if mask is not None and (mask.dim() != 4 or mask.shape[0] != lq.shape[0]):
            raise ValueError(f"mask must have shape ({lq.shape[0]}, 1, {lq.shape[2]}, {lq.shape[3]}), got {tuple(mask.shape)}")
        return torch.stack(self.restore_many(list(lq), None if mask is None else list(mask)))

    def restore_many(self, images: list[Tensor], masks: list[Tensor] | None = None) -> list[Tensor]:
        """Restore a list of images (C, H, W), C in (1, 3), each with its (1, H, W) mask for
        inpainting; returns a list of (C, H*scale, W*scale) float32 CPU tensors, not clipped.
        Same-sized small images share forward passes; larger ones are tiled."""
        if masks is not None and len(masks) != len(images):
            raise ValueError(f"got {len(images)} images but {len(masks)} masks")
        for i, lq in enumerate(images):
            self._check(lq, masks[i] if masks is not None else None)
        if self.strength == 0.0:
            # The input unchanged (at the output size): the model has nothing to add.
            return [self._at_output_size(lq.detach().to("cpu", torch.float32)).clone() for lq in images]
        with self._eval_mode():
            return self._restore_many(images, masks)

    @contextlib.contextmanager
    def _eval_mode(self):
        """The network in eval mode, and back in training mode after if it was in it (a training
        loop may share its model with a Predictor for its validation passes)."""
        training = self.network.training
        if training:
            self.network.eval()
        try:
            yield
        finally:
            if training:
                self.network.train()

    def _restore_many(self, images: list[Tensor], masks: list[Tensor] | None) -> list[Tensor]:
        results: list[Tensor | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, lq in enumerate(images):
            if self.tile and max(lq.shape[-2:]) > self.tile:
                results[i] = self._restore_one(lq, masks[i] if masks is not None else None)
            else:
                groups.setdefault(tuple(lq.shape[-2:]), []).append(i)
        for indices in groups.values():
            height, width = images[indices[0]].shape[-2:]
            per_pass = self._per_pass(self.batch_size, height * width)
            for j in range(0, len(indices), per_pass):
                chunk = indices[j : j + per_pass]
                batch = torch.stack([_as_rgb(images[i]) for i in chunk])
                mask_batch = torch.stack([masks[i] for i in chunk]) if masks is not None else None
                try:
                    out = self._forward(batch, mask_batch)
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    for i in chunk:
                        results[i] = self._restore_one(images[i], masks[i] if masks is not None else None)
                    continue
                for i, res in zip(chunk, out):
                    results[i] = self._with_strength(_like(res, images[i]), images[i].cpu())
        return results  # type: ignore[return-value]

    def _restore_one(self, lq: Tensor, mask: Tensor | None) -> Tensor:
        return self._with_strength(_like(self._restore_rgb(_as_rgb(lq), mask), lq), lq.cpu())

    def restore_pixels(self, pixels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Restore an HxWxC uint8/uint16 array; returns the same dtype and channel count. At
        strength 0 (and scale 1) the same pixels come back."""
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

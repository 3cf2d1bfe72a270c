"""Tasks: one typed, frozen spec per restoration task.

A spec owns everything that differs between tasks, so that code elsewhere asks the spec instead of
branching on the task's name:

- how training degradations are sampled: its fields are the ranges and probabilities, a config
  section (``degradation:`` in a training YAML, typed by the top-level ``task``);
- the evaluation protocol: the same spec with its ranges collapsed to fixed points
  (:meth:`TaskSpec.protocol`), with ``restoration evaluate``'s flags mapped onto its fields;
- whether the model takes a mask (:attr:`TaskSpec.mask_input`), the scale
  (:attr:`TaskSpec.scale`) and the metric settings (:meth:`TaskSpec.metric`).

``degrade(gt, generator)`` is pure: every random choice comes from the explicit generator, and a
range that is a single point consumes no draw, so a protocol's degraded image equals the plain
function's (``add_gaussian_noise(gt, 25, make_generator(seed, name))`` for denoising at sigma 25).

Adding a task is adding one class here and one entry in :data:`TASK_SPECS`.

Real-world evaluation cases (:data:`CASES`) are fixed points of the ``general`` task's chain:
mixtures of blur, resizing, noise and JPEG, in color and in gray, that any model without a mask
or upscaling can be evaluated on.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import Tensor

from restoration.io.pixels import pixels_to_tensor, tensor_to_pixels, to_uint8
from restoration.tasks import degradations as D
from restoration.tasks import masks

__all__ = [
    "CASES",
    "TASK_NAMES",
    "TASK_SPECS",
    "Case",
    "Degraded",
    "DeblurTask",
    "DenoiseTask",
    "EvalSample",
    "GeneralTask",
    "InpaintTask",
    "JpegTask",
    "SuperResolutionTask",
    "TaskSpec",
    "get_case",
    "get_task",
]


class Degraded(NamedTuple):
    """One degraded training or evaluation sample.

    Attributes:
        lq: the model's input, CHW float (unclipped after additive noise; 8-bit grid where the
            task's inputs are saved images).
        gt: the target, CHW float in [0, 1]; ``gt`` itself except for SR, where it is cropped to a
            multiple of the scale.
        mask: (1, H, W), 1 = missing, for tasks with a mask input; else None.
        params: the sampled parameters (for logs and tests), e.g. ``{"sigma": 25.0}``.
    """

    lq: Tensor
    gt: Tensor
    mask: Tensor | None
    params: dict[str, Any]


@dataclass
class EvalSample:
    """One test image under a protocol: 8-bit ground truth, degraded input, optional mask."""

    name: str
    gt: np.ndarray  # H x W x C uint8
    lq: Tensor  # (C, h, w) float32, unclipped for the Gaussian denoising protocol
    mask: Tensor | None  # (1, h, w), 1 = missing
    # The degraded input at the output size as an 8-bit image (H x W x C uint8): what a model
    # that changes nothing returns, scored like every model's output (clipped and rounded). For
    # the Gaussian denoising protocol the model sees the unclipped ``lq``, and ``identity`` is its
    # 8-bit image (clipping removes part of the noise: 20.43 dB at sigma 25 on CBSD68, where the
    # unclipped noise alone is 20 log10(255 / 25) = 20.17 dB).
    identity: np.ndarray


def _chance(probability: float, generator: torch.Generator) -> bool:
    """True with ``probability``; 0 and 1 consume no draw (so fixed points stay draw-free)."""
    if probability <= 0.0:
        return False
    if probability >= 1.0:
        return True
    return float(torch.rand((), generator=generator, device=generator.device)) < probability


def _check_probability(value: float, name: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie within [0, 1], got {value!r}")


def _check_kinds(kinds: tuple[str, ...], name: str, allowed: tuple[str, ...]) -> None:
    if not kinds:
        raise ValueError(f"{name} must name at least one of {', '.join(allowed)}")
    unknown = [kind for kind in kinds if kind not in allowed]
    if unknown:
        raise ValueError(f"unknown {name} {unknown}; expected a subset of {', '.join(allowed)}")


def _is_range(hint: Any) -> bool:
    args = typing.get_args(hint)
    return typing.get_origin(hint) is tuple and len(args) == 2 and args[0] in (int, float) and args[1] is args[0]


@dataclass(frozen=True)
class TaskSpec:
    """Base of the task specs. Subclasses are frozen dataclasses whose fields are the training
    degradation's ranges (inclusive ``(low, high)`` pairs) and probabilities.

    Class attributes:
        name: the task's name (``--task``).
        summary: one line for ``--help``.
        mask_input: the model takes a mask channel (inpainting).
        upscale: the model's output is ``scale`` times larger (super-resolution).
        protocol_defaults: the evaluation point: field values that :meth:`protocol` starts from.
        flags: ``restoration evaluate`` flag (argparse dest) -> the field it fixes; a range field
            is set to the point ``(v, v)``.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    mask_input: ClassVar[bool] = False
    upscale: ClassVar[bool] = False
    protocol_defaults: ClassVar[dict[str, Any]] = {}
    flags: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        # YAML gives lists; tuples keep specs hashable and comparable.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        self.check()

    def check(self) -> None:
        """Raise ValueError naming the first out-of-range field (``degradation.<field>``)."""

    @property
    def scale(self) -> int:
        """Output size / input size (1 except for super-resolution)."""
        return 1

    def degrade(self, gt: Tensor, generator: torch.Generator) -> Degraded:
        """Sample this task's degradation from ``generator`` and apply it to ``gt``, one CHW
        float image in [0, 1] (parameters are drawn per image)."""
        if not isinstance(gt, Tensor) or not gt.is_floating_point() or gt.ndim != 3:
            shape = tuple(gt.shape) if isinstance(gt, Tensor) else type(gt).__name__
            raise ValueError(f"degrade takes one CHW float image in [0, 1], got {shape}")
        return self._degrade(gt, generator)

    def _degrade(self, gt: Tensor, generator: torch.Generator) -> Degraded:
        raise NotImplementedError

    def metric(self, channels: int) -> tuple[bool, int]:
        """``(y_channel, border)``: PSNR/SSIM on the Y channel of color images, and the border
        cropped before measuring. RGB (or gray) and no border unless the task says otherwise."""
        return False, 0

    def quantized_input(self) -> bool:
        """Whether the evaluation input is rounded to 8 bits (a saved image); the Gaussian
        denoising protocol feeds the unclipped noisy image instead."""
        return True

    # -- the evaluation protocol ---------------------------------------------------------------

    @classmethod
    def range_fields(cls) -> tuple[str, ...]:
        hints = typing.get_type_hints(cls)
        return tuple(f.name for f in dataclasses.fields(cls) if _is_range(hints[f.name]))

    @classmethod
    def protocol(cls, **values: Any) -> "TaskSpec":
        """The evaluation protocol: :attr:`protocol_defaults` with ``values`` (``flags`` names or
        field names; None means "the default") fixed. Range fields take a single value.

        Raises:
            ValueError: an unknown name, or a value out of the field's range.
        """
        data: dict[str, Any] = dict(cls.protocol_defaults)
        names = {f.name for f in dataclasses.fields(cls)}
        ranges = cls.range_fields()
        for key, value in values.items():
            if value is None:
                continue
            field = cls.flags.get(key, key)
            if field not in names:
                known = sorted(set(cls.flags) | names)
                raise ValueError(f"{cls.name}: unknown protocol setting {key!r}; known: {', '.join(known)}")
            if field in ranges and not isinstance(value, (tuple, list)):
                value = (value, value)
            elif field.endswith("_kinds") and isinstance(value, str):
                value = (value,)
            data[field] = value
        return cls(**data)

    def sample(self, name: str, gt: np.ndarray, *, seed: int = 0) -> EvalSample:
        """Degrade an 8-bit ground-truth image (H x W x C) under this spec, seeded by (seed, name)."""
        gt = to_uint8(gt)
        degraded = self.degrade(pixels_to_tensor(gt), D.make_generator(seed, name))
        lq = D.quantize(degraded.lq) if self.quantized_input() else degraded.lq
        # ``identity`` is scored as every model's output is: clipped and rounded to 8 bits.
        return EvalSample(name=name, gt=tensor_to_pixels(degraded.gt), lq=lq, mask=degraded.mask,
                          identity=tensor_to_pixels(lq))

    def describe(self) -> dict[str, Any]:
        """The spec as plain values, with the task and metric (for reports and JSON)."""
        out: dict[str, Any] = {"task": self.name}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        y_channel, border = self.metric(3)
        out["metric"] = f"Y (BT.601), {border}-pixel border crop" if y_channel else "RGB (gray for gray images), no border crop"
        return out


# --------------------------------------------------------------------------------------------
# Noise, shared by denoising and the general chain
# --------------------------------------------------------------------------------------------


def _sample_noise(
    x: Tensor,
    generator: torch.Generator,
    *,
    sigma_range: tuple[float, float],
    gray_probability: float,
    correlated_probability: float,
    poisson_probability: float,
    poisson_peak_range: tuple[float, float],
) -> tuple[Tensor, dict[str, Any]]:
    """One noise draw: Poisson (shot noise) with ``poisson_probability``, else Gaussian; each is
    gray (the same in every channel) with ``gray_probability``; Gaussian noise is channel-correlated
    with ``correlated_probability``. Probabilities of 0 consume no draw."""
    if _chance(poisson_probability, generator):
        low, high = poisson_peak_range  # drawn log-uniformly: noise std goes as 1 / sqrt(peak)
        peak = math.exp(D.draw_uniform(math.log(low), math.log(high), generator))
        if _chance(gray_probability, generator):
            return D.add_gray_poisson_noise(x, peak, generator), {"noise": "poisson-gray", "peak": peak}
        return D.add_poisson_noise(x, peak, generator), {"noise": "poisson", "peak": peak}
    sigma = D.draw_uniform(*sigma_range, generator)
    if _chance(gray_probability, generator):
        return D.add_gray_gaussian_noise(x, sigma, generator), {"noise": "gray", "sigma": sigma}
    if _chance(correlated_probability, generator):
        return D.add_correlated_gaussian_noise(x, sigma, generator), {"noise": "correlated", "sigma": sigma}
    return D.add_gaussian_noise(x, sigma, generator), {"sigma": sigma}


def _check_noise(spec: Any) -> None:
    D.check_range(spec.sigma_range, "degradation.sigma_range (0-255 scale)", 0.0, 255.0)
    D.check_range(spec.poisson_peak_range, "degradation.poisson_peak_range (photons at value 1)", 1e-6, math.inf)
    for name in ("gray_noise_probability", "correlated_noise_probability", "poisson_probability"):
        _check_probability(getattr(spec, name), f"degradation.{name}")


BLUR_KINDS = ("gaussian", "anisotropic", "motion")


def _sample_blur(
    x: Tensor,
    generator: torch.Generator,
    kinds: tuple[str, ...],
    sigma_range: tuple[float, float],
    length_range: tuple[int, int],
) -> tuple[Tensor, dict[str, Any]]:
    kind = D.draw_choice(kinds, generator)
    if kind == "gaussian":
        sigma = D.draw_uniform(*sigma_range, generator)
        return D.gaussian_blur(x, sigma), {"blur": "gaussian", "blur_sigma": sigma}
    if kind == "anisotropic":
        sigma_x, sigma_y = D.draw_uniform(*sigma_range, generator), D.draw_uniform(*sigma_range, generator)
        angle = D.draw_uniform(0.0, 180.0, generator)
        return D.anisotropic_gaussian_blur(x, sigma_x, sigma_y, angle), {
            "blur": "anisotropic", "sigma_x": sigma_x, "sigma_y": sigma_y, "angle": angle}
    length = D.draw_int(int(length_range[0]), int(length_range[1]), generator)
    angle = D.draw_uniform(0.0, 180.0, generator)  # a line at 180 + a is the same line
    return D.motion_blur(x, length, angle), {"blur": "motion", "length": length, "angle": angle}


def _check_blur(spec: Any) -> None:
    _check_kinds(spec.blur_kinds, "degradation.blur_kinds", BLUR_KINDS)
    D.check_range(spec.blur_sigma_range, "degradation.blur_sigma_range (pixels)", 0.0, math.inf)
    if spec.blur_sigma_range[0] <= 0:
        raise ValueError(f"degradation.blur_sigma_range must be > 0 pixels, got {spec.blur_sigma_range!r}")
    D.check_range(spec.motion_length_range, "degradation.motion_length_range (pixels)", 1, math.inf)


def _jpeg(x: Tensor, quality_range: tuple[int, int], generator: torch.Generator) -> tuple[Tensor, int]:
    quality = D.draw_int(int(quality_range[0]), int(quality_range[1]), generator)
    return D.jpeg_compress(x, quality), quality


# --------------------------------------------------------------------------------------------
# The tasks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DenoiseTask(TaskSpec):
    """Noise removal. Trains on Gaussian noise of a sigma drawn from ``sigma_range`` (per channel;
    gray or channel-correlated with the given probabilities), or Poisson shot noise, optionally
    JPEG-compressed afterwards (as cameras and scanners save noise). The protocol is the papers':
    N(0, sigma) per channel, unclipped, no JPEG."""

    name: ClassVar[str] = "denoise"
    summary: ClassVar[str] = "noise: Gaussian (color, gray, correlated) or Poisson, optionally JPEG-compressed after"
    protocol_defaults: ClassVar[dict[str, Any]] = {"sigma_range": (25.0, 25.0)}
    flags: ClassVar[dict[str, str]] = {"sigma": "sigma_range"}

    sigma_range: tuple[float, float] = (0.0, 50.0)
    gray_noise_probability: float = 0.0
    correlated_noise_probability: float = 0.0
    poisson_probability: float = 0.0
    poisson_peak_range: tuple[float, float] = (5.0, 100.0)
    jpeg_probability: float = 0.0
    jpeg_quality_range: tuple[int, int] = (30, 95)

    def check(self) -> None:
        _check_noise(self)
        _check_probability(self.jpeg_probability, "degradation.jpeg_probability")
        D.check_range(self.jpeg_quality_range, "degradation.jpeg_quality_range", 1, 100)

    def _degrade(self, gt: Tensor, generator: torch.Generator) -> Degraded:
        lq, params = _sample_noise(
            gt, generator, sigma_range=self.sigma_range, gray_probability=self.gray_noise_probability,
            correlated_probability=self.correlated_noise_probability,
            poisson_probability=self.poisson_probability, poisson_peak_range=self.poisson_peak_range,
        )
        if _chance(self.jpeg_probability, generator):
            lq, params["quality"] = _jpeg(lq, self.jpeg_quality_range, generator)
        return Degraded(lq, gt, None, params)

    def quantized_input(self) -> bool:
        return self.jpeg_probability > 0 or self.poisson_probability > 0


@dataclass(frozen=True)
class DeblurTask(TaskSpec):
    """Blur removal: Gaussian (isotropic or anisotropic) and linear motion blur, optionally with
    mild Gaussian noise after, on 8-bit inputs. The protocol: Gaussian blur of one sigma."""

    name: ClassVar[str] = "deblur"
    summary: ClassVar[str] = "blur: Gaussian, anisotropic Gaussian, motion; optional mild noise"
    protocol_defaults: ClassVar[dict[str, Any]] = {"blur_kinds": ("gaussian",), "blur_sigma_range": (1.6, 1.6)}
    flags: ClassVar[dict[str, str]] = {"blur_sigma": "blur_sigma_range"}

    blur_kinds: tuple[str, ...] = ("gaussian", "motion")
    blur_sigma_range: tuple[float, float] = (0.5, 3.0)
    motion_length_range: tuple[int, int] = (5, 21)
    noise_probability: float = 0.0
    noise_sigma_range: tuple[float, float] = (0.0, 5.0)

    def check(self) -> None:
        _check_blur(self)
        _check_probability(self.noise_probability, "degradation.noise_probability")
        D.check_range(self.noise_sigma_range, "degradation.noise_sigma_range (0-255 scale)", 0.0, 255.0)

    def _degrade(self, gt: Tensor, generator: torch.Generator) -> Degraded:
        lq, params = _sample_blur(gt, generator, self.blur_kinds, self.blur_sigma_range, self.motion_length_range)
        if _chance(self.noise_probability, generator):
            params["sigma"] = D.draw_uniform(*self.noise_sigma_range, generator)
            lq = D.add_gaussian_noise(lq, params["sigma"], generator)
        return Degraded(D.quantize(lq), gt, None, params)


@dataclass(frozen=True)
class JpegTask(TaskSpec):
    """JPEG artifact removal at a quality drawn from ``quality_range`` (PIL, 4:2:0 for color)."""

    name: ClassVar[str] = "jpeg"
    summary: ClassVar[str] = "JPEG artifacts at a quality in quality_range"
    protocol_defaults: ClassVar[dict[str, Any]] = {"quality_range": (10, 10)}
    flags: ClassVar[dict[str, str]] = {"quality": "quality_range"}

    quality_range: tuple[int, int] = (10, 90)

    def check(self) -> None:
        D.check_range(self.quality_range, "degradation.quality_range", 1, 100)

    def _degrade(self, gt: Tensor, generator: torch.Generator) -> Degraded:
        lq, quality = _jpeg(gt, self.quality_range, generator)
        return Degraded(lq, gt, None, {"quality": quality})


@dataclass(frozen=True)
class SuperResolutionTask(TaskSpec):
    """x2/x3/x4 super-resolution of bicubic-downscaled images. Training downscales with torch's
    antialiased bicubic; the protocol with PIL's (as the published bicubic numbers), and measures
    on the BT.601 Y channel with a ``scale``-pixel border crop."""

    name: ClassVar[str] = "sr"
    summary: ClassVar[str] = "bicubic downscaling by scale (2, 3 or 4)"
    upscale: ClassVar[bool] = True
    protocol_defaults: ClassVar[dict[str, Any]] = {}
    flags: ClassVar[dict[str, str]] = {"scale": "scale"}

    scale: int = 4  # type: ignore[assignment]  # a field here, a property (1) on other tasks

    def check(self) -> None:
        if isinstance(self.scale, bool) or self.scale not in D.SR_SCALES:
            raise ValueError(f"degradation.scale must be one of {D.SR_SCALES}, got {self.scale!r}")

    def _degrade(self, gt: Tensor, generator: torch.Generator) -> Degraded:
        cropped = D.crop_to_multiple(gt, self.scale)
        return Degraded(D.bicubic_downsample(cropped, self.scale), cropped, None, {"scale": self.scale})

    def metric(self, channels: int) -> tuple[bool, int]:
        return channels == 3, self.scale

    def sample(self, name: str, gt: np.ndarray, *, seed: int = 0) -> EvalSample:
        gt = to_uint8(gt)
        s = self.scale
        gt = gt[: gt.shape[0] - gt.shape[0] % s, : gt.shape[1] - gt.shape[1] % s]
        lq_pixels = D.bicubic_downsample_uint8(gt, s)
        return EvalSample(name=name, gt=gt, lq=pixels_to_tensor(lq_pixels), mask=None,
                          identity=D.bicubic_upsample_uint8(lq_pixels, s))


@dataclass(frozen=True)
class InpaintTask(TaskSpec):
    """Filling missing pixels given as a mask channel: boxes, brush strokes, random dropout."""

    name: ClassVar[str] = "inpaint"
    summary: ClassVar[str] = "missing pixels (mask input): boxes, strokes, dropout"
    mask_input: ClassVar[bool] = True
    protocol_defaults: ClassVar[dict[str, Any]] = {"mask_kinds": ("dropout",), "dropout_ratio_range": (0.5, 0.5)}
    flags: ClassVar[dict[str, str]] = {"mask_kind": "mask_kinds", "mask_ratio": "dropout_ratio_range"}

    mask_kinds: tuple[str, ...] = D.MASK_KINDS
    dropout_ratio_range: tuple[float, float] = (0.1, 0.5)

    def check(self) -> None:
        _check_kinds(self.mask_kinds, "degradation.mask_kinds", D.MASK_KINDS)
        D.check_range(self.dropout_ratio_range, "degradation.dropout_ratio_range", 0.0, 1.0)
        if self.dropout_ratio_range[1] >= 1.0:
            raise ValueError(f"degradation.dropout_ratio_range must lie within [0, 1), got {self.dropout_ratio_range!r}")

    def _degrade(self, gt: Tensor, generator: torch.Generator) -> Degraded:
        height, width = gt.shape[-2:]
        kind = D.draw_choice(self.mask_kinds, generator)
        if kind == "box":
            mask = masks.box_mask(height, width, generator)
        elif kind == "stroke":
            mask = masks.stroke_mask(height, width, generator)
        else:
            mask = masks.dropout_mask(height, width, D.draw_uniform(*self.dropout_ratio_range, generator), generator)
        mask = mask.to(gt.device)
        return Degraded(masks.apply_mask(gt, mask), gt, mask, {"mask_kind": kind})


CHAIN_STEPS = ("blur", "resize", "noise")


@dataclass(frozen=True)
class GeneralTask(TaskSpec):
    """Blind restoration of what photos and scans hold: a random-order chain of blur, resizing
    down and back, and noise, then JPEG (sometimes twice), as the real-world synthesis of
    Real-ESRGAN and BSRGAN does; inputs are 8-bit. Each step is applied with its probability;
    an image is never left clean (JPEG is forced when nothing else was drawn)."""

    name: ClassVar[str] = "general"
    summary: ClassVar[str] = "unknown mixtures of blur, resizing, noise and JPEG (photos, scans)"
    protocol_defaults: ClassVar[dict[str, Any]] = {"order": ("blur", "noise"), "blur_probability": 1.0,
                                                   "blur_kinds": ("gaussian",), "blur_sigma_range": (1.0, 1.0),
                                                   "resize_probability": 0.0, "noise_probability": 1.0,
                                                   "sigma_range": (8.0, 8.0), "gray_noise_probability": 0.0,
                                                   "correlated_noise_probability": 0.0, "poisson_probability": 0.0,
                                                   "jpeg_probability": 1.0, "jpeg_quality_range": (80, 80),
                                                   "double_jpeg_probability": 0.0}
    flags: ClassVar[dict[str, str]] = {"sigma": "sigma_range", "quality": "jpeg_quality_range",
                                       "blur_sigma": "blur_sigma_range"}

    order: tuple[str, ...] = ()
    blur_probability: float = 0.7
    blur_kinds: tuple[str, ...] = BLUR_KINDS
    blur_sigma_range: tuple[float, float] = (0.2, 3.0)
    motion_length_range: tuple[int, int] = (3, 15)
    resize_probability: float = 0.4
    resize_factor_range: tuple[float, float] = (0.3, 1.0)
    resize_modes: tuple[str, ...] = D.RESIZE_MODES
    noise_probability: float = 0.8
    sigma_range: tuple[float, float] = (1.0, 30.0)
    gray_noise_probability: float = 0.4
    correlated_noise_probability: float = 0.2
    poisson_probability: float = 0.2
    poisson_peak_range: tuple[float, float] = (30.0, 3000.0)
    jpeg_probability: float = 0.9
    jpeg_quality_range: tuple[int, int] = (30, 95)
    double_jpeg_probability: float = 0.2

    def check(self) -> None:
        unknown = [step for step in self.order if step not in CHAIN_STEPS]
        if unknown or len(set(self.order)) != len(self.order):
            raise ValueError(f"degradation.order must list distinct steps of {', '.join(CHAIN_STEPS)} "
                             f"(empty: a random order per image), got {list(self.order)}")
        _check_blur(self)
        _check_noise(self)
        for name in ("blur_probability", "resize_probability", "noise_probability", "jpeg_probability",
                     "double_jpeg_probability"):
            _check_probability(getattr(self, name), f"degradation.{name}")
        D.check_range(self.resize_factor_range, "degradation.resize_factor_range", 1e-3, 1.0)
        _check_kinds(self.resize_modes, "degradation.resize_modes", D.RESIZE_MODES)
        D.check_range(self.jpeg_quality_range, "degradation.jpeg_quality_range", 1, 100)

    def _degrade(self, gt: Tensor, generator: torch.Generator) -> Degraded:
        probability = {"blur": self.blur_probability, "resize": self.resize_probability, "noise": self.noise_probability}
        if self.order:
            steps = [step for step in self.order if _chance(probability[step], generator)]
        else:
            drawn = [step for step in CHAIN_STEPS if _chance(probability[step], generator)]
            steps = [drawn[i] for i in torch.randperm(len(drawn), generator=generator, device=generator.device).tolist()]
        lq = gt
        operations: list[dict[str, Any]] = []
        for step in steps:
            if step == "blur":
                lq, params = _sample_blur(lq, generator, self.blur_kinds, self.blur_sigma_range, self.motion_length_range)
            elif step == "resize":
                factor = D.draw_uniform(*self.resize_factor_range, generator)
                down, up = D.draw_choice(self.resize_modes, generator), D.draw_choice(self.resize_modes, generator)
                lq, params = D.resize_down_up(lq, factor, down, up), {"factor": factor, "down": down, "up": up}
            else:
                lq, params = _sample_noise(
                    lq, generator, sigma_range=self.sigma_range, gray_probability=self.gray_noise_probability,
                    correlated_probability=self.correlated_noise_probability,
                    poisson_probability=self.poisson_probability, poisson_peak_range=self.poisson_peak_range,
                )
            operations.append({"name": step, **params})
        if _chance(self.jpeg_probability, generator) or not operations:
            lq, quality = _jpeg(lq, self.jpeg_quality_range, generator)
            operations.append({"name": "jpeg", "quality": quality})
            if _chance(self.double_jpeg_probability, generator):
                lq, quality = _jpeg(lq, self.jpeg_quality_range, generator)
                operations.append({"name": "jpeg", "quality": quality})
        return Degraded(D.quantize(lq), gt, None, {"operations": operations})


TASK_SPECS: dict[str, type[TaskSpec]] = {
    spec.name: spec for spec in (DenoiseTask, DeblurTask, JpegTask, SuperResolutionTask, InpaintTask, GeneralTask)
}
"""Every task's spec class, by name."""

TASK_NAMES: tuple[str, ...] = tuple(TASK_SPECS)


def get_task(name: str) -> type[TaskSpec]:
    """The spec class of task ``name``; ValueError naming the known tasks otherwise."""
    try:
        return TASK_SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}") from None


# --------------------------------------------------------------------------------------------
# Named real-world evaluation cases
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A named, fixed real-world degradation: a point of the general chain, applied to color
    images or to their 8-bit gray (BT.601 luma) versions."""

    name: str
    description: str
    spec: GeneralTask
    gray: bool = False

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        """The ground truth this case degrades: the image itself, or its gray version."""
        return D.to_gray_uint8(pixels) if self.gray else pixels


def _case(name: str, description: str, **fields: Any) -> list[Case]:
    """A case and its gray twin: the general protocol with only the steps named in ``fields``."""
    spec = GeneralTask.protocol(**{"blur_probability": 0.0, "noise_probability": 0.0, "jpeg_probability": 0.0,
                                   **fields})
    return [Case(name, description, spec), Case(f"{name}-gray", description + ", on the gray image", spec, gray=True)]


CASES: dict[str, Case] = {
    case.name: case
    for case in (
        *_case("noise15-jpeg60", "Gaussian noise sigma 15, then JPEG quality 60",
               noise_probability=1.0, sigma_range=15.0, jpeg_probability=1.0, jpeg_quality_range=60),
        *_case("noise25-jpeg80", "Gaussian noise sigma 25, then JPEG quality 80",
               noise_probability=1.0, sigma_range=25.0, jpeg_probability=1.0, jpeg_quality_range=80),
        *_case("blur1.6", "Gaussian blur sigma 1.6 (8-bit)", blur_probability=1.0, blur_sigma_range=1.6),
        *_case("mild", "Gaussian blur sigma 1.0, noise sigma 8, JPEG quality 80",
               blur_probability=1.0, blur_sigma_range=1.0, noise_probability=1.0, sigma_range=8.0,
               jpeg_probability=1.0, jpeg_quality_range=80),
        *_case("strong", "Gaussian blur sigma 2.0, resized to 0.5 and back (bicubic), noise sigma 20, JPEG quality 50",
               order=("blur", "resize", "noise"), blur_probability=1.0, blur_sigma_range=2.0,
               resize_probability=1.0, resize_factor_range=0.5, resize_modes=("bicubic",),
               noise_probability=1.0, sigma_range=20.0, jpeg_probability=1.0, jpeg_quality_range=50),
        *_case("shot-jpeg75", "Poisson shot noise (100 photons at white), then JPEG quality 75",
               noise_probability=1.0, poisson_probability=1.0, poisson_peak_range=100.0,
               jpeg_probability=1.0, jpeg_quality_range=75),
    )
}
"""Named real-world evaluation cases (``restoration evaluate --case NAME``); every case has a
``-gray`` twin on the gray version of each image."""


def get_case(name: str) -> Case:
    try:
        return CASES[name]
    except KeyError:
        raise ValueError(f"unknown case {name!r}; choose one of {', '.join(CASES)}") from None

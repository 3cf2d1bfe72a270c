"""Image-quality metrics (PSNR, SSIM) in torch, batched, computed as the restoration papers do.

Inputs, for every metric here (``restored`` and ``gt`` must be of the same kind and shape):

- float torch tensors, CHW or NCHW, values in ``[0, data_range]`` (``data_range=1`` is the
  library's convention); they stay on their device, so validation on the GPU needs no copy;
- uint8 numpy arrays, HW or HWC, values 0..255 (the codec's output); they are read as
  ``value / 255`` and ``data_range`` must be left at 1 (or given as 255, meaning the same).

Unbatched inputs (CHW, HW, HWC) give a Python ``float``; NCHW gives a float64 tensor of shape
(N,), one value per image, on the input's device.

Benchmark conventions:

- The evaluation protocol measures the output as it would be saved: clip to [0, 1] and round to
  8 bits first (:func:`quantize`).
- ``y_channel=True`` measures the luma of BT.601 studio-swing YCbCr as MATLAB ``rgb2ycbcr``
  computes it (Y in [16, 235] / 255, not rounded to integers -- as BasicSR does), the standard
  for super-resolution tables.
- ``crop_border=b`` drops ``b`` pixels on every side before measuring (SR papers crop the
  scale factor).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from restoration.io.pixels import pixels_to_tensor

__all__ = [
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_SIGMA",
    "SSIM_WINDOW",
    "psnr",
    "psnr_from_mse",
    "quantize",
    "rgb_to_y",
    "ssim",
]

# Wang et al. (2004) constants; skimage's ``structural_similarity(gaussian_weights=True,
# sigma=1.5, use_sample_covariance=False)`` uses the same ones (window radius
# ``int(3.5 * 1.5 + 0.5) = 5``, i.e. 11x11).
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_SIGMA = 1.5
SSIM_WINDOW = 11

# MATLAB rgb2ycbcr luma row for RGB in [0, 1] -> Y in [16, 235].
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0

ImageLike = Tensor | np.ndarray


def quantize(x: Tensor) -> Tensor:
    """Clip to [0, 1] and round to the 256 levels of an 8-bit image (same shape, dtype, device).

    The protocol measures what would be written to disk, so restored (or noisy) images go
    through this before :func:`psnr` / :func:`ssim`.
    """
    return (x.clamp(0.0, 1.0) * 255.0).round() / 255.0


def rgb_to_y(x: Tensor) -> Tensor:
    """BT.601 studio-range luma, as MATLAB ``rgb2ycbcr`` (the SR literature's Y channel).

    ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255`` with RGB in [0, 1].

    Args:
        x: CHW or NCHW RGB float in [0, 1].

    Returns:
        1HW or N1HW, values in [16/255, 235/255] (on the 0-1 scale, so ``data_range`` stays 1).
    """
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"rgb_to_y needs a 3-channel CHW or NCHW tensor, got shape {tuple(x.shape)}")
    weights = torch.tensor(_Y_WEIGHTS, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (_Y_OFFSET + (x * weights).sum(dim=-3, keepdim=True)) / 255.0


def _to_nchw(image: ImageLike, name: str, data_range: float) -> tuple[Tensor, bool]:
    """Normalized NCHW tensor in [0, 1] units and whether the input was unbatched.

    Metrics are computed in float64 on the CPU (the reference implementations use float64, and
    the ``E[x^2] - E[x]^2`` variances of SSIM lose digits in float32) and float32 elsewhere.
    """
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"{name}: numpy inputs must be uint8 (HW or HWC, 0..255), got {image.dtype}")
        if data_range not in (1.0, 255.0):
            raise ValueError(f"data_range for uint8 arrays is implied (0..255); got {data_range!r}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise ValueError(f"{name}: uint8 arrays must be HW or HWC, got shape {image.shape}")
        # torch.tensor copies: codec/PIL arrays are often read-only, which from_numpy warns about.
        tensor = torch.tensor(image).permute(2, 0, 1).to(torch.float64) / 255.0
        return tensor.unsqueeze(0), True
    if not isinstance(image, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or a uint8 numpy array, got {type(image).__name__}")
    if not image.is_floating_point():
        raise TypeError(f"{name} must be a float tensor in [0, data_range], got dtype {image.dtype}")
    if image.ndim not in (3, 4):
        raise ValueError(f"{name} must be CHW or NCHW, got shape {tuple(image.shape)}")
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range!r}")
    dtype = torch.float64 if image.device.type == "cpu" else torch.float32
    tensor = image.detach().to(dtype) / data_range
    return (tensor.unsqueeze(0), True) if image.ndim == 3 else (tensor, False)


def _prepare(
    restored: ImageLike, gt: ImageLike, data_range: float, crop_border: int, y_channel: bool
) -> tuple[Tensor, Tensor, bool]:
    if type(restored) is not type(gt) and not (isinstance(restored, Tensor) and isinstance(gt, Tensor)):
        kinds = f"{type(restored).__name__} and {type(gt).__name__}"
        raise TypeError(f"restored and gt must be of the same kind, got {kinds}")
    if tuple(restored.shape) != tuple(gt.shape):
        raise ValueError(f"restored and gt shapes differ: {tuple(restored.shape)} vs {tuple(gt.shape)}")
    x, unbatched = _to_nchw(restored, "restored", data_range)
    y, _ = _to_nchw(gt, "gt", data_range)
    y = y.to(x.device)
    if y_channel:
        if x.shape[1] != 3:
            raise ValueError(f"y_channel=True needs RGB images, got {x.shape[1]} channel(s)")
        x, y = rgb_to_y(x), rgb_to_y(y)
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border!r}")
    if crop_border:
        height, width = x.shape[-2:]
        if 2 * crop_border >= min(height, width):
            raise ValueError(f"crop_border {crop_border} leaves nothing of a {height}x{width} image")
        x = x[..., crop_border:-crop_border, crop_border:-crop_border]
        y = y[..., crop_border:-crop_border, crop_border:-crop_border]
    return x, y, unbatched


def _result(values: Tensor, unbatched: bool) -> float | Tensor:
    return float(values[0]) if unbatched else values.to(torch.float64)


def psnr(
    restored: ImageLike,
    gt: ImageLike,
    *,
    data_range: float = 1.0,
    crop_border: int = 0,
    y_channel: bool = False,
) -> float | Tensor:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / MSE)``.

    The MSE is over all channels and pixels of one image (as
    ``skimage.metrics.peak_signal_noise_ratio``), then averaged per image -- never over the
    whole batch, since benchmark tables average PSNRs, not MSEs. Identical images give ``inf``.

    Args:
        restored, gt: CHW/NCHW float tensors in [0, data_range], or uint8 HW/HWC arrays (see the
            module docstring). Apply :func:`quantize` first to follow the protocol.
        data_range: the value of white for float tensors.
        crop_border: pixels dropped on every side before measuring.
        y_channel: measure the BT.601 studio-range luma of RGB inputs (SR convention).

    Returns:
        float for one image; float64 tensor (N,) for NCHW.
    """
    x, y, unbatched = _prepare(restored, gt, data_range, crop_border, y_channel)
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    # data_range is 1 after normalization; mse == 0 gives +inf, as skimage does.
    values = 10.0 * torch.log10(1.0 / mse)
    return _result(values, unbatched)


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> Tensor:
    radius = SSIM_WINDOW // 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    window = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    return (window / window.sum()).to(dtype=dtype, device=device)


def _filter_valid(images: Tensor, taps: Tensor, dim: int) -> Tensor:
    """``images`` filtered along ``dim`` with the 1-D kernel ``taps`` where it fits ('valid'):
    a sum of shifted views, several times faster on the CPU than a float64 convolution, which
    has no fast path there (SSIM of a 481x321 image: 20 ms instead of 170 ms)."""
    size = images.shape[dim] - taps.numel() + 1
    out = images.narrow(dim, 0, size) * taps[0]
    for offset, tap in enumerate(taps.tolist()[1:], start=1):
        out.add_(images.narrow(dim, offset, size), alpha=tap)
    return out


def ssim(
    restored: ImageLike,
    gt: ImageLike,
    *,
    data_range: float = 1.0,
    crop_border: int = 0,
    y_channel: bool = False,
) -> float | Tensor:
    """Structural similarity (Wang et al. 2004), mean over channels and pixels.

    Matches ``skimage.metrics.structural_similarity(restored, gt, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=R, channel_axis=-1)`` (HWC layout there):
    an 11x11 Gaussian window of std 1.5, K1 = 0.01, K2 = 0.03, population covariances, the SSIM
    map taken only where the window fits inside the image (skimage filters with padding and
    then crops the 5-pixel border, which is the same), and the per-channel means averaged.
    This is also what MATLAB ``ssim_index`` and BasicSR compute.

    Args:
        restored, gt: CHW/NCHW float tensors in [0, data_range], or uint8 HW/HWC arrays (see the
            module docstring); at least 11x11 after ``crop_border``.
        data_range: the value of white for float tensors (scales the stabilizers C1, C2).
        crop_border: pixels dropped on every side before measuring.
        y_channel: measure the BT.601 studio-range luma of RGB inputs (SR convention).

    Returns:
        float for one image; float64 tensor (N,) for NCHW.
    """
    x, y, unbatched = _prepare(restored, gt, data_range, crop_border, y_channel)
    height, width = x.shape[-2:]
    if min(height, width) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {height}x{width}")
    # Filter the five moment images at once, separably, 'valid' only.
    moments = torch.stack([x, y, x * x, y * y, x * y], dim=2)  # (N, C, 5, H, W)
    window = _gaussian_window(x.dtype, x.device)
    moments = _filter_valid(_filter_valid(moments, window, dim=-1), window, dim=-2)
    mu_x, mu_y, e_xx, e_yy, e_xy = moments.unbind(dim=2)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov_xy = e_xy - mu_x * mu_y
    c1 = SSIM_K1**2  # (K1 * data_range)^2 with data_range normalized to 1
    c2 = SSIM_K2**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    values = ssim_map.flatten(1).mean(dim=1)
    return _result(values, unbatched)


def psnr_from_mse(mse: float, data_range: float = 1.0) -> float:
    """PSNR in dB for a mean squared error on the ``data_range`` scale (``inf`` for 0)."""
    if mse < 0:
        raise ValueError(f"mse must be >= 0, got {mse!r}")
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


class MetricSpec(Protocol):
    """What :func:`score` asks of a task's spec: whether PSNR/SSIM are taken on the Y channel and
    how wide a border is cropped, for images of ``channels`` channels."""

    def metric(self, channels: int) -> tuple[bool, int]: ...


class RGBMetric:
    """PSNR / SSIM on every channel, no border cropped: for outputs compared as they are (a
    model's against another's, or against a given target), not under a paper's protocol."""

    def metric(self, channels: int) -> tuple[bool, int]:
        return False, 0


RGB = RGBMetric()


def score_tensors(restored: Tensor, gt: Tensor, spec: MetricSpec) -> tuple[float, float]:
    """(PSNR dB, SSIM) of a float ``C x H x W`` output on 8-bit levels (:func:`quantize`) against
    the ground truth's tensor, under ``spec``'s metric (Y channel, border crop)."""
    y_channel, border = spec.metric(gt.shape[0])
    return (
        float(psnr(restored, gt, crop_border=border, y_channel=y_channel)),
        float(ssim(restored, gt, crop_border=border, y_channel=y_channel)),
    )


def score(restored: np.ndarray, gt: np.ndarray, spec: MetricSpec) -> tuple[float, float]:
    """(PSNR dB, SSIM) of an 8-bit HxWxC output against the 8-bit ground truth under ``spec``'s
    metric. Every method is scored on its 8-bit output, ``identity`` (the degraded input)
    included, so that a model at strength 0 scores exactly what ``identity`` does."""
    return score_tensors(pixels_to_tensor(restored), pixels_to_tensor(gt), spec)

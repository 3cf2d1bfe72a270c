"""Synthetic degradations: pure functions of (image, parameters), seeded by an explicit generator.

Conventions (see ``restoration/__init__.py``): images are float32 tensors, CHW or NCHW, RGB or
1-channel gray, values in [0, 1]. Every random choice is drawn from a ``torch.Generator`` passed
in by the caller -- never from the global RNG -- and :func:`make_generator` derives that
generator from stable keys (base seed, image id, epoch, ...), so the degraded image a worker
sees does not depend on how Ray sharded or ordered the data.

Two flavours exist where the evaluation protocol needs bit-exact agreement with published
numbers: ``*_uint8`` functions work on uint8 HWC numpy arrays through PIL (the protocol), and the
tensor functions are the fast, differentiable-shape equivalents used during training.
"""

from __future__ import annotations

import hashlib
import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

__all__ = [
    "BLUR_KINDS",
    "MASK_KINDS",
    "NOISE_KINDS",
    "SR_SCALES",
    "RESIZE_MODES",
    "add_correlated_gaussian_noise",
    "add_gaussian_noise",
    "add_gray_gaussian_noise",
    "add_gray_poisson_noise",
    "anisotropic_gaussian_blur",
    "anisotropic_gaussian_kernel",
    "add_poisson_noise",
    "check_range",
    "draw_choice",
    "draw_int",
    "draw_uniform",
    "bicubic_downsample",
    "bicubic_downsample_uint8",
    "bicubic_upsample",
    "bicubic_upsample_uint8",
    "crop_to_multiple",
    "gaussian_blur",
    "gaussian_kernel",
    "jpeg_compress",
    "jpeg_compress_uint8",
    "make_generator",
    "motion_blur",
    "motion_blur_kernel",
    "pad_edges",
    "quantize",
    "to_gray_uint8",
    "resize_down_up",
]

SR_SCALES = (2, 3, 4)
NOISE_KINDS = ("gaussian", "poisson")
BLUR_KINDS = ("gaussian", "motion")
MASK_KINDS = ("box", "stroke", "dropout")


# --------------------------------------------------------------------------------------------
# Seeding
# --------------------------------------------------------------------------------------------


def make_generator(*keys: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded deterministically from ``keys``.

    Typical keys are ``(base_seed, image_id, epoch)`` where ``image_id`` is a string such as the
    file name. The seed is a SHA-256 of the typed keys, so it is the same in every process and
    on every machine (Python's ``hash()`` of a string is salted per process and would not be),
    and ``1`` and ``"1"`` give different seeds.

    Args:
        keys: ints and/or strings, at least one.
        device: device of the generator (a CUDA generator is needed to sample on the GPU).
    """
    if not keys:
        raise ValueError("make_generator needs at least one key (e.g. base seed, image id, epoch)")
    digest = hashlib.sha256()
    for key in keys:
        # bool is an int subclass; a stray True is almost certainly a bug, not a seed.
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise TypeError(f"generator keys must be int or str, got {key!r} ({type(key).__name__})")
        tag = b"i" if isinstance(key, int) else b"s"
        encoded = str(key).encode("utf-8")
        # Length-prefix every key so ("ab", "c") and ("a", "bc") cannot collide.
        digest.update(tag + len(encoded).to_bytes(8, "little") + encoded)
    seed = int.from_bytes(digest.digest()[:8], "little") & ((1 << 63) - 1)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def draw_uniform(low: float, high: float, generator: torch.Generator) -> float:
    """A float drawn uniformly from [low, high) (exactly ``low`` when the range is a point)."""
    if low == high:  # a fixed point: no draw, so a protocol's noise equals the plain function's
        return float(low)
    u = torch.rand((), generator=generator, device=generator.device).item()
    return low + (high - low) * u


def draw_int(low: int, high: int, generator: torch.Generator) -> int:
    """An int drawn uniformly from [low, high], both inclusive (``low`` without a draw when equal)."""
    if low == high:
        return int(low)
    return int(torch.randint(low, high + 1, (), generator=generator, device=generator.device).item())


def draw_choice(options: tuple[str, ...], generator: torch.Generator) -> str:
    return options[draw_int(0, len(options) - 1, generator)]


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def check_image(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (CHW or NCHW float in [0, 1]), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype}")
    if x.ndim not in (3, 4):
        raise ValueError(f"{name} must be CHW or NCHW, got shape {tuple(x.shape)}")


def _check_scale(scale: int) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale not in SR_SCALES:
        raise ValueError(f"scale must be one of {SR_SCALES}, got {scale!r}")


def _check_quality(quality: int) -> None:
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be an int in 1..100, got {quality!r}")


def check_ratio(ratio: float, name: str = "ratio") -> None:
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {ratio!r}")


def check_range(value: tuple[float, float], name: str, low: float, high: float) -> None:
    """A (lo, hi) pair with low <= lo <= hi <= high."""
    if len(value) != 2:
        raise ValueError(f"{name} must be a (low, high) pair, got {value!r}")
    lo, hi = value
    if lo > hi:
        raise ValueError(f"{name} must have low <= high, got {value!r}")
    if lo < low or hi > high:
        raise ValueError(f"{name} must lie within [{low}, {high}], got {value!r}")


# --------------------------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------------------------


def add_gaussian_noise(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """Add white Gaussian noise with standard deviation ``sigma / 255``.

    Args:
        x: CHW or NCHW float in [0, 1].
        sigma: noise standard deviation on the 0-255 scale (the literature's sigma 15/25/50), >= 0.
        generator: source of the noise.

    Returns:
        ``x + noise``, same shape and dtype, **not clipped**: the standard denoising protocol feeds
        the unclipped noisy image to the model (clipping would bias the noise near 0 and 1).
    """
    check_image(x)
    if not sigma >= 0:  # also rejects NaN
        raise ValueError(f"sigma must be >= 0 (0-255 scale), got {sigma!r}")
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return x + noise.to(x.device) * (sigma / 255.0)


def add_poisson_noise(x: Tensor, peak: float, generator: torch.Generator) -> Tensor:
    """Shot noise: photon counts ``Poisson(x * peak) / peak``.

    Args:
        x: CHW or NCHW float in [0, 1].
        peak: photon count of a pixel of value 1, > 0; smaller is noisier (1-100 is the usual range).
        generator: source of the noise.

    Returns:
        Same shape and dtype, clipped to [0, 1] (counts are non-negative; the upper clip models a
        saturating sensor).
    """
    check_image(x)
    if not peak > 0:
        raise ValueError(f"peak must be > 0 (photons at value 1), got {peak!r}")
    rates = (x.clamp(0.0, 1.0) * peak).to(generator.device)
    counts = torch.poisson(rates, generator=generator)
    return (counts / peak).to(x.device).clamp_(0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Blur
# --------------------------------------------------------------------------------------------


def _as_batch(x: Tensor) -> tuple[Tensor, bool]:
    """NCHW view of a CHW or NCHW tensor, and whether it was unbatched."""
    return (x.unsqueeze(0), True) if x.ndim == 3 else (x, False)


def pad_edges(x: Tensor, padding: tuple[int, int, int, int]) -> Tensor:
    """Pad NCHW ``x`` by ``(left, right, top, bottom)`` pixels: reflect (no seam at the border),
    or replicate where the image is too small to reflect."""
    height, width = x.shape[-2:]
    left, right, top, bottom = padding
    fits = max(left, right) < width and max(top, bottom) < height
    return F.pad(x, padding, mode="reflect" if fits else "replicate")


def _pad(x: Tensor, pad_h: int, pad_w: int) -> Tensor:
    return pad_edges(x, (pad_w, pad_w, pad_h, pad_h))


def _filter2d(x: Tensor, kernel: Tensor) -> Tensor:
    """Same-size depthwise filtering of NCHW ``x`` with an odd-sized 2-D ``kernel``.

    ``conv2d`` is a correlation; every kernel used here is point-symmetric, so it is also the
    convolution.
    """
    channels = x.shape[1]
    kernel_h, kernel_w = kernel.shape
    weight = kernel.to(device=x.device, dtype=x.dtype).expand(channels, 1, kernel_h, kernel_w)
    padded = _pad(x, kernel_h // 2, kernel_w // 2)
    return F.conv2d(padded, weight, groups=channels)


def _gaussian_kernel1d(sigma: float, kernel_size: int) -> Tensor:
    offsets = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).float()


def gaussian_kernel(sigma: float, kernel_size: int | None = None) -> Tensor:
    """2-D isotropic Gaussian kernel (float32, sums to 1), ``kernel_size`` x ``kernel_size``.

    ``kernel_size`` defaults to ``2 * ceil(3 * sigma) + 1`` (99.7 % of the mass) and must be odd.
    """
    kernel_size = _gaussian_kernel_size(sigma, kernel_size)
    if sigma == 0:
        kernel = torch.zeros(kernel_size, kernel_size)
        kernel[kernel_size // 2, kernel_size // 2] = 1.0
        return kernel
    kernel1d = _gaussian_kernel1d(sigma, kernel_size)
    return torch.outer(kernel1d, kernel1d)


def _gaussian_kernel_size(sigma: float, kernel_size: int | None) -> int:
    if not sigma >= 0:
        raise ValueError(f"blur sigma must be >= 0 (pixels), got {sigma!r}")
    if kernel_size is None:
        return 2 * math.ceil(3 * sigma) + 1
    is_int = isinstance(kernel_size, int) and not isinstance(kernel_size, bool)
    if not is_int or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size!r}")
    return kernel_size


def gaussian_blur(x: Tensor, sigma: float, kernel_size: int | None = None) -> Tensor:
    """Isotropic Gaussian blur with reflect padding; output has the input's size.

    Args:
        x: CHW or NCHW float in [0, 1].
        sigma: standard deviation in pixels, >= 0 (0 returns a copy).
        kernel_size: odd kernel width; default ``2 * ceil(3 * sigma) + 1``.
    """
    check_image(x)
    kernel_size = _gaussian_kernel_size(sigma, kernel_size)
    if sigma == 0 or kernel_size == 1:
        return x.clone()
    batch, unbatched = _as_batch(x)
    # Separable: two 1-D passes cost 2k instead of k^2 multiplies per pixel.
    kernel1d = _gaussian_kernel1d(sigma, kernel_size)
    out = _filter2d(batch, kernel1d[None, :])
    out = _filter2d(out, kernel1d[:, None])
    return out.squeeze(0) if unbatched else out


def motion_blur_kernel(length: int, angle_degrees: float) -> Tensor:
    """Linear motion-blur kernel: a line of ``length`` pixels through the center, summing to 1.

    Args:
        length: extent of the motion in pixels, >= 1 (1 is the identity).
        angle_degrees: direction, counter-clockwise from the +x axis as seen on screen (0 is a
            horizontal smear, 90 a vertical one).

    Returns:
        float32 tensor of shape (k, k) with ``k = length`` rounded up to odd, so the kernel has
        a center pixel and does not shift the image.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"motion blur length must be an int >= 1 (pixels), got {length!r}")
    size = length if length % 2 == 1 else length + 1
    center = (size - 1) / 2
    theta = math.radians(angle_degrees)
    # Sample the segment densely and splat each sample bilinearly: an antialiased line whose
    # mass does not depend on the angle.
    steps = torch.linspace(-(length - 1) / 2, (length - 1) / 2, 8 * length + 1, dtype=torch.float64)
    xs = center + steps * math.cos(theta)
    ys = center - steps * math.sin(theta)  # image rows grow downwards
    kernel = torch.zeros(size, size, dtype=torch.float64)
    x0, y0 = xs.floor(), ys.floor()
    for dx in (0, 1):
        for dy in (0, 1):
            weight = (1 - (xs - x0 - dx).abs()) * (1 - (ys - y0 - dy).abs())
            cols, rows = (x0 + dx).long(), (y0 + dy).long()
            inside = (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size) & (weight > 0)
            kernel.index_put_((rows[inside], cols[inside]), weight[inside], accumulate=True)
    # Symmetrize to remove floating-point asymmetry, so correlation == convolution exactly.
    kernel = 0.5 * (kernel + kernel.flip(0, 1))
    return (kernel / kernel.sum()).float()


def motion_blur(x: Tensor, length: int, angle_degrees: float) -> Tensor:
    """Linear motion blur (see :func:`motion_blur_kernel`) with reflect padding, same size.

    Args:
        x: CHW or NCHW float in [0, 1].
        length: motion extent in pixels, >= 1.
        angle_degrees: motion direction, counter-clockwise from horizontal.
    """
    check_image(x)
    kernel = motion_blur_kernel(length, angle_degrees)
    batch, unbatched = _as_batch(x)
    out = _filter2d(batch, kernel)
    return out.squeeze(0) if unbatched else out


# --------------------------------------------------------------------------------------------
# Resampling (super-resolution)
# --------------------------------------------------------------------------------------------


def crop_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Crop bottom and right so that height and width are multiples of ``multiple``.

    Keeps the top-left corner, as the SR benchmarks do (HR ``[:h - h % s, :w - w % s]``).
    Works on CHW or NCHW tensors (and on any tensor whose last two dims are H, W).
    """
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"multiple must be an int >= 1, got {multiple!r}")
    height, width = x.shape[-2:]
    if height < multiple or width < multiple:
        raise ValueError(f"image {height}x{width} is smaller than the multiple {multiple}")
    return x[..., : height - height % multiple, : width - width % multiple]


def bicubic_downsample(x: Tensor, scale: int) -> Tensor:
    """Bicubic downscaling by ``scale`` with antialiasing (tensor version, for training).

    The image is first cropped to a multiple of ``scale`` (:func:`crop_to_multiple`), so the
    output is exactly ``(H // scale, W // scale)``. Uses ``F.interpolate(mode="bicubic",
    antialias=True)``, whose kernel (cubic a = -0.5, widened by the scale) is the one PIL and
    MATLAB ``imresize`` use; it agrees with :func:`bicubic_downsample_uint8` to about 0.1 gray
    level on average but is not bit-exact (no 8-bit rounding, different border arithmetic).
    Evaluate with the uint8 version.

    Args:
        x: CHW or NCHW float in [0, 1].
        scale: one of 2, 3, 4.

    Returns:
        Same dtype, clipped to [0, 1] (bicubic overshoots at edges; the 8-bit protocol clips too).
    """
    check_image(x)
    _check_scale(scale)
    batch, unbatched = _as_batch(crop_to_multiple(x, scale))
    height, width = batch.shape[-2:]
    out = F.interpolate(
        batch, size=(height // scale, width // scale), mode="bicubic", antialias=True, align_corners=False
    ).clamp_(0.0, 1.0)
    return out.squeeze(0) if unbatched else out


def bicubic_upsample(x: Tensor, scale: int) -> Tensor:
    """Bicubic upscaling by ``scale`` (tensor version; output ``(H * scale, W * scale)``).

    ``antialias=True`` selects PyTorch's PIL-compatible cubic (a = -0.5) rather than the
    a = -0.75 OpenCV-style kernel; for upscaling it adds no blur.

    Args:
        x: CHW or NCHW float in [0, 1].
        scale: one of 2, 3, 4.

    Returns:
        Same dtype, clipped to [0, 1].
    """
    check_image(x)
    _check_scale(scale)
    batch, unbatched = _as_batch(x)
    height, width = batch.shape[-2:]
    out = F.interpolate(
        batch, size=(height * scale, width * scale), mode="bicubic", antialias=True, align_corners=False
    ).clamp_(0.0, 1.0)
    return out.squeeze(0) if unbatched else out


def _check_uint8_pixels(pixels: np.ndarray) -> None:
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
        found = getattr(pixels, "dtype", type(pixels).__name__)
        raise TypeError(f"pixels must be a uint8 numpy array (HW or HWC), got {found}")
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (1, 3)):
        raise ValueError(f"pixels must be HW or HWC with 1 or 3 channels, got shape {pixels.shape}")


def _pil_resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    squeeze = pixels.ndim == 3 and pixels.shape[2] == 1
    image = Image.fromarray(pixels[..., 0] if squeeze else pixels)
    # np.array (a copy), not asarray: PIL-backed arrays are read-only and surprise callers.
    out = np.array(image.resize((width, height), Image.Resampling.BICUBIC))
    return out[..., None] if squeeze else out


def bicubic_downsample_uint8(pixels: np.ndarray, scale: int) -> np.ndarray:
    """The evaluation protocol's LR image: PIL bicubic downscaling of an 8-bit image.

    Crops to a multiple of ``scale`` (top-left kept) then ``Image.resize(..., BICUBIC)``, which
    antialiases like MATLAB ``imresize``; this is what the published "bicubic 28.42 dB on Set5
    x4" uses.

    Args:
        pixels: uint8 HW or HWC (C = 1 or 3).
        scale: one of 2, 3, 4.

    Returns:
        uint8 array of shape ``(H // scale, W // scale[, C])``.
    """
    _check_uint8_pixels(pixels)
    _check_scale(scale)
    height, width = pixels.shape[:2]
    cropped = pixels[: height - height % scale, : width - width % scale]
    return _pil_resize(cropped, cropped.shape[1] // scale, cropped.shape[0] // scale)


def bicubic_upsample_uint8(pixels: np.ndarray, scale: int) -> np.ndarray:
    """PIL bicubic upscaling of an 8-bit image (the "bicubic" SR baseline of the protocol).

    Args:
        pixels: uint8 HW or HWC (C = 1 or 3).
        scale: one of 2, 3, 4.

    Returns:
        uint8 array of shape ``(H * scale, W * scale[, C])``.
    """
    _check_uint8_pixels(pixels)
    _check_scale(scale)
    height, width = pixels.shape[:2]
    return _pil_resize(pixels, width * scale, height * scale)


# --------------------------------------------------------------------------------------------
# JPEG
# --------------------------------------------------------------------------------------------


def jpeg_compress_uint8(pixels: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode with PIL's JPEG at ``quality``; the protocol's JPEG degradation.

    Gray (HW or HWx1) is encoded as a 1-channel "L" JPEG, as the Classic5/LIVE1 benchmarks do
    (encoding gray as RGB would change the numbers). Color uses PIL's default 4:2:0 chroma
    subsampling.

    Args:
        pixels: uint8 HW or HWC (C = 1 or 3).
        quality: 1..100.

    Returns:
        uint8 array of the input's shape.
    """
    _check_uint8_pixels(pixels)
    _check_quality(quality)
    squeeze = pixels.ndim == 3 and pixels.shape[2] == 1
    image = Image.fromarray(pixels[..., 0] if squeeze else pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        out = np.array(decoded.convert(image.mode))  # writable copy, as in _pil_resize
    return out[..., None] if squeeze else out


def jpeg_compress(x: Tensor, quality: int) -> Tensor:
    """JPEG round trip of a tensor image via PIL (through 8-bit, so the output is quantized).

    Args:
        x: CHW or NCHW float in [0, 1], 1 (gray, encoded as "L") or 3 (RGB) channels. Values are
            clipped and rounded to 8 bits before encoding.
        quality: 1..100.

    Returns:
        Same shape, dtype and device, values on the 8-bit grid in [0, 1].
    """
    check_image(x)
    _check_quality(quality)
    if x.shape[-3] not in (1, 3):
        raise ValueError(f"JPEG needs 1 or 3 channels, got {x.shape[-3]} (shape {tuple(x.shape)})")
    batch, unbatched = _as_batch(x)
    pixels = (batch.detach().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    decoded = np.stack([jpeg_compress_uint8(image, quality) for image in pixels])
    out = torch.from_numpy(decoded).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255.0
    return out.squeeze(0) if unbatched else out


# --------------------------------------------------------------------------------------------
# Real-world degradations: the building blocks of blind chains (see ``restoration.tasks.specs``)
# --------------------------------------------------------------------------------------------


def add_gray_gaussian_noise(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """Gaussian noise that is the same in every channel (a gray sensor, a scan), not clipped.

    Args:
        x: CHW or NCHW float in [0, 1].
        sigma: standard deviation on the 0-255 scale, >= 0.
        generator: source of the noise.
    """
    check_image(x)
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0 (0-255 scale), got {sigma!r}")
    shape = (*x.shape[:-3], 1, *x.shape[-2:])
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=x.dtype)
    return x + noise.to(x.device) * (sigma / 255.0)


def add_correlated_gaussian_noise(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """Gaussian noise correlated across the RGB channels (demosaicked sensor noise), not clipped.

    The 3x3 covariance is ``U diag(d) U^T`` with a random rotation ``U`` and eigenvalues ``d``
    drawn in [0.1, 1] and rescaled so that the mean per-channel variance is ``sigma^2``. Gray
    images (1 channel) get plain Gaussian noise.

    Args:
        x: CHW or NCHW float in [0, 1], 1 or 3 channels.
        sigma: mean per-channel standard deviation on the 0-255 scale, >= 0.
        generator: source of the covariance and the noise.
    """
    check_image(x)
    if x.shape[-3] != 3:
        return add_gaussian_noise(x, sigma, generator)
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0 (0-255 scale), got {sigma!r}")
    device = generator.device
    rotation, _ = torch.linalg.qr(torch.randn(3, 3, generator=generator, device=device, dtype=torch.float64))
    eigenvalues = 0.1 + 0.9 * torch.rand(3, generator=generator, device=device, dtype=torch.float64)
    eigenvalues = eigenvalues * 3 / eigenvalues.sum()  # trace 3: mean variance 1 per channel
    transform = (rotation * eigenvalues.sqrt()).to(x.dtype)  # (3, 3): noise = transform @ z
    white = torch.randn((*x.shape[:-3], 3, x.shape[-2] * x.shape[-1]), generator=generator, device=device, dtype=x.dtype)
    noise = (transform @ white).reshape(x.shape)  # (..., 3, H, W)
    return x + noise.to(x.device) * (sigma / 255.0)


def add_gray_poisson_noise(x: Tensor, peak: float, generator: torch.Generator) -> Tensor:
    """Shot noise computed on the luma and added equally to every channel, clipped to [0, 1].

    Args:
        x: CHW or NCHW float in [0, 1].
        peak: photon count of a pixel of value 1, > 0.
        generator: source of the noise.
    """
    check_image(x)
    if x.shape[-3] == 1:
        return add_poisson_noise(x, peak, generator)
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(3, 1, 1)
    luma = (x.clamp(0.0, 1.0) * weights).sum(-3, keepdim=True)
    noise = add_poisson_noise(luma, peak, generator) - luma.clamp(0.0, 1.0)
    return (x + noise).clamp_(0.0, 1.0)


def anisotropic_gaussian_kernel(sigma_x: float, sigma_y: float, angle_degrees: float) -> Tensor:
    """2-D Gaussian kernel with standard deviations ``sigma_x``/``sigma_y`` (pixels, > 0) along
    axes rotated by ``angle_degrees``; float32, odd size ``2 * ceil(3 * max sigma) + 1``, sums to 1."""
    if not (sigma_x > 0 and sigma_y > 0):
        raise ValueError(f"anisotropic blur sigmas must be > 0 pixels, got {sigma_x!r}, {sigma_y!r}")
    size = 2 * math.ceil(3 * max(sigma_x, sigma_y)) + 1
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    ys, xs = torch.meshgrid(offsets, offsets, indexing="ij")
    theta = math.radians(angle_degrees)
    u = xs * math.cos(theta) + ys * math.sin(theta)
    v = -xs * math.sin(theta) + ys * math.cos(theta)
    kernel = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (kernel / kernel.sum()).float()


def anisotropic_gaussian_blur(x: Tensor, sigma_x: float, sigma_y: float, angle_degrees: float) -> Tensor:
    """Blur with :func:`anisotropic_gaussian_kernel` (reflect padding, same size).

    Args:
        x: CHW or NCHW float in [0, 1].
    """
    check_image(x)
    batch, unbatched = _as_batch(x)
    out = _filter2d(batch, anisotropic_gaussian_kernel(sigma_x, sigma_y, angle_degrees))
    return out.squeeze(0) if unbatched else out


RESIZE_MODES = ("area", "bilinear", "bicubic")


def resize_down_up(x: Tensor, factor: float, down_mode: str, up_mode: str) -> Tensor:
    """Resize by ``factor`` (0 < factor <= 1) and back to the original size: the detail a
    downscaled-then-upscaled web copy has lost. Modes are ``RESIZE_MODES``; ``area`` upsampling
    is nearest-neighbour, as torch defines it.

    Args:
        x: CHW or NCHW float in [0, 1].

    Returns:
        Same shape; bicubic may overshoot [0, 1] slightly (not clipped).
    """
    check_image(x)
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"resize factor must lie in (0, 1], got {factor!r}")
    for mode in (down_mode, up_mode):
        if mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {mode!r}; expected one of {RESIZE_MODES}")
    batch, unbatched = _as_batch(x)
    height, width = batch.shape[-2:]
    small = (max(1, round(height * factor)), max(1, round(width * factor)))
    if small == (height, width):
        return x.clone()

    def resize(image: Tensor, size: tuple[int, int], mode: str) -> Tensor:
        if mode == "area":
            return F.interpolate(image, size=size, mode="area" if size[0] <= image.shape[-2] else "nearest")
        return F.interpolate(image, size=size, mode=mode, align_corners=False, antialias=size[0] < image.shape[-2])

    out = resize(resize(batch, small, down_mode), (height, width), up_mode)
    return out.squeeze(0) if unbatched else out


def to_gray_uint8(pixels: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 RGB -> H x W x 1 uint8 gray (ITU-R BT.601 luma, as PIL's "L"); gray
    input is returned as it is."""
    _check_uint8_pixels(pixels)
    if pixels.shape[-1] == 1:
        return pixels
    return np.asarray(Image.fromarray(pixels[..., :3]).convert("L"))[..., None]


def quantize(x: Tensor) -> Tensor:
    """Clip to [0, 1] and round to the 8-bit grid: what saving an image as 8-bit does."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0

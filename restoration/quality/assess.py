"""What an image needs, measured from its pixels (and its file's JPEG tables) in a few milliseconds.

:func:`assess` gives an :class:`Assessment` -- noise level, JPEG quality, blockiness, blur, gray
stored as RGB -- of every image the restore job reads; the values become manifest columns and the
measures a route's conditions compare (:data:`MEASURES`, e.g. ``noise_sigma >= 4 and
jpeg_quality < 90``).

Cost and determinism: no measure reads the whole image. The noise reads 512 patches of 7 x 7
pixels; blockiness, blur and gray-as-RGB read 256 lines of 65 pixels along the rows and 256 along
the columns (in bundles of 4 neighbours). Their positions are drawn by a generator seeded with the
image's shape, and the pixels are gathered straight from the integer array, so the cost is about
the same for a thumbnail and for a 12-megapixel photo (``bench/assess_accuracy.py``), and the same
pixels always give the same numbers.

Inputs: ``H x W x C`` arrays (``C`` = 1 or 3; an ``H x W`` array is read as ``C`` = 1), uint8 or
uint16, as :func:`restoration.io.codec.decode_image` gives them. Levels are read on the 0-255
scale: a 16-bit value ``v`` counts as ``v * 255 / 65535``. An image too small for a measure gets
its neutral value, never an error: ``noise_sigma`` 0.0 below 98 positions for a 7 x 7 patch
(``(H - 6) (W - 6) < 98``: 15 x 15, 8 x 8, 1 x 1), ``blockiness`` 1.0 below 9 pixels in both
directions, ``blur`` from whatever neighbour differences there are (1.0 without any: 1 x 1, or a
flat image).

Methods, and where they come from:

- ``noise_sigma``: the patch-covariance estimate of Chen, Zhu & Heng (ICCV 2015, "An efficient
  statistical method for image noise level estimation"): the noise variance is the mean of the
  smallest eigenvalues of the covariance of the patches that only noise explains. Which
  eigenvalues those are is decided by random-matrix theory -- the largest set whose spread fits
  the Marchenko-Pastur law of pure noise, as Veraart et al. (NeuroImage 2016, "Denoising of
  diffusion MRI using random matrix theory") decide it -- rather than by Chen's "mean equals
  median" test, which reads 5-13 % low with the few hundred patches this budget allows (CBSD68
  medians: sigma 5 as 4.35, 25 as 23.6). Only patches that look like noise enter the
  covariance, as Liu, Tanaka & Okutomi (IEEE TIP 2013, "Single-image noise level estimation
  for blind denoising") select weakly textured ones: those whose residual after fitting a plane
  (smooth shading) is below the 99th percentile of pure noise's (a chi-square), at a first guess
  read from the flattest 2 % of the patches. Texture therefore stays out: clean photos read
  about 0.3 (CBSD68's median). Patches within 1 sigma of black or white are left out where
  enough others remain, and the variance is corrected for the clipping a file applies near
  them, so the value is the std of the Gaussian noise before clipping. Colour: the mean of the
  three channels' estimates, each channel's patches selected on their own.
- ``jpeg_quality``: the libjpeg quality (1-100) whose standard tables, scaled as libjpeg scales
  them, are nearest to the file's quantization tables (read from the header by Pillow, in natural
  order): exact for files written with the standard tables (libjpeg, Pillow, most cameras and
  editors), the nearest for others, the finely quantized low frequencies counting most.
- ``blockiness``: JPEG's 8 x 8 block edges in the luma: on each axis, the sum of the absolute
  differences between neighbouring pixels at the strongest of the 8 phases of the 8-pixel grid,
  over the second strongest. The grid's phase is found, so a cropped or flipped JPEG is measured
  too, and structure that repeats every 2 or 4 pixels (an upscaled image) reads about 1.
- ``blur``: the re-blur measure of Crete-Roffet et al. (SPIE 2007, "The blur effect: perception
  and estimation with a new no-reference perceptual blur metric") on the luma: how much of the
  variation between neighbouring pixels a 9-pixel box blur leaves, the larger of the two
  directions.
- ``gray_rgb``: a colour image whose three channels agree within one 8-bit level at 99 % of the
  sampled pixels.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Final, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

__all__ = [
    "MEASURES",
    "Assessment",
    "assess",
    "blockiness",
    "blur",
    "coarse_noise",
    "estimate_noise",
    "jpeg_quality",
]

MEASURES: Final[dict[str, type]] = {
    "noise_sigma": float,
    "coarse_noise": float,
    "jpeg_quality": int,
    "blockiness": float,
    "blur": float,
    "gray_rgb": bool,
    "width": int,
    "height": int,
    "megapixels": float,
    "channels": int,
    "bit_depth": int,
    "is_jpeg": bool,
}
"""Every measure a route's condition may name, and its Python type. The first six are
:class:`Assessment`'s fields; the caller adds the rest from the decoded image: ``width`` and
``height`` in pixels after EXIF orientation, ``megapixels`` (``width * height / 1e6``),
``channels`` (1 gray or 3 RGB, alpha not counted), ``bit_depth`` (8 or 16 bits per sample) and
``is_jpeg`` (whether the file is a JPEG)."""


@dataclass(frozen=True)
class Assessment:
    """The measures of one image.

    Attributes:
        noise_sigma: estimated std of its Gaussian-equivalent noise on the 0-255 scale (16-bit
            images too), >= 0; clean photos read about 0.3, and 0.0 means flat or too small to
            tell.
        coarse_noise: the noise of the luma at half resolution (:func:`coarse_noise`), on the
            scale of full-resolution luma: the noise JPEG compression leaves. On skimage's
            astronaut with Gaussian noise of sigma 15 per channel it reads 7.3, and 5.2 after
            JPEG quality 60, where ``noise_sigma`` reads 15.0 and then 0.5; clean, 0.0.
        jpeg_quality: the libjpeg quality 1-100 of the file's quantization tables, or None
            (not a JPEG file, or no file bytes given).
        blockiness: strength of 8 x 8 block edges, >= 1: about 1.03 for photos that never were
            JPEGs or were saved at high quality; on CBSD68 saved as JPEG and kept losslessly
            (e.g. re-saved as PNG), medians 1.2 at quality 60, 1.5 at 30, 2.3 at 10.
        blur: 0 (sharp) to 1 (fully blurred or flat); CBSD68 medians: 0.23 as they are, 0.47
            and 0.65 after a Gaussian blur of sigma 1.2 and 2.
        gray_rgb: whether a 3-channel image is gray stored as RGB (always False for 1 channel).
    """

    noise_sigma: float
    coarse_noise: float
    jpeg_quality: int | None
    blockiness: float
    blur: float
    gray_rgb: bool

    def as_row(self) -> dict[str, Any]:
        """The measures as a manifest row: floats rounded to 3 decimals, the rest as they are."""
        return {name: round(value, 3) if isinstance(value, float) else value
                for name, value in asdict(self).items()}


def assess(pixels: np.ndarray, *, data: bytes | None = None) -> Assessment:
    """Measure one decoded image.

    Args:
        pixels: ``H x W x C`` (or ``H x W``) uint8 or uint16 array, ``C`` in {1, 3}, as decoded
            (EXIF orientation applied).
        data: the image file's bytes, read for its JPEG quantization tables only; None when
            there is no file (``jpeg_quality`` is then None).

    Raises:
        TypeError: ``pixels`` is not a uint8 or uint16 numpy array.
        ValueError: ``pixels`` is not ``H x W`` or ``H x W x C`` with ``C`` in {1, 3}.
    """
    image = _checked(pixels)
    lines = _sample_lines(image)
    steps = [_steps(side.luma) for side in lines]
    return Assessment(
        noise_sigma=_noise_sigma(image),
        coarse_noise=_coarse_noise(image),
        jpeg_quality=None if data is None else jpeg_quality(data),
        blockiness=_blockiness(steps),
        blur=_blur(steps),
        gray_rgb=_gray_rgb(lines[0].pixels, tolerance=_one_level(image)),
    )


# --------------------------------------------------------------------------------------------
# Noise

_PATCH: Final[int] = 7
_PATCH_VALUES: Final[int] = _PATCH * _PATCH
_NOISE_POSITIONS: Final[int] = 512  # patches drawn: one sample of each channel at each
_MIN_NOISE_SAMPLES: Final[int] = 2 * _PATCH_VALUES  # fewer, and a 49 x 49 covariance says little
_FLATTEST_SHARE: Final[float] = 0.02  # the first guess reads the flattest 2 % of the patches
_NOISE_ONLY_SHARE: Final[float] = 0.99  # a patch looks like noise below this quantile of pure noise
_CLIP_MARGIN: Final[float] = 1.0  # sigmas: patches whose mean is nearer black or white are left out
_CLIP_REACH: Final[float] = 4.0  # sigmas: farther from black and white, clipping shrinks no variance
_MP_EDGE: Final[float] = 4.0  # Marchenko-Pastur: the noise eigenvalues span 4 sqrt(d / N) sigma^2


def _chi2_quantile(share: float, dof: int) -> float:
    """The chi-square(``dof``) quantile below which ``share`` of it lies (Wilson-Hilferty)."""
    c = 2 / (9 * dof)
    return dof * (1 - c + NormalDist().inv_cdf(share) * math.sqrt(c)) ** 3


_OFFSETS: Final[np.ndarray] = 2 * np.arange(_PATCH) - (_PATCH - 1)  # centred, integers
_PLANE: Final[np.ndarray] = np.stack(
    [np.ones(_PATCH_VALUES), np.tile(_OFFSETS, _PATCH), np.repeat(_OFFSETS, _PATCH)], axis=1
).astype(np.float32)
"""Orthogonal, unnormalized basis of the planes over a patch (constant, x, y): integer weights, so
the projections of 8-bit patches are exact in float32."""
_PLANE_NORMS: Final[np.ndarray] = np.square(_PLANE.astype(np.float64)).sum(axis=0)
_RESIDUAL_DOF: Final[int] = _PATCH_VALUES - 3  # of a plane-fit residual of pure noise, / sigma^2
_NOISE_ONLY: Final[float] = _chi2_quantile(_NOISE_ONLY_SHARE, _RESIDUAL_DOF)
_FLATTEST: Final[float] = _chi2_quantile(_FLATTEST_SHARE, _RESIDUAL_DOF)


def estimate_noise(pixels: np.ndarray) -> float:
    """The std of the image's Gaussian-equivalent noise on the 0-255 scale (see the module notes).

    Args:
        pixels: ``H x W x C`` (or ``H x W``) uint8 or uint16 array, ``C`` in {1, 3}.

    Returns:
        sigma >= 0 on the 0-255 scale (a 16-bit image is scaled): the std of the Gaussian noise
        before the file's clipping to black and white; for colour, the mean of the three
        channels' estimates. 0.0 for flat images and for images with fewer than 98 positions
        for a 7 x 7 patch (e.g. 15 x 15 or smaller).
    """
    return _noise_sigma(_checked(pixels))


def _noise_sigma(image: np.ndarray) -> float:
    height, width, channels = image.shape
    across, down = width - _PATCH + 1, height - _PATCH + 1
    positions = max(across, 0) * max(down, 0)
    if positions < _MIN_NOISE_SAMPLES:
        return 0.0
    count = min(positions, _NOISE_POSITIONS)
    rows, columns = np.divmod(_generator(image, 0).choice(positions, count, replace=False), across)
    windows = sliding_window_view(image, (_PATCH, _PATCH), axis=(0, 1))  # down x across x C x 7 x 7
    patches = np.ascontiguousarray(windows[rows, columns].transpose(1, 0, 2, 3), dtype=np.float32)
    if image.dtype == np.uint16:
        patches *= np.float32(255 / 65535)
    patches = patches.reshape(channels, count, _PATCH_VALUES)
    planes = (patches @ _PLANE).astype(np.float64)  # C x N x 3: the patches' planes, unnormalized
    squares = np.einsum("cij,cij->ci", patches, patches).astype(np.float64)
    residuals = squares - np.square(planes) @ (1 / _PLANE_NORMS)  # what the planes leave, C x N
    means = planes[:, :, 0] / _PATCH_VALUES
    variances = [_channel_noise_variance(*channel) for channel in zip(patches, residuals, means)]
    return float(np.mean(np.sqrt(variances)))


def coarse_noise(pixels: np.ndarray) -> float:
    """The noise of the image's luma at half resolution, on the 0-255 scale of full-resolution
    luma: 2 x 2 means of BT.601 luma (of sampled 14 x 14 windows), whose noise is estimated as
    :func:`estimate_noise` does, times 2 (the mean of four independent samples halves white
    noise). JPEG compression removes the finest scale first, where :func:`estimate_noise` looks,
    and keeps most of this one: noise under a JPEG shows here.

    Args:
        pixels: ``H x W x C`` (or ``H x W``) uint8 or uint16 array, ``C`` in {1, 3}.

    Returns:
        sigma >= 0; 0.0 for flat images and those with fewer than 98 positions for a 14 x 14
        window.
    """
    return _coarse_noise(_checked(pixels))


def _coarse_noise(image: np.ndarray) -> float:
    height, width, channels = image.shape
    size = 2 * _PATCH
    across, down = width - size + 1, height - size + 1
    positions = max(across, 0) * max(down, 0)
    if positions < _MIN_NOISE_SAMPLES:
        return 0.0
    count = min(positions, _NOISE_POSITIONS)
    rows, columns = np.divmod(_generator(image, 3).choice(positions, count, replace=False), across)
    values = sliding_window_view(image, (size, size), axis=(0, 1))[rows, columns].astype(np.float32)  # N x C x 14 x 14
    if image.dtype == np.uint16:
        values *= np.float32(255 / 65535)
    quads = values[..., 0::2, 0::2] + values[..., 1::2, 0::2] + values[..., 0::2, 1::2] + values[..., 1::2, 1::2]
    luma = quads[:, 0] if channels == 1 else np.tensordot(quads, _LUMA, axes=([1], [0]))  # N x 7 x 7
    half = np.ascontiguousarray(luma.reshape(count, _PATCH_VALUES)) * np.float32(0.25)
    planes = (half @ _PLANE).astype(np.float64)
    residuals = np.einsum("ij,ij->i", half, half).astype(np.float64) - np.square(planes) @ (1 / _PLANE_NORMS)
    return 2.0 * math.sqrt(_channel_noise_variance(half, residuals, planes[:, 0] / _PATCH_VALUES))


def _channel_noise_variance(patches: np.ndarray, residuals: np.ndarray, means: np.ndarray) -> float:
    """The noise variance of one channel's ``patches`` (N x 49, float32, 0-255 scale) with their
    plane-fit ``residuals`` and mean levels: a first guess from the flattest patches, then the
    eigenvalue floor of the patches that look like noise at that level, corrected for clipping."""
    guess = _flattest_variance(residuals, means)
    margin = max(_CLIP_MARGIN * math.sqrt(guess), 1.0)
    noise_like = residuals <= _NOISE_ONLY * guess
    kept = np.flatnonzero(noise_like & (means >= margin) & (means <= 255 - margin))
    if kept.size < _MIN_NOISE_SAMPLES:  # black or white nearly everywhere: clipped patches too
        kept = np.flatnonzero(noise_like)
    if kept.size < _MIN_NOISE_SAMPLES:  # texture nearly everywhere: the least textured
        kept = np.argpartition(residuals, _MIN_NOISE_SAMPLES - 1)[:_MIN_NOISE_SAMPLES]
    variance = _eigen_floor(patches[kept])
    return variance / _clipping_factor(means[kept], math.sqrt(variance)) if variance > 0 else 0.0


def _flattest_variance(residuals: np.ndarray, means: np.ndarray) -> float:
    """The first guess: the 2nd percentile of the plane-fit residuals, read as pure noise, over
    the patches away from black and white (when enough of them are)."""
    variance = _flattest_share(residuals) / _FLATTEST
    margin = max(_CLIP_MARGIN * math.sqrt(variance), 1.0)
    inside = residuals[(means >= margin) & (means <= 255 - margin)]
    return _flattest_share(inside) / _FLATTEST if inside.size >= _MIN_NOISE_SAMPLES else variance


def _flattest_share(values: np.ndarray) -> float:
    """The 2nd percentile of ``values`` (>= 0: rounding can leave a residual just below)."""
    rank = int(values.size * _FLATTEST_SHARE)
    return max(float(np.partition(values, rank)[rank]), 0.0)


def _eigen_floor(samples: np.ndarray) -> float:
    """The noise variance of ``samples`` (N x d): the mean of the largest set of the smallest
    eigenvalues of their covariance that spreads no wider than pure noise's would
    (Marchenko-Pastur: ``4 sqrt(m / N)`` times their mean, for ``m`` of them)."""
    count = len(samples)
    centred = samples - np.full(count, 1 / count, dtype=np.float32) @ samples  # column means via BLAS
    eigenvalues = np.linalg.eigvalsh((centred.T @ centred).astype(np.float64)) / count
    np.maximum(eigenvalues, 0.0, out=eigenvalues)  # rounding can leave tiny negatives
    sizes = np.arange(1, eigenvalues.size + 1)
    means = np.cumsum(eigenvalues) / sizes
    fits = eigenvalues - eigenvalues[0] <= _MP_EDGE * np.sqrt(sizes / count) * means
    return float(means[np.flatnonzero(fits)[-1]])  # one eigenvalue always fits


def _clipped_noise(t: float) -> tuple[float, float]:
    """The mean and the variance of ``max(t + Z, 0)`` for standard normal Z: Gaussian noise around
    a level ``t`` sigmas above the bound it is clipped at (in sigmas)."""
    below = 0.5 * (1 + math.erf(-t / math.sqrt(2)))  # P(t + Z < 0)
    density = math.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)
    mean = t * (1 - below) + density
    second = (t * t + 1) * (1 - below) + t * density
    return mean, second - mean * mean


_CLIP_TABLE: Final[np.ndarray] = np.array([_clipped_noise(t) for t in np.linspace(0.0, _CLIP_REACH, 257)])
_CLIPPED_MEANS: Final[np.ndarray] = _CLIP_TABLE[:, 0]  # increasing with t, from 0.399 (t = 0)
_CLIP_SHRINK: Final[np.ndarray] = 1 - _CLIP_TABLE[:, 1]
"""The share of its variance that clipping takes from noise whose clipped mean is
``_CLIPPED_MEANS`` sigmas from the bound; beyond 4 sigmas under 1e-4, taken as 0."""


def _clipping_factor(means: np.ndarray, sigma: float) -> float:
    """The share of the variance of Gaussian noise of ``sigma`` that survives clipping to black and
    white, on average over patches whose (clipped) mean levels are ``means``: each bound's share
    is read from the patch's mean, which clipping has moved away from it, and the two multiplied
    (within 2 % of the exact share up to sigma 80 around mid-gray, and never below 0)."""
    black = np.interp(means / sigma, _CLIPPED_MEANS, _CLIP_SHRINK, right=0.0)
    white = np.interp((255 - means) / sigma, _CLIPPED_MEANS, _CLIP_SHRINK, right=0.0)
    return float(np.mean((1 - black) * (1 - white)))


# --------------------------------------------------------------------------------------------
# Lines: blockiness, blur, gray stored as RGB

_BLOCK: Final[int] = 8
_LINES: Final[int] = 256  # per direction
_BUNDLE: Final[int] = 4  # neighbouring lines read together
_LINE_LENGTH: Final[int] = 8 * _BLOCK + 1  # 64 neighbour differences, 8 at each grid phase
_REBLUR: Final[int] = 9  # Crete-Roffet's box filter
_LUMA: Final[np.ndarray] = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601, JPEG's Y
_GRAY_RGB_SHARE: Final[float] = 0.99


def blockiness(pixels: np.ndarray) -> float:
    """The strength of 8 x 8 block edges (JPEG blocking) in the luma, >= 1.

    On each axis, the absolute differences between neighbouring pixels are summed at each of the
    8 phases of the 8-pixel grid; the axis reads its strongest phase over its second strongest,
    and the image the larger of its two axes. The grid's phase is found, not assumed at 0, so a
    cropped or flipped JPEG is measured too; structure that repeats every 2 or 4 pixels (an
    upscaled image) reads about 1, as do photos without blocks. 1.0 for flat images and images
    under 9 pixels in both directions.

    Args:
        pixels: ``H x W x C`` (or ``H x W``) uint8 or uint16 array, ``C`` in {1, 3}.
    """
    return _blockiness([_steps(side.luma) for side in _sample_lines(_checked(pixels))])


def blur(pixels: np.ndarray) -> float:
    """Crete-Roffet's no-reference blur of the luma, 0 (sharp) to 1 (fully blurred or flat).

    Per direction, ``(sum dF - sum max(0, dF - dB)) / sum dF``: ``dF`` are the absolute
    differences between neighbouring pixels, ``dB`` those after a 9-pixel box blur along that
    direction; the larger of the two directions. Lines are extended by their end pixels for the
    box blur (the differences it reaches are left out of lines longer than 18 pixels); an image
    without any neighbour differences (flat, or 1 x 1) reads 1.0.

    Args:
        pixels: ``H x W x C`` (or ``H x W``) uint8 or uint16 array, ``C`` in {1, 3}.
    """
    return _blur([_steps(side.luma) for side in _sample_lines(_checked(pixels))])


class _Lines(NamedTuple):
    """Lines sampled along one axis of an image."""

    pixels: np.ndarray  # N x C, their pixels in the image's dtype
    luma: np.ndarray  # K x L float32, one line per row


def _sample_lines(image: np.ndarray) -> tuple[_Lines, _Lines]:
    """Up to 256 lines along the rows and 256 along the columns of ``image``, each ``L`` =
    min(65, the image's extent) long from a pixel 8j."""
    generator = _generator(image, 1)
    return _lines_along(image, 1, generator), _lines_along(image, 0, generator)


def _lines_along(image: np.ndarray, axis: int, generator: np.random.Generator) -> _Lines:
    """Lines along ``axis`` (1: rows, 0: columns) of ``image`` (H x W x C), in 64 bundles of 4
    neighbours: a bundle of columns is read 4 pixels at a time, not 1 per row of memory."""
    extent, breadth, channels = image.shape[axis], image.shape[1 - axis], image.shape[2]
    length, bundle = min(_LINE_LENGTH, extent), min(_BUNDLE, breadth)
    firsts = breadth - bundle + 1  # where a bundle can start across its lines
    starts = (extent - length) // _BLOCK + 1  # and along them: 8j
    count = min(_LINES // _BUNDLE, firsts * starts) if length and bundle else 0
    if count == 0:
        return _Lines(np.empty((0, channels), dtype=image.dtype), np.empty((0, length), dtype=np.float32))
    first, start = np.divmod(generator.choice(firsts * starts, count, replace=False), starts)
    size = (length, bundle) if axis == 0 else (bundle, length)
    windows = sliding_window_view(image, size, axis=(0, 1)).transpose(0, 1, 3, 4, 2)  # ... x size x C
    if axis == 0:
        bundles = windows[start * _BLOCK, first]  # count x L x bundle x C, as in memory
    else:
        bundles = windows[first, start * _BLOCK]  # count x bundle x L x C
    pixels = bundles.reshape(-1, channels)
    values = pixels.astype(np.float32)
    luma = (values[:, 0] if channels == 1 else values @ _LUMA).reshape(bundles.shape[:3])
    if axis == 0:
        luma = np.ascontiguousarray(luma.transpose(0, 2, 1))
    return _Lines(pixels, luma.reshape(count * bundle, length))


def _blockiness(steps: list[tuple[np.ndarray, np.ndarray]]) -> float:
    return max(_grid_ratio(sharp) for sharp, _ in steps)


def _blur(steps: list[tuple[np.ndarray, np.ndarray]]) -> float:
    return max(_reblur_ratio(sharp, blurred) for sharp, blurred in steps)


def _steps(luma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The absolute neighbour differences along ``K x L`` lines, ``K x (L - 1)``, as they are and
    after Crete-Roffet's box blur."""
    length = luma.shape[1]
    steps = np.abs(luma @ _step_operators(length))
    return steps[:, : length - 1], steps[:, length - 1 :]


@functools.lru_cache(maxsize=8)
def _step_operators(length: int) -> np.ndarray:
    """``L x 2(L - 1)``: a line's neighbour differences, and those of its 9-pixel box blur (the
    line extended by its end pixels), as one linear map."""
    difference = np.zeros((length, max(length - 1, 0)), dtype=np.float32)
    index = np.arange(length - 1)
    difference[index, index] = -1
    difference[index + 1, index] = 1
    box = np.zeros((length, length), dtype=np.float32)
    for tap in range(-(_REBLUR // 2), _REBLUR // 2 + 1):
        np.add.at(box, (np.clip(np.arange(length) + tap, 0, length - 1), np.arange(length)), 1 / _REBLUR)
    operators = np.concatenate([difference, box @ difference], axis=1)
    operators.setflags(write=False)  # shared by every call through the cache
    return operators


def _grid_ratio(steps: np.ndarray) -> float:
    """Strongest grid phase over the second strongest, for lines that start on the grid."""
    blocks = steps.shape[1] // _BLOCK
    if blocks == 0:
        return 1.0
    phases = np.sort(steps[:, : blocks * _BLOCK].sum(axis=0).reshape(blocks, _BLOCK).sum(axis=0))
    return float(phases[-1] / phases[-2]) if phases[-2] > 0 else 1.0


def _reblur_ratio(sharp: np.ndarray, blurred: np.ndarray) -> float:
    """Crete-Roffet's blur of one direction: the share of the lines' variation that the box blur
    does not take away."""
    if sharp.shape[1] > 2 * _REBLUR:  # the differences that the end padding reaches are left out
        half = _REBLUR // 2
        sharp, blurred = sharp[:, half:-half], blurred[:, half:-half]
    variation = float(sharp.sum())
    if variation == 0:
        return 1.0
    return 1 - float(np.maximum(sharp - blurred, 0).sum()) / variation


def _gray_rgb(pixels: np.ndarray, *, tolerance: int) -> bool:
    """Whether the three channels of sampled ``pixels`` (N x C) agree within ``tolerance`` at 99 %
    of them (False for one channel)."""
    if pixels.shape[1] != 3:
        return False
    red, green, blue = pixels[:, 0], pixels[:, 1], pixels[:, 2]
    spread = np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)
    return spread.size > 0 and int(np.count_nonzero(spread <= tolerance)) >= _GRAY_RGB_SHARE * spread.size


# --------------------------------------------------------------------------------------------
# JPEG quality

# libjpeg's standard tables (ITU-T T.81 Annex K), in natural (row-major) order
_LUMA_TABLE: Final[np.ndarray] = np.array([
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
])
_CHROMA_TABLE: Final[np.ndarray] = np.array([
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
])


_STANDARD_TABLES: Final[np.ndarray] = np.stack([_LUMA_TABLE, _CHROMA_TABLE])


def _libjpeg_tables(quality: int) -> np.ndarray:
    """libjpeg's ``jpeg_set_quality(quality, force_baseline=TRUE)`` tables, ``2 x 64`` (luma,
    chroma) in natural order: the standard tables scaled by ``5000 / q`` percent below quality 50
    and ``200 - 2q`` from 50, rounded, clamped to 1..255 (quality 100: all ones)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((_STANDARD_TABLES * scale + 50) // 100, 1, 255)


_QUALITIES: Final[np.ndarray] = np.arange(1, 101)
_LOG_TABLES: Final[np.ndarray] = np.log(np.stack([_libjpeg_tables(int(q)) for q in _QUALITIES]))  # 100 x 2 x 64
_TABLE_WEIGHTS: Final[np.ndarray] = 1 / _STANDARD_TABLES
"""How much each coefficient's step counts when tables are compared: the inverse of its standard
step, so the coefficients quantized most finely (the low frequencies the eye sees best) count most."""


def jpeg_quality(data: bytes) -> int | None:
    """The libjpeg quality (1-100) of a JPEG file's quantization tables, from its header only.

    The quality whose libjpeg tables (:func:`_libjpeg_tables`) are nearest to the file's: the
    weighted mean absolute difference of the logarithms of the steps (their ratio), over the luma
    table (the file's first) and, when there is one, the chroma table (its second), each
    coefficient weighted by the inverse of its standard step, so the finely quantized low
    frequencies count most. Files written with libjpeg's standard tables get their quality
    exactly; others (an editor's own tables, Pillow's presets) the nearest.

    Args:
        data: the file's bytes.

    Returns:
        1-100, or None for anything that is not a JPEG with quantization tables.
    """
    if data[:3] != b"\xff\xd8\xff":
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            tables = getattr(image, "quantization", None)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    if not tables:
        return None
    ordered = [np.asarray(tables[key], dtype=np.float64) for key in sorted(tables)[:2]]
    if any(table.size != 64 for table in ordered):
        return None
    found = np.log(np.maximum(np.stack(ordered), 1))
    steps = np.abs(_LOG_TABLES[:, : len(ordered)] - found)  # log step ratios, per quality
    return int(_QUALITIES[np.argmin((steps * _TABLE_WEIGHTS[: len(ordered)]).sum(axis=(1, 2)))])


# --------------------------------------------------------------------------------------------
# Shared


def _checked(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` as ``H x W x C`` (a view), or TypeError / ValueError."""
    if not isinstance(pixels, np.ndarray) or pixels.dtype not in (np.uint8, np.uint16):
        kind = pixels.dtype if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise TypeError(f"pixels must be a uint8 or uint16 numpy array, got {kind}")
    if pixels.ndim == 2:
        return pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise ValueError(f"pixels must be H x W or H x W x C with C in (1, 3), got shape {pixels.shape}")
    return pixels


def _one_level(image: np.ndarray) -> int:
    """One 8-bit level in the image's own units."""
    return 257 if image.dtype == np.uint16 else 1


def _generator(image: np.ndarray, stream: int) -> np.random.Generator:
    """Random positions that depend only on the image's shape (and which measure draws them)."""
    return np.random.default_rng([*image.shape, stream])

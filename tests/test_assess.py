"""Per-image assessment (restoration.quality.assess) on real photos: scikit-image's, always, and
CBSD68 from ../shared/data where it is there.

Noisy images are made as a file would hold them: Gaussian noise added in float on the 0-255
scale, then clipped and rounded to 8 bits.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data
from skimage.filters import gaussian

from restoration.quality.assess import (
    MEASURES,
    Assessment,
    assess,
    blockiness,
    blur,
    estimate_noise,
    jpeg_quality,
)

# ITU-T T.81 Annex K luminance table, first two rows, natural (row-major) order; in zigzag order
# the table starts 16, 11, 12, 14, 12, 10, 16, 14.
STANDARD_LUMA_ROWS = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55]


def photo(name: str) -> np.ndarray:
    """A scikit-image photo as H x W x C uint8 (gray ones with C = 1)."""
    pixels = getattr(data, name)()
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def noisy(pixels: np.ndarray, sigma: float | tuple[float, ...], seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, 1.0, pixels.shape) * np.asarray(sigma)
    return np.clip(np.round(pixels + noise), 0, 255).astype(np.uint8)


def jpeg_bytes(pixels: np.ndarray, quality: int | str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze()).save(buffer, "JPEG", quality=quality, **options)
    return buffer.getvalue()


def decoded(data_bytes: bytes) -> np.ndarray:
    pixels = np.asarray(Image.open(io.BytesIO(data_bytes)))
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def blurred(pixels: np.ndarray, sigma: float) -> np.ndarray:
    out = gaussian(pixels, sigma=sigma, channel_axis=-1, preserve_range=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Noise


@pytest.mark.parametrize("name", ["astronaut", "coffee", "camera"])
@pytest.mark.parametrize("sigma", [5, 15, 30, 50])
def test_noise_estimate_is_the_added_sigma(name: str, sigma: float) -> None:
    estimate = estimate_noise(noisy(photo(name), sigma))
    assert abs(estimate - sigma) <= 0.5 + 0.04 * sigma, f"{name} sigma {sigma}: estimated {estimate:.2f}"


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "camera"])
def test_texture_is_not_taken_for_noise(name: str) -> None:
    """Fur, hair, fabric and grass in clean photos: well below the levels a route acts on."""
    assert estimate_noise(photo(name)) < 1.5


def test_gray_images_with_or_without_a_channel_axis() -> None:
    gray = noisy(photo("camera"), 10)
    assert estimate_noise(gray[:, :, 0]) == estimate_noise(gray)
    assert abs(estimate_noise(gray) - 10) < 0.8


def test_colour_channels_combine_as_the_mean_of_their_levels() -> None:
    sigmas = (4.0, 8.0, 18.0)
    estimate = estimate_noise(noisy(photo("astronaut"), sigmas))
    mean, rms = float(np.mean(sigmas)), float(np.sqrt(np.mean(np.square(sigmas))))
    assert abs(estimate - mean) < 0.6 < abs(estimate - rms), estimate


def test_sixteen_bit_images_read_on_the_8_bit_scale() -> None:
    eight = noisy(photo("coffee"), 12)
    assert estimate_noise(eight.astype(np.uint16) * 257) == pytest.approx(estimate_noise(eight), rel=1e-4)
    # noise finer than an 8-bit level: 16-bit levels, sigma 6 on the 0-255 scale
    rng = np.random.default_rng(3)
    deep = np.clip(np.round(photo("coffee") * 257.0 + rng.normal(0, 6 * 257, photo("coffee").shape)), 0, 65535)
    assert abs(estimate_noise(deep.astype(np.uint16)) - 6) < 0.5


def test_noise_on_cbsd68(cbsd68_dir: Path) -> None:
    """The acceptance figure on a few of the benchmark photos (all of them: bench/assess_accuracy.py)."""
    paths = sorted(cbsd68_dir.glob("*.png"))[:8]
    assert paths, f"no PNG files in {cbsd68_dir}"
    images = [np.asarray(Image.open(path)) for path in paths]
    assert np.median([estimate_noise(image) for image in images]) < 1.0
    for sigma in (5, 25):
        errors = [abs(estimate_noise(noisy(image, sigma, seed)) - sigma) for seed, image in enumerate(images)]
        assert np.median(errors) <= 1.0, (sigma, errors)


# --------------------------------------------------------------------------------------------
# JPEG quality


def test_pillow_quantization_tables_are_in_natural_order() -> None:
    tables = Image.open(io.BytesIO(jpeg_bytes(photo("astronaut")[:64, :64], 50))).quantization
    assert list(tables[0])[:16] == STANDARD_LUMA_ROWS


@pytest.mark.parametrize("options", [{"subsampling": 0}, {"subsampling": 1}, {"subsampling": 2},
                                     {"progressive": True, "optimize": True}, {"gray": True}],
                         ids=["444", "422", "420", "progressive", "gray"])
def test_jpeg_quality_is_exact_for_standard_tables(options: dict[str, object]) -> None:
    options = dict(options)
    pixels = photo("astronaut")[:64, :64]
    if options.pop("gray", False):
        pixels = photo("camera")[:64, :64]
    wrong = {quality: found for quality in range(1, 101)
             if (found := jpeg_quality(jpeg_bytes(pixels, quality, **options))) != quality}
    assert not wrong, wrong


def test_jpeg_quality_of_a_reencoded_image_is_the_last_save() -> None:
    first = jpeg_bytes(photo("coffee"), 20)
    assert jpeg_quality(jpeg_bytes(decoded(first), 85)) == 85
    buffer = io.BytesIO()
    Image.open(io.BytesIO(first)).save(buffer, "JPEG", quality="keep")  # the same tables again
    assert jpeg_quality(buffer.getvalue()) == 20


def test_jpeg_quality_of_other_tables_is_the_nearest() -> None:
    pixels = photo("astronaut")[:64, :64]
    # libjpeg's quality-60 tables 7 % coarser: libjpeg's scale 80 -> 85.6, quality (200 - 85.6) / 2
    tables = Image.open(io.BytesIO(jpeg_bytes(pixels, 60))).quantization
    coarser = [[min(255, round(value * 1.07)) for value in tables[key]] for key in sorted(tables)]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", qtables=coarser)  # no quality: the tables as they are
    assert jpeg_quality(buffer.getvalue()) == 57
    # Pillow's Photoshop-like presets (their own tables): the finer the tables, the higher the
    # quality; "low" to "high" share their high frequencies and differ in the low ones
    for presets in (["web_low", "web_medium", "web_high", "web_very_high", "web_maximum"],
                    ["low", "medium", "high", "maximum"]):
        qualities = [jpeg_quality(jpeg_bytes(pixels, preset)) for preset in presets]
        assert qualities == sorted(qualities) and len(set(qualities)) == len(qualities), (presets, qualities)


def test_jpeg_quality_is_none_without_jpeg_tables() -> None:
    png = io.BytesIO()
    Image.fromarray(photo("astronaut")).save(png, "PNG")
    first = jpeg_bytes(photo("astronaut")[:64, :64], 75)
    assert jpeg_quality(png.getvalue()) is None
    assert jpeg_quality(b"") is None
    assert jpeg_quality(first[:4] + b"not a JPEG") is None
    assert jpeg_quality(first) == 75
    assert assess(decoded(first)).jpeg_quality is None  # no file bytes, no tables
    assert assess(decoded(first), data=first).jpeg_quality == 75


# --------------------------------------------------------------------------------------------
# Blockiness, blur, gray stored as RGB


@pytest.mark.parametrize("name", ["astronaut", "coffee", "camera"])
def test_jpeg_blocks_saved_as_png_read_blocky(name: str) -> None:
    clean = photo(name)
    blocky = decoded(jpeg_bytes(clean, 20))
    assert blockiness(clean) < 1.15
    assert blockiness(blocky) > 1.3
    assert blockiness(blocky[3:, 5:]) > 1.3  # a crop: the grid no longer starts at pixel 0
    assert blockiness(decoded(jpeg_bytes(clean, 95))) < 1.15


def test_upscaled_images_do_not_read_blocky() -> None:
    """Nearest-neighbour 2x: every other difference is 0, a period of 2, not of 8."""
    upscaled = np.repeat(np.repeat(photo("coffee"), 2, axis=0), 2, axis=1)
    assert blockiness(upscaled) < 1.15


def crete_roffet(pixels: np.ndarray) -> float:
    """The blur metric on the whole image (the 9-pixel box blur with edge padding), as reference."""
    luma = pixels[:, :, 0].astype(float) if pixels.shape[2] == 1 else pixels @ np.array([0.299, 0.587, 0.114])
    results = []
    for axis in (0, 1):
        padded = np.pad(luma, [(4, 4) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        sums = np.cumsum(padded, axis=axis)
        sums = np.concatenate([np.zeros_like(np.take(sums, [0], axis=axis)), sums], axis=axis)
        box = (np.take(sums, range(9, sums.shape[axis]), axis=axis)
               - np.take(sums, range(sums.shape[axis] - 9), axis=axis)) / 9
        sharp, soft = np.abs(np.diff(luma, axis=axis)), np.abs(np.diff(box, axis=axis))
        results.append(1 - np.maximum(sharp - soft, 0).sum() / sharp.sum())
    return float(max(results))


@pytest.mark.parametrize("name", ["astronaut", "coffee", "camera"])
def test_blur_follows_gaussian_blur_and_the_whole_image_metric(name: str) -> None:
    sharp = photo(name)
    soft, softer = blurred(sharp, 1.2), blurred(sharp, 2.0)
    values = [blur(sharp), blur(soft), blur(softer)]
    assert values[0] + 0.1 < values[1] < values[2] - 0.05 and values[2] < 1, values
    for pixels, value in zip((sharp, soft, softer), values):
        assert abs(value - crete_roffet(pixels)) < 0.03, (value, crete_roffet(pixels))


def test_flat_images_read_fully_blurred_and_not_blocky() -> None:
    flat = np.full((64, 80, 3), 128, dtype=np.uint8)
    assert assess(flat) == Assessment(noise_sigma=0.0, coarse_noise=0.0, jpeg_quality=None, blockiness=1.0, blur=1.0, gray_rgb=True)


def test_gray_stored_as_rgb() -> None:
    gray = photo("camera")
    as_rgb = np.repeat(gray, 3, axis=2)
    assert assess(as_rgb).gray_rgb
    assert assess(decoded(jpeg_bytes(as_rgb, 75))).gray_rgb  # chroma of a gray JPEG: rounding only
    assert assess(as_rgb.astype(np.uint16) * 257 + 200).gray_rgb  # within one 8-bit level
    assert not assess(gray).gray_rgb  # one channel is gray, not gray stored as RGB
    assert not assess(photo("astronaut")).gray_rgb
    tinted = as_rgb.copy()
    tinted[:, :, 0] = np.minimum(tinted[:, :, 0].astype(int) + 2, 255)
    assert not assess(tinted).gray_rgb


# --------------------------------------------------------------------------------------------
# The assessment as a whole


def test_the_same_pixels_give_the_same_numbers() -> None:
    pixels = noisy(photo("chelsea"), 7)
    first = assess(pixels)
    assert assess(pixels.copy()) == first
    assert assess(np.ascontiguousarray(pixels[::-1, ::-1])[::-1, ::-1]) == first  # a non-contiguous view


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 1, 1), (8, 8, 3), (8, 8), (2, 40, 3), (40, 2, 1), (0, 5, 3)])
def test_tiny_images_get_neutral_values(shape: tuple[int, ...]) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    result = assess(pixels)
    assert result.noise_sigma == 0.0  # under 98 positions for a 7 x 7 patch
    assert 0.0 <= result.blur <= 1.0 and result.blockiness >= 1.0
    if max(shape[:2]) < 9:
        assert result.blockiness == 1.0  # not one 8-pixel block boundary with a pixel on each side
    if shape[0] * shape[1] <= 1:
        assert result.blur == 1.0  # no neighbours, nothing to tell sharp from blurred


def test_rows_and_measures() -> None:
    result = assess(noisy(photo("astronaut"), 10), data=jpeg_bytes(photo("astronaut"), 80))
    row = result.as_row()
    assert list(row) == [field.name for field in dataclasses.fields(Assessment)]
    assert row["jpeg_quality"] == 80 and row["gray_rgb"] is False
    assert row["noise_sigma"] == round(result.noise_sigma, 3) and isinstance(row["blur"], float)
    assert all(isinstance(row[name], MEASURES[name]) for name in row if row[name] is not None)
    assert set(row) < set(MEASURES)
    assert MEASURES["width"] is int and MEASURES["megapixels"] is float and MEASURES["is_jpeg"] is bool


def test_unsupported_pixels_are_refused() -> None:
    with pytest.raises(TypeError, match="uint8 or uint16"):
        assess(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="C in"):
        assess(np.zeros((8, 8, 4), dtype=np.uint8))

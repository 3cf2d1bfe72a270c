"""Degradations: determinism, statistics, shapes, the PIL protocol, and parameter validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from restoration.tasks.degradations import (
    add_gaussian_noise,
    add_poisson_noise,
    bicubic_downsample,
    bicubic_downsample_uint8,
    bicubic_upsample,
    bicubic_upsample_uint8,
    crop_to_multiple,
    gaussian_blur,
    gaussian_kernel,
    jpeg_compress,
    jpeg_compress_uint8,
    make_generator,
    motion_blur,
    motion_blur_kernel,
)
from restoration.tasks.masks import apply_mask, box_mask, dropout_mask, stroke_mask


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 HWC -> float32 CHW in [0, 1]."""
    return torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float() / 255.0


@pytest.fixture(scope="module")
def image(astronaut: np.ndarray) -> torch.Tensor:
    """A 3x256x256 crop of the astronaut photo (real texture, sky-free so few saturated pixels)."""
    return to_tensor(astronaut[100:356, 150:406])


def total_variation(x: torch.Tensor) -> float:
    return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())


# ---------------------------------------------------------------------------------------------
# Seeding
# ---------------------------------------------------------------------------------------------


def test_make_generator_is_deterministic_and_key_sensitive() -> None:
    def draw(*keys: int | str) -> torch.Tensor:
        return torch.rand(8, generator=make_generator(*keys))

    assert torch.equal(draw(0, "0001.png", 3), draw(0, "0001.png", 3))
    assert not torch.equal(draw(0, "0001.png", 3), draw(0, "0001.png", 4))
    assert not torch.equal(draw(0, "0001.png", 3), draw(0, "0002.png", 3))
    assert not torch.equal(draw(1), draw("1")), "int and str keys must not collide"
    assert not torch.equal(draw("ab", "c"), draw("a", "bc")), "key boundaries must matter"


def test_make_generator_seed_is_stable_across_processes() -> None:
    # A SHA-256 of the keys, not Python's per-process salted hash(): pin the value so a change
    # in the derivation (which would silently change every training set) fails here.
    assert make_generator(0, "a", 1).initial_seed() == 5868726250030934601


def test_make_generator_rejects_bad_keys() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        make_generator()
    with pytest.raises(TypeError, match="int or str"):
        make_generator(0, 1.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------------------------


def test_gaussian_noise_statistics_and_no_clipping(image: torch.Tensor) -> None:
    noisy = add_gaussian_noise(image, 25.0, make_generator(0, "astronaut", 0))
    residual = noisy - image
    assert noisy.shape == image.shape and noisy.dtype == torch.float32
    assert residual.std().item() == pytest.approx(25.0 / 255.0, rel=0.01)
    assert abs(residual.mean().item()) < 1e-3
    # Not clipped: the protocol feeds the unclipped noisy image to the model.
    assert noisy.min().item() < 0.0 and noisy.max().item() > 1.0


def test_gaussian_noise_is_reproducible(image: torch.Tensor) -> None:
    first = add_gaussian_noise(image, 15.0, make_generator(7, "x.png", 2))
    again = add_gaussian_noise(image, 15.0, make_generator(7, "x.png", 2))
    other = add_gaussian_noise(image, 15.0, make_generator(7, "x.png", 3))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_gaussian_noise_zero_sigma_is_identity(image: torch.Tensor) -> None:
    assert torch.equal(add_gaussian_noise(image, 0.0, make_generator(0)), image)


def test_poisson_noise_is_clipped_and_matches_shot_noise_statistics(image: torch.Tensor) -> None:
    noisy = add_poisson_noise(image, 30.0, make_generator(0, "poisson"))
    assert noisy.shape == image.shape
    assert noisy.min().item() >= 0.0 and noisy.max().item() <= 1.0
    assert not torch.equal(noisy, image)
    # On mid-gray (where the clip at 1 almost never bites) counts are Poisson(0.3 * 30 = 9):
    # mean 0.3, std sqrt(0.3 / 30) = 0.1.
    gray = torch.full((1, 128, 128), 0.3)
    counts = add_poisson_noise(gray, 30.0, make_generator(1, "poisson"))
    assert counts.mean().item() == pytest.approx(0.3, abs=0.005)
    assert counts.std().item() == pytest.approx(0.1, rel=0.03)
    assert torch.allclose(counts * 30, (counts * 30).round(), atol=1e-4), "values are photon counts / peak"


def test_batched_noise_shape(image: torch.Tensor) -> None:
    batch = image[None].repeat(2, 1, 1, 1)
    noisy = add_gaussian_noise(batch, 10.0, make_generator(0))
    assert noisy.shape == batch.shape
    assert not torch.equal(noisy[0], noisy[1]), "every image in a batch gets its own noise"


# ---------------------------------------------------------------------------------------------
# Blur
# ---------------------------------------------------------------------------------------------


def test_gaussian_blur_preserves_size_and_mean(image: torch.Tensor) -> None:
    blurred = gaussian_blur(image, 2.0)
    assert blurred.shape == image.shape
    assert blurred.mean().item() == pytest.approx(image.mean().item(), abs=2e-3)
    assert total_variation(blurred) < 0.6 * total_variation(image)
    assert torch.equal(gaussian_blur(image, 0.0), image)


def test_gaussian_blur_kernel_size_changes_result(image: torch.Tensor) -> None:
    default = gaussian_blur(image, 2.0)  # 13 taps
    truncated = gaussian_blur(image, 2.0, kernel_size=3)
    assert not torch.allclose(default, truncated)
    kernel = gaussian_kernel(2.0)
    assert kernel.shape == (13, 13) and kernel.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_gaussian_blur_of_constant_is_constant() -> None:
    flat = torch.full((3, 20, 30), 0.4)
    assert torch.allclose(gaussian_blur(flat, 3.0), flat, atol=1e-6)


@pytest.mark.parametrize(("angle", "axis"), [(0.0, "row"), (90.0, "column")])
def test_motion_blur_kernel_direction(angle: float, axis: str) -> None:
    kernel = motion_blur_kernel(9, angle)
    assert kernel.shape == (9, 9)
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
    center_line = kernel[4, :] if axis == "row" else kernel[:, 4]
    assert center_line.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert (center_line > 0).sum().item() == 9


def test_motion_blur_kernel_even_length_is_centered() -> None:
    kernel = motion_blur_kernel(6, 30.0)
    assert kernel.shape == (7, 7)
    assert torch.allclose(kernel, kernel.flip(0, 1))
    assert torch.equal(motion_blur_kernel(1, 45.0), torch.ones(1, 1))


def test_motion_blur_preserves_size_and_mean(image: torch.Tensor) -> None:
    blurred = motion_blur(image, 15, 30.0)
    assert blurred.shape == image.shape
    assert blurred.mean().item() == pytest.approx(image.mean().item(), abs=2e-3)
    assert total_variation(blurred) < 0.8 * total_variation(image)


def test_blur_on_image_smaller_than_kernel() -> None:
    tiny = torch.rand(1, 1, 4, 4, generator=make_generator(3))
    assert gaussian_blur(tiny, 3.0).shape == tiny.shape  # 19 taps on 4 pixels: replicate padding


# ---------------------------------------------------------------------------------------------
# Resampling
# ---------------------------------------------------------------------------------------------


def test_crop_to_multiple() -> None:
    x = torch.zeros(2, 3, 37, 50)
    assert crop_to_multiple(x, 4).shape == (2, 3, 36, 48)
    assert crop_to_multiple(x[0], 3).shape == (3, 36, 48)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_tensor_matches_pil_protocol(astronaut: np.ndarray, scale: int) -> None:
    pixels = astronaut[:301, :299]  # not a multiple of any scale: exercises the crop
    lr_pil = bicubic_downsample_uint8(pixels, scale)
    lr_tensor = bicubic_downsample(to_tensor(pixels), scale)
    assert lr_pil.shape == (301 // scale, 299 // scale, 3)
    assert lr_tensor.shape == (3, 301 // scale, 299 // scale)
    difference = (lr_tensor - to_tensor(lr_pil)).abs()
    # Same kernel, different arithmetic: within half a gray level on average.
    assert difference.mean().item() < 0.5 / 255

    up_pil = bicubic_upsample_uint8(lr_pil, scale)
    up_tensor = bicubic_upsample(to_tensor(lr_pil), scale)
    assert up_pil.shape == (301 // scale * scale, 299 // scale * scale, 3)
    assert up_tensor.shape == (3, 301 // scale * scale, 299 // scale * scale)
    assert (up_tensor - to_tensor(up_pil)).abs().mean().item() < 0.5 / 255


def test_bicubic_uint8_gray(astronaut: np.ndarray) -> None:
    gray = astronaut[..., 1]
    assert bicubic_downsample_uint8(gray, 4).shape == (128, 128)
    assert bicubic_downsample_uint8(gray[..., None], 2).shape == (256, 256, 1)
    assert bicubic_upsample_uint8(gray[:10, :10], 3).shape == (30, 30)


# ---------------------------------------------------------------------------------------------
# JPEG
# ---------------------------------------------------------------------------------------------


def test_jpeg_changes_color_image_and_quality_orders_error(image: torch.Tensor) -> None:
    low = jpeg_compress(image, 10)
    high = jpeg_compress(image, 90)
    assert low.shape == image.shape and low.dtype == image.dtype
    assert torch.equal(low, jpeg_compress(image, 10)), "JPEG is deterministic"
    error_low = (low - image).pow(2).mean().item()
    error_high = (high - image).pow(2).mean().item()
    assert 0 < error_high < error_low
    # Output is on the 8-bit grid.
    assert torch.allclose(low * 255, (low * 255).round(), atol=1e-4)


def test_jpeg_gray_stays_one_channel(classic5_dir) -> None:
    from PIL import Image

    pixels = np.asarray(Image.open(classic5_dir / "barbara.bmp"))
    assert pixels.ndim == 2
    decoded = jpeg_compress_uint8(pixels, 10)
    assert decoded.shape == pixels.shape and decoded.dtype == np.uint8
    gray = torch.tensor(pixels).float()[None] / 255
    out = jpeg_compress(gray, 10)
    assert out.shape == (1, 512, 512)
    assert torch.equal(out, torch.from_numpy(decoded).float()[None] / 255)


def test_jpeg_batched(image: torch.Tensor) -> None:
    batch = torch.stack([image, image.flip(-1)])
    out = jpeg_compress(batch, 30)
    assert out.shape == batch.shape
    assert torch.equal(out[1], jpeg_compress(image.flip(-1), 30))


# ---------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.6])
def test_dropout_mask_coverage_is_exact(ratio: float) -> None:
    mask = dropout_mask(64, 48, ratio, make_generator(0, "dropout"))
    assert mask.shape == (1, 64, 48) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert mask.sum().item() == round(ratio * 64 * 48)


def test_box_mask_coverage_bounds_and_determinism() -> None:
    masks = [box_mask(120, 80, make_generator(0, index)) for index in range(20)]
    for mask in masks:
        assert mask.shape == (1, 120, 80)
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        # At most 4 boxes of at most 0.3 x 0.3 of the image.
        assert 0 < mask.mean().item() <= 4 * 0.3 * 0.3 + 1e-6
    assert torch.equal(masks[0], box_mask(120, 80, make_generator(0, 0)))
    assert not all(torch.equal(masks[0], other) for other in masks[1:])


def test_stroke_mask_covers_part_of_the_image() -> None:
    coverages = []
    for index in range(10):
        mask = stroke_mask(128, 96, make_generator(1, index))
        assert mask.shape == (1, 128, 96)
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        coverages.append(mask.mean().item())
    assert all(0 < coverage < 0.6 for coverage in coverages)
    assert torch.equal(stroke_mask(128, 96, make_generator(1, 0)), stroke_mask(128, 96, make_generator(1, 0)))


def test_apply_mask_fills_only_the_holes(image: torch.Tensor) -> None:
    mask = dropout_mask(256, 256, 0.3, make_generator(2))
    filled = apply_mask(image, mask, fill=0.5)
    holes = mask.bool().expand_as(image)
    assert torch.all(filled[holes] == 0.5)
    assert torch.equal(filled[~holes], image[~holes])
    batched = apply_mask(image[None].repeat(2, 1, 1, 1), mask[None].repeat(2, 1, 1, 1))
    assert batched.shape == (2, 3, 256, 256)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: add_gaussian_noise(x, -1.0, make_generator(0)), r"sigma must be >= 0.*-1\.0"),
        (lambda x: add_poisson_noise(x, 0.0, make_generator(0)), r"peak must be > 0.*0\.0"),
        (lambda x: gaussian_blur(x, 1.0, kernel_size=4), r"positive odd int.*4"),
        (lambda x: gaussian_blur(x, -0.5), r"blur sigma must be >= 0.*-0\.5"),
        (lambda x: motion_blur(x, 0, 10.0), r"length must be an int >= 1.*0"),
        (lambda x: jpeg_compress(x, 0), r"quality must be an int in 1\.\.100.*0"),
        (lambda x: jpeg_compress(x, 101), r"1\.\.100.*101"),
        (lambda x: jpeg_compress(torch.cat([x, x[:1]]), 50), r"1 or 3 channels, got 4"),
        (lambda x: bicubic_downsample(x, 5), r"scale must be one of \(2, 3, 4\).*5"),
        (lambda x: bicubic_upsample(x, 1), r"scale must be one of \(2, 3, 4\).*1"),
        (lambda x: dropout_mask(8, 8, 1.0, make_generator(0)), r"ratio must be in \[0, 1\).*1\.0"),
        (lambda x: dropout_mask(8, 8, -0.1, make_generator(0)), r"\[0, 1\).*-0\.1"),
        (lambda x: box_mask(8, 8, make_generator(0), max_fraction=1.5), r"max_fraction.*1\.5"),
        (lambda x: stroke_mask(8, 8, make_generator(0), num_strokes=(3, 1)), r"num_strokes.*\(3, 1\)"),
        (lambda x: crop_to_multiple(x, 0), r"multiple must be an int >= 1.*0"),
        (lambda x: apply_mask(x, torch.zeros(1, 4, 4)), r"mask size"),
    ],
)
def test_bad_parameters_raise_value_error(image: torch.Tensor, call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(image[:, :16, :16])


def test_bad_inputs_raise_type_error() -> None:
    with pytest.raises(TypeError, match="float tensor"):
        gaussian_blur(torch.zeros(3, 8, 8, dtype=torch.uint8), 1.0)
    with pytest.raises(TypeError, match="uint8"):
        jpeg_compress_uint8(np.zeros((8, 8), dtype=np.float32), 50)

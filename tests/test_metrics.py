"""Metrics against scikit-image and against the published baseline numbers; losses.

The SSIM reference settings throughout are the Wang et al. standard as scikit-image spells it:
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False`` with the images' data range.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from restoration.finetune.losses import (
    LOSS_NAMES,
    build_loss,
    charbonnier_loss,
    l1_loss,
    mse_loss,
)
from restoration.quality.metrics import psnr, psnr_from_mse, quantize, rgb_to_y, ssim
from restoration.tasks.degradations import (
    add_gaussian_noise,
    bicubic_downsample,
    bicubic_downsample_uint8,
    bicubic_upsample,
    bicubic_upsample_uint8,
    crop_to_multiple,
    jpeg_compress_uint8,
    make_generator,
)

SSIM_REFERENCE = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 HW or HWC -> float32 CHW in [0, 1]."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float() / 255.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float CHW in [0, 1] -> uint8 HWC (clipped, rounded)."""
    return (quantize(x) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def numpy_y(pixels: np.ndarray) -> np.ndarray:
    """Reference Y (MATLAB rgb2ycbcr, not rounded) of uint8 HWC RGB, float64 on the 0-255 scale."""
    rgb = pixels.astype(np.float64) / 255.0
    return 16.0 + rgb @ np.array([65.481, 128.553, 24.966])


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def noisy_astronaut(astronaut: np.ndarray) -> np.ndarray:
    """astronaut + sigma-15 Gaussian noise, clipped and rounded (uint8 HWC)."""
    noisy = add_gaussian_noise(to_tensor(astronaut), 15.0, make_generator(0, "astronaut"))
    return to_uint8(noisy)


# ---------------------------------------------------------------------------------------------
# Against scikit-image
# ---------------------------------------------------------------------------------------------


def test_psnr_matches_skimage_uint8_and_tensor(astronaut: np.ndarray, noisy_astronaut: np.ndarray) -> None:
    reference = peak_signal_noise_ratio(astronaut, noisy_astronaut, data_range=255)
    assert psnr(noisy_astronaut, astronaut) == pytest.approx(reference, abs=1e-6)
    assert psnr(to_tensor(noisy_astronaut), to_tensor(astronaut)) == pytest.approx(reference, abs=1e-4)
    # The same image on the 0-255 scale with data_range=255.
    assert psnr(to_tensor(noisy_astronaut) * 255, to_tensor(astronaut) * 255, data_range=255.0) == pytest.approx(
        reference, abs=1e-4
    )


def test_psnr_crop_and_y_match_numpy_reference(astronaut: np.ndarray, noisy_astronaut: np.ndarray) -> None:
    crop = 4
    reference_crop = peak_signal_noise_ratio(
        astronaut[crop:-crop, crop:-crop], noisy_astronaut[crop:-crop, crop:-crop], data_range=255
    )
    assert psnr(noisy_astronaut, astronaut, crop_border=crop) == pytest.approx(reference_crop, abs=1e-6)
    y_gt, y_noisy = numpy_y(astronaut)[crop:-crop, crop:-crop], numpy_y(noisy_astronaut)[crop:-crop, crop:-crop]
    reference_y = peak_signal_noise_ratio(y_gt, y_noisy, data_range=255)
    value = psnr(noisy_astronaut, astronaut, crop_border=crop, y_channel=True)
    assert value == pytest.approx(reference_y, abs=1e-6)


def test_psnr_is_batched_per_image(astronaut: np.ndarray, noisy_astronaut: np.ndarray) -> None:
    gt = to_tensor(astronaut)
    restored = torch.stack([to_tensor(noisy_astronaut), gt])
    values = psnr(restored, torch.stack([gt, gt]))
    assert isinstance(values, torch.Tensor) and values.shape == (2,)
    assert values[0].item() == pytest.approx(psnr(noisy_astronaut, astronaut), abs=1e-4)
    assert math.isinf(values[1].item()), "identical images have infinite PSNR"


def test_ssim_matches_skimage_color(astronaut: np.ndarray, noisy_astronaut: np.ndarray) -> None:
    # A 256x320 crop (face and suit) keeps the float64 reference fast.
    gt, lq = astronaut[:256, 96:416], noisy_astronaut[:256, 96:416]
    reference = structural_similarity(gt, lq, data_range=255, channel_axis=-1, **SSIM_REFERENCE)
    assert ssim(lq, gt) == pytest.approx(reference, abs=1e-6)
    # float32 tensors (the training-validation path) agree too.
    assert ssim(to_tensor(lq), to_tensor(gt)) == pytest.approx(reference, abs=1e-5)


def test_ssim_matches_skimage_color_with_crop_and_y(cbsd68_dir: Path) -> None:
    gt = load_rgb(sorted(cbsd68_dir.glob("*.png"))[0])
    lq = jpeg_compress_uint8(gt, 20)  # a real artifact pattern, not white noise
    crop = 4
    gt_c, lq_c = gt[crop:-crop, crop:-crop], lq[crop:-crop, crop:-crop]
    reference = structural_similarity(gt_c, lq_c, data_range=255, channel_axis=-1, **SSIM_REFERENCE)
    assert ssim(lq, gt, crop_border=crop) == pytest.approx(reference, abs=1e-3)
    reference_y = structural_similarity(numpy_y(gt_c), numpy_y(lq_c), data_range=255, **SSIM_REFERENCE)
    assert ssim(lq, gt, crop_border=crop, y_channel=True) == pytest.approx(reference_y, abs=1e-3)
    tensor_value = ssim(to_tensor(lq), to_tensor(gt), crop_border=crop, y_channel=True)
    assert tensor_value == pytest.approx(reference_y, abs=1e-3)


def test_ssim_matches_skimage_gray(classic5_dir: Path) -> None:
    with Image.open(classic5_dir / "boats.bmp") as image:
        gt = np.asarray(image)
    lq = jpeg_compress_uint8(gt, 10)
    reference = structural_similarity(gt, lq, data_range=255, **SSIM_REFERENCE)
    value = ssim(lq, gt)
    assert value == pytest.approx(reference, abs=1e-3)
    assert ssim(to_tensor(lq)[None], to_tensor(gt)[None])[0].item() == pytest.approx(reference, abs=1e-3)
    assert 0.5 < value < 0.95
    assert ssim(gt, gt) == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Published baseline numbers
# ---------------------------------------------------------------------------------------------


def test_set5_bicubic_x4_matches_published(set5_dir: Path) -> None:
    """Bicubic x4 on Set5, Y channel, 4-pixel crop: published 28.42 dB."""
    values, tensor_values = [], []
    for path in sorted(set5_dir.glob("*.png")):
        hr = load_rgb(path)
        hr = hr[: hr.shape[0] - hr.shape[0] % 4, : hr.shape[1] - hr.shape[1] % 4]
        upsampled = bicubic_upsample_uint8(bicubic_downsample_uint8(hr, 4), 4)
        values.append(psnr(upsampled, hr, crop_border=4, y_channel=True))
        # The tensor path (training) should land close to the protocol.
        hr_tensor = crop_to_multiple(to_tensor(hr), 4)
        restored = quantize(bicubic_upsample(quantize(bicubic_downsample(hr_tensor, 4)), 4))
        tensor_values.append(psnr(restored, hr_tensor, crop_border=4, y_channel=True))
    mean, tensor_mean = float(np.mean(values)), float(np.mean(tensor_values))
    print(f"Set5 x4 bicubic PSNR-Y: PIL {mean:.3f} dB, tensor path {tensor_mean:.3f} dB (published 28.42)")
    assert len(values) == 5
    assert mean == pytest.approx(28.42, abs=0.15)
    assert tensor_mean == pytest.approx(mean, abs=0.1)


def test_cbsd68_sigma25_noisy_input_psnr(cbsd68_dir: Path) -> None:
    """PSNR of the sigma-25 noisy input on CBSD68.

    Unclipped, the expected value is exactly ``20 log10(255 / 25) = 20.17`` dB. The protocol
    measures the clipped, 8-bit-rounded image, and clipping removes the part of the noise that
    falls outside [0, 1] -- CBSD68 has many near-white and near-black pixels -- so that number
    is higher: 20.53 dB over all 68 images. For speed this checks every 4th image (17).
    """
    unclipped, protocol = [], []
    for path in sorted(cbsd68_dir.glob("*.png"))[::4]:
        gt = to_tensor(load_rgb(path))
        noisy = add_gaussian_noise(gt, 25.0, make_generator(0, path.name))
        unclipped.append(psnr(noisy, gt))
        protocol.append(psnr(quantize(noisy), gt))
    unclipped_mean, protocol_mean = float(np.mean(unclipped)), float(np.mean(protocol))
    print(f"CBSD68 (17 images) sigma 25 noisy PSNR: unclipped {unclipped_mean:.3f} dB, protocol {protocol_mean:.3f} dB")
    assert len(protocol) == 17
    assert unclipped_mean == pytest.approx(20 * math.log10(255 / 25), abs=0.03)
    assert 20.3 < protocol_mean < 20.8


def test_classic5_jpeg_matches_published(classic5_dir: Path) -> None:
    """JPEG (PIL, gray "L") on Classic5: published 27.82 dB at quality 10, 30.12 dB at 20."""
    for quality, published in ((10, 27.82), (20, 30.12)):
        values = []
        for path in sorted(classic5_dir.glob("*.bmp")):
            with Image.open(path) as image:
                gt = np.asarray(image)
            values.append(psnr(jpeg_compress_uint8(gt, quality), gt))
        mean = float(np.mean(values))
        print(f"Classic5 JPEG q{quality}: {mean:.3f} dB (published {published})")
        assert mean == pytest.approx(published, abs=0.05)


# ---------------------------------------------------------------------------------------------
# Helpers and validation
# ---------------------------------------------------------------------------------------------


def test_rgb_to_y_studio_range() -> None:
    black_white = torch.stack([torch.zeros(3, 2, 2), torch.ones(3, 2, 2)])
    y = rgb_to_y(black_white)
    assert y.shape == (2, 1, 2, 2)
    assert torch.allclose(y[0], torch.full((1, 2, 2), 16 / 255))
    assert torch.allclose(y[1], torch.full((1, 2, 2), 235 / 255))


def test_quantize_clips_and_rounds() -> None:
    x = torch.tensor([-0.2, 0.0, 0.3, 0.50196, 1.0, 1.7])
    q = quantize(x)
    assert q.min().item() == 0.0 and q.max().item() == 1.0
    assert torch.allclose(q * 255, (q * 255).round(), atol=1e-5)
    assert q[2].item() == pytest.approx(round(0.3 * 255) / 255)


def test_psnr_from_mse() -> None:
    assert psnr_from_mse(0.01) == pytest.approx(20.0)
    assert psnr_from_mse(25.0**2, data_range=255.0) == pytest.approx(20 * math.log10(255 / 25))
    assert math.isinf(psnr_from_mse(0.0))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9)), ValueError, r"shapes differ"),
        (lambda: psnr(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), y_channel=True), ValueError, r"needs RGB"),
        (lambda: psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), crop_border=4), ValueError, r"crop_border 4"),
        (lambda: psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), crop_border=-1), ValueError, r"crop_border"),
        (lambda: psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), data_range=0.0), ValueError, r"data_range"),
        (lambda: ssim(torch.zeros(3, 10, 20), torch.zeros(3, 10, 20)), ValueError, r"at least 11x11"),
        (lambda: psnr(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32)), TypeError, r"uint8"),
        (lambda: psnr(np.zeros((8, 8), np.uint8), torch.zeros(1, 8, 8)), TypeError, r"same kind"),
        (lambda: psnr(np.zeros((8, 8), np.uint8), np.ones((8, 8), np.uint8), data_range=2.0), ValueError, "implied"),
    ],
)
def test_metric_errors(call, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()


# ---------------------------------------------------------------------------------------------
# Losses (same tensor conventions as the metrics)
# ---------------------------------------------------------------------------------------------


def test_losses_values_and_builder() -> None:
    restored = torch.tensor([[0.0, 0.5], [1.0, 0.25]])
    gt = torch.tensor([[0.0, 0.0], [0.5, 0.25]])
    assert mse_loss(restored, gt).item() == pytest.approx((0.25 + 0.25) / 4)
    assert l1_loss(restored, gt).item() == pytest.approx((0.5 + 0.5) / 4)
    # Charbonnier: ~|d| for |d| >> eps, exactly eps where d == 0.
    expected = (1e-3 * 2 + 2 * math.sqrt(0.25 + 1e-6)) / 4
    assert charbonnier_loss(restored, gt, eps=1e-3).item() == pytest.approx(expected)
    for name, function in zip(LOSS_NAMES, (mse_loss, l1_loss, charbonnier_loss)):
        module = build_loss(name)
        assert isinstance(module, torch.nn.Module)
        assert module(restored, gt).item() == pytest.approx(function(restored, gt).item())


def test_charbonnier_gradient_is_finite_at_zero() -> None:
    restored = torch.zeros(4, requires_grad=True)
    charbonnier_loss(restored, torch.zeros(4)).backward()
    assert restored.grad is not None and torch.all(torch.isfinite(restored.grad))
    assert torch.all(restored.grad == 0)


def test_loss_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown loss 'ssim'.*'mse', 'l1', 'charbonnier'"):
        build_loss("ssim")
    with pytest.raises(ValueError, match=r"shapes differ"):
        mse_loss(torch.zeros(2, 3, 4, 4), torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match=r"eps must be > 0"):
        build_loss("charbonnier", charbonnier_eps=0.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metrics_on_cuda_match_cpu(astronaut: np.ndarray, noisy_astronaut: np.ndarray) -> None:
    gt, restored = to_tensor(astronaut)[None], to_tensor(noisy_astronaut)[None]
    for metric, tolerance in ((psnr, 1e-3), (ssim, 1e-4)):
        on_cuda = metric(restored.cuda(), gt.cuda(), crop_border=4, y_channel=True)
        assert on_cuda.device.type == "cuda"
        on_cpu = metric(restored, gt, crop_border=4, y_channel=True)[0].item()
        assert on_cuda.cpu().item() == pytest.approx(on_cpu, abs=tolerance)

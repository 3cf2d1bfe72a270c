"""Predictor strength: 0 is the input exactly (without running the model), 1 the model as
trained, values between blend the model's change linearly; bad strengths are named."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from restoration.models.fused import ModelConfig, build_model
from restoration.models.predictor import Predictor, PredictorConfig

SMALL = (8, 8, 16, 16, 24, 24)


def _model(task="denoise", scale=1):
    model = build_model(ModelConfig(task=task, scale=scale, widths=SMALL))
    torch.manual_seed(0)
    torch.nn.init.normal_(model.head.weight, std=0.02)  # not the identity: the model changes its input
    return model.eval()


def _forward_calls(predictor: Predictor) -> list[int]:
    calls: list[int] = []
    predictor.network.register_forward_pre_hook(lambda module, inputs: calls.append(1))
    return calls


def _photo(astronaut, height=48, width=80) -> torch.Tensor:
    return torch.from_numpy(astronaut[:height, :width].copy()).permute(2, 0, 1).float() / 255


def test_strength_zero_returns_the_same_pixels_without_running_the_model(astronaut):
    predictor = Predictor(_model(), PredictorConfig(strength=0.0), device="cpu")
    calls = _forward_calls(predictor)
    # Every 8-bit level, in color and in gray, and 16-bit pixels.
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    color = np.stack([levels, levels.T, 255 - levels], axis=-1)
    gray = levels[..., None]
    photo = astronaut[:40, :56]
    deep = np.random.default_rng(0).integers(0, 65536, size=(24, 32, 3), dtype=np.uint16)
    for pixels in (color, gray, photo, deep):
        out = predictor.restore_pixels(pixels)
        assert out.dtype == pixels.dtype and np.array_equal(out, pixels)
    # Tiled sizes and batches too.
    big = torch.rand(3, 700, 600)
    assert torch.equal(Predictor(_model(), PredictorConfig(tile=256, strength=0), device="cpu").restore(big), big)
    assert calls == []


def test_strength_zero_inpainting_keeps_the_holes():
    predictor = Predictor(_model("inpaint"), PredictorConfig(strength=0), device="cpu")
    calls = _forward_calls(predictor)
    image = torch.rand(3, 32, 32)
    mask = (torch.rand(1, 32, 32) < 0.5).float()
    assert torch.equal(predictor.restore(image, mask), image)
    with pytest.raises(ValueError, match="needs a mask"):  # inputs are still checked
        predictor.restore(image)
    assert calls == []


def test_strength_zero_super_resolution_is_the_models_bicubic():
    predictor = Predictor(_model("sr", 2), PredictorConfig(strength=0), device="cpu")
    image = torch.rand(3, 24, 40)
    expected = F.interpolate(image[None], scale_factor=2, mode="bicubic", align_corners=False)[0]
    assert torch.equal(predictor.restore(image), expected)
    # What the model adds to at strength 1: an untrained (zero-residual) SR model is this bicubic.
    untrained = build_model(ModelConfig(task="sr", scale=2, widths=SMALL))
    plain = Predictor(untrained, PredictorConfig(precision="fp32"), device="cpu").restore(image)
    assert torch.allclose(plain, expected, atol=1e-6)


@pytest.mark.parametrize("task,scale,tile", [("denoise", 1, 0), ("sr", 2, 0), ("denoise", 1, 64)])
def test_strength_blends_the_models_change(astronaut, task, scale, tile):
    model = _model(task, scale)
    lq = _photo(astronaut, 96, 120)
    full = Predictor(model, PredictorConfig(tile=tile, overlap=16), device="cpu").restore(lq)
    assert torch.equal(Predictor(model, PredictorConfig(tile=tile, overlap=16, strength=1.0), device="cpu").restore(lq), full)
    base = lq if scale == 1 else F.interpolate(lq[None], scale_factor=scale, mode="bicubic", align_corners=False)[0]
    assert (full - base).abs().mean() > 1e-3  # the model changes the image: the blend is not trivial
    half = Predictor(model, PredictorConfig(tile=tile, overlap=16, strength=0.5), device="cpu").restore(lq)
    assert torch.allclose(half, base + 0.5 * (full - base), atol=1e-6)
    # Per pixel, before rounding, between the input and the model's output.
    low, high = torch.minimum(base, full), torch.maximum(base, full)
    assert bool(((half >= low - 1e-6) & (half <= high + 1e-6)).all())
    quarter = Predictor(model, PredictorConfig(tile=tile, overlap=16, strength=0.25), device="cpu").restore(lq)
    assert (quarter - base).abs().mean() < (half - base).abs().mean() < (full - base).abs().mean()


def test_strength_on_gray_and_batches(astronaut):
    model = _model()
    gray = _photo(astronaut).mean(dim=0, keepdim=True)
    full = Predictor(model, device="cpu").restore(gray)
    half = Predictor(model, PredictorConfig(strength=0.5), device="cpu").restore_batch(torch.stack([gray, gray]))
    assert half.shape == (2, 1, 48, 80)
    for out in half:
        assert torch.allclose(out, gray + 0.5 * (full - gray), atol=1e-6)


@pytest.mark.parametrize("strength", [-0.1, 1.5, math.nan, "0.5", True, None])
def test_bad_strength_is_named(strength):
    with pytest.raises(ValueError, match=r"strength must be in \[0, 1\]"):
        Predictor(_model(), PredictorConfig(strength=strength), device="cpu")

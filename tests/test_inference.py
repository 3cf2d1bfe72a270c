"""Predictor: tiles blend without seams, batching, gray in gray out, bad inputs."""

import numpy as np
import pytest
import torch

from restoration.inference import Predictor, TilingPlan
from restoration.model import ModelConfig, build_model

SMALL = (8, 8, 16, 16, 24, 24)


def _model(task="denoise", scale=1):
    model = build_model(ModelConfig(task=task, scale=scale, widths=SMALL))
    torch.manual_seed(0)
    torch.nn.init.normal_(model.head.weight, std=0.02)  # not the identity: outputs depend on context
    return model.eval()


def _photo(astronaut, size=(200, 264)) -> torch.Tensor:
    return torch.from_numpy(astronaut[: size[0], : size[1]].copy()).permute(2, 0, 1).float() / 255


def test_tiles_cover_the_image_and_overlap():
    boxes = TilingPlan(200, 264, 96, 16).boxes()
    covered = np.zeros((200, 264), bool)
    for top, left, h, w in boxes:
        assert h == w == 96
        covered[top : top + h, left : left + w] = True
    assert covered.all()


@pytest.mark.parametrize("task,scale", [("denoise", 1), ("sr", 2)])
def test_tiled_output_matches_whole_image_without_seams(astronaut, task, scale):
    model = _model(task, scale)
    lq = _photo(astronaut)
    whole = Predictor(model, device="cpu", tile=0).restore(lq)
    tiled = Predictor(model, device="cpu", tile=96, overlap=32).restore(lq)
    assert tiled.shape == whole.shape == (3, 200 * scale, 264 * scale)
    diff = (tiled - whole).abs()
    # Tiles see less context than the whole image, so outputs differ slightly; feathering keeps it
    # small everywhere, and in particular no larger along tile borders than inside tiles.
    # At the image border the whole-image pass sees padding where a tile sees none; inside, tiles
    # (including every tile border) agree with the whole-image output closely.
    border = 8 * scale
    assert diff.mean() < 2e-3, diff.mean()
    assert diff[:, border:-border, border:-border].max() < 0.01, diff.max()
    residual = (whole - torch.nn.functional.interpolate(lq[None], scale_factor=scale, mode="bicubic")[0]).abs()
    assert residual.mean() > 10 * diff.mean()  # the comparison is not trivially between identities
    # A seam would show as a jump between neighbouring columns of the tiled output that the whole
    # image output does not have.
    jump_tiled = (tiled[..., 1:] - tiled[..., :-1]).abs().mean(dim=(0, 1))
    jump_whole = (whole[..., 1:] - whole[..., :-1]).abs().mean(dim=(0, 1))
    assert (jump_tiled - jump_whole)[border:-border].abs().max() < 0.01


def test_batched_equals_one_by_one(astronaut):
    model = _model()
    images = [_photo(astronaut, (64, 64)), _photo(astronaut, (64, 64)).flip(-1), _photo(astronaut, (48, 80))]
    predictor = Predictor(model, device="cpu", batch_size=4, tile=0)
    batched = predictor.restore_many(images)
    single = [Predictor(model, device="cpu", batch_size=1, tile=0).restore(x) for x in images]
    for a, b in zip(batched, single):
        assert torch.allclose(a, b, atol=1e-5)


def test_gray_stays_gray(astronaut):
    predictor = Predictor(_model(), device="cpu")
    gray = (astronaut[:64, :64].mean(axis=-1, keepdims=True)).astype(np.uint8)
    out = predictor.restore_pixels(gray)
    assert out.shape == (64, 64, 1) and out.dtype == np.uint8
    out16 = predictor.restore_pixels(gray.astype(np.uint16) * 257)
    assert out16.dtype == np.uint16


def test_inpainting_needs_matching_mask():
    predictor = Predictor(_model("inpaint"), device="cpu")
    image = torch.rand(3, 32, 32)
    with pytest.raises(ValueError, match="needs a mask"):
        predictor.restore(image)
    with pytest.raises(ValueError, match="mask must have shape"):
        predictor.restore(image, torch.zeros(1, 16, 16))
    out = predictor.restore(image, torch.zeros(1, 32, 32))
    assert torch.allclose(out, image)


@pytest.mark.parametrize("task,scale", [("denoise", 1), ("sr", 2), ("inpaint", 1)])
def test_self_ensemble_averages_the_transformed_passes(astronaut, task, scale):
    model = _model(task, scale)
    lq = _photo(astronaut, (48, 80))  # not square: transposed passes must come back the right way
    mask = (torch.rand(1, 48, 80, generator=torch.Generator().manual_seed(0)) < 0.3).float() if task == "inpaint" else None
    plain = Predictor(model, device="cpu", tile=0).restore(lq, mask)
    ensembled = Predictor(model, device="cpu", tile=0, ensemble=8).restore(lq, mask)
    assert ensembled.shape == plain.shape == (3, 48 * scale, 80 * scale)
    # By hand: the mean of the model on the 8 flips/transposes of the input, each undone.
    expected = torch.zeros_like(plain)
    with torch.no_grad():
        for k in range(8):
            x, m = lq[None], None if mask is None else mask[None]
            for dims, on in (((-1,), k & 1), ((-2,), k & 2)):
                if on:
                    x, m = x.flip(dims), None if m is None else m.flip(dims)
            if k & 4:
                x, m = x.transpose(-1, -2), None if m is None else m.transpose(-1, -2)
            y = model(x, m)
            if k & 4:
                y = y.transpose(-1, -2)
            for dims, on in (((-2,), k & 2), ((-1,), k & 1)):
                if on:
                    y = y.flip(dims)
            expected += y[0] / 8
    assert torch.allclose(ensembled, expected, atol=1e-5)
    assert (ensembled - plain).abs().mean() > 1e-4  # the members differ: an ensemble, not one pass
    with pytest.raises(ValueError, match="ensemble must be one of"):
        Predictor(model, ensemble=3)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="tile must be 0"):
        Predictor(_model(), tile=50, overlap=32)
    with pytest.raises(ValueError, match=r"expected an image tensor \(C, H, W\)"):
        Predictor(_model(), device="cpu").restore(torch.rand(1, 3, 8, 8))

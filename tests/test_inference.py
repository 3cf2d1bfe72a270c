"""Predictor: tiles blend without seams, batching, gray in gray out, bad inputs."""

import numpy as np
import pytest
import torch

from restoration.models.fused import ModelConfig, build_model
from restoration.models.predictor import Predictor, PredictorConfig, TilingPlan

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
    whole = Predictor(model, PredictorConfig(tile=0), device="cpu").restore(lq)
    tiled = Predictor(model, PredictorConfig(tile=96, overlap=32), device="cpu").restore(lq)
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
    # fp32: bf16 kernels may round differently for different batch sizes.
    predictor = Predictor(model, PredictorConfig(batch_size=4, tile=0, precision="fp32"), device="cpu")
    batched = predictor.restore_many(images)
    single = [Predictor(model, PredictorConfig(batch_size=1, tile=0, precision="fp32"), device="cpu").restore(x) for x in images]
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
    # fp32, to compare with the fp32 model by hand.
    plain = Predictor(model, PredictorConfig(tile=0, precision="fp32"), device="cpu").restore(lq, mask)
    ensembled = Predictor(model, PredictorConfig(tile=0, ensemble=8, precision="fp32"), device="cpu").restore(lq, mask)
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
        Predictor(model, PredictorConfig(ensemble=3))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="tile must be 0"):
        Predictor(_model(), PredictorConfig(tile=50, overlap=32))
    with pytest.raises(ValueError, match=r"expected an image tensor \(C, H, W\)"):
        Predictor(_model(), device="cpu").restore(torch.rand(1, 3, 8, 8))


def test_precision_settings():
    from restoration.models.predictor import cpu_has_fast_bf16

    assert Predictor(_model(), PredictorConfig(precision="fp32"), device="cpu").amp is False
    assert Predictor(_model(), PredictorConfig(precision="bf16"), device="cpu").precision == "bf16"
    auto = Predictor(_model(), device="cpu")
    assert auto.precision == ("bf16" if cpu_has_fast_bf16() else "fp32") and auto.amp == (auto.precision == "bf16")
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16"):
        Predictor(_model(), PredictorConfig(precision="fp16"), device="cpu")
    with pytest.raises(TypeError, match="amp"):
        PredictorConfig(amp=False)  # one spelling: precision="fp32"


def test_fast_bf16_detection_matches_the_cpu_flags():
    from pathlib import Path

    from restoration.models.predictor import cpu_has_fast_bf16

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo to compare with")
    flags = set(cpuinfo.read_text().split())
    assert cpu_has_fast_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_bf16_output_is_close_to_fp32(astronaut):
    model = _model()
    lq = _photo(astronaut, (64, 96))
    fp32 = Predictor(model, PredictorConfig(precision="fp32", tile=0), device="cpu").restore(lq)
    bf16 = Predictor(model, PredictorConfig(precision="bf16", tile=0), device="cpu").restore(lq)
    assert bf16.dtype == torch.float32
    diff = (bf16 - fp32).abs()
    assert 0 < diff.mean() < 2e-3, diff.mean()  # bf16 ran (the outputs differ), and changes little


def test_batch_norms_fold_into_convolutions(astronaut):
    from restoration.models.predictor import fold_batch_norms

    model = _model()
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert norms > 0
    lq = _photo(astronaut, (64, 96))[None]
    folded, count = fold_batch_norms(model, (lq,))
    # Every batch norm of EfficientNet-Lite0 follows a convolution; the model itself keeps its own.
    assert count == norms
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == norms
    with torch.no_grad():
        assert torch.allclose(folded(lq), model(lq), atol=1e-5)
    predictor = Predictor(model, PredictorConfig(precision="fp32"), device="cpu")
    assert predictor.folded_batch_norms == norms
    unfolded = Predictor(model, PredictorConfig(precision="fp32", fold_batch_norm=False), device="cpu")
    assert unfolded.folded_batch_norms == 0 and unfolded.network is unfolded.model
    assert torch.allclose(predictor.restore(lq[0]), unfolded.restore(lq[0]), atol=1e-5)


def test_batch_norm_is_not_folded_where_the_convolution_output_has_another_use():
    from restoration.models.predictor import fold_batch_norms

    class Shortcut(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.norm = torch.nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.norm(y) + y  # y is used twice: folding the norm into conv would change it

    torch.manual_seed(0)
    model = Shortcut()
    with torch.no_grad():
        model.norm.running_mean.uniform_(-1, 1)
        model.norm.running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.rand(1, 3, 16, 16)
    copied, count = fold_batch_norms(model, (x,))
    assert count == 0 and isinstance(copied.norm, torch.nn.BatchNorm2d)
    with torch.no_grad():
        assert torch.equal(copied(x), model(x))


@pytest.mark.parametrize("scale", [1, 2])
def test_tile_batch_size_does_not_change_tiled_output(astronaut, scale):
    model = _model("sr" if scale > 1 else "denoise", scale)
    lq = _photo(astronaut, (160, 200))
    one = Predictor(model, PredictorConfig(tile=64, overlap=16, tile_batch_size=1, precision="fp32"), device="cpu").restore(lq)
    many = Predictor(model, PredictorConfig(tile=64, overlap=16, tile_batch_size=8, precision="fp32"), device="cpu").restore(lq)
    assert one.shape == (3, 160 * scale, 200 * scale)
    assert torch.allclose(one, many, atol=1e-5)
    with pytest.raises(ValueError, match="tile_batch_size must be >= 1"):
        Predictor(model, PredictorConfig(tile_batch_size=0), device="cpu")


def test_restore_batch_handles_gray_color_and_masks(astronaut):
    color = torch.stack([_photo(astronaut, (48, 64)), _photo(astronaut, (48, 64)).flip(-1)])
    predictor = Predictor(_model(), PredictorConfig(tile=0), device="cpu")
    out = predictor.restore_batch(color)
    assert out.shape == (2, 3, 48, 64)
    for restored, single in zip(out, predictor.restore_many(list(color))):
        assert torch.equal(restored, single)
    gray = predictor.restore_batch(color.mean(dim=1, keepdim=True))
    assert gray.shape == (2, 1, 48, 64)
    inpainter = Predictor(_model("inpaint"), PredictorConfig(tile=0), device="cpu")
    masks = torch.zeros(2, 1, 48, 64)
    assert torch.allclose(inpainter.restore_batch(color, masks), color)
    with pytest.raises(ValueError, match=r"expected a batch tensor \(N, C, H, W\)"):
        predictor.restore_batch(color[0])
    with pytest.raises(ValueError, match="mask must have shape"):
        inpainter.restore_batch(color, masks[:1])


def test_validation_pass_shares_a_training_model(astronaut):
    """What a training loop's validation needs: the live model (no copy, no memory-format
    change), run in eval mode and left in training mode, gray handled as in every restore."""
    model = _model()
    model.train()
    predictor = Predictor(model, PredictorConfig(tile=0, precision="fp32", channels_last=False, fold_batch_norm=False), device="cpu")
    assert predictor.network is model
    model.train()  # the loop goes on training after building it
    color = torch.stack([_photo(astronaut, (48, 64)), _photo(astronaut, (48, 64)).flip(-1)])
    with torch.no_grad():
        torch.nn.init.normal_(model.head.weight, std=0.05)  # a training step changed the weights
    out = predictor.restore_batch(color)
    assert model.training
    model.eval()
    with torch.no_grad():
        expected = model(color)
    assert torch.allclose(out, expected, atol=1e-6)
    model.train()
    gray = predictor.restore_many([color[0, :1]])[0]
    with torch.no_grad():
        model.eval()
        expected_gray = model(color[:1, :1].expand(1, 3, -1, -1))[0].mean(dim=0, keepdim=True)
    assert gray.shape == (1, 48, 64) and torch.allclose(gray, expected_gray, atol=1e-6)


@pytest.mark.parametrize("scale", [1, 2])
def test_pass_pixels_bounds_the_images_and_tiles_per_pass(astronaut, scale):
    from restoration.models.predictor import CPU_PASS_PIXELS

    model = _model("sr" if scale > 1 else "denoise", scale)
    images = [_photo(astronaut, (64, 64)), _photo(astronaut, (64, 64)).flip(-1), _photo(astronaut, (64, 64)).flip(-2)]

    def passes(predictor: Predictor, inputs) -> list[int]:
        sizes: list[int] = []
        predictor.network.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
        predictor.restore_many(inputs)
        return sizes

    assert Predictor(model, device="cpu").pass_pixels == CPU_PASS_PIXELS
    assert passes(Predictor(model, PredictorConfig(tile=0), device="cpu"), images) == [3]
    two = 2 * 64 * 64 * scale**2
    assert passes(Predictor(model, PredictorConfig(tile=0, pass_pixels=two), device="cpu"), images) == [2, 1]
    assert passes(Predictor(model, PredictorConfig(tile=0, pass_pixels=1), device="cpu"), images) == [1, 1, 1]  # one at least
    assert passes(Predictor(model, PredictorConfig(tile=0, pass_pixels=0, batch_size=2), device="cpu"), images) == [2, 1]
    # Tiles: a 160 x 200 image in 64-pixel tiles overlapping by 16 is 3 x 4 tiles.
    tiled = Predictor(model, PredictorConfig(tile=64, overlap=16, tile_batch_size=8, pass_pixels=5 * 64 * 64 * scale**2), device="cpu")
    assert passes(tiled, [_photo(astronaut, (160, 200))]) == [5, 5, 2]
    tiled = Predictor(model, PredictorConfig(tile=64, overlap=16, tile_batch_size=4, pass_pixels=0), device="cpu")
    assert passes(tiled, [_photo(astronaut, (160, 200))]) == [4, 4, 4]
    with pytest.raises(ValueError, match="pass_pixels must be >= 0"):
        Predictor(model, PredictorConfig(pass_pixels=-1), device="cpu")

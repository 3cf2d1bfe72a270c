"""Fine-tuning on pairs (``finetune --train-inputs``, ``--val-inputs``): two listings matched by
relative path, crops of a target and its input taken at the same place (across scales, flips and
transpositions included), validation on the pairs as they are, and a run that learns the mapping
the pairs show, which no synthesized degradation holds."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restoration.finetune.data import LoadedImages, match_pairs


def test_pairs_are_matched_by_relative_path_extension_aside() -> None:
    targets = ["out/a.png", "out/sub/b.png", "out/c.png", "out/d.tar.png"]
    inputs = ["in/sub/b.jpg", "in/a.jpg", "in/e.jpg", "in/d.tar.jpg"]
    assert match_pairs(targets, "out", inputs, "in") == (
        ["out/a.png", "out/sub/b.png", "out/d.tar.png"], ["in/a.jpg", "in/sub/b.jpg", "in/d.tar.jpg"], 1)


@pytest.mark.parametrize("scale", [1, 2])
def test_a_pairs_crops_stay_aligned(scale: int) -> None:
    """Targets that are their inputs enlarged by pixel repetition: every sample's target must be
    its input crop enlarged the same way, whatever crop, flip or transposition it drew."""
    from skimage import data

    from restoration.finetune.settings import load_train_config
    from restoration.finetune.trainer import CropSampler

    task = "sr" if scale > 1 else "denoise"
    config = load_train_config(task, overrides=["data.crop_size=32", "data.gray_fraction=0.5"]
                               + ([f"degradation.scale={scale}"] if scale > 1 else []))
    inputs = [np.ascontiguousarray(data.astronaut()[:50, :58]), np.ascontiguousarray(data.coffee()[:44, :40])]
    targets = [np.repeat(np.repeat(lq, scale, axis=0), scale, axis=1) for lq in inputs]
    sampler = CropSampler(LoadedImages(["a.png", "b.png"], targets, [], inputs), config)
    for position in range(24):
        gt, lq, mask = sampler.sample(position)
        assert mask is None and gt.shape == (3, 32, 32) and lq.shape == (3, 32 // scale, 32 // scale)
        assert torch.equal(gt, lq.repeat_interleave(scale, -1).repeat_interleave(scale, -2)), position


@pytest.mark.timeout(300)
def test_finetune_on_pairs_learns_what_the_pairs_show(tmp_path: Path) -> None:
    """Inputs at half brightness of their targets: no synthesized degradation looks like that,
    so a run that learns to restore the brightness trained on the pairs (and validated on them)."""
    from skimage import data

    from jobs.cli import main
    from restoration.models.checkpoint import load_checkpoint
    from restoration.models.predictor import Predictor, PredictorConfig

    def psnr(image: np.ndarray, reference: np.ndarray) -> float:
        return float(10 * np.log10(255.0**2 / np.mean((image.astype(float) - reference.astype(float)) ** 2)))

    photos = {"train/astronaut": data.astronaut()[:128, :128], "train/coffee": data.coffee()[:128, :128],
              "train/sub/chelsea": data.chelsea()[:128, :128], "val/rocket": data.rocket()[:96, :96]}
    for name, pixels in photos.items():
        # targets as PNG, inputs (half as bright) as JPEG files of the same relative paths
        for folder, image, suffix in (("clean", pixels, ".png"), ("dark", (pixels // 2).astype(np.uint8), ".jpg")):
            path = tmp_path / folder / f"{name}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path, quality=95)
    arguments = ["finetune", "--no-ray", "--task", "denoise", "--train-images", str(tmp_path / "clean" / "train"),
                 "--train-inputs", str(tmp_path / "dark" / "train"), "--val-images", str(tmp_path / "clean" / "val"),
                 "--val-inputs", str(tmp_path / "dark" / "val"), "--steps", "30", "--storage", str(tmp_path / "runs"),
                 "--name", "pairs"]
    for setting in ("model.widths=[8,8,16,16,24,24]", "data.crop_size=64", "data.batch_size=4", "optim.lr=5e-3",
                    "validation.limit=1", "log_interval=10", "backbone_weights=null", "validation.interval=10"):
        arguments += ["--set", setting]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(arguments) == 0
    assert "no input" not in out.getvalue()  # every image found its input, sub-folder and all
    done = json.loads(out.getvalue().strip().splitlines()[-1].removeprefix("done: "))
    model = load_checkpoint(tmp_path / "runs" / "pairs" / "model")
    assert model.metadata.provenance["trained_on"] == "pairs"
    target = np.asarray(Image.open(tmp_path / "clean" / "val" / "rocket.png"))
    dark = np.asarray(Image.open(tmp_path / "dark" / "val" / "rocket.jpg"))
    restored = Predictor(model.model, PredictorConfig(tile=0, precision="fp32"), device="cpu").restore_pixels(dark)
    before, after = psnr(dark, target), psnr(restored, target)
    assert after > before + 3, (before, after)
    assert abs(done["val_psnr"] - after) < 1.0, (done, after)  # validated on the pair, as it is

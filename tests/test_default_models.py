"""The shipped default models: each restores scikit-image photos (never training or benchmark
images) clearly better than its degraded input and than the simple classical answer, under the
evaluate protocol. The figures of MODEL_CARD.md are measured on the benchmark sets by
bench/model_card.py; this is the check that a release ships working weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from restoration.io import storage
from restoration.models.checkpoint import SHIPPED_DIR, read_metadata
from restoration.quality.evaluate import evaluate
from restoration.tasks.specs import get_case, get_task

# What this checkout ships. Every task of CASES must be in it: the tests below fail (never skip)
# when shipped weights are missing, since that is a broken release.
SHIPPED = sorted(p.name for p in SHIPPED_DIR.glob("*") if (p / "model.safetensors").is_file())

# (protocol or real-world case, baseline, dB the default must beat the baseline by, on these two crops)
CASES = {
    "denoise": [(get_task("denoise").protocol(sigma=15), "identity", 6.0),
                (get_task("denoise").protocol(sigma=50), "identity", 10.0),
                (get_case("noise15-jpeg60"), "identity", 2.0)],
    "deblur": [(get_task("deblur").protocol(blur_sigma=1.6), "identity", 1.5),
               (get_task("deblur").protocol(blur_sigma=1.6), "wiener", 0.5)],
    "general": [(get_case("mild"), "identity", 0.3), (get_case("strong"), "identity", 1.0),
                (get_case("noise15-jpeg60-gray"), "identity", 2.0)],
    "sr": [(get_task("sr").protocol(scale=4), "bicubic", 0.5)],
    "jpeg": [(get_task("jpeg").protocol(quality=10), "identity", 0.5)],
    "inpaint": [(get_task("inpaint").protocol(mask_kind="dropout", mask_ratio=0.5), "telea", 0.1),
                (get_task("inpaint").protocol(mask_kind="box"), "identity", 3.0)],
}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 192x192 crops of scikit-image photos, one color and one gray."""
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    (root / "color").mkdir()
    (root / "gray").mkdir()
    Image.fromarray(data.astronaut()[40:232, 160:352]).save(root / "color" / "astronaut.png")
    Image.fromarray(data.camera()[60:252, 200:392]).save(root / "gray" / "camera.png")
    return root


@pytest.fixture(autouse=True)
def threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(min(2, saved))
    yield
    torch.set_num_threads(saved)


def test_every_task_of_the_card_is_shipped():
    assert set(SHIPPED) == set(CASES), f"shipped {SHIPPED} under {SHIPPED_DIR}, the card has {sorted(CASES)}"
    total = sum(f.stat().st_size for task in SHIPPED for f in (SHIPPED_DIR / task).iterdir())
    assert total < 40e6, f"shipped weights take {total / 1e6:.1f} MB"  # six float16 models of 6.2 MB
    for task in SHIPPED:
        meta = read_metadata(SHIPPED_DIR / task)
        assert meta["task"] == task
        assert "CBSD432" in str(meta["provenance"].get("train_images", "")), meta["provenance"]


@pytest.mark.parametrize("task", sorted(CASES))
def test_default_model_beats_baseline(task: str, photos: Path):
    assert task in SHIPPED, f"no default model is shipped for {task} under {SHIPPED_DIR}"
    images = str(photos)
    for protocol, baseline, margin in CASES[task]:
        assert len(storage.list_images(images)) == 2
        ours = evaluate("default", protocol, images, task=task, device="cpu")
        theirs = evaluate(baseline, protocol, images, device="cpu")
        for a, b in zip(ours["images"], theirs["images"]):
            assert a["psnr"] > b["psnr"] + margin, (ours["protocol"], baseline, a, b)

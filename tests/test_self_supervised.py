"""``restoration finetune --self-supervised`` without Ray: a denoiser trained on noisy images alone
(no clean image is read) removes noise, which the held-out residual-noise report and the clean
images (read here only, to check) agree on; a model that does not leave less noise than the one it
started from is refused unless ``--keep-worse``. (On Ray with 2 Train workers:
tests/test_train_on_archive_ray.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restoration.finetune.checkpoints import training_checkpoints
from restoration.finetune.settings import load_train_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]

SIGMA = 40
TINY = ["model.widths=[8,8,16,16,24,24]", "data.crop_size=64", "data.batch_size=4", "optim.lr=5e-3",
        "backbone_weights=null", "log_interval=10", "validation.interval=15", "checkpoint_interval=15",
        "optim.freeze_backbone_fraction=0"]


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Photos with Gaussian noise of sigma 40 (8-bit files), and their clean versions beside."""
    from skimage import data

    root = tmp_path_factory.mktemp("noisy")
    rng = np.random.default_rng(0)
    for folder, names in (("train", ["astronaut", "coffee", "chelsea", "immunohistochemistry"]), ("val", ["rocket"])):
        for name in names:
            clean = np.asarray(Image.fromarray(getattr(data, name)()).convert("RGB"))[:96, :96]
            noise = rng.normal(0, SIGMA, clean.shape)
            for kind, pixels in (("noisy", np.clip(clean + noise, 0, 255).round()), ("clean", clean)):
                (root / kind / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels.astype(np.uint8)).save(root / kind / folder / f"{name}.png")
    return root


def command(noisy: Path, storage: Path, name: str, *, steps: int, extra: list[str] = (),
            method: str = "sure") -> list[str]:
    """A run from a fresh tiny model (its output is its input at first); SURE learns fastest
    there (Neighbor2Neighbor, the default, is for adapting a trained model: it learns at half
    resolution, and tells a clipped noise's mean from the image)."""
    args = ["finetune", "--no-ray", "--task", "denoise", "--self-supervised", method, "--train-images",
            str(noisy / "noisy" / "train"), "--val-images", str(noisy / "noisy" / "val"), "--steps", str(steps),
            "--storage", str(storage), "--name", name]
    for setting in [*TINY, *extra]:
        args += ["--set", setting]
    return args


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((image.astype(float) - reference.astype(float)) ** 2)))


def test_self_supervision_is_for_denoising_and_names_its_losses() -> None:
    config = load_train_config("denoise", overrides=["self_supervised.method=neighbor2neighbor"])
    assert config.self_supervised_method == "neighbor2neighbor"
    with pytest.raises(ValueError, match="self-supervised training removes noise"):
        load_train_config("sr", overrides=["self_supervised.method=sure"])
    with pytest.raises(ValueError, match="expected one of sure, neighbor2neighbor, recorrupted"):
        load_train_config("denoise", overrides=["self_supervised.method=noise2void"])


@pytest.mark.timeout(300)
def test_self_supervised_training_removes_noise_without_clean_images(noisy: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    from jobs.cli import main
    from restoration.models.checkpoint import load_checkpoint
    from restoration.models.predictor import Predictor, PredictorConfig

    assert main(command(noisy, tmp_path / "runs", "sure", steps=30)) == 0
    out = capsys.readouterr().out
    done = json.loads(out.strip().splitlines()[-1].removeprefix("done: "))
    # The report without clean images: the fresh model hands the noise back; the trained one leaves less.
    start, end = done["val_residual_noise_at_start"], done["val_residual_noise"]
    assert start > 0.8 * SIGMA and end < start - 5, (start, end)
    assert done["val_noise_left"] < done["val_noise_left_at_start"] - 5, done
    assert "step 0 (the starting model): val noise left" in out
    model = load_checkpoint(tmp_path / "runs" / "sure" / "model")
    provenance = model.metadata.provenance
    assert provenance["trained_on"] == "noisy images alone (self-supervised, sure)"
    assert provenance["validation"]["val_residual_noise"] == pytest.approx(end)
    assert 0.5 < provenance["validation"]["val_removed_noise"] < 1.5
    # The clean image, read here only, agrees with the report's direction.
    noisy_val = np.asarray(Image.open(noisy / "noisy" / "val" / "rocket.png"))
    clean_val = np.asarray(Image.open(noisy / "clean" / "val" / "rocket.png"))
    restored = Predictor(model.model, PredictorConfig(tile=0, precision="fp32"), device="cpu").restore_pixels(noisy_val)
    assert psnr(restored, clean_val) > psnr(noisy_val, clean_val) + 1.5  # 17.32 -> 19.63 dB when written


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_run_resumes_and_a_model_that_does_not_clean_better_is_refused_unless_kept(
        noisy: Path, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "strict"
    # Asking for 100 levels less noise than the start: no model can, so the run's model is refused.
    args = [sys.executable, "-m", "jobs.cli", *command(noisy, tmp_path / "runs", "strict", steps=30,
                                                      extra=["self_supervised.min_residual_drop=100"])]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # 1. SIGKILL once a checkpoint exists.
    with (tmp_path / "first.log").open("w") as log:
        process = subprocess.Popen(args, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
        try:
            deadline = time.monotonic() + 150
            while not training_checkpoints(str(run)):
                assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()
                time.sleep(0.1)
            process.kill()
        finally:
            process.wait(timeout=30)
    killed_at = training_checkpoints(str(run))[-1][0]
    assert killed_at < 30
    # 2. The same command resumes (the starting model's figures come back with the checkpoint),
    # finishes, and refuses the model: exit 1, one line, the checkpoints kept.
    second = subprocess.run(args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=200)
    assert second.returncode == 1, second.stdout + second.stderr
    assert f"resumed from step {killed_at} of 30" in second.stdout
    assert "fine-tuning done, but the adapted model leaves not 100 levels less noise" in second.stderr, second.stderr
    assert "--keep-worse writes it anyway" in second.stderr and "Traceback" not in second.stderr
    assert not (run / "model").exists() and (run / "checkpoint_step_00000030").is_dir()
    # 3. With --keep-worse: nothing left to train, the model is written, its start figures kept.
    third = subprocess.run([*args, "--keep-worse"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                           timeout=200)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "resumed from step 30 of 30" in third.stdout and not (run / "model-refused.txt").exists()
    provenance = json.loads((run / "model" / "model.json").read_text())["provenance"]
    assert provenance["resumed_at"] == [killed_at, 30]
    assert provenance["validation_at_start"]["val_noise_left"] > provenance["validation"]["val_noise_left"]

"""The fine-tuning loop without Ray: loss falls, resume is exact, bad input is named clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from s3_fixtures import s3_bucket, s3_server  # noqa: F401  (pytest fixtures)

from restoration import config as config_lib
from restoration.finetune.data import load_training_images
from restoration.finetune.settings import (
    load_train_config,
    model_differences,
    train_config_from_dict,
)
from restoration.finetune.trainer import (
    CropSampler,
    Trainer,
    initial_model,
    lr_multiplier,
)
from restoration.io import storage
from restoration.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from restoration.models.fused import build_model

TINY = ["model.widths=[8,8,16,16,24,24]", "data.crop_size=64", "data.batch_size=4",
        "degradation.sigma_range=[25,25]"]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine, spinning OpenMP threads make tiny-model
    steps 10-50x slower than one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 128x128 crops of scikit-image's photos, as PNG and JPEG files."""
    from skimage import data

    root = tmp_path_factory.mktemp("train")
    photos = {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee()}
    for name, pixels in photos.items():
        Image.fromarray(pixels[100:228, 100:228]).save(root / f"{name}.png")
    Image.fromarray(data.astronaut()[300:428, 200:328]).save(root / "astronaut2.jpg", quality=95)
    return root


@pytest.fixture(scope="module")
def val_samples() -> list[tuple[str, np.ndarray]]:
    from skimage import data

    return [("chelsea_val.png", data.chelsea()[:96, :128])]


def make_trainer(image_dir: Path, overrides: list[str], *, val=None, seed: int = 0, init=None) -> Trainer:
    config = load_train_config("denoise", overrides=TINY + overrides)
    images = load_training_images(storage.list_images(str(image_dir)), min_size=config.data.crop_size)
    torch.manual_seed(seed)
    model = initial_model(config, init)
    return Trainer(config, model, CropSampler(images, config), val_samples=val)


# --------------------------------------------------------------------------------------------
# The loop


def test_loss_falls_and_validation_beats_the_noisy_input(image_dir: Path, val_samples) -> None:
    trainer = make_trainer(image_dir, ["steps=40", "optim.lr=5e-3", "log_interval=5",
                                       "validation.interval=40", "checkpoint_interval=40"], val=val_samples)
    before = trainer.validate()
    last = trainer.fit()
    losses = [row["loss"] for row in trainer.history]
    assert [row["step"] for row in trainer.history] == list(range(5, 41, 5))
    assert np.mean(losses[-2:]) < 0.85 * np.mean(losses[:2]), losses
    # The model starts as the identity (zero residual head): it must improve on the noisy input.
    assert last["val_psnr"] > before["val_psnr"] + 0.5, (before, last)
    assert set(last) >= {"step", "loss", "lr", "samples_per_second", "wall_seconds", "stage", "data_seconds",
                         "forward_seconds", "backward_seconds", "optimizer_seconds", "val_psnr", "val_ssim"}
    assert last["step"] == 40 and trainer.step == 40 and last["stage"] == "unfrozen"


@pytest.mark.parametrize("freeze_fraction", [0.25, 0.75], ids=["resume-after-unfreezing", "resume-before-unfreezing"])
def test_resume_reproduces_the_uninterrupted_run_exactly(image_dir: Path, tmp_path: Path, freeze_fraction: float) -> None:
    overrides = ["steps=12", "checkpoint_interval=6", "log_interval=1", "optim.lr=1e-3",
                 f"optim.freeze_backbone_fraction={freeze_fraction}", "optim.warmup_steps=2", "backbone_weights=null"]
    uninterrupted = make_trainer(image_dir, overrides)
    uninterrupted.fit()

    interrupted = make_trainer(image_dir, overrides)
    interrupted.fit(checkpoint_dir=tmp_path, until_step=9)  # checkpoints at step 6, stops at 9
    assert interrupted.step == 9
    checkpoint = tmp_path / "checkpoint_step_00000006"
    assert (checkpoint / "trainer_state.pt").is_file() and (checkpoint / "config.yaml").is_file()

    # Another seed: every weight must come from the checkpoint, not from the initialization.
    resumed = make_trainer(image_dir, overrides, seed=123)
    resumed.resume(checkpoint)
    assert resumed.step == 6 and resumed.samples_seen == 6 * 4 and resumed.resumed_at == [6]
    assert resumed.stage == uninterrupted.history[6]["stage"] or resumed.step < resumed.config.freeze_steps
    resumed.fit()

    expected = [(row["step"], row["loss"], row["lr"], row["stage"]) for row in uninterrupted.history]
    got = [(row["step"], row["loss"], row["lr"], row["stage"]) for row in resumed.history]
    assert got == expected  # steps 1-6 from the checkpoint's history, 7-12 recomputed bit for bit
    for (name, a), b in zip(uninterrupted.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    state_a, state_b = uninterrupted.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key]["exp_avg"], state_b[key]["exp_avg"])


def test_a_stop_request_checkpoints_the_step_it_came_at_and_resume_goes_on_from_it(image_dir: Path,
                                                                                    tmp_path: Path) -> None:
    overrides = ["steps=12", "checkpoint_interval=100", "log_interval=4", "optim.lr=1e-3", "backbone_weights=null"]
    uninterrupted = make_trainer(image_dir, overrides)
    uninterrupted.fit()

    stopped = make_trainer(image_dir, overrides)
    asked: list[int] = []
    row = stopped.fit(checkpoint_dir=tmp_path, should_stop=lambda: asked.append(stopped.step) or stopped.step >= 5)
    assert asked == [1, 2, 3, 4, 5]  # asked after every step, and no step after the request
    assert stopped.stopped_at == 5 and stopped.step == 5 and row["step"] == 5
    assert [r["step"] for r in stopped.history] == [4, 5]  # the stop step is reported, off the log cadence
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_step_00000005"]  # off the checkpoint cadence

    resumed = make_trainer(image_dir, overrides, seed=7)
    resumed.resume(tmp_path / "checkpoint_step_00000005")
    resumed.fit(should_stop=lambda: False)
    assert resumed.stopped_at is None and resumed.step == 12
    assert [r["step"] for r in resumed.history] == [4, 5, 8, 12]
    for (name, a), b in zip(uninterrupted.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name  # the stop changed nothing that was trained


def test_checkpoint_is_a_regular_model_checkpoint(image_dir: Path, tmp_path: Path) -> None:
    trainer = make_trainer(image_dir, ["steps=2", "backbone_weights=null"])
    trainer.fit(checkpoint_dir=tmp_path, provenance={"train_images": str(image_dir)})
    checkpoint = load_checkpoint(tmp_path / "checkpoint_step_00000002")
    assert checkpoint.metadata.provenance["steps"] == 2
    assert checkpoint.metadata.provenance["train_images"] == str(image_dir)
    saved = config_lib.read_yaml(tmp_path / "checkpoint_step_00000002" / "config.yaml")
    assert train_config_from_dict(saved) == trainer.config


def test_resume_refuses_a_checkpoint_of_another_architecture(image_dir: Path, tmp_path: Path) -> None:
    trainer = make_trainer(image_dir, ["steps=2", "backbone_weights=null"])
    trainer.fit(checkpoint_dir=tmp_path)
    other = make_trainer(image_dir, ["steps=2", "backbone_weights=null", "model.alpha=0.25"])
    with pytest.raises(CheckpointError, match="another --name"):
        other.resume(tmp_path / "checkpoint_step_00000002")
    model_only = tmp_path / "model-only"
    save_checkpoint(trainer.model, model_only)
    with pytest.raises(CheckpointError, match="not a resumable checkpoint"):
        trainer.resume(model_only)


def test_learning_rate_schedule() -> None:
    config = load_train_config("denoise", overrides=["steps=100", "optim.warmup_steps=10", "optim.min_lr_ratio=0.1"])
    multipliers = [lr_multiplier(step, config) for step in range(100)]
    assert multipliers[0] == pytest.approx(0.1) and multipliers[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(multipliers[10:], multipliers[11:]))
    assert multipliers[-1] == pytest.approx(0.1, abs=1e-3)
    # A warm-up longer than the run is capped at a fifth of it, so the full rate is reached.
    short = load_train_config("denoise", overrides=["steps=20", "optim.warmup_steps=50"])
    assert short.warmup_steps == 4 and lr_multiplier(3, short) == pytest.approx(1.0)


def test_crop_sampler_is_deterministic_per_position(image_dir: Path) -> None:
    config = load_train_config("denoise", overrides=TINY)
    images = load_training_images(storage.list_images(str(image_dir)), min_size=64)
    a, b = CropSampler(images, config), CropSampler(images, config)
    for x, y in zip(a.batch(5, 3)[:2], b.batch(5, 3)[:2]):
        assert torch.equal(x, y)
    gt, lq, mask = a.batch(0, 2)
    assert gt.shape == lq.shape == (2, 3, 64, 64) and mask is None
    assert not torch.equal(a.sample(0)[0], a.sample(1)[0])


def test_gray_fraction_makes_gray_crops_with_gray_degradations(image_dir: Path) -> None:
    overrides = [o for o in TINY if not o.startswith("degradation")]
    images = load_training_images(storage.list_images(str(image_dir)), min_size=64)
    gray = CropSampler(images, load_train_config("jpeg", overrides=overrides + ["data.gray_fraction=1"]))
    color = CropSampler(images, load_train_config("jpeg", overrides=overrides))
    for position in range(4):
        gt, lq, _ = gray.sample(position)
        assert gt.shape == lq.shape == (3, 64, 64)
        assert torch.equal(gt[0], gt[1]) and torch.equal(gt[0], gt[2])  # three equal channels
        assert torch.equal(lq[0], lq[2])  # gray JPEG: no chroma to bleed between channels
        assert torch.equal(gt * 255, (gt * 255).round())  # 8-bit gray levels
        assert not torch.equal(gt, lq)  # still compressed
    # With gray_fraction 0 the color stream is untouched: no extra draw shifts it.
    assert not torch.equal(color.sample(0)[0][0], color.sample(0)[0][1])
    half = CropSampler(images, load_train_config("jpeg", overrides=overrides + ["data.gray_fraction=0.5"]))
    kinds = {bool(torch.equal(g[0], g[1])) for g, _, _ in (half.sample(p) for p in range(16))}
    assert kinds == {True, False}
    with pytest.raises(ValueError, match="gray_fraction"):
        load_train_config("jpeg", overrides=["data.gray_fraction=1.5"])


CONFIGS = Path(__file__).resolve().parent.parent / "jobs" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.stem)
def test_every_shipped_training_config_loads_for_its_task(path: Path) -> None:
    # jobs/configs/<task>[-variant].yaml: the file name says which task's fields it must match;
    # distill.yaml is the student's, for the teacher's task (x4 super-resolution, as measured).
    task = {"distill": "sr"}.get(path.stem, path.stem.split("-")[0])
    config = load_train_config(task, path=path)
    assert config.task == task and config.network_config().task == task
    assert config.steps == config_lib.read_yaml(path)["steps"] > 0


def test_a_network_without_gradient_flow_is_reported(image_dir: Path) -> None:
    messages: list[str] = []
    trainer = make_trainer(image_dir, ["steps=6", "backbone_weights=null"])
    trainer.progress = messages.append
    for _ in range(5):
        trainer.train_step()
    assert not [m for m in messages if "no gradient" in m]  # a fresh model: gradients flow
    dead = make_trainer(image_dir, ["steps=6", "backbone_weights=null"])
    dead.progress = messages.append
    with torch.no_grad():  # every decoder ReLU off: only the head and its input layer can learn
        for name, param in dead.model.named_parameters():
            if name.startswith("decoder") and name.endswith("bias"):
                param.fill_(-100.0)
    for _ in range(5):
        dead.train_step()
    assert [m for m in messages if "no gradient at step 4" in m], messages


@pytest.mark.parametrize("task", ["sr", "inpaint", "jpeg"])
def test_other_tasks_take_a_step(image_dir: Path, task: str) -> None:
    overrides = [o for o in TINY if not o.startswith("degradation")] + ["steps=1", "backbone_weights=null"]
    config = load_train_config(task, overrides=overrides + (["degradation.scale=2"] if task == "sr" else []))
    images = load_training_images(storage.list_images(str(image_dir)), min_size=64)
    trainer = Trainer(config, initial_model(config), CropSampler(images, config))
    assert np.isfinite(trainer.train_step()["loss"])
    assert config.network_config().scale == (2 if task == "sr" else 1)


def test_format_duration() -> None:
    from restoration.durations import format_duration

    assert [format_duration(s) for s in (-3, 0, 42.4, 187, 7500)] == ["0 s", "0 s", "42 s", "3 min 07 s", "2 h 05 min"]


# --------------------------------------------------------------------------------------------
# Training images


def test_unreadable_images_are_skipped_and_counted(image_dir: Path, tmp_path: Path) -> None:
    for path in image_dir.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    (tmp_path / "empty.jpg").write_bytes(b"")
    Image.fromarray(np.zeros((20, 300, 3), np.uint8)).save(tmp_path / "thin.png")
    uris = storage.list_images(str(tmp_path))
    images = load_training_images(uris, min_size=64)
    assert len(images.names) == 4 and len(images.pixels) == 4
    bad = {uri.rsplit("/", 1)[-1]: reason for uri, reason in images.bad}
    assert set(bad) == {"broken.png", "empty.jpg", "thin.png"}
    assert "smaller than the 64-pixel training crop (300x20)" in bad["thin.png"]
    assert all(p.dtype == np.uint8 and p.shape[-1] == 3 for p in images.pixels)


def test_all_bad_training_images_fail_clearly(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"garbage")
    (tmp_path / "b.jpg").write_bytes(b"more garbage")
    with pytest.raises(ValueError, match=r"none of the 2 images could be used \(.*a\.png"):
        load_training_images(storage.list_images(str(tmp_path)))
    with pytest.raises(ValueError, match="no training images"):
        load_training_images([])


def test_gray_and_16_bit_images_become_8_bit_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray(np.full((64, 64), 65535, np.uint16)).save(tmp_path / "deep.png")
    images = load_training_images(storage.list_images(str(tmp_path)))
    for pixels in images.pixels:
        assert pixels.dtype == np.uint8 and pixels.shape == (64, 64, 3)
    assert images.pixels[images.names.index("deep.png")].max() == 255


# --------------------------------------------------------------------------------------------
# --init (task transfer)


def test_init_transfers_a_denoiser_to_jpeg(tmp_path: Path) -> None:
    denoise = load_train_config("denoise", overrides=TINY + ["backbone_weights=null"])
    source = build_model(denoise.network_config(), backbone_weights=None)
    save_checkpoint(source, tmp_path / "denoiser")
    jpeg = load_train_config("jpeg", overrides=[o for o in TINY if not o.startswith("degradation")])
    model = initial_model(jpeg, tmp_path / "denoiser")
    assert model.config.task == "jpeg"
    for (name, a), b in zip(source.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def test_init_of_another_architecture_is_refused(tmp_path: Path) -> None:
    config = load_train_config("denoise", overrides=TINY)
    other = load_train_config("denoise", overrides=TINY + ["model.widths=[16,24,32,48,64,96]"])
    save_checkpoint(build_model(other.network_config(), backbone_weights=None), tmp_path / "wide")
    with pytest.raises(CheckpointError, match=r"widths=\[16, 24, 32, 48, 64, 96\].*needs .*widths=\[8, 8, 16, 16, 24, 24\]"):
        initial_model(config, tmp_path / "wide")
    with pytest.raises(CheckpointError, match="not found"):
        initial_model(config, tmp_path / "missing")


@pytest.mark.s3
def test_init_from_s3(tmp_path: Path, s3_bucket: str) -> None:
    config = load_train_config("denoise", overrides=TINY)
    source = build_model(config.network_config(), backbone_weights=None)
    save_checkpoint(source, tmp_path / "ckpt")
    for path in (tmp_path / "ckpt").iterdir():
        storage.write_bytes(f"s3://{s3_bucket}/models/denoiser/{path.name}", path.read_bytes())
    model = initial_model(config, f"s3://{s3_bucket}/models/denoiser")
    for (name, a), b in zip(source.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        initial_model(config, f"s3://{s3_bucket}/models/nothing-here")


# --------------------------------------------------------------------------------------------
# Configuration errors


def test_train_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown config key optim\.weight_decy \(did you mean optim\.weight_decay\?\)"):
        load_train_config("denoise", overrides=["optim.weight_decy=1e-3"])
    with pytest.raises(ValueError, match=r"unknown config key optim\.learning_rate; known keys of optim: .*\blr\b"):
        load_train_config("denoise", overrides=["optim.learning_rate=1e-3"])
    with pytest.raises(ValueError, match=r"unknown config key batchsize"):
        load_train_config("denoise", overrides=["batchsize=3"])
    with pytest.raises(ValueError, match=r"data\.batch_size: expected an integer, got 'four'"):
        load_train_config("denoise", overrides=["data.batch_size=four"])
    with pytest.raises(ValueError, match=r"model\.widths: expected 6 positive channel counts|widths must be 6"):
        load_train_config("denoise", overrides=["model.widths=[8,8]"])
    with pytest.raises(ValueError, match=r"data\.crop_size must be a multiple of 32"):
        load_train_config("denoise", overrides=["data.crop_size=50"])
    with pytest.raises(ValueError, match=r"model\.task 'sr' disagrees with --task 'denoise'"):
        load_train_config("denoise", overrides=["model.task=sr"])
    with pytest.raises(ValueError, match=r"task 'jpeg' in the config disagrees with --task 'denoise'"):
        load_train_config("denoise", overrides=["task=jpeg"])
    with pytest.raises(ValueError, match=r"model\.scale 2 disagrees with degradation\.scale 4"):
        load_train_config("sr", overrides=["model.scale=2", "degradation.scale=4"])
    with pytest.raises(ValueError, match="unknown loss"):
        load_train_config("denoise", overrides=["loss=l3"])
    with pytest.raises(ValueError, match="unknown task"):
        load_train_config("colorize")
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text("optim:\n  lr: [1\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_train_config("denoise", path=bad_file)
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_train_config("denoise", path=tmp_path / "missing.yaml")


def test_train_config_from_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("steps: 500\noptim:\n  lr: 1.0e-3\ndata:\n  batch_size: 4\ndegradation:\n  scale: 2\n")
    config = load_train_config("sr", path=path, overrides=["optim.lr=5e-4"], steps=300)
    assert config.steps == 300 and config.optim.lr == 5e-4 and config.data.batch_size == 4
    assert config.network_config().scale == config.degradation.scale == 2 and config.network_config().task == "sr"
    # The resolved config round-trips through YAML.
    written = tmp_path / "resolved.yaml"
    written.write_text(config_lib.to_yaml(config))
    saved = config_lib.read_yaml(written)
    assert train_config_from_dict(saved) == config
    # The task and the scale are written once: the task at the top, the scale in the degradation.
    assert saved["task"] == "sr" and saved["degradation"]["scale"] == 2
    assert not {"task", "scale"} & set(saved["model"])
    assert model_differences(saved, config) == []


def test_a_config_written_with_the_task_and_scale_in_the_model_section_still_resumes() -> None:
    """config.yaml files written before the task and scale were held once repeat them under
    ``model:``; they load, and a run of the same task and model resumes them."""
    config = load_train_config("sr", overrides=["degradation.scale=3", "model.widths=[8,8,16,16,24,24]"])
    older = config.to_dict()
    older["model"] = {"task": "sr", "scale": 3, **older["model"]}
    assert train_config_from_dict(older) == config
    assert model_differences(older, config) == []
    other = load_train_config("sr", overrides=["degradation.scale=4", "model.widths=[8,8,16,16,24,24]"])
    assert model_differences(older, other) == ["scale: 3 -> 4"]
    assert model_differences(older, load_train_config("sr", overrides=["degradation.scale=3"]))[0].startswith("widths:")


@pytest.mark.timeout(300)
def test_throughput_bench_without_ray(image_dir: Path, tmp_path: Path) -> None:
    """bench/train_throughput.py --no-ray: the library loop alone, JSON out, Ray never imported."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(root / "bench" / "train_throughput.py"), "--no-ray", "--threads", "1", "--steps", "2",
         "--warmup", "1", "--widths", "8,8,16,16,24,24", "--crop-size", "64", "--batch-size", "2",
         "--images", str(image_dir), "--output", str(out)],
        capture_output=True, text=True, timeout=280,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())["no_ray"]
    assert report["ray_imported"] is False and report["device"] == "cpu" and report["threads"] == 1
    assert report["samples_per_second"] > 0
    assert set(report["split_seconds"]) == {"data", "forward", "backward", "optimizer"}

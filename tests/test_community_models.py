"""Community restoration models (spandrel's architectures, random weights: none can be downloaded
here) through the same runs as the shipped models: ``restore --no-ray`` and the Ray job give
spandrel's own pixels (the Ray job's test runs on the Ray instance of test_restore_job.py),
tiles match whole images, x4 models give 4x outputs, gray stays gray and
alpha is kept; bad files and models that cannot do the task exit 2 in one line before Ray."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from s3_fixtures import s3_bucket, s3_server  # noqa: F401  (pytest fixtures)
from test_restore_local import NO_RAY_COMMAND, PROJECT_ROOT, no_ray_environment

from restoration.io.pixels import pixels_to_tensor, tensor_to_pixels
from restoration.models.checkpoint import load_checkpoint
from restoration.models.predictor import Predictor, PredictorConfig
from restoration.restore.manifest import read_manifest

spandrel = pytest.importorskip("spandrel")


def _architectures() -> dict[str, tuple[str, object]]:
    """name -> (file suffix, a small random-weight network spandrel detects)."""
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.DRUNet import DRUNet
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.NAFNet import NAFNet
    from spandrel.architectures.SCUNet import SCUNet
    from spandrel.architectures.SwinIR import SwinIR

    return {
        "esrgan-x4": (".pth", lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=2, scale=4)),
        "compact-x4": (".safetensors", lambda: Compact(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=4, upscale=4)),
        "swinir": (".pth", lambda: SwinIR(img_size=32, embed_dim=12, depths=[1], num_heads=[2], window_size=4,
                                          upscale=1, upsampler="")),
        "scunet": (".safetensors", lambda: SCUNet(in_nc=3, config=[2, 2, 2, 2, 2, 2, 2], dim=64)),
        "nafnet": (".pth", lambda: NAFNet(img_channel=3, width=16, middle_blk_num=1, enc_blk_nums=[1, 1],
                                          dec_blk_nums=[1, 1])),
        "drunet": (".safetensors", lambda: DRUNet(in_nc=4, out_nc=3, nc=[16, 32, 64, 128], nb=2)),
    }


ARCHITECTURES = list(_architectures())


def save_model(net: torch.nn.Module, path: Path) -> Path:
    state = {key: value.contiguous() for key, value in net.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("community")
    files = {}
    for name, (suffix, build) in _architectures().items():
        torch.manual_seed(0)
        files[name] = save_model(build().eval(), folder / f"{name}{suffix}")
    return files


def community_inputs(folder: Path) -> Path:
    """An RGB photo crop, a gray one and an RGBA one, of sizes that fit no size rule, in ``folder``."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.astronaut()[100:158, 180:250]).save(folder / "rgb.png")
    Image.fromarray(data.camera()[200:246, 200:250]).save(folder / "gray.png")
    alpha = np.tile(np.linspace(30, 255, 44, dtype=np.uint8), (42, 1))
    Image.fromarray(np.dstack([data.coffee()[100:142, 100:144], alpha])).save(folder / "alpha.png")
    return folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return community_inputs(tmp_path_factory.mktemp("community-in"))


def spandrel_reference(path: Path, image: np.ndarray) -> np.ndarray:
    """spandrel's own forward pass (its padding, its call, its clamp) on an RGB uint8 image."""
    from spandrel import ModelLoader

    descriptor = ModelLoader().load_from_file(str(path)).eval()
    with torch.no_grad():
        out = descriptor(pixels_to_tensor(image)[None])[0]
    return tensor_to_pixels(out.clamp(0, 1))


def restore_no_ray(source: Path, output: Path, model: Path, *settings: str,
                   in_process: bool = False) -> subprocess.CompletedProcess:
    """``restoration restore --no-ray``, --task left to the model: in a process of its own in
    which `import ray` fails, or (``in_process``) through the same entry point in this one,
    which spares a torch and spandrel import (seconds) where the process is not the point."""
    arguments = ["restore", "--no-ray", "--input", str(source), "--output", str(output), "--model", str(model),
                 "--set", "predictor.precision=fp32", *[arg for setting in settings for arg in ("--set", setting)]]
    if not in_process:
        return subprocess.run([sys.executable, "-c", NO_RAY_COMMAND, *arguments], cwd=PROJECT_ROOT,
                              env=no_ray_environment(output.parent), capture_output=True, text=True, timeout=300)
    from jobs.cli import main

    error = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(error):
        code = main(arguments)
    return subprocess.CompletedProcess(arguments, code, out.getvalue(), error.getvalue())


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_restore_gives_spandrels_pixels_keeps_gray_and_alpha(name: str, model_files: dict[str, Path], inputs: Path,
                                                             tmp_path: Path) -> None:
    path = model_files[name]
    # --task from the model: sr or general. One architecture runs in a process without Ray.
    result = restore_no_ray(inputs, tmp_path / "out", path, in_process=name != ARCHITECTURES[0])
    assert result.returncode == 0, result.stderr
    scale = load_checkpoint(path).model.traits.scale
    rgb = np.asarray(Image.open(inputs / "rgb.png"))
    restored = np.asarray(Image.open(tmp_path / "out" / "rgb.png"))
    assert restored.shape == (rgb.shape[0] * scale, rgb.shape[1] * scale, 3)
    difference = np.abs(restored.astype(int) - spandrel_reference(path, rgb).astype(int))
    assert difference.max() <= 1, (name, difference.max())

    gray = Image.open(tmp_path / "out" / "gray.png")
    assert gray.mode == "L" and gray.size == (50 * scale, 46 * scale)
    with_alpha = Image.open(tmp_path / "out" / "alpha.png")
    assert with_alpha.mode == "RGBA" and with_alpha.size == (44 * scale, 42 * scale)
    alpha = np.asarray(with_alpha)[:, :, 3]
    assert alpha.min() < 60 and alpha.max() > 240  # the source's alpha ramp, kept (resized for x4)

    rows = {Path(row["source_uri"]).name: row for row in read_manifest(str(tmp_path / "out")).to_pylist()}
    assert all(row["status"] == "ok" for row in rows.values()), rows
    assert {row["model_id"] for row in rows.values()} == {load_checkpoint(path).model_id}
    assert rows["rgb.png"]["task"] == ("sr" if scale > 1 else "general")


@pytest.mark.parametrize("name", ["esrgan-x4", "compact-x4", "drunet"])
def test_tiles_match_the_whole_image(name: str, model_files: dict[str, Path]) -> None:
    """Architectures that support tiling: overlapping feathered tiles give the whole image's
    pixels within 1 level."""
    from skimage import data

    model = load_checkpoint(model_files[name]).model
    image = pixels_to_tensor(data.astronaut()[60:180, 100:236])
    whole = Predictor(model, PredictorConfig(tile=0, precision="fp32"), device="cpu").restore(image)
    tiled = Predictor(model, PredictorConfig(tile=96, overlap=32, precision="fp32"), device="cpu").restore(image)
    difference = np.abs(tensor_to_pixels(whole.clamp(0, 1)).astype(int) - tensor_to_pixels(tiled.clamp(0, 1)).astype(int))
    assert difference.max() <= 1, (name, difference.max())


@pytest.mark.parametrize("name", ["scunet", "swinir", "nafnet"])
def test_models_that_discourage_tiling_get_whole_images(name: str, model_files: dict[str, Path]) -> None:
    """SCUNet and SwinIR (spandrel says so) and NAFNet (its channel attention pools over the
    whole input, so tiles change its output)."""
    model = load_checkpoint(model_files[name]).model
    assert model.traits.tiling == "discouraged"
    predictor = Predictor(model, PredictorConfig(tile=64, overlap=8), device="cpu")
    assert predictor.tile >= 2048 and predictor.overlap >= 128  # whole images up to 2048 px a side
    if name == "scunet":
        assert model.traits.min_size == 40


def test_noise_level_is_a_setting_of_noise_map_models(model_files: dict[str, Path]) -> None:
    from skimage import data

    model = load_checkpoint(model_files["drunet"]).model
    assert model.traits.noise_level
    image = pixels_to_tensor(data.astronaut()[:48, :48])
    low = Predictor(model, PredictorConfig(noise_level=5, precision="fp32"), device="cpu").restore(image)
    high = Predictor(model, PredictorConfig(noise_level=50, precision="fp32"), device="cpu").restore(image)
    assert (low - high).abs().mean() > 1e-4
    with pytest.raises(ValueError, match="take no noise-level map"):
        Predictor(load_checkpoint(model_files["nafnet"]).model, PredictorConfig(noise_level=5), device="cpu")


@pytest.mark.timeout(300)
def test_lama_inpaints_the_pixels_alpha_marks_missing(tmp_path: Path) -> None:
    from skimage import data
    from spandrel.architectures.LaMa import LaMa

    torch.manual_seed(0)
    path = save_model(LaMa(in_nc=4, out_nc=3).eval(), tmp_path / "lama.safetensors")  # image + mask in
    image = data.astronaut()[100:164, 120:200]
    alpha = np.full(image.shape[:2], 255, np.uint8)
    alpha[20:40, 30:50] = 0  # the hole
    (tmp_path / "in").mkdir()
    Image.fromarray(np.dstack([image, alpha])).save(tmp_path / "in" / "hole.png")
    result = restore_no_ray(tmp_path / "in", tmp_path / "out", path, in_process=True)  # --task inpaint from the model
    assert result.returncode == 0, result.stderr
    restored = np.asarray(Image.open(tmp_path / "out" / "hole.png"))
    assert restored.shape == (64, 80, 3)  # opaque
    from spandrel import ModelLoader

    descriptor = ModelLoader().load_from_file(str(path)).eval()
    mask = torch.from_numpy((alpha == 0).astype(np.float32))[None, None]
    with torch.no_grad():
        reference = tensor_to_pixels(descriptor(pixels_to_tensor(image)[None], mask)[0].clamp(0, 1))
    assert np.abs(restored.astype(int) - reference.astype(int)).max() <= 1
    # A batch: spandrel's masked call takes one image at a time, so the model calls it per image.
    model = load_checkpoint(path).model
    images = torch.rand(2, 3, 24, 32, generator=torch.Generator().manual_seed(1))
    masks = torch.zeros(2, 1, 24, 32)
    masks[0, :, 4:10, 4:12], masks[1, :, 12:20, 16:30] = 1, 1
    with torch.inference_mode():
        batched = model(images, masks)
        assert torch.equal(batched, torch.cat([model(images[i : i + 1], masks[i : i + 1]) for i in range(2)]))


def test_a_community_model_is_a_restoration_model_run_by_spandrels_call(model_files: dict[str, Path]) -> None:
    from spandrel import ModelLoader

    from restoration.models.interface import RestorationModel

    checkpoint = load_checkpoint(model_files["esrgan-x4"])
    model = checkpoint.model
    assert isinstance(model, RestorationModel) and model.model_id == checkpoint.model_id
    assert model.describe() == {}
    descriptor = ModelLoader().load_from_file(str(model_files["esrgan-x4"])).eval()
    assert set(model.export_state_dict()) == set(descriptor.model.state_dict())
    x = torch.rand(2, 3, 13, 17, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():  # eval mode: spandrel's public call (padding, clamp)
        inferred = model(x)
        assert torch.equal(inferred, descriptor(x)) and inferred.shape == (2, 3, 52, 68)
    model.train()  # training mode: the network itself, with gradients and without the clamp
    trained = model(x)
    assert trained.requires_grad and torch.allclose(trained.detach().clamp(0, 1), inferred, atol=1e-6)


def test_architectures_whose_spandrel_call_does_more_are_not_fine_tuned(tmp_path: Path) -> None:
    from spandrel.architectures.MixDehazeNet import MixDehazeNet

    from restoration.finetune.settings import load_train_config
    from restoration.finetune.trainer import initial_model
    from restoration.models.checkpoint import CheckpointError

    torch.manual_seed(0)
    path = save_model(MixDehazeNet(embed_dims=[8, 16, 32, 16, 8], depths=[1, 1, 1, 1, 1]).eval(),
                      tmp_path / "dehaze.pth")
    config = load_train_config("general", overrides=["steps=2"])
    with pytest.raises(CheckpointError, match=r"^--init .*dehaze\.pth: MixDehazeNet models cannot be fine-tuned here"):
        initial_model(config, path)
    model = load_checkpoint(path).model  # it restores, through spandrel's call
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        assert model(x).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="MixDehazeNet models cannot be fine-tuned"):
        model.train()(x)


BAD_MODELS = {
    "evil.pth": "is refused: it holds Python objects other than tensors (it asks for posix.system)",
    "notes.pth": "is not a model weight file",
    "esrgan-x4": "is a 4x super-resolution model (ESRGAN), but --task is 'denoise'",
}


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("echo this must never run",))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("bad", list(BAD_MODELS))
def test_bad_model_files_are_one_line_and_exit_2_before_ray(bad: str, model_files: dict[str, Path], inputs: Path,
                                                            tmp_path: Path) -> None:
    if bad == "evil.pth":
        path = tmp_path / bad
        torch.save({"weight": torch.zeros(2), "payload": _Payload()}, path)
    elif bad == "notes.pth":
        path = tmp_path / bad
        path.write_text("these are my notes, not a model\n")
    else:
        path = model_files[bad]
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "jobs.restore", "--input", str(inputs), "--output",
                             str(tmp_path / "out"), "--model", str(path), "--task", "denoise"],
                            cwd=PROJECT_ROOT, env=no_ray_environment(tmp_path), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and BAD_MODELS[bad] in lines[0], result.stderr
    assert "this must never run" not in result.stdout + result.stderr
    assert not (tmp_path / "ray-tmp").exists() and time.monotonic() - started < 60  # Ray never started


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.timeout(600)
def test_a_community_model_fine_tunes_on_s3_resumes_on_ray_train_after_a_kill_and_exports_back(
    tmp_path: Path, s3_bucket: str
) -> None:
    """A small random-weight ESRGAN x4 as --init, its images, checkpoints and model on S3. A run
    begun without Ray is killed (SIGKILL) after its first checkpoint; the Ray Train job (2 workers
    reading the images from S3 with the AWS_* variables they inherited) goes on from that
    checkpoint, as a Ray run that stopped would, to more steps than the first run asked for, and
    its validation PSNR rises. The model restores like any checkpoint, no credential is in its
    logs or files, and its export is a .safetensors file that spandrel loads back with the same
    outputs. (Both executors write one run layout, on S3 too.)"""
    from skimage import data
    from spandrel import ModelLoader
    from spandrel.architectures.ESRGAN import ESRGAN

    from local.processes import kill_tree
    from restoration.io import storage

    torch.manual_seed(0)
    init = save_model(ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=2, scale=4).eval(), tmp_path / "x4.pth")
    photos = {f"train/{name}.png": getattr(data, name)()[:192, :192]
              for name in ("astronaut", "chelsea", "coffee", "rocket")}
    photos["val/astronaut.png"] = data.astronaut()[256:352, 256:352]
    for key, pixels in photos.items():
        encoded = io.BytesIO()
        Image.fromarray(pixels).save(encoded, format="PNG")
        storage.write_bytes(f"s3://{s3_bucket}/{key}", encoded.getvalue())
    run_uri = f"s3://{s3_bucket}/runs/x4"
    args = ["--task", "sr", "--init", str(init), "--train-images", f"s3://{s3_bucket}/train", "--val-images",
            f"s3://{s3_bucket}/val", "--storage", f"s3://{s3_bucket}/runs", "--name", "x4",
            "--set", "data.crop_size=64", "--set", "data.batch_size=4", "--set", "log_interval=5",
            "--set", "checkpoint_interval=10", "--set", "validation.limit=1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # AWS_* of the session's S3 server
    env["PYTHONUNBUFFERED"] = "1"
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen([sys.executable, "-m", "jobs.finetune", *args, "--steps", "25", "--workers", "1",
                                  "--no-ray"], cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not storage.exists(f"{run_uri}/checkpoint_step_00000010/trainer_state.pt"):
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()
            time.sleep(0.05)
    finally:
        kill_tree(first.pid)
        first.wait(timeout=30)
    assert not storage.exists(f"{run_uri}/model/model.json")  # killed before the end
    assert storage.exists(f"{run_uri}/config.yaml")

    second = subprocess.run([sys.executable, "-m", "jobs.finetune", *args, "--steps", "30", "--workers", "2"],
                            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=500)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    resumed = re.search(r"resumed from step (10|20) of 30 \(checkpoint checkpoint_step_000000\1\)", second.stdout)
    assert resumed, second.stdout
    assert "changed settings: steps" in second.stdout, second.stdout
    first_log = (tmp_path / "first.log").read_text()
    first_psnr = [float(v) for v in re.findall(r"val (\d+\.\d+) dB", first_log)]
    last_psnr = [float(v) for v in re.findall(r"val (\d+\.\d+) dB", second.stdout)]
    assert first_psnr and last_psnr and last_psnr[-1] > first_psnr[0], (first_psnr, last_psnr)

    local = tmp_path / "model"
    local.mkdir()
    for name in ("model.safetensors", "model.json", "metrics.csv", "config.yaml"):
        (local / name).write_bytes(storage.read_bytes(f"{run_uri}/model/{name}"))
    checkpoint = load_checkpoint(local)
    provenance = checkpoint.metadata.provenance
    assert checkpoint.model.traits.architecture == "ESRGAN" and provenance["steps"] == 30
    assert provenance["resumed_at"] == [int(resumed[1])] and provenance["hardware"].startswith("2 x cpu")
    assert provenance["train_images"] == f"s3://{s3_bucket}/train" and provenance["train_image_count"] == 4
    steps = [int(row["step"]) for row in csv.DictReader((local / "metrics.csv").read_text().splitlines())]
    assert steps == list(range(5, 31, 5)), steps  # every step once, across the two runs
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    for text in (first_log, second.stdout, second.stderr, (local / "model.json").read_text(),
                 (local / "config.yaml").read_text()):
        assert secret not in text

    exported = tmp_path / "x4-finetuned.safetensors"
    from jobs.cli import main

    assert main(["export", str(local), "--format", "state-dict", "--output", str(exported)]) == 0
    descriptor = ModelLoader().load_from_file(str(exported)).eval()
    image = pixels_to_tensor(data.coffee()[:40, :48])
    with torch.no_grad():
        theirs = descriptor(image[None])[0]
    ours = Predictor(checkpoint.model, PredictorConfig(tile=0, precision="fp32"), device="cpu").restore(image)
    assert descriptor.architecture.id == "ESRGAN" and descriptor.scale == 4
    assert (theirs - ours.clamp(0, 1)).abs().max() < 1e-4


@pytest.mark.s3
@pytest.mark.timeout(300)
def test_a_community_model_file_on_s3(model_files: dict[str, Path], inputs: Path, tmp_path: Path,
                                      s3_bucket: str) -> None:
    """--model s3://.../FILE.safetensors is read from the store like a checkpoint folder; a
    missing one is one line."""
    from restoration.io import storage
    from restoration.models.checkpoint import CheckpointError
    from restoration.restore.run import LocalRestoreExecutor, run_restore
    from restoration.restore.settings import RestoreConfig

    uri = f"s3://{s3_bucket}/models/compact-x4.safetensors"
    storage.write_bytes(uri, model_files["compact-x4"].read_bytes())
    summary = run_restore(str(inputs), str(tmp_path / "out"), task="sr", model=uri, config=RestoreConfig(),
                          executor=LocalRestoreExecutor(), echo=lambda line: None)
    assert summary.counts.ok == 3 and summary.model.architecture == "Compact"
    with pytest.raises(CheckpointError, match="model file not found: s3://.*/models/missing.pth"):
        run_restore(str(inputs), str(tmp_path / "out2"), task="sr", model=f"s3://{s3_bucket}/models/missing.pth",
                    config=RestoreConfig(), executor=LocalRestoreExecutor(), echo=lambda line: None)

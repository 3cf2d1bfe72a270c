"""Checks before Ray starts: a bad setting or the user's storage error (unreachable endpoint,
missing bucket, denied access) ends ``restore`` with exit code 2 and one line on stderr, before
any Ray instance exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from restore_images import png
from s3_fixtures import s3_bucket, s3_server  # noqa: F401  (pytest fixtures)

from jobs.settings import (
    RayRestoreConfig as RestoreConfig,  # the restore command's settings
)
from restoration import config as config_lib

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# The console command `restoration`, from its installed entry point.
CONSOLE_COMMAND = """
import sys
from importlib.metadata import entry_points
(command,) = entry_points(group="console_scripts", name="restoration")
sys.exit(command.load()(sys.argv[1:]))
"""


def run_restore_process(arguments: list[str], tmp_path: Path, *, console: bool = False,
                        environment: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m jobs.restore ARGUMENTS`` (or ``restoration restore ARGUMENTS``) in a new
    process, with no Ray address and Ray's temp folder under ``tmp_path``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env |= environment or {}
    env["RAY_TMPDIR"] = str(tmp_path / "ray-tmp")
    command = [sys.executable, "-c", CONSOLE_COMMAND, "restore"] if console else [sys.executable, "-m", "jobs.restore"]
    return subprocess.run(command + arguments, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT, env=env)


def assert_refused_before_ray(result: subprocess.CompletedProcess[str], tmp_path: Path, *expected: str) -> str:
    """Exit 2, at most 3 lines on stderr, one of them the error naming ``expected``; no Ray
    started (it would have made a session folder under RAY_TMPDIR and said so on stderr)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert 1 <= len(lines) <= 3, result.stderr
    [error] = [line for line in lines if "error:" in line]
    for text in expected:
        assert text in error, error
    assert not (tmp_path / "ray-tmp").exists() and "Ray instance" not in result.stderr
    return error


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    from skimage import data

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(png(data.astronaut()[:64, :64]))
    return tmp_path / "in"


@pytest.mark.timeout(1500)
def test_a_bad_setting_is_one_line_and_exit_2_before_ray_starts(tmp_path: Path, images: Path) -> None:
    arguments = ["--input", str(images), "--output", str(tmp_path / "out"), "--task", "denoise",
                 "--set", "predictor.tile=7"]
    error = assert_refused_before_ray(run_restore_process(arguments, tmp_path), tmp_path,
                                      "predictor.tile", "7", "0 (no tiling) or more than 2 * predictor.overlap = 64")
    assert error.startswith("restore: error:")
    result = run_restore_process(arguments[:-1] + ["pipeline.min_actors=0"], tmp_path, console=True)
    assert_refused_before_ray(result, tmp_path, "pipeline.min_actors must be >= 1, got 0")
    assert not (tmp_path / "out").exists()


BAD_SETTINGS = {
    "input.max_pixels=0": "input.max_pixels must be >= 1",
    "input.max_bytes=-5": "input.max_bytes must be >= 1",
    "input.uri_column=' '": "input.uri_column",
    "output.format=gif": "output.format 'gif'",
    "output.quality=0": "output.quality must be in 1..100",
    "predictor.device=gpu": "predictor.device must be cpu, cuda, cuda:N or null",
    "predictor.tile=-1": "predictor.tile must be 0 (no tiling) or more than 2 * predictor.overlap",
    "predictor.overlap=-2": "predictor.overlap must be >= 0",
    "predictor.batch_size=0": "predictor.batch_size must be >= 1",
    "predictor.threads=0": "predictor.threads must be >= 1",
    "predictor.ensemble=3": "predictor.ensemble must be one of 1, 2, 4, 8",
    "predictor.amp=false": "unknown config key predictor.amp",  # one spelling: predictor.precision=fp32
    "predictor.channels_last=maybe": "predictor.channels_last: expected true or false",
    "predictor.pass_pixels=-1": "predictor.pass_pixels must be >= 0",
    "predictor.min_tile=0": "predictor.min_tile must be >= 1",
    "predictor.precision=fp16": "predictor.precision must be one of auto, fp32, bf16, got 'fp16'",
    "predictor.precision=BF16": "predictor.precision must be one of auto, fp32, bf16",
    "predictor.tile_batch_size=0": "predictor.tile_batch_size must be >= 1 (tiles per forward pass) or null",
    "predictor.tile_batch_size=-3": "predictor.tile_batch_size must be >= 1",
    "predictor.tile_batch_size=two": "predictor.tile_batch_size",
    "pipeline.batch_size=0": "pipeline.batch_size must be >= 1",
    "pipeline.read_batch_size=0": "pipeline.read_batch_size must be >= 1",
    "pipeline.min_actors=0": "pipeline.min_actors must be >= 1",
    "pipeline.max_actors=0": "pipeline.max_actors must be >= pipeline.min_actors (1)",
    "pipeline.cpus_per_actor=-1": "pipeline.cpus_per_actor must be a number >= 0",
    "pipeline.gpus_per_actor=.nan": "pipeline.gpus_per_actor must be a number >= 0",
    "pipeline.cpus_per_task=0": "pipeline.cpus_per_task must be a number > 0",
    "pipeline.use_gpu=2": "pipeline.use_gpu: expected true or false",
    "manifest.flush_rows=0": "manifest.flush_rows must be >= 1",
    "manifest.flush_seconds=0": "manifest.flush_seconds must be a number > 0",
}


@pytest.mark.parametrize("setting", sorted(BAD_SETTINGS))
def test_every_setting_is_checked_when_the_config_loads(setting: str) -> None:
    with pytest.raises(ValueError) as raised:
        config_lib.load_config(RestoreConfig, overrides=[setting])
    assert BAD_SETTINGS[setting] in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.timeout(1500)
def test_an_unreachable_endpoint_is_one_line_and_exit_2_before_ray_starts(tmp_path: Path) -> None:
    environment = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "restoration-test",
                   "AWS_SECRET_ACCESS_KEY": "not-a-real-secret-key"}
    result = run_restore_process(["--input", "s3://photos/in/", "--output", "s3://photos/out/", "--task", "denoise"],
                                 tmp_path, environment=environment)
    error = assert_refused_before_ray(result, tmp_path, "s3://photos/in",
                                      "cannot reach the S3 endpoint http://127.0.0.1:9 (AWS_ENDPOINT_URL)")
    assert "not-a-real-secret-key" not in result.stderr + result.stdout and error.startswith("restore: error:")


@pytest.mark.s3
@pytest.mark.timeout(1500)
def test_a_missing_bucket_and_denied_access_are_one_line_and_exit_2(
    tmp_path: Path, images: Path, s3_server, s3_bucket: str  # noqa: F811
) -> None:
    output = ["--output", f"s3://{s3_bucket}/out", "--task", "denoise"]
    result = run_restore_process(["--input", "s3://no-such-bucket-here/in", *output], tmp_path)
    assert_refused_before_ray(result, tmp_path, "bucket no-such-bucket-here does not exist (s3://no-such-bucket-here/in)")

    result = run_restore_process(["--input", str(images), "--output", "s3://no-such-bucket-here/out", "--task",
                                  "denoise", "--no-ray"], tmp_path, console=True)
    assert_refused_before_ray(result, tmp_path, "bucket no-such-bucket-here does not exist")

    s3_server.client().put_object(Bucket=s3_bucket, Key="in/a.png", Body=(images / "a.png").read_bytes())
    wrong_secret = {"AWS_SECRET_ACCESS_KEY": "wrong-secret-key-for-this-test"}
    result = run_restore_process(["--input", f"s3://{s3_bucket}/in", *output], tmp_path, environment=wrong_secret)
    assert_refused_before_ray(result, tmp_path, f"s3://{s3_bucket}/in", "access denied")
    assert "wrong-secret-key-for-this-test" not in result.stderr


def test_precision_and_tile_batch_size_reach_the_predictor() -> None:
    import torch

    from restoration.models.fused import ModelConfig, build_model
    from restoration.restore.run import make_predictor

    torch.manual_seed(0)
    model = build_model(ModelConfig(task="denoise", widths=(8, 8, 16, 16, 24, 24)), backbone_weights=None)
    config = config_lib.load_config(RestoreConfig, overrides=["predictor.precision=fp32", "predictor.tile_batch_size=3"])
    # Both executors build their Predictor with make_predictor (jobs/restore.py's FusedActor too).
    predictor = make_predictor(model, config.predictor, device="cpu")
    assert (predictor.precision, predictor.tile_batch_size) == ("fp32", 3)
    default = make_predictor(model, RestoreConfig().predictor, device="cpu")
    assert default.tile_batch_size == default.batch_size == 4 and default.precision in ("fp32", "bf16")

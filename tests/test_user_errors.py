"""The user's own mistakes -- a storage endpoint that does not answer, a bad setting -- end every
command with one line on stderr and exit code 2, in seconds, without starting (or even
importing) Ray."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def no_ray(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import ray`` fails, and S3 points at a closed port."""
    blocked = tmp_path / "blocked" / "ray"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('ray must not be imported by this command')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(blocked.parent), str(ROOT), env.get("PYTHONPATH", "")])
    env.update(AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="secret-key-x",
               AWS_REGION="us-east-1")
    return env


def run(args: list[str], env: dict[str, str]) -> tuple[int, str, float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "jobs.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    return done.returncode, done.stderr.strip(), time.monotonic() - start


@pytest.mark.timeout(150)
def test_evaluate_with_unreachable_endpoint(no_ray: dict[str, str]) -> None:
    code, err, seconds = run(["evaluate", "--model", "identity", "--task", "denoise", "--images", "s3://photos/val/"],
                             no_ray)
    assert code == 2, err
    assert len(err.splitlines()) <= 3 and "cannot reach the S3 endpoint http://127.0.0.1:9" in err, err
    assert "secret-key-x" not in err and seconds < 60


@pytest.mark.timeout(150)
def test_finetune_with_unreachable_endpoint(no_ray: dict[str, str], tmp_path: Path) -> None:
    code, err, seconds = run(["finetune", "--task", "denoise", "--train-images", "s3://photos/train/",
                              "--val-images", "s3://photos/val/", "--storage", str(tmp_path / "runs"),
                              "--name", "x"], no_ray)
    assert code == 2, err
    assert len(err.splitlines()) <= 3 and "cannot reach the S3 endpoint http://127.0.0.1:9" in err, err
    assert "--train-images" in err and seconds < 60


@pytest.mark.timeout(150)
@pytest.mark.parametrize(("setting", "message"), [
    ("degradation.jpeg_probability=2", r"degradation.jpeg_probability must lie within \[0, 1\], got 2"),
    ("validation.case=nope", r"unknown case 'nope'"),
    ("validation.protocol={quality: 5}", r"unknown protocol setting 'quality'"),
])
def test_finetune_bad_setting_is_one_line(no_ray: dict[str, str], tmp_path: Path, setting: str, message: str) -> None:
    import re

    code, err, _ = run(["finetune", "--task", "denoise", "--train-images", str(tmp_path), "--val-images", str(tmp_path),
                        "--storage", str(tmp_path / "runs"), "--name", "x", "--set", setting], no_ray)
    assert code == 2 and len(err.splitlines()) == 1 and re.search(message, err), err

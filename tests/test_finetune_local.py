"""``restoration finetune --no-ray``: one worker in this process, with ``import ray`` failing. It
fine-tunes, writes the run layout the Ray job writes (checkpoint folders, config.yaml, model/),
resumes after a SIGKILL from its latest complete checkpoint, and stops cleanly on SIGTERM."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from processes import descendants, stop_pids
from s3_fixtures import s3_bucket, s3_server  # noqa: F401  (pytest fixtures)
from test_restore_local import NO_RAY_COMMAND, PROJECT_ROOT, no_ray_environment

from restoration.finetune.checkpoints import (
    latest_training_checkpoint,
    training_checkpoints,
)
from restoration.models.checkpoint import load_checkpoint

TINY = ["model.widths=[8,8,16,16,24,24]", "data.crop_size=64", "data.batch_size=4", "optim.lr=5e-3",
        "degradation.sigma_range=[25,25]", "validation.limit=1", "log_interval=5", "backbone_weights=null",
        "keep_checkpoints=2"]
CHECKPOINT_FILES = {"model.safetensors", "model.json", "trainer_state.pt", "config.yaml"}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    (root / "train").mkdir()
    (root / "val").mkdir()
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        Image.fromarray(getattr(data, name)()[:160, :160]).save(root / "train" / f"{name}.png")
    Image.fromarray(data.astronaut()[200:296, 200:296]).save(root / "val" / "astronaut.png")
    return {"train": root / "train", "val": root / "val"}


def command(images: dict[str, Path], runs: Path, *, steps: int, extra: list[str] = ()) -> list[str]:
    args = [sys.executable, "-c", NO_RAY_COMMAND, "finetune", "--no-ray", "--task", "denoise",
            "--train-images", str(images["train"]), "--val-images", str(images["val"]), "--steps", str(steps),
            "--storage", str(runs), "--name", "local"]
    for override in [*TINY, *extra]:
        args += ["--set", override]
    return args


def start(args: list[str], log: Path, env: dict[str, str]) -> tuple[subprocess.Popen, object]:
    handle = log.open("w")
    return subprocess.Popen(args, cwd=PROJECT_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True), handle


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_ray_finetune_resumes_after_a_kill_stops_on_sigterm_and_writes_the_run_layout(
        images: dict[str, Path], tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_uri = str(runs / "local")
    env = {**no_ray_environment(tmp_path), "PYTHONUNBUFFERED": "1"}
    args = command(images, runs, steps=40, extra=["checkpoint_interval=10"])

    # 1. SIGKILL once a complete checkpoint exists (its trainer_state.pt is written last).
    process, handle = start(args, tmp_path / "first.log", env)
    try:
        deadline = time.monotonic() + 180
        while process.poll() is None and time.monotonic() < deadline and not training_checkpoints(run_uri):
            time.sleep(0.1)
        assert process.poll() is None, (tmp_path / "first.log").read_text()
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        stop_pids(descendants(process.pid) | ({process.pid} if process.poll() is None else set()), grace_seconds=2)
        handle.close()
    first = (tmp_path / "first.log").read_text()
    assert "1 worker (cpu, no Ray)" in first, first
    assert not (runs / "local" / "model").exists(), first
    killed_at = training_checkpoints(run_uri)[-1][0]
    assert killed_at % 10 == 0 and killed_at < 40

    # 2. SIGTERM after a step of its own: it checkpoints that step and exits 143, one line.
    process, handle = start(args, tmp_path / "second.log", env)
    try:
        deadline = time.monotonic() + 180
        while process.poll() is None and time.monotonic() < deadline:
            steps = [int(m[1]) for m in re.finditer(r"step +(\d+)/40  loss", (tmp_path / "second.log").read_text())]
            if steps and steps[-1] > killed_at:
                break
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGTERM)
        code = process.wait(timeout=60)
    finally:
        stop_pids(descendants(process.pid) | ({process.pid} if process.poll() is None else set()), grace_seconds=2)
        handle.close()
    second = (tmp_path / "second.log").read_text()
    assert code == 143, second
    assert f"resumed from step {killed_at} of 40" in second, second
    stopped_at = int(re.search(r"stopped at step (\d+): checkpoint_step_", second)[1])
    assert killed_at < stopped_at < 40, second
    assert latest_training_checkpoint(run_uri) == str(runs / "local" / f"checkpoint_step_{stopped_at:08d}")
    assert "Traceback" not in second
    assert re.search(rf"fine-tuning stopped by SIGTERM at step {stopped_at} of 40 \(checkpoint .*\); run the same "
                     r"command again to continue", second), second

    # 3. The same command finishes the run.
    third = subprocess.run(args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert third.returncode == 0, third.stdout + third.stderr
    assert f"resumed from step {stopped_at} of 40" in third.stdout, third.stdout
    summary = json.loads(third.stdout.split("done: ", 1)[1].splitlines()[0])
    assert summary["step"] == 40 and summary["model"] == str(runs / "local" / "model")

    # The Ray job's layout: config.yaml, complete checkpoint folders (at most keep_checkpoints=2
    # by validation PSNR, and the latest), model/ with the run's metrics and curve.
    assert (runs / "local" / "config.yaml").is_file()
    kept = training_checkpoints(run_uri)
    assert kept[-1][0] == 40 and len(kept) <= 3, kept
    for _, uri in kept:
        assert {p.name for p in Path(uri).iterdir()} == CHECKPOINT_FILES, uri
    model_dir = runs / "local" / "model"
    assert {p.name for p in model_dir.iterdir()} == {"model.safetensors", "model.json", "config.yaml", "metrics.csv",
                                                      "training_curve.png"}
    provenance = load_checkpoint(model_dir).metadata.provenance
    assert provenance["steps"] == 40 and provenance["resumed_at"] == [killed_at, stopped_at]
    assert provenance["hardware"].startswith("1 x cpu") and provenance["workers"] == 1
    steps = [int(row["step"]) for row in csv.DictReader((model_dir / "metrics.csv").read_text().splitlines())]
    assert steps == sorted(set(range(5, 41, 5)) | {stopped_at}), steps  # every step once, the stop too


@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_ray_finetune_checkpoints_on_s3_and_resumes_from_there(images: dict[str, Path], s3_bucket: str,
                                                                  capsys: pytest.CaptureFixture) -> None:
    from jobs import finetune

    runs = f"s3://{s3_bucket}/runs"
    args = ["--no-ray", "--task", "denoise", "--train-images", str(images["train"]), "--val-images",
            str(images["val"]), "--storage", runs, "--name", "on-s3", "--set", "checkpoint_interval=2"]
    for override in TINY:
        args += ["--set", override]
    assert finetune.main([*args, "--steps", "4"]) == 0
    assert [step for step, _ in training_checkpoints(f"{runs}/on-s3")] == [2, 4]
    capsys.readouterr()
    assert finetune.main([*args, "--steps", "6"]) == 0  # downloads checkpoint 4 from S3 and goes on
    out = capsys.readouterr().out
    assert f"run on-s3 exists: resuming from {runs}/on-s3/checkpoint_step_00000004" in out
    assert "resumed from step 4 of 6" in out
    assert load_checkpoint(f"{runs}/on-s3/model").metadata.provenance["resumed_at"] == [4]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_resume_from_an_earlier_checkpoint_abandons_the_later_ones(images: dict[str, Path], tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """As when Ray Train restarts a lost worker group from its latest registered checkpoint (10)
    while the run folder holds a later one of the lost attempt (20): the resumed attempt's stop
    (18) is the run's latest checkpoint, named by the stop line and resumed from by the same
    command; 20 is never resumed from, named or kept. (Deterministic: the session chooses the
    checkpoint as Ray Train does, and stops at a fixed step.)"""
    import contextlib

    from restoration.finetune.run import (
        LocalFinetuneExecutor,
        Resume,
        _LocalSession,
        latest_checkpoint,
        plan_finetune,
        run_finetune,
        train_worker,
    )

    runs = tmp_path / "runs"
    run = runs / "timeline"

    def plan(steps: int):
        return plan_finetune("denoise", train_images=str(images["train"]), val_images=str(images["val"]),
                             storage_uri=str(runs), name="timeline", steps=steps,
                             overrides=[*TINY, "checkpoint_interval=10"])

    assert run_finetune(plan(20), LocalFinetuneExecutor()) == 0  # checkpoints 10 and 20
    assert [step for step, _ in training_checkpoints(str(run))] == [10, 20]

    class RestartedFromStep10(_LocalSession):
        """Resumes from checkpoint 10 as Ray Train's get_checkpoint() would, and is asked to stop
        after its 8th step (step 18)."""

        asked = 0

        def resume(self):
            name = "checkpoint_step_00000010"
            return contextlib.nullcontext(Resume(str(run / name), name))

        def should_stop(self) -> bool:
            self.asked += 1
            return self.asked >= 8

    restarted = plan(40)
    capsys.readouterr()
    train_worker(restarted, RestartedFromStep10(restarted, LocalFinetuneExecutor().device, stop=None))
    out = capsys.readouterr().out
    assert "resumed from step 10 of 40 (checkpoint checkpoint_step_00000010)" in out, out
    assert "stopped at step 18: checkpoint_step_00000018 saved" in out, out
    assert latest_checkpoint(restarted) == str(run / "checkpoint_step_00000018")
    assert [step for step, _ in training_checkpoints(str(run))] == [10, 18]  # 20 deleted, not kept as a best
    assert "deleted 1 checkpoint(s) above step 10, of an abandoned attempt: checkpoint_step_00000020" in out, out

    # The same command names 18 and goes on from there.
    assert run_finetune(plan(40), LocalFinetuneExecutor()) == 0
    out = capsys.readouterr().out
    assert f"run timeline exists: resuming from {run / 'checkpoint_step_00000018'}" in out, out
    assert "resumed from step 18 of 40" in out, out
    assert load_checkpoint(run / "model").metadata.provenance["resumed_at"] == [10, 18]

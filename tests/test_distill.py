"""``restoration distill`` without Ray: the seeded sample and its lists, the teacher's restore job
(real Real-ESRGAN weights: realesr-animevideov3), the student trained fresh on the manifest's
pairs, its report (agreement beside bicubic, speed) and page; a kill and a SIGTERM, each followed
by the same command going on. (On Ray, with 2 Train workers: tests/test_train_on_archive_ray.py.)"""

from __future__ import annotations

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

from restoration.distill import draw_sample, record_sample
from restoration.finetune.checkpoints import training_checkpoints

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TEACHER = "realesr-animevideov3"
SMALL = ["data.crop_size=64", "data.batch_size=4", "optim.lr=2e-3", "log_interval=5", "validation.interval=10",
         "checkpoint_interval=5"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six low-resolution photos, in a folder and a sub-folder."""
    from skimage import data

    root = tmp_path_factory.mktemp("archive")
    for index, name in enumerate(["astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry"]):
        image = Image.fromarray(getattr(data, name)()).convert("RGB").resize((64, 48), Image.BICUBIC)
        folder = root / ("scans" if index % 2 else "")
        folder.mkdir(exist_ok=True)
        image.save(folder / f"{name}.png")
    return root


def distill_args(archive: Path, storage: Path, name: str, *, steps: int) -> list[str]:
    args = ["distill", "--no-ray", "--teacher", TEACHER, "--student", "compact:feat=8,conv=2", "--images",
            str(archive), "--sample", "5", "--held-out", "2", "--steps", str(steps), "--storage", str(storage),
            "--name", name, "--speed-size", "32"]  # the teacher timed on a 32-px input, not 128: 16x less
    for setting in SMALL:
        args += ["--set", setting]
    return args


def test_the_sample_is_seeded_split_and_kept_by_the_run(tmp_path: Path) -> None:
    uris = [f"/a/{i:02d}.png" for i in range(20)]
    sample = draw_sample(uris, sample=6, held_out=2, seed=3)
    assert sample == draw_sample(list(reversed(uris)), sample=6, held_out=2, seed=3)  # the listing's order aside
    assert len(sample.train) == 4 and len(sample.held_out) == 2 and not set(sample.train) & set(sample.held_out)
    assert draw_sample(uris, sample=6, held_out=2, seed=4) != sample
    run = str(tmp_path / "run")
    listing = record_sample(run, sample)
    assert Path(listing).read_text().split() == sample.all
    assert record_sample(run, sample) == listing  # the same command again: the same sample
    with pytest.raises(ValueError, match="another sample"):
        record_sample(run, draw_sample(uris, sample=6, held_out=2, seed=4))
    with pytest.raises(ValueError, match="must exceed --held-out"):
        draw_sample(uris, sample=2, held_out=2)
    with pytest.raises(ValueError, match="holds 20 images"):
        draw_sample(uris, sample=21, held_out=2)


@pytest.mark.timeout(240)
def test_distill_trains_a_fresh_student_on_the_teachers_outputs(archive: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    from jobs.cli import main
    from restoration.models.checkpoint import load_checkpoint

    assert main(distill_args(archive, tmp_path / "runs", "d", steps=20)) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "d"
    held_out = (run / "sample" / "held-out.txt").read_text().split()
    # The teacher's restore job: a manifest, lossless x4 outputs of the 5 sampled images.
    outputs = sorted(p.relative_to(run / "teacher") for p in (run / "teacher").rglob("*.png"))
    assert len(outputs) == 5 and any(p.parts[0] == "scans" for p in outputs), outputs
    assert (run / "teacher" / "_manifest").is_dir()
    assert Image.open(run / "teacher" / outputs[0]).size == (256, 192)

    model = load_checkpoint(run / "model")
    provenance = model.metadata.provenance
    assert model.model.traits.architecture == "Compact" and model.model.traits.scale == 4
    assert provenance["teacher"] == TEACHER and provenance["licence"] == provenance["teacher_licence"] == "MIT"
    assert provenance["trained_on"].startswith("pairs: the outputs of the teacher")
    assert provenance["train_image_count"] == 3
    # The curve starts at the untrained student; training brought it closer to the teacher.
    start, end = provenance["validation_at_start"]["val_psnr"], provenance["validation"]["val_psnr"]
    assert end > start + 1, (start, end)

    report = json.loads((run / "distill.json").read_text())
    assert report["held_out"] == 2 and [i["input"] for i in report["images"]] == held_out
    agreement = report["agreement"]
    assert abs(agreement["student_psnr"] - end) < 0.01  # the report scores what validation scored
    assert agreement["bicubic_psnr"] > 15 and 0 < agreement["student_ssim"] <= 1
    speeds = report["seconds_per_input_megapixel"]
    assert speeds["teacher"] > 0 and speeds["student"] > 0
    assert report["speed_ratio"] == pytest.approx(speeds["teacher"] / speeds["student"])
    assert report["speed_ratio"] > 3  # 8 features and 2 convolutions against 64 and 16
    assert f"{agreement['student_psnr']:.2f} dB PSNR" in out and "bicubic" in out
    page = (run / "compare.html").read_text()
    assert TEACHER in page and "model" in page and page.count("<img") >= 4


def start(args: list[str], log: Path) -> tuple[subprocess.Popen, object]:
    handle = log.open("w")
    process = subprocess.Popen([sys.executable, "-m", "jobs.cli", *args], cwd=PROJECT_ROOT, stdout=handle,
                               stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                               start_new_session=True)
    return process, handle


def wait_for(condition, process: subprocess.Popen, log: Path, seconds: float = 150) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_distill_resumes_after_a_kill_and_stops_cleanly_on_sigterm(archive: Path, tmp_path: Path) -> None:
    storage = tmp_path / "runs"
    run = str(storage / "k")
    args = distill_args(archive, storage, "k", steps=25)
    # 1. SIGKILL once the student has a checkpoint.
    process, handle = start(args, tmp_path / "first.log")
    try:
        wait_for(lambda: training_checkpoints(run), process, tmp_path / "first.log")
        process.kill()
        process.wait(timeout=30)
    finally:
        handle.close()
    killed_at = training_checkpoints(run)[-1][0]
    # 2. The same command: the teacher's work is skipped, the student resumes; SIGTERM stops it at a checkpoint.
    process, handle = start(args, tmp_path / "second.log")
    try:
        wait_for(lambda: any(step > killed_at for step, _ in training_checkpoints(run)), process,
                 tmp_path / "second.log")
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    finally:
        handle.close()
    second = (tmp_path / "second.log").read_text()
    assert code == 143, second
    assert "restored 0 of 5 inputs (errors 0, skipped 5)" in second, second
    assert f"resumed from step {killed_at} of 25" in second, second
    stopped_at = int(re.search(r"stopped at step (\d+): checkpoint_step_", second)[1])
    assert "run the same command again to continue" in second and "Traceback" not in second
    # 3. It finishes, with the report.
    third = subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=PROJECT_ROOT, capture_output=True,
                           text=True, timeout=200)
    assert third.returncode == 0, third.stdout + third.stderr
    assert f"resumed from step {stopped_at} of 25" in third.stdout
    assert (storage / "k" / "distill.json").is_file()


def test_a_bad_flag_is_one_line_and_exit_2_before_any_job(archive: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    from jobs.cli import main

    base = distill_args(archive, tmp_path / "runs", "bad", steps=5)
    for flag, value, message in (("--speed-size", "4", "--speed-size must be at least 16 pixels, got 4"),
                                 ("--max-failures", "-1", "--max-failures must be >= 0, got -1")):
        assert main([*base, flag, value]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"restoration distill: error: {message}"], err
    assert not (tmp_path / "runs").exists()  # nothing written, no teacher run

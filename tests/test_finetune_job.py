"""The Ray Train fine-tuning job: bad input refused before Ray starts, a 2-worker CPU run whose model
beats the noisy input, SIGINT, a lost Train worker and SIGTERM, each followed by a resume. (A kill
and resume of the same run logic without Ray: tests/test_finetune_local.py. A run begun without
Ray on S3 that goes on on Ray Train from its S3 checkpoint: tests/test_community_models.py, with a
community model.)

Tiny models (widths 8-24), 64-pixel crops and a few dozen steps keep each run short; Ray itself
(start, worker group, process group) costs most of the time. The runs that must own their Ray
instance (killed drivers) run the job as a
subprocess; the others share one local instance for the module.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import processes
import pytest

from jobs import finetune
from restoration.finetune.checkpoints import latest_training_checkpoint
from restoration.models.checkpoint import save_checkpoint
from restoration.models.fused import ModelConfig, build_model
from restoration.quality.evaluate import evaluate
from restoration.tasks.specs import get_task

pytestmark = pytest.mark.ray

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.widths=[8,8,16,16,24,24]", "data.crop_size=64", "data.batch_size=4", "optim.lr=5e-3",
    "degradation.sigma_range=[25,25]", "validation.limit=1", "log_interval=5",
]


def job_args(train: str | Path, val: str | Path, storage_uri: str | Path, name: str, *, steps: int,
             workers: int = 2, extra: list[str] | None = None, max_failures: int = 1) -> list[str]:
    args = ["--task", "denoise", "--train-images", str(train), "--val-images", str(val), "--steps", str(steps),
            "--workers", str(workers), "--storage", str(storage_uri), "--name", name,
            "--max-failures", str(max_failures)]
    for override in TINY + (extra or []):
        args += ["--set", override]
    return args


def read_metrics(text: str) -> list[dict]:
    return list(csv.DictReader(text.splitlines()))


def job_environment() -> dict[str, str]:
    """This process's environment for a job subprocess, minus anything pointing at another Ray."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL a job and every process below it (Ray actors run in process groups of their own)."""
    processes.kill_tree(process.pid)
    process.wait(timeout=60)


def run_job(args: list[str], *, timeout: float) -> subprocess.CompletedProcess:
    """``python -m jobs.finetune ARGS`` in its own session, killed whole on timeout."""
    process = subprocess.Popen([sys.executable, "-m", "jobs.finetune", *args], cwd=PROJECT_ROOT,
                               env=job_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process)
        raise
    finally:
        if process.poll() is None:
            kill_tree(process)
    return subprocess.CompletedProcess(process.args, process.returncode, output, "")


@pytest.fixture(scope="module")
def train_dir(cbsd432_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six CBSD432 photos."""
    root = tmp_path_factory.mktemp("cbsd432-few")
    for path in sorted(cbsd432_dir.iterdir())[:6]:
        shutil.copy(path, root / path.name)
    return root


@pytest.fixture(scope="module")
def val_dir(cbsd68_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three CBSD68 photos."""
    root = tmp_path_factory.mktemp("cbsd68-few")
    for path in sorted(cbsd68_dir.iterdir())[:3]:
        shutil.copy(path, root / path.name)
    return root


# --------------------------------------------------------------------------------------------
# Bad input: one line, exit code 2, Ray never started


@pytest.fixture()
def small_dirs(tmp_path: Path, train_dir: Path, val_dir: Path) -> dict[str, Path]:
    empty = tmp_path / "empty"
    empty.mkdir()
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "notes.txt").write_text("not an image")
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    for name in ("a.png", "b.jpg", "c.png"):
        (garbage / name).write_bytes(b"definitely not an image")
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("x")
    wide = tmp_path / "wide-model"
    save_checkpoint(build_model(ModelConfig(widths=(16, 24, 32, 48, 64, 96)), backbone_weights=None), wide)
    return {"train": train_dir, "val": val_dir, "empty": empty, "texts": texts, "garbage": garbage,
            "file": not_a_folder, "wide": wide, "storage": tmp_path / "runs"}


BAD_INPUT = [
    ("missing-train", {"train": "nowhere"}, [], r"--train-images .*nowhere: no such file or directory"),
    ("empty-train", {"train": "empty"}, [], r"--train-images .*empty holds no images \(\.bmp, \.jpeg"),
    ("no-images-in-train", {"train": "texts"}, [], r"--train-images .*texts holds no images"),
    ("unreadable-train", {"train": "garbage"}, [], r"--train-images: none of the 3 images could be used \(.*a\.png"),
    ("missing-val", {"val": "nowhere"}, [], r"--val-images .*nowhere: no such file or directory"),
    ("unreadable-val", {"val": "garbage"}, [], r"--val-images: none of the 1 images could be used"),
    ("storage-not-writable", {"storage": "file-child"}, [], r"--storage .*a-file/runs cannot be written"),
    ("init-other-architecture", {}, ["--init", "WIDE"], r"--init: .*widths=\[16, 24, 32, 48, 64, 96\].*this run needs"),
    ("init-missing", {}, ["--init", "/nonexistent/model"], r"--init: checkpoint directory not found"),
    ("unknown-key", {}, ["--set", "optim.learning_rate=1"], r"config: unknown config key optim\.learning_rate"),
    ("wrong-type", {}, ["--set", "data.batch_size=many"], r"config: data\.batch_size: expected an integer, got 'many'"),
    ("too-few-images", {}, ["--workers", "9"], r"6 images cannot be split over 9 workers"),
    ("bad-name", {}, ["--name", "a/b"], r"--name must be a plain folder name"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("case", "paths", "extra", "message"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_code_2_before_ray_starts(
    case: str, paths: dict, extra: list[str], message: str, small_dirs: dict, capsys: pytest.CaptureFixture,
) -> None:
    import ray

    def where(key: str) -> str:
        value = paths.get(key, key)
        if value == "nowhere":
            return str(small_dirs["empty"].parent / "nowhere")
        if value == "file-child":
            return str(small_dirs["file"] / "runs")
        return str(small_dirs[value])

    args = job_args(where("train"), where("val"), where("storage"), "bad", steps=5, extra=[])
    extra = [str(small_dirs["wide"]) if item == "WIDE" else item for item in extra]
    for flag in ("--workers", "--name"):  # replace rather than repeat
        if flag in extra:
            position = args.index(flag)
            del args[position : position + 2]
    was_running = ray.is_initialized()
    assert finetune.main(args + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("finetune: error: "), err
    assert re.search(message, err), err
    assert ray.is_initialized() == was_running  # nothing was started


@pytest.mark.timeout(120)
def test_a_run_of_the_same_name_with_another_model_is_refused(small_dirs: dict, capsys: pytest.CaptureFixture) -> None:
    # A run's latest checkpoint (complete: it has its trainer state) with the config of another model.
    run = small_dirs["storage"] / "taken"
    (run / "checkpoint_step_00000010").mkdir(parents=True)
    (run / "checkpoint_step_00000010" / "trainer_state.pt").write_bytes(b"")
    from restoration import config as config_lib
    from restoration.finetune.settings import load_train_config

    other = load_train_config("denoise", overrides=TINY[:1] + ["model.alpha=0.25"])
    (run / "checkpoint_step_00000010" / "config.yaml").write_text(config_lib.to_yaml(other))
    args = job_args(small_dirs["train"], small_dirs["val"], small_dirs["storage"], "taken", steps=5)
    assert finetune.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "--name taken:" in err and "alpha: 0.25 -> 0.5" in err and "Use another --name" in err, err


@pytest.mark.timeout(180)
def test_restoration_finetune_command_reports_bad_input_in_one_line(small_dirs: dict) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "finetune",
         *job_args(small_dirs["train"], small_dirs["empty"], small_dirs["storage"], "bad", steps=5)],
        cwd=PROJECT_ROOT, env=job_environment(), capture_output=True, text=True, timeout=170,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "--val-images" in result.stderr and "holds no images" in result.stderr


# --------------------------------------------------------------------------------------------
# Runs with their own Ray instance (subprocesses)


_STEP_LINE = re.compile(r"step +(\d+)/(\d+)  loss ")
# Rank 0 prints the progress; Ray prefixes each line of a worker with its PID.
_PROGRESS = re.compile(r"\(RayTrainWorker pid=(\d+)\)\S*\s+step\s+(\d+)/(\d+)\s+loss (\S+)")
_RESUMED = re.compile(r"\(RayTrainWorker pid=(\d+)\)\S*\s+resumed from step (\d+) of (\d+)")


def _registered_checkpoint_step(run: Path) -> int | None:
    """The step of the latest checkpoint Ray Train registered for the run (the one it would
    resume from), or None."""
    try:
        snapshot = json.loads((run / "checkpoint_manager_snapshot.json").read_text())
        return int(snapshot["latest_checkpoint_result"]["checkpoint_dir_name"].removeprefix("checkpoint_step_"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # not written yet, or being rewritten
        return None


def _train_workers(root_pid: int) -> set[int]:
    """PIDs of the Ray Train worker actors below ``root_pid`` (the job's own Ray instance)."""
    lines = processes.command_lines()
    return {pid for pid in processes.descendants(root_pid) if lines.get(pid, "").startswith("ray::RayTrainWorker")}


def _wait_for(condition, process: subprocess.Popen, out_path: Path, deadline: float, what: str):
    """Poll ``condition(stdout so far)`` until it returns a truthy value, and return that; fail
    if the job ends or time runs out first."""
    while time.monotonic() < deadline and process.poll() is None:
        if value := condition(out_path.read_text(errors="replace")):
            return value
        time.sleep(0.1)
    tail = "\n".join(out_path.read_text(errors="replace").splitlines()[-60:])
    pytest.fail(f"the run ended (exit {process.poll()}) or timed out before {what}:\n{tail}")


def signal_job(args: list[str], kind: str, logs: Path, *, ready, before_signal=None, timeout: float = 600,
               env: dict[str, str] | None = None) -> dict:
    """Run the job until ``ready(stdout so far)`` holds (first, once ``before_signal`` is given
    and returns a truthy value for ``(process, stdout so far)``: an action taken mid-run), then
    send SIGINT to its process group (as Ctrl-C in a terminal does) or SIGTERM to the driver (as
    Kubernetes does); wait for it to exit. Returns the exit code, seconds from the signal to the
    exit, stdout, stderr after the signal and what ``before_signal`` returned. ``env``: more
    environment variables for the job."""
    out_path, err_path = logs / f"{kind}.out", logs / f"{kind}.err"
    acted = None
    with out_path.open("w") as out_file, err_path.open("w") as err_file:
        process = subprocess.Popen([sys.executable, "-m", "jobs.finetune", *args], cwd=PROJECT_ROOT,
                                   env={**job_environment(), **(env or {})}, stdout=out_file, stderr=err_file,
                                   start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            if before_signal is not None:
                acted = _wait_for(lambda out: before_signal(process, out), process, out_path, deadline,
                                  "the action before the signal")
            _wait_for(ready, process, out_path, deadline, "the moment to signal")
            err_before = len(err_path.read_text().splitlines())
            signalled = time.monotonic()
            if kind == "sigint":
                os.killpg(process.pid, signal.SIGINT)
            else:
                os.kill(process.pid, signal.SIGTERM)
            code = process.wait(timeout=120)
            seconds = time.monotonic() - signalled
        finally:
            if process.poll() is None:
                kill_tree(process)
    return {"code": code, "seconds": seconds, "stdout": out_path.read_text(),
            "stderr_after": err_path.read_text().splitlines()[err_before:], "acted": acted}


def _after_step(step: int):
    """A ``ready`` condition: rank 0 logged ``step`` or a later one."""
    return lambda out: any(int(m[1]) >= step for m in _STEP_LINE.finditer(out))


@pytest.fixture(scope="module")
def photo_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Six training crops and one validation crop of scikit-image's photos (no benchmark data
    needed: the runs below guard the stop and resume guarantees, and must run everywhere)."""
    from PIL import Image
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    train, val = root / "train", root / "val"
    train.mkdir()
    val.mkdir()
    for name in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field"):
        Image.fromarray(getattr(data, name)()[:128, :128]).save(train / f"{name}.png")
    Image.fromarray(data.astronaut()[256:352, 256:352]).save(val / "astronaut.png")
    return train, val


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigint_a_lost_worker_then_sigterm_each_go_on_from_a_checkpoint(photo_dirs: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    """Two runs of the same command, stopped and hit the ways clusters do:

    - Ctrl-C (SIGINT to the process group) in the first run, and SIGTERM to the driver in the
      second: each finishes its step, checkpoints exactly there (not only at
      checkpoint_interval), exits 130 / 143 within 30 s with one line on stderr and no
      traceback; the second run goes on from the first stop.
    - In between, the second run loses a Ray Train worker process (SIGKILL, once Ray Train
      registered a checkpoint of this run): Ray Train (``--max-failures``) restarts the worker
      group from the latest registered checkpoint, with new processes, and the steps go on from
      there as if nothing happened.
    - The last checkpoint holds the history of both runs, every reported step once, those before
      each restart as they were first logged.
    """
    runs = tmp_path / "runs"
    steps, interval = 80, 10
    args = job_args(*photo_dirs, runs, "stopped", steps=steps, extra=[f"checkpoint_interval={interval}"],
                    max_failures=1)
    first = signal_job(args, "sigint", tmp_path, ready=_after_step(5))
    stop1 = _check_stop(first, 130, runs, after=5, steps=steps)

    def kill_a_worker(process: subprocess.Popen, out: str) -> dict | None:
        """SIGKILL the worker that is not rank 0 once a checkpoint of this run is registered."""
        registered = _registered_checkpoint_step(runs / "stopped")
        rank0 = [int(m[1]) for m in _PROGRESS.finditer(out)]
        if registered is None or registered <= stop1 or not rank0:
            return None
        workers = _train_workers(process.pid)
        others = sorted(workers - {rank0[-1]})
        if not others or rank0[-1] not in workers:
            return None
        os.kill(others[0], signal.SIGKILL)
        return {"pid": others[0], "registered": registered, "rank0": rank0[-1]}

    def a_step_after_the_restart(out: str) -> bool:
        resumes = list(_RESUMED.finditer(out))
        return len(resumes) == 2 and any(m.start() > resumes[1].start() and int(m[2]) >= int(resumes[1][2]) + 5
                                         for m in _PROGRESS.finditer(out))

    # Ray's tracebacks of the lost worker would otherwise reach stderr in pieces for seconds
    # after (its log deduplication holds repeated lines back): they would look like the stop's.
    second = signal_job(args, "sigterm", tmp_path, before_signal=kill_a_worker, ready=a_step_after_the_restart,
                        env={"RAY_DEDUP_LOGS": "0"})
    killed = second["acted"]
    stop2 = _check_stop(second, 143, runs, after=killed["registered"] + 5, steps=steps)
    assert not processes.is_alive(killed["pid"])

    # The second run resumed from the first stop, then once more from the checkpoint registered
    # when its worker died (the one seen, or one registered between that look and the kill),
    # with a new rank 0 process.
    log = second["stdout"]
    (resume1, resume2) = list(_RESUMED.finditer(log))
    restarted_at = int(resume2[2])
    assert int(resume1[2]) == stop1
    assert killed["registered"] <= restarted_at < stop2 and restarted_at % interval == 0, (killed, restarted_at)
    assert int(resume2[1]) not in (killed["pid"], killed["rank0"]), "rank 0 of the restart is a new process"
    # Checkpoints the lost attempt uploaded above the restart's (never registered) were deleted by it.
    dropped = re.findall(r"deleted \d+ checkpoint\(s\) above step (\d+), of an abandoned attempt", log)
    assert all(int(at) == restarted_at for at in dropped) and len(dropped) <= 1, (dropped, restarted_at)
    progress = [(m.start(), int(m[2]), m[4]) for m in _PROGRESS.finditer(log)]
    before = [(step, loss) for at, step, loss in progress if resume1.start() < at < resume2.start()]
    after = [step for at, step, _ in progress if at > resume2.start()]
    assert before and before[-1][0] >= restarted_at  # the first attempt got at least as far as the checkpoint
    assert after[0] == restarted_at + 5, (restarted_at, after)

    # The checkpoint of the second stop holds the history of both runs, every reported step once:
    # those up to the first stop as the first run logged them, those up to the restart as the
    # second run's first attempt logged them.
    import torch

    state = torch.load(runs / "stopped" / f"checkpoint_step_{stop2:08d}" / "trainer_state.pt", weights_only=True)
    metrics = state["history"]
    logged = [row["step"] for row in metrics]
    assert logged == sorted(set(range(5, stop2 + 1, 5)) | {stop1, stop2}), logged
    assert state["step"] == stop2 and state["resumed_at"] == [stop1, restarted_at]
    provenance = json.loads((runs / "stopped" / f"checkpoint_step_{stop2:08d}" / "model.json").read_text())["provenance"]
    assert provenance["steps"] == stop2 and provenance["resumed_at"] == [stop1, restarted_at]
    first_losses = {int(m[1]): m[3] for m in re.finditer(r"step +(\d+)/(\d+)  loss (\S+)", first["stdout"])}
    second_losses = dict(before)
    for row in metrics:
        if row["step"] <= stop1:
            assert f"{row['loss']:.4f}" == first_losses[row["step"]], (row, first_losses)
        elif row["step"] <= restarted_at and row["step"] % 5 == 0:
            assert f"{row['loss']:.4f}" == second_losses[row["step"]], (row, second_losses)


def _check_stop(result: dict, code: int, runs: Path, *, after: int, steps: int) -> int:
    """The checks every stop passes; the step it stopped at."""
    assert result["code"] == code, result
    assert result["seconds"] <= 30, result
    assert len(result["stderr_after"]) <= 3, result["stderr_after"]
    assert not any("Traceback" in line or "*** SIG" in line for line in result["stderr_after"]), result
    assert any("run the same command again" in line for line in result["stderr_after"]), result
    stopped_at = int(re.search(r"stopped at step (\d+): checkpoint_step_", result["stdout"])[1])
    assert after <= stopped_at < steps, result["stdout"]
    checkpoint = str(runs / "stopped" / f"checkpoint_step_{stopped_at:08d}")
    assert f"at step {stopped_at} of {steps} (checkpoint {checkpoint})" in result["stderr_after"][-1], result
    # The named checkpoint is the one both runners resume from: the run folder's latest (none of an
    # attempt Ray Train abandoned after a lost worker lies above it) and Ray Train's registered one.
    assert latest_training_checkpoint(str(runs / "stopped")) == checkpoint
    assert _registered_checkpoint_step(runs / "stopped") == stopped_at
    assert not (runs / "stopped" / "model").exists()
    return stopped_at


# --------------------------------------------------------------------------------------------
# Runs in this process, sharing one Ray instance


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs) for the in-process runs of this module."""
    import ray

    if ray.is_initialized():
        yield
        return
    finetune.init_ray(num_cpus=2)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_worker_run_on_cbsd432_beats_identity(local_ray, cbsd432_dir: Path, val_dir: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = job_args(cbsd432_dir, val_dir, runs, "cbsd432", steps=40,
                    extra=["data.max_images=8", "checkpoint_interval=20", "keep_checkpoints=1"])
    assert finetune.main(args) == 0

    model_dir = runs / "cbsd432" / "model"
    metrics = read_metrics((model_dir / "metrics.csv").read_text())
    assert [int(row["step"]) for row in metrics] == list(range(5, 41, 5))
    losses = [float(row["loss"]) for row in metrics]
    assert sum(losses[-2:]) < 0.9 * sum(losses[:2]), losses
    assert all(float(row["samples_per_second"]) > 0 for row in metrics)
    assert [int(row["step"]) for row in metrics if row["val_psnr"]] == [20, 40]
    png = (model_dir / "training_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000

    metadata = json.loads((model_dir / "model.json").read_text())
    provenance = metadata["provenance"]
    assert provenance["steps"] == 40 and provenance["workers"] == 2 and provenance["global_batch"] == 8
    assert provenance["train_images"] == str(cbsd432_dir) and provenance["train_image_count"] == 8
    assert provenance["skipped_images"] == 0 and provenance["resumed_at"] == []
    assert provenance["validation"]["val_psnr"] > 0 and provenance["validation_step"] == 40
    assert provenance["hardware"].startswith("2 x cpu") and provenance["wall_seconds"] > 0
    assert metadata["code_version"] and metadata["task"] == "denoise"
    # keep_checkpoints=1 keeps the best by validation PSNR, and always the latest.
    kept = sorted(p.name for p in (runs / "cbsd432").glob("checkpoint_step_*"))
    assert "checkpoint_step_00000040" in kept and len(kept) <= 2, kept

    # The final model, through the `restoration evaluate` command (in this process), beats the noisy input.
    from restoration.cli import main as restoration_main

    out = tmp_path / "evaluate.json"
    assert restoration_main(["evaluate", "--model", str(model_dir), "--task", "denoise", "--images", str(val_dir),
                             "--sigma", "25", "--device", "cpu", "--json", str(out)]) == 0
    fine_tuned = json.loads(out.read_text())
    identity = evaluate("identity", get_task("denoise").protocol(sigma=25), str(val_dir))
    assert len(fine_tuned["images"]) == len(identity["images"]) == 3
    assert fine_tuned["psnr"] > identity["psnr"] + 0.5, (fine_tuned["psnr"], identity["psnr"])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_worker_error_is_one_line_from_rays_structured_failures(local_ray, photo_dirs: tuple[Path, Path],
                                                                  tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A worker whose shard has no usable image fails the run; the driver reports the worker's
    exception (Ray Train's ``worker_failures``) in one line and exits 1."""
    from PIL import Image

    train = tmp_path / "train"
    train.mkdir()
    shutil.copy(sorted(photo_dirs[0].iterdir())[0], train / "a.png")
    Image.new("RGB", (32, 32)).save(train / "b.png")  # smaller than the crops: worker 1 has nothing to train on
    args = job_args(train, photo_dirs[1], tmp_path / "runs", "failing", steps=3, max_failures=0)
    assert finetune.main(args) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fine-tuning failed")]
    assert err == ["fine-tuning failed: ValueError: 1 of 2 workers have no usable training images (1 of 2 images "
                   "could not be used); use fewer --workers or more images"], err



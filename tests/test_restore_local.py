"""The library's restore run (restoration.restore.run) with the in-process executor: ``restoration restore
--no-ray`` restores a folder with a complete manifest while ``ray`` cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from restore_images import bad_files, png

from restoration.io.codec import decode_image
from restoration.models.checkpoint import save_checkpoint
from restoration.models.fused import ModelConfig, build_model
from restoration.restore.manifest import MANIFEST_DIR, SUMMARY_FILE, read_manifest
from restoration.restore.run import LocalRestoreExecutor, StageContext, run_restore
from restoration.restore.settings import RestoreConfig
from restoration.restore.summary import Counts

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TINY = (8, 8, 16, 16, 24, 24)

# Runs the console command `restoration` (its installed entry point) with `import ray` failing.
NO_RAY_COMMAND = """
import sys
sys.modules["ray"] = None  # `import ray` raises ImportError from here on
from importlib.metadata import entry_points
(command,) = entry_points(group="console_scripts", name="restoration")
code = command.load()(sys.argv[1:])
assert sys.modules["ray"] is None
sys.exit(code)
"""


def no_ray_environment(tmp_path: Path) -> dict[str, str]:
    """This environment without a Ray address, with Ray's temp folder (where a started Ray
    would put its session) under ``tmp_path``."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    environment["RAY_TMPDIR"] = str(tmp_path / "ray-tmp")
    return environment


def write_photos(folder: Path, photos: dict[str, np.ndarray]) -> None:
    """``photos`` as PNG files under ``folder`` (keys are relative paths)."""
    for key, pixels in photos.items():
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(png(pixels))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny denoiser: its residual head is zero, so it returns its input."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(task="denoise", widths=TINY), backbone_weights=None)
    return save_checkpoint(model, tmp_path_factory.mktemp("model") / "tiny", model_id="tiny")


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    from skimage import data

    return {"a.png": data.astronaut()[:96, :128].copy(), "sub/b.png": data.chelsea()[:64, :96].copy(),
            "sub/deep/c.png": data.camera()[:80, :64, None].copy()}


def write_inputs(root: Path, photos: dict[str, np.ndarray]) -> dict[str, bytes]:
    files = {key: png(pixels) for key, pixels in photos.items()}
    files |= {key: data for key, (data, _, _) in bad_files(photos["a.png"]).items()}
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return files


@pytest.mark.timeout(1500)
def test_no_ray_console_command_restores_a_folder_with_a_complete_manifest(
    tmp_path: Path, tiny_model: Path, photos: dict[str, np.ndarray]
) -> None:
    files = write_inputs(tmp_path / "in", photos)
    # No --task: the checkpoint records that it is a denoiser.
    command = [sys.executable, "-c", NO_RAY_COMMAND, "restore", "--no-ray", "--input", str(tmp_path / "in"),
               "--output", str(tmp_path / "out"), "--model", str(tiny_model)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT,
                            env=no_ray_environment(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "ray-tmp").exists(), "a Ray session was started"

    rows = {Path(row["source_uri"]).relative_to(tmp_path / "in").as_posix(): row
            for row in read_manifest(str(tmp_path / "out")).to_pylist()}
    assert sorted(rows) == sorted(files)  # one row per input, none missing
    bad = bad_files(photos["a.png"])
    for key, (_, stage, reason) in bad.items():
        assert (rows[key]["status"], rows[key]["error_stage"]) == ("error", stage) and reason in rows[key]["error"]
    for key, pixels in photos.items():
        row = rows[key]
        assert row["status"] == "ok" and (row["task"], row["model_id"]) == ("denoise", "tiny"), row
        output = decode_image((tmp_path / "out" / key).read_bytes())
        np.testing.assert_array_equal(output.pixels, pixels)  # the identity model
        assert row["bytes_out"] == (tmp_path / "out" / key).stat().st_size
    summary = json.loads((tmp_path / "out" / MANIFEST_DIR / SUMMARY_FILE).read_text())
    assert summary["counts"] == {"ok": len(photos), "error": len(bad), "skipped": 0}
    assert summary["executor"] == "local" and summary["actor_pool"]["device"] == "cpu"
    assert f"restored {len(photos)} of {len(files)} inputs" in result.stdout

    # The same command again: everything that was restored is skipped, errors are retried.
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT,
                            env=no_ray_environment(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / MANIFEST_DIR / SUMMARY_FILE).read_text())
    assert summary["counts"] == {"ok": 0, "error": len(bad), "skipped": len(photos)}


class DropsOne(LocalRestoreExecutor):
    """The in-process executor, except that the result of one input does not come back (the
    first ``times`` times it is given that input; None: never)."""

    def __init__(self, lost: str, times: int | None = None) -> None:
        super().__init__()
        self.lost, self.times = lost, times
        self.calls: list[int] = []  # the work rows of each call

    def restore(self, work: pa.Table, job: StageContext, *, stop=None):
        self.calls.append(work.num_rows)
        drop = self.times is None or self.times > 0
        if self.times is not None and any(uri.endswith(self.lost) for uri in work.column("source_uri").to_pylist()):
            self.times = max(0, self.times - 1)
        for rows in super().restore(work, job):
            keep = [index for index, uri in enumerate(rows.column("source_uri").to_pylist())
                    if not (drop and uri.endswith(self.lost))]
            yield rows.take(pa.array(keep, pa.int64()))


@pytest.mark.timeout(900)
def test_an_input_the_executor_did_not_report_is_restored_again_then_becomes_an_error_row(
    tmp_path: Path, tiny_model: Path, photos: dict[str, np.ndarray]
) -> None:
    """A result lost in transit (an actor's block replayed by Ray delivers only part of its
    rows) is restored again in the same run; one that never comes back is an error row."""
    from restoration.restore.run import LOST_RESULT_PASSES

    write_photos(tmp_path / "in", photos)
    lines: list[str] = []
    once = DropsOne("sub/b.png", times=1)
    summary = run_restore(str(tmp_path / "in"), str(tmp_path / "out"), task="denoise", model=str(tiny_model),
                          config=RestoreConfig(), executor=once, echo=lines.append)
    assert summary.counts == Counts(ok=len(photos), error=0, skipped=0)
    assert once.calls == [len(photos), 1]  # the second pass holds the lost input only
    assert any("1 inputs got no result back from the local executor" in line for line in lines), lines
    rows = {Path(row["source_uri"]).name: row for row in read_manifest(str(tmp_path / "out")).to_pylist()}
    assert len(rows) == len(photos) and all(row["status"] == "ok" for row in rows.values())
    assert (tmp_path / "out" / "sub" / "b.png").is_file()

    lines.clear()
    never = DropsOne("sub/b.png")
    summary = run_restore(str(tmp_path / "in"), str(tmp_path / "out2"), task="denoise", model=str(tiny_model),
                          config=RestoreConfig(), executor=never, echo=lines.append)
    assert never.calls == [len(photos)] + [1] * LOST_RESULT_PASSES
    assert summary.counts == Counts(ok=len(photos) - 1, error=1, skipped=0)
    rows = {Path(row["source_uri"]).name: row for row in read_manifest(str(tmp_path / "out2")).to_pylist()}
    assert rows["b.png"]["status"] == "error" and "no result came back from the local executor" in rows["b.png"]["error"]
    assert lines[0].startswith(f"restore denoise: {len(photos)} inputs") and "manifest:" in lines[-1]


@pytest.mark.timeout(1500)
def test_the_summary_counts_the_images_the_model_left_unchanged(
    tmp_path: Path, tiny_model: Path, photos: dict[str, np.ndarray]
) -> None:
    from restoration import config as config_lib

    write_photos(tmp_path / "in", photos)
    lines: list[str] = []
    summary = run_restore(str(tmp_path / "in"), str(tmp_path / "out"), task="denoise", model=str(tiny_model),
                          executor=LocalRestoreExecutor(), echo=lines.append)
    # The untrained model is the identity: every image is restored, and none is changed.
    assert summary.counts.ok == summary.unchanged == len(photos) and summary.unchanged_threshold == 0.5
    assert f"unchanged: {len(photos)} of the {len(photos)} restored images" in lines[-1]
    written = json.loads((tmp_path / "out" / MANIFEST_DIR / SUMMARY_FILE).read_text())
    assert written["unchanged"] == len(photos)
    assert all(row["mean_abs_change"] == 0.0 and row["strength"] == 1.0
               for row in read_manifest(str(tmp_path / "out")).to_pylist())

    config = config_lib.load_config(RestoreConfig, overrides=["manifest.unchanged_threshold=0"])
    summary = run_restore(str(tmp_path / "in"), str(tmp_path / "out"), task="denoise", model=str(tiny_model),
                          config=config, overwrite=True, executor=LocalRestoreExecutor(), echo=lines.append)
    assert summary.unchanged == 0 and summary.unchanged_threshold == 0.0


@pytest.mark.timeout(1500)
def test_strength_is_a_setting_and_is_recorded(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    from restoration import config as config_lib
    from restoration.models.predictor import PredictorConfig

    # A project setting: without it this test must fail, not skip.
    assert "strength" in PredictorConfig.model_fields, "Predictor lost its strength control"
    torch.manual_seed(0)
    model = build_model(ModelConfig(task="denoise", widths=TINY), backbone_weights=None)
    with torch.no_grad():  # a model that brightens every pixel by 6 levels
        model.head.bias.fill_(6 / 255)
    checkpoint = save_checkpoint(model, tmp_path / "brightener")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(png(photos["a.png"] // 2))  # no pixel clips at +6
    changes = {}
    for strength in (0.0, 0.5, 1.0):
        config = config_lib.load_config(RestoreConfig, overrides=[f"predictor.strength={strength}"])
        summary = run_restore(str(tmp_path / "in"), str(tmp_path / f"out-{strength}"), task="denoise",
                              model=str(checkpoint), config=config, executor=LocalRestoreExecutor(), echo=lambda _: None)
        [row] = read_manifest(str(tmp_path / f"out-{strength}")).to_pylist()
        assert row["strength"] == strength and summary.unchanged == (1 if strength == 0 else 0)
        changes[strength] = row["mean_abs_change"]
    assert changes[0.0] == 0.0 and changes[0.5] == pytest.approx(3.0, abs=0.6) and changes[1.0] == pytest.approx(6.0, abs=0.1)
    np.testing.assert_array_equal(decode_image((tmp_path / "out-0.0/a.png").read_bytes()).pixels, photos["a.png"] // 2)
    with pytest.raises(ValueError, match=r"predictor.strength must be in \[0, 1\]"):
        config_lib.load_config(RestoreConfig, overrides=["predictor.strength=1.5"])


@pytest.mark.timeout(900)
def test_progress_lines_count_only_this_runs_work(tmp_path: Path, tiny_model: Path, photos: dict[str, np.ndarray],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The rate and the ETA are those of the inputs this run restores; inputs skipped as done
    before are counted apart and never make the ETA longer."""
    from restoration import config as config_lib
    from restoration.restore import run as restore_run

    write_photos(tmp_path / "in", photos)
    monkeypatch.setattr(restore_run, "PROGRESS_SECONDS", 0.0)  # a progress line after every batch
    config = config_lib.load_config(RestoreConfig, overrides=["pipeline.batch_size=1"])
    lines: list[str] = []
    run_restore(str(tmp_path / "in"), str(tmp_path / "out"), task="denoise", model=str(tiny_model), config=config,
                executor=LocalRestoreExecutor(), echo=lines.append)
    progress = [line for line in lines if " done: restored " in line]
    assert [line.split("/")[0].strip() for line in progress] == ["1", "2", "3"]
    assert all(" images/s in this run, " in line for line in progress)
    assert "2 left, ETA unknown" in progress[0]  # one result: no rate yet (start-up is not work)
    assert "1 left, ETA " in progress[1] and "ETA unknown" not in progress[1]
    assert progress[-1].endswith("0 left, ETA 0 s")

    # A re-run with one new input: two are skipped, the ETA is that of the one left to do.
    photo = next(iter(photos.values()))
    from PIL import Image

    Image.fromarray(photo).save(tmp_path / "in" / "new.png")
    lines.clear()
    run_restore(str(tmp_path / "in"), str(tmp_path / "out"), task="denoise", model=str(tiny_model), config=config,
                executor=LocalRestoreExecutor(), echo=lines.append)
    progress = [line for line in lines if " done: restored " in line]
    assert len(progress) == 1 and progress[0].strip().startswith(f"{len(photos) + 1}/{len(photos) + 1} done: restored 1 ")
    assert f"skipped as done before {len(photos)};" in progress[0] and progress[0].endswith("0 left, ETA 0 s")

    counted = restore_run._Progress(to_process=100, skipped=50, first=(100.0, 2))
    counted.processed = 12
    line = counted.line(restore_run.manifest_lib.ManifestWriter(str(tmp_path / "x"), restore_run.manifest_lib.new_job_id()),
                        100, now=120.0)
    assert "0.50 images/s in this run, 38 left, ETA 1 min 16 s" in line


def test_a_run_in_partitions_accounts_for_every_input_once(
    tmp_path: Path, tiny_model: Path, photos: dict[str, np.ndarray]
) -> None:
    """Partitions of one input: collisions, the missing-result check, skips on a re-run and the
    compacted manifest all hold across partition boundaries."""
    from PIL import Image

    from restoration import config as config_lib

    write_photos(tmp_path / "in", photos)
    jpeg = tmp_path / "in" / "a.jpg"  # written as PNG, it would land where a.png does
    Image.fromarray(photos["a.png"]).save(jpeg, quality=95)
    (tmp_path / "in" / "gone.png").write_bytes(b"not an image")
    overrides = ["input.partition_size=1", "output.format=png", "manifest.flush_rows=1"]
    config = config_lib.load_config(RestoreConfig, overrides=overrides)
    lines: list[str] = []
    summary = run_restore(str(tmp_path / "in"), str(tmp_path / "out"), task="denoise", model=str(tiny_model),
                          config=config, executor=LocalRestoreExecutor(), echo=lines.append)
    rows = {Path(row["source_uri"]).name: row for row in read_manifest(str(tmp_path / "out")).to_pylist()}
    assert sorted(rows) == ["a.jpg", "a.png", "b.png", "c.png", "gone.png"]
    assert summary.inputs == 5 and summary.counts == Counts(ok=4, error=1, skipped=0)
    # Sorted, a.jpg comes first and takes a.png; a.png, in the next partition, keeps its extension.
    assert rows["a.jpg"]["output_uri"] == str(tmp_path / "out" / "a.png")
    assert rows["a.png"]["output_uri"] == str(tmp_path / "out" / "a.png.png")
    assert rows["gone.png"]["error_stage"] == "decode"
    manifests = sorted((tmp_path / "out" / MANIFEST_DIR).glob("*.parquet"))
    assert len(manifests) == 1 and manifests[0].name.endswith("-manifest.parquet")  # parts compacted

    # Again, in partitions of 2: the four restored inputs are skipped, the broken one retried.
    config = config_lib.load_config(RestoreConfig, overrides=["input.partition_size=2", "output.format=png"])
    summary = run_restore(str(tmp_path / "in"), str(tmp_path / "out"), task="denoise", model=str(tiny_model),
                          config=config, executor=LocalRestoreExecutor(), echo=lines.append)
    assert summary.counts == Counts(ok=0, error=1, skipped=4)
    again = {Path(row["source_uri"]).name: row for row in read_manifest(str(tmp_path / "out")).to_pylist()}
    assert sorted(again) == sorted(rows) and again["a.png"]["output_uri"] == rows["a.png"]["output_uri"]


def test_a_list_repeating_entries_across_partitions_restores_each_once(
    tmp_path: Path, tiny_model: Path, photos: dict[str, np.ndarray]
) -> None:
    from restoration import config as config_lib

    write_photos(tmp_path / "in", photos)
    names = ["a.png", "sub/b.png", "a.png", "sub/deep/c.png", "sub/b.png"]
    (tmp_path / "list.txt").write_text("".join(f"{tmp_path / 'in' / name}\n" for name in names))
    config = config_lib.load_config(RestoreConfig, overrides=["input.partition_size=1"])
    summary = run_restore(str(tmp_path / "list.txt"), str(tmp_path / "out"), task="denoise", model=str(tiny_model),
                          config=config, executor=LocalRestoreExecutor(), echo=lambda _: None)
    assert summary.inputs == 3 and summary.counts == Counts(ok=3, error=0, skipped=0)
    assert read_manifest(str(tmp_path / "out")).num_rows == 3
    assert (tmp_path / "out" / "sub" / "deep" / "c.png").is_file()


def test_the_shipped_models_need_a_task(tmp_path: Path) -> None:
    """``--model default`` names one shipped model per task: without ``--task`` it is one line
    and exit 2, before anything is listed."""
    (tmp_path / "in").mkdir()
    result = subprocess.run([sys.executable, "-c", NO_RAY_COMMAND, "restore", "--no-ray", "--input", str(tmp_path / "in"),
                             "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                            cwd=PROJECT_ROOT, env=no_ray_environment(tmp_path))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "--task is needed with --model default" in result.stderr

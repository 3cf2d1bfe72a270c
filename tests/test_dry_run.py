"""``restoration restore --dry-run``: the counts, megapixels and estimates of what a run would do,
with no model loaded, no Ray imported or started, and nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from restore_images import png
from test_restore_local import NO_RAY_COMMAND, PROJECT_ROOT, TINY, no_ray_environment

from restoration.models.checkpoint import save_checkpoint
from restoration.models.fused import ModelConfig, build_model
from restoration.restore.dry_run import (
    DRY_RUN_MEGAPIXELS_PER_SECOND,
    OUTPUT_BYTES_PER_MEGAPIXEL,
)
from restoration.restore.run import (
    LocalRestoreExecutor,
    run_restore,
)

SIZES = {"done.png": (40, 30), "b.png": (500, 200), "sub/c.png": (120, 90)}  # width, height


def files_under(root: Path) -> dict[str, int]:
    return {path.relative_to(root).as_posix(): path.stat().st_size for path in root.rglob("*") if path.is_file()}


@pytest.mark.timeout(900)
def test_dry_run_counts_and_estimates_without_ray_a_model_or_writes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = save_checkpoint(build_model(ModelConfig(task="denoise", widths=TINY), backbone_weights=None),
                            tmp_path / "tiny", model_id="tiny")
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    (inputs / "done.png").write_bytes(png(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)))
    # A previous run restored done.png: the dry run must count it as skipped.
    summary = run_restore(str(inputs), str(tmp_path / "out"), task="denoise", model=str(model),
                          executor=LocalRestoreExecutor(), echo=lambda _: None)
    assert summary.counts.ok == 1
    for key, (width, height) in SIZES.items():
        if key != "done.png":
            (inputs / key).write_bytes(png(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)))
    (inputs / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(300))
    written_before = files_under(tmp_path / "out")

    arguments = ["restore", "--dry-run", "--input", str(inputs), "--output", str(tmp_path / "out"),
                 "--task", "denoise", "--model", str(model)]
    result = subprocess.run([sys.executable, "-c", NO_RAY_COMMAND, *arguments, "--json"], capture_output=True,
                            text=True, timeout=300, cwd=PROJECT_ROOT, env=no_ray_environment(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    new = [key for key in SIZES if key != "done.png"]
    megapixels = sum(SIZES[key][0] * SIZES[key][1] for key in new) / 1e6
    assert (report["inputs"], report["skipped"], report["to_restore"], report["plan_errors"], report["unreadable"]) \
        == (4, 1, 3, 0, 1)
    assert report["unreadable_inputs"][0]["source_uri"].endswith("corrupt.png")
    assert report["model_id"] == "tiny" and report["scale"] == 1
    assert report["megapixels"] == pytest.approx(megapixels) and report["output_megapixels"] == pytest.approx(megapixels)
    assert report["estimated_output_bytes"] == round(megapixels * OUTPUT_BYTES_PER_MEGAPIXEL["PNG"])
    assert report["estimated_seconds"] == pytest.approx(
        {node: megapixels / rate for node, rate in DRY_RUN_MEGAPIXELS_PER_SECOND.items()})
    assert files_under(tmp_path / "out") == written_before  # no outputs, no manifest parts, no summary
    assert not (tmp_path / "ray-tmp").exists(), "a Ray session was started"

    # The readable form, in-process executor chosen: the same counts, still nothing started.
    result = subprocess.run([sys.executable, "-c", NO_RAY_COMMAND, *arguments, "--no-ray"], capture_output=True,
                            text=True, timeout=300, cwd=PROJECT_ROOT, env=no_ray_environment(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "to restore 3, skipped as already done 1, cannot be placed 0, header unreadable 1" in result.stdout
    assert f"{megapixels:.3f} megapixels in" in result.stdout and "estimated model time on cpu-2-cores" in result.stdout
    assert files_under(tmp_path / "out") == written_before
    assert not (tmp_path / "ray-tmp").exists()


@pytest.mark.timeout(300)
def test_dry_run_scales_outputs_by_the_sr_factor_and_sets_the_format(tmp_path: Path) -> None:
    from restoration import config as config_lib
    from restoration.restore.dry_run import dry_run_restore
    from restoration.restore.settings import RestoreConfig

    torch.manual_seed(0)
    model = save_checkpoint(build_model(ModelConfig(task="sr", scale=2, widths=TINY), backbone_weights=None),
                            tmp_path / "sr2", model_id="sr2")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(png(np.zeros((50, 100, 3), np.uint8)))
    config = config_lib.load_config(RestoreConfig, overrides=["output.format=jpeg"])
    report = dry_run_restore(str(tmp_path / "in"), str(tmp_path / "out"), task="sr", model=str(model), config=config)
    assert report["scale"] == 2 and report["megapixels"] == pytest.approx(0.005)
    assert report["output_megapixels"] == pytest.approx(0.02)
    assert report["estimated_output_bytes"] == round(0.02 * OUTPUT_BYTES_PER_MEGAPIXEL["JPEG"])
    assert not (tmp_path / "out").exists()

"""Training on the archive itself, on Ray: ``restoration distill`` with the teacher on Ray Data
actors and the student on 2 Ray Train workers, and ``finetune --self-supervised`` on 2 Ray Train
workers (its losses call the network twice a step, so its gradients are averaged by hand rather
than by DistributedDataParallel). One local Ray instance (2 CPUs) for the module; tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_distill import archive, distill_args  # noqa: F401  (the fixture)
from test_self_supervised import SIGMA, command, noisy  # noqa: F401  (the fixture)

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    import ray

    from jobs.ray_runtime import init_ray

    if ray.is_initialized():
        yield
        return
    init_ray(num_cpus=2)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_distill_on_ray_data_and_two_train_workers(local_ray, archive: Path, tmp_path: Path,  # noqa: F811
                                                   capsys: pytest.CaptureFixture) -> None:
    from jobs.cli import main

    args = [a for a in distill_args(archive, tmp_path / "runs", "ray", steps=15) if a != "--no-ray"]
    assert main([*args, "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "local" not in out.split("restore sr:", 1)[1].splitlines()[0]  # the teacher ran on Ray Data
    run = tmp_path / "runs" / "ray"
    provenance = json.loads((run / "model" / "model.json").read_text())["provenance"]
    assert provenance["workers"] == 2 and provenance["global_batch"] == 8 and provenance["teacher"]
    assert provenance["validation"]["val_psnr"] > provenance["validation_at_start"]["val_psnr"]
    report = json.loads((run / "distill.json").read_text())
    assert report["held_out"] == 2 and report["agreement"]["student_psnr"] > 0


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_self_supervised_on_two_train_workers(local_ray, noisy: Path, tmp_path: Path,  # noqa: F811
                                              capsys: pytest.CaptureFixture) -> None:
    from jobs.cli import main

    args = [a for a in command(noisy, tmp_path / "runs", "ray", steps=15) if a != "--no-ray"]
    assert main([*args, "--workers", "2"]) == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("done: "))
    assert done["val_residual_noise_at_start"] > 0.8 * SIGMA
    assert done["val_residual_noise"] < done["val_residual_noise_at_start"] - 5, done
    assert done["val_noise_left"] < done["val_noise_left_at_start"], done
    provenance = json.loads((tmp_path / "runs" / "ray" / "model" / "model.json").read_text())["provenance"]
    assert provenance["workers"] == 2 and provenance["trained_on"].startswith("noisy images alone")

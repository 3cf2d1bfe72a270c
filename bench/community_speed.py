"""Megapixels per second of community architectures on this CPU, fp32 and bf16, as JSON.

    .venv/bin/python bench/community_speed.py [--size 256] [--repeats 3] [--out bench/results/community_speed.json]

Each architecture is a small instance with RANDOM weights (none can be downloaded here), built from
spandrel's classes at the sizes of tests/test_community_models.py, saved as a weight file and
loaded through ``--model``'s path (:func:`restoration.models.checkpoint.load_checkpoint`). A
``Predictor`` restores one ``--size`` x ``--size`` photo crop ``--repeats`` times per precision;
the figure is the median. The trained models people download are far larger (Real-ESRGAN x4plus:
16.7 M parameters against 0.6 M here), so these rates are upper bounds that compare the
architectures' shapes and the precisions, not what a trained model runs at. bf16 runs only
where spandrel says the architecture supports it, and ``bf16_change_levels`` is the largest
change in 8-bit levels that bf16 makes to the output here (the Predictor's ``auto`` never picks
bf16 for a community model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from test_community_models import _architectures, save_model  # noqa: E402

from reporting import emit  # noqa: E402
from restoration.io.pixels import pixels_to_tensor, tensor_to_pixels  # noqa: E402
from restoration.models.checkpoint import load_checkpoint  # noqa: E402
from restoration.models.predictor import Predictor, PredictorConfig, cpu_has_fast_bf16  # noqa: E402


def measure(path: Path, image: torch.Tensor, precision: str, repeats: int) -> tuple[float, torch.Tensor]:
    model = load_checkpoint(path).model
    predictor = Predictor(model, PredictorConfig(tile=0, precision=precision), device="cpu")
    predictor.restore(image)  # warm-up
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        out = predictor.restore(image)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    from skimage import data

    image = pixels_to_tensor(data.astronaut()[: args.size, : args.size])
    megapixels = args.size * args.size / 1e6
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, (suffix, build) in _architectures().items():
            torch.manual_seed(0)
            net = build().eval()
            path = save_model(net, Path(folder) / f"{name}{suffix}")
            traits = load_checkpoint(path).model.traits
            row = {"name": name, "architecture": traits.architecture, "scale": traits.scale,
                   "parameters": sum(p.numel() for p in net.parameters())}
            fp32_seconds, fp32_out = measure(path, image, "fp32", args.repeats)
            row["fp32_megapixels_per_second"] = round(megapixels / fp32_seconds, 4)
            if "bf16" in traits.dtypes:
                bf16_seconds, bf16_out = measure(path, image, "bf16", args.repeats)
                row["bf16_megapixels_per_second"] = round(megapixels / bf16_seconds, 4)
                change = np.abs(tensor_to_pixels(fp32_out.clamp(0, 1)).astype(int)
                                - tensor_to_pixels(bf16_out.clamp(0, 1)).astype(int))
                row["bf16_change_levels"] = int(change.max())
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                          "hardware_bf16": cpu_has_fast_bf16()},
              "size": args.size, "repeats": args.repeats, "weights": "random (small instances)", "models": rows}
    return emit(report, args.out)


if __name__ == "__main__":
    sys.exit(main())

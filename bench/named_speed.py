"""Speed of the named pretrained models (real weights) on this CPU, fp32 and bf16, as JSON.

    .venv/bin/python bench/named_speed.py [--size 128] [--repeats 3] [--models NAME ...]
        [--out bench/results/named_speed.json]

Each model is loaded by name (``restoration models``: the upstream Real-ESRGAN and Real-CUGAN
weights of the ``models`` extra, converted once into the model cache) through the same path as
``--model NAME`` (:func:`restoration.models.checkpoint.resolve_model`), and a ``Predictor``
restores one ``--size`` x ``--size`` photo crop ``--repeats`` times per precision, untiled; the
figure is the median. Rates are input megapixels per second (an x4 model writes 16 times as many
output pixels), and ``seconds_per_input_megapixel`` is their inverse. bf16 runs where spandrel
says the architecture supports it; ``bf16_change_levels`` is the largest change in 8-bit levels
that bf16 makes to the output (the Predictor's ``auto`` never picks bf16 for a community model).
Without bf16 hardware (``hardware_bf16`` false) bf16 is emulated and slower than fp32 here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reporting import emit  # noqa: E402
from restoration.io.pixels import pixels_to_tensor, tensor_to_pixels  # noqa: E402
from restoration.models import catalog  # noqa: E402
from restoration.models.checkpoint import load_checkpoint, resolve_model  # noqa: E402
from restoration.models.predictor import Predictor, PredictorConfig, cpu_has_fast_bf16  # noqa: E402

#: one of each kind: the two Real-ESRGAN RRDB models, the Compact one, Real-CUGAN se x2/x3/x4 and pro
DEFAULT_MODELS = ("realesr-animevideov3", "realesrgan-x4plus-anime", "realesrgan-x4plus",
                  "realcugan-se-x2-denoise1x", "realcugan-se-x3-denoise3x", "realcugan-se-x4-denoise3x",
                  "realcugan-pro-x2-denoise3x")


def measure(model: torch.nn.Module, image: torch.Tensor, precision: str, repeats: int) -> tuple[float, torch.Tensor]:
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
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=sorted(catalog.CATALOG))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    from skimage import data

    image = pixels_to_tensor(data.astronaut()[: args.size, : args.size])
    megapixels = args.size * args.size / 1e6
    rows = []
    for name in args.models:
        checkpoint = load_checkpoint(resolve_model(name, ""))
        model, traits = checkpoint.model, checkpoint.model.traits
        row = {"name": name, "architecture": traits.architecture, "scale": traits.scale,
               "parameters": sum(p.numel() for p in model.parameters()),
               "licence": checkpoint.metadata.describe()["licence"]}
        fp32_seconds, fp32_out = measure(model, image, "fp32", args.repeats)
        row["fp32_megapixels_per_second"] = round(megapixels / fp32_seconds, 4)
        row["fp32_seconds_per_input_megapixel"] = round(fp32_seconds / megapixels, 1)
        if "bf16" in traits.dtypes:
            bf16_seconds, bf16_out = measure(model, image, "bf16", args.repeats)
            row["bf16_megapixels_per_second"] = round(megapixels / bf16_seconds, 4)
            row["bf16_seconds_per_input_megapixel"] = round(bf16_seconds / megapixels, 1)
            change = np.abs(tensor_to_pixels(fp32_out.clamp(0, 1)).astype(int)
                            - tensor_to_pixels(bf16_out.clamp(0, 1)).astype(int))
            row["bf16_change_levels"] = int(change.max())
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {"machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                          "python": platform.python_version(), "torch": torch.__version__,
                          "hardware_bf16": cpu_has_fast_bf16()},
              "size": args.size, "repeats": args.repeats, "weights": "real (the models extra's packages)",
              "models": rows}
    return emit(report, args.out)


if __name__ == "__main__":
    sys.exit(main())

"""What distilling Real-ESRGAN x4plus into a small student buys: seconds per input megapixel of the
teacher and the students on this CPU, fp32 and bf16, and a projection to GPU hours, as JSON.

    .venv/bin/python bench/distill_cost.py [--threads N] [--student compact] [--size 128] [--repeats 3]
        [--out bench/results/distill_cost.json]

Models (x4, 3 channels; eval mode, ``torch.no_grad``, the network's own call through
:class:`restoration.models.community.CommunityNet`, no tiling):

- ``teacher``: ``realesrgan-x4plus`` (RRDBNet, 64 features, 23 blocks), the converted named model.
- ``student``: ``--student`` built fresh (:func:`restoration.models.students.build_student`, random
  weights: speed does not depend on them). The distillation recipe reported with this script
  trains ``compact`` (64 features, 16 convolutions) from ``realesr-animevideov3``'s weights, which
  has the same shape.
- ``realesr-animevideov3``: the real Compact (64 x 16), for reference.

Each is timed on one ``--size`` x ``--size`` input (seeded noise; convolution cost does not depend
on the pixels): one warm-up, then the median of ``--repeats`` calls, as seconds per input
megapixel. ``bf16`` converts the network and the input to bfloat16 where spandrel says the
architecture supports it (on CPUs without AVX512-BF16 / AMX, oneDNN emulates it and it is slower
than fp32; ``cpu_fast_bf16`` says which). ``speed_ratio``: teacher seconds over the model's, per
precision. Timings interleave the models (each round times every model once) so that load from
other processes on a shared machine hits all alike.

``projection``: GPU hours for a million 1-megapixel inputs, from PUBLISHED throughputs (not measured
here): the figures quoted in the project's issue, Real-ESRGAN x4 about 2.3 input MP/s on an A100
under TensorRT and a Compact x2 about 23. ``student_x4_derived`` applies the speed ratio measured
here on the CPU to the published teacher figure (an estimate: small networks gain less on a GPU
than on a CPU, being bound by memory traffic rather than arithmetic).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reporting import emit

from restoration.models.catalog import named_model_path
from restoration.models.checkpoint import load_checkpoint
from restoration.models.community import CommunityNet
from restoration.models.predictor import cpu_has_fast_bf16
from restoration.models.students import build_student, parse_student_spec

PUBLISHED_GPU_RATES: dict[str, dict[str, Any]] = {
    "realesrgan_x4": {"input_mp_per_s": 2.3, "gpu": "A100", "runtime": "TensorRT",
                      "source": "published figure quoted in the project's issue (not measured here)"},
    "compact_x2": {"input_mp_per_s": 23.0, "gpu": "A100", "runtime": "TensorRT",
                   "source": "published figure quoted in the project's issue (not measured here)"},
}
"""GPU throughputs published elsewhere, in input megapixels per second."""


def _named(name: str) -> CommunityNet:
    path = named_model_path(name)
    if path is None:
        raise SystemExit(f"named model {name} is not available here")
    return load_checkpoint(path).model


def _timed(model: torch.nn.Module, x: torch.Tensor) -> float:
    started = time.perf_counter()
    with torch.no_grad():
        model(x)
    return time.perf_counter() - started


def _gpu_hours_per_million(input_mp_per_s: float) -> float:
    """GPU hours for 1e6 inputs of one megapixel each."""
    return round(1e6 / input_mp_per_s / 3600, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--student", default="compact", help="student spec (restoration/models/students.py)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "distill_cost.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    spec = parse_student_spec(args.student)
    models: dict[str, CommunityNet] = {
        "teacher": _named("realesrgan-x4plus"),
        "student": build_student(spec, scale=4, seed=0),
        "realesr-animevideov3": _named("realesr-animevideov3"),
    }
    megapixels = args.size * args.size / 1e6
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    fast_bf16 = cpu_has_fast_bf16()
    runs: dict[str, dict[str, tuple[torch.nn.Module, torch.Tensor]]] = {"fp32": {}, "bf16": {}}
    for name, model in models.items():
        model.eval()
        runs["fp32"][name] = (model, x)
        if model._descriptor.supports_bfloat16:
            runs["bf16"][name] = (copy.deepcopy(model).to(torch.bfloat16), x.to(torch.bfloat16))
    seconds: dict[str, dict[str, list[float]]] = {p: {n: [] for n in r} for p, r in runs.items()}
    for precision, entries in runs.items():
        for model, inp in entries.values():
            _timed(model, inp)  # warm-up
        for _ in range(args.repeats):
            for name, (model, inp) in entries.items():
                seconds[precision][name].append(_timed(model, inp))

    report_models: dict[str, Any] = {}
    for name, model in models.items():
        entry: dict[str, Any] = {
            "model_id": model.model_id, "architecture": model._descriptor.architecture.id,
            "tags": list(model._descriptor.tags), "parameters": sum(p.numel() for p in model.parameters())}
        for precision in runs:
            if name not in seconds[precision]:
                entry[f"{precision}_s_per_input_mp"] = None
                continue
            s_per_mp = statistics.median(seconds[precision][name]) / megapixels
            entry[f"{precision}_s_per_input_mp"] = round(s_per_mp, 3)
            teacher = seconds[precision].get("teacher")
            entry[f"{precision}_speed_ratio"] = (
                round(statistics.median(teacher) / statistics.median(seconds[precision][name]), 2) if teacher else None)
        report_models[name] = entry
    report_models["student"]["spec"] = str(spec)

    ratio = report_models["student"]["fp32_speed_ratio"]
    teacher_rate = PUBLISHED_GPU_RATES["realesrgan_x4"]["input_mp_per_s"]
    compact_rate = PUBLISHED_GPU_RATES["compact_x2"]["input_mp_per_s"]
    projection = {
        "unit": "GPU hours per million 1-megapixel inputs",
        "realesrgan_x4": {**PUBLISHED_GPU_RATES["realesrgan_x4"],
                          "gpu_hours_per_million": _gpu_hours_per_million(teacher_rate)},
        "compact_x2": {**PUBLISHED_GPU_RATES["compact_x2"],
                       "gpu_hours_per_million": _gpu_hours_per_million(compact_rate)},
        "student_x4_derived": {
            "input_mp_per_s": round(teacher_rate * ratio, 2),
            "gpu_hours_per_million": _gpu_hours_per_million(teacher_rate * ratio),
            "source": "derived: the published Real-ESRGAN x4 rate times the fp32 speed ratio measured here on the "
                      "CPU (an upper bound: a small network gains less on a GPU)"},
    }
    report = {
        "benchmark": "distill_cost",
        "measured_here": {"machine": platform.processor() or platform.machine(), "threads": args.threads,
                          "input": f"{args.size}x{args.size}", "repeats": args.repeats, "statistic": "median",
                          "cpu_fast_bf16": fast_bf16, "torch": torch.__version__},
        "models": report_models,
        "projection": projection,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    return emit(report, args.out)


if __name__ == "__main__":
    raise SystemExit(main())

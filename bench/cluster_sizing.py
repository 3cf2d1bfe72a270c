"""Numbers for sizing a cluster (docs/cluster.md), measured on whatever machine runs this:

- model cost: FLOPs per input megapixel of each task's default architecture, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on one 512x512 forward pass (exact, machine
  independent; the GPU throughput estimates of the guide divide a sustained FLOP rate by it),
  and the activation sizes of that pass (for choosing tile and batch sizes per GPU memory);
- CPU cost of the stages around the model: decode and encode of a 1-megapixel photo (JPEG q95
  and PNG) with the project's codec, single-threaded, as CPU milliseconds per megapixel
  (process CPU time, so a busy machine does not inflate it much).

    python bench/cluster_sizing.py [--out bench/cluster_sizing.json]

It does not time the model itself: the restore job's benchmark (issue 4) measures the predictor,
on CUDA when a GPU is available; prefer its numbers where they exist.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path


def model_gflop_per_megapixel(task: str, side: int = 512) -> dict[str, float]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from restoration.models.fused import ModelConfig, build_model

    config = ModelConfig(task=task, scale=4 if task == "sr" else 1)
    model = build_model(config, backbone_weights=None).eval()
    lq_side = side // config.scale  # SR: the input is the low-resolution image
    lq = torch.rand(1, 3, lq_side, lq_side)
    mask = torch.zeros(1, 1, lq_side, lq_side) if task == "inpaint" else None
    # Activation sizes, from hooks on every leaf module: their sum bounds what a forward pass
    # can hold at once (inference frees most of them as it goes); the largest is a floor.
    sizes: list[int] = []

    def record(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel())

    hooks = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(lq, mask) if mask is not None else model(lq)
    for hook in hooks:
        hook.remove()
    input_megapixels = lq_side * lq_side / 1e6
    output_megapixels = input_megapixels * config.scale**2
    flops = counter.get_total_flops()
    return {
        "parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "gflop_per_input_megapixel": round(flops / 1e9 / input_megapixels, 2),
        "gflop_per_output_megapixel": round(flops / 1e9 / output_megapixels, 2),
        # bf16 on GPU: 2 bytes per value
        "activations_sum_mib_per_input_megapixel_bf16": round(2 * sum(sizes) / 2**20 / input_megapixels, 1),
        "largest_activation_mib_per_input_megapixel_bf16": round(2 * max(sizes) / 2**20 / input_megapixels, 1),
        "input_side": lq_side,
        "scale": config.scale,
    }


def codec_ms_per_megapixel(repeats: int = 7) -> dict[str, float]:
    import numpy as np
    from PIL import Image
    from skimage import data

    from restoration.io.codec import decode_image
    from restoration.io.encode import encode_image

    # A 1024x1024 natural photo (astronaut, upscaled): realistic entropy for JPEG and PNG.
    pixels = np.asarray(Image.fromarray(data.astronaut()).resize((1024, 1024), Image.BICUBIC))
    megapixels = pixels.shape[0] * pixels.shape[1] / 1e6
    results: dict[str, float] = {}
    for fmt in ("JPEG", "PNG"):
        buffer = Image.fromarray(pixels)
        import io

        raw = io.BytesIO()
        buffer.save(raw, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        encoded = raw.getvalue()
        decode_times, encode_times = [], []
        for _ in range(repeats):
            # CPU time of this (single-threaded) process: what a dedicated core would take, not
            # inflated by other processes competing for the machine.
            start = time.process_time()
            image = decode_image(encoded)
            decode_times.append(time.process_time() - start)
            start = time.process_time()
            encode_image(image, fmt)
            encode_times.append(time.process_time() - start)
        key = fmt.lower()
        results[f"{key}_decode_ms_per_megapixel"] = round(1000 * statistics.median(decode_times) / megapixels, 1)
        results[f"{key}_encode_ms_per_megapixel"] = round(1000 * statistics.median(encode_times) / megapixels, 1)
        results[f"{key}_bytes_per_megapixel"] = round(len(encoded) / megapixels)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("cluster_sizing.json")))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from restoration.tasks.specs import TASK_NAMES

    started = time.time()
    report = {
        "what": "bench/cluster_sizing.py: model FLOPs per megapixel (exact) and CPU codec cost (measured)",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "models": {task: model_gflop_per_megapixel(task) for task in TASK_NAMES},
        "codec_single_thread_cpu_time": codec_ms_per_megapixel(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""What the Predictor's CPU settings buy on the shipped denoiser, as JSON.

    .venv/bin/python bench/predictor_speed.py [--images 8] [--size 500] [--repeats 5]
        [--psnr-images 4] [--large-megapixels 48] [--compile]

- ``speed``: seconds to restore ``--images`` noisy ``--size`` x ``--size`` photos (scikit-image
  sample photos resized, sigma 25) with
  - ``plain``: the model one image at a time in eager fp32 under ``torch.no_grad``, contiguous
    memory (the baseline);
  - ``predictor``: ``Predictor`` with its defaults (``precision="auto"``: bf16 autocast where
    the CPU has hardware bf16; channels_last; batch norms folded; inference mode; batches of 4);
  - ``predictor_fp32``: the same with ``precision="fp32"`` (what bf16 adds);
  - ``predictor_fp32_unfolded``: fp32 without batch-norm folding (what folding adds).

  Variants run interleaved, in a rotating order, ``--repeats`` times; each figure is a median,
  and ``ratio_over_plain`` is the median over repeats of ``plain / variant`` within one repeat, so
  that load from other processes on a shared machine hits both sides of a ratio alike. Still
  noisy where the CPU is shared: quote ratios from one run.
- ``bf16_psnr``: PSNR of the Predictor in fp32 and in bf16 on the first ``--psnr-images`` CBSD68
  images under the evaluate protocol (sigma 25), and the change (target: at most 0.05 dB).
- ``large_image``: one ``--large-megapixels`` photo against 4 photos of a quarter of its size
  (tiled, ``tile_batch_size`` tiles per pass); ``ratio`` = large / four (target: at most 1.3).
  ``--large-megapixels 0`` skips it.
- ``compile`` (with ``--compile``): ``torch.compile`` of the channels_last model under bf16
  autocast: its warm-up (first call) seconds, and eager over compiled on one image.

``--size 64 --images 2 --repeats 1 --psnr-images 1 --large-megapixels 0.1`` is a smoke run.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from restoration import degradations  # noqa: E402
from restoration.io.pixels import pixels_to_tensor, tensor_to_pixels  # noqa: E402
from restoration.models.checkpoint import load_checkpoint  # noqa: E402
from restoration.models.predictor import (  # noqa: E402
    Predictor,
    PredictorConfig,
    TilingPlan,
    cpu_has_fast_bf16,
)

DENOISER = ROOT / "restoration" / "weights" / "denoise"
CBSD68 = ROOT.parent / "shared" / "data" / "val" / "CBSD68"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "camera")


def noisy_photos(count: int, size: int, sigma: float = 25.0) -> list[torch.Tensor]:
    """``count`` sample photos resized to ``size`` x ``size`` with Gaussian noise: (3, size, size) float."""
    from skimage import data

    photos = []
    for index in range(count):
        pixels = getattr(data, PHOTOS[index % len(PHOTOS)])()
        if pixels.ndim == 2:
            pixels = np.stack([pixels] * 3, axis=2)
        pixels = np.asarray(Image.fromarray(pixels[..., :3]).resize((size, size), Image.BICUBIC))
        if index >= len(PHOTOS):  # more images than photos: mirrored copies
            pixels = np.ascontiguousarray(pixels[:, ::-1])
        photos.append(degradations.add_gaussian_noise(pixels_to_tensor(pixels), sigma,
                                                      degradations.make_generator(0, index)))
    return photos


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each variant per repeat; the order rotates so that none always runs first."""
    for run in variants.values():  # warm-up: oneDNN primitive creation, allocator growth
        run()
    names = list(variants)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[: repeat % len(names)]:
            start = time.perf_counter()
            variants[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def summarize(seconds: dict[str, list[float]], baseline: str, megapixels: float) -> dict[str, Any]:
    summary = {}
    for name, times in seconds.items():
        summary[name] = {
            "seconds_median": statistics.median(times),
            "seconds": times,
            "megapixels_per_second": megapixels / statistics.median(times),
            f"ratio_over_{baseline}": statistics.median(b / t for b, t in zip(seconds[baseline], times)),
        }
    return summary


def speed(images: int, size: int, repeats: int) -> dict[str, Any]:
    model = load_checkpoint(DENOISER).model.eval()
    photos = noisy_photos(images, size)

    def plain() -> None:
        with torch.no_grad():
            for lq in photos:
                model(lq[None])

    predictors = {
        "predictor": Predictor(copy.deepcopy(model), device="cpu"),
        "predictor_fp32": Predictor(copy.deepcopy(model), PredictorConfig(precision="fp32"), device="cpu"),
        "predictor_fp32_unfolded": Predictor(copy.deepcopy(model), PredictorConfig(precision="fp32", fold_batch_norm=False),
                                             device="cpu"),
    }
    variants: dict[str, Callable[[], Any]] = {"plain": plain}
    for name, predictor in predictors.items():
        variants[name] = lambda predictor=predictor: predictor.restore_many(photos)
    result = summarize(interleaved(variants, repeats), "plain", images * size * size / 1e6)
    default = predictors["predictor"]
    result["predictor_settings"] = {"precision": default.precision, "channels_last": default.channels_last,
                                    "folded_batch_norms": default.folded_batch_norms,
                                    "batch_size": default.batch_size, "pass_pixels": default.pass_pixels}
    result.update(images=images, size=size, repeats=repeats)
    return result


def bf16_psnr(count: int) -> dict[str, Any]:
    from restoration.io.images import read_images
    from restoration.quality.metrics import score
    from restoration.tasks.specs import get_task

    if not CBSD68.is_dir():
        return {"skipped": f"CBSD68 not found at {CBSD68}"}
    protocol = get_task("denoise").protocol(sigma=25)
    samples = [protocol.sample(name, pixels) for name, pixels in read_images(str(CBSD68), limit=count)]
    model = load_checkpoint(DENOISER).model.eval()
    rows = []
    for precision in ("fp32", "bf16"):
        predictor = Predictor(copy.deepcopy(model), PredictorConfig(precision=precision), device="cpu")
        for index, sample in enumerate(samples):
            value, _ = score(tensor_to_pixels(predictor.restore(sample.lq).clamp(0, 1)), sample.gt, protocol)
            if precision == "fp32":
                rows.append({"image": sample.name, "psnr_fp32": value})
            else:
                rows[index].update(psnr_bf16=value, change_db=value - rows[index]["psnr_fp32"])
    changes = [row["change_db"] for row in rows]
    return {"images": rows, "mean_psnr_fp32": float(np.mean([r["psnr_fp32"] for r in rows])),
            "mean_psnr_bf16": float(np.mean([r["psnr_bf16"] for r in rows])),
            "mean_change_db": float(np.mean(changes)), "max_abs_change_db": float(np.max(np.abs(changes))),
            "protocol": protocol.describe()}


def large_image(megapixels: float, repeats: int) -> dict[str, Any]:
    """One photo of ``megapixels`` against four of a quarter of it, both through the tiled path."""
    model = load_checkpoint(DENOISER).model.eval()
    predictor = Predictor(model, device="cpu")
    # 4:3 photos; the quarter-size ones have half the sides.
    height = int(round((megapixels * 1e6 * 3 / 4) ** 0.5 / 2)) * 2
    width = height * 4 // 3
    generator = torch.Generator().manual_seed(0)
    large = torch.rand(3, height, width, generator=generator)
    quarters = [torch.rand(3, height // 2, width // 2, generator=generator) for _ in range(4)]
    seconds = interleaved({"large": lambda: predictor.restore(large),
                           "four_quarters": lambda: predictor.restore_many(quarters)}, repeats)
    large_s, four_s = statistics.median(seconds["large"]), statistics.median(seconds["four_quarters"])
    return {"large": [height, width], "quarter": [height // 2, width // 2], "seconds": seconds,
            "large_seconds_median": large_s, "four_quarters_seconds_median": four_s,
            "ratio": statistics.median(a / b for a, b in zip(seconds["large"], seconds["four_quarters"])),
            "tile": predictor.tile, "tile_batch_size": predictor.tile_batch_size,
            # Every tile costs the same forward pass, so this is the ratio a quiet machine gives.
            "tiles_large": _tiles(predictor, height, width),
            "tiles_four_quarters": 4 * _tiles(predictor, height // 2, width // 2),
            "megapixels_per_second_large": height * width / 1e6 / large_s}


def _tiles(predictor: Predictor, height: int, width: int) -> int:
    if max(height, width) <= predictor.tile:
        return 1
    return len(TilingPlan(height, width, predictor.tile, predictor.overlap).boxes())


def compiled(size: int, repeats: int) -> dict[str, Any]:
    model = load_checkpoint(DENOISER).model.eval().to(memory_format=torch.channels_last)
    x = noisy_photos(1, size)[0][None].contiguous(memory_format=torch.channels_last)
    compiled_model = torch.compile(model)

    def run(network: torch.nn.Module) -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            network(x)

    start = time.perf_counter()
    try:
        run(compiled_model)
    except Exception as error:  # no compiler, or an unsupported op: report it, keep the rest
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
    warmup = time.perf_counter() - start
    seconds = interleaved({"eager": lambda: run(model), "compiled": lambda: run(compiled_model)}, repeats)
    return {"warmup_seconds": warmup, "seconds": seconds,
            "ratio_eager_over_compiled": statistics.median(e / c for e, c in zip(seconds["eager"], seconds["compiled"]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--psnr-images", type=int, default=4)
    parser.add_argument("--large-megapixels", type=float, default=48.0)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of warm-up)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, all cores)")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    for name in ("images", "size", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    report: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cpu_has_fast_bf16": cpu_has_fast_bf16(),
                    "cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "note": "ratios are medians of paired, interleaved runs; on a shared CPU they are noisy",
        "speed": speed(args.images, args.size, args.repeats),
    }
    if args.psnr_images > 0:
        report["bf16_psnr"] = bf16_psnr(args.psnr_images)
    if args.large_megapixels > 0:
        report["large_image"] = large_image(args.large_megapixels, max(1, min(args.repeats, 3)))
    if args.compile:
        report["compile"] = compiled(args.size, args.repeats)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()

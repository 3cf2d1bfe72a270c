"""Accuracy and cost of the per-image assessment (``restoration.quality.assess``), as JSON.

    .venv/bin/python bench/assess_accuracy.py [--data ../shared/data] [--images 68] [--repeats 20]
        [--out bench/results/assess_accuracy.json]

On the first ``--images`` photos of CBSD68 (colour PNG, 481 x 321) and of BSD68 (their gray
versions):

- ``noise``: per sigma (0, 5, 10, 15, 25, 35, 50 on the 0-255 scale), Gaussian noise added in
  float, then clipped and rounded to 8 bits as a file holds it (seeded per image and sigma). Per
  set (``color``, ``gray``): the median, mean and 90th percentile of ``|estimate - sigma|``, the
  median estimate, and ``clipped_noise_std``, the median std of what clipping left of the noise
  (``noisy - clean``). ``noise_sigma`` estimates the sigma before clipping (it corrects for the
  clipping), so its errors are against ``sigma``; at 50 the clipped noise is visibly smaller.
- ``jpeg_quality``: per quality 10, 15, ..., 95, the largest ``|found - quality|`` over the
  images saved by Pillow with 4:2:0 and with 4:4:4 chroma, over the gray ones, and over
  ``reencoded`` ones (saved at ``105 - quality``, decoded, saved at ``quality``); ``presets``: the
  quality found for Pillow's Photoshop-like ``quality=`` presets (their own tables: no true value)
  and for ``quality="keep"`` of quality-30 files (true value 30).
- ``blockiness`` and ``blur``: their medians and 10th / 90th percentiles on the clean photos, on
  JPEGs at quality 10, 30 and 60 decoded and kept losslessly (a JPEG re-saved as PNG), and on the
  photos blurred with a Gaussian of sigma 1.2 and 2 (scikit-image, 8-bit).
- ``cost``: milliseconds per ``assess`` call (median of ``--repeats`` calls on each of up to 8
  photos, with no file bytes; ``jpeg_quality_ms`` is what a JPEG file's bytes add) at 0.15
  megapixels (the photos), 1 and 12 megapixels (the photos upscaled, bicubic), and per megapixel.
  ``model`` is the shipped general model (``resolve_model("default", "general")``, a
  ``Predictor`` with its defaults on the CPU: bf16 where the CPU has it) on the same 0.15 and
  1-megapixel images (median of 3 after a warm-up); ``percent_of_model`` is assessment over model
  time. Timings interleave the assessment with the model, so that load from other processes on a
  shared machine hits both alike; quote ratios from one run.

A smoke run: ``--images 2 --repeats 2``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, JpegPresets

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reporting import emit  # noqa: E402
from restoration.models.checkpoint import load_checkpoint, resolve_model  # noqa: E402
from restoration.models.predictor import Predictor, PredictorConfig, cpu_has_fast_bf16  # noqa: E402
from restoration.quality.assess import (  # noqa: E402
    assess,
    blockiness,
    blur,
    estimate_noise,
    jpeg_quality,
)

SIGMAS = (0, 5, 10, 15, 25, 35, 50)
QUALITIES = tuple(range(10, 100, 5))
COST_SIZES = {"0.15": None, "1": (1224, 817), "12": (4242, 2828)}  # megapixels -> (width, height)


def load_set(folder: Path, count: int) -> list[np.ndarray]:
    paths = sorted(folder.glob("*.png"))[:count]
    if not paths:
        raise SystemExit(f"no PNG images in {folder} (see ../shared/data/README.md)")
    return [np.asarray(Image.open(path)) for path in paths]


def with_noise(pixels: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng([seed, int(sigma)]).normal(0.0, sigma, pixels.shape)
    return np.clip(np.round(pixels + noise), 0, 255).astype(np.uint8)


def encoded(pixels: np.ndarray, quality: int | str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality, **options)
    return buffer.getvalue()


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def blurred(pixels: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.filters import gaussian

    out = gaussian(pixels, sigma=sigma, channel_axis=-1 if pixels.ndim == 3 else None, preserve_range=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(float(np.median(values)), 3), "p10": round(float(np.quantile(values, 0.1)), 3),
            "p90": round(float(np.quantile(values, 0.9)), 3)}


def noise_rows(images: list[np.ndarray]) -> list[dict[str, Any]]:
    rows = []
    for sigma in SIGMAS:
        estimates, clipped = [], []
        for seed, clean in enumerate(images):
            noisy = with_noise(clean, sigma, seed) if sigma else clean
            estimates.append(estimate_noise(noisy))
            clipped.append(float(np.std(noisy.astype(np.float64) - clean)))
        errors = np.abs(np.array(estimates) - sigma)
        rows.append({"sigma": sigma, "median_abs_error": round(float(np.median(errors)), 3),
                     "mean_abs_error": round(float(errors.mean()), 3),
                     "p90_abs_error": round(float(np.quantile(errors, 0.9)), 3),
                     "median_estimate": round(float(np.median(estimates)), 3),
                     "clipped_noise_std": round(float(np.median(clipped)), 3)})
        print(json.dumps({"noise": rows[-1]}), flush=True)
    return rows


def jpeg_rows(colour: list[np.ndarray], gray: list[np.ndarray]) -> list[dict[str, Any]]:
    rows = []
    for quality in QUALITIES:
        first = min(max(105 - quality, 10), 95)
        rows.append({
            "quality": quality,
            "max_error_420": worst(quality, [encoded(image, quality, subsampling=2) for image in colour]),
            "max_error_444": worst(quality, [encoded(image, quality, subsampling=0) for image in colour]),
            "max_error_gray": worst(quality, [encoded(image, quality) for image in gray]),
            "max_error_reencoded": worst(quality, [encoded(decoded(encoded(image, first)), quality)
                                                   for image in colour]),
        })
        print(json.dumps({"jpeg": rows[-1]}), flush=True)
    return rows


def worst(quality: int, files: list[bytes]) -> int:
    """The largest |found - quality| over JPEG ``files`` (100 where none is found)."""
    return max(abs(quality - found) if (found := jpeg_quality(data)) is not None else 100 for data in files)


def preset_rows(colour: list[np.ndarray]) -> dict[str, Any]:
    found = {name: sorted({jpeg_quality(encoded(image, name)) for image in colour[:4]})
             for name in JpegPresets.presets}
    kept = []
    for image in colour[:4]:
        buffer = io.BytesIO()
        Image.open(io.BytesIO(encoded(image, 30))).save(buffer, "JPEG", quality="keep")
        kept.append(jpeg_quality(buffer.getvalue()))
    found["keep (of quality 30)"] = sorted(set(kept))
    return found


def artefact_rows(images: list[np.ndarray]) -> dict[str, Any]:
    cases: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "clean": lambda image: image,
        **{f"jpeg_q{quality}_as_png": (lambda image, q=quality: decoded(encoded(image, q))) for quality in (10, 30, 60)},
        **{f"gaussian_blur_{sigma}": (lambda image, s=sigma: blurred(image, s)) for sigma in (1.2, 2.0)},
    }
    rows = {}
    for name, make in cases.items():
        pixels = [make(image) for image in images]
        rows[name] = {"blockiness": spread([blockiness(image) for image in pixels]),
                      "blur": spread([blur(image) for image in pixels])}
        print(json.dumps({name: rows[name]}), flush=True)
    return rows


def median_ms(call: Callable[..., object], argument: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(argument)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def cost_rows(images: list[np.ndarray], repeats: int) -> dict[str, Any]:
    predictor = Predictor(load_checkpoint(resolve_model("default", "general")).model, PredictorConfig(), device="cpu")
    photos = images[:8]
    rows: dict[str, Any] = {}
    for megapixels, size in COST_SIZES.items():
        sized = photos if size is None else [np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))
                                             for image in photos[:2]]
        for image in sized:
            assess(image)  # warm-up
        timed_model = megapixels != "12"  # the model on 12 megapixels: minutes
        assessment, model = [], []
        for image in sized:
            assessment.append(median_ms(assess, image, repeats))
            if timed_model and not model:  # the model between two timings of the assessment
                predictor.restore_pixels(image)  # warm-up
                model.append(median_ms(predictor.restore_pixels, image, 3))
                assessment.append(median_ms(assess, image, repeats))
        real = sized[0].shape[0] * sized[0].shape[1] / 1e6
        row = {"megapixels": round(real, 3), "assess_ms": round(statistics.median(assessment), 3),
               "assess_ms_per_megapixel": round(statistics.median(assessment) / real, 3),
               "jpeg_quality_ms": round(median_ms(jpeg_quality, encoded(sized[0], 85), repeats), 3)}
        if model:
            row["model_ms"] = round(model[0], 1)
            row["percent_of_model"] = round(100 * row["assess_ms"] / model[0], 2)
        rows[megapixels] = row
        print(json.dumps({"cost": row}), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                        help="folder holding val/CBSD68 and val/BSD68")
    parser.add_argument("--images", type=int, default=68, help="first N images of each set")
    parser.add_argument("--repeats", type=int, default=20, help="assess calls timed per image")
    parser.add_argument("--out", default=None, help="write the report here")
    args = parser.parse_args(argv)
    colour = load_set(args.data / "val" / "CBSD68", args.images)
    gray = load_set(args.data / "val" / "BSD68", args.images)
    started = time.perf_counter()
    report = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "hardware_bf16": cpu_has_fast_bf16()},
        "images": {"color": f"CBSD68, first {len(colour)}", "gray": f"BSD68, first {len(gray)}"},
        "noise": {"note": "errors against the sigma added before clipping, which noise_sigma estimates; "
                          "clipped_noise_std is the std of the noise that clipping to 0..255 left",
                  "color": noise_rows(colour), "gray": noise_rows(gray)},
        "jpeg_quality": {"rows": jpeg_rows(colour, gray), "presets": preset_rows(colour)},
        "artefacts": artefact_rows(colour),
        "cost": cost_rows(colour, args.repeats),
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    return emit(report, args.out)


if __name__ == "__main__":
    sys.exit(main())

"""Encode and decode cost of each output format, per megapixel, on real photos.

For scikit-image's sample photos (astronaut, coffee, chelsea) and one large upscale of the
astronaut (12 megapixels by default), and for each way the restore job can write them (PNG at zlib
levels 1 and 6 through the codec, PNG as Pillow writes it by default, JPEG at quality 95, WEBP at
quality 95, TIFF with deflate), it reports:

- ``encode_ms_per_mpix``: wall milliseconds per megapixel of :func:`restoration.io.codec.encode_image`
  (median of ``--repeats``), and ``encode_cpu_ms_per_mpix``, the process CPU time of the same
  calls (less inflated than wall time on a busy machine);
- ``bytes_per_mpix``: the encoded size per megapixel;
- ``decode_ms_per_mpix`` / ``decode_cpu_ms_per_mpix``: the same for
  :func:`restoration.io.codec.decode_image` of those bytes;

and, in ``summary``, the per-format medians over the photos and what the fast PNG default costs in
size against level 6 (``png_level1_vs_level6``). Single process, one image at a time, no
metadata.

    python bench/codec_throughput.py [--repeats 5] [--large-megapixels 12] [--json PATH]

Timing figures need an otherwise idle machine; ``--repeats 1 --large-megapixels 1`` is a smoke test.
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
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from restoration.io.codec import DecodedImage, decode_image  # noqa: E402
from restoration.io.encode import encode_image

PHOTOS = ("astronaut", "coffee", "chelsea")


def _pillow_default_png(image: DecodedImage) -> bytes:
    """PNG as ``Image.save`` writes it with no options: the reference the fast default replaces."""
    buffer = io.BytesIO()
    Image.fromarray(image.pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# name -> encoder of a DecodedImage
WRITERS: dict[str, Callable[[DecodedImage], bytes]] = {
    "png_level1": lambda image: encode_image(image, "PNG", png_compression=1),
    "png_level6": lambda image: encode_image(image, "PNG", png_compression=6),
    "png_pillow_default": _pillow_default_png,
    "jpeg_q95": lambda image: encode_image(image, "JPEG", quality=95),
    "webp_q95": lambda image: encode_image(image, "WEBP", quality=95),
    "tiff_deflate": lambda image: encode_image(image, "TIFF"),
}


def load_photos(large_megapixels: float) -> list[tuple[str, np.ndarray]]:
    """(name, H x W x 3 uint8) for the sample photos, plus a bicubic upscale of the astronaut to
    about ``large_megapixels`` (4:3; skipped when 0)."""
    from skimage import data

    photos = [(name, getattr(data, name)()) for name in PHOTOS]
    if large_megapixels > 0:
        width = int(round((large_megapixels * 1e6 * 4 / 3) ** 0.5))
        height = int(round(width * 3 / 4))
        large = Image.fromarray(data.astronaut()).resize((width, height), Image.Resampling.BICUBIC)
        photos.append((f"astronaut_{width}x{height}", np.asarray(large)))
    return photos


def timed(function: Callable[[], Any], repeats: int) -> tuple[Any, float, float]:
    """(last result, median wall seconds, median process CPU seconds) over ``repeats`` calls."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return result, statistics.median(walls), statistics.median(cpus)


def measure_photo(name: str, pixels: np.ndarray, repeats: int) -> dict[str, Any]:
    image = DecodedImage(pixels=pixels, alpha=None, mode="RGB", format="PNG")
    megapixels = pixels.shape[0] * pixels.shape[1] / 1e6
    formats: dict[str, dict[str, float]] = {}
    for writer_name, writer in WRITERS.items():
        encoded, encode_wall, encode_cpu = timed(lambda: writer(image), repeats)
        decoded, decode_wall, decode_cpu = timed(lambda: decode_image(encoded), repeats)
        assert decoded.pixels.shape == pixels.shape, (writer_name, decoded.pixels.shape)
        formats[writer_name] = {
            "encode_ms_per_mpix": round(1000 * encode_wall / megapixels, 2),
            "encode_cpu_ms_per_mpix": round(1000 * encode_cpu / megapixels, 2),
            "bytes_per_mpix": round(len(encoded) / megapixels),
            "decode_ms_per_mpix": round(1000 * decode_wall / megapixels, 2),
            "decode_cpu_ms_per_mpix": round(1000 * decode_cpu / megapixels, 2),
        }
    return {
        "name": name,
        "width": int(pixels.shape[1]),
        "height": int(pixels.shape[0]),
        "megapixels": round(megapixels, 3),
        "formats": formats,
    }


def summarize(photos: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-format medians over the photos, and the fast PNG's size and speed against level 6."""
    medians = {
        writer_name: {
            key: round(statistics.median(photo["formats"][writer_name][key] for photo in photos), 2)
            for key in photos[0]["formats"][writer_name]
        }
        for writer_name in WRITERS
    }
    size_ratios = [
        photo["formats"]["png_level1"]["bytes_per_mpix"] / photo["formats"]["png_level6"]["bytes_per_mpix"]
        for photo in photos
    ]
    speedups = [
        photo["formats"]["png_level6"]["encode_cpu_ms_per_mpix"]
        / max(photo["formats"]["png_level1"]["encode_cpu_ms_per_mpix"], 1e-9)
        for photo in photos
    ]
    return {
        "median_over_photos": medians,
        "png_level1_vs_level6": {
            "size_ratio_median": round(statistics.median(size_ratios), 3),
            "size_ratio_max": round(max(size_ratios), 3),
            "encode_cpu_speedup_median": round(statistics.median(speedups), 2),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per photo and format (median)")
    parser.add_argument(
        "--large-megapixels", type=float, default=12.0, help="size of the upscaled photo; 0 skips it"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the report to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.large_megapixels < 0:
        parser.error(f"--large-megapixels must be 0 or more, got {args.large_megapixels}")

    import PIL

    started = time.perf_counter()
    photos = [measure_photo(name, pixels, args.repeats) for name, pixels in load_photos(args.large_megapixels)]
    report = {
        "benchmark": "codec_throughput",
        "settings": {"repeats": args.repeats, "large_megapixels": args.large_megapixels},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),  # how busy the machine was
            "python": platform.python_version(),
            "pillow": PIL.__version__,
            "numpy": np.__version__,
        },
        "photos": photos,
        "summary": summarize(photos),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

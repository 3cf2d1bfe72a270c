"""What the HTML pages cost and how well ``compare`` projects, as JSON.

    .venv/bin/python bench/pages_speed.py [--report-images 2000] [--compare-images 200] [--out FILE]

- ``report``: a ``restore --no-ray`` job of ``--report-images`` noisy 96 x 96 photo crops with the
  shipped denoiser, then ``restoration report`` on its output in a fresh process: the seconds it
  took (wall, from the process's start, imports included) and the peak memory it printed.
- ``compare``: ``restoration compare --model default:denoise --sample 16`` on ``--compare-images``
  noisy 256 x 256 crops: its projected time for the whole collection (the model alone), against a
  real ``restore --no-ray`` of the same collection: the run's model time (the sum of the
  manifest's ``seconds`` covers read, decode, restore, encode and write, so the run's wall time
  and ``pipeline_seconds`` are reported too) -- the ratio ``projected / pipeline_seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COMMAND = [sys.executable, "-m", "jobs.cli"]


def noisy_crops(folder: Path, count: int, size: int) -> None:
    from PIL import Image
    from skimage import data

    photos = [getattr(data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "moon")]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for index in range(count):
        photo = photos[index % len(photos)]
        top = rng.integers(0, photo.shape[0] - size)
        left = rng.integers(0, photo.shape[1] - size)
        crop = photo[top : top + size, left : left + size].astype(np.float32)
        noisy = np.clip(crop + rng.normal(0, 25, crop.shape), 0, 255).astype(np.uint8)
        subfolder = folder / f"{index // 1000:03d}"  # 1,000 files a folder
        subfolder.mkdir(exist_ok=True)
        Image.fromarray(noisy).save(subfolder / f"{index:05d}.png")


def run(args: list[str]) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run([*COMMAND, *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return time.monotonic() - started, done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report-images", type=int, default=2000)
    parser.add_argument("--compare-images", type=int, default=200)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    result: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory(prefix="pages-") as scratch:
        folder = Path(scratch)
        noisy_crops(folder / "report-in", args.report_images, 96)
        job_seconds, _ = run(["restore", "--no-ray", "--task", "denoise", "--input", str(folder / "report-in"),
                              "--output", str(folder / "report-out")])
        seconds, said = run(["report", str(folder / "report-out"), "--html", str(folder / "report.html")])
        peak = re.search(r"peak memory (\d+) MB", said)
        result["report"] = {"images": args.report_images, "job_seconds": round(job_seconds, 1),
                            "report_wall_seconds": round(seconds, 2), "peak_memory_mb": int(peak[1]) if peak else None,
                            "html_mb": round((folder / "report.html").stat().st_size / 1e6, 2), "printed": said.strip()}
        print(json.dumps({"report": result["report"]}), flush=True)

        noisy_crops(folder / "compare-in", args.compare_images, 256)
        compare_seconds, said = run(["compare", "--input", str(folder / "compare-in"), "--model", "default:denoise",
                                     "--sample", "16", "--html", str(folder / "compare.html")])
        rate = float(re.search(r"default:denoise: ([\d.]+) s/megapixel", said)[1])
        megapixels = args.compare_images * 256 * 256 / 1e6
        wall, _ = run(["restore", "--no-ray", "--task", "denoise", "--input", str(folder / "compare-in"),
                       "--output", str(folder / "compare-out")])
        summary = json.loads((folder / "compare-out" / "_manifest" / "_summary.json").read_text())
        projected = rate * megapixels
        result["compare"] = {"images": args.compare_images, "seconds_per_megapixel": rate,
                             "projected_seconds": round(projected, 2), "run_pipeline_seconds": round(summary["pipeline_seconds"], 2),
                             "run_wall_seconds": round(wall, 2), "compare_wall_seconds": round(compare_seconds, 2),
                             "projected_over_pipeline": round(projected / summary["pipeline_seconds"], 3)}
        print(json.dumps({"compare": result["compare"]}), flush=True)
    result["load_average_1min"] = os.getloadavg()[0]
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""PSNR of the shipped denoiser at restore strengths 0 .. 1 on noisy sample photos, as JSON.

    .venv/bin/python bench/strength_psnr.py [--sigma 25] [--strengths 0,0.25,0.5,0.75,1] [--size 256]

scikit-image's sample photos (center crops of ``--size`` pixels, or whole where smaller) get
Gaussian noise of ``--sigma`` under the evaluate protocol (seeded by the photo's name); each is
restored by ``Predictor(..., PredictorConfig(strength=s))`` and scored on the clipped 8-bit output. Strength is
residual scaling, ``lq + s * (model(lq) - lq)``, so at 0 the score is the noisy input's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from restoration.io.pixels import tensor_to_pixels  # noqa: E402
from restoration.models.checkpoint import load_checkpoint  # noqa: E402
from restoration.models.predictor import Predictor, PredictorConfig  # noqa: E402
from restoration.quality.metrics import score  # noqa: E402
from restoration.tasks.specs import get_task  # noqa: E402

DENOISER = ROOT / "restoration" / "weights" / "denoise"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")  # camera is gray


def photos(size: int) -> list[tuple[str, np.ndarray]]:
    from skimage import data

    out = []
    for name in PHOTOS:
        pixels = getattr(data, name)()
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels[..., :3]
        top, left = max(0, (pixels.shape[0] - size) // 2), max(0, (pixels.shape[1] - size) // 2)
        out.append((name, np.ascontiguousarray(pixels[top : top + size, left : left + size])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--strengths", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    strengths = [float(value) for value in args.strengths.split(",")]
    protocol = get_task("denoise").protocol(sigma=args.sigma)
    samples = [protocol.sample(name, pixels) for name, pixels in photos(args.size)]
    model = load_checkpoint(DENOISER).model
    rows = []
    for sample in samples:
        row = {"image": sample.name, "channels": int(sample.gt.shape[-1]),
               "noisy_psnr": score(sample.identity, sample.gt, protocol)[0]}
        rows.append(row)
    for strength in strengths:
        predictor = Predictor(model, PredictorConfig(strength=strength), device="cpu")
        for row, sample in zip(rows, samples):
            restored = tensor_to_pixels(predictor.restore(sample.lq).clamp(0, 1))
            row[f"psnr_strength_{strength:g}"] = score(restored, sample.gt, protocol)[0]
    color = [row for row in rows if row["channels"] == 3]
    means = {f"{strength:g}": float(np.mean([row[f"psnr_strength_{strength:g}"] for row in color]))
             for strength in strengths}
    print(json.dumps({"sigma": args.sigma, "size": args.size, "precision": predictor.precision,
                      "mean_psnr_color_by_strength": means, "images": rows}, indent=2))


if __name__ == "__main__":
    main()

"""Archives to try ``restoration distill`` and ``finetune --self-supervised`` on, made from the
benchmark photos in ``../shared/data`` (nothing from there is committed; this writes new files):

- ``OUT/low-res/``: CBSD432 photos downscaled x4 with bicubic (PIL, antialiased; 120 x 80 or
  80 x 120), what a scan archive of small images looks like to a x4 model;
- ``OUT/noisy/train/``, ``OUT/noisy/held-out/``: CBSD432 and CBSD68 photos with Gaussian noise of
  ``--sigma`` (default 70, beyond the shipped denoiser's training range of 0-50) or shot noise
  (``--noise poisson``: Poisson of ``--peak`` photons at white, plus Gaussian sigma 5), saved as
  8-bit PNG as a real noisy file is; ``OUT/noisy/clean-held-out/``: the held-out photos' clean
  originals, to measure with (``restoration compare --reference``), never to train on.

    python bench/make_archives.py --out /tmp/archives
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".bmp", ".tif"))


def low_resolution(source: Path, out: Path, count: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for path in _photos(source)[:count]:
        image = Image.open(path).convert("RGB")
        image.resize((image.width // 4, image.height // 4), Image.BICUBIC).save(out / f"{path.stem}.png")
    return min(count, len(_photos(source)))


def noisy(source: Path, out: Path, count: int, *, noise: str, sigma: float, peak: float, seed: int,
          clean: Path | None = None) -> int:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for path in _photos(source)[:count]:
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
        if noise == "gaussian":
            damaged = pixels + rng.normal(0, sigma, pixels.shape)
        else:
            damaged = rng.poisson(pixels / 255 * peak) / peak * 255 + rng.normal(0, 5, pixels.shape)
        Image.fromarray(np.clip(damaged, 0, 255).round().astype(np.uint8)).save(out / f"{path.stem}.png")
        if clean is not None:
            clean.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(clean / f"{path.stem}.png")
    return min(count, len(_photos(source)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", default=str(DATA), help="the benchmark data (default ../shared/data)")
    parser.add_argument("--low-res", type=int, default=100, help="CBSD432 photos made low-resolution (100)")
    parser.add_argument("--train", type=int, default=32, help="noisy CBSD432 training photos (32)")
    parser.add_argument("--held-out", type=int, default=10, help="noisy CBSD68 held-out photos (10)")
    parser.add_argument("--noise", choices=("gaussian", "poisson"), default="gaussian")
    parser.add_argument("--sigma", type=float, default=70.0)
    parser.add_argument("--peak", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data, out = Path(args.data), Path(args.out)
    train, val = data / "train" / "CBSD432", data / "val" / "CBSD68"
    made = {
        "low-res": low_resolution(train, out / "low-res", args.low_res),
        "noisy/train": noisy(train, out / "noisy" / "train", args.train, noise=args.noise, sigma=args.sigma,
                             peak=args.peak, seed=args.seed),
        "noisy/held-out": noisy(val, out / "noisy" / "held-out", args.held_out, noise=args.noise, sigma=args.sigma,
                                peak=args.peak, seed=args.seed + 1, clean=out / "noisy" / "clean-held-out"),
    }
    print(json.dumps({"out": str(out), "noise": args.noise, "sigma": args.sigma, "peak": args.peak, "made": made}))


if __name__ == "__main__":
    main()

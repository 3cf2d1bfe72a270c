"""``--model auto`` on a mixed archive: per-image routing against every single shipped model and
against the per-image oracle, as JSON.

    .venv/bin/python bench/auto_route.py [--images ../shared/data/val/CBSD68] [--per-condition 8]
        [--seed 0] [--out bench/results/auto_route.json] [--rows rows.json]

The mixed set: the photos of ``--images`` (sorted, the first ``8 x --per-condition``), each given
one of eight conditions in turn (:data:`CONDITIONS`: clean; Gaussian noise 10 and 25; JPEG
quality 30 and 60; Gaussian blur 1.2; noise 15 then JPEG 60; the gray photo with noise 15 then
JPEG 70), seeded, written as an archive would hold them: JPEG files where the last step is JPEG
(so their quantization tables are there to read), PNG otherwise.

Scored against the clean photo (its gray version for the gray condition), RGB PSNR of the 8-bit
output, capped at 60 dB (an image returned unchanged scores 60 against itself):

- ``input``: the file as it is; each shipped model (``denoise``, ``jpeg``, ``deblur``,
  ``general``) on every image, at strength 1 and 0.5, through the same ``Predictor`` as the job
  (its default precision);
- ``oracle``: per image, the best of the input and the four models at strength 1 (the figure the
  issue compares against); ``oracle_with_strengths`` adds strength 0.5;
- ``auto``: ``restoration restore --no-ray --model auto`` on the written files: the job's own
  assessment and routing, its outputs (written as PNG) read back and scored;
  ``auto_default_format`` the same job writing each output in its input's format (a JPEG input
  comes back as a JPEG at quality 95, which costs 0.1-0.2 dB), with how many clean images came
  back byte-identical, and the lowest PSNR of a clean one.

``--rows FILE`` also writes every image's measures (``restoration.quality.assess``) and the
PSNR of every choice, the data the automatic route's thresholds were chosen on (from CBSD432
photos, never from the set the figures are reported on).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reporting import emit  # noqa: E402
from restoration.models.checkpoint import load_checkpoint, resolve_model  # noqa: E402
from restoration.models.predictor import Predictor, PredictorConfig  # noqa: E402
from restoration.quality.assess import assess  # noqa: E402

MODELS = ("denoise", "jpeg", "deblur", "general")
STRENGTHS = (1.0, 0.5)
CAP = 60.0

#: name -> (gray, steps): steps are ("noise", sigma), ("blur", sigma), ("jpeg", quality)
CONDITIONS: dict[str, tuple[bool, tuple[tuple[str, float], ...]]] = {
    "clean": (False, ()),
    "noise10": (False, (("noise", 10),)),
    "noise25": (False, (("noise", 25),)),
    "jpeg30": (False, (("jpeg", 30),)),
    "jpeg60": (False, (("jpeg", 60),)),
    "blur1.2": (False, (("blur", 1.2),)),
    "noise15-jpeg60": (False, (("noise", 15), ("jpeg", 60))),
    "gray-noise15-jpeg70": (True, (("noise", 15), ("jpeg", 70))),
}


def gray(pixels: np.ndarray) -> np.ndarray:
    """BT.601 luma, 8-bit, H x W."""
    weights = np.array([0.299, 0.587, 0.114])
    return np.clip(np.round(pixels.astype(np.float64) @ weights), 0, 255).astype(np.uint8)


def eight_bit(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def pil(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)


def read(data: bytes) -> np.ndarray:
    """H x W x C pixels of an encoded image (C = 1 for gray)."""
    pixels = np.asarray(Image.open(io.BytesIO(data)))
    return pixels[..., None] if pixels.ndim == 2 else pixels


def gaussian_blur(pixels: np.ndarray, sigma: float) -> np.ndarray:
    import torch

    from restoration.tasks.degradations import gaussian_blur as blur

    x = torch.from_numpy(pixels.astype(np.float32) / 255)
    out = blur(x.permute(2, 0, 1)[None], sigma)[0].permute(1, 2, 0)
    return eight_bit(out.numpy() * 255)


def degrade(clean: np.ndarray, condition: str, rng: np.random.Generator) -> tuple[np.ndarray, bytes, str, np.ndarray]:
    """(the reference, the file's bytes, its suffix, the decoded degraded pixels)."""
    is_gray, steps = CONDITIONS[condition]
    reference = gray(clean)[..., None] if is_gray else clean
    pixels = reference.astype(np.float64)
    data, suffix = None, ".png"
    for step, value in steps:
        if step == "noise":
            pixels = pixels + rng.normal(0.0, value, pixels.shape)
        elif step == "blur":
            pixels = gaussian_blur(eight_bit(pixels), value).astype(np.float64)
        elif step == "jpeg":
            buffer = io.BytesIO()
            pil(eight_bit(pixels)).save(buffer, "JPEG", quality=int(value))
            data, suffix = buffer.getvalue(), ".jpg"
            pixels = read(data).astype(np.float64)
    degraded = eight_bit(pixels)
    if data is None:
        buffer = io.BytesIO()
        pil(degraded).save(buffer, "PNG")
        data = buffer.getvalue()
    return reference, data, suffix, degraded


def psnr(output: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((output.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return CAP if mse == 0 else min(CAP, 10 * np.log10(255.0**2 / mse))


def with_strength(output: np.ndarray, degraded: np.ndarray, strength: float) -> np.ndarray:
    """The Predictor's blend, on 8-bit pixels (close to it: the Predictor blends before rounding)."""
    blended = degraded.astype(np.float64) + strength * (output.astype(np.float64) - degraded.astype(np.float64))
    return eight_bit(blended)


def run_auto(folder: Path, output: Path, *settings: str) -> float:
    from jobs.cli import main

    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["restore", "--input", str(folder), "--output", str(output), "--model", "auto", "--no-ray",
                     *[arg for setting in settings for arg in ("--set", setting)]])
    if code != 0:
        raise SystemExit(f"restore --model auto exited {code}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default=str(ROOT.parent / "shared" / "data" / "val" / "CBSD68"))
    parser.add_argument("--per-condition", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-auto", action="store_true", help="score the single models and the oracle only")
    parser.add_argument("--out", default=None)
    parser.add_argument("--rows", default=None, help="write per-image measures and scores here")
    args = parser.parse_args(argv)

    files = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    count = len(CONDITIONS) * args.per_condition
    if len(files) < count:
        raise SystemExit(f"{args.images} has {len(files)} images, {count} needed")
    predictors = {name: Predictor(load_checkpoint(resolve_model("default", name)).model, PredictorConfig(), device="cpu")
                  for name in MODELS}
    rng = np.random.default_rng(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "archive"
        folder.mkdir()
        references = {}
        for index, path in enumerate(files[:count]):
            condition = list(CONDITIONS)[index % len(CONDITIONS)]
            clean = np.asarray(Image.open(path).convert("RGB"))
            reference, data, suffix, degraded = degrade(clean, condition, rng)
            name = f"{index:03d}-{condition}-{path.stem}{suffix}"
            (folder / name).write_bytes(data)
            references[name] = reference
            measures = assess(degraded, data=data).as_row()
            scores = {"input": psnr(degraded, reference)}
            for model, predictor in predictors.items():
                restored = predictor.restore_pixels(degraded)
                for strength in STRENGTHS:
                    scores[f"{model}@{strength:g}"] = psnr(with_strength(restored, degraded, strength), reference)
            rows.append({"file": name, "condition": condition, "measures": measures, "scores": scores})
            print(json.dumps(rows[-1]), flush=True)
        auto_seconds = None
        if not args.no_auto:
            # Written as PNG, the routing's own result; in the input's format (the default: a JPEG
            # written back as JPEG at output.quality 95), what a user gets by default.
            auto_seconds = run_auto(folder, Path(tmp) / "auto", "output.format=png")
            run_auto(folder, Path(tmp) / "auto-default-format")
            for row in rows:
                png = Path(tmp) / "auto" / (Path(row["file"]).stem + ".png")
                row["scores"]["auto"] = psnr(read(png.read_bytes()), references[row["file"]])
                written = Path(tmp) / "auto-default-format" / row["file"]
                row["scores"]["auto_default_format"] = psnr(read(written.read_bytes()), references[row["file"]])
                row["auto_same_bytes"] = written.read_bytes() == (folder / row["file"]).read_bytes()
            manifest = __import__("restoration.restore.manifest", fromlist=["read_manifest"]).read_manifest(str(Path(tmp) / "auto"))
            routes = {Path(r["source_uri"]).name: (r.get("route"), r.get("route_reason")) for r in manifest.to_pylist()}
            for row in rows:
                row["route"], row["route_reason"] = routes.get(row["file"], (None, None))

    def mean(key: str) -> float:
        return round(statistics.fmean(row["scores"][key] for row in rows), 3)

    singles = [f"{model}@1" for model in MODELS]
    for row in rows:
        row["scores"]["oracle"] = max(row["scores"][key] for key in ("input", *singles))
        row["scores"]["oracle_with_strengths"] = max(v for k, v in row["scores"].items()
                                                     if k not in ("auto", "auto_default_format", "oracle"))
    report = {
        "images": args.images, "count": len(rows), "seed": args.seed, "cap_db": CAP,
        "mean_psnr": {key: mean(key) for key in ("input", *[f"{m}@{s:g}" for m in MODELS for s in STRENGTHS],
                                                  "oracle", "oracle_with_strengths",
                                                  *(["auto", "auto_default_format"] if not args.no_auto else []))},
        "per_condition": {condition: {key: round(statistics.fmean(r["scores"][key] for r in rows if r["condition"] == condition), 3)
                                      for key in ("input", *singles, "oracle", *(["auto"] if not args.no_auto else []))}
                          for condition in CONDITIONS},
    }
    best_single = max(singles, key=mean)
    report["best_single"] = {"model": best_single, "mean_psnr": mean(best_single)}
    if not args.no_auto:
        clean = [row for row in rows if row["condition"] == "clean"]
        report["auto"] = {
            "mean_psnr": mean("auto"),
            "mean_psnr_default_format": mean("auto_default_format"),
            "below_oracle_db": round(mean("oracle") - mean("auto"), 3),
            "above_best_single_db": round(mean("auto") - mean(best_single), 3),
            "clean_same_bytes": sum(row["auto_same_bytes"] for row in clean),
            "clean_count": len(clean),
            "clean_lowest_psnr": min(row["scores"]["auto_default_format"] for row in clean),
            "job_seconds": round(auto_seconds, 2),
            "routes": {condition: [row["route"] for row in rows if row["condition"] == condition] for condition in CONDITIONS},
        }
    if args.rows:
        Path(args.rows).write_text(json.dumps(rows, indent=1) + "\n")
    return emit(report, args.out)


if __name__ == "__main__":
    sys.exit(main())

"""The two ways of training on an archive, run as a user runs them, timed, with what they report
and what they do to held-out photos (``bench/results/archive_runs.json``):

1. ``restoration distill``: Real-ESRGAN x4plus (real weights) into a Compact student on 50
   low-resolution photos (40 to train on, 10 held out), ``--no-ray``; the report's agreement
   (beside bicubic's), the speed ratio, the agreement curve against steps and seconds.
2. ``restoration finetune --self-supervised``: the shipped denoiser adapted to photos with Gaussian
   noise of sigma 70 (beyond its training range) from the noisy photos alone; the residual-noise
   report (no clean image), and -- measured here only -- PSNR against the clean held-out photos
   before and after.

The archives come from ``bench/make_archives.py``. Commands and settings are the README's.

    python bench/make_archives.py --out /tmp/archives
    python bench/archive_runs.py --archives /tmp/archives --runs /tmp/archive-runs [--only distill]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "archive_runs.json"
RESTORATION = [sys.executable, "-m", "jobs.cli"]


def _run(args: list[str], log: Path) -> tuple[int, float]:
    started = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.call([*RESTORATION, *args], cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    return code, time.perf_counter() - started


def _curve(model_dir: Path, keys: tuple[str, ...]) -> list[dict]:
    rows = list(csv.DictReader((model_dir / "metrics.csv").read_text().splitlines()))
    start = json.loads((model_dir / "model.json").read_text())["provenance"].get("validation_at_start") or {}
    curve = [{"step": 0, "seconds": 0.0, **{k: start[k] for k in keys if k in start}}] if start else []
    return curve + [{"step": int(r["step"]), "seconds": round(float(r["wall_seconds"]), 1),
                     **{k: float(r[k]) for k in keys if r.get(k)}} for r in rows if r.get(keys[0])]


def distill(archives: Path, runs: Path, extra: list[str], *, student: str, name: str) -> dict:
    args = ["distill", "--teacher", "realesrgan-x4plus", "--student", student,
            "--images", str(archives / "low-res"), "--sample", "50", "--held-out", "10",
            "--storage", str(runs), "--name", name, "--no-ray", *extra]
    code, seconds = _run(args, runs / f"{name}.log")
    run = runs / name
    report = json.loads((run / "distill.json").read_text()) if code == 0 else None
    return {"command": "restoration " + " ".join(args), "exit_code": code, "wall_seconds": round(seconds, 1),
            "report": report and {k: v for k, v in report.items() if k != "images"},
            "curve": _curve(run / "model", ("val_psnr", "val_ssim")) if code == 0 else None}


def _psnr(image: np.ndarray, reference: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((image.astype(float) - reference.astype(float)) ** 2)))


def held_out_psnr(model: str, noisy: Path, clean: Path) -> dict:
    """PSNR of ``model``'s outputs of the noisy held-out photos against their clean originals."""
    sys.path.insert(0, str(ROOT))
    from restoration.models.checkpoint import load_checkpoint, resolve_model
    from restoration.models.predictor import Predictor, PredictorConfig
    from restoration.quality.assess import estimate_noise

    predictor = Predictor(load_checkpoint(resolve_model(model, "denoise")).model,
                          PredictorConfig(tile=0, precision="fp32"), device="cpu")
    values, residual = [], []
    for path in sorted(noisy.glob("*.png")):
        out = predictor.restore_pixels(np.asarray(Image.open(path).convert("RGB")))
        values.append(_psnr(out, np.asarray(Image.open(clean / path.name).convert("RGB"))))
        residual.append(estimate_noise(out))
    return {"psnr": float(np.mean(values)), "psnr_each": [round(v, 2) for v in values],
            "residual_noise": float(np.mean(residual))}


def self_supervised(archives: Path, runs: Path, extra: list[str]) -> dict:
    noisy = archives / "noisy"
    args = ["finetune", "--task", "denoise", "--init", "default", "--self-supervised",
            "--train-images", str(noisy / "train"), "--val-images", str(noisy / "held-out"),
            "--storage", str(runs), "--name", "adapted-sigma70", "--no-ray", *extra]
    code, seconds = _run(args, runs / "self_supervised.log")
    model = runs / "adapted-sigma70" / "model"
    result = {"command": "restoration " + " ".join(args), "exit_code": code, "wall_seconds": round(seconds, 1)}
    if code == 0:
        result["curve"] = _curve(model, ("val_noise_left", "val_residual_noise", "val_removed_noise"))
        result["measured_against_clean"] = {
            "note": "PSNR against the clean originals of the held-out photos, read here only (never in training)",
            "start": held_out_psnr("default", noisy / "held-out", noisy / "clean-held-out"),
            "adapted": held_out_psnr(str(model), noisy / "held-out", noisy / "clean-held-out"),
            "noisy_input": float(np.mean([
                _psnr(np.asarray(Image.open(p).convert("RGB")),
                      np.asarray(Image.open(noisy / "clean-held-out" / p.name).convert("RGB")))
                for p in sorted((noisy / "held-out").glob("*.png"))])),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archives", required=True, type=Path)
    parser.add_argument("--runs", required=True, type=Path)
    parser.add_argument("--only", choices=("distill", "self-supervised"), default=None)
    parser.add_argument("--distill-set", action="append", default=[], help="extra distill arguments")
    parser.add_argument("--student", default="realesr-animevideov3", help="the distill run's --student")
    parser.add_argument("--name", default="x4plus-compact", help="the distill run's --name (and its key here)")
    parser.add_argument("--self-supervised-set", action="append", default=[], help="extra finetune arguments")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    import torch

    results["machine"] = f"this CPU, {torch.get_num_threads()} threads"
    if args.only in (None, "distill"):
        results[f"distill {args.name}"] = distill(args.archives, args.runs, args.distill_set, student=args.student,
                                                  name=args.name)
        print(json.dumps(results[f"distill {args.name}"], indent=1)[:3000], flush=True)
    if args.only in (None, "self-supervised"):
        results["self_supervised"] = self_supervised(args.archives, args.runs, args.self_supervised_set)
        print(json.dumps(results["self_supervised"], indent=1)[:3000], flush=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()

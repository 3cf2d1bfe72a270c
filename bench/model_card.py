"""The evaluation table of MODEL_CARD.md: every default model under the papers' protocols, beside
the classical baselines, with PSNR/SSIM and seconds per image on this machine.

    python bench/model_card.py --data ../shared/data --json bench/results/model_card.json

Every row is one ``restoration.quality.evaluate.evaluate`` call, the same code as
``restoration evaluate --model default --task ... --images ...``, so each figure can be reproduced
one command at a time. CBM3D takes 15-25 s per image here, so the side-by-side denoising timing
table runs on the first ``--classical-limit`` CBSD68 images (the model's main rows use all 68).
``--ensemble`` adds the defaults with the x8 self-ensemble (``restoration evaluate --ensemble 8``).
Prints the JSON report and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from restoration.quality.evaluate import evaluate
from restoration.tasks.specs import get_task

TASKS = ("denoise", "sr", "jpeg", "inpaint")


def rows_for(task: str, data: Path, classical_limit: int) -> list[dict]:
    """(label, set, protocol, models, limit) for each table row of a task."""
    cbsd68, set5, set14, classic5 = (str(data / "val" / n) for n in ("CBSD68", "Set5", "Set14_SRF4_HR", "Classic5"))
    rows = []
    if task == "denoise":
        for sigma in (15, 25, 50):
            protocol = get_task("denoise").protocol(sigma=sigma)
            rows.append(dict(setting=f"sigma {sigma}", images=cbsd68, protocol=protocol, models=["default", "identity"], limit=None))
            if classical_limit:
                rows.append(dict(setting=f"sigma {sigma}", images=cbsd68, protocol=protocol,
                                 models=["default", "bm3d", "nlm"], limit=classical_limit))
    elif task == "sr":
        for images in (set5, set14):
            rows.append(dict(setting="x4", images=images, protocol=get_task("sr").protocol(scale=4),
                             models=["default", "bicubic"], limit=None))
    elif task == "jpeg":
        for quality in (10, 20):
            rows.append(dict(setting=f"quality {quality}", images=classic5, protocol=get_task("jpeg").protocol(quality=quality),
                             models=["default", "identity"], limit=None))
    elif task == "inpaint":
        for kind, ratio in (("dropout", 0.25), ("dropout", 0.5), ("box", 0.5)):
            setting = f"{kind} {ratio:.0%}" if kind == "dropout" else kind
            rows.append(dict(setting=setting, images=cbsd68, protocol=get_task("inpaint").protocol(mask_kind=kind, mask_ratio=ratio),
                             models=["default", "identity", "telea"], limit=None))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder holding val/CBSD68, val/Set5, val/Set14_SRF4_HR, val/Classic5")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--model", action="append", default=[], metavar="TASK=DIR",
                   help="evaluate this checkpoint instead of the shipped default for TASK (repeatable)")
    p.add_argument("--classical-limit", type=int, default=10, help="CBSD68 images for the CBM3D/NLM timing rows (0: none)")
    p.add_argument("--timing-only", action="store_true", help="only the CBM3D/NLM timing rows (run them on an idle machine)")
    p.add_argument("--limit", type=int, default=None, help="at most N images per row (a quick check)")
    p.add_argument("--ensemble", action="store_true",
                   help="add rows for the default models with the x8 geometric self-ensemble (8x the time)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--json", default=None, help="write the report here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    override = dict(item.split("=", 1) for item in args.model)
    data = Path(args.data)

    results = []
    for task in args.tasks:
        for row in rows_for(task, data, args.classical_limit):
            if args.timing_only and row["limit"] is None:
                continue
            models = row["models"] + (["default-x8"] if args.ensemble and row["limit"] is None else [])
            for model in models:
                ensemble = 8 if model == "default-x8" else 1
                name = override.get(task, "default") if model.startswith("default") else model
                start = time.perf_counter()
                report = evaluate(name, row["protocol"], row["images"], limit=min(filter(None, (row["limit"], args.limit)), default=None),
                                  device="cpu", ensemble=ensemble)
                result = {
                    "task": task, "set": Path(row["images"]).name, "setting": row["setting"], "model": model,
                    "checkpoint": name if model.startswith("default") else None, "ensemble": ensemble, "images": len(report["images"]),
                    "psnr": round(report["psnr"], 3), "ssim": round(report["ssim"], 4),
                    "seconds_per_image": round(report["seconds_per_image"], 3),
                    "protocol": report["protocol"],
                }
                results.append(result)
                print(f"{task:8} {result['set']:14} {row['setting']:12} {model:9} {result['images']:3d} images "
                      f"{result['psnr']:6.2f} dB  SSIM {result['ssim']:.4f}  {result['seconds_per_image']:.3f} s/image "
                      f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)

    out = {
        "machine": {"torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(), "torch": torch.__version__},
        "results": results,
    }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(markdown(results), file=sys.stderr)
    return 0


def markdown(results: list[dict]) -> str:
    lines = ["| task | set | setting | model | images | PSNR (dB) | SSIM | s/image |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['task']} | {r['set']} | {r['setting']} | {r['model']} | {r['images']} | "
                     f"{r['psnr']:.2f} | {r['ssim']:.4f} | {r['seconds_per_image']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

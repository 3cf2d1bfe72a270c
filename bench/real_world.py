"""Real-world table of MODEL_CARD.md: the input, each shipped model and the classical baselines side
by side on the Gaussian protocols (CBSD68 color, BSD68 and Set12 gray) and on the named real-world
cases (``restoration evaluate --help`` lists them), in PSNR and seconds per image.

    python bench/real_world.py --data ../shared/data --json bench/results/real_world.json

Every cell is one ``restoration.quality.evaluate.evaluate`` call, the same code as
``restoration evaluate --model default --task TASK --case CASE --images DIR``. ``--model TASK=DIR``
evaluates a candidate checkpoint in place of a shipped model (how new weights are compared before
they replace the shipped ones). BM3D is given the true sigma and runs on the first
``--classical-limit`` images (15-25 s per image here); Wiener is given the true blur kernel. Prints the JSON report and a Markdown table.
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
from restoration.tasks.specs import CASES, get_case, get_task

MODELS = ("denoise", "deblur", "general")
"""The shipped models compared on every row (each where it applies: no mask, no upscaling)."""


def rows(data: Path, sets: list[str], cases: list[str]) -> list[dict]:
    """(set, setting, protocol or case, baselines) per table row."""
    out = []
    for name in sets:
        images = str(data / "val" / name)
        for sigma in (15, 25, 50):
            out.append(dict(set=name, images=images, setting=f"gaussian sigma {sigma}",
                            spec=get_task("denoise").protocol(sigma=sigma), baselines=["bm3d"]))
        if name == "CBSD68":
            for case_name in cases:
                case = get_case(case_name)
                baselines = []
                if case.spec.noise_probability == 1 and case.spec.poisson_probability == 0:
                    baselines.append("bm3d")
                if case.spec.noise_probability == 0 and case.spec.resize_probability == 0:
                    baselines.append("wiener")
                out.append(dict(set=name, images=images, setting=case_name, spec=case, baselines=baselines))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder holding val/CBSD68, val/BSD68, val/Set12")
    p.add_argument("--sets", nargs="+", default=["CBSD68", "BSD68", "Set12"])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--model", action="append", default=[], metavar="TASK=DIR",
                   help="evaluate this checkpoint instead of the shipped model for TASK (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="at most N images per row (a quick check)")
    p.add_argument("--classical-limit", type=int, default=4, help="images for the BM3D cells (0: none)")
    p.add_argument("--no-gaussian", action="store_true", help="only the real-world cases")
    p.add_argument("--ensemble", type=int, default=1, choices=(1, 2, 4, 8),
                   help="the trained models' geometric self-ensemble (1: off; 8: 8x the time)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--json", default=None, help="write the report here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    override = dict(item.split("=", 1) for item in args.model)
    data = Path(args.data)

    results = []
    for row in rows(data, args.sets, args.cases):
        if args.no_gaussian and row["setting"].startswith("gaussian"):
            continue
        cells = [("input", "identity", None, args.limit)]
        cells += [(task, override.get(task, "default"), task, args.limit) for task in args.models]
        for baseline in row["baselines"]:
            limit = args.classical_limit if baseline == "bm3d" else args.limit
            if limit != 0:
                cells.append((baseline, baseline, None, limit))
        for label, model, task, limit in cells:
            if row["setting"].startswith("gaussian") and task not in (None, "denoise", "general"):
                continue  # the deblurring model is not a denoiser
            spec = row["spec"]
            start = time.perf_counter()
            ensemble = args.ensemble if task is not None else 1  # the input and the baselines have none
            report = evaluate(model, spec, row["images"], task=task, limit=limit, device="cpu", ensemble=ensemble)
            result = {"set": row["set"], "setting": row["setting"], "model": label, "checkpoint": model,
                      "images": len(report["images"]), "ensemble": ensemble, "psnr": round(report["psnr"], 3),
                      "ssim": round(report["ssim"], 4), "seconds_per_image": round(report["seconds_per_image"], 3)}
            results.append(result)
            print(f"{row['set']:7} {row['setting']:22} {label:16} {result['images']:3d} images {result['psnr']:6.2f} dB "
                  f"{result['seconds_per_image']:.3f} s/image ({time.perf_counter() - start:.0f} s)",
                  file=sys.stderr, flush=True)

    out = {"ensemble": args.ensemble,
           "machine": {"torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                       "processor": platform.processor() or platform.machine(), "torch": torch.__version__},
           "results": results}
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(markdown(results), file=sys.stderr)
    return 0


def markdown(results: list[dict]) -> str:
    """One line per (set, setting): PSNR of every model, with the image count where it differs."""
    labels = list(dict.fromkeys(r["model"] for r in results))
    lines = ["| set | setting | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    keys = list(dict.fromkeys((r["set"], r["setting"]) for r in results))
    full = max((r["images"] for r in results), default=0)
    for key in keys:
        cells = []
        for label in labels:
            found = [r for r in results if (r["set"], r["setting"]) == key and r["model"] == label]
            if not found:
                cells.append("")
                continue
            r = found[0]
            cells.append(f"{r['psnr']:.2f}" + (f" ({r['images']} img)" if r["images"] != full else ""))
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

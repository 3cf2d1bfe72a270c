"""Does the ImageNet-pretrained backbone pay? Three variants under one equal training budget.

Variants (same architecture, steps, data, seed, schedule):

- ``pretrained``: ImageNet EfficientNet-Lite0 backbone fused with the target branch (alpha learned
  from 0.5) -- the method;
- ``random_backbone``: the same network with a randomly initialized backbone;
- ``target_only``: the target branch alone (alpha fixed at 0: the backbone contributes nothing).

Each is trained with the library's training loop (the one the Ray Train job runs) on the first
``N`` images of CBSD432 for N in ``--train-sizes``, and evaluated with the ``restoration evaluate``
protocol: denoising at sigma 25 on CBSD68 and x4 super-resolution on Set14.

    python bench/transfer_evidence.py --steps 300 --json bench/results/transfer_evidence.json \\
        --plot bench/results/transfer_evidence.png

Prints JSON (and a Markdown table on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from restoration import storage  # noqa: E402
from restoration.finetune.data import load_training_images
from restoration.finetune.settings import load_train_config  # noqa: E402
from restoration.finetune.trainer import CropSampler, Trainer, initial_model
from restoration.models.checkpoint import save_checkpoint  # noqa: E402
from restoration.quality.evaluate import evaluate  # noqa: E402
from restoration.tasks.specs import get_task  # noqa: E402

VARIANTS = {
    "pretrained": ["backbone_weights=imagenet"],
    "random_backbone": ["backbone_weights=null"],
    "target_only": ["backbone_weights=null", "model.alpha=0.0", "model.learn_alpha=false"],
}
TASKS = {
    # task: (training overrides, evaluation protocol, evaluation folder)
    "denoise": (["degradation.sigma_range=[25,25]"], get_task("denoise").protocol(sigma=25), "val/CBSD68"),
    "sr": (["degradation.scale=4"], get_task("sr").protocol(scale=4), "val/Set14_SRF4_HR"),
}


def run_one(task: str, variant: str, train_uris: list[str], args: argparse.Namespace, workdir: Path) -> dict:
    task_overrides, protocol, eval_dir = TASKS[task]
    overrides = [
        f"data.batch_size={args.batch_size}", f"data.crop_size={args.crop_size}", f"optim.lr={args.lr}",
        f"optim.backbone_lr={args.lr / 10}", "optim.warmup_steps=20", f"seed={args.seed}",
        *task_overrides, *VARIANTS[variant],
    ]
    config = load_train_config(task, overrides=overrides, steps=args.steps)
    torch.manual_seed(args.seed)
    model = initial_model(config)
    images = load_training_images(train_uris, min_size=config.data.crop_size)
    trainer = Trainer(config, model, CropSampler(images, config))
    start = time.perf_counter()
    losses = []
    while trainer.step < config.steps:
        losses.append(trainer.train_step()["loss"])
    train_seconds = time.perf_counter() - start
    checkpoint = workdir / f"{task}-{variant}-{len(train_uris)}"
    save_checkpoint(trainer.model, checkpoint)
    report = evaluate(str(checkpoint), protocol, str(args.data / eval_dir), limit=args.eval_limit)
    return {
        "task": task,
        "variant": variant,
        "train_images": len(train_uris),
        "steps": config.steps,
        "psnr": report["psnr"],
        "ssim": report["ssim"],
        "eval_images": len(report["images"]),
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "train_seconds": train_seconds,
        "alpha": trainer.model.alphas(),
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in results})
    sizes = sorted({r["train_images"] for r in results})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), dpi=100, squeeze=False)
    width = 0.8 / len(VARIANTS)
    for ax, task in zip(axes[0], tasks):
        for i, variant in enumerate(VARIANTS):
            values = [next((r["psnr"] for r in results if r["task"] == task and r["variant"] == variant
                            and r["train_images"] == n), float("nan")) for n in sizes]
            ax.bar([x + i * width for x in range(len(sizes))], values, width, label=variant)
        ax.set_xticks([x + width for x in range(len(sizes))], [f"{n} images" for n in sizes])
        low = min(r["psnr"] for r in results if r["task"] == task)
        ax.set_ylim(low - 1.0, None)
        ax.set_ylabel("PSNR (dB)")
        ax.set_title({"denoise": "denoising, CBSD68, sigma 25", "sr": "x4 SR, Set14 (Y)"}[task])
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-sizes", type=int, nargs="+", default=[32, 432])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N images only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/transfer-evidence"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_dir = args.data / "train" / "CBSD432"
    if not train_dir.is_dir():
        print(f"training images not found at {train_dir}", file=sys.stderr)
        return 2
    all_uris = storage.list_images(str(train_dir))
    results = []
    for task in args.tasks:
        for n in args.train_sizes:
            for variant in VARIANTS:
                result = run_one(task, variant, all_uris[:n], args, args.workdir)
                results.append(result)
                print(json.dumps(result), file=sys.stderr, flush=True)
    output = {
        "budget": {"steps": args.steps, "batch_size": args.batch_size, "crop_size": args.crop_size,
                   "lr": args.lr, "seed": args.seed, "loss": "l1"},
        "results": results,
    }
    print(json.dumps(output, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(output, indent=2) + "\n")
    if args.plot:
        plot(results, args.plot)
    print("\n| task | train images | " + " | ".join(VARIANTS) + " |", file=sys.stderr)
    print("|---|---|" + "---|" * len(VARIANTS), file=sys.stderr)
    for task in args.tasks:
        for n in args.train_sizes:
            cells = [f"{r['psnr']:.2f}" for v in VARIANTS for r in results
                     if r["task"] == task and r["variant"] == v and r["train_images"] == n]
            print(f"| {task} | {n} | " + " | ".join(cells) + " |", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

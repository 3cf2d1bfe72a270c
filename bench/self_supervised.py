"""Self-supervised adaptation of the shipped blind denoiser to unseen noise, no clean image trained on.

Noisy training photos: the first ``--images`` of CBSD432 with Gaussian noise of ``--sigma`` (0-255
scale; seed 0), clipped and rounded to uint8 as a real file would be. Held out: the first
``--held-out`` of CBSD68 with the same noise (seed 1). The clean originals only measure: every
``--eval-every`` steps the held-out mean PSNR (whole images, output rounded to uint8) and the mean
residual noise that ``estimate_noise`` reads on the outputs (no clean image needed).

BatchNorm stays in eval mode (running statistics fixed) throughout. The losses are those of
:mod:`restoration.finetune.selfsup`; ``--sigma-source estimated`` gives SURE / R2R each image's
``estimate_noise`` instead of the true level.

    nice -n 5 .venv/bin/python bench/self_supervised.py --method sure --steps 1000 --lr 1e-4 \
        --out bench/results/self_supervised.json --name sure-lr1e-4
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from restoration.finetune.selfsup import SELF_SUPERVISED_LOSSES, clipped_mean
from restoration.models.checkpoint import load_checkpoint, shipped_checkpoint
from restoration.quality.assess import estimate_noise

TRAIN_DIR = Path("/work/shared/data/train/CBSD432")
VAL_DIR = Path("/work/shared/data/val/CBSD68")
TRAIN_CHOICES = ("all", "target", "decoder", "head")


def noisy_photos(folder: Path, count: int, sigma: float, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The first ``count`` photos of ``folder`` (sorted) and their uint8 noisy versions."""
    rng = np.random.default_rng(seed)
    clean, noisy = [], []
    for path in sorted(folder.iterdir())[:count]:
        pixels = np.asarray(Image.open(path).convert("RGB"))
        clean.append(pixels)
        noise = rng.standard_normal(pixels.shape) * sigma
        noisy.append(np.clip(np.round(pixels + noise), 0, 255).astype(np.uint8))
    return clean, noisy


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(2, 0, 1).float().div(255).unsqueeze(0)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    return image[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * math.log10(255**2 / mse))


@torch.no_grad()
def evaluate(model: torch.nn.Module, clean: list[np.ndarray], noisy: list[np.ndarray]) -> dict:
    """Held-out mean PSNR (measurement only) and mean residual-noise estimate of the outputs."""
    model.eval()
    scores, residual = [], []
    for c, n in zip(clean, noisy):
        out = to_uint8(model(to_tensor(n)))
        scores.append(psnr(out, c))
        residual.append(estimate_noise(out))
    return {"psnr": float(np.mean(scores)), "residual_noise": float(np.mean(residual)),
            "psnr_each": [round(s, 3) for s in scores]}


@torch.no_grad()
def unclipped_start(model: torch.nn.Module, clean: list[np.ndarray], noisy: list[np.ndarray], sigma: float) -> float:
    """Reference without training: the held-out mean PSNR of the start model's output mapped
    through the inverse of :func:`clipped_mean` (its output is about the clipped mean)."""
    grid = torch.linspace(-0.5, 1.5, 8001)
    means = clipped_mean(grid, sigma)
    scores = []
    for c, n in zip(clean, noisy):
        out = model(to_tensor(n)).clamp(float(means[0]), float(means[-1])).contiguous()
        upper = torch.searchsorted(means, out).clamp(1, len(grid) - 1)
        low, high = means[upper - 1], means[upper]
        weight = ((out - low) / (high - low)).clamp(0, 1)
        scores.append(psnr(to_uint8(grid[upper - 1] + weight * (grid[upper] - grid[upper - 1])), c))
    return float(np.mean(scores))


def sample_batch(noisy: list[np.ndarray], sigmas: torch.Tensor, batch: int, crop: int,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops (with flips and transpositions, which leave i.i.d. noise i.i.d.)."""
    crops, chosen = [], []
    for _ in range(batch):
        i = int(rng.integers(len(noisy)))
        h, w = noisy[i].shape[:2]
        top, left = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        patch = noisy[i][top:top + crop, left:left + crop]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if rng.random() < 0.5:
            patch = patch[::-1]
        if rng.random() < 0.5:
            patch = patch.transpose(1, 0, 2)
        crops.append(np.ascontiguousarray(patch))
        chosen.append(i)
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255)
    return x, sigmas[chosen]


def trainable(model: torch.nn.Module, which: str) -> None:
    """Freeze all but ``which``: all, target (all but the backbone), decoder (up, decoder, head), head."""
    for p in model.parameters():
        p.requires_grad_(which == "all")
    if which == "all":
        return
    modules = {"target": [m for name, m in model.named_children() if name != "backbone"],
               "decoder": [model.up, model.decoder, model.head],
               "head": [model.head]}[which]
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(True)


def lr_factor(step: int, steps: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay to ``min_ratio`` at ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def save(args: argparse.Namespace, backbone_lr: float, noise: dict, start: dict, curve: list[dict],
         done: bool) -> None:
    """Print the best point and (re)write this run's entry in ``args.out`` (after every evaluation)."""
    best = max(curve, key=lambda r: r["psnr"])
    run = {
        "name": args.name or f"{args.method}-{args.train}-lr{args.lr:g}",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "backbone_lr": backbone_lr,
        "finished": done,
        "noise": noise,
        "start": start,
        "best": {"step": best["step"], "seconds": best["seconds"], "psnr": best["psnr"],
                 "gain_db": best["psnr"] - start["psnr"], "residual_noise": best["residual_noise"]},
        "final_gain_db": curve[-1]["psnr"] - start["psnr"],
        "curve": curve,
    }
    if done:
        print(json.dumps(run["best"]))
    if args.out is not None:
        data = json.loads(args.out.read_text()) if args.out.exists() else {"runs": []}
        data["runs"] = [r for r in data["runs"] if r["name"] != run["name"]] + [run]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", choices=sorted(SELF_SUPERVISED_LOSSES), default="sure")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-4, help="target-branch learning rate")
    parser.add_argument("--backbone-lr", type=float, default=None, help="default lr / 10")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--min-lr-ratio", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--accum", type=int, default=1, help="batches per optimizer step")
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=48, help="noisy training photos (CBSD432)")
    parser.add_argument("--held-out", type=int, default=8, help="held-out photos (CBSD68)")
    parser.add_argument("--sigma", type=float, default=70.0, help="noise std, 0-255 scale")
    parser.add_argument("--sigma-source", choices=("given", "estimated"), default="given")
    parser.add_argument("--train", choices=TRAIN_CHOICES, default="all")
    parser.add_argument("--alpha", type=float, default=0.5, help="recorrupted: alpha")
    parser.add_argument("--gamma", type=float, default=2.0, help="neighbor2neighbor: gamma")
    parser.add_argument("--clip-aware", action="store_true",
                        help="neighbor2neighbor: the noise is Gaussian clipped to [0, 1] (clip_sigma = sigma)")
    parser.add_argument("--eps", type=float, default=1e-3, help="sure: finite-difference step")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--max-seconds", type=float, default=None, help="stop training after this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="the run's name in --out")
    parser.add_argument("--out", type=Path, default=None, help="JSON file; runs are appended")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    _, train_noisy = noisy_photos(TRAIN_DIR, args.images, args.sigma, seed=0)
    val_clean, val_noisy = noisy_photos(VAL_DIR, args.held_out, args.sigma, seed=1)
    train_estimates = [estimate_noise(n) for n in train_noisy]
    val_estimates = [estimate_noise(n) for n in val_noisy]
    if args.sigma_source == "given":
        sigmas = torch.full((len(train_noisy),), args.sigma / 255)
    else:
        sigmas = torch.tensor(train_estimates) / 255
    noise_figures = {
        "train_estimates_mean": float(np.mean(train_estimates)),
        "train_estimates_min_max": [float(np.min(train_estimates)), float(np.max(train_estimates))],
        "held_out_estimates": [round(e, 2) for e in val_estimates],
        "noisy_input_psnr": float(np.mean([psnr(n, c) for n, c in zip(val_noisy, val_clean)])),
    }
    print(json.dumps(noise_figures))

    model = load_checkpoint(shipped_checkpoint("denoise")).model
    model.eval()  # BatchNorm statistics fixed throughout (eval mode is also dropout-free)
    trainable(model, args.train)
    backbone_lr = args.lr / 10 if args.backbone_lr is None else args.backbone_lr
    groups = [g for g in model.parameter_groups(args.lr, backbone_lr, args.weight_decay)]
    for g in groups:
        g["params"] = [p for p in g["params"] if p.requires_grad]
        g["base_lr"] = g["lr"]
    groups = [g for g in groups if g["params"]]
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.99))
    loss_fn = SELF_SUPERVISED_LOSSES[args.method]
    extra = {"sure": {"eps": args.eps}, "recorrupted": {"alpha": args.alpha},
             "neighbor2neighbor": {"gamma": args.gamma}}[args.method]

    def loss_of(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if args.method == "neighbor2neighbor":
            clip = {"clip_sigma": s} if args.clip_aware else {}
            return loss_fn(model, x, generator=generator, **extra, **clip)
        return loss_fn(model, x, s, generator=generator, **extra)

    start = evaluate(model, val_clean, val_noisy)
    start["psnr_inverse_clipped_mean"] = unclipped_start(model, val_clean, val_noisy, args.sigma / 255)
    curve = [{"step": 0, "seconds": 0.0, **start, "loss": None}]
    print(json.dumps(curve[-1]), flush=True)
    train_seconds, losses = 0.0, []
    for step in range(args.steps):
        began = time.perf_counter()
        factor = lr_factor(step, args.steps, args.warmup, args.min_lr_ratio)
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor
        optimizer.zero_grad(set_to_none=True)
        for _ in range(args.accum):
            x, s = sample_batch(train_noisy, sigmas, args.batch, args.crop, rng)
            loss = loss_of(x, s) / args.accum
            loss.backward()
            losses.append(loss.item() * args.accum)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        train_seconds += time.perf_counter() - began
        done = step + 1
        out_of_time = args.max_seconds is not None and train_seconds >= args.max_seconds
        if done % args.eval_every == 0 or done == args.steps or out_of_time:
            row = {"step": done, "seconds": round(train_seconds, 1), **evaluate(model, val_clean, val_noisy),
                   "loss": float(np.mean(losses[-args.eval_every * args.accum:]))}
            curve.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "psnr_each"}), flush=True)
            save(args, backbone_lr, noise_figures, start, curve, done=False)
        if out_of_time:
            break

    save(args, backbone_lr, noise_figures, start, curve, done=True)


if __name__ == "__main__":
    main()

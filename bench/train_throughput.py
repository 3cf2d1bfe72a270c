"""Training throughput: samples/s and the per-step time split, printed as JSON.

    python bench/train_throughput.py                  # Ray Train, 1 and 2 CPU workers (DDP, gloo)
    python bench/train_throughput.py --workers 1,2,4 --use-gpu
    python bench/train_throughput.py --no-ray         # the library loop alone: CPU, or CUDA with bf16

Every figure is a mean over ``--steps`` optimizer steps after ``--warmup`` untimed ones, measured by
``restoration.finetune.trainer.Trainer.train_step`` itself:

- ``data``: sampling crops, synthesizing the degradation, stacking, copying to the device;
- ``forward``: the model and the loss;
- ``backward``: with DistributedDataParallel this includes the gradient all-reduce, which DDP
  overlaps with the backward pass;
- ``optimizer``: gradient clipping and the AdamW update.

With more than one worker, ``--steps`` more steps measure the backward pass without gradient
synchronization (``DistributedDataParallel.no_sync()``) and then an explicit ``all_reduce`` of all
gradients in one flat buffer: ``backward_local`` is the backward pass alone, ``allreduce`` is the
all-reduce time DDP did not hide (``backward - backward_local``), ``allreduce_explicit`` what a
full, unoverlapped gradient all-reduce costs.

``--no-ray`` never imports Ray, so it runs on a machine with PyTorch and this package only.
Training images: ``--images`` (a folder or URI), else ../shared/data/train/CBSD432, else
scikit-image's sample photos.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = PROJECT_ROOT.parent / "shared" / "data" / "train" / "CBSD432"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--no-ray", action="store_true", help="measure the library loop in this process, without Ray")
    p.add_argument("--workers", default="1,2", help="Ray Train worker counts to measure (1,2)")
    p.add_argument("--use-gpu", action="store_true", help="Ray mode: one GPU per worker (NCCL)")
    p.add_argument("--device", default=None, help="--no-ray: cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads (--no-ray on CPU: torch's default; Ray: one per worker)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (3)")
    p.add_argument("--batch-size", type=int, default=8, help="crops per worker per step (8)")
    p.add_argument("--crop-size", type=int, default=96, help="crop side in pixels (96)")
    p.add_argument("--widths", default=None, help="model.widths, e.g. 16,32,64,96,128,128 (default: the model's)")
    p.add_argument("--stage", choices=("frozen", "unfrozen"), default="unfrozen",
                   help="measure with the backbone frozen or trained (unfrozen: all weights all-reduced)")
    p.add_argument("--images", default=None, help="training images (default: CBSD432 or scikit-image photos)")
    p.add_argument("--max-images", type=int, default=16, help="images to decode per run (16)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any other TrainConfig override")
    p.add_argument("--output", default=None, help="also write the JSON here")
    return p.parse_args(argv)


def bench_config(args: argparse.Namespace):
    from restoration.finetune.settings import load_train_config

    overrides = [
        f"data.batch_size={args.batch_size}", f"data.crop_size={args.crop_size}",
        "degradation.sigma_range=[0,50]",
        # Far more steps than measured: the schedule and the stage stay where they start.
        f"steps={100 * (args.steps + args.warmup) + 100}",
        f"optim.freeze_backbone_fraction={1.0 if args.stage == 'frozen' else 0.0}",
    ]
    if args.widths:
        overrides.append(f"model.widths=[{args.widths}]")
    return load_train_config("denoise", overrides=overrides + args.overrides)


def image_uris(args: argparse.Namespace) -> list[str] | None:
    """URIs of the training images, or None for scikit-image's photos."""
    from restoration.io import storage

    source = args.images or (str(DEFAULT_IMAGES) if DEFAULT_IMAGES.is_dir() else None)
    return storage.list_images(source)[: args.max_images] if source else None


def load_images(uris: list[str] | None, min_size: int):
    from restoration.finetune.data import LoadedImages, load_training_images

    if uris is not None:
        return load_training_images(uris, min_size=min_size)
    from skimage import data

    photos = {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee(),
              "rocket": data.rocket(), "hubble": data.hubble_deep_field()}
    kept = {k: v for k, v in photos.items() if min(v.shape[:2]) >= min_size}
    return LoadedImages(list(kept), list(kept.values()), [])


def measure(trainer, steps: int, warmup: int) -> dict[str, float]:
    """Mean time split over ``steps`` train steps after ``warmup`` untimed ones."""
    for _ in range(warmup):
        trainer.train_step()
    rows = [trainer.train_step() for _ in range(steps)]
    keys = ("data_seconds", "forward_seconds", "backward_seconds", "optimizer_seconds", "step_seconds")
    return {key.removesuffix("_seconds"): float(np.mean([r[key] for r in rows])) for key in keys}


def measure_allreduce(trainer, steps: int) -> dict[str, float]:
    """Backward without DDP's gradient sync, then one explicit all-reduce of every gradient."""
    # Imported here: functions of a script are shipped to Ray workers by value, and a module
    # global ``torch`` does not pickle.
    import torch
    import torch.distributed as dist

    net, model, config = trainer.net, trainer.model, trainer.config
    local, explicit = [], []
    for _ in range(steps):
        gt, lq, mask = trainer.sampler.batch(trainer.samples_seen, config.data.batch_size)
        gt, lq = gt.to(trainer.device), lq.to(trainer.device)
        mask = mask.to(trainer.device) if mask is not None else None
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=trainer.amp):
            restored = net(lq, mask)
        loss = trainer.loss_fn(restored.float(), gt)
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer._synchronize()
        t0 = time.perf_counter()
        with net.no_sync():
            loss.backward()
        trainer._synchronize()
        t1 = time.perf_counter()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.barrier()  # start together, so the time is the all-reduce and not the wait for a peer
        t2 = time.perf_counter()
        dist.all_reduce(flat)
        trainer._synchronize()
        t3 = time.perf_counter()
        local.append(t1 - t0)
        explicit.append(t3 - t2)
    trainer.optimizer.zero_grad(set_to_none=True)
    return {"backward_local": float(np.mean(local)), "allreduce_explicit": float(np.mean(explicit)),
            "gradient_megabytes": float(flat.numel() * flat.element_size() / 2**20)}


def describe(config, trainer) -> dict[str, Any]:
    from restoration.models.fused import count_parameters

    return {
        "batch_size_per_worker": config.data.batch_size, "crop_size": config.data.crop_size,
        "widths": list(config.model.widths), "backbone": config.model.backbone, "stage": trainer.stage,
        "parameters": count_parameters(trainer.model),
        "trained_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "images": len(trainer.sampler.images.names),
    }


# --------------------------------------------------------------------------------------------
# Without Ray


def run_without_ray(args: argparse.Namespace) -> dict[str, Any]:
    from restoration.finetune.trainer import CropSampler, Trainer, initial_model

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    config = bench_config(args)
    images = load_images(image_uris(args), config.data.crop_size)
    torch.manual_seed(0)
    trainer = Trainer(config, initial_model(config), CropSampler(images, config), device=device)
    split = measure(trainer, args.steps, args.warmup)
    result = {
        "mode": "no-ray", "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "autocast": "bf16" if trainer.amp else "fp32", "threads": torch.get_num_threads(),
        **describe(config, trainer),
        "samples_per_second": config.data.batch_size / split["step"],
        "step_seconds": split["step"],
        "split_seconds": {k: v for k, v in split.items() if k != "step"},
    }
    if device.type == "cuda":
        result["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    result["ray_imported"] = "ray" in sys.modules  # must stay False: the library never imports Ray
    return result


# --------------------------------------------------------------------------------------------
# Ray Train


def bench_worker(loop_config: dict) -> None:
    """One Ray Train worker: the job's Trainer with DDP, timed; rank 0 reports the figures."""
    import ray.train
    import ray.train.torch
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from jobs.finetune import quiet_train_worker
    from restoration.finetune.trainer import CropSampler, Trainer, initial_model

    quiet_train_worker()
    config = loop_config["config"]  # the TrainConfig itself
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(loop_config["threads"])
    uris = loop_config["uris"]
    images = load_images(uris[rank::world_size] if uris else None, config.data.crop_size)
    torch.manual_seed(0)

    def wrap(module):
        if world_size == 1:
            return module
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    trainer = Trainer(config, initial_model(config), CropSampler(images, config, rank=rank), device=device,
                      wrap=wrap, world_size=world_size, rank=rank)
    split = measure(trainer, loop_config["steps"], loop_config["warmup"])
    if world_size > 1:
        extra = measure_allreduce(trainer, loop_config["steps"])
        split["backward_local"] = extra["backward_local"]
        split["allreduce"] = max(0.0, split["backward"] - extra["backward_local"])
        split["allreduce_explicit"] = extra["allreduce_explicit"]
        split["gradient_megabytes"] = extra["gradient_megabytes"]
    metrics = {"split": split, "describe": describe(config, trainer), "threads": torch.get_num_threads(),
               "device": str(device)}
    # Ray Train V2 keeps metrics in the Result only along with a checkpoint: rank 0 attaches one
    # holding the figures.
    with tempfile.TemporaryDirectory() as tmp:
        if rank == 0:
            (Path(tmp) / "bench.json").write_text(json.dumps(metrics))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None)


def run_with_ray(args: argparse.Namespace) -> list[dict[str, Any]]:
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from jobs.finetune import init_ray

    config = bench_config(args)
    uris = image_uris(args)
    counts = [int(w) for w in args.workers.split(",")]
    init_ray(num_cpus=None if args.use_gpu else max(os.cpu_count() or 1, max(counts)))
    results = []
    with tempfile.TemporaryDirectory(prefix="train-bench-") as storage:
        for workers in counts:
            start = time.perf_counter()
            trainer = TorchTrainer(
                bench_worker,
                train_loop_config={"config": config, "uris": uris, "steps": args.steps,
                                   "warmup": args.warmup, "threads": args.threads or 1},
                scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=args.use_gpu),
                run_config=ray.train.RunConfig(name=f"bench-{workers}", storage_path=storage,
                                               logging_config=ray.train.LoggingConfig(log_level="WARNING")),
            )
            result = trainer.fit()
            with result.checkpoint.as_directory() as directory:
                metrics = json.loads((Path(directory) / "bench.json").read_text())
            split = metrics["split"]
            results.append({
                "mode": "ray", "workers": workers, "device": metrics["device"], "threads_per_worker": metrics["threads"],
                **metrics["describe"],
                "samples_per_second": workers * config.data.batch_size / split["step"],
                "step_seconds": split["step"],
                "split_seconds": {k: v for k, v in split.items() if k not in ("step", "gradient_megabytes")},
                **({"gradient_megabytes": split["gradient_megabytes"]} if "gradient_megabytes" in split else {}),
                "run_seconds_with_ray_overhead": time.perf_counter() - start,
            })
    ray.shutdown()
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "cuda": torch.cuda.is_available()},
        "timed_steps": args.steps, "warmup_steps": args.warmup,
    }
    if args.no_ray:
        report["no_ray"] = run_without_ray(args)
    else:
        import ray

        report["machine"]["ray"] = ray.__version__
        report["ray"] = run_with_ray(args)
    # Other processes on the machine slow every figure down: the load average says how busy it was.
    report["machine"]["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(PROJECT_ROOT))
    sys.exit(main())

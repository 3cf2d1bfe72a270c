"""Distributed fine-tuning on Ray Train.

    python -m jobs.finetune --task denoise --train-images DIR_OR_S3 --val-images DIR_OR_S3 \\
        --steps 2000 --workers 2 --storage DIR_OR_S3 --name my-denoiser [--use-gpu] [--init CKPT]

Each Ray Train worker runs ``restoration.training.Trainer`` over its own disjoint shard of the
training images; gradients are averaged by DistributedDataParallel (NCCL on GPU, gloo on CPU).
Checkpoints go to ``RunConfig(storage_path=STORAGE, name=NAME)`` and the best few by validation
PSNR are kept. Running the same command again resumes from the latest checkpoint (model,
optimizer, schedule and data position). At the end the final model, ``metrics.csv`` and a
training-curve PNG are written to ``STORAGE/NAME/model/``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger("jobs.finetune")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from restoration import TASKS

    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--train-images", required=True, help="folder, file:// or s3:// prefix of clean training images")
    p.add_argument("--val-images", required=True, help="folder or prefix of clean validation images")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the config's, 1000)")
    p.add_argument("--workers", type=int, default=1, help="data-parallel Ray Train workers (1)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per worker (NCCL); otherwise CPU (gloo)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs reserved per worker (1)")
    p.add_argument("--storage", required=True, help="folder or s3:// prefix for checkpoints and the final model")
    p.add_argument("--name", required=True, help="run name; re-running the same name resumes it")
    p.add_argument("--init", default=None, help="start from this restoration checkpoint (task transfer) or 'default'")
    p.add_argument("--config", default=None, help="YAML file with TrainConfig fields")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set optim.lr=1e-4 (repeatable)")
    p.add_argument("--max-failures", type=int, default=2, help="worker failures retried within the run (2)")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a local cluster)")


def _storage_for_ray(storage: str) -> tuple[str, Any]:
    """RunConfig(storage_path, storage_filesystem) for a local folder or an s3:// prefix."""
    from restoration import storage as storage_lib

    if storage.startswith("s3://"):
        return storage[len("s3://"):].rstrip("/"), storage_lib.s3_filesystem()
    path = storage[len("file://"):] if storage.startswith("file://") else storage
    return str(Path(path).expanduser().resolve()), None


def preflight(args: argparse.Namespace):
    """Everything that can be checked before a worker starts: config, images, storage, --init."""
    from restoration import storage as storage_lib
    from restoration.checkpoint import read_metadata, resolve_model
    from restoration.training import initial_model, load_train_config

    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    config = load_train_config(args.task, path=args.config, overrides=args.overrides, steps=args.steps)
    train_uris = storage_lib.list_images(args.train_images)
    if not train_uris:
        raise ValueError(f"no training images under {args.train_images}")
    if len(train_uris) < args.workers:
        raise ValueError(f"{len(train_uris)} training images cannot be split over {args.workers} workers")
    if config.data.max_images is not None:
        train_uris = train_uris[: config.data.max_images]
    val_uris = storage_lib.list_images(args.val_images)
    if not val_uris:
        raise ValueError(f"no validation images under {args.val_images}")
    init = None
    if args.init:
        init = str(resolve_model(args.init, args.task) if args.init == "default" else args.init)
        read_metadata(init)
        initial_model(config, init)  # refuses a checkpoint of another architecture, here and now
    # The storage must be writable before hours of training depend on it.
    probe = storage_lib.join(args.storage, args.name, f".write-test-{uuid.uuid4().hex[:8]}")
    try:
        storage_lib.write_bytes(probe, b"ok")
        storage_lib.delete(probe)
    except Exception as exc:
        raise PermissionError(f"cannot write to --storage {args.storage}: {storage_lib.redact(str(exc))}") from exc
    return config, train_uris, val_uris[: config.validation.limit], init


def train_loop_per_worker(loop_config: dict) -> None:
    """One Ray Train worker: its shard, the library's Trainer, checkpoints and reports."""
    import ray.train
    import ray.train.torch
    import torch

    from restoration import config as config_lib
    from restoration.evaluate import load_images
    from restoration.training import CropSampler, Trainer, TrainConfig, initial_model, load_training_images

    config: TrainConfig = config_lib.from_dict(TrainConfig, loop_config["config"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(config.seed)

    shard = loop_config["train_uris"][rank::world_size]
    images = load_training_images(shard, min_size=config.data.crop_size)
    if images.bad:
        print(f"[worker {rank}] skipped {len(images.bad)} unreadable training images, e.g. {images.bad[0][0]}: "
              f"{images.bad[0][1]}", flush=True)
    val = []
    if rank == 0:
        val = [item for uri in loop_config["val_uris"] for item in load_images(uri)]

    model = initial_model(config, loop_config.get("init"))

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        if world_size == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    trainer = Trainer(config, model, CropSampler(images, config, rank=rank), device=device, wrap=wrap,
                      val_samples=val, world_size=world_size)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            trainer.resume(directory)
        if rank == 0:
            print(f"resumed from step {trainer.step} (checkpoint {checkpoint.path})", flush=True)

    provenance = {
        "train_images": loop_config["train_images"],
        "val_images": loop_config["val_images"],
        "task": config.task,
        "seed": config.seed,
        "workers": world_size,
        "hardware": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "init": loop_config.get("init"),
        "run_name": loop_config["name"],
    }
    global_batch = config.data.batch_size * world_size
    window_start, window_steps = time.perf_counter(), 0
    wall_before = float(trainer.history[-1]["wall_seconds"]) if trainer.history else 0.0
    run_start = time.perf_counter()
    last_val: dict[str, float] = {}
    while trainer.step < config.steps:
        metrics = trainer.train_step()
        window_steps += 1
        step = trainer.step
        last = step == config.steps
        do_log = step % config.log_interval == 0 or last
        do_val = step % config.validation.interval == 0 or step % config.checkpoint_interval == 0 or last
        do_ckpt = step % config.checkpoint_interval == 0 or last
        if not (do_log or do_val or do_ckpt):
            continue
        elapsed = time.perf_counter() - window_start
        samples_per_second = global_batch * window_steps / max(elapsed, 1e-9)
        window_start, window_steps = time.perf_counter(), 0
        report = {k: metrics[k] for k in ("step", "loss", "lr")}
        report["samples_per_second"] = samples_per_second
        report["wall_seconds"] = wall_before + time.perf_counter() - run_start
        report["stage"] = trainer.stage
        if do_val and rank == 0:
            last_val = trainer.validate()
        if last_val:
            report.update(last_val)
        if rank == 0:
            trainer.history.append(report)
            eta = (config.steps - step) * global_batch / max(samples_per_second, 1e-9)
            val_text = f" val_psnr {last_val['val_psnr']:.2f} dB" if do_val and last_val else ""
            print(f"step {step}/{config.steps} loss {metrics['loss']:.4f} {samples_per_second:.1f} samples/s"
                  f"{val_text} backbone {trainer.stage} ETA {_duration(eta)}", flush=True)
        if do_ckpt and rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                trainer.save(tmp, provenance={**provenance, "steps": step, "wall_seconds": report["wall_seconds"],
                                              "validation": last_val})
                ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                                 checkpoint_dir_name=f"checkpoint_step_{step:08d}")
        else:
            ray.train.report(report)  # a barrier: every worker reports at the same steps

    if rank == 0:
        write_final_outputs(trainer, loop_config["storage"], loop_config["name"], provenance)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def write_final_outputs(trainer, storage: str, name: str, provenance: dict) -> str:
    """``<storage>/<name>/model/``: model.safetensors, model.json, config.yaml, metrics.csv, training_curve.png."""
    from restoration import config as config_lib, storage as storage_lib
    from restoration.checkpoint import save_checkpoint

    history = trainer.history
    final_val = next((h for h in reversed(history) if "val_psnr" in h), {})
    target = storage_lib.join(storage, name, "model")
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(trainer.model, tmp, model_id=name, provenance={
            **provenance, "steps": trainer.step,
            "wall_seconds": history[-1]["wall_seconds"] if history else None,
            "validation": {k: final_val[k] for k in ("val_psnr", "val_ssim") if k in final_val},
            "validation_protocol": trainer.protocol.describe(),
        })
        (Path(tmp) / "config.yaml").write_text(config_lib.to_yaml(trainer.config))
        (Path(tmp) / "metrics.csv").write_text(metrics_csv(history))
        plot_training_curve(history, Path(tmp) / "training_curve.png")
        for path in sorted(Path(tmp).iterdir()):
            storage_lib.write_bytes(storage_lib.join(target, path.name), path.read_bytes())
    print(f"final model written to {target}", flush=True)
    return target


def metrics_csv(history: list[dict]) -> str:
    columns = ["step", "loss", "lr", "samples_per_second", "val_psnr", "val_ssim", "wall_seconds", "stage"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow(row)
    return out.getvalue()


def plot_training_curve(history: list[dict], path: Path) -> None:
    """Loss and validation PSNR against step, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax_loss = plt.subplots(figsize=(7, 4), dpi=100)
    steps = [h["step"] for h in history]
    ax_loss.plot(steps, [h["loss"] for h in history], color="tab:blue", label="training loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss", color="tab:blue")
    ax_loss.set_yscale("log")
    val = [(h["step"], h["val_psnr"]) for h in history if "val_psnr" in h]
    if val:
        ax_psnr = ax_loss.twinx()
        ax_psnr.plot(*zip(*val), color="tab:red", marker="o", label="validation PSNR")
        ax_psnr.set_ylabel("validation PSNR (dB)", color="tab:red")
    ax_loss.set_title("fine-tuning")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Pre-flight checks on the driver, then the TorchTrainer; returns the process exit code."""
    config, train_uris, val_uris, init = preflight(args)

    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from restoration import config as config_lib

    if not ray.is_initialized():
        ray.init(address=args.address or os.environ.get("RAY_ADDRESS"), log_to_driver=True)
    needed_cpus = args.workers * args.cpus_per_worker
    available = ray.cluster_resources().get("CPU", 0)
    if needed_cpus > available:
        print(f"note: {args.workers} workers need {needed_cpus:g} CPUs and the cluster has {available:g} now; "
              "waiting for the autoscaler", flush=True)
    storage_path, filesystem = _storage_for_ray(args.storage)
    print(f"fine-tuning {config.task}: {len(train_uris)} training images over {args.workers} worker(s), "
          f"{config.steps} steps, storage {args.storage}/{args.name}", flush=True)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": config_lib.to_dict(config),
            "train_uris": train_uris,
            "val_uris": val_uris,
            "train_images": args.train_images,
            "val_images": args.val_images,
            "init": init,
            "storage": args.storage,
            "name": args.name,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=args.workers, use_gpu=args.use_gpu,
            resources_per_worker={"CPU": args.cpus_per_worker, **({"GPU": 1} if args.use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=args.name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=config.keep_checkpoints,
                checkpoint_score_attribute="val_psnr",
                checkpoint_score_order="max",
            ),
            failure_config=ray.train.FailureConfig(max_failures=args.max_failures),
        ),
    )
    result = trainer.fit()
    if result.error:
        print(f"fine-tuning failed: {result.error}", file=sys.stderr)
        return 1
    summary = {k: result.metrics.get(k) for k in ("step", "loss", "val_psnr", "val_ssim")} if result.metrics else {}
    print("done: " + json.dumps(summary), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.finetune", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        print(f"finetune: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

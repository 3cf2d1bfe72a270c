"""Distributed fine-tuning on Ray Train.

    python -m jobs.finetune --task denoise --train-images DIR_OR_S3 --val-images DIR_OR_S3 \\
        --steps 2000 --workers 2 --storage DIR_OR_S3 --name my-denoiser [--use-gpu] [--init CKPT] \\
        [--config FILE.yaml] [--set key=value ...]

The Ray Train adapter over ``restoration.finetune`` (the checked plan, shards, provenance, final
outputs) and ``restoration.training.Trainer``: each worker trains on its own disjoint shard, with
gradients averaged by DistributedDataParallel (NCCL on GPU, gloo on CPU). Checkpoints go to
``RunConfig(storage_path=STORAGE, name=NAME)``, the best few by validation PSNR and the latest kept;
the same command resumes (model, optimizer, schedule, data position), and worker failures are
retried from the latest (``--max-failures``). On SIGINT or SIGTERM every worker finishes its step,
rank 0 checkpoints, and the job exits 130 / 143 with one line (``--set grace_seconds=S``, 20 s:
past it, or on a second signal, it stops at once, from the last checkpoint). The final model, config.yaml, metrics.csv and
training_curve.png go to ``STORAGE/NAME/model/``. Bad input is one line and exit code 2 before
Ray starts. S3 is configured by the standard AWS variables, which local workers inherit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from jobs.ray_runtime import (QUIET_RAY_ENVIRONMENT, StopPoll, init_ray, note_missing_cpus, quiet_train_worker,
                              root_cause, stop_flag_for)
from restoration.stopping import StopNow, StopSignals

__all__ = ["add_arguments", "init_ray", "main", "quiet_train_worker", "run", "train_loop_per_worker"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from restoration.finetune import add_run_arguments

    add_run_arguments(p)
    p.add_argument("--workers", type=int, default=1, help="data-parallel Ray Train workers (1)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per worker (NCCL); otherwise CPU (gloo)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs reserved per worker (1)")
    p.add_argument("--max-failures", type=int, default=2, help="worker failures retried within the run (2)")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a local instance)")


def preflight(args: argparse.Namespace):
    """Check the command line before Ray starts (``restoration.finetune.plan_finetune``); raises
    FinetuneInputError with one line naming the bad value."""
    from restoration.finetune import FinetuneInputError, check_resumable, plan_finetune

    if args.cpus_per_worker <= 0:
        raise FinetuneInputError(f"--cpus-per-worker must be > 0, got {args.cpus_per_worker:g}")
    if args.max_failures < 0:
        raise FinetuneInputError(f"--max-failures must be >= 0, got {args.max_failures}")
    plan = plan_finetune(args.task, train_images=args.train_images, val_images=args.val_images,
                         storage_uri=args.storage, name=args.name, workers=args.workers, init=args.init,
                         config_path=args.config, overrides=args.overrides, steps=args.steps)
    check_resumable(plan, latest_checkpoint(plan.storage, plan.name))
    return plan


def latest_checkpoint(storage: str, name: str) -> str | None:
    """URI of the checkpoint a run of ``name`` resumes from, read from Ray Train's snapshot of
    the run (None when there is none, or it cannot be read)."""
    from restoration import storage as storage_lib

    try:
        snapshot = json.loads(storage_lib.read_bytes(storage_lib.join(storage, name, "checkpoint_manager_snapshot.json")))
        directory = snapshot["latest_checkpoint_result"]["checkpoint_dir_name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return storage_lib.join(storage, name, directory) if isinstance(directory, str) and directory else None


# --------------------------------------------------------------------------------------------
# The Ray Train worker
# --------------------------------------------------------------------------------------------


def train_loop_per_worker(loop_config: dict) -> None:
    """One Ray Train worker: the library's shard and Trainer, checkpoints in and out, reports."""
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from restoration import finetune as run_lib
    from restoration.evaluate import load_images
    from restoration.model import build_model
    from restoration.training import CropSampler, Trainer, initial_model, train_config_from_dict

    quiet_train_worker()
    config = train_config_from_dict(loop_config["config"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        # One intra-op thread per reserved CPU: more threads than cores spin and slow every step.
        torch.set_num_threads(max(1, int(loop_config["cpus_per_worker"])))
    torch.manual_seed(config.seed)

    def say(text: str) -> None:
        if rank == 0:
            print(text, flush=True)

    shard = run_lib.load_shard(loop_config["train_uris"], rank=rank, world_size=world_size,
                               min_size=config.data.crop_size)
    counts = torch.tensor([shard.usable, shard.bad, int(shard.usable == 0)], dtype=torch.int64)
    if world_size > 1:
        counts = counts.to(device) if dist.get_backend() == "nccl" else counts
        dist.all_reduce(counts)  # every worker learns the totals, and all fail together if a shard is empty
    total_usable, total_bad, empty_shards = (int(v) for v in counts.cpu())
    for line in run_lib.shard_messages(shard, rank, world_size, total_usable, total_bad, empty_shards):
        print(line, flush=True)

    val = [item for uri in loop_config["val_uris"] for item in load_images(uri)] if rank == 0 else []
    checkpoint = ray.train.get_checkpoint()
    # A resumed run takes every weight from the checkpoint: no ImageNet or --init load needed.
    model = build_model(config.model, backbone_weights=None) if checkpoint else initial_model(config, loop_config["init"])

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        if world_size == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    trainer = Trainer(config, model, CropSampler(shard.images, config, rank=rank), device=device, wrap=wrap,
                      val_samples=val, world_size=world_size, rank=rank, progress=say)
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            trainer.resume(directory)
    say(run_lib.start_message(trainer, loop_config["init"], Path(checkpoint.path).name if checkpoint else None))
    provenance = run_lib.provenance(loop_config, config, workers=world_size, device_name=run_lib.device_name(device),
                                    image_count=total_usable, skipped=total_bad)

    def report(row: dict, checkpoint_due: bool) -> None:
        if checkpoint_due and rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                trainer.save(tmp, provenance={
                    **provenance, "steps": trainer.step, "wall_seconds": row["wall_seconds"],
                    "resumed_at": trainer.resumed_at,
                    "validation": {k: row[k] for k in ("val_psnr", "val_ssim") if k in row},
                })
                ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                                 checkpoint_dir_name=f"checkpoint_step_{trainer.step:08d}")
        else:
            ray.train.report(row)  # every worker reports at the same steps

    trainer.fit(report, should_stop=StopPoll(loop_config.get("stop_flag")))
    if trainer.stopped_at is not None:
        say(f"stopped at step {trainer.stopped_at}: checkpoint_step_{trainer.stopped_at:08d} saved")
        return
    if rank == 0:
        target = run_lib.write_final_outputs(trainer, loop_config["storage"], loop_config["name"],
                                             {**provenance, "resumed_at": trainer.resumed_at})
        say(f"final model written to {target}")


def run(args: argparse.Namespace) -> int:
    """Pre-flight checks on the driver, then the TorchTrainer; returns the process exit code."""
    plan = preflight(args)
    with StopSignals(plan.config.grace_seconds) as stop:
        try:
            return _fit(args, plan, stop)
        except StopNow as exc:  # a second signal, or the grace period is over
            print(f"fine-tuning stopped at once ({exc.reason}); run the same command again to continue "
                  f"from its last checkpoint", file=sys.stderr, flush=True)
            return exc.exit_code


def _fit(args: argparse.Namespace, plan: Any, stop: StopSignals) -> int:
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from restoration import finetune as run_lib, storage as storage_lib

    config = plan.config
    if not ray.is_initialized():
        init_ray(args.address)
    stop.reinstall()  # over the SIGTERM handler of Ray's core worker, which aborts the process
    for name, value in QUIET_RAY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    note_missing_cpus(args.workers, args.cpus_per_worker)
    filesystem, storage_path = storage_lib.resolve(plan.storage)
    filesystem = filesystem if plan.storage.startswith("s3://") else None
    run_uri = storage_lib.join(plan.storage, args.name)
    resume_from = latest_checkpoint(plan.storage, args.name)
    if resume_from is not None:
        print(f"run {args.name} exists: resuming from {resume_from}", flush=True)
    print(f"fine-tuning {config.task}: {len(plan.train_uris)} training images, {args.workers} worker(s) x "
          f"batch {config.data.batch_size}, {config.steps} steps, run {run_uri}", flush=True)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={**plan.worker_config(), "cpus_per_worker": args.cpus_per_worker,
                           "stop_flag": stop_flag_for(stop)},
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
            # Ray Train's own INFO lines (every report, worker-group start) drown the progress.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )
    try:
        result = _fit_in_thread(trainer)
    except Exception as exc:  # Ray Train raises once FailureConfig's retries are spent
        print(f"fine-tuning failed: {storage_lib.redact(root_cause(exc))}", file=sys.stderr, flush=True)
        return 1
    if result.error:
        print(f"fine-tuning failed: {storage_lib.redact(root_cause(result.error))}", file=sys.stderr, flush=True)
        return 1
    step = (result.metrics or {}).get("step")
    if stop.requested and step != config.steps:  # (a signal after the last step: the run is done)
        at = f"at step {step} of {config.steps}" if step is not None else "before its first step"
        saved = latest_checkpoint(plan.storage, args.name)
        print(f"fine-tuning stopped by {stop.name} {at} ({f'checkpoint {saved}' if saved else 'no checkpoint yet'}); "
              f"run the same command again to continue", file=sys.stderr, flush=True)
        return stop.exit_code or 1
    best = [(Path(checkpoint.path).name, metrics) for checkpoint, metrics in result.best_checkpoints or []]
    print("done: " + json.dumps(run_lib.run_summary(result.metrics or {}, best, run_uri)), flush=True)
    return 0


def _fit_in_thread(trainer: Any) -> Any:
    """``trainer.fit()`` in a thread of its own, while the main thread waits for it.

    In the main thread, Ray Train's ``fit`` replaces the SIGINT handler with its own, which aborts
    the run without a checkpoint and exits 1; outside it, ``fit`` leaves signals alone, and this
    job's :class:`StopSignals` (which checkpoints, then stops) keeps them. Returns what ``fit``
    returns and raises what it raises; :class:`StopNow` from the handlers reaches the caller.
    """
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # noqa: BLE001 -- handed to the main thread
            outcome["error"] = exc

    thread = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.25)  # short waits: the signal handlers run in this thread between them
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.finetune", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        print(f"finetune: error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Run through the importable module, so the functions Ray ships to workers are pickled by
    # reference to jobs.finetune instead of by value from __main__.
    from jobs.finetune import main as _main

    sys.exit(_main())

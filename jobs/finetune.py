"""Distributed fine-tuning on Ray Train.

    python -m jobs.finetune --task denoise --train-images DIR_OR_S3 --val-images DIR_OR_S3 \\
        --steps 2000 --workers 2 --storage DIR_OR_S3 --name my-denoiser [--use-gpu] [--init CKPT] \\
        [--config FILE.yaml] [--set key=value ...]

Each Ray Train worker runs ``restoration.training.Trainer`` over its own disjoint shard of the
training images; gradients are averaged by DistributedDataParallel (NCCL on GPU, gloo on CPU).
Checkpoints go to ``RunConfig(storage_path=STORAGE, name=NAME)``; the best few by validation PSNR
and the latest are kept. Running the same command again resumes from the latest checkpoint (model,
optimizer, schedule and data position); worker failures within a run are retried from it
(``--max-failures``). At the end the final model (``model.safetensors`` + ``model.json``),
``config.yaml``, ``metrics.csv`` and ``training_curve.png`` are written to ``STORAGE/NAME/model/``.

Bad input (missing or empty image folders, unusable images, unknown config keys, an --init
checkpoint of another architecture, storage that cannot be written) is reported in one line with
exit code 2 before Ray starts. S3 is configured by the standard AWS variables; on a local Ray
instance the workers inherit them from this process.
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
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("jobs.finetune")

# Ray Train settings for readable output, set (unless the user set them) before Ray starts: they
# reach a local instance's workers through the environment and a cluster's Train controller and
# workers through Ray Train's own propagation of RAY_TRAIN_* variables.
QUIET_RAY_ENVIRONMENT = {
    # Ray Train V2 routes print() in workers to a logger and, because Ray replaces sys.stdout in
    # workers, also to the original print: every progress line showed up twice.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}
# Only for a Ray instance this process starts (one machine): there is no node to be preempted,
# and the preemption watcher logs a core_worker error about its constructor arguments.
LOCAL_RAY_ENVIRONMENT = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}

# Test-only: "RANK:STEP:MARKER_FILE" makes worker RANK raise once at report step STEP (the marker
# file records that it did), to exercise FailureConfig retries.
FAIL_ONCE_VARIABLE = "RESTORATION_FINETUNE_FAIL_ONCE"

SAMPLE_IMAGES_CHECKED = 8


class InputError(ValueError):
    """Bad command-line input, found before any worker starts (exit code 2)."""


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
    p.add_argument("--init", default=None,
                   help="start from this restoration checkpoint (folder or s3://; task transfer) or 'default'")
    p.add_argument("--config", default=None, help="YAML file with TrainConfig fields")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set optim.lr=1e-4 (repeatable)")
    p.add_argument("--max-failures", type=int, default=2, help="worker failures retried within the run (2)")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a local instance)")


# --------------------------------------------------------------------------------------------
# Pre-flight: everything that can be checked before a worker starts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A checked run: the resolved config and absolute URIs the workers can use from any cwd."""

    config: Any  # restoration.training.TrainConfig
    train_uris: list[str]
    val_uris: list[str]
    train_images: str
    val_images: str
    storage: str
    init: str | None


def _absolute(uri: str) -> str:
    """Local paths made absolute: Ray Train changes the workers' working directory."""
    if "://" in uri:
        return uri
    return os.path.abspath(os.path.expanduser(uri))


def _list(uri: str, flag: str) -> list[str]:
    from restoration import storage as storage_lib

    try:
        uris = storage_lib.list_images(uri)
    except FileNotFoundError:
        raise InputError(f"{flag} {uri}: no such file or directory") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{flag} {uri}: {storage_lib.redact(str(exc))}") from None
    if not uris:
        extensions = ", ".join(sorted(storage_lib.IMAGE_EXTENSIONS))
        raise InputError(f"{flag} {uri} holds no images ({extensions})")
    return uris


def _check_some_decode(uris: list[str], flag: str, *, min_size: int = 0, every: bool = False) -> None:
    """Decode a few images spread over ``uris`` (or all with ``every``); fail if none is usable."""
    from restoration.training import load_training_images

    if every or len(uris) <= SAMPLE_IMAGES_CHECKED:
        sample = uris
    else:
        sample = [uris[i * len(uris) // SAMPLE_IMAGES_CHECKED] for i in range(SAMPLE_IMAGES_CHECKED)]
    try:
        images = load_training_images(sample, min_size=min_size)
    except ValueError as exc:
        checked = f" (checked {len(sample)} of {len(uris)})" if len(sample) < len(uris) else ""
        raise InputError(f"{flag}{checked}: {exc}") from None
    if every and images.bad:
        uri, reason = images.bad[0]
        raise InputError(f"{flag}: cannot use {uri}: {reason}")


def preflight(args: argparse.Namespace) -> Plan:
    """Check the command line before Ray starts; raises InputError (or FileNotFoundError) with a
    one-line message naming the bad value."""
    from restoration import storage as storage_lib
    from restoration.checkpoint import CheckpointError
    from restoration.training import CONFIG_FILE, initial_model, load_train_config
    from restoration import config as config_lib

    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    if args.cpus_per_worker <= 0:
        raise InputError(f"--cpus-per-worker must be > 0, got {args.cpus_per_worker:g}")
    if args.max_failures < 0:
        raise InputError(f"--max-failures must be >= 0, got {args.max_failures}")
    if not args.name or "/" in args.name or args.name.startswith("."):
        raise InputError(f"--name must be a plain folder name, got {args.name!r}")
    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps must be >= 1, got {args.steps}")
    try:
        config = load_train_config(args.task, path=args.config, overrides=args.overrides, steps=args.steps)
    except ValueError as exc:
        raise InputError(f"config: {exc}") from None

    train_images, val_images = _absolute(args.train_images), _absolute(args.val_images)
    train_uris = _list(train_images, "--train-images")
    if config.data.max_images is not None:
        train_uris = train_uris[: config.data.max_images]
    if len(train_uris) < args.workers:
        raise InputError(f"--train-images: {len(train_uris)} images cannot be split over {args.workers} workers")
    _check_some_decode(train_uris, "--train-images", min_size=config.data.crop_size)
    val_uris = _list(val_images, "--val-images")[: config.validation.limit]
    _check_some_decode(val_uris, "--val-images", every=True)

    init = None
    if args.init:
        init = args.init if args.init == "default" else _absolute(args.init)
        try:
            initial_model(config, init)  # refuses a checkpoint of another architecture, here and now
        except (CheckpointError, FileNotFoundError, OSError) as exc:
            raise InputError(f"--init: {storage_lib.redact(str(exc))}") from None

    storage = _absolute(args.storage)
    _check_resumable(storage, args.name, config)
    # The storage must be writable before hours of training depend on it. The resolved config is
    # the probe, and stays beside the run.
    try:
        probe = storage_lib.join(storage, args.name, f".write-test-{uuid.uuid4().hex[:8]}")
        storage_lib.write_bytes(probe, b"ok")
        filesystem, path = storage_lib.resolve(probe)
        filesystem.delete_file(path)
        storage_lib.write_bytes(storage_lib.join(storage, args.name, CONFIG_FILE), config_lib.to_yaml(config).encode())
    except (OSError, ValueError) as exc:
        raise InputError(f"--storage {args.storage} cannot be written: {storage_lib.redact(str(exc))}") from None
    return Plan(config, train_uris, val_uris, train_images, val_images, storage, init)


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


def _check_resumable(storage: str, name: str, config) -> None:
    """An existing run of the same name resumes: its task and model must be this command's."""
    from restoration import config as config_lib, storage as storage_lib
    from restoration.training import CONFIG_FILE

    import yaml

    checkpoint = latest_checkpoint(storage, name)
    if checkpoint is None:
        return
    try:
        saved = yaml.safe_load(storage_lib.read_bytes(storage_lib.join(checkpoint, CONFIG_FILE)))
    except (OSError, ValueError, yaml.YAMLError):
        return
    mine = config_lib.to_dict(config)
    if not isinstance(saved, dict) or (saved.get("task"), saved.get("model")) == (mine["task"], mine["model"]):
        return
    differences = [f"{key}: {saved.get('model', {}).get(key)!r} -> {value!r}"
                   for key, value in mine["model"].items()
                   if key != "task" and (saved.get("model") or {}).get(key) != value]
    if saved.get("task") != mine["task"]:
        differences.insert(0, f"task: {saved.get('task')!r} -> {mine['task']!r}")
    raise InputError(
        f"--name {name}: {storage_lib.join(storage, name)} holds a run with another model "
        f"({'; '.join(differences)}); running the same name resumes it. Use another --name for a new run, "
        f"or --init {checkpoint} to start from its weights"
    )


# --------------------------------------------------------------------------------------------
# The Ray Train worker
# --------------------------------------------------------------------------------------------


def train_loop_per_worker(loop_config: dict) -> None:
    """One Ray Train worker: its shard, the library's Trainer, checkpoints and reports."""
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from restoration.evaluate import load_images
    from restoration.model import build_model
    from restoration.training import (
        CropSampler, Trainer, TrainConfig, initial_model, load_training_images, train_config_from_dict,
    )

    quiet_train_worker()
    config: TrainConfig = train_config_from_dict(loop_config["config"])
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

    # Every worker decodes its own disjoint shard.
    shard = loop_config["train_uris"][rank::world_size]
    try:
        images = load_training_images(shard, min_size=config.data.crop_size)
        usable, bad = len(images.names), len(images.bad)
    except ValueError:
        images, usable, bad = None, 0, len(shard)
    counts = torch.tensor([usable, bad, int(usable == 0)], dtype=torch.int64)
    if world_size > 1:
        counts = counts.to(device) if dist.get_backend() == "nccl" else counts
        dist.all_reduce(counts)  # every worker learns the totals, and all fail together if a shard is empty
    total_usable, total_bad, empty_shards = (int(v) for v in counts.cpu())
    if images is None or empty_shards:
        raise ValueError(f"{empty_shards} of {world_size} workers have no usable training images "
                         f"({total_bad} of {total_usable + total_bad} images could not be used); "
                         "use fewer --workers or more images")
    say(f"training on {total_usable} images over {world_size} worker(s)"
        + (f"; skipped {total_bad} unusable, e.g. {images.bad[0][0]}: {images.bad[0][1]}" if images.bad else
           f"; skipped {total_bad} unusable" if total_bad else ""))
    if images.bad and rank != 0:
        print(f"[worker {rank}] skipped {bad} training images, e.g. {images.bad[0][0]}: {images.bad[0][1]}", flush=True)

    val = [item for uri in loop_config["val_uris"] for item in load_images(uri)] if rank == 0 else []
    checkpoint = ray.train.get_checkpoint()
    # A resumed run takes every weight from the checkpoint: no ImageNet or --init load needed.
    model = build_model(config.model, backbone_weights=None) if checkpoint else initial_model(config, loop_config["init"])

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        if world_size == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    trainer = Trainer(config, model, CropSampler(images, config, rank=rank), device=device, wrap=wrap,
                      val_samples=val, world_size=world_size, rank=rank, progress=say)
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            trainer.resume(directory)
        say(f"resumed from step {trainer.step} of {config.steps} (checkpoint {Path(checkpoint.path).name}): "
            "model, optimizer, schedule and data position restored")
    else:
        say(f"starting at step 0 of {config.steps} from "
            + (f"--init {loop_config['init']}" if loop_config["init"] else f"{config.backbone_weights or 'random'} backbone weights"))

    provenance = {
        "train_images": loop_config["train_images"],
        "val_images": loop_config["val_images"],
        "train_image_count": total_usable,
        "skipped_images": total_bad,
        "task": config.task,
        "seed": config.seed,
        "workers": world_size,
        "global_batch": config.data.batch_size * world_size,
        "hardware": (f"{world_size} x {torch.cuda.get_device_name(device)}" if device.type == "cuda"
                     else f"{world_size} x cpu ({platform.processor() or platform.machine()})"),
        "init": loop_config["init"],
        "run_name": loop_config["name"],
    }
    fail_once = loop_config.get("fail_once")

    def report(row: dict, checkpoint_due: bool) -> None:
        if fail_once and rank == fail_once["rank"] and row["step"] == fail_once["step"]:
            marker = Path(fail_once["marker"])
            if not marker.exists():
                marker.write_text("failed once\n")
                raise RuntimeError(f"injected failure on worker {rank} at step {row['step']} ({FAIL_ONCE_VARIABLE})")
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

    trainer.fit(report)
    if rank == 0:
        target = write_final_outputs(trainer, loop_config["storage"], loop_config["name"],
                                     {**provenance, "resumed_at": trainer.resumed_at})
        say(f"final model written to {target}")


# --------------------------------------------------------------------------------------------
# Final outputs
# --------------------------------------------------------------------------------------------


def write_final_outputs(trainer, storage: str, name: str, provenance: dict) -> str:
    """``<storage>/<name>/model/``: model.safetensors, model.json, config.yaml, metrics.csv,
    training_curve.png. Returns that URI."""
    from restoration import config as config_lib, storage as storage_lib
    from restoration.checkpoint import save_checkpoint
    from restoration.training import CONFIG_FILE

    history = trainer.history
    final_val = next((h for h in reversed(history) if "val_psnr" in h), {})
    target = storage_lib.join(storage, name, "model")
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(trainer.model, tmp, model_id=name, provenance={
            **provenance, "steps": trainer.step,
            "wall_seconds": history[-1]["wall_seconds"] if history else None,
            "validation": {k: final_val[k] for k in ("val_psnr", "val_ssim") if k in final_val},
            "validation_step": final_val.get("step"),
            "validation_protocol": trainer.protocol.describe(),
        })
        (Path(tmp) / CONFIG_FILE).write_text(config_lib.to_yaml(trainer.config))
        (Path(tmp) / "metrics.csv").write_text(metrics_csv(history))
        plot_training_curve(history, Path(tmp) / "training_curve.png")
        for path in sorted(Path(tmp).iterdir()):
            storage_lib.write_bytes(storage_lib.join(target, path.name), path.read_bytes())
    return target


def metrics_csv(history: list[dict]) -> str:
    """The training history as CSV, one row per reported step (``METRIC_COLUMNS``)."""
    from restoration.training import METRIC_COLUMNS

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow(row)
    return out.getvalue()


def plot_training_curve(history: list[dict], path: Path) -> None:
    """Training loss (log scale) and validation PSNR against step, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax_loss = plt.subplots(figsize=(7, 4), dpi=100)
    steps = [h["step"] for h in history]
    ax_loss.plot(steps, [h["loss"] for h in history], color="tab:blue", label="training loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss", color="tab:blue")
    ax_loss.set_yscale("log")
    val = [(h["step"], h["val_psnr"]) for h in history if "val_psnr" in h]
    if val:
        ax_psnr = ax_loss.twinx()
        ax_psnr.plot(*zip(*val), color="tab:red", marker="o", label="validation PSNR")
        ax_psnr.set_ylabel("validation PSNR (dB)", color="tab:red")
    unfrozen = next((h["step"] for h in history if h.get("stage") == "unfrozen"), None)
    if unfrozen is not None and unfrozen > steps[0]:
        ax_loss.axvline(unfrozen, color="gray", linestyle=":", linewidth=1)
        ax_loss.annotate(" backbone unfrozen", (unfrozen, 1), xycoords=("data", "axes fraction"),
                         va="top", fontsize=8, color="gray")
    ax_loss.set_title("fine-tuning")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _quiet_worker_logs() -> None:
    """Ray worker_process_setup_hook for a local instance.

    Ray Train's PlacementGroupCleaner asks the State API every second whether the controller is
    alive. With several local Ray instances on one machine it cannot tell which is its own and
    its thread dies with a traceback; pointing RAY_ADDRESS at this worker's own instance fixes
    that. Without the dashboard's HTTP server (Ray installed without ``ray[default]``) every query
    then fails and logs a warning, each second. The cleaner only matters when a controller dies
    ungracefully, and a local instance goes away with this process anyway.
    """
    import ray

    try:
        os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    except Exception:  # not connected yet: leave the default address resolution alone
        pass
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


def quiet_train_worker() -> None:
    """Hide Ray Train's per-report INFO line ("Reporting training result ...") in a worker.

    Ray 2.60 logs it through ``logging.getLogger(__file__)``, outside the ``ray.train`` logger
    that RunConfig's LoggingConfig governs, so it reaches the console through the root logger.
    """
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray version: nothing to quiet
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def init_ray(address: str | None = None, **kwargs: Any) -> None:
    """Start (or connect to) Ray with the settings this job needs for readable output.

    With no ``address`` and no RAY_ADDRESS, a local instance is started; its workers inherit
    this process's environment, the AWS_* variables included. ``kwargs`` go to ``ray.init``.
    """
    import ray

    for name, value in QUIET_RAY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    address = address or os.environ.get("RAY_ADDRESS")
    if address is None:
        for name, value in LOCAL_RAY_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        kwargs.setdefault("runtime_env", {"worker_process_setup_hook": _quiet_worker_logs})
    ray.init(address=address, **kwargs)


def _fail_once_from_environment() -> dict | None:
    value = os.environ.get(FAIL_ONCE_VARIABLE)
    if not value:
        return None
    rank, step, marker = value.split(":", 2)
    return {"rank": int(rank), "step": int(step), "marker": marker}


def _root_cause(error: BaseException) -> str:
    """The innermost worker error of a Ray Train failure, in one line."""
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if not line.startswith(("File ", "^", "~", "Traceback")) and ("Error" in line or "error" in line):
            return line
    return lines[-1] if lines else type(error).__name__


def run(args: argparse.Namespace) -> int:
    """Pre-flight checks on the driver, then the TorchTrainer; returns the process exit code."""
    plan = preflight(args)
    config = plan.config

    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from restoration import config as config_lib, storage as storage_lib

    if not ray.is_initialized():
        init_ray(args.address)
    for name, value in QUIET_RAY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    needed_cpus = args.workers * args.cpus_per_worker
    available = ray.cluster_resources().get("CPU", 0)
    if needed_cpus > available:
        print(f"note: {args.workers} workers need {needed_cpus:g} CPUs and the cluster has {available:g} now; "
              "waiting for the autoscaler", flush=True)
    if plan.storage.startswith("s3://"):
        storage_path, filesystem = plan.storage[len("s3://"):].rstrip("/"), storage_lib.s3_filesystem()
    else:
        storage_path, filesystem = storage_lib.resolve(plan.storage)[1], None
    run_uri = storage_lib.join(plan.storage, args.name)
    resume_from = latest_checkpoint(plan.storage, args.name)
    if resume_from is not None:
        print(f"run {args.name} exists: resuming from {resume_from}", flush=True)
    print(f"fine-tuning {config.task}: {len(plan.train_uris)} training images, {args.workers} worker(s) x "
          f"batch {config.data.batch_size}, {config.steps} steps, run {run_uri}", flush=True)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": config_lib.to_dict(config),
            "train_uris": plan.train_uris,
            "val_uris": plan.val_uris,
            "train_images": plan.train_images,
            "val_images": plan.val_images,
            "init": plan.init,
            "storage": plan.storage,
            "name": args.name,
            "cpus_per_worker": args.cpus_per_worker,
            "fail_once": _fail_once_from_environment(),
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
            # Ray Train's own INFO lines (every report, worker-group start) drown the progress.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray Train raises once FailureConfig's retries are spent
        print(f"fine-tuning failed: {storage_lib.redact(_root_cause(exc))}", file=sys.stderr, flush=True)
        return 1
    if result.error:
        print(f"fine-tuning failed: {storage_lib.redact(_root_cause(result.error))}", file=sys.stderr, flush=True)
        return 1
    metrics = result.metrics or {}
    summary = {k: metrics.get(k) for k in ("step", "loss", "val_psnr", "val_ssim") if k in metrics}
    best = max(result.best_checkpoints or [], key=lambda item: item[1].get("val_psnr", float("-inf")), default=None)
    if best is not None:
        summary["best_checkpoint"] = storage_lib.join(run_uri, Path(best[0].path).name)
        summary["best_val_psnr"] = best[1].get("val_psnr")
    summary["model"] = storage_lib.join(run_uri, "model")
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
        print(f"finetune: error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Run through the importable module, so the functions Ray ships to workers are pickled by
    # reference to jobs.finetune instead of by value from __main__.
    from jobs.finetune import main as _main

    sys.exit(_main())

"""Fine-tuning on Ray Train: the Ray executor of :mod:`restoration.finetune.run`.

    python -m jobs.finetune --task denoise --train-images DIR_OR_S3 --val-images DIR_OR_S3 \\
        --steps 2000 --workers 2 --storage DIR_OR_S3 --name my-denoiser [--use-gpu] [--no-ray]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jobs.ray_runtime import (
    QUIET_RAY_ENVIRONMENT,
    StopPoll,
    init_ray,
    note_missing_cpus,
    quiet_train_worker,
    root_cause,
    stop_flag_for,
)

__all__ = ["RayFinetuneExecutor", "add_arguments", "init_ray", "main", "quiet_train_worker", "run",
           "train_loop_per_worker"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from restoration.cli import add_finetune_arguments

    add_finetune_arguments(p)
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a local instance)")


# --------------------------------------------------------------------------------------------
# The Ray Train worker: restoration.finetune.run.train_worker through Ray Train's session


class RayTrainSession:
    """:class:`restoration.finetune.run.TrainSession` of a Ray Train worker."""

    def __init__(self, plan: Any, stop_flag: Any) -> None:
        import ray.train
        import ray.train.torch

        self.plan = plan
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.should_stop = StopPoll(stop_flag)

    @contextlib.contextmanager
    def resume(self) -> Iterator[Any]:
        import ray.train

        from restoration.finetune.run import Resume, resume_latest

        # Ray Train's latest registered checkpoint. After a lost worker, the run folder may hold
        # later ones (uploaded by rank 0, never registered): train_worker drops them once resumed.
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:  # none registered with Ray Train: a new run, or one begun with --no-ray
            with resume_latest(self.plan) as found:
                yield found
            return
        with checkpoint.as_directory() as directory:
            yield Resume(str(directory), Path(checkpoint.path).name)

    def report(self, row: dict[str, Any], checkpoint: Path | None, name: str | None) -> None:
        import ray.train

        if checkpoint is None:
            ray.train.report(row)
        else:
            ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint)),
                             checkpoint_dir_name=name)


def train_loop_per_worker(loop_config: dict) -> None:
    """One Ray Train worker: :func:`restoration.finetune.run.train_worker` on the plan."""
    import torch

    from restoration.finetune.run import train_worker

    quiet_train_worker()
    session = RayTrainSession(loop_config["plan"], loop_config["stop_flag"])
    if session.device.type == "cpu":
        # One intra-op thread per reserved CPU: more threads than cores spin and slow every step.
        torch.set_num_threads(max(1, int(loop_config["cpus_per_worker"])))
    train_worker(loop_config["plan"], session)


class RayFinetuneExecutor:
    """:class:`restoration.finetune.run.FinetuneExecutor` on Ray Train: ``workers`` data-parallel
    workers (DDP; NCCL on GPUs, gloo on CPUs), checkpoints registered with Ray Train under
    ``<storage>/<name>/``, worker failures retried from the latest (``max_failures``)."""

    def __init__(self, *, workers: int, use_gpu: bool, cpus_per_worker: float, max_failures: int,
                 address: str | None) -> None:
        self.workers, self.use_gpu, self.cpus_per_worker = workers, use_gpu, cpus_per_worker
        self.max_failures, self.address = max_failures, address

    def describe(self) -> str:
        return f"{self.workers} worker(s)"

    def fit(self, plan: Any, stop: Any) -> Any:
        import ray
        import ray.train
        from ray.train.torch import TorchTrainer

        from restoration.finetune.run import FinetuneOutcome
        from restoration.io import storage as storage_lib
        from restoration.stopping import call_in_thread

        if not ray.is_initialized():
            init_ray(self.address)
        stop.reinstall()  # over the SIGTERM handler of Ray's core worker, which aborts the process
        for name, value in QUIET_RAY_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        note_missing_cpus(self.workers, self.cpus_per_worker)
        filesystem, storage_path = storage_lib.resolve(plan.storage)
        config = plan.config
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"plan": plan, "cpus_per_worker": self.cpus_per_worker, "stop_flag": stop_flag_for(stop)},
            scaling_config=ray.train.ScalingConfig(
                num_workers=self.workers, use_gpu=self.use_gpu,
                resources_per_worker={"CPU": self.cpus_per_worker, **({"GPU": 1} if self.use_gpu else {})},
            ),
            run_config=ray.train.RunConfig(
                name=plan.name,
                storage_path=storage_path,
                storage_filesystem=filesystem if plan.storage.startswith("s3://") else None,
                checkpoint_config=ray.train.CheckpointConfig(
                    num_to_keep=config.keep_checkpoints,
                    checkpoint_score_attribute="val_score",
                    checkpoint_score_order="max",
                ),
                failure_config=ray.train.FailureConfig(max_failures=self.max_failures),
                # Ray Train's own INFO lines (every report, worker-group start) drown the progress.
                logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            ),
        )
        try:
            # In the main thread, fit() replaces the SIGINT handler with one that aborts without a
            # checkpoint; from another thread it leaves the run's StopSignals in place.
            result = call_in_thread(trainer.fit)
        except Exception as exc:  # Ray Train raises once FailureConfig's retries are spent
            raise RuntimeError(root_cause(exc)) from exc
        if result.error:
            raise RuntimeError(root_cause(result.error))
        return FinetuneOutcome(result.metrics or {}, [(Path(checkpoint.path).name, metrics)
                                                      for checkpoint, metrics in result.best_checkpoints or []])


def run(args: argparse.Namespace) -> int:
    """The run on Ray Train (in this process with ``--no-ray``); the process exit code."""
    from restoration.cli import run_finetune_command

    return run_finetune_command(args, lambda: RayFinetuneExecutor(
        workers=args.workers, use_gpu=args.use_gpu, cpus_per_worker=args.cpus_per_worker,
        max_failures=args.max_failures, address=args.address))


def main(argv: list[str] | None = None) -> int:
    from restoration.cli import FINETUNE_DESCRIPTION

    parser = argparse.ArgumentParser(prog="python -m jobs.finetune", description=FINETUNE_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from restoration.cli import run_command

    return run_command("finetune", run, args)


if __name__ == "__main__":
    # Run through the importable module, so the functions Ray ships to workers are pickled by
    # reference to jobs.finetune instead of by value from __main__.
    from jobs.finetune import main as _main

    sys.exit(_main())

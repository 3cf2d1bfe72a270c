"""A fine-tuning run's logic, with no Ray in it: the plan checked before any worker starts
(:func:`plan_finetune`), what every worker does (:func:`train_worker`), and the run itself
(:func:`run_finetune`), which takes an executor:

- :class:`LocalFinetuneExecutor`: one worker in this process, on the CPU or one CUDA device
  (``restoration finetune --no-ray``; Ray is never imported);
- the Ray Train executor in ``jobs/finetune.py``: data-parallel workers, each running
  :func:`train_worker` through a :class:`TrainSession` of Ray Train's (context, checkpoints in
  and out, ``report``).

Both write the same layout under ``<storage>/<name>/``: ``config.yaml``, the resumable
``checkpoint_step_NNNNNNNN/`` folders (``restoration.models.checkpoint``) and ``model/``, so that a run
started by one continues with the other. The training loop is :class:`restoration.finetune.trainer.Trainer`.
"""

from __future__ import annotations

import contextlib
import platform
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from restoration.finetune.checkpoints import (
    TRAINING_CONFIG_FILE,
    copy_checkpoint,
    delete_checkpoint,
    download_checkpoint,
    drop_checkpoints_after,
    latest_training_checkpoint,
    read_training_config,
    training_checkpoint_name,
    training_checkpoints,
)
from restoration.finetune.data import (
    load_training_images,
    load_worker_images,
    match_pairs,
    shard_messages,
)
from restoration.finetune.outputs import (
    REFUSED_FILE,
    VALIDATION_KEYS,
    metrics_csv,
    plot_training_curve,
    worse_than_start,
    write_final_outputs,
)
from restoration.finetune.settings import (
    TrainConfig,
    load_train_config,
    model_differences,
)
from restoration.finetune.summary import FinetuneSummary
from restoration.finetune.trainer import (
    Trainer,
    initial_model,
    validation_score,
)
from restoration.io import storage
from restoration.models.catalog import is_model_name
from restoration.models.checkpoint import (
    CheckpointError,
    model_licence,
    read_model_metadata,
    start_model,
)
from restoration.models.students import is_student_spec
from restoration.stopping import StopNow, StopSignals

__all__ = [
    "FinetuneExecutor",
    "FinetuneInputError",
    "FinetuneOutcome",
    "FinetunePlan",
    "LocalFinetuneExecutor",
    "TrainSession",
    "check_resumable",
    "latest_checkpoint",
    "metrics_csv",
    "plan_finetune",
    "plot_training_curve",
    "provenance",
    "resume_latest",
    "run_finetune",
    "run_summary",
    "start_message",
    "train_worker",
    "write_final_outputs",
]

SAMPLE_IMAGES_CHECKED = 8
"""How many training images (spread over the list) the plan decodes to check they are usable."""


class FinetuneInputError(ValueError):
    """Bad input to a fine-tuning run, found before any worker starts (exit code 2)."""


@dataclass(frozen=True)
class FinetunePlan:
    """A checked run: the resolved config and absolute URIs that every worker can use."""

    config: TrainConfig
    train_uris: list[str]
    val_uris: list[str]
    train_images: str
    val_images: str
    storage: str
    name: str
    init: str | None
    #: the ``--init`` model's licence: a model fine-tuned from it keeps it (not its architecture's)
    init_licence: str | None = None
    #: training on pairs: each training / validation image's input, in the same order (None:
    #: degradations are synthesized from the images, as the task's spec draws them)
    train_inputs: list[str] | None = None
    val_inputs: list[str] | None = None
    #: self-supervised: write the final model even when it leaves more noise than the start
    keep_worse: bool = False
    #: what the run learns from, as its provenance says (default: from the plan's inputs)
    trained_on: str | None = None
    #: recorded in the provenance (e.g. a distillation's teacher)
    extra_provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def run_uri(self) -> str:
        """``<storage>/<name>``: the run's config, checkpoints and final model."""
        return storage.join(self.storage, self.name)


def _list(uri: str, flag: str) -> list[str]:
    try:
        uris = storage.list_images(uri)
    except FileNotFoundError:
        raise FinetuneInputError(f"{flag} {storage.redact(uri)}: no such file or directory") from None
    except (OSError, ValueError) as exc:
        message = storage.describe_storage_error(exc, uri) if isinstance(exc, OSError) else None
        raise FinetuneInputError(f"{flag}: {message or storage.redact(str(exc))}") from None
    if not uris:
        extensions = ", ".join(sorted(storage.IMAGE_EXTENSIONS))
        raise FinetuneInputError(f"{flag} {storage.redact(uri)} holds no images ({extensions})")
    return uris


def _check_some_decode(uris: list[str], flag: str, *, min_size: int = 0, every: bool = False) -> None:
    """Decode a few images spread over ``uris`` (or all with ``every``); fail if none is usable."""
    if every or len(uris) <= SAMPLE_IMAGES_CHECKED:
        sample = uris
    else:
        sample = [uris[i * len(uris) // SAMPLE_IMAGES_CHECKED] for i in range(SAMPLE_IMAGES_CHECKED)]
    try:
        images = load_training_images(sample, min_size=min_size)
    except ValueError as exc:
        checked = f" (checked {len(sample)} of {len(uris)})" if len(sample) < len(uris) else ""
        raise FinetuneInputError(f"{flag}{checked}: {exc}") from None
    if every and images.bad:
        uri, reason = images.bad[0]
        raise FinetuneInputError(f"{flag}: cannot use {uri}: {reason}")


def plan_finetune(
    task: str,
    *,
    train_images: str,
    val_images: str,
    storage_uri: str,
    name: str,
    workers: int = 1,
    init: str | None = None,
    config_path: str | None = None,
    overrides: list[str] | None = None,
    steps: int | None = None,
    train_inputs: str | None = None,
    val_inputs: str | None = None,
    pairs: tuple[list[str], list[str], list[str], list[str]] | None = None,
    keep_worse: bool = False,
) -> FinetunePlan:
    """Check everything a run needs before any worker starts: the config (every setting), the
    image folders (listed, a sample decoded), the ``init`` checkpoint's architecture, and that the
    storage can be written (the resolved ``config.yaml`` is the probe, and stays beside the run).

    Training on pairs: ``train_inputs`` (and ``val_inputs``) hold each image's input, matched to
    the images by relative path, extension aside (:func:`restoration.finetune.data.match_pairs`);
    images without an input are left out and counted, and nothing is synthesized. ``pairs``: the
    pairs given as lists instead, (training targets, their inputs, validation targets, their
    inputs), as a distillation knows them from its teacher's manifest; the folders are then the
    targets' roots, for the provenance.

    Raises:
        FinetuneInputError: one line naming the bad value (storage errors redacted).
    """
    if workers < 1:
        raise FinetuneInputError(f"--workers must be >= 1, got {workers}")
    if not name or "/" in name or name.startswith("."):
        raise FinetuneInputError(f"--name must be a plain folder name, got {name!r}")
    if steps is not None and steps < 1:
        raise FinetuneInputError(f"--steps must be >= 1, got {steps}")
    try:
        config = load_train_config(task, path=config_path, overrides=overrides, steps=steps)
    except ValueError as exc:
        raise FinetuneInputError(f"config: {exc}") from None
    try:
        train_images, val_images = storage.absolute_uri(train_images), storage.absolute_uri(val_images)
        storage_uri = storage.absolute_uri(storage_uri)
        # Fast, one-line failures for the user's storage errors (unreachable endpoint, missing
        # bucket, access denied) before anything is listed or decoded.
        for flag, uri in (("--train-images", train_images), ("--val-images", val_images)):
            try:
                storage.check_readable(uri)
            except storage.StorageError as exc:
                if str(exc).startswith("no such file or directory"):
                    raise FinetuneInputError(f"{flag} {storage.redact(uri)}: no such file or directory") from None
                raise FinetuneInputError(f"{flag}: {exc}") from None
        try:
            storage.check_writable(storage_uri)
        except storage.StorageError as exc:
            raise FinetuneInputError(f"--storage {storage.redact(storage_uri)} cannot be written: {exc}") from None
    except FinetuneInputError:
        raise
    except ValueError as exc:
        raise FinetuneInputError(str(exc)) from None
    train_uris = _list(train_images, "--train-images") if pairs is None else list(pairs[0])
    if config.data.max_images is not None:
        train_uris = train_uris[: config.data.max_images]
    train_pairs = val_pairs = None
    if pairs is not None:
        train_pairs = list(pairs[1])[: len(train_uris)]
    elif train_inputs is not None:
        if config.degradation.mask_input:
            raise FinetuneInputError(f"--train-inputs: --task {task} reads its mask from the images; it trains on "
                                     "synthesized masks only")
        train_uris, train_pairs = _pairs(train_uris, train_images, train_inputs, "--train-inputs")
    if len(train_uris) < workers:
        raise FinetuneInputError(f"--train-images: {len(train_uris)} images cannot be split over {workers} workers")
    _check_some_decode(train_uris, "--train-images", min_size=config.data.crop_size)
    val_uris = _list(val_images, "--val-images") if pairs is None else list(pairs[2])
    if pairs is not None:
        val_pairs = list(pairs[3])[: config.validation.limit]
    elif val_inputs is not None:
        val_uris, val_pairs = _pairs(val_uris, val_images, val_inputs, "--val-inputs")
        val_pairs = val_pairs[: config.validation.limit]
    val_uris = val_uris[: config.validation.limit]
    _check_some_decode(val_uris, "--val-images", every=True)
    if init is not None and init != "default" and not (is_model_name(init) and not Path(init).exists()) \
            and not is_student_spec(init):
        init = storage.absolute_uri(init)  # a model name (``restoration models``) or a student spec stays one
    if init is not None:
        try:
            initial_model(config, init)  # refuses a checkpoint of another architecture, here and now
        except (CheckpointError, FileNotFoundError, OSError) as exc:
            message = storage.describe_storage_error(exc, init) if isinstance(exc, OSError) else None
            raise FinetuneInputError(f"--init: {message or storage.redact(str(exc))}") from None
        init_licence, _ = model_licence(init, config.task)
    try:
        probe = storage.join(storage_uri, name, f".write-test-{uuid.uuid4().hex[:8]}")
        storage.write_bytes(probe, b"ok")
        filesystem, path = storage.resolve(probe)
        filesystem.delete_file(path)
        storage.write_bytes(storage.join(storage_uri, name, TRAINING_CONFIG_FILE), config.to_yaml().encode())
    except (OSError, ValueError) as exc:
        message = storage.describe_storage_error(exc, storage_uri) if isinstance(exc, OSError) else None
        raise FinetuneInputError(f"--storage {storage.redact(storage_uri)} cannot be written: "
                                 f"{message or storage.redact(str(exc))}") from None
    return FinetunePlan(config, train_uris, val_uris, train_images, val_images, storage_uri, name, init,
                        init_licence if init is not None else None, train_pairs, val_pairs, keep_worse)


def _pairs(uris: list[str], root: str, inputs: str, flag: str) -> tuple[list[str], list[str]]:
    """The images of ``uris`` (under ``root``) that have an input under ``inputs``, and theirs."""
    inputs = storage.absolute_uri(inputs)
    targets, matched, unmatched = match_pairs(uris, root, _list(inputs, flag), inputs)
    if not targets:
        raise FinetuneInputError(f"{flag} {storage.redact(inputs)}: no input matches an image by its relative path "
                                 f"(e.g. {storage.redact(uris[0])})")
    if unmatched:
        print(f"{flag}: {unmatched} of {len(uris)} images have no input under {storage.redact(inputs)}; "
              "left out", flush=True)
    return targets, matched


def check_resumable(plan: FinetunePlan, checkpoint: str | None) -> None:
    """A run of the same name resumes from ``checkpoint`` (None: a new run): its config.yaml, if
    readable, must have this plan's task and model, or FinetuneInputError says what differs."""
    saved = None if checkpoint is None else read_training_config(checkpoint)
    if saved is None:
        return
    differences = model_differences(saved, plan.config)
    if not differences:
        return
    raise FinetuneInputError(
        f"--name {plan.name}: {storage.join(plan.storage, plan.name)} holds a run with another model "
        f"({'; '.join(differences)}); running the same name resumes it. Use another --name for a new run, "
        f"or --init {checkpoint} to start from its weights"
    )


def start_message(trainer: Trainer, init: str | None, resumed_from: str | None) -> str:
    """Where a worker's training starts: a resumed checkpoint, ``--init`` or the backbone weights."""
    config = trainer.config
    if resumed_from is not None:
        return (f"resumed from step {trainer.step} of {config.steps} (checkpoint {resumed_from}): "
                "model, optimizer, schedule and data position restored")
    start = f"--init {init}" if init else f"{config.backbone_weights or 'random'} backbone weights"
    return f"starting at step 0 of {config.steps} from {start}"


def run_summary(metrics: dict[str, Any], best: list[tuple[str, dict[str, Any]]], run_uri: str, *,
                start: dict[str, Any] | None = None) -> FinetuneSummary:
    """The final line of a run: last metrics, the best checkpoint by validation PSNR (``best``:
    (checkpoint folder name, its metrics)), and where the final model is. Only what the run
    knows is set (see :meth:`FinetuneSummary.to_json`)."""
    known = {k: metrics.get(k) for k in ("step", "loss", "val_psnr", "val_ssim", "val_noise_left", "val_residual_noise")
             if k in metrics}
    for key in ("val_noise_left", "val_residual_noise"):
        if start and key in start:
            known[f"{key}_at_start"] = start[key]
    top = max(best, key=lambda item: validation_score(item[1]), default=None)
    if top is not None:
        known["best_checkpoint"] = storage.join(run_uri, top[0])
        if "val_psnr" in top[1]:
            known["best_val_psnr"] = top[1].get("val_psnr")
    return FinetuneSummary(**known, model=storage.join(run_uri, "model"))


def provenance(plan: FinetunePlan, *, workers: int, device_name: str, image_count: int,
               skipped: int) -> dict[str, Any]:
    """The training provenance recorded in every checkpoint's ``model.json``."""
    config = plan.config
    if plan.trained_on is not None:
        trained_on = plan.trained_on
    elif config.self_supervised_method is not None:
        trained_on = f"noisy images alone (self-supervised, {config.self_supervised_method})"
    else:
        trained_on = "pairs" if plan.train_inputs is not None else "synthesized degradations"
    return {
        "train_images": plan.train_images,
        "val_images": plan.val_images,
        "trained_on": trained_on,
        "train_image_count": image_count,
        "skipped_images": skipped,
        "task": config.task,
        "seed": config.seed,
        "workers": workers,
        "global_batch": config.data.batch_size * workers,
        "hardware": f"{workers} x {device_name}",
        "init": plan.init,
        "run_name": plan.name,
        **({"licence": plan.init_licence} if plan.init_licence else {}),
        **plan.extra_provenance,
    }


def device_name(device: Any) -> str:
    """``"NVIDIA H100 ..."`` for a CUDA device, ``"cpu (<processor>)"`` otherwise."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


# --------------------------------------------------------------------------------------------
# What every worker does, whatever runs it


@dataclass(frozen=True)
class Resume:
    """The checkpoint a worker resumes from: a local folder (for the duration of the
    ``TrainSession.resume`` block) and the checkpoint's name."""

    directory: str
    name: str


class TrainSession(Protocol):
    """What :func:`train_worker` needs from its executor. ``rank`` / ``world_size``: this
    worker among the data-parallel ones (``torch.distributed`` is set up when there are
    several); ``device``: where it trains."""

    rank: int
    world_size: int
    device: Any

    def resume(self) -> contextlib.AbstractContextManager[Resume | None]:
        """The checkpoint to resume from, or None for a new run."""
        ...

    def report(self, row: dict[str, Any], checkpoint: Path | None, name: str | None) -> None:
        """A reported row (every worker, at the same steps); with rank 0's ``checkpoint`` folder
        (temporary: copy what is kept) and its name at checkpoint steps."""
        ...

    def should_stop(self) -> bool:
        """Whether the run was asked to stop (cheap: asked after every step)."""
        ...


def train_worker(plan: FinetunePlan, session: TrainSession) -> None:
    """One data-parallel worker of a run: its shard, the model (resumed, ``--init`` or the
    backbone's weights), the :class:`Trainer` with its checkpoints reported through ``session``,
    and on rank 0 the final outputs. A stop request ends it at a checkpoint, without them."""
    import torch
    import torch.distributed as dist

    from restoration.finetune.trainer import CropSampler
    config = plan.config
    rank, world_size, device = session.rank, session.world_size, session.device
    torch.manual_seed(config.seed)

    def say(text: str) -> None:
        if rank == 0:
            print(text, flush=True)

    images = load_worker_images(plan.train_uris, plan.val_uris, rank=rank, world_size=world_size,
                                min_size=config.data.crop_size, train_inputs=plan.train_inputs,
                                val_inputs=plan.val_inputs, scale=config.degradation.scale)
    shard = images.shard
    counts = torch.tensor([shard.usable, shard.bad, int(shard.usable == 0)], dtype=torch.int64)
    if world_size > 1:
        counts = counts.to(device) if dist.get_backend() == "nccl" else counts
        dist.all_reduce(counts)  # every worker learns the totals, and all fail together if a shard is empty
    total_usable, total_bad, empty_shards = (int(v) for v in counts.cpu())
    for line in shard_messages(shard, rank, world_size, total_usable, total_bad, empty_shards):
        print(line, flush=True)

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        if world_size == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    with session.resume() as resume:
        # A resumed run takes every weight from the checkpoint: no ImageNet or --init load needed,
        # whatever kind of model it trains.
        model = start_model(config.network_config(), plan.init, backbone_weights=config.backbone_weights,
                            resume=resume.directory if resume is not None else None)
        trainer = Trainer(config, model, CropSampler(shard.images, config, rank=rank), device=device, wrap=wrap,
                          val_samples=images.validation, val_pairs=images.validation_pairs, world_size=world_size,
                          rank=rank, progress=say)
        if resume is not None:
            trainer.resume(resume.directory)
    say(start_message(trainer, plan.init, resume.name if resume else None))
    if rank == 0:
        # The run goes on from here: checkpoints above this step belong to an abandoned attempt
        # (Ray Train restarted a lost worker group from its latest registered checkpoint), and
        # must never be resumed from, named or kept. Dropped before this attempt writes any.
        dropped = drop_checkpoints_after(plan.run_uri, trainer.step)
        if dropped:
            names = ", ".join(uri.rstrip("/").rpartition("/")[2] for uri in dropped)
            say(f"deleted {len(dropped)} checkpoint(s) above step {trainer.step}, of an abandoned attempt: {names}")
    run_provenance = provenance(plan, workers=world_size, device_name=device_name(device),
                                image_count=total_usable, skipped=total_bad)

    def report(row: dict, checkpoint_due: bool) -> None:
        if checkpoint_due and rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                trainer.save(tmp, provenance={
                    **run_provenance, "steps": trainer.step, "wall_seconds": row["wall_seconds"],
                    "resumed_at": trainer.resumed_at,
                    "validation": {k: row[k] for k in VALIDATION_KEYS if k in row},
                })
                session.report(row, Path(tmp), training_checkpoint_name(trainer.step))
        else:
            session.report(row, None, None)  # every worker reports at the same steps

    trainer.fit(report, should_stop=session.should_stop)
    if trainer.stopped_at is not None:
        say(f"stopped at step {trainer.stopped_at}: {training_checkpoint_name(trainer.stopped_at)} saved")
        return
    if rank == 0:
        refusal = worse_than_start(trainer, plan.run_uri, keep_worse=plan.keep_worse)
        if refusal is not None:  # not raised: Ray Train would retry the worker
            storage.write_bytes(storage.join(plan.run_uri, REFUSED_FILE), refusal.encode())
            say(f"final model refused: {refusal}")
            return
        target = write_final_outputs(trainer, plan.storage, plan.name, {**run_provenance, "resumed_at": trainer.resumed_at})
        say(f"final model written to {target}")


# --------------------------------------------------------------------------------------------
# The run


def latest_checkpoint(plan: FinetunePlan) -> str | None:
    """URI of the checkpoint a run of this plan resumes from (None: a new run): the latest of
    the run's current timeline (:func:`restoration.models.checkpoint.latest_training_checkpoint`;
    :func:`train_worker` drops an abandoned attempt's checkpoints when it resumes)."""
    return latest_training_checkpoint(plan.run_uri)


@contextlib.contextmanager
def resume_latest(plan: FinetunePlan) -> Iterator[Resume | None]:
    """The run's latest checkpoint in its storage (:func:`latest_checkpoint`) as a local folder
    for the block (downloaded from S3), or None for a new run."""
    latest = latest_checkpoint(plan)
    if latest is None:
        yield None
        return
    name = latest.rstrip("/").rpartition("/")[2]
    if not latest.startswith("s3://"):
        yield Resume(storage.resolve(latest)[1], name)
        return
    with tempfile.TemporaryDirectory() as tmp:
        download_checkpoint(latest, tmp)
        yield Resume(tmp, name)


@dataclass
class FinetuneOutcome:
    """What an executor's fit returns: the last reported metrics (empty if no step was taken)
    and the kept checkpoints as (folder name, metrics)."""

    metrics: dict[str, Any] = field(default_factory=dict)
    checkpoints: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class FinetuneExecutor(Protocol):
    """Runs :func:`train_worker` on one or more workers until the run ends or ``stop`` is
    requested; raises ``RuntimeError`` with one line when the workers fail."""

    def fit(self, plan: FinetunePlan, stop: StopSignals) -> FinetuneOutcome: ...

    def describe(self) -> str: ...


def run_finetune(plan: FinetunePlan, executor: FinetuneExecutor) -> int:
    """Fine-tune as ``plan`` says with ``executor``; returns the exit code: 0 when the run is
    done, 1 when it failed (one line on stderr), 130 / 143 when SIGINT / SIGTERM stopped it at
    a checkpoint (one line: the same command continues)."""
    config = plan.config
    refused_uri = storage.join(plan.run_uri, REFUSED_FILE)
    if storage.exists(refused_uri):  # a refusal of an earlier attempt
        storage.delete(refused_uri)
    with StopSignals(config.grace_seconds) as stop:
        try:
            resume_from = latest_checkpoint(plan)
            if resume_from is not None:
                print(f"run {plan.name} exists: resuming from {resume_from}", flush=True)
            print(f"fine-tuning {config.task}: {len(plan.train_uris)} training images, {executor.describe()} x "
                  f"batch {config.data.batch_size}, {config.steps} steps, run {plan.run_uri}", flush=True)
            try:
                outcome = executor.fit(plan, stop)
            except RuntimeError as exc:
                print(f"fine-tuning failed: {storage.redact(str(exc))}", file=sys.stderr, flush=True)
                return 1
        except StopNow as exc:  # a second signal, or the grace period is over
            print(f"fine-tuning stopped at once ({exc.reason}); run the same command again to continue "
                  f"from its last checkpoint", file=sys.stderr, flush=True)
            return exc.exit_code
    step = outcome.metrics.get("step")
    if stop.requested and step != config.steps:  # (a signal after the last step: the run is done)
        at = f"at step {step} of {config.steps}" if step is not None else "before its first step"
        saved = latest_checkpoint(plan)
        print(f"fine-tuning stopped by {stop.name} {at} ({f'checkpoint {saved}' if saved else 'no checkpoint yet'}); "
              f"run the same command again to continue", file=sys.stderr, flush=True)
        return stop.exit_code or 1
    if storage.exists(refused_uri):
        print(f"fine-tuning done, but {storage.read_bytes(refused_uri).decode()}", file=sys.stderr, flush=True)
        return 1
    start = None
    if config.self_supervised_method is not None:  # the starting model's figures, as the model records them
        with contextlib.suppress(OSError, ValueError):
            start = read_model_metadata(storage.join(plan.run_uri, "model"))[0].provenance.get("validation_at_start")
    print("done: " + run_summary(outcome.metrics, outcome.checkpoints, plan.run_uri, start=start).to_json(), flush=True)
    return 0


class LocalFinetuneExecutor:
    """One worker in this process (``restoration finetune --no-ray``): on ``device`` (``cpu``,
    ``cuda`` or ``cuda:N``), checkpoints copied to ``<storage>/<name>/`` as they are written,
    keeping the ``keep_checkpoints`` best by validation (PSNR, or the least residual noise) and
    the latest (as the Ray job does)."""

    def __init__(self, device: str = "cpu") -> None:
        import torch

        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise FinetuneInputError(f"--use-gpu: CUDA is not available here (device {device})")

    def describe(self) -> str:
        return f"1 worker ({self.device}, no Ray)"

    def fit(self, plan: FinetunePlan, stop: StopSignals) -> FinetuneOutcome:
        session = _LocalSession(plan, self.device, stop)
        try:
            train_worker(plan, session)
        except (ValueError, OSError, CheckpointError, FloatingPointError) as exc:
            raise RuntimeError(str(exc)) from exc
        return FinetuneOutcome(session.last_row, session.kept())


@dataclass
class _LocalSession:
    plan: FinetunePlan
    device: Any
    stop: StopSignals
    rank: int = 0
    world_size: int = 1
    last_row: dict[str, Any] = field(default_factory=dict)

    def resume(self) -> contextlib.AbstractContextManager[Resume | None]:
        return resume_latest(self.plan)

    def report(self, row: dict[str, Any], checkpoint: Path | None, name: str | None) -> None:
        self.last_row = row
        if checkpoint is not None and name is not None:
            copy_checkpoint(checkpoint, storage.join(self.plan.run_uri, name))
            self._prune()

    def should_stop(self) -> bool:
        return self.stop.requested

    def kept(self) -> list[tuple[str, dict[str, Any]]]:
        """The run's checkpoints as (folder name, validation metrics)."""
        kept = []
        for _, uri in training_checkpoints(self.plan.run_uri):
            validation = {}
            with contextlib.suppress(OSError, ValueError):  # (CheckpointError is a ValueError)
                validation = dict(read_model_metadata(uri)[0].provenance.get("validation") or {})
            kept.append((uri.rstrip("/").rpartition("/")[2], validation))
        return kept

    def _prune(self) -> None:
        """Keep the ``keep_checkpoints`` best by validation PSNR, and the latest."""
        kept = self.kept()
        best = sorted(kept, key=lambda item: validation_score(item[1]), reverse=True)
        keep = {name for name, _ in best[: self.plan.config.keep_checkpoints]} | {kept[-1][0]}
        for name, _ in kept:
            if name not in keep:
                delete_checkpoint(storage.join(self.plan.run_uri, name))

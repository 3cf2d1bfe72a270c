"""The fine-tuning loop: runs in one process (CPU or CUDA) or, through ``jobs/finetune.py``, as one
Ray Train worker of a data-parallel group. Nothing here imports Ray.

Stages: the backbone is frozen for the first ``optim.freeze_backbone_fraction`` of the steps, then
unfrozen at ``optim.backbone_lr``. AdamW, linear warm-up then cosine decay, gradient clipping,
bf16 autocast on CUDA.

Data: each worker holds its own disjoint shard of the clean training images. Every sample's crop,
flip and degradation come from a generator seeded by (seed, image name, epoch, position), so a
resumed run draws exactly the samples it would have drawn. A resumed run with the same number of
workers continues bit for bit where the interrupted one stopped (model, optimizer, schedule, data
position); with another number of workers the shards differ, and only the data order changes.

One process, no Ray::

    config = load_train_config("denoise", overrides=["steps=200"])
    images = load_training_images(storage.list_images("photos/"), min_size=config.data.crop_size)  # finetune.data
    trainer = Trainer(config, initial_model(config), CropSampler(images, config), device="cuda")
    trainer.fit(checkpoint_dir="runs/denoise")
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from restoration.durations import format_duration
from restoration.finetune.checkpoints import (
    read_training_checkpoint,
    save_training_checkpoint,
    training_checkpoint_name,
)
from restoration.finetune.data import LoadedImages
from restoration.finetune.losses import build_loss
from restoration.finetune.selfsup import SELF_SUPERVISED_LOSSES, neighbour_error
from restoration.finetune.settings import TrainConfig, model_differences
from restoration.io.pixels import pixels_to_tensor
from restoration.models.checkpoint import CheckpointError, load_weights, start_model
from restoration.models.fused import FusedRestorationNet
from restoration.models.interface import RestorationModel
from restoration.quality.assess import estimate_noise
from restoration.quality.metrics import RGB, quantize, score_tensors
from restoration.tasks import degradations
from restoration.tasks.specs import EvalSample

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def to_gray8(rgb: Tensor) -> Tensor:
    """(3, H, W) RGB in [0, 1] -> (1, H, W) 8-bit gray (ITU-R BT.601 luma, as PIL's "L")."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=rgb.dtype).view(3, 1, 1)
    return ((rgb * weights).sum(0, keepdim=True) * 255).round().clamp(0, 255) / 255


# The step whose gradients are checked for flow (a fresh model's head starts at zero, so the first
# step only reaches the head).
GRADIENT_CHECK_STEP = 3


def _at_size(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A pair's input at its target's size (bicubic): what a model that changes nothing returns."""
    if pixels.shape[:2] == tuple(size):
        return pixels
    return degradations.bicubic_upsample_uint8(pixels, size[0] // pixels.shape[0])


class CropSampler:
    """Deterministic stream of (gt, lq, mask) training samples from a worker's images.

    Sample number ``position`` (counted per worker from 0) is image ``order(epoch)[position % n]``
    with ``epoch = position // n``; its crop, flips and degradation are drawn from a generator
    seeded by (seed, image name, epoch, position). Resuming at ``position`` reproduces the stream.
    """

    def __init__(self, images: LoadedImages, config: TrainConfig, *, rank: int = 0) -> None:
        self.images = images
        self.crop = config.data.crop_size
        self.spec = config.degradation
        self.seed = config.seed
        self.gray_fraction = config.data.gray_fraction
        self.scale = config.degradation.scale
        self.rank = rank
        self._orders: dict[int, Tensor] = {}
        # Self-supervised: the images are the noisy ones; a sample is a crop as it is (no
        # degradation), and its noise level is the image's (given, or estimated once per image).
        self.as_is = config.self_supervised_method is not None
        self._sigma = config.self_supervised.sigma
        self._noise_levels: dict[int, float] = {}
        small = [n for n, p in zip(images.names, images.pixels) if min(p.shape[:2]) < self.crop]
        if small:
            raise ValueError(f"{len(small)} training images are smaller than data.crop_size {self.crop}, e.g. {small[0]}")
        if images.inputs is not None and self.crop % self.scale:
            raise ValueError(f"data.crop_size {self.crop} must be a multiple of the scale {self.scale} to crop pairs")

    def _image_index(self, position: int) -> tuple[int, int]:
        n = len(self.images.names)
        epoch = position // n
        if epoch not in self._orders:
            self._orders = {epoch: torch.randperm(n, generator=degradations.make_generator(self.seed, "order", self.rank, epoch))}
        return int(self._orders[epoch][position % n]), epoch

    def sample(self, position: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """Sample ``position``: gt (3, c, c), lq (3, c/s, c/s), mask (1, c, c) or None. On pairs
        (``images.inputs``), the crop of the image's own input at the same place, nothing
        synthesized; else the task's degradation of the crop."""
        index, epoch = self._image_index(position)
        name = self.images.names[index]
        pixels = self.images.pixels[index]
        g = degradations.make_generator(self.seed, name, epoch, position)
        h, w = pixels.shape[:2]
        c = self.crop
        paired = self.images.inputs[index] if self.images.inputs is not None else None
        step = self.scale if paired is not None else 1  # a pair's crop starts on the input's grid
        top = int(torch.randint(0, (h - c) // step + 1, (1,), generator=g)) * step
        left = int(torch.randint(0, (w - c) // step + 1, (1,), generator=g)) * step
        crops = [pixels_to_tensor(pixels[top : top + c, left : left + c])]
        if paired is not None:
            t, l, k = top // step, left // step, c // step
            crops.append(pixels_to_tensor(paired[t : t + k, l : l + k]))
        flips = torch.randint(0, 2, (3,), generator=g).tolist()
        for axis, flip in ((-1, flips[0]), (-2, flips[1])):
            if flip:
                crops = [crop.flip(axis) for crop in crops]
        if flips[2]:
            crops = [crop.transpose(-1, -2) for crop in crops]
        # Drawn only when asked for, so color-only configs keep their exact sample stream.
        gray = self.gray_fraction > 0 and float(torch.rand((), generator=g)) < self.gray_fraction
        if gray:
            crops = [to_gray8(crop) for crop in crops]
        if paired is not None:
            gt, lq, mask = crops[0], crops[1], None
        elif self.as_is:
            gt, lq, mask = crops[0], crops[0], None
        else:
            degraded = self.spec.degrade(crops[0].contiguous(), g)
            gt, lq, mask = degraded.gt, degraded.lq, degraded.mask
        if gray:  # the model sees gray as three equal channels, as inference runs it
            gt, lq = gt.expand(3, -1, -1), lq.expand(3, -1, -1)
        return gt, lq, mask

    def noise_levels(self, start: int, size: int) -> Tensor:
        """The noise std (on the [0, 1] scale) of the images of samples ``start .. start + size
        - 1``: ``self_supervised.sigma`` where it is set, else each image's estimate."""
        levels = []
        for position in range(start, start + size):
            index, _ = self._image_index(position)
            if index not in self._noise_levels:
                self._noise_levels[index] = (self._sigma if self._sigma is not None
                                             else estimate_noise(self.images.pixels[index]))
            levels.append(self._noise_levels[index] / 255.0)
        return torch.tensor(levels, dtype=torch.float32)

    def batch(self, start: int, size: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """Samples ``start .. start + size - 1`` stacked: gt (B,3,c,c), lq (B,3,c/s,c/s), mask or None."""
        items = [self.sample(p) for p in range(start, start + size)]
        gt = torch.stack([i[0] for i in items])
        lq = torch.stack([i[1] for i in items])
        mask = torch.stack([i[2] for i in items]) if items[0][2] is not None else None
        return gt, lq, mask


# --------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------


def lr_multiplier(step: int, config: TrainConfig) -> float:
    """Linear warm-up to 1 over ``config.warmup_steps``, then cosine decay to ``min_lr_ratio``
    at the last step. ``step`` counts optimizer steps taken, from 0."""
    o = config.optim
    warmup = config.warmup_steps
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


Wrap = Callable[[nn.Module], nn.Module]
ReportFn = Callable[[dict[str, Any], bool], None]
"""``report(row, checkpoint_due)``: called by every worker at the same steps (see ``Trainer.fit``)."""

METRIC_COLUMNS = (
    "step", "loss", "lr", "samples_per_second", "val_psnr", "val_ssim", "val_noise_left", "val_residual_noise",
    "val_removed_noise",
    "wall_seconds", "stage",
    "data_seconds", "forward_seconds", "backward_seconds", "optimizer_seconds",
)
"""The columns of a training-history row, in ``metrics.csv`` order."""

_TIMING_KEYS = ("data_seconds", "forward_seconds", "backward_seconds", "optimizer_seconds")


class Trainer:
    """Fine-tunes a ``FusedRestorationNet``; one instance per process (per Ray Train worker).

    Args:
        config: the run's configuration.
        model: the network (unwrapped); moved to ``device``.
        sampler: this worker's sample stream.
        device: where to train. On CUDA the forward pass runs under bf16 autocast.
        wrap: wraps the model for data-parallel training (e.g. in DistributedDataParallel); it is
            called again when the backbone is unfrozen, since the set of trained parameters changes.
        val_samples: (name, 8-bit pixels) validation images, or None to skip validation (give
            them to rank 0 only: only rank 0 validates).
        val_pairs: instead, validation pairs (name, 8-bit target, 8-bit input): scored as they
            are, nothing synthesized (training on pairs).
        world_size: number of data-parallel workers (for samples/s and the global batch).
        rank: this worker's rank; rank 0 validates, keeps the history and prints progress.
        progress: where rank 0's progress lines go (default: this module's logger, INFO).
    """

    def __init__(
        self,
        config: TrainConfig,
        model: FusedRestorationNet,
        sampler: CropSampler,
        *,
        device: torch.device | str = "cpu",
        wrap: Wrap | None = None,
        val_samples: list[tuple[str, np.ndarray]] | None = None,
        val_pairs: list[tuple[str, np.ndarray, np.ndarray]] | None = None,
        world_size: int = 1,
        rank: int = 0,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.sampler = sampler
        self.wrap = wrap or (lambda m: m)
        self.world_size = world_size
        self.rank = rank
        self.progress = progress or log.info
        # What the trainer takes from the layers below, first: the model's parameter groups, the
        # validation samples degraded under the protocol, their ground truth as tensors.
        o = config.optim
        groups = model.parameter_groups(o.lr, o.backbone_lr, o.weight_decay)
        self.protocol, case = config.validation_protocol()
        seed = config.validation.seed
        self.self_supervised = config.self_supervised_method
        if self.self_supervised is not None:  # the held-out noisy images, as they are
            self.val_samples = [EvalSample(name=n, gt=p, lq=pixels_to_tensor(p), mask=None, identity=p)
                                for n, p in (val_samples or [])]
        else:
            self.val_samples = [self.protocol.sample(n, case.prepare(p) if case else p, seed=seed)
                                for n, p in (val_samples or [])]
        self.val_samples += [EvalSample(name=n, gt=target, lq=pixels_to_tensor(lq), mask=None,
                                        identity=_at_size(lq, target.shape[:2]))
                             for n, target, lq in (val_pairs or [])]
        self._val_gt = [pixels_to_tensor(sample.gt) for sample in self.val_samples]
        # Pairs are scored as they are: every channel, no border cropped (not the task's protocol).
        self._metric = RGB if val_pairs else self.protocol
        self.loss_fn = build_loss(config.loss)
        self.optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.99))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_multiplier(step, config)
        )
        self.step = 0
        self.samples_seen = 0  # this worker's position in its sample stream
        self.amp = self.device.type == "cuda"
        self.history: list[dict[str, Any]] = []
        self.resumed_at: list[int] = []  # the step of every resume, in order
        self.stopped_at: int | None = None  # the step a stop request ended fit() at
        # Validation of the starting model (step 0), for runs whose curve starts there: on pairs
        # (a student's agreement before training) and self-supervised (the noise it leaves).
        self.start_metrics: dict[str, float] | None = None
        # Self-supervised validation: the variance of the held-out neighbours' noise (one per
        # image, fixed at the first validation; see _residual_noise).
        self.noise_variance: list[float] | None = None
        self._stage: str | None = None
        self.net: nn.Module = self.model
        self._sync_stage()

    # -- stages --------------------------------------------------------------------------------

    @property
    def stage(self) -> str:
        """``"frozen"`` while the backbone is frozen, then ``"unfrozen"``."""
        return "frozen" if self.step < self.config.freeze_steps else "unfrozen"

    def _sync_stage(self) -> None:
        if self._stage == self.stage:
            return
        first = self._stage is None
        self._stage = self.stage
        self.model.freeze_backbone(self._stage == "frozen")
        # Self-supervised losses call the network more than once per step, which
        # DistributedDataParallel's hooks do not allow: the gradients are averaged by hand.
        self.net = self.model if self.self_supervised is not None else self.wrap(self.model)
        if not first and self.rank == 0:
            self.progress(f"step {self.step}: backbone unfrozen (backbone lr {self.config.optim.backbone_lr:g})")

    # -- one step ------------------------------------------------------------------------------

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def train_step(self) -> dict[str, float]:
        """One optimizer step on this worker's next batch.

        Returns:
            ``step`` (after this one), ``loss`` (this worker's batch), ``lr`` (target branch),
            and the time split in seconds: ``data_seconds`` (sampling, degrading, copying to the
            device), ``forward_seconds``, ``backward_seconds`` (with DistributedDataParallel this
            includes the gradient all-reduce), ``optimizer_seconds`` (clipping and the update),
            ``step_seconds`` (all of them).
        """
        self._sync_stage()
        self.net.train()
        if self.self_supervised is not None and self.config.self_supervised.batch_norm == "frozen":
            freeze_batch_norm(self.net)
        t0 = time.perf_counter()
        gt, lq, mask = self.sampler.batch(self.samples_seen, self.config.data.batch_size)
        gt, lq = gt.to(self.device, non_blocking=True), lq.to(self.device, non_blocking=True)
        mask = mask.to(self.device) if mask is not None else None
        self._synchronize()
        t1 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            if self.self_supervised is not None:
                loss = self._self_supervised_loss(lq)
            else:
                loss = self.loss_fn(self.net(lq, mask).float(), gt)
        self._synchronize()
        t2 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.self_supervised is not None and self._distributed:
            self._average_gradients()
        self._synchronize()
        t3 = time.perf_counter()
        if self.step == GRADIENT_CHECK_STEP:
            self._check_gradient_flow()
        if self.config.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self._synchronize()
        t4 = time.perf_counter()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {self.step}; lower optim.lr")
        self.step += 1
        self.samples_seen += self.config.data.batch_size
        return {
            "step": self.step,
            "loss": value,
            "lr": self.optimizer.param_groups[0]["lr"],
            "data_seconds": t1 - t0,
            "forward_seconds": t2 - t1,
            "backward_seconds": t3 - t2,
            "optimizer_seconds": t4 - t3,
            "step_seconds": t4 - t0,
        }

    def _self_supervised_loss(self, noisy: Tensor) -> Tensor:
        """The self-supervised loss of this batch of noisy crops (its random draws seeded by the
        run's seed, this worker and the step, so a resumed run draws the same)."""
        settings = self.config.self_supervised
        method = SELF_SUPERVISED_LOSSES[self.self_supervised]
        generator = degradations.make_generator(self.config.seed, "self-supervised", self.rank, self.step)
        options: dict[str, Any] = {"generator": generator}
        sigma = self.sampler.noise_levels(self.samples_seen, self.config.data.batch_size).to(self.device)
        if self.self_supervised == "neighbor2neighbor":
            options["gamma"] = settings.gamma
            if settings.clipped:
                options["clip_sigma"] = sigma
            return method(self.net, noisy, **options).float()
        if self.self_supervised == "recorrupted":
            options["alpha"] = settings.alpha
        return method(self.net, noisy, sigma, **options).float()

    # -- the loop ------------------------------------------------------------------------------

    @property
    def _distributed(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()

    def _average_gradients(self) -> None:
        """Average the trainable parameters' gradients over the workers (in a fixed order; a
        parameter without a gradient counts as zero), as DistributedDataParallel would."""
        for parameter in self.model.parameters():
            if not parameter.requires_grad:
                continue
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
            parameter.grad /= self.world_size

    def _reduce_over_workers(self, values: list[float], op: Any) -> list[float]:
        """``values`` reduced element-wise with ``op`` over the data-parallel workers (as they are
        in one process). Every worker must call this at the same step."""
        if not self._distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.to(self.device)
        dist.all_reduce(tensor, op=op)
        return tensor.tolist()

    def _mean_over_workers(self, values: list[float]) -> list[float]:
        """Element-wise mean over the data-parallel workers (identity in one process)."""
        if not self._distributed:
            return values
        return [value / self.world_size for value in self._reduce_over_workers(values, dist.ReduceOp.SUM)]

    def fit(
        self,
        report: ReportFn | None = None,
        *,
        checkpoint_dir: str | Path | None = None,
        provenance: dict[str, Any] | None = None,
        until_step: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """Train from ``self.step`` to ``config.steps`` (or to ``until_step``).

        Every worker must call this; they all take part in the same collectives and call
        ``report`` at the same steps: each ``log_interval``, ``validation.interval`` and
        ``checkpoint_interval`` step and the last one.

        Args:
            report: called as ``report(row, checkpoint_due)`` on every worker at those steps.
                ``row`` holds the ``METRIC_COLUMNS`` known at that step (``loss`` is the mean
                over the window since the last report and over all workers; ``val_psnr`` and
                ``val_ssim`` are present on rank 0 at validation steps). When
                ``checkpoint_due``, rank 0 is expected to save (see ``save``).
            checkpoint_dir: without ``report``, rank 0 saves due checkpoints here, as
                ``checkpoint_step_NNNNNNNN`` folders.
            provenance: recorded in the checkpoints written to ``checkpoint_dir``.
            until_step: stop after this step (a deliberate interruption; ``resume`` continues).
            should_stop: asked on every worker after each step (it should be cheap: a cached
                flag). Once any worker answers True, every worker reports that step as a
                checkpoint step (rank 0 validates and saves) and the loop ends there;
                ``stopped_at`` then holds the step, and ``resume`` continues from it.

        Returns:
            The last row reported (empty if no step was taken).
        """
        config = self.config
        end = config.steps if until_step is None else min(until_step, config.steps)
        global_batch = config.data.batch_size * self.world_size
        fit_start, fit_start_step = time.perf_counter(), self.step
        wall_before = float(self.history[-1]["wall_seconds"]) if self.history else 0.0
        window: list[dict[str, float]] = []
        row: dict[str, Any] = {}
        if (self.step == 0 and self.start_metrics is None and self.rank == 0 and self.val_samples
                and (self.self_supervised is not None or self.paired)):
            self.start_metrics = self.validate()
            self.progress("step 0 (the starting model): " + format_validation(self.start_metrics))
        while self.step < end:
            window.append(self.train_step())
            step = self.step
            last = step == config.steps
            stopping = should_stop is not None and self._any_worker(should_stop()) and not last
            checkpoint_due = step % config.checkpoint_interval == 0 or last or stopping
            validate_due = checkpoint_due or step % config.validation.interval == 0
            if not (checkpoint_due or validate_due or step % config.log_interval == 0 or step == end):
                continue
            losses = self._mean_over_workers([float(np.mean([m["loss"] for m in window]))])
            train_seconds = sum(m["step_seconds"] for m in window)
            row = {
                "step": step,
                "loss": losses[0],
                "lr": window[-1]["lr"],
                "samples_per_second": global_batch * len(window) / max(train_seconds, 1e-9),
                "stage": self.stage,
                **{key: float(np.mean([m[key] for m in window])) for key in _TIMING_KEYS},
            }
            window = []
            if validate_due and self.rank == 0 and self.val_samples:
                row.update(self.validate())
                row["val_score"] = validation_score(row)
            elapsed = time.perf_counter() - fit_start
            row["wall_seconds"] = wall_before + elapsed
            if self.rank == 0:
                self.history.append(row)
                eta = elapsed / (step - fit_start_step) * (config.steps - step)
                self.progress(format_progress(row, config.steps, eta))
            if report is not None:
                report(row, checkpoint_due)
            elif checkpoint_due and checkpoint_dir is not None and self.rank == 0:
                self.save(Path(checkpoint_dir) / training_checkpoint_name(step),
                          provenance={**(provenance or {}), "steps": step, "wall_seconds": row["wall_seconds"]})
            if stopping:
                self.stopped_at = step
                break
        return row

    def _any_worker(self, flag: bool) -> bool:
        """Whether ``flag`` is True on any data-parallel worker (all workers must call this at
        the same step, so that they all stop at the same one)."""
        return bool(self._reduce_over_workers([float(flag)], dist.ReduceOp.MAX)[0])

    def _check_gradient_flow(self) -> None:
        """Warn when most trainable tensors get no gradient (checked at step ``GRADIENT_CHECK_STEP``,
        once a fresh run's zero-initialized head lets gradients through): typically --init
        from another task whose ReLU features are all zero on this task's inputs (a denoiser's
        decoder on smooth bicubic-upsampled SR inputs), which leaves the loss flat."""
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        dead = sum(1 for p in trainable if p.grad is None or not bool(p.grad.any()))
        if trainable and dead > len(trainable) // 2:
            self.progress(f"warning: {dead} of {len(trainable)} trainable tensors got no gradient at step "
                          f"{self.step + 1}; the loss will barely move. If this run starts from --init of another task, "
                          "start it from the ImageNet backbone instead.")

    # -- validation ----------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean PSNR/SSIM on the validation images under the evaluate protocol (8-bit output),
        restored by the same Predictor as evaluate and restore (gray in, gray out), whole images
        (no tiling), in fp32 on CPUs and bf16 on CUDA as the training's forward pass."""
        from restoration.models.predictor import Predictor, PredictorConfig

        if not self.val_samples:
            return {}
        settings = PredictorConfig(tile=0, precision="bf16" if self.amp else "fp32", channels_last=False,
                                   fold_batch_norm=False)
        predictor = Predictor(self.model, settings, device=self.device)
        if self.self_supervised is not None:
            return self._residual_noise(predictor)
        psnrs, ssims = [], []
        for sample, gt in zip(self.val_samples, self._val_gt):
            mask = sample.mask[None] if sample.mask is not None else None
            out = predictor.restore_batch(sample.lq[None], mask)[0]
            # What would be written to disk: 8-bit levels (NaN as 0, as an encoded image has it).
            p, s = score_tensors(quantize(torch.nan_to_num(out.float(), nan=0.0)), gt, self._metric)
            psnrs.append(p)
            ssims.append(s)
        self.model.train()
        return {"val_psnr": float(np.mean(psnrs)), "val_ssim": float(np.mean(ssims))}

    def _residual_noise(self, predictor: Any) -> dict[str, float]:
        """Without clean images, on the held-out noisy images: ``val_noise_left``, the model's
        error estimated from the noisy images alone (:func:`restoration.finetune.selfsup.neighbour_error`
        less the neighbours' noise variance as the starting model predicts it; RMS in 8-bit
        levels at half resolution, fine texture included, the noise's clipping modelled as in
        training; lower is better: the value runs are judged and kept by); ``val_residual_noise``, the noise the estimator
        (:func:`restoration.quality.assess.estimate_noise`) still finds in the outputs (fine-scale
        noise only: an output that is too flat reads low, see docs/archive.md); and
        ``val_removed_noise``, the std of what the model took away over the input's estimated
        noise (near 1 removes the noise; well above 1 removes image content too)."""
        settings = self.config.self_supervised
        residual, removed, errors, spreads = [], [], [], []
        for index, sample in enumerate(self.val_samples):
            out = predictor.restore_batch(sample.lq[None])[0]
            restored = quantize(torch.nan_to_num(out.float(), nan=0.0))
            pixels = (restored.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            residual.append(estimate_noise(pixels))
            level = settings.sigma if settings.sigma is not None else estimate_noise(sample.gt)
            taken = sample.gt.astype(np.float32) - pixels.astype(np.float32)
            removed.append(float(taken.std()) / max(level, 1e-6))
            generator = degradations.make_generator(self.config.validation.seed, "noise left", index)
            error, spread = neighbour_error(lambda x: predictor.restore_batch(x).float().clamp(0, 1), sample.lq[None],
                                            max(level, 0.5) / 255.0, clipped=settings.clipped, generator=generator)
            errors.append(float(error[0]))
            spreads.append(float(spread[0]))
        # The neighbours' noise as the first model validated (the starting one) predicts it: one
        # variance for the whole run, so that the runs' models compare by their errors alone.
        if self.noise_variance is None:
            self.noise_variance = spreads
        left = [math.sqrt(max(e - v, 0.0)) * 255.0 for e, v in zip(errors, self.noise_variance)]
        self.model.train()
        return {"val_noise_left": float(np.mean(left)), "val_residual_noise": float(np.mean(residual)),
                "val_removed_noise": float(np.mean(removed))}

    @property
    def paired(self) -> bool:
        """Whether the run trains on pairs (its validation scores pairs as they are)."""
        return self.sampler.images.inputs is not None

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything besides the weights that a resumed run needs (tensors and plain values)."""
        return {
            "step": self.step,
            "samples_seen": self.samples_seen,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
            "resumed_at": self.resumed_at,
            "start_metrics": self.start_metrics,
            "noise_variance": self.noise_variance,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.samples_seen = int(state["samples_seen"])
        self.history = list(state.get("history", []))
        self.resumed_at = [int(s) for s in state.get("resumed_at", [])]
        self.start_metrics = state.get("start_metrics")
        self.noise_variance = state.get("noise_variance")
        # The backbone's requires_grad must match the stage before the optimizer state is loaded.
        self._sync_stage()
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def save(self, directory: str | Path, *, provenance: dict[str, Any] | None = None) -> Path:
        """Write a resumable checkpoint into ``directory``: ``model.safetensors`` and
        ``model.json`` (a regular restoration checkpoint), ``config.yaml`` and ``trainer_state.pt``."""
        return save_training_checkpoint(directory, self.model, trainer_state=self.state_dict(),
                                        config_yaml=self.config.to_yaml(), provenance=provenance)

    def resume(self, directory: str | Path) -> None:
        """Load model weights and trainer state from a checkpoint written by ``save``.

        Raises:
            CheckpointError: the checkpoint is incomplete, or was trained with another task or
                architecture than this run's config.
        """
        checkpoint = read_training_checkpoint(directory, map_location=self.device)
        saved = checkpoint.config
        if saved is not None:
            differences = model_differences(saved, self.config)
            if differences:
                raise CheckpointError(
                    f"the checkpoint in {directory} belongs to a run with another task or model "
                    f"({'; '.join(differences)}). Use another --name for a new run, or --init to start from that model"
                )
            mine = self.config.to_dict()
            changed = sorted(k for k in mine if k not in ("model", "task") and saved.get(k) != mine[k])
            if changed and self.rank == 0:
                self.progress(f"note: resuming with changed settings: {', '.join(changed)}")
        load_weights(self.model, checkpoint.weights, source=str(directory))
        self.load_state_dict(checkpoint.trainer_state)
        self.resumed_at.append(self.step)


def format_progress(row: dict[str, Any], total_steps: int, eta_seconds: float) -> str:
    """One progress line: step, loss, learning rate, samples/s, validation (if any), ETA."""
    width = len(str(total_steps))
    text = (f"step {row['step']:>{width}}/{total_steps}  loss {row['loss']:.4f}  lr {row['lr']:.2e}  "
            f"{row['samples_per_second']:6.1f} samples/s")
    if "val_psnr" in row or "val_residual_noise" in row:
        text += "  " + format_validation(row)
    return text + f"  ETA {format_duration(eta_seconds)}"


def format_validation(row: dict[str, Any]) -> str:
    """A row's validation figures: PSNR / SSIM, or without clean images the residual noise."""
    if "val_noise_left" in row:
        return (f"val noise left {row['val_noise_left']:.2f} levels (residual noise {row['val_residual_noise']:.2f}, "
                f"removed {row['val_removed_noise']:.2f} x the input's)")
    return f"val {row['val_psnr']:.2f} dB / SSIM {row['val_ssim']:.3f}" if "val_psnr" in row else "no validation"


def validation_score(row: dict[str, Any]) -> float:
    """Higher is better: the validation PSNR, or without clean images minus the noise left (the
    value the best checkpoints are kept by)."""
    if "val_psnr" in row:
        return float(row["val_psnr"])
    if "val_noise_left" in row:
        return -float(row["val_noise_left"])
    return float("-inf")


def freeze_batch_norm(module: nn.Module) -> None:
    """Put every BatchNorm layer of ``module`` in eval mode: normalized by its running
    statistics, which the step does not update (its affine weights still train)."""
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()


# --------------------------------------------------------------------------------------------
# Starting points
# --------------------------------------------------------------------------------------------


def initial_model(config: TrainConfig, init: str | Path | None = None) -> RestorationModel:
    """The model a run starts from: ImageNet backbone + fresh target branch, or ``init`` weights
    (a checkpoint directory or URI, a community model file, or ``"default"`` for the shipped model
    of the task): :func:`restoration.models.checkpoint.start_model` for this run's network.

    Raises:
        CheckpointError: ``init`` is not a checkpoint, does not fit ``config.model``, or cannot
            do the run's task and scale.
    """
    return start_model(config.network_config(), init, backbone_weights=config.backbone_weights)

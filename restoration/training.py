"""The fine-tuning loop: runs in one process (CPU or CUDA) or, through ``jobs/finetune.py``, as one
Ray Train worker of a data-parallel group. Nothing here imports Ray.

Stages: the backbone is frozen for the first ``optim.freeze_backbone_fraction`` of the steps, then
unfrozen at ``optim.backbone_lr``. AdamW, linear warm-up then cosine decay, gradient clipping,
bf16 autocast on CUDA.

Data: each worker holds its own disjoint shard of the clean training images. Every sample's crop,
flip and degradation come from a generator seeded by (seed, image name, epoch, position), so a
resumed run draws exactly the samples it would have drawn, whatever the sharding.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from restoration import TASKS, config as config_lib, degradations, storage
from restoration.checkpoint import load_weights, save_checkpoint
from restoration.codec import ImageDecodeError, decode_image, pixels_to_tensor, tensor_to_pixels
from restoration.degradations import DegradationSpec
from restoration.evaluate import EvalProtocol, make_sample, score
from restoration.losses import build_loss
from restoration.model import FusedRestorationNet, ModelConfig, build_model

log = logging.getLogger(__name__)

TRAINER_STATE_FILE = "trainer_state.pt"


@dataclass(frozen=True)
class DataConfig:
    """Training crops. ``batch_size`` is per worker; ``crop_size`` is the ground-truth crop side."""

    crop_size: int = 96
    batch_size: int = 8
    max_images: int | None = None

    def __post_init__(self) -> None:
        if self.crop_size < 32 or self.crop_size % 32:
            raise ValueError(f"data.crop_size must be a multiple of 32 and >= 32, got {self.crop_size}")
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-4
    backbone_lr: float = 3e-5
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    freeze_backbone_fraction: float = 0.3

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.backbone_lr < 0:
            raise ValueError(f"learning rates must be positive, got lr={self.lr}, backbone_lr={self.backbone_lr}")
        if not 0 <= self.freeze_backbone_fraction <= 1:
            raise ValueError(f"optim.freeze_backbone_fraction must be in [0, 1], got {self.freeze_backbone_fraction}")


@dataclass(frozen=True)
class ValidationConfig:
    """Validation under the evaluate protocol, every ``interval`` steps on ``limit`` images."""

    interval: int = 200
    limit: int = 4
    sigma: float = 25.0
    quality: int = 10
    mask_ratio: float = 0.5
    blur_sigma: float = 1.6
    seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Everything a fine-tuning run needs; saved next to its outputs as ``config.yaml``."""

    task: str = "denoise"
    steps: int = 1000
    seed: int = 0
    loss: str = "l1"
    backbone_weights: str | None = "imagenet"
    model: ModelConfig = field(default_factory=ModelConfig)
    degradation: DegradationSpec = field(default_factory=lambda: DegradationSpec("denoise"))
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    checkpoint_interval: int = 200
    keep_checkpoints: int = 3
    log_interval: int = 10

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.model.task != self.task or self.degradation.task != self.task:
            raise ValueError(
                f"task {self.task!r} disagrees with model.task {self.model.task!r} / degradation.task "
                f"{self.degradation.task!r}; set only the top-level task"
            )
        if self.task == "sr" and self.model.scale != self.degradation.scale:
            raise ValueError(f"model.scale {self.model.scale} differs from degradation.scale {self.degradation.scale}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.checkpoint_interval < 1 or self.log_interval < 1 or self.validation.interval < 1:
            raise ValueError("checkpoint_interval, log_interval and validation.interval must be >= 1")
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        build_loss(self.loss)  # validates the name

    @property
    def freeze_steps(self) -> int:
        return int(round(self.steps * self.optim.freeze_backbone_fraction))

    def eval_protocol(self) -> EvalProtocol:
        v = self.validation
        return EvalProtocol(
            task=self.task, sigma=v.sigma, scale=self.degradation.scale if self.task == "sr" else 4,
            quality=v.quality, mask_ratio=v.mask_ratio, blur_sigma=v.blur_sigma, seed=v.seed,
        )


def load_train_config(
    task: str,
    *,
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    steps: int | None = None,
) -> TrainConfig:
    """Resolve a TrainConfig: defaults for ``task`` <- YAML file <- ``--set`` overrides <- ``steps``.

    The top-level task is copied into the model and degradation sections; for super-resolution
    the model's scale follows ``degradation.scale``.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_yaml(path)
    if overrides:
        data = config_lib.merge(data, config_lib.parse_overrides(overrides))
    for section in ("model", "degradation"):
        if section in data and not isinstance(data[section], dict):
            raise ValueError(f"{section}: expected a mapping, got {data[section]!r}")
        data.setdefault(section, {})
        if "task" in data[section] and data[section]["task"] != task:
            raise ValueError(f"{section}.task {data[section]['task']!r} disagrees with --task {task!r}")
        data[section]["task"] = task
    data["task"] = task
    if task == "sr":
        scale = data["degradation"].get("scale", data["model"].get("scale", 4))
        data["degradation"]["scale"] = scale
        data["model"]["scale"] = scale
    if steps is not None:
        data["steps"] = steps
    return config_lib.from_dict(TrainConfig, data)


def _read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {path} must hold a mapping, got {type(loaded).__name__}")
    return loaded


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass
class LoadedImages:
    """Decoded training images of one worker's shard; unreadable files are counted, not fatal."""

    names: list[str]
    pixels: list[np.ndarray]  # HxWx3 uint8
    bad: list[tuple[str, str]]  # (uri, reason)


def load_training_images(uris: list[str], *, min_size: int = 0) -> LoadedImages:
    """Decode images to 8-bit RGB; files that cannot be decoded (or are smaller than
    ``min_size`` on a side) are skipped and listed in ``bad``."""
    names, pixels, bad = [], [], []
    for uri in uris:
        try:
            image = decode_image(storage.read_bytes(uri))
        except (ImageDecodeError, OSError, ValueError) as exc:
            bad.append((uri, str(exc)))
            continue
        p = image.pixels
        if p.dtype == np.uint16:
            p = np.round(p / 257.0).astype(np.uint8)
        if p.shape[-1] == 1:
            p = np.repeat(p, 3, axis=-1)
        if min(p.shape[:2]) < min_size:
            bad.append((uri, f"smaller than the {min_size}-pixel training crop ({p.shape[1]}x{p.shape[0]})"))
            continue
        names.append(uri.rsplit("/", 1)[-1])
        pixels.append(np.ascontiguousarray(p))
    if not names:
        reasons = "; ".join(f"{u}: {r}" for u, r in bad[:3])
        raise ValueError(f"none of the {len(uris)} training images could be used ({reasons})")
    return LoadedImages(names, pixels, bad)


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
        self.task = config.task
        self.seed = config.seed
        self.rank = rank
        self._orders: dict[int, Tensor] = {}

    def _image_index(self, position: int) -> tuple[int, int]:
        n = len(self.images.names)
        epoch = position // n
        if epoch not in self._orders:
            self._orders = {epoch: torch.randperm(n, generator=degradations.make_generator(self.seed, "order", self.rank, epoch))}
        return int(self._orders[epoch][position % n]), epoch

    def sample(self, position: int) -> tuple[Tensor, Tensor, Tensor | None]:
        index, epoch = self._image_index(position)
        name = self.images.names[index]
        pixels = self.images.pixels[index]
        g = degradations.make_generator(self.seed, name, epoch, position)
        h, w = pixels.shape[:2]
        c = self.crop
        top = int(torch.randint(0, h - c + 1, (1,), generator=g))
        left = int(torch.randint(0, w - c + 1, (1,), generator=g))
        gt = pixels_to_tensor(pixels[top : top + c, left : left + c])
        flips = torch.randint(0, 2, (3,), generator=g).tolist()
        if flips[0]:
            gt = gt.flip(-1)
        if flips[1]:
            gt = gt.flip(-2)
        if flips[2]:
            gt = gt.transpose(-1, -2)
        lq, extra = degradations.degrade(gt.contiguous(), self.spec, g)
        if self.task == "sr":
            gt = extra["gt"]
        return gt, lq, extra.get("mask")

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
    """Linear warm-up to 1, then cosine decay to ``min_lr_ratio`` at the last step."""
    o = config.optim
    if o.warmup_steps > 0 and step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    progress = (step - o.warmup_steps) / max(1, config.steps - o.warmup_steps)
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


Wrap = Callable[[nn.Module], nn.Module]


class Trainer:
    """Fine-tunes a ``FusedRestorationNet``; one instance per process (per Ray Train worker).

    Args:
        config: the run's configuration.
        model: the network (unwrapped); moved to ``device``.
        sampler: this worker's sample stream.
        device: where to train.
        wrap: wraps the model for data-parallel training (e.g. in DistributedDataParallel); it is
            called again when the backbone is unfrozen, since the set of trained parameters changes.
        val_samples: (name, 8-bit pixels) validation images, or None to skip validation.
        world_size: number of data-parallel workers (for samples/s and the global batch).
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
        world_size: int = 1,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.sampler = sampler
        self.wrap = wrap or (lambda m: m)
        self.world_size = world_size
        self.loss_fn = build_loss(config.loss)
        o = config.optim
        self.optimizer = torch.optim.AdamW(
            model.parameter_groups(o.lr, o.backbone_lr, o.weight_decay), betas=(0.9, 0.99)
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_multiplier(step, config)
        )
        self.step = 0
        self.samples_seen = 0  # this worker's position in its sample stream
        self.amp = self.device.type == "cuda"
        self.protocol = config.eval_protocol()
        self.val_samples = [make_sample(n, p, self.protocol) for n, p in (val_samples or [])]
        self.history: list[dict[str, float]] = []
        self._stage: str | None = None
        self.net: nn.Module = self.model
        self._sync_stage()

    # -- stages --------------------------------------------------------------------------------

    @property
    def stage(self) -> str:
        return "frozen" if self.step < self.config.freeze_steps else "unfrozen"

    def _sync_stage(self) -> None:
        if self._stage == self.stage:
            return
        self._stage = self.stage
        self.model.freeze_backbone(self._stage == "frozen")
        self.net = self.wrap(self.model)
        log.info("step %d: backbone %s", self.step, self._stage)

    # -- one step ------------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        """One optimizer step; returns loss, learning rate and the time split in seconds."""
        self._sync_stage()
        self.net.train()
        t0 = time.perf_counter()
        gt, lq, mask = self.sampler.batch(self.samples_seen, self.config.data.batch_size)
        gt, lq = gt.to(self.device, non_blocking=True), lq.to(self.device, non_blocking=True)
        mask = mask.to(self.device) if mask is not None else None
        t1 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            restored = self.net(lq, mask)
            loss = self.loss_fn(restored.float(), gt)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t2 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # with DistributedDataParallel this includes the gradient all-reduce
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t3 = time.perf_counter()
        if self.config.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
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

    # -- validation ----------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean PSNR/SSIM on the validation images under the evaluate protocol (8-bit output)."""
        if not self.val_samples:
            return {}
        self.model.eval()
        psnrs, ssims = [], []
        for sample in self.val_samples:
            lq = sample.lq
            lq = lq.expand(3, -1, -1) if lq.shape[0] == 1 else lq
            mask = sample.mask[None].to(self.device) if sample.mask is not None else None
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
                out = self.model(lq[None].to(self.device), mask)[0].float().cpu()
            if sample.gt.shape[-1] == 1:
                out = out.mean(0, keepdim=True)
            p, s = score(tensor_to_pixels(out.clamp(0, 1)), sample.gt, self.protocol)
            psnrs.append(p)
            ssims.append(s)
        self.model.train()
        return {"val_psnr": float(np.mean(psnrs)), "val_ssim": float(np.mean(ssims))}

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "samples_seen": self.samples_seen,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.samples_seen = int(state["samples_seen"])
        self.history = list(state.get("history", []))
        # The backbone's requires_grad must match the stage before the optimizer state is loaded.
        self._sync_stage()
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def save(self, directory: str | Path, *, provenance: dict[str, Any] | None = None) -> Path:
        """Write a resumable checkpoint: the model checkpoint plus ``trainer_state.pt``."""
        directory = Path(directory)
        save_checkpoint(self.model, directory, provenance=provenance)
        torch.save(self.state_dict(), directory / TRAINER_STATE_FILE)
        (directory / "config.yaml").write_text(config_lib.to_yaml(self.config))
        return directory

    def resume(self, directory: str | Path) -> None:
        """Load model weights and trainer state from a checkpoint written by ``save``."""
        from safetensors.torch import load_file

        directory = Path(directory)
        state = load_file(str(directory / "model.safetensors"), device=str(self.device))
        load_weights(self.model, state, source=str(directory))
        # weights_only: the trainer state is tensors, numbers, lists and dicts; nothing is unpickled.
        trainer_state = torch.load(directory / TRAINER_STATE_FILE, map_location=self.device, weights_only=True)
        self.load_state_dict(trainer_state)


def initial_model(config: TrainConfig, init: str | Path | None = None) -> FusedRestorationNet:
    """The model a run starts from: ImageNet backbone + fresh target branch, or ``--init`` weights.

    With ``init`` (task transfer), every weight whose name and shape fit is copied from that
    checkpoint (e.g. a denoiser's backbone, encoder, fusion and decoder initialize a JPEG model);
    a checkpoint with another backbone or widths is refused with a clear message.
    """
    if init is None:
        return build_model(config.model, backbone_weights=config.backbone_weights)
    from restoration.checkpoint import CheckpointError, read_metadata
    from safetensors.torch import load_file

    metadata = read_metadata(init)
    source = ModelConfig.from_dict(metadata["architecture"])
    mine = config.model
    if (source.backbone, source.widths, source.blocks_per_stage) != (mine.backbone, mine.widths, mine.blocks_per_stage):
        raise CheckpointError(
            f"--init {init} has architecture backbone={source.backbone}, widths={list(source.widths)}, "
            f"blocks_per_stage={source.blocks_per_stage}; this run needs backbone={mine.backbone}, "
            f"widths={list(mine.widths)}, blocks_per_stage={mine.blocks_per_stage}"
        )
    model = build_model(mine, backbone_weights=None)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(Path(init) / "model.safetensors")).items()}
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(fitting))
    model.load_state_dict(fitting, strict=False)
    if skipped:
        log.info("--init: %d tensors not transferred (task-specific): %s", len(skipped), ", ".join(skipped[:5]))
    return model

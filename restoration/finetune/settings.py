"""Settings of a fine-tuning run (``restoration finetune --set KEY=VALUE``, or a task's YAML
under ``configs/``): :class:`TrainConfig` with its :class:`DataConfig`, :class:`OptimConfig` and
:class:`ValidationConfig` sections, the model's :class:`restoration.models.fused.Architecture` and the
task's spec. Every value is checked when the config loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import (
    PrivateAttr,
    Field,
    PlainSerializer,
    PlainValidator,
    field_validator,
    model_validator,
)

from restoration import config as config_lib
from restoration.config import FromDataclass, Settings, at_least, check, within
from restoration.finetune.losses import build_loss
from restoration.models.fused import Architecture, ModelConfig
from restoration.tasks.specs import Case, DenoiseTask, TaskSpec, get_case, get_task


class DataConfig(Settings):
    """Training crops.

    Attributes:
        crop_size: side of the ground-truth crop in pixels, a multiple of 32 (the model's largest
            stride); images smaller than this are skipped.
        batch_size: crops per worker per step (the global batch is ``batch_size * workers``).
        max_images: use only the first N training images (sorted by URI), or all.
        gray_fraction: share of crops turned to 8-bit gray (BT.601 luma) before they are
            degraded, so the model also learns gray images' degradations (gray JPEG has no chroma
            subsampling); 0 keeps every crop in color.
    """

    section: ClassVar[str] = "data"

    crop_size: Annotated[int, check(lambda v: v >= 32 and not v % 32, "a multiple of 32 and >= 32")] = 96
    batch_size: Annotated[int, at_least(1)] = 8
    max_images: Annotated[int, at_least(1, ">= 1 or null")] | None = None
    gray_fraction: Annotated[float, within(0, 1, "must lie within [0, 1]")] = 0.0


class OptimConfig(Settings):
    """AdamW with two parameter groups, linear warm-up then cosine decay, gradient clipping.

    Attributes:
        lr: learning rate of the target branch, fusion and decoder.
        backbone_lr: learning rate of the pretrained backbone once it is unfrozen.
        weight_decay: AdamW weight decay (not applied to the fusion alphas).
        warmup_steps: linear warm-up length; capped at a fifth of the run so that short runs
            still reach the full learning rate.
        min_lr_ratio: the cosine ends at ``lr * min_lr_ratio``.
        grad_clip: maximal global gradient norm; 0 disables clipping.
        freeze_backbone_fraction: fraction of the steps during which the backbone is frozen.
    """

    section: ClassVar[str] = "optim"

    lr: float = 3e-4
    backbone_lr: float = 3e-5
    weight_decay: Annotated[float, at_least(0)] = 1e-4
    warmup_steps: Annotated[int, at_least(0)] = 50
    min_lr_ratio: Annotated[float, within(0, 1)] = 0.05
    grad_clip: Annotated[float, at_least(0, ">= 0 (0 = off)")] = 1.0
    freeze_backbone_fraction: Annotated[float, within(0, 1)] = 0.3

    @model_validator(mode="after")
    def _learning_rates(self) -> OptimConfig:
        if not (self.lr > 0 and self.backbone_lr >= 0):
            raise ValueError(f"learning rates must be positive, got lr={self.lr}, backbone_lr={self.backbone_lr}")
        return self


class ValidationConfig(Settings):
    """Validation every ``interval`` steps (and at every checkpoint) on the first ``limit``
    validation images, under the task's evaluation protocol with ``protocol`` fixed (the names of
    ``restoration evaluate``'s flags or the task's fields, e.g. ``{sigma: 25}``), or under the
    named real-world ``case`` (see ``restoration.tasks.specs.CASES``)."""

    section: ClassVar[str] = "validation"

    interval: Annotated[int, at_least(1)] = 200
    limit: Annotated[int, at_least(1)] = 4
    seed: int = 0
    protocol: dict[str, Any] = Field(default_factory=dict)
    case: str | None = None

    @field_validator("case")
    @classmethod
    def _known_case(cls, value: str | None) -> str | None:
        if value is not None:
            get_case(value)
        return value

    @model_validator(mode="after")
    def _one_protocol(self) -> ValidationConfig:
        if self.case is not None and self.protocol:
            raise ValueError(f"set {self.section}.case or {self.section}.protocol, not both")
        return self


SELF_SUPERVISED_METHODS = ("sure", "neighbor2neighbor", "recorrupted")
"""The self-supervised losses (``restoration.finetune.selfsup``): Stein's unbiased risk estimate,
Neighbor2Neighbor and recorrupted pairs."""


class SelfSupervisedConfig(Settings):
    """Training on noisy images alone (``restoration finetune --self-supervised [METHOD]``): the
    training images are the noisy ones, nothing is synthesized, and no clean image is read.

    Attributes:
        method: the loss (:data:`SELF_SUPERVISED_METHODS`), or null for training with clean images
            or pairs.
        sigma: the noise's standard deviation in 8-bit levels where it is known; null estimates
            it per image (``restoration.quality.assess.estimate_noise``). "sure" and "recorrupted"
            use it; "neighbor2neighbor" needs none.
        gamma: the weight of Neighbor2Neighbor's regularizer.
        clipped: the noisy files clip the noise at black and white, as every 8-bit file of
            strong noise does: Neighbor2Neighbor then compares the model's output as the noisy
            values average to (the clipped mean, from the noise level), so that the output itself
            is the clean image. False: the noise is taken as zero-mean everywhere.
        alpha: the recorrupted-pair loss's split of the added noise between input and target.
        batch_norm: "frozen" keeps BatchNorm layers on their running statistics while training
            (the noisy batches' statistics are not the clean images' the model learnt), or "train".
        min_residual_drop: the final model is refused (not written; the checkpoints stay) unless
            the noise it leaves in the held-out images, as estimated, is at least this many levels
            below the starting model's (0: no worse; negative values tolerate some increase),
            unless the run is told to keep it anyway.
    """

    section: ClassVar[str] = "self_supervised"

    method: str | None = None
    sigma: Annotated[float, check(lambda v: 0 < v <= 255, "within (0, 255] levels or null")] | None = None
    gamma: Annotated[float, at_least(0)] = 1.0
    clipped: bool = True
    alpha: Annotated[float, check(lambda v: v > 0, "must be > 0")] = 0.5
    batch_norm: str = "frozen"
    min_residual_drop: float = 0.0

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str | None) -> str | None:
        if value is not None and value not in SELF_SUPERVISED_METHODS:
            raise ValueError(f"unknown method {value!r}; expected one of {', '.join(SELF_SUPERVISED_METHODS)}")
        return value

    @field_validator("batch_norm")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value not in ("frozen", "train"):
            raise ValueError(f"expected 'frozen' or 'train', got {value!r}")
        return value


SELF_SUPERVISED_DEFAULTS: dict[str, Any] = {
    "steps": 800,
    "data": {"crop_size": 128, "batch_size": 8},
    "optim": {"lr": 1e-4, "backbone_lr": 1e-5, "weight_decay": 0.0, "warmup_steps": 50, "min_lr_ratio": 0.1,
              "freeze_backbone_fraction": 0.0},
    "self_supervised": {"gamma": 2.0},
    "validation": {"interval": 100, "limit": 10},
    "checkpoint_interval": 100,
    "log_interval": 25,
}
"""A self-supervised run's settings where its config and ``--set`` give none: adapting a
trained model to noisy targets wants small steps on every layer, BatchNorm statistics frozen, and
a regularizer weight of 2 (measured on the shipped denoiser at sigma 70: docs/archive.md)."""


def _task_spec(value: Any) -> TaskSpec:
    if not isinstance(value, TaskSpec) or not value.name:
        raise ValueError(f"degradation must be a task's spec, got {value!r}")
    return value


TaskSpecField = Annotated[TaskSpec, PlainValidator(_task_spec), PlainSerializer(config_lib.to_dict)]
"""The ``degradation`` section: a task's spec, built by :func:`train_config_from_dict` (whose
task types it), written as its fields."""


class TrainConfig(Settings):
    """Everything a fine-tuning run needs; saved next to its outputs as ``config.yaml``.

    ``degradation`` is the task's spec (``restoration.tasks.specs``): its type is the run's
    :attr:`task` and its ``scale`` the model's, each held there only. ``model`` is the network's
    shape; :meth:`network_config` adds the task and scale. ``checkpoint_interval`` and
    ``log_interval`` count optimizer steps; the last step always logs, validates and checkpoints.
    ``keep_checkpoints`` is how many checkpoints (the best by validation PSNR, plus always the
    latest) a run keeps.
    """

    steps: Annotated[int, at_least(1)] = 1000
    seed: int = 0
    loss: str = "l1"
    backbone_weights: str | None = "imagenet"
    model: Annotated[Architecture, FromDataclass()] = Field(default_factory=Architecture)
    degradation: TaskSpecField = Field(default_factory=DenoiseTask)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    self_supervised: SelfSupervisedConfig = Field(default_factory=SelfSupervisedConfig)
    checkpoint_interval: Annotated[int, at_least(1)] = 200
    keep_checkpoints: Annotated[int, at_least(1)] = 3
    log_interval: Annotated[int, at_least(1)] = 10
    grace_seconds: Annotated[float, at_least(0)] = 20.0
    _validation: tuple[TaskSpec, Case | None] = PrivateAttr()

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        build_loss(value)  # validates the name
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if type(self.model) is not Architecture:
            raise ValueError(f"model must be an Architecture (the task and scale are the degradation's), "
                             f"got {type(self.model).__name__}")
        self.network_config()  # the task's rules for the scale
        if self.self_supervised.method is not None and (self.task != "denoise" or self.degradation.scale != 1):
            raise ValueError(f"self_supervised.method: self-supervised training removes noise; it needs --task "
                             f"denoise, not {self.task!r}")
        try:
            self._validation = self._resolve_validation()
        except ValueError as exc:
            raise ValueError(f"validation.protocol: {exc}") from None
        return self

    @property
    def self_supervised_method(self) -> str | None:
        """The self-supervised loss the run trains with, or None."""
        return self.self_supervised.method

    @property
    def task(self) -> str:
        """The task trained for: the degradation spec's."""
        return self.degradation.name

    def network_config(self) -> ModelConfig:
        """The network to build: :attr:`model` for :attr:`task` at the degradation's scale."""
        return ModelConfig.of(self.model, self.task, self.degradation.scale)

    def to_dict(self) -> dict[str, Any]:
        """The config as ``config.yaml`` holds it (the task first), read back by
        :func:`train_config_from_dict`."""
        return {"task": self.task, **self.model_dump(mode="json")}

    def to_yaml(self) -> str:
        """``config.yaml`` as a run writes it beside its checkpoints and model."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def freeze_steps(self) -> int:
        """Steps during which the backbone is frozen."""
        return int(round(self.steps * self.optim.freeze_backbone_fraction))

    @property
    def warmup_steps(self) -> int:
        """Effective warm-up: ``optim.warmup_steps``, at most a fifth of the run."""
        return min(self.optim.warmup_steps, self.steps // 5)

    def validation_protocol(self) -> tuple[TaskSpec, Case | None]:
        """The spec validation degrades with (the task's protocol, or the case's chain) and the
        case, if any (its ``prepare`` turns images gray for gray cases): resolved once, when the
        config is checked."""
        return self._validation

    def _resolve_validation(self) -> tuple[TaskSpec, Case | None]:
        if self.validation.case is not None:
            case = get_case(self.validation.case)
            return case.spec, case
        protocol = dict(self.validation.protocol)
        if self.degradation.upscale:  # validate at the scale the model is trained for
            protocol.setdefault("scale", self.degradation.scale)
        return type(self.degradation).protocol(**protocol), None


def load_train_config(
    task: str,
    *,
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    steps: int | None = None,
) -> TrainConfig:
    """Resolve a TrainConfig: defaults for ``task`` <- YAML file <- ``--set`` overrides <- ``steps``.

    The task types the ``degradation`` section (the task's spec), whose scale is the model's
    (super-resolution).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unknown keys, values of the wrong type or out of range, or a task/scale in
            the file or overrides that contradicts ``task`` -- each naming the key.
    """
    get_task(task)
    data: dict[str, Any] = {}
    if path is not None:
        data = config_lib.read_yaml(path)
    if overrides:
        data = config_lib.merge(data, config_lib.parse_overrides(overrides))
    if (data.get("self_supervised") or {}).get("method") is not None:  # under what the run sets
        data = config_lib.merge(SELF_SUPERVISED_DEFAULTS, data)
    if "task" in data and data["task"] != task:
        raise ValueError(f"task {data['task']!r} in the config disagrees with --task {task!r}")
    if steps is not None:
        data["steps"] = steps
    return train_config_from_dict(data, task=task)


def train_config_from_dict(data: dict[str, Any], *, task: str | None = None) -> TrainConfig:
    """A TrainConfig from a mapping such as a saved ``config.yaml``; its ``degradation`` section
    is typed by ``task`` (default: the mapping's own ``task``, else denoise). A ``model.task`` or
    ``model.scale`` (as configs written before the task and scale were held once have them) must
    agree with the task and the degradation's scale."""
    data = dict(data)
    task = task or data.get("task", "denoise")
    spec_class = get_task(task)
    written = data.pop("task", task)
    if written != task:
        raise ValueError(f"task {written!r} in the config disagrees with --task {task!r}")
    for section in ("model", "degradation"):
        if section in data and not isinstance(data[section], dict):
            raise ValueError(f"{section}: expected a mapping, got {data[section]!r}")
        data[section] = dict(data.get(section) or {})
    model_task = data["model"].pop("task", task)
    if model_task != task:
        raise ValueError(f"model.task {model_task!r} disagrees with --task {task!r}")
    model_scale = data["model"].pop("scale", None)
    if spec_class.upscale and "scale" not in data["degradation"] and model_scale is not None:
        data["degradation"]["scale"] = model_scale
    spec = config_lib.from_dict(spec_class, data["degradation"], prefix="degradation.")
    if model_scale is not None and model_scale != spec.scale:
        raise ValueError(f"model.scale {model_scale!r} disagrees with degradation.scale {spec.scale!r}; "
                         "set degradation.scale only")
    data["degradation"] = spec
    return config_lib.from_dict(TrainConfig, data)


def model_differences(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """How the task and model of a saved ``config.yaml`` (a mapping) differ from ``config``'s,
    as ``key: saved -> this`` lines; empty when a run of ``config`` can resume that run. (Configs
    written before the task and scale were held once have them in the model section too.)"""
    mine = config.to_dict()
    saved_model = saved.get("model") or {}
    differences = [f"{key}: {saved_model.get(key)!r} -> {value!r}"
                   for key, value in mine["model"].items() if saved_model.get(key) != value]
    saved_scale = saved_model.get("scale", (saved.get("degradation") or {}).get("scale", 1))
    if saved_scale != config.degradation.scale:
        differences.append(f"scale: {saved_scale!r} -> {config.degradation.scale!r}")
    if saved.get("task") != config.task:
        differences.insert(0, f"task: {saved.get('task')!r} -> {config.task!r}")
    return differences

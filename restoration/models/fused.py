"""The fused restoration network: pretrained branch + target branch, fused at every scale.

At each scale ``s`` where the backbone has a feature map::

    F_s = alpha_s * P_s(F_pretrained_s) + (1 - alpha_s) * F_target_s

``P_s`` is a 1x1 projection to the target branch's width and ``alpha_s`` is fixed or learned
(through a sigmoid). The target branch is a light convolutional encoder trained from scratch,
with a full-resolution stage the backbone lacks. A U-Net decoder with skip connections from the
fused features predicts a residual: ``restored = base + decoder(...)``, where ``base`` is the
input (or its bicubic upsampling for super-resolution).

Tensors: input ``lq`` is (N, 3, h, w) RGB in [0, 1] (noise may push it outside); for inpainting a
``mask`` (N, 1, h, w) with 1 = missing pixel is passed too. Output is (N, 3, h * scale, w * scale).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from restoration.models.backbones import BACKBONES, Backbone, build_backbone
from restoration.models.interface import ModelTraits, RestorationModel
from restoration.tasks.degradations import pad_edges
from restoration.tasks.specs import get_task


@dataclass(frozen=True)
class Architecture:
    """The shape of a ``FusedRestorationNet``, whatever it is trained for: the ``model`` section
    of a fine-tuning config (whose task and scale are the ``degradation``'s).

    Attributes:
        backbone: one of ``restoration.models.backbones.BACKBONES``.
        widths: target-branch channels at strides 1, 2, 4, 8, 16, 32.
        fuse_strides: strides at which pretrained features are fused (where the backbone has them);
            the backbone is cut after the deepest, so deeper stages cost neither weights nor time.
        alpha: initial fusion weight of the pretrained branch at every fused scale, in [0, 1].
            0 disables the pretrained branch (the target branch alone).
        learn_alpha: learn alpha per scale (through a sigmoid) instead of keeping it fixed.
        blocks_per_stage: residual blocks per encoder and decoder stage.
    """

    backbone: str = "efficientnet_lite0"
    widths: tuple[int, ...] = (16, 32, 64, 96, 128, 128)
    fuse_strides: tuple[int, ...] = (2, 4, 8, 16)
    alpha: float = 0.5
    learn_alpha: bool = True
    blocks_per_stage: int = 1

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if len(self.widths) != 6 or any(w <= 0 for w in self.widths):
            raise ValueError(f"widths must be 6 positive channel counts (strides 1..32), got {self.widths}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {self.blocks_per_stage}")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "fuse_strides", tuple(sorted(int(s) for s in self.fuse_strides)))
        if not self.fuse_strides or not set(self.fuse_strides) <= {2, 4, 8, 16, 32}:
            raise ValueError(f"fuse_strides must be a non-empty subset of (2, 4, 8, 16, 32), got {self.fuse_strides}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        d["fuse_strides"] = list(self.fuse_strides)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> Self:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; known: {sorted(known)}")
        data = dict(data)
        for key in ("widths", "fuse_strides"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


@dataclass(frozen=True)
class ModelConfig(Architecture):
    """An :class:`Architecture` and what it restores; saved in every checkpoint's ``model.json``.

    Attributes:
        task: one of ``restoration.tasks.specs.TASK_NAMES``.
        scale: upscaling factor (1 except for ``sr``, where 2, 3 or 4).
    """

    task: str = "denoise"
    scale: int = 1

    def __post_init__(self) -> None:
        task = get_task(self.task)
        if task.upscale and self.scale not in (2, 3, 4):
            raise ValueError(f"super-resolution scale must be 2, 3 or 4, got {self.scale}")
        if not task.upscale and self.scale != 1:
            raise ValueError(f"scale must be 1 for task {self.task!r}, got {self.scale}")
        super().__post_init__()

    @classmethod
    def of(cls, architecture: Architecture, task: str, scale: int) -> ModelConfig:
        """``architecture`` trained for ``task`` at ``scale``."""
        return cls(**{f.name: getattr(architecture, f.name) for f in fields(Architecture)}, task=task, scale=scale)

    @property
    def mask_input(self) -> bool:
        """The model takes a mask (inpainting)."""
        return get_task(self.task).mask_input

    @property
    def in_channels(self) -> int:
        """Target-branch input channels: RGB, plus the mask for inpainting."""
        return 4 if self.mask_input else 3


STRIDES = (1, 2, 4, 8, 16, 32)


class ResBlock(nn.Module):
    """conv3x3 - ReLU - conv3x3 with an identity skip (no normalization, as restoration nets do)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x), inplace=True))


def _stage(in_ch: int, out_ch: int, stride: int, num_blocks: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1), nn.ReLU(inplace=True)]
    layers += [ResBlock(out_ch) for _ in range(num_blocks)]
    return nn.Sequential(*layers)


class Fusion(nn.Module):
    """``alpha * P(pretrained) + (1 - alpha) * target`` at one scale."""

    def __init__(self, pretrained_channels: int, target_channels: int, alpha: float, learn_alpha: bool) -> None:
        super().__init__()
        self.project = nn.Conv2d(pretrained_channels, target_channels, 1)
        # Stored as a logit so that a learned alpha stays in (0, 1); clamp the endpoints so that
        # alpha = 0 or 1 is representable (exactly, when fixed).
        self.learn_alpha = learn_alpha
        logit = torch.logit(torch.tensor(float(alpha)).clamp(1e-4, 1 - 1e-4))
        if learn_alpha:
            self.alpha_logit = nn.Parameter(logit)
        else:
            self.register_buffer("alpha_logit", logit)
        self.fixed_alpha = float(alpha)

    @property
    def alpha(self) -> Tensor:
        if not self.learn_alpha:
            return torch.tensor(self.fixed_alpha, device=self.alpha_logit.device)
        return torch.sigmoid(self.alpha_logit)

    def forward(self, pretrained: Tensor, target: Tensor) -> Tensor:
        alpha = self.alpha.to(target.dtype)
        return alpha * self.project(pretrained) + (1 - alpha) * target


def fused_traits(config: ModelConfig) -> ModelTraits:
    """The traits of the fused network of ``config`` (known without building it: a fused
    checkpoint's ``model.json`` says them)."""
    return ModelTraits(architecture=f"fused-{config.backbone}", task=config.task, scale=config.scale,
                       takes_mask=config.mask_input, auto_bf16=True, fold_batch_norm=True)


class FusedRestorationNet(nn.Module, RestorationModel):
    """Transfer-learning restoration network (see the module docstring); a
    :class:`restoration.models.interface.RestorationModel`."""

    def __init__(self, config: ModelConfig, *, backbone_weights: str | None = "imagenet") -> None:
        super().__init__()
        self.config = config
        widths = config.widths
        self.backbone: Backbone = build_backbone(config.backbone, weights=backbone_weights)
        fused = [s for s in self.backbone.strides if s in config.fuse_strides]
        if not fused:
            raise ValueError(
                f"backbone {config.backbone} has features at strides {self.backbone.strides}, none of "
                f"fuse_strides {config.fuse_strides}"
            )
        self.backbone.truncate(max(fused))
        self.pad_multiple = STRIDES[-1]
        self.traits = fused_traits(config)
        self.model_id: str | None = None

        # Target branch: a stage per stride; stride 1 is the full-resolution stage.
        self.encoder = nn.ModuleList()
        in_ch = config.in_channels
        for i, width in enumerate(widths):
            self.encoder.append(_stage(in_ch, width, 1 if i == 0 else 2, config.blocks_per_stage))
            in_ch = width

        # Fusion wherever the backbone emits a feature at that stride.
        self.fusion = nn.ModuleDict()
        for stride, channels in zip(self.backbone.strides, self.backbone.out_channels):
            if stride in config.fuse_strides:
                target_ch = widths[STRIDES.index(stride)]
                self.fusion[str(stride)] = Fusion(channels, target_ch, config.alpha, config.learn_alpha)

        # U-Net decoder, deepest to finest.
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in range(len(widths) - 1, 0, -1):
            self.up.append(nn.Conv2d(widths[i], widths[i - 1], 1))
            self.decoder.append(_stage(2 * widths[i - 1], widths[i - 1], 1, config.blocks_per_stage))
        self.head = nn.Conv2d(widths[0], 3, 3, padding=1)
        # Start as the identity mapping: the residual is zero before training.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    # -- fine-tuning controls ------------------------------------------------------------------

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Stop (or restart) gradient updates of the pretrained branch."""
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)

    def train(self, mode: bool = True) -> "FusedRestorationNet":
        super().train(mode)
        # Batch-norm statistics stay the ImageNet ones: restoration batches are small crops,
        # whose statistics would only add noise.
        self.backbone.eval()
        return self

    def parameter_groups(self, lr: float, backbone_lr: float, weight_decay: float = 0.0) -> list[dict]:
        """Optimizer parameter groups: the backbone at ``backbone_lr``, everything else at ``lr``.

        Groups come from module structure (``self.backbone``), not from parameter names. Fusion
        weights (alpha) get no weight decay.
        """
        backbone_ids = {id(p) for p in self.backbone.parameters()}
        alpha_ids = {id(f.alpha_logit) for f in self.fusion.values() if f.learn_alpha}
        rest = [p for p in self.parameters() if id(p) not in backbone_ids and id(p) not in alpha_ids]
        groups = [
            {"name": "target", "params": rest, "lr": lr, "weight_decay": weight_decay},
            {"name": "backbone", "params": list(self.backbone.parameters()), "lr": backbone_lr,
             "weight_decay": weight_decay},
        ]
        alphas = [p for p in self.parameters() if id(p) in alpha_ids]
        if alphas:
            groups.append({"name": "alpha", "params": alphas, "lr": lr, "weight_decay": 0.0})
        return groups

    def alphas(self) -> dict[str, float]:
        """Current fusion weight of the pretrained branch per stride, e.g. ``{"2": 0.5, ...}``."""
        return {stride: float(f.alpha.detach()) for stride, f in self.fusion.items()}

    # -- the rest of the model interface -------------------------------------------------------

    def export_state_dict(self) -> dict[str, Tensor]:
        """The weights under this module's own names (what ``model.safetensors`` holds)."""
        return {name: tensor.detach() for name, tensor in self.state_dict().items()}

    def load_export_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Load weights named as :meth:`export_state_dict` names them (strict)."""
        self.load_state_dict(dict(state))

    def describe(self) -> dict[str, Any]:
        """The fusion weights of the pretrained branch per stride (``{"alpha": {"2": 0.5, ...}}``)."""
        return {"alpha": self.alphas()}

    # -- forward -------------------------------------------------------------------------------

    def forward(self, lq: Tensor, mask: Tensor | None = None) -> Tensor:
        """Restore ``lq`` (N, 3, h, w); returns (N, 3, h * scale, w * scale), not clipped."""
        if lq.dim() != 4 or lq.shape[1] != 3:
            raise ValueError(f"expected lq of shape (N, 3, H, W), got {tuple(lq.shape)}")
        if self.config.mask_input:
            if mask is None:
                raise ValueError("the inpainting model needs a mask (N, 1, H, W), 1 = missing pixel")
            # Missing pixels carry no information: zero them so the model does not depend on the fill.
            lq = lq * (1 - mask)
        if self.config.scale > 1:
            # Pre-upsampling: the network (and the backbone, which expects natural images) works
            # at the output resolution and learns the residual over bicubic.
            lq = F.interpolate(lq, scale_factor=self.config.scale, mode="bicubic", align_corners=False)
        base = lq
        height, width = lq.shape[-2:]
        m = self.pad_multiple
        pad_h, pad_w = (m - height % m) % m, (m - width % m) % m
        x = lq
        if mask is not None:
            x = torch.cat([lq, mask], dim=1)
        if pad_h or pad_w:
            x = pad_edges(x, (0, pad_w, 0, pad_h))

        pretrained = dict(zip(self.backbone.strides, self.backbone(x[:, :3])))
        skips = []
        feat = x
        for stride, stage in zip(STRIDES, self.encoder):
            feat = stage(feat)
            fusion = self.fusion[str(stride)] if str(stride) in self.fusion else None
            if fusion is not None:
                feat = fusion(pretrained[stride], feat)
            skips.append(feat)

        y = skips[-1]
        for up, dec, skip in zip(self.up, self.decoder, reversed(skips[:-1])):
            y = F.interpolate(up(y), size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = dec(torch.cat([y, skip], dim=1))
        restored = base + self.head(y)[..., :height, :width]
        if self.config.mask_input:
            # Known pixels are kept exactly; only the holes are filled.
            restored = base * (1 - mask) + restored * mask
        return restored


def build_model(config: ModelConfig, *, backbone_weights: str | None = "imagenet") -> FusedRestorationNet:
    """Build a fused restoration network; ``backbone_weights`` as in ``build_backbone``."""
    return FusedRestorationNet(config, backbone_weights=backbone_weights)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

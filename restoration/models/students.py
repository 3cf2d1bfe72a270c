"""Fresh student networks for distillation, built from a short spec.

A distillation run trains a small network from scratch on a teacher's outputs; ``--model``-like
text names its architecture and size::

    compact                     Real-ESRGAN's SRVGGNetCompact, 64 features, 16 convolutions
    compact:feat=32,conv=8      a smaller Compact
    span                        SPAN, 48 feature channels
    span:feat=32
    esrgan:feat=32,blocks=6     a small RRDBNet (ESRGAN's generator)
    deepen:realesr-animevideov3,conv=24
                                a trained Compact made deeper, starting as the same function

:func:`build_student` builds spandrel's architecture class with random weights (seeded, without
touching the global RNG's state), writes its state dict as safetensors and loads it back through
:func:`restoration.models.community.load_community_model`, so that the student is an ordinary
:class:`~restoration.models.community.CommunityNet` (spandrel detects the same hyper-parameters
from the weights) that the project fine-tunes, saves and exports like any community model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import torch
from safetensors.torch import save as save_safetensors
from torch import nn

from restoration.models.community import CommunityNet, load_community_model

__all__ = ["STUDENT_ARCHITECTURES", "StudentSpec", "build_student", "deepen_compact", "is_student_spec",
           "parse_deepen_spec", "parse_student_spec"]


@dataclass(frozen=True)
class _Option:
    """One ``key=value`` of an architecture: its default and the allowed range (inclusive)."""

    default: int
    low: int
    high: int
    meaning: str


@dataclass(frozen=True)
class _Architecture:
    """A student architecture: its name in spandrel (``architecture.id``), its options, the
    scales it builds and its tag letters."""

    spandrel_name: str
    options: dict[str, _Option]
    scales: tuple[int, ...]
    tag_letters: dict[str, str]


STUDENT_ARCHITECTURES: Final[dict[str, _Architecture]] = {
    "compact": _Architecture(
        "Compact",
        options={"feat": _Option(64, 4, 256, "feature channels"), "conv": _Option(16, 1, 64, "body convolutions")},
        scales=(1, 2, 3, 4), tag_letters={"feat": "f", "conv": "c"}),
    "span": _Architecture(
        "SPAN",
        options={"feat": _Option(48, 4, 256, "feature channels")},
        scales=(1, 2, 3, 4), tag_letters={"feat": "f"}),
    "esrgan": _Architecture(
        "ESRGAN",
        options={"feat": _Option(32, 4, 256, "feature channels"), "blocks": _Option(6, 1, 64, "RRDB blocks")},
        # spandrel reads an RRDBNet's scale from its count of x2 upsampling stages: 1, 2 or 4 here.
        scales=(1, 2, 4), tag_letters={"feat": "f", "blocks": "b"}),
}
"""The architectures a student spec names, with their options (defaults and ranges)."""

_SPEC_PATTERN: Final[re.Pattern[str]] = re.compile(
    r"(?P<arch>[a-z]+)(?::(?P<options>[a-z_]+=[^,=:\s]+(?:,[a-z_]+=[^,=:\s]+)*))?")


@dataclass(frozen=True)
class StudentSpec:
    """A parsed student spec: the architecture's name and every option's value (defaults filled in).

    Attributes:
        architecture: a key of :data:`STUDENT_ARCHITECTURES` (``compact``, ``span``, ``esrgan``).
        options: option name -> value, every option of the architecture.
    """

    architecture: str
    options: dict[str, int] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """The size in the model id: ``f32c8`` for ``compact:feat=32,conv=8``."""
        letters = STUDENT_ARCHITECTURES[self.architecture].tag_letters
        return "".join(f"{letters[key]}{self.options[key]}" for key in letters)

    def __str__(self) -> str:
        """The canonical spec text, every option spelled out (``compact:feat=64,conv=16``)."""
        return f"{self.architecture}:" + ",".join(f"{key}={value}" for key, value in self.options.items())


def is_student_spec(text: str) -> bool:
    """Whether ``text`` names a student architecture (``compact``, ``span``, ``esrgan``, optionally
    followed by ``:key=value,...``) rather than a model file or folder. A path that exists is never
    a spec; the options are not checked here (:func:`parse_student_spec` does, with messages)."""
    text = text.strip()
    if not text or Path(text).exists():
        return False
    if parse_deepen_spec(text) is not None:
        return True
    match = _SPEC_PATTERN.fullmatch(text)
    return match is not None and match["arch"] in STUDENT_ARCHITECTURES


def parse_student_spec(text: str) -> StudentSpec:
    """The :class:`StudentSpec` of ``text`` (``compact:feat=32,conv=8``), defaults filled in.

    Raises:
        ValueError: an unknown architecture, a malformed spec, an unknown or repeated key, or a
            value that is not an integer in the key's range; the message names what is allowed.
    """
    stripped = text.strip()
    name, _, rest = stripped.partition(":")
    known = ", ".join(STUDENT_ARCHITECTURES)
    if name not in STUDENT_ARCHITECTURES:
        raise ValueError(f"student {text!r}: unknown architecture {name!r} (known: {known})")
    architecture = STUDENT_ARCHITECTURES[name]
    allowed = ", ".join(f"{key} ({option.meaning}, {option.low}..{option.high}, default {option.default})"
                        for key, option in architecture.options.items())
    options = {key: option.default for key, option in architecture.options.items()}
    if not _SPEC_PATTERN.fullmatch(stripped):
        raise ValueError(f"student {text!r}: expected {name}[:key=value,...] with keys {allowed}")
    seen: set[str] = set()
    for item in rest.split(",") if rest else []:
        key, _, value = item.partition("=")
        if key not in architecture.options:
            raise ValueError(f"student {text!r}: unknown key {key!r} for {name} (allowed: {allowed})")
        if key in seen:
            raise ValueError(f"student {text!r}: {key} is given twice")
        seen.add(key)
        option = architecture.options[key]
        if not re.fullmatch(r"[0-9]+", value) or not option.low <= int(value) <= option.high:
            raise ValueError(f"student {text!r}: {key}={value} is not an integer in {option.low}..{option.high} "
                             f"({option.meaning})")
        options[key] = int(value)
    return StudentSpec(name, options)


def _network(spec: StudentSpec, scale: int) -> nn.Module:
    """spandrel's architecture class for ``spec`` at ``scale``, 3 channels in and out, with
    PyTorch's default (random) initialisation."""
    options = spec.options
    if spec.architecture == "compact":
        from spandrel.architectures.Compact import Compact

        return Compact(num_in_ch=3, num_out_ch=3, num_feat=options["feat"], num_conv=options["conv"], upscale=scale)
    if spec.architecture == "span":
        from spandrel.architectures.SPAN import SPAN

        return SPAN(num_in_ch=3, num_out_ch=3, feature_channels=options["feat"], upscale=scale)
    from spandrel.architectures.ESRGAN import ESRGAN

    return ESRGAN(in_nc=3, out_nc=3, num_filters=options["feat"], num_blocks=options["blocks"], scale=scale)


def build_student(spec: StudentSpec, *, scale: int, seed: int = 0) -> CommunityNet:
    """A fresh, randomly initialised student network for ``spec`` at ``scale``, as a
    :class:`~restoration.models.community.CommunityNet` in training mode.

    The weights depend on ``seed`` only (the global RNG is seeded inside
    :func:`torch.random.fork_rng`, so its state is the same afterwards). The model id reads
    ``student-compact-f32c8-x4-<hash>``, the hash being the weights' (safetensors bytes).

    Args:
        spec: the architecture and its size (:func:`parse_student_spec`).
        scale: the upscaling factor (1 = same size); ESRGAN builds 1, 2 or 4, the others 1 to 4.
        seed: the seed of the random initialisation.

    Raises:
        ValueError: the architecture does not build ``scale``.
    """
    scales = STUDENT_ARCHITECTURES[spec.architecture].scales
    if scale not in scales:
        raise ValueError(f"student {spec.architecture}: scale {scale} is not built "
                         f"(allowed: {', '.join(map(str, scales))})")
    # spandrel's loader builds the network again (PyTorch's default initialisation, then the
    # weights loaded over it): both draw from the global RNG, whose state is restored afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = _network(spec, scale)
        state = {name: tensor.detach().contiguous() for name, tensor in network.state_dict().items()}
        data = save_safetensors(state)
        name = f"student-{spec.architecture}-{spec.tag}-x{scale}.safetensors"
        model, _ = load_community_model(state, name=name, data=data)
    model.train()
    return model


# --------------------------------------------------------------------------------------------
# Deeper students from a trained Compact

_DEEPEN_PATTERN: Final[re.Pattern[str]] = re.compile(r"deepen:(?P<base>[^,\s]+),conv=(?P<conv>[0-9]+)")


def parse_deepen_spec(text: str) -> tuple[str, int] | None:
    """``(base, conv)`` of ``deepen:BASE,conv=N`` (a trained Compact made deeper), or None for
    other text. A path that exists is never a spec."""
    text = text.strip()
    match = _DEEPEN_PATTERN.fullmatch(text)
    if match is None or Path(text).exists():
        return None
    return match["base"], int(match["conv"])


def deepen_compact(model: CommunityNet, conv: int) -> CommunityNet:
    """``model`` (a Compact) with ``conv`` body convolutions instead of its own, the new ones
    spread evenly between the old and made identities (a 3 x 3 kernel with a centre of 1 per
    channel, a PReLU of slope 1), so that the deeper network starts as exactly the same function
    and its extra layers have something to learn from the first step. Training mode.

    Raises:
        ValueError: ``model`` is not a Compact with PReLU activations, or ``conv`` is not more
            than its convolutions (and at most 64).
    """
    net = model.net
    if model.traits.architecture != "Compact" or getattr(net, "act_type", None) != "prelu":
        raise ValueError(f"deepen takes a Compact model with PReLU activations, not {model.traits.architecture}")
    have = int(net.num_conv)
    if not have < conv <= 64:
        raise ValueError(f"deepen: conv={conv} must exceed the model's {have} convolutions (and be at most 64)")
    state = {name: tensor.detach().clone() for name, tensor in net.state_dict().items()}
    feat = int(net.num_feat)
    # (conv weight, conv bias, PReLU weight) of the first convolution and of each body one.
    layers = [(state[f"body.{2 * i}.weight"], state[f"body.{2 * i}.bias"], state[f"body.{2 * i + 1}.weight"])
              for i in range(have + 1)]
    identity = torch.zeros(feat, feat, 3, 3)
    identity[torch.arange(feat), torch.arange(feat), 1, 1] = 1.0
    extra = conv - have
    # after which of the body's layers each new one goes (evenly spread, never before the first)
    after = [1 + (index * have) // extra for index in range(extra)]
    deeper = []
    for position, layer in enumerate(layers):
        deeper.append(layer)
        deeper += [(identity.clone(), torch.zeros(feat), torch.ones(feat)) for slot in after if slot == position]
    grown = {}
    for index, (weight, bias, slope) in enumerate(deeper):
        grown[f"body.{2 * index}.weight"], grown[f"body.{2 * index}.bias"] = weight, bias
        grown[f"body.{2 * index + 1}.weight"] = slope
    last = 2 * (have + 1)
    grown[f"body.{2 * len(deeper)}.weight"] = state[f"body.{last}.weight"]
    grown[f"body.{2 * len(deeper)}.bias"] = state[f"body.{last}.bias"]
    grown = {name: tensor.contiguous() for name, tensor in grown.items()}
    data = save_safetensors(grown)
    base = (model.model_id or "compact").rsplit("-", 1)[0]
    deepened, _ = load_community_model(grown, name=f"{base}-deepened-c{conv}.safetensors", data=data)
    return deepened.train()

"""Per-image routing: which model restores each image, at which strength, or none at all.

A *route* is a small declarative file (YAML) of models and rules::

    models:                       # key -> a --model spec: default:TASK, a name, a folder or file
      denoise: default:denoise
      jpeg: default:jpeg
      drunet: s3://models/drunet_color.pth
    rules:                        # the first rule whose condition holds decides
      - when: jpeg_quality < 90
        model: jpeg
      - when: noise_sigma >= 20 and not gray_rgb
        model: drunet
        noise_level: measured     # its noise-level map from the image's noise_sigma
      - when: noise_sigma >= 4
        model: denoise
        strength: 0.8
      - skip: true                # write the image unchanged (the default when no rule holds)

A condition compares the image's measures (:data:`restoration.quality.assess.MEASURES`: noise
level, JPEG quality from the file's tables, blockiness, blur, gray stored as RGB, size, bit
depth) with numbers: ``NAME OP VALUE`` with ``<``, ``<=``, ``>``, ``>=``, ``==``, ``!=``; a
boolean measure alone (``gray_rgb``, ``not is_jpeg``); clauses joined by ``and``, and groups of
them by ``or`` (``and`` binds first); ``always``. A comparison with a measure that is unknown for
the image (``jpeg_quality`` of a PNG) is false, except ``!= none`` / ``== none``. A bad condition,
an unknown measure or an undefined model key is one line, before anything runs.

``--model auto`` is the route :data:`AUTO_ROUTE` over the shipped models, chosen on measured
photos (``bench/auto_route.py``). Every manifest row records its route (the model key, or
``skip``) and why (the rule and the measures it read).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import numpy as np
from pydantic import Field, model_validator

from restoration.config import SettingError, Settings, within
from restoration.models.checkpoint import CheckpointError
from restoration.models.interface import ModelTraits
from restoration.quality.assess import MEASURES, assess

if TYPE_CHECKING:
    from restoration.models.predictor import Predictor, PredictorConfig

__all__ = [
    "AUTO",
    "AUTO_ROUTE",
    "MEASURED",
    "ROUTED_TASK",
    "SKIP",
    "Condition",
    "Decision",
    "RouteSpec",
    "RoutedRestorer",
    "Router",
    "Rule",
    "check_route_model",
    "image_measures",
    "is_route",
    "load_route",
    "parse_condition",
    "route_settings",
    "split_model_spec",
]

AUTO: Final[str] = "auto"
"""``--model auto``: the shipped models, routed per image by :data:`AUTO_ROUTE`."""

SKIP: Final[str] = "skip"
"""The route of an image written unchanged."""

ROUTED_TASK: Final[str] = "route"
"""The task a routed run records in its manifest and summary (each row's ``route`` says which
model restored it)."""

_OPERATORS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt,
}
_COMPARISON = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*$")
_FLAG = re.compile(r"^\s*(not\s+)?([a-z_][a-z0-9_]*)\s*$")


@dataclass(frozen=True)
class _Clause:
    measure: str
    test: str  # an operator of _OPERATORS, or "is" / "is not" for a boolean measure alone
    value: Any

    def holds(self, measures: Mapping[str, Any]) -> bool:
        measured = measures.get(self.measure)
        if self.test in ("is", "is not"):
            return bool(measured) == (self.test == "is")
        if self.value is None:  # == none / != none (parse_condition allows no other test with none)
            return (measured is None) == (self.test == "==")
        return measured is not None and _OPERATORS[self.test](measured, self.value)


@dataclass(frozen=True)
class Condition:
    """A parsed ``when``: an ``or`` of ``and`` groups of clauses (none: ``always``)."""

    text: str
    groups: tuple[tuple[_Clause, ...], ...]

    @property
    def measures(self) -> tuple[str, ...]:
        """The measures it reads, in order of first use."""
        return tuple(dict.fromkeys(clause.measure for group in self.groups for clause in group))

    def holds(self, measures: Mapping[str, Any]) -> bool:
        return not self.groups or any(all(clause.holds(measures) for clause in group) for group in self.groups)


def _value(text: str, measure: str, condition: str) -> Any:
    kind = MEASURES[measure]
    lowered = text.lower()
    if lowered in ("none", "null"):
        return None
    if kind is bool:
        if lowered not in ("true", "false"):
            raise ValueError(f"condition {condition!r}: {measure} is true or false, got {text!r}")
        return lowered == "true"
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"condition {condition!r}: {measure} is compared with a number, got {text!r}") from None


def _measure(name: str, condition: str) -> str:
    if name not in MEASURES:
        import difflib

        close = difflib.get_close_matches(name, MEASURES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"condition {condition!r}: unknown measure {name!r}{hint}; "
                         f"measures: {', '.join(MEASURES)}")
    return name


def parse_condition(text: str) -> Condition:
    """Parse a rule's ``when`` (see the module's docstring).

    Raises:
        ValueError: one line naming the condition and what is wrong in it.
    """
    stripped = " ".join(str(text).split())
    if stripped.lower() in ("always", ""):
        return Condition(text="always", groups=())
    groups = []
    for group_text in re.split(r"\s+or\s+", stripped):
        clauses = []
        for clause_text in re.split(r"\s+and\s+", group_text):
            comparison = _COMPARISON.match(clause_text)
            if comparison:
                name, test, value = comparison.groups()
                name = _measure(name, stripped)
                parsed = _value(value, name, stripped)
                if parsed is None and test not in ("==", "!="):
                    raise ValueError(f"condition {stripped!r}: none is compared with == or != only")
                clauses.append(_Clause(name, test, parsed))
                continue
            flag = _FLAG.match(clause_text)
            if flag and flag.group(2) not in ("and", "or", "not"):
                name = _measure(flag.group(2), stripped)
                if MEASURES[name] is not bool:
                    raise ValueError(f"condition {stripped!r}: {name} is a number; compare it (e.g. {name} >= 1)")
                clauses.append(_Clause(name, "is not" if flag.group(1) else "is", True))
                continue
            raise ValueError(f"condition {stripped!r}: cannot read {clause_text!r}; write MEASURE OP NUMBER "
                             "(OP one of < <= > >= == !=), a true/false measure, 'and', 'or'")
        groups.append(tuple(clauses))
    return Condition(text=stripped, groups=tuple(groups))


def split_model_spec(spec: str) -> tuple[str, str]:
    """``default:TASK`` -> ``("default", TASK)``; any other spec -> ``(spec, "")`` (its own task)."""
    if spec.startswith("default:"):
        return "default", spec.split(":", 1)[1]
    return spec, ""


MEASURED: Final[str] = "measured"
"""A rule's ``noise_level: measured``: the image's own ``noise_sigma``."""


class Rule(Settings):
    """One rule of a route: when ``when`` holds, restore with ``model`` at ``strength`` (or
    ``skip``: write the image unchanged). ``noise_level``, for models with a noise-level map
    (DRUNet, FFDNet-style): a sigma on 0..255, or ``measured`` for the image's ``noise_sigma``.
    ``quality_factor``, for models told the JPEG quality they undo (FBCNN): a quality in
    1..100, or ``measured`` for the file's ``jpeg_quality`` (an image without one leaves the
    model to predict it)."""

    when: str = "always"
    model: str | None = None
    skip: bool = False
    strength: Annotated[float, within(0.0, 1.0)] = 1.0
    noise_level: Annotated[float, within(0.0, 255.0)] | Literal["measured"] | None = None
    quality_factor: Annotated[float, within(1.0, 100.0)] | Literal["measured"] | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Rule:
        parse_condition(self.when)  # one line naming the condition
        if self.skip == (self.model is not None):
            raise SettingError(f"rule when {self.when!r}: give a model or skip: true (one of them)", field="model")
        for setting in ("noise_level", "quality_factor"):
            if self.skip and getattr(self, setting) is not None:
                raise SettingError(f"rule when {self.when!r}: a skipped image takes no {setting}", field=setting)
        return self


class RouteSpec(Settings):
    """A route file: ``models`` (key -> ``--model`` spec) and ``rules``, first match wins."""

    models: dict[str, str] = Field(default_factory=dict)
    rules: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _models_defined(self) -> RouteSpec:
        for index, rule in enumerate(self.rules):
            if rule.model is not None and rule.model not in self.models:
                raise SettingError(f"rules[{index}] uses model {rule.model!r}, which models does not define "
                                   f"(defined: {', '.join(self.models) or 'none'})", field="rules")
        if any(key == SKIP for key in self.models):
            raise SettingError(f"{SKIP!r} is reserved for images written unchanged; name the model otherwise",
                               field="models")
        return self

    def models_given(self, setting: str) -> set[str]:
        """The model keys some rule gives ``setting`` (``noise_level``, ``quality_factor``)."""
        return {str(rule.model) for rule in self.rules if getattr(rule, setting) is not None}

    def used_models(self) -> dict[str, str]:
        """The models some rule uses (key -> spec), in the order of ``models``."""
        used = {rule.model for rule in self.rules}
        return {key: spec for key, spec in self.models.items() if key in used}

    def digest(self) -> str:
        """A short hash of the route: part of the run's model id, so that a changed route redoes."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Decision:
    """What happens to one image: ``route`` (a model key, or :data:`SKIP`), ``strength``,
    ``noise_level`` and ``quality_factor`` (None: the model's own) and ``reason`` (the rule and the measures it read)."""

    route: str
    strength: float
    reason: str
    noise_level: float | None = None
    quality_factor: float | None = None


class Router:
    """A checked :class:`RouteSpec`, ready to decide per image."""

    def __init__(self, spec: RouteSpec, *, name: str) -> None:
        self.spec = spec
        self.name = name
        self._rules = [(rule, parse_condition(rule.when)) for rule in spec.rules]

    def decide(self, measures: Mapping[str, Any]) -> Decision:
        """The first rule that holds for ``measures`` (:data:`restoration.quality.assess.MEASURES`);
        :data:`SKIP` when none does."""
        for index, (rule, condition) in enumerate(self._rules):
            if condition.holds(measures):
                read = ", ".join(f"{name}={_shown(measures.get(name))}" for name in condition.measures)
                reason = f"rule {index + 1}: {condition.text}" + (f" ({read})" if read else "")
                level = rule.noise_level
                if level == MEASURED:
                    level = min(255.0, float(measures.get("noise_sigma") or 0.0))
                if level is not None:
                    reason += f"; noise_level {float(level):.3g}"
                quality = rule.quality_factor
                if quality == MEASURED:
                    quality = measures.get("jpeg_quality")
                if quality is not None:
                    reason += f"; quality_factor {float(quality):g}"
                return Decision(route=SKIP if rule.skip else str(rule.model),
                                strength=0.0 if rule.skip else rule.strength, reason=reason,
                                noise_level=None if level is None else float(level),
                                quality_factor=None if quality is None else float(quality))
        return Decision(route=SKIP, strength=0.0, reason="no rule holds")

    @property
    def model_id(self) -> str:
        """The run's model id: the route's name and hash (``auto-1a2b3c4d``)."""
        return f"{self.name}-{self.spec.digest()}"


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


AUTO_ROUTE: Final[dict[str, Any]] = {
    "models": {"denoise": "default:denoise", "jpeg": "default:jpeg", "deblur": "default:deblur"},
    "rules": [
        # A JPEG file: its tables say it was compressed; noise under the compression shows at half
        # resolution only (the finest scale is gone), and the denoiser also removes the blocks.
        {"when": "jpeg_quality < 90 and coarse_noise >= 4", "model": "denoise"},
        {"when": "jpeg_quality < 90", "model": "jpeg"},
        # Fine texture (grass, foliage) can read as noise of 4-5; unlike white noise it grows at
        # half resolution. Where the two disagree, half strength: a clean textured photo keeps
        # 53 dB instead of 48, a noisy one still loses half its noise.
        {"when": "noise_sigma >= 2 and noise_sigma < 6 and coarse_noise >= 8", "model": "denoise", "strength": 0.5},
        {"when": "noise_sigma >= 2", "model": "denoise"},
        {"when": "blockiness >= 1.25", "model": "jpeg"},  # a JPEG saved again losslessly (PNG)
        # The deblurring model harms a sharp photo most (to 31 dB): only clearly blurred ones
        # (sharp photos read 0.18-0.30, after a Gaussian blur of sigma 1.2 0.39-0.63).
        {"when": "blur >= 0.38", "model": "deblur"},
        {"skip": True},
    ],
}
"""The route of ``--model auto`` over the shipped models (see ``bench/auto_route.py``)."""


def is_route(spec: str) -> bool:
    """Whether a ``--model`` value names a route: ``auto``, or a ``.yaml`` / ``.yml`` file."""
    return spec == AUTO or spec.lower().rstrip("/").endswith((".yaml", ".yml"))


def check_route_model(router: Router, key: str, traits: ModelTraits) -> None:
    """Refuse a route's model that cannot take every image as it is: one that upscales or takes
    a mask (a route may skip an image, whose output is then its input), or one given a
    ``noise_level`` or ``quality_factor`` that it does not take.

    Raises:
        CheckpointError: one line naming the route's key and its spec.
    """
    spec = router.spec.models[key]
    if traits.scale != 1 or traits.takes_mask:
        what = f"a {traits.scale}x super-resolution model" if traits.scale != 1 else "an inpainting model"
        raise CheckpointError(f"route model {key} ({spec}) is {what} ({traits.architecture}); a route's models "
                              "restore at the same size without a mask")
    if key in router.spec.models_given("noise_level") and not traits.noise_level:
        raise CheckpointError(f"route model {key} ({spec}): a rule gives it a noise_level, but "
                              f"{traits.architecture} models take no noise-level map")
    if key in router.spec.models_given("quality_factor") and not traits.quality_factor:
        raise CheckpointError(f"route model {key} ({spec}): a rule gives it a quality_factor, but "
                              f"{traits.architecture} models take no JPEG quality")


def image_measures(pixels: np.ndarray, *, data: bytes | None = None, bit_depth: int = 8,
                   is_jpeg: bool = False) -> dict[str, Any]:
    """Every measure a condition reads (:data:`restoration.quality.assess.MEASURES`) of
    ``pixels`` (H x W x C), from :func:`restoration.quality.assess.assess` (with the file's
    ``data`` for its JPEG tables) and the image's size, channels and bit depth."""
    height, width = pixels.shape[:2]
    return {**assess(pixels, data=data).as_row(), "width": width, "height": height,
            "megapixels": width * height / 1e6, "channels": 1 if pixels.ndim == 2 else pixels.shape[2],
            "bit_depth": bit_depth, "is_jpeg": is_jpeg}


@contextlib.contextmanager
def route_settings(predictor: Predictor, *, strength: float, noise_level: float | None,
                   quality_factor: float | None) -> Iterator[Predictor]:
    """``predictor`` with a route's settings while the block runs: its ``strength``, and on its
    model the ``noise_level`` (None: the model's own) and, for a model that takes one, the
    ``quality_factor`` (None: predicted). Everything is put back afterwards, so that one image's
    settings never reach the next."""
    model = predictor.model
    changes: list[tuple[Any, str, Any]] = [(predictor, "strength", strength)]
    if noise_level is not None:
        changes.append((model, "noise_level", noise_level))
    if model.traits.quality_factor:
        changes.append((model, "quality_factor", quality_factor))
    saved = [(target, name, getattr(target, name)) for target, name, _ in changes]
    for target, name, value in changes:
        setattr(target, name, value)
    try:
        yield predictor
    finally:
        for target, name, value in saved:
            setattr(target, name, value)


class RoutedRestorer:
    """A route in one process: its models built once (each checked by
    :func:`check_route_model`), and each image restored by the model its measures route it to,
    or returned as it is. ``evaluate`` and ``compare`` restore with it; the batch job's stages
    do the same per row (:mod:`restoration.restore.stages`)."""

    def __init__(self, router: Router, config: PredictorConfig | None = None, *, device: str | None = None) -> None:
        from restoration.models.checkpoint import load_checkpoint, resolve_model
        from restoration.models.predictor import Predictor, PredictorConfig

        self.router = router
        self.predictors: dict[str, Predictor] = {}
        self.records: dict[str, dict[str, Any]] = {}
        for key, spec in router.spec.used_models().items():
            checkpoint = load_checkpoint(resolve_model(*split_model_spec(spec)))
            check_route_model(router, key, checkpoint.model.traits)
            self.predictors[key] = Predictor(checkpoint.model, config or PredictorConfig(), device=device)
            self.records[key] = {"spec": spec, "model_id": checkpoint.model_id,
                                 "architecture": checkpoint.model.traits.architecture,
                                 **checkpoint.metadata.describe()}

    def restore_pixels(self, pixels: np.ndarray, *, data: bytes | None = None,
                       is_jpeg: bool = False) -> tuple[np.ndarray, Decision]:
        """``pixels`` (H x W x C, 8-bit; decoded from the file bytes ``data`` when given) restored
        by its route's model at its strength and noise level, or as they are for ``skip``."""
        decision = self.router.decide(image_measures(pixels, data=data, is_jpeg=is_jpeg))
        if decision.route == SKIP:
            return pixels, decision
        with route_settings(self.predictors[decision.route], strength=decision.strength,
                            noise_level=decision.noise_level, quality_factor=decision.quality_factor) as predictor:
            return predictor.restore_pixels(pixels), decision


def load_route(spec: str) -> Router:
    """``auto`` (:data:`AUTO_ROUTE`) or a route file (YAML; local, ``file://`` or ``s3://``).

    Raises:
        ValueError: one line: an unreadable file, a bad key or value, a bad condition.
    """
    from restoration import config as config_lib

    if spec == AUTO:
        return Router(config_lib.from_dict(RouteSpec, AUTO_ROUTE), name=AUTO)
    from pathlib import Path

    import yaml

    from restoration.io import storage

    try:
        text = storage.read_bytes(storage.absolute_uri(spec)).decode()
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"--route {spec}: cannot read it: {storage.redact(str(error)).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--route {spec}: a route is a mapping with 'models' and 'rules'")
    try:
        route = config_lib.from_dict(RouteSpec, data)
    except ValueError as error:
        raise ValueError(f"--route {spec}: {error}") from None
    return Router(route, name=Path(spec.rstrip("/")).stem or "route")

"""``model.json``: what a checkpoint says about its model, for any kind of model, as one typed
record (:class:`ModelMetadata`) and one layout.

The layout written (``format_version`` 2) names the kind of model::

    {"format_version": 2, "kind": "fused", "model_id": ..., "task": ..., "scale": ...,
     "architecture": {<ModelConfig>}, "backbone": {"name": ..., "normalization": {...}},
     "alpha": {"2": ..., ...}, "dtype": ..., "code_version": ..., "provenance": {...}}
    {"format_version": 2, "kind": "community", "model_id": ..., "task": ..., "scale": ...,
     "architecture": "ESRGAN", "dtype": ..., "code_version": ..., "provenance": {...}}

Earlier files still load: ``format_version`` 1 without ``kind`` (the fused models, among them the
shipped ones in ``restoration/weights/``) and ``format_version`` 1 with ``"kind": "community"``
(community models fine-tuned by earlier versions). A community model's traits come from its
network (spandrel detects the architecture from the weights), so its metadata is made with them
(:meth:`ModelMetadata.from_dict`'s ``traits``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from restoration import __version__
from restoration.models.fused import FusedRestorationNet, ModelConfig, fused_traits
from restoration.models.interface import ModelTraits, RestorationModel

__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "METADATA_FILE",
    "READABLE_FORMAT_VERSIONS",
    "WEIGHT_DTYPES",
    "CheckpointError",
    "ModelMetadata",
    "metadata_kind",
]

FORMAT_VERSION: Final[int] = 2
"""The ``model.json`` layout written."""
READABLE_FORMAT_VERSIONS: Final[tuple[int, ...]] = (1, 2)
"""The layouts read: 1 (fused without ``kind``, or ``"kind": "community"``) and 2."""
KINDS: Final[tuple[str, ...]] = ("fused", "community")
METADATA_FILE: Final[str] = "model.json"
WEIGHT_DTYPES: Final[tuple[str, ...]] = ("float32", "float16")
"""How floating-point weights are stored; loading always gives float32."""


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or does not fit the requested architecture."""


def _check_version(data: Any, source: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{source} must hold a JSON object, got {type(data).__name__}")
    if data.get("format_version") not in READABLE_FORMAT_VERSIONS:
        raise CheckpointError(
            f"{source} has format_version {data.get('format_version')!r}; this version reads "
            + " and ".join(str(v) for v in READABLE_FORMAT_VERSIONS)
        )
    return data


def metadata_kind(data: Any, *, source: str = METADATA_FILE) -> str:
    """The kind of model (``fused`` or ``community``) a parsed ``model.json`` describes.

    Raises:
        CheckpointError: not a JSON object, a format version this version does not read, or an
            unknown kind.
    """
    data = _check_version(data, source)
    if data["format_version"] == 1:
        return "community" if data.get("kind") == "community" else "fused"
    kind = data.get("kind")
    if kind not in KINDS:
        raise CheckpointError(f"{source} has kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


@dataclass(frozen=True)
class ModelMetadata:
    """The typed ``model.json`` of any model: a checkpoint folder's, or what a community model
    file says about itself.

    Attributes:
        kind: ``fused`` (:class:`restoration.models.fused.FusedRestorationNet`) or ``community``
            (a model spandrel loads, :mod:`restoration.models.community`).
        traits: the model's :class:`restoration.models.interface.ModelTraits` (task, scale, ...).
        architecture: a fused network's :class:`ModelConfig` (task, scale, backbone, widths, ...);
            None for a community model, whose architecture spandrel detects from its weights
            (``traits.architecture`` names it).
        model_id: a short identifier for manifests and reports (None: the folder's name).
        normalization: a fused backbone's input normalization, ``{"mean": (r, g, b), "std": (r, g, b)}``
            on the [0, 1] scale (empty for a community model).
        alpha: a fused model's fusion weight of the pretrained branch per stride, in [0, 1], keyed
            ``"2"``, ``"4"``, ... (empty for a community model).
        dtype: how floating-point weights are stored, ``float32`` or ``float16``.
        code_version: the ``restoration`` version that wrote it.
        provenance: how it was trained (data URI, steps, seed, wall time, hardware, validation
            metrics, ...), or for a community model file where it came from; free-form JSON.
        format_version: the layout it was read from (:data:`FORMAT_VERSION` for new ones);
            :meth:`to_dict` writes :data:`FORMAT_VERSION` whatever it was.
        licence, source, sha256: where the loaded weights come from, under which licence, and
            the SHA-256 of the file(s) read (set when loaded, from the files: not written to
            ``model.json``; None before). :meth:`describe` gives them with the defaults.
    """

    kind: str
    traits: ModelTraits
    architecture: ModelConfig | None = None
    model_id: str | None = None
    normalization: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    alpha: Mapping[str, float] = field(default_factory=dict)
    dtype: str = "float32"
    code_version: str | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # From the files read, not model.json: left out of equality (a round trip compares equal).
    licence: str | None = field(default=None, compare=False)
    source: str | None = field(default=None, compare=False)
    sha256: str | None = field(default=None, compare=False)

    def describe(self) -> dict[str, Any]:
        """The model's licence, source and weights' SHA-256 (``unknown`` / None where not known;
        a fused model of this project is Apache-2.0)."""
        licence = self.licence or str(self.provenance.get("licence") or "")
        return {"licence": licence or ("Apache-2.0" if self.kind == "fused" else "unknown"),
                "source": self.source or self.provenance.get("source") or self.provenance.get("file"),
                "sha256": self.sha256 or self.provenance.get("sha256")}

    @property
    def task(self) -> str:
        return self.traits.task

    @property
    def scale(self) -> int:
        return self.traits.scale

    @property
    def backbone(self) -> str | None:
        """A fused model's backbone (None for a community model)."""
        return self.architecture.backbone if self.architecture is not None else None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = METADATA_FILE,
                  traits: ModelTraits | None = None) -> ModelMetadata:
        """Validate a parsed ``model.json`` (either format version, either kind). ``traits``: a
        community model's, from its network (a fused model's follow from its architecture).

        Raises:
            CheckpointError: a format version this version does not read, an unknown kind, a
                missing or invalid architecture, a task or scale that disagrees with the
                architecture, an unknown weight dtype, or a community model's without ``traits``
                (or with another architecture's).
        """
        kind = metadata_kind(data, source=source)
        dtype = data.get("dtype", "float32")
        if dtype not in WEIGHT_DTYPES:
            raise CheckpointError(f"{source} has dtype {dtype!r}; expected one of {', '.join(WEIGHT_DTYPES)}")
        model_id = data.get("model_id")
        common = {"model_id": None if model_id is None else str(model_id), "dtype": dtype,
                  "code_version": data.get("code_version"), "provenance": dict(data.get("provenance") or {}),
                  "format_version": int(data["format_version"])}
        if kind == "community":
            named = data.get("architecture")
            if traits is None:
                raise CheckpointError(f"{source} describes a community model ({named}): its traits come from "
                                      "its weights (load it with load_checkpoint)")
            if named is not None and named != traits.architecture:
                raise CheckpointError(f"{source} says architecture {named!r} but its weights are "
                                      f"{traits.architecture!r}")
            return cls(kind=kind, traits=traits, **common)
        if not isinstance(data.get("architecture"), Mapping):
            raise CheckpointError(f"{source} has no architecture")
        try:
            architecture = ModelConfig.from_dict(dict(data["architecture"]))
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{source} has an invalid architecture: {error}") from error
        for name in ("task", "scale"):
            if name in data and data[name] != getattr(architecture, name):
                raise CheckpointError(
                    f"{source} says {name} {data[name]!r} but its architecture has {getattr(architecture, name)!r}"
                )
        backbone = data.get("backbone") or {}
        normalization = {key: tuple(float(v) for v in values)
                         for key, values in (backbone.get("normalization") or {}).items()}
        return cls(
            kind=kind,
            traits=fused_traits(architecture),
            architecture=architecture,
            normalization=normalization,
            alpha={str(stride): float(value) for stride, value in (data.get("alpha") or {}).items()},
            **common,
        )

    @classmethod
    def from_json(cls, text: bytes | str, *, source: str = METADATA_FILE,
                  traits: ModelTraits | None = None) -> ModelMetadata:
        """Parse and validate ``model.json``'s contents (raises :class:`CheckpointError`)."""
        return cls.from_dict(parse_json(text, source=source), source=source, traits=traits)

    @classmethod
    def of_model(cls, model: RestorationModel, *, model_id: str | None = None,
                 provenance: Mapping[str, Any] | None = None, half: bool = False) -> ModelMetadata:
        """The metadata of ``model`` as it is now (a fused model's current alphas)."""
        common = {"model_id": model_id, "dtype": "float16" if half else "float32", "code_version": __version__,
                  "provenance": dict(provenance or {})}
        if isinstance(model, FusedRestorationNet):
            return cls(kind="fused", traits=model.traits, architecture=model.config,
                       normalization={key: tuple(values) for key, values in model.backbone.normalization.items()},
                       alpha=model.alphas(), **common)
        return cls(kind="community", traits=model.traits, **common)

    def to_dict(self) -> dict[str, Any]:
        """The ``model.json`` layout (:data:`FORMAT_VERSION`; JSON types only)."""
        data: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "model_id": self.model_id,
            "task": self.task,
            "scale": self.scale,
            "code_version": self.code_version,
            "dtype": self.dtype,
            "provenance": dict(self.provenance),
        }
        if self.architecture is None:
            data["architecture"] = self.traits.architecture
            return data
        data["architecture"] = self.architecture.to_dict()
        data["backbone"] = {"name": self.architecture.backbone,
                            "normalization": {key: list(values) for key, values in self.normalization.items()}}
        data["alpha"] = dict(self.alpha)
        return data

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode()


def parse_json(text: bytes | str, *, source: str = METADATA_FILE) -> Any:
    """``model.json``'s contents parsed (raises :class:`CheckpointError` for invalid JSON)."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{source} is not valid JSON: {exc}") from exc

"""Checkpoints: ``model.safetensors`` (weights) and ``model.json`` (everything else).

``model.json`` holds the architecture (``ModelConfig``), the task, the fusion alphas, the input
normalization of the backbone and the training provenance (data URI, steps, seed, wall time,
hardware, validation metrics, code version); :class:`CheckpointMetadata` is its typed form.
Loading never unpickles: weights are safetensors and metadata is JSON.

One API, three kinds of source:

- a folder holding the two files (``load_checkpoint("runs/my-model")``);
- a URI of such a folder, ``file://`` or ``s3://`` (read through :mod:`restoration.io.storage`);
- the two files' contents, :class:`CheckpointBytes` (:func:`read_checkpoint_bytes`,
  :func:`checkpoint_to_bytes`), which is how a model crosses process boundaries (e.g. Ray's
  object store) without temporary files: :func:`checkpoint_from_bytes` builds it again.

``--model default`` resolves to the checkpoint shipped inside the package for the task
(``restoration/weights/<task>/``).
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from restoration import __version__
from restoration.io import storage
from restoration.models.community import (
    CommunityMetadata,
    CommunityNet,
    is_community_file,
    load_community_model,
)
from restoration.models.fused import FusedRestorationNet, ModelConfig, build_model
from restoration.models.weight_files import read_state_dict_bytes

__all__ = [
    "FORMAT_VERSION",
    "METADATA_FILE",
    "SHIPPED_DIR",
    "WEIGHTS_FILE",
    "Checkpoint",
    "CheckpointBytes",
    "CheckpointError",
    "CheckpointMetadata",
    "checkpoint_from_bytes",
    "checkpoint_to_bytes",
    "load_checkpoint",
    "load_weights",
    "read_checkpoint_bytes",
    "read_metadata",
    "read_model_metadata",
    "resolve_model",
    "save_checkpoint",
    "shipped_checkpoint",
    "read_weights",
]

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "model.json"
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "weights"
WEIGHT_DTYPES = ("float32", "float16")
"""How floating-point weights are stored; loading always gives float32."""


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or does not fit the requested architecture."""


@dataclass(frozen=True)
class CheckpointMetadata:
    """The fields of ``model.json``.

    Attributes:
        architecture: the network's :class:`ModelConfig` (task, scale, backbone, widths, ...).
        model_id: a short identifier for manifests and reports (None: the folder's name).
        normalization: the backbone's input normalization, ``{"mean": (r, g, b), "std": (r, g, b)}``
            on the [0, 1] scale.
        alpha: fusion weight of the pretrained branch per stride, in [0, 1], keyed ``"2"``, ``"4"``, ...
        dtype: how floating-point weights are stored, ``float32`` or ``float16``.
        code_version: the ``restoration`` version that wrote it.
        provenance: how it was trained (data URI, steps, seed, wall time, hardware, validation
            metrics, ...); free-form JSON.
        format_version: layout version of ``model.json`` (:data:`FORMAT_VERSION`).
    """

    architecture: ModelConfig
    model_id: str | None = None
    normalization: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    alpha: Mapping[str, float] = field(default_factory=dict)
    dtype: str = "float32"
    code_version: str | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def task(self) -> str:
        return self.architecture.task

    @property
    def scale(self) -> int:
        return self.architecture.scale

    @property
    def backbone(self) -> str:
        return self.architecture.backbone

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = METADATA_FILE) -> CheckpointMetadata:
        """Validate a parsed ``model.json``.

        Raises:
            CheckpointError: another format version, a missing or invalid architecture, a task
                or scale that disagrees with the architecture, or an unknown weight dtype.
        """
        if not isinstance(data, Mapping):
            raise CheckpointError(f"{source} must hold a JSON object, got {type(data).__name__}")
        if data.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{source} has format_version {data.get('format_version')!r}; this version reads {FORMAT_VERSION}"
            )
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
        dtype = data.get("dtype", "float32")
        if dtype not in WEIGHT_DTYPES:
            raise CheckpointError(f"{source} has dtype {dtype!r}; expected one of {', '.join(WEIGHT_DTYPES)}")
        backbone = data.get("backbone") or {}
        normalization = {key: tuple(float(v) for v in values)
                         for key, values in (backbone.get("normalization") or {}).items()}
        model_id = data.get("model_id")
        return cls(
            architecture=architecture,
            model_id=None if model_id is None else str(model_id),
            normalization=normalization,
            alpha={str(stride): float(value) for stride, value in (data.get("alpha") or {}).items()},
            dtype=dtype,
            code_version=data.get("code_version"),
            provenance=dict(data.get("provenance") or {}),
            format_version=FORMAT_VERSION,
        )

    @classmethod
    def from_json(cls, text: bytes | str, *, source: str = METADATA_FILE) -> CheckpointMetadata:
        """Parse and validate ``model.json``'s contents (raises :class:`CheckpointError`)."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{source} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, source=source)

    @classmethod
    def of_model(cls, model: FusedRestorationNet, *, model_id: str | None = None,
                 provenance: Mapping[str, Any] | None = None, half: bool = False) -> CheckpointMetadata:
        """The metadata of ``model`` as it is now (its current alphas)."""
        return cls(
            architecture=model.config,
            model_id=model_id,
            normalization={key: tuple(values) for key, values in model.backbone.normalization.items()},
            alpha=model.alphas(),
            dtype="float16" if half else "float32",
            code_version=__version__,
            provenance=dict(provenance or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``model.json`` layout (JSON types only)."""
        return {
            "format_version": self.format_version,
            "model_id": self.model_id,
            "task": self.task,
            "scale": self.scale,
            "architecture": self.architecture.to_dict(),
            "backbone": {"name": self.backbone,
                         "normalization": {key: list(values) for key, values in self.normalization.items()}},
            "alpha": dict(self.alpha),
            "code_version": self.code_version,
            "dtype": self.dtype,
            "provenance": dict(self.provenance),
        }

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class CheckpointBytes:
    """A checkpoint as the contents of its two files: what is shipped between processes.

    ``weights``: ``model.safetensors``; ``metadata``: ``model.json`` (UTF-8 JSON); ``source``:
    where it was read from, credentials redacted (for messages, and the model id when
    ``model.json`` has none). ``kind`` ``community``: a community model's weight file
    (``weights`` is the file, ``metadata`` empty; :mod:`restoration.models.community`).
    """

    weights: bytes
    metadata: bytes
    source: str = "bytes"
    kind: str = "checkpoint"

    def read_metadata(self) -> CheckpointMetadata:
        """The typed metadata (validated; raises :class:`CheckpointError`)."""
        return CheckpointMetadata.from_json(self.metadata, source=_join(self.source, METADATA_FILE))


@dataclass
class Checkpoint:
    """A loaded checkpoint: a float32 model in eval mode and its typed metadata.

    ``path`` is the local folder it was loaded from (None for URIs and bytes); ``source`` names
    where it came from in any case (credentials redacted).
    """

    model: FusedRestorationNet | CommunityNet
    metadata: CheckpointMetadata | CommunityMetadata
    path: Path | None = None
    source: str | None = None

    @property
    def model_id(self) -> str:
        """A short identifier for manifests and reports: ``model.json``'s, else the folder's name."""
        if self.metadata.model_id:
            return self.metadata.model_id
        if self.path is not None:
            return self.path.name
        if self.source and self.source != "bytes":
            return posixpath.basename(self.source.rstrip("/")) or "unsaved"
        return "unsaved"


def _join(source: str, name: str) -> str:
    return storage.join(source, name) if "://" in source else str(Path(source) / name)


def _is_uri(source: str | Path) -> bool:
    return isinstance(source, str) and "://" in source


def checkpoint_to_bytes(
    model: FusedRestorationNet,
    *,
    model_id: str | None = None,
    provenance: Mapping[str, Any] | None = None,
    half: bool = False,
) -> CheckpointBytes:
    """Serialize ``model`` as the two files' contents (nothing is written).

    Args:
        half: store floating-point weights as float16 (shipped models); loading restores float32.
    """
    community = isinstance(model, CommunityNet)
    state = {}
    # A community model's weights under the architecture's own names: the file spandrel loads.
    for name, tensor in (model.net if community else model).state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        state[name] = tensor
    if community:
        traits = model.traits
        metadata = (json.dumps({"kind": "community", "architecture": traits.architecture, "task": traits.task,
                                "scale": traits.scale, "model_id": model_id or model.model_id,
                                "dtype": "float16" if half else "float32", "code_version": __version__,
                                "provenance": dict(provenance or {}), "format_version": FORMAT_VERSION},
                               indent=2, sort_keys=True) + "\n").encode()
        return CheckpointBytes(weights=save_safetensors(state), metadata=metadata)
    metadata = CheckpointMetadata.of_model(model, model_id=model_id, provenance=provenance, half=half)
    return CheckpointBytes(weights=save_safetensors(state), metadata=metadata.to_json())


def save_checkpoint(
    model: FusedRestorationNet,
    directory: str | Path,
    *,
    provenance: dict[str, Any] | None = None,
    half: bool = False,
    model_id: str | None = None,
) -> Path:
    """Write ``model.safetensors`` + ``model.json`` into the local ``directory`` (created if
    needed); ``model_id`` defaults to the folder's name.

    Args:
        half: store floating-point weights as float16 (shipped models); loading restores float32.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = checkpoint_to_bytes(model, model_id=model_id or directory.name, provenance=provenance, half=half)
    (directory / WEIGHTS_FILE).write_bytes(data.weights)
    (directory / METADATA_FILE).write_bytes(data.metadata)
    return directory


def save_state_dict_file(model: FusedRestorationNet | CommunityNet, path: str | Path) -> Path:
    """Write the model's weights as one file (``.safetensors``, or ``.pth`` / ``.pt`` through
    ``torch.save``) under its architecture's own names: for a community model, the format it came
    in, which spandrel, chaiNNer and ComfyUI load unchanged."""
    path = Path(path)
    if path.suffix not in (".safetensors", ".pth", ".pt"):
        raise ValueError(f"--output {path}: a state dict is written as .safetensors, .pth or .pt")
    module = model.net if isinstance(model, CommunityNet) else model
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in module.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        path.write_bytes(save_safetensors(state))
    else:
        torch.save(state, path)
    return path


def _check_folder(directory: Path) -> None:
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    if not (directory / METADATA_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{directory} is not a checkpoint: it needs {WEIGHTS_FILE} and {METADATA_FILE}")


def is_community_checkpoint(source: str | Path) -> bool:
    """Whether ``source`` is a community model: a weight file, or a checkpoint folder holding a
    fine-tuned one."""
    return is_community_file(str(source)) or _is_community_folder(source)


def _metadata_bytes(source: str | Path) -> bytes | None:
    """The ``model.json`` of the checkpoint folder at ``source`` (local or URI); None when it has none."""
    try:
        if _is_uri(source):
            return storage.read_bytes(storage.join(str(source), METADATA_FILE))
        return (Path(source) / METADATA_FILE).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _is_community_folder(source: str | Path) -> bool:
    """Whether the checkpoint folder at ``source`` holds a fine-tuned community model."""
    text = _metadata_bytes(source)
    return text is not None and _community_checkpoint(CheckpointBytes(weights=b"", metadata=text)) is not None


def _community_checkpoint(data: CheckpointBytes) -> dict[str, Any] | None:
    """The ``model.json`` of a checkpoint folder holding a fine-tuned community model, else None."""
    try:
        parsed = json.loads(data.metadata)
    except ValueError:
        return None  # CheckpointMetadata.from_json says what is wrong
    return parsed if isinstance(parsed, dict) and parsed.get("kind") == "community" else None


def _read_community_file(source: str | Path) -> CheckpointBytes:
    """A community model's weight file (local or URI) as :class:`CheckpointBytes`."""
    shown = storage.redact(str(source))
    try:
        data = storage.read_bytes(str(source)) if _is_uri(source) else Path(source).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise CheckpointError(f"model file not found: {shown}") from None
    return CheckpointBytes(weights=data, metadata=b"", source=shown, kind="community")


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """``model.json`` of a local checkpoint folder as a plain mapping, after checking that the
    folder is a checkpoint of this format version (:class:`CheckpointMetadata` is the typed
    form: ``read_checkpoint_bytes(directory).read_metadata()``)."""
    directory = Path(directory)
    _check_folder(directory)
    meta_path = directory / METADATA_FILE
    try:
        metadata = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(metadata, dict) or metadata.get("format_version") != FORMAT_VERSION:
        found = metadata.get("format_version") if isinstance(metadata, dict) else None
        raise CheckpointError(f"{meta_path} has format_version {found!r}; this version reads {FORMAT_VERSION}")
    return metadata


def read_checkpoint_bytes(source: str | Path) -> CheckpointBytes:
    """The two files of the checkpoint at ``source``: a local folder, or a ``file://`` /
    ``s3://`` URI of one. Nothing is parsed yet.

    Raises:
        CheckpointError: no such folder, or one of the two files is missing.
        OSError: the storage could not be reached (e.g. an S3 endpoint that does not answer).
    """
    if is_community_file(str(source)):
        return _read_community_file(source)
    if not _is_uri(source):
        directory = Path(source)
        _check_folder(directory)
        return CheckpointBytes(weights=(directory / WEIGHTS_FILE).read_bytes(),
                               metadata=(directory / METADATA_FILE).read_bytes(), source=str(directory))
    uri = str(source)
    try:
        files = {name: storage.read_bytes(storage.join(uri, name)) for name in (METADATA_FILE, WEIGHTS_FILE)}
    except FileNotFoundError as error:
        raise CheckpointError(
            f"{storage.redact(uri)} is not a checkpoint: it needs {WEIGHTS_FILE} and {METADATA_FILE}"
        ) from error
    return CheckpointBytes(weights=files[WEIGHTS_FILE], metadata=files[METADATA_FILE], source=storage.redact(uri))


def checkpoint_from_bytes(data: CheckpointBytes, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Build the float32 model (eval mode) of a :class:`CheckpointBytes`.

    Raises:
        CheckpointError: invalid ``model.json``, unreadable weights, or weights that do not fit
            the architecture it describes.
    """
    local = None if data.source == "bytes" or "://" in data.source else Path(data.source)
    saved = _community_checkpoint(data)
    if data.kind == "community" or saved is not None:  # a weight file, or one fine-tuned by this project
        try:
            if saved is None:
                state = read_state_dict_bytes(data.weights, name=data.source)
            else:
                state = {k: v.float() for k, v in load_safetensors(data.weights).items()}
            model, community = load_community_model(state, name=data.source, data=data.weights)
        except (SafetensorError, ValueError) as error:  # WeightFileError too
            raise CheckpointError(f"{data.source}: {error}" if saved is not None else str(error)) from None
        if saved is not None:
            community = dataclasses.replace(community, model_id=saved.get("model_id") or community.model_id,
                                            provenance=dict(saved.get("provenance") or {}))
            model.model_id = community.model_id
        return Checkpoint(model=model.to(map_location), metadata=community, path=local if saved else None,
                          source=data.source)
    metadata = data.read_metadata()
    # The checkpoint carries the (fine-tuned) backbone weights: no ImageNet download needed.
    model = build_model(metadata.architecture, backbone_weights=None)
    try:
        state = load_safetensors(data.weights)
    except (SafetensorError, ValueError) as error:
        raise CheckpointError(f"{_join(data.source, WEIGHTS_FILE)} is not a readable safetensors file: {error}") from error
    state = {k: v.float().to(map_location) if v.is_floating_point() else v.to(map_location) for k, v in state.items()}
    load_weights(model, state, source=data.source)
    return Checkpoint(model=model.eval(), metadata=metadata, path=local, source=data.source)


def load_checkpoint(source: str | Path | CheckpointBytes, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint into a float32 model in eval mode, from a local folder, a ``file://`` or
    ``s3://`` URI of one, or :class:`CheckpointBytes`.

    Raises:
        CheckpointError: missing, incomplete or invalid checkpoint (see :func:`read_checkpoint_bytes`,
            :func:`checkpoint_from_bytes`).
    """
    data = source if isinstance(source, CheckpointBytes) else read_checkpoint_bytes(source)
    return checkpoint_from_bytes(data, map_location=map_location)


def load_weights(model: FusedRestorationNet | CommunityNet, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load a state dict, failing with a clear message when the architecture does not match (a
    community model's under its architecture's own names, as its checkpoints store them)."""
    if isinstance(model, CommunityNet):
        model = model.net
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if mismatched:
            k = mismatched[0]
            details.append(f"{len(mismatched)} with other shapes (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise CheckpointError(f"weights in {source} do not fit this architecture: " + "; ".join(details))
    model.load_state_dict(state)


def shipped_checkpoint(task: str) -> Path:
    """The checkpoint shipped in the package for ``task``, or a CheckpointError saying none is."""
    from restoration.tasks.specs import TASK_NAMES

    if task not in TASK_NAMES:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASK_NAMES)}")
    path = SHIPPED_DIR / task
    if not (path / WEIGHTS_FILE).is_file():
        shipped = sorted(p.name for p in SHIPPED_DIR.glob("*") if (p / WEIGHTS_FILE).is_file()) if SHIPPED_DIR.is_dir() else []
        raise CheckpointError(
            f"no default model is shipped for task {task!r} yet"
            + (f" (shipped: {', '.join(shipped)})" if shipped else " (none is shipped in this version)")
            + "; pass a checkpoint directory with --model, or train one with `restoration finetune`"
        )
    return path


def resolve_model(spec: str, task: str) -> Path | str:
    """Turn ``--model`` into what :func:`load_checkpoint` reads: ``default`` becomes the shipped
    checkpoint folder of ``task``, a ``file://`` or ``s3://`` URI stays a URI (str), anything
    else is a local folder (Path)."""
    if spec == "default":
        return shipped_checkpoint(task)
    if _is_uri(spec):
        return spec
    return Path(spec)


def read_model_metadata(source: str | Path) -> tuple[CheckpointMetadata, str]:
    """The typed ``model.json`` of a checkpoint folder (local, ``file://`` or ``s3://``) alone:
    no weights read, no model built. Returns it with the source as shown to users (credentials
    redacted). Raises CheckpointError for a folder that is not a checkpoint. A community model
    file is read and built whole (it has no separate metadata)."""
    if is_community_file(str(source)):
        checkpoint = checkpoint_from_bytes(_read_community_file(source))
        return checkpoint.metadata, checkpoint.source or str(source)
    shown = storage.redact(str(source)) if _is_uri(source) else str(source)
    data = _metadata_bytes(source)
    if data is None:
        raise CheckpointError(f"{shown} is not a checkpoint: it has no {METADATA_FILE}")
    metadata = CheckpointBytes(weights=b"", metadata=data, source=shown)
    if _community_checkpoint(metadata) is not None:  # a fine-tuned community model: built to be described
        checkpoint = load_checkpoint(source)
        return checkpoint.metadata, checkpoint.source or shown
    return metadata.read_metadata(), shown


def read_weights(source: str | Path | CheckpointBytes) -> dict[str, torch.Tensor]:
    """A checkpoint's weights as float32 tensors (integer buffers as they are), without building
    its model: for copying what fits into another architecture (task transfer)."""
    data = source if isinstance(source, CheckpointBytes) else read_checkpoint_bytes(source)
    try:
        state = load_safetensors(data.weights)
    except (SafetensorError, ValueError) as error:
        raise CheckpointError(f"{_join(data.source, WEIGHTS_FILE)} is not a readable safetensors file: {error}") from error
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}

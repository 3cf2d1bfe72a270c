"""Checkpoints: ``model.safetensors`` (weights) and ``model.json`` (everything else).

``model.safetensors`` holds the weights under the architecture's own names
(:meth:`RestorationModel.export_state_dict`); ``model.json`` the kind of model, its architecture,
task and scale, a fused model's fusion alphas and backbone normalization, and the training
provenance (data URI, steps, seed, wall time, hardware, validation metrics, code version):
:class:`restoration.models.metadata.ModelMetadata` is its typed form, and says which layouts are
read. Loading never unpickles: weights are safetensors and metadata is JSON. Any kind of model
(:class:`restoration.models.interface.RestorationModel`) is saved, loaded, exported and started
from (:func:`start_model`, :func:`resumed_model`) here; callers never ask which kind it is.

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
import hashlib
import json
import logging
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from restoration.io import storage
from restoration.models.catalog import CATALOG, named_model_of, named_model_path
from restoration.models.community import (
    NON_COMMERCIAL,
    CommunityNet,
    architecture_licence,
    detected_licence,
    is_community_file,
    is_non_commercial,
    load_community_model,
)
from restoration.models.fused import ModelConfig, build_model
from restoration.models.interface import RestorationModel
from restoration.models.metadata import (
    FORMAT_VERSION,
    METADATA_FILE,
    READABLE_FORMAT_VERSIONS,
    WEIGHT_DTYPES,
    CheckpointError,
    ModelMetadata,
    metadata_kind,
    parse_json,
)
from restoration.models.ncnn import NCNN_SUFFIX, is_pro_name, state_dict_from_ncnn
from restoration.models.weight_files import read_state_dict_bytes

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT_VERSION",
    "METADATA_FILE",
    "READABLE_FORMAT_VERSIONS",
    "SHIPPED_DIR",
    "WEIGHTS_FILE",
    "Checkpoint",
    "CheckpointBytes",
    "CheckpointError",
    "ModelMetadata",
    "check_licence",
    "checkpoint_from_bytes",
    "checkpoint_to_bytes",
    "load_checkpoint",
    "load_weights",
    "model_licence",
    "read_checkpoint_bytes",
    "read_metadata",
    "read_model_metadata",
    "resolve_model",
    "resumed_model",
    "save_checkpoint",
    "save_state_dict_file",
    "start_model",
    "shipped_checkpoint",
    "read_weights",
    "WEIGHT_DTYPES",
]

WEIGHTS_FILE = "model.safetensors"
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "weights"

@dataclass(frozen=True)
class CheckpointBytes:
    """A checkpoint as the contents of its two files: what is shipped between processes.

    ``weights``: ``model.safetensors``; ``metadata``: ``model.json`` (UTF-8 JSON); ``source``:
    where it was read from, credentials redacted (for messages, and the model id when
    ``model.json`` has none). ``kind`` ``community``: a community model's weight file
    (``weights`` is the file, ``metadata`` empty; :mod:`restoration.models.community`), not a
    checkpoint folder.
    """

    weights: bytes
    metadata: bytes
    source: str = "bytes"
    kind: str = "checkpoint"

    def read_metadata(self) -> ModelMetadata:
        """The typed metadata of a fused model's checkpoint (validated; raises
        :class:`CheckpointError`, also for a community model's, whose traits need its weights:
        :func:`checkpoint_from_bytes` builds both)."""
        return ModelMetadata.from_json(self.metadata, source=self.metadata_source)

    @property
    def metadata_source(self) -> str:
        """``model.json``'s location, for messages."""
        return _join(self.source, METADATA_FILE)

    def metadata_kind(self) -> str:
        """The kind of model ``model.json`` describes (``fused`` or ``community``); a weight
        file's is ``community``."""
        if self.kind == "community":
            return "community"
        return metadata_kind(parse_json(self.metadata, source=self.metadata_source), source=self.metadata_source)


@dataclass
class Checkpoint:
    """A loaded checkpoint: a float32 model in eval mode and its typed metadata.

    ``path`` is the local folder it was loaded from (None for URIs and bytes); ``source`` names
    where it came from in any case (credentials redacted).
    """

    model: RestorationModel
    metadata: ModelMetadata
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
    model: RestorationModel,
    *,
    model_id: str | None = None,
    provenance: Mapping[str, Any] | None = None,
    half: bool = False,
) -> CheckpointBytes:
    """Serialize ``model`` as the two files' contents (nothing is written): its weights under its
    architecture's own names (a community model's: the file spandrel loads) and ``model.json`` in
    the current layout; ``model_id`` defaults to the model's.

    Args:
        half: store floating-point weights as float16 (shipped models); loading restores float32.
    """
    state = {}
    for name, tensor in model.export_state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        state[name] = tensor
    metadata = ModelMetadata.of_model(model, model_id=model_id or model.model_id, provenance=provenance, half=half)
    return CheckpointBytes(weights=save_safetensors(state), metadata=metadata.to_json())


def save_checkpoint(
    model: RestorationModel,
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


def save_state_dict_file(model: RestorationModel, path: str | Path) -> Path:
    """Write the model's weights as one file (``.safetensors``, or ``.pth`` / ``.pt`` through
    ``torch.save``) under its architecture's own names: for a community model, the format it came
    in, which spandrel, chaiNNer and ComfyUI load unchanged."""
    path = Path(path)
    if path.suffix not in (".safetensors", ".pth", ".pt"):
        raise ValueError(f"--output {path}: a state dict is written as .safetensors, .pth or .pt")
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.export_state_dict().items()}
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


def _metadata_bytes(source: str | Path) -> bytes | None:
    """The ``model.json`` of the checkpoint folder at ``source`` (local or URI); None when it has none."""
    try:
        if _is_uri(source):
            return storage.read_bytes(storage.join(str(source), METADATA_FILE))
        return (Path(source) / METADATA_FILE).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _read_community_file(source: str | Path) -> CheckpointBytes:
    """A community model's weight file (local or URI) as :class:`CheckpointBytes`; an ncnn
    ``.param`` graph with the ``.bin`` beside it (the ``.bin`` as ``weights``, the graph as
    ``metadata``)."""
    shown = storage.redact(str(source))
    files = [str(source)]
    if str(source).lower().endswith(NCNN_SUFFIX):
        files.append(str(source)[: -len(NCNN_SUFFIX)] + ".bin")
    try:
        data = [storage.read_bytes(f) if _is_uri(source) else Path(f).read_bytes() for f in files]
    except (FileNotFoundError, IsADirectoryError) as error:
        missing = storage.redact(str(error.filename or shown))
        raise CheckpointError(f"model file not found: {missing}") from None
    if len(data) == 2:
        return CheckpointBytes(weights=data[1], metadata=data[0], source=shown, kind="community")
    return CheckpointBytes(weights=data[0], metadata=b"", source=shown, kind="community")


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """``model.json`` of a local checkpoint folder as a plain mapping, after checking that the
    folder is a checkpoint of a format version this version reads (:class:`ModelMetadata` is
    the typed form: ``load_checkpoint(directory).metadata``, or :func:`read_model_metadata`)."""
    directory = Path(directory)
    _check_folder(directory)
    meta_path = directory / METADATA_FILE
    try:
        metadata = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON: {exc}") from exc
    metadata_kind(metadata, source=str(meta_path))
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
    """Build the float32 model (eval mode) of a :class:`CheckpointBytes`, whatever its kind.

    Raises:
        CheckpointError: invalid ``model.json``, unreadable weights, or weights that do not fit
            the architecture it describes.
    """
    local = None if data.source == "bytes" or "://" in data.source else Path(data.source)
    if data.kind == "community":  # a weight file: no model.json
        try:
            if data.source.lower().endswith(NCNN_SUFFIX):  # an ncnn graph: its id and hash cover both files
                state, _ = state_dict_from_ncnn(data.metadata, data.weights, name=data.source,
                                                pro=is_pro_name(data.source))
                model, provenance = load_community_model(state, name=data.source, data=data.metadata + data.weights)
            else:
                state = read_state_dict_bytes(data.weights, name=data.source)
                model, provenance = load_community_model(state, name=data.source, data=data.weights)
        except ValueError as error:  # WeightFileError too
            raise CheckpointError(str(error)) from None
        named = named_model_of(data.source) if local is not None else None
        metadata = ModelMetadata(kind="community", traits=model.traits, model_id=model.model_id,
                                 provenance=provenance, licence=named.licence if named else provenance["licence"],
                                 source=named.source if named else data.source, sha256=provenance["sha256"])
        return Checkpoint(model=model.to(map_location), metadata=metadata, path=None, source=data.source)
    parsed = parse_json(data.metadata, source=data.metadata_source)
    if metadata_kind(parsed, source=data.metadata_source) == "community":  # fine-tuned by this project
        try:
            state = {k: v.float() for k, v in load_safetensors(data.weights).items()}
            model, found = load_community_model(state, name=data.source, data=data.weights)
        except (SafetensorError, ValueError) as error:
            raise CheckpointError(f"{data.source}: {error}") from None
        metadata = ModelMetadata.from_dict(parsed, source=data.metadata_source, traits=model.traits)
        metadata = dataclasses.replace(metadata, model_id=metadata.model_id or model.model_id,
                                       licence=str(metadata.provenance.get("licence") or found["licence"]),
                                       source=data.source, sha256=found["sha256"])
        model = model.to(map_location)
    else:
        metadata = ModelMetadata.from_dict(parsed, source=data.metadata_source)
        # The checkpoint carries the (fine-tuned) backbone weights: no ImageNet download needed.
        model = build_model(metadata.architecture, backbone_weights=None)
        try:
            state = load_safetensors(data.weights)
        except (SafetensorError, ValueError) as error:
            raise CheckpointError(f"{_join(data.source, WEIGHTS_FILE)} is not a readable safetensors file: {error}") from error
        state = {k: v.float().to(map_location) if v.is_floating_point() else v.to(map_location) for k, v in state.items()}
        load_weights(model, state, source=data.source)
        metadata = dataclasses.replace(metadata, licence="Apache-2.0", source=_fused_source(local, data.source),
                                       sha256=hashlib.sha256(data.weights).hexdigest())
    checkpoint = Checkpoint(model=model.eval(), metadata=metadata, path=local, source=data.source)
    model.model_id = checkpoint.model_id
    return checkpoint


def _fused_source(local: Path | None, source: str) -> str:
    """Where a fused model's weights come from: the project's shipped weights, or a checkpoint."""
    if local is not None and local.resolve().parent == SHIPPED_DIR:
        return f"restoration: shipped weights restoration/weights/{local.name}"
    return f"restoration checkpoint {source}"


def load_checkpoint(source: str | Path | CheckpointBytes, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint into a float32 model in eval mode, from a local folder, a ``file://`` or
    ``s3://`` URI of one, or :class:`CheckpointBytes`.

    Raises:
        CheckpointError: missing, incomplete or invalid checkpoint (see :func:`read_checkpoint_bytes`,
            :func:`checkpoint_from_bytes`).
    """
    data = source if isinstance(source, CheckpointBytes) else read_checkpoint_bytes(source)
    return checkpoint_from_bytes(data, map_location=map_location)


def load_weights(model: RestorationModel, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load a state dict named as :meth:`RestorationModel.export_state_dict` names it (a
    community model's under its architecture's own names, as its checkpoints store them), failing
    with a clear message when the architecture does not match."""
    own = model.export_state_dict()
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
    model.load_export_state_dict(state)


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
    checkpoint folder of ``task``, a ``file://`` or ``s3://`` URI stays a URI (str), a model
    name (``restoration models``; :mod:`restoration.models.catalog`) becomes its converted
    ``.safetensors`` file in the cache, anything else is a local folder or file (Path)."""
    if spec == "default":
        return shipped_checkpoint(task)
    if _is_uri(spec):
        return spec
    return named_model_path(spec) or Path(spec)


def read_model_metadata(source: str | Path) -> tuple[ModelMetadata, str]:
    """The typed ``model.json`` of a checkpoint folder (local, ``file://`` or ``s3://``) alone:
    no weights read, no model built. Returns it with the source as shown to users (credentials
    redacted). Raises CheckpointError for a folder that is not a checkpoint. A community model
    (a weight file, or a folder holding a fine-tuned one) is read and built whole: its traits come
    from its weights."""
    if is_community_file(str(source)):
        checkpoint = checkpoint_from_bytes(_read_community_file(source))
        return checkpoint.metadata, checkpoint.source or str(source)
    shown = storage.redact(str(source)) if _is_uri(source) else str(source)
    data = _metadata_bytes(source)
    if data is None:
        raise CheckpointError(f"{shown} is not a checkpoint: it has no {METADATA_FILE}")
    metadata = CheckpointBytes(weights=b"", metadata=data, source=shown)
    if metadata.metadata_kind() == "community":
        checkpoint = load_checkpoint(source)
        return checkpoint.metadata, checkpoint.source or shown
    return metadata.read_metadata(), shown


def model_licence(spec: str, task: str | None) -> tuple[str, str]:
    """``(licence, source)`` of ``--model`` / ``--init`` ``spec``: ``default`` and named models
    without reading any weights, a fused checkpoint from its ``model.json``, a community model by
    its architecture (read and built: spandrel detects it)."""
    if spec == "default" or spec.startswith("default:"):
        return "Apache-2.0", "restoration: shipped weights"
    if spec in CATALOG and not Path(spec).exists():
        return CATALOG[spec].licence, CATALOG[spec].source
    if _is_student(spec):  # a fresh network: its architecture's licence (a deepened one: its base's)
        from restoration.models.students import STUDENT_ARCHITECTURES, parse_deepen_spec, parse_student_spec

        deepen = parse_deepen_spec(spec)
        if deepen is not None:
            return model_licence(deepen[0], task)
        architecture = STUDENT_ARCHITECTURES[parse_student_spec(spec).architecture].spandrel_name
        return architecture_licence(architecture), f"a fresh {spec} network"
    source = resolve_model(spec, task or "")
    if is_community_file(str(source)) and not str(source).lower().endswith(NCNN_SUFFIX):
        # The architecture is detected, not built: the run builds the model once, later.
        data = _read_community_file(source)
        named = named_model_of(data.source) if not _is_uri(data.source) else None
        if named is not None:
            return named.licence, named.source
        return detected_licence(read_state_dict_bytes(data.weights, name=data.source)), data.source
    if is_community_file(str(source)):
        described = checkpoint_from_bytes(_read_community_file(source)).metadata.describe()
    else:
        metadata, _ = read_model_metadata(source)
        described = metadata.describe()
    return described["licence"], described["source"] or str(spec)


def check_licence(specs: list[str], task: str | None, accepted: str | None, *, flag: str = "--model") -> None:
    """Refuse a non-commercial model unless ``accepted`` is ``non-commercial``
    (``--accept-licence non-commercial``). A spec that is not a readable model is passed over:
    the command's own checks report it, as before.

    Raises:
        CheckpointError: one line naming the model and its licence.
    """
    for spec in specs:
        try:
            licence, _ = model_licence(spec, task)
        except (ValueError, OSError):
            continue  # not a readable model: the command's own checks say so, in their words
        if is_non_commercial(licence) and accepted != NON_COMMERCIAL:
            raise CheckpointError(f"{flag} {spec} is licensed {licence} (not for commercial use); pass "
                                  f"--accept-licence {NON_COMMERCIAL} to run it")


# --------------------------------------------------------------------------------------------
# Where fine-tuning starts


def start_model(network: ModelConfig, init: str | Path | None = None, *,
                backbone_weights: str | None = "imagenet", resume: str | Path | None = None) -> RestorationModel:
    """The model a fine-tuning run starts from, in training mode: the fused network of
    ``network`` (the run's architecture, task and scale) with ``backbone_weights``, or what
    ``--init`` says.

    ``init``: a checkpoint folder or URI, a community model file, or ``"default"`` (the shipped
    model of the task). A fused checkpoint transfers every weight whose name and shape fit
    (e.g. a denoiser's backbone, encoder, fusion and decoder initialize a JPEG model); a
    community model (a file, or a folder holding one fine-tuned earlier) is the whole network with
    its pretrained weights, checked against the run's task and scale. ``resume``: the local folder
    of the checkpoint a run resumes from, whose own kind and architecture win over ``init``
    (:func:`resumed_model`; the trainer then loads its weights and state).

    Raises:
        CheckpointError: ``init`` is not a checkpoint; a fused one of another backbone, widths,
            fusion strides or blocks per stage than ``network``; a community model that cannot do
            the task, of another scale, or one that cannot be fine-tuned.
    """
    if resume is not None:
        return resumed_model(resume, network)
    if init is None:
        return build_model(network, backbone_weights=backbone_weights)
    if isinstance(init, str) and _is_student(init):  # a fresh network of a short spec (distillation)
        from restoration.models.students import build_student, deepen_compact, parse_deepen_spec, parse_student_spec

        deepen = parse_deepen_spec(init)
        try:
            if deepen is not None:  # a trained Compact made deeper
                return _community_start(network, deepen_compact(start_model(network, deepen[0]), deepen[1]), init)
            student = build_student(parse_student_spec(init), scale=network.scale)
        except ValueError as error:
            raise CheckpointError(f"student {init}: {error}") from None
        return _community_start(network, student, init)
    if str(init) == "default":
        init = resolve_model("default", network.task)
    elif isinstance(init, str):
        init = named_model_path(init) or init  # a model name: its cached file (converted here if needed)
    files = read_checkpoint_bytes(init)
    shown = storage.redact(str(init))
    if files.metadata_kind() == "community":
        return _community_start(network, checkpoint_from_bytes(files).model, shown)
    source = files.read_metadata().architecture
    keys = ("backbone", "widths", "fuse_strides", "blocks_per_stage")
    if any(getattr(source, k) != getattr(network, k) for k in keys):
        def describe(c: ModelConfig) -> str:
            return ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k in keys for v in [getattr(c, k)])

        raise CheckpointError(
            f"--init {init} has architecture {describe(source)}; this run needs {describe(network)} "
            f"(set {' / '.join('model.' + k for k in keys)} to match)"
        )
    state = read_weights(files)
    model = build_model(network, backbone_weights=None)
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(fitting))
    model.load_state_dict(fitting, strict=False)
    if skipped:
        log.info("--init: %d tensors not transferred (task-specific): %s", len(skipped), ", ".join(skipped[:5]))
    return model


def _is_student(spec: str) -> bool:
    from restoration.models.students import is_student_spec

    return is_student_spec(spec)


def _community_start(network: ModelConfig, model: RestorationModel, shown: str) -> RestorationModel:
    """A community model to fine-tune, checked against the run's task and scale."""
    traits = model.traits
    misfit = traits.misfit(network.task)
    if misfit is not None:
        raise CheckpointError(f"{shown} is {misfit}, but --task is {network.task!r}")
    if traits.scale != network.scale:
        raise CheckpointError(f"{shown} upscales x{traits.scale}, but this run trains x"
                              f"{network.scale}; set degradation.scale={traits.scale}")
    refused = model.not_fine_tunable() if isinstance(model, CommunityNet) else None
    if refused is not None:
        raise CheckpointError(f"--init {shown}: {refused}")
    return model.train()


def resumed_model(directory: str | Path, network: ModelConfig) -> RestorationModel:
    """The model a run resumes with from its checkpoint folder ``directory`` (local), in training
    mode, for the trainer to load the checkpoint's weights and state into: of the checkpoint's own
    kind and architecture (a community model's is detected from its weights), whatever ``--init``
    was; a fused one is ``network`` (the trainer says so when the checkpoint's run had another).

    Raises:
        CheckpointError: ``directory`` is not a checkpoint.
    """
    text = _metadata_bytes(directory)
    if text is None:
        raise CheckpointError(f"{directory} is not a checkpoint: it has no {METADATA_FILE}")
    if CheckpointBytes(weights=b"", metadata=text, source=str(directory)).metadata_kind() == "community":
        return load_checkpoint(directory).model.train()
    return build_model(network, backbone_weights=None)


def read_weights(source: str | Path | CheckpointBytes) -> dict[str, torch.Tensor]:
    """A checkpoint's weights as float32 tensors (integer buffers as they are), without building
    its model: for copying what fits into another architecture (task transfer)."""
    data = source if isinstance(source, CheckpointBytes) else read_checkpoint_bytes(source)
    try:
        state = load_safetensors(data.weights)
    except (SafetensorError, ValueError) as error:
        raise CheckpointError(f"{_join(data.source, WEIGHTS_FILE)} is not a readable safetensors file: {error}") from error
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}

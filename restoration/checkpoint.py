"""Checkpoints: a directory with ``model.safetensors`` (weights) and ``model.json`` (everything else).

``model.json`` holds the architecture (``ModelConfig``), the task, the fusion alphas, the input
normalization of the backbone and the training provenance (data URI, steps, seed, wall time,
hardware, validation metrics, code version). Loading never unpickles: weights are safetensors and
metadata is JSON.

``--model default`` resolves to the checkpoint shipped inside the package for the task
(``restoration/weights/<task>/``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import restoration
from restoration.model import FusedRestorationNet, ModelConfig, build_model

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "model.json"
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or does not fit the requested architecture."""


@dataclass
class Checkpoint:
    model: FusedRestorationNet
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def model_id(self) -> str:
        """A short identifier for manifests and reports."""
        return str(self.metadata.get("model_id") or (self.path.name if self.path else "unsaved"))


def save_checkpoint(
    model: FusedRestorationNet,
    directory: str | Path,
    *,
    provenance: dict[str, Any] | None = None,
    half: bool = False,
    model_id: str | None = None,
) -> Path:
    """Write ``model.safetensors`` + ``model.json`` into ``directory`` (created if needed).

    Args:
        half: store floating-point weights as float16 (shipped models); loading restores float32.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        state[name] = tensor
    save_file(state, str(directory / WEIGHTS_FILE))
    metadata = {
        "format_version": FORMAT_VERSION,
        "model_id": model_id or directory.name,
        "task": model.config.task,
        "scale": model.config.scale,
        "architecture": model.config.to_dict(),
        "backbone": {"name": model.config.backbone, "normalization": model.backbone.normalization},
        "alpha": model.alphas(),
        "code_version": restoration.__version__,
        "dtype": "float16" if half else "float32",
        "provenance": provenance or {},
    }
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return directory


def read_metadata(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    meta_path = directory / METADATA_FILE
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    if not meta_path.is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{directory} is not a checkpoint: it needs {WEIGHTS_FILE} and {METADATA_FILE}")
    try:
        metadata = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON: {exc}") from exc
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{meta_path} has format_version {metadata.get('format_version')!r}; this version reads {FORMAT_VERSION}"
        )
    return metadata


def load_checkpoint(directory: str | Path, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint directory into a float32 model in eval mode."""
    directory = Path(directory)
    metadata = read_metadata(directory)
    config = ModelConfig.from_dict(metadata["architecture"])
    # The checkpoint carries the (fine-tuned) backbone weights: no ImageNet download needed.
    model = build_model(config, backbone_weights=None)
    state = load_file(str(directory / WEIGHTS_FILE), device=str(map_location))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    load_weights(model, state, source=str(directory))
    return Checkpoint(model=model.eval(), metadata=metadata, path=directory)


def load_weights(model: FusedRestorationNet, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load a state dict, failing with a clear message when the architecture does not match."""
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
    if task not in restoration.TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(restoration.TASKS)}")
    path = SHIPPED_DIR / task
    if not (path / WEIGHTS_FILE).is_file():
        shipped = sorted(p.name for p in SHIPPED_DIR.glob("*") if (p / WEIGHTS_FILE).is_file()) if SHIPPED_DIR.is_dir() else []
        raise CheckpointError(
            f"no default model is shipped for task {task!r} yet"
            + (f" (shipped: {', '.join(shipped)})" if shipped else " (none is shipped in this version)")
            + "; pass a checkpoint directory with --model, or train one with `restoration finetune`"
        )
    return path


def resolve_model(spec: str, task: str) -> Path:
    """Turn ``--model`` (a checkpoint directory or ``default``) into a checkpoint directory."""
    if spec == "default":
        return shipped_checkpoint(task)
    return Path(spec)

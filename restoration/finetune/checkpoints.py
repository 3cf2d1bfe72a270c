"""Resumable training checkpoints of a run: ``<storage>/<run name>/checkpoint_step_NNNNNNNN/``,
each a model checkpoint (``model.safetensors``, ``model.json``) with the run's ``config.yaml``
and the trainer's state (``trainer_state.pt``, written last: its presence marks a complete
folder); listed, copied, deleted, and the latest of the run's current timeline found.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from restoration.io import outages, storage
from restoration.models.checkpoint import (
    CheckpointError,
    read_metadata,
    read_weights,
    save_checkpoint,
)
from restoration.models.interface import RestorationModel

__all__ = [
    "TRAINER_STATE_FILE",
    "TRAINING_CHECKPOINT_PREFIX",
    "TRAINING_CONFIG_FILE",
    "TrainingCheckpoint",
    "copy_checkpoint",
    "delete_checkpoint",
    "download_checkpoint",
    "drop_checkpoints_after",
    "read_training_checkpoint",
    "read_training_config",
    "save_training_checkpoint",
    "latest_training_checkpoint",
    "training_checkpoint_name",
    "training_checkpoint_step",
    "training_checkpoints",
]

TRAINER_STATE_FILE = "trainer_state.pt"
"""A resumable training checkpoint's optimizer, schedule, step and data position (beside the model)."""
TRAINING_CHECKPOINT_PREFIX = "checkpoint_step_"
TRAINING_CONFIG_FILE = "config.yaml"
"""The run's resolved configuration, beside a training checkpoint and the final model."""


# --------------------------------------------------------------------------------------------
# Resumable training checkpoints: <storage>/<run name>/checkpoint_step_NNNNNNNN/


@dataclass
class TrainingCheckpoint:
    """A resumable training checkpoint, read: the model's weights (on the requested device), the
    trainer's state (step, optimizer, schedule, history; tensors and plain values) and the run's
    config as written (a mapping; None when the folder has no ``config.yaml``)."""

    weights: dict[str, torch.Tensor]
    trainer_state: dict[str, Any]
    config: dict[str, Any] | None


def save_training_checkpoint(directory: str | Path, model: RestorationModel, *, trainer_state: Mapping[str, Any],
                             config_yaml: str, provenance: dict[str, Any] | None = None) -> Path:
    """Write a resumable checkpoint into the local ``directory``: ``model.safetensors`` and
    ``model.json`` (a regular checkpoint, loadable for inference), ``config.yaml``, and
    ``trainer_state.pt`` last (its presence marks a complete folder)."""
    directory = save_checkpoint(model, directory, provenance=provenance)
    (directory / TRAINING_CONFIG_FILE).write_text(config_yaml)
    torch.save(dict(trainer_state), directory / TRAINER_STATE_FILE)
    return directory


def read_training_checkpoint(directory: str | Path, *, map_location: str | torch.device = "cpu") -> TrainingCheckpoint:
    """Read a checkpoint written by :func:`save_training_checkpoint` from a local folder.

    Raises:
        CheckpointError: not a checkpoint, or a model without trainer state.
    """
    directory = Path(directory)
    read_metadata(directory)  # a checkpoint of this format version
    if not (directory / TRAINER_STATE_FILE).is_file():
        raise CheckpointError(f"{directory} has no {TRAINER_STATE_FILE}: it is a model, not a resumable checkpoint")
    config = read_training_config(str(directory))
    weights = {k: v.to(map_location) for k, v in read_weights(directory).items()}
    # weights_only: the trainer state is tensors, numbers, strings, lists and dicts; nothing
    # else is unpickled.
    trainer_state = torch.load(directory / TRAINER_STATE_FILE, map_location=map_location, weights_only=True)
    return TrainingCheckpoint(weights=weights, trainer_state=trainer_state, config=config)


def read_training_config(checkpoint_uri: str) -> dict[str, Any] | None:
    """The ``config.yaml`` of a training checkpoint (local or ``s3://``) as a mapping, or None
    when it is missing or unreadable."""
    import yaml

    try:
        loaded = yaml.safe_load(storage.read_bytes(storage.join(checkpoint_uri, TRAINING_CONFIG_FILE)))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return loaded if isinstance(loaded, dict) else None


def training_checkpoint_name(step: int) -> str:
    """The folder name of a run's checkpoint at ``step``: ``checkpoint_step_00000200``."""
    return f"{TRAINING_CHECKPOINT_PREFIX}{step:08d}"


def training_checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint folder's name or URI (``.../checkpoint_step_00000200`` -> 200),
    or None for any other name."""
    folder = name.rstrip("/").rpartition("/")[2]
    digits = folder.removeprefix(TRAINING_CHECKPOINT_PREFIX)
    return int(digits) if folder.startswith(TRAINING_CHECKPOINT_PREFIX) and digits.isdigit() else None


def _checkpoint_folders(run_uri: str) -> dict[int, tuple[str, bool]]:
    """Every ``checkpoint_step_*`` folder of the run holding a file, by step: (URI, complete),
    complete when it holds ``trainer_state.pt`` (written last). An absent run has none."""
    import pyarrow.fs as pafs

    filesystem, path = storage.resolve(run_uri)

    def listing() -> list[pafs.FileInfo]:
        try:
            return filesystem.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        except FileNotFoundError:
            return []

    found: dict[int, tuple[str, bool]] = {}
    for info in outages.retrying(listing, run_uri):
        parent, _, filename = info.path.rpartition("/")
        folder = parent.rpartition("/")[2]
        step = training_checkpoint_step(folder)
        if step is None or parent.rpartition("/")[0] != path or info.type != pafs.FileType.File:
            continue
        complete = found.get(step, ("", False))[1] or filename == TRAINER_STATE_FILE
        found[step] = (storage.join(run_uri, folder), complete)
    return found


def training_checkpoints(run_uri: str) -> list[tuple[int, str]]:
    """The resumable checkpoints of the run at ``run_uri`` (a folder or ``s3://`` prefix), as
    (step, URI) sorted by step: the ``checkpoint_step_*`` folders that hold
    ``trainer_state.pt`` (written last, so its presence means the folder is complete). An
    absent run has none."""
    return sorted((step, uri) for step, (uri, complete) in _checkpoint_folders(run_uri).items() if complete)


def latest_training_checkpoint(run_uri: str) -> str | None:
    """URI of the checkpoint a run resumes from: its complete checkpoint of the highest step
    (None for a new run). Ray Train and the in-process executor write the same layout.

    The highest step is the latest of the run's current timeline because a resumed run drops
    the checkpoints above the one it resumed from (:func:`drop_checkpoints_after`) before it
    writes any: when Ray Train restarts a lost worker group from its latest *registered*
    checkpoint, those above it (uploaded, never registered) belong to the abandoned attempt.
    Run folders written before that rule resume from their highest step as they always did."""
    checkpoints = training_checkpoints(run_uri)
    return checkpoints[-1][1] if checkpoints else None


def drop_checkpoints_after(run_uri: str, step: int) -> list[str]:
    """Delete the run's checkpoint folders (complete or not) above ``step``: called by a run that
    resumes from the checkpoint at ``step`` (0: a new run) before it writes one, so that a
    checkpoint of an abandoned attempt (one Ray Train did not restart from) is never resumed
    from, named or kept. Returns the deleted folders' URIs, by step."""
    dropped = [uri for found, (uri, _) in sorted(_checkpoint_folders(run_uri).items()) if found > step]
    for uri in dropped:
        storage.delete_folder(uri, first=TRAINER_STATE_FILE)
    return dropped


def download_checkpoint(uri: str, directory: str | Path) -> None:
    """Copy the files of a checkpoint folder at ``uri`` (local or ``s3://``) into the local
    ``directory``."""
    import pyarrow.fs as pafs

    filesystem, path = storage.resolve(uri)
    for info in outages.retrying(lambda: filesystem.get_file_info(pafs.FileSelector(path)), uri):
        if info.type == pafs.FileType.File:
            filename = info.path.rpartition("/")[2]
            (Path(directory) / filename).write_bytes(storage.read_bytes(storage.join(uri, filename)))


def copy_checkpoint(source: str | Path, target: str) -> None:
    """Copy a checkpoint folder (local) to ``target`` (a folder or ``s3://`` URI), the trainer
    state last, so that a folder with ``trainer_state.pt`` is a complete one."""
    files = sorted(Path(source).iterdir(), key=lambda path: (path.name == TRAINER_STATE_FILE, path.name))
    for path in files:
        storage.write_bytes(storage.join(target, path.name), path.read_bytes())


def delete_checkpoint(uri: str) -> None:
    """Delete a checkpoint folder (local or ``s3://``) and everything in it, its trainer state
    first: a deletion cut short never leaves a folder that looks complete."""
    storage.delete_folder(uri, first=TRAINER_STATE_FILE)

"""Weight files read safely: safetensors, or PyTorch pickles through ``weights_only`` (tensors and
containers only; any other global is refused). :mod:`restoration.models.checkpoint` (checkpoints and
community model files) and :mod:`restoration.models.backbones` (ImageNet weights) read through here, and
nothing else in the project opens a weight file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

__all__ = ["WeightFileError", "read_state_dict_bytes", "read_state_dict_file"]


class WeightFileError(ValueError):
    """A file that is not a readable weight file, or one that holds more than tensors."""


def read_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict from ``.safetensors`` or a ``.pth``/``.pt`` file without unpickling objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_safetensors(path.read_bytes())
        except SafetensorError as exc:
            raise WeightFileError(f"cannot read weights file {path}: {exc}") from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read weights file {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weights file {path} does not hold a state dict")
    return state


def read_state_dict_bytes(data: bytes, *, name: str) -> dict[str, torch.Tensor]:
    """The state dict in a weight file's bytes: safetensors (by the ``.safetensors`` name), or a
    PyTorch pickle read with ``weights_only`` (tensors and containers only; any other global,
    such as ``os.system``, is refused). Nested ``state_dict`` / ``params_ema`` / ``params`` /
    ``model`` / ``net`` wrappers are left for spandrel to unwrap.

    Raises:
        CheckpointError: not a readable weight file, or one that holds other Python objects.
    """
    import io
    import pickle
    import re

    if name.lower().endswith(".safetensors"):
        try:
            return load_safetensors(data)
        except (SafetensorError, ValueError) as error:
            raise WeightFileError(f"{name} is not a readable safetensors file: {error}") from None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f" (it asks for {found[1]})" if found else ""
        raise WeightFileError(f"{name} is refused: it holds Python objects other than tensors{what}, and "
                              "model files are never unpickled freely") from None
    except Exception:
        raise WeightFileError(f"{name} is not a model weight file (neither safetensors nor a PyTorch "
                              ".pth/.pt/.ckpt file)") from None
    if not isinstance(state, dict):
        raise WeightFileError(f"{name} does not hold a state dict (it holds a {type(state).__name__})")
    return state

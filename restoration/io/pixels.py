"""Pixel arrays <-> tensors: everything past the codec works on float32 ``C x H x W`` tensors in
[0, 1]; images are ``H x W x C`` uint8 or uint16 arrays only at the boundary.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import torch
from PIL import Image

PIXEL_DTYPES: Final[tuple[type, ...]] = (np.uint8, np.uint16)
"""The integer pixel types of images: 8 and 16 bits per sample."""



# --------------------------------------------------------------------------------------------
# Pixels <-> tensors


def pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``H x W x C`` uint8 (0..255) or uint16 (0..65535) -> float32 ``C x H x W`` in [0, 1]."""
    check_pixels(pixels)
    scale = float(np.iinfo(pixels.dtype).max)
    array = np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (C, H, W)
    return torch.from_numpy(array.astype(np.float32)).div_(scale)


def tensor_to_pixels(tensor: torch.Tensor, dtype: type | np.dtype = np.uint8) -> np.ndarray:
    """Float ``C x H x W`` tensor in [0, 1] -> ``H x W x C`` array of ``dtype`` (uint8 or uint16).

    Values are clipped to [0, 1] (NaN becomes 0) and rounded to the nearest integer level.
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"tensor must be floating point in [0, 1], got dtype {tensor.dtype}")
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
        raise ValueError(f"tensor must be C x H x W with C in (1, 3), got shape {tuple(tensor.shape)}")
    target = np.dtype(dtype)
    if target not in PIXEL_DTYPES:
        raise ValueError(f"dtype must be uint8 or uint16, got {target}")
    scale = float(np.iinfo(target).max)
    values = torch.nan_to_num(tensor.detach().to("cpu", torch.float32), nan=0.0)
    levels = torch.round(values.clamp(0.0, 1.0) * scale)
    return np.ascontiguousarray(levels.permute(1, 2, 0).numpy().astype(target))  # (H, W, C)




def resize_plane(plane: np.ndarray, width: int, height: int, dtype: np.dtype) -> np.ndarray:
    """Resize an H x W integer plane bicubically and convert it to ``dtype``'s full range."""
    source_max = float(np.iinfo(plane.dtype).max)
    target_max = float(np.iinfo(dtype).max)
    if plane.shape == (height, width):
        if plane.dtype == dtype:
            return plane
        values = plane.astype(np.float32)
    else:
        # Mode F resizes with every filter, whatever the bit depth.
        resized = Image.fromarray(plane.astype(np.float32)).resize((width, height), Image.Resampling.BICUBIC)
        values = np.asarray(resized)
    return np.clip(np.rint(values * (target_max / source_max)), 0, target_max).astype(dtype)


def check_pixels(pixels: object) -> None:
    if not isinstance(pixels, np.ndarray):
        raise TypeError(f"pixels must be a numpy array, got {type(pixels).__name__}")
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise ValueError(f"pixels must be H x W x C with C in (1, 3), got shape {pixels.shape}")
    if pixels.dtype not in PIXEL_DTYPES:
        raise ValueError(f"pixels dtype must be uint8 or uint16, got {pixels.dtype}")
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"pixels must not be empty, got shape {pixels.shape}")


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """8-bit levels of an integer image: uint16 0..65535 -> uint8 0..255, rounded to nearest.

    The result equals ``np.round(pixels / 257).astype(np.uint8)`` (65535 / 255 = 257; no value is
    a tie), computed in integers. uint8 input is returned as is (not copied). Any shape.

    Raises:
        TypeError / ValueError: not a numpy array, or a dtype other than uint8 and uint16.
    """
    if not isinstance(pixels, np.ndarray):
        raise TypeError(f"pixels must be a numpy array, got {type(pixels).__name__}")
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype != np.uint16:
        raise ValueError(f"pixels dtype must be uint8 or uint16, got {pixels.dtype}")
    return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)

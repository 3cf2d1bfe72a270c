"""Missing pixels for inpainting: box, stroke and dropout masks (1 = missing), seeded by an
explicit generator, and the masked image.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from restoration.io.codec import check_image_size
from restoration.tasks.degradations import (
    check_image,
    check_ratio,
    draw_int,
    draw_uniform,
)

# --------------------------------------------------------------------------------------------
# Masks (inpainting)
# --------------------------------------------------------------------------------------------


def _check_count_range(value: tuple[int, int], name: str) -> None:
    if len(value) != 2 or value[0] < 1 or value[0] > value[1]:
        raise ValueError(f"{name} must be a (low, high) pair with 1 <= low <= high, got {value!r}")


def box_mask(
    height: int,
    width: int,
    generator: torch.Generator,
    *,
    num_boxes: tuple[int, int] = (1, 4),
    max_fraction: float = 0.3,
) -> Tensor:
    """Union of random axis-aligned rectangles.

    Args:
        height, width: mask size in pixels.
        generator: source of the box count, sizes and positions.
        num_boxes: inclusive range of the number of boxes.
        max_fraction: largest box side as a fraction of the image side, in (0, 1]; coverage is
            therefore at most ``num_boxes[1] * max_fraction ** 2``.

    Returns:
        float32 (1, H, W), 1 where pixels are missing, 0 where kept.
    """
    check_image_size(height=height, width=width, name="mask")
    _check_count_range(num_boxes, "num_boxes")
    if not 0 < max_fraction <= 1:
        raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction!r}")
    mask = torch.zeros(1, height, width)
    max_h = max(1, int(round(max_fraction * height)))
    max_w = max(1, int(round(max_fraction * width)))
    for _ in range(draw_int(num_boxes[0], num_boxes[1], generator)):
        box_h = draw_int(1, max_h, generator)
        box_w = draw_int(1, max_w, generator)
        top = draw_int(0, height - box_h, generator)
        left = draw_int(0, width - box_w, generator)
        mask[:, top : top + box_h, left : left + box_w] = 1.0
    return mask


def stroke_mask(
    height: int,
    width: int,
    generator: torch.Generator,
    *,
    num_strokes: tuple[int, int] = (1, 5),
    max_width: int | None = None,
    max_vertices: int = 6,
) -> Tensor:
    """Free-form brush strokes: random polylines drawn with a round brush.

    Each stroke starts at a random point and takes 1..``max_vertices - 1`` steps of random
    direction and length (up to a quarter of the larger image side); the brush width is drawn
    from ``[max(1, max_width // 3), max_width]``.

    Args:
        height, width: mask size in pixels.
        generator: source of every stroke parameter.
        num_strokes: inclusive range of the number of strokes.
        max_width: largest brush width in pixels; default ``max(2, min(H, W) // 12)`` so the
            coverage does not depend on the resolution.
        max_vertices: most polyline vertices per stroke, >= 2.

    Returns:
        float32 (1, H, W), 1 where pixels are missing.
    """
    check_image_size(height=height, width=width, name="mask")
    _check_count_range(num_strokes, "num_strokes")
    if max_width is None:
        max_width = max(2, min(height, width) // 12)
    if max_width < 1:
        raise ValueError(f"max_width must be >= 1 pixel, got {max_width!r}")
    if max_vertices < 2:
        raise ValueError(f"max_vertices must be >= 2, got {max_vertices!r}")
    rows = torch.arange(height, dtype=torch.float32)[:, None]
    cols = torch.arange(width, dtype=torch.float32)[None, :]
    mask = torch.zeros(height, width, dtype=torch.bool)
    max_step = max(height, width) / 4
    for _ in range(draw_int(num_strokes[0], num_strokes[1], generator)):
        radius = draw_int(max(1, max_width // 3), max_width, generator) / 2
        y, x = draw_uniform(0, height - 1, generator), draw_uniform(0, width - 1, generator)
        for _ in range(draw_int(1, max_vertices - 1, generator)):
            angle = draw_uniform(0, 2 * math.pi, generator)
            step = draw_uniform(max_step / 4, max_step, generator)
            y_end = min(max(y + step * math.sin(angle), 0.0), height - 1.0)
            x_end = min(max(x + step * math.cos(angle), 0.0), width - 1.0)
            # Distance from every pixel to the segment (y, x) -> (y_end, x_end): project onto
            # the segment, clamp to its ends, measure.
            dy, dx = y_end - y, x_end - x
            length_sq = dy * dy + dx * dx
            if length_sq > 0:
                t = (((rows - y) * dy + (cols - x) * dx) / length_sq).clamp(0.0, 1.0)
            else:
                t = torch.zeros(height, width)
            distance_sq = (rows - (y + t * dy)) ** 2 + (cols - (x + t * dx)) ** 2
            mask |= distance_sq <= radius * radius
            y, x = y_end, x_end
    return mask.float()[None]


def dropout_mask(height: int, width: int, ratio: float, generator: torch.Generator) -> Tensor:
    """Randomly missing pixels: exactly ``round(ratio * H * W)`` of them.

    An exact count (rather than an independent coin per pixel) makes ``ratio`` the coverage of
    every mask, not just on average.

    Args:
        height, width: mask size in pixels.
        ratio: fraction of missing pixels, in [0, 1).
        generator: source of the pixel choice.

    Returns:
        float32 (1, H, W), 1 where pixels are missing.
    """
    check_image_size(height=height, width=width, name="mask")
    check_ratio(ratio, "dropout ratio")
    count = int(round(ratio * height * width))
    order = torch.randperm(height * width, generator=generator, device=generator.device).cpu()
    mask = torch.zeros(height * width)
    mask[order[:count]] = 1.0
    return mask.view(1, height, width)


def apply_mask(x: Tensor, mask: Tensor, fill: float = 0.0) -> Tensor:
    """Replace missing pixels (``mask == 1``) with ``fill``.

    Args:
        x: CHW or NCHW float in [0, 1].
        mask: (1, H, W) or (N, 1, H, W), 1 = missing; broadcast over channels.
        fill: value written into the holes.
    """
    check_image(x)
    if mask.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"mask size {tuple(mask.shape[-2:])} differs from image size {tuple(x.shape[-2:])}")
    mask = mask.to(device=x.device, dtype=x.dtype)
    return x * (1.0 - mask) + fill * mask

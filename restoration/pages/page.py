"""Self-contained HTML pages (no server, no network, images embedded): the building blocks of
``restoration report`` (:mod:`restoration.pages.report`) and ``restoration compare``
(:mod:`restoration.pages.compare`) -- thumbnails and enlarged crops as data URIs, the plain data of
sortable tables and of a throughput plot, and :func:`render`, which fills the jinja2 templates
shipped in ``restoration/pages/templates/`` (the page shell with its inline style and small script, and
the shared pieces in ``macros.html.j2``). The templates escape every value (autoescape): the
Python side hands them text and numbers, never HTML.
"""

from __future__ import annotations

import base64
import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import jinja2
import numpy as np
from PIL import Image

__all__ = ["Cell", "Column", "LinePlot", "Table", "Tile", "as_rgb8", "crop_box", "data_uri", "enlarged_crop",
           "line_plot", "render", "resized", "thumbnail"]


@dataclass(frozen=True)
class Tile:
    """An image of a page: its ``data:`` URI and its label (alt text, caption)."""

    uri: str
    label: str


@dataclass(frozen=True)
class Column:
    """A table's column header; a ``sortable`` one sorts the rows on click."""

    label: str
    sortable: bool = True


@dataclass(frozen=True)
class Cell:
    """A table cell: the ``text`` shown and the ``value`` it sorts by (None: its text). A number
    is right-aligned."""

    text: str = ""
    value: str | int | float | None = None

    @property
    def numeric(self) -> bool:
        return isinstance(self.value, (int, float))


@dataclass(frozen=True)
class Table:
    """A table whose sortable columns sort on click (``id`` is its HTML id)."""

    id: str
    columns: list[Column]
    rows: list[list[Cell]] = field(default_factory=list)


@dataclass(frozen=True)
class LinePlot:
    """A line plot drawn as inline SVG: ``points`` in SVG coordinates, the axes' ranges and labels."""

    points: str
    x_label: str
    y_label: str
    x0: float
    x1: float
    y1: float
    width: int
    height: int
    left: int
    top: int


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("restoration.pages", "templates"),
        autoescape=True,  # every template is HTML: all values are escaped unless marked safe
        undefined=jinja2.StrictUndefined,  # a misspelt field fails loudly instead of rendering empty
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(template: str, **context: object) -> str:
    """The page ``template`` (a file of ``restoration/pages/templates/``) filled with ``context``."""
    return _environment().get_template(template).render(**context)


def line_plot(xs: Sequence[float], ys: Sequence[float], *, x_label: str, y_label: str,
              width: int = 640, height: int = 220) -> LinePlot | None:
    """The plot of ``ys`` over ``xs`` (None when there is nothing to plot)."""
    if not xs:
        return None
    left, bottom, right, top = 56, 34, 12, 10
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = 0.0, max(ys) if max(ys) > 0 else 1.0

    def point(x: float, y: float) -> str:
        px = left + (x - x0) / (x1 - x0) * (width - left - right)
        py = height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)
        return f"{px:.1f},{py:.1f}"

    points = " ".join(point(x, y) for x, y in zip(xs, ys))
    return LinePlot(points=points, x_label=x_label, y_label=y_label, x0=x0, x1=x1, y1=y1, width=width,
                    height=height, left=left, top=top)


def data_uri(image: np.ndarray, *, format: str = "PNG", quality: int = 90) -> str:
    """An 8-bit H x W (x 3) array as a ``data:`` URI (PNG, or JPEG at ``quality``)."""
    buffer = io.BytesIO()
    pil = Image.fromarray(np.ascontiguousarray(image))
    if format == "JPEG":
        pil.convert("RGB").save(buffer, format="JPEG", quality=quality)
    else:
        pil.save(buffer, format="PNG", compress_level=6)
    mime = "image/jpeg" if format == "JPEG" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def as_rgb8(pixels: np.ndarray) -> np.ndarray:
    """Decoded pixels (uint8/uint16, H x W x 1 or 3) as 8-bit RGB for display."""
    if pixels.dtype == np.uint16:
        pixels = (pixels.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=2)
    return pixels


def resized(pixels: np.ndarray, width: int, height: int, *, nearest: bool = False) -> np.ndarray:
    """8-bit RGB pixels resized to ``width`` x ``height``."""
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(pixels).resize((max(1, width), max(1, height)), method))


def thumbnail(pixels: np.ndarray, longest: int = 320) -> np.ndarray:
    """8-bit RGB pixels scaled to at most ``longest`` pixels on their longer side."""
    height, width = pixels.shape[:2]
    factor = min(1.0, longest / max(height, width))
    return resized(pixels, round(width * factor), round(height * factor)) if factor < 1 else pixels


def crop_box(before: np.ndarray, after: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a ``size`` square of ``after``'s grid where ``before`` (at
    ``after``'s size) and ``after`` differ most: where the model did the most."""
    height, width = after.shape[:2]
    size = min(size, height, width)
    difference = np.abs(before.astype(np.float32) - after.astype(np.float32)).mean(axis=2)
    step = max(1, size // 2)
    best, box = -1.0, (0, 0, size, size)
    for top in range(0, max(1, height - size + 1), step):
        for left in range(0, max(1, width - size + 1), step):
            value = float(difference[top : top + size, left : left + size].mean())
            if value > best:
                best, box = value, (top, left, size, size)
    return box


def enlarged_crop(pixels: np.ndarray, box: tuple[int, int, int, int], factor: int) -> np.ndarray:
    """The ``box`` of ``pixels`` enlarged ``factor`` times, nearest neighbour (pixels stay visible)."""
    top, left, height, width = box
    part = pixels[top : top + height, left : left + width]
    return resized(part, width * factor, height * factor, nearest=True)

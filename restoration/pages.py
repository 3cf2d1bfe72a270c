"""Self-contained HTML pages (no server, no network, images embedded): the building blocks of
``restoration report`` (:mod:`restoration.report`) and ``restoration compare``
(:mod:`restoration.compare`) -- thumbnails and enlarged crops as data URIs, sortable tables, a
throughput plot as inline SVG, and the page shell with its small script.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["crop_box", "data_uri", "enlarged_crop", "escape", "page", "sortable_table", "svg_line_plot", "thumbnail"]

escape = html.escape

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #1d1d1f; background: #fafafa; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.muted { color: #666; } .error { color: #a40000; }
table { border-collapse: collapse; background: #fff; margin: 6px 0 12px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th.sortable { cursor: pointer; user-select: none; background: #f0f0f3; }
th.sortable::after { content: " \\2195"; color: #999; }
th.sorted-asc::after { content: " \\2191"; color: #000; } th.sorted-desc::after { content: " \\2193"; color: #000; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pairs { display: flex; flex-wrap: wrap; gap: 14px; }
figure { margin: 0; background: #fff; border: 1px solid #ddd; padding: 6px; }
figure img { display: block; image-rendering: pixelated; }
figcaption { font-size: 12px; color: #444; max-width: 520px; overflow-wrap: anywhere; }
.row { display: flex; gap: 6px; align-items: flex-start; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { background: #fff; border: 1px solid #ddd; padding: 8px 12px; min-width: 120px; }
.card b { display: block; font-size: 20px; }
button.flip { margin: 4px 0; }
"""

_SCRIPT = """
function sortTable(th) {
  const table = th.closest('table'), body = table.tBodies[0];
  const index = Array.from(th.parentNode.children).indexOf(th);
  const ascending = !th.classList.contains('sorted-asc');
  table.querySelectorAll('th').forEach(h => h.classList.remove('sorted-asc', 'sorted-desc'));
  th.classList.add(ascending ? 'sorted-asc' : 'sorted-desc');
  const key = row => { const cell = row.children[index]; const v = cell.dataset.value ?? cell.textContent;
                       const n = parseFloat(v); return isNaN(n) ? v : n; };
  const rows = Array.from(body.rows).sort((a, b) => { const x = key(a), y = key(b);
    return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1); });
  rows.forEach(r => body.appendChild(r));
}
function flip(button) {
  const figure = button.closest('figure'), img = figure.querySelector('img.flippable');
  const sources = JSON.parse(img.dataset.sources), labels = JSON.parse(img.dataset.labels);
  const next = (parseInt(img.dataset.shown) + 1) % sources.length;
  img.src = sources[next]; img.dataset.shown = next;
  figure.querySelector('.shown').textContent = labels[next];
}
document.querySelectorAll('th.sortable').forEach(th => th.addEventListener('click', () => sortTable(th)));
document.querySelectorAll('button.flip').forEach(b => b.addEventListener('click', () => flip(b)));
"""


def page(title: str, body: str) -> str:
    """A whole HTML document: ``body`` with the shared style and script."""
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n{body}\n<script>{_SCRIPT}</script></body></html>\n")


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


def sortable_table(headers: Sequence[tuple[str, bool]], rows: Iterable[Sequence[tuple[str, Any]]], *,
                   table_id: str) -> str:
    """A table whose ``headers`` (label, sortable) sort on click; each cell is (HTML, sort value
    or None)."""
    head = "".join(f"<th class=\"{'sortable' if sortable else ''}\">{escape(label)}</th>" for label, sortable in headers)
    lines = []
    for row in rows:
        cells = []
        for content, value in row:
            attribute = "" if value is None else f" data-value=\"{escape(str(value))}\""
            numeric = " class=\"num\"" if isinstance(value, (int, float)) else ""
            cells.append(f"<td{numeric}{attribute}>{content}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table id=\"{escape(table_id)}\"><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def svg_line_plot(xs: Sequence[float], ys: Sequence[float], *, x_label: str, y_label: str,
                  width: int = 640, height: int = 220) -> str:
    """A line plot as inline SVG (no script, no network)."""
    if not xs:
        return "<p class=\"muted\">nothing to plot</p>"
    left, bottom, right, top = 56, 34, 12, 10
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = 0.0, max(ys) if max(ys) > 0 else 1.0

    def point(x: float, y: float) -> str:
        px = left + (x - x0) / (x1 - x0) * (width - left - right)
        py = height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)
        return f"{px:.1f},{py:.1f}"

    line = " ".join(point(x, y) for x, y in zip(xs, ys))
    return (f"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" role=\"img\">"
            f"<rect width=\"100%\" height=\"100%\" fill=\"#fff\" stroke=\"#ddd\"/>"
            f"<polyline fill=\"none\" stroke=\"#2a6fdb\" stroke-width=\"2\" points=\"{line}\"/>"
            f"<text x=\"{left}\" y=\"{height - 8}\" font-size=\"11\">{escape(x_label)}: {x0:g} .. {x1:g}</text>"
            f"<text x=\"4\" y=\"{top + 10}\" font-size=\"11\">{escape(y_label)} (max {y1:g})</text></svg>")

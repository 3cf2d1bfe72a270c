"""``restoration report OUTPUT``: one self-contained HTML page of what a restore job did, built from
its manifest and its images (local or ``s3://``; a finished or a running job).

The page holds the summary (counts by status, unchanged images, megapixels, wall time and rate,
the model with its architecture and weights hash, the settings), throughput over time, errors
grouped by message with their inputs, before/after pairs -- the whole images and the same crop
enlarged, where the model changed the most -- for a seeded sample, the most changed and the least
changed images (the possible no-ops), and a table sortable by change, size and time.

Memory stays bounded: the manifest is read once (its columns, not the images), and at most
``sample + 2 * extremes`` inputs and outputs are read, one pair at a time, into thumbnails.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from restoration import storage
from restoration.codec import decode_image
from restoration.manifest import (
    MANIFEST_DIR,
    SUMMARY_FILE,
    UNCHANGED_THRESHOLD,
    read_manifest,
)
from restoration.pages import (
    as_rgb8,
    crop_box,
    data_uri,
    enlarged_crop,
    escape,
    page,
    resized,
    sortable_table,
    svg_line_plot,
    thumbnail,
)

__all__ = ["ReportStats", "build_report", "peak_memory_mb", "write_report"]

_COLUMNS = ["source_uri", "output_uri", "status", "error", "error_stage", "task", "model_id", "job_id", "width",
            "height", "out_width", "out_height", "format", "bytes_in", "seconds", "mean_abs_change", "restored_at"]
CROP = 96
"""Side of the enlarged crop, in output pixels."""
TABLE_ROWS = 1000
"""Rows of the sortable table (the inputs in manifest order; the page says when there are more)."""


@dataclass(frozen=True)
class ReportStats:
    """What building a page took: ``rows`` (manifest rows), ``images_read`` (input/output pairs
    read for thumbnails), ``seconds``, and ``html_bytes``."""

    rows: int
    images_read: int
    seconds: float
    html_bytes: int


def _rows(output_uri: str) -> list[dict[str, Any]]:
    missing = (f"no manifest under {storage.redact(output_uri)}/{MANIFEST_DIR}/: is it the --output of a restore "
               "job that has begun?")
    try:
        table = read_manifest(output_uri)
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(f"{missing} ({storage.redact(str(error))})") from None
    if table.num_rows == 0:
        raise ValueError(missing)
    return table.select([c for c in _COLUMNS if c in table.column_names]).to_pylist()


def _summary(output_uri: str) -> dict[str, Any] | None:
    try:
        return json.loads(storage.read_bytes(storage.join(output_uri, MANIFEST_DIR, SUMMARY_FILE)))
    except (FileNotFoundError, ValueError):
        return None  # a job still running, or stopped before its end


def _pair(row: dict[str, Any]) -> str:
    """A figure with the input beside the output (whole, then the same crop enlarged), or one
    line saying why it cannot be shown (a deleted or unreadable image)."""
    name = escape(storage.redact(row["source_uri"]))
    try:
        before = as_rgb8(decode_image(storage.read_bytes(row["source_uri"])).pixels)
        after = as_rgb8(decode_image(storage.read_bytes(row["output_uri"])).pixels)
    except (OSError, ValueError) as error:
        return (f"<figure class=\"missing\"><figcaption class=\"error\">{name}: cannot be shown: "
                f"{escape(storage.redact(str(error)))}</figcaption></figure>")
    height, width = after.shape[:2]
    upsized = before if before.shape[:2] == (height, width) else resized(before, width, height)
    box = crop_box(upsized, after, CROP)
    factor = max(1, min(4, 288 // max(1, box[2])))
    images = [data_uri(thumbnail(before), format="JPEG"), data_uri(thumbnail(after), format="JPEG"),
              data_uri(enlarged_crop(upsized, box, factor)), data_uri(enlarged_crop(after, box, factor))]
    change = row["mean_abs_change"]
    caption = (f"{name} -- {row['width']}x{row['height']} -> {width}x{height}, mean change "
               f"{change:.2f} levels" if change is not None else name)
    tiles = "".join(f"<img src=\"{uri}\" alt=\"{label}\" title=\"{label}\">"
                    for uri, label in zip(images, ("input", "output", "input, crop", "output, crop")))
    return f"<figure><div class=\"row\">{tiles}</div><figcaption>{caption}</figcaption></figure>"


def _choose(rows: list[dict[str, Any]], *, sample: int, extremes: int, seed: int) -> dict[str, list[dict]]:
    """The rows shown as pairs: a seeded sample, the most and the least changed (ok rows only)."""
    shown = [row for row in rows if row["status"] in ("ok", "skipped") and row["output_uri"]]
    changed = sorted((row for row in shown if row["mean_abs_change"] is not None),
                     key=lambda row: row["mean_abs_change"])
    picked = random.Random(seed).sample(shown, min(sample, len(shown)))
    return {"sample": picked, "most": changed[::-1][:extremes], "least": changed[:extremes]}


def _summary_html(rows: list[dict[str, Any]], summary: dict[str, Any] | None) -> str:
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row["status"]] += 1
    threshold = (summary or {}).get("unchanged_threshold", UNCHANGED_THRESHOLD)
    unchanged = sum(1 for row in rows if row["status"] == "ok" and row["mean_abs_change"] is not None
                    and row["mean_abs_change"] < threshold)
    megapixels = sum((row["width"] or 0) * (row["height"] or 0) for row in rows if row["status"] == "ok") / 1e6
    cards = [("inputs", len(rows)), ("ok", counts["ok"]), ("error", counts["error"]), ("skipped", counts["skipped"]),
             (f"unchanged (< {threshold:g} levels)", unchanged), ("megapixels restored", f"{megapixels:.2f}")]
    if summary:
        cards += [("wall time", f"{summary.get('wall_seconds', 0):.1f} s"),
                  ("images/s", f"{summary.get('images_per_second', 0):.2f}")]
    html = "<div class=\"cards\">" + "".join(f"<div class=\"card\"><b>{escape(str(v))}</b>{escape(k)}</div>"
                                             for k, v in cards) + "</div>"
    if summary is None:
        return html + "<p class=\"muted\">No _summary.json: the job is running, or stopped before its end.</p>"
    model = summary.get("model") or {"model_id": summary.get("model_id")}
    details = {"task": summary.get("task"), **model, "executor": summary.get("executor"),
               "job": summary.get("job_id"), "started": summary.get("started_at"), "input": summary.get("input")}
    html += "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>"
                                for k, v in details.items() if v is not None) + "</table>"
    settings = json.dumps(summary.get("config", {}), indent=1, sort_keys=True)
    return html + f"<details><summary>settings</summary><pre>{escape(settings)}</pre></details>"


def _throughput_html(rows: list[dict[str, Any]]) -> str:
    times = sorted(row["restored_at"].timestamp() for row in rows
                   if row["status"] == "ok" and row["restored_at"] is not None)
    if not times:
        return "<p class=\"muted\">no restored images yet</p>"
    start = times[0]
    return svg_line_plot([t - start for t in times], list(range(1, len(times) + 1)),
                         x_label="seconds since the first output", y_label="images restored")


def _errors_html(rows: list[dict[str, Any]]) -> str:
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        if row["status"] == "error":
            message = (row["error"] or "").replace(row["source_uri"], "<input>")
            groups[(row["error_stage"] or "?", storage.redact(message))].append(storage.redact(row["source_uri"]))
    if not groups:
        return "<p>No errors.</p>"
    parts = []
    for (stage, message), sources in sorted(groups.items(), key=lambda item: -len(item[1])):
        listed = "".join(f"<li>{escape(source)}</li>" for source in sources[:50])
        more = f"<li class=\"muted\">and {len(sources) - 50} more</li>" if len(sources) > 50 else ""
        parts.append(f"<h3 class=\"error\">{len(sources)} x {escape(stage)}: {escape(message)}</h3><ul>{listed}{more}</ul>")
    return "".join(parts)


def _table_html(rows: list[dict[str, Any]]) -> str:
    def cells(row: dict[str, Any]) -> list[tuple[str, Any]]:
        pixels = (row["width"] or 0) * (row["height"] or 0)
        change = row["mean_abs_change"]
        return [(escape(storage.redact(row["source_uri"])), None), (escape(row["status"]), row["status"]),
                ("" if change is None else f"{change:.2f}", -1 if change is None else round(change, 4)),
                (f"{row['width']}x{row['height']}" if row["width"] else "", pixels),
                ("" if row["seconds"] is None else f"{row['seconds']:.3f}", row["seconds"] or 0.0)]

    headers = [("input", False), ("status", True), ("mean change (levels)", True), ("size", True), ("seconds", True)]
    note = (f"<p class=\"muted\">the first {TABLE_ROWS} of {len(rows)} inputs</p>" if len(rows) > TABLE_ROWS else "")
    return note + sortable_table(headers, (cells(row) for row in rows[:TABLE_ROWS]), table_id="inputs")


def build_report(output_uri: str, *, sample: int = 8, extremes: int = 4, seed: int = 0) -> tuple[str, ReportStats]:
    """The HTML page of the job whose ``--output`` was ``output_uri``, and what building it took.

    Raises:
        ValueError: no manifest under ``output_uri``.
    """
    started = time.monotonic()
    output_uri = storage.absolute_uri(output_uri)
    rows = _rows(output_uri)
    summary = _summary(output_uri)
    chosen = _choose(rows, sample=sample, extremes=extremes, seed=seed)
    read: set[str] = set()
    sections = []
    for key, title in (("sample", f"A seeded sample (seed {seed})"), ("most", "The most changed"),
                       ("least", "The least changed (possible no-ops)")):
        figures = []
        for row in chosen[key]:
            figures.append(_pair(row))
            read.add(row["source_uri"])
        body = "".join(figures) or "<p class=\"muted\">none</p>"
        sections.append(f"<h2>{escape(title)}</h2><div class=\"pairs\">{body}</div>")
    title = f"Restore report: {storage.redact(output_uri)}"
    body = (f"<h1>{escape(title)}</h1><p class=\"muted\">built {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}"
            f" from the manifest and the images; each pair: input, output, then the same crop enlarged where the "
            f"model changed the most</p>"
            f"<h2>Summary</h2>{_summary_html(rows, summary)}"
            f"<h2>Throughput</h2>{_throughput_html(rows)}"
            f"<h2>Errors</h2>{_errors_html(rows)}" + "".join(sections) +
            f"<h2>Inputs</h2>{_table_html(rows)}")
    text = page(title, body)
    stats = ReportStats(rows=len(rows), images_read=len(read), seconds=time.monotonic() - started,
                        html_bytes=len(text.encode()))
    return text, stats


def write_report(output_uri: str, html_path: str, **options: Any) -> ReportStats:
    """Build the page (:func:`build_report`) and write it to the local file ``html_path``."""
    from pathlib import Path

    text, stats = build_report(output_uri, **options)
    path = Path(html_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return stats


def peak_memory_mb() -> float:
    """This process's peak resident memory in MB (Linux: ``ru_maxrss`` in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


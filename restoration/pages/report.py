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
from dataclasses import dataclass, field
from typing import Any

from restoration.io import storage
from restoration.io.codec import decode_image
from restoration.pages.page import (
    Cell,
    Column,
    LinePlot,
    Table,
    Tile,
    as_rgb8,
    crop_box,
    data_uri,
    enlarged_crop,
    line_plot,
    render,
    resized,
    thumbnail,
)
from restoration.restore.manifest import (
    MANIFEST_DIR,
    SUMMARY_FILE,
    UNCHANGED_THRESHOLD,
    read_manifest,
)
from restoration.restore.summary import RestoreSummary

__all__ = ["ReportStats", "build_report", "peak_memory_mb", "write_report"]

_COLUMNS = ["source_uri", "output_uri", "status", "error", "error_stage", "task", "model_id", "job_id", "width",
            "height", "out_width", "out_height", "format", "bytes_in", "seconds", "mean_abs_change", "restored_at"]
CROP = 96
"""Side of the enlarged crop, in output pixels."""
TABLE_ROWS = 1000
"""Rows of the sortable table (the inputs in manifest order; the page says when there are more)."""
ERRORS_LISTED = 50
"""Inputs listed under each error message (the page counts the rest)."""


@dataclass(frozen=True)
class ReportStats:
    """What building a page took: ``rows`` (manifest rows), ``images_read`` (input/output pairs
    read for thumbnails), ``seconds``, and ``html_bytes``."""

    rows: int
    images_read: int
    seconds: float
    html_bytes: int


@dataclass(frozen=True)
class Pair:
    """An input (``name``) beside its output: four :class:`Tile` (the whole images, then the same
    crop enlarged) and a caption; or, with no tiles, the ``error`` that kept them from the page."""

    name: str
    caption: str
    tiles: list[Tile] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class PairSection:
    title: str
    pairs: list[Pair]


@dataclass(frozen=True)
class ErrorGroup:
    """The inputs that failed with one message at one stage: ``count`` of them, the first listed."""

    stage: str
    message: str
    count: int
    sources: list[str]


@dataclass(frozen=True)
class Summary:
    """The summary cards (label, value); and, from the job's ``_summary.json`` (None while it is
    missing), the model and run details (key, value) and the settings as JSON."""

    cards: list[tuple[str, str]]
    details: list[tuple[str, str]] = field(default_factory=list)
    settings: str | None = None


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


def _summary(output_uri: str) -> RestoreSummary | None:
    """The job's ``_summary.json`` (an earlier version's too: the keys added since may be missing),
    or None while it is missing or when it is not a summary."""
    try:
        return RestoreSummary.from_json(storage.read_bytes(storage.join(output_uri, MANIFEST_DIR, SUMMARY_FILE)))
    except (FileNotFoundError, ValueError):  # (a pydantic ValidationError is a ValueError)
        return None  # a job still running, or stopped before its end


def _pair(row: dict[str, Any]) -> Pair:
    """The input beside the output (whole, then the same crop enlarged), or why it cannot be shown
    (a deleted or unreadable image)."""
    name = storage.redact(row["source_uri"])
    try:
        before = as_rgb8(decode_image(storage.read_bytes(row["source_uri"])).pixels)
        after = as_rgb8(decode_image(storage.read_bytes(row["output_uri"])).pixels)
    except (OSError, ValueError) as error:
        return Pair(name=name, caption=name, error=storage.redact(str(error)))
    height, width = after.shape[:2]
    upsized = before if before.shape[:2] == (height, width) else resized(before, width, height)
    box = crop_box(upsized, after, CROP)
    factor = max(1, min(4, 288 // max(1, box[2])))
    images = [data_uri(thumbnail(before), format="JPEG"), data_uri(thumbnail(after), format="JPEG"),
              data_uri(enlarged_crop(upsized, box, factor)), data_uri(enlarged_crop(after, box, factor))]
    change = row["mean_abs_change"]
    caption = (f"{name} -- {row['width']}x{row['height']} -> {width}x{height}, mean change "
               f"{change:.2f} levels" if change is not None else name)
    labels = ("input", "output", "input, crop", "output, crop")
    return Pair(name=name, caption=caption, tiles=[Tile(uri, label) for uri, label in zip(images, labels)])


def _choose(rows: list[dict[str, Any]], *, sample: int, extremes: int, seed: int) -> dict[str, list[dict]]:
    """The rows shown as pairs: a seeded sample, the most and the least changed (ok rows only)."""
    shown = [row for row in rows if row["status"] in ("ok", "skipped") and row["output_uri"]]
    changed = sorted((row for row in shown if row["mean_abs_change"] is not None),
                     key=lambda row: row["mean_abs_change"])
    picked = random.Random(seed).sample(shown, min(sample, len(shown)))
    return {"sample": picked, "most": changed[::-1][:extremes], "least": changed[:extremes]}


def _summary_data(rows: list[dict[str, Any]], summary: RestoreSummary | None) -> Summary:
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row["status"]] += 1
    threshold = UNCHANGED_THRESHOLD if summary is None or summary.unchanged_threshold is None \
        else summary.unchanged_threshold
    unchanged = sum(1 for row in rows if row["status"] == "ok" and row["mean_abs_change"] is not None
                    and row["mean_abs_change"] < threshold)
    megapixels = sum((row["width"] or 0) * (row["height"] or 0) for row in rows if row["status"] == "ok") / 1e6
    cards = [("inputs", str(len(rows))), ("ok", str(counts["ok"])), ("error", str(counts["error"])),
             ("skipped", str(counts["skipped"])), (f"unchanged (< {threshold:g} levels)", str(unchanged)),
             ("megapixels restored", f"{megapixels:.2f}")]
    if summary is None:
        return Summary(cards=cards)
    cards += [("wall time", f"{summary.wall_seconds:.1f} s"),
              ("images/s", f"{summary.images_per_second:.2f}")]
    model = summary.model.model_dump() if summary.model is not None else {"model_id": summary.model_id}
    details = {"task": summary.task, **model, "executor": summary.executor,
               "job": summary.job_id, "started": summary.started_at, "input": summary.input}
    return Summary(cards=cards, details=[(key, str(value)) for key, value in details.items() if value is not None],
                   settings=json.dumps(summary.config, indent=1, sort_keys=True))


def _throughput(rows: list[dict[str, Any]]) -> LinePlot | None:
    times = sorted(row["restored_at"].timestamp() for row in rows
                   if row["status"] == "ok" and row["restored_at"] is not None)
    if not times:
        return None
    start = times[0]
    return line_plot([t - start for t in times], list(range(1, len(times) + 1)),
                     x_label="seconds since the first output", y_label="images restored")


def _errors(rows: list[dict[str, Any]]) -> list[ErrorGroup]:
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        if row["status"] == "error":
            message = (row["error"] or "").replace(row["source_uri"], "<input>")
            groups[(row["error_stage"] or "?", storage.redact(message))].append(storage.redact(row["source_uri"]))
    return [ErrorGroup(stage=stage, message=message, count=len(sources), sources=sources[:ERRORS_LISTED])
            for (stage, message), sources in sorted(groups.items(), key=lambda item: -len(item[1]))]


def _table(rows: list[dict[str, Any]]) -> Table:
    def cells(row: dict[str, Any]) -> list[Cell]:
        pixels = (row["width"] or 0) * (row["height"] or 0)
        change = row["mean_abs_change"]
        return [Cell(storage.redact(row["source_uri"])), Cell(row["status"], row["status"]),
                Cell("" if change is None else f"{change:.2f}", -1 if change is None else round(change, 4)),
                Cell(f"{row['width']}x{row['height']}" if row["width"] else "", pixels),
                Cell("" if row["seconds"] is None else f"{row['seconds']:.3f}", row["seconds"] or 0.0)]

    columns = [Column("input", sortable=False), Column("status"), Column("mean change (levels)"), Column("size"),
               Column("seconds")]
    return Table(id="inputs", columns=columns, rows=[cells(row) for row in rows[:TABLE_ROWS]])


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
        pairs = []
        for row in chosen[key]:
            pairs.append(_pair(row))
            read.add(row["source_uri"])
        sections.append(PairSection(title=title, pairs=pairs))
    text = render("report.html.j2", title=f"Restore report: {storage.redact(output_uri)}",
                  built=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), summary=_summary_data(rows, summary),
                  throughput=_throughput(rows), errors=_errors(rows), sections=sections, table=_table(rows),
                  inputs=len(rows))
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


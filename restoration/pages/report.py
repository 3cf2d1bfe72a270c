"""``restoration report OUTPUT``: one self-contained HTML page of what a restore job did, built from
its manifest and its images (local or ``s3://``; a finished or a running job).

The page holds the summary (counts by status, unchanged images, megapixels, wall time and rate,
the model with its architecture and weights hash, the settings), throughput over time, errors
grouped by message with their inputs, what the images needed (:func:`_needs`: histograms of the
inputs' measured noise, JPEG quality, blockiness and blur, the images at the extremes of each, and
for a routed run the routes taken, with their models and why), before/after pairs -- the whole
images and the same crop enlarged, where the model changed the most -- for a seeded sample, the
most changed and the least changed images (the possible no-ops), and a table sortable by change,
size and time. A manifest written before the measures existed (version 2) has them null: the page
leaves that section out.

Memory stays bounded: the manifest is read once (its columns, not the images), and at most
``sample + 2 * extremes + 4 * min(extremes, NEEDS_SHOWN)`` inputs and outputs are read, one pair
at a time, into thumbnails (an input shown in several places is read once).
"""

from __future__ import annotations

import json
import math
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
            "height", "out_width", "out_height", "format", "bytes_in", "seconds", "mean_abs_change", "restored_at",
            "noise_sigma", "jpeg_quality", "blockiness", "blur", "gray_rgb", "route", "route_reason"]
CROP = 96
"""Side of the enlarged crop, in output pixels."""
TABLE_ROWS = 1000
"""Rows of the sortable table (the inputs in manifest order; the page says when there are more)."""
ERRORS_LISTED = 50
"""Inputs listed under each error message (the page counts the rest)."""
NEEDS_SHOWN = 3
"""Images shown at each extreme of a measure (at most ``extremes``)."""
REASONS_LISTED = 3
"""Rules listed per route, the most used first (the page counts the rest)."""
SKIP = "skip"
"""The route of an image written unchanged (:data:`restoration.quality.routing.SKIP`)."""


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


@dataclass(frozen=True)
class Bar:
    """One bin of a :class:`Histogram`: its rectangle in SVG coordinates, its ``count`` of inputs,
    its ``label`` (the bin's range, under the bar) and ``title`` (the tooltip)."""

    x: float
    y: float
    width: float
    height: float
    count: int
    label: str
    title: str


@dataclass(frozen=True)
class Histogram:
    """A measure's distribution drawn as inline SVG: ``title`` (the measure and how many inputs),
    ``axis`` (the x axis: what is measured, in which unit), the bars, the tallest bar's count
    (``most``), ``stats`` (min, median, max) and a ``note`` (e.g. how many inputs are not JPEG)."""

    title: str
    axis: str
    count: int
    bars: list[Bar]
    most: int
    stats: str
    note: str | None
    width: int
    height: int
    left: int
    top: int
    base: int


@dataclass(frozen=True)
class RouteRow:
    """A route of a routed run: its ``key`` (a model key, or ``skip``), the inputs it took and
    their ``share``, the model it maps to (``_summary.json``'s ``models``) with its licence, and
    ``rules``: (rule, inputs, example measures) for the rules that chose it, the most used first
    (``more``: how many other rules did)."""

    key: str
    count: int
    share: str
    model: str
    licence: str
    rules: list[tuple[str, int, list[str]]]
    more: int


@dataclass(frozen=True)
class Needs:
    """What the images needed: ``cards`` (label, value), the measures' ``histograms``, ``notes``
    (measures with nothing to plot), the ``routes`` of a routed run (empty otherwise) and, filled
    by :func:`build_report`, the images at each measure's extreme (``extremes``)."""

    cards: list[tuple[str, str]]
    histograms: list[Histogram]
    notes: list[str]
    routes: list[RouteRow]
    routed: int
    extremes: list[PairSection] = field(default_factory=list)


@dataclass(frozen=True)
class _Measure:
    """A manifest measure as the page shows it: its column, names, bins (label, exclusive upper
    bound; the last bin holds the rest), which end is the extreme shown, and its caption text."""

    column: str
    title: str
    axis: str
    bins: tuple[tuple[str, float], ...]
    extreme: str
    highest: bool
    caption: Callable[[float], str]


_MEASURES: tuple[_Measure, ...] = (
    _Measure("noise_sigma", "noise level", "estimated noise sigma, 8-bit levels (0-255)",
             (("< 2", 2), ("2-4", 4), ("4-8", 8), ("8-15", 15), ("15-25", 25),
              ("25-50", 50), (">= 50", math.inf)),
             "The noisiest", True, lambda value: f"noise sigma {value:.1f}"),
    _Measure("jpeg_quality", "JPEG quality", "quality from the file's tables",
             (("< 50", 50), ("50-69", 70), ("70-79", 80), ("80-89", 90), ("90-94", 95),
              ("95-100", math.inf)),
             "The lowest JPEG quality", False, lambda value: f"JPEG quality {value:.0f}"),
    _Measure("blockiness", "blockiness", "8x8 block artefacts (about 1 = none)",
             (("< 1.1", 1.1), ("< 1.25", 1.25), ("< 1.5", 1.5), ("< 2", 2), ("< 3", 3),
              (">= 3", math.inf)),
             "The blockiest", True, lambda value: f"blockiness {value:.2f}"),
    _Measure("blur", "blur", "no-reference blur (0 sharp, 1 blurred)",
             (("0-0.2", 0.2), ("0.2-0.4", 0.4), ("0.4-0.6", 0.6), ("0.6-0.8", 0.8),
              ("0.8-1", math.inf)),
             "The blurriest", True, lambda value: f"blur {value:.2f}"),
)


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


def _histogram(measure: _Measure, values: list[float], *, note: str | None = None, width: int = 300,
               height: int = 190) -> Histogram:
    """The histogram of ``values`` (finite, at least one) in ``measure``'s bins, as SVG geometry."""
    left, right, top, bottom = 34, 8, 20, 46
    counts = [0] * len(measure.bins)
    for value in values:
        counts[next((i for i, (_, upper) in enumerate(measure.bins) if value < upper), len(counts) - 1)] += 1
    most = max(counts)
    base = height - bottom
    slot = (width - left - right) / len(counts)
    bars = []
    for index, ((label, _), count) in enumerate(zip(measure.bins, counts)):
        tall = (base - top) * count / most
        noun = "input" if count == 1 else "inputs"
        bars.append(Bar(x=round(left + index * slot + slot * 0.1, 1), y=round(base - tall, 1),
                        width=round(slot * 0.8, 1), height=round(tall, 1), count=count, label=label,
                        title=f"{measure.title} {label}: {count} {noun}"))
    stats = (f"min {min(values):.3g}, median {statistics.median(values):.3g}, max {max(values):.3g}")
    noun = "input" if len(values) == 1 else "inputs"
    return Histogram(title=f"{measure.title}: {len(values)} {noun}", axis=measure.axis, count=len(values), bars=bars,
                     most=most, stats=stats, note=note, width=width, height=height, left=left, top=top, base=base)


def _value(row: dict[str, Any], column: str) -> float | None:
    """The row's measure ``column`` as a finite number, or None (null, NaN, missing)."""
    value = row.get(column)
    if value is None or isinstance(value, bool) or not math.isfinite(value):
        return None
    return float(value)


def _measures_text(row: dict[str, Any]) -> str:
    """The row's measures and route, for a caption: ``noise sigma 12.3, JPEG quality 40, ...``."""
    parts = [measure.caption(value) for measure in _MEASURES if (value := _value(row, measure.column)) is not None]
    if row.get("gray_rgb"):
        parts.append("gray stored as RGB")
    if row.get("route") is not None:
        parts.append(f"route {row['route']}")
    return ", ".join(parts)


def _routes(rows: list[dict[str, Any]], summary: RestoreSummary | None) -> list[RouteRow]:
    """The routes of a routed run, the most taken first (also the summary's models no input
    took); empty for a run with one model."""
    taken = [row for row in rows if row.get("route") is not None]
    models = (summary.models if summary is not None else None) or {}
    if not taken and not models:
        return []
    counts = Counter(row["route"] for row in taken)
    for key in models:
        counts.setdefault(key, 0)
    rules: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for row in taken:
        # "rule 2: noise_sigma >= 4 (noise_sigma=12.3)": the rule, then the measures it read
        reason = row.get("route_reason") or "no reason recorded"
        rule, _, read = reason.partition(" (")
        rules[row["route"]][rule].append(read.removesuffix(")"))
    routes = []
    for key, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        record = models.get(key)
        if key == SKIP and record is None:
            model, licence = "none: written unchanged", ""
        elif record is None:
            model, licence = "not in _summary.json" if summary is not None else "no _summary.json", ""
        else:
            model, licence = f"{record.model_id} ({record.architecture})", record.licence or "unknown"
        used = sorted(rules[key].items(), key=lambda item: -len(item[1]))
        listed = [(rule, len(read), list(dict.fromkeys(text for text in read if text))[:2])
                  for rule, read in used[:REASONS_LISTED]]
        share = f"{100 * count / len(taken):.1f}%" if taken else ""
        routes.append(RouteRow(key=key, count=count, share=share, model=model, licence=licence, rules=listed,
                               more=max(0, len(used) - REASONS_LISTED)))
    return routes


def _needs(rows: list[dict[str, Any]], summary: RestoreSummary | None) -> Needs | None:
    """What the images needed: the measures' distributions over every input measured (restored,
    skipped, or failed after it was decoded), gray inputs stored as RGB, and the routes of a routed
    run; None when no row holds a measure or a route (a manifest older than the measures)."""
    measured = [row for row in rows if any(_value(row, m.column) is not None for m in _MEASURES)]
    routes = _routes(rows, summary)
    if not measured and not routes:
        return None
    histograms, notes = [], []
    for measure in _MEASURES:
        values = [value for row in measured if (value := _value(row, measure.column)) is not None]
        note = None
        if measure.column == "jpeg_quality":
            others = len(measured) - len(values)
            if not values:
                if measured:
                    notes.append(f"JPEG quality: none of the {len(measured)} inputs measured is a JPEG file")
                continue
            note = (f"JPEG inputs only; {others} of the {len(measured)} inputs measured "
                    f"{'is' if others == 1 else 'are'} not JPEG") if others else "every input measured is a JPEG file"
        if values:
            histograms.append(_histogram(measure, values, note=note))
    cards = []
    if measured:
        gray = sum(1 for row in measured if row.get("gray_rgb"))
        cards += [("inputs measured", str(len(measured))), ("gray stored as RGB", str(gray))]
    routed = sum(route.count for route in routes)
    if routes:
        skipped = sum(route.count for route in routes if route.key == SKIP)
        cards += [("inputs routed", str(routed)), ("written unchanged (route skip)", str(skipped))]
    return Needs(cards=cards, histograms=histograms, notes=notes, routes=routes, routed=routed)


def _extremes(rows: list[dict[str, Any]], shown: int) -> list[tuple[_Measure, list[dict[str, Any]]]]:
    """For each measure, the ``shown`` restored inputs at its extreme (noisiest, lowest JPEG
    quality, blockiest, blurriest); measures no restored input has are left out."""
    restored = [row for row in rows if row["status"] in ("ok", "skipped") and row["output_uri"]]
    chosen = []
    for measure in _MEASURES:
        sign = -1.0 if measure.highest else 1.0
        have = sorted(((sign * value, index, row) for index, row in enumerate(restored)
                       if (value := _value(row, measure.column)) is not None), key=lambda item: item[:2])
        if have and shown > 0:
            chosen.append((measure, [row for _, _, row in have[:shown]]))
    return chosen


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
    pairs: dict[str, Pair] = {}  # by source: an input shown in several places is read once

    def pair(row: dict[str, Any], note: str = "") -> Pair:
        shown = pairs.get(row["source_uri"])
        if shown is None:
            shown = pairs[row["source_uri"]] = _pair(row)
        return replace(shown, caption=f"{shown.caption}; {note}") if note else shown

    sections = [PairSection(title=title, pairs=[pair(row) for row in chosen[key]])
                for key, title in (("sample", f"A seeded sample (seed {seed})"), ("most", "The most changed"),
                                   ("least", "The least changed (possible no-ops)"))]
    needs = _needs(rows, summary)
    if needs is not None:
        extreme = [PairSection(title=measure.extreme,
                               pairs=[pair(row, _measures_text(row)) for row in picked])
                   for measure, picked in _extremes(rows, min(extremes, NEEDS_SHOWN))]
        needs = replace(needs, extremes=extreme)
    text = render("report.html.j2", title=f"Restore report: {storage.redact(output_uri)}",
                  built=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), summary=_summary_data(rows, summary),
                  throughput=_throughput(rows), errors=_errors(rows), needs=needs, sections=sections,
                  table=_table(rows), inputs=len(rows))
    stats = ReportStats(rows=len(rows), images_read=len(pairs), seconds=time.monotonic() - started,
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


"""``restoration compare``: restore a seeded sample of a collection with several models and write
one HTML page to choose between them by looking.

A model is a shipped one (``default:denoise``, ``default:general``, ...), a checkpoint folder, or
a community weight file (:mod:`restoration.models.community`). Each runs in this process (no Ray) on the
same sample. The page shows, per image, the input and every model's output at the same crop (where
the models disagree most), with a button that flips between outputs in one frame; per model, the
mean change, seconds per megapixel measured here, and the projected time for the whole
collection (its megapixels, from the image headers, as ``restore --dry-run`` reads them). With
clean references (``--reference DIR``, matched by relative path) or a synthetic case (``--case
NAME``: the sample is taken as clean and degraded by the case), PSNR/SSIM per model too.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import numpy as np

from restoration.durations import format_duration
from restoration.io import storage
from restoration.io.codec import decode_image
from restoration.io.pixels import pixels_to_tensor, tensor_to_pixels
from restoration.pages.page import (
    Cell,
    Column,
    Table,
    Tile,
    as_rgb8,
    data_uri,
    render,
    resized,
)

__all__ = ["ModelResult", "comparison_page", "compare_models", "write_comparison"]

DISPLAY = 240
"""Side of the crops shown, in screen pixels."""
HEADER_LIMIT = 20_000
"""Inputs whose headers are read for the collection's megapixels; beyond it the sample's mean
size stands for the rest (the page says so)."""


@dataclass
class ModelResult:
    """One model on the sample: its outputs by input, the measured time, and scores."""

    spec: str
    model_id: str = ""
    architecture: str = ""
    task: str = ""
    licence: str = ""
    source: str = ""
    sha256: str = ""
    error: str | None = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0
    megapixels: float = 0.0
    changes: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)

    @property
    def seconds_per_megapixel(self) -> float:
        return self.seconds / self.megapixels if self.megapixels else float("nan")


def _load(spec: str, task: str | None) -> tuple[Any, str]:
    """(checkpoint, task) of a model spec: ``default:TASK``, ``default`` (with ``task``), a
    checkpoint folder or a community file."""
    from restoration.models.checkpoint import load_checkpoint, resolve_model

    if spec.startswith("default:"):
        task = spec.split(":", 1)[1]
        spec = "default"
    if spec == "default" and task is None:
        raise ValueError("--model default needs --task (or write default:TASK, e.g. default:denoise)")
    checkpoint = load_checkpoint(resolve_model(spec, task or ""))
    traits = checkpoint.model.traits
    chosen = task or traits.task
    misfit = traits.misfit(chosen)
    if misfit is not None:
        raise ValueError(f"{spec} is {misfit}, but --task is {chosen!r}")
    if traits.takes_mask:
        raise ValueError(f"{spec} is an inpainting model: compare restores images without masks")
    return checkpoint, chosen


def _collection_megapixels(uris: list[str], sample_pixels: list[int]) -> tuple[float, str]:
    """The collection's megapixels from its image headers, or, past :data:`HEADER_LIMIT` inputs,
    from the sample's mean size; and how it was counted."""
    from restoration.restore.dry_run import image_header

    if len(uris) > HEADER_LIMIT:
        mean = sum(sample_pixels) / max(1, len(sample_pixels))
        return mean * len(uris) / 1e6, f"{len(uris)} inputs x the sample's mean size"
    total, unreadable = 0, 0
    for uri in uris:
        try:
            width, height, _ = image_header(uri, max_bytes=1 << 40)
            total += width * height
        except (OSError, ValueError):
            unreadable += 1
    note = f"headers of {len(uris)} inputs" + (f" ({unreadable} unreadable)" if unreadable else "")
    return total / 1e6, note


def compare_models(input_uri: str, models: list[str], *, task: str | None = None, sample: int = 16, seed: int = 0,
                   reference: str | None = None, case: str | None = None, predictor: Any = None) -> dict[str, Any]:
    """Restore a seeded sample of ``input_uri`` with every model; returns the sample's images,
    the per-model results and the collection's size (see the module docstring).

    Raises:
        ValueError: no inputs, fewer than one model, or a bad --case.
    """
    from restoration.models.predictor import PredictorConfig
    from restoration.quality.metrics import score
    from restoration.restore.planning import list_inputs
    from restoration.tasks.specs import get_case

    if not models:
        raise ValueError("give at least one --model")
    root, uris, _ = list_inputs(storage.absolute_uri(input_uri))
    if not uris:
        raise ValueError(f"no input images in {storage.redact(input_uri)} (extensions "
                         f"{', '.join(sorted(storage.IMAGE_EXTENSIONS))})")
    chosen = sorted(random.Random(seed).sample(uris, min(sample, len(uris))))
    the_case = get_case(case) if case else None
    images: dict[str, dict[str, Any]] = {}
    for uri in chosen:
        name = uri[len(root):].lstrip("/") if uri.startswith(root) else uri.rsplit("/", 1)[-1]
        try:
            data = storage.read_bytes(uri)
            decoded = decode_image(data)
            pixels = as_rgb8(decoded.pixels)
        except (OSError, ValueError) as error:
            images[name] = {"uri": uri, "error": storage.redact(str(error))}
            continue
        # (the file's bytes: a route reads its JPEG tables)
        entry: dict[str, Any] = {"uri": uri, "input": pixels, "gt": None, "data": data,
                                 "is_jpeg": decoded.format == "JPEG"}
        if the_case is not None:
            degraded = the_case.spec.sample(name, the_case.prepare(pixels), seed=seed)
            entry.update(input=as_rgb8(tensor_to_pixels(degraded.lq.clamp(0, 1))), gt=as_rgb8(degraded.gt),
                         data=None, is_jpeg=False)
        elif reference is not None:
            try:
                entry["gt"] = as_rgb8(decode_image(storage.read_bytes(storage.join(reference, name))).pixels)
            except (OSError, ValueError) as error:
                entry["reference_error"] = storage.redact(str(error))
        images[name] = entry
    results = []
    for spec in models:
        result = ModelResult(spec=spec)
        results.append(result)
        try:
            restore = _restorer(spec, task, result, predictor or PredictorConfig())
        except (OSError, ValueError) as error:
            result.error = storage.redact(str(error))
            continue
        first = next((e for e in images.values() if "input" in e), None)
        if first is not None:  # warm-up, untimed: the first pass pays for allocations and kernel choice
            try:
                restore(first)
            except (RuntimeError, ValueError):
                pass  # reported below, on the timed pass
        for name, entry in images.items():
            if "input" not in entry:
                continue
            lq = pixels_to_tensor(entry["input"])
            try:
                started = time.perf_counter()
                out = restore(entry)
                result.seconds += time.perf_counter() - started
            except (RuntimeError, ValueError) as error:  # a model that fails on this image
                result.error = f"{name}: {type(error).__name__}: {str(error).splitlines()[0]}"
                break
            result.megapixels += lq.shape[1] * lq.shape[2] / 1e6
            result.outputs[name] = out
            base = resized(entry["input"], out.shape[1], out.shape[0])
            result.changes.append(float(np.abs(base.astype(np.float32) - out.astype(np.float32)).mean()))
            gt = entry["gt"]
            if gt is not None and gt.shape == out.shape:
                value, structure = score(out, gt, the_case.spec if the_case else _plain_spec())
                result.psnr.append(value)
                result.ssim.append(structure)
    pixels = [e["input"].shape[0] * e["input"].shape[1] for e in images.values() if "input" in e]
    collection_mp, counted = _collection_megapixels(uris, pixels)
    return {"input": storage.redact(input_uri), "inputs": len(uris), "sample": images, "seed": seed, "case": case,
            "reference": reference, "results": results, "collection_megapixels": collection_mp, "counted": counted}


def _restorer(spec: str, task: str | None, result: ModelResult,
              config: Any) -> Callable[[dict[str, Any]], np.ndarray]:
    """``entry -> 8-bit output`` for a model spec or a route (``auto``, a route file), filling in
    ``result``'s model id, architecture, task, licence, source and weights' SHA-256."""
    from restoration.models.predictor import Predictor
    from restoration.quality.routing import ROUTED_TASK, RoutedRestorer, is_route, load_route

    if is_route(spec):
        routed = RoutedRestorer(load_route(spec), config, device="cpu")
        records = routed.records.values()
        result.model_id, result.architecture, result.task = routed.router.model_id, "route", ROUTED_TASK
        result.licence = " + ".join(sorted({str(r["licence"]) for r in records}))
        result.source = f"route {routed.router.name}: " + ", ".join(f"{key} = {r['spec']}" for key, r in routed.records.items())
        result.sha256 = ", ".join(str(r["sha256"] or "") for r in records)
        return lambda entry: routed.restore_pixels(entry["input"], data=entry["data"], is_jpeg=entry["is_jpeg"])[0]
    checkpoint, result.task = _load(spec, task)
    result.model_id, result.architecture = checkpoint.model_id, checkpoint.model.traits.architecture
    described = checkpoint.metadata.describe()
    result.licence, result.source = described["licence"], storage.redact(str(described["source"] or ""))
    result.sha256 = described["sha256"] or ""
    restorer = Predictor(checkpoint.model, config, device="cpu")
    return lambda entry: tensor_to_pixels(restorer.restore(pixels_to_tensor(entry["input"])).clamp(0, 1))


def _plain_spec() -> Any:
    from restoration.tasks.specs import get_task

    return get_task("general").protocol()


def _best_box(images: list[np.ndarray]) -> tuple[float, float, float]:
    """(top, left, side) as fractions of the image: a square where the outputs differ most."""
    from restoration.pages.page import crop_box

    height, width = images[0].shape[:2]
    same = [resized(image, width, height) if image.shape[:2] != (height, width) else image for image in images]
    spread = np.stack([s.astype(np.float32) for s in same]).std(axis=0)
    box = crop_box(np.zeros_like(spread), spread, max(16, min(height, width) // 3))
    return box[0] / height, box[1] / width, box[2] / min(height, width)


def _crop(image: np.ndarray, fractions: tuple[float, float, float], reference_shape: tuple[int, ...]) -> np.ndarray:
    """The same region of any output (whatever its scale), at :data:`DISPLAY` pixels."""
    height, width = image.shape[:2]
    side = max(1, round(fractions[2] * min(reference_shape[:2]) * height / reference_shape[0]))
    top, left = round(fractions[0] * height), round(fractions[1] * width)
    return resized(image[top : top + side, left : left + side], DISPLAY, DISPLAY, nearest=True)


@dataclass(frozen=True)
class ImageView:
    """One sample image on the page: the same crop of the input and of every model's output
    (``tiles``, the input first), or, with no tiles, the ``error`` that kept it off."""

    name: str
    tiles: list[Tile] = field(default_factory=list)
    error: str | None = None


def _image_view(name: str, entry: dict[str, Any], results: list[ModelResult]) -> ImageView:
    if "input" not in entry:
        return ImageView(name=name, error=f"cannot be read: {entry['error']}")
    done = [r for r in results if name in r.outputs]
    if not done:
        return ImageView(name=name, error="no model restored it")
    fractions = _best_box([entry["input"], *(r.outputs[name] for r in done)])
    shape = entry["input"].shape
    labels = ["input"] + [r.spec for r in done]
    crops = [_crop(entry["input"], fractions, shape)] + [_crop(r.outputs[name], fractions, shape) for r in done]
    return ImageView(name=name, tiles=[Tile(data_uri(c), label) for c, label in zip(crops, labels)])


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _models_table(report: dict[str, Any]) -> Table:
    scored = any(r.psnr for r in report["results"])
    rows = []
    for r in report["results"]:
        projected = r.seconds_per_megapixel * report["collection_megapixels"] if r.megapixels else None
        change = _mean(r.changes)
        cells = [Cell(r.spec), Cell(r.architecture or ""), Cell(r.error or "ok"),
                 Cell("" if change is None else f"{change:.2f}", change or -1),
                 Cell("" if not r.megapixels else f"{r.seconds_per_megapixel:.2f}",
                      r.seconds_per_megapixel if r.megapixels else -1),
                 Cell("" if projected is None else format_duration(projected), projected or -1)]
        if r.psnr:
            cells += [Cell(f"{_mean(r.psnr):.2f}", _mean(r.psnr)), Cell(f"{_mean(r.ssim):.4f}", _mean(r.ssim))]
        elif scored:
            cells += [Cell("", -1), Cell("", -1)]
        rows.append(cells)
    columns = [Column("model", sortable=False), Column("architecture", sortable=False),
               Column("status", sortable=False), Column("mean change (levels)"), Column("seconds / megapixel (here)"),
               Column("projected, whole collection")]
    if scored:
        columns += [Column("PSNR (dB)"), Column("SSIM")]
    return Table(id="models", columns=columns, rows=rows)


def comparison_page(report: dict[str, Any]) -> str:
    """The HTML page of :func:`compare_models`' report."""
    what = (f"case {report['case']} applied to the sample" if report["case"] else
            f"references {report['reference']}" if report["reference"] else "no references")
    return render("compare.html.j2", title=f"Model comparison: {report['input']}", report=report, what=what,
                  table=_models_table(report), display=DISPLAY,
                  images=[_image_view(name, entry, report["results"]) for name, entry in report["sample"].items()])


def write_comparison(input_uri: str, models: list[str], html_path: str, **options: Any) -> dict[str, Any]:
    """Compare (:func:`compare_models`) and write the page to the local file ``html_path``."""
    from pathlib import Path

    report = compare_models(input_uri, models, **options)
    path = Path(html_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(comparison_page(report), encoding="utf-8")
    return report


"""``restoration restore --dry-run``: what a run would do, without doing it -- the inputs it
would list, skip and restore, their megapixels, the outputs' size and the model's time per node
type -- from the listing, the earlier manifest and image headers. No model is loaded (only its
``model.json`` read), no executor or Ray starts, nothing is written.
"""

from __future__ import annotations

import argparse
import io
import posixpath
from dataclasses import dataclass, field
from typing import Any, Final

import pyarrow.compute as pc

from restoration.durations import format_duration
from restoration.io import storage
from restoration.io.errors import users_storage_errors
from restoration.models.checkpoint import (
    CheckpointError,
    read_model_metadata,
    resolve_model,
)
from restoration.quality.routing import Router, load_route
from restoration.restore import manifest as manifest_lib
from restoration.restore.planning import Plan, plan_restore
from restoration.restore.settings import RestoreConfig
from restoration.restore.stages import (
    measures_of,
    skip_stage,
    target_format,
)
from restoration.tasks.specs import TASK_NAMES

OUTPUT_BYTES_PER_MEGAPIXEL: Final[dict[str, int]] = {
    # Means over the four 8-bit RGB photos of bench/results/codec_throughput.json (0.24 to 1.0
    # megapixels): PNG at zlib level 1 (the default; level 6 is about 8 % smaller), JPEG and WebP
    # at quality 95, TIFF with deflate. BMP stores 3 bytes a pixel uncompressed.
    "PNG": 1_713_000,
    "JPEG": 360_000,
    "WEBP": 294_000,
    "TIFF": 2_392_000,
    "BMP": 3_000_000,
}
"""Bytes of an output per megapixel, by output format: an estimate for ``--dry-run`` (photos
compress differently; gray images are smaller, 16-bit ones larger)."""

DRY_RUN_MEGAPIXELS_PER_SECOND: Final[dict[str, float]] = {
    # MODEL_CARD.md, "Against the classical methods, with time": the shipped denoiser restores a
    # 481x321 CBSD68 image (0.154 megapixels) in 0.23 s with 2 threads on the idle 2-core
    # machine (bench/model_card.py --timing-only): 0.67 megapixels/s. No GPU figure has been
    # measured in this repository yet, so there is no GPU row.
    "cpu-2-cores": 0.67,
}
"""Measured restore rates (megapixels of input per second, the model alone, ensemble 1) by node
type, for the time estimates of ``--dry-run``. The pipeline's decode and encode come on top."""

_HEADER_BYTES: Final[int] = 64 * 1024
"""Bytes read first for an image header; the whole file is read when Pillow needs more (e.g. a
JPEG with a large EXIF block)."""


def _model_metadata(spec: str, task: str) -> tuple[str, int]:
    """``(model_id, scale)`` of ``--model`` from its ``model.json`` alone: no weights read, no
    model built (a community model file has no separate metadata: it is read and identified).
    Raises CheckpointError for a missing checkpoint or a model that cannot do ``task``."""
    source = resolve_model(spec, task)
    metadata, shown = read_model_metadata(source)
    misfit = metadata.traits.misfit(task)
    if misfit is not None:
        raise CheckpointError(f"--model {spec} is {misfit}, but --task is {task!r}")
    model_id = metadata.model_id or (source.name if not isinstance(source, str)
                                     else posixpath.basename(shown.rstrip("/")) or "unsaved")
    return model_id, int(metadata.scale)


def task_of(args: argparse.Namespace) -> str:
    """``--task``, or the task that ``--model``'s checkpoint records when it is not given."""
    if args.task is not None:
        return args.task
    if args.model == "default":
        raise ValueError(f"--task is needed with --model default (the shipped model of a task: "
                         f"{', '.join(TASK_NAMES)})")
    return read_model_metadata(resolve_model(args.model, ""))[0].task


def image_header(uri: str, *, max_bytes: int) -> tuple[int, int, str]:
    """``(width, height, format)`` of an image from its header (the first :data:`_HEADER_BYTES`,
    or the whole file when Pillow needs more). Raises ValueError or OSError when the file is
    missing, over ``max_bytes`` or not a readable image."""
    from PIL import Image, UnidentifiedImageError

    size = storage.size(uri)
    if size is None:
        raise FileNotFoundError(f"no such file: {uri}")
    if size > max_bytes:
        raise ValueError(f"file has {size} bytes, more than input.max_bytes={max_bytes}")
    filesystem, path = storage.resolve(uri)
    with filesystem.open_input_file(path) as stream:
        head = stream.read(_HEADER_BYTES)
    for data in (head, None):
        if data is None:
            if len(head) >= size:
                break  # the whole file was read already
            data = storage.read_bytes(uri)
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.size[0], image.size[1], image.format or "PNG"
        except Image.DecompressionBombError as error:
            raise ValueError(f"image is larger than Pillow's decompression-bomb limit: {error}") from error
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            continue
    raise ValueError("not a readable image header")


def dry_run_restore(
    input_uri: str,
    output_uri: str,
    *,
    task: str,
    model: str = "default",
    route: str | None = None,
    config: RestoreConfig | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    sample: int = 0,
) -> dict[str, Any]:
    """What :func:`run_restore` would do, without doing it: no model loaded (only its
    ``model.json`` read), no executor or Ray started, nothing written.

    Returns a mapping with ``inputs`` (listed), ``skipped`` (restored by an earlier run, same
    size), ``to_restore`` (the rest of the work), ``plan_errors`` (inputs that cannot be placed,
    which become error rows), ``unreadable`` (inputs to restore whose header cannot be read,
    which would become error rows), ``megapixels`` (inputs to restore with a readable header,
    width * height / 1e6), ``output_megapixels`` (times the model's scale squared),
    ``estimated_output_bytes`` (:data:`OUTPUT_BYTES_PER_MEGAPIXEL` of each output's format) and
    ``estimated_seconds`` (per node type of :data:`DRY_RUN_MEGAPIXELS_PER_SECOND`, times the
    ensemble size; the model alone), and ``sample``: up to ``sample`` inputs spread over the
    work, read and measured as the run's read stage measures them
    (:func:`restoration.restore.stages.measures_of`), with the route each would take when
    ``route`` is given (``auto`` or a route file; the model is then the route's).

    Raises:
        ValueError: as :func:`run_restore` (a bad argument or checkpoint, no inputs, storage
            that is the user's to fix). The output's writability is not checked: that would
            write.
    """
    config = config or RestoreConfig()
    input_uri, output_uri = storage.absolute_uri(input_uri), storage.absolute_uri(output_uri)
    with users_storage_errors("--input", input_uri):
        storage.check_readable(input_uri)
    router = load_route(route) if route is not None else None
    if router is not None:
        model_id, scale = router.model_id, 1
    else:
        with users_storage_errors("--model", model):
            model_id, scale = _model_metadata(model, task)
    with users_storage_errors("--output", output_uri):
        previous = manifest_lib.ManifestIndex(output_uri)
    with users_storage_errors("--input", input_uri):
        plan = plan_restore(input_uri, output_uri, task=task, model_id=model_id, config=config,
                            previous_manifest=previous, overwrite=overwrite, limit=limit)
    with plan:
        tally = _tally(plan, config, scale, sample=sample)
    measured = [_measure(uri, config, router) for uri in tally.sample_uris()]
    megapixels = tally.pixels / 1e6
    passes = config.predictor.ensemble
    return {
        "dry_run": True,
        "task": task,
        "model_id": model_id,
        "scale": scale,
        "input": storage.redact(input_uri),
        "output": storage.redact(output_uri),
        "inputs": plan.total,
        "skipped": tally.skipped,
        "to_restore": tally.to_restore,
        "plan_errors": plan.plan_errors,
        "unreadable": tally.unreadable,
        "unreadable_inputs": tally.unreadable_inputs,
        "megapixels": megapixels,
        "output_megapixels": megapixels * scale * scale,
        "estimated_output_bytes": int(round(tally.output_bytes)),
        "megapixels_per_second": dict(DRY_RUN_MEGAPIXELS_PER_SECOND),
        "estimated_seconds": {node: megapixels * passes / rate for node, rate in DRY_RUN_MEGAPIXELS_PER_SECOND.items()},
        "sample": measured,
        "notes": "output bytes from per-format means of bench/results/codec_throughput.json; times from measured "
                 "model rates (restoration.restore.run.DRY_RUN_MEGAPIXELS_PER_SECOND), the model alone, times the ensemble",
    }



@dataclass
class _Tally:
    """What the dry run counts over the plan's parts."""

    skipped: int = 0
    to_restore: int = 0
    pixels: int = 0
    output_bytes: float = 0.0
    unreadable: int = 0
    unreadable_inputs: list[dict[str, str]] = field(default_factory=list)  # the first 20
    readable: list[str] = field(default_factory=list)  # inputs to restore with a readable header
    sample: int = 0

    def sample_uris(self) -> list[str]:
        """Up to ``sample`` readable inputs, spread evenly over them."""
        count = min(self.sample, len(self.readable))
        return [self.readable[i * len(self.readable) // count] for i in range(count)] if count else []


def _measure(uri: str, config: RestoreConfig, router: Router | None) -> dict[str, Any]:
    """One input read, decoded and measured as the run's read stage does, with its route."""
    from restoration.io.codec import decode_image

    try:
        data = storage.read_bytes(uri)
        measures = measures_of(decode_image(data, max_pixels=config.input.max_pixels), data)
    except (OSError, ValueError) as error:  # ImageDecodeError is a ValueError
        return {"source_uri": storage.redact(uri), "error": storage.redact(str(error))}
    item: dict[str, Any] = {"source_uri": storage.redact(uri), "measures": measures}
    if router is not None:
        decision = router.decide(measures)
        item.update(route=decision.route, route_reason=decision.reason, strength=decision.strength)
    return item


def _tally(plan: Plan, config: RestoreConfig, scale: int, *, sample: int = 0) -> _Tally:
    """Skips (as the run's skip stage decides them), then the headers of the inputs to restore."""
    tally = _Tally(sample=sample)
    for part in plan.parts():
        work = part.work
        if work.num_rows and part.previous:
            checked = skip_stage(work.filter(pc.is_valid(work.column("previous_bytes"))))
            tally.skipped += int(pc.sum(checked.column("skipped").cast("int64")).as_py() or 0)
            done = checked.filter(checked.column("skipped")).column("source_uri")
            work = work.filter(pc.invert(pc.is_in(work.column("source_uri"), value_set=done.combine_chunks())))
        tally.to_restore += work.num_rows
        for uri in work.column("source_uri").to_pylist():
            try:
                width, height, source_format = image_header(uri, max_bytes=config.input.max_bytes)
                if width * height > config.input.max_pixels:
                    raise ValueError(f"{width}x{height} pixels, more than input.max_pixels={config.input.max_pixels}")
            except (OSError, ValueError) as error:
                tally.unreadable += 1
                if len(tally.unreadable_inputs) < 20:
                    tally.unreadable_inputs.append({"source_uri": storage.redact(uri), "error": storage.redact(str(error))})
                continue
            tally.pixels += width * height
            if sample and len(tally.readable) < 100_000:
                tally.readable.append(uri)
            written = target_format(source_format, config.output.format)
            tally.output_bytes += width * height * scale * scale / 1e6 * OUTPUT_BYTES_PER_MEGAPIXEL.get(written, 3_000_000)
    return tally


def format_dry_run(report: dict[str, Any]) -> str:
    """The lines ``restore --dry-run`` prints for a :func:`dry_run_restore` report."""
    lines = [
        f"dry run, restore {report['task']} (model {report['model_id']}, scale {report['scale']}): "
        f"{report['inputs']} inputs from {report['input']} -> {report['output']}",
        f"  to restore {report['to_restore']}, skipped as already done {report['skipped']}, "
        f"cannot be placed {report['plan_errors']}, header unreadable {report['unreadable']}",
        f"  {report['megapixels']:.3f} megapixels in, {report['output_megapixels']:.3f} out; "
        f"about {report['estimated_output_bytes'] / 1e6:.1f} MB of outputs (estimate)",
    ]
    for node, seconds in report["estimated_seconds"].items():
        lines.append(f"  estimated model time on {node}: {format_duration(seconds)} "
                     f"(at {report['megapixels_per_second'][node]:g} megapixels/s)")
    for item in report["unreadable_inputs"]:
        lines.append(f"  unreadable: {item['source_uri']}: {item['error']}")
    if report.get("sample"):
        lines.append(f"  measured, {len(report['sample'])} inputs (noise sigma on 0-255, JPEG quality from the file's "
                     "tables, blockiness about 1 when none, blur 0 sharp to 1):")
    for item in report.get("sample", []):
        if "error" in item:
            lines.append(f"    {item['source_uri']}: {item['error']}")
            continue
        m = item["measures"]
        quality = "-" if m["jpeg_quality"] is None else m["jpeg_quality"]
        line = (f"    {item['source_uri']}: {m['width']}x{m['height']}, noise {m['noise_sigma']:.1f}, jpeg quality "
                f"{quality}, blockiness {m['blockiness']:.2f}, blur {m['blur']:.2f}"
                + (", gray stored as RGB" if m["gray_rgb"] else ""))
        if "route" in item:
            strength = f" at strength {item['strength']:g}" if 0 < item["strength"] < 1 else ""
            line += f" -> {item['route']}{strength} ({item['route_reason']})"
        lines.append(line)
    lines.append("nothing was written; no model was loaded")
    return "\n".join(lines)

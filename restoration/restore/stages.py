"""Batch restoration without Ray: the plan and the per-image work of ``jobs/restore.py``.

The Ray job is a thin adapter over the functions here; each stage maps one Arrow table to the
next, so it can be run and tested in one process:

1. :func:`restoration.restore.planning.plan_restore` (driver) -- list the inputs (a prefix, one file, or a Parquet/CSV/text
   list of URIs), give each a safe output URI under the output prefix, and mark the ones an
   earlier run already restored. Inputs that cannot be planned become error rows right away.
   Output: a *work* table (:data:`WORK_SCHEMA`). On a re-run, :func:`skip_stage` (CPU tasks)
   then stats the inputs restored before and marks the unchanged ones as skipped, so that no
   model is loaded for inputs that are all done.
2. :func:`read_stage` (CPU tasks) -- stat, read and decode each input. Output: a *pipeline*
   table (:data:`PIPELINE_SCHEMA`) holding raw pixels, or a status for inputs that are done
   (``skipped``) or failed (``error``).
3. :func:`restore_stage` (the model's actors) -- restore the pixels of pending rows.
4. :func:`encode_stage` (CPU tasks) -- encode in the input's format (or ``output.format``),
   write, and return manifest rows (:data:`restoration.restore.manifest.MANIFEST_SCHEMA`).

A bad input never raises out of a stage: it becomes a row with ``status="error"``, the stage
that failed and a readable reason (credentials redacted). Pixels travel between stages as raw
``H x W x C`` bytes in ``large_binary`` columns, with their shape and bit depth in other columns.

Inpainting reads the missing pixels from the alpha channel (alpha 0 = missing) and writes an
opaque image.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import pyarrow as pa

from restoration.io import outages, storage
from restoration.io.codec import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    ImageDecodeError,
    ImageMetadata,
    decode_image,
    with_pixels,
)
from restoration.io.encode import encode_image, output_format_for
from restoration.io.pixels import pixels_to_tensor, tensor_to_pixels
from restoration.models.predictor import Predictor
from restoration.quality.routing import SKIP, Router, image_measures, route_settings
from restoration.restore.manifest import (
    ASSESSMENT_FIELDS,
    COLUMNS,
    MANIFEST_SCHEMA,
    WORK_SCHEMA,
    error_row,
)
from restoration.restore.settings import DEFAULT_PNG_COMPRESSION
from restoration.tasks.specs import TaskSpec

# --------------------------------------------------------------------------------------------
# Schemas between stages

PIPELINE_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("output_uri", pa.string(), nullable=False),
        pa.field("status", pa.string()),  # null while pending; "error" or "skipped" when done
        pa.field("error", pa.string()),
        pa.field("error_stage", pa.string()),
        pa.field("bytes_in", pa.int64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("mode", pa.string()),
        pa.field("format", pa.string()),
        pa.field("channels", pa.int8()),
        pa.field("bit_depth", pa.int8()),
        # Raw H x W x C samples (uint8, or native-endian uint16); after the restore
        # stage, the restored pixels at out_height x out_width.
        pa.field("pixels", pa.large_binary()),
        pa.field("alpha", pa.large_binary()),
        # Carried from the input to the output unchanged: the ICC profile and the EXIF, XMP and
        # IPTC blocks (restoration.io.codec.ImageMetadata).
        pa.field("icc_profile", pa.large_binary()),
        pa.field("exif", pa.large_binary()),
        pa.field("xmp", pa.large_binary()),
        pa.field("iptc", pa.large_binary()),
        pa.field("out_width", pa.int32()),
        pa.field("out_height", pa.int32()),
        pa.field("seconds", pa.float64()),
        # Set by the restore stage (and by the read stage for a routed image): see
        # restoration.restore.manifest.
        pa.field("mean_abs_change", pa.float64()),
        pa.field("strength", pa.float64()),
        # Set by the read stage: the input's measures, and in a routed run its route.
        *ASSESSMENT_FIELDS,
        pa.field("route", pa.string()),
        pa.field("route_reason", pa.string()),
        pa.field("route_noise_level", pa.float64()),  # the noise-level map's sigma a rule set (null: the model's)
        pa.field("route_quality_factor", pa.float64()),  # the JPEG quality a rule set (null: the model's)
        # The input file's bytes, kept for an image routed to skip: written as they are when
        # the output format is the input's.
        pa.field("source", pa.large_binary()),
    ]
)

_BINARY: Final[tuple[str, ...]] = ("pixels", "alpha", "icc_profile", "exif", "xmp", "iptc", "source")
_CARRIED: Final[tuple[str, ...]] = ("icc_profile", "exif", "xmp", "iptc", "source")
_MEASURES: Final[tuple[str, ...]] = tuple(measure.name for measure in ASSESSMENT_FIELDS)


def _pipeline_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pydict({name: [row.get(name) for row in rows] for name in PIPELINE_SCHEMA.names},
                                schema=PIPELINE_SCHEMA)


def _work_rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.select([n for n in table.column_names if n not in _BINARY]).to_pylist()


def _buffers(table: pa.Table) -> list[dict[str, pa.Buffer | None]]:
    """Per row, the cells of the binary columns as zero-copy buffers (None for nulls)."""
    columns = {name: [None if not cell.is_valid else cell.as_buffer()
                      for chunk in table.column(name).chunks for cell in chunk] for name in _BINARY}
    return [{name: columns[name][index] for name in _BINARY} for index in range(table.num_rows)]


def _bytes(buffer: pa.Buffer | None) -> bytes | None:
    return None if buffer is None else buffer.to_pybytes()


def _dtype(bit_depth: int) -> type:
    return np.uint16 if bit_depth == 16 else np.uint8


def _unpack(row: Mapping[str, Any], buffers: Mapping[str, pa.Buffer | None], *, restored: bool = False) -> DecodedImage:
    dtype = _dtype(row["bit_depth"])
    height, width = (row["out_height"], row["out_width"]) if restored else (row["height"], row["width"])
    array = np.frombuffer(buffers["pixels"], dtype=dtype).reshape(height, width, row["channels"])
    alpha = buffers["alpha"]
    alpha_array = None if alpha is None else np.frombuffer(alpha, dtype=dtype).reshape(height, width)
    metadata = ImageMetadata(exif=_bytes(buffers["exif"]), xmp=_bytes(buffers["xmp"]), iptc=_bytes(buffers["iptc"]))
    return DecodedImage(pixels=array, alpha=alpha_array, mode=row["mode"], format=row["format"],
                        icc_profile=_bytes(buffers["icc_profile"]), metadata=metadata)


# --------------------------------------------------------------------------------------------
# Stage 0 (re-runs only): which inputs are already done


SKIP_SCHEMA: Final[pa.Schema] = WORK_SCHEMA.append(pa.field("bytes_in", pa.int64())).append(
    pa.field("skipped", pa.bool_(), nullable=False)
)


def skip_stage(work: pa.Table, *, outage_seconds: float | None = None) -> pa.Table:
    """Stat the inputs of a work table that an earlier run restored (``previous_bytes`` set) and
    mark those whose size is unchanged as ``skipped`` (:data:`SKIP_SCHEMA`).

    Only metadata is read. An input that cannot be inspected is not skipped: the read stage
    then reports what is wrong with it. ``outage_seconds``: this process's storage outage
    budget for the call (None: as it is).
    """
    with outages.outage_budget(outage_seconds):
        return _skip_rows(work)


def _skip_rows(work: pa.Table) -> pa.Table:
    rows = []
    for item in work.to_pylist():
        size = None
        if item["previous_bytes"] is not None:
            try:
                size = storage.size(item["source_uri"])
            except (OSError, ValueError):
                size = None
        rows.append({**item, "bytes_in": size, "skipped": size is not None and size == item["previous_bytes"]})
    return pa.Table.from_pylist(rows, schema=SKIP_SCHEMA)


# --------------------------------------------------------------------------------------------
# Stage 1: read and decode (CPU)


def read_stage(
    work: pa.Table, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = 1 << 30,
    outage_seconds: float | None = None, router: Router | None = None,
) -> pa.Table:
    """Stat, read, decode and assess every row of a work table (:data:`WORK_SCHEMA`).

    Returns a :data:`PIPELINE_SCHEMA` table, one row per input: pixels and measures
    (:func:`restoration.quality.assess.assess`) for decoded images; ``status="skipped"`` where
    ``previous_bytes`` equals the current size (nothing read); ``status="error"`` for missing,
    unreadable, over-size or undecodable files, and for files the store did not serve within
    ``outage_seconds`` (None: this process's budget as it is). With a ``router`` (``--model
    auto``, ``--route``), each image's route, reason and strength are decided here; an image
    routed to ``skip`` keeps its file's bytes.
    """
    with outages.outage_budget(outage_seconds):
        return _read_rows(work, max_pixels=max_pixels, max_bytes=max_bytes, router=router)


def measures_of(image: DecodedImage, data: bytes) -> dict[str, Any]:
    """What a route's conditions read (:data:`restoration.quality.assess.MEASURES`): the
    assessment of ``image`` (decoded from the file bytes ``data``), its size, channels, bit depth
    and whether it is a JPEG file."""
    return image_measures(image.pixels, data=data, bit_depth=image.bit_depth, is_jpeg=image.format == "JPEG")


def _read_rows(work: pa.Table, *, max_pixels: int, max_bytes: int, router: Router | None) -> pa.Table:
    rows = []
    for item in work.to_pylist():
        start = time.perf_counter()
        row: dict[str, Any] = {"source_uri": item["source_uri"], "output_uri": item["output_uri"]}
        source = item["source_uri"]
        try:
            size = storage.size(source)
            if size is None:
                raise FileNotFoundError(f"no such file: {source}")
            row["bytes_in"] = size
            if item["previous_bytes"] is not None and item["previous_bytes"] == size:
                row["status"] = "skipped"
                rows.append(row)
                continue
            if size > max_bytes:
                raise _StageError("read", f"file has {size} bytes, more than input.max_bytes={max_bytes}")
            data = storage.read_bytes(source)
        except _StageError as error:
            rows.append(_failed(row, error.stage, error.message, start))
            continue
        except (OSError, ValueError) as error:
            rows.append(_failed(row, "read", f"cannot read: {error}", start))
            continue
        try:
            image = decode_image(data, max_pixels=max_pixels)
        except (ImageDecodeError, ValueError, TypeError) as error:
            rows.append(_failed(row, "decode", str(error), start))
            continue
        row.update(
            width=image.width, height=image.height, mode=image.mode, format=image.format,
            channels=image.channels, bit_depth=image.bit_depth, pixels=image.pixels.tobytes(),
            alpha=None if image.alpha is None else image.alpha.tobytes(), icc_profile=image.icc_profile,
            exif=image.metadata.exif, xmp=image.metadata.xmp, iptc=image.metadata.iptc,
        )
        measures = measures_of(image, data)
        row.update({name: measures[name] for name in _MEASURES})
        if router is not None:
            decision = router.decide(measures)
            row.update(route=decision.route, route_reason=decision.reason, strength=decision.strength,
                       route_noise_level=decision.noise_level, route_quality_factor=decision.quality_factor,
                       source=data if decision.route == SKIP else None)
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
    return _pipeline_table(rows)


class _StageError(Exception):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage, self.message = stage, message


def _failed(row: dict[str, Any], stage: str, message: str, start: float) -> dict[str, Any]:
    row.update(status="error", error_stage=stage, error=storage.redact(message),
               seconds=(row.get("seconds") or 0.0) + time.perf_counter() - start, **dict.fromkeys(_BINARY))
    return row


# --------------------------------------------------------------------------------------------
# Stage 2: restore (the model's actors)


def restore_stage(predictor: Predictor | Mapping[str, Predictor], table: pa.Table, *,
                  task: type[TaskSpec]) -> pa.Table:
    """Restore the pending rows of a :data:`PIPELINE_SCHEMA` table with a
    :class:`restoration.models.predictor.Predictor`, or in a routed run with the predictor of
    each row's ``route`` (a mapping from route keys) at the row's ``strength``; rows with a
    status pass through unchanged, and rows routed to ``skip`` keep their pixels.

    Same-sized images of one route and strength share forward passes; if a batch fails, its
    images are retried one by one, and an image that fails alone becomes an error row (stage
    ``restore``). Restored pixels keep the input's channel count and bit depth; alpha is resized
    with them (SR), or dropped for tasks with a mask input (inpainting), where alpha 0 marks the
    missing pixels. Each restored row records ``mean_abs_change`` (:func:`mean_abs_change`) and
    the strength used. ``task``: the run's task spec class.
    """
    takes_mask = task.mask_input
    rows = _work_rows(table)
    buffers = _buffers(table)
    groups: dict[tuple[str | None, float, float | None, float | None], list[int]] = {}
    images: dict[int, DecodedImage] = {}
    results: dict[int, np.ndarray] = {}
    seconds: dict[int, float] = {}
    for index, row in enumerate(rows):
        if row["status"] is not None:
            continue
        try:
            image = _unpack(row, buffers[index])
            if takes_mask and image.alpha is None:
                raise ValueError(f"{task.name} reads the missing pixels from the alpha channel "
                                 "(alpha 0 = missing), and this image has no alpha")
            route = row.get("route")
            if isinstance(predictor, Mapping) and route != SKIP and route not in predictor:
                raise ValueError(f"route {route!r} has no model in this worker")
        except ValueError as error:
            _failed(row, "restore", str(error), time.perf_counter())
            continue
        images[index] = image
        if route == SKIP:
            results[index], seconds[index] = image.pixels, 0.0
            continue
        strength = row["strength"] if route is not None else float(getattr(predictor, "strength", 1.0))
        groups.setdefault((route, strength, row.get("route_noise_level"), row.get("route_quality_factor")),
                          []).append(index)
        row["strength"] = strength

    for (route, strength, noise_level, quality_factor), indices in groups.items():
        model = predictor[route] if isinstance(predictor, Mapping) else predictor
        _restore_group(model, indices, strength=strength, noise_level=noise_level, quality_factor=quality_factor,
                       images=images, rows=rows, results=results, seconds=seconds, takes_mask=takes_mask,
                       routed=route is not None)

    columns: dict[str, list[Any]] = {name: [] for name in _BINARY}
    for index, row in enumerate(rows):
        if index not in results:  # done before this stage, or failed in it
            for name in _BINARY:
                columns[name].append(None)
            continue
        source = images[index]
        restored = with_pixels(source, results[index])
        alpha = None if takes_mask else restored.alpha
        row.update(out_height=restored.height, out_width=restored.width,
                   mean_abs_change=mean_abs_change(source.pixels, restored.pixels),
                   seconds=(row["seconds"] or 0.0) + seconds[index])
        columns["pixels"].append(restored.pixels.tobytes())
        columns["alpha"].append(None if alpha is None else alpha.tobytes())
        for name in _CARRIED:
            columns[name].append(_bytes(buffers[index][name]))
    columns |= {name: [row.get(name) for row in rows] for name in PIPELINE_SCHEMA.names if name not in _BINARY}
    return pa.Table.from_pydict(columns, schema=PIPELINE_SCHEMA)


def _restore_group(predictor: Predictor, indices: list[int], *, strength: float, noise_level: float | None,
                   quality_factor: float | None, images: dict[int, DecodedImage],
                   rows: list[dict[str, Any]], results: dict[int, np.ndarray], seconds: dict[int, float],
                   takes_mask: bool, routed: bool) -> None:
    """Restore ``indices`` (one route, strength, noise level and quality factor) into ``results``
    and ``seconds``; retry a failed batch one image at a time, an image that fails alone becomes
    an error row."""
    import torch

    def run(batch: list[int]) -> None:
        tensors = [pixels_to_tensor(images[i].pixels) for i in batch]
        masks = None
        if takes_mask:
            masks = [torch.from_numpy((images[i].alpha == 0).astype(np.float32))[None] for i in batch]
        start = time.perf_counter()
        outputs = predictor.restore_many(tensors, masks)
        elapsed = time.perf_counter() - start
        total = sum(images[i].width * images[i].height for i in batch)
        for i, output in zip(batch, outputs, strict=True):
            results[i] = tensor_to_pixels(output.clamp(0, 1), dtype=images[i].pixels.dtype)
            seconds[i] = elapsed * images[i].width * images[i].height / total

    # A routed group runs at its route's settings; a run with one model leaves the predictor as configured.
    settings = route_settings(predictor, strength=strength, noise_level=noise_level, quality_factor=quality_factor) \
        if routed else contextlib.nullcontext()
    with settings:
        try:
            run(indices)
        except Exception:  # one bad image must not fail its batch: retry them one by one
            for index in indices:
                if index in results:
                    continue
                try:
                    run([index])
                except Exception as error:  # noqa: BLE001 -- any model failure is this image's error
                    _failed(rows[index], "restore", f"{type(error).__name__}: {error}", time.perf_counter())


def mean_abs_change(source: np.ndarray, restored: np.ndarray) -> float:
    """How much restoration changed an image: the mean absolute difference, in 8-bit levels
    (0..255 scale, over every pixel and channel), between ``restored`` and the model's input at
    the output size.

    Args:
        source: the input, ``H x W x C`` uint8 or uint16.
        restored: the output, ``H' x W' x C`` of the same dtype. When its size differs (super-
            resolution), ``source`` is first upsampled bicubically to it, as the model upsamples
            its input, so that an SR model that adds nothing to bicubic changes nothing.
    """
    if source.dtype != restored.dtype or source.shape[2] != restored.shape[2]:
        raise ValueError(f"source {source.shape} {source.dtype} and restored {restored.shape} {restored.dtype} "
                         "must have the same channels and dtype")
    if source.shape[:2] != restored.shape[:2]:
        import torch.nn.functional as F

        upsampled = F.interpolate(pixels_to_tensor(source)[None], size=restored.shape[:2], mode="bicubic",
                                  align_corners=False)[0]
        source = tensor_to_pixels(upsampled.clamp(0, 1), dtype=source.dtype)
    difference = np.abs(restored.astype(np.int32) - source.astype(np.int32))
    return float(difference.mean()) * 255.0 / float(np.iinfo(source.dtype).max)


# --------------------------------------------------------------------------------------------
# Stage 3: encode and write (CPU)


def target_format(source_format: str, output_format: str | None) -> str:
    """The format an output is written in: ``output_format``, else the source's when writable,
    else PNG."""
    return output_format if output_format is not None else output_format_for(source_format)


def encode_stage(
    table: pa.Table,
    *,
    task: str,
    model_id: str,
    job_id: str,
    output_format: str | None = None,
    quality: int = 95,
    png_compression: int = DEFAULT_PNG_COMPRESSION,
    strip_metadata: bool = False,
    outage_seconds: float | None = None,
) -> pa.Table:
    """Encode and write the restored rows of a :data:`PIPELINE_SCHEMA` table; return one manifest
    row per input (:data:`restoration.restore.manifest.MANIFEST_SCHEMA`). Skipped rows come back as
    ``status="skipped"`` with only their source, output and size: the driver fills in the rest
    from the earlier manifest.

    ``quality``, ``png_compression`` and ``strip_metadata`` go to
    :func:`restoration.io.codec.encode_image` (see :class:`OutputConfig`). A write waits out a
    storage outage for up to ``outage_seconds`` (None: this process's budget as it is), then
    becomes an error row."""
    with outages.outage_budget(outage_seconds):
        return _encode_rows(table, task=task, model_id=model_id, job_id=job_id, output_format=output_format,
                            quality=quality, png_compression=png_compression, strip_metadata=strip_metadata)


def _encode_rows(table: pa.Table, *, task: str, model_id: str, job_id: str, output_format: str | None,
                 quality: int, png_compression: int, strip_metadata: bool) -> pa.Table:
    rows = _work_rows(table)
    buffers = _buffers(table)
    manifest_rows = []
    for index, row in enumerate(rows):
        common = {
            "source_uri": row["source_uri"], "task": task, "model_id": model_id, "job_id": job_id,
            "width": row["width"], "height": row["height"], "mode": row["mode"], "format": row["format"],
            "channels": row["channels"], "bit_depth": row["bit_depth"], "bytes_in": row["bytes_in"],
            **{name: row[name] for name in (*_MEASURES, "route", "route_reason")},
        }
        if row["status"] == "skipped":
            manifest_rows.append({"source_uri": row["source_uri"], "output_uri": row["output_uri"],
                                  "status": "skipped", "bytes_in": row["bytes_in"], "job_id": job_id})
            continue
        if row["status"] == "error":
            manifest_rows.append(error_row(row["source_uri"], row["error"], row["error_stage"],
                                           seconds=row["seconds"], **{k: v for k, v in common.items() if k != "source_uri"}))
            continue
        start = time.perf_counter()
        stage = "encode"
        try:
            image = _unpack(row, buffers[index], restored=True)
            written_format = target_format(row["format"], output_format)
            data = _bytes(buffers[index]["source"])
            if data is None or written_format != row["format"] or strip_metadata:  # else: skipped, the same bytes
                data = encode_image(image, written_format, quality=quality, png_compression=png_compression,
                                    strip_metadata=strip_metadata)
            stage = "write"
            storage.write_bytes(row["output_uri"], data)
        except Exception as error:  # noqa: BLE001 -- an encoder or storage failure is this image's error
            message = f"{type(error).__name__}: {error}" if stage == "encode" else str(error)
            manifest_rows.append(error_row(
                row["source_uri"], message, stage,
                seconds=(row["seconds"] or 0.0) + time.perf_counter() - start,
                **{k: v for k, v in common.items() if k != "source_uri"},
            ))
            continue
        manifest_rows.append({
            **common,
            "output_uri": row["output_uri"], "status": "ok", "out_width": row["out_width"],
            "out_height": row["out_height"], "out_format": written_format,
            "has_alpha": image.alpha is not None and written_format not in ("JPEG", "BMP"),
            "bytes_out": len(data), "seconds": (row["seconds"] or 0.0) + time.perf_counter() - start,
            "mean_abs_change": row["mean_abs_change"], "strength": row["strength"],
            "restored_at": dt.datetime.now(dt.timezone.utc),
        })
    return pa.Table.from_pydict({name: [row.get(name) for row in manifest_rows] for name in COLUMNS},
                                schema=MANIFEST_SCHEMA)

"""Batch restoration without Ray: the plan and the per-image work of ``jobs/restore.py``.

The Ray job is a thin adapter over the functions here; each stage maps one Arrow table to the
next, so it can be run and tested in one process:

1. :func:`restoration.planning.plan_restore` (driver) -- list the inputs (a prefix, one file, or a Parquet/CSV/text
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
   write, and return manifest rows (:data:`restoration.manifest.MANIFEST_SCHEMA`).

A bad input never raises out of a stage: it becomes a row with ``status="error"``, the stage
that failed and a readable reason (credentials redacted). Pixels travel between stages as raw
``H x W x C`` bytes in ``large_binary`` columns, with their shape and bit depth in other columns.

Inpainting reads the missing pixels from the alpha channel (alpha 0 = missing) and writes an
opaque image.
"""

from __future__ import annotations

import datetime as dt
import inspect
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

import numpy as np
import pyarrow as pa

from restoration import storage
from restoration.codec import (
    DEFAULT_MAX_PIXELS,
    ENCODE_FORMATS,
    PNG_COMPRESSION_LEVELS,
    DecodedImage,
    ImageDecodeError,
    ImageMetadata,
    decode_image,
    encode_image,
    normalize_format,
    output_format_for,
    pixels_to_tensor,
    tensor_to_pixels,
    with_pixels,
)
from restoration.inference import ENSEMBLE_SIZES, PRECISIONS, Predictor
from restoration.stopping import GRACE_SECONDS
from restoration.manifest import COLUMNS, FLUSH_ROWS, FLUSH_SECONDS, MANIFEST_SCHEMA, UNCHANGED_THRESHOLD, error_row
from restoration.tasks import get_task

__all__ = [
    "PIPELINE_SCHEMA",
    "PIPELINE_STAGES",
    "WORK_SCHEMA",
    "InputConfig",
    "ManifestConfig",
    "OutputConfig",
    "PipelineConfig",
    "PredictorConfig",
    "RestoreConfig",
    "StopConfig",
    "StorageConfig",
    "SKIP_SCHEMA",
    "encode_stage",
    "mean_abs_change",
    "read_stage",
    "restore_stage",
    "skip_stage",
    "target_format",
]

DEFAULT_PNG_COMPRESSION: Final[int] = 1
"""PNG zlib level of outputs (as :func:`restoration.codec.encode_image`): the fastest that
compresses; 6 (Pillow's default) costs several times the encode time for a few percent."""


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class InputConfig:
    """Limits on inputs; files beyond them become error rows before they are decoded.

    ``max_pixels``: width * height (from the header); ``max_bytes``: file size, checked before
    the file is read. ``uri_column``: the URI column of a Parquet/CSV list (default: the first of
    :data:`restoration.planning.URI_COLUMNS` present, or the only column). ``partition_size``:
    inputs planned and run at a time (:mod:`restoration.planning`); the driver's memory follows
    it, not the size of the collection.
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = 1 << 30
    uri_column: str | None = None
    partition_size: int = 100_000

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_bytes", "partition_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"input.{name} must be >= 1, got {getattr(self, name)}")
        if self.uri_column is not None and not self.uri_column.strip():
            raise ValueError("input.uri_column must be a column name or null, got an empty string")


@dataclass(frozen=True)
class OutputConfig:
    """How outputs are written (:func:`restoration.codec.encode_image`).

    ``format``: None writes each image in its input's format (PNG when that format cannot be
    written, e.g. GIF); otherwise one of PNG, JPEG, WEBP, TIFF, BMP for every output, whose file
    extension is changed to match. ``quality``: JPEG/WebP quality, 1..100. ``png_compression``:
    PNG zlib level, 0..9 (1, the default, is the fastest that compresses; 9 the smallest).
    ``strip_metadata``: write no EXIF, XMP or IPTC (carried over from the input otherwise, with
    the EXIF orientation reset to 1); the ICC profile is always kept.
    """

    format: str | None = None
    quality: int = 95
    png_compression: int = DEFAULT_PNG_COMPRESSION
    strip_metadata: bool = False

    def __post_init__(self) -> None:
        if self.png_compression not in PNG_COMPRESSION_LEVELS:
            raise ValueError(f"output.png_compression must be a zlib level in 0..9, got {self.png_compression}")
        if self.format is not None:
            canonical = normalize_format(self.format)
            if canonical not in ENCODE_FORMATS:
                raise ValueError(
                    f"output.format {self.format!r} is not writable; choose one of {', '.join(sorted(ENCODE_FORMATS))}"
                )
            object.__setattr__(self, "format", canonical)
        if not 1 <= self.quality <= 100:
            raise ValueError(f"output.quality must be in 1..100, got {self.quality}")


_PREDICTOR_PARAMETERS: Final[frozenset[str]] = frozenset(inspect.signature(Predictor).parameters)


@dataclass(frozen=True)
class PredictorConfig:
    """Arguments of :class:`restoration.inference.Predictor` in each actor.

    ``device``: None picks CUDA when the actor was given a GPU, else CPU. ``threads``: torch
    intra-op threads per actor on CPU (None: sized from the cluster by the job). ``tile`` /
    ``overlap``: images larger than ``tile`` pixels on a side go through overlapping tiles
    (``tile`` 0: never; else more than twice ``overlap``). ``batch_size``: images or tiles per
    forward pass. ``ensemble``: geometric self-ensemble of 1, 2, 4 or 8 passes (slower,
    slightly better). ``strength``: how much of the model's change to apply, in [0, 1] (0 returns
    the input, 1 the model as trained); recorded in every manifest row. ``precision``: ``auto``
    (bf16 autocast on CUDA and on CPUs with hardware bf16), ``fp32`` or ``bf16``; ``amp: false``
    also forces fp32. ``tile_batch_size``: tiles of one large image per forward pass (None:
    ``batch_size``).
    """

    device: str | None = None
    tile: int = 512
    overlap: int = 32
    batch_size: int = 4
    amp: bool = True
    channels_last: bool = True
    threads: int | None = None
    ensemble: int = 1
    strength: float = 1.0
    precision: str = "auto"
    tile_batch_size: int | None = None

    def __post_init__(self) -> None:
        # The Predictor's own rules (restoration.inference), checked when the config loads so that
        # a bad value fails in one line before any worker starts.
        if self.ensemble not in ENSEMBLE_SIZES:
            raise ValueError(f"predictor.ensemble must be one of {', '.join(map(str, ENSEMBLE_SIZES))}, got {self.ensemble}")
        if self.device not in (None, "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", str(self.device)):
            raise ValueError(f"predictor.device must be cpu, cuda, cuda:N or null, got {self.device!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"predictor.threads must be >= 1, got {self.threads}")
        if self.overlap < 0:
            raise ValueError(f"predictor.overlap must be >= 0 pixels, got {self.overlap}")
        if self.tile != 0 and not self.tile > 2 * self.overlap:
            raise ValueError(f"predictor.tile must be 0 (no tiling) or more than 2 * predictor.overlap = "
                             f"{2 * self.overlap} pixels, got {self.tile}")
        if self.batch_size < 1:
            raise ValueError(f"predictor.batch_size must be >= 1 (images or tiles per forward pass), got {self.batch_size}")
        if not (math.isfinite(self.strength) and 0.0 <= self.strength <= 1.0):
            raise ValueError(f"predictor.strength must be in [0, 1] (0: the input unchanged, 1: the model as "
                             f"trained), got {self.strength}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"predictor.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not self.amp and self.precision == "bf16":
            raise ValueError("predictor.precision bf16 contradicts predictor.amp false (which forces fp32); "
                             "set one of them")
        if self.tile_batch_size is not None and self.tile_batch_size < 1:
            raise ValueError(f"predictor.tile_batch_size must be >= 1 (tiles per forward pass) or null "
                             f"(predictor.batch_size), got {self.tile_batch_size}")
        unsupported = [name for name in self.predictor_options() if name not in _PREDICTOR_PARAMETERS]
        if unsupported:
            raise ValueError(f"predictor.{unsupported[0]} is not supported by this version's Predictor; "
                             f"leave it at its default")

    def predictor_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`restoration.inference.Predictor` besides the device: every
        field but ``device`` and ``threads``, leaving out those at their defaults that this
        version's Predictor does not take."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("device", "threads")
                and (f.name in _PREDICTOR_PARAMETERS or getattr(self, f.name) != f.default)}


PIPELINE_STAGES: Final[tuple[str, ...]] = ("auto", "fused", "split")
"""Shapes of the Ray job's pipeline (``jobs/restore.py``): ``fused`` (each model actor reads,
restores, encodes and writes), ``split`` (read tasks -> model actors -> encode tasks), ``auto``
(fused on CPU-only pools, split when the actors hold GPUs)."""


@dataclass(frozen=True)
class PipelineConfig:
    """How the Ray Data pipeline is cut and placed (defaults are sized from the cluster).

    ``batch_size``: images per actor call (None: 16 with a GPU, 4 on CPU). ``read_batch_size``:
    images per read/decode (and encode/write) call. ``min_actors`` / ``max_actors``: the model actor pool (max None: one per
    GPU, or one per ``predictor.threads`` CPUs). ``cpus_per_actor`` (None: 1 with a GPU, 0.5 on
    CPU-only clusters) and ``gpus_per_actor`` (None: 1 where the cluster has GPUs). ``use_gpu``:
    None decides from the cluster's resources when the job starts; set it true on an autoscaling
    cluster whose GPU nodes are not up yet. ``cpus_per_task``: CPUs of a read or write task.
    ``stages``: the pipeline's shape (:data:`PIPELINE_STAGES`). ``stream_seconds``: how often a
    fused actor sends the manifest rows of the images it wrote to the driver while it works on a
    block (what a crash of the driver can lose is about this plus ``manifest.flush_seconds``).
    (Storage outages are waited out for up to ``storage.outage_seconds``; an input that still
    fails is an error row, which the next run retries.)
    """

    batch_size: int | None = None
    read_batch_size: int = 4
    min_actors: int = 1
    max_actors: int | None = None
    cpus_per_actor: float | None = None
    gpus_per_actor: float | None = None
    use_gpu: bool | None = None
    cpus_per_task: float = 1.0
    stages: str = "auto"
    stream_seconds: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.stream_seconds) and self.stream_seconds >= 0):
            raise ValueError(f"pipeline.stream_seconds must be a number >= 0, got {self.stream_seconds}")
        if self.stages not in PIPELINE_STAGES:
            raise ValueError(f"pipeline.stages must be one of {', '.join(PIPELINE_STAGES)}, got {self.stages!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"pipeline.batch_size must be >= 1 or null, got {self.batch_size}")
        if self.read_batch_size < 1:
            raise ValueError(f"pipeline.read_batch_size must be >= 1, got {self.read_batch_size}")
        if self.min_actors < 1:
            raise ValueError(f"pipeline.min_actors must be >= 1, got {self.min_actors}")
        if self.max_actors is not None and self.max_actors < self.min_actors:
            raise ValueError(f"pipeline.max_actors must be >= pipeline.min_actors ({self.min_actors}) or null, "
                             f"got {self.max_actors}")
        if not (math.isfinite(self.cpus_per_task) and self.cpus_per_task > 0):
            raise ValueError(f"pipeline.cpus_per_task must be a number > 0, got {self.cpus_per_task}")
        for name in ("cpus_per_actor", "gpus_per_actor"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"pipeline.{name} must be a number >= 0 or null, got {value}")


@dataclass(frozen=True)
class ManifestConfig:
    """A manifest part is written every ``flush_rows`` rows or ``flush_seconds`` seconds, so that a
    crash of the driver costs a re-run only the outputs of about that long (plus those in flight).
    ``unchanged_threshold``: restored images whose ``mean_abs_change`` is below it (8-bit levels)
    are counted as ``unchanged`` in ``_summary.json`` and the progress lines."""

    flush_rows: int = FLUSH_ROWS
    flush_seconds: float = FLUSH_SECONDS
    unchanged_threshold: float = UNCHANGED_THRESHOLD

    def __post_init__(self) -> None:
        if self.flush_rows < 1:
            raise ValueError(f"manifest.flush_rows must be >= 1, got {self.flush_rows}")
        if not (math.isfinite(self.flush_seconds) and self.flush_seconds > 0):
            raise ValueError(f"manifest.flush_seconds must be a number > 0, got {self.flush_seconds}")
        if not (math.isfinite(self.unchanged_threshold) and 0 <= self.unchanged_threshold <= 255):
            raise ValueError(f"manifest.unchanged_threshold must be in [0, 255] 8-bit levels, got {self.unchanged_threshold}")


@dataclass(frozen=True)
class StorageConfig:
    """``outage_seconds``: how long every storage call of a run -- the driver's listing and
    manifest writes, the reads and writes of the workers -- waits out an unreachable,
    throttling or failing store (exponential backoff with jitter,
    :func:`restoration.storage.retrying`) before it gives up; only past it does an input become
    an error row."""

    outage_seconds: float = storage.OUTAGE_SECONDS

    def __post_init__(self) -> None:
        if not (math.isfinite(self.outage_seconds) and self.outage_seconds >= 0):
            raise ValueError(f"storage.outage_seconds must be a number >= 0, got {self.outage_seconds}")


@dataclass(frozen=True)
class StopConfig:
    """``grace_seconds``: after SIGINT or SIGTERM, how long the work in flight may take to finish
    before the run stops at once (the manifest is written either way)."""

    grace_seconds: float = GRACE_SECONDS

    def __post_init__(self) -> None:
        if not (math.isfinite(self.grace_seconds) and self.grace_seconds >= 0):
            raise ValueError(f"run.grace_seconds must be a number >= 0, got {self.grace_seconds}")


@dataclass(frozen=True)
class RestoreConfig:
    """Everything ``restoration restore`` reads from ``--config`` and ``--set key=value``."""

    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    manifest: ManifestConfig = field(default_factory=ManifestConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    run: StopConfig = field(default_factory=StopConfig)


# --------------------------------------------------------------------------------------------
# Schemas between stages

WORK_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("output_uri", pa.string(), nullable=False),
        # Source size recorded by an earlier run that restored this input; the input is skipped
        # when its size is unchanged. Null: restore it.
        pa.field("previous_bytes", pa.int64()),
    ]
)

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
        # IPTC blocks (restoration.codec.ImageMetadata).
        pa.field("icc_profile", pa.large_binary()),
        pa.field("exif", pa.large_binary()),
        pa.field("xmp", pa.large_binary()),
        pa.field("iptc", pa.large_binary()),
        pa.field("out_width", pa.int32()),
        pa.field("out_height", pa.int32()),
        pa.field("seconds", pa.float64()),
        # Set by the restore stage: see restoration.manifest.
        pa.field("mean_abs_change", pa.float64()),
        pa.field("strength", pa.float64()),
    ]
)

_BINARY: Final[tuple[str, ...]] = ("pixels", "alpha", "icc_profile", "exif", "xmp", "iptc")
_CARRIED: Final[tuple[str, ...]] = ("icc_profile", "exif", "xmp", "iptc")


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
    with storage.outage_budget(outage_seconds):
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
    outage_seconds: float | None = None,
) -> pa.Table:
    """Stat, read and decode every row of a work table (:data:`WORK_SCHEMA`).

    Returns a :data:`PIPELINE_SCHEMA` table, one row per input: pixels for decoded images;
    ``status="skipped"`` where ``previous_bytes`` equals the current size (nothing read);
    ``status="error"`` for missing, unreadable, over-size or undecodable files, and for files
    the store did not serve within ``outage_seconds`` (None: this process's budget as it is).
    """
    with storage.outage_budget(outage_seconds):
        return _read_rows(work, max_pixels=max_pixels, max_bytes=max_bytes)


def _read_rows(work: pa.Table, *, max_pixels: int, max_bytes: int) -> pa.Table:
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
            seconds=time.perf_counter() - start,
        )
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


def restore_stage(predictor: Any, table: pa.Table, *, task: str) -> pa.Table:
    """Restore the pending rows of a :data:`PIPELINE_SCHEMA` table with a
    :class:`restoration.inference.Predictor`; rows with a status pass through unchanged.

    Same-sized images share forward passes; if a batch fails, its images are retried one by
    one, and an image that fails alone becomes an error row (stage ``restore``). Restored
    pixels keep the input's channel count and bit depth; alpha is resized with them (SR), or
    dropped for tasks with a mask input (inpainting), where alpha 0 marks the missing pixels.
    Each restored row records ``mean_abs_change`` (:func:`mean_abs_change`) and the
    predictor's ``strength``.
    """
    import torch

    takes_mask = get_task(task).mask_input
    strength = float(getattr(predictor, "strength", 1.0))
    rows = _work_rows(table)
    buffers = _buffers(table)
    pending: list[int] = []
    images: dict[int, DecodedImage] = {}
    for index, row in enumerate(rows):
        if row["status"] is not None:
            continue
        try:
            image = _unpack(row, buffers[index])
            if takes_mask and image.alpha is None:
                raise ValueError(f"{task} reads the missing pixels from the alpha channel "
                                 "(alpha 0 = missing), and this image has no alpha")
        except ValueError as error:
            _failed(row, "restore", str(error), time.perf_counter())
            continue
        images[index] = image
        pending.append(index)

    results: dict[int, np.ndarray] = {}
    seconds: dict[int, float] = {}

    def run(indices: list[int]) -> None:
        tensors = [pixels_to_tensor(images[i].pixels) for i in indices]
        masks = None
        if takes_mask:
            masks = [torch.from_numpy((images[i].alpha == 0).astype(np.float32))[None] for i in indices]
        start = time.perf_counter()
        outputs = predictor.restore_many(tensors, masks)
        elapsed = time.perf_counter() - start
        total = sum(images[i].width * images[i].height for i in indices)
        for i, output in zip(indices, outputs, strict=True):
            results[i] = tensor_to_pixels(output.clamp(0, 1), dtype=images[i].pixels.dtype)
            seconds[i] = elapsed * images[i].width * images[i].height / total

    if pending:
        try:
            run(pending)
        except Exception:  # one bad image must not fail its batch: retry them one by one
            for index in pending:
                if index in results:
                    continue
                try:
                    run([index])
                except Exception as error:  # noqa: BLE001 -- any model failure is this image's error
                    _failed(rows[index], "restore", f"{type(error).__name__}: {error}", time.perf_counter())

    columns: dict[str, list[Any]] = {name: [] for name in _BINARY}
    for index, row in enumerate(rows):
        if index not in results:  # done before this stage, or failed in it
            for name in _BINARY:
                columns[name].append(None)
            continue
        source = images[index]
        restored = with_pixels(source, results[index])
        alpha = None if takes_mask else restored.alpha
        row.update(out_height=restored.height, out_width=restored.width, strength=strength,
                   mean_abs_change=mean_abs_change(source.pixels, restored.pixels),
                   seconds=(row["seconds"] or 0.0) + seconds[index])
        columns["pixels"].append(restored.pixels.tobytes())
        columns["alpha"].append(None if alpha is None else alpha.tobytes())
        for name in _CARRIED:
            columns[name].append(_bytes(buffers[index][name]))
    columns |= {name: [row.get(name) for row in rows] for name in PIPELINE_SCHEMA.names if name not in _BINARY}
    return pa.Table.from_pydict(columns, schema=PIPELINE_SCHEMA)


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
    row per input (:data:`restoration.manifest.MANIFEST_SCHEMA`). Skipped rows come back as
    ``status="skipped"`` with only their source, output and size: the driver fills in the rest
    from the earlier manifest.

    ``quality``, ``png_compression`` and ``strip_metadata`` go to
    :func:`restoration.codec.encode_image` (see :class:`OutputConfig`). A write waits out a
    storage outage for up to ``outage_seconds`` (None: this process's budget as it is), then
    becomes an error row."""
    with storage.outage_budget(outage_seconds):
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

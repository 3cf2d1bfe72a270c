"""Settings of a restore run (``restoration restore --set SECTION.KEY=VALUE``, or a YAML file
with ``--config``): what to read, how to write, the predictor, the pipeline's shape, the
manifest's cadence, the storage outage budget and the stop grace. Every value is checked when
the config loads, so that a bad one fails in one line before anything starts.

:class:`RestoreConfig` holds one section each: :class:`InputConfig`, :class:`OutputConfig`,
:class:`PredictorConfig`, :class:`PipelineConfig`, :class:`ManifestConfig`,
:class:`StorageConfig` and :class:`StopConfig`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from restoration import storage
from restoration.codec import (
    DEFAULT_MAX_PIXELS,
    ENCODE_FORMATS,
    PNG_COMPRESSION_LEVELS,
    normalize_format,
)
from restoration.inference import PredictorConfig
from restoration.manifest import FLUSH_ROWS, FLUSH_SECONDS, UNCHANGED_THRESHOLD
from restoration.stopping import GRACE_SECONDS

DEFAULT_PNG_COMPRESSION: Final[int] = 1
"""PNG zlib level of outputs (as :func:`restoration.codec.encode_image`): the fastest that
compresses; 6 (Pillow's default) costs several times the encode time for a few percent."""


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

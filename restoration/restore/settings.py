"""Settings of a restore run (``restoration restore --set SECTION.KEY=VALUE``, or a YAML file
with ``--config``): what to read, how to write, the predictor, the batches, the manifest's
cadence, the storage outage budget and the stop grace. Every value is checked when the config
loads (pydantic models, :mod:`restoration.config`), so that a bad one fails in one line before
anything starts.

:class:`RestoreConfig` holds one section each: :class:`InputConfig`, :class:`OutputConfig`,
:class:`PredictorConfig`, :class:`BatchConfig` (``pipeline``), :class:`ManifestConfig`,
:class:`StorageConfig` and :class:`StopConfig` (``run``). The Ray job's settings of its
pipeline (actors, stages, ...) are ``jobs.settings.RayRestoreConfig``'s, which extends this
``pipeline`` section; the library reads only ``pipeline.batch_size``.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Final

from pydantic import Field, field_validator

from restoration.config import (
    SettingError,
    Settings,
    above,
    at_least,
    check,
    one_of,
    within,
)
from restoration.io import outages
from restoration.io.codec import DEFAULT_MAX_PIXELS
from restoration.io.encode import (
    ENCODE_FORMATS,
    PNG_COMPRESSION_LEVELS,
    normalize_format,
)
from restoration.models.predictor import PredictorConfig
from restoration.restore.manifest import FLUSH_ROWS, FLUSH_SECONDS, UNCHANGED_THRESHOLD
from restoration.stopping import GRACE_SECONDS

DEFAULT_PNG_COMPRESSION: Final[int] = 1
"""PNG zlib level of outputs (as :func:`restoration.io.codec.encode_image`): the fastest that
compresses; 6 (Pillow's default) costs several times the encode time for a few percent."""


class InputConfig(Settings):
    """Limits on inputs; files beyond them become error rows before they are decoded.

    ``max_pixels``: width * height (from the header); ``max_bytes``: file size, checked before
    the file is read. ``uri_column``: the URI column of a Parquet/CSV list (default: the first of
    :data:`restoration.restore.planning.URI_COLUMNS` present, or the only column). ``partition_size``:
    inputs planned and run at a time (:mod:`restoration.restore.planning`); the driver's memory follows
    it, not the size of the collection.
    """

    section: ClassVar[str] = "input"

    max_pixels: Annotated[int, at_least(1)] = DEFAULT_MAX_PIXELS
    max_bytes: Annotated[int, at_least(1)] = 1 << 30
    uri_column: str | None = None
    partition_size: Annotated[int, at_least(1)] = 100_000

    @field_validator("uri_column")
    @classmethod
    def _column_name(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise SettingError("must be a column name or null, got an empty string")
        return value


class OutputConfig(Settings):
    """How outputs are written (:func:`restoration.io.codec.encode_image`).

    ``format``: None writes each image in its input's format (PNG when that format cannot be
    written, e.g. GIF); otherwise one of PNG, JPEG, WEBP, TIFF, BMP for every output, whose file
    extension is changed to match. ``quality``: JPEG/WebP quality, 1..100. ``png_compression``:
    PNG zlib level, 0..9 (1, the default, is the fastest that compresses; 9 the smallest).
    ``strip_metadata``: write no EXIF, XMP or IPTC (carried over from the input otherwise, with
    the EXIF orientation reset to 1); the ICC profile is always kept.
    """

    section: ClassVar[str] = "output"

    format: str | None = None
    quality: Annotated[int, check(lambda v: 1 <= v <= 100, "in 1..100")] = 95
    png_compression: Annotated[int, one_of(PNG_COMPRESSION_LEVELS, "a zlib level in 0..9")] = DEFAULT_PNG_COMPRESSION
    strip_metadata: bool = False

    @field_validator("format")
    @classmethod
    def _writable(cls, value: str | None) -> str | None:
        """The canonical name (``jpg`` -> ``JPEG``) of a format that can be written."""
        if value is None:
            return None
        canonical = normalize_format(value)
        if canonical not in ENCODE_FORMATS:
            raise SettingError(f"{value!r} is not writable; choose one of {', '.join(sorted(ENCODE_FORMATS))}")
        return canonical


class BatchConfig(Settings):
    """The ``pipeline`` section as the library reads it: ``batch_size``, images per call of the
    predictor (and per chunk of manifest rows and progress), None: 16 with a GPU, 4 on CPU. The
    Ray job's pipeline settings extend it (``jobs.settings.PipelineConfig``)."""

    section: ClassVar[str] = "pipeline"
    unknown_key_note: ClassVar[str] = ("the Ray job's pipeline keys (actors, stages, ...) are read by "
                                       "jobs.settings.RayRestoreConfig, as `restoration restore` loads them")

    batch_size: Annotated[int, at_least(1, ">= 1 or null")] | None = None


class ManifestConfig(Settings):
    """A manifest part is written every ``flush_rows`` rows or ``flush_seconds`` seconds, so that a
    crash of the driver costs a re-run only the outputs of about that long (plus those in flight).
    ``unchanged_threshold``: restored images whose ``mean_abs_change`` is below it (8-bit levels)
    are counted as ``unchanged`` in ``_summary.json`` and the progress lines."""

    section: ClassVar[str] = "manifest"

    flush_rows: Annotated[int, at_least(1)] = FLUSH_ROWS
    flush_seconds: Annotated[float, above(0, "a number > 0")] = FLUSH_SECONDS
    unchanged_threshold: Annotated[float, within(0, 255, "in [0, 255] 8-bit levels")] = UNCHANGED_THRESHOLD


class StorageConfig(Settings):
    """``outage_seconds``: how long every storage call of a run -- the driver's listing and
    manifest writes, the reads and writes of the workers -- waits out an unreachable,
    throttling or failing store (exponential backoff with jitter,
    :func:`restoration.io.outages.retrying`) before it gives up; only past it does an input become
    an error row."""

    section: ClassVar[str] = "storage"

    outage_seconds: Annotated[float, at_least(0, "a number >= 0")] = outages.OUTAGE_SECONDS


class StopConfig(Settings):
    """``grace_seconds``: after SIGINT or SIGTERM, how long the work in flight may take to finish
    before the run stops at once (the manifest is written either way)."""

    section: ClassVar[str] = "run"

    grace_seconds: Annotated[float, at_least(0, "a number >= 0")] = GRACE_SECONDS


class RestoreConfig(Settings):
    """Everything ``restoration restore`` reads from ``--config`` and ``--set key=value``."""

    input: InputConfig = Field(default_factory=InputConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    predictor: PredictorConfig = Field(default_factory=PredictorConfig)
    pipeline: BatchConfig = Field(default_factory=BatchConfig)
    manifest: ManifestConfig = Field(default_factory=ManifestConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    run: StopConfig = Field(default_factory=StopConfig)

"""The Parquet manifest of a batch restoration: one row per input, under ``<output>/_manifest/``.

Schema: :data:`MANIFEST_SCHEMA` (version :data:`MANIFEST_VERSION`, stored in the Parquet
schema metadata). Columns, in order:

====================  ================  ==========================================================
column                type              meaning
====================  ================  ==========================================================
``source_uri``        string            the input, as listed
``output_uri``        string            where the restored image is; null on error
``status``            string            ``ok`` | ``error`` | ``skipped`` (see below)
``error``             string            readable reason, null unless ``status == "error"``
``error_stage``       string            ``plan`` | ``read`` | ``decode`` | ``restore`` |
                                        ``encode`` | ``write``, null unless an error
``task``              string            restoration task (``denoise``, ``sr``, ...)
``model_id``          string            the checkpoint's ``model_id``
``job_id``            string            the run that wrote this row
``width``             int32             input width after EXIF orientation, null if undecodable
``height``            int32             input height after EXIF orientation
``out_width``         int32             output width (``width * scale``), null on error
``out_height``        int32             output height
``mode``              string            the input's Pillow mode (``RGB``, ``L``, ``I;16``, ...)
``format``            string            the input's format (``PNG``, ``JPEG``, ...)
``out_format``        string            the format written, null on error
``channels``          int8              1 (gray) or 3 (RGB), alpha not counted
``bit_depth``         int8              8 or 16 bits per sample
``has_alpha``         bool              whether an alpha plane was carried over
``bytes_in``          int64             size of the input file
``bytes_out``         int64             size of the written output, null on error
``seconds``           float64           processing time of this input (read to write), summed
                                        over the stages; the restore share of a batch is split
                                        by pixel count
``mean_abs_change``   float64           how much the model changed the image: mean absolute
                                        difference in 8-bit levels (0..255) between the model's
                                        input at the output size (bicubic for SR) and the output;
                                        null on error. Below ``unchanged_threshold`` (default
                                        :data:`UNCHANGED_THRESHOLD`) the image counts as
                                        *unchanged* in the summary
``strength``          float64           the restoration strength used, in [0, 1]; null on error
``restored_at``       timestamp[us,UTC] when the output was written; null on error
``noise_sigma``       float64           the input's estimated noise level, 0..255 scale
                                        (:mod:`restoration.quality.assess`); null if undecodable
``coarse_noise``      float64           the noise of its luma at half resolution: what JPEG leaves
``jpeg_quality``      int16             its JPEG quality from the file's quantization tables;
                                        null for other formats
``blockiness``        float64           8 x 8 block artefacts of its pixels (about 1 when none)
``blur``              float64           no-reference blur in [0, 1] (0 sharp)
``gray_rgb``          bool              a color image whose channels are equal
``route``             string            what restored it (``--model auto`` / ``--route``): the
                                        route's model key, or ``skip`` (written unchanged);
                                        null for a run with one model
``route_reason``      string            the rule that chose the route and the measures it read
====================  ================  ==========================================================

Statuses: ``ok`` -- restored and written by ``job_id``; ``error`` -- not restored, ``error``
says why; ``skipped`` -- a re-run found it already restored (same task, model, output URI and
source size) and left it alone: ``output_uri`` and the output columns describe that earlier
output, ``restored_at`` is when it was written, ``job_id`` is the run that skipped it.

Files and consistency. Rows are written by the job's driver only, never by workers, so retried
or duplicated worker tasks cannot produce duplicate rows: the driver keeps the first result per
``source_uri`` of its run. While a run streams, it appends *parts*
(``<job_id>-p000001.parquet``, ...) every few hundred rows or seconds, so a killed job keeps its
progress. At the end it *compacts*: it writes ``<job_id>-manifest.parquet`` with the latest row
for every input ever recorded under this output (this run's and earlier runs'), then deletes the
files it merged. Compaction streams the files row group by row group (:func:`compact`: 16 bytes
per source and one byte per row held), and a re-run looks earlier rows up the same way
(:class:`ManifestIndex`), so neither holds the manifest in memory. A job id starts with its UTC start time, so file names sort oldest first and
"latest" is well defined; :func:`read_manifest` takes the latest row per ``source_uri`` over
all files, which gives the same answer before and after compaction and after a crash between
the two steps. After a completed run the folder holds one file with exactly one row per input
ever seen. Two jobs writing the same output at the same time are not supported.

Read the manifest with :func:`read_manifest`, or any Parquet reader on the folder
(``pandas.read_parquet("<output>/_manifest")``): the summary and config files next to the parts
start with ``_`` so Parquet readers skip them.
"""

from __future__ import annotations

import datetime as dt
import io
import posixpath
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from restoration.io import outages, storage

__all__ = [
    "MANIFEST_DIR",
    "MANIFEST_SCHEMA",
    "MANIFEST_VERSION",
    "STATUSES",
    "SUMMARY_FILE",
    "WORK_SCHEMA",
    "UNCHANGED_THRESHOLD",
    "ManifestIndex",
    "ManifestWriter",
    "compact",
    "count_unchanged",
    "error_row",
    "manifest_uri",
    "new_job_id",
    "read_manifest",
    "rows_to_table",
    "skipped_row",
    "summarize",
]

MANIFEST_VERSION: Final[int] = 3
"""Version 2 added ``mean_abs_change`` and ``strength``; version 1 files are read with them null."""
UNCHANGED_THRESHOLD: Final[float] = 0.5
"""8-bit levels: a restored image whose ``mean_abs_change`` is below this was left as it was (the
model did nothing to it) and is counted as ``unchanged``; half a level is less than rounding."""
MANIFEST_DIR: Final[str] = "_manifest"
SUMMARY_FILE: Final[str] = "_summary.json"
CONFIG_FILE: Final[str] = "_config.yaml"
STATUSES: Final[tuple[str, ...]] = ("ok", "error", "skipped")
ERROR_STAGES: Final[tuple[str, ...]] = ("plan", "read", "decode", "restore", "encode", "write")

_VERSION_KEY: Final[bytes] = b"restoration.restore.manifest.version"

ASSESSMENT_FIELDS: Final[tuple[pa.Field, ...]] = (
    pa.field("noise_sigma", pa.float64()),
    pa.field("coarse_noise", pa.float64()),
    pa.field("jpeg_quality", pa.int16()),
    pa.field("blockiness", pa.float64()),
    pa.field("blur", pa.float64()),
    pa.field("gray_rgb", pa.bool_()),
)
"""The input's measures (:class:`restoration.quality.assess.Assessment`), in every manifest row
of a decoded input."""

MANIFEST_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("output_uri", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("error_stage", pa.string()),
        pa.field("task", pa.string()),
        pa.field("model_id", pa.string()),
        pa.field("job_id", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("out_width", pa.int32()),
        pa.field("out_height", pa.int32()),
        pa.field("mode", pa.string()),
        pa.field("format", pa.string()),
        pa.field("out_format", pa.string()),
        pa.field("channels", pa.int8()),
        pa.field("bit_depth", pa.int8()),
        pa.field("has_alpha", pa.bool_()),
        pa.field("bytes_in", pa.int64()),
        pa.field("bytes_out", pa.int64()),
        pa.field("seconds", pa.float64()),
        pa.field("mean_abs_change", pa.float64()),
        pa.field("strength", pa.float64()),
        pa.field("restored_at", pa.timestamp("us", tz="UTC")),
        *ASSESSMENT_FIELDS,
        pa.field("route", pa.string()),
        pa.field("route_reason", pa.string()),
    ],
    metadata={_VERSION_KEY: str(MANIFEST_VERSION).encode()},
)
"""The manifest's one schema; bump :data:`MANIFEST_VERSION` when it changes."""

COLUMNS: Final[tuple[str, ...]] = tuple(MANIFEST_SCHEMA.names)

# <job_id>-p000001.parquet (a part written while the run streams) or <job_id>-manifest.parquet
# (the compacted state after the run). The job id begins with a sortable UTC time.
_FILE_NAME = re.compile(r"^(?P<job>\d{8}T\d{12}Z-[0-9a-f]{8})-(?:p(?P<part>\d{6})|(?P<final>manifest))\.parquet$")


def new_job_id(now: dt.datetime | None = None) -> str:
    """A unique, time-sortable run id: ``20250102T030405123456Z-1a2b3c4d`` (UTC, microseconds)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now.astimezone(dt.timezone.utc):%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:8]}"


def manifest_uri(output: str) -> str:
    """``<output>/_manifest``."""
    return storage.join(output, MANIFEST_DIR)


# --------------------------------------------------------------------------------------------
# Rows


def _check_row(row: Mapping[str, Any]) -> None:
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown manifest column(s) {', '.join(unknown)}; columns: {', '.join(COLUMNS)}")
    if not row.get("source_uri"):
        raise ValueError("a manifest row needs a source_uri")
    status = row.get("status")
    if status not in STATUSES:
        raise ValueError(f"manifest status must be one of {', '.join(STATUSES)}, got {status!r}")
    if status == "error" and not row.get("error"):
        raise ValueError(f"error row for {row['source_uri']} has no error message")
    if status != "error" and not row.get("output_uri"):
        raise ValueError(f"{status} row for {row['source_uri']} has no output_uri")
    stage = row.get("error_stage")
    if stage is not None and stage not in ERROR_STAGES:
        raise ValueError(f"error_stage must be one of {', '.join(ERROR_STAGES)}, got {stage!r}")


def rows_to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Manifest rows (dicts keyed by column name; missing columns are null) as a table with
    :data:`MANIFEST_SCHEMA`. Raises ValueError for unknown columns or inconsistent rows."""
    rows = list(rows)
    for row in rows:
        _check_row(row)
    columns = {name: [row.get(name) for row in rows] for name in COLUMNS}
    return pa.Table.from_pydict(columns, schema=MANIFEST_SCHEMA)


def error_row(
    source_uri: str, error: str | BaseException, stage: str, **fields: Any
) -> dict[str, Any]:
    """A ``status="error"`` row; ``error`` (an exception or message) is redacted of credentials."""
    if isinstance(error, BaseException):
        message = str(error) or type(error).__name__
    else:
        message = str(error)
    row = {**fields, "source_uri": source_uri, "status": "error", "error_stage": stage}
    row["error"] = storage.redact(message)
    row["output_uri"] = None
    row["restored_at"] = None
    return row


_CARRIED: Final[tuple[str, ...]] = (
    "output_uri", "task", "model_id", "width", "height", "out_width", "out_height", "mode", "format",
    "out_format", "channels", "bit_depth", "has_alpha", "bytes_out", "mean_abs_change", "strength", "restored_at",
    *(measure.name for measure in ASSESSMENT_FIELDS), "route", "route_reason",
)


def skipped_row(previous: Mapping[str, Any], *, job_id: str, bytes_in: int | None) -> dict[str, Any]:
    """The row of an input a re-run left alone: the earlier row's output columns, status
    ``skipped``, this run's ``job_id``, no processing time."""
    row = {name: previous.get(name) for name in _CARRIED}
    row.update(source_uri=previous["source_uri"], status="skipped", job_id=job_id,
               bytes_in=bytes_in if bytes_in is not None else previous.get("bytes_in"), seconds=0.0)
    return row


# --------------------------------------------------------------------------------------------
# Files


@dataclass(frozen=True, order=True)
class _ManifestFile:
    job_id: str
    order: int  # part number; compacted files sort after every part of their run
    uri: str = field(compare=False)


def _manifest_files(output: str) -> list[_ManifestFile]:
    """Manifest Parquet files under ``<output>/_manifest``, oldest first."""
    folder = manifest_uri(output)
    if not storage.exists(folder):
        return []
    files = []
    for uri in storage.list_images(folder, recursive=False, extensions={".parquet"}):
        match = _FILE_NAME.match(posixpath.basename(uri))
        if match is None:
            continue  # not ours (e.g. a user's file): ignored, never deleted
        order = 10**9 if match["final"] else int(match["part"])
        files.append(_ManifestFile(match["job"], order, uri))
    return sorted(files)


# Columns each later version added; a file of an older version is read with them null.
_ADDED_IN: Final[dict[int, tuple[str, ...]]] = {
    2: ("mean_abs_change", "strength"),
    3: (*(measure.name for measure in ASSESSMENT_FIELDS), "route", "route_reason"),
}


def _file_version(schema: pa.Schema, uri: str) -> int:
    found = (schema.metadata or {}).get(_VERSION_KEY, b"none").decode()
    version = int(found) if found.isdigit() else None
    if version is None or not 1 <= version <= MANIFEST_VERSION:
        raise ValueError(
            f"manifest file {uri} has schema version {found}; this version of restoration reads "
            f"versions 1 to {MANIFEST_VERSION}. Write to a new output, or move the old _manifest away"
        )
    return version


def _upgrade(table: pa.Table, version: int) -> pa.Table:
    for later in range(version + 1, MANIFEST_VERSION + 1):
        for name in _ADDED_IN.get(later, ()):
            table = table.append_column(MANIFEST_SCHEMA.field(name), pa.nulls(table.num_rows, MANIFEST_SCHEMA.field(name).type))
    return table.select(list(COLUMNS)).cast(MANIFEST_SCHEMA)


def _iter_file(uri: str) -> Iterator[pa.Table]:
    """The rows of one manifest file as :data:`MANIFEST_SCHEMA` tables, one row group at a time
    (the file is read in ranges, not held whole)."""
    filesystem, path = storage.resolve(uri)
    try:
        handle = outages.retrying(lambda: filesystem.open_input_file(path), uri)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"no such file: {uri}") from error
    with handle:
        # Each read is a ranged request of its own: one that fails in an outage is asked again.
        parquet = outages.retrying(lambda: pq.ParquetFile(handle), uri)
        version = _file_version(parquet.schema_arrow, uri)
        for group in range(parquet.num_row_groups):
            yield _upgrade(outages.retrying(lambda: parquet.read_row_group(group), uri), version)


def _read_file(uri: str) -> pa.Table:
    tables = list(_iter_file(uri))
    return pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table()


def _latest_per_source(tables: list[pa.Table]) -> pa.Table:
    """Concatenate oldest to newest and keep the last row of each ``source_uri``."""
    if not tables:
        return MANIFEST_SCHEMA.empty_table()
    table = pa.concat_tables(tables)
    if table.num_rows == 0:
        return table
    order = pa.array(range(table.num_rows), pa.int64())
    last = (
        pa.table({"source_uri": table.column("source_uri"), "order": order})
        .group_by("source_uri", use_threads=False)
        .aggregate([("order", "max")])
        .column("order_max")
    )
    keep = pc.sort_indices(last)
    return table.take(pc.take(last, keep))


def read_manifest(output: str) -> pa.Table:
    """The current manifest of ``output``: the latest row of every input recorded there, in the
    order the rows were written (an empty table with :data:`MANIFEST_SCHEMA` when none).

    Raises:
        ValueError: a manifest file was written with another schema version.
    """
    return _latest_per_source([_read_file(f.uri) for f in _manifest_files(output)])


ROW_GROUP_ROWS: Final[int] = 65_536
"""Rows per Parquet row group of a compacted manifest: the unit in which it is read back."""


def _write_table(uri: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    storage.write_bytes(uri, buffer.getvalue())


class ManifestIndex:
    """The manifest files of an output as they are now (later files are not seen), for lookups
    by source that stream the files instead of holding them: memory follows the number of
    sources asked for, not the size of the manifest."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.files = _manifest_files(output)
        self._tables: list[pa.Table] = []

    @classmethod
    def from_table(cls, table: pa.Table) -> ManifestIndex:
        """An index over manifest rows held in memory (oldest first)."""
        index = cls.__new__(cls)
        index.output, index.files, index._tables = "", [], [table.select(list(COLUMNS)).cast(MANIFEST_SCHEMA)]
        return index

    def __bool__(self) -> bool:
        return bool(self.files or self._tables)

    def _tables_oldest_first(self) -> Iterator[pa.Table]:
        for file in self.files:
            yield from _iter_file(file.uri)
        yield from self._tables

    def latest_rows(self, sources: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The latest row of each of ``sources`` that has one, by source URI."""
        wanted = pa.array(sorted(set(sources)), pa.string())
        found: dict[str, dict[str, Any]] = {}
        if len(wanted) == 0:
            return found
        for table in self._tables_oldest_first():  # later rows replace earlier ones
            hits = table.filter(pc.is_in(table.column("source_uri"), value_set=wanted))
            for row in hits.to_pylist():
                found[row["source_uri"]] = row
        return found

    def restored_rows(self, sources: Iterable[str]) -> dict[str, dict[str, Any]]:
        """:meth:`latest_rows` that count as restored (``ok`` or ``skipped``)."""
        return {source: row for source, row in self.latest_rows(sources).items() if row["status"] in ("ok", "skipped")}


def compact(output: str, final: str) -> None:
    """Write the latest row of every source under ``output``'s manifest folder into ``final``,
    oldest first, streaming: two passes over the files, with 16 bytes per source
    (:class:`restoration.restore.digests.DigestSet`) and one byte per row held between them."""
    import numpy as np

    from restoration.restore.digests import DigestSet

    files = [f for f in _manifest_files(output) if f.uri != final]
    latest = DigestSet()
    keep: dict[str, list[np.ndarray]] = {}
    for file in reversed(files):  # newest first: the first row met per source is its latest
        masks = []
        for table in reversed(list(_iter_sources(file.uri))):
            sources = table.column("source_uri").to_pylist()[::-1]
            masks.append(latest.add_many(sources)[::-1])
        keep[file.uri] = masks[::-1]
    with storage.open_output(final) as stream, pq.ParquetWriter(stream, MANIFEST_SCHEMA, compression="zstd") as writer:
        for file in files:
            for table, mask in zip(_iter_file(file.uri), keep[file.uri], strict=True):
                kept = table.filter(pa.array(mask))
                if kept.num_rows:
                    writer.write_table(kept, row_group_size=ROW_GROUP_ROWS)


def _iter_sources(uri: str) -> Iterator[pa.Table]:
    """The ``source_uri`` column of a manifest file, one row group at a time."""
    filesystem, path = storage.resolve(uri)
    with outages.retrying(lambda: filesystem.open_input_file(path), uri) as handle:
        parquet = outages.retrying(lambda: pq.ParquetFile(handle), uri)
        _file_version(parquet.schema_arrow, uri)
        for group in range(parquet.num_row_groups):
            yield outages.retrying(lambda: parquet.read_row_group(group, columns=["source_uri"]), uri)


FLUSH_ROWS: Final[int] = 500
FLUSH_SECONDS: Final[float] = 1.0
"""A manifest part is written every :data:`FLUSH_ROWS` rows or :data:`FLUSH_SECONDS` seconds
(``manifest.flush_rows`` / ``manifest.flush_seconds``): a crash of the driver costs the re-run
the outputs of about that long, plus what was in flight."""
MERGE_PARTS: Final[int] = 64
"""Parts rewritten as one, as a run goes (about once a minute at the default cadence)."""


class ManifestWriter:
    """Collects one run's rows on the driver and writes them under ``<output>/_manifest``.

    ``add`` keeps the first row per ``source_uri`` and ignores later ones (a retried task
    reporting the same input again); parts are written whenever ``flush_rows`` rows or
    ``flush_seconds`` have accumulated, so that a crash loses at most that much of the run's
    record; every ``merge_parts`` parts are rewritten as one (written first, then the small ones
    deleted: a crash in between leaves identical rows twice, which readers take once), so that
    a long run leaves few files to compact; ``close`` writes what is left and compacts.
    """

    def __init__(
        self, output: str, job_id: str, *, flush_rows: int = FLUSH_ROWS, flush_seconds: float = FLUSH_SECONDS,
        merge_parts: int = MERGE_PARTS,
    ) -> None:
        if not _FILE_NAME.match(f"{job_id}-manifest.parquet"):
            raise ValueError(f"job_id {job_id!r} is not of the form new_job_id() returns")
        if flush_rows < 1 or flush_seconds <= 0 or merge_parts < 2:
            raise ValueError(f"flush_rows must be >= 1, flush_seconds > 0 and merge_parts >= 2, got {flush_rows}, "
                             f"{flush_seconds}, {merge_parts}")
        self.output = output
        self.job_id = job_id
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.merge_parts = merge_parts
        self.seen: set[str] = set()
        self.counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        self.duplicates = 0
        self.parts: list[str] = []
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._unmerged: list[tuple[str, pa.Table]] = []  # parts written since the last merge
        self._number = 0  # of the last part written
        self._last_flush = time.monotonic()
        self._folder = manifest_uri(output)

    def new_partition(self) -> None:
        """Forget the sources seen so far: the next rows belong to inputs no earlier row can
        name (the run's partitions are disjoint), so ``seen`` stays the size of one partition."""
        self.seen = set()

    @property
    def done(self) -> int:
        """Rows kept so far, over all partitions."""
        return sum(self.counts.values())

    def add(self, table: pa.Table) -> pa.Table:
        """Add rows (a table with the manifest columns); returns the rows that were new."""
        table = table.select(list(COLUMNS)).cast(MANIFEST_SCHEMA)
        keep = []
        for index, source in enumerate(table.column("source_uri").to_pylist()):
            if source in self.seen:
                self.duplicates += 1
                continue
            self.seen.add(source)
            keep.append(index)
        new = table if len(keep) == table.num_rows else table.take(pa.array(keep, pa.int64()))
        for status, count in zip(*_value_counts(new.column("status")), strict=True):
            self.counts[status] += count
        if new.num_rows:
            self._pending.append(new)
            self._pending_rows += new.num_rows
        if self._pending_rows >= self.flush_rows or (
            self._pending_rows and time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self.flush()
        return new

    def add_rows(self, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
        return self.add(rows_to_table(rows))

    def flush(self) -> None:
        """Write the rows added since the last flush as a new part (nothing if none)."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        uri = self._write_part(table)
        self._pending, self._pending_rows = [], 0
        self._unmerged.append((uri, table))
        if len(self._unmerged) >= self.merge_parts:
            self._merge()

    def _write_part(self, table: pa.Table) -> str:
        uri = storage.join(self._folder, f"{self.job_id}-p{self._number + 1:06d}.parquet")
        _write_table(uri, table)
        self._number += 1
        self.parts.append(uri)
        return uri

    def _merge(self) -> None:
        """The parts written since the last merge, as one part (then the small ones deleted)."""
        small = [uri for uri, _ in self._unmerged]
        self._write_part(pa.concat_tables([table for _, table in self._unmerged]))
        self._unmerged = []
        for uri in small:
            storage.delete(uri)
        self.parts = [uri for uri in self.parts if uri not in set(small)]

    def close(self) -> str:
        """Flush, then compact every manifest file under the output into one; returns its URI."""
        self.flush()
        files = _manifest_files(self.output)
        final = storage.join(self._folder, f"{self.job_id}-manifest.parquet")
        # The whole compaction is repeated when the store fails under it: it only reads the
        # parts, and its output replaces itself.
        outages.retrying(lambda: compact(self.output, final), final)
        for old in files:
            if old.uri != final:
                storage.delete(old.uri)
        return final


def _value_counts(column: pa.ChunkedArray) -> tuple[list[str], list[int]]:
    if len(column) == 0:
        return [], []
    counts = pc.value_counts(column)
    return counts.field("values").to_pylist(), counts.field("counts").to_pylist()


def count_unchanged(table: pa.Table, threshold: float = UNCHANGED_THRESHOLD) -> int:
    """``ok`` rows whose ``mean_abs_change`` is below ``threshold`` (8-bit levels): images the
    model left as they were."""
    unchanged = pc.and_(pc.equal(table.column("status"), "ok"), pc.less(table.column("mean_abs_change"), threshold))
    return int(pc.sum(unchanged.cast(pa.int64())).as_py() or 0)


def summarize(table: pa.Table) -> dict[str, int]:
    """Rows per status (every status present, zero when absent)."""
    counts = dict.fromkeys(STATUSES, 0)
    for status, count in zip(*_value_counts(table.column("status")), strict=True):
        counts[status] = count
    return counts


# --------------------------------------------------------------------------------------------
# Manifest tables in transit

PACKED_COLUMN = "manifest_ipc"
"""The one column of packed manifest tables: Arrow IPC streams (:func:`pack_manifest`)."""


def pack_manifest(tables: list[pa.Table]) -> pa.Table:
    """Manifest tables as one row: one Arrow IPC stream in the binary column
    :data:`PACKED_COLUMN`. What the Ray job's fused actors yield: one row, because Ray Data's
    output buffer slices blocks by bytes but never below a row, so that with the dataset's
    ``target_max_block_size`` set to 1 byte every yield becomes a block of its own and streams to
    the driver at once (without it, Ray Data holds a task's small outputs until the task ends)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, tables[0].schema) as writer:
        for table in tables:
            writer.write_table(table)
    return pa.table({PACKED_COLUMN: pa.array([sink.getvalue().to_pybytes()], pa.large_binary())})


def unpack_manifest(batch: pa.Table) -> Iterator[pa.Table]:
    """The manifest tables of a batch of :func:`pack_manifest` rows (any number of rows)."""
    for cell in batch.column(PACKED_COLUMN).to_pylist():
        yield pa.ipc.open_stream(cell).read_all()


# The work of a run: what the planner hands the stages, one row per input to restore.
WORK_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("output_uri", pa.string(), nullable=False),
        # Source size recorded by an earlier run that restored this input; the input is skipped
        # when its size is unchanged. Null: restore it.
        pa.field("previous_bytes", pa.int64()),
    ]
)

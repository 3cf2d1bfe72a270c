"""The plan of a batch restoration: list the inputs, place one output for each, mark the ones an
earlier run restored -- in partitions, so that the driver's memory does not grow with the
collection.

:func:`plan_restore` streams the listing (a folder or prefix walked one folder at a time, one
file, or a Parquet/CSV/text list read in batches) and plans it ``input.partition_size`` inputs
at a time. Each planned partition is appended to a spool file on the driver's local disk (a
Parquet row group: source, output, the size an earlier run recorded, or why the input cannot
be placed); :meth:`Plan.parts` reads them back one by one for the executor. What the driver
keeps for the whole collection is counts and two :class:`restoration.restore.digests.DigestSet` (16
bytes per input): the output locations claimed so far, and for lists the entries seen so far
(duplicates are dropped).

Placement rules: the output of an input is ``<output>/<its path relative to the input root>``
(for a list, the deepest folder holding every entry), with the extension of ``output.format``
when set. When two inputs would land on the same output (``a.jpg`` and ``a.png`` written as
PNG), the first in listing order takes it and the later one keeps its own extension too
(``a.png.png``); if that is taken as well, it is an error row. A path that would leave the
output prefix, or an output that would replace an input, is an error row. So is an S3 source
whose key has empty, ``.`` or ``..`` segments (``s3://b/in/../x.png``): HTTP clients and stores
resolve such a key to another object, so it cannot be read as named; such entries of a list
play no part in choosing the list's root either. Inputs under the output prefix are not inputs
when the output lies inside an input folder (earlier outputs).
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from restoration.io import storage
from restoration.quality.routing import ROUTED_TASK
from restoration.restore import manifest as manifest_lib
from restoration.restore.digests import DigestSet
from restoration.restore.manifest import WORK_SCHEMA, error_row
from restoration.restore.settings import RestoreConfig
from restoration.tasks.specs import get_task

__all__ = [
    "LIST_EXTENSIONS",
    "URI_COLUMNS",
    "Plan",
    "PlanPart",
    "iter_inputs",
    "list_inputs",
    "plan_restore",
]

LIST_EXTENSIONS: Final[frozenset[str]] = frozenset({".parquet", ".csv", ".txt"})
"""An ``--input`` file with one of these extensions is a list of input URIs, not an image."""

URI_COLUMNS: Final[tuple[str, ...]] = ("source_uri", "uri", "path", "url", "key")
"""Column names recognized as the URI column of a list input, in order of preference."""

_EXTENSION_FORMATS: Final[dict[str, str]] = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF",
    ".tiff": "TIFF", ".bmp": "BMP",
}
_FORMAT_EXTENSIONS: Final[dict[str, str]] = {
    "PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp",
}
_LIST_BATCH_ROWS: Final[int] = 65_536

_SPOOL_SCHEMA: Final[pa.Schema] = pa.schema([
    pa.field("source_uri", pa.string(), nullable=False),
    pa.field("output_uri", pa.string()),  # null for an input that cannot be placed
    pa.field("previous_bytes", pa.int64()),
    pa.field("error", pa.string()),  # why it cannot be placed
])


# --------------------------------------------------------------------------------------------
# Listing


def _normalize(uri: str) -> str:
    """One spelling per location: ``s3://bucket/key`` or an absolute local path."""
    if uri.startswith("s3://"):
        return "s3://" + uri[len("s3://"):].rstrip("/")
    _, path = storage.resolve(uri)  # local: absolute, no trailing slash, file:// removed
    return path


def _dot_segment(uri: str) -> str | None:
    """The first empty, ``.`` or ``..`` segment of an S3 URI's key (None when it has none, and
    for local paths, which the operating system resolves as named)."""
    if not uri.startswith("s3://"):
        return None
    key = uri[len("s3://"):].partition("/")[2]
    return next((segment for segment in key.split("/") if segment in ("", ".", "..")), None)


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _pick_column(names: list[str], wanted: str | None, list_uri: str) -> str:
    if wanted is not None:
        if wanted not in names:
            raise ValueError(f"list {list_uri} has no column {wanted!r} (input.uri_column); columns: {', '.join(names)}")
        return wanted
    lowered = {name.lower(): name for name in names}
    for candidate in URI_COLUMNS:
        if candidate in lowered:
            return lowered[candidate]
    if len(names) == 1:
        return names[0]
    raise ValueError(
        f"list {list_uri} has columns {', '.join(names)}; name the URI column one of "
        f"{', '.join(URI_COLUMNS)} or set input.uri_column"
    )


def _list_entries(list_uri: str, uri_column: str | None) -> Iterator[Any]:
    """The raw entries of a Parquet, CSV (with a header) or text (one per line) list, streamed."""
    filesystem, path = storage.resolve(list_uri)
    extension = posixpath.splitext(list_uri)[1].lower()
    try:
        handle = filesystem.open_input_file(path)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"no such file: {list_uri}") from error
    with handle:
        if extension == ".parquet":
            parquet = pq.ParquetFile(handle)
            column = _pick_column(parquet.schema_arrow.names, uri_column, list_uri)
            for batch in parquet.iter_batches(batch_size=_LIST_BATCH_ROWS, columns=[column]):
                yield from batch.column(0).to_pylist()
            return
        text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
        lines = (line.rstrip("\r\n") for line in text)
        lines = (line for line in lines if line.strip())
        first = next(lines, None)
        if first is None:
            return
        first = first.strip()
        names = [name.strip() for name in next(csv.reader([first]))]
        has_header = extension == ".csv" and (
            "," in first or first.lower() in URI_COLUMNS or (uri_column is not None and first == uri_column)
        )
        if not has_header:
            yield first
            yield from (line.strip() for line in lines)
            return
        column = _pick_column(names, uri_column, list_uri)
        index = names.index(column)
        for row in csv.reader(lines):
            yield row[index].strip() if index < len(row) else None


def _read_uri_list(list_uri: str, uri_column: str | None) -> Iterator[str]:
    """URIs of a list file in its order; relative entries are resolved against the list's folder."""
    base = posixpath.dirname(list_uri) if "://" in list_uri else os.path.dirname(_normalize(list_uri))
    for entry in _list_entries(list_uri, uri_column):
        if entry is None or not str(entry).strip():
            continue
        entry = str(entry).strip()
        if "://" not in entry and not entry.startswith(("/", "~")):
            entry = storage.join(base, entry) if "://" in base else os.path.join(base, entry)
        yield entry


def _common_root(uris: Iterator[str]) -> str | None:
    """The deepest folder holding every URI (all must be on one filesystem and bucket); None
    when there are none. Streams: one pass, constant memory."""
    root: str | None = None
    is_s3: bool | None = None
    for uri in uris:
        if _dot_segment(uri) is not None:
            continue  # an error row (see _place): it must not move every other output
        normalized = _normalize(uri)
        here = normalized.startswith("s3://")
        if is_s3 is None:
            is_s3 = here
        elif here != is_s3:
            raise ValueError("a list input must name files on one filesystem (all local or all s3://)")
        folder = posixpath.dirname(normalized[len("s3://"):] if here else normalized)
        if root is None:
            root = folder
        elif folder != root and not folder.startswith(root.rstrip("/") + "/"):
            if here and root.split("/", 1)[0] != folder.split("/", 1)[0]:
                raise ValueError("a list input must name objects in one S3 bucket")
            root = posixpath.commonpath([root, folder])
    if root is None:
        return None
    return "s3://" + root if is_s3 else root


def iter_inputs(input_uri: str, *, uri_column: str | None = None) -> tuple[str, Iterator[str], bool]:
    """``(root, inputs, is_list)`` for ``--input``: a folder/prefix (images below it,
    recursive, in sorted path order), one image file, or a list file (:data:`LIST_EXTENSIONS`;
    in its order, duplicates included). ``inputs`` is a generator: the listing streams. A list
    is read twice, once here for its root.

    Raises:
        FileNotFoundError: nothing at ``input_uri``. ValueError: a list that is unreadable or
            spans filesystems or buckets.
    """
    filesystem, path = storage.resolve(input_uri)
    try:
        info = filesystem.get_file_info(path)
    except OSError as error:
        raise OSError(f"cannot inspect {input_uri}: {storage.redact(str(error))}") from error
    if info.type == pafs.FileType.File and posixpath.splitext(input_uri)[1].lower() in LIST_EXTENSIONS:
        root = _common_root(_read_uri_list(input_uri, uri_column))
        return root or input_uri, _read_uri_list(input_uri, uri_column), True
    return input_uri, storage.iter_images(input_uri), False


def list_inputs(input_uri: str, *, uri_column: str | None = None) -> tuple[str, list[str], bool]:
    """:func:`iter_inputs` as a list, duplicates of a list file dropped (first kept)."""
    root, inputs, is_list = iter_inputs(input_uri, uri_column=uri_column)
    return root, list(dict.fromkeys(inputs)), is_list


# --------------------------------------------------------------------------------------------
# The plan


@dataclass
class PlanPart:
    """One partition of a plan: ``inputs`` (every input of the part, in order), ``work`` (the
    ones to send to the executor, :data:`restoration.restore.manifest.WORK_SCHEMA`), ``errors``
    (manifest error rows for the ones that cannot be placed) and ``previous`` (the earlier
    manifest row of every input that may be skipped)."""

    inputs: list[str]
    work: pa.Table
    errors: list[dict[str, Any]]
    previous: dict[str, dict[str, Any]]


@dataclass
class Plan:
    """What a run will do: counts for the whole collection, the partitions on a local spool.

    ``total`` inputs, of which ``to_process`` go to the executor (``may_skip`` of them were
    restored by an earlier run and are checked first) and ``plan_errors`` cannot be placed.
    Iterate :meth:`parts`; :meth:`close` (or ``with plan:``) removes the spool.
    """

    root: str
    is_list: bool
    total: int
    to_process: int
    may_skip: int
    plan_errors: int
    task: str
    model_id: str
    _spool: str
    _index: manifest_lib.ManifestIndex | None = None
    _protected: DigestSet = field(default_factory=DigestSet)

    def parts(self) -> Iterator[PlanPart]:
        """The partitions in listing order, one at a time."""
        spool = pq.ParquetFile(self._spool)
        for group in range(spool.num_row_groups):
            table = spool.read_row_group(group)
            inputs = table.column("source_uri").to_pylist()
            errors = []
            keep = []
            for index, (uri, output, error) in enumerate(zip(
                    inputs, table.column("output_uri").to_pylist(), table.column("error").to_pylist(), strict=True)):
                if error is None and output is not None and _normalize(output) in self._protected:
                    error = f"output {output} would overwrite an input; choose another --output"
                if error is not None:
                    errors.append(error_row(uri, error, "plan", task=self.task, model_id=self.model_id))
                else:
                    keep.append(index)
            work = table.take(pa.array(keep, pa.int64())).select(WORK_SCHEMA.names).cast(WORK_SCHEMA)
            skippable = work.filter(work.column("previous_bytes").is_valid()).column("source_uri").to_pylist()
            previous = self._index.restored_rows(skippable) if (self._index is not None and skippable) else {}
            yield PlanPart(inputs=inputs, work=work, errors=errors, previous=previous)

    def collect(self) -> PlanPart:
        """Every partition as one part, then :meth:`close`: for collections small enough to
        hold (tests, notebooks)."""
        try:
            parts = list(self.parts())
        finally:
            self.close()
        return PlanPart(inputs=[uri for part in parts for uri in part.inputs],
                        work=pa.concat_tables([part.work for part in parts]),
                        errors=[row for part in parts for row in part.errors],
                        previous={uri: row for part in parts for uri, row in part.previous.items()})

    def close(self) -> None:
        shutil.rmtree(os.path.dirname(self._spool), ignore_errors=True)

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _extension_for(source_extension: str, output_format: str | None) -> str:
    if output_format is not None:
        return _FORMAT_EXTENSIONS[output_format]
    if source_extension.lower() in _EXTENSION_FORMATS:
        return source_extension
    return ".png"


def plan_restore(
    input_uri: str,
    output_uri: str,
    *,
    task: str,
    model_id: str,
    config: RestoreConfig,
    previous_manifest: manifest_lib.ManifestIndex | pa.Table | None = None,
    overwrite: bool = False,
    limit: int | None = None,
) -> Plan:
    """List the inputs and plan one output URI for each (see the module docstring for the
    placement rules), ``config.input.partition_size`` inputs at a time.

    Without ``overwrite``, an input whose latest row in ``previous_manifest`` (the output's
    :class:`restoration.restore.manifest.ManifestIndex`, or a manifest table) is ``ok`` or
    ``skipped`` for the same task, model and output URI gets ``previous_bytes``: it is skipped
    when its size is unchanged.

    Raises:
        ValueError: unknown task, ``limit < 1``, no input images, input and output the same
            location, a list that spans filesystems.
        FileNotFoundError: nothing at ``input_uri``.
    """
    if task != ROUTED_TASK:
        get_task(task)  # ValueError naming the known tasks
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    storage.resolve(output_uri)  # validates the output URI before any listing
    output_root = _normalize(output_uri)
    root, listing, is_list = iter_inputs(input_uri, uri_column=config.input.uri_column)
    if _normalize(root) == output_root:
        raise ValueError(f"--output {output_uri} is the input location; restored images would replace the originals")
    exclude_outputs = not is_list and _is_within(output_root, _normalize(root))
    index = None if overwrite or previous_manifest is None else previous_manifest
    if isinstance(index, pa.Table):
        index = manifest_lib.ManifestIndex.from_table(index)
    claimed = DigestSet()  # output locations taken so far
    protected = DigestSet()  # list inputs under the output prefix: no output may replace them
    counts = {"total": 0, "to_process": 0, "may_skip": 0, "plan_errors": 0}
    folder = tempfile.mkdtemp(prefix="restore-plan-")
    spool_path = os.path.join(folder, "plan.parquet")
    writer = pq.ParquetWriter(spool_path, _SPOOL_SCHEMA, compression="zstd")
    try:
        for chunk in _input_chunks(listing, is_list=is_list, output_root=output_root, exclude_outputs=exclude_outputs,
                                   protected=protected, partition_size=config.input.partition_size, limit=limit):
            rows = _place(chunk, root=root, output_uri=output_uri, output_format=config.output.format, claimed=claimed)
            if index is not None:
                _mark_skippable(rows, index, task=task, model_id=model_id)
            counts["total"] += len(chunk)
            for row in rows:
                if row["error"] is not None:
                    counts["plan_errors"] += 1
                else:
                    counts["to_process"] += 1
                    counts["may_skip"] += row["previous_bytes"] is not None
            writer.write_table(pa.Table.from_pylist(rows, schema=_SPOOL_SCHEMA))
    except BaseException:
        writer.close()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    writer.close()
    if counts["total"] == 0:
        shutil.rmtree(folder, ignore_errors=True)
        what = "the list" if is_list else f"{input_uri} (extensions {', '.join(sorted(storage.IMAGE_EXTENSIONS))})"
        raise ValueError(f"no input images: nothing to restore in {what}")
    return Plan(root=root, is_list=is_list, task=task, model_id=model_id, _spool=spool_path, _index=index,
                _protected=protected, **counts)


def _input_chunks(listing: Iterator[str], *, is_list: bool, output_root: str, exclude_outputs: bool,
                  protected: DigestSet, partition_size: int, limit: int | None) -> Iterator[list[str]]:
    """The listed inputs in chunks of ``partition_size``, at most ``limit`` of them: a list's
    repeated entries once, outputs of earlier runs under an input folder left out, and list
    entries under the output prefix added to ``protected``."""
    listed = DigestSet() if is_list else None  # list entries seen so far (lists may repeat)
    chunk: list[str] = []
    total = 0
    for uri in listing:
        if listed is not None and not listed.add(uri):
            continue  # a repeated list entry
        location = _normalize(uri)
        if _is_within(location, output_root):
            if exclude_outputs:
                continue  # an output of an earlier run, under the input folder
            protected.add(location)
        chunk.append(uri)
        total += 1
        if len(chunk) >= partition_size:
            yield chunk
            chunk = []
        if limit is not None and total >= limit:
            break
    if chunk:
        yield chunk


def _mark_skippable(rows: list[dict[str, Any]], index: manifest_lib.ManifestIndex, *, task: str, model_id: str) -> None:
    """``previous_bytes`` on the rows whose latest manifest row is ``ok`` or ``skipped`` for the
    same output, task and model: they are skipped when their size is unchanged."""
    earlier = index.restored_rows([row["source_uri"] for row in rows if row["error"] is None])
    for row in rows:
        before = earlier.get(row["source_uri"])
        if (before is not None and row["error"] is None and before["output_uri"] == row["output_uri"]
                and before["task"] == task and before["model_id"] == model_id and before["bytes_in"] is not None):
            row["previous_bytes"] = before["bytes_in"]


def _place(uris: list[str], *, root: str, output_uri: str, output_format: str | None,
           claimed: DigestSet) -> list[dict[str, Any]]:
    """Spool rows for ``uris``: the output URI of each, or why it has none."""
    rows = []
    for uri in uris:
        row: dict[str, Any] = {"source_uri": uri, "output_uri": None, "previous_bytes": None, "error": None}
        rows.append(row)
        segment = _dot_segment(uri)
        if segment is not None:
            row["error"] = (f"refused: the S3 key of {storage.redact(uri)} has a {segment!r} path segment; keys with "
                            "empty, '.' or '..' segments resolve to other objects, so they are not read")
            continue
        try:
            key = storage.relative_key(root, uri)
            stem, extension = posixpath.splitext(key)
            new_extension = _extension_for(extension, output_format)
            wanted = key if new_extension == extension else (stem if output_format else key) + new_extension
            target = storage.safe_output_uri(output_uri, wanted)
            if _normalize(target) in claimed:  # another input's output: keep this one's extension too
                target = storage.safe_output_uri(output_uri, key + _extension_for("", output_format))
        except ValueError as error:
            row["error"] = f"cannot place the output: {error}"
            continue
        if not claimed.add(_normalize(target)):
            row["error"] = f"output {target} is also the output of another input"
            continue
        row["output_uri"] = target
    return rows

"""A batch restoration run, owned by the library: plan, stages, manifest accounting, summary and
progress, with the execution left to an executor.

:func:`run_restore` does everything a run needs whatever executes it:

1. check that the input can be read and the output written (:func:`restoration.storage.check_readable`,
   :func:`~restoration.storage.check_writable` on ``<output>/_manifest``), load and validate the model
   (:func:`load_restore_model`), read the earlier manifest, list and plan the inputs
   (:func:`restoration.planning.plan_restore`) and write the resolved config -- all on the
   driver, before any executor starts, so that unreachable storage, a missing bucket or denied
   access fails in one line (:class:`restoration.storage.StorageError`) without starting
   anything (settings were checked when the config loaded);
2. on a re-run, have the executor stat the inputs restored before (:meth:`RestoreExecutor.skip`)
   and record the unchanged ones as ``skipped`` before any model is loaded;
3. have the executor restore the rest (:meth:`RestoreExecutor.restore`: read, restore, encode
   and write), keeping the first manifest row per input, writing manifest parts as they stream
   and printing a progress line every :data:`PROGRESS_SECONDS`;
4. turn every input the executor did not report into an error row, compact the manifest and
   write ``_summary.json``.

Executors: :class:`LocalRestoreExecutor` runs the stages in this process (one machine, no Ray
imported: ``restoration restore --no-ray``); the Ray Data executor lives in ``jobs/restore.py``.
Both run the same stage functions of :mod:`restoration.restore` on the same Arrow tables.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import posixpath
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from restoration import config as config_lib, manifest as manifest_lib, storage
from restoration.checkpoint import (
    Checkpoint,
    CheckpointBytes,
    CheckpointError,
    checkpoint_from_bytes,
    read_checkpoint_bytes,
    read_model_metadata,
    resolve_model,
)
from restoration.restore import (
    WORK_SCHEMA,
    PredictorConfig,
    RestoreConfig,
    encode_stage,
    read_stage,
    restore_stage,
    skip_stage,
    target_format,
)
from restoration.planning import Plan, plan_restore
from restoration.stopping import StopNow, StopSignals
from restoration.tasks import TASK_NAMES

__all__ = [
    "EXIT_STORAGE",
    "PROGRESS_SECONDS",
    "LocalRestoreExecutor",
    "RestoreExecutor",
    "RestoreJob",
    "RestoreModel",
    "RunStopped",
    "DRY_RUN_MEGAPIXELS_PER_SECOND",
    "OUTPUT_BYTES_PER_MEGAPIXEL",
    "add_restore_arguments",
    "dry_run_restore",
    "encode_options",
    "format_dry_run",
    "format_summary",
    "load_restore_model",
    "make_predictor",
    "process_work",
    "read_options",
    "run_restore",
    "run_restore_command",
]

PROGRESS_SECONDS: Final[float] = 15.0
"""Seconds between two progress lines."""

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


# --------------------------------------------------------------------------------------------
# The model and the job


@dataclass(frozen=True)
class RestoreModel:
    """A checkpoint read and validated on the driver: ``data`` (its bytes, what reaches other
    processes) and ``checkpoint`` (the model built from them, float32 on the CPU)."""

    data: CheckpointBytes
    checkpoint: Checkpoint

    @property
    def model_id(self) -> str:
        return self.checkpoint.model_id


def load_restore_model(spec: str, task: str) -> RestoreModel:
    """Read and validate ``--model`` (a folder, a ``file://``/``s3://`` URI, or ``default``) for
    ``task``.

    Raises:
        CheckpointError: missing, broken, or a model of another task.
        OSError: the storage holding it could not be reached.
    """
    data = read_checkpoint_bytes(resolve_model(spec, task))
    checkpoint = checkpoint_from_bytes(data)  # the whole model loads here, before any executor starts
    if checkpoint.metadata.task != task:
        raise CheckpointError(f"--model {spec} is a {checkpoint.metadata.task!r} model, but --task is {task!r}")
    return RestoreModel(data=data, checkpoint=checkpoint)


@dataclass(frozen=True)
class RestoreJob:
    """What the stages of one run need, for any executor."""

    task: str
    job_id: str
    config: RestoreConfig
    model: RestoreModel

    @property
    def model_id(self) -> str:
        return self.model.model_id


def read_options(config: RestoreConfig) -> dict[str, Any]:
    """Keyword arguments of :func:`restoration.restore.read_stage` for ``config``."""
    return {"max_pixels": config.input.max_pixels, "max_bytes": config.input.max_bytes,
            "outage_seconds": config.storage.outage_seconds}


def encode_options(job: RestoreJob) -> dict[str, Any]:
    """Keyword arguments of :func:`restoration.restore.encode_stage` for ``job``."""
    output = job.config.output
    return {"task": job.task, "model_id": job.model_id, "job_id": job.job_id, "output_format": output.format,
            "quality": output.quality, "png_compression": output.png_compression,
            "strip_metadata": output.strip_metadata, "outage_seconds": job.config.storage.outage_seconds}


def make_predictor(model: Any, config: PredictorConfig, *, device: str, threads: int | None = None) -> Any:
    """A :class:`restoration.inference.Predictor` for ``model`` with ``config``'s settings on
    ``device``; ``threads`` sets torch's intra-op threads on CPU (None leaves them)."""
    import torch

    from restoration.inference import Predictor

    if threads and device == "cpu":
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"predictor device {device} requested but this process sees no GPU")
    return Predictor(model, device=device, **config.predictor_options())


# --------------------------------------------------------------------------------------------
# Executors


class RestoreExecutor(Protocol):
    """Runs the stages of :mod:`restoration.restore` somewhere; :func:`run_restore` does the rest.

    ``skip`` takes work rows an earlier run restored (``previous_bytes`` set) and yields
    :data:`restoration.restore.SKIP_SCHEMA` tables (from :func:`~restoration.restore.skip_stage`);
    ``restore`` takes work rows (:data:`~restoration.restore.WORK_SCHEMA`) and yields manifest
    tables (from :func:`~restoration.restore.encode_stage`), at most one row per input, in any
    order and in any number of tables; once ``stop.requested``, it starts no more inputs and
    ends when those in flight are done. ``describe`` says how the model ran, for the summary
    (None when it never did).
    """

    name: str

    def skip(self, candidates: pa.Table, config: RestoreConfig) -> Iterable[pa.Table]: ...

    def restore(self, work: pa.Table, job: RestoreJob, *, stop: StopSignals | None = None) -> Iterable[pa.Table]: ...

    def describe(self) -> dict[str, Any] | None: ...


def _slices(table: pa.Table, rows: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, rows):
        yield table.slice(start, rows)


def process_work(predictor: Any, work: pa.Table, job: RestoreJob, *, batch_size: int,
                 should_stop: Callable[[], bool] | None = None) -> Iterator[pa.Table]:
    """Read, decode, restore, encode and write every row of ``work`` (:data:`WORK_SCHEMA`) in
    this process, ``batch_size`` inputs at a time; yield one manifest table
    (:data:`restoration.manifest.MANIFEST_SCHEMA`) per chunk.

    Decoded and restored pixels never leave the process, and at most one chunk of them is held
    at once. Both executors run it: the local one over the whole work table, each Ray actor over
    the blocks it is given. When ``should_stop()`` turns true, the chunks not yet started are
    left undone (no rows: the next run does them).
    """
    reading, encoding = read_options(job.config), encode_options(job)
    for chunk in _slices(work, batch_size):
        if should_stop is not None and should_stop():
            return
        restored = restore_stage(predictor, read_stage(chunk, **reading), task=job.task)
        yield encode_stage(restored, **encoding)


class LocalRestoreExecutor:
    """The stages in this process, one batch after another: read and decode ``batch_size``
    inputs, restore them, encode and write them. No Ray; the device is ``predictor.device``, or
    CUDA when available, else the CPU with torch's default threads (or ``predictor.threads``)."""

    name = "local"

    def __init__(self) -> None:
        self._described: dict[str, Any] | None = None

    def skip(self, candidates: pa.Table, config: RestoreConfig) -> Iterator[pa.Table]:
        for chunk in _slices(candidates, 64):
            yield skip_stage(chunk, outage_seconds=config.storage.outage_seconds)

    def restore(self, work: pa.Table, job: RestoreJob, *, stop: StopSignals | None = None) -> Iterator[pa.Table]:
        import torch

        config = job.config
        device = config.predictor.device or ("cuda" if torch.cuda.is_available() else "cpu")
        predictor = make_predictor(job.model.checkpoint.model, config.predictor, device=device,
                                   threads=config.predictor.threads)
        batch_size = config.pipeline.batch_size or (16 if device.startswith("cuda") else 4)
        self._described = {"device": device, "threads": torch.get_num_threads(),
                           "batch_size": batch_size}
        yield from process_work(predictor, work, job, batch_size=batch_size,
                                should_stop=None if stop is None else (lambda: stop.requested))

    def describe(self) -> dict[str, Any] | None:
        return self._described


# --------------------------------------------------------------------------------------------
# The run


@contextlib.contextmanager
def _users_storage_errors(argument: str, uri: str) -> Iterator[None]:
    """Turn a storage error that is the user's to fix (unreachable endpoint, missing bucket or
    file, denied access) while using ``uri`` into one redacted line naming the argument and the
    URI, a StorageError (a ValueError); anything else propagates unchanged."""
    try:
        yield
    except (OSError, storage.StorageError) as error:
        message = storage.describe_storage_error(error, uri)
        if message is None:
            raise
        shown = storage.redact(uri)
        raise storage.StorageError(message if shown in message else f"{argument} {shown}: {message}") from error


class RunStopped(Exception):
    """A run that had to stop before its end, with the one line to print and the exit code:
    the store stayed unreachable past ``storage.outage_seconds`` (exit :data:`EXIT_STORAGE`).
    What reached the manifest is kept; the same command continues."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


EXIT_STORAGE: Final[int] = 75
"""Exit code of a run stopped by a store that stayed unreachable past its outage budget
(``EX_TEMPFAIL``: try again later)."""


def run_restore(
    input_uri: str,
    output_uri: str,
    *,
    task: str,
    executor: RestoreExecutor,
    model: str = "default",
    config: RestoreConfig | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    echo: Callable[[str], Any] = print,
    stop: StopSignals | None = None,
) -> dict[str, Any]:
    """Run one batch restoration with ``executor`` and return its summary (also written to
    ``<output>/_manifest/_summary.json``).

    Local paths are made absolute here, on the driver, so that they mean the same in every
    process (:func:`restoration.storage.absolute_uri`). Every storage call waits out an outage
    for up to ``storage.outage_seconds``. ``stop``: the signals of the command
    (:class:`restoration.stopping.StopSignals`); once it is requested the run submits no more
    work, keeps what comes back, writes the manifest and a summary with ``stopped`` set.

    Raises (all before the executor starts, except RunStopped):
        ValueError: a bad argument, a checkpoint that does not fit (CheckpointError), no
            inputs, or storage that is the user's to fix: unreachable, a missing bucket or file,
            denied access (:class:`restoration.storage.StorageError`, one line).
        RunStopped: the store stayed unreachable past the outage budget during the run.
    """
    config = config or RestoreConfig()
    with storage.outage_budget(config.storage.outage_seconds):
        return _run_restore(input_uri, output_uri, task=task, executor=executor, model=model, config=config,
                            limit=limit, overwrite=overwrite, echo=echo, stop=stop or StopSignals())


def _run_restore(input_uri: str, output_uri: str, *, task: str, executor: RestoreExecutor, model: str,
                 config: RestoreConfig, limit: int | None, overwrite: bool, echo: Callable[[str], Any],
                 stop: StopSignals) -> dict[str, Any]:
    started = time.time()
    job_id = manifest_lib.new_job_id()
    input_uri, output_uri = storage.absolute_uri(input_uri), storage.absolute_uri(output_uri)
    folder = manifest_lib.manifest_uri(output_uri)
    with _users_storage_errors("--input", input_uri):
        storage.check_readable(input_uri)
    with _users_storage_errors("--output", output_uri):
        # Checked on the manifest's folder: on S3 the check leaves an empty folder marker, which
        # belongs there, not among the outputs.
        storage.check_writable(folder)
    with _users_storage_errors("--model", model):
        restore_model = load_restore_model(model, task)
    with _users_storage_errors("--output", output_uri):
        previous = manifest_lib.ManifestIndex(output_uri)
    with _users_storage_errors("--input", input_uri):
        plan = plan_restore(input_uri, output_uri, task=task, model_id=restore_model.model_id, config=config,
                            previous_manifest=previous, overwrite=overwrite, limit=limit)
    with plan:
        return _run_plan(plan, executor=executor, job=RestoreJob(task=task, job_id=job_id, config=config,
                                                                  model=restore_model),
                         input_uri=input_uri, output_uri=output_uri, started=started, echo=echo, stop=stop)


@dataclass
class _Progress:
    """What the progress lines count: only the work of this run (skipped inputs apart)."""

    to_process: int
    processed: int = 0  # rows the executor reported in this run
    skipped: int = 0  # inputs found restored by an earlier run
    first: tuple[float, int] | None = None  # (when, rows) of the first rows back: start-up is not work

    def record(self, rows: int) -> None:
        self.processed += rows
        if self.first is None and rows:
            self.first = (time.monotonic(), self.processed)

    def rate(self, now: float | None = None) -> float:
        """Images per second of this run's own work, from its first result on (0 before)."""
        if self.first is None:
            return 0.0
        seconds = (now or time.monotonic()) - self.first[0]
        return (self.processed - self.first[1]) / seconds if seconds > 0 else 0.0

    def line(self, writer: manifest_lib.ManifestWriter, total: int, unchanged: int, now: float | None = None) -> str:
        counts = writer.counts
        rate = self.rate(now)
        remaining = max(0, self.to_process - self.skipped - self.processed)
        eta = "ETA 0 s" if remaining == 0 else f"ETA {_format_duration(remaining / rate)}" if rate > 0 else "ETA unknown"
        line = (f"  {writer.done}/{total} done: restored {counts['ok']} (unchanged {unchanged}), "
                f"error {counts['error']}, skipped as done before {counts['skipped']}; "
                f"{rate:.2f} images/s in this run, {remaining} left, {eta}")
        unreachable = storage.unreachable_for()
        if unreachable is not None:
            line += f"; storage unreachable for {_format_duration(unreachable)}"
        return line


def _run_plan(plan: Plan, *, executor: RestoreExecutor, job: RestoreJob, input_uri: str, output_uri: str,
              started: float, echo: Callable[[str], Any], stop: StopSignals) -> dict[str, Any]:
    """Steps 2 to 4 of :func:`run_restore`, partition by partition of ``plan``."""
    config, task, job_id = job.config, job.task, job.job_id
    folder = manifest_lib.manifest_uri(output_uri)
    with _users_storage_errors("--output", output_uri):
        storage.write_bytes(storage.join(folder, manifest_lib.CONFIG_FILE), config_lib.to_yaml(config).encode())
    listed = time.time()
    total = plan.total
    echo(f"restore {task}: {total} inputs from {storage.redact(input_uri)} -> {storage.redact(output_uri)} "
         f"(model {job.model_id}, job {job_id}, {executor.name}; {plan.to_process} to process, "
         f"{plan.may_skip} may be skipped, {plan.plan_errors} cannot be placed)")

    writer = manifest_lib.ManifestWriter(output_uri, job_id, flush_rows=config.manifest.flush_rows,
                                         flush_seconds=config.manifest.flush_seconds)
    megapixels = 0.0
    unchanged = 0  # ok rows the model changed by less than manifest.unchanged_threshold
    threshold = config.manifest.unchanged_threshold
    progress = _Progress(to_process=plan.to_process)
    last_report = time.monotonic()
    forced: StopNow | None = None
    try:
        for part in plan.parts():
            if stop.requested:
                break
            writer.new_partition()
            if part.errors:
                writer.add_rows({**row, "job_id": job_id} for row in part.errors)
            work = part.work
            if work.num_rows and part.previous:
                skipped_before = writer.counts["skipped"]
                work = _skip_done(work, executor=executor, config=config, writer=writer, previous=part.previous,
                                  job_id=job_id)
                progress.skipped += writer.counts["skipped"] - skipped_before
                if writer.counts["skipped"] > skipped_before:
                    echo(f"  {writer.counts['skipped'] - skipped_before} inputs already restored (same size): "
                         f"skipped; {work.num_rows} to process")
            if work.num_rows and not stop.requested:
                for rows in executor.restore(work, job, stop=stop):
                    new = writer.add(_fill_skipped(rows, part.previous, job_id))
                    progress.record(new.num_rows)
                    megapixels += _ok_megapixels(new)
                    unchanged += manifest_lib.count_unchanged(new, threshold)
                    if time.monotonic() - last_report >= PROGRESS_SECONDS:
                        last_report = time.monotonic()
                        echo(progress.line(writer, total, unchanged))
            if stop.requested:
                break  # what did not come back is left for the next run, not an error
            # Every input exactly once: anything the executor did not report is an error, not a gap.
            missing = [uri for uri in part.inputs if uri not in writer.seen]
            if missing:
                writer.add_rows(manifest_lib.error_row(uri, f"no result came back from the {executor.name} executor",
                                                       "restore", task=task, model_id=job.model_id, job_id=job_id)
                                for uri in missing)
    except StopNow as error:
        forced = error
    except OSError as error:
        if not storage.is_transient(error, output_uri) and not storage.is_transient(error, input_uri):
            raise
        raise RunStopped(_stopped_line(f"storage did not answer within storage.outage_seconds="
                                       f"{config.storage.outage_seconds:g}", writer, total,
                                       kept=False), EXIT_STORAGE) from error
    return _finish(writer, job=job, executor=executor, input_uri=input_uri, output_uri=output_uri, total=total,
                   started=started, listed=listed, megapixels=megapixels, unchanged=unchanged, stop=stop,
                   forced=forced, echo=echo)


def _stopped_line(reason: str, writer: manifest_lib.ManifestWriter, total: int, *, kept: bool = True) -> str:
    counts = writer.counts
    recorded = "recorded in the manifest" if kept else "reported (the rows not yet written are redone)"
    return (f"stopped ({reason}): {writer.done} of {total} inputs {recorded} (ok {counts['ok']}, "
            f"error {counts['error']}, skipped {counts['skipped']}), {total - writer.done} left; "
            "run the same command again to continue")


def _finish(writer: manifest_lib.ManifestWriter, *, job: RestoreJob, executor: RestoreExecutor, input_uri: str,
            output_uri: str, total: int, started: float, listed: float, megapixels: float, unchanged: int,
            stop: StopSignals, forced: StopNow | None, echo: Callable[[str], Any]) -> dict[str, Any]:
    """Step 4 of :func:`run_restore`: the last manifest part, compaction, ``_summary.json``."""
    config = job.config
    folder = manifest_lib.manifest_uri(output_uri)
    # A forced stop writes what it has without waiting for a store that does not answer.
    with storage.outage_budget(0 if forced else None):
        try:
            manifest_file = writer.close()
        except OSError as error:
            if not storage.is_transient(error, output_uri):
                raise
            raise RunStopped(_stopped_line("storage did not answer while the manifest was written", writer, total,
                                           kept=False), EXIT_STORAGE) from error
        finished = time.time()
        pipeline_seconds = max(finished - listed, 1e-9)
        summary = {
            "job_id": job.job_id,
            "task": job.task,
            "model_id": job.model_id,
            "input": storage.redact(input_uri),
            "output": storage.redact(output_uri),
            "inputs": total,
            "counts": dict(writer.counts),
            "unchanged": unchanged,
            "unchanged_threshold": config.manifest.unchanged_threshold,
            "duplicates_dropped": writer.duplicates,
            "images_per_second": writer.counts["ok"] / pipeline_seconds,
            "megapixels": megapixels,
            "megapixels_per_second": megapixels / pipeline_seconds,
            "wall_seconds": finished - started,
            "pipeline_seconds": pipeline_seconds,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "pipeline_started_epoch": listed,
            "manifest": storage.redact(manifest_file),
            "executor": executor.name,
            "actor_pool": executor.describe(),
            "config": config_lib.to_dict(config),
            "stopped": None if not stop.requested else {
                "signal": stop.name, "exit_code": stop.exit_code, "left": total - writer.done,
                "forced": None if forced is None else forced.reason},
        }
        try:
            storage.write_bytes(storage.join(folder, manifest_lib.SUMMARY_FILE),
                                (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
        except OSError as error:
            if not storage.is_transient(error, output_uri):
                raise
            echo(f"note: {manifest_lib.SUMMARY_FILE} not written: {storage.redact(str(error))}")
    echo(format_summary(summary))
    return summary


def _skip_done(work: pa.Table, *, executor: RestoreExecutor, config: RestoreConfig,
               writer: manifest_lib.ManifestWriter, previous: dict[str, dict[str, Any]], job_id: str) -> pa.Table:
    """Re-runs: the executor stats the inputs restored before (metadata only); the unchanged
    ones are recorded as skipped and the rest of the work is returned. Runs before the model is
    loaded anywhere, so a re-run of a finished job loads no model (and asks an autoscaler for
    no GPU)."""
    candidates = work.filter(pc.is_valid(work.column("previous_bytes")))
    pending = [work.filter(pc.is_null(work.column("previous_bytes")))]
    for batch in executor.skip(candidates, config):
        done = batch.filter(batch.column("skipped"))
        if done.num_rows:
            writer.add_rows(manifest_lib.skipped_row(previous[row["source_uri"]], job_id=job_id, bytes_in=row["bytes_in"])
                            for row in done.select(["source_uri", "bytes_in"]).to_pylist())
        pending.append(batch.filter(pc.invert(batch.column("skipped"))).select(WORK_SCHEMA.names))
    return pa.concat_tables([table.cast(WORK_SCHEMA) for table in pending])


def _ok_megapixels(rows: pa.Table) -> float:
    """Input megapixels of the ``ok`` rows of a manifest table."""
    ok = rows.filter(pc.equal(rows.column("status"), "ok"))
    if ok.num_rows == 0:
        return 0.0
    pixels = pc.multiply(ok.column("width").cast("int64"), ok.column("height").cast("int64"))
    return float(pc.sum(pixels).as_py() or 0) / 1e6


def _fill_skipped(batch: pa.Table, previous: dict[str, dict[str, Any]], job_id: str) -> pa.Table:
    """Skipped rows arrive with only their source and size: complete them from the earlier row."""
    status = batch.column("status").to_pylist()
    if "skipped" not in status:
        return batch
    rows = batch.to_pylist()
    for index, row in enumerate(rows):
        if status[index] == "skipped":
            rows[index] = manifest_lib.skipped_row(previous[row["source_uri"]], job_id=job_id, bytes_in=row["bytes_in"])
    return manifest_lib.rows_to_table(rows)


def format_summary(summary: dict[str, Any]) -> str:
    """The lines a run prints at the end: counts and rates, the images the model left unchanged
    (when any), and where the manifest is."""
    counts = summary["counts"]
    lines = [
        f"restored {counts['ok']} of {summary['inputs']} inputs "
        f"(errors {counts['error']}, skipped {counts['skipped']}) in {summary['wall_seconds']:.1f} s: "
        f"{summary['images_per_second']:.2f} images/s, {summary['megapixels_per_second']:.3f} megapixels/s"
    ]
    if summary["unchanged"]:
        lines.append(f"unchanged: {summary['unchanged']} of the {counts['ok']} restored images changed by less than "
                     f"{summary['unchanged_threshold']:g} levels on average (manifest column mean_abs_change)")
    lines.append(f"manifest: {summary['manifest']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The dry run


_HEADER_BYTES: Final[int] = 64 * 1024
"""Bytes read first for an image header; the whole file is read when Pillow needs more (e.g. a
JPEG with a large EXIF block)."""


def _model_metadata(spec: str, task: str) -> tuple[str, int]:
    """``(model_id, scale)`` of ``--model`` from its ``model.json`` alone: no weights read, no
    model built. Raises CheckpointError for a missing checkpoint or one of another task."""
    source = resolve_model(spec, task)
    metadata, shown = read_model_metadata(source)
    if metadata.task != task:
        raise CheckpointError(f"--model {spec} is a {metadata.task!r} model, but --task is {task!r}")
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


def _image_header(uri: str, *, max_bytes: int) -> tuple[int, int, str]:
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
    config: RestoreConfig | None = None,
    limit: int | None = None,
    overwrite: bool = False,
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
    ensemble size; the model alone).

    Raises:
        ValueError: as :func:`run_restore` (a bad argument or checkpoint, no inputs, storage
            that is the user's to fix). The output's writability is not checked: that would
            write.
    """
    config = config or RestoreConfig()
    input_uri, output_uri = storage.absolute_uri(input_uri), storage.absolute_uri(output_uri)
    with _users_storage_errors("--input", input_uri):
        storage.check_readable(input_uri)
    with _users_storage_errors("--model", model):
        model_id, scale = _model_metadata(model, task)
    with _users_storage_errors("--output", output_uri):
        previous = manifest_lib.ManifestIndex(output_uri)
    with _users_storage_errors("--input", input_uri):
        plan = plan_restore(input_uri, output_uri, task=task, model_id=model_id, config=config,
                            previous_manifest=previous, overwrite=overwrite, limit=limit)
    skipped = to_restore = 0
    pixels = 0
    output_bytes = 0.0
    unreadable: list[dict[str, str]] = []
    unreadable_count = 0
    with plan:
        for part in plan.parts():
            work = part.work
            if work.num_rows and part.previous:
                checked = skip_stage(work.filter(pc.is_valid(work.column("previous_bytes"))))
                skipped += int(pc.sum(checked.column("skipped").cast("int64")).as_py() or 0)
                done = checked.filter(checked.column("skipped")).column("source_uri")
                work = work.filter(pc.invert(pc.is_in(work.column("source_uri"), value_set=done.combine_chunks())))
            to_restore += work.num_rows
            for uri in work.column("source_uri").to_pylist():
                try:
                    width, height, source_format = _image_header(uri, max_bytes=config.input.max_bytes)
                    if width * height > config.input.max_pixels:
                        raise ValueError(f"{width}x{height} pixels, more than input.max_pixels={config.input.max_pixels}")
                except (OSError, ValueError) as error:
                    unreadable_count += 1
                    if len(unreadable) < 20:
                        unreadable.append({"source_uri": storage.redact(uri), "error": storage.redact(str(error))})
                    continue
                pixels += width * height
                written = target_format(source_format, config.output.format)
                output_bytes += width * height * scale * scale / 1e6 * OUTPUT_BYTES_PER_MEGAPIXEL.get(written, 3_000_000)
    megapixels = pixels / 1e6
    passes = config.predictor.ensemble
    return {
        "dry_run": True,
        "task": task,
        "model_id": model_id,
        "scale": scale,
        "input": storage.redact(input_uri),
        "output": storage.redact(output_uri),
        "inputs": plan.total,
        "skipped": skipped,
        "to_restore": to_restore,
        "plan_errors": plan.plan_errors,
        "unreadable": unreadable_count,
        "unreadable_inputs": unreadable,
        "megapixels": megapixels,
        "output_megapixels": megapixels * scale * scale,
        "estimated_output_bytes": int(round(output_bytes)),
        "megapixels_per_second": dict(DRY_RUN_MEGAPIXELS_PER_SECOND),
        "estimated_seconds": {node: megapixels * passes / rate for node, rate in DRY_RUN_MEGAPIXELS_PER_SECOND.items()},
        "notes": "output bytes from per-format means of bench/results/codec_throughput.json; times from measured "
                 "model rates (restoration.runs.DRY_RUN_MEGAPIXELS_PER_SECOND), the model alone, times the ensemble",
    }


def _format_duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 20 s"`` or ``"5 h 07 min"``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


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
        lines.append(f"  estimated model time on {node}: {_format_duration(seconds)} "
                     f"(at {report['megapixels_per_second'][node]:g} megapixels/s)")
    for item in report["unreadable_inputs"]:
        lines.append(f"  unreadable: {item['source_uri']}: {item['error']}")
    lines.append("nothing was written; no model was loaded")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The command line (shared by `restoration restore` and `python -m jobs.restore`)


def add_restore_arguments(p: argparse.ArgumentParser) -> None:
    """The restore command's arguments, except the Ray executor's own (``jobs/restore.py``)."""
    p.add_argument("--input", required=True,
                   help="folder, file:// or s3:// prefix of images; one image; or a .parquet/.csv/.txt list of URIs")
    p.add_argument("--output", required=True, help="folder or s3:// prefix for restored images and _manifest/")
    p.add_argument("--task", default=None, choices=TASK_NAMES,
                   help="what to restore (default: the task --model's checkpoint was trained for)")
    p.add_argument("--model", default="default",
                   help="checkpoint folder (local, file:// or s3://) or 'default' (the shipped model; default)")
    p.add_argument("--limit", type=int, default=None, help="restore only the first N inputs")
    p.add_argument("--overwrite", action="store_true", help="redo inputs an earlier run already restored")
    p.add_argument("--fail-on-error", action="store_true", help="exit with status 1 when any input failed")
    p.add_argument("--config", default=None, help="YAML file with RestoreConfig fields")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set output.format=png (repeatable)")
    p.add_argument("--no-ray", action="store_true",
                   help="run in this process without Ray (one machine; the same plan, stages and manifest)")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be done (counts, megapixels, estimated output bytes and time) and "
                        "exit: no model loaded, no Ray, nothing written")
    p.add_argument("--json", action="store_true", help="with --dry-run: print the report as JSON")


def run_restore_command(args: argparse.Namespace, ray_executor: Callable[[], RestoreExecutor] | None = None) -> int:
    """Resolve the configuration, run with the in-process executor (``--no-ray``) or
    ``ray_executor()``, and return the exit code (1 for failed inputs with ``--fail-on-error``)."""
    config = config_lib.load_config(RestoreConfig, path=args.config, overrides=args.overrides)
    args.task = task_of(args)
    if getattr(args, "dry_run", False):  # before any executor exists: Ray is never imported
        report = dry_run_restore(args.input, args.output, task=args.task, model=args.model, config=config,
                                 limit=args.limit, overwrite=args.overwrite)
        print(json.dumps(report, indent=2, sort_keys=True) if getattr(args, "json", False) else format_dry_run(report))
        return 0
    if args.no_ray or ray_executor is None:
        executor: RestoreExecutor = LocalRestoreExecutor()
    else:
        executor = ray_executor()
    import sys

    with StopSignals(config.run.grace_seconds) as stop:
        try:
            summary = run_restore(args.input, args.output, task=args.task, model=args.model, config=config,
                                  limit=args.limit, overwrite=args.overwrite, executor=executor, stop=stop)
        except RunStopped as error:
            print(f"restore: {error}", file=sys.stderr)
            return error.exit_code
    stopped = summary["stopped"]
    if stopped is not None:
        reason = stopped["signal"] + ("" if stopped["forced"] is None else f", then stopped at once: {stopped['forced']}")
        counts = summary["counts"]
        print(f"restore: stopped by {reason}: {summary['inputs'] - stopped['left']} of {summary['inputs']} inputs "
              f"done (ok {counts['ok']}, error {counts['error']}, skipped {counts['skipped']}), {stopped['left']} "
              "left; run the same command again to continue", file=sys.stderr)
        return int(stopped["exit_code"])
    errors = summary["counts"]["error"]
    if errors and args.fail_on_error:
        print(f"{errors} input(s) failed (--fail-on-error); see the manifest", file=sys.stderr)
        return 1
    return 0

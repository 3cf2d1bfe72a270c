"""A batch restoration run, owned by the library: plan, stages, manifest accounting, summary and
progress, with the execution left to an executor.

:func:`run_restore` does everything a run needs whatever executes it:

1. check that the input can be read and the output written (:func:`restoration.io.storage.check_readable`,
   :func:`~restoration.io.storage.check_writable` on ``<output>/_manifest``), load and validate the model
   (:func:`load_run_model`), read the earlier manifest, list and plan the inputs
   (:func:`restoration.restore.planning.plan_restore`) and write the resolved config -- all on the
   driver, before any executor starts, so that unreachable storage, a missing bucket or denied
   access fails in one line (:class:`restoration.io.storage.StorageError`) without starting
   anything (settings were checked when the config loaded);
2. on a re-run, have the executor stat the inputs restored before (:meth:`RestoreExecutor.skip`)
   and record the unchanged ones as ``skipped`` before any model is loaded;
3. have the executor restore the rest (:meth:`RestoreExecutor.restore`: read, restore, encode
   and write), keeping the first manifest row per input, writing manifest parts as they stream
   and printing a progress line every :data:`PROGRESS_SECONDS`;
4. turn every input the executor did not report into an error row, compact the manifest and
   write ``_summary.json`` (:class:`restoration.restore.summary.RestoreSummary`).

Executors: :class:`LocalRestoreExecutor` runs the stages in this process (one machine, no Ray
imported: ``restoration restore --no-ray``); the Ray Data executor lives in ``jobs/restore.py``.
Both run the same stage functions of :mod:`restoration.restore.stages` on the same Arrow tables.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from torch import nn

    from restoration.models.predictor import Predictor

from restoration import config as config_lib
from restoration.durations import format_duration
from restoration.io import outages, storage
from restoration.io.errors import users_storage_errors
from restoration.models.checkpoint import (
    Checkpoint,
    CheckpointBytes,
    CheckpointError,
    checkpoint_from_bytes,
    read_checkpoint_bytes,
    resolve_model,
)
from restoration.models.predictor import check_predictor_settings
from restoration.quality.routing import (
    ROUTED_TASK,
    Router,
    check_route_model,
    is_route,
    load_route,
    split_model_spec,
)
from restoration.restore import manifest as manifest_lib
from restoration.restore.manifest import WORK_SCHEMA
from restoration.restore.planning import Plan, plan_restore
from restoration.restore.settings import PredictorConfig, RestoreConfig
from restoration.restore.stages import (
    encode_stage,
    read_stage,
    restore_stage,
    skip_stage,
)
from restoration.restore.summary import (
    Counts,
    ModelRecord,
    RestoreSummary,
    StopRecord,
    format_summary,
)
from restoration.stopping import StopNow, StopSignals
from restoration.tasks.specs import TaskSpec, get_task

__all__ = [
    "EXIT_STORAGE",
    "PROGRESS_SECONDS",
    "LocalRestoreExecutor",
    "RestoreExecutor",
    "StageContext",
    "LoadedModel",
    "RunStopped",
    "encode_options",
    "format_summary",
    "load_run_model",
    "make_predictor",
    "process_work",
    "read_options",
    "run_restore",
]

PROGRESS_SECONDS: Final[float] = 15.0
"""Seconds between two progress lines."""

# --------------------------------------------------------------------------------------------
# The model and the job


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint read and validated on the driver: ``data`` (its bytes, what reaches other
    processes) and ``checkpoint`` (the model built from them, float32 on the CPU)."""

    data: CheckpointBytes
    checkpoint: Checkpoint

    @property
    def model_id(self) -> str:
        return self.checkpoint.model_id

    def describe(self) -> ModelRecord:
        """The model as the run's summary records it: id, architecture, scale, the SHA-256 of
        its weights, its licence and source."""
        import hashlib

        traits = self.checkpoint.model.traits
        described = self.checkpoint.metadata.describe()
        return ModelRecord(model_id=self.model_id, architecture=traits.architecture, scale=traits.scale,
                           weights_sha256=hashlib.sha256(self.data.weights).hexdigest(),
                           licence=described["licence"], source=described["source"])


def load_route_models(router: Router) -> dict[str, LoadedModel]:
    """Read and validate the models a route uses (key -> :class:`LoadedModel`): each restores at
    the same size without a mask (a route may skip an image: its output is its input).

    Raises:
        CheckpointError: a model missing, broken, upscaling or taking a mask (named by its key).
        OSError: the storage holding one could not be reached.
    """
    loaded = {}
    for key, spec in router.spec.used_models().items():
        name, task = split_model_spec(spec)
        try:
            data = read_checkpoint_bytes(resolve_model(name, task))
            checkpoint = checkpoint_from_bytes(data)
        except CheckpointError as error:
            raise CheckpointError(f"route model {key} ({spec}): {error}") from None
        check_route_model(router, key, checkpoint.model.traits)
        loaded[key] = LoadedModel(data=data, checkpoint=checkpoint)
    return loaded


def load_run_model(spec: str, task: type[TaskSpec]) -> LoadedModel:
    """Read and validate ``--model`` (a checkpoint folder or a community model file, local or a
    ``file://``/``s3://`` URI, or ``default``) for ``task``.

    Raises:
        CheckpointError: missing, broken, or a model that cannot do ``task`` (another task's, or
            a community model whose scale or mask input does not fit it).
        OSError: the storage holding it could not be reached.
    """
    data = read_checkpoint_bytes(resolve_model(spec, task.name))
    checkpoint = checkpoint_from_bytes(data)  # the whole model loads here, before any executor starts
    misfit = checkpoint.model.traits.misfit(task.name)
    if misfit is not None:
        raise CheckpointError(f"--model {spec} is {misfit}, but --task is {task.name!r}")
    return LoadedModel(data=data, checkpoint=checkpoint)


@dataclass(frozen=True)
class StageContext:
    """What the stages of one run need, for any executor: the task's spec class (its ``name``
    goes into the manifest), the job's id and config, and the model. A routed run (``--model
    auto``, ``--route``) also has its ``router`` and the models of its routes (``routed``, by
    route key; ``model`` is the first of them), and records the task ``route``."""

    task: type[TaskSpec]
    job_id: str
    config: RestoreConfig
    model: LoadedModel
    router: Router | None = None
    routed: Mapping[str, LoadedModel] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        return self.router.model_id if self.router is not None else self.model.model_id

    @property
    def task_name(self) -> str:
        """The task the manifest and the summary record: the task's, or ``route`` when routed."""
        return ROUTED_TASK if self.router is not None else self.task.name

    def describe_model(self) -> ModelRecord:
        """The model as the summary records it; for a routed run, the route: its id, the models'
        licences (one, or each), and the SHA-256 over its models' weights."""
        if self.router is None:
            return self.model.describe()
        import hashlib

        records = [model.describe() for model in self.routed.values()]
        licences = sorted({record.licence or "unknown" for record in records})
        digest = hashlib.sha256("".join(record.weights_sha256 for record in records).encode()).hexdigest()
        return ModelRecord(model_id=self.model_id, architecture="route", scale=1, weights_sha256=digest,
                           licence=" + ".join(licences), source=f"route {self.router.name}: {', '.join(self.routed)}")

    def model_bytes(self) -> dict[str, CheckpointBytes]:
        """The checkpoints' bytes that other processes build the models from, by route key
        (:data:`SINGLE` for a run with one model)."""
        if self.router is None:
            return {SINGLE: self.model.data}
        return {key: model.data for key, model in self.routed.items()}

    @classmethod
    def in_worker(cls, data: Mapping[str, CheckpointBytes], *, task: type[TaskSpec], job_id: str,
                  config: RestoreConfig, router: Router | None) -> StageContext:
        """The context a worker process holds: its models built from ``data`` (the driver's
        :meth:`model_bytes`)."""
        loaded = {key: LoadedModel(data=value, checkpoint=checkpoint_from_bytes(value)) for key, value in data.items()}
        return cls(task=task, job_id=job_id, config=config, model=next(iter(loaded.values())), router=router,
                   routed=loaded if router is not None else {})

    def predictors(self, *, device: str, threads: int | None) -> Predictor | dict[str, Predictor]:
        """The run's :class:`restoration.models.predictor.Predictor`, or one per route key."""
        if self.router is None:
            return make_predictor(self.model.checkpoint.model, self.config.predictor, device=device, threads=threads)
        return {key: make_predictor(model.checkpoint.model, self.config.predictor, device=device, threads=threads)
                for key, model in self.routed.items()}


SINGLE: Final[str] = "model"
"""The key of a single-model run's checkpoint in :meth:`StageContext.model_bytes`."""


def read_options(job: StageContext) -> dict[str, Any]:
    """Keyword arguments of :func:`restoration.restore.stages.read_stage` for ``job``."""
    config = job.config
    return {"max_pixels": config.input.max_pixels, "max_bytes": config.input.max_bytes,
            "outage_seconds": config.storage.outage_seconds, "router": job.router}


def encode_options(job: StageContext) -> dict[str, Any]:
    """Keyword arguments of :func:`restoration.restore.stages.encode_stage` for ``job``."""
    output = job.config.output
    return {"task": job.task_name, "model_id": job.model_id, "job_id": job.job_id, "output_format": output.format,
            "quality": output.quality, "png_compression": output.png_compression,
            "strip_metadata": output.strip_metadata, "outage_seconds": job.config.storage.outage_seconds}


def make_predictor(model: nn.Module, config: PredictorConfig, *, device: str, threads: int | None = None) -> Predictor:
    """A :class:`restoration.models.predictor.Predictor` for ``model`` with ``config``'s settings on
    ``device``; ``threads`` sets torch's intra-op threads on CPU (None leaves them)."""
    import torch

    from restoration.models.predictor import Predictor

    if threads and device == "cpu":
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"predictor device {device} requested but this process sees no GPU")
    return Predictor(model, config, device=device)


# --------------------------------------------------------------------------------------------
# Executors


class RestoreExecutor(Protocol):
    """Runs the stages of :mod:`restoration.restore.stages` somewhere; :func:`run_restore` does the rest.

    ``skip`` takes work rows an earlier run restored (``previous_bytes`` set) and yields
    :data:`restoration.restore.stages.SKIP_SCHEMA` tables (from :func:`~restoration.restore.stages.skip_stage`);
    ``restore`` takes work rows (:data:`~restoration.restore.manifest.WORK_SCHEMA`) and yields manifest
    tables (from :func:`~restoration.restore.stages.encode_stage`), at most one row per input, in any
    order and in any number of tables; once ``stop.requested``, it starts no more inputs and
    ends when those in flight are done. ``describe`` says how the model ran, for the summary
    (None when it never did).
    """

    name: str

    def skip(self, candidates: pa.Table, config: RestoreConfig) -> Iterable[pa.Table]: ...

    def restore(self, work: pa.Table, job: StageContext, *, stop: StopSignals | None = None) -> Iterable[pa.Table]: ...

    def describe(self) -> dict[str, Any] | None: ...


def _slices(table: pa.Table, rows: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, rows):
        yield table.slice(start, rows)


def process_work(predictor: Predictor | Mapping[str, Predictor], work: pa.Table, job: StageContext, *, batch_size: int,
                 should_stop: Callable[[], bool] | None = None) -> Iterator[pa.Table]:
    """Read, decode, restore, encode and write every row of ``work`` (:data:`WORK_SCHEMA`) in
    this process, ``batch_size`` inputs at a time; yield one manifest table
    (:data:`restoration.restore.manifest.MANIFEST_SCHEMA`) per chunk.

    Decoded and restored pixels never leave the process, and at most one chunk of them is held
    at once. Both executors run it: the local one over the whole work table, each Ray actor over
    the blocks it is given. When ``should_stop()`` turns true, the chunks not yet started are
    left undone (no rows: the next run does them).
    """
    reading, encoding = read_options(job), encode_options(job)
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

    def restore(self, work: pa.Table, job: StageContext, *, stop: StopSignals | None = None) -> Iterator[pa.Table]:
        import torch

        config = job.config
        device = config.predictor.device or ("cuda" if torch.cuda.is_available() else "cpu")
        predictor = job.predictors(device=device, threads=config.predictor.threads)
        batch_size = config.pipeline.batch_size or (16 if device.startswith("cuda") else 4)
        self._described = {"device": device, "threads": torch.get_num_threads(),
                           "batch_size": batch_size}
        yield from process_work(predictor, work, job, batch_size=batch_size,
                                should_stop=None if stop is None else (lambda: stop.requested))

    def describe(self) -> dict[str, Any] | None:
        return self._described


# --------------------------------------------------------------------------------------------
# The run


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
    route: str | None = None,
    config: RestoreConfig | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    echo: Callable[[str], Any] = print,
    stop: StopSignals | None = None,
) -> RestoreSummary:
    """Run one batch restoration with ``executor`` and return its summary (also written to
    ``<output>/_manifest/_summary.json``).

    Local paths are made absolute here, on the driver, so that they mean the same in every
    process (:func:`restoration.io.storage.absolute_uri`). Every storage call waits out an outage
    for up to ``storage.outage_seconds``. ``stop``: the signals of the command
    (:class:`restoration.stopping.StopSignals`); once it is requested the run submits no more
    work, keeps what comes back, writes the manifest and a summary with ``stopped`` set.

    Raises (all before the executor starts, except RunStopped):
        ValueError: a bad argument, a checkpoint that does not fit (CheckpointError), no
            inputs, or storage that is the user's to fix: unreachable, a missing bucket or file,
            denied access (:class:`restoration.io.storage.StorageError`, one line).
        RunStopped: the store stayed unreachable past the outage budget during the run.
    """
    config = config or RestoreConfig()
    if route is None and is_route(model):
        route = model
    with outages.outage_budget(config.storage.outage_seconds):
        return _run_restore(input_uri, output_uri, task=task, executor=executor, model=model, route=route,
                            config=config, limit=limit, overwrite=overwrite, echo=echo, stop=stop or StopSignals())


def _run_restore(input_uri: str, output_uri: str, *, task: str, executor: RestoreExecutor, model: str,
                 route: str | None, config: RestoreConfig, limit: int | None, overwrite: bool,
                 echo: Callable[[str], Any], stop: StopSignals) -> RestoreSummary:
    started = time.time()
    router = load_route(route) if route is not None else None  # ValueError: one line
    # A route's models all restore at the same size without a mask: the general task's stages.
    spec = get_task("general" if router is not None else task)  # ValueError naming the known tasks
    job_id = manifest_lib.new_job_id()
    input_uri, output_uri = storage.absolute_uri(input_uri), storage.absolute_uri(output_uri)
    folder = manifest_lib.manifest_uri(output_uri)
    with users_storage_errors("--input", input_uri):
        storage.check_readable(input_uri)
    with users_storage_errors("--output", output_uri):
        # Checked on the manifest's folder: on S3 the check leaves an empty folder marker, which
        # belongs there, not among the outputs.
        storage.check_writable(folder)
    if router is not None:
        with users_storage_errors("--route", route or ""):
            routed = load_route_models(router)
        job = StageContext(task=spec, job_id=job_id, config=config, model=next(iter(routed.values())),
                           router=router, routed=routed)
    else:
        with users_storage_errors("--model", model):
            job = StageContext(task=spec, job_id=job_id, config=config, model=load_run_model(model, spec))
    for loaded in (job.routed or {SINGLE: job.model}).values():
        check_predictor_settings(config.predictor, loaded.checkpoint.model.traits)
    with users_storage_errors("--output", output_uri):
        previous = manifest_lib.ManifestIndex(output_uri)
    with users_storage_errors("--input", input_uri):
        plan = plan_restore(input_uri, output_uri, task=job.task_name, model_id=job.model_id, config=config,
                            previous_manifest=previous, overwrite=overwrite, limit=limit)
    with plan:
        return _run_plan(plan, executor=executor, job=job, input_uri=input_uri, output_uri=output_uri,
                         started=started, echo=echo, stop=stop)


@dataclass
class _Progress:
    """What the progress lines count: only the work of this run (skipped inputs apart)."""

    to_process: int
    unchanged_threshold: float = 0.0
    processed: int = 0  # rows the executor reported in this run
    skipped: int = 0  # inputs found restored by an earlier run
    megapixels: float = 0.0  # input megapixels of the ok rows
    unchanged: int = 0  # ok rows the model changed by less than manifest.unchanged_threshold
    routes: dict[str, int] = field(default_factory=dict)  # ok rows by route (a routed run's)
    first: tuple[float, int] | None = None  # (when, rows) of the first rows back: start-up is not work
    last_line: float = field(default_factory=time.monotonic)  # when the last progress line was printed

    def due(self) -> bool:
        """Whether a progress line is due (:data:`PROGRESS_SECONDS` since the last); if so, from now on not."""
        if time.monotonic() - self.last_line < PROGRESS_SECONDS:
            return False
        self.last_line = time.monotonic()
        return True

    def record(self, rows: pa.Table) -> None:
        """Count the new manifest rows ``rows`` (those the writer kept)."""
        self.processed += rows.num_rows
        self.megapixels += _ok_megapixels(rows)
        self.unchanged += manifest_lib.count_unchanged(rows, self.unchanged_threshold)
        routed = rows.filter(pc.and_(pc.equal(rows.column("status"), "ok"), pc.is_valid(rows.column("route"))))
        if routed.num_rows:
            counts = pc.value_counts(routed.column("route"))
            for route, count in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True):
                self.routes[route] = self.routes.get(route, 0) + count
        if self.first is None and rows.num_rows:
            self.first = (time.monotonic(), self.processed)

    def rate(self, now: float | None = None) -> float:
        """Images per second of this run's own work, from its first result on (0 before)."""
        if self.first is None:
            return 0.0
        seconds = (now or time.monotonic()) - self.first[0]
        return (self.processed - self.first[1]) / seconds if seconds > 0 else 0.0

    def line(self, writer: manifest_lib.ManifestWriter, total: int, now: float | None = None) -> str:
        counts = writer.counts
        rate = self.rate(now)
        remaining = max(0, self.to_process - self.skipped - self.processed)
        eta = "ETA 0 s" if remaining == 0 else f"ETA {format_duration(remaining / rate)}" if rate > 0 else "ETA unknown"
        line = (f"  {writer.done}/{total} done: restored {counts['ok']} (unchanged {self.unchanged}), "
                f"error {counts['error']}, skipped as done before {counts['skipped']}; "
                f"{rate:.2f} images/s in this run, {remaining} left, {eta}")
        unreachable = outages.unreachable_for()
        if unreachable is not None:
            line += f"; storage unreachable for {format_duration(unreachable)}"
        return line


def _run_plan(plan: Plan, *, executor: RestoreExecutor, job: StageContext, input_uri: str, output_uri: str,
              started: float, echo: Callable[[str], Any], stop: StopSignals) -> RestoreSummary:
    """Steps 2 to 4 of :func:`run_restore`, partition by partition of ``plan``."""
    config, task, job_id = job.config, job.task_name, job.job_id
    folder = manifest_lib.manifest_uri(output_uri)
    with users_storage_errors("--output", output_uri):
        storage.write_bytes(storage.join(folder, manifest_lib.CONFIG_FILE), config_lib.to_yaml(config).encode())
    listed = time.time()
    total = plan.total
    echo(f"restore {task}: {total} inputs from {storage.redact(input_uri)} -> {storage.redact(output_uri)} "
         f"(model {job.model_id}, job {job_id}, {executor.name}; {plan.to_process} to process, "
         f"{plan.may_skip} may be skipped, {plan.plan_errors} cannot be placed)")

    writer = manifest_lib.ManifestWriter(output_uri, job_id, flush_rows=config.manifest.flush_rows,
                                         flush_seconds=config.manifest.flush_seconds)
    progress = _Progress(to_process=plan.to_process, unchanged_threshold=config.manifest.unchanged_threshold)
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
            _restore_work(work, part.previous, executor=executor, job=job, writer=writer, progress=progress,
                          total=total, echo=echo, stop=stop)
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
        if not outages.is_transient(error, output_uri) and not outages.is_transient(error, input_uri):
            raise
        raise RunStopped(_stopped_line(f"storage did not answer within storage.outage_seconds="
                                       f"{config.storage.outage_seconds:g}", writer, total,
                                       kept=False), EXIT_STORAGE) from error
    return _finish(writer, job=job, executor=executor, input_uri=input_uri, output_uri=output_uri, total=total,
                   started=started, listed=listed, megapixels=progress.megapixels, unchanged=progress.unchanged,
                   routes=progress.routes or None,
                   stop=stop, forced=forced, echo=echo)


LOST_RESULT_PASSES: Final[int] = 2
"""How many more times a run hands the executor the inputs of a partition that got no manifest
row back. An actor that dies mid-block has its block replayed by Ray on the restarted actor, and
Ray keeps only the replay's outputs past those it already delivered: when the replay groups its
rows differently (the fused actors send rows on a timer), some rows never arrive, though their
images were written. Those inputs are restored again (the same output keys) rather than reported
as errors. (One yield per chunk would replay identically, but costs the fused actors 82 against
295 images/s on small images: ``bench/restore_throughput.py --lines ray --counts 96:500,2500
--compare-set pipeline.stream_seconds=0``, medians of 3, ``bench/results/stream_cadence.json``.)"""


def _restore_work(work: pa.Table, previous: dict[str, dict[str, Any]], *, executor: RestoreExecutor,
                  job: StageContext, writer: manifest_lib.ManifestWriter, progress: _Progress, total: int,
                  echo: Callable[[str], Any], stop: StopSignals) -> None:
    """Restore one partition's ``work`` through ``executor`` and record its rows; then again the
    inputs that got no row back, up to :data:`LOST_RESULT_PASSES` more times."""
    for attempt in range(1 + LOST_RESULT_PASSES):
        if not work.num_rows or stop.requested:
            return
        if attempt:
            echo(f"  {work.num_rows} inputs got no result back from the {executor.name} executor (a worker lost, "
                 f"or stuck, while it held them): restoring them again")
        for rows in executor.restore(work, job, stop=stop):
            progress.record(writer.add(_fill_skipped(rows, previous, job.job_id)))
            if not stop.requested and progress.due():  # once stopping, the stop's own lines say it all
                echo(progress.line(writer, total))
        if stop.requested:
            return
        uris = work.column("source_uri").to_pylist()
        work = work.take(pa.array([index for index, uri in enumerate(uris) if uri not in writer.seen], pa.int64()))


def _stopped_line(reason: str, writer: manifest_lib.ManifestWriter, total: int, *, kept: bool = True) -> str:
    counts = writer.counts
    recorded = "recorded in the manifest" if kept else "reported (the rows not yet written are redone)"
    return (f"stopped ({reason}): {writer.done} of {total} inputs {recorded} (ok {counts['ok']}, "
            f"error {counts['error']}, skipped {counts['skipped']}), {total - writer.done} left; "
            "run the same command again to continue")


def _finish(writer: manifest_lib.ManifestWriter, *, job: StageContext, executor: RestoreExecutor, input_uri: str,
            output_uri: str, total: int, started: float, listed: float, megapixels: float, unchanged: int,
            routes: dict[str, int] | None, stop: StopSignals, forced: StopNow | None,
            echo: Callable[[str], Any]) -> RestoreSummary:
    """Step 4 of :func:`run_restore`: the last manifest part, compaction, ``_summary.json``."""
    config = job.config
    folder = manifest_lib.manifest_uri(output_uri)
    # A forced stop writes what it has without waiting for a store that does not answer.
    with outages.outage_budget(0 if forced else None):
        try:
            manifest_file = writer.close()
        except OSError as error:
            if not outages.is_transient(error, output_uri):
                raise
            raise RunStopped(_stopped_line("storage did not answer while the manifest was written", writer, total,
                                           kept=False), EXIT_STORAGE) from error
        finished = time.time()
        pipeline_seconds = max(finished - listed, 1e-9)
        stopped = None
        if stop.name is not None and stop.exit_code is not None:  # (stop.requested: a signal came)
            stopped = StopRecord(signal=stop.name, exit_code=stop.exit_code, left=total - writer.done,
                                 forced=None if forced is None else forced.reason)
        summary = RestoreSummary(
            job_id=job.job_id,
            task=job.task_name,
            model_id=job.model_id,
            model=job.describe_model(),
            models=None if job.router is None else {key: model.describe() for key, model in job.routed.items()},
            input=storage.redact(input_uri),
            output=storage.redact(output_uri),
            inputs=total,
            counts=Counts(**writer.counts),
            unchanged=unchanged,
            routes=routes,
            unchanged_threshold=config.manifest.unchanged_threshold,
            duplicates_dropped=writer.duplicates,
            images_per_second=writer.counts["ok"] / pipeline_seconds,
            megapixels=megapixels,
            megapixels_per_second=megapixels / pipeline_seconds,
            wall_seconds=finished - started,
            pipeline_seconds=pipeline_seconds,
            started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            pipeline_started_epoch=listed,
            manifest=storage.redact(manifest_file),
            executor=executor.name,
            actor_pool=executor.describe(),
            config=config_lib.to_dict(config),
            stopped=stopped,
        )
        try:
            storage.write_bytes(storage.join(folder, manifest_lib.SUMMARY_FILE), summary.to_json().encode())
        except OSError as error:
            if not outages.is_transient(error, output_uri):
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

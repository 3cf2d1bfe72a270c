"""Batch restoration on Ray Data: object storage in, restored images and a Parquet manifest out.

    python -m jobs.restore --input s3://photos/scans/ --output s3://photos/restored/ \\
        --task denoise --model default [--limit N] [--overwrite] [--fail-on-error] [--set key=value ...]

``--input`` is a folder or prefix (images below it, recursively), one image, or a Parquet, CSV
or text file listing image URIs; local paths, ``file://`` and ``s3://`` alike (S3 from the
standard AWS variables, ``AWS_ENDPOINT_URL`` included). Each output goes to
``<output>/<path relative to the input>``, in the input's format (or ``--set output.format=png``),
keeping gray/RGB, alpha, 16-bit depth and the ICC profile; EXIF orientation is applied to the
pixels.

Pipeline (streaming; memory is bounded by Ray Data's backpressure, not by the collection)::

    work list (driver) -> read + decode (CPU tasks) -> restore (actor pool holding the model)
        -> encode + write (CPU tasks) -> manifest rows -> driver

The model actors use ``ActorPoolStrategy(min_size, max_size)``: one GPU each where the cluster
has GPUs, otherwise a fractional CPU reservation with torch threads sized to the cores, so that
the read and write tasks always find room (an actor pool that reserves every CPU starves them
and the job never finishes). An actor that dies is restarted and its batch retried by Ray Data;
outputs are written under deterministic keys, so a retry rewrites the same object.

Manifest: only the driver writes it, from the rows the pipeline returns, keeping the first row
per input, so retried tasks cannot duplicate rows. Parts are written as the run streams and
compacted at the end (see :mod:`restoration.manifest`): ``<output>/_manifest/*.parquet``, plus
``_summary.json`` (counts, images/s, megapixels/s, wall time) and ``_config.yaml`` (the resolved
configuration). A re-run skips inputs already restored with the same task, model and output URI
whose size has not changed (a first pass of CPU tasks stats them before any model actor starts,
so re-running a finished job loads no model); ``--overwrite`` redoes everything. Bad inputs are manifest rows
with ``status=error``; the job exits 0 unless ``--fail-on-error``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from restoration.checkpoint import CheckpointBytes

log = logging.getLogger("jobs.restore")

PROGRESS_SECONDS = 15.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from restoration import TASKS

    p.add_argument("--input", required=True,
                   help="folder, file:// or s3:// prefix of images; one image; or a .parquet/.csv/.txt list of URIs")
    p.add_argument("--output", required=True, help="folder or s3:// prefix for restored images and _manifest/")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--model", default="default",
                   help="checkpoint folder (local, file:// or s3://) or 'default' (the shipped model; default)")
    p.add_argument("--limit", type=int, default=None, help="restore only the first N inputs")
    p.add_argument("--overwrite", action="store_true", help="redo inputs an earlier run already restored")
    p.add_argument("--fail-on-error", action="store_true", help="exit with status 1 when any input failed")
    p.add_argument("--config", default=None, help="YAML file with RestoreConfig fields")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set output.format=png (repeatable)")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a local cluster)")
    p.add_argument("--progress-bars", action="store_true", help="show Ray Data's progress bars")


# --------------------------------------------------------------------------------------------
# Model


@dataclass(frozen=True)
class ModelFiles:
    """A checkpoint read and validated on the driver; its bytes reach the actors through the
    object store (so a driver-local folder works on a multi-node cluster)."""

    data: CheckpointBytes
    model_id: str
    task: str
    source: str


def load_model_files(spec: str, task: str) -> ModelFiles:
    """Read and validate the checkpoint ``spec`` (a folder, ``file://``/``s3://`` URI, or
    ``default``) for ``task``; raises ValueError (CheckpointError) when it is missing, broken
    or for another task."""
    from restoration.checkpoint import CheckpointError, checkpoint_from_bytes, read_checkpoint_bytes, resolve_model

    data = read_checkpoint_bytes(resolve_model(spec, task))
    checkpoint = checkpoint_from_bytes(data)  # the whole model must load here before any actor tries
    if checkpoint.metadata.task != task:
        raise CheckpointError(f"--model {spec} is a {checkpoint.metadata.task!r} model, but --task is {task!r}")
    return ModelFiles(data=data, model_id=checkpoint.model_id, task=task, source=data.source)


# --------------------------------------------------------------------------------------------
# Actor pool sizing


@dataclass(frozen=True)
class ActorPoolPlan:
    """The model's actor pool: sizes, per-actor resources, torch threads, device, images per call."""

    min_size: int
    initial_size: int
    max_size: int
    num_cpus: float
    num_gpus: float
    threads: int | None
    device: str
    batch_size: int


def plan_actor_pool(
    resources: dict[str, float], largest_node_cpus: float, config: Any, available: dict[str, float] | None = None
) -> ActorPoolPlan:
    """Size the model's actor pool from the cluster's resources.

    GPU clusters: one actor per GPU (``num_gpus=1``, 1 CPU each). CPU-only clusters: actors of
    ``predictor.threads`` torch threads (default: half the largest node's cores, 1 to 8), one
    per that many CPUs, each reserving only ``cpus_per_actor`` (0.5) logical CPUs: at most half
    the CPUs are ever reserved by actors, so read and write tasks always have room. (Half the
    cores per actor, not all: torch's OpenMP threads busy-wait, and an actor whose threads
    outnumber the cores left to it by decode and encode tasks slows down many times over.)

    The pool starts with as many actors as fit in the ``available`` resources now (a batch job
    wants them all at once; more come as an autoscaler adds nodes), at least ``min_actors``.
    """
    pipeline, predictor = config.pipeline, config.predictor
    cpus = float(resources.get("CPU", 0))
    gpus = float(resources.get("GPU", 0))
    use_gpu = pipeline.use_gpu if pipeline.use_gpu is not None else (gpus >= 1 and predictor.device != "cpu")
    if use_gpu:
        num_gpus = pipeline.gpus_per_actor if pipeline.gpus_per_actor is not None else 1.0
        max_size = pipeline.max_actors or max(1, int(gpus // num_gpus) if num_gpus else 1)
        num_cpus = pipeline.cpus_per_actor if pipeline.cpus_per_actor is not None else (1.0 if cpus >= 2 * max_size else 0.5)
        device = predictor.device or "cuda"
        threads = predictor.threads
    else:
        num_gpus = 0.0
        threads = predictor.threads or max(1, min(8, int(largest_node_cpus or cpus or 1) // 2))
        max_size = pipeline.max_actors or max(1, int(cpus // threads))
        num_cpus = pipeline.cpus_per_actor if pipeline.cpus_per_actor is not None else 0.5
        device = predictor.device or "cpu"
    min_size = min(pipeline.min_actors, max_size)
    available = resources if available is None else available
    fit = int(available.get("CPU", 0) // num_cpus) if num_cpus else max_size
    if num_gpus:
        fit = min(fit, int(available.get("GPU", 0) // num_gpus))
    initial_size = max(min_size, min(max_size, fit))
    batch_size = pipeline.batch_size or (16 if use_gpu else 4)
    return ActorPoolPlan(min_size=min_size, initial_size=initial_size, max_size=max_size, num_cpus=num_cpus,
                         num_gpus=num_gpus, threads=threads, device=device, batch_size=batch_size)


# --------------------------------------------------------------------------------------------
# The Ray Data adapters


class Restorer:
    """Ray Data callable class: loads the model once per actor, restores Arrow batches."""

    def __init__(self, model_ref: list, predictor: dict, threads: int | None, device: str, task: str) -> None:
        import ray
        import torch

        from restoration.checkpoint import checkpoint_from_bytes
        from restoration.inference import Predictor

        if threads and device == "cpu":
            # Ray sets OMP_NUM_THREADS to the (fractional, rounded up) CPU reservation; the actor
            # is sized to own `threads` cores.
            torch.set_num_threads(threads)
        files: ModelFiles = ray.get(model_ref[0])
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"predictor device {device} requested but this actor sees no GPU")
        options = {k: v for k, v in predictor.items() if k not in ("device", "threads")}
        self.predictor = Predictor(checkpoint_from_bytes(files.data).model, device=device, **options)
        self.task = task

    def __call__(self, batch):
        from restoration.restore import restore_stage

        return restore_stage(self.predictor, batch, task=self.task)


def _read_batch(batch, *, max_pixels: int, max_bytes: int, io_retries: int):
    from restoration.restore import read_stage

    return read_stage(batch, max_pixels=max_pixels, max_bytes=max_bytes, io_retries=io_retries)


def _encode_batch(batch, **kwargs):
    from restoration.restore import encode_stage

    return encode_stage(batch, **kwargs)


def build_dataset(work, *, config, model_ref: list, pool: ActorPoolPlan, task: str, model_id: str, job_id: str):
    """The Ray Data pipeline over a work table (:data:`restoration.restore.WORK_SCHEMA`)."""
    import ray.data

    pipeline = config.pipeline
    # Small input blocks: each read task handles `read_batch_size` inputs, so decoded pixels
    # stream to the actors in small blocks and memory stays bounded. Very long lists get
    # larger blocks so the number of blocks stays manageable.
    rows_per_block = max(pipeline.read_batch_size, math.ceil(work.num_rows / 20_000))
    blocks = [work.slice(start, rows_per_block) for start in range(0, work.num_rows, rows_per_block)]
    dataset = ray.data.from_arrow(blocks)
    # Distinct resources keep Ray Data from fusing the read into the actor stage: decoding
    # stays in CPU tasks, in parallel with inference.
    task_cpus = pipeline.cpus_per_task if pipeline.cpus_per_task != pool.num_cpus or pool.num_gpus else pipeline.cpus_per_task + 0.01
    dataset = dataset.map_batches(
        _read_batch,
        batch_size=pipeline.read_batch_size,
        batch_format="pyarrow",
        num_cpus=task_cpus,
        fn_kwargs={"max_pixels": config.input.max_pixels, "max_bytes": config.input.max_bytes,
                   "io_retries": pipeline.io_retries},
    )
    from restoration import config as config_lib

    dataset = dataset.map_batches(
        Restorer,
        batch_size=pool.batch_size,
        batch_format="pyarrow",
        # Two calls in flight per actor: one running, one prefetched. More would queue work on
        # one actor while another idles at the end of the job.
        compute=ray.data.ActorPoolStrategy(min_size=pool.min_size, max_size=pool.max_size,
                                           initial_size=pool.initial_size, max_tasks_in_flight_per_actor=2),
        num_cpus=pool.num_cpus,
        num_gpus=pool.num_gpus,
        fn_constructor_kwargs={
            "model_ref": model_ref,
            "predictor": config_lib.to_dict(config.predictor),
            "threads": pool.threads,
            "device": pool.device,
            "task": task,
        },
    )
    return dataset.map_batches(
        _encode_batch,
        batch_size=pipeline.read_batch_size,
        batch_format="pyarrow",
        num_cpus=task_cpus,
        fn_kwargs={"task": task, "model_id": model_id, "job_id": job_id, "output_format": config.output.format,
                   "quality": config.output.quality, "io_retries": pipeline.io_retries},
    )


# --------------------------------------------------------------------------------------------
# The job


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init()


def _configure_ray_data(progress_bars: bool) -> None:
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress_bars
    context.print_on_execution_start = progress_bars
    context.enable_auto_log_stats = False
    if not progress_bars:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # Its one warning says progress bars are off, which is what was asked for.
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def restore(
    input_uri: str,
    output_uri: str,
    *,
    task: str,
    model: str = "default",
    config: Any = None,
    limit: int | None = None,
    overwrite: bool = False,
    address: str | None = None,
    progress_bars: bool = False,
    echo: Any = print,
) -> dict[str, Any]:
    """Run one batch restoration and return its summary (also written to
    ``<output>/_manifest/_summary.json``). Starts a local Ray instance when none is running
    (or connects to ``address`` / ``RAY_ADDRESS``)."""
    from restoration import config as config_lib, manifest as manifest_lib, storage
    from restoration.restore import RestoreConfig, plan_restore

    config = config or RestoreConfig()
    started = time.time()
    files = load_model_files(model, task)
    job_id = manifest_lib.new_job_id()
    previous = manifest_lib.read_manifest(output_uri)
    plan = plan_restore(input_uri, output_uri, task=task, model_id=files.model_id, config=config,
                        previous_manifest=previous, overwrite=overwrite, limit=limit)
    listed = time.time()
    total = len(plan.inputs)
    echo(f"restore {task}: {total} inputs from {storage.redact(input_uri)} -> {storage.redact(output_uri)} "
         f"(model {files.model_id}, job {job_id}; {plan.work.num_rows} to process, "
         f"{len(plan.previous)} may be skipped, {len(plan.errors)} cannot be placed)")

    folder = manifest_lib.manifest_uri(output_uri)
    storage.write_bytes(storage.join(folder, manifest_lib.CONFIG_FILE), config_lib.to_yaml(config).encode())
    writer = manifest_lib.ManifestWriter(output_uri, job_id, flush_rows=config.manifest.flush_rows,
                                         flush_seconds=config.manifest.flush_seconds)
    if plan.errors:
        writer.add_rows({**row, "job_id": job_id} for row in plan.errors)

    pool = None
    megapixels = 0.0
    work = plan.work
    if work.num_rows:
        import ray

        _init_ray(address)
        _configure_ray_data(progress_bars)
        if plan.previous:
            work = _skip_done(work, config=config, writer=writer, previous=plan.previous, job_id=job_id)
            if writer.counts["skipped"]:
                echo(f"  {writer.counts['skipped']} inputs already restored (same size): skipped; "
                     f"{work.num_rows} to process")
    if work.num_rows:  # Ray was started above
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        largest = max((node["Resources"].get("CPU", 0) for node in nodes), default=0)
        pool = plan_actor_pool(ray.cluster_resources(), largest, config, ray.available_resources())
        model_ref = [ray.put(files)]
        dataset = build_dataset(work, config=config, model_ref=model_ref, pool=pool, task=task,
                                model_id=files.model_id, job_id=job_id)
        last_report = time.monotonic()
        try:
            for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0):
                new = writer.add(_fill_skipped(batch, plan.previous, job_id))
                megapixels += _ok_megapixels(new)
                if time.monotonic() - last_report >= PROGRESS_SECONDS:
                    last_report = time.monotonic()
                    done = len(writer.seen)
                    rate = writer.counts["ok"] / max(time.time() - listed, 1e-9)
                    echo(f"  {done}/{total} done (ok {writer.counts['ok']}, error {writer.counts['error']}, "
                         f"skipped {writer.counts['skipped']}), {rate:.2f} images/s")
        finally:
            writer.flush()  # whatever happens, the rows received so far are kept
    # Every input exactly once: anything the pipeline did not report is an error, not a gap.
    missing = [uri for uri in plan.inputs if uri not in writer.seen]
    if missing:
        writer.add_rows(manifest_lib.error_row(uri, "no result came back from the pipeline", "restore",
                                               task=task, model_id=files.model_id, job_id=job_id) for uri in missing)
    manifest_file = writer.close()
    finished = time.time()

    pipeline_seconds = max(finished - listed, 1e-9)
    summary = {
        "job_id": job_id,
        "task": task,
        "model_id": files.model_id,
        "input": storage.redact(input_uri),
        "output": storage.redact(output_uri),
        "inputs": total,
        "counts": dict(writer.counts),
        "duplicates_dropped": writer.duplicates,
        "images_per_second": writer.counts["ok"] / pipeline_seconds,
        "megapixels": megapixels,
        "megapixels_per_second": megapixels / pipeline_seconds,
        "wall_seconds": finished - started,
        "pipeline_seconds": pipeline_seconds,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "pipeline_started_epoch": listed,
        "manifest": storage.redact(manifest_file),
        "actor_pool": None if pool is None else pool.__dict__,
        "config": config_lib.to_dict(config),
    }
    storage.write_bytes(storage.join(folder, manifest_lib.SUMMARY_FILE),
                        (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    echo(format_summary(summary))
    return summary


def _skip_done(work, *, config, writer, previous: dict[str, dict[str, Any]], job_id: str):
    """Re-runs: stat the inputs restored before (CPU tasks, metadata only), record the unchanged
    ones as skipped and return the rest of the work. Runs before the model's actors exist, so a
    re-run of a finished job loads no model (and asks an autoscaler for no GPU)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import ray.data

    from restoration.manifest import skipped_row
    from restoration.restore import WORK_SCHEMA

    candidates = work.filter(pc.is_valid(work.column("previous_bytes")))
    pending = [work.filter(pc.is_null(work.column("previous_bytes")))]
    rows_per_block = max(64, math.ceil(candidates.num_rows / 2_000))
    blocks = [candidates.slice(start, rows_per_block) for start in range(0, candidates.num_rows, rows_per_block)]
    stats = ray.data.from_arrow(blocks).map_batches(
        _skip_batch, batch_format="pyarrow", batch_size=None, num_cpus=config.pipeline.cpus_per_task,
        fn_kwargs={"io_retries": config.pipeline.io_retries},
    )
    for batch in stats.iter_batches(batch_format="pyarrow", batch_size=None):
        done = batch.filter(batch.column("skipped"))
        if done.num_rows:
            writer.add_rows(skipped_row(previous[row["source_uri"]], job_id=job_id, bytes_in=row["bytes_in"])
                            for row in done.select(["source_uri", "bytes_in"]).to_pylist())
        pending.append(batch.filter(pc.invert(batch.column("skipped"))).select(WORK_SCHEMA.names))
    return pa.concat_tables([table.cast(WORK_SCHEMA) for table in pending])


def _skip_batch(batch, *, io_retries: int):
    from restoration.restore import skip_stage

    return skip_stage(batch, io_retries=io_retries)


def _ok_megapixels(rows) -> float:
    """Input megapixels of the ``ok`` rows of a manifest table."""
    import pyarrow.compute as pc

    ok = rows.filter(pc.equal(rows.column("status"), "ok"))
    if ok.num_rows == 0:
        return 0.0
    pixels = pc.multiply(ok.column("width").cast("int64"), ok.column("height").cast("int64"))
    return float(pc.sum(pixels).as_py() or 0) / 1e6


def _fill_skipped(batch, previous: dict[str, dict[str, Any]], job_id: str):
    """Skipped rows arrive with only their source and size: complete them from the earlier row."""
    import pyarrow as pa

    from restoration.manifest import MANIFEST_SCHEMA, rows_to_table, skipped_row

    status = batch.column("status").to_pylist()
    if "skipped" not in status:
        return batch
    rows = batch.to_pylist()
    for index, row in enumerate(rows):
        if status[index] == "skipped":
            rows[index] = skipped_row(previous[row["source_uri"]], job_id=job_id, bytes_in=row["bytes_in"])
    return rows_to_table(rows).cast(MANIFEST_SCHEMA) if rows else pa.table({})


def format_summary(summary: dict[str, Any]) -> str:
    counts = summary["counts"]
    return (
        f"restored {counts['ok']} of {summary['inputs']} inputs "
        f"(errors {counts['error']}, skipped {counts['skipped']}) in {summary['wall_seconds']:.1f} s: "
        f"{summary['images_per_second']:.2f} images/s, {summary['megapixels_per_second']:.3f} megapixels/s\n"
        f"manifest: {summary['manifest']}"
    )


def run(args: argparse.Namespace) -> int:
    """Resolve the configuration and run the job; returns the process exit code."""
    from restoration import config as config_lib
    from restoration.restore import RestoreConfig

    config = config_lib.load_config(RestoreConfig, path=args.config, overrides=args.overrides)
    summary = restore(args.input, args.output, task=args.task, model=args.model, config=config,
                      limit=args.limit, overwrite=args.overwrite, address=args.address,
                      progress_bars=args.progress_bars)
    errors = summary["counts"]["error"]
    if errors and args.fail_on_error:
        print(f"{errors} input(s) failed (--fail-on-error); see the manifest", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.restore", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        from restoration.storage import redact

        print(f"restore: error: {redact(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Batch restoration on Ray Data: the Ray executor of :mod:`restoration.restore.run`.

    python -m jobs.restore --input s3://photos/scans/ --output s3://photos/restored/ --task denoise

docs/cluster.md, "How the restore job runs", describes the two pipelines (fused: each model actor
reads, restores, encodes and writes; split: read and encode in CPU tasks, the model in GPU
actors), their memory bounds and how retries stay exactly-once.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from jobs.pool_sizing import ActorPoolPlan, plan_actor_pool, rows_per_block
from jobs.ray_runtime import StopPoll, stop_flag_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pyarrow as pa

    from jobs.settings import RayRestoreConfig as RestoreConfig
    from restoration.quality.routing import Router
    from restoration.restore.run import StageContext
    from restoration.restore.summary import RestoreSummary
    from restoration.tasks.specs import TaskSpec

def add_arguments(p: argparse.ArgumentParser) -> None:
    from restoration.cli import add_restore_arguments

    add_restore_arguments(p)
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a local cluster)")
    p.add_argument("--progress-bars", action="store_true", help="show Ray Data's progress bars")


# --------------------------------------------------------------------------------------------
# The Ray Data adapters

class FusedActor:
    """Ray Data callable class of the fused pipeline, one actor of the model's pool: builds the
    model once from the checkpoint's bytes in the object store, then runs
    :func:`restoration.restore.run.process_work` on every block of work rows
    (:data:`restoration.restore.stages.WORK_SCHEMA`) it gets -- reading, decoding, restoring, encoding
    and writing ``batch_size`` images at a time -- and yields the manifest rows packed by
    :func:`restoration.restore.manifest.pack_manifest`: those of the chunks done so far once
    ``pipeline.stream_seconds`` passed since the last yield, and the rest at the block's end. Decoded pixels never leave the actor's
    process, and it holds one ``batch_size`` chunk of them at a time. (A replay of a block on a
    restarted actor can lose rows: see :data:`restoration.restore.run.LOST_RESULT_PASSES`.)"""

    def __init__(self, model_refs: dict, *, task: type[TaskSpec], job_id: str, config: RestoreConfig,
                 router: Router | None, threads: int | None, device: str, batch_size: int,
                 stop_flag: Any = None) -> None:
        import ray

        from restoration.restore.run import StageContext

        data = dict(zip(model_refs, ray.get(list(model_refs.values())), strict=True))
        self.job = StageContext.in_worker(data, task=task, job_id=job_id, config=config, router=router)
        self.predictor = self.job.predictors(device=device, threads=threads)
        self.batch_size, self.stream_seconds = batch_size, config.pipeline.stream_seconds
        self.stopped = StopPoll(stop_flag)  # whether the driver asked the run to stop

    def __call__(self, work: pa.Table) -> Iterator[pa.Table]:
        import time

        from restoration.restore.manifest import pack_manifest
        from restoration.restore.run import process_work

        pending: list[pa.Table] = []
        last_sent = time.monotonic()
        for rows in process_work(self.predictor, work, self.job, batch_size=self.batch_size,
                                 should_stop=self.stopped):
            pending.append(rows)
            if time.monotonic() - last_sent >= self.stream_seconds:
                yield pack_manifest(pending)
                pending, last_sent = [], time.monotonic()
        if pending:
            yield pack_manifest(pending)


class ModelActor:
    """Ray Data callable class of the split pipeline's model stage: builds the model (or a
    route's models) once per actor from the checkpoints' bytes in the object store, restores
    Arrow batches of decoded pixels (:data:`restoration.restore.stages.PIPELINE_SCHEMA`)."""

    def __init__(self, model_refs: dict, *, task: type[TaskSpec], job_id: str, config: RestoreConfig,
                 router: Router | None, threads: int | None, device: str) -> None:
        import ray

        from restoration.restore.run import StageContext

        data = dict(zip(model_refs, ray.get(list(model_refs.values())), strict=True))
        job = StageContext.in_worker(data, task=task, job_id=job_id, config=config, router=router)
        self.predictor = job.predictors(device=device, threads=threads)
        self.task = task

    def __call__(self, batch):
        from restoration.restore.stages import restore_stage

        return restore_stage(self.predictor, batch, task=self.task)


def _blocks(table: pa.Table, rows_per_block: int) -> list[pa.Table]:
    return [table.slice(start, rows_per_block) for start in range(0, table.num_rows, rows_per_block)]


def _actor_pool(pool: ActorPoolPlan, tasks_in_flight: int):
    import ray.data

    return ray.data.ActorPoolStrategy(min_size=pool.min_size, max_size=pool.max_size, initial_size=pool.initial_size,
                                      max_tasks_in_flight_per_actor=tasks_in_flight)


def build_fused_dataset(work: pa.Table, *, job: StageContext, model_refs: dict, pool: ActorPoolPlan, rows: int,
                        stop_flag: Any = None):
    """The fused Ray Data pipeline over a work table: blocks of ``rows`` work rows -> the
    :class:`FusedActor` actor pool -> packed manifest tables (:func:`restoration.restore.manifest.unpack_manifest`)."""
    import ray.data

    dataset = ray.data.from_arrow(_blocks(work, rows))
    # Each yield of an actor is its own output block (see restoration.restore.manifest.pack_manifest). The setting belongs to
    # this dataset's copy of the context only.
    dataset.context.target_max_block_size = 1
    return dataset.map_batches(
        FusedActor,
        batch_size=None,  # one work block per call
        batch_format="pyarrow",
        # Two blocks in flight per actor: one running, one queued, so that an actor never waits
        # for the driver between blocks.
        compute=_actor_pool(pool, tasks_in_flight=2),
        num_cpus=pool.num_cpus,
        num_gpus=pool.num_gpus,
        fn_constructor_kwargs={"model_refs": model_refs, "task": job.task, "job_id": job.job_id, "config": job.config,
                               "router": job.router, "threads": pool.threads, "device": pool.device, "batch_size": pool.batch_size,
                               "stop_flag": stop_flag},
    )


def build_split_dataset(work: pa.Table, *, job: StageContext, model_refs: dict, pool: ActorPoolPlan):
    """The split Ray Data pipeline over a work table: read + decode CPU tasks -> the
    :class:`ModelActor` actor pool -> encode + write CPU tasks -> manifest tables."""
    import ray.data

    from restoration.restore.run import encode_options, read_options
    from restoration.restore.stages import encode_stage, read_stage

    pipeline = job.config.pipeline
    # Small input blocks: each read task handles `read_batch_size` inputs, so decoded pixels
    # stream to the actors in small blocks and memory stays bounded. Very long lists get
    # larger blocks so the number of blocks stays manageable.
    dataset = ray.data.from_arrow(_blocks(work, max(pipeline.read_batch_size, math.ceil(work.num_rows / 20_000))))
    # Distinct resources keep Ray Data from fusing the read into the actor stage: decoding
    # stays in CPU tasks, in parallel with inference.
    task_cpus = pipeline.cpus_per_task if pipeline.cpus_per_task != pool.num_cpus or pool.num_gpus else pipeline.cpus_per_task + 0.01
    dataset = dataset.map_batches(read_stage, batch_size=pipeline.read_batch_size, batch_format="pyarrow",
                                  num_cpus=task_cpus, fn_kwargs=read_options(job))
    dataset = dataset.map_batches(
        ModelActor,
        batch_size=pool.batch_size,
        batch_format="pyarrow",
        # Two calls in flight per actor: one running, one prefetched. More would queue work on
        # one actor while another idles at the end of the job.
        compute=_actor_pool(pool, tasks_in_flight=2),
        num_cpus=pool.num_cpus,
        num_gpus=pool.num_gpus,
        fn_constructor_kwargs={"model_refs": model_refs, "task": job.task, "job_id": job.job_id, "config": job.config,
                               "router": job.router, "threads": pool.threads, "device": pool.device},
    )
    return dataset.map_batches(encode_stage, batch_size=pipeline.read_batch_size, batch_format="pyarrow",
                               num_cpus=task_cpus, fn_kwargs=encode_options(job))


def _until_stalled(dataset, stall_seconds: float) -> Iterator[pa.Table]:
    """The dataset's output tables, until it ends or makes no progress for ``stall_seconds``
    (no block moved between its stages: Ray Data's no-progress guard). A stall ends this pass
    with a warning instead of failing the job: the run hands the inputs that got no result to
    the next pass. (Seen here: a node lost with the model actor's results and the blocks being
    encoded; Ray restarted the actor and resubmitted their tasks, then nothing moved for ever.)"""
    from ray.data.exceptions import ExecutionTimeoutError

    dataset.context.execution_no_progress_timeout_s = stall_seconds  # this dataset's copy of the context
    try:
        yield from dataset.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0)
    except ExecutionTimeoutError:
        logging.getLogger(__name__).warning(
            "the Ray Data pipeline made no progress for %g s (pipeline.stall_seconds): this pass ends, "
            "and the inputs that got no result go to the next one", stall_seconds)


class RayRestoreExecutor:
    """:class:`restoration.restore.run.RestoreExecutor` on Ray Data. Ray starts (or is joined at
    ``address`` / ``RAY_ADDRESS``) only when there is work, after the run's checks passed, and
    stays up across :meth:`restore` calls (a run may make one per partition of its inputs).

    The config's ``pipeline.stages`` picks the pipeline's shape. Fused: on a CPU-only cluster the
    actors and the decode/encode tasks share the same cores, so moving pixels between processes
    is pure overhead. Split: with GPUs the model is cheap, and decoding and encoding (PNG above all)
    must spread over every CPU of the GPU nodes and over CPU-only nodes.
    """

    name = "ray"

    def __init__(self, address: str | None = None, progress_bars: bool = False) -> None:
        self.address, self.progress_bars = address, progress_bars
        self.pool: ActorPoolPlan | None = None
        self._described: dict[str, Any] | None = None
        self._models: tuple[dict, dict] | None = None  # (checkpoints' bytes, their object refs), by key
        self._stop_flag: Any = None

    def _start(self, stop: Any = None) -> None:
        import ray
        import ray.data

        from jobs.ray_runtime import init_ray

        if not ray.is_initialized():
            init_ray(self.address, train=False)
        if stop is not None:
            stop.reinstall()  # over the SIGTERM handler of Ray's core worker, which aborts the process
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = context.print_on_execution_start = self.progress_bars
        context.enable_auto_log_stats = False
        if not self.progress_bars:
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            # Its one warning says progress bars are off, which is what was asked for.
            logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)

    def _model_refs(self, data: dict) -> dict:
        """The checkpoints' bytes in the object store (by route key), put once for every call of
        this run. In a dict, so that Ray passes the refs, not the bytes, to the actors."""
        import ray

        known = self._models
        if known is None or known[0].keys() != data.keys() or any(known[0][k] is not v for k, v in data.items()):
            self._models = known = (data, {key: ray.put(value) for key, value in data.items()})
        return known[1]

    def skip(self, candidates: pa.Table, config: RestoreConfig) -> pa.Table:
        # (A stop during the skip stage waits for it: it only reads metadata.)
        import ray.data

        from restoration.restore.stages import skip_stage

        self._start()
        blocks = _blocks(candidates, max(64, math.ceil(candidates.num_rows / 2_000)))
        stats = ray.data.from_arrow(blocks).map_batches(skip_stage, batch_format="pyarrow", batch_size=None,
                                                        num_cpus=config.pipeline.cpus_per_task,
                                                        fn_kwargs={"outage_seconds": config.storage.outage_seconds})
        return stats.iter_batches(batch_format="pyarrow", batch_size=None)

    def _flag(self, stop: Any) -> Any:
        """The run's :class:`jobs.ray_runtime.StopFlag` actor, set when ``stop`` is requested
        (None without ``stop``)."""
        if stop is None:
            return None
        if self._stop_flag is None:
            self._stop_flag = stop_flag_for(stop)
        return self._stop_flag

    def restore(self, work: pa.Table, job: StageContext, *, stop: Any = None) -> Iterator[pa.Table]:
        import ray

        from restoration.restore.manifest import unpack_manifest

        self._start(stop)
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        largest = max((node["Resources"].get("CPU", 0) for node in nodes), default=0)
        self.pool = pool = plan_actor_pool(ray.cluster_resources(), largest, job.config, ray.available_resources())
        stages = job.config.pipeline.stages
        if stages == "auto":
            stages = "split" if pool.num_gpus else "fused"
        model_refs = self._model_refs(job.model_bytes())
        self._described = {**asdict(pool), "stages": stages}
        if stages == "split":
            dataset = build_split_dataset(work, job=job, model_refs=model_refs, pool=pool)
            for batch in _until_stalled(dataset, job.config.pipeline.stall_seconds):
                yield batch
                if stop is not None and stop.requested:
                    return  # closing the iterator ends the dataset's tasks
            return
        rows = rows_per_block(work.num_rows, pool, job.config.pipeline.read_batch_size)
        self._described["rows_per_block"] = rows
        dataset = build_fused_dataset(work, job=job, model_refs=model_refs, pool=pool, rows=rows,
                                      stop_flag=self._flag(stop))
        for batch in _until_stalled(dataset, job.config.pipeline.stall_seconds):
            yield from unpack_manifest(batch)

    def describe(self) -> dict[str, Any] | None:
        return self._described


# --------------------------------------------------------------------------------------------
# The job


def restore(input_uri: str, output_uri: str, *, task: str, model: str = "default", config: RestoreConfig | None = None,
            limit: int | None = None, overwrite: bool = False, address: str | None = None,
            progress_bars: bool = False, echo: Any = print) -> RestoreSummary:
    """Run one batch restoration on Ray Data and return its summary (see
    :func:`restoration.restore.run.run_restore`)."""
    from jobs.settings import ray_config
    from restoration.restore.run import run_restore

    return run_restore(input_uri, output_uri, task=task, model=model, config=ray_config(config), limit=limit, overwrite=overwrite,
                       executor=RayRestoreExecutor(address, progress_bars), echo=echo)


def run(args: argparse.Namespace) -> int:
    """Resolve the configuration and run the job (``--no-ray``: in this process); the exit code."""
    from jobs.settings import RayRestoreConfig
    from restoration.cli import run_restore_command

    return run_restore_command(args, lambda: RayRestoreExecutor(args.address, args.progress_bars),
                               config_class=RayRestoreConfig)


def main(argv: list[str] | None = None) -> int:
    from restoration.cli import RESTORE_DESCRIPTION

    parser = argparse.ArgumentParser(prog="python -m jobs.restore", description=RESTORE_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from restoration.cli import run_command

    return run_command("restore", run, args)


if __name__ == "__main__":
    sys.exit(main())

"""How the restore job sizes its model actors and its work blocks from the cluster's resources
(no Ray imported here: the numbers are plain arithmetic, tested on their own).

GPU clusters: one actor per GPU. CPU-only clusters: actors of half a node's cores in torch threads,
each reserving half a logical CPU, so that read and write tasks always find room (an actor pool
that takes every CPU starves them and the job hangs). docs/cluster.md, sections 5 and 8, has the
measured rates behind these choices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.settings import RayRestoreConfig


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
    resources: dict[str, float], largest_node_cpus: float, config: RayRestoreConfig,
    available: dict[str, float] | None = None
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
    ``config``: the Ray job's settings (``jobs.settings.RayRestoreConfig``; a library
    ``RestoreConfig`` is read with the Ray pipeline's defaults).
    """
    from jobs.settings import ray_config

    config = ray_config(config)
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


BLOCKS_PER_ACTOR = 8
"""Fused pipeline: work blocks per actor of the pool's maximum size. An actor that finishes
early idles at most one block while the others finish theirs, so the tail costs at most about
1/8 of an actor's share, whatever the image sizes (the work table has no sizes to go by)."""

MAX_ROWS_PER_BLOCK = 1024
"""Fused pipeline: the most work rows in one block, which bounds what an actor redoes when it
dies mid-block."""

def rows_per_block(num_rows: int, pool: ActorPoolPlan, min_rows: int) -> int:
    """Work rows per block of the fused pipeline: :data:`BLOCKS_PER_ACTOR` blocks for each actor
    the pool may grow to, at least ``min_rows`` (``pipeline.read_batch_size``) and at most
    :data:`MAX_ROWS_PER_BLOCK`. Blocks are sized by rows: the work table has no image sizes.
    (With 1,000 small inputs on 2 actors: 63 rows a block. Small images take less time in an
    actor than a Ray task's own cost, so tiny blocks would be slow: docs/cluster.md, section 8,
    has the measured rates.)"""
    wanted = math.ceil(num_rows / (BLOCKS_PER_ACTOR * max(1, pool.max_size)))
    return max(1, min_rows, min(MAX_ROWS_PER_BLOCK, wanted))

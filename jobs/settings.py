"""Settings of the Ray restore job: the library's :class:`restoration.restore.settings.RestoreConfig`
with the whole ``pipeline`` section -- how the Ray Data pipeline is cut and placed
(:class:`PipelineConfig`). No Ray imported here: ``restoration restore`` checks these settings
(``--set pipeline.KEY=VALUE``) before Ray starts, with or without ``--no-ray`` (which reads only
``pipeline.batch_size``).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Final

from pydantic import Field, model_validator

from restoration.config import SettingError, above, at_least, one_of
from restoration.restore.settings import BatchConfig, RestoreConfig

PIPELINE_STAGES: Final[tuple[str, ...]] = ("auto", "fused", "split")
"""Shapes of the Ray job's pipeline (``jobs/restore.py``): ``fused`` (each model actor reads,
restores, encodes and writes), ``split`` (read tasks -> model actors -> encode tasks), ``auto``
(fused on CPU-only pools, split when the actors hold GPUs)."""


class PipelineConfig(BatchConfig):
    """How the Ray Data pipeline is cut and placed (defaults are sized from the cluster).

    ``batch_size`` (the library's, :class:`~restoration.restore.settings.BatchConfig`): images
    per actor call (None: 16 with a GPU, 4 on CPU). ``read_batch_size``: images per read/decode
    (and encode/write) call. ``min_actors`` / ``max_actors``: the model actor pool (max None: one
    per GPU, or one per ``predictor.threads`` CPUs). ``cpus_per_actor`` (None: 1 with a GPU, 0.5
    on CPU-only clusters) and ``gpus_per_actor`` (None: 1 where the cluster has GPUs).
    ``use_gpu``: None decides from the cluster's resources when the job starts; set it true on
    an autoscaling cluster whose GPU nodes are not up yet. ``cpus_per_task``: CPUs of a read or
    write task. ``stages``: the pipeline's shape (:data:`PIPELINE_STAGES`). ``stream_seconds``:
    how often a fused actor sends the manifest rows of the images it wrote to the driver while it
    works on a block (what a crash of the driver can lose is about this plus
    ``manifest.flush_seconds``). ``stall_seconds``: how long the pipeline may go without any
    block moving between its stages before this pass of it is ended and its inputs that got no
    result go to the next pass (:data:`restoration.restore.run.LOST_RESULT_PASSES`): Ray Data can
    wait for ever on results lost with a node. Raise it where one call of the model on one batch,
    or the wait for a new GPU node, takes longer. (Storage outages are waited out for up to
    ``storage.outage_seconds``; an input that still fails is an error row, which the next run
    retries.)
    """

    unknown_key_note: ClassVar[str] = ""

    read_batch_size: Annotated[int, at_least(1)] = 4
    min_actors: Annotated[int, at_least(1)] = 1
    max_actors: int | None = None
    cpus_per_actor: Annotated[float, at_least(0, "a number >= 0 or null")] | None = None
    gpus_per_actor: Annotated[float, at_least(0, "a number >= 0 or null")] | None = None
    use_gpu: bool | None = None
    cpus_per_task: Annotated[float, above(0, "a number > 0")] = 1.0
    stages: Annotated[str, one_of(PIPELINE_STAGES)] = "auto"
    stream_seconds: Annotated[float, at_least(0, "a number >= 0")] = 0.5
    stall_seconds: Annotated[float, above(0, "a number > 0")] = 1800.0

    @model_validator(mode="after")
    def _actors(self) -> PipelineConfig:
        if self.max_actors is not None and self.max_actors < self.min_actors:
            raise SettingError(f"must be >= {self.section}.min_actors ({self.min_actors}) or null, "
                               f"got {self.max_actors}", field="max_actors")
        return self


class RayRestoreConfig(RestoreConfig):
    """Everything ``restoration restore`` / ``python -m jobs.restore`` reads from ``--config``
    and ``--set key=value``: the library's sections and the Ray job's :class:`PipelineConfig`."""

    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)


def ray_config(config: RestoreConfig | None) -> RayRestoreConfig:
    """``config`` as the Ray job reads it: a library :class:`RestoreConfig` gets the Ray
    pipeline's defaults (its ``pipeline.batch_size`` kept); None: the defaults."""
    if config is None:
        return RayRestoreConfig()
    if isinstance(config, RayRestoreConfig):
        return config
    sections = {name: getattr(config, name) for name in type(config).model_fields}
    sections["pipeline"] = PipelineConfig(batch_size=config.pipeline.batch_size)
    return RayRestoreConfig(**sections)

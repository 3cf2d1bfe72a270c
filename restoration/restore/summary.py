"""A restore run's summary, typed: what :func:`restoration.restore.run.run_restore` returns and
writes to ``<output>/_manifest/_summary.json``, and what ``restoration report`` reads back.

:class:`RestoreSummary` holds the run's counts (:class:`Counts`), rates and times, the model it
ran (:class:`ModelRecord`), the executor's own description of its workers (``actor_pool``), the
resolved settings (``config``) and, when a signal stopped the run, :class:`StopRecord`.

``_summary.json`` is a documented file (``docs/cluster.md``, section 6): :meth:`RestoreSummary.to_json`
writes the same keys and layout as the dicts of earlier versions (sorted keys, 2-space indent),
and :meth:`RestoreSummary.from_json` reads the summaries those versions wrote: keys added since
the first version (``model``, ``unchanged``, ``unchanged_threshold``, ``pipeline_started_epoch``,
``executor``, ``stopped``) may be missing (None), and keys this version does not know are ignored.

Frozen pydantic models, as the settings are (:mod:`restoration.config`): the file is parsed and
checked by the same rules that build it, and written by ``model_dump``. Imports nothing of the
run (no torch, no pyarrow), so that the report page and other readers stay light.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["Counts", "ModelRecord", "RestoreSummary", "StopRecord", "format_summary"]


class _Record(BaseModel):
    # Frozen, as the settings; unknown keys (a newer version's) are ignored when read back.
    model_config = ConfigDict(frozen=True, extra="ignore")


class Counts(_Record):
    """Manifest rows of the run's output by status (``ok``, ``error``, ``skipped``)."""

    ok: int
    error: int
    skipped: int


class ModelRecord(_Record):
    """The model a run used: id, architecture, scale, the SHA-256 of its weights, and its licence
    and source (added later: None in the summaries older versions wrote)."""

    model_id: str
    architecture: str
    scale: int
    weights_sha256: str
    licence: str | None = None
    source: str | None = None


class StopRecord(_Record):
    """Why a run stopped before its end: the signal's name, the exit code the command returns
    (``128 + signum``), the inputs left for the next run, and, when it stopped at once (a second
    signal, or the grace period over), why."""

    signal: str
    exit_code: int
    left: int
    forced: str | None = None


class RestoreSummary(_Record):
    """One restore run, as ``_summary.json`` holds it (see the module's docstring)."""

    job_id: str
    task: str
    model_id: str
    input: str  # redacted URI
    output: str  # redacted URI
    inputs: int  # inputs listed (this run's, after --limit)
    counts: Counts
    duplicates_dropped: int
    images_per_second: float
    megapixels: float  # input megapixels of the ok rows
    megapixels_per_second: float
    wall_seconds: float
    pipeline_seconds: float
    started_at: str  # UTC, ISO 8601 (``%Y-%m-%dT%H:%M:%SZ``)
    manifest: str  # redacted URI of the compacted manifest file
    actor_pool: dict[str, Any] | None  # the executor's description of its workers (None: it ran none)
    config: dict[str, Any]  # the resolved settings (restoration.config.to_dict)
    # Added after the first version: None in the summaries older versions wrote.
    model: ModelRecord | None = None
    unchanged: int | None = None  # ok rows the model changed by less than unchanged_threshold
    unchanged_threshold: float | None = None
    pipeline_started_epoch: float | None = None
    executor: str | None = None  # "local", "ray"
    stopped: StopRecord | None = None  # None: the run went to its end
    models: dict[str, ModelRecord] | None = None  # a routed run's models, by route key (None: one model)
    routes: dict[str, int] | None = None  # a routed run's restored images by route ("skip": written unchanged)

    def to_json(self) -> str:
        """The text of ``_summary.json``: every key, sorted, indented by 2, a final newline."""
        return json.dumps(self.model_dump(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, data: str | bytes) -> RestoreSummary:
        """Read ``_summary.json`` (this version's or an earlier one's).

        Raises:
            ValueError: not JSON, or not a summary (a ``pydantic.ValidationError`` is one).
        """
        return cls.model_validate(json.loads(data))


def format_summary(summary: RestoreSummary) -> str:
    """The lines a run prints at the end: counts and rates, the images the model left unchanged
    (when any), and where the manifest is."""
    counts = summary.counts
    lines = [(f"restored {counts.ok} of {summary.inputs} inputs "
              f"(errors {counts.error}, skipped {counts.skipped}) in {summary.wall_seconds:.1f} s: "
              f"{summary.images_per_second:.2f} images/s, {summary.megapixels_per_second:.3f} megapixels/s")]
    if summary.routes:
        shown = ", ".join(f"{route} {count}" for route, count in sorted(summary.routes.items(), key=lambda item: -item[1]))
        lines.append(f"routes: {shown} (skip: written unchanged; manifest columns route and route_reason)")
    if summary.unchanged:
        lines.append(f"unchanged: {summary.unchanged} of the {counts.ok} restored images changed by less than "
                     f"{summary.unchanged_threshold or 0:g} levels on average (manifest column mean_abs_change)")
    lines.append(f"manifest: {summary.manifest}")
    return "\n".join(lines)

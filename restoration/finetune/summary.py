"""A fine-tuning run's summary, typed: what :func:`restoration.finetune.run.run_summary` builds and
:func:`~restoration.finetune.run.run_finetune` prints as its last line (``done: {...}``, one JSON
object).

A frozen pydantic model, as the settings are (:mod:`restoration.config`). The printed line keeps
the layout of earlier versions: only the keys the run knows (a run that took no step has no
metrics; one without checkpoints names no best one), in the same order. Imports nothing of the
run (no torch), so that readers stay light.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict

__all__ = ["FinetuneSummary"]


class FinetuneSummary(BaseModel):
    """The end of a fine-tuning run: the last reported metrics (``step``, training ``loss``,
    ``val_psnr``, ``val_ssim``; self-supervised, ``val_noise_left`` and ``val_residual_noise``, and
    the starting model's),
    the best checkpoint by validation (PSNR, or the least noise left) with its PSNR, and
    ``model``, where the final model is (``<storage>/<name>/model``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    # (In the order the line prints them.)
    step: int | None = None
    loss: float | None = None
    val_psnr: float | None = None
    val_ssim: float | None = None
    val_noise_left: float | None = None  # self-supervised: the error left in the held-out images, estimated
    val_noise_left_at_start: float | None = None  # ... by the model the run started from
    val_residual_noise: float | None = None  # self-supervised: the fine-scale noise the estimator finds in them
    val_residual_noise_at_start: float | None = None
    best_checkpoint: str | None = None  # URI of the checkpoint folder
    best_val_psnr: float | None = None
    model: str

    def to_json(self) -> str:
        """One line of JSON: the fields that were given (those the run knows), in field order."""
        return json.dumps(self.model_dump(exclude_unset=True))


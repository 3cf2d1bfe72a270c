"""What a fine-tuning run writes at its end, on rank 0: ``<storage>/<name>/model/`` (the model,
its config, metrics and curve), or for a self-supervised run whose model leaves more noise than
the one it started from, the reason it was refused (:func:`worse_than_start`)."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path
from typing import Any

from restoration.finetune.checkpoints import TRAINING_CONFIG_FILE
from restoration.finetune.trainer import METRIC_COLUMNS, Trainer
from restoration.io import storage
from restoration.models.checkpoint import save_checkpoint

VALIDATION_KEYS = ("val_psnr", "val_ssim", "val_noise_left", "val_residual_noise", "val_removed_noise", "val_score")
"""The validation figures a checkpoint's provenance records."""


REFUSED_FILE = "model-refused.txt"
"""Written in the run's folder instead of ``model/`` when :func:`worse_than_start` refuses the
final model: the reason, which the command prints (exit code 1)."""


def worse_than_start(trainer: Trainer, run_uri: str, *, keep_worse: bool = False) -> str | None:
    """Why a self-supervised run's final model is not written (one line), or None: the residual
    noise its held-out images keep is not ``self_supervised.min_residual_drop`` levels below the
    starting model's (by default: it is worse), and the run was not told to keep it (``keep_worse``).
    ``run_uri``: where its checkpoints stay, for the message."""
    start, history = trainer.start_metrics or {}, trainer.history
    final = next((h for h in reversed(history) if "val_noise_left" in h), None)
    if trainer.self_supervised is None or final is None or "val_noise_left" not in start or keep_worse:
        return None
    before, after = start["val_noise_left"], final["val_noise_left"]
    required = trainer.config.self_supervised.min_residual_drop
    if before - after >= required:
        return None
    wanted = "more noise" if after > before else f"not {required:g} levels less noise"
    return (f"the adapted model leaves {wanted} in the held-out images than the model it started from "
            f"({after:.2f} levels, estimated, against {before:.2f}): not written. Its checkpoints stay in "
            f"{storage.redact(run_uri)}; --keep-worse writes it anyway, or try a lower optim.lr or fewer steps")


def write_final_outputs(trainer: Trainer, storage_uri: str, name: str, run_provenance: dict[str, Any]) -> str:
    """``<storage>/<name>/model/``: model.safetensors, model.json, config.yaml, metrics.csv,
    training_curve.png. Returns that URI."""
    history = trainer.history
    final_val = next((h for h in reversed(history) if "val_score" in h or "val_psnr" in h), {})
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(trainer.model, tmp, model_id=name, provenance={
            **run_provenance, "steps": trainer.step,
            "wall_seconds": history[-1]["wall_seconds"] if history else None,
            "validation": {k: final_val[k] for k in VALIDATION_KEYS if k in final_val},
            "validation_step": final_val.get("step"),
            **({"validation_at_start": trainer.start_metrics} if trainer.start_metrics else {}),
            "validation_protocol": validation_description(trainer),
        })
        (Path(tmp) / TRAINING_CONFIG_FILE).write_text(trainer.config.to_yaml())
        (Path(tmp) / "metrics.csv").write_text(metrics_csv(history))
        plot_training_curve(history, Path(tmp) / "training_curve.png", start=trainer.start_metrics)
        target = storage.join(storage_uri, name, "model")
        for path in sorted(Path(tmp).iterdir()):
            storage.write_bytes(storage.join(target, path.name), path.read_bytes())
    return target


def validation_description(trainer: Trainer) -> dict[str, Any]:
    """How the run validated, for the provenance: the task's protocol, or for pairs and
    self-supervised runs what was measured instead."""
    if trainer.self_supervised is not None:
        return {"metric": "noise left in the held-out noisy images, as estimated (no clean image)"}
    if trainer.paired:
        return {"metric": "RGB against the held-out targets as they are, no border crop"}
    return trainer.protocol.describe()


def metrics_csv(history: list[dict]) -> str:
    """The training history as CSV, one row per reported step (``METRIC_COLUMNS``)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow(row)
    return out.getvalue()


def plot_training_curve(history: list[dict], path: Path, *, start: dict[str, Any] | None = None) -> None:
    """Training loss (log scale) and validation PSNR (or, self-supervised, the residual noise)
    against step, one PNG; ``start``: the starting model's validation, drawn at step 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax_loss = plt.subplots(figsize=(7, 4), dpi=100)
    steps = [h["step"] for h in history]
    ax_loss.plot(steps, [h["loss"] for h in history], color="tab:blue", label="training loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss", color="tab:blue")
    ax_loss.set_yscale("log")
    key, label = (("val_noise_left", "held-out noise left, estimated (levels)")
                  if any("val_noise_left" in h for h in history) else ("val_psnr", "validation PSNR (dB)"))
    val = [(0, start[key])] if start and key in start else []
    val += [(h["step"], h[key]) for h in history if key in h]
    if val:
        ax_psnr = ax_loss.twinx()
        ax_psnr.plot(*zip(*val), color="tab:red", marker="o", label=label)
        ax_psnr.set_ylabel(label, color="tab:red")
    unfrozen = next((h["step"] for h in history if h.get("stage") == "unfrozen"), None)
    if unfrozen is not None and unfrozen > steps[0]:
        ax_loss.axvline(unfrozen, color="gray", linestyle=":", linewidth=1)
        ax_loss.annotate(" backbone unfrozen", (unfrozen, 1), xycoords=("data", "axes fraction"),
                         va="top", fontsize=8, color="gray")
    ax_loss.set_title("fine-tuning")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

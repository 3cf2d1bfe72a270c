"""Distillation: a heavy teacher's outputs become a fast student's training pairs. No Ray here:
``jobs/distill.py`` runs the two jobs the project already has, the teacher's restore job on a
seeded sample of the archive and the student's fine-tuning on (input, teacher output) pairs, with
what this module plans and measures:

- :func:`draw_sample`: the sample, split into training images and held-out ones;
- :func:`record_sample`: the sample's lists in the run's folder (the teacher's restore job reads
  the list of both; a rerun of the same command finds the same sample there, and continues);
- :func:`teacher_pairs`: the pairs from the teacher job's manifest (each input beside what the
  teacher made of it; inputs the teacher failed on are left out and counted);
- :func:`agreement_report`: on the held-out images, how close the student comes to the teacher
  (PSNR / SSIM of its outputs against the teacher's, beside bicubic's) and how much faster it is
  here, written as ``distill.json`` in the run's folder.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from restoration.io import storage

__all__ = [
    "DistillSample",
    "TeacherPairs",
    "agreement_report",
    "draw_sample",
    "measure_speed",
    "record_sample",
    "teacher_pairs",
]

SAMPLE_FOLDER = "sample"
"""Under the run's folder: ``train.txt``, ``held-out.txt`` and ``all.txt`` (URI lists)."""
TEACHER_FOLDER = "teacher"
"""Under the run's folder: the teacher's outputs and their manifest (a restore job's output)."""
REPORT_FILE = "distill.json"


@dataclass(frozen=True)
class DistillSample:
    """A seeded sample of an archive: the images the student trains on and those held out."""

    train: list[str]
    held_out: list[str]

    @property
    def all(self) -> list[str]:
        return [*self.train, *self.held_out]


def draw_sample(uris: list[str], *, sample: int, held_out: int, seed: int = 0) -> DistillSample:
    """``sample`` images of ``uris`` drawn with ``seed`` (the same archive listing and seed give
    the same sample), the last ``held_out`` of the draw held out.

    Raises:
        ValueError: fewer images than asked for, or no image left to train on or to hold out.
    """
    if held_out < 1 or sample <= held_out:
        raise ValueError(f"--sample ({sample}) must exceed --held-out ({held_out}), which must be >= 1")
    if len(uris) < sample:
        raise ValueError(f"the archive holds {len(uris)} images; --sample asks for {sample}")
    drawn = random.Random(seed).sample(sorted(uris), sample)
    return DistillSample(train=drawn[: sample - held_out], held_out=drawn[sample - held_out:])


def _lines(uris: list[str]) -> bytes:
    return ("\n".join(uris) + "\n").encode()


def record_sample(run_uri: str, sample: DistillSample) -> str:
    """Write the sample's lists under ``<run>/sample/`` and return the URI of ``all.txt`` (the
    teacher job's input). A run that already holds lists must hold these: the same command
    continues a run; another sample needs another ``--name``.

    Raises:
        ValueError: the run's folder holds another sample.
    """
    folder = storage.join(run_uri, SAMPLE_FOLDER)
    files = {"train.txt": sample.train, "held-out.txt": sample.held_out, "all.txt": sample.all}
    for name, uris in files.items():
        uri = storage.join(folder, name)
        if storage.exists(uri):
            if storage.read_bytes(uri) != _lines(uris):
                raise ValueError(f"{storage.redact(run_uri)} holds a distillation of another sample ({name} differs: "
                                 "another --images, --sample, --held-out or --seed); use another --name")
        else:
            storage.write_bytes(uri, _lines(uris))
    return storage.join(folder, "all.txt")


@dataclass(frozen=True)
class TeacherPairs:
    """(target, input) URIs for training and validation, and the inputs left out (no output)."""

    train_targets: list[str]
    train_inputs: list[str]
    held_targets: list[str]
    held_inputs: list[str]
    failed: list[tuple[str, str]]

    def as_lists(self) -> tuple[list[str], list[str], list[str], list[str]]:
        return self.train_targets, self.train_inputs, self.held_targets, self.held_inputs


def teacher_pairs(teacher_output: str, sample: DistillSample) -> TeacherPairs:
    """The pairs of the teacher job's manifest under ``teacher_output``: each sampled input and
    the teacher's output of it, in the sample's order. Inputs with an error row, or none, are left
    out and listed with the reason.

    Raises:
        ValueError: the teacher left no pair to train on, or none to hold out.
    """
    from restoration.restore.manifest import read_manifest

    rows = read_manifest(teacher_output).to_pylist()
    outputs = {row["source_uri"]: row for row in rows}
    failed: list[tuple[str, str]] = []

    def pairs(uris: list[str]) -> tuple[list[str], list[str]]:
        targets, inputs = [], []
        for uri in uris:
            row = outputs.get(uri)
            if row is None or not row.get("output_uri") or row.get("status") == "error":
                reason = "no row in the teacher's manifest" if row is None else (row.get("error") or row.get("status"))
                failed.append((uri, str(reason)))
                continue
            targets.append(row["output_uri"])
            inputs.append(uri)
        return targets, inputs

    train_targets, train_inputs = pairs(sample.train)
    held_targets, held_inputs = pairs(sample.held_out)
    if not train_targets or not held_targets:
        which = "training" if not train_targets else "held-out"
        raise ValueError(f"the teacher restored none of the {which} images"
                         + (f" (e.g. {storage.redact(failed[0][0])}: {failed[0][1]})" if failed else ""))
    return TeacherPairs(train_targets, train_inputs, held_targets, held_inputs, failed)


# --------------------------------------------------------------------------------------------
# The report


def measure_speed(model: Any, *, size: int = 128, repeats: int = 3) -> float:
    """Seconds per input megapixel of ``model`` (eval mode, fp32, whole input) on a seeded
    ``size`` x ``size`` input: the median of ``repeats`` timed passes after an untimed one."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    model.eval()
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            started = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - started)
    return statistics.median(times) / (size * size / 1e6)


def _rgb8(uri: str) -> np.ndarray:
    from restoration.io.codec import decode_image
    from restoration.io.pixels import to_uint8

    pixels = to_uint8(decode_image(storage.read_bytes(uri)).pixels)
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels[..., :3]


def _bicubic(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.BICUBIC))


def agreement_report(run_uri: str, *, teacher: str, student: str, pairs: TeacherPairs, task: str,
                     speed_size: int = 128) -> dict[str, Any]:
    """How the student (``student``: its model folder) agrees with the teacher on the held-out
    pairs: PSNR / SSIM of its 8-bit outputs against the teacher's (RGB, no border crop), mean and
    per image, beside bicubic's (the input resized to the teacher's output size: the floor any
    student should beat), and both models' seconds per input megapixel here (fp32, a
    ``speed_size`` square input, median of 3) with their ratio. Written to ``<run>/distill.json``.
    """
    from restoration.models.catalog import named_model_path
    from restoration.models.checkpoint import load_checkpoint, resolve_model
    from restoration.models.predictor import Predictor, PredictorConfig
    from restoration.quality.metrics import RGB, score

    def load(spec: str) -> Any:
        source = named_model_path(spec) or resolve_model(spec, task)
        return load_checkpoint(source).model

    metric = RGB
    student_model, teacher_model = load(student), load(teacher)
    predictor = Predictor(student_model, PredictorConfig(tile=0, precision="fp32"), device="cpu")
    images = []
    for target_uri, input_uri in zip(pairs.held_targets, pairs.held_inputs):
        target, lq = _rgb8(target_uri), _rgb8(input_uri)
        out = predictor.restore_pixels(lq)
        height, width = target.shape[:2]
        out = out[:height, :width]
        student_psnr, student_ssim = score(out, target, metric)
        bicubic_psnr, bicubic_ssim = score(_bicubic(lq, width, height), target, metric)
        images.append({"input": storage.redact(input_uri), "student_psnr": student_psnr, "student_ssim": student_ssim,
                       "bicubic_psnr": bicubic_psnr, "bicubic_ssim": bicubic_ssim})
    teacher_speed = measure_speed(teacher_model, size=speed_size)
    student_speed = measure_speed(student_model, size=speed_size)

    def mean(key: str) -> float:
        return float(np.mean([image[key] for image in images]))

    report = {
        "teacher": teacher, "student": storage.redact(student), "task": task, "held_out": len(images),
        "agreement": {"student_psnr": mean("student_psnr"), "student_ssim": mean("student_ssim"),
                      "bicubic_psnr": mean("bicubic_psnr"), "bicubic_ssim": mean("bicubic_ssim")},
        "seconds_per_input_megapixel": {"teacher": teacher_speed, "student": student_speed,
                                        "measured_on": f"this machine, fp32, {speed_size}x{speed_size} input, "
                                                       f"{torch.get_num_threads()} threads, median of 3"},
        "speed_ratio": teacher_speed / student_speed,
        "images": images,
        "teacher_failed": [{"input": storage.redact(uri), "reason": reason} for uri, reason in pairs.failed],
    }
    storage.write_bytes(storage.join(run_uri, REPORT_FILE), json.dumps(report, indent=2).encode())
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report in a few lines."""
    a, s = report["agreement"], report["seconds_per_input_megapixel"]
    return (f"student vs teacher on {report['held_out']} held-out images: {a['student_psnr']:.2f} dB PSNR, "
            f"SSIM {a['student_ssim']:.4f} (bicubic: {a['bicubic_psnr']:.2f} dB, SSIM {a['bicubic_ssim']:.4f})\n"
            f"speed here: teacher {s['teacher']:.1f} s, student {s['student']:.2f} s per input megapixel "
            f"({report['speed_ratio']:.1f}x faster)")

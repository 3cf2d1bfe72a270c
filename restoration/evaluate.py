"""Quality measured the way the papers measure it.

Protocols (``EvalProtocol``):

- ``denoise``: N(0, sigma) on the 0-255 scale is added to the 8-bit image, not clipped before the
  model; the noise is seeded per image from (seed, file name).
- ``sr``: the HR image is cropped to a multiple of the scale, LR is its bicubic downscaling (PIL,
  as the published bicubic numbers); PSNR/SSIM on the BT.601 Y channel with a ``scale``-pixel
  border crop.
- ``jpeg``: PIL JPEG at the quality; ``deblur``: Gaussian blur of the given sigma;
  ``inpaint``: pixels dropped at ``mask_ratio`` (or box/stroke masks), seeded per image.

PSNR and SSIM are computed on the clipped, 8-bit-rounded output against the 8-bit ground truth.
Gray images stay gray in and out.

Models: a checkpoint directory, ``default`` (the shipped checkpoint for the task),
``identity`` — the degraded input itself (bicubic upsampling for SR), the reference a model must
beat — or a classical baseline (``CLASSICAL_MODELS``: bm3d, nlm, bicubic, telea).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from restoration import TASKS, degradations, storage
from restoration.codec import decode_image, pixels_to_tensor, tensor_to_pixels
from restoration.metrics import psnr, ssim

# Reference methods users know, run under the same protocol as the models:
#   identity   the degraded input itself (bicubic upsampling for SR)
#   bicubic    SR: PIL bicubic upsampling (the same as identity, under its usual name)
#   bm3d       denoise: CBM3D (PyPI ``bm3d``, ``pip install restoration[classical]``)
#   nlm        denoise: OpenCV fast non-local means (colored), h set from sigma
#   telea      inpaint: OpenCV Telea fast marching
CLASSICAL_MODELS = {
    "identity": TASKS,
    "bicubic": ("sr",),
    "bm3d": ("denoise",),
    "nlm": ("denoise",),
    "telea": ("inpaint",),
}


@dataclass(frozen=True)
class EvalProtocol:
    task: str
    sigma: float = 25.0
    scale: int = 4
    quality: int = 10
    mask_ratio: float = 0.5
    mask_kind: str = "dropout"
    blur_sigma: float = 1.6
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")
        if self.scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {self.scale}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {self.quality}")
        if not 0 <= self.mask_ratio < 1:
            raise ValueError(f"mask ratio must be in [0, 1), got {self.mask_ratio}")
        if self.mask_kind not in ("dropout", "box", "stroke"):
            raise ValueError(f"mask kind must be dropout, box or stroke, got {self.mask_kind!r}")

    def describe(self) -> dict:
        """Only the parameters that matter for this task (for reports and JSON)."""
        keys = {
            "denoise": ("sigma",),
            "sr": ("scale",),
            "jpeg": ("quality",),
            "deblur": ("blur_sigma",),
            "inpaint": ("mask_kind", "mask_ratio"),
        }[self.task]
        d = {"task": self.task, "seed": self.seed, **{k: getattr(self, k) for k in keys}}
        if self.task == "sr":
            d["metric"] = f"Y (BT.601), {self.scale}-pixel border crop"
        else:
            d["metric"] = "RGB (gray for gray images), no border crop"
        return d


@dataclass
class EvalSample:
    """One test image under the protocol: 8-bit ground truth, degraded input, optional mask."""

    name: str
    gt: np.ndarray  # HxWxC uint8
    lq: torch.Tensor  # (C, h, w) float32, not clipped for denoising
    mask: torch.Tensor | None  # (1, h, w), 1 = missing
    # The degraded input at the output size: 8-bit, except for denoising, where it is the unclipped
    # noisy image itself (float CHW), so that ``identity`` measures the noise (20.17 dB at sigma 25).
    identity: np.ndarray | torch.Tensor


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint16:
        return np.round(pixels / 257.0).astype(np.uint8)
    return pixels


def make_sample(name: str, gt: np.ndarray, protocol: EvalProtocol) -> EvalSample:
    """Degrade an 8-bit ground-truth image (HxWxC) under the protocol."""
    gt = _to_uint8(gt)
    generator = degradations.make_generator(protocol.seed, name)
    mask = None
    if protocol.task == "sr":
        s = protocol.scale
        h, w = gt.shape[0] - gt.shape[0] % s, gt.shape[1] - gt.shape[1] % s
        gt = gt[:h, :w]
        lq_pixels = degradations.bicubic_downsample_uint8(gt, s)
        lq = pixels_to_tensor(lq_pixels)
        identity = degradations.bicubic_upsample_uint8(lq_pixels, s)
    elif protocol.task == "denoise":
        lq = degradations.add_gaussian_noise(pixels_to_tensor(gt), protocol.sigma, generator)
        identity = lq
    elif protocol.task == "jpeg":
        lq_pixels = degradations.jpeg_compress_uint8(gt, protocol.quality)
        lq = pixels_to_tensor(lq_pixels)
        identity = lq_pixels
    elif protocol.task == "deblur":
        lq = degradations.gaussian_blur(pixels_to_tensor(gt), protocol.blur_sigma)
        lq = torch.round(lq.clamp(0, 1) * 255) / 255
        identity = tensor_to_pixels(lq)
    else:  # inpaint
        h, w = gt.shape[:2]
        if protocol.mask_kind == "dropout":
            mask = degradations.dropout_mask(h, w, protocol.mask_ratio, generator)
        elif protocol.mask_kind == "box":
            mask = degradations.box_mask(h, w, generator)
        else:
            mask = degradations.stroke_mask(h, w, generator)
        lq = degradations.apply_mask(pixels_to_tensor(gt), mask)
        identity = tensor_to_pixels(lq)
    return EvalSample(name=name, gt=gt, lq=lq, mask=mask, identity=identity)


def score(restored: np.ndarray | torch.Tensor, gt: np.ndarray, protocol: EvalProtocol) -> tuple[float, float]:
    """(PSNR dB, SSIM) of an output against the 8-bit ground truth under the protocol.

    ``restored`` is an 8-bit HxWxC array (what models produce after clipping and rounding) or,
    for the noisy input itself, a float CHW tensor scored as it is.
    """
    y = protocol.task == "sr" and gt.shape[-1] == 3
    border = protocol.scale if protocol.task == "sr" else 0
    restored_t = restored if isinstance(restored, torch.Tensor) else pixels_to_tensor(restored)
    gt_t = pixels_to_tensor(gt)
    return (
        float(psnr(restored_t, gt_t, crop_border=border, y_channel=y)),
        float(ssim(restored_t, gt_t, crop_border=border, y_channel=y)),
    )


def load_images(images: str, limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """(file name, pixels) of the images under a folder/URI, sorted by name."""
    uris = storage.list_images(images)
    if not uris:
        raise ValueError(f"no images found under {images}")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        uris = uris[:limit]
    return [(uri.rsplit("/", 1)[-1], decode_image(storage.read_bytes(uri)).pixels) for uri in uris]


RestoreFn = Callable[[EvalSample], np.ndarray]


def build_restorer(
    model: str, protocol: EvalProtocol, *, device: str | None = None, ensemble: int = 1
) -> tuple[RestoreFn, dict]:
    """A function from sample to 8-bit output, and a description of the model for the report.
    ``ensemble``: the Predictor's geometric self-ensemble (1, 2, 4 or 8 passes)."""
    if model in CLASSICAL_MODELS:
        if protocol.task not in CLASSICAL_MODELS[model]:
            raise ValueError(f"{model} is a baseline for {', '.join(CLASSICAL_MODELS[model])}, not {protocol.task!r}")
        return _classical(model, protocol), {"model": model}
    from restoration.checkpoint import load_checkpoint, resolve_model
    from restoration.inference import Predictor

    checkpoint = load_checkpoint(resolve_model(model, protocol.task))
    config = checkpoint.model.config
    if config.task != protocol.task:
        raise ValueError(f"model {model} restores {config.task!r}, but --task is {protocol.task!r}")
    if protocol.task == "sr" and config.scale != protocol.scale:
        raise ValueError(f"model {model} upscales x{config.scale}, but --scale is {protocol.scale}")
    predictor = Predictor(checkpoint.model, device=device, ensemble=ensemble)

    def restore(sample: EvalSample) -> np.ndarray:
        out = predictor.restore(sample.lq, sample.mask)
        return tensor_to_pixels(out.clamp(0, 1))

    return restore, {"model": str(model), "model_id": checkpoint.model_id, "alpha": checkpoint.model.alphas(),
                     "ensemble": ensemble}


def _classical(name: str, protocol: EvalProtocol) -> RestoreFn:
    if name in ("identity", "bicubic"):
        return lambda sample: sample.identity
    if name == "bm3d":
        try:
            import bm3d
        except ImportError as exc:
            raise ValueError("the bm3d baseline needs the 'bm3d' package: pip install 'restoration[classical]'") from exc

        def run_bm3d(sample: EvalSample) -> np.ndarray:
            noisy = sample.lq.permute(1, 2, 0).numpy().astype(np.float64)
            if noisy.shape[-1] == 3:
                out = bm3d.bm3d_rgb(noisy, protocol.sigma / 255.0)
            else:
                out = bm3d.bm3d(noisy[..., 0], protocol.sigma / 255.0)[..., None]
            return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)

        return run_bm3d
    try:
        import cv2
    except ImportError as exc:
        raise ValueError(f"the {name} baseline needs OpenCV: pip install 'restoration[classical]'") from exc
    if name == "nlm":

        def run_nlm(sample: EvalSample) -> np.ndarray:
            # OpenCV works on 8-bit input, so the noisy image is clipped and rounded first. The
            # colored variant filters in Lab; h = 0.55 sigma was the best of a sweep (h from 8 to 18
            # at sigma 25 on two CBSD68 images: 25.1 dB against 23.6 dB at h = 0.9 sigma).
            noisy = tensor_to_pixels(sample.lq.clamp(0, 1))
            h = 0.55 * protocol.sigma
            if noisy.shape[-1] == 3:
                return cv2.fastNlMeansDenoisingColored(noisy, None, h, h, 7, 21)
            return cv2.fastNlMeansDenoising(noisy[..., 0], None, h, 7, 21)[..., None]

        return run_nlm

    def run_telea(sample: EvalSample) -> np.ndarray:
        holes = sample.mask[0].numpy().astype(np.uint8)
        image = sample.identity
        out = cv2.inpaint(image if image.shape[-1] == 3 else image[..., 0], holes, 3, cv2.INPAINT_TELEA)
        return out if out.ndim == 3 else out[..., None]

    return run_telea


def evaluate(
    model: str,
    protocol: EvalProtocol,
    images: str,
    *,
    limit: int | None = None,
    device: str | None = None,
    ensemble: int = 1,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """Run the protocol over a folder of images; returns the JSON-ready report."""
    if ensemble != 1 and model in CLASSICAL_MODELS:
        raise ValueError(f"--ensemble applies to trained models, not to the {model} baseline")
    restore, model_info = build_restorer(model, protocol, device=device, ensemble=ensemble)
    rows = []
    total_seconds = 0.0
    for name, pixels in load_images(images, limit):
        sample = make_sample(name, pixels, protocol)
        start = time.perf_counter()
        restored = restore(sample)
        seconds = time.perf_counter() - start
        total_seconds += seconds
        value_psnr, value_ssim = score(restored, sample.gt, protocol)
        row = {"name": name, "psnr": value_psnr, "ssim": value_ssim, "seconds": seconds}
        rows.append(row)
        if progress:
            progress(row)
    return {
        "psnr": float(np.mean([r["psnr"] for r in rows])),
        "ssim": float(np.mean([r["ssim"] for r in rows])),
        "images": rows,
        "seconds_per_image": total_seconds / len(rows),
        "task": protocol.task,
        "model": model_info,
        "protocol": protocol.describe(),
        "image_dir": images,
    }


def format_table(report: dict) -> str:
    lines = [f"{'image':<32} {'PSNR (dB)':>10} {'SSIM':>8} {'seconds':>9}"]
    for r in report["images"]:
        lines.append(f"{r['name']:<32} {r['psnr']:>10.2f} {r['ssim']:>8.4f} {r['seconds']:>9.3f}")
    lines.append(
        f"{'mean (' + str(len(report['images'])) + ' images)':<32} {report['psnr']:>10.2f} "
        f"{report['ssim']:>8.4f} {report['seconds_per_image']:>9.3f}"
    )
    return "\n".join(lines)


def write_json(report: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2) + "\n")

"""Quality measured the way the papers measure it, and on named real-world cases.

A protocol is a task's spec with its ranges fixed (``restoration.tasks.specs``), e.g.
``get_task("denoise").protocol(sigma=25)``:

- ``denoise``: N(0, sigma) on the 0-255 scale is added to the 8-bit image, not clipped before the
  model; the noise is seeded per image from (seed, file name).
- ``sr``: the HR image is cropped to a multiple of the scale, LR is its bicubic downscaling (PIL,
  as the published bicubic numbers); PSNR/SSIM on the BT.601 Y channel with a ``scale``-pixel
  border crop.
- ``jpeg``: PIL JPEG at the quality; ``deblur``: Gaussian blur of the given sigma, 8-bit;
  ``inpaint``: pixels dropped at ``mask_ratio`` (or box/stroke masks), seeded per image.
- a real-world case (``restoration.tasks.specs.CASES``, ``--case``): a fixed chain of blur, resizing,
  noise and JPEG, on the color image or on its gray version; any model without a mask input or
  upscaling can be measured on it.

PSNR and SSIM are computed on the clipped, 8-bit-rounded output against the 8-bit ground truth,
for every method alike (``identity`` too: the degraded input as an 8-bit image).
Gray images stay gray in and out.

Models: a checkpoint directory, ``default`` (the shipped checkpoint for the task),
``identity`` -- the degraded input itself (bicubic upsampling for SR), the reference a model must
beat -- or a classical baseline (``CLASSICAL_MODELS``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from restoration.io.images import read_images
from restoration.io.pixels import tensor_to_pixels
from restoration.models.interface import ModelTraits
from restoration.quality.metrics import score
from restoration.quality.routing import (
    ROUTED_TASK,
    RoutedRestorer,
    is_route,
    load_route,
)
from restoration.tasks.specs import (
    Case,
    DeblurTask,
    DenoiseTask,
    EvalSample,
    GeneralTask,
    TaskSpec,
)

# Reference methods users know, run under the same protocol as the models:
#   identity        the degraded input itself (bicubic upsampling for SR)
#   bicubic         SR: PIL bicubic upsampling (the same as identity, under its usual name)
#   bm3d            noise: CBM3D / BM3D (PyPI ``bm3d``, ``pip install restoration[classical]``),
#                   given the true sigma
#   nlm             noise: OpenCV fast non-local means (colored), h set from the true sigma
#   wiener          Gaussian blur: scikit-image's Wiener deconvolution with the true kernel
#   richardson-lucy Gaussian blur: scikit-image's Richardson-Lucy with the true kernel
#   telea           inpaint: OpenCV Telea fast marching
CLASSICAL_MODELS = {
    "identity": "any task or case",
    "bicubic": "sr",
    "bm3d": "denoise, or a case with Gaussian noise",
    "nlm": "denoise, or a case with Gaussian noise",
    "wiener": "deblur (Gaussian), or a blur-only case",
    "richardson-lucy": "deblur (Gaussian), or a blur-only case",
    "telea": "inpaint",
}


RestoreFn = Callable[[EvalSample], np.ndarray]


def _check_model_fits(traits: ModelTraits, spec: TaskSpec, model: str) -> None:
    """A model can run ``spec``: a fused model its own task's protocol, or, when neither the model
    nor the protocol has a mask input or upscales, any other protocol or real-world case (e.g. the
    general model under the Gaussian denoising protocol); a community model any protocol whose
    mask input and scale fit it."""
    plain = not (traits.takes_mask or traits.scale > 1 or spec.mask_input or spec.upscale)
    if plain:
        return
    misfit = traits.misfit(spec.name)
    if misfit is not None:
        raise ValueError(f"model {model} is {misfit}, but --task is {spec.name!r}")
    if traits.scale != spec.scale:
        raise ValueError(f"model {model} upscales x{traits.scale}, but --scale is {spec.scale}")


def build_restorer(
    model: str, spec: TaskSpec, *, task: str | None = None, device: str | None = None, ensemble: int = 1,
    strength: float = 1.0,
) -> tuple[RestoreFn, dict]:
    """A function from sample to 8-bit output, and a description of the model for the report.
    ``task``: the model's task, for ``default`` (default: the spec's); ``ensemble``: the
    Predictor's geometric self-ensemble (1, 2, 4 or 8 passes); ``strength``: the Predictor's
    restoration strength in [0, 1]."""
    if model in CLASSICAL_MODELS:
        return _classical(model, spec), {"model": model}
    if is_route(model):
        return _routed(model, spec, device=device, ensemble=ensemble)
    from restoration.models.checkpoint import load_checkpoint, resolve_model
    from restoration.models.predictor import Predictor, PredictorConfig

    checkpoint = load_checkpoint(resolve_model(model, task or spec.name))
    traits = checkpoint.model.traits
    _check_model_fits(traits, spec, model)
    predictor = Predictor(checkpoint.model, PredictorConfig(ensemble=ensemble, strength=strength), device=device)

    def restore(sample: EvalSample) -> np.ndarray:
        out = predictor.restore(sample.lq, sample.mask)
        return tensor_to_pixels(out.clamp(0, 1))

    info = {"model": str(model), "model_id": checkpoint.model_id, "task": traits.task,
            "architecture": traits.architecture, "ensemble": ensemble}
    info.update(checkpoint.model.describe())  # e.g. the fused model's fusion weights, "alpha"
    if strength != 1.0:
        info["strength"] = strength
    return restore, info


def _routed(route: str, spec: TaskSpec, *, device: str | None, ensemble: int) -> tuple[RestoreFn, dict]:
    """A route (``auto`` or a route file) as a restorer (:class:`RoutedRestorer`): each
    degraded image is measured from its pixels (there is no file, so no JPEG tables: conditions on
    ``jpeg_quality`` do not hold, those on ``blockiness`` do) and restored by the model its route
    gives it, or returned as it is. The report's model counts the routes taken."""
    from restoration.models.predictor import PredictorConfig

    if spec.mask_input or spec.upscale:
        raise ValueError(f"a route restores at the same size without a mask; --task {spec.name} does not fit it")
    restorer = RoutedRestorer(load_route(route), PredictorConfig(ensemble=ensemble), device=device)
    routes: dict[str, int] = {}

    def restore(sample: EvalSample) -> np.ndarray:
        restored, decision = restorer.restore_pixels(tensor_to_pixels(sample.lq.clamp(0, 1)))
        routes[decision.route] = routes.get(decision.route, 0) + 1
        return restored

    info = {"model": route, "model_id": restorer.router.model_id, "task": ROUTED_TASK, "architecture": "route",
            "ensemble": ensemble, "models": restorer.router.spec.used_models(), "routes": routes}
    return restore, info


def _noise_sigma(spec: TaskSpec, name: str) -> float:
    """The true Gaussian sigma of a protocol or case (what BM3D and NLM are given)."""
    if isinstance(spec, DenoiseTask) and spec.poisson_probability == 0 and spec.jpeg_probability == 0:
        return float(spec.sigma_range[0])
    if isinstance(spec, GeneralTask) and spec.noise_probability == 1 and spec.poisson_probability == 0:
        return float(spec.sigma_range[0])
    raise ValueError(f"{name} is a baseline for denoise (Gaussian noise of a known sigma) or a case with "
                     f"Gaussian noise, not for {spec.name!r} with these settings")


def _blur_sigma(spec: TaskSpec, name: str) -> float:
    """The true Gaussian blur sigma of a blur-only protocol or case (the deconvolution's kernel)."""
    if isinstance(spec, DeblurTask) and spec.blur_kinds == ("gaussian",) and spec.noise_probability == 0:
        return float(spec.blur_sigma_range[0])
    if (isinstance(spec, GeneralTask) and spec.blur_probability == 1 and spec.blur_kinds == ("gaussian",)
            and spec.noise_probability == 0 and spec.resize_probability == 0):
        return float(spec.blur_sigma_range[0])
    raise ValueError(f"{name} is a baseline for deblur (a known Gaussian blur) or a blur-only case, "
                     f"not for {spec.name!r} with these settings")


def _per_channel(image: np.ndarray, restore: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply a float [0, 1] single-channel restorer to every channel of an 8-bit HxWxC image."""
    planes = [restore(image[..., c].astype(np.float64) / 255.0) for c in range(image.shape[-1])]
    return np.round(np.clip(np.stack(planes, axis=-1), 0, 1) * 255).astype(np.uint8)


# Deconvolution settings, from a sweep at blur sigma 1.6 on the first 4 CBSD68 images (input
# 25.50 dB): Wiener balance 0.002 / 0.005 / 0.01 / 0.02 / 0.05 / 0.1 gave 26.15 / 26.49 / 26.56 /
# 26.50 / 26.27 / 26.02 dB; Richardson-Lucy 3 / 5 / 10 / 20 iterations 24.90 / 24.59 / 23.59 /
# 22.63 dB (below the input: it amplifies the 8-bit rounding and the zero-padded borders).
WIENER_BALANCE = 0.01
RICHARDSON_LUCY_ITERATIONS = 3


def _classical(name: str, spec: TaskSpec) -> RestoreFn:
    if name == "identity" or (name == "bicubic" and spec.upscale):
        return lambda sample: sample.identity
    if name == "bicubic":
        raise ValueError(f"bicubic is a baseline for sr, not {spec.name!r}")
    if name in ("bm3d", "nlm"):
        sigma = _noise_sigma(spec, name)
        if name == "bm3d":
            try:
                import bm3d
            except ImportError as exc:
                raise ValueError("the bm3d baseline needs the 'bm3d' package: pip install 'restoration[classical]'") from exc

            def run_bm3d(sample: EvalSample) -> np.ndarray:
                noisy = sample.lq.permute(1, 2, 0).numpy().astype(np.float64)
                if noisy.shape[-1] == 3:
                    out = bm3d.bm3d_rgb(noisy, sigma / 255.0)
                else:
                    out = bm3d.bm3d(noisy[..., 0], sigma / 255.0)[..., None]
                return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)

            return run_bm3d
        cv2 = _opencv(name)

        def run_nlm(sample: EvalSample) -> np.ndarray:
            # OpenCV works on 8-bit input, so the noisy image is clipped and rounded first. The
            # colored variant filters in Lab; h = 0.55 sigma was the best of a sweep (h from 8 to 18
            # at sigma 25 on two CBSD68 images: 25.1 dB against 23.6 dB at h = 0.9 sigma).
            noisy = tensor_to_pixels(sample.lq.clamp(0, 1))
            h = 0.55 * sigma
            if noisy.shape[-1] == 3:
                return cv2.fastNlMeansDenoisingColored(noisy, None, h, h, 7, 21)
            return cv2.fastNlMeansDenoising(noisy[..., 0], None, h, 7, 21)[..., None]

        return run_nlm
    if name in ("wiener", "richardson-lucy"):
        from skimage import restoration as skr

        from restoration.tasks.degradations import gaussian_kernel

        psf = gaussian_kernel(_blur_sigma(spec, name)).double().numpy()
        if name == "wiener":
            return lambda sample: _per_channel(sample.identity, lambda p: skr.wiener(p, psf, WIENER_BALANCE, clip=True))
        return lambda sample: _per_channel(
            sample.identity, lambda p: skr.richardson_lucy(p, psf, num_iter=RICHARDSON_LUCY_ITERATIONS, clip=True))
    if not spec.mask_input:
        raise ValueError(f"telea is a baseline for inpaint, not {spec.name!r}")
    cv2 = _opencv(name)

    def run_telea(sample: EvalSample) -> np.ndarray:
        holes = sample.mask[0].numpy().astype(np.uint8)
        image = sample.identity
        out = cv2.inpaint(image if image.shape[-1] == 3 else image[..., 0], holes, 3, cv2.INPAINT_TELEA)
        return out if out.ndim == 3 else out[..., None]

    return run_telea


def _opencv(name: str):
    try:
        import cv2
    except ImportError as exc:
        raise ValueError(f"the {name} baseline needs OpenCV: pip install 'restoration[classical]'") from exc
    return cv2


def evaluate(
    model: str,
    spec: TaskSpec | Case,
    images: str,
    *,
    task: str | None = None,
    seed: int = 0,
    limit: int | None = None,
    device: str | None = None,
    ensemble: int = 1,
    strength: float = 1.0,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """Run a protocol (a task's fixed-point spec) or a real-world case over a folder of images;
    returns the JSON-ready report. ``task`` names the model's task for ``default`` (a case is
    measured with the shipped model of any task that needs no mask and does not upscale)."""
    if ensemble != 1 and model in CLASSICAL_MODELS:
        raise ValueError(f"--ensemble applies to trained models, not to the {model} baseline")
    if strength != 1.0 and model in CLASSICAL_MODELS:
        raise ValueError(f"--strength applies to trained models, not to the {model} baseline")
    case = spec if isinstance(spec, Case) else None
    spec = case.spec if case else spec
    restore, model_info = build_restorer(model, spec, task=task, device=device, ensemble=ensemble,
                                         strength=strength)
    rows = []
    total_seconds = 0.0
    for name, pixels in read_images(images, limit):
        sample = spec.sample(name, case.prepare(pixels) if case else pixels, seed=seed)
        start = time.perf_counter()
        restored = restore(sample)
        seconds = time.perf_counter() - start
        total_seconds += seconds
        value_psnr, value_ssim = score(restored, sample.gt, spec)
        row = {"name": name, "psnr": value_psnr, "ssim": value_ssim, "seconds": seconds}
        rows.append(row)
        if progress:
            progress(row)
    protocol = {**spec.describe(), "seed": seed}
    if case:
        protocol = {"case": case.name, "description": case.description, "gray": case.gray, **protocol}
    return {
        "psnr": float(np.mean([r["psnr"] for r in rows])),
        "ssim": float(np.mean([r["ssim"] for r in rows])),
        "images": rows,
        "seconds_per_image": total_seconds / len(rows),
        "task": model_info.get("task", task or spec.name),
        "model": model_info,
        "protocol": protocol,
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

"""The Task layer: one spec per task -- training sampling, protocols as fixed points, real-world
cases, validation of every field, and the new real-world degradation blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from restoration.tasks.degradations import (
    add_correlated_gaussian_noise,
    add_gaussian_noise,
    add_gray_gaussian_noise,
    add_gray_poisson_noise,
    anisotropic_gaussian_blur,
    anisotropic_gaussian_kernel,
    gaussian_blur,
    make_generator,
    resize_down_up,
)
from restoration.tasks.specs import (
    CASES,
    TASK_NAMES,
    TASK_SPECS,
    DeblurTask,
    DenoiseTask,
    GeneralTask,
    InpaintTask,
    JpegTask,
    SuperResolutionTask,
    get_case,
    get_task,
)


@pytest.fixture(scope="module")
def image(astronaut: np.ndarray) -> torch.Tensor:
    """A 3x256x256 crop of the astronaut photo."""
    return torch.from_numpy(np.array(astronaut[100:356, 150:406])).permute(2, 0, 1).float() / 255.0


def test_registry_matches_the_task_names() -> None:
    assert TASK_NAMES == ("denoise", "deblur", "jpeg", "sr", "inpaint", "general")
    for name, spec in TASK_SPECS.items():
        assert spec.name == name and get_task(name) is spec and spec.summary
    with pytest.raises(ValueError, match=r"unknown task 'colorize'.*denoise.*general"):
        get_task("colorize")


@pytest.mark.parametrize("task", TASK_NAMES)
def test_degrade_shapes_and_determinism(image: torch.Tensor, task: str) -> None:
    gt = image[:, :94, :130]  # not a multiple of 4: sr must crop
    spec = get_task(task)()
    degraded = spec.degrade(gt, make_generator(0, "img.png", 1))
    again = spec.degrade(gt, make_generator(0, "img.png", 1))
    assert torch.equal(degraded.lq, again.lq) and degraded.params == again.params
    lq, extra = degraded.lq, degraded.params
    assert lq.dtype == torch.float32
    if spec.upscale:
        assert lq.shape == (3, 94 // 4, 130 // 4)
        assert degraded.gt.shape == (3, 92, 128) and extra["scale"] == 4 == spec.scale
    else:
        assert lq.shape == gt.shape and degraded.gt.shape == gt.shape
        assert not torch.equal(lq, gt) or task == "denoise"
    if spec.mask_input:
        assert degraded.mask.shape == (1, 94, 130)
        assert extra["mask_kind"] in spec.mask_kinds
        assert torch.all(lq[degraded.mask.bool().expand_as(lq)] == 0)
    else:
        assert degraded.mask is None
    if task == "denoise":
        assert 0.0 <= extra["sigma"] <= 50.0
    if task == "jpeg":
        assert 10 <= extra["quality"] <= 90
    if task == "deblur":
        assert extra["blur"] in ("gaussian", "motion")


def test_fixed_sigma_matches_add_gaussian_noise(image: torch.Tensor) -> None:
    spec = DenoiseTask(sigma_range=(25, 25))
    degraded = spec.degrade(image, make_generator(0, "a"))
    assert degraded.params == {"sigma": 25.0}
    assert (degraded.lq - image).std().item() == pytest.approx(25 / 255, rel=0.02)
    # A fixed point consumes no draw: the protocol's noise is the plain function's, bit for bit.
    assert torch.equal(degraded.lq, add_gaussian_noise(image, 25, make_generator(0, "a")))
    protocol = DenoiseTask.protocol(sigma=25)
    assert protocol.sigma_range == (25, 25) and protocol.jpeg_probability == 0


def test_samples_differ_across_epochs(image: torch.Tensor) -> None:
    crop = image[:, :32, :32]
    qualities = {JpegTask().degrade(crop, make_generator(0, "a", epoch)).params["quality"] for epoch in range(8)}
    assert len(qualities) > 1


def test_other_variants(image: torch.Tensor) -> None:
    gt = image[:, :64, :64]
    degraded = DenoiseTask(poisson_probability=1.0).degrade(gt, make_generator(0))
    assert degraded.lq.shape == gt.shape and 5 <= degraded.params["peak"] <= 100
    degraded = DeblurTask(blur_kinds=("motion",)).degrade(gt, make_generator(0))
    assert degraded.params["blur"] == "motion" and 5 <= degraded.params["length"] <= 21
    degraded = SuperResolutionTask(scale=3).degrade(gt, make_generator(0))
    assert degraded.lq.shape == (3, 21, 21) and degraded.gt.shape == (3, 63, 63)
    degraded = InpaintTask(mask_kinds=["box"]).degrade(gt, make_generator(0))
    assert degraded.params["mask_kind"] == "box"
    degraded = DeblurTask(noise_probability=1.0, noise_sigma_range=(5, 5)).degrade(gt, make_generator(0))
    assert degraded.params["sigma"] == 5.0
    assert torch.equal(degraded.lq, torch.round(degraded.lq * 255) / 255)  # 8-bit input


def test_robust_denoise_variants(image: torch.Tensor) -> None:
    gt = image[:, :64, :64]
    kinds = set()
    for index in range(24):
        spec = DenoiseTask(gray_noise_probability=0.3, correlated_noise_probability=0.3, poisson_probability=0.2,
                           jpeg_probability=0.5, jpeg_quality_range=(40, 90))
        degraded = spec.degrade(gt, make_generator(3, index))
        kinds.add(degraded.params.get("noise", "color"))
        if "quality" in degraded.params:
            assert 40 <= degraded.params["quality"] <= 90
            assert torch.equal(degraded.lq, torch.round(degraded.lq * 255) / 255)
    assert kinds >= {"color", "gray", "correlated"} and kinds & {"poisson", "poisson-gray"}


def test_general_chain(image: torch.Tensor) -> None:
    gt = image[:, :64, :64]
    seen: set[str] = set()
    orders = set()
    for index in range(24):
        degraded = GeneralTask().degrade(gt, make_generator(5, index))
        assert degraded.lq.shape == gt.shape
        names = [operation["name"] for operation in degraded.params["operations"]]
        assert names and not torch.equal(degraded.lq, gt)
        steps = [n for n in names if n != "jpeg"]
        assert len(steps) == len(set(steps)) <= 3
        assert all(n == "jpeg" for n in names[len(steps):])  # JPEG comes after the noise
        assert torch.equal(degraded.lq, torch.round(degraded.lq.clamp(0, 1) * 255) / 255)
        seen.update(names)
        orders.add(tuple(steps))
    assert seen == {"blur", "resize", "noise", "jpeg"}
    assert len(orders) > 4  # random order
    first = GeneralTask().degrade(gt, make_generator(5, 0))
    again = GeneralTask().degrade(gt, make_generator(5, 0))
    assert torch.equal(first.lq, again.lq) and first.params == again.params


def test_cases_are_fixed_chains(astronaut: np.ndarray) -> None:
    crop = astronaut[:64, :64]
    for name, case in CASES.items():
        sample = case.spec.sample("x.png", case.prepare(crop), seed=0)
        again = case.spec.sample("x.png", case.prepare(crop), seed=0)
        assert np.array_equal(sample.identity, again.identity), name
        assert sample.gt.shape[-1] == (1 if case.gray else 3)
        assert sample.identity.dtype == np.uint8
    assert {c.name for c in CASES.values() if c.gray} == {f"{c.name}-gray" for c in CASES.values() if not c.gray}
    blur = get_case("blur1.6")
    expected = torch.round(gaussian_blur(torch.from_numpy(crop).permute(2, 0, 1).float() / 255, 1.6) * 255)
    sample = blur.spec.sample("x.png", crop)
    assert np.array_equal(sample.identity, expected.permute(1, 2, 0).numpy().astype(np.uint8))
    with pytest.raises(ValueError, match="unknown case 'nope'.*noise15-jpeg60"):
        get_case("nope")


def test_protocol_flags_and_errors() -> None:
    assert DeblurTask.protocol(blur_sigma=2.0).blur_sigma_range == (2.0, 2.0)
    assert InpaintTask.protocol(mask_kind="box").mask_kinds == ("box",)
    assert SuperResolutionTask.protocol(scale=2).scale == 2
    assert JpegTask.protocol().quality_range == (10, 10)
    with pytest.raises(ValueError, match="unknown protocol setting 'sigma'"):
        JpegTask.protocol(sigma=25)
    with pytest.raises(ValueError, match=r"quality_range.*\[1, 100\]"):
        JpegTask.protocol(quality=0)


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        (DenoiseTask, {"sigma_range": (-5, 10)}, r"sigma_range.*\(-5, 10\)"),
        (DenoiseTask, {"sigma_range": (30, 10)}, r"low <= high.*\(30, 10\)"),
        (DenoiseTask, {"jpeg_probability": 1.5}, r"jpeg_probability.*\[0, 1\].*1\.5"),
        (JpegTask, {"quality_range": (0, 50)}, r"quality_range.*\[1, 100\].*\(0, 50\)"),
        (JpegTask, {"quality_range": (10, 101)}, r"quality_range.*\(10, 101\)"),
        (SuperResolutionTask, {"scale": 8}, r"scale must be one of \(2, 3, 4\).*8"),
        (InpaintTask, {"dropout_ratio_range": (0.1, 1.0)}, r"dropout_ratio_range.*\[0, 1\)"),
        (InpaintTask, {"mask_kinds": ("box", "blob")}, r"mask_kinds \['blob'\]"),
        (DeblurTask, {"blur_kinds": ()}, r"blur_kinds must name at least one"),
        (DeblurTask, {"blur_sigma_range": (0, 2)}, r"blur_sigma_range must be > 0"),
        (GeneralTask, {"order": ("noise", "sharpen")}, r"degradation.order must list distinct steps"),
        (GeneralTask, {"resize_modes": ("lanczos",)}, r"resize_modes \['lanczos'\]"),
    ],
)
def test_spec_validation(spec, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec(**kwargs)


def test_spec_normalizes_yaml_lists() -> None:
    spec = DenoiseTask(sigma_range=[15, 15])  # type: ignore[arg-type]
    assert spec.sigma_range == (15, 15)
    # Frozen, comparable and hashable: two equal specs collapse into one set element.
    assert len({spec, DenoiseTask(sigma_range=(15, 15))}) == 1


def test_degrade_takes_one_chw_image(image: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="one CHW"):
        DenoiseTask().degrade(image[None], make_generator(0))


def test_real_world_blocks(image: torch.Tensor) -> None:
    x = image[:, :64, :64]
    gray = add_gray_gaussian_noise(x, 20, make_generator(1)) - x
    assert torch.allclose(gray[0], gray[1], atol=1e-6) and torch.allclose(gray[1], gray[2], atol=1e-6)
    assert gray.std().item() == pytest.approx(20 / 255, rel=0.05)
    correlated = add_correlated_gaussian_noise(x, 20, make_generator(2)) - x
    flat = correlated.reshape(3, -1)
    assert flat.pow(2).mean().sqrt().item() == pytest.approx(20 / 255, rel=0.1)
    assert not torch.allclose(flat[0], flat[1])
    noisy = add_gray_poisson_noise(x, 50, make_generator(3))
    shot = noisy - x
    inside = ((noisy > 0) & (noisy < 1)).all(0)  # away from the clipping at 0 and 1
    assert torch.allclose(shot[0][inside], shot[1][inside], atol=1e-6)
    kernel = anisotropic_gaussian_kernel(3.0, 0.5, 0.0)
    assert kernel.sum().item() == pytest.approx(1.0)
    assert kernel[kernel.shape[0] // 2].sum() > kernel[:, kernel.shape[1] // 2].sum()  # wide along x
    blurred = anisotropic_gaussian_blur(x, 2.0, 2.0, 30.0)
    assert torch.allclose(blurred, gaussian_blur(x, 2.0), atol=1e-5)
    small = resize_down_up(x, 0.5, "area", "bicubic")
    assert small.shape == x.shape and not torch.equal(small, x)
    with pytest.raises(ValueError, match=r"resize factor.*\(0, 1\]"):
        resize_down_up(x, 1.5, "area", "area")
    with pytest.raises(ValueError, match="unknown resize mode 'lanczos'"):
        resize_down_up(x, 0.5, "lanczos", "area")

"""`restoration evaluate`: the literature's protocols reproduce the published reference numbers."""

import json

import numpy as np
import pytest
import torch

from restoration.cli import main
from restoration.models.checkpoint import save_checkpoint
from restoration.models.fused import ModelConfig, build_model
from restoration.quality.evaluate import evaluate
from restoration.tasks.specs import get_task

SMALL = (8, 8, 16, 16, 24, 24)


def test_identity_denoise_is_the_noise_level(cbsd68_dir):
    report = evaluate("identity", get_task("denoise").protocol(sigma=25), str(cbsd68_dir))
    assert len(report["images"]) == 68
    # The noisy image as 8 bits, scored like every model's output: clipping removes part of the
    # noise, so it is above 20 log10(255 / 25) = 20.17 dB, the unclipped noise alone.
    assert report["psnr"] == pytest.approx(20.53, abs=0.05)


def test_a_model_at_strength_zero_scores_what_identity_scores(cbsd68_dir):
    # One evaluation input for models and for identity: the model sees the unclipped noisy image,
    # returns it unchanged at strength 0, and its 8-bit output is scored as identity's is.
    protocol = get_task("denoise").protocol(sigma=25)
    unchanged = evaluate("default", protocol, str(cbsd68_dir), limit=2, strength=0.0)
    identity = evaluate("identity", protocol, str(cbsd68_dir), limit=2)
    assert [r["psnr"] for r in unchanged["images"]] == [r["psnr"] for r in identity["images"]]
    assert [r["ssim"] for r in unchanged["images"]] == [r["ssim"] for r in identity["images"]]


def test_identity_sr_x4_is_published_bicubic(set5_dir):
    report = evaluate("identity", get_task("sr").protocol(scale=4), str(set5_dir))
    assert report["psnr"] == pytest.approx(28.42, abs=0.05)


def test_identity_jpeg_matches_published_input(classic5_dir):
    assert evaluate("identity", get_task("jpeg").protocol(quality=10), str(classic5_dir))["psnr"] == pytest.approx(
        27.82, abs=0.05
    )
    assert evaluate("identity", get_task("jpeg").protocol(quality=20), str(classic5_dir))["psnr"] == pytest.approx(
        30.12, abs=0.05
    )


def test_noise_is_seeded_per_image_name(astronaut):
    protocol = get_task("denoise").protocol(sigma=25)
    a = protocol.sample("a.png", astronaut, seed=0).lq
    assert torch.equal(a, protocol.sample("a.png", astronaut, seed=0).lq)
    assert not torch.equal(a, protocol.sample("b.png", astronaut, seed=0).lq)
    assert not torch.equal(a, protocol.sample("a.png", astronaut, seed=1).lq)
    assert a.min() < 0 or a.max() > 1  # not clipped before the model


def test_cli_with_checkpoint_writes_json(tmp_path, classic5_dir, capsys):
    # An untrained model is the identity (zero-initialized head), so on gray JPEG input it must
    # reproduce the JPEG input's PSNR exactly -- and gray images must stay gray through the model.
    model = build_model(ModelConfig(task="jpeg", widths=SMALL))
    save_checkpoint(model, tmp_path / "ckpt")
    out = tmp_path / "report.json"
    code = main(["evaluate", "--model", str(tmp_path / "ckpt"), "--task", "jpeg", "--quality", "10",
                 "--images", str(classic5_dir), "--limit", "2", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report) >= {"psnr", "ssim", "images", "seconds_per_image", "task", "model", "protocol"}
    assert len(report["images"]) == 2 and report["task"] == "jpeg"
    identity = evaluate("identity", get_task("jpeg").protocol(quality=10), str(classic5_dir), limit=2)
    assert report["psnr"] == pytest.approx(identity["psnr"], abs=1e-6)
    printed = capsys.readouterr().out
    assert "mean (2 images)" in printed and "PSNR" in printed


def test_inpaint_protocol_masks_the_requested_fraction(astronaut):
    sample = get_task("inpaint").protocol(mask_ratio=0.25).sample("x.png", astronaut)
    assert sample.mask.mean().item() == pytest.approx(0.25, abs=0.01)
    assert np.all(sample.identity[sample.mask[0].numpy() > 0] == 0)


def test_user_errors(tmp_path, capsys, set5_dir):
    model = build_model(ModelConfig(task="denoise", widths=SMALL))
    save_checkpoint(model, tmp_path / "denoiser")
    assert main(["evaluate", "--model", str(tmp_path / "denoiser"), "--task", "sr",
                 "--images", str(set5_dir)]) == 2
    assert "is a 'denoise' model, but --task is 'sr'" in capsys.readouterr().err
    assert main(["evaluate", "--model", "identity", "--task", "denoise", "--images", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--model", "identity", "--task", "denoise", "--images", str(tmp_path / "empty")]) == 2
    assert "no images found" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"quality_range must lie within \[1, 100\]"):
        get_task("jpeg").protocol(quality=0)


@pytest.mark.parametrize("model,task,better_than_identity_by", [("nlm", "denoise", 3.0), ("telea", "inpaint", 5.0)])
def test_classical_baselines_beat_identity(cbsd68_dir, model, task, better_than_identity_by):
    protocol = get_task(task).protocol(**({"sigma": 25} if task == "denoise" else {"mask_ratio": 0.5}))
    baseline = evaluate(model, protocol, str(cbsd68_dir), limit=1)
    identity = evaluate("identity", protocol, str(cbsd68_dir), limit=1)
    assert baseline["psnr"] > identity["psnr"] + better_than_identity_by
    with pytest.raises(ValueError, match="baseline for denoise"):
        evaluate("bm3d", get_task("sr").protocol(), str(cbsd68_dir), limit=1)


def test_real_world_case_cli(tmp_path, cbsd68_dir, capsys):
    out = tmp_path / "case.json"
    assert main(["evaluate", "--model", "identity", "--case", "noise15-jpeg60-gray", "--images", str(cbsd68_dir),
                 "--limit", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["protocol"]["case"] == "noise15-jpeg60-gray" and report["protocol"]["gray"] is True
    assert 24.0 < report["psnr"] < 32.0  # sigma-15 noise, partly smoothed by JPEG 60
    # A case is a fixed degradation: protocol flags are refused, and so is a model that upscales.
    capsys.readouterr()
    assert main(["evaluate", "--model", "identity", "--case", "blur1.6", "--sigma", "5",
                 "--images", str(cbsd68_dir)]) == 2
    assert "--case blur1.6 is a fixed degradation" in capsys.readouterr().err
    model = build_model(ModelConfig(task="sr", scale=4, widths=SMALL))
    save_checkpoint(model, tmp_path / "sr")
    assert main(["evaluate", "--model", str(tmp_path / "sr"), "--case", "blur1.6", "--images", str(cbsd68_dir)]) == 2
    assert "is a 'sr' model, but --task is" in capsys.readouterr().err


def test_help_lists_cases_and_protocols(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    for name in ("noise15-jpeg60", "strong", "shot-jpeg75", "--blur-sigma", "general"):
        assert name in text


def test_deconvolution_baselines_beat_identity(cbsd68_dir):
    protocol = get_task("deblur").protocol(blur_sigma=1.6)
    identity = evaluate("identity", protocol, str(cbsd68_dir), limit=4)["psnr"]
    # Wiener with the true kernel: +1.06 dB on these 4 images (the sweep in restoration/quality/evaluate.py).
    assert evaluate("wiener", protocol, str(cbsd68_dir), limit=4)["psnr"] > identity + 0.8
    # Richardson-Lucy is measured, not tuned to win: it falls below the 8-bit input (same sweep).
    assert abs(evaluate("richardson-lucy", protocol, str(cbsd68_dir), limit=4)["psnr"] - identity) > 0.1
    with pytest.raises(ValueError, match="baseline for deblur"):
        evaluate("wiener", get_task("deblur").protocol(blur_kinds=("motion",)), str(cbsd68_dir), limit=1)

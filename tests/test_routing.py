"""Per-image routing (restoration/restore/routing.py): conditions and route files, and ``restore
--model auto`` / ``--route FILE`` in a run: the measures and the route of every image in the
manifest, a clean image written back byte for byte, each routed image restored by its model at
its strength and noise level, a re-run that skips what is done, and a bad route refused in one
line before anything starts."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restoration.quality.routing import AUTO, SKIP, Router, load_route, parse_condition

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# Conditions and route files


@pytest.mark.parametrize(("condition", "measures", "holds"), [
    ("always", {}, True),
    ("noise_sigma >= 4", {"noise_sigma": 4.0}, True),
    ("noise_sigma >= 4", {"noise_sigma": 3.9}, False),
    ("jpeg_quality < 90", {"jpeg_quality": None}, False),  # unknown: false
    ("jpeg_quality == none", {"jpeg_quality": None}, True),
    ("jpeg_quality != none and jpeg_quality < 90", {"jpeg_quality": 60}, True),
    ("noise_sigma > 10 and not gray_rgb", {"noise_sigma": 12.0, "gray_rgb": True}, False),
    ("noise_sigma > 10 and not gray_rgb or is_jpeg", {"noise_sigma": 12.0, "gray_rgb": True, "is_jpeg": True}, True),
    ("gray_rgb", {"gray_rgb": True}, True),
    ("megapixels > 2 or width >= 4000", {"megapixels": 1.0, "width": 4000}, True),
    ("blur >= 0.5 and blur < 0.7", {"blur": 0.7}, False),
])
def test_conditions(condition: str, measures: dict, holds: bool) -> None:
    assert parse_condition(condition).holds(measures) is holds


@pytest.mark.parametrize(("condition", "message"), [
    ("noise_sigm >= 4", "unknown measure 'noise_sigm' (did you mean noise_sigma?)"),
    ("noise_sigma => 4", "cannot read 'noise_sigma => 4'"),
    ("noise_sigma >= high", "noise_sigma is compared with a number, got 'high'"),
    ("gray_rgb == 3", "gray_rgb is true or false, got '3'"),
    ("noise_sigma", "noise_sigma is a number; compare it"),
    ("jpeg_quality < none", "none is compared with == or != only"),
    ("noise_sigma >= 4 and", "cannot read"),
])
def test_bad_conditions_are_one_line(condition: str, message: str) -> None:
    with pytest.raises(ValueError, match="condition") as error:
        parse_condition(condition)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_route_files_are_checked(tmp_path: Path) -> None:
    def route(text: str) -> Router:
        path = tmp_path / "route.yaml"
        path.write_text(text)
        return load_route(str(path))

    router = route("models: {dn: 'default:denoise'}\nrules:\n  - {when: noise_sigma >= 8, model: dn, strength: 0.5}\n"
                   "  - {skip: true}\n")
    decision = router.decide({"noise_sigma": 9.5})
    assert (decision.route, decision.strength) == ("dn", 0.5)
    assert decision.reason == "rule 1: noise_sigma >= 8 (noise_sigma=9.5)"
    assert router.decide({"noise_sigma": 2.0}).route == SKIP
    assert router.model_id.startswith("route-") and router.model_id != load_route(AUTO).model_id
    for text, message in [
        ("models: {dn: 'default:denoise'}\nrules: [{when: noise_sigma >= 8, model: other}]",
         "rules[0] uses model 'other', which models does not define (defined: dn)"),
        ("models: {dn: 'default:denoise'}\nrules: [{when: noise_sigma >= 8, model: dn, skip: true}]",
         "give a model or skip: true"),
        ("models: {dn: 'default:denoise'}\nrules: [{model: dn, strength: 2}]", "strength must be in [0.0, 1.0], got 2"),
        ("models: {dn: 'default:denoise'}\nrules: [{when: sharpness < 3, model: dn}]", "unknown measure 'sharpness'"),
        ("models: {dn: 'default:denoise'}\nrules: [{model: dn, colour: red}]", "colour"),
        ("rules: []", "rules"),
        ("- just a list", "a route is a mapping with 'models' and 'rules'"),
    ]:
        with pytest.raises(ValueError) as error:
            route(text)
        assert message in str(error.value) and "\n" not in str(error.value), str(error.value)
    with pytest.raises(ValueError, match="cannot read it"):
        load_route(str(tmp_path / "missing.yaml"))


# --------------------------------------------------------------------------------------------
# Runs


def _jpeg(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def write_archive(folder: Path) -> Path:
    """A mixed archive of real photo crops in ``folder``: clean PNG, clean JPEG at quality 95, a
    noisy PNG (sigma 25), a JPEG at quality 20, and a noisy gray PNG (sigma 15). (The clean PNG is
    the astronaut at half size: skimage's photos are soft at full size, where the blur measure
    reads 0.33-0.45.)"""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    coffee = np.ascontiguousarray(data.coffee()[100:196, 150:246])
    astronaut = np.ascontiguousarray(data.astronaut()[40:136, 150:246])
    camera = np.ascontiguousarray(data.camera()[60:156, 200:296])

    def noisy(pixels: np.ndarray, sigma: float) -> np.ndarray:
        return np.clip(np.round(pixels + rng.normal(0, sigma, pixels.shape)), 0, 255).astype(np.uint8)

    half = Image.fromarray(data.astronaut()).resize((256, 256), Image.Resampling.LANCZOS)
    (folder / "clean.png").write_bytes(_png(np.asarray(half)[20:116, 75:171]))
    (folder / "clean-q95.jpg").write_bytes(_jpeg(astronaut, 95))
    (folder / "noisy.png").write_bytes(_png(noisy(astronaut, 25)))
    (folder / "blocky-q20.jpg").write_bytes(_jpeg(coffee, 20))
    (folder / "gray-noisy.png").write_bytes(_png(noisy(camera, 15)))
    return folder


AUTO_ROUTES = {"clean.png": SKIP, "clean-q95.jpg": SKIP, "noisy.png": "denoise", "blocky-q20.jpg": "jpeg",
               "gray-noisy.png": "denoise"}
"""Where ``--model auto`` sends each image of :func:`write_archive`."""


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_archive(tmp_path_factory.mktemp("archive"))


def _restore(*arguments: str) -> tuple[int, str]:
    from jobs.cli import main

    error = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(error):
        code = main(["restore", "--no-ray", *arguments])
    return code, error.getvalue()


def _rows(output: Path) -> dict[str, dict]:
    from restoration.restore.manifest import read_manifest

    return {Path(row["source_uri"]).name: row for row in read_manifest(str(output)).to_pylist()}


@pytest.mark.timeout(300)
def test_model_auto_routes_each_image_and_leaves_clean_ones_alone(archive: Path, tmp_path: Path) -> None:
    from restoration.models.checkpoint import load_checkpoint, resolve_model
    from restoration.models.predictor import Predictor, PredictorConfig
    from restoration.restore.summary import RestoreSummary

    code, error = _restore("--input", str(archive), "--output", str(tmp_path / "out"), "--model", "auto")
    assert code == 0, error
    rows = _rows(tmp_path / "out")
    assert {name: row["route"] for name, row in rows.items()} == AUTO_ROUTES
    assert all(row["status"] == "ok" and row["task"] == "route" and row["model_id"] == load_route(AUTO).model_id
               for row in rows.values())
    # measures in typed columns: the JPEG quality from the file's tables, none for a PNG
    assert (rows["blocky-q20.jpg"]["jpeg_quality"], rows["clean-q95.jpg"]["jpeg_quality"]) == (20, 95)
    assert rows["clean.png"]["jpeg_quality"] is None
    assert rows["noisy.png"]["noise_sigma"] > 15 > rows["clean.png"]["noise_sigma"]
    assert "noise_sigma" in rows["noisy.png"]["route_reason"] and "jpeg_quality=20" in rows["blocky-q20.jpg"]["route_reason"]
    # do no harm: the clean images are the same bytes, a skip row says why
    for name in ("clean.png", "clean-q95.jpg"):
        assert (tmp_path / "out" / name).read_bytes() == (archive / name).read_bytes()
        assert rows[name]["strength"] == 0 and rows[name]["mean_abs_change"] == 0 and rows[name]["route_reason"]
    # a routed image is what its model makes of it (the same Predictor, the same settings)
    for name, task in (("noisy.png", "denoise"), ("blocky-q20.jpg", "jpeg")):
        model = load_checkpoint(resolve_model("default", task)).model
        expected = Predictor(model, PredictorConfig(), device="cpu").restore_pixels(np.asarray(Image.open(archive / name)))
        written = np.asarray(Image.open(tmp_path / "out" / (name if name.endswith(".png") else name)))
        assert np.abs(written.astype(int) - expected.astype(int)).mean() < (1.0 if name.endswith(".png") else 2.5)
    assert np.asarray(Image.open(tmp_path / "out" / "gray-noisy.png")).ndim == 2  # gray stays gray
    summary = RestoreSummary.from_json((tmp_path / "out" / "_manifest" / "_summary.json").read_text())
    assert summary.task == "route" and summary.model is not None and summary.model.architecture == "route"
    assert sorted(summary.models or {}) == ["deblur", "denoise", "jpeg"]
    assert summary.routes == {SKIP: 2, "denoise": 2, "jpeg": 1}
    assert all(record.licence == "Apache-2.0" for record in (summary.models or {}).values())
    # the same command again: every input done, nothing restored twice
    code, error = _restore("--input", str(archive), "--output", str(tmp_path / "out"), "--model", "auto")
    assert code == 0, error
    assert {row["status"] for row in _rows(tmp_path / "out").values()} == {"skipped"}


@pytest.mark.timeout(300)
def test_a_route_file_sets_strength_and_community_models_settings(archive: Path, tmp_path: Path) -> None:
    """A user's route of community files (random instances; FBCNN's quality embedding needs its 512-channel body): FBCNN told each JPEG's quality
    from its own tables, at half strength; DRUNet with its noise-level map from each image's
    measured sigma; the rest skipped. Every routed output is what that model makes at those
    settings, and the settings made a difference."""
    import torch
    from spandrel.architectures.DRUNet import DRUNet
    from spandrel.architectures.FBCNN import FBCNN
    from test_community_models import save_model

    from restoration.models.checkpoint import load_checkpoint
    from restoration.models.predictor import Predictor, PredictorConfig

    torch.manual_seed(0)
    drunet = save_model(DRUNet(in_nc=4, out_nc=3, nc=[16, 32, 64, 128], nb=2).eval(), tmp_path / "drunet.pth")
    fbcnn = save_model(FBCNN(nc=[8, 16, 32, 512], nb=2).eval(), tmp_path / "fbcnn.safetensors")
    route = tmp_path / "route.yaml"
    route.write_text(f"""
models:
  drunet: {drunet}
  fbcnn: {fbcnn}
rules:
  - when: jpeg_quality < 50
    model: fbcnn
    strength: 0.5
    quality_factor: measured
  - when: noise_sigma >= 8 and channels == 3
    model: drunet
    noise_level: measured
  - skip: true
""")
    code, error = _restore("--input", str(archive), "--output", str(tmp_path / "out"), "--route", str(route),
                           "--set", "predictor.precision=fp32", "--set", "output.format=png")
    assert code == 0, error
    rows = _rows(tmp_path / "out")
    assert {name: row["route"] for name, row in rows.items()} == {
        "clean.png": SKIP, "clean-q95.jpg": SKIP, "noisy.png": "drunet", "blocky-q20.jpg": "fbcnn",
        "gray-noisy.png": SKIP}
    assert rows["blocky-q20.jpg"]["status"] == "ok", rows["blocky-q20.jpg"]["error"]
    assert rows["blocky-q20.jpg"]["strength"] == 0.5 and "quality_factor 20" in rows["blocky-q20.jpg"]["route_reason"]
    sigma = rows["noisy.png"]["noise_sigma"]
    assert f"noise_level {sigma:.3g}" in rows["noisy.png"]["route_reason"]

    def written(name: str) -> np.ndarray:
        return np.asarray(Image.open(tmp_path / "out" / name)).astype(int)

    noisy = np.asarray(Image.open(archive / "noisy.png"))
    model = load_checkpoint(drunet).model
    measured, fixed = (Predictor(model, PredictorConfig(noise_level=level, precision="fp32"), device="cpu")
                       .restore_pixels(noisy).astype(int) for level in (sigma, 50))
    assert np.abs(written("noisy.png") - measured).max() <= 1
    assert np.abs(measured - fixed).max() > 1  # the level made a difference
    blocky = np.asarray(Image.open(archive / "blocky-q20.jpg"))
    model = load_checkpoint(fbcnn).model
    half = Predictor(model, PredictorConfig(strength=0.5, precision="fp32"), device="cpu")
    model.quality_factor = 20
    told = half.restore_pixels(blocky).astype(int)
    model.quality_factor = None
    predicted = half.restore_pixels(blocky).astype(int)
    assert np.abs(written("blocky-q20.png") - told).max() <= 1
    assert np.abs(told - predicted).max() > 1  # the quality made a difference
    # one image's settings never reach the next: the predictor is put back after each
    from restoration.quality.routing import route_settings

    predictor = Predictor(load_checkpoint(drunet).model, PredictorConfig(), device="cpu")
    with route_settings(predictor, strength=0.5, noise_level=30.0, quality_factor=None):
        assert (predictor.strength, predictor.model.noise_level) == (0.5, 30.0)
    assert (predictor.strength, predictor.model.noise_level) == (1.0, 15.0)
    # skipped with output.format=png: a PNG input comes back byte for byte, a JPEG pixel for pixel
    assert (tmp_path / "out" / "gray-noisy.png").read_bytes() == (archive / "gray-noisy.png").read_bytes()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "clean-q95.png")),
                          np.asarray(Image.open(archive / "clean-q95.jpg")))


def _blocked_ray(tmp_path: Path) -> dict[str, str]:
    blocked = tmp_path / "blocked" / "ray"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('ray must not be imported by this command')\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env["PYTHONPATH"] = os.pathsep.join([str(blocked.parent), str(ROOT), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.timeout(120)
def test_a_bad_route_exits_2_in_one_line_before_ray(archive: Path, tmp_path: Path) -> None:
    """The Ray job's command, in a process where ``import ray`` fails: the route is read and
    refused first, so Ray is never needed."""
    route = tmp_path / "route.yaml"
    route.write_text("models: {dn: 'default:denoise'}\nrules:\n  - {when: noise_sigma >> 4, model: dn}\n")
    env = _blocked_ray(tmp_path)
    for extra, message in [(["--route", str(route)], "condition 'noise_sigma >> 4': cannot read"),
                           (["--model", "auto", "--task", "denoise"], "--task does not go with --model auto: each image gets the model its route gives it")]:
        done = subprocess.run([sys.executable, "-m", "jobs.cli", "restore", "--input", str(archive), "--output",
                               str(tmp_path / "out"), *extra], env=env, capture_output=True,
                              text=True, timeout=100, cwd=ROOT)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_the_measures_and_routes_of_a_sample(archive: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from jobs.cli import main

    assert main(["restore", "--input", str(archive), "--output", str(tmp_path / "out"), "--model", "auto",
                 "--dry-run", "--sample", "5"]) == 0
    text = capsys.readouterr().out
    assert "measured, 5 inputs" in text and "-> jpeg (rule" in text and "blocky-q20.jpg" in text
    assert main(["restore", "--input", str(archive), "--output", str(tmp_path / "out"), "--model", "auto",
                 "--dry-run", "--json", "--sample", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["sample"]) == 2 and all("noise_sigma" in item["measures"] for item in report["sample"])
    assert not (tmp_path / "out").exists()


def test_evaluate_and_compare_take_auto(archive: Path, tmp_path: Path) -> None:
    """``evaluate --model auto`` on a real-world case (measured from the degraded pixels) and
    ``compare --model auto`` beside a single model (measured from the files, JPEG tables too)."""
    import json

    from restoration.cli import main

    images = tmp_path / "photos"
    images.mkdir()
    for name in ("clean.png", "noisy.png"):
        (images / name).write_bytes((archive / name).read_bytes())
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["evaluate", "--model", "auto", "--case", "noise25-jpeg80", "--images", str(images),
                     "--json", str(tmp_path / "auto.json")]) == 0
    report = json.loads((tmp_path / "auto.json").read_text())
    assert report["task"] == "route" and report["model"]["model_id"] == load_route(AUTO).model_id
    assert sum(report["model"]["routes"].values()) == 2 and report["model"]["routes"].get("denoise") == 2
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["compare", "--input", str(archive), "--model", "auto", "--model", "default:denoise",
                     "--sample", "5", "--html", str(tmp_path / "compare.html")]) == 0
    page = (tmp_path / "compare.html").read_text()
    assert "auto: licence Apache-2.0; source route auto: denoise = default:denoise, jpeg = default:jpeg" in page

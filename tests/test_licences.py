"""Licence and provenance of every model (issue 25): a community file's licence follows its
architecture (restoration/models/community.py), a fused model of this project is Apache-2.0, and a
non-commercial model runs only with ``--accept-licence non-commercial`` on restore, evaluate,
compare and finetune; without it the command exits 2 with one line naming the licence, before any
executor (Ray) starts.

No core spandrel architecture small enough for a test is non-commercial (the FFHQ-trained face
models are hundreds of MB), so the refusal is tested on a small random Compact network with the
licence table patched to say CC BY-NC-SA; the extra-arches rule is tested on the decision function."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restoration.models import community
from restoration.models.checkpoint import load_checkpoint, model_licence, shipped_checkpoint

NC = "CC-BY-NC-SA-4.0"


@pytest.fixture(scope="module")
def compact_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2)
    path = tmp_path_factory.mktemp("licence-model") / "face-x2.safetensors"
    save_file({key: value.contiguous() for key, value in net.state_dict().items()}, str(path))
    return path


@pytest.fixture
def non_commercial(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(community.ARCHITECTURE_LICENCES, "Compact", NC)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("licence-images")
    pixels = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "a.png")
    return folder


def test_the_licence_table_and_the_decision() -> None:
    assert community.architecture_licence("ESRGAN") == "Apache-2.0"
    assert community.architecture_licence("SomethingNew") == "unknown"
    extra = community.architecture_licence("CodeFormer", "spandrel_extra_arches.architectures.CodeFormer")
    assert community.is_non_commercial(extra)
    assert community.is_non_commercial(community.architecture_licence("GFPGAN"))
    assert community.is_non_commercial(community.architecture_licence("RestoreFormer"))
    for permissive in ("MIT", "Apache-2.0", "BSD-3-Clause", "unknown"):
        assert not community.is_non_commercial(permissive)


def test_community_and_fused_models_carry_licence_source_and_sha256(compact_file: Path) -> None:
    import hashlib

    described = load_checkpoint(compact_file).metadata.describe()
    assert described == {"licence": "BSD-3-Clause", "source": str(compact_file),
                         "sha256": hashlib.sha256(compact_file.read_bytes()).hexdigest()}
    shipped = shipped_checkpoint("denoise")
    described = load_checkpoint(shipped).metadata.describe()
    assert described["licence"] == "Apache-2.0" and described["source"] == (
        "restoration: shipped weights restoration/weights/denoise")
    assert described["sha256"] == hashlib.sha256((shipped / "model.safetensors").read_bytes()).hexdigest()
    assert model_licence("default", "denoise")[0] == "Apache-2.0"


def _restore_args(*argv: str) -> argparse.Namespace:
    from restoration.cli import add_restore_arguments

    parser = argparse.ArgumentParser()
    add_restore_arguments(parser)
    return parser.parse_args(list(argv))


def _no_ray() -> None:
    raise AssertionError("the executor must not start")


def test_restore_refuses_a_non_commercial_model_without_the_flag(
        non_commercial: None, compact_file: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from restoration.cli import run_command, run_restore_command

    common = ("--input", str(images), "--output", str(tmp_path / "out"), "--model", str(compact_file), "--task", "sr")
    code = run_command("restoration restore", lambda a: run_restore_command(a, _no_ray), _restore_args(*common))
    error = capsys.readouterr().err
    assert code == 2 and len(error.strip().splitlines()) == 1
    assert NC in error and "--accept-licence non-commercial" in error
    assert not (tmp_path / "out").exists()
    args = _restore_args(*common, "--no-ray", "--accept-licence", "non-commercial")
    assert run_command("restoration restore", lambda a: run_restore_command(a, _no_ray), args) == 0
    from restoration.restore.summary import RestoreSummary

    summary = RestoreSummary.from_json((tmp_path / "out" / "_manifest" / "_summary.json").read_text())
    assert summary.model is not None and summary.model.licence == NC


def test_evaluate_and_compare_refuse_it_too(non_commercial: None, compact_file: Path, images: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from restoration.cli import main

    evaluate = ["evaluate", "--model", str(compact_file), "--task", "sr", "--scale", "2", "--images", str(images)]
    compare = ["compare", "--input", str(images), "--model", "default:denoise", "--model", str(compact_file),
               "--task", "sr", "--sample", "1", "--html", str(tmp_path / "compare.html")]
    for argv in (evaluate, compare):
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert len(error.strip().splitlines()) == 1 and NC in error
    assert not (tmp_path / "compare.html").exists()
    assert main([*evaluate, "--accept-licence", "non-commercial"]) == 0
    capsys.readouterr()


def test_finetune_refuses_it_as_init(non_commercial: None, compact_file: Path, images: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from restoration.cli import add_finetune_arguments, run_command, run_finetune_command

    parser = argparse.ArgumentParser()
    add_finetune_arguments(parser)
    args = parser.parse_args(["--task", "sr", "--train-images", str(images), "--val-images", str(images),
                              "--storage", str(tmp_path / "runs"), "--name", "nc", "--init", str(compact_file),
                              "--no-ray", "--steps", "1"])
    assert run_command("restoration finetune", lambda a: run_finetune_command(a, _no_ray), args) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and NC in error and "--init" in error
    assert not (tmp_path / "runs").exists()

"""Checkpoints: safetensors + JSON round trip, no pickle, clear errors, the default model."""

import json

import pytest
import torch

from restoration.checkpoint import (
    CheckpointError,
    load_checkpoint,
    resolve_model,
    save_checkpoint,
    shipped_checkpoint,
    SHIPPED_DIR,
)
from restoration.model import ModelConfig, build_model

SMALL = (8, 8, 16, 16, 24, 24)


def test_round_trip(tmp_path):
    model = build_model(ModelConfig(task="sr", scale=2, widths=SMALL, alpha=0.25))
    torch.nn.init.normal_(model.head.weight, std=0.02)
    save_checkpoint(model, tmp_path / "ckpt", provenance={"steps": 3, "data": "train/"})
    meta = json.loads((tmp_path / "ckpt" / "model.json").read_text())
    assert meta["architecture"]["widths"] == list(SMALL)
    assert meta["task"] == "sr" and meta["scale"] == 2
    assert meta["alpha"]["2"] == pytest.approx(0.25, abs=1e-4)
    assert meta["backbone"]["normalization"]["mean"]
    assert meta["provenance"] == {"steps": 3, "data": "train/"}
    loaded = load_checkpoint(tmp_path / "ckpt")
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), loaded.model(x))


def test_half_precision_checkpoint_loads_as_float32(tmp_path):
    model = build_model(ModelConfig(widths=SMALL))
    save_checkpoint(model, tmp_path / "half", half=True)
    loaded = load_checkpoint(tmp_path / "half")
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    assert json.loads((tmp_path / "half" / "model.json").read_text())["dtype"] == "float16"


def test_loading_never_unpickles(tmp_path, monkeypatch):
    model = build_model(ModelConfig(widths=SMALL))
    save_checkpoint(model, tmp_path / "ckpt")

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load (pickle) must not be used to load checkpoints")

    monkeypatch.setattr(torch, "load", refuse)
    load_checkpoint(tmp_path / "ckpt")


def test_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        load_checkpoint(tmp_path / "empty")
    # Weights of one architecture under the metadata of another.
    save_checkpoint(build_model(ModelConfig(widths=SMALL)), tmp_path / "a")
    save_checkpoint(build_model(ModelConfig(widths=(8, 8, 16, 16, 24, 32))), tmp_path / "b")
    (tmp_path / "a" / "model.json").write_text((tmp_path / "b" / "model.json").read_text())
    with pytest.raises(CheckpointError, match="do not fit this architecture"):
        load_checkpoint(tmp_path / "a")
    (tmp_path / "a" / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "a")


def test_default_model_resolution():
    for task in ("denoise", "deblur", "jpeg", "sr", "inpaint"):
        if (SHIPPED_DIR / task / "model.safetensors").is_file():
            assert resolve_model("default", task) == shipped_checkpoint(task)
            load_checkpoint(resolve_model("default", task))
        else:
            with pytest.raises(CheckpointError, match=f"no default model is shipped for task '{task}'"):
                resolve_model("default", task)
    with pytest.raises(ValueError, match="unknown task"):
        shipped_checkpoint("colorize")

"""Student networks from a spec (restoration/models/students.py): parsing and its messages, fresh
random networks that spandrel detects back with the same size and scale, seeded weights that leave
the global RNG alone, and students that train, save and load like any community model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from restoration.models.checkpoint import load_checkpoint, save_state_dict_file
from restoration.models.community import CommunityNet
from restoration.models.students import (
    StudentSpec,
    build_student,
    is_student_spec,
    parse_student_spec,
)

pytest.importorskip("spandrel")


def test_parse_fills_defaults_and_reads_options() -> None:
    assert parse_student_spec("compact") == StudentSpec("compact", {"feat": 64, "conv": 16})
    assert parse_student_spec("compact:feat=32,conv=8") == StudentSpec("compact", {"feat": 32, "conv": 8})
    assert parse_student_spec("compact:conv=24") == StudentSpec("compact", {"feat": 64, "conv": 24})
    assert parse_student_spec("span") == StudentSpec("span", {"feat": 48})
    assert parse_student_spec("span:feat=32") == StudentSpec("span", {"feat": 32})
    assert parse_student_spec("esrgan:feat=32,blocks=6") == StudentSpec("esrgan", {"feat": 32, "blocks": 6})
    spec = parse_student_spec("compact:feat=32,conv=8")
    assert spec.tag == "f32c8"
    assert str(spec) == "compact:feat=32,conv=8"
    assert parse_student_spec(str(parse_student_spec("esrgan"))) == parse_student_spec("esrgan")


@pytest.mark.parametrize(("text", "message"), [
    ("rcan", r"unknown architecture 'rcan' \(known: compact, span, esrgan\)"),
    ("compact:width=32", r"unknown key 'width' for compact \(allowed: feat .*conv "),
    ("span:conv=8", r"unknown key 'conv' for span \(allowed: feat "),
    ("compact:feat=0", r"feat=0 is not an integer in 4\.\.256"),
    ("compact:conv=abc", r"conv=abc is not an integer in 1\.\.64"),
    ("esrgan:blocks=2.5", r"blocks=2\.5 is not an integer in 1\.\.64"),
    ("compact:feat=32,feat=16", r"feat is given twice"),
    ("compact:feat", r"expected compact\[:key=value,...\] with keys feat"),
    ("compact:", r"expected compact\[:key=value,...\]"),
])
def test_parse_refuses_with_what_is_allowed(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_student_spec(text)


def test_is_student_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for text in ("compact", "span", "esrgan", "compact:feat=32,conv=8", "span:feat=32", "compact:width=3"):
        assert is_student_spec(text), text
    for text in ("", "rcan", "compact.safetensors", "models/compact", "realesrgan-x4plus", "compact:",
                 "compact:feat", "s3://bucket/span", "Compact x"):
        assert not is_student_spec(text), text
    monkeypatch.chdir(tmp_path)
    (tmp_path / "span").mkdir()  # a folder named like an architecture is a path, not a spec
    assert not is_student_spec("span")
    assert is_student_spec("compact")


@pytest.mark.parametrize(("text", "architecture", "tags"), [
    ("compact:feat=32,conv=8", "Compact", ["32nf", "8nc"]),
    ("span:feat=16", "SPAN", ["16nf"]),
    ("esrgan:feat=16,blocks=2", "ESRGAN", ["16nf", "2nb"]),
])
def test_round_trip_keeps_size_and_scale(tmp_path: Path, text: str, architecture: str, tags: list[str]) -> None:
    student = build_student(parse_student_spec(text), scale=4, seed=3)
    assert isinstance(student, CommunityNet)
    assert student.training
    spec = parse_student_spec(text)
    assert student.model_id is not None
    assert student.model_id.startswith(f"student-{spec.architecture}-{spec.tag}-x4-")
    # the file spandrel, chaiNNer and ComfyUI load: spandrel detects the same network back
    path = save_state_dict_file(student, tmp_path / "student.safetensors")
    loaded = load_checkpoint(path).model
    descriptor = loaded._descriptor
    assert descriptor.architecture.id == architecture
    assert list(descriptor.tags) == tags
    assert descriptor.scale == 4
    x = torch.rand(1, 3, 12, 16)
    student.eval()
    with torch.no_grad():
        assert torch.equal(student(x), loaded(x))
        assert loaded(x).shape == (1, 3, 48, 64)


@pytest.mark.parametrize(("text", "scale"), [("compact:feat=8,conv=2", 1), ("compact:feat=8,conv=2", 3),
                                             ("span:feat=8", 2), ("span:feat=8", 3), ("esrgan:feat=8,blocks=1", 1),
                                             ("esrgan:feat=8,blocks=1", 2)])
def test_scales(text: str, scale: int) -> None:
    student = build_student(parse_student_spec(text), scale=scale)
    assert student._descriptor.scale == scale
    assert f"-x{scale}-" in (student.model_id or "")
    with torch.no_grad():
        assert student.eval()(torch.rand(1, 3, 10, 14)).shape == (1, 3, 10 * scale, 14 * scale)


def test_esrgan_refuses_x3() -> None:
    with pytest.raises(ValueError, match=r"scale 3 is not built \(allowed: 1, 2, 4\)"):
        build_student(parse_student_spec("esrgan:feat=8,blocks=1"), scale=3)


def test_seeded_weights_leave_the_global_rng_alone() -> None:
    spec = parse_student_spec("compact:feat=8,conv=2")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = build_student(spec, scale=2, seed=7)
    assert torch.equal(torch.rand(3), expected)  # the global RNG went on as if nothing happened
    again = build_student(spec, scale=2, seed=7)
    other = build_student(spec, scale=2, seed=8)
    assert first.model_id == again.model_id != other.model_id
    for name, tensor in first.export_state_dict().items():
        assert torch.equal(tensor, again.export_state_dict()[name])


def test_a_student_trains() -> None:
    torch.manual_seed(0)
    student = build_student(parse_student_spec("compact:feat=8,conv=2"), scale=2)
    x = torch.rand(2, 3, 8, 8)
    target = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(student(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2


def test_a_trained_compact_made_deeper_starts_as_the_same_function() -> None:
    """``deepen:realesr-animevideov3,conv=24``: real weights, 8 identity layers spread between its
    16; the same output to the last bit, 24 convolutions that spandrel detects back."""
    from restoration.finetune.settings import load_train_config
    from restoration.models.checkpoint import start_model
    from restoration.models.students import deepen_compact, is_student_spec, parse_deepen_spec

    assert parse_deepen_spec("deepen:realesr-animevideov3,conv=24") == ("realesr-animevideov3", 24)
    assert is_student_spec("deepen:realesr-animevideov3,conv=24") and parse_deepen_spec("compact") is None
    network = load_train_config("sr", overrides=["degradation.scale=4"]).network_config()
    base = start_model(network, "realesr-animevideov3")
    deeper = start_model(network, "deepen:realesr-animevideov3,conv=24")
    assert deeper.training and deeper.net.num_conv == 24 and deeper.traits.architecture == "Compact"
    x = torch.rand(2, 3, 20, 18, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(base.eval()(x), deeper.eval()(x))
    with pytest.raises(ValueError, match="must exceed the model's 16"):
        deepen_compact(base, 16)
    with pytest.raises(ValueError, match="takes a Compact"):
        deepen_compact(build_student(parse_student_spec("span:feat=8"), scale=4), 24)

"""Checkpoints: safetensors + JSON round trip, no pickle, clear errors, the default model; one
API for folders, URIs (file://, s3:// on the local SeaweedFS server) and bytes."""

import dataclasses
import json

import pytest
import torch
from s3_fixtures import s3_bucket, s3_server  # noqa: F401  (pytest fixtures)

from restoration.models.checkpoint import (
    SHIPPED_DIR,
    CheckpointBytes,
    CheckpointError,
    ModelMetadata,
    checkpoint_from_bytes,
    checkpoint_to_bytes,
    load_checkpoint,
    read_checkpoint_bytes,
    read_metadata,
    resolve_model,
    save_checkpoint,
    shipped_checkpoint,
)
from restoration.models.fused import ModelConfig, build_model
from restoration.tasks.specs import TASK_NAMES

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


def test_default_model_resolution(tmp_path, monkeypatch):
    from restoration.models import checkpoint as checkpoint_module

    # Every task ships a default model: a missing one is a broken release, so it fails here.
    for task in TASK_NAMES:
        assert (SHIPPED_DIR / task / "model.safetensors").is_file(), f"no default model shipped for {task}"
        assert resolve_model("default", task) == shipped_checkpoint(task) == SHIPPED_DIR / task
        assert load_checkpoint(resolve_model("default", task)).metadata.task == task
    with pytest.raises(ValueError, match="unknown task"):
        shipped_checkpoint("colorize")

    # The message for a task without one, against a weights folder that ships only the denoiser.
    (tmp_path / "denoise").mkdir()
    (tmp_path / "denoise" / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(checkpoint_module, "SHIPPED_DIR", tmp_path)
    with pytest.raises(CheckpointError, match=r"no default model is shipped for task 'sr' yet \(shipped: denoise\)"):
        resolve_model("default", "sr")


# --------------------------------------------------------------------------------------------
# One API: folder, URI or bytes; typed metadata


def test_typed_metadata_round_trips_through_model_json(tmp_path):
    model = build_model(ModelConfig(task="sr", scale=3, widths=SMALL, alpha=0.25))
    save_checkpoint(model, tmp_path / "ckpt", provenance={"steps": 7}, model_id="my-sr")
    checkpoint = load_checkpoint(tmp_path / "ckpt")
    meta = checkpoint.metadata
    assert isinstance(meta, ModelMetadata)
    assert (meta.task, meta.scale, meta.model_id, meta.dtype) == ("sr", 3, "my-sr", "float32")
    assert meta.architecture == model.config and meta.backbone == model.config.backbone
    assert meta.provenance == {"steps": 7} and meta.alpha["2"] == pytest.approx(0.25, abs=1e-4)
    assert len(meta.normalization["mean"]) == 3
    assert checkpoint.model_id == "my-sr" and checkpoint.path == tmp_path / "ckpt"
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.model_id = "other"  # type: ignore[misc]
    # The typed form writes what it read.
    written = json.loads((tmp_path / "ckpt" / "model.json").read_text())
    assert meta.to_dict() == written == read_metadata(tmp_path / "ckpt")
    assert ModelMetadata.from_json(meta.to_json()) == meta


# --------------------------------------------------------------------------------------------
# model.json: one layout written (format_version 2, with a kind), the earlier ones still read

V1_FUSED_KEYS = {"format_version", "model_id", "task", "scale", "architecture", "backbone", "alpha", "code_version",
                 "dtype", "provenance"}


def _v1_fused_json(model, *, model_id: str, provenance: dict) -> dict:
    """model.json as format_version 1 wrote it for a fused model (no "kind")."""
    return {
        "format_version": 1,
        "model_id": model_id,
        "task": model.config.task,
        "scale": model.config.scale,
        "architecture": model.config.to_dict(),
        "backbone": {"name": model.config.backbone,
                     "normalization": {k: list(v) for k, v in model.backbone.normalization.items()}},
        "alpha": model.alphas(),
        "code_version": "0.1.0",
        "dtype": "float32",
        "provenance": provenance,
    }


def test_a_v1_fused_model_json_loads(tmp_path):
    from safetensors.torch import save_file

    model = build_model(ModelConfig(task="sr", scale=2, widths=SMALL, alpha=0.25), backbone_weights=None)
    torch.nn.init.normal_(model.head.weight, std=0.02)
    folder = tmp_path / "old"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    old = _v1_fused_json(model, model_id="old-sr", provenance={"steps": 5})
    assert set(old) == V1_FUSED_KEYS
    (folder / "model.json").write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
    loaded = load_checkpoint(folder)
    meta = loaded.metadata
    assert (meta.kind, meta.format_version, meta.task, meta.scale, meta.model_id) == ("fused", 1, "sr", 2, "old-sr")
    assert meta.architecture == model.config and meta.provenance == {"steps": 5}
    assert meta.traits == model.traits and loaded.model.model_id == "old-sr"
    assert read_metadata(folder) == old
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded.model(x))
    # Written again, it is the current layout: the same fields, a kind, format_version 2.
    assert meta.to_dict() == {**old, "format_version": 2, "kind": "fused"}


def test_the_shipped_model_json_files_are_v1_and_load_unchanged():
    for task in TASK_NAMES:
        raw = json.loads((SHIPPED_DIR / task / "model.json").read_text())
        assert raw["format_version"] == 1 and "kind" not in raw
        meta = load_checkpoint(SHIPPED_DIR / task).metadata
        assert (meta.kind, meta.task, meta.model_id) == ("fused", task, raw["model_id"])


def test_a_new_checkpoint_writes_format_version_2_and_round_trips(tmp_path):
    model = build_model(ModelConfig(task="jpeg", widths=SMALL, alpha=0.4), backbone_weights=None)
    torch.nn.init.normal_(model.head.weight, std=0.02)
    save_checkpoint(model, tmp_path / "new", provenance={"steps": 2}, model_id="new-jpeg")
    written = json.loads((tmp_path / "new" / "model.json").read_text())
    assert written["format_version"] == 2 and written["kind"] == "fused"
    assert set(written) == V1_FUSED_KEYS | {"kind"}
    loaded = load_checkpoint(tmp_path / "new")
    assert loaded.metadata == ModelMetadata.of_model(model, model_id="new-jpeg", provenance={"steps": 2})
    assert loaded.metadata.to_dict() == written
    # Saved again from the loaded model: the same bytes.
    again = checkpoint_to_bytes(loaded.model, model_id="new-jpeg", provenance={"steps": 2})
    assert again.metadata == (tmp_path / "new" / "model.json").read_bytes()
    assert again.weights == (tmp_path / "new" / "model.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="kind 'other'"):
        ModelMetadata.from_dict({**written, "kind": "other"})
    with pytest.raises(CheckpointError, match="kind None"):
        ModelMetadata.from_dict({k: v for k, v in written.items() if k != "kind"})


def _small_esrgan(tmp_path):
    spandrel_esrgan = pytest.importorskip("spandrel.architectures.ESRGAN")
    torch.manual_seed(0)
    net = spandrel_esrgan.ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=2, scale=4).eval()
    path = tmp_path / "esrgan.pth"
    torch.save({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return path


def test_a_v1_community_model_json_loads(tmp_path):
    from safetensors.torch import save_file

    source = load_checkpoint(_small_esrgan(tmp_path))
    assert source.metadata.kind == "community" and source.metadata.traits.architecture == "ESRGAN"
    folder = tmp_path / "fine-tuned"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in source.model.export_state_dict().items()}, str(folder / "model.safetensors"))
    # As fine-tunes of earlier versions wrote it.
    old = {"kind": "community", "architecture": "ESRGAN", "task": "sr", "scale": 4, "model_id": "esrgan-mine",
           "dtype": "float32", "code_version": "0.1.0", "provenance": {"steps": 4}, "format_version": 1}
    (folder / "model.json").write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
    loaded = load_checkpoint(folder)
    meta = loaded.metadata
    assert (meta.kind, meta.format_version, meta.task, meta.scale, meta.model_id) == ("community", 1, "sr", 4, "esrgan-mine")
    assert meta.traits == source.model.traits and meta.architecture is None and meta.provenance == {"steps": 4}
    assert loaded.model_id == loaded.model.model_id == "esrgan-mine"
    assert read_metadata(folder) == old
    x = torch.rand(1, 3, 12, 12)
    with torch.inference_mode():
        assert torch.equal(source.model(x), loaded.model(x))
    assert meta.to_dict() == {**old, "format_version": 2}
    # Saved now: format_version 2, and it round-trips.
    save_checkpoint(loaded.model, tmp_path / "again", provenance={"steps": 4})
    written = json.loads((tmp_path / "again" / "model.json").read_text())
    assert written == {**old, "format_version": 2, "model_id": "again"}
    assert load_checkpoint(tmp_path / "again").metadata == dataclasses.replace(meta, model_id="again", format_version=2)
    with pytest.raises(CheckpointError, match="its traits come from its weights"):
        ModelMetadata.from_dict(written)
    with pytest.raises(CheckpointError, match="says architecture 'SwinIR' but its weights are 'ESRGAN'"):
        ModelMetadata.from_dict({**written, "architecture": "SwinIR"}, traits=meta.traits)


def test_metadata_errors_name_the_field(tmp_path):
    save_checkpoint(build_model(ModelConfig(widths=SMALL)), tmp_path / "a")
    raw = json.loads((tmp_path / "a" / "model.json").read_text())
    with pytest.raises(CheckpointError, match="format_version 7"):
        ModelMetadata.from_dict({**raw, "format_version": 7})
    with pytest.raises(CheckpointError, match="says task 'sr' but its architecture has 'denoise'"):
        ModelMetadata.from_dict({**raw, "task": "sr"})
    with pytest.raises(CheckpointError, match="invalid architecture: unknown task 'colorize'"):
        ModelMetadata.from_dict({**raw, "task": "colorize", "architecture": {**raw["architecture"], "task": "colorize"}})
    with pytest.raises(CheckpointError, match="dtype 'int8'"):
        ModelMetadata.from_dict({**raw, "dtype": "int8"})


def test_bytes_round_trip_without_files(tmp_path):
    model = build_model(ModelConfig(widths=SMALL))
    torch.nn.init.normal_(model.head.weight, std=0.02)
    data = checkpoint_to_bytes(model, model_id="in-memory", half=True)
    assert isinstance(data.weights, bytes) and json.loads(data.metadata)["model_id"] == "in-memory"
    loaded = checkpoint_from_bytes(data)
    assert loaded.path is None and loaded.model_id == "in-memory" and loaded.metadata.dtype == "float16"
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), loaded.model(x), atol=2e-2)
    assert load_checkpoint(data).model_id == "in-memory"  # load_checkpoint takes bytes too
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        checkpoint_from_bytes(CheckpointBytes(weights=b"garbage", metadata=data.metadata))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        checkpoint_from_bytes(CheckpointBytes(weights=data.weights, metadata=b"{"))


def test_a_folder_and_its_file_uri_load_the_same(tmp_path):
    model = build_model(ModelConfig(widths=SMALL))
    save_checkpoint(model, tmp_path / "ckpt")
    from_folder = load_checkpoint(tmp_path / "ckpt")
    from_uri = load_checkpoint(f"file://{tmp_path}/ckpt")
    assert from_uri.metadata == from_folder.metadata and from_uri.model_id == "ckpt"
    for (name, a), (_, b) in zip(from_folder.model.state_dict().items(), from_uri.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert resolve_model(f"file://{tmp_path}/ckpt", "denoise") == f"file://{tmp_path}/ckpt"
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        load_checkpoint(f"file://{tmp_path}/nothing")


@pytest.mark.s3
def test_a_checkpoint_loads_from_s3(s3_server, s3_bucket, tmp_path):  # noqa: F811
    model = build_model(ModelConfig(widths=SMALL))
    data = checkpoint_to_bytes(model, model_id="on-s3")
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="models/m/model.safetensors", Body=data.weights)
    client.put_object(Bucket=s3_bucket, Key="models/m/model.json", Body=data.metadata)
    uri = f"s3://{s3_bucket}/models/m"
    read = read_checkpoint_bytes(uri)
    assert (read.weights, read.metadata, read.source) == (data.weights, data.metadata, uri)
    loaded = load_checkpoint(resolve_model(uri, "denoise"))
    assert loaded.model_id == "on-s3" and loaded.path is None and loaded.source == uri
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        load_checkpoint(f"s3://{s3_bucket}/models/none")


def test_a_run_resumes_from_its_latest_complete_training_checkpoint(tmp_path) -> None:
    from restoration.finetune.checkpoints import (
        latest_training_checkpoint,
        training_checkpoint_name,
        training_checkpoints,
    )

    run = tmp_path / "run"
    assert training_checkpoints(str(run)) == [] and latest_training_checkpoint(str(run)) is None  # a new run
    for step, complete in ((10, True), (20, True), (30, False)):  # 30: cut off before its trainer state
        folder = run / training_checkpoint_name(step)
        folder.mkdir(parents=True)
        (folder / "model.json").write_text("{}")
        if complete:
            (folder / "trainer_state.pt").write_bytes(b"state")
    (run / "model").mkdir()
    (run / "model" / "trainer_state.pt").write_bytes(b"not a checkpoint folder")
    (run / "checkpoint_step_x").mkdir()
    (run / "checkpoint_step_x" / "trainer_state.pt").write_bytes(b"not a step")
    assert training_checkpoints(str(run)) == [(10, str(run / "checkpoint_step_00000010")),
                                              (20, str(run / "checkpoint_step_00000020"))]
    assert latest_training_checkpoint(str(run)) == str(run / "checkpoint_step_00000020")


def _training_folder(run, step: int, *, complete: bool = True) -> None:
    from restoration.finetune.checkpoints import training_checkpoint_name

    folder = run / training_checkpoint_name(step)
    folder.mkdir(parents=True)
    (folder / "model.json").write_text("{}")
    if complete:
        (folder / "trainer_state.pt").write_bytes(b"state")


def test_a_resume_from_an_earlier_checkpoint_drops_the_abandoned_ones_above_it(tmp_path) -> None:
    """Ray Train restarts a lost worker group from its latest registered checkpoint (10) while
    the run folder holds a later one the lost attempt uploaded (20, never registered) and a
    partial one (30): the resume drops both, so the checkpoint the restarted attempt writes next
    (18) is the latest, and 20 is never resumed from nor named."""
    from restoration.finetune.checkpoints import (
        drop_checkpoints_after,
        latest_training_checkpoint,
        training_checkpoint_step,
        training_checkpoints,
    )

    run = tmp_path / "run"
    for step in (5, 10, 20):
        _training_folder(run, step)
    _training_folder(run, 30, complete=False)
    (run / "model").mkdir()
    (run / "model" / "model.json").write_text("{}")
    assert latest_training_checkpoint(str(run)) == str(run / "checkpoint_step_00000020")  # before the resume

    assert drop_checkpoints_after(str(run), 10) == [str(run / "checkpoint_step_00000020"),
                                                    str(run / "checkpoint_step_00000030")]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint_step_00000005", "checkpoint_step_00000010", "model"]
    _training_folder(run, 18)  # the restarted attempt's next checkpoint (a stop at step 18)
    assert latest_training_checkpoint(str(run)) == str(run / "checkpoint_step_00000018")
    assert [step for step, _ in training_checkpoints(str(run))] == [5, 10, 18]
    assert drop_checkpoints_after(str(run), 18) == []  # nothing above the latest
    assert drop_checkpoints_after(str(tmp_path / "absent"), 0) == []  # a new run
    assert [training_checkpoint_step(name) for name in ("checkpoint_step_00000200", "s3://b/r/checkpoint_step_7/",
                                                        "model", "checkpoint_step_x")] == [200, 7, None, None]


def test_a_checkpoint_deletion_cut_short_never_leaves_a_complete_looking_folder(tmp_path, monkeypatch) -> None:
    """The trainer state (the mark of a complete folder) goes first: a deletion that fails after
    it leaves a folder that is not resumed from."""
    from restoration.finetune.checkpoints import (
        delete_checkpoint,
        latest_training_checkpoint,
    )
    from restoration.io import storage

    run = tmp_path / "run"
    _training_folder(run, 10)
    _training_folder(run, 20)

    class FailingDeleteDir:
        def __init__(self, filesystem):
            self.filesystem = filesystem

        def __getattr__(self, name):
            return getattr(self.filesystem, name)

        def delete_dir(self, path):
            raise PermissionError(f"cut short: {path}")

    resolve = storage.resolve
    monkeypatch.setattr(storage, "resolve", lambda uri: (FailingDeleteDir(resolve(uri)[0]), resolve(uri)[1]))
    with pytest.raises(PermissionError, match="cut short"):
        delete_checkpoint(str(run / "checkpoint_step_00000020"))
    assert (run / "checkpoint_step_00000020" / "model.json").is_file()
    assert latest_training_checkpoint(str(run)) == str(run / "checkpoint_step_00000010")
    monkeypatch.undo()
    delete_checkpoint(str(run / "checkpoint_step_00000020"))
    assert not (run / "checkpoint_step_00000020").exists()
    delete_checkpoint(str(run / "checkpoint_step_00000020"))  # already gone: nothing to do


def test_abandoned_checkpoints_are_dropped_on_s3(s3_server, s3_bucket, tmp_path):  # noqa: F811
    from restoration.finetune.checkpoints import (
        drop_checkpoints_after,
        latest_training_checkpoint,
        training_checkpoint_name,
    )
    from restoration.io import storage

    run = f"s3://{s3_bucket}/runs/abandoned"
    for step, complete in ((10, True), (20, True), (30, False)):
        folder = storage.join(run, training_checkpoint_name(step))
        storage.write_bytes(storage.join(folder, "model.json"), b"{}")
        if complete:
            storage.write_bytes(storage.join(folder, "trainer_state.pt"), b"state")
    assert latest_training_checkpoint(run) == f"{run}/checkpoint_step_00000020"
    assert drop_checkpoints_after(run, 10) == [f"{run}/checkpoint_step_00000020", f"{run}/checkpoint_step_00000030"]
    assert latest_training_checkpoint(run) == f"{run}/checkpoint_step_00000010"
    assert drop_checkpoints_after(run, 10) == []

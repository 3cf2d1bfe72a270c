"""The batch restoration's plan and stages in one process, without Ray (restoration.restore.stages)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from restore_images import bad_files, decode_pil, oversize_png, png, variants
from s3_fixtures import s3_bucket, s3_server  # noqa: F401  (pytest fixtures)

from jobs.settings import (
    RayRestoreConfig as RestoreConfig,  # with the Ray pipeline section
)
from restoration.io import storage as storage_lib
from restoration.io.codec import decode_image
from restoration.models.fused import ModelConfig, build_model
from restoration.models.predictor import Predictor, PredictorConfig
from restoration.restore import manifest as manifest_lib
from restoration.restore.planning import list_inputs, plan_restore
from restoration.restore.settings import InputConfig, OutputConfig
from restoration.restore.stages import (
    encode_stage,
    mean_abs_change,
    read_stage,
    restore_stage,
    skip_stage,
)
from restoration.tasks.specs import DenoiseTask, get_task

TINY = (8, 8, 16, 16, 24, 24)


def identity_predictor(task: str = "denoise", scale: int = 1) -> Predictor:
    """An untrained model: its residual head is zero, so it returns its input (bicubic for SR)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(task=task, scale=scale, widths=TINY), backbone_weights=None)
    return Predictor(model, PredictorConfig(tile=0), device="cpu")


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def run_stages(input_uri: str, output_uri: str, predictor: Predictor, *, task: str = "denoise",
               config: RestoreConfig | None = None, previous: pa.Table | None = None) -> pa.Table:
    config = config or RestoreConfig()
    plan = plan_restore(input_uri, output_uri, task=task, model_id="m", config=config, previous_manifest=previous).collect()
    decoded = read_stage(plan.work, max_pixels=config.input.max_pixels, max_bytes=config.input.max_bytes)
    restored = restore_stage(predictor, decoded, task=get_task(task))
    rows = encode_stage(restored, task=task, model_id="m", job_id=manifest_lib.new_job_id(),
                        output_format=config.output.format)
    assert rows.schema.equals(manifest_lib.MANIFEST_SCHEMA, check_metadata=False)
    return rows


@pytest.fixture(scope="module")
def sample() -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    return data.astronaut()[100:196, 160:288].copy(), data.camera()[200:264, 200:296].copy()


def test_every_kind_round_trips_through_an_identity_model(tmp_path: Path, sample) -> None:
    rgb, gray = sample
    good = variants(rgb, gray)
    write_tree(tmp_path / "in", {k: v[0] for k, v in good.items()})
    rows = run_stages(str(tmp_path / "in"), str(tmp_path / "out"), identity_predictor())
    by_source = {Path(r["source_uri"]).relative_to(tmp_path / "in").as_posix(): r for r in rows.to_pylist()}
    assert set(by_source) == set(good)
    for relative, (data, expect) in good.items():
        row = by_source[relative]
        assert row["status"] == "ok", (relative, row["error"])
        assert row["output_uri"] == str(tmp_path / "out" / relative)
        output = decode_image(Path(row["output_uri"]).read_bytes())
        source = decode_image(data)
        assert (output.width, output.height, output.channels, output.bit_depth) == (
            expect.width, expect.height, expect.channels, expect.bit_depth), relative
        assert (row["width"], row["height"], row["out_width"], row["out_height"]) == (
            expect.width, expect.height, expect.width, expect.height)
        assert (output.alpha is not None) == expect.alpha == row["has_alpha"], relative
        assert output.icc_profile == expect.icc, relative
        assert output.format == source.format and row["out_format"] == source.format
        if expect.lossless:  # the untrained model is the identity: same pixels, same alpha
            np.testing.assert_array_equal(output.pixels, source.pixels, err_msg=relative)
            if expect.alpha:
                np.testing.assert_array_equal(output.alpha, source.alpha, err_msg=relative)
        else:
            difference = np.abs(output.pixels.astype(int) - source.pixels.astype(int)).mean()
            assert difference < 3, relative
        assert row["bytes_out"] == len(Path(row["output_uri"]).read_bytes())
        assert row["bytes_in"] == len(data) and row["seconds"] > 0 and row["restored_at"] is not None
        assert (row["mean_abs_change"], row["strength"]) == (0.0, 1.0), relative  # the model changed nothing
    # EXIF orientation is applied to the pixels and not written again.
    rotated = decode_pil((tmp_path / "out/kinds/rotated.jpg").read_bytes())
    assert rotated.size == (rgb.shape[1], rgb.shape[0])
    assert rotated.getexif().get(0x0112) in (None, 1)
    assert by_source["kinds/gray16.png"]["mode"] == "I;16" and by_source["kinds/palette.png"]["mode"] == "P"


def test_bad_inputs_become_error_rows(tmp_path: Path, sample) -> None:
    rgb, _ = sample
    bad = bad_files(rgb)
    files = {k: v[0] for k, v in bad.items()}
    files["bad/huge.png"] = oversize_png(300, 200)
    files["bad/big-file.png"] = oversize_png(10, 10) + b"\0" * 200_000
    files["fine.png"] = png(rgb)
    write_tree(tmp_path / "in", files)
    config = RestoreConfig(input=InputConfig(max_pixels=50_000, max_bytes=150_000))
    plan = plan_restore(str(tmp_path / "in"), str(tmp_path / "out"), task="denoise", model_id="m", config=config).collect()
    (tmp_path / "in/fine.png").rename(tmp_path / "in/gone.png")  # listed, then deleted before it is read
    decoded = read_stage(plan.work, max_pixels=config.input.max_pixels, max_bytes=config.input.max_bytes)
    rows = encode_stage(restore_stage(identity_predictor(), decoded, task=DenoiseTask),
                        task="denoise", model_id="m", job_id=manifest_lib.new_job_id())
    by_name = {Path(r["source_uri"]).name: r for r in rows.to_pylist()}
    assert len(by_name) == len(files)
    for relative, (_, stage, reason) in bad.items():
        row = by_name[Path(relative).name]
        assert (row["status"], row["error_stage"]) == ("error", stage), row
        assert reason in row["error"], row["error"]
        assert row["output_uri"] is None and row["restored_at"] is None
    assert "more than the limit 50000" in by_name["huge.png"]["error"]
    assert by_name["big-file.png"]["error_stage"] == "read" and "max_bytes" in by_name["big-file.png"]["error"]
    assert by_name["fine.png"]["error_stage"] == "read" and "no such file" in by_name["fine.png"]["error"]
    assert not (tmp_path / "out").exists() or not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_super_resolution_resizes_alpha_and_inpainting_reads_the_mask_from_alpha(tmp_path: Path, sample) -> None:
    rgb, gray = sample
    good = variants(rgb, gray)
    write_tree(tmp_path / "in", {"rgba.png": good["kinds/rgba.png"][0], "gray.png": good["kinds/gray.png"][0]})
    rows = {Path(r["source_uri"]).name: r for r in
            run_stages(str(tmp_path / "in"), str(tmp_path / "sr"), identity_predictor("sr", 2), task="sr").to_pylist()}
    output = decode_image((tmp_path / "sr/rgba.png").read_bytes())
    assert (output.width, output.height) == (2 * rgb.shape[1], 2 * rgb.shape[0]) == (
        rows["rgba.png"]["out_width"], rows["rgba.png"]["out_height"])
    assert output.alpha is not None and output.alpha.shape == output.pixels.shape[:2]
    assert decode_image((tmp_path / "sr/gray.png").read_bytes()).channels == 1
    # The untrained SR model is bicubic, which is what its change is measured against.
    assert all(row["mean_abs_change"] < 0.01 for row in rows.values()), rows

    rows = {Path(r["source_uri"]).name: r for r in
            run_stages(str(tmp_path / "in"), str(tmp_path / "inpaint"), identity_predictor("inpaint"),
                       task="inpaint").to_pylist()}
    assert rows["rgba.png"]["status"] == "ok" and rows["rgba.png"]["has_alpha"] is False
    assert decode_image((tmp_path / "inpaint/rgba.png").read_bytes()).alpha is None
    assert rows["gray.png"]["status"] == "error" and rows["gray.png"]["error_stage"] == "restore"
    assert "alpha" in rows["gray.png"]["error"]


class _FailsOnWidth:
    """A predictor that fails for images of one width (and so for any batch holding one)."""

    def __init__(self, width: int) -> None:
        self.inner, self.width = identity_predictor(), width

    def restore_many(self, images, masks=None):
        if any(image.shape[-1] == self.width for image in images):
            raise RuntimeError(f"cannot restore width {self.width}")
        return self.inner.restore_many(images, masks)


def test_a_failing_image_does_not_fail_its_batch(tmp_path: Path, sample) -> None:
    rgb, _ = sample
    write_tree(tmp_path / "in", {"a.png": png(rgb), "b.png": png(rgb[:, :64]), "c.png": png(rgb[:80])})
    rows = {Path(r["source_uri"]).name: r for r in
            run_stages(str(tmp_path / "in"), str(tmp_path / "out"), _FailsOnWidth(64)).to_pylist()}
    assert [rows[n]["status"] for n in ("a.png", "b.png", "c.png")] == ["ok", "error", "ok"]
    assert rows["b.png"]["error_stage"] == "restore" and "cannot restore width 64" in rows["b.png"]["error"]


def test_write_failure_is_an_error_row(tmp_path: Path, sample) -> None:
    rgb, _ = sample
    write_tree(tmp_path / "in", {"sub/a.png": png(rgb), "b.png": png(rgb)})
    (tmp_path / "out").mkdir()
    (tmp_path / "out/sub").write_bytes(b"a file where the output folder should be")
    plan = plan_restore(str(tmp_path / "in"), str(tmp_path / "out"), task="denoise", model_id="m", config=RestoreConfig()).collect()
    rows = encode_stage(restore_stage(identity_predictor(), read_stage(plan.work), task=DenoiseTask),
                        task="denoise", model_id="m", job_id=manifest_lib.new_job_id())
    by_name = {Path(r["source_uri"]).name: r for r in rows.to_pylist()}
    assert by_name["a.png"]["status"] == "error" and by_name["a.png"]["error_stage"] == "write"
    assert by_name["b.png"]["status"] == "ok"


# --------------------------------------------------------------------------------------------
# Planning


def test_list_inputs_from_csv_parquet_and_text(tmp_path: Path, sample) -> None:
    rgb, _ = sample
    write_tree(tmp_path / "data", {"x/a.png": png(rgb), "x/y/b.png": png(rgb), "c.png": png(rgb)})
    data = tmp_path / "data"
    (data / "list.csv").write_text("uri,label\nx/a.png,1\n" + f"{data}/x/y/b.png,2\nx/a.png,3\n")
    root, uris, is_list = list_inputs(str(data / "list.csv"))
    assert is_list and uris == [f"{data}/x/a.png", f"{data}/x/y/b.png"] and root == f"{data}/x"
    (data / "list.txt").write_text(f"file://{data}/c.png\n\nx/a.png\n")
    root, uris, _ = list_inputs(str(data / "list.txt"))
    assert uris == [f"file://{data}/c.png", f"{data}/x/a.png"] and root == str(data)
    pq.write_table(pa.table({"id": [1, 2], "source_uri": ["x/y/b.png", "c.png"]}), data / "list.parquet")
    assert list_inputs(str(data / "list.parquet"))[1] == [f"{data}/x/y/b.png", f"{data}/c.png"]
    pq.write_table(pa.table({"a": ["x"], "b": ["y"]}), data / "ambiguous.parquet")
    with pytest.raises(ValueError, match="uri_column"):
        list_inputs(str(data / "ambiguous.parquet"))
    # A list may name any file: the plan maps each to an output below the list's common folder.
    plan = plan_restore(str(data / "list.csv"), str(tmp_path / "out"), task="denoise", model_id="m",
                        config=RestoreConfig()).collect()
    assert plan.work.column("output_uri").to_pylist() == [f"{tmp_path}/out/a.png", f"{tmp_path}/out/y/b.png"]


def test_plan_refuses_escapes_collisions_and_overwriting_inputs(tmp_path: Path, sample) -> None:
    rgb, _ = sample
    data = tmp_path / "data"
    write_tree(data, {"a.jpg": png(rgb), "a.png": png(rgb), "b.gif": png(rgb), "in/c.png": png(rgb)})
    (data / "list.txt").write_text(f"{data}/a.jpg\n{data}/a.png\n{data}/b.gif\n{data}/in/../a.png\n")
    config = RestoreConfig(output=OutputConfig(format="png"))
    plan = plan_restore(str(data / "list.txt"), str(tmp_path / "out"), task="denoise", model_id="m", config=config).collect()
    outputs = dict(zip(plan.work.column("source_uri").to_pylist(), plan.work.column("output_uri").to_pylist()))
    # Both a.jpg and a.png would be written as a.png: the first listed takes it, the later one
    # keeps its extension too.
    assert outputs == {f"{data}/a.jpg": f"{tmp_path}/out/a.png", f"{data}/a.png": f"{tmp_path}/out/a.png.png",
                       f"{data}/b.gif": f"{tmp_path}/out/b.png"}
    [error] = plan.errors
    assert error["source_uri"] == f"{data}/in/../a.png" and error["error_stage"] == "plan" and "'..'" in error["error"]
    # Without a format, a file of a format the encoder cannot write gets a .png name.
    plan = plan_restore(str(data / "list.txt"), str(tmp_path / "out"), task="denoise", model_id="m",
                        config=RestoreConfig()).collect()
    assert f"{tmp_path}/out/b.gif.png" in plan.work.column("output_uri").to_pylist()

    with pytest.raises(ValueError, match="replace the originals"):
        plan_restore(str(data), f"file://{data}/", task="denoise", model_id="m", config=RestoreConfig())
    # Output inside the input: earlier outputs below it are not inputs.
    write_tree(data / "restored", {"a.png": png(rgb)})
    plan = plan_restore(str(data), str(data / "restored"), task="denoise", model_id="m", config=RestoreConfig()).collect()
    assert all("/restored/" not in uri for uri in plan.inputs) and len(plan.inputs) == 3  # b.gif: not an image extension
    # A listed input under the output prefix is never replaced by another input's output, even
    # when it is listed after that input.
    (data / "over.txt").write_text(f"{data}/in/c.png\n{data}/a.png\n{data}/in/in/c.png\n")
    write_tree(data / "in/in", {"c.png": png(rgb)})
    plan = plan_restore(str(data / "over.txt"), str(data / "in"), task="denoise", model_id="m",
                        config=RestoreConfig()).collect()
    [error] = plan.errors
    assert error["source_uri"] == f"{data}/in/c.png" and "would overwrite an input" in error["error"]
    assert plan.work.column("output_uri").to_pylist() == [f"{data}/in/a.png", f"{data}/in/in/in/c.png"]


def test_plan_marks_earlier_outputs_for_skipping(tmp_path: Path, sample) -> None:
    rgb, _ = sample
    write_tree(tmp_path / "in", {"a.png": png(rgb), "b.png": png(rgb), "c.png": png(rgb)})
    first = run_stages(str(tmp_path / "in"), str(tmp_path / "out"), identity_predictor())
    rows = first.to_pylist()
    rows[1]["model_id"] = "another-model"
    rows[2]["status"], rows[2]["error"], rows[2]["output_uri"] = "error", "boom", None
    previous = manifest_lib.rows_to_table(rows)
    plan = plan_restore(str(tmp_path / "in"), str(tmp_path / "out"), task="denoise", model_id="m",
                        config=RestoreConfig(), previous_manifest=previous).collect()
    assert plan.work.column("previous_bytes").to_pylist() == [rows[0]["bytes_in"], None, None]
    assert list(plan.previous) == [rows[0]["source_uri"]]
    decoded = read_stage(plan.work)
    assert decoded.column("status").to_pylist() == ["skipped", None, None]
    marked = skip_stage(plan.work)
    assert marked.column("skipped").to_pylist() == [True, False, False]
    assert marked.column("bytes_in").to_pylist() == [rows[0]["bytes_in"], None, None]  # only candidates are read
    # A changed source is redone.
    (tmp_path / "in/a.png").write_bytes(png(rgb[:50]))
    assert read_stage(plan.work).column("status").to_pylist() == [None, None, None]
    overwrite = plan_restore(str(tmp_path / "in"), str(tmp_path / "out"), task="denoise", model_id="m",
                             config=RestoreConfig(), previous_manifest=previous, overwrite=True).collect()
    assert overwrite.work.column("previous_bytes").null_count == 3


def test_config_errors_name_the_value() -> None:
    from restoration import config as config_lib

    with pytest.raises(ValueError, match="output.format 'gif'"):
        config_lib.load_config(RestoreConfig, overrides=["output.format=gif"])
    with pytest.raises(ValueError, match="unknown config key pipeline.nope"):
        config_lib.load_config(RestoreConfig, overrides=["pipeline.nope=1"])
    assert config_lib.load_config(RestoreConfig, overrides=["output.format=jpg"]).output.format == "JPEG"


def test_actor_pool_leaves_room_for_read_and_write_tasks() -> None:
    from jobs.pool_sizing import plan_actor_pool
    from restoration import config as config_lib

    default = RestoreConfig()
    # This machine: 2 CPUs, no GPU -> single-threaded actors, half the CPUs reserved at most.
    pool = plan_actor_pool({"CPU": 2.0}, 2.0, default)
    assert (pool.device, pool.threads, pool.max_size, pool.num_cpus, pool.num_gpus) == ("cpu", 1, 2, 0.5, 0.0)
    assert pool.max_size * pool.num_cpus <= 1.0 and pool.batch_size == 4
    # Busy cluster: start with what fits now, grow to the maximum later.
    assert plan_actor_pool({"CPU": 2.0}, 2.0, default, {"CPU": 0.5}).initial_size == 1
    # A CPU cluster of 16-core nodes: 8 threads per actor.
    pool = plan_actor_pool({"CPU": 64.0}, 16.0, default)
    assert (pool.threads, pool.max_size) == (8, 8) and pool.max_size * pool.num_cpus <= 32
    # GPUs: one actor per GPU, one CPU each, bigger batches.
    pool = plan_actor_pool({"CPU": 32.0, "GPU": 4.0}, 8.0, default)
    assert (pool.device, pool.max_size, pool.num_gpus, pool.num_cpus, pool.batch_size) == ("cuda", 4, 1.0, 1.0, 16)
    # An autoscaling cluster whose GPU nodes are not up yet.
    config = config_lib.load_config(RestoreConfig, overrides=["pipeline.use_gpu=true", "pipeline.max_actors=8"])
    pool = plan_actor_pool({"CPU": 4.0}, 4.0, config)
    assert (pool.device, pool.max_size, pool.num_gpus, pool.initial_size) == ("cuda", 8, 1.0, 1)


def test_an_empty_input_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in/readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no input images"):
        plan_restore(str(tmp_path / "in"), str(tmp_path / "out"), task="denoise", model_id="m", config=RestoreConfig())
    with pytest.raises(FileNotFoundError):
        plan_restore(str(tmp_path / "nowhere"), str(tmp_path / "out"), task="denoise", model_id="m",
                     config=RestoreConfig())


def test_single_file_input_limit_and_tiled_inference(tmp_path: Path, sample) -> None:
    rgb, _ = sample
    write_tree(tmp_path / "in", {"a/one.png": png(rgb), "b.png": png(rgb), "c.png": png(rgb)})
    plan = plan_restore(str(tmp_path / "in/a/one.png"), str(tmp_path / "out"), task="denoise", model_id="m",
                        config=RestoreConfig()).collect()
    assert plan.work.column("output_uri").to_pylist() == [f"{tmp_path}/out/one.png"]
    plan = plan_restore(str(tmp_path / "in"), str(tmp_path / "out"), task="denoise", model_id="m",
                        config=RestoreConfig(), limit=2).collect()
    assert [Path(uri).name for uri in plan.inputs] == ["one.png", "b.png"]
    # An image larger than the tile goes through overlapping tiles; the identity model's tiles
    # blend back into the input.
    model = identity_predictor().model
    tiled = Predictor(model, PredictorConfig(tile=64, overlap=8), device="cpu")
    rows = run_stages(str(tmp_path / "in/b.png"), str(tmp_path / "tiled"), tiled)
    assert rows.column("status").to_pylist() == ["ok"]
    restored = decode_image((tmp_path / "tiled/b.png").read_bytes()).pixels
    assert np.abs(restored.astype(int) - rgb.astype(int)).max() <= 1


@pytest.mark.s3
@pytest.mark.timeout(120)
def test_transient_storage_errors_are_retried(
    s3_server, s3_bucket: str, sample, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """One retry layer, outages.retrying: through a proxy that answers 503 SlowDown, reads and
    writes are asked again until they succeed within the outage budget; failures past the
    budget make an error row; a missing file is not transient and is asked for once."""
    from faulty_s3 import FaultyS3Proxy

    failures = 4  # pyarrow's client asks once: every failure reaches the retry layer
    rgb, _ = sample
    s3_server.client().put_object(Bucket=s3_bucket, Key="in/a.png", Body=png(rgb))
    with FaultyS3Proxy(s3_server.env()["AWS_ENDPOINT_URL"]) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        plan = plan_restore(f"s3://{s3_bucket}/in", f"s3://{s3_bucket}/out", task="denoise", model_id="m",
                            config=RestoreConfig()).collect()
        proxy.fail_next(failures)
        decoded = read_stage(plan.work, outage_seconds=60)
        assert decoded.column("status").to_pylist() == [None] and proxy.failed() == failures
        proxy.fail_next(failures)
        rows = encode_stage(restore_stage(identity_predictor(), decoded, task=DenoiseTask),
                            task="denoise", model_id="m", job_id=manifest_lib.new_job_id(), outage_seconds=60)
        assert rows.column("status").to_pylist() == ["ok"], rows.column("error").to_pylist()
        assert proxy.failed() == 2 * failures
        written = s3_server.client().get_object(Bucket=s3_bucket, Key="out/a.png")["Body"].read()
        np.testing.assert_array_equal(decode_image(written).pixels, rgb)

        proxy.fail_next(1000)  # failing past the budget: the input is an error row
        started = time.monotonic()
        [row] = read_stage(plan.work, outage_seconds=1.5).to_pylist()
        assert 1.5 <= time.monotonic() - started < 10
        assert (row["status"], row["error_stage"]) == ("error", "read"), row["error"]
        assert "past storage.outage_seconds=1.5" in row["error"], row["error"]
        proxy.fail_next(0)

        proxy.requests.clear()
        with pytest.raises(FileNotFoundError):
            storage_lib.read_bytes(f"s3://{s3_bucket}/in/missing.png")
        assert [status for _, path, status in proxy.requests if path.endswith("missing.png")] == [404]


# --------------------------------------------------------------------------------------------
# What the model changed; metadata and PNG settings


def test_mean_abs_change_is_in_8_bit_levels() -> None:
    source = np.full((4, 6, 3), 100, np.uint8)
    assert mean_abs_change(source, source) == 0.0
    brighter = source + 3
    brighter[0, 0, 0] = 100 + 9
    assert mean_abs_change(source, brighter) == pytest.approx(3 + 6 / source.size)
    assert mean_abs_change(source.astype(np.uint16) * 257, brighter.astype(np.uint16) * 257) == pytest.approx(
        mean_abs_change(source, brighter))
    # A larger output is compared with the bicubic upsampling of the input: a flat image stays flat.
    assert mean_abs_change(source, np.full((8, 12, 3), 100, np.uint8)) == 0.0
    assert mean_abs_change(source, np.full((8, 12, 3), 110, np.uint8)) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="same channels and dtype"):
        mean_abs_change(source, source[:, :, :1])


def test_a_model_that_changes_the_image_records_how_much(tmp_path: Path, sample) -> None:
    rgb, _ = sample
    write_tree(tmp_path / "in", {"a.png": png(rgb)})
    model = identity_predictor().model
    with torch.no_grad():  # a residual head with a bias brightens every pixel by 4/255
        model.head.bias.fill_(4 / 255)
    predictor = Predictor(model, PredictorConfig(tile=0), device="cpu")  # built after the change: it may copy the model
    [row] = run_stages(str(tmp_path / "in"), str(tmp_path / "out"), predictor).to_pylist()
    expected = np.abs(np.clip(rgb.astype(int) + 4, 0, 255) - rgb.astype(int)).mean()
    assert row["mean_abs_change"] == pytest.approx(expected, abs=0.05) and row["mean_abs_change"] > 3


def test_metadata_is_carried_to_the_outputs_unless_stripped(tmp_path: Path, sample) -> None:
    from PIL import Image

    rgb, _ = sample
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0132] = "Camera Maker", "Model 7", "2001:02:03 04:05:06"
    files = {}
    for name, format in (("a.jpg", "JPEG"), ("b.png", "PNG"), ("c.webp", "WEBP"), ("d.tif", "TIFF")):
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format=format, exif=exif.tobytes(), **({"quality": 95} if format != "PNG" else {}))
        files[name] = buffer.getvalue()
    write_tree(tmp_path / "in", files)
    for strip, folder in ((False, "kept"), (True, "stripped")):
        plan = plan_restore(str(tmp_path / "in"), str(tmp_path / folder), task="denoise", model_id="m",
                            config=RestoreConfig()).collect()
        rows = encode_stage(restore_stage(identity_predictor(), read_stage(plan.work), task=DenoiseTask),
                            task="denoise", model_id="m", job_id=manifest_lib.new_job_id(), strip_metadata=strip)
        assert rows.column("status").to_pylist() == ["ok"] * len(files), rows.column("error").to_pylist()
        for name in files:
            written = decode_pil((tmp_path / folder / name).read_bytes()).getexif()
            if strip:
                assert 0x010F not in written, name
            else:
                assert (written.get(0x010F), written.get(0x0110), written.get(0x0132)) == (
                    "Camera Maker", "Model 7", "2001:02:03 04:05:06"), name


def test_png_compression_is_a_setting(tmp_path: Path, sample) -> None:
    from restoration import config as config_lib

    rgb, _ = sample
    write_tree(tmp_path / "in", {"a.png": png(rgb)})
    sizes = {}
    for level in (0, 9):
        config = config_lib.load_config(RestoreConfig, overrides=[f"output.png_compression={level}"])
        plan = plan_restore(str(tmp_path / "in"), str(tmp_path / f"level{level}"), task="denoise", model_id="m",
                            config=config).collect()
        [row] = encode_stage(restore_stage(identity_predictor(), read_stage(plan.work), task=DenoiseTask),
                             task="denoise", model_id="m", job_id=manifest_lib.new_job_id(),
                             png_compression=config.output.png_compression).to_pylist()
        sizes[level] = row["bytes_out"]
        np.testing.assert_array_equal(decode_image((tmp_path / f"level{level}/a.png").read_bytes()).pixels, rgb)
    assert sizes[0] > 1.5 * sizes[9], sizes
    assert RestoreConfig().output.png_compression == 1
    with pytest.raises(ValueError, match="output.png_compression must be a zlib level in 0..9, got 10"):
        config_lib.load_config(RestoreConfig, overrides=["output.png_compression=10"])

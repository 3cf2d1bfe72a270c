"""One way to turn a URI into a (filesystem, path) pair, for local disks and S3.

Accepted URIs:

- a local path, absolute or relative (``data/images``, ``/mnt/photos``, ``~/photos``);
- ``file:///absolute/path`` (``file://localhost/...`` too);
- ``s3://bucket/key/prefix``.

Everything goes through :mod:`pyarrow.fs`, so Ray Data can be handed the same filesystem
objects. URIs are not percent-decoded: ``file:///a%20b`` names a directory called ``a%20b``, and
S3 keys are taken literally.

S3 is configured by the standard AWS variables (see :func:`s3_filesystem`). Credentials never
appear in error messages; :func:`redact` strips them from any text before it is logged.

Relative local paths are resolved against the current working directory of the process that
calls these functions. A driver resolves its URIs once with :func:`absolute_uri` before any Ray
task sees them: a task's working directory is not the driver's, and may even be gone. Absolute
paths, ``file://`` and ``s3://`` URIs never consult the working directory.

Retries: :func:`retrying` is the one retry layer. Every call of this module that touches S3
(listing, stat, read, write) waits out an outage -- an unreachable store, throttling, 5xx errors --
for up to the outage budget (``storage.outage_seconds``, :data:`OUTAGE_SECONDS` by default), with
exponential backoff and jitter; pyarrow's client tries each request once. Code that streams a
file through :func:`resolve` wraps the whole read or write in :func:`retrying` itself.
:func:`check_readable` and :func:`check_writable` are the preflight checks a command runs before it
starts any work: they fail fast on the user's storage errors (unreachable endpoint, missing bucket,
access denied) with a one-line :class:`StorageError`; :func:`describe_storage_error` turns such an
error, raised anywhere, into that line.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import posixpath
import re
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Final
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from restoration.io.errors import StorageError, describe_storage_error, redact
from restoration.io.outages import retrying

__all__ = [
    "IMAGE_EXTENSIONS",
    "S3_MAX_ATTEMPTS",
    "StorageError",
    "absolute_uri",
    "check_readable",
    "check_writable",
    "delete",
    "describe_storage_error",
    "exists",
    "join",
    "list_images",
    "read_bytes",
    "redact",
    "relative_key",
    "resolve",
    "retrying",
    "s3_filesystem",
    "safe_output_uri",
    "size",
    "write_bytes",
]

IMAGE_EXTENSIONS: Final[frozenset[str]] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
)
"""File name extensions :func:`list_images` picks up by default (compared case-insensitively)."""

_SCHEMES: Final[str] = "a local path, file:// or s3://"
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")

S3_MAX_ATTEMPTS: Final[int] = 1
"""Tries per S3 request in pyarrow's client: one. Retries are :func:`retrying`'s, with a time
budget instead of a count (the AWS strategy's backoff and client-wide retry quota give up within
seconds of an outage). In a batch job, an input that still fails past the budget becomes an
error row, which the next run retries."""

# The preflight checks (check_readable, check_writable) ask once more at most and give up on a
# connection quickly: a missing or firewalled endpoint is the user's error, reported in seconds.
_PROBE_MAX_ATTEMPTS: Final[int] = 2
_PROBE_CONNECT_TIMEOUT_S: Final[float] = 2.0
_CONNECT_TIMEOUT_S: Final[float] = 10.0
_WRITE_CHECK_PREFIX: Final[str] = "_write_check-"


# --------------------------------------------------------------------------------------------
# URIs


def _split(uri: str) -> tuple[str, str]:
    """(``"local"`` or ``"s3"``, path): an absolute local path, or ``bucket/key`` for S3.

    Trailing slashes are removed (except the root ``/``); nothing else is normalized.
    """
    if not isinstance(uri, str):
        raise TypeError(f"URI must be a string, got {type(uri).__name__}")
    if not uri:
        raise ValueError("URI must not be empty")
    if _WINDOWS_DRIVE.match(uri) or "://" not in uri:
        return "local", _strip_slash(_absolute_path(uri))
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URI {uri!r} names host {parts.netloc!r}; only local files are supported")
        path = uri.split("://", 1)[1][len(parts.netloc) :]
        if not path.startswith("/"):
            raise ValueError(f"file URI {uri!r} must hold an absolute path (file:///...)")
        return "local", _strip_slash(path)
    if scheme == "s3":
        bucket_and_key = uri.split("://", 1)[1]
        bucket = bucket_and_key.split("/", 1)[0]
        if not bucket:
            raise ValueError(f"S3 URI {uri!r} has no bucket; expected s3://bucket/key")
        return "s3", _strip_slash(bucket_and_key)
    raise ValueError(f"unsupported URI scheme {parts.scheme!r} in {uri!r}; expected {_SCHEMES}")


def _strip_slash(path: str) -> str:
    stripped = path.rstrip("/")
    return stripped or "/"


def _absolute_path(path: str) -> str:
    """``path`` with ``~`` expanded, joined to the working directory only when still relative."""
    expanded = os.path.expanduser(path)
    if os.path.isabs(expanded):
        return expanded
    try:
        working_directory = os.getcwd()
    except FileNotFoundError as error:  # the directory was deleted under this process
        raise ValueError(
            f"relative path {path!r} cannot be resolved: this process's working directory no "
            "longer exists; pass an absolute path (drivers resolve theirs with absolute_uri)"
        ) from error
    return os.path.join(working_directory, expanded)


def absolute_uri(uri: str) -> str:
    """``uri`` in a form that means the same in every process on every node.

    A relative local path is joined to this process's working directory and ``~`` is expanded
    (a trailing ``/`` is kept); absolute paths, ``file://`` and ``s3://`` URIs are returned
    unchanged. Drivers call this once for each URI they are given, before handing it to tasks.

    Raises:
        ValueError: the URI is malformed (see :func:`resolve`), or it is relative and the
            working directory no longer exists.
    """
    _split(uri)  # validates
    if not (_WINDOWS_DRIVE.match(uri) or "://" not in uri):
        return uri
    absolute = _absolute_path(uri)
    if uri.endswith("/") and not absolute.endswith("/"):
        absolute += "/"
    return absolute


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path on it for ``uri``.

    Returns:
        ``(LocalFileSystem, "/absolute/path")`` for local paths and ``file://`` URIs;
        ``(S3FileSystem, "bucket/key")`` for ``s3://bucket/key``.

    Raises:
        ValueError: empty URI, unsupported scheme, ``file://`` with a remote host, S3 without
            a bucket, or incomplete S3 settings.
    """
    kind, path = _split(uri)
    if kind == "s3":
        return s3_filesystem(), path
    return pafs.LocalFileSystem(), path


def join(uri: str, *parts: str) -> str:
    """``uri`` extended by path segments joined with ``/``.

    Leading and trailing slashes of each part are ignored, so a part can never replace the base
    (``join("s3://b/x", "/y")`` is ``"s3://b/x/y"``). Use :func:`safe_output_uri` for relative
    paths that come from data.
    """
    segments = [part.strip("/") for part in parts if part.strip("/")]
    if not segments:
        return uri
    base = uri.rstrip("/")
    if not base or base.endswith(":"):  # "/" or "file:///": keep the root's slashes
        base = uri
    separator = "" if base.endswith("/") else "/"
    return base + separator + "/".join(segments)


def relative_key(root_uri: str, file_uri: str) -> str:
    """The path of ``file_uri`` relative to ``root_uri``, with ``/`` separators.

    ``root_uri`` and ``file_uri`` may spell a local location differently (``/a`` and
    ``file:///a/b.png``). When ``file_uri`` is ``root_uri`` itself (a single-file input), the
    result is its file name.

    Raises:
        ValueError: the file is on another filesystem or bucket, lies outside the root, or the
            relative part has an empty, ``.`` or ``..`` segment (which could escape the root).
    """
    root_kind, root_path = _split(root_uri)
    file_kind, file_path = _split(file_uri)
    if root_kind != file_kind:
        raise ValueError(f"{file_uri!r} is not on the same filesystem as root {root_uri!r}")
    if file_path == root_path:
        name = posixpath.basename(file_path)
        if name in ("", ".", ".."):
            raise ValueError(f"{file_uri!r} has no file name")
        return name
    prefix = root_path if root_path.endswith("/") else root_path + "/"
    if not file_path.startswith(prefix):
        raise ValueError(f"{file_uri!r} is not inside root {root_uri!r}")
    relative = file_path[len(prefix) :]
    _check_relative(relative, f"{file_uri!r} relative to {root_uri!r}")
    return relative


def _check_relative(relative: str, what: str) -> None:
    segments = relative.split("/")
    bad = [segment for segment in segments if segment in ("", ".", "..")]
    if bad:
        raise ValueError(f"{what} has path segment {bad[0]!r}: empty, '.' and '..' segments are not allowed")


def safe_output_uri(output_root: str, relative: str) -> str:
    """``output_root`` joined with ``relative``, refusing anything that could land outside it.

    Args:
        output_root: any URI :func:`resolve` accepts.
        relative: a relative path with ``/`` separators, e.g. from :func:`relative_key`.

    Raises:
        ValueError: ``relative`` is empty, absolute (``/x``, ``~/x``, ``C:...``), a URI, or has
            backslashes, control characters, or empty, ``.`` or ``..`` segments.
    """
    _split(output_root)  # validates the root
    if not isinstance(relative, str):
        raise TypeError(f"relative path must be a string, got {type(relative).__name__}")
    if not relative:
        raise ValueError("relative output path must not be empty")
    if relative.startswith(("/", "~")) or _WINDOWS_DRIVE.match(relative) or re.match(r"^[A-Za-z]:", relative):
        raise ValueError(
            f"relative output path {relative!r} is absolute; it must stay inside {output_root!r}"
        )
    if "://" in relative:
        raise ValueError(f"relative output path {relative!r} is a URI; it must stay inside {output_root!r}")
    if "\\" in relative:
        raise ValueError(f"relative output path {relative!r} contains a backslash; use '/' separators")
    if any(ord(character) < 32 or ord(character) == 127 for character in relative):
        raise ValueError(f"relative output path {relative!r} contains control characters")
    _check_relative(relative, f"relative output path {relative!r}")
    return join(output_root, relative)


# --------------------------------------------------------------------------------------------
# S3


def s3_filesystem() -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem configured from the standard AWS environment variables.

    - ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (both or neither; with neither, the AWS
      SDK's default chain applies: profile files, instance metadata, ...), ``AWS_SESSION_TOKEN``;
    - ``AWS_REGION``, else ``AWS_DEFAULT_REGION`` (``us-east-1`` when a custom endpoint is set
      and no region is);
    - ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``, for S3-compatible stores
      (``http://host:port`` switches to plain HTTP).

    pyarrow's client tries each request once (:data:`S3_MAX_ATTEMPTS`; :func:`retrying` is the
    retry layer); connections time out after 10 s. One filesystem is cached per distinct set of
    settings, so changing the variables takes effect on the next call.
    """
    return _cached_s3_filesystem(*_s3_settings(), S3_MAX_ATTEMPTS, _CONNECT_TIMEOUT_S)


def _probe_s3_filesystem() -> pafs.S3FileSystem:
    """The S3 filesystem of the preflight checks: the same settings, fewer tries, shorter connect."""
    return _cached_s3_filesystem(*_s3_settings(), _PROBE_MAX_ATTEMPTS, _PROBE_CONNECT_TIMEOUT_S)


def _s3_settings() -> tuple[str | None, ...]:
    environ = os.environ
    return (
        environ.get("AWS_ACCESS_KEY_ID") or None,
        environ.get("AWS_SECRET_ACCESS_KEY") or None,
        environ.get("AWS_SESSION_TOKEN") or None,
        environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None,
        environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None,
    )


@functools.lru_cache(maxsize=8)
def _cached_s3_filesystem(
    access_key: str | None,
    secret_key: str | None,
    session_token: str | None,
    region: str | None,
    endpoint_url: str | None,
    max_attempts: int,
    connect_timeout: float,
) -> pafs.S3FileSystem:
    options: dict[str, object] = {
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=max_attempts),
        "connect_timeout": connect_timeout,
    }
    if (access_key is None) != (secret_key is None):
        missing = "AWS_SECRET_ACCESS_KEY" if secret_key is None else "AWS_ACCESS_KEY_ID"
        raise ValueError(
            f"{missing} is not set; set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither"
        )
    if access_key is not None:
        options["access_key"] = access_key
        options["secret_key"] = secret_key
        if session_token is not None:
            options["session_token"] = session_token
    if endpoint_url is not None:
        parts = urlsplit(endpoint_url if "://" in endpoint_url else f"https://{endpoint_url}")
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError(
                f"S3 endpoint URL {endpoint_url!r} (AWS_ENDPOINT_URL[_S3]) must look like http[s]://host[:port]"
            )
        options["endpoint_override"] = parts.netloc
        options["scheme"] = parts.scheme
        region = region or "us-east-1"
    if region is not None:
        options["region"] = region
    return pafs.S3FileSystem(**options)


# --------------------------------------------------------------------------------------------
# Files


def _info(filesystem: pafs.FileSystem, path: str, uri: str) -> pafs.FileInfo:
    try:
        return retrying(lambda: filesystem.get_file_info(path), uri)
    except OSError as error:
        raise OSError(f"cannot inspect {uri}: {redact(str(error))}") from error


def _normalized_extensions(extensions: Iterable[str]) -> frozenset[str]:
    if isinstance(extensions, str):
        raise TypeError(
            f"extensions must be a collection of strings like {{'.png'}}, got the string {extensions!r}"
        )
    normalized = set()
    for extension in extensions:
        if not isinstance(extension, str) or not extension.strip("."):
            raise ValueError(f"invalid extension {extension!r}; expected something like '.png'")
        normalized.add("." + extension.lower().lstrip("."))
    return frozenset(normalized)


def iter_images(
    uri: str, *, recursive: bool = True, extensions: Iterable[str] = IMAGE_EXTENSIONS
) -> Iterator[str]:
    """Image files under a folder or prefix, as URIs in the same form as ``uri``, in sorted
    order of their paths, one folder listed at a time: memory holds one folder's entries, not
    the whole tree.

    Args:
        uri: a folder / prefix, or a single file (yields ``uri`` whatever its extension).
        recursive: descend into sub-folders.
        extensions: file name extensions to keep, compared case-insensitively (``".png"`` or
            ``"png"``).

    Files and folders whose names start with ``.`` or ``_`` (``.cache``, ``_manifest``,
    ``_SUCCESS``) below ``uri`` are skipped.

    Raises:
        FileNotFoundError: nothing exists at ``uri``. OSError: a folder could not be listed.
    """
    wanted = _normalized_extensions(extensions)
    filesystem, path = resolve(uri)
    info = _info(filesystem, path, uri)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no such file or directory: {uri}")
    if info.type == pafs.FileType.File:
        yield uri
        return
    root = path if path.endswith("/") else path + "/"
    yield from (join(uri, relative) for relative in _walk(filesystem, root, "", recursive, wanted, uri))


def _walk(filesystem: pafs.FileSystem, root: str, relative: str, recursive: bool, wanted: frozenset[str],
          uri: str) -> Iterator[str]:
    """Relative paths of the wanted files below ``root + relative``, in sorted path order."""
    folder = root + relative
    selector = pafs.FileSelector(folder.rstrip("/") or "/", recursive=False)
    try:
        entries = retrying(lambda: filesystem.get_file_info(selector), uri)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"no such file or directory: {uri}") from error
    except OSError as error:
        raise OSError(f"cannot list {uri}: {redact(str(error))}") from error
    named = []
    for entry in entries:
        name = entry.path.rstrip("/").rsplit("/", 1)[-1]
        if not name or name.startswith((".", "_")):
            continue
        if entry.type == pafs.FileType.Directory and recursive:
            named.append((name + "/", True))  # "a/" sorts where the paths "a/..." sort
        elif entry.type == pafs.FileType.File and posixpath.splitext(name)[1].lower() in wanted:
            named.append((name, False))
    del entries
    for name, is_folder in sorted(named):
        if is_folder:
            yield from _walk(filesystem, root, relative + name, recursive, wanted, uri)
        else:
            yield relative + name


def list_images(
    uri: str, *, recursive: bool = True, extensions: Iterable[str] = IMAGE_EXTENSIONS
) -> list[str]:
    """:func:`iter_images` as a list (sorted URIs in the same form as ``uri``)."""
    return list(iter_images(uri, recursive=recursive, extensions=extensions))


def read_bytes(uri: str) -> bytes:
    """The whole contents of the file at ``uri``.

    Raises:
        FileNotFoundError: no file at ``uri``. OSError: any other failure, naming ``uri``.
    """
    filesystem, path = resolve(uri)

    def read() -> bytes:
        with filesystem.open_input_stream(path) as stream:
            return stream.read()

    try:
        return retrying(read, uri)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"no such file: {uri}") from error
    except OSError as error:
        # Some stores answer a GET of a missing key with a bare error; ask once more, unless the
        # error already says what is wrong (asking an unreachable endpoint again only waits).
        if describe_storage_error(error, uri) is None and _info(filesystem, path, uri).type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"no such file: {uri}") from error
        raise OSError(f"cannot read {uri}: {redact(str(error))}") from error


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri``, replacing any existing file.

    Local parent folders are created; a local file is written under a hidden temporary name and
    renamed into place, so readers never see a partial file. S3 objects appear whole on upload.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")

    def write() -> None:
        with open_output(uri) as stream:
            stream.write(data)

    retrying(write, uri)


def _remove(uri: str, remove: Callable[[pafs.FileSystem, str], None]) -> None:
    """``remove(filesystem, path)`` of ``uri``, retried through outages; what is gone already is
    no error."""
    filesystem, path = resolve(uri)

    def attempt() -> None:
        try:
            remove(filesystem, path)
        except FileNotFoundError:
            pass

    retrying(attempt, uri)


def delete(uri: str) -> None:
    """Delete the file at ``uri``; nothing happens when there is none."""
    _remove(uri, lambda filesystem, path: filesystem.delete_file(path))


def delete_folder(uri: str, *, first: str | None = None) -> None:
    """Delete the folder at ``uri`` (local or ``s3://``) and everything in it; nothing happens
    when there is none. ``first``: a file of it deleted before the rest (a marker whose presence
    says the folder is complete, so that a deletion cut short never leaves one that looks so)."""
    if first is not None:
        delete(join(uri, first))
    _remove(uri, lambda filesystem, path: filesystem.delete_dir(path))


@contextlib.contextmanager
def open_output(uri: str) -> Iterator[pa.NativeFile]:
    """A stream that writes the file at ``uri`` (replacing any), for outputs too large to hold
    as bytes. As :func:`write_bytes`: a local file appears under its name only when the stream
    is closed without error; an S3 object appears whole when its upload completes. Not retried
    by itself: wrap the whole write in :func:`retrying`."""
    filesystem, path = resolve(uri)
    try:
        if isinstance(filesystem, pafs.LocalFileSystem):
            parent, name = posixpath.split(path)
            filesystem.create_dir(parent, recursive=True)
            temporary = posixpath.join(parent, f".{name}.{uuid.uuid4().hex}.tmp")
            try:
                with filesystem.open_output_stream(temporary) as stream:
                    yield stream
                filesystem.move(temporary, path)
            except BaseException:
                if filesystem.get_file_info(temporary).type != pafs.FileType.NotFound:
                    filesystem.delete_file(temporary)
                raise
        else:
            with filesystem.open_output_stream(path) as stream:
                yield stream
    except OSError as error:
        raise OSError(f"cannot write {uri}: {redact(str(error))}") from error


def exists(uri: str) -> bool:
    """Whether a file or folder (for S3: an object or a non-empty prefix) exists at ``uri``."""
    filesystem, path = resolve(uri)
    return _info(filesystem, path, uri).type != pafs.FileType.NotFound


def size(uri: str) -> int | None:
    """Size of the file at ``uri`` in bytes; None when it does not exist or is a folder."""
    filesystem, path = resolve(uri)
    info = _info(filesystem, path, uri)
    return int(info.size) if info.type == pafs.FileType.File else None


# --------------------------------------------------------------------------------------------
# Preflight checks: the user's storage errors found before any work starts


def _raise_if_user_error(error: OSError, uri: str) -> None:
    message = describe_storage_error(error, uri)
    if message is not None:
        raise StorageError(message) from error


def _checked_info(filesystem: pafs.FileSystem, path: str, uri: str) -> pafs.FileInfo:
    try:
        return filesystem.get_file_info(path)
    except OSError as error:
        _raise_if_user_error(error, uri)
        raise OSError(f"cannot inspect {uri}: {redact(str(error))}") from error


def _require_bucket(filesystem: pafs.FileSystem, bucket: str, uri: str) -> None:
    if _checked_info(filesystem, bucket, uri).type == pafs.FileType.NotFound:
        raise StorageError(f"bucket {bucket} does not exist ({redact(uri)})")


def check_readable(uri: str) -> None:
    """Check, before any work starts, that a file or a non-empty folder / prefix is at ``uri``
    and can be read.

    S3: one or two requests (HEAD, LIST for a prefix; HEAD of the bucket when nothing is found),
    each tried at most twice with a 2 s connect timeout, so an unreachable endpoint fails in a
    few seconds. Local: the file is opened, or the folder listed.

    Raises:
        StorageError: the user's error, in one redacted line (see :func:`describe_storage_error`).
        ValueError: a malformed URI. OSError: anything else (a server fault), unchanged.
    """
    kind, path = _split(uri)
    if kind == "s3":
        filesystem = _probe_s3_filesystem()
        if _checked_info(filesystem, path, uri).type == pafs.FileType.NotFound:
            bucket = path.split("/", 1)[0]
            _require_bucket(filesystem, bucket, uri)
            raise StorageError(f"no such file or directory: {redact(uri)}")
        return
    try:
        if os.path.isdir(path):
            with os.scandir(path) as entries:
                next(entries, None)
        else:
            with open(path, "rb"):
                pass
    except OSError as error:
        _raise_if_user_error(error, uri)
        raise


def check_writable(uri: str) -> None:
    """Check, before any work starts, that files can be written under the folder / prefix ``uri``
    (which need not exist yet).

    S3: the bucket must exist (HEAD), and an empty object ``<uri>/_write_check-<random>`` is
    written and deleted; pyarrow then keeps ``<uri>/`` as an empty folder marker. Requests are
    tried at most twice with a 2 s connect timeout. Local: the nearest existing folder at or
    above ``uri`` must be a folder in which a temporary file can be created (it is removed).

    Raises:
        StorageError: the user's error, in one redacted line (see :func:`describe_storage_error`),
            also when a file stands where a folder is needed.
        ValueError: a malformed URI. OSError: anything else (a server fault), unchanged.
    """
    kind, path = _split(uri)
    if kind == "s3":
        filesystem = _probe_s3_filesystem()
        _require_bucket(filesystem, path.split("/", 1)[0], uri)
        probe = f"{path}/{_WRITE_CHECK_PREFIX}{uuid.uuid4().hex}"
        try:
            with filesystem.open_output_stream(probe):
                pass
        except OSError as error:
            _raise_if_user_error(error, uri)
            raise OSError(f"cannot write {uri}: {redact(str(error))}") from error
        try:
            filesystem.delete_file(probe)
        except OSError:
            pass  # written but not deletable: writing is what was checked; the empty object stays
        return
    existing = path
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise StorageError(f"cannot write under {redact(uri)}: {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=f".{_WRITE_CHECK_PREFIX}"):
            pass
    except OSError as error:
        if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise StorageError(f"access denied to {redact(uri)}: cannot create files in {existing}") from error
        _raise_if_user_error(error, uri)
        raise

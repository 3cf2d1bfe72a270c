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
import logging
import math
import os
import posixpath
import random
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Final, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

__all__ = [
    "IMAGE_EXTENSIONS",
    "OUTAGE_SECONDS",
    "S3_MAX_ATTEMPTS",
    "StorageError",
    "absolute_uri",
    "check_readable",
    "check_writable",
    "delete",
    "describe_storage_error",
    "exists",
    "is_transient",
    "join",
    "list_images",
    "read_bytes",
    "redact",
    "outage_budget",
    "outage_seconds",
    "relative_key",
    "resolve",
    "retrying",
    "s3_filesystem",
    "safe_output_uri",
    "set_outage_seconds",
    "size",
    "unreachable_for",
    "write_bytes",
]

IMAGE_EXTENSIONS: Final[frozenset[str]] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
)
"""File name extensions :func:`list_images` picks up by default (compared case-insensitively)."""

_SCHEMES: Final[str] = "a local path, file:// or s3://"
_CREDENTIAL_VARIABLES: Final[tuple[str, ...]] = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
)
# Signed-URL query parameters carry credentials or signatures too.
_SIGNED_QUERY = re.compile(r"(X-Amz-(?:Credential|Signature|Security-Token)=)[^&\s]+", re.IGNORECASE)
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


class StorageError(ValueError):
    """A storage error that is the user's to fix (unreachable endpoint, missing bucket or file,
    access denied); ``str()`` is one line with credentials redacted."""


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


def _endpoint_setting() -> tuple[str, str] | None:
    """(endpoint URL, the variable it came from) when a custom S3 endpoint is set."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return os.environ[name], name
    return None


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


def redact(text: str) -> str:
    """``text`` with the values of AWS credential variables present in the environment, and
    signed-URL credentials, replaced by ``***``. Use on anything logged or stored."""
    secrets = [os.environ.get(name, "") for name in _CREDENTIAL_VARIABLES]
    # Longest first, so a value that contains another is replaced whole.
    for secret in sorted((value for value in secrets if len(value) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _SIGNED_QUERY.sub(r"\1***", text)


# --------------------------------------------------------------------------------------------
# Outages: one retry layer, with a time budget


OUTAGE_SECONDS: Final[float] = 300.0
"""Default outage budget (``storage.outage_seconds``): how long a storage call keeps retrying a
store that is unreachable, throttling (503 SlowDown) or failing with 5xx errors, counted from
its first failure. Object stores have minutes-long brownouts; a call gives up only past this."""

_BACKOFF_FIRST_S: Final[float] = 0.25
_BACKOFF_MAX_S: Final[float] = 5.0
_REPORT_EVERY_S: Final[float] = 15.0

_TRANSIENT = re.compile(
    r"NETWORK_CONNECTION|curlCode: (?:5|6|7|18|28|52|55|56)\b|Could not connect|Couldn't connect"
    r"|Connection refused|Connection reset|Connection was reset|Failed to connect|Timeout was reached|timed out"
    r"|Empty reply|Broken pipe|SLOW_DOWN|SlowDown|THROTTLING|Throttl|SERVICE_UNAVAILABLE|ServiceUnavailable"
    r"|INTERNAL_FAILURE|InternalError|REQUEST_TIMEOUT|RequestTimeout|HTTP response code: 5\d\d|HTTP status 5\d\d",
    re.IGNORECASE,
)

log = logging.getLogger(__name__)


class _Outages:
    """This process's outage budget and what it has seen: when the current outage started (the
    first failure of a call still retrying), for the progress lines and the log."""

    def __init__(self) -> None:
        self.budget = OUTAGE_SECONDS
        self.lock = threading.Lock()
        self.retrying = 0  # calls now waiting for the store
        self.since: float | None = None  # monotonic time of the first failure of the current outage
        self.last_report = 0.0
        self.waited = 0.0  # seconds calls of this process spent waiting, in all

    def begin(self, now: float, uri: str, error: BaseException) -> None:
        with self.lock:
            self.retrying += 1
            if self.since is None:
                self.since, self.last_report = now, now
                log.warning("storage unreachable (%s): retrying for up to %s (storage.outage_seconds)",
                            _short_reason(error, uri), _seconds(self.budget))

    def still(self, now: float) -> None:
        with self.lock:
            if self.since is not None and now - self.last_report >= _REPORT_EVERY_S:
                self.last_report = now
                log.warning("storage still unreachable after %s (retrying for up to %s)",
                            _seconds(now - self.since), _seconds(self.budget))

    def end(self, now: float, started: float, *, recovered: bool) -> None:
        with self.lock:
            self.retrying -= 1
            self.waited += now - started
            if self.retrying == 0 and self.since is not None:
                if recovered:
                    log.warning("storage reachable again after %s", _seconds(now - self.since))
                self.since = None


_outages = _Outages()
_nesting = threading.local()  # depth of retrying calls in this thread


def _seconds(value: float) -> str:
    return f"{value:.0f} s"


def _short_reason(error: BaseException, uri: str) -> str:
    text = redact(" ".join(str(error).split()))
    return text if len(text) <= 200 else text[:197] + "..."


def outage_seconds() -> float:
    """This process's outage budget in seconds (:data:`OUTAGE_SECONDS` unless set)."""
    return _outages.budget


def set_outage_seconds(seconds: float) -> None:
    """Set this process's outage budget (``storage.outage_seconds``); 0 gives up at once."""
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"storage.outage_seconds must be a number >= 0, got {seconds!r}")
    _outages.budget = float(seconds)


@contextlib.contextmanager
def outage_budget(seconds: float | None) -> Iterator[None]:
    """Within the block, this process's outage budget is ``seconds`` (None: unchanged)."""
    if seconds is None:
        yield
        return
    previous = _outages.budget
    set_outage_seconds(seconds)
    try:
        yield
    finally:
        _outages.budget = previous


def unreachable_for() -> float | None:
    """Seconds since the current outage began, while a call of this process waits for the
    store; None when none does."""
    since = _outages.since
    return None if since is None else time.monotonic() - since


def is_transient(error: BaseException, uri: str) -> bool:
    """Whether ``error``, raised using ``uri``, is worth waiting out: S3 unreachable, throttling,
    5xx server errors, timeouts. Missing keys or buckets and denied access are not; nor is
    anything on a local filesystem."""
    if not (isinstance(uri, str) and uri.lower().startswith("s3://")):
        return False
    if isinstance(error, StorageError):
        return False
    chain = _error_chain(error)
    if any(isinstance(item, (FileNotFoundError, PermissionError)) for item in chain):
        return False
    text = " | ".join(str(item) for item in chain)
    if _NO_SUCH_BUCKET.search(text) or _ACCESS_DENIED.search(text):
        return False
    return bool(_TRANSIENT.search(text))


T = TypeVar("T")


def retrying(operation: Callable[[], T], uri: str) -> T:
    """``operation()``, called again while it fails with a transient storage error
    (:func:`is_transient`) until it succeeds or the outage budget
    (:func:`outage_seconds`, counted from its first failure) is spent.

    The one retry layer of every storage call: pyarrow's S3 client tries each request once.
    Waits grow from 0.25 s to 5 s, with jitter, so that many callers do not hit a store coming
    back all at once. While a call waits, a warning says that the store is unreachable and, every
    15 s, for how long. ``operation`` must be safe to repeat (a whole read or a whole write).
    Calls nested inside ``operation`` are not retried on their own: the outermost call repeats
    the whole operation, within one budget.

    Raises:
        OSError: the last error, once the budget is spent (the message says how long it waited);
            any other error at once.
    """
    if getattr(_nesting, "depth", 0):
        return operation()  # inside another retrying call: that one repeats the whole operation
    started: float | None = None
    delay = _BACKOFF_FIRST_S
    while True:
        _nesting.depth = 1
        try:
            result = operation()
        except OSError as error:
            _nesting.depth = 0
            now = time.monotonic()
            if not is_transient(error, uri):
                if started is not None:
                    _outages.end(now, started, recovered=True)  # the store answered
                raise
            if started is None:
                started = now
                _outages.begin(now, uri, error)
            else:
                _outages.still(now)
            left = _outages.budget - (now - started)
            if left <= 0:
                _outages.end(now, started, recovered=False)
                if now - started <= 0:
                    raise
                raise OSError(f"{redact(str(error))} (store unreachable for {now - started:.0f} s, "
                              f"past storage.outage_seconds={_outages.budget:g})") from error
            time.sleep(min(left, delay * random.uniform(0.5, 1.0)))
            delay = min(_BACKOFF_MAX_S, delay * 2)
            continue
        except BaseException:
            _nesting.depth = 0
            raise
        _nesting.depth = 0
        if started is not None:
            _outages.end(time.monotonic(), started, recovered=True)
        return result


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


def delete(uri: str) -> None:
    """Delete the file at ``uri``; nothing happens when there is none."""
    filesystem, path = resolve(uri)

    def remove() -> None:
        try:
            filesystem.delete_file(path)
        except FileNotFoundError:
            pass

    retrying(remove, uri)


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
# The user's storage errors, and the preflight checks that find them before any work starts

_UNREACHABLE = re.compile(
    r"NETWORK_CONNECTION|curlCode: (?:5|6|7|28)\b|Could not connect|Couldn't resolve|Could not resolve"
    r"|Connection refused|Failed to connect|Timeout was reached|timed out",
    re.IGNORECASE,
)
_NO_SUCH_BUCKET = re.compile(r"NO_SUCH_BUCKET|NoSuchBucket|specified bucket does not exist", re.IGNORECASE)
_ACCESS_DENIED = re.compile(
    r"ACCESS_DENIED|AccessDenied|Access Denied|SIGNATURE_DOES_NOT_MATCH|SignatureDoesNotMatch"
    r"|INVALID_ACCESS_KEY_ID|InvalidAccessKeyId|EXPIRED_TOKEN|ExpiredToken|InvalidToken"
    r"|HTTP response code: 403|\b403 Forbidden"
)
# Why access was denied, when the store says so: (pattern, the hint that names the variable).
_ACCESS_REASONS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(r"SIGNATURE_DOES_NOT_MATCH|SignatureDoesNotMatch"),
     "the secret key does not match the access key (AWS_SECRET_ACCESS_KEY)"),
    (re.compile(r"INVALID_ACCESS_KEY_ID|InvalidAccessKeyId"), "unknown access key (AWS_ACCESS_KEY_ID)"),
    (re.compile(r"EXPIRED_TOKEN|ExpiredToken|InvalidToken"), "the session token is expired or invalid (AWS_SESSION_TOKEN)"),
)


def _error_chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _endpoint_for_display(endpoint: str) -> str:
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    host = parts.netloc.rsplit("@", 1)[-1]  # never show user:password@
    return redact(f"{parts.scheme}://{host}{parts.path}".rstrip("/"))


def describe_storage_error(error: BaseException, uri: str) -> str | None:
    """One line describing ``error``, raised while using ``uri``, when it is the user's to fix.

    Recognized (in the error or anything it was raised from), with credentials redacted:

    - an unreachable S3 endpoint: ``"cannot reach the S3 endpoint http://127.0.0.1:9
      (AWS_ENDPOINT_URL)"``;
    - a missing bucket: ``"bucket photos does not exist (s3://photos/in)"``;
    - access denied (S3 403s, wrong keys, expired tokens, local permissions):
      ``"access denied to s3://photos/in: <reason when known>"``;
    - nothing at ``uri``: ``"no such file or directory: <uri>"``;
    - a :class:`StorageError`: its own message.

    Returns:
        The line, or None for anything else (server faults, bugs), which callers should let
        propagate with its traceback.
    """
    if isinstance(error, StorageError):
        return redact(str(error))
    chain = _error_chain(error)
    text = " | ".join(str(item) for item in chain)
    shown = redact(uri)
    is_s3 = isinstance(uri, str) and uri.lower().startswith("s3://")
    if is_s3 and _UNREACHABLE.search(text):
        endpoint = _endpoint_setting()
        if endpoint is None:
            return f"cannot reach S3 for {shown} (AWS's own endpoint: no AWS_ENDPOINT_URL is set)"
        return f"cannot reach the S3 endpoint {_endpoint_for_display(endpoint[0])} ({endpoint[1]})"
    if is_s3 and _NO_SUCH_BUCKET.search(text):
        bucket = uri.split("://", 1)[1].split("/", 1)[0]
        return f"bucket {bucket} does not exist ({shown})"
    if _ACCESS_DENIED.search(text) or any(isinstance(item, PermissionError) for item in chain):
        reason = next((hint for pattern, hint in _ACCESS_REASONS if pattern.search(text)), None)
        if reason is None and not is_s3:
            reason = "permission denied"
        return f"access denied to {shown}" + (f": {reason}" if reason else "")
    if any(isinstance(item, FileNotFoundError) for item in chain):
        return f"no such file or directory: {shown}"
    if any(isinstance(item, NotADirectoryError) for item in chain):
        return f"not a folder: a part of {shown} is a file"
    return None


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

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
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
import uuid
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

import pyarrow.fs as pafs

__all__ = [
    "IMAGE_EXTENSIONS",
    "exists",
    "join",
    "list_images",
    "read_bytes",
    "redact",
    "relative_key",
    "resolve",
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
_CREDENTIAL_VARIABLES: Final[tuple[str, ...]] = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
)
# Signed-URL query parameters carry credentials or signatures too.
_SIGNED_QUERY = re.compile(r"(X-Amz-(?:Credential|Signature|Security-Token)=)[^&\s]+", re.IGNORECASE)
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


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
        path = os.path.expanduser(uri)
        if not os.path.isabs(path):
            path = os.path.join(os.getcwd(), path)
        return "local", _strip_slash(path)
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

    Requests are retried (AWS standard strategy, 5 attempts). One filesystem is cached per
    distinct set of settings, so changing the variables takes effect on the next call.
    """
    environ = os.environ
    return _cached_s3_filesystem(
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
) -> pafs.S3FileSystem:
    options: dict[str, object] = {
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=5),
        "connect_timeout": 10.0,
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
# Files


def _info(filesystem: pafs.FileSystem, path: str, uri: str) -> pafs.FileInfo:
    try:
        return filesystem.get_file_info(path)
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


def list_images(
    uri: str, *, recursive: bool = True, extensions: Iterable[str] = IMAGE_EXTENSIONS
) -> list[str]:
    """Image files under a folder or prefix, as sorted URIs in the same form as ``uri``.

    Args:
        uri: a folder / prefix, or a single file (returned as ``[uri]`` whatever its extension).
        recursive: descend into sub-folders.
        extensions: file name extensions to keep, compared case-insensitively (``".png"`` or
            ``"png"``).

    Files and folders whose names start with ``.`` or ``_`` (``.cache``, ``_manifest``,
    ``_SUCCESS``) below ``uri`` are skipped.

    Raises:
        FileNotFoundError: nothing exists at ``uri``.
    """
    wanted = _normalized_extensions(extensions)
    filesystem, path = resolve(uri)
    info = _info(filesystem, path, uri)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no such file or directory: {uri}")
    if info.type == pafs.FileType.File:
        return [uri]
    try:
        entries = filesystem.get_file_info(pafs.FileSelector(path, recursive=recursive))
    except FileNotFoundError as error:
        raise FileNotFoundError(f"no such file or directory: {uri}") from error
    except OSError as error:
        raise OSError(f"cannot list {uri}: {redact(str(error))}") from error
    prefix = path if path.endswith("/") else path + "/"
    found = []
    for entry in entries:
        if entry.type != pafs.FileType.File or not entry.path.startswith(prefix):
            continue
        relative = entry.path[len(prefix) :]
        segments = relative.split("/")
        if any(segment.startswith((".", "_")) or not segment for segment in segments):
            continue
        if posixpath.splitext(segments[-1])[1].lower() in wanted:
            found.append(relative)
    return [join(uri, relative) for relative in sorted(found)]


def read_bytes(uri: str) -> bytes:
    """The whole contents of the file at ``uri``.

    Raises:
        FileNotFoundError: no file at ``uri``. OSError: any other failure, naming ``uri``.
    """
    filesystem, path = resolve(uri)
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError as error:
        raise FileNotFoundError(f"no such file: {uri}") from error
    except OSError as error:
        if _info(filesystem, path, uri).type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"no such file: {uri}") from error
        raise OSError(f"cannot read {uri}: {redact(str(error))}") from error


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri``, replacing any existing file.

    Local parent folders are created; a local file is written under a hidden temporary name and
    renamed into place, so readers never see a partial file. S3 objects appear whole on upload.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    filesystem, path = resolve(uri)
    try:
        if isinstance(filesystem, pafs.LocalFileSystem):
            parent, name = posixpath.split(path)
            filesystem.create_dir(parent, recursive=True)
            temporary = posixpath.join(parent, f".{name}.{uuid.uuid4().hex}.tmp")
            try:
                with filesystem.open_output_stream(temporary) as stream:
                    stream.write(data)
                filesystem.move(temporary, path)
            except BaseException:
                if filesystem.get_file_info(temporary).type != pafs.FileType.NotFound:
                    filesystem.delete_file(temporary)
                raise
        else:
            with filesystem.open_output_stream(path) as stream:
                stream.write(data)
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

"""Storage errors a user can fix, said in one line: an endpoint that does not answer, a missing
bucket, denied access (with the variable to fix); and credentials kept out of every message
(:func:`redact`)."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import Final
from urllib.parse import urlsplit


class StorageError(ValueError):
    """A storage error that is the user's to fix (unreachable endpoint, missing bucket or file,
    access denied); ``str()`` is one line with credentials redacted."""


_CREDENTIAL_VARIABLES: Final[tuple[str, ...]] = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
)
# Signed-URL query parameters carry credentials or signatures too.
_SIGNED_QUERY = re.compile(r"(X-Amz-(?:Credential|Signature|Security-Token)=)[^&\s]+", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the values of AWS credential variables present in the environment, and
    signed-URL credentials, replaced by ``***``. Use on anything logged or stored."""
    secrets = [os.environ.get(name, "") for name in _CREDENTIAL_VARIABLES]
    # Longest first, so a value that contains another is replaced whole.
    for secret in sorted((value for value in secrets if len(value) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _SIGNED_QUERY.sub(r"\1***", text)


_UNREACHABLE = re.compile(
    r"NETWORK_CONNECTION|curlCode: (?:5|6|7|28)\b|Could not connect|Couldn't resolve|Could not resolve"
    r"|Connection refused|Failed to connect|Timeout was reached|timed out",
    re.IGNORECASE,
)
NO_SUCH_BUCKET = re.compile(r"NO_SUCH_BUCKET|NoSuchBucket|specified bucket does not exist", re.IGNORECASE)
ACCESS_DENIED = re.compile(
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


def endpoint_setting() -> tuple[str, str] | None:
    """(endpoint URL, the variable it came from) when a custom S3 endpoint is set."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return os.environ[name], name
    return None


def error_chain(error: BaseException) -> list[BaseException]:
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
    chain = error_chain(error)
    text = " | ".join(str(item) for item in chain)
    shown = redact(uri)
    is_s3 = isinstance(uri, str) and uri.lower().startswith("s3://")
    if is_s3 and _UNREACHABLE.search(text):
        endpoint = endpoint_setting()
        if endpoint is None:
            return f"cannot reach S3 for {shown} (AWS's own endpoint: no AWS_ENDPOINT_URL is set)"
        return f"cannot reach the S3 endpoint {_endpoint_for_display(endpoint[0])} ({endpoint[1]})"
    if is_s3 and NO_SUCH_BUCKET.search(text):
        bucket = uri.split("://", 1)[1].split("/", 1)[0]
        return f"bucket {bucket} does not exist ({shown})"
    if ACCESS_DENIED.search(text) or any(isinstance(item, PermissionError) for item in chain):
        reason = next((hint for pattern, hint in _ACCESS_REASONS if pattern.search(text)), None)
        if reason is None and not is_s3:
            reason = "permission denied"
        return f"access denied to {shown}" + (f": {reason}" if reason else "")
    if any(isinstance(item, FileNotFoundError) for item in chain):
        return f"no such file or directory: {shown}"
    if any(isinstance(item, NotADirectoryError) for item in chain):
        return f"not a folder: a part of {shown} is a file"
    return None


@contextlib.contextmanager
def users_storage_errors(argument: str, uri: str) -> Iterator[None]:
    """Turn a storage error that is the user's to fix (unreachable endpoint, missing bucket or
    file, denied access) while using ``uri`` into one redacted line naming the argument and the
    URI, a StorageError (a ValueError); anything else propagates unchanged."""
    try:
        yield
    except (OSError, StorageError) as error:
        message = describe_storage_error(error, uri)
        if message is None:
            raise
        shown = redact(uri)
        raise StorageError(message if shown in message else f"{argument} {shown}: {message}") from error

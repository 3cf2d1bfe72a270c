"""Shared fixtures: real images from ../shared/data (skipped with a message where absent) and
scikit-image's sample photos."""

from __future__ import annotations

import os
from pathlib import Path

# The suite runs many processes that use torch on few cores at once: two pytest-xdist workers, the
# jobs they start, Ray's actors. OpenMP threads that wait for work by spinning hold a core that
# another process needs (two test files side by side on 2 cores: 55 s and 106 CPU-s spinning,
# 29 s and 56 CPU-s passive). Set before torch is imported; jobs and Ray workers inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(
    os.environ.get("RESTORATION_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data")
)


def shared_dir(*parts: str) -> Path:
    """A folder of ../shared/data, or skip the test with a message saying it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_dir():
        pytest.skip(f"benchmark images not found at {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def cbsd68_dir() -> Path:
    return shared_dir("val", "CBSD68")


@pytest.fixture(scope="session")
def set5_dir() -> Path:
    return shared_dir("val", "Set5")


@pytest.fixture(scope="session")
def classic5_dir() -> Path:
    return shared_dir("val", "Classic5")


@pytest.fixture(scope="session")
def cbsd432_dir() -> Path:
    return shared_dir("train", "CBSD432")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's astronaut photo, uint8 512x512x3."""
    from skimage import data

    return data.astronaut()

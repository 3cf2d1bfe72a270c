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


# The test files that take longest (Ray jobs, simulated clusters), longest first. `make test` runs
# two pytest-xdist workers that take whole files in collection order (--dist loadfile
# --no-loadscope-reorder; by default xdist would order files by their number of tests, which puts
# the longest files, one test each, last): with these first, the short files fill the end of the
# run on both workers instead of one worker finishing a long file alone.
LONGEST_FIRST = ("test_finetune_job.py", "test_restore_job.py", "test_stops.py",
                 "test_autoscaling.py", "test_train_on_archive_ray.py",
                 "test_community_models.py", "test_hostile_inputs.py", "test_lost_workers.py", "test_distill.py",
                 "test_self_supervised.py", "test_finetune_local.py", "test_restore_checks.py", "test_training.py", "test_restore_local.py",
                 "test_user_errors.py", "test_restore_stages.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order

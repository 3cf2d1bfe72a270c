"""A restore job survives what clusters do to it, run as a user runs it (``python -m jobs.restore``,
its own local Ray, in a session of its own): the whole job killed with SIGKILL at a third of the
job and SIGINT to its re-run at two thirds, each re-run going on from what the run before it
recorded. The scenario is one of ``bench/faults.py`` (which measures them at full size), at a size
that runs in CI. (An S3 outage waited out, then SIGTERM to a driver attached to a running
cluster: tests/test_restore_job.py. SIGTERM and SIGHUP to the whole process group, as systemd,
SLURM and a closed terminal send them: tests/test_group_signals.py.)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import faults  # noqa: E402  (bench/faults.py)

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture()
def scratch(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


# One image at a time, one actor: the job is slow enough to be caught where it should be.
SLOW = ["pipeline.batch_size=1", "pipeline.max_actors=1"]


@pytest.mark.timeout(900)
def test_sigkill_then_sigint_cost_the_reruns_little_and_the_last_finishes(scratch: Path) -> None:
    """One job stopped two ways, each re-run going on from what the run before it recorded:

    - SIGKILL of the driver and its local Ray at a third of the job. The manifest parts written
      every ``manifest.flush_seconds`` keep the record, so the re-run redoes only what was in
      flight: outputs written in the last 2 s before the kill, of the 4 s and more the job had
      been writing (a record lost whole would reach back that far).
    - SIGINT (to the process group, as Ctrl-C) at two thirds: the re-run exits 130 within 30 s,
      prints at most 3 lines on stderr, none of them a traceback or Ray's C++ stack dump, and the
      next run redoes at most 10 % of what was written. (SIGTERM to a driver attached to a
      running cluster, as ``ray job stop`` sends: tests/test_restore_job.py.)
    - The last re-run finishes with every input in the manifest exactly once.
    """
    count = 480  # a third of it is 160 outputs: 5 s of writing at 31 images/s, the fastest seen here
    files = faults.photos(count, 128)
    # The shipped denoiser, so that a third of the job is seconds of work, and short cadences
    # (the defaults, 1 s and 0.5 s, are measured by bench/faults.py on 1,200 images of 256x256).
    settings = [*SLOW, "manifest.flush_seconds=0.1", "pipeline.stream_seconds=0.1"]
    result = faults.interrupt_scenario(["crash", "sigint"], scratch, files, "default", settings, timeout=400)
    crash, sigint = result["stops"]
    assert crash["exit_code"] == "killed" and crash["manifest_rows_before"] > 0, result
    # What is at risk is bounded in time, not in a share of the work: rows reach a manifest part
    # about stream_seconds + flush_seconds after their output is written, plus Ray's transit.
    assert crash["seconds_writing_before"] >= 4.0, result
    assert crash["redone_oldest_seconds"] <= 2.0, result
    assert sigint["exit_code"] == 130, result
    assert sigint["seconds_to_exit"] <= 30, result
    assert len(sigint["stderr_after_signal"]) <= 3 and not sigint["traceback"], sigint["stderr_after_signal"]
    assert any("run the same command again" in line for line in sigint["stderr_after_signal"]), result
    assert sigint["redone"] <= 0.1 * sigint["written_before"], result
    assert 0 < crash["written_before"] < sigint["written_before"] < count, result  # each stopped before the end
    assert result["rerun_exit_code"] == 0 and result["all_done"], result
    print({key: value for key, value in result.items() if key != "stops"}, [{k: v for k, v in stop.items() if "stderr" not in k} for stop in (crash, sigint)])


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
    count = 600
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


# Seconds without a block moving before the job ends a pass (pipeline.stall_seconds; 1,800 by
# default). Above the time a fresh actor takes to start on a busy 2-core machine, which also
# moves no block.
STALL_SECONDS = 20


@pytest.mark.timeout(400)
def test_a_frozen_model_actor_ends_its_pass_and_the_next_pass_restores_the_rest(scratch: Path) -> None:
    """The job's only model actor stops answering mid-job (SIGSTOP, by PID: a wedged GPU driver or a
    deadlock looks the same to Ray, whose actor is alive and silent). Nothing moves in the pipeline;
    after ``pipeline.stall_seconds`` the pass ends with one warning, the next pass restores the
    inputs that got no result on a new actor, and the job exits 0 with every input in the
    manifest once, ``ok``. Without the stall limit the job waits for ever."""
    import os
    import signal
    import time

    from processes import command_lines, descendants, is_alive, stop_pids

    count = 60
    source, output = scratch / "in", scratch / "out"
    for key, data in faults.photos(count, 96).items():
        (source / key).parent.mkdir(parents=True, exist_ok=True)
        (source / key).write_bytes(data)
    command = faults.job_command(str(source), str(output), "default", *SLOW,
                                 f"pipeline.stall_seconds={STALL_SECONDS}")
    job = faults.Job(command, scratch, "frozen")
    frozen: list[int] = []
    try:
        faults.wait_until(lambda: len(faults.local_outputs(output)) >= 4, job, 200, "4 outputs were written")
        lines = command_lines()
        frozen = [pid for pid in descendants(job.pid)
                  if lines.get(pid, "").startswith("ray::") and "FusedActor" in lines[pid]]
        assert len(frozen) == 1, {pid: lines.get(pid) for pid in descendants(job.pid)}
        os.kill(frozen[0], signal.SIGSTOP)
        stopped_at, written = time.monotonic(), len(faults.local_outputs(output))
        code = job.wait(timeout=300)
        seconds = time.monotonic() - stopped_at
        gone_by = time.monotonic() + 10
        while is_alive(frozen[0]) and time.monotonic() < gone_by:
            time.sleep(0.1)
        outlived = is_alive(frozen[0])  # (killed below in any case)
    finally:
        if job.process.poll() is None:
            job.kill_tree()
        stop_pids(set(frozen), grace_seconds=1)
    stderr, stdout = job.stderr_path.read_text(errors="replace"), job.stdout_path.read_text(errors="replace")
    assert code == 0, stderr[-3000:]
    assert written < count, "the actor was frozen after the job's end"
    assert stderr.count(f"made no progress for {STALL_SECONDS:g} s") == 1, stderr[-3000:]
    assert "restoring them again" in stdout, stdout
    assert seconds >= STALL_SECONDS, seconds  # the stall was waited out, not ended by something else
    rows = faults.check_manifest(str(output), count)  # every input exactly once
    assert all(row["status"] == "ok" for row in rows.values()), [r["error"] for r in rows.values() if r["error"]][:3]
    assert not outlived, "the frozen actor outlived its job's Ray"
    print(f"frozen after {written} of {count} outputs; the job finished {seconds:.1f} s later")

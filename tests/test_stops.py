"""A restore job stopped every way that clusters, schedulers and people stop one, run as a user
runs it (``python -m jobs.restore``, its own local Ray, in a session of its own), one chain of
runs over the same inputs, each re-run going on from what the run before it recorded:

- SIGKILL of the driver and its local Ray (a crashed machine), after seconds of writing;
- SIGINT to its process group (Ctrl-C), SIGTERM to it (systemd's stop, SLURM's scancel,
  ``kill -TERM -PGID``) and SIGHUP (a closed terminal): the Ray processes that ``ray.init``
  started are not in that group (``jobs.ray_runtime.local_ray_in_own_session``), so only the
  driver gets the signal and stops the run cleanly (before, SIGTERM killed the raylet too and
  the driver waited on a dead cluster, silent, until SIGKILL);
- the last run's only model actor frozen (SIGSTOP): the pass ends after
  ``pipeline.stall_seconds`` and the next pass restores the rest.

(``bench/faults.py`` measures the crash and SIGINT at full size. SIGTERM to a driver attached to
a running cluster, as ``ray job stop`` sends, and an S3 outage: tests/test_restore_job.py.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import processes
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import faults

from restoration.restore.manifest import MANIFEST_DIR, read_manifest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# StopSignals alone (no Ray): SIGHUP, and a grace period that ends a wait without a timeout

BLOCKED_RUN = """
import queue, sys
from restoration.stopping import StopNow, StopSignals

with StopSignals(grace_seconds=float(sys.argv[1])) as stop:
    print("ready", flush=True)
    try:
        queue.Queue().get()  # a wait without a timeout, as Ray Data's iterator waits for blocks
    except StopNow as error:
        print(f"{stop.name} {stop.exit_code}: {error.reason}", flush=True)
        sys.exit(error.exit_code)
"""


@pytest.mark.timeout(60)
def test_sighup_is_a_stop_and_the_grace_period_ends_a_wait_that_never_returns() -> None:
    """SIGHUP to the group of a run stuck in a wait without a timeout (a driver whose cluster no
    longer answers): the grace period ends the wait, exit 129. (With ``interrupt_main`` the
    handler never ran: the main thread ran no Python code to see it.)"""
    process = subprocess.Popen([sys.executable, "-c", BLOCKED_RUN, "1"], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        signalled = time.monotonic()
        os.killpg(process.pid, signal.SIGHUP)
        code = process.wait(timeout=20)
        seconds = time.monotonic() - signalled
        out, err = process.communicate()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert code == 129, (out, err)
    assert 1.0 <= seconds < 10, seconds
    assert out.strip() == "SIGHUP 129: the work in flight did not finish within run.grace_seconds=1", (out, err)
    assert not err, err


# --------------------------------------------------------------------------------------------
# The restore job on its own local Ray, stopped by signals to its process group


class Jobs(list):
    """The jobs a test started, and the PIDs of their local Ray processes seen at a signal."""

    ray_pids: set[int]


@pytest.fixture()
def jobs() -> Iterator[Jobs]:
    """At teardown, every job still running is killed with its process group, and every process
    under it (its local Ray, in a session of its own) and every Ray process seen is killed by PID."""
    started = Jobs()
    started.ray_pids = set()
    yield started
    for job in started:
        if job.process.poll() is None:
            started.ray_pids |= processes.descendants(job.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGKILL)
            job.wait(timeout=30)
    processes.stop_pids(started.ray_pids, signal_first=signal.SIGKILL, grace_seconds=10)


def _lines_after(path: Path, offset: int) -> list[str]:
    return [line for line in path.read_bytes()[offset:].decode(errors="replace").splitlines() if line.strip()]


def _group_stop(job: faults.Job, signum: signal.Signals, jobs: Jobs) -> dict:
    """Send ``signum`` to the job's process group; wait (60 s at most) for it to exit. Returns
    the exit code, the seconds it took, the lines printed after the signal (stdout and stderr)
    and the processes under the job at the signal (its local Ray) still alive 10 s after."""
    ray_processes = processes.descendants(job.pid)
    jobs.ray_pids |= ray_processes
    offsets = job.stdout_path.stat().st_size, job.stderr_bytes()
    signalled = time.monotonic()
    os.killpg(job.pid, signum)
    try:
        code = job.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        code = None  # the fixture kills it
    seconds = time.monotonic() - signalled
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(processes.is_alive(pid) for pid in ray_processes):
        time.sleep(0.2)
    return {"code": code, "seconds": round(seconds, 1),
            "lines": _lines_after(job.stdout_path, offsets[0]) + _lines_after(job.stderr_path, offsets[1]),
            "ray_processes": len(ray_processes), "left": [pid for pid in ray_processes if processes.is_alive(pid)]}


def _rows_by_output(output: Path) -> dict[str, dict]:
    """The manifest's rows with an output, by output path relative to ``output``."""
    prefix = str(output).rstrip("/") + "/"
    return {row["output_uri"].removeprefix(prefix): row for row in read_manifest(str(output)).to_pylist()
            if row["output_uri"]}


# The chain's inputs and where each stop comes: the outputs written when it is sent. The crash
# ends a long first run (a record lost whole would reach back to the start of its writing: 160
# outputs of 128 px are 5 s and more of it here, 31 images/s the fastest seen); the signals come
# 40 outputs apart, and the last run restores the remaining 40, its actor frozen after 4.
COUNT, SIZE = 320, 128
STOPS = (("SIGKILL", 160), ("SIGINT", 200), ("SIGTERM", 240), ("SIGHUP", 280))
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}
# Seconds without a block moving before the job ends a pass (pipeline.stall_seconds; 1,800 by
# default). Above the time a fresh actor takes to start on a busy 2-core machine, which moves no
# block either.
STALL_SECONDS = 20


def _crash(job: faults.Job, jobs: Jobs, output: Path) -> dict:
    """SIGKILL of the driver and every process under it (its local Ray), as a lost machine. The
    outputs written before it, with their ages at the kill, and the manifest rows there were."""
    jobs.ray_pids |= processes.descendants(job.pid)
    killed_at = time.time()
    job.kill_tree()
    assert job.wait(timeout=60) == -signal.SIGKILL
    written = faults.local_outputs(output)
    rows = _rows_by_output(output) if (output / MANIFEST_DIR).is_dir() else {}
    return {"written": written, "ages": faults.output_ages(output, written, killed_at), "rows": len(rows)}


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_crash_then_sigint_sigterm_and_sighup_to_the_group_each_cost_the_next_run_little_and_a_frozen_actor_is_waited_out(
        tmp_path: Path, jobs: Jobs) -> None:
    """``python -m jobs.restore`` on its own local Ray, in a session of its own, as a user runs
    it, stopped four times, each re-run going on from what the run before it recorded:

    - SIGKILL of the driver and its local Ray: the manifest parts written every
      ``manifest.flush_seconds`` keep the record, so the next run redoes only what was in flight:
      outputs written in the last 2 s before the kill, of the 4 s and more the run had been
      writing (a record lost whole would reach back that far).
    - SIGINT, SIGTERM and SIGHUP to the process group: exit 130 / 143 / 129 within 30 s, at most
      3 lines after the signal (stdout and stderr together), one saying it stopped and to run the
      same command again, no traceback or Ray stack dump; a manifest row for every output
      written; no Ray process left; the next run redoes at most 10 % of what was written.
    - The last run's only model actor stops answering mid-way (SIGSTOP, by PID: a wedged GPU
      driver or a deadlock looks the same to Ray, whose actor is alive and silent). Nothing moves;
      after ``pipeline.stall_seconds`` that pass ends with one warning, the next pass restores
      the inputs that got no result on a new actor, and the run exits 0 with every input in the
      manifest exactly once. Without the stall limit it would wait for ever.
    """
    source, output = tmp_path / "in", tmp_path / "out"
    for key, data in faults.photos(COUNT, SIZE).items():
        (source / key).parent.mkdir(parents=True, exist_ok=True)
        (source / key).write_bytes(data)
    # One image at a time, one actor: the job is slow enough to be caught where it should be. Short
    # manifest cadences (the defaults, 1 s and 0.5 s, are measured by bench/faults.py).
    command = faults.job_command(str(source), str(output), "default", "pipeline.batch_size=1",
                                 "pipeline.max_actors=1", "manifest.flush_seconds=0.1", "pipeline.stream_seconds=0.1",
                                 f"pipeline.stall_seconds={STALL_SECONDS}")
    stops: list[dict] = []
    for index, (name, goal) in enumerate(STOPS):
        job = faults.Job(command, tmp_path, f"run{index}-{name}")
        jobs.append(job)
        faults.wait_until(lambda goal=goal: len(faults.local_outputs(output)) >= goal, job, 300,
                          f"{goal} outputs were written")
        if name == "SIGKILL":
            stop = _crash(job, jobs, output)
            assert stop["rows"] > 0, stop["rows"]  # manifest parts were written before the crash
            assert max(stop["ages"].values()) >= 4.0, max(stop["ages"].values())
        else:
            stop = _group_stop(job, getattr(signal, name), jobs)
            assert stop["code"] == EXIT_CODES[name] and stop["seconds"] <= 30, stop
            assert len(stop["lines"]) <= 3, stop["lines"]
            assert not any("Traceback" in line or "logging.cc" in line or "*** SIG" in line for line in stop["lines"]), stop
            stopped = [line for line in stop["lines"] if f"stopped by {name}" in line]
            assert len(stopped) == 1 and "run the same command again" in stopped[0], stop["lines"]
            assert stop["ray_processes"] and not stop["left"], stop  # its local Ray was there, and went with it
            # Every finished image kept: each output on disk has its manifest row.
            stop["written"] = faults.local_outputs(output)
            rows = _rows_by_output(output)
            assert stop["written"] and not stop["written"] - set(rows), sorted(stop["written"] - set(rows))[:5]
            assert all(rows[output_name]["status"] in ("ok", "skipped") for output_name in stop["written"])
        if stops:  # what this run redid of the outputs the one before it had written
            _account_redone(stops[-1], _rows_by_output(output))
        stops.append({"name": name, **stop})
        assert len(stop["written"]) < COUNT, "stopped before the end"

    rerun = faults.Job(command, tmp_path, "rerun")
    jobs.append(rerun)
    before = len(faults.local_outputs(output))
    faults.wait_until(lambda: len(faults.local_outputs(output)) >= before + 4, rerun, 300, "4 more outputs were written")
    lines = processes.command_lines()
    frozen = [pid for pid in processes.descendants(rerun.pid)
              if lines.get(pid, "").startswith("ray::") and "FusedActor" in lines[pid]]
    assert len(frozen) == 1, {pid: lines.get(pid) for pid in processes.descendants(rerun.pid)}
    jobs.ray_pids |= set(frozen)  # killed at teardown in any case
    os.kill(frozen[0], signal.SIGSTOP)
    frozen_at, written_at_freeze = time.monotonic(), len(faults.local_outputs(output))
    assert rerun.wait(timeout=300) == 0, rerun.stderr_path.read_text()[-3000:]
    stalled_for = time.monotonic() - frozen_at
    gone_by = time.monotonic() + 10
    while processes.is_alive(frozen[0]) and time.monotonic() < gone_by:
        time.sleep(0.1)
    assert not processes.is_alive(frozen[0]), "the frozen actor outlived its job's Ray"
    assert written_at_freeze < COUNT, "the actor was frozen after the job's end"
    stderr, stdout = rerun.stderr_path.read_text(errors="replace"), rerun.stdout_path.read_text(errors="replace")
    assert stderr.count(f"made no progress for {STALL_SECONDS:g} s") == 1, stderr[-3000:]
    assert "restoring them again" in stdout, stdout[-3000:]
    assert stalled_for >= STALL_SECONDS, stalled_for  # the stall was waited out, not ended by something else
    rows = faults.check_manifest(str(output), COUNT)  # every input exactly once
    assert all(row["status"] in ("ok", "skipped") for row in rows.values())
    _account_redone(stops[-1], _rows_by_output(output))

    print(f"last run: actor frozen after {written_at_freeze} of {COUNT} outputs, the run finished "
          f"{stalled_for:.1f} s later")
    print({stop["name"]: {key: stop[key] for key in ("seconds", "redone", "redone_oldest_seconds") if key in stop}
           | {"written": len(stop["written"])} for stop in stops},
          f"crash after {max(stops[0]['ages'].values()):.1f} s of writing")
    crash, *signalled = stops
    # What a crash puts at risk is bounded in time, not in a share of the work: rows reach a
    # manifest part about stream_seconds + flush_seconds after their output is written, plus Ray's transit.
    assert crash["redone_oldest_seconds"] <= 2.0, crash
    for stop in signalled:
        assert stop["redone"] <= 0.1 * len(stop["written"]), [(s["name"], s["redone"], len(s["written"])) for s in stops]
    written = [len(stop["written"]) for stop in stops]
    assert written == sorted(set(written)), written  # each run went on from the one before


def _account_redone(stop: dict, rows: dict[str, dict]) -> None:
    """How many of the outputs written before ``stop`` the next run restored again (their latest
    manifest row is ``ok``, not ``skipped``, and the next run's: the runs that came after have not
    reached them, as they skip what has a row), and, for a crash, how long before the kill the
    oldest of them had been written."""
    again = [name for name in stop["written"] if rows[name]["status"] == "ok"]
    stop["redone"] = len(again)
    if "ages" in stop:
        stop["redone_oldest_seconds"] = round(max((stop["ages"][name] for name in again), default=0.0), 2)

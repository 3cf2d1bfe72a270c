"""Signals to the whole process group of a job that runs its own local Ray, as systemd's stop,
SLURM's scancel, ``kill -TERM -PGID`` and a closed terminal (SIGHUP) send them: the Ray processes
that ``ray.init`` started are not in that group (``jobs.ray_runtime.local_ray_in_own_session``),
so only the driver gets the signal and stops the run cleanly. Before, SIGTERM killed the raylet
too and the driver waited on a dead cluster, silent, until SIGKILL. (SIGINT to the group and
SIGTERM to the driver alone: tests/test_faults.py, tests/test_restore_job.py.)
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
import faults  # noqa: E402  (bench/faults.py)

from restoration.restore.manifest import read_manifest  # noqa: E402

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


def _redone(written_before: set[str], rows: dict[str, dict]) -> int:
    """How many of the outputs written before a stop the next run restored again: their latest
    manifest row is ``ok`` (not ``skipped``) and the next run's (the runs that came after have
    not reached them: they skip what has a row)."""
    return sum(1 for name in written_before if rows[name]["status"] == "ok")


# Seconds without a block moving before the job ends a pass (pipeline.stall_seconds; 1,800 by
# default). Above the time a fresh actor takes to start on a busy 2-core machine, which moves no
# block either.
STALL_SECONDS = 20


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigterm_then_sighup_to_the_group_stop_cleanly_and_the_reruns_go_on_past_a_frozen_actor(
        tmp_path: Path, jobs: Jobs) -> None:
    """``python -m jobs.restore`` on its own local Ray, in a session of its own, as a user runs
    it; SIGTERM to its process group at half of the outputs, SIGHUP to the re-run's group at
    three quarters, then a last run finishes. Each stop: exit 143 / 129 within 30 s, at most 3 lines
    after the signal (stdout and stderr together), one saying it stopped, no traceback; a
    manifest row for every output written; no Ray process left; the next run redoes at most
    10 % of what was written before.

    The last run's only model actor stops answering mid-way (SIGSTOP, by PID: a wedged GPU driver
    or a deadlock looks the same to Ray, whose actor is alive and silent). Nothing moves in the
    pipeline; after ``pipeline.stall_seconds`` that pass ends with one warning, the next pass
    restores the inputs that got no result on a new actor, and the run exits 0. Without the stall
    limit it would wait for ever."""
    count = 240
    source, output = tmp_path / "in", tmp_path / "out"
    for key, data in faults.photos(count, 96).items():
        (source / key).parent.mkdir(parents=True, exist_ok=True)
        (source / key).write_bytes(data)
    # One image at a time, one actor: the job is slow enough to be caught where it should be.
    command = faults.job_command(str(source), str(output), "default", "pipeline.batch_size=1",
                                 "pipeline.max_actors=1", f"pipeline.stall_seconds={STALL_SECONDS}")
    stops = []
    for index, (signum, code) in enumerate([(signal.SIGTERM, 143), (signal.SIGHUP, 129)]):
        job = faults.Job(command, tmp_path, f"run{index}-{signum.name}")
        jobs.append(job)
        goal = count * (index + 2) // 4  # half way, then three quarters
        faults.wait_until(lambda goal=goal: len(faults.local_outputs(output)) >= goal, job, 300,
                          f"{goal} outputs were written")
        stop = _group_stop(job, signum, jobs)
        assert stop["code"] == code and stop["seconds"] <= 30, stop
        assert len(stop["lines"]) <= 3, stop["lines"]
        assert not any("Traceback" in line or "logging.cc" in line or "*** SIG" in line for line in stop["lines"]), stop
        stopped = [line for line in stop["lines"] if f"stopped by {signum.name}" in line]
        assert len(stopped) == 1 and "run the same command again" in stopped[0], stop["lines"]
        assert stop["ray_processes"] and not stop["left"], stop  # its local Ray was there, and went with it
        # Every finished image kept: each output on disk has its manifest row.
        written = faults.local_outputs(output)
        rows = _rows_by_output(output)
        assert written and not written - set(rows), sorted(written - set(rows))[:5]
        assert all(rows[name]["status"] in ("ok", "skipped") for name in written)
        if stops:  # what this run redid of the outputs the one before it had written
            stops[-1]["redone"] = _redone(stops[-1]["written"], rows)
        stops.append({**stop, "written": written})
        assert len(written) < count, "stopped before the end"

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
    assert written_at_freeze < count, "the actor was frozen after the job's end"
    stderr, stdout = rerun.stderr_path.read_text(errors="replace"), rerun.stdout_path.read_text(errors="replace")
    assert stderr.count(f"made no progress for {STALL_SECONDS:g} s") == 1, stderr[-3000:]
    assert "restoring them again" in stdout, stdout[-3000:]
    assert stalled_for >= STALL_SECONDS, stalled_for  # the stall was waited out, not ended by something else
    rows = faults.check_manifest(str(output), count)  # every input exactly once
    assert all(row["status"] in ("ok", "skipped") for row in rows.values())
    stops[-1]["redone"] = _redone(stops[-1]["written"], _rows_by_output(output))
    print(f"last run: actor frozen after {written_at_freeze} of {count} outputs, the run finished "
          f"{stalled_for:.1f} s later")
    print({signum: {"seconds": stop["seconds"], "lines": len(stop["lines"]), "written": len(stop["written"]),
                    "redone": stop["redone"]} for signum, stop in zip(("SIGTERM", "SIGHUP"), stops)})
    for stop in stops:
        assert stop["redone"] <= 0.1 * len(stop["written"]), [(s["redone"], len(s["written"])) for s in stops]
    assert len(stops[0]["written"]) < len(stops[1]["written"])

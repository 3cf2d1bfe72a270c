"""Autoscaling on one machine: both jobs submitted with `ray job submit` to a simulated cluster
(Ray's fake multi-node provider, cluster/local-fake.yaml) that adds GPU-like worker nodes for the
restore job's actors and removes them once idle.

The work is done by cluster/local_autoscaling.py (also runnable by hand); this test runs it in
its own session with a deadline, checks its JSON report, and stops by PID whatever of the cluster
is left (the script's process tree and every process naming the cluster's temp dir). About 2-3
minutes on a 2-core machine (4 with a load average of 40); part of the default suite.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from processes import command_lines, descendants, stop_pids

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "cluster" / "local_autoscaling.py"
DEADLINE_S = 480  # the script's own deadline (--timeout); a pass takes 2-5 minutes on a busy 2-core machine
EXIT_GRACE_S = 45  # for the script to stop its cluster, after its deadline or a SIGTERM

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    # Room for the deadline, the script's own cleanup, then ours.
    pytest.mark.timeout(DEADLINE_S + 2 * EXIT_GRACE_S + 30),
]
# A worker that Ray could not start in its working directory (see cluster/local_autoscaling.py).
_LOST_WORKING_DIRECTORY = re.compile(r"cd: \S*working_dir_files\S*: No such file or directory")


def _dashboard_missing() -> str | None:
    from ray._private.utils import get_dashboard_dependency_error

    error = get_dashboard_dependency_error()
    if error is None:
        return None
    return (f"`ray job submit` needs Ray's dashboard, whose packages are missing ({error}); "
            "pip install 'ray[default]' (same version as ray)")


def _leftovers(marker: str) -> list[str]:
    """Command lines of live processes that still name ``marker`` (the cluster's temp dir)."""
    return [f"{pid}: {command[:200]}" for pid, command in command_lines().items() if marker in command]


def _stop_what_is_left(process: subprocess.Popen, workdir: Path) -> None:
    """Stop, by PID, the script and its descendants and every process that names the cluster's
    temp dir (which the script writes to WORKDIR/cluster-temp-dir as soon as it makes it)."""
    pids = descendants(process.pid)
    if process.poll() is None:
        pids.add(process.pid)
    marker_file = workdir / "cluster-temp-dir"
    marker = marker_file.read_text().strip() if marker_file.is_file() else ""
    if marker:
        pids |= {pid for pid, command in command_lines().items() if marker in command}
    stop_pids(pids, grace_seconds=5)
    if process.poll() is None:
        process.wait(timeout=10)


def test_both_jobs_run_and_the_restore_job_scales_gpu_nodes_up_and_down(tmp_path: Path) -> None:
    if reason := _dashboard_missing():
        pytest.skip(reason)
    assert (REPO / "jobs" / "restore.py").is_file(), "jobs/restore.py is missing"
    report_path = tmp_path / "report.json"
    command = [sys.executable, str(SCRIPT), "--workdir", str(tmp_path), "--timeout", str(DEADLINE_S),
               "--report", str(report_path)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True, text=True)
    try:
        try:
            output, _ = process.communicate(timeout=DEADLINE_S + EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)  # the script stops its cluster by PID
            try:
                output, _ = process.communicate(timeout=EXIT_GRACE_S)
            except subprocess.TimeoutExpired:
                output = "(no output: the script did not exit after SIGTERM)"
            pytest.fail(f"local_autoscaling.py did not finish in {DEADLINE_S + EXIT_GRACE_S} s:\n{output[-4000:]}")

        assert process.returncode == 0, f"local_autoscaling.py exited {process.returncode}:\n{output[-6000:]}"
        report = json.loads(report_path.read_text())
        jobs = report["jobs"]

        # Both jobs ran end to end through `ray job submit` (cluster/submit.sh).
        assert jobs["finetune"]["status"] == "SUCCEEDED"
        assert jobs["finetune"]["model_written"], "the fine-tuned model was not written"
        restore = jobs["restore"]
        assert restore["status"] == "SUCCEEDED"
        assert restore["model"].endswith("model"), "the restore job should use the model just fine-tuned"
        assert restore["manifest_rows"] == 8 and restore["manifest_status"] == {"ok": 8}
        assert restore["restored_files"] == 8
        # One (declared) GPU per actor, as on a real GPU cluster.
        assert restore["actor_pool"]["num_gpus"] == 1

        # The restore job's pending GPU actors made the autoscaler add gpu-worker nodes ...
        assert report["peak_workers"]["gpu-worker"] >= 1, report["timeline"]
        assert any("type gpu-worker" in event and "Adding" in event for event in restore["autoscaler_events"])
        # ... and every worker node was removed once idle.
        assert report["scaled_down_at_s"] is not None, report["timeline"]
        assert report["timeline"][-1]["gpu-worker"] == 0 and report["timeline"][-1]["cpu-worker"] == 0

        # Nodes joining did not pull the working directory from under other nodes' workers.
        for job in ("finetune", "restore"):
            log = Path(jobs[job]["log"]).read_text(errors="replace")
            assert not _LOST_WORKING_DIRECTORY.search(log), f"{job}: a worker lost its working directory"

        # Nothing of the simulated cluster is left running.
        assert not _leftovers(report["temp_dir"])
    finally:
        _stop_what_is_left(process, tmp_path)

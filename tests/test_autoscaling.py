"""Autoscaling on one machine: both jobs submitted with `ray job submit` to a simulated cluster
(Ray's fake multi-node provider, cluster/local-fake.yaml) that adds GPU-like worker nodes for the
restore job's actors and removes them once idle.

The work is done by cluster/local_autoscaling.py (also runnable by hand); this test runs it in
its own process group with a deadline and checks its JSON report. About 2 minutes on an idle
2-core machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from processes import command_lines

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "cluster" / "local_autoscaling.py"
DEADLINE_S = 360  # the script's own deadline; pytest's timeout below leaves room for cleanup

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.timeout(DEADLINE_S + 60),
    # About 3 minutes of simulated cluster; it passed from a fresh clone but failed once in a
    # long-lived checkout (a restore read task lost its working directory), so it runs on request.
    pytest.mark.skipif(
        os.environ.get("RESTORATION_AUTOSCALING_TEST") != "1",
        reason="set RESTORATION_AUTOSCALING_TEST=1 to run the simulated autoscaling cluster (about 3 minutes)",
    ),
]


def _dashboard_missing() -> str | None:
    from ray._private.utils import get_dashboard_dependency_error

    error = get_dashboard_dependency_error()
    if error is None:
        return None
    return (f"`ray job submit` needs Ray's dashboard, whose packages are missing ({error}); "
            "pip install 'ray[default]' (same version as ray)")


def _script_module():
    spec = importlib.util.spec_from_file_location("local_autoscaling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _leftovers(marker: str) -> list[str]:
    """Command lines of live processes that still name ``marker`` (the cluster's temp dir)."""
    return [f"{pid}: {command[:200]}" for pid, command in command_lines().items() if marker in command]


def test_both_jobs_run_and_the_restore_job_scales_gpu_nodes_up_and_down(tmp_path: Path) -> None:
    if reason := _dashboard_missing():
        pytest.skip(reason)
    if not (REPO / "jobs" / "restore.py").is_file():
        pytest.skip("jobs/restore.py does not exist yet")
    report_path = tmp_path / "report.json"
    command = [sys.executable, str(SCRIPT), "--workdir", str(tmp_path), "--timeout", str(DEADLINE_S),
               "--report", str(report_path)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True, text=True)
    try:
        output, _ = process.communicate(timeout=DEADLINE_S + 40)
    except subprocess.TimeoutExpired:
        # SIGTERM makes the script stop its cluster (by PID); then make sure, by PID too.
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=30)
        finally:
            helper = _script_module()
            helper.stop_processes(process.pid, marker=None, grace_s=5)
            for temp_dir in Path("/tmp").glob("rlas-*"):
                if temp_dir.stat().st_mtime >= tmp_path.stat().st_mtime:
                    helper.stop_processes(None, marker=str(temp_dir), grace_s=5)
        pytest.fail(f"local_autoscaling.py did not finish in {DEADLINE_S + 40} s:\n{output[-4000:]}")

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

    # Nothing of the simulated cluster is left running.
    assert not _leftovers(report["temp_dir"])

"""A lost worker node: the restore job, on the simulated autoscaling cluster of
``cluster/local_autoscaling.py``, loses the worker node that holds its only model actor (the
node's raylet and every process of it, by SIGKILL and PID): Ray retries the node's tasks and
restarts the actor on another GPU node (one the autoscaler adds, or had added for the CPU tasks),
and the manifest still accounts for every input once, ``ok``. (A Ray Train worker lost inside a
fine-tune: tests/test_finetune_job.py.)

Nothing in the job knows about this test: the processes are found from outside, by command line.
About 45-60 s on a 2-core machine (more when it is busy).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from processes import command_lines, descendants, is_alive, stop_pids

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _sigterm_unwinds():
    """A SIGTERM to pytest while a test here runs raises KeyboardInterrupt in it, so that its
    ``finally`` blocks stop, by PID, the cluster or job it started (pytest would die at once and
    leave them running)."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _local_autoscaling():
    """cluster/local_autoscaling.py as a module (``cluster/`` is not a package)."""
    if "local_autoscaling" not in sys.modules:
        spec = importlib.util.spec_from_file_location("local_autoscaling", REPO / "cluster" / "local_autoscaling.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["local_autoscaling"] = module
    return sys.modules["local_autoscaling"]


def _dashboard_missing() -> str | None:
    from ray._private.utils import get_dashboard_dependency_error

    error = get_dashboard_dependency_error()
    if error is None:
        return None
    return (f"the simulated cluster needs Ray's dashboard, whose packages are missing ({error}); "
            "pip install 'ray[default]' (same version as ray)")


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else "(no log)"


# --------------------------------------------------------------------------------------------
# A worker node lost under the restore job

IMAGES = 60  # 96-pixel crops: a few seconds of work for one actor, long enough to be interrupted
RESTORE_DEADLINE_S = 300  # for the whole job; a pass takes about a minute
LOST_NODE_SECONDS = 3  # how soon the simulated cluster's GCS declares a silent node dead
# Ray Data sometimes waits for ever after the node is lost (the actor restarted, the lost blocks'
# tasks resubmitted, then nothing moves): the job ends such a pass after this long without
# progress and restores the inputs that got no result in another (pipeline.stall_seconds).
STALL_SECONDS = 40


def _model_actor_node(raylets: dict[str, int]) -> str | None:
    """The worker node whose raylet runs a model actor of the restore job (split pipeline:
    ``ModelActor``), or None while there is none."""
    node_of_raylet = {pid: node for node, pid in raylets.items()}
    for pid, command in command_lines().items():
        if command.startswith("ray::") and "ModelActor" in command:
            try:
                parent = psutil.Process(pid).ppid()
            except psutil.Error:  # gone meanwhile
                continue
            if parent in node_of_raylet:
                return node_of_raylet[parent]
    return None


def _cluster_state(cluster) -> str:
    """Nodes and actors as the cluster's dashboard sees them, for a failure message."""
    lines = []
    for what, path in (("nodes", "/api/v0/nodes?limit=100&detail=1"), ("actors", "/api/v0/actors?limit=200&detail=1")):
        try:
            rows = cluster.get(path)["data"]["result"]["result"]
        except (OSError, KeyError, ValueError) as error:
            lines.append(f"{what}: not available ({error})")
            continue
        keys = ("node_id", "state", "resources_total") if what == "nodes" else ("class_name", "state", "node_id", "pid")
        lines += [f"{what}: " + ", ".join(f"{key}={row.get(key)}" for key in keys) for row in rows]
    return "\n".join(lines)


def _declared_dead(cluster, node_id: str, within_s: float) -> bool:
    """Whether the cluster stops listing ``node_id`` as alive within ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if node_id not in {node["node_id"] for node in cluster.nodes()}:
                return True
        except (OSError, KeyError, ValueError):  # a slow answer from the dashboard: ask again
            pass
        time.sleep(0.5)
    return False


@pytest.mark.timeout(RESTORE_DEADLINE_S + 120)
def test_the_restore_job_loses_the_node_of_its_model_actor_and_still_restores_every_input_once(
    tmp_path: Path,
) -> None:
    if reason := _dashboard_missing():
        pytest.skip(reason)
    simulation = _local_autoscaling()
    import pyarrow.parquet as pq

    from restoration.models.checkpoint import save_checkpoint
    from restoration.models.fused import ModelConfig, build_model
    from restoration.restore.manifest import MANIFEST_DIR, read_manifest

    inputs = simulation.write_images(tmp_path / "inputs", count=IMAGES, size=96)
    model = save_checkpoint(build_model(ModelConfig(widths=(8, 8, 16, 16, 24, 24)), backbone_weights=None),
                            tmp_path / "model", model_id="tiny-random")
    output = tmp_path / "restored"
    # The driver and the cluster's workers import the project from a copy of the checkout, so that
    # edits made there meanwhile stay out of this run (the driver's directory leads the workers'
    # sys.path, before the editable install).
    working_dir = simulation.snapshot_working_tree(tmp_path / "working-dir")
    log_path = tmp_path / "restore.log"
    deadline = time.monotonic() + RESTORE_DEADLINE_S
    # One model actor, one GPU each: when its node is lost the actor has nowhere to go but a GPU
    # node the autoscaler adds (or another one it added already for the CPU tasks).
    command = [sys.executable, "-m", "jobs.restore", "--input", str(inputs), "--output", str(output),
               "--task", "denoise", "--model", str(model), *simulation.restore_simulation_args(1, 1),
               "--set", f"pipeline.stall_seconds={STALL_SECONDS}"]

    # Idle nodes stay a minute (not cluster/local-fake.yaml's 6 s): only the kill removes a node.
    with simulation.LocalCluster(tmp_path, idle_timeout_minutes=1, lost_node_seconds=LOST_NODE_SECONDS) as cluster:
        env = {**os.environ, **cluster.auth_env, "RAY_ADDRESS": f"{cluster.ip}:{cluster.port}",
               "PYTHONUNBUFFERED": "1"}
        env.pop("RAY_API_SERVER_ADDRESS", None)
        with log_path.open("wb") as log_file:
            driver = subprocess.Popen(command, cwd=working_dir, env=env, stdout=log_file,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # Kill the model actor's node once the job has written its first outputs. The node is
            # found while the job starts (a scan of the process table takes a while on a busy
            # machine, and the whole job can take only a few seconds once its actor is up), so
            # that the kill follows the first output within a glob and a short sleep.
            killed: dict = {}
            node = None
            while driver.poll() is None and time.monotonic() < deadline:
                if node is None:
                    node = _model_actor_node(cluster.worker_raylets())
                written = len(list(output.glob("*.png"))) if output.is_dir() else 0
                if node is not None and written:
                    killed = {"node": node, "written": written, "at": time.monotonic()}
                    killed["pids"] = cluster.kill_node(node)
                    break
                time.sleep(0.05 if node is not None else 0.2)
            assert killed, f"the job ended (exit {driver.poll()}) before its node could be killed:\n{_tail(log_path)}"
            try:
                code = driver.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"the restore job did not finish in {RESTORE_DEADLINE_S} s after losing node "
                            f"{killed['node']} ({killed['written']} outputs then):\n{_tail(log_path)}\n"
                            f"{_cluster_state(cluster)}")
            recovered_s = time.monotonic() - killed["at"]
            # The node is gone for good: its processes are dead and the GCS declared it dead.
            assert not [pid for pid in killed["pids"] if is_alive(pid)]
            assert _declared_dead(cluster, killed["node"], within_s=30), f"node {killed['node']} is still alive"
        finally:
            stop_pids(descendants(driver.pid) | ({driver.pid} if driver.poll() is None else set()), grace_seconds=5)
            if driver.poll() is None:
                driver.wait(timeout=10)

    log = _tail(log_path)
    assert code == 0, f"the restore job exited {code} after losing a node:\n{log}"
    assert killed["written"] < IMAGES, killed  # the node was lost mid-job
    # The autoscaler's provider dropped the node (Ray's fake provider would list it as starting
    # for ever, and no node would replace it: see LostNodeAwareProvider).
    monitor = (tmp_path / "ray-logs" / "monitor.log").read_text(errors="replace")
    assert f"the raylet of node {killed['node']} exited: the node is lost" in monitor
    full_log = log_path.read_text(errors="replace")
    stalled = "made no progress" in full_log
    print(f"node {killed['node']} lost after {killed['written']} of {IMAGES} outputs; "
          f"the job finished {recovered_s:.1f} s later"
          + (" (a pass stalled and its inputs were restored in the next)" if stalled else ""))
    if stalled:
        assert "restoring them again" in full_log, log

    # Every input exactly once, ok, with its output; nothing else written.
    rows = read_manifest(str(output)).to_pylist()
    sources = sorted(row["source_uri"] for row in rows)
    expected = sorted(str(path) for path in inputs.glob("*.png"))
    assert len(rows) == IMAGES and sources == expected, (len(rows), sources[:3], expected[:3])
    for row in rows:
        assert row["status"] == "ok", (row["source_uri"], row["error"])
        assert row["output_uri"] == row["source_uri"].replace(str(inputs), str(output)), row
    parts = sorted((output / MANIFEST_DIR).glob("*.parquet"))
    raw = [uri for part in parts for uri in pq.read_table(part, columns=["source_uri"]).column("source_uri").to_pylist()]
    assert sorted(raw) == expected, "an input is missing from, or repeated in, the manifest files"
    assert sorted(p.name for p in output.glob("*.png")) == sorted(p.name for p in inputs.glob("*.png"))

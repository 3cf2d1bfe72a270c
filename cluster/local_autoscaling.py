"""Autoscaling on one machine: both jobs on a simulated cluster that grows and shrinks.

    python cluster/local_autoscaling.py [--timeout 300] [--workdir DIR] [--report FILE.json]

What it does, with Ray's fake multi-node provider (``cluster/local-fake.yaml``; every simulated
node is a set of local processes, so the real autoscaler decides and the real raylets run):

1. starts a head node (1 CPU) on free ports with its own temp dir, autoscaler every second;
2. writes a few small training/validation/input images under the work dir, and copies the files
   `ray job submit --working-dir .` would upload to ``WORKDIR/working-dir``;
3. submits ``jobs.finetune`` with ``cluster/submit.sh`` (``ray job submit``) for a tiny model: one
   1-CPU worker fits on the head (``--finetune-workers 2`` does not, and adds a ``cpu-worker``);
4. submits ``jobs.restore`` with that model, set up as on a real autoscaling GPU cluster
   (``pipeline.use_gpu=true``: one GPU per actor, decided before any GPU node exists) except
   ``predictor.device=cpu``: its pending actors make the autoscaler add ``gpu-worker`` nodes,
   whose declared GPU places the actors while the model runs on the CPU;
5. waits until every worker node has been idle for ``idle_timeout_minutes`` and is removed;
6. prints (and with ``--report`` writes) a JSON report: job statuses, the autoscaler's events,
   the node timeline and peaks, the restore manifest's counts;
7. stops every process it started, by PID, whatever happened (also on Ctrl-C, SIGTERM or
   ``--timeout``), keeping the nodes' logs in ``WORKDIR/ray-logs``. The cluster's temp dir is
   written to ``WORKDIR/cluster-temp-dir`` as soon as it exists, so that a caller can find (by
   command line) and stop what is left if this script itself is killed.

The jobs get that copy of the working tree in place (``WORKING_DIR=local://WORKDIR/working-dir``
for ``cluster/submit.sh``) instead of an uploaded package. On a real cluster every node unpacks
the package on its own disk; here every simulated node shares the head's temp dir, and each node
that joins re-creates the package's folder there (Ray deletes and unpacks it again), under the
workers that other nodes have already started in it: those lose their working directory (``os.getcwd()``, and so
``os.path.abspath`` of a relative path, raise ``FileNotFoundError``) and import half-unpacked
modules, and their tasks die and are retried. A folder that no node unpacks cannot vanish, and a copy (rather than the
checkout itself) keeps edits made while the jobs run out of them.

Needs the dashboard (``ray job submit`` talks to it): ``pip install 'ray[default]'``.

``--min-actors 2`` shows the other behaviour of docs/cluster.md, section 9: with the pool's minimum
at its maximum, both GPU nodes are added at the start instead of one by one.

``LocalCluster.kill_node`` loses a worker node as a machine is lost: its raylet and every process
of it SIGKILLed by PID at once (``tests/test_lost_workers.py`` does it under a running restore
job); ``LocalCluster(lost_node_seconds=...)`` makes the GCS declare such a node dead sooner than
Ray's 15 s. The autoscaler runs with :class:`LostNodeAwareProvider` instead of Ray's fake provider
as such, which would keep listing a lost node as one still starting, so that it is never replaced.

Exit status 0 when both jobs succeeded, a gpu-worker node was added and every worker node was
removed afterwards; 1 otherwise; 3 when ``jobs/restore.py`` does not exist.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import yaml
from ray._private import ray_constants
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

from local.processes import descendants, is_alive, stop_pids

REPO = Path(__file__).resolve().parents[1]
FAKE_CONFIG = REPO / "cluster" / "local-fake.yaml"
SUBMIT = REPO / "cluster" / "submit.sh"
HEAD_CPUS = 1



def restore_simulation_args(min_actors: int, max_actors: int) -> list[str]:
    """The restore job as on a real autoscaling GPU cluster (one GPU per actor, decided up front
    since no GPU node is up when the job starts), except that the model runs on the CPU: the
    simulated nodes declare a GPU that is not there."""
    return [
        "--set", "pipeline.use_gpu=true",
        "--set", f"pipeline.min_actors={min_actors}",
        "--set", f"pipeline.max_actors={max_actors}",
        "--set", "pipeline.batch_size=2",
        "--set", "predictor.device=cpu",
        "--set", "predictor.threads=1",
    ]


TINY_FINETUNE_ARGS = [
    "--set", "model.widths=[8,8,16,16,24,24]",
    "--set", "data.crop_size=64",
    "--set", "data.batch_size=2",
    "--set", "validation.interval=4",
    "--set", "validation.limit=1",
    "--set", "checkpoint_interval=4",
    "--set", "log_interval=2",
]


def log(message: str) -> None:
    print(f"[local-autoscaling {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------
# Processes: everything started here is found again by PID (descendants of the head process,
# plus anything whose command line names this cluster's private temp dir) and stopped by PID.


def _naming(marker: str) -> set[int]:
    pids = set()
    for process in psutil.process_iter(["cmdline"]):
        if process.pid != os.getpid() and marker in " ".join(process.info["cmdline"] or ()):
            pids.add(process.pid)
    return pids


def stop_processes(root_pid: int | None, marker: str | None, grace_s: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL after ``grace_s``, every process of this cluster; returns their PIDs."""
    pids: set[int] = set()
    for _ in range(3):  # nodes started late (or reparented) show up on a second look
        found = (descendants(root_pid) | {root_pid}) if root_pid else set()
        if marker:
            found |= _naming(marker)
        found.discard(os.getpid())
        new = found - pids
        if not new:
            break
        pids |= new
        for pid in new:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    stop_pids(pids, signal_first=None, grace_seconds=grace_s)  # SIGKILL for those still alive after the grace
    return sorted(pids)


# ------------------------------------------------------------------------------------------
# The simulated cluster


def snapshot_working_tree(destination: Path) -> Path:
    """Copy what ``ray job submit --working-dir .`` would upload to ``destination``: the files git
    tracks or would track (.gitignore applies; without git, all but .git, .venv and caches)."""
    if destination.exists():
        shutil.rmtree(destination)
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=REPO, capture_output=True, check=True, timeout=60).stdout
        relatives = [name for name in listed.decode().split("\0") if name]
    except (OSError, subprocess.SubprocessError):
        relatives = None
    if relatives is None:
        shutil.copytree(REPO, destination, ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "*.egg-info", ".pytest_cache", "runs", "demo-output"))
        return destination
    for relative in relatives:
        source = REPO / relative
        if source.is_file():  # tracked files deleted in the checkout are listed too
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


class LostNodeAwareProvider(FakeMultiNodeProvider):
    """Ray's fake multi-node provider, except that a node whose raylet died is gone, as a cloud
    reports a lost machine's instance as terminated.

    Ray's own fake provider lists every node it started until the autoscaler terminates it. Once
    the GCS has declared a node dead, the autoscaler (v1) has no reports of it, and then often
    takes it for a node still starting ("Pending: ... uninitialized" in ``ray status``) that is
    neither idle nor silent for too long: it counts the node's resources as on their way and does
    not replace it. A restore job whose only model actor had been on such a node waited for a GPU
    for over 4 minutes (idle timeout 1 minute) until its deadline. This provider forgets a node
    whose raylet exited each time the autoscaler lists the nodes (about every second) and stops
    what is left of it by PID; the autoscaler then adds a node if the demand calls for one. The
    autoscaler's monitor process loads it by name (``provider.type: external``;
    :class:`LocalCluster` puts ``cluster/`` on its PYTHONPATH).
    """

    def non_terminated_nodes(self, tag_filters):
        self._forget_lost_nodes()
        return super().non_terminated_nodes(tag_filters)

    def _forget_lost_nodes(self) -> None:
        with self.lock:
            for node_id, entry in list(self._nodes.items()):
                node = entry.get("node")  # None for the head, which ``ray start`` runs
                if node is None:
                    continue
                raylets = node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET, [])
                if raylets and all(info.process.poll() is not None for info in raylets):
                    del self._nodes[node_id]
                    node.kill_all_processes(check_alive=False, allow_graceful=False)
                    # Under the "ray" logger: the monitor writes it to monitor.log.
                    logging.getLogger("ray.autoscaler.local_autoscaling").warning(
                        "the raylet of node %s exited: the node is lost, and no longer listed", node_id)


class LocalCluster:
    """A head node started from ``cluster/local-fake.yaml`` on free ports, stopped by PID. Its
    autoscaler uses :class:`LostNodeAwareProvider`, Ray's fake provider that knows lost nodes."""

    def __init__(self, workdir: Path, *, idle_timeout_minutes: float | None = None,
                 lost_node_seconds: float | None = None) -> None:
        self.workdir = workdir
        # lost_node_seconds: how soon the GCS declares a worker node dead once its raylet stops
        # answering (its actors restart elsewhere, its tasks are retried); Ray's default is about
        # 15 s (5 failed health checks 3 s apart). Here: 3 failed checks. Each check waits up to
        # 10 s for an answer, so a slow live raylet is not taken for a lost one, while a killed
        # one refuses the connection and fails every check at once.
        if lost_node_seconds is not None and not lost_node_seconds > 0:
            raise ValueError(f"lost_node_seconds must be > 0, got {lost_node_seconds}")
        self.ray_config = {} if lost_node_seconds is None else {
            "RAY_health_check_period_ms": str(max(100, round(1000 * lost_node_seconds / 3))),
            "RAY_health_check_failure_threshold": "3",
        }
        # Unix socket paths must stay short: the temp dir goes under /tmp, not under workdir.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rlas-", dir="/tmp"))
        (workdir / "cluster-temp-dir").write_text(str(self.temp_dir))
        self.port = free_port()
        self.dashboard_port = free_port()
        self.ip = _node_ip()
        self.address = f"http://{self.ip}:{self.dashboard_port}"
        self.process: subprocess.Popen | None = None
        # Ray >= 2.52 authenticates every request with a token when one exists (~/.ray/auth_token);
        # this cluster gets its own, given to its processes and to `ray job submit` by environment.
        self.auth_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        config = yaml.safe_load(FAKE_CONFIG.read_text())
        config["provider"]["gcs_address"] = f"{self.ip}:{self.port}"
        config["provider"].update(type="external", module="local_autoscaling.LostNodeAwareProvider")
        if idle_timeout_minutes is not None:
            config["idle_timeout_minutes"] = idle_timeout_minutes
        self.config = config
        self.config_path = workdir / "cluster-config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "head.log"

    def start(self, timeout_s: float = 90) -> None:
        env = {**os.environ, **self.auth_env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
               # Job entrypoints run `python`: this interpreter, with torch and the project.
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               # Jobs must not pick up another cluster of this machine.
               "RAY_ADDRESS": f"{self.ip}:{self.port}", **self.ray_config,
               # The autoscaler imports LostNodeAwareProvider from this file.
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "cluster"), os.environ.get("PYTHONPATH")]))}
        env.pop("RAY_API_SERVER_ADDRESS", None)
        command = [
            str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
            f"--port={self.port}", f"--temp-dir={self.temp_dir}",
            f"--num-cpus={HEAD_CPUS}", "--num-gpus=0",
            f"--autoscaling-config={self.config_path}",
            "--include-dashboard=true", f"--dashboard-host={self.ip}",
            f"--dashboard-port={self.dashboard_port}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--object-store-memory=200000000",
            "--disable-usage-stats",
        ]
        log(f"starting head: GCS {self.ip}:{self.port}, dashboard {self.address}, temp dir {self.temp_dir}")
        self.process = subprocess.Popen(command, env=env, stdout=self.log_path.open("wb"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.process.returncode}; see {self.log_path}")
            try:
                if self.nodes():
                    log(f"head up after {timeout_s - (deadline - time.monotonic()):.1f} s")
                    return
            except (OSError, KeyError, ValueError):  # not serving yet
                pass
            time.sleep(0.5)
        raise TimeoutError(f"head not up after {timeout_s} s; see {self.log_path}")

    def nodes(self) -> list[dict[str, Any]]:
        """Alive nodes as the dashboard sees them: [{"node_id", "is_head", "resources"}]."""
        body = self.get("/api/v0/nodes?limit=1000&detail=1")
        rows = body["data"]["result"]["result"]
        return [
            {"node_id": r["node_id"], "is_head": r["is_head_node"], "resources": r.get("resources_total", {})}
            for r in rows if r["state"] == "ALIVE"
        ]

    def get(self, path: str) -> Any:
        """GET a dashboard endpoint, authenticated, as parsed JSON."""
        request = urllib.request.Request(f"{self.address}{path}", headers={
            "Authorization": f"Bearer {self.auth_env['RAY_AUTH_TOKEN']}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)

    def worker_counts(self) -> dict[str, int]:
        counts = {"cpu-worker": 0, "gpu-worker": 0}
        for node in self.nodes():
            if node["is_head"]:
                continue
            counts["gpu-worker" if node["resources"].get("GPU") else "cpu-worker"] += 1
        return counts

    def worker_raylets(self) -> dict[str, int]:
        """Node id -> PID of the raylet of every worker node of this cluster that is running.

        The autoscaler's fake provider starts each worker node's processes itself (a raylet, its
        agents and workers, a log monitor), all naming this cluster's temp dir; the head's raylet
        is the one that ``ray start`` (the head process) started itself."""
        found = {}
        for pid in _naming(str(self.temp_dir)):
            command = _command_line(pid)
            match = _RAYLET_NODE_ID.search(command)
            if match and command.split(" ", 1)[0].endswith("/raylet") and _parent(pid) != (self.process and self.process.pid):
                found[match[1]] = pid
        return found

    def node_processes(self, node_id: str) -> set[int]:
        """PIDs of every running process of worker node ``node_id``: its raylet, what the raylet
        started (agents, workers; actors included) and its log monitor. Empty when none runs."""
        raylet = self.worker_raylets().get(node_id)
        if raylet is None:
            return set()
        pids = {raylet} | descendants(raylet)
        index = _RAYLET_INDEX.search(_command_line(raylet))  # raylet.N: the node's log files are *.N.*
        if index:
            pids |= {pid for pid in _naming(str(self.temp_dir)) if f"log_monitor.{index[1]}." in _command_line(pid)}
        return {pid for pid in pids if is_alive(pid)}

    def kill_node(self, node_id: str) -> list[int]:
        """Lose worker node ``node_id`` as a machine is lost: SIGKILL, by PID, its raylet and every
        process of it (:meth:`node_processes`) at once, with no chance to say goodbye to the GCS,
        which declares the node dead once its health checks fail (``lost_node_seconds``); the
        autoscaler's provider stops listing it within about a second
        (:class:`LostNodeAwareProvider`). Returns the PIDs killed."""
        pids = self.node_processes(node_id)
        if not pids:
            raise ValueError(f"no running worker node {node_id} in this cluster (running: {sorted(self.worker_raylets())})")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log(f"killed worker node {node_id}: {len(pids)} processes")
        return sorted(pids)

    def stop(self) -> list[int]:
        # `ray start --block`, the GCS and the autoscaler's monitor ignore SIGTERM for 10 s and more;
        # what they would still write is of no use to a cluster that is thrown away.
        pids = stop_processes(self.process.pid if self.process else None, str(self.temp_dir), grace_s=3)
        # Keep the nodes' logs (raylet, workers, autoscaler: monitor.*) beside the job logs.
        for logs in self.temp_dir.glob("session_2*/logs"):
            shutil.move(str(logs), str(self.workdir / "ray-logs"))
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        log(f"stopped {len(pids)} processes")
        return pids

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_RAYLET_NODE_ID = re.compile(r"--node_id=([0-9a-f]+)")
_RAYLET_INDEX = re.compile(r"--raylet_socket_name=\S*/raylet\.(\d+)")


def _command_line(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def _parent(pid: int) -> int | None:
    try:
        return psutil.Process(pid).ppid()
    except psutil.Error:
        return None


def _node_ip() -> str:
    import ray._private.services

    return ray._private.services.get_node_ip_address()


# ------------------------------------------------------------------------------------------
# Jobs


class Timeline:
    """Worker-node counts sampled while jobs run: [(seconds since start, cpu, gpu)]."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster, self.start, self.samples = cluster, time.monotonic(), []

    def sample(self) -> dict[str, int]:
        try:
            counts = self.cluster.worker_counts()
        except (OSError, KeyError, ValueError):  # a slow answer: skip this sample
            return {}
        entry = (round(time.monotonic() - self.start, 1), counts["cpu-worker"], counts["gpu-worker"])
        if not self.samples or self.samples[-1][1:] != entry[1:]:
            log(f"workers: cpu-worker {entry[1]}, gpu-worker {entry[2]}")
        self.samples.append(entry)
        return counts

    def changes(self) -> list[dict[str, float]]:
        """The samples where the counts changed (and the first)."""
        out, previous = [], None
        for t, cpu, gpu in self.samples:
            if (cpu, gpu) != previous:
                out.append({"t": t, "cpu-worker": cpu, "gpu-worker": gpu})
                previous = (cpu, gpu)
        return out

    def peak(self, kind: str) -> int:
        column = 1 if kind == "cpu-worker" else 2
        return max((s[column] for s in self.samples), default=0)


def submit(cluster: LocalCluster, job: str, args: list[str], timeline: Timeline, deadline: float,
           log_path: Path, working_dir: Path) -> dict[str, Any]:
    """Run ``cluster/submit.sh JOB ARGS`` (blocks until the job ends), sampling nodes meanwhile;
    the job runs in ``working_dir`` in place (see the module docstring for why)."""
    env = {**os.environ, **cluster.auth_env, "RAY_ADDRESS": cluster.address,
           "WORKING_DIR": f"local://{working_dir}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = ["bash", str(SUBMIT), job, *args]
    log(f"submitting {job}: {' '.join(command[2:])}")
    started = time.monotonic()
    with log_path.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            while process.poll() is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{job} still running at the deadline; log: {log_path}")
                timeline.sample()
                time.sleep(1.0)
        finally:
            if process.poll() is None:
                stop_processes(process.pid, marker=None, grace_s=3)
    seconds = round(time.monotonic() - started, 1)
    tail = log_path.read_text(errors="replace").splitlines()[-15:]
    status = "SUCCEEDED" if process.returncode == 0 else f"FAILED (exit {process.returncode})"
    log(f"{job}: {status} in {seconds} s")
    if process.returncode != 0:
        print("\n".join("    " + line for line in tail), flush=True)
    return {"status": status, "seconds": seconds, "log": str(log_path), "log_tail": tail}


def write_images(root: Path, *, count: int, size: int) -> Path:
    """``count`` PNG crops of scikit-image's photos, ``size`` pixels square."""
    import numpy as np
    from PIL import Image
    from skimage import data

    root.mkdir(parents=True, exist_ok=True)
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    rng = np.random.default_rng(0)
    for i in range(count):
        photo = photos[i % len(photos)]
        top = int(rng.integers(0, photo.shape[0] - size))
        left = int(rng.integers(0, photo.shape[1] - size))
        Image.fromarray(photo[top:top + size, left:left + size]).save(root / f"img_{i:03d}.png")
    return root


def restore_support() -> str | None:
    """Why the restore part cannot run, or None when it can."""
    if not (REPO / "jobs" / "restore.py").is_file():
        return "jobs/restore.py does not exist"
    return None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def autoscaler_events(log_path: Path) -> list[str]:
    """The autoscaler's own lines ("Adding 1 node(s) of type gpu-worker.") from a job's log, once each."""
    events: list[str] = []
    for line in _ANSI.sub("", log_path.read_text(errors="replace")).splitlines():
        if line.startswith("(autoscaler") and ("Adding" in line or "Removing" in line) and line not in events:
            events.append(line)
    return events


def restore_outcome(output: Path) -> dict[str, Any]:
    """What the restore job left: manifest rows by status, its summary, the restored files."""
    import pyarrow.parquet as pq

    folder = output / "_manifest"
    parts = sorted(folder.glob("*.parquet"))
    statuses = [s for part in parts for s in pq.read_table(part, columns=["status"]).column("status").to_pylist()]
    summary_file = next(iter(sorted(folder.glob("*summary*.json"))), None)
    summary = json.loads(summary_file.read_text()) if summary_file else {}
    return {
        "manifest_rows": len(statuses),
        "manifest_status": {s: statuses.count(s) for s in sorted(set(statuses))},
        "restored_files": len(list(output.glob("*.png"))),
        "actor_pool": summary.get("actor_pool"),
        "images_per_second": summary.get("images_per_second"),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.timeout
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="local-autoscaling-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"workdir": str(workdir), "jobs": {}}
    train = write_images(workdir / "train", count=2 * args.finetune_workers, size=96)
    val = write_images(workdir / "val", count=1, size=64)
    inputs = write_images(workdir / "inputs", count=args.images, size=args.image_size)
    working_dir = snapshot_working_tree(workdir / "working-dir")

    with LocalCluster(workdir, idle_timeout_minutes=args.idle_timeout_minutes) as cluster:
        report["dashboard"] = cluster.address
        report["temp_dir"] = str(cluster.temp_dir)
        report["idle_timeout_minutes"] = cluster.config["idle_timeout_minutes"]
        timeline = Timeline(cluster)
        timeline.sample()

        # 1. Fine-tune a tiny model (on the head's CPU with one worker; a second worker would
        #    not fit there and brings up a cpu-worker node).
        model = workdir / "runs" / "local" / "model"
        finetune = submit(cluster, "finetune", [
            "--task", "denoise", "--train-images", str(train), "--val-images", str(val),
            "--steps", str(args.steps), "--workers", str(args.finetune_workers), "--cpus-per-worker", "1",
            "--storage", str(workdir / "runs"), "--name", "local", *TINY_FINETUNE_ARGS,
        ], timeline, deadline, workdir / "finetune.log", working_dir)
        finetune["model_written"] = (model / "model.safetensors").is_file()
        finetune["autoscaler_events"] = autoscaler_events(workdir / "finetune.log")
        report["jobs"]["finetune"] = finetune

        # 2. Restore with it on GPU-like actors: no GPU node is up, so each pending actor makes
        #    the autoscaler add a gpu-worker node.
        why_not = restore_support()
        if why_not:
            log(f"restore: skipped: {why_not}")
            report["jobs"]["restore"] = {"status": "SKIPPED", "reason": why_not}
        else:
            restore_model = str(model) if finetune["model_written"] else "default"
            restore = submit(cluster, "restore", [
                "--input", str(inputs), "--output", str(workdir / "restored"), "--task", "denoise",
                "--model", restore_model, *restore_simulation_args(args.min_actors, args.max_actors),
                *args.restore_arg,
            ], timeline, deadline, workdir / "restore.log", working_dir)
            restore["model"] = restore_model
            restore["autoscaler_events"] = autoscaler_events(workdir / "restore.log")
            if (workdir / "restored" / "_manifest").is_dir():
                restore.update(restore_outcome(workdir / "restored"))
            report["jobs"]["restore"] = restore
        jobs_done = round(time.monotonic() - timeline.start, 1)

        # 3. Scale-down: every worker node idle for idle_timeout_minutes is terminated.
        log("waiting for idle worker nodes to be removed")
        drained_at = None
        while time.monotonic() < deadline:
            counts = timeline.sample()
            if counts and not any(counts.values()):
                drained_at = round(time.monotonic() - timeline.start, 1)
                break
            time.sleep(1.0)
        report["timeline"] = timeline.changes()
        report["peak_workers"] = {"cpu-worker": timeline.peak("cpu-worker"), "gpu-worker": timeline.peak("gpu-worker")}
        report["jobs_done_at_s"] = jobs_done
        report["scaled_down_at_s"] = drained_at
    shutil.rmtree(working_dir, ignore_errors=True)  # a copy of the checkout; the logs stay
    return report


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python cluster/local_autoscaling.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=300, help="give up after this many seconds (300)")
    parser.add_argument("--workdir", default=None, help="images, outputs and logs go here (a new temp dir)")
    parser.add_argument("--report", default=None, help="also write the JSON report to this file")
    parser.add_argument("--steps", type=int, default=2, help="fine-tuning steps (2)")
    parser.add_argument("--finetune-workers", type=int, default=1,
                        help="Ray Train workers of 1 CPU (1 fits on the head; 2 adds a cpu-worker node)")
    parser.add_argument("--images", type=int, default=8, help="images to restore (8)")
    parser.add_argument("--image-size", type=int, default=96, help="their side in pixels (96)")
    parser.add_argument("--idle-timeout-minutes", type=float, default=None,
                        help="override idle_timeout_minutes of cluster/local-fake.yaml")
    parser.add_argument("--min-actors", type=int, default=1,
                        help="restore actor pool minimum (1; = --max-actors brings every GPU node at the start)")
    parser.add_argument("--max-actors", type=int, default=2, help="restore actor pool maximum (2: both gpu-worker nodes)")
    parser.add_argument("--restore-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for jobs.restore (repeatable; e.g. --restore-arg=--set --restore-arg=KEY=VALUE)")
    args = parser.parse_args(argv)

    # SIGTERM (e.g. a test's timeout) unwinds through the cluster's __exit__, which stops its processes.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = run(args)
    except (KeyboardInterrupt, TimeoutError) as exc:
        log(f"interrupted: {exc!r}")
        return 1
    text = json.dumps(report, indent=2)
    print(text, flush=True)
    if args.report:
        Path(args.report).write_text(text)
    jobs = report["jobs"]
    if jobs.get("restore", {}).get("status") == "SKIPPED":
        return 3
    ok = (all(j["status"] == "SUCCEEDED" for j in jobs.values())
          and report["peak_workers"]["gpu-worker"] >= 1 and report["scaled_down_at_s"] is not None)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

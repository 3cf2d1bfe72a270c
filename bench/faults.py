"""What each fault costs a restore job, measured as a user would meet it, as JSON.

    .venv/bin/python bench/faults.py --out bench/results/faults.json          # about 15 minutes on 2 cores
    .venv/bin/python bench/faults.py --scenarios outage --outage 20,90 --images 120
    .venv/bin/python bench/faults.py --smoke                                  # small and quick

Every scenario runs ``python -m jobs.restore`` as its own process (its own local Ray), in a new
session as a terminal would start it, on noisy PNG crops of scikit-image's photos
(``--size`` pixels square) with ``--model`` (the shipped denoiser by default):

- ``crash``: SIGKILL of the driver and every process under it (its local Ray) once half the
  outputs are written, as a lost head node or an OOM kill would do; then the same command again.
- ``sigint`` / ``sigterm``: the signal once half the outputs are written (SIGINT to the process
  group, as Ctrl-C in a terminal sends it; SIGTERM to the driver, as Kubernetes does); the
  seconds until it exits, its exit code, the lines it printed on stderr after the signal; then
  the same command again.
- ``outage``: S3 -> S3 on a local SeaweedFS server, stopped for ``--outage`` seconds once a
  quarter of the outputs are written, then started again on the same ports and data.

For the re-runs, ``redone`` counts the outputs that existed before the re-run and that it
restored again (``ok`` rather than ``skipped`` in its manifest), over ``written_before``, the
outputs that existed. Every scenario checks that the manifest holds every input exactly once.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from local.s3server import LocalS3Server  # noqa: E402
from reporting import emit  # noqa: E402
from restoration.restore.manifest import MANIFEST_DIR, read_manifest  # noqa: E402


def photos(count: int, size: int, seed: int = 0) -> dict[str, bytes]:
    """``count`` noisy (sigma 25) PNG crops of ``size`` x ``size`` from scikit-image's photos."""
    from skimage import data

    sources = [np.asarray(Image.fromarray(getattr(data, name)()).convert("RGB"))
               for name in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")]
    rng = np.random.default_rng(seed)
    files = {}
    for index in range(count):
        source = sources[index % len(sources)]
        top = int(rng.integers(0, source.shape[0] - size + 1)) if source.shape[0] > size else 0
        left = int(rng.integers(0, source.shape[1] - size + 1)) if source.shape[1] > size else 0
        crop = source[top : top + size, left : left + size].astype(np.float32)
        noisy = np.clip(crop + rng.normal(0, 25, crop.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, format="PNG", compress_level=1)
        files[f"{index // 100:03d}/{index:05d}.png"] = buffer.getvalue()
    return files


def job_command(input_uri: str, output_uri: str, model: str, *settings: str) -> list[str]:
    command = [sys.executable, "-m", "jobs.restore", "--input", input_uri, "--output", output_uri,
               "--task", "denoise", "--model", model]
    for setting in settings:
        command += ["--set", setting]
    return command


class Job:
    """One ``python -m jobs.restore`` process in a new session, its stdout and stderr in files."""

    def __init__(self, command: list[str], folder: Path, name: str, env: dict[str, str] | None = None) -> None:
        self.stdout_path, self.stderr_path = folder / f"{name}.stdout", folder / f"{name}.stderr"
        self._stdout, self._stderr = open(self.stdout_path, "wb"), open(self.stderr_path, "wb")
        environment = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        environment.pop("RAY_ADDRESS", None)
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self._stdout, stderr=self._stderr,
                                        stdin=subprocess.DEVNULL, start_new_session=True, env=environment)
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr_bytes(self) -> int:
        self._stderr.flush()
        return self.stderr_path.stat().st_size

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._stdout.close()
            self._stderr.close()

    def stderr_after(self, offset: int) -> list[str]:
        return [line for line in self.stderr_path.read_bytes()[offset:].decode(errors="replace").splitlines()
                if line.strip()]

    def kill_tree(self) -> None:
        """SIGKILL the driver and every process under it (its local Ray), by PID."""
        from local.processes import kill_tree

        kill_tree(self.pid)


def wait_until(condition: Callable[[], bool], job: Job, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if job.process.poll() is not None:
            raise RuntimeError(f"the job ended (exit {job.process.returncode}) before {what}: "
                               + job.stderr_path.read_text(errors="replace")[-3000:])
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def local_outputs(folder: Path) -> set[str]:
    if not folder.exists():
        return set()
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*.png")
            if MANIFEST_DIR not in path.parts and not path.name.startswith(".")}


def check_manifest(output_uri: str, expected: int) -> dict[str, dict]:
    """The manifest's rows by source; raises unless every input is there exactly once."""
    rows = read_manifest(output_uri).to_pylist()
    sources = [row["source_uri"] for row in rows]
    if len(sources) != len(set(sources)):
        raise AssertionError(f"{len(sources) - len(set(sources))} inputs appear more than once in the manifest")
    if len(sources) != expected:
        raise AssertionError(f"the manifest has {len(sources)} rows for {expected} inputs")
    return {row["source_uri"]: row for row in rows}


def redone_outputs(rows: dict[str, dict], written_before: set[str], output_root: str) -> list[str]:
    """Outputs that existed before the re-run and that the re-run restored again."""
    prefix = output_root.rstrip("/") + "/"
    return [row["output_uri"].removeprefix(prefix) for row in rows.values()
            if row["status"] == "ok" and row["output_uri"] and row["output_uri"].removeprefix(prefix) in written_before]


def redone(rows: dict[str, dict], written_before: set[str], output_root: str) -> int:
    return len(redone_outputs(rows, written_before, output_root))


def output_ages(folder: Path, names: set[str], at: float) -> dict[str, float]:
    """Seconds from each output's last write to the wall-clock time ``at`` (negative: after it)."""
    return {name: at - (folder / name).stat().st_mtime for name in names}


def _signal(job: Job, kind: str) -> dict[str, Any]:
    """Stop ``job`` as ``kind`` says (``crash``: SIGKILL of it and its local Ray; ``sigint``: to
    its process group, as Ctrl-C; ``sigterm``: to the driver, as Kubernetes) and wait for it."""
    offset = job.stderr_bytes()
    signalled = time.monotonic()
    if kind == "crash":
        job.kill_tree()
        job.wait(timeout=60)
        return {"exit_code": "killed"}
    if kind == "sigint":
        os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    else:
        os.kill(job.pid, signal.SIGTERM)  # what Kubernetes and spot preemption send first
    try:
        code = job.wait(timeout=60)
    except subprocess.TimeoutExpired:
        job.kill_tree()
        code = None
    after = job.stderr_after(offset)
    return {"exit_code": code, "seconds_to_exit": round(time.monotonic() - signalled, 2), "stderr_after_signal": after,
            "traceback": any("Traceback" in line or "logging.cc" in line for line in after)}


def _rows(output_uri: str) -> dict[str, dict]:
    """The manifest's rows by source, or none when there is no manifest yet."""
    try:
        return {row["source_uri"]: row for row in read_manifest(output_uri).to_pylist()}
    except (FileNotFoundError, ValueError):
        return {}


def interrupt_scenario(kinds: str | list[str], folder: Path, files: dict[str, bytes], model: str, settings: list[str],
                       timeout: float) -> dict[str, Any]:
    """Folder -> folder, stopped once per kind in ``kinds`` (``crash``, ``sigint``, ``sigterm``):
    the first run at ``1 / (n + 1)`` of the outputs, each re-run at the next fraction; then a
    last re-run finishes. With one kind: at half way. Every stop reports its exit, the outputs
    written before it and how many of those the next run redid."""
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    name = "-".join(kinds)
    source, output = folder / f"{name}-in", folder / f"{name}-out"
    for key, data in files.items():
        (source / key).parent.mkdir(parents=True, exist_ok=True)
        (source / key).write_bytes(data)
    command = job_command(str(source), str(output), model, *settings)
    stops: list[dict[str, Any]] = []
    for index, kind in enumerate(kinds):
        job = Job(command, folder, f"{name}-{index}-{kind}")
        goal = len(files) * (index + 1) // (len(kinds) + 1)
        wait_until(lambda goal=goal: len(local_outputs(output)) >= goal, job, timeout, f"{goal} outputs were written")
        signalled_at = time.time()
        stop: dict[str, Any] = {"kind": kind, "outputs_at_signal": len(local_outputs(output)), **_signal(job, kind)}
        time.sleep(1.0)
        written = local_outputs(output)
        ages = output_ages(output, written, signalled_at)
        stop.update(written_before=len(written), manifest_rows_before=len(_rows(str(output))),
                    seconds_writing_before=round(max(ages.values(), default=0.0), 2))
        if stops:  # what this run redid of the outputs the one before it had written
            _account_redone(stops[-1], _rows(str(output)), str(output))
        stop["_written"] = ages
        stops.append(stop)
    rerun = Job(command, folder, f"{name}-rerun")
    rerun_exit_code = rerun.wait(timeout=timeout)
    rows = check_manifest(str(output), len(files))
    _account_redone(stops[-1], rows, str(output))
    report: dict[str, Any] = {"images": len(files), **(stops[0] if len(stops) == 1 else {"stops": stops}),
                              "rerun_exit_code": rerun_exit_code,
                              "rerun_ok": sum(1 for row in rows.values() if row["status"] == "ok"),
                              "all_done": all(row["status"] in ("ok", "skipped") for row in rows.values())}
    return report


def _account_redone(stop: dict[str, Any], rows: dict[str, dict], output_root: str) -> None:
    """``redone`` of a stop, its fraction of ``written_before``, and ``redone_oldest_seconds``:
    how long before the signal the oldest redone output had been written (the work a stop
    costs is what was in flight; without durable manifest parts it would reach back to the
    run's start, ``seconds_writing_before``)."""
    ages = stop.pop("_written")
    again = redone_outputs(rows, set(ages), output_root)
    stop["redone"] = len(again)
    stop["redone_fraction"] = round(len(again) / max(1, stop["written_before"]), 4)
    stop["redone_oldest_seconds"] = round(max((ages[name] for name in again), default=0.0), 2)


def outage_scenario(seconds: float, folder: Path, files: dict[str, bytes], model: str, settings: list[str],
                    timeout: float) -> dict[str, Any]:
    """S3 -> S3 with the server stopped for ``seconds`` once a quarter of the outputs are written."""
    with LocalS3Server() as server:
        bucket = server.create_bucket("faults")
        client = server.client()
        for key, data in files.items():
            client.put_object(Bucket=bucket, Key=f"in/{key}", Body=data)

        def outputs() -> int:
            paginator = client.get_paginator("list_objects_v2")
            return sum(1 for page in paginator.paginate(Bucket=bucket, Prefix="out/")
                       for item in page.get("Contents", []) if f"/{MANIFEST_DIR}/" not in item["Key"])

        command = job_command(f"s3://{bucket}/in", f"s3://{bucket}/out", model, *settings)
        job = Job(command, folder, f"outage-{seconds:g}", env=server.env())
        wait_until(lambda: outputs() >= len(files) // 4, job, timeout, "a quarter of the outputs were written")
        at_stop = outputs()
        stopped = time.monotonic()
        server.interrupt()
        time.sleep(max(0.0, seconds - (time.monotonic() - stopped)))
        server.resume()
        down = time.monotonic() - stopped
        code = job.wait(timeout=timeout)
        os.environ.update(server.env())
        rows = check_manifest(f"s3://{bucket}/out", len(files))
        stderr = job.stderr_path.read_text(errors="replace").splitlines()
        return {"images": len(files), "outage_seconds": round(down, 1), "outputs_at_stop": at_stop,
                "exit_code": code, "wall_seconds": round(time.monotonic() - job.started, 1),
                "ok": sum(1 for row in rows.values() if row["status"] == "ok"),
                "errors": [row["error"] for row in rows.values() if row["status"] == "error"][:5],
                "outage_lines": [line for line in stderr if "storage" in line and "unreachable" in line
                                 or "reachable again" in line][:6],
                "traceback": any("Traceback" in line for line in stderr)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="crash,sigint,sigterm,outage")
    parser.add_argument("--images", type=int, default=1200, help="inputs of the crash and signal scenarios")
    parser.add_argument("--outage-images", type=int, default=120, help="inputs of the outage scenario")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--outage", default="20,90", help="seconds the S3 server is down, one run each")
    parser.add_argument("--model", default="default")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--smoke", action="store_true", help="40 images of 64x64, a 5 s outage")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.outage_images, args.size, args.outage = 40, 40, 64, "5"
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                              "model": args.model, "size": args.size, "settings": args.settings, "scenarios": {}}
    with tempfile.TemporaryDirectory(prefix="faults-") as scratch:
        folder = Path(scratch)
        files = photos(args.images, args.size)
        for name in args.scenarios.split(","):
            started = time.monotonic()
            if name == "outage":
                for seconds in (float(value) for value in args.outage.split(",")):
                    outage_files = dict(list(files.items())[: args.outage_images]) if args.outage_images <= len(files) \
                        else photos(args.outage_images, args.size)
                    result = outage_scenario(seconds, folder, outage_files, args.model, args.settings, args.timeout)
                    report["scenarios"][f"outage_{seconds:g}s"] = result
                    print(json.dumps({f"outage_{seconds:g}s": result}), flush=True)
                continue
            result = interrupt_scenario(name, folder, files, args.model, args.settings, args.timeout)
            result["scenario_seconds"] = round(time.monotonic() - started, 1)
            report["scenarios"][name] = result
            print(json.dumps({name: result}), flush=True)
    report["load_average_1min"] = os.getloadavg()[0]
    return emit(report, args.out, sort_keys=True)


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory of a restore run's driver against the number of listed inputs, as JSON.

    .venv/bin/python bench/driver_memory.py [--sizes 10000,100000,1000000] [--set key=value ...]

For each size a fresh Python process writes a text list of that many URIs (files that do not
exist, spread over folders of 1,000) and runs :func:`restoration.restore.run.run_restore` on it with
the in-process executor and a negligible model: the whole plan, partitioning, manifest
accounting and compaction run, and every input becomes an error row (``read``: no such file),
so the per-input cost is the driver's bookkeeping, not image work. The executor runs in the
same process, so its memory (the model) is in the figures too; a Ray driver would not hold it.

Reported per size: ``baseline_mb`` (peak RSS after the imports, before the run), ``peak_mb``
(peak RSS of the process, ``ru_maxrss``), ``run_mb`` (their difference), ``seconds`` and the
manifest's row count. ``mb_per_million`` is the marginal growth between the two largest sizes,
per million inputs; ``growth_ratio`` is run_mb(largest) / run_mb(smallest) against the size
ratio (linear growth would make them equal).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
count, folder, overrides = {count}, {folder!r}, {overrides!r}
listing = f"{{folder}}/list.txt"
with open(listing, "w") as handle:
    for index in range(count):
        handle.write(f"{{folder}}/missing/dir{{index // 1000:05d}}/photo{{index:08d}}.jpg\n")
import torch
from restoration import config as config_lib
from restoration.models.checkpoint import save_checkpoint
from restoration.restore.manifest import read_manifest
from restoration.models.fused import ModelConfig, build_model
from restoration.restore.settings import RestoreConfig
from restoration.restore.run import LocalRestoreExecutor, run_restore
torch.manual_seed(0)
model = build_model(ModelConfig(task="denoise", widths=(4,) * 6, fuse_strides=(2,)), backbone_weights=None)
save_checkpoint(model, f"{{folder}}/model", model_id="negligible")
del model
config = config_lib.load_config(RestoreConfig, overrides=overrides)
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.perf_counter()
summary = run_restore(listing, f"{{folder}}/out", task="denoise", model=f"{{folder}}/model", config=config,
                      executor=LocalRestoreExecutor(), echo=lambda line: None)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
rows = read_manifest(f"{{folder}}/out").num_rows if count <= 100_000 else None
print(json.dumps({{"inputs": count, "baseline_mb": baseline, "peak_mb": peak, "run_mb": peak - baseline,
                  "seconds": seconds, "counts": summary.counts.model_dump(), "manifest_rows": rows}}))
"""


def measure(count: int, overrides: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="driver-memory-") as folder:
        code = _CHILD.format(root=str(ROOT), count=count, folder=folder, overrides=overrides)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"measurement of {count} inputs failed:\n{result.stderr[-3000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="listed inputs per run (comma-separated)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="RestoreConfig override, e.g. input.partition_size=50000 (repeatable)")
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    sizes = sorted(int(size) for size in args.sizes.split(","))
    runs = [measure(size, args.overrides) for size in sizes]
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "overrides": args.overrides,
        "runs": runs,
    }
    if len(runs) >= 2:
        small, large = runs[-2], runs[-1]
        report["mb_per_million"] = (large["peak_mb"] - small["peak_mb"]) / ((large["inputs"] - small["inputs"]) / 1e6)
        report["growth_ratio"] = runs[-1]["run_mb"] / max(runs[0]["run_mb"], 1e-9)
        report["size_ratio"] = runs[-1]["inputs"] / runs[0]["inputs"]
        report["seconds_per_million"] = large["seconds"] / (large["inputs"] / 1e6)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Dependency direction: the library never imports Ray or the jobs package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import importlib, pkgutil, sys
import restoration
names = sorted(m.name for m in pkgutil.walk_packages(restoration.__path__, "restoration."))
for name in names:
    importlib.import_module(name)
leaked = sorted(k for k in sys.modules if k.split(".")[0] in ("ray", "jobs"))
print(len(names), "modules")
assert not leaked, leaked[:10]
"""


def test_every_library_module_imports_without_ray_or_jobs() -> None:
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    count = int(done.stdout.split()[0])
    assert count >= len(list((ROOT / "restoration").glob("*.py"))) - 1  # every module file, __init__ aside

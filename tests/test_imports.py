"""Dependency direction: the library never imports Ray, the jobs package or the local tools."""

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
leaked = sorted(k for k in sys.modules if k.split(".")[0] in ("ray", "jobs", "local"))
print(len(names), "modules")
assert not leaked, leaked[:10]
"""


def test_every_library_module_imports_without_ray_or_jobs() -> None:
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    count = int(done.stdout.split()[0])
    # every module of every sub-package (their __init__ files count as packages)
    assert count >= len([p for p in (ROOT / "restoration").rglob("*.py") if p.name != "__init__.py"])

"""Process trees for tests that start servers, Ray instances or jobs: found and stopped by PID.

Built on psutil. A zombie (exited, not yet reaped by its parent) counts as stopped: it holds no
resources, and its parent may be a process of another developer's that never reaps it.
"""

from __future__ import annotations

import os

import psutil

from local.processes import descendants, is_alive, kill_tree, stop_pids

__all__ = ["command_lines", "descendants", "is_alive", "kill_tree", "stop_pids"]


def command_lines() -> dict[int, str]:
    """PID -> command line (arguments joined by spaces) of every live process readable here,
    this process excluded."""
    found = {}
    for process in psutil.process_iter(["cmdline", "status"]):
        info = process.info
        if process.pid == os.getpid() or info["status"] == psutil.STATUS_ZOMBIE or not info["cmdline"]:
            continue
        found[process.pid] = " ".join(info["cmdline"])
    return found


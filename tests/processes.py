"""Process trees for tests that start servers, Ray instances or jobs: found and stopped by PID.

Built on psutil. A zombie (exited, not yet reaped by its parent) counts as stopped: it holds no
resources, and its parent may be a process of another developer's that never reaps it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable

import psutil

__all__ = ["command_lines", "descendants", "is_alive", "stop_pids"]


def descendants(pid: int) -> set[int]:
    """PIDs of every live process below ``pid`` (children, grandchildren, ...); empty when
    ``pid`` is gone."""
    try:
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def is_alive(pid: int) -> bool:
    """Whether ``pid`` is running (a zombie is not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


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


def stop_pids(pids: Iterable[int], *, signal_first: signal.Signals = signal.SIGTERM,
              grace_seconds: float = 10.0) -> None:
    """Send ``signal_first`` to each of ``pids``, wait up to ``grace_seconds`` for them to end,
    then SIGKILL those still alive. PIDs already gone are skipped."""
    pids = [pid for pid in set(pids) if pid != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal_first)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and any(is_alive(pid) for pid in pids):
        time.sleep(0.2)
    for pid in pids:
        if is_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

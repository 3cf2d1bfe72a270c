"""Processes found and stopped by PID: the local S3 server, the simulated cluster's nodes, and the
jobs and Ray instances that tests and benchmarks start.

Built on psutil. A zombie (exited, not yet reaped by its parent) counts as stopped: it holds no
resources, and its parent may never reap it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable

import psutil

__all__ = ["descendants", "is_alive", "kill_tree", "stop_pids"]


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


def stop_pids(pids: Iterable[int], *, signal_first: signal.Signals | None = signal.SIGTERM,
              grace_seconds: float = 10.0) -> list[int]:
    """Send ``signal_first`` to each of ``pids`` (None: the caller already signalled them), wait
    up to ``grace_seconds`` for them to end, then SIGKILL those still alive; returns the PIDs that
    needed SIGKILL. PIDs already gone, and this process, are skipped."""
    pids = [pid for pid in set(pids) if pid != os.getpid()]
    for pid in pids if signal_first is not None else ():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal_first)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and any(is_alive(pid) for pid in pids):
        time.sleep(0.1)
    killed = [pid for pid in pids if is_alive(pid)]
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return killed


def kill_tree(pid: int, *, wait_seconds: float = 30.0) -> None:
    """SIGKILL ``pid`` and every process below it, as a lost machine or an OOM kill ends them,
    and wait up to ``wait_seconds`` until they are gone. The tree is listed first (a child
    reparented once its parent dies is still found), and processes in process groups of their
    own (Ray's workers) are reached by PID."""
    targets = [pid, *descendants(pid)]
    for target in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline and any(is_alive(target) for target in targets):
        time.sleep(0.05)

"""Starting Ray for the jobs: settings for readable output on a local instance or a cluster, and
Ray Train's errors reduced to one line. Ray is imported only inside the functions."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

# Ray Train settings for readable output, set (unless the user set them) before Ray starts: they
# reach a local instance's workers through the environment and a cluster's Train controller and
# workers through Ray Train's own propagation of RAY_TRAIN_* variables.
QUIET_RAY_ENVIRONMENT = {
    # Ray Train V2 routes print() in workers to a logger and, because Ray replaces sys.stdout in
    # workers, also to the original print: every progress line showed up twice.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}
# Only for a Ray instance this process starts (one machine): there is no node to be preempted,
# and the preemption watcher logs a core_worker error about its constructor arguments. The Train
# controller looks at its workers every 0.5 s instead of 2 s: a finished or failed run is seen
# sooner (polling one machine's workers costs nothing measurable).
LOCAL_RAY_ENVIRONMENT = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}



def _quiet_worker_logs() -> None:
    """Ray worker_process_setup_hook for a local instance.

    Ray Train's PlacementGroupCleaner asks the State API every second whether the controller is
    alive. With several local Ray instances on one machine it cannot tell which is its own and
    its thread dies with a traceback; pointing RAY_ADDRESS at this worker's own instance fixes
    that. Without the dashboard's HTTP server (Ray installed without ``ray[default]``) every query
    then fails and logs a warning, each second. The cleaner only matters when a controller dies
    ungracefully, and a local instance goes away with this process anyway.
    """
    import ray

    try:
        os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    except Exception:  # not connected yet: leave the default address resolution alone
        pass
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


def quiet_train_worker() -> None:
    """Hide Ray Train's per-report INFO line ("Reporting training result ...") in a worker.

    Ray 2.60 logs it through ``logging.getLogger(__file__)``, outside the ``ray.train`` logger
    that RunConfig's LoggingConfig governs, so it reaches the console through the root logger.
    """
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray version: nothing to quiet
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def init_ray(address: str | None = None, *, train: bool = True, **kwargs: Any) -> None:
    """Start (or connect to) Ray with the settings this job needs for readable output.

    With no ``address`` and no RAY_ADDRESS, a local instance is started; its workers inherit
    this process's environment, the AWS_* variables included, and run :func:`_quiet_worker_logs`
    first when Ray Train will run there (``train``; a worker setup hook delays every new worker
    by about a second). A local instance has no dashboard: it lives only as long as this run,
    whose own progress lines say what it does, and the dashboard's processes cost about 1.7
    CPU-seconds and 2 s of every start on 2 cores (to watch a run there, start Ray with
    ``ray start --head`` and run the job with ``--address auto``). ``kwargs`` go to ``ray.init``.
    """
    import ray

    for name, value in QUIET_RAY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    address = address or os.environ.get("RAY_ADDRESS")
    if address is None:
        for name, value in LOCAL_RAY_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        if train:
            kwargs.setdefault("runtime_env", {"worker_process_setup_hook": _quiet_worker_logs})
        kwargs.setdefault("include_dashboard", False)
    with local_ray_in_own_session(address is None):
        ray.init(address=address, **kwargs)


@contextlib.contextmanager
def local_ray_in_own_session(local: bool = True) -> Iterator[None]:
    """While it is open, the processes Ray starts from this one (a local instance's GCS, raylet,
    dashboard and monitors; the raylet's workers follow it) start in a session of their own.

    A signal to this process's group (``kill -TERM -PGID``, systemd's stop, SLURM's scancel, a
    closed terminal's SIGHUP) then reaches the driver alone, which stops the run cleanly (its
    :class:`restoration.stopping.StopSignals`) and shuts its Ray down at exit. Otherwise SIGTERM
    killed the raylet at once and the driver waited on a dead cluster, printing nothing, until
    SIGKILL. (SIGINT, as Ctrl-C sends, was harmless: Ray blocks it in the processes it starts.)
    The processes still end with the driver: Ray's kernel fate-sharing (``PR_SET_PDEATHSIG``)
    kills them when it dies, and ``ray.shutdown`` at exit stops them by PID. Where the kernel has
    no fate-sharing, Ray's reaper process kills the driver's process group instead, so they stay
    in it. Ray's private ``services.ConsolePopen`` is what is wrapped (Ray 2.60); without it,
    nothing changes."""
    if not local or sys.platform == "win32":
        yield
        return
    from ray._private import services, utils

    original = getattr(services, "ConsolePopen", None)
    if original is None or not utils.detect_fate_sharing_support():
        yield
        return

    class SessionPopen(original):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **popen_kwargs: Any) -> None:
            popen_kwargs.setdefault("start_new_session", True)
            super().__init__(*args, **popen_kwargs)

    services.ConsolePopen = SessionPopen
    try:
        yield
    finally:
        services.ConsolePopen = original


def root_cause(error: BaseException) -> str:
    """A Ray Train failure in one line: the lowest rank's exception of a ``WorkerGroupError``
    (Ray's ``worker_failures``, rank -> the worker's exception), the controller's of a
    ``ControllerError``, else the error's first line."""
    failures = getattr(error, "worker_failures", None)
    if failures:
        error = failures[min(failures)]
    elif getattr(error, "controller_failure", None) is not None:
        error = error.controller_failure  # type: ignore[attr-defined]
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def note_missing_cpus(workers: int, cpus_per_worker: float) -> None:
    """Say so when the cluster has fewer CPUs than the workers need (the autoscaler adds nodes)."""
    import ray

    needed = workers * cpus_per_worker
    available = ray.cluster_resources().get("CPU", 0)
    if needed > available:
        print(f"note: {workers} workers need {needed:g} CPUs and the cluster has {available:g} now; "
              "waiting for the autoscaler", flush=True)


# --------------------------------------------------------------------------------------------
# Clean stops: the driver's StopSignals, seen by the workers


STOP_POLL_SECONDS = 0.5
"""How often a worker asks the run's :class:`StopFlag` whether the driver was asked to stop."""


class StopFlag:
    """A Ray actor (no resources) that the driver sets on SIGINT / SIGTERM; restore actors ask it
    between chunks and Train workers after each step, and start no more work once it is set."""

    def __init__(self) -> None:
        self.value = False

    def set(self) -> None:
        self.value = True

    def is_set(self) -> bool:
        return self.value


def stop_flag_for(stop: Any) -> Any:
    """A new :class:`StopFlag` actor that is set when ``stop`` (a
    ``restoration.stopping.StopSignals``) is requested."""
    import ray

    flag = ray.remote(num_cpus=0)(StopFlag).remote()
    stop.on_stop(lambda: flag.set.remote())
    return flag


class StopPoll:
    """A cheap ``should_stop()`` for a worker: asks the :class:`StopFlag` at most every
    :data:`STOP_POLL_SECONDS` and answers from its last reply in between. Without a flag, or
    when the flag does not answer (the driver is going away), it answers False: the work goes on."""

    def __init__(self, flag: Any) -> None:
        self.flag = flag
        self._stopped = False
        self._asked = 0.0

    def __call__(self) -> bool:
        import ray

        if self._stopped or self.flag is None or time.monotonic() - self._asked < STOP_POLL_SECONDS:
            return self._stopped
        self._asked = time.monotonic()
        try:
            self._stopped = bool(ray.get(self.flag.is_set.remote(), timeout=10))
        except Exception:  # noqa: BLE001 -- carry on with the work
            pass
        return self._stopped

"""Clean stops of a long run on SIGINT (Ctrl-C), SIGTERM (Kubernetes, spot preemption, systemd,
SLURM's scancel) and SIGHUP (a closed terminal or SSH session).

The first signal asks the run to stop: it submits no more work, lets the work in flight finish
for up to a grace period, keeps every result that came back (manifest rows, checkpoints) and
exits with ``128 + signal`` (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP). A second signal,
or the end of the grace period, stops it at once (:class:`StopNow` is raised in the main thread)::

    with StopSignals(grace_seconds=20) as stop:
        for item in work:
            if stop.requested:
                break
            ...

Handlers are installed only in the main thread; elsewhere (a test runner's thread) the object
is a flag that nothing sets. No Ray here: Ray adapters call :meth:`StopSignals.reinstall`
after ``ray.init``, whose own SIGTERM handler would otherwise abort the process.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Final, TypeVar

T = TypeVar("T")

__all__ = ["GRACE_SECONDS", "SIGNALS", "StopNow", "StopSignals", "call_in_thread"]

GRACE_SECONDS: Final[float] = 20.0
"""Default grace period (``run.grace_seconds``): under the 30 s Kubernetes waits between SIGTERM
and SIGKILL, with time left to write the manifest and exit."""

SIGNALS: Final[tuple[signal.Signals, ...]] = (signal.SIGINT, signal.SIGTERM,
                                              *((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()))


class StopNow(BaseException):  # noqa: N818 -- a request, not an error
    """Raised in the main thread by a second signal, or when the grace period is over. A
    BaseException, as KeyboardInterrupt is, so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int, reason: str) -> None:
        super().__init__(reason)
        self.signum, self.reason = signum, reason

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """SIGINT / SIGTERM / SIGHUP as a stop request for one run (a context manager).

    Attributes: ``signum`` (the first signal, or None), ``requested`` (whether one came),
    ``exit_code`` (``128 + signum``, or None). ``on_stop(callback)`` registers a callable run
    once, in a thread of its own, when the first signal arrives (e.g. to tell remote workers).
    """

    def __init__(self, grace_seconds: float = GRACE_SECONDS) -> None:
        if not grace_seconds >= 0:
            raise ValueError(f"run.grace_seconds must be >= 0, got {grace_seconds}")
        self.grace_seconds = float(grace_seconds)
        self.signum: int | None = None
        self.at: float | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._previous: dict[int, object] = {}
        self._timer: threading.Timer | None = None
        self._grace_over = False
        self._installed = False
        self._closing = False  # __exit__ began: signals from now on change nothing
        self._lock = threading.Lock()  # the grace timer's signal against __exit__'s restore

    # -- state ---------------------------------------------------------------------------

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int | None:
        return None if self.signum is None else 128 + self.signum

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def on_stop(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)
        if self.requested:
            threading.Thread(target=callback, daemon=True).start()

    # -- handlers ------------------------------------------------------------------------

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.getsignal(signum)
            self._installed = True
            self.reinstall()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            if self._installed:
                for signum, handler in self._previous.items():
                    signal.signal(signum, handler)  # type: ignore[arg-type]
                self._installed = False

    def reinstall(self) -> None:
        """Install the handlers again, over any that a library (Ray's core worker) set since."""
        if self._installed and threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._closing:  # the run is over: a late grace-period signal, or one while restoring
            return
        if self._grace_over:
            self._grace_over = False
            raise StopNow(self.signum or signum, f"the work in flight did not finish within "
                                                 f"run.grace_seconds={self.grace_seconds:g}")
        if self.signum is not None:
            raise StopNow(self.signum, f"a second {signal.Signals(signum).name}")
        self.signum, self.at = signum, time.monotonic()
        for callback in self._callbacks:
            threading.Thread(target=callback, daemon=True).start()
        self._timer = threading.Timer(self.grace_seconds, self._end_grace)
        self._timer.daemon = True
        self._timer.start()

    def _end_grace(self) -> None:
        # A real signal to the main thread, to its handler above: it interrupts a wait without a
        # timeout (a lock, a queue's get, as Ray Data's iterator waits for blocks). interrupt_main()
        # is seen only once the main thread runs Python code again: a driver waiting on a cluster
        # that no longer answers never did, and never exited.
        with self._lock:
            if self._installed and not self._closing:
                self._grace_over = True
                main = threading.main_thread().ident
                signal.pthread_kill(main, self.signum or signal.SIGINT)  # type: ignore[arg-type]


def call_in_thread(function: Callable[[], T]) -> T:
    """``function()`` in a thread of its own while the main thread waits, so that the signal
    handlers keep running between short waits (a library that installs its own handlers when
    called from the main thread, as Ray Train's ``fit`` does, leaves them alone from another).
    Returns what it returns, raises what it raises; :class:`StopNow` reaches the caller."""
    outcome: dict[str, object] = {}

    def call() -> None:
        try:
            outcome["result"] = function()
        except BaseException as exc:  # noqa: BLE001 -- handed to the main thread
            outcome["error"] = exc

    thread = threading.Thread(target=call, name=getattr(function, "__name__", "call"), daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.25)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]  # type: ignore[return-value]

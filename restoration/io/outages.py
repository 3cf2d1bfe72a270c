"""Storage outages waited out: the one retry layer of every storage call, with a time budget
(``storage.outage_seconds``), exponential backoff with jitter, and lines that say how long a
store has been unreachable.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final, TypeVar

from restoration.io.errors import (
    ACCESS_DENIED,
    NO_SUCH_BUCKET,
    StorageError,
    error_chain,
    redact,
)

# --------------------------------------------------------------------------------------------
# Outages: one retry layer, with a time budget


OUTAGE_SECONDS: Final[float] = 300.0
"""Default outage budget (``storage.outage_seconds``): how long a storage call keeps retrying a
store that is unreachable, throttling (503 SlowDown) or failing with 5xx errors, counted from
its first failure. Object stores have minutes-long brownouts; a call gives up only past this."""

_BACKOFF_FIRST_S: Final[float] = 0.25
_BACKOFF_MAX_S: Final[float] = 5.0
_REPORT_EVERY_S: Final[float] = 15.0

_TRANSIENT = re.compile(
    r"NETWORK_CONNECTION|curlCode: (?:5|6|7|18|28|52|55|56)\b|Could not connect|Couldn't connect"
    r"|Connection refused|Connection reset|Connection was reset|Failed to connect|Timeout was reached|timed out"
    r"|Empty reply|Broken pipe|SLOW_DOWN|SlowDown|THROTTLING|Throttl|SERVICE_UNAVAILABLE|ServiceUnavailable"
    r"|INTERNAL_FAILURE|InternalError|REQUEST_TIMEOUT|RequestTimeout|HTTP response code: 5\d\d|HTTP status 5\d\d",
    re.IGNORECASE,
)

log = logging.getLogger(__name__)


class _Outages:
    """This process's outage budget and what it has seen: when the current outage started (the
    first failure of a call still retrying), for the progress lines and the log."""

    def __init__(self) -> None:
        self.budget = OUTAGE_SECONDS
        self.lock = threading.Lock()
        self.retrying = 0  # calls now waiting for the store
        self.since: float | None = None  # monotonic time of the first failure of the current outage
        self.last_report = 0.0
        self.waited = 0.0  # seconds calls of this process spent waiting, in all

    def begin(self, now: float, uri: str, error: BaseException) -> None:
        with self.lock:
            self.retrying += 1
            if self.since is None:
                self.since, self.last_report = now, now
                log.warning("storage unreachable (%s): retrying for up to %s (storage.outage_seconds)",
                            _short_reason(error, uri), _seconds(self.budget))

    def still(self, now: float) -> None:
        with self.lock:
            if self.since is not None and now - self.last_report >= _REPORT_EVERY_S:
                self.last_report = now
                log.warning("storage still unreachable after %s (retrying for up to %s)",
                            _seconds(now - self.since), _seconds(self.budget))

    def end(self, now: float, started: float, *, recovered: bool) -> None:
        with self.lock:
            self.retrying -= 1
            self.waited += now - started
            if self.retrying == 0 and self.since is not None:
                if recovered:
                    log.warning("storage reachable again after %s", _seconds(now - self.since))
                self.since = None


_outages = _Outages()
_nesting = threading.local()  # depth of retrying calls in this thread


def _seconds(value: float) -> str:
    return f"{value:.0f} s"


def _short_reason(error: BaseException, uri: str) -> str:
    text = redact(" ".join(str(error).split()))
    return text if len(text) <= 200 else text[:197] + "..."


def outage_seconds() -> float:
    """This process's outage budget in seconds (:data:`OUTAGE_SECONDS` unless set)."""
    return _outages.budget


def set_outage_seconds(seconds: float) -> None:
    """Set this process's outage budget (``storage.outage_seconds``); 0 gives up at once."""
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"storage.outage_seconds must be a number >= 0, got {seconds!r}")
    _outages.budget = float(seconds)


@contextlib.contextmanager
def outage_budget(seconds: float | None) -> Iterator[None]:
    """Within the block, this process's outage budget is ``seconds`` (None: unchanged)."""
    if seconds is None:
        yield
        return
    previous = _outages.budget
    set_outage_seconds(seconds)
    try:
        yield
    finally:
        _outages.budget = previous


def unreachable_for() -> float | None:
    """Seconds since the current outage began, while a call of this process waits for the
    store; None when none does."""
    since = _outages.since
    return None if since is None else time.monotonic() - since


def is_transient(error: BaseException, uri: str) -> bool:
    """Whether ``error``, raised using ``uri``, is worth waiting out: S3 unreachable, throttling,
    5xx server errors, timeouts. Missing keys or buckets and denied access are not; nor is
    anything on a local filesystem."""
    if not (isinstance(uri, str) and uri.lower().startswith("s3://")):
        return False
    if isinstance(error, StorageError):
        return False
    chain = error_chain(error)
    if any(isinstance(item, (FileNotFoundError, PermissionError)) for item in chain):
        return False
    text = " | ".join(str(item) for item in chain)
    if NO_SUCH_BUCKET.search(text) or ACCESS_DENIED.search(text):
        return False
    return bool(_TRANSIENT.search(text))


T = TypeVar("T")


def retrying(operation: Callable[[], T], uri: str) -> T:
    """``operation()``, called again while it fails with a transient storage error
    (:func:`is_transient`) until it succeeds or the outage budget
    (:func:`outage_seconds`, counted from its first failure) is spent.

    The one retry layer of every storage call: pyarrow's S3 client tries each request once.
    Waits grow from 0.25 s to 5 s, with jitter, so that many callers do not hit a store coming
    back all at once. While a call waits, a warning says that the store is unreachable and, every
    15 s, for how long. ``operation`` must be safe to repeat (a whole read or a whole write).
    Calls nested inside ``operation`` are not retried on their own: the outermost call repeats
    the whole operation, within one budget.

    Raises:
        OSError: the last error, once the budget is spent (the message says how long it waited);
            any other error at once.
    """
    if getattr(_nesting, "depth", 0):
        return operation()  # inside another retrying call: that one repeats the whole operation
    started: float | None = None
    delay = _BACKOFF_FIRST_S
    while True:
        _nesting.depth = 1
        try:
            result = operation()
        except OSError as error:
            _nesting.depth = 0
            now = time.monotonic()
            if not is_transient(error, uri):
                if started is not None:
                    _outages.end(now, started, recovered=True)  # the store answered
                raise
            if started is None:
                started = now
                _outages.begin(now, uri, error)
            else:
                _outages.still(now)
            left = _outages.budget - (now - started)
            if left <= 0:
                _outages.end(now, started, recovered=False)
                if now - started <= 0:
                    raise
                raise OSError(f"{redact(str(error))} (store unreachable for {now - started:.0f} s, "
                              f"past storage.outage_seconds={_outages.budget:g})") from error
            time.sleep(min(left, delay * random.uniform(0.5, 1.0)))
            delay = min(_BACKOFF_MAX_S, delay * 2)
            continue
        except BaseException:
            _nesting.depth = 0
            raise
        _nesting.depth = 0
        if started is not None:
            _outages.end(time.monotonic(), started, recovered=True)
        return result

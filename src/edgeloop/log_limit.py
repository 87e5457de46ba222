"""Log lines rate-limited per cause.

One cause repeated per message (an overloaded store, a refused publish) once wrote 85 MB of identical
tracebacks. A :class:`LogLimiter` logs the first occurrence of a cause in full (with its traceback), then at
most one summary line per interval saying how many like it were not logged; a cause that went quiet for a
whole interval is logged in full again. The code paths that can repeat per message use one (ingest, the
store, the embedded broker's refusals). As a backstop for every other line, including the libraries'
(amqtt, paho, uvicorn), :func:`configure_logging` puts a :class:`RepeatFilter` on the process's log handler:
at most ``burst`` lines per call site and interval, then a count.

>>> import logging
>>> t = [0.0]
>>> limiter = LogLimiter(logging.getLogger("doctest"), interval_s=60, clock=lambda: t[0])
>>> [limiter.warning("db", "write failed: %s", n) for n in range(3)]
[True, False, False]
>>> t[0] = 61.0
>>> limiter.warning("db", "write failed: %s", 3)  # "write failed: 3 (and 2 more like it in 61 s, not logged)"
True
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Cause:
    logged_at: float  # when a line of this cause was last written
    suppressed: int = 0  # occurrences not written since
    level: int = logging.WARNING
    msg: str = ""
    args: tuple[object, ...] = ()


class LogLimiter:
    """Writes to ``logger`` at most one line per cause and ``interval_s`` (used from one thread or event loop)."""

    def __init__(self, logger: logging.Logger, *, interval_s: float = 60.0, max_causes: int = 1000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.max_causes = max_causes
        self.clock = clock
        self._causes: dict[str, _Cause] = {}

    def warning(self, cause: str, msg: str, *args: object, exc_info: bool | BaseException = False) -> bool:
        return self.log(logging.WARNING, cause, msg, *args, exc_info=exc_info)

    def error(self, cause: str, msg: str, *args: object, exc_info: bool | BaseException = False) -> bool:
        return self.log(logging.ERROR, cause, msg, *args, exc_info=exc_info)

    def log(self, level: int, cause: str, msg: str, *args: object, exc_info: bool | BaseException = False) -> bool:
        """Log ``msg % args`` for ``cause`` unless a line of that cause was written less than ``interval_s``
        ago (then it is only counted); returns whether a line was written."""
        now = self.clock()
        state = self._causes.get(cause)
        if state is not None and now - state.logged_at < self.interval_s:
            state.suppressed += 1
            state.level, state.msg, state.args = level, msg, args
            return False
        if state is None or state.suppressed == 0:  # a new cause, or one quiet for a whole interval: in full
            self._forget_oldest()
            self._causes.pop(cause, None)
            self._causes[cause] = _Cause(logged_at=now)
            self.logger.log(level, msg, *args, exc_info=exc_info)
            return True
        self._summary(state, now, level, msg, args)
        return True

    def flush(self) -> None:
        """Write the summary line of every cause whose interval has passed with occurrences not logged (call it
        now and then: otherwise the count of a burst that stopped would only be told by its next occurrence)."""
        now = self.clock()
        for state in self._causes.values():
            if state.suppressed and now - state.logged_at >= self.interval_s:
                self._summary(state, now, state.level, state.msg, state.args)

    def _summary(self, state: _Cause, now: float, level: int, msg: str, args: tuple[object, ...]) -> None:
        self.logger.log(level, msg + " (and %d more like it in %.0f s, not logged)", *args, state.suppressed,
                        now - state.logged_at)
        state.logged_at, state.suppressed = now, 0

    def _forget_oldest(self) -> None:
        while len(self._causes) >= self.max_causes:
            del self._causes[next(iter(self._causes))]


@dataclass(slots=True)
class _Site:
    since: float  # start of the current interval
    written: int = 1
    suppressed: int = 0


class RepeatFilter(logging.Filter):
    """A handler's filter: at most ``burst`` records per call site (source file and line) and ``interval_s``;
    the first record written after an interval with suppressed ones says how many were not logged."""

    def __init__(self, *, burst: int = 10, interval_s: float = 60.0, max_sites: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.interval_s = interval_s
        self.max_sites = max_sites
        self.clock = clock
        self._sites: dict[tuple[str, int], _Site] = {}
        self._lock = threading.Lock()  # records come from several threads (paho, executors, the event loop)

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.pathname, record.lineno)
        now = self.clock()
        with self._lock:
            site = self._sites.get(key)
            if site is not None and now - site.since < self.interval_s:
                if site.written < self.burst:
                    site.written += 1
                    return True
                site.suppressed += 1
                return False
            suppressed = site.suppressed if site is not None else 0
            if site is None and len(self._sites) >= self.max_sites:
                del self._sites[next(iter(self._sites))]
            self._sites[key] = _Site(since=now)
        # the note goes on the record as an attribute, for this handler's formatter: other handlers that see the
        # same record (a test's capture, say) keep its message as it was
        record.edgeloop_suppressed = (f" (and {suppressed} more from this line in the previous "
                                      f"{self.interval_s:.0f} s, not logged)" if suppressed else "")
        return True


class _NotingFormatter(logging.Formatter):
    """Appends a :class:`RepeatFilter`'s note on what it held back to the message."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record) + str(getattr(record, "edgeloop_suppressed", ""))


def configure_logging(verbose: bool = False) -> None:
    """The command line's logging: warnings (everything with ``verbose``) to stderr, repeats bounded per call
    site. Like ``logging.basicConfig`` it does nothing when the process has configured logging already."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(_NotingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RepeatFilter())
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)

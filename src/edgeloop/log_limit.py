"""Log lines rate-limited per cause.

One cause repeated per message (an overloaded store, a refused publish) once wrote 85 MB of identical
tracebacks. A :class:`LogLimiter` logs the first occurrence of a cause in full (with its traceback), then at
most one summary line per interval saying how many like it were not logged; a cause that went quiet for a
whole interval is logged in full again.

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

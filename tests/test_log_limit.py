"""Log lines rate-limited per cause: the first in full, then one summary line per interval with a count."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from edgeloop.log_limit import LogLimiter


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.tracebacks = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.tracebacks += bool(record.exc_info)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, Lines]]:
    logger = logging.getLogger("test.log_limit")
    handler = Lines()
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_a_flood_of_one_cause_is_one_line_per_interval_with_a_count(logged: tuple[logging.Logger, Lines]) -> None:
    logger, out = logged
    now = [0.0]
    limiter = LogLimiter(logger, interval_s=60, clock=lambda: now[0])
    for i in range(1000):
        try:
            raise ValueError(f"bad {i}")
        except ValueError:
            limiter.error("store_rejected:event", "refused %d", i, exc_info=True)
        limiter.warning("store_rejected:heartbeat", "beat %d", i)
    now[0] = 30.0
    limiter.flush()
    assert out.lines == ["refused 0", "beat 0"], "each cause once, the repeats only counted"
    assert out.tracebacks == 1, "the first occurrence with its traceback"
    now[0] = 61.0
    limiter.flush()
    assert out.lines[2:] == ["refused 999 (and 999 more like it in 61 s, not logged)",
                             "beat 999 (and 999 more like it in 61 s, not logged)"]
    assert out.tracebacks == 1, "summary lines carry no traceback"
    limiter.flush()
    assert len(out.lines) == 4, "nothing more to say"
    now[0] = 200.0  # a cause quiet for a whole interval is logged in full again
    assert limiter.warning("store_rejected:event", "refused %d", 1000)
    assert out.lines[-1] == "refused 1000"


def test_a_repeat_after_the_interval_carries_the_count(logged: tuple[logging.Logger, Lines]) -> None:
    logger, out = logged
    now = [0.0]
    limiter = LogLimiter(logger, interval_s=10, clock=lambda: now[0])
    assert [limiter.warning("c", "x%d", i) for i in range(3)] == [True, False, False]
    now[0] = 12.0
    assert limiter.warning("c", "x%d", 3)
    assert out.lines == ["x0", "x3 (and 2 more like it in 12 s, not logged)"]


def test_causes_are_bounded(logged: tuple[logging.Logger, Lines]) -> None:
    """Causes named after clients (a refused publish per client) cannot grow without bound."""
    logger, out = logged
    limiter = LogLimiter(logger, interval_s=60, max_causes=10, clock=lambda: 0.0)
    for i in range(100):
        limiter.warning(f"client-{i}:publish", "refused %d", i)
    assert len(out.lines) == 100
    assert len(limiter._causes) <= 10

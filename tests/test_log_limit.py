"""Log lines rate-limited per cause: the first in full, then one summary line per interval with a count."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from edgeloop.log_limit import LogLimiter, RepeatFilter


class Lines(logging.Handler):
    def __init__(self, *, notes: bool = True) -> None:
        super().__init__()
        self.notes = notes  # append a RepeatFilter's note, as the command line's formatter does
        self.lines: list[str] = []
        self.tracebacks = 0

    def emit(self, record: logging.LogRecord) -> None:
        note = getattr(record, "edgeloop_suppressed", "") if self.notes else ""
        self.lines.append(record.getMessage() + str(note))
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


def test_repeat_filter_bounds_each_call_site_and_counts_what_it_dropped() -> None:
    now = [0.0]
    repeat = RepeatFilter(burst=3, interval_s=60, clock=lambda: now[0])
    out = Lines()
    out.addFilter(repeat)
    logger = logging.getLogger("test.repeat")
    logger.addHandler(out)
    logger.propagate = False

    def overloaded(i: int) -> None:
        logger.warning("overloaded %d", i)  # one call site

    try:
        for i in range(1000):
            overloaded(i)
            if i < 2:
                logger.warning("another line %d", i)  # another call site, its own budget
        assert out.lines == ["overloaded 0", "another line 0", "overloaded 1", "another line 1", "overloaded 2"]
        now[0] = 61.0
        overloaded(1000)
        assert out.lines[-1] == "overloaded 1000 (and 997 more from this line in the previous 60 s, not logged)"
    finally:
        logger.removeHandler(out)
        logger.propagate = True


def test_the_repeat_filter_leaves_other_handlers_records_alone() -> None:
    """Two handlers see one record: the filtered one notes what it held back, the other (a test's capture, a
    second sink) gets the message as logged, never a note, let alone two."""
    now = [0.0]
    filtered, plain = Lines(), Lines(notes=False)
    filtered.addFilter(RepeatFilter(burst=1, interval_s=60, clock=lambda: now[0]))
    logger = logging.getLogger("test.repeat.two")
    logger.addHandler(filtered)
    logger.addHandler(plain)
    logger.propagate = False

    def refuse() -> None:
        logger.warning("refused")  # one call site

    try:
        for _ in range(3):
            refuse()
        now[0] = 61.0
        refuse()
        assert filtered.lines == ["refused", "refused (and 2 more from this line in the previous 60 s, not logged)"]
        assert plain.lines == ["refused"] * 4
    finally:
        logger.removeHandler(filtered)
        logger.removeHandler(plain)
        logger.propagate = True


def test_the_command_line_logging_cannot_be_flooded_by_identical_tracebacks() -> None:
    """What the CLI commands (``up``, ``serve``, ``agent``) configure: 10,000 identical tracebacks from one
    line (an overload of any library) write a few lines, not megabytes."""
    script = """
import logging
from edgeloop.log_limit import configure_logging
configure_logging()
log = logging.getLogger("edgeloop.flood")
for i in range(10_000):
    try:
        raise RuntimeError("store overloaded")
    except RuntimeError:
        log.exception("writing a batch failed")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, check=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.stderr.count(b"writing a batch failed") == 10
    assert len(done.stderr) < 10_000, len(done.stderr)

"""The one grammar of a duration on the command line: a number and a unit, ``90s``, ``15m``, ``2h``, ``7d``
(``min`` is ``m``; fractions such as ``1.5h`` are fine). The unit is required: a bare ``24`` could mean seconds or
hours, and a claim or a silence that lasts 24 seconds instead of 24 hours is a mistake nobody notices in time."""

from __future__ import annotations

import re

from edgeloop.cli.output import fail

__all__ = ["UNITS", "parse_duration"]

UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|min|m|h|d)$")


def parse_duration(text: str, option: str) -> float:
    """``text`` in seconds; anything else ends the command with an error naming ``option`` and the grammar."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise fail(f"{option} {text!r} is not a duration: use a number and s, m, h or d (e.g. 90s, 15m, 2h, 7d)")
    return float(m.group(1)) * UNITS[m.group(2)]

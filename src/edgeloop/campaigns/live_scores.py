"""A bounded sample of each model version's live scores, for the score-distribution gate of a campaign
(``ScoreShiftGate``: the candidate's live scores against the score quantiles of its model card).

The scoring stage hands every scored run of every version (live or shadow) to :meth:`LiveScores.observe`
(``ScoringStage.on_scores``). Per version it keeps the newest ``per_version`` scores, at most one per device per
``every_ms`` of sample time (the row's score, 1.0 = the version's threshold; rows not scored yet, NaN, are
skipped), with their device and time; at most ``max_versions`` versions, the least recently fed dropped first.
So memory is bounded whatever the fleet (8,192 × 32 versions: about 20 MiB at most), and :meth:`sample` answers a
gate with the scores of the targets it compares since its phase began.
"""

from __future__ import annotations

import collections
from collections.abc import Collection
from typing import NamedTuple

import numpy as np

from edgeloop.store.base import TelemetryChunk

__all__ = ["LiveScores"]


class _Score(NamedTuple):
    ts: int
    device: str
    score: float


class LiveScores:
    """See the module docstring."""

    def __init__(self, *, per_version: int = 8192, every_ms: int = 10_000, max_versions: int = 32) -> None:
        if per_version < 1 or every_ms < 1 or max_versions < 1:
            raise ValueError("per_version, every_ms and max_versions must be at least 1")
        self.per_version = per_version
        self.every_ms = every_ms
        self.max_versions = max_versions
        self._scores: collections.OrderedDict[str, collections.deque[_Score]] = collections.OrderedDict()
        self._due: dict[str, dict[str, int]] = {}  # version → device → the sample time its next score is due

    def observe(self, chunk: TelemetryChunk, ref: str, scores: np.ndarray, live: bool) -> None:
        """A scored run of ``ref`` (live or shadow: both are the version's scores on real data)."""
        del live
        if ref not in self._scores:
            if len(self._scores) >= self.max_versions:
                gone, _ = self._scores.popitem(last=False)
                self._due.pop(gone, None)
            self._scores[ref] = collections.deque(maxlen=self.per_version)
        else:
            self._scores.move_to_end(ref)
        kept = self._scores[ref]
        due = self._due.setdefault(ref, {})
        ts = chunk.ts
        at = due.get(chunk.device, int(ts[0]))
        while True:
            i = int(np.searchsorted(ts, at, side="left"))
            while i < ts.shape[0] and not np.isfinite(scores[i]):
                i += 1
            if i >= ts.shape[0]:
                break
            kept.append(_Score(int(ts[i]), chunk.device, float(scores[i])))
            at = int(ts[i]) + self.every_ms
        due[chunk.device] = at

    def sample(self, ref: str, devices: Collection[str], *, since_ms: int) -> list[float]:
        """``ref``'s kept scores on ``devices`` at or after ``since_ms`` (sample time), oldest first."""
        wanted = set(devices)
        return [s.score for s in self._scores.get(ref, ()) if s.ts >= since_ms and s.device in wanted]

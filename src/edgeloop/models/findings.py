"""The record of every onset finding with the model version that produced it, live and shadow: what the campaign
gates compare and the model pages count. A store outage keeps the findings for the next batch (bounded: beyond
``capacity`` the oldest are dropped and counted, the scoring stage never waits on this record)."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

from edgeloop.errors import StoreError
from edgeloop.scoring import ScoredFinding
from edgeloop.store.base import ModelFinding, Store

__all__ = ["FindingLog"]

log = logging.getLogger(__name__)


class FindingLog:
    """``ScoringStage(on_findings=FindingLog(store=...))``."""

    def __init__(self, *, store: Store, capacity: int = 100_000) -> None:
        self.store = store
        self._pending: deque[ModelFinding] = deque(maxlen=capacity)
        self.dropped = 0  # findings lost because the store was down longer than ``capacity`` findings

    async def __call__(self, scored: Sequence[ScoredFinding]) -> None:
        room = self._pending.maxlen or 0
        self.dropped += max(0, len(self._pending) + len(scored) - room)
        self._pending.extend(ModelFinding(
            model=s.ref, live=s.live, tenant=s.tenant, asset=s.asset, device=s.device, ts=s.finding.ts,
            kind=str(s.finding.kind), severity=s.finding.severity, score=float(s.finding.score),
            explanation=dict(s.finding.explanation), message=s.finding.message) for s in scored)
        batch = list(self._pending)
        try:
            await self.store.add_model_findings(batch)
        except StoreError as exc:
            log.warning("%d model findings wait for the store (%s)", len(batch), exc)
            return
        for _ in batch:
            self._pending.popleft()

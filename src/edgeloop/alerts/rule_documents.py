"""Which rule document each tenant's assets are evaluated by: the platform's default, or the tenant's own.

Each document in force has its own :class:`RuleEngine`. A tenant's telemetry, findings and ticks reach only the
engine of the document that tenant uses, so one tenant's rule change never adds, removes or resets another
tenant's rules. Bounded by the number of tenants.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from edgeloop.alerts.model import Signal
from edgeloop.alerts.rule_config import RuleSet
from edgeloop.alerts.rules import RuleEngine

__all__ = ["RuleDocument", "RuleDocuments"]


@dataclass(frozen=True, slots=True)
class RuleDocument:
    ruleset: RuleSet
    version: int  # 0: the built-in defaults
    engine: RuleEngine
    tenant: str | None = None  # None: the platform's default


class RuleDocuments:
    """The default document and each tenant's own, with their engines."""

    def __init__(self, default: RuleSet, version: int, engine: Callable[[RuleSet], RuleEngine]) -> None:
        self._engine = engine
        self.default = RuleDocument(default, version, engine(default))
        self.own: dict[str, RuleDocument] = {}

    def of(self, tenant: str | None) -> RuleDocument:
        """The document ``tenant``'s assets are evaluated by."""
        return self.own.get(tenant, self.default) if tenant else self.default

    def set(self, ruleset: RuleSet, version: int, tenant: str | None) -> RuleDocument:
        """Put a document in force (its engine starts afresh); returns it."""
        doc = RuleDocument(ruleset, version, self._engine(ruleset), tenant)
        if tenant is None:
            self.default = doc
        else:
            self.own[tenant] = doc
        return doc

    def __iter__(self) -> Iterator[RuleDocument]:
        yield self.default
        yield from self.own.values()

    def tick(self, now_ms: int, *, missing: bool) -> list[Signal]:
        """Every engine's tick, in time order. A signal counts only from the engine of its tenant's document (the
        default engine may still hold a tenant that has since got a document of its own)."""
        out = [s for doc in self for s in doc.engine.tick(now_ms, missing=missing) if self.of(s.tenant) is doc]
        out.sort(key=lambda s: s.ts)
        return out

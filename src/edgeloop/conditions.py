"""**Pure**: the one reading of a condition on a value (``above``, ``below`` or ``equals``, one of them given), used
by the platform's policy checks and by the gateway's envelope alike."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Condition", "condition_text", "holds"]


class Condition(Protocol):
    @property
    def above(self) -> float | None: ...

    @property
    def below(self) -> float | None: ...

    @property
    def equals(self) -> float | None: ...


def holds(cond: Condition, value: float) -> bool:
    """Whether ``value`` is above ``above``, below ``below`` or equal to ``equals`` (whichever is given)."""
    if cond.above is not None:
        return value > cond.above
    if cond.below is not None:
        return value < cond.below
    return value == cond.equals


def condition_text(cond: Condition) -> str:
    """"above 90", "below 10", "equal to 0"."""
    if cond.above is not None:
        return f"above {cond.above:g}"
    if cond.below is not None:
        return f"below {cond.below:g}"
    return f"equal to {cond.equals:g}"

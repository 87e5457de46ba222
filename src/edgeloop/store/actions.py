"""Storage records and SQL for closed-loop actions: the commands the platform sends to machines and what the
gateways answered. Written once for both SQL backends, like ``alerting.py``.

A command's ``status``: ``pending`` (stored, not on the broker yet), ``sent`` (published at least once; resent
until answered or expired), then the gateway's answer, which is final: ``applied`` (with the value read back),
``refused`` (its ``code`` and ``reason``) or ``failed``; or ``expired`` when its time ran out with no answer (the
gateway never starts an expired command; a late answer still replaces ``expired``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["ANSWERED", "COMMANDS", "CommandAnswer", "CommandRecord"]

COMMANDS: Final = ("id, tenant, device, action, value, key, seq, ts, expires, trace, issued_by, decision, status, "
                   "status_ms, code, reason, value_before, read_back, sends, sent_ms")
ANSWERED: Final = ("applied", "refused", "failed")


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandRecord:
    """A command as stored (fields in column order)."""

    id: str
    tenant: str
    device: str
    action: str
    value: float
    key: str
    seq: int
    ts: int
    expires: int
    trace: str
    issued_by: str
    decision: str
    status: str = "pending"
    status_ms: int = 0
    code: str = ""
    reason: str = ""
    value_before: float | None = None
    read_back: float | None = None
    sends: int = 0
    sent_ms: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandAnswer:
    """A gateway's answer to a command (its ``command`` event)."""

    id: str
    device: str
    status: str  # applied | refused | failed
    at_ms: int  # when the gateway answered (its clock)
    code: str = ""
    reason: str = ""
    value_before: float | None = None
    read_back: float | None = None

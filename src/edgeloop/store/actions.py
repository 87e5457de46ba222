"""Storage records and SQL for closed-loop actions: the commands the platform sends to machines and what the
gateways answered; action policies, decisions and their hash-chained log, automation holds. Written once for both
SQL backends, like ``alerting.py``.

A command's ``status``: ``pending`` (stored, not on the broker yet), ``sent`` (published at least once; resent
until answered or expired), then the gateway's answer, which is final: ``applied`` (with the value read back),
``refused`` (its ``code`` and ``reason``) or ``failed``; or ``expired`` when its time ran out with no answer (the
gateway never starts an expired command; a late answer still replaces ``expired``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Final

__all__ = ["ANSWERED", "COMMANDS", "DECISIONS", "DECISION_LOG", "GENESIS", "HOLDS", "POLICY_DOCUMENTS", "CommandAnswer",
           "CommandRecord", "DecisionEntry", "DecisionRecord", "HoldRecord", "PolicyDocument", "chain", "entry_digest"]

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


# -- policies, decisions and their hash-chained record, automation holds -------------------------------------------
DECISIONS: Final = ("id, tenant, asset, device, policy, policy_version, mode, state, created_ms, updated_ms, "
                    "expires_ms, command, trace, cause, action, approvals, needed")
DECISION_LOG: Final = "decision, tenant, asset, ts, kind, actor, body, prev, hash"
HOLDS: Final = "id, tenant, target, held_by, reason, created_ms, until_ms, ended_ms, ended_by"
POLICY_DOCUMENTS: Final = "tenant, version, text, created_ms, created_by"
GENESIS: Final = "0" * 64  # the ``prev`` of the first record of the decision log


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyDocument:
    """A tenant's action policies as written (YAML/JSON), one version of them."""

    tenant: str
    version: int
    text: str
    created_ms: int
    created_by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionRecord:
    """Where a decision stands (the index; the decision log holds what happened, chained)."""

    id: str
    tenant: str
    asset: str
    device: str  # the machine acted on ("" for a work order)
    policy: str
    policy_version: int
    mode: str  # dry-run | on
    state: str  # held | dry_run | awaiting_approval | approved | sent | applied | verified | refused | failed |
    # expired | rejected | done (a work order opened)
    created_ms: int
    updated_ms: int
    expires_ms: int
    command: str = ""
    trace: str = ""
    cause: str = ""  # what set it off: "alert 41 (bearing-wear)", "schedule", "person ana"
    action: str = ""
    approvals: int = 0
    needed: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionEntry:
    """One record of the decision log: ``hash`` is SHA-256 over ``prev`` and the record's canonical content, and
    ``prev`` the hash of the record before it (``GENESIS`` for the first), so an altered or deleted record breaks
    the chain."""

    decision: str
    tenant: str
    asset: str
    ts: int
    kind: str
    actor: str
    body: str  # canonical JSON of what was decided, checked, approved, sent or answered
    prev: str = ""
    hash: str = ""
    id: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldRecord:
    """A person holds automation until ``until_ms`` (a lease): on an asset (``target`` its id: a technician's
    manual override, no policy acts on it meanwhile) or on a policy (``policy:NAME``: an operator's stop, the policy
    decides nothing meanwhile)."""

    id: str
    tenant: str
    target: str
    held_by: str
    reason: str
    created_ms: int
    until_ms: int
    ended_ms: int | None = None
    ended_by: str = ""


def entry_digest(entry: DecisionEntry, prev: str) -> str:
    """SHA-256 (hex) over ``prev`` and the entry's content (every field but ``id`` and the hashes)."""
    content = json.dumps([prev, entry.decision, entry.tenant, entry.asset, entry.ts, entry.kind, entry.actor,
                          entry.body], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(content.encode()).hexdigest()


def chain(entry: DecisionEntry, prev: str) -> DecisionEntry:
    """``entry`` linked after the record whose hash is ``prev``."""
    return dataclasses.replace(entry, prev=prev, hash=entry_digest(entry, prev))

"""Recoverable state: the agent's journal stays within its disk budget through a long outage, corrupt
journals and databases are moved aside at start, an empty database file is refused, data files are
private (0600 in a 0700 directory) and one data directory serves one process at a time."""

from __future__ import annotations

import os
from pathlib import Path

from edgeloop.agent.journal import SENT_GAPS_KEPT, Journal
from edgeloop.messages import DeviceEvent, Sample, Severity, decode_event, decode_telemetry

DEVICES = [f"dev-{k}" for k in range(4)]


def gap_numbers(payload: bytes) -> dict[str, int]:
    """A gap report's numbers (first_ts, last_ts, samples, messages)."""
    data = decode_event(payload).data
    return {k: v for k, v in data.items() if isinstance(v, int)}


def journal_files_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("journal.db"))


# -- the journal's disk budget ---------------------------------------------------------------------
def test_a_long_outage_stays_within_the_disk_budget_and_its_gaps_are_reported(tmp_path: Path) -> None:
    """An outage (nothing acknowledged) against a tiny budget: one commit per 100 ms for 4 devices plus a
    local anomaly event now and then. The files stay within 2 x budget + 256 KiB (the stated slack: SQLite's
    fixed pages, the WAL and its index), gap reports stay one per device and add up to what was dropped."""
    budget = int(0.05 * 2**20)
    j = Journal(tmp_path / "journal.db", budget_bytes=budget)
    ts, peak = 0, 0
    for commit in range(3000):  # 300 s of outage
        j.append({d: [Sample(ts=ts + i * 10, values={"a": float(i), "b": 2.5}) for i in range(10)] for d in DEVICES},
                 now_ms=ts)
        if commit % 7 == 0:
            j.record_event(DeviceEvent(device="dev-0", ts=ts, kind="anomaly", severity=Severity.WARNING,
                                       message="local model m: score high", data={"score": 1.0}), now_ms=ts)
        ts += 100
        if commit % 25 == 0:
            peak = max(peak, journal_files_size(tmp_path))
            assert j.used_bytes <= budget
    assert peak <= 2 * budget + 256 * 1024, f"the journal grew to {peak} bytes for a {budget} byte budget"
    stats = j.stats()
    assert stats.messages > 0, "the newest telemetry is kept; events do not crowd it out"
    assert stats.dropped_events > 0, "old events beyond their share were dropped, and counted"
    gaps = {e.device: gap_numbers(e.payload) for e in j.unsent_events() if decode_event(e.payload).kind == "gap"}
    assert sorted(gaps) == DEVICES, "one coalesced gap report per device"
    assert sum(g["samples"] for g in gaps.values()) == stats.dropped_samples
    assert sum(g["messages"] for g in gaps.values()) == stats.dropped_messages
    for device, g in gaps.items():
        oldest_kept = decode_telemetry(j.pending(device, limit=1)[0].payload).samples[0].ts
        assert g["first_ts"] == 0, "the gap starts with the first dropped sample"
        assert g["last_ts"] < oldest_kept, "and ends before the oldest sample still kept"
    assert j._db.execute("SELECT COUNT(*) FROM gaps").fetchone()[0] == len(DEVICES)


def test_a_gap_report_handed_to_the_uplink_is_never_extended(tmp_path: Path) -> None:
    budget = 20_000
    j = Journal(tmp_path / "journal.db", budget_bytes=budget)
    ts = 0

    def outage(commits: int) -> None:
        nonlocal ts
        for _ in range(commits):
            j.append({"dev-0": [Sample(ts=ts + i, values={"a": 1.0}) for i in range(10)]}, now_ms=ts)
            ts += 100

    outage(400)
    first = j.unsent_events(take_for={"dev-0"})  # connected: the uplink publishes it now
    assert [decode_event(e.payload).kind for e in first] == ["gap"]
    outage(400)
    events = j.unsent_events()
    assert events[0].payload == first[0].payload, "the report in flight keeps its bytes"
    assert gap_numbers(events[1].payload)["first_ts"] > gap_numbers(first[0].payload)["last_ts"], \
        "new drops, a new report"
    j.events_sent([first[0].id, events[1].id])
    for _ in range(SENT_GAPS_KEPT + 20):  # many reconnects, each reporting a gap
        outage(5)
        j.events_sent([e.id for e in j.unsent_events(take_for={"dev-0"})])
    assert j._db.execute("SELECT COUNT(*) FROM gaps").fetchone()[0] <= SENT_GAPS_KEPT + 1, "gap history is bounded"
    assert j.stats().events_unsent == 0

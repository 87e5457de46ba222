"""``edgeloop agent``: sources -> journal (group commit every ``commit_ms``) -> uplink.

Samples from the sources wait in memory for at most ``commit_ms`` and are then *accepted*:
committed to the journal in one transaction (see ``journal.py`` for what survives what).
Only then does the uplink see them. A source's failure is reported and retried; it never
stops the journal, the uplink or the other sources.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from edgeloop.agent.config import AgentConfig
from edgeloop.agent.journal import Journal
from edgeloop.agent.sources import SourceStatus, run_source
from edgeloop.agent.uplink import Uplink
from edgeloop.messages import Sample

log = logging.getLogger(__name__)
T = TypeVar("T")


def merge_by_time(samples: list[Sample]) -> list[Sample]:
    """Readings of one device in time order, those with the same time merged into one sample (an OPC UA
    subscription reports each channel on its own; two sources may feed one device)."""
    merged: dict[int, dict[str, float | None]] = {}
    for s in samples:
        merged.setdefault(s.ts, {}).update(s.values)
    return [Sample(ts=ts, values=merged[ts]) for ts in sorted(merged)]


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.journal = Journal(Path(cfg.agent.data_dir) / "journal.db", fsync=cfg.agent.fsync,
                               budget_bytes=int(cfg.agent.budget_mb * 2**20),
                               max_samples_per_message=cfg.uplink.max_samples_per_message)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self.uplink = Uplink(cfg.uplink, tenant=cfg.agent.tenant, journal=self.in_journal,
                             keepalive_s=cfg.uplink.keepalive_s)
        self.sources = {s.name: SourceStatus(name=s.name, kind=type(s).__name__.removesuffix("Source").lower())
                        for s in cfg.sources}
        self._buffer: dict[str, list[Sample]] = {}
        self.accepted = 0

    async def in_journal(self, fn: Callable[[Journal], T]) -> T:
        """Run ``fn(journal)`` on the journal's own thread (SQLite calls stay off the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self.journal)

    def _emit(self, device: str, sample: Sample) -> None:
        self._buffer.setdefault(device, []).append(sample)

    async def _commit_loop(self) -> None:
        period = self.cfg.agent.commit_ms / 1000
        while True:
            await asyncio.sleep(period)
            await self.commit()

    async def commit(self) -> None:
        if not self._buffer:
            return
        batch = {device: merge_by_time(samples) for device, samples in self._buffer.items()}
        self._buffer = {}
        await self.in_journal(lambda j: j.append(batch))
        self.accepted += sum(len(s) for s in batch.values())
        self.uplink.wake()

    async def health(self) -> dict[str, Any]:
        js = await self.in_journal(lambda j: j.stats())
        now = int(time.time() * 1000)
        return {
            "accepted_samples": self.accepted,
            "journal": {"messages": js.messages, "bytes": js.bytes, "dropped_messages": js.dropped_messages,
                        "dropped_samples": js.dropped_samples, "gaps_unsent": js.gaps_unsent,
                        "oldest_unsent_age_s": None if js.oldest_ts is None else round((now - js.oldest_ts) / 1000, 1)},
            "uplink": {"connected": self.uplink.connected, "inflight": self.uplink.inflight(),
                       **vars(self.uplink.stats)},
            "sources": {name: vars(st) for name, st in self.sources.items()},
        }

    async def run(self, *, drain_s: float = 5.0) -> None:
        """Run until cancelled. On the way out: accept what the sources produced, then give the uplink up
        to ``drain_s`` to deliver what is pending (what it cannot stays in the journal for next time)."""
        readers = [asyncio.create_task(run_source(s, self._emit, self.sources[s.name]), name=f"source:{s.name}")
                   for s in self.cfg.sources]
        readers.append(asyncio.create_task(self._commit_loop(), name="journal"))
        uplink = asyncio.create_task(self.uplink.run(), name="uplink")
        tasks = [*readers, uplink]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a journal or uplink failure is fatal and says why; sources never end
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.commit()  # a clean stop accepts what the sources already produced
            if not uplink.done():
                try:
                    await self._drain(drain_s)
                except Exception:  # whatever is not delivered stays in the journal
                    log.exception("delivering the journal before stopping failed")
            uplink.cancel()
            await asyncio.gather(uplink, return_exceptions=True)
            await self.in_journal(lambda j: j.close())
            self._executor.shutdown(wait=True)

    async def _drain(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        log.info("stopping: delivering up to %.0f s of pending messages", timeout_s)
        while time.monotonic() < deadline:
            if (await self.in_journal(lambda j: j.stats())).messages == 0 and self.uplink.inflight() == 0:
                return
            if not any(self.uplink.connected.values()):
                return  # nowhere to send: it waits in the journal
            self.uplink.wake()
            await asyncio.sleep(0.05)

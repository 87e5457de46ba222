"""``edgeloop agent``: sources -> local decisions -> journal (group commit every ``commit_ms``) -> uplink.

Samples from the sources wait in memory for at most ``commit_ms``. Then, per device in time
order, the local fail-safe rules and ONNX models see them (a trip's write goes to the PLC at
once, uplink or not), the bandwidth policy chooses what to forward, and that is *accepted*:
committed to the journal in one transaction with the events the decisions produced (see
``journal.py`` for what survives what). Only then does the uplink see them. A source's failure
is reported and retried; it never stops the journal, the uplink or the other sources.

The gateway sends a heartbeat every ``heartbeat_s`` and takes configuration pushes from the
platform (``remote.py``): a new configuration's sources replace the running ones atomically,
and if they do not come up within ``config_verify_s`` the previous ones return. Its local models are signed
versions kept in slots, watched on probation and pushed by the platform (``edge_models.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from edgeloop.agent.command_runner import CommandRunner
from edgeloop.agent.config import AgentConfig, ModbusWrite
from edgeloop.agent.edge_models import EdgeModels, trust_chain
from edgeloop.agent.failsafe import Decision, FailSafe
from edgeloop.agent.forward import Forwarder
from edgeloop.agent.health import ProcessMeter, build_heartbeat
from edgeloop.agent.journal import MEMORY, PRIORITY, Journal
from edgeloop.agent.remote import PUSHED_FILE, ConfigOutcome, PushedConfig, check_push, config_event
from edgeloop.agent.sources import ModbusReader, OpcUaReader, Reader, SourceStatus, make_reader, run_source
from edgeloop.agent.uplink import Uplink
from edgeloop.dir_lock import DirLock
from edgeloop.file_modes import private_data_dir
from edgeloop.identity.auth import OncePer
from edgeloop.messages import DeviceEvent, Sample, Severity, encode

log = logging.getLogger(__name__)
T = TypeVar("T")
ACTION_TIMEOUT_S = 5.0


async def cancel_all(tasks: Sequence[asyncio.Task[Any]], *, every_s: float = 1.0) -> None:
    """Cancel ``tasks`` and wait until every one has ended. A cancellation can be swallowed (Python 3.11's
    ``asyncio.wait_for``, inside a client library, loses one that arrives as its inner call completes: the task
    then goes on with its retry loop), so one still running after ``every_s`` is cancelled again; a plain
    ``gather`` after one ``cancel`` waited forever there (a hung test under load)."""
    for task in tasks:
        task.cancel()
    pending = set(tasks)
    while pending:
        _, pending = await asyncio.wait(pending, timeout=every_s)
        for task in pending:
            task.cancel()
    for task in tasks:  # retrieved, so that none is reported as never retrieved
        if not task.cancelled():
            task.exception()


def merge_by_time(samples: list[Sample]) -> list[Sample]:
    """Readings of one device in time order, those with the same time merged into one sample (an OPC UA
    subscription reports each channel on its own; two sources may feed one device)."""
    merged: dict[int, dict[str, float | None]] = {}
    for s in samples:
        merged.setdefault(s.ts, {}).update(s.values)
    return [Sample(ts=ts, values=merged[ts]) for ts in sorted(merged)]


@dataclass
class _Local:
    """What one configuration decides on the agent: rules and the bandwidth policy (models: ``EdgeModels``)."""

    failsafe: FailSafe
    forwarder: Forwarder

    @classmethod
    def build(cls, cfg: AgentConfig) -> _Local:
        return cls(FailSafe(cfg.rules), Forwarder(cfg.bandwidth))


@dataclass
class _Running:
    """One configuration's live sources."""

    readers: dict[str, Reader] = field(default_factory=dict)
    status: dict[str, SourceStatus] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Agent:
    def __init__(self, cfg: AgentConfig, *, base: Path | None = None) -> None:
        """``base``: the folder of the configuration file (relative paths in pushed configurations)."""
        self.cfg = cfg
        self.base = base or Path.cwd()
        self.pushed_path = Path(cfg.agent.data_dir) / PUSHED_FILE
        # One agent per data directory (a second would send the same journal twice), held until run() ends.
        self._lock = DirLock(private_data_dir(Path(cfg.agent.data_dir)), what="agent data directory").acquire()
        self.journal = self._open_journal(Path(cfg.agent.data_dir) / "journal.db")
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self.uplink = Uplink(cfg.uplink, tenant=cfg.agent.tenant, gateway=cfg.agent.gateway, journal=self.in_journal,
                             keepalive_s=cfg.uplink.keepalive_s, on_config=self._on_config,
                             on_model=self._on_model, on_command=self._on_command)
        self.local = _Local.build(cfg)
        self._pending_events: list[DeviceEvent] = []
        self.models = EdgeModels(data_dir=Path(cfg.agent.data_dir), chain_pem=trust_chain(cfg),
                                 gateway=cfg.agent.gateway, emit=self._event)
        self.models.configure(cfg.models, strict=False)
        self.running = _Running()
        self.commands = CommandRunner(in_journal=self.in_journal, actuators=lambda: self.cfg.actuators,
                                      readers=lambda: self.running.readers, wake=self.uplink.wake)
        self.outcome = ConfigOutcome(cfg.version, running=cfg.version)
        self._buffer: dict[str, list[Sample]] = {}
        self._actions: set[asyncio.Task[Any]] = set()
        self._config_lock = asyncio.Lock()
        self._meter = ProcessMeter()
        self.accepted = 0
        self.actions_done = 0
        self.journal_failures = 0
        self.unjournaled_samples = 0  # read but never accepted: the journal could not write them
        self._journal_error_logged = OncePer(60_000)
        self.journal_in_memory = str(self.journal.path) == MEMORY
        if self.journal_in_memory:
            self._pending_events.append(DeviceEvent(
                device=cfg.agent.gateway, ts=int(time.time() * 1000), kind="journal_unavailable",
                severity=Severity.CRITICAL, message="the agent's journal could not be opened: running on a journal "
                "in memory (nothing survives a restart)", data={}))
        if self.journal.moved_aside:  # reported to the platform too, once the uplink is up
            self._pending_events.append(DeviceEvent(
                device=cfg.agent.gateway, ts=int(time.time() * 1000), kind="journal_corrupt", severity=Severity.WARNING,
                message=f"the agent's journal was corrupt at start: moved aside to {self.journal.moved_aside[0].name}; "
                        "what it held was not forwarded", data={"moved_to": str(self.journal.moved_aside[0])}))

    def _open_journal(self, path: Path) -> Journal:
        """The journal at ``path`` (a corrupt one is moved aside by ``Journal``). If no file opens at all (a
        read-only or failing disk), a journal in memory: the fail-safe rules must run whatever the disk does;
        forwarding then works while the link is up, and nothing survives a restart."""
        def journal(at: Path) -> Journal:
            return Journal(at, fsync=self.cfg.agent.fsync, budget_bytes=int(self.cfg.agent.budget_mb * 2**20),
                           max_samples_per_message=self.cfg.uplink.max_samples_per_message)
        try:
            return journal(path)
        except (sqlite3.Error, OSError) as exc:
            log.error("the journal %s cannot be opened (%s): running on a journal in MEMORY; the fail-safe rules "
                      "run, data is forwarded while the link is up, nothing survives a restart", path, exc)
            return journal(Path(MEMORY))

    @property
    def sources(self) -> dict[str, SourceStatus]:
        return self.running.status

    async def in_journal(self, fn: Callable[[Journal], T]) -> T:
        """Run ``fn(journal)`` on the journal's own thread (SQLite calls stay off the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self.journal)

    def _event(self, event: DeviceEvent) -> None:
        """Journal ``event`` with the next commit (the pending list is swapped out at every commit)."""
        self._pending_events.append(event)

    # -- sources --------------------------------------------------------------------------------
    def _emit(self, device: str, sample: Sample) -> None:
        self._buffer.setdefault(device, []).append(sample)
        self.commands.observe(device, sample.ts, sample.values)

    def _start_sources(self, cfg: AgentConfig) -> _Running:
        run = _Running()
        for s in cfg.sources:
            status = SourceStatus(name=s.name, kind=type(s).__name__.removesuffix("Source").lower())
            reader = make_reader(s, self._emit, status)
            run.readers[s.name], run.status[s.name] = reader, status
            run.tasks.append(asyncio.create_task(run_source(s, reader, status), name=f"source:{s.name}"))
        return run

    @staticmethod
    async def _stop_sources(run: _Running) -> None:
        await cancel_all(run.tasks)

    # -- accepting ------------------------------------------------------------------------------
    async def _commit_loop(self) -> None:
        period = self.cfg.agent.commit_ms / 1000
        while True:
            await asyncio.sleep(period)
            await self.commit()

    async def commit(self, *, flush: bool = False) -> None:
        """Decide locally on what the sources produced, then accept it into the journal in one transaction."""
        batch = {device: merge_by_time(samples) for device, samples in self._buffer.items()}
        self._buffer = {}
        normal: dict[str, list[Sample]] = {}
        priority: dict[str, list[Sample]] = {}
        raise_since: dict[str, int] = {}
        for device, samples in batch.items():
            hot_from = self._decide(device, samples)
            routed = self.local.forwarder.route(device, samples, hot_from)
            if routed.normal:
                normal[device] = routed.normal
            if routed.priority:
                priority[device] = routed.priority
            if routed.raise_since is not None:
                raise_since[device] = routed.raise_since
        if flush:
            for device, closed in self.local.forwarder.flush().items():
                normal.setdefault(device, []).extend(closed)
        events, self._pending_events = self._pending_events, []
        if not (normal or priority or events):
            return

        def write(j: Journal) -> None:
            if normal:
                j.append(normal)
            if priority:
                j.append(priority, priority=PRIORITY)
            for device, since in raise_since.items():
                j.mark_priority(device, since)
            for event in events:
                j.record_event(event)

        try:
            await self.in_journal(write)
        except (sqlite3.Error, OSError) as exc:
            # A full or failing disk must not stop the fail-safe rules, which already ran on these samples:
            # the batch is lost (counted and reported), its events wait for the next commit.
            self.journal_failures += 1
            self.unjournaled_samples += sum(len(s) for s in batch.values())
            self._pending_events = events + self._pending_events
            if self._journal_error_logged.due("journal", int(time.time() * 1000)):
                log.error("journal write failed (%s): %d samples not accepted so far; rules keep running",
                          exc, self.unjournaled_samples)
            return
        self.accepted += sum(len(s) for s in batch.values())
        self.uplink.wake()

    def _decide(self, device: str, samples: list[Sample]) -> int | None:
        """Rules and models over one device's new samples; returns the earliest trip/anomaly time, if any."""
        hot_from: int | None = None
        for sample in samples:
            for decision in self.local.failsafe.observe(device, sample):
                self._on_decision(decision)
                if decision.verdict != "clear":
                    hot_from = decision.ts if hot_from is None else min(hot_from, decision.ts)
                    self.local.forwarder.heat(device, decision.ts)
            for score in self.models.observe(device, sample):
                if not score.starts:
                    continue
                hot_from = score.ts if hot_from is None else min(hot_from, score.ts)
                self.local.forwarder.heat(device, score.ts)
                self._pending_events.append(DeviceEvent(
                    device=device, ts=score.ts, kind="anomaly", severity=Severity.WARNING,
                    message=f"local model {score.model}: score {score.score:.3f} >= {score.threshold:.3f}",
                    data={"model": score.model, "score": round(score.score, 4), "threshold": score.threshold,
                          "where": "agent", "version": score.ref}))
        return hot_from

    def _on_decision(self, d: Decision) -> None:
        if d.verdict == "trip":
            task = asyncio.create_task(self._act(d), name=f"failsafe:{d.rule.name}")
            self._actions.add(task)
            task.add_done_callback(self._actions.discard)
            return
        kind, severity = (("failsafe_overridden", Severity.WARNING) if d.verdict == "overridden"
                          else ("failsafe_clear", Severity.INFO))
        log.warning("%s", d.message)
        self._pending_events.append(self._rule_event(d, kind, severity, d.message))

    async def _act(self, d: Decision) -> None:
        """Perform a trip's write on the machine; the outcome becomes an event either way."""
        action = d.rule.action
        reader = self.running.readers.get(action.source)
        try:
            if isinstance(action, ModbusWrite):
                if not isinstance(reader, ModbusReader):
                    raise ConnectionError(f"source {action.source!r} is not running")
                async with asyncio.timeout(ACTION_TIMEOUT_S):
                    await reader.write_register(action.address, action.value)
            else:
                if not isinstance(reader, OpcUaReader):
                    raise ConnectionError(f"source {action.source!r} is not running")
                async with asyncio.timeout(ACTION_TIMEOUT_S):
                    await reader.write_node(action.node, action.value)
        except Exception as exc:  # noqa: BLE001  # a failed write is reported and retried on the next sample
            self.local.failsafe.rearm(d.rule)
            message = f"{d.message}: the write FAILED ({type(exc).__name__}: {exc})"
            log.error("%s", message)
            self._pending_events.append(self._rule_event(d, "failsafe_failed", Severity.CRITICAL, message))
            return
        self.actions_done += 1
        log.warning("%s", d.message)
        self._pending_events.append(self._rule_event(d, "failsafe", Severity.CRITICAL, d.message))

    @staticmethod
    def _rule_event(d: Decision, kind: str, severity: Severity, message: str) -> DeviceEvent:
        return DeviceEvent(device=d.rule.device, ts=d.ts, kind=kind, severity=severity, message=message,
                           data={"rule": d.rule.name, "channel": d.rule.channel, "value": d.value,
                                 "override": d.rule.override})

    # -- health ---------------------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        js = await self.in_journal(lambda j: j.stats())
        now = int(time.time() * 1000)
        return {
            "accepted_samples": self.accepted,
            "unjournaled_samples": self.unjournaled_samples,
            "journal_failures": self.journal_failures,
            "journal_in_memory": self.journal_in_memory,
            "journal": {"messages": js.messages, "samples": js.samples, "bytes": js.bytes,
                        "dropped_messages": js.dropped_messages, "dropped_samples": js.dropped_samples,
                        "events_unsent": js.events_unsent, "dropped_events": js.dropped_events,
                        "oldest_unsent_age_s": None if js.oldest_ts is None else round((now - js.oldest_ts) / 1000, 1)},
            "uplink": {"connected": self.uplink.connected, "inflight": self.uplink.inflight(),
                       **vars(self.uplink.stats)},
            "sources": {name: vars(st) for name, st in self.sources.items()},
            "config": vars(self.outcome),
            "bytes_raw": self.local.forwarder.bytes_raw,
            "models": self.models.status(),
        }

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.agent.heartbeat_s)
            await self.send_heartbeat()

    async def send_heartbeat(self) -> bool:
        js = await self.in_journal(lambda j: j.stats())
        beat = build_heartbeat(self.cfg, js, self.uplink, self.sources, self.outcome, self._meter,
                               accepted=self.accepted, bytes_raw=self.local.forwarder.bytes_raw,
                               unjournaled=self.unjournaled_samples, models=self.models.health())
        return self.uplink.publish_health(encode(beat))

    # -- remote configuration -------------------------------------------------------------------
    def _on_config(self, payload: bytes) -> None:
        task = asyncio.create_task(self.apply_push(payload), name="config")
        self._actions.add(task)
        task.add_done_callback(self._actions.discard)

    def _on_command(self, device: str, payload: bytes) -> None:
        self.commands.submit(device, payload)

    def _on_model(self, payload: bytes) -> None:
        """A model push: verified and installed (or rolled back) at once, between two commits; its answer is an
        event journaled with the next commit."""
        self.models.apply_push(payload)
        self.uplink.wake()

    async def apply_push(self, payload: bytes) -> ConfigOutcome:
        """Validate, apply atomically, verify the new sources, keep or roll back; report either way."""
        async with self._config_lock:
            checked = check_push(payload, self.cfg, self.base)
            if checked is None:
                return self.outcome  # an old or repeated push (a retained message seen again)
            if isinstance(checked, ConfigOutcome):
                return self._report(checked)
            return self._report(await self._swap(checked))

    async def _swap(self, pushed: PushedConfig) -> ConfigOutcome:
        new_cfg = pushed.cfg
        try:
            new_local = _Local.build(new_cfg)
            installed = self.models.configure(new_cfg.models, strict=True)  # all or nothing
        except Exception as exc:  # noqa: BLE001  # e.g. a model file that is refused or does not load
            return ConfigOutcome(new_cfg.version, "rejected", f"{type(exc).__name__}: {exc}", self.cfg.version)
        old_cfg, old_run, old_local = self.cfg, self.running, self.local
        await self._stop_sources(old_run)
        await self.commit(flush=True)  # what the old sources read is accepted under the old policy
        self.cfg, self.local, self.running = new_cfg, new_local, self._start_sources(new_cfg)
        self.commands.configure(new_cfg.actuators)
        failed = await self._verify(self.running, new_cfg.agent.config_verify_s)
        if failed is None:
            pushed.persist(self.pushed_path)
            log.warning("configuration version %d applied", new_cfg.version)
            return ConfigOutcome(new_cfg.version, "applied", "", new_cfg.version)
        log.error("configuration version %d failed (%s): back to version %d", new_cfg.version, failed,
                  old_cfg.version)
        await self._stop_sources(self.running)
        self._buffer.clear()  # readings of the failed configuration's sources are not accepted
        self.models.undo(installed)  # the versions its model files installed go too
        self.models.configure(old_cfg.models, strict=False)
        self.cfg, self.local, self.running = old_cfg, old_local, self._start_sources(old_cfg)
        self.commands.configure(old_cfg.actuators)
        return ConfigOutcome(new_cfg.version, "rolled_back", failed, old_cfg.version)

    @staticmethod
    async def _verify(run: _Running, within_s: float) -> str | None:
        """None when every source has read successfully within ``within_s``; else what failed."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if all(st.polls > 0 for st in run.status.values()):
                return None
            await asyncio.sleep(0.05)
        bad = [st for st in run.status.values() if st.polls == 0]
        return "; ".join(f"source {st.name}: {st.error or 'no reading within the verification time'}" for st in bad)

    def _report(self, outcome: ConfigOutcome) -> ConfigOutcome:
        self.outcome = outcome
        self._pending_events.append(config_event(self.cfg.agent.gateway, outcome))
        return outcome

    # -- life -----------------------------------------------------------------------------------
    async def run(self, *, drain_s: float = 5.0) -> None:
        """Run until cancelled. On the way out: accept what the sources produced, then give the uplink up
        to ``drain_s`` to deliver what is pending (what it cannot stays in the journal for next time)."""
        self.running = self._start_sources(self.cfg)
        core = [asyncio.create_task(self._commit_loop(), name="journal"),
                asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
                asyncio.create_task(self.commands.run(), name="commands")]
        uplink = asyncio.create_task(self.uplink.run(), name="uplink")
        try:
            done, _ = await asyncio.wait([*core, uplink], return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a journal or uplink failure is fatal and says why; sources never end
        finally:
            try:
                await self._stop_sources(self.running)
                await cancel_all([*core, *self._actions])
                with contextlib.suppress(Exception):
                    await self.commit(flush=True)  # a clean stop accepts what the sources already produced
                if not uplink.done():
                    try:
                        await self._drain(drain_s)
                    except Exception:  # whatever is not delivered stays in the journal
                        log.exception("delivering the journal before stopping failed")
                await cancel_all([uplink])
                await self.in_journal(lambda j: j.close())
                self._executor.shutdown(wait=True)
            finally:  # a second cancellation during the clean-up must not keep the data directory locked
                self.uplink.close()
                self._lock.release()

    async def _drain(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        log.info("stopping: delivering up to %.0f s of pending messages", timeout_s)
        while time.monotonic() < deadline:
            js = await self.in_journal(lambda j: j.stats())
            if js.messages == 0 and js.events_unsent == 0 and self.uplink.inflight() == 0:
                return
            if not any(self.uplink.connected.values()):
                return  # nowhere to send: it waits in the journal
            self.uplink.wake()
            await asyncio.sleep(0.05)

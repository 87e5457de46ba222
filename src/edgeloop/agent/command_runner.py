"""Executes platform commands on the gateway: one at a time, at most once, each answered.

For each command from a device's ``cmd`` topic (the uplink hands the payload over from its network thread):

1. decode it (a payload that is not a valid command is answered ``refused``/``invalid`` when its id and device can
   be read, and logged either way);
2. the ledger (``journal.py``): an id seen before gets its stored answer again and nothing else; a command whose
   idempotency key another command already used is refused (``duplicate``);
3. the local safety envelope (``commands.check``) on the newest readings of the override and interlock channels;
4. the actuator's current value is read from the machine; ``commands.check_step`` limits the change;
5. the ledger records ``executing`` durably, then the value is written and read back: ``applied`` when the read-back
   is the value, else ``failed`` (with what was read);
6. the answer (a ``command`` event) is committed with the ledger's status in one transaction and leaves with the
   outbox, at least once.

A command the agent was executing when it stopped (``kill -9`` between steps 5 and 6) is answered ``failed`` at the
next start with the value read back then, and is never executed again. The queue is bounded (``MAX_QUEUED``): a
command beyond it is refused ``busy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from edgeloop.agent.commands import Reading, Refusal, check, check_step, read_back_ok, watched_channels
from edgeloop.agent.config import Actuator, ModbusTarget
from edgeloop.agent.journal import Journal
from edgeloop.agent.sources import ModbusReader, OpcUaReader, Reader
from edgeloop.messages import Command, DeviceEvent, Severity

__all__ = ["MAX_QUEUED", "CommandRunner"]

log = logging.getLogger(__name__)
MAX_QUEUED = 256
IO_TIMEOUT_S = 5.0
InJournal = Callable[[Callable[[Journal], Any]], Any]


class CommandRunner:
    """``actuators()`` and ``readers()`` follow the running configuration; ``in_journal`` runs a function on the
    journal's thread; ``wake`` tells the uplink an answer waits in the outbox."""

    def __init__(self, *, in_journal: InJournal, actuators: Callable[[], list[Actuator]],
                 readers: Callable[[], Mapping[str, Reader]], wake: Callable[[], None],
                 clock: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self.in_journal = in_journal
        self.actuators = actuators
        self.readers = readers
        self.wake = wake
        self.clock = clock
        self._queue: asyncio.Queue[Command] = asyncio.Queue(MAX_QUEUED)
        self._latest: dict[tuple[str, str], Reading] = {}
        self._watched = watched_channels(actuators())
        self.applied = 0
        self.refused = 0
        self.failed = 0

    # -- inputs ---------------------------------------------------------------------------------
    def configure(self, actuators: list[Actuator]) -> None:
        """A new configuration: its override and interlock channels are watched from now on."""
        self._watched = watched_channels(actuators)
        self._latest = {k: v for k, v in self._latest.items() if k in self._watched}

    def observe(self, device: str, ts: int, values: Mapping[str, float | None]) -> None:
        """A reading from a source (kept only for the channels the envelope rests on)."""
        if not self._watched:
            return
        for channel, value in values.items():
            key = (device, channel)
            if key in self._watched:
                self._latest[key] = Reading(value, ts)

    def reading(self, device: str, channel: str) -> Reading | None:
        """The newest reading of a channel the envelope rests on (None: none yet, or not watched)."""
        return self._latest.get((device, channel))

    def submit(self, device: str, payload: bytes) -> None:
        """A payload from ``device``'s ``cmd`` topic (on the event loop)."""
        try:
            cmd = msgspec.json.decode(payload, type=Command)
            if cmd.device != device:
                raise msgspec.ValidationError(f"the command names device {cmd.device!r}, its topic {device!r}")
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._refuse_unreadable(device, payload, str(exc))
            return
        try:
            self._queue.put_nowait(cmd)
        except asyncio.QueueFull:
            log.error("command %s refused: %d commands are waiting already", cmd.id, MAX_QUEUED)
            task = asyncio.get_running_loop().create_task(
                self._answer(cmd, "refused", Refusal("busy", f"{MAX_QUEUED} commands are waiting already")))
            task.add_done_callback(lambda t: t.exception())

    # -- the loop -------------------------------------------------------------------------------
    async def run(self) -> None:
        await self.recover()
        while True:
            cmd = await self._queue.get()
            try:
                await self.execute(cmd)
            except Exception:  # one command's trouble never stops the next
                log.exception("command %s could not be handled", cmd.id)

    async def recover(self) -> None:
        """Answer the commands a stop interrupted mid-write, never executing them again: ``applied`` if the
        machine reads the value asked for now, else ``failed``, with the value read back."""
        for cmd in await self.in_journal(lambda j: j.commands_interrupted()):
            act = self._actuator(cmd.device, cmd.action)
            read_back = await self._read(act) if act is not None else None
            if act is not None and read_back_ok(act, cmd.value, read_back):
                await self._answer(cmd, "applied", None, read_back=read_back,
                                   note="the agent stopped during the write; the machine reads the value asked for")
                continue
            got = "nothing" if read_back is None else f"{read_back:g}"
            await self._answer(cmd, "failed", Refusal("invalid", f"the agent stopped during the write; {cmd.action} "
                                                                 f"reads {got} now, not {cmd.value:g}"),
                               read_back=read_back)

    async def execute(self, cmd: Command) -> str:
        """Handle one command; returns its status (``applied``, ``refused``, ``failed``, or ``repeat``)."""
        status, answer, other = await self.in_journal(lambda j: j.command_seen(cmd))
        if status is not None:
            log.warning("command %s delivered again (it is %s): answered as before, not executed", cmd.id, status)
            if answer is not None:  # a redelivery: the same answer again, nothing done
                await self.in_journal(lambda j: j.resend_answer(cmd.device, answer))
                self.wake()
            return "repeat"
        if other is not None:
            return await self._answer(cmd, "refused", Refusal("duplicate", f"idempotency key {cmd.key!r} was "
                                                                           f"used by command {other}"))
        act = self._actuator(cmd.device, cmd.action)
        applied_seq, last_change = await self.in_journal(lambda j: j.command_history(cmd.device, cmd.action))
        refusal = check(cmd, act, now_ms=self.clock(), applied_seq=applied_seq, last_change_ms=last_change,
                        reading=self.reading)
        if refusal is not None:
            return await self._answer(cmd, "refused", refusal)
        assert act is not None  # check() refuses an unknown action
        try:
            before = await self._read(act, strict=True)
        except Exception as exc:  # noqa: BLE001  # the machine cannot be read: nothing is written
            return await self._answer(cmd, "refused", Refusal("stale_reading", f"{act.name} cannot be read: "
                                                                               f"{_text(exc)}"))
        refusal = check_step(act, before, cmd.value)
        if refusal is not None:
            return await self._answer(cmd, "refused", refusal, before=before)
        now = self.clock()
        await self.in_journal(lambda j: j.command_start(cmd, now))
        try:
            await self._write(act, cmd.value)
        except Exception as exc:  # noqa: BLE001  # a failed write is answered, with what the machine reads now
            after = await self._read(act)
            return await self._answer(cmd, "failed", Refusal("invalid", f"the write failed: {_text(exc)}"),
                                      before=before, read_back=after)
        after = await self._read(act)
        if read_back_ok(act, cmd.value, after):
            return await self._answer(cmd, "applied", None, before=before, read_back=after)
        got = "nothing" if after is None else f"{after:g}"
        return await self._answer(cmd, "failed", Refusal("invalid", f"read back {got}, not {cmd.value:g}"),
                                  before=before, read_back=after)

    # -- inside ---------------------------------------------------------------------------------
    def _actuator(self, device: str, action: str) -> Actuator | None:
        return next((a for a in self.actuators() if a.name == action and a.device == device), None)

    async def _read(self, act: Actuator, *, strict: bool = False) -> float | None:
        """The actuator's value on the machine (None if it cannot be read, unless ``strict``: then it raises)."""
        try:
            reader = self._reader(act)
            async with asyncio.timeout(IO_TIMEOUT_S):
                if isinstance(act.write, ModbusTarget):
                    assert isinstance(reader, ModbusReader)
                    return await reader.read_value(act.write)
                assert isinstance(reader, OpcUaReader)
                return await reader.read_node(act.write.node)
        except Exception:
            if strict:
                raise
            return None

    async def _write(self, act: Actuator, value: float) -> None:
        reader = self._reader(act)
        async with asyncio.timeout(IO_TIMEOUT_S):
            if isinstance(act.write, ModbusTarget):
                assert isinstance(reader, ModbusReader)
                await reader.write_value(act.write, value)
            else:
                assert isinstance(reader, OpcUaReader)
                await reader.write_node(act.write.node, value)

    def _reader(self, act: Actuator) -> Reader:
        reader = self.readers().get(act.write.source)
        wanted = ModbusReader if isinstance(act.write, ModbusTarget) else OpcUaReader
        if not isinstance(reader, wanted):
            raise ConnectionError(f"source {act.write.source!r} is not running")
        return reader

    async def _answer(self, cmd: Command, status: str, why: Refusal | None, *, before: float | None = None,
                      read_back: float | None = None, known_value: bool = True, note: str = "") -> str:
        now = self.clock()
        reason = note if why is None else why.reason
        code = "" if why is None else why.code
        if status == "applied":
            self.applied += 1
            message = f"{cmd.action} set to {read_back:g} (command {cmd.id})"
            log.warning("%s", message)
        else:
            self.refused += status == "refused"
            self.failed += status == "failed"
            message = f"command {cmd.id} ({cmd.action} -> {cmd.value:g}) {status}: {reason}" if known_value else \
                f"command {cmd.id} ({cmd.action}) {status}: {reason}"
            log.error("%s", message)
        event = DeviceEvent(
            device=cmd.device, ts=now, kind="command",
            severity=Severity.INFO if status == "applied" else Severity.WARNING, message=message[:500],
            data={"id": cmd.id, "key": cmd.key, "seq": cmd.seq, "action": cmd.action, "status": status,
                  "code": code, "reason": reason[:300], "value": cmd.value if known_value else None,
                  "before": before, "read_back": read_back, "trace": cmd.trace, "decision": cmd.decision})
        await self.in_journal(lambda j: j.command_answer(cmd, status, event, now))
        self.wake()
        return status

    def _refuse_unreadable(self, device: str, payload: bytes, error: str) -> None:
        """A payload that is not a valid command: answered ``refused`` (on the device of its topic) if it has an
        id, logged either way."""
        log.error("a command payload for %s was refused: %s", device, error[:300])
        with contextlib.suppress(Exception):
            raw = msgspec.json.decode(payload)
            if isinstance(raw, dict) and isinstance(raw.get("id"), str) and raw["id"]:
                now = self.clock()
                cmd = Command(id=raw["id"][:64], key=f"invalid:{raw['id'][:64]}", device=device, seq=1, ts=now,
                              expires=now, action="invalid", value=0.0, trace="0" * 32)
                task = asyncio.get_running_loop().create_task(
                    self._answer(cmd, "refused", Refusal("invalid", f"not a valid command: {error[:250]}"),
                                 known_value=False))
                task.add_done_callback(lambda t: t.exception())


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]

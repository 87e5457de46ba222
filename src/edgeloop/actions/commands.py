"""The platform's side of commands to machines: issue, deliver until answered or expired, record the answer.

``issue`` stores a command (its device's next sequence number, an idempotency key: issuing the same key again
returns the command already stored) and publishes it QoS 1 on the device's ``cmd`` topic. The broker's ACL lets
only the platform write there and only that device read it. Delivery does not rely on the broker keeping anything:
every ``RESEND_S`` an unanswered command is published again while it lives (each device's agent acts on an id
once and answers a repeat with its first answer), so a gateway that was offline gets it when it is back, and never
after its expiry (the agent checks that too, on its own clock). The gateway's answer (a ``command`` event) is
recorded by ingest in the same batch that stores the event (``ingest.gateways.answer_of_event``); the first
answer is final. ``wait`` lets a caller (the actions engine, a test) wait for the answer.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence

from edgeloop.clock import Clock
from edgeloop.errors import BrokerError, ConfigError, NotFoundError
from edgeloop.messages import MAX_COMMAND_TTL_MS, Command, TopicKind, encode, topic
from edgeloop.registry import Registry
from edgeloop.store.actions import CommandRecord
from edgeloop.store.base import AuditRecord, Store

__all__ = ["RESEND_S", "CommandService"]

log = logging.getLogger(__name__)
RESEND_S = 5.0
Publish = Callable[[str, bytes], Awaitable[None]]


class CommandService:
    def __init__(self, *, store: Store, registry: Registry, publish: Publish, clock: Clock,
                 online: Callable[[str], bool | None] = lambda _device: None,
                 audit: Callable[[AuditRecord], Awaitable[None]] | None = None) -> None:
        """``online(device)``: whether the device is connected (None: not known); an offline device is not sent
        to (it gets the command on the next resend after it is back)."""
        self.store = store
        self.registry = registry
        self.publish = publish
        self.clock = clock
        self.online = online
        self.audit = audit or store.audit
        self._waiters: dict[str, list[asyncio.Future[CommandRecord]]] = {}

    async def issue(self, *, device: str, action: str, value: float, key: str, ttl_s: float, issued_by: str,
                    decision: str = "", trace: str | None = None) -> CommandRecord:
        """Store and send a command; the one already stored under ``key`` if there is one."""
        dev = self.registry.devices.get(device)
        if dev is None:
            raise NotFoundError("device", device)
        if not 0 < ttl_s * 1000 <= MAX_COMMAND_TTL_MS:
            raise ConfigError(f"a command lives more than 0 s and at most {MAX_COMMAND_TTL_MS // 1000} s, not "
                              f"{ttl_s:g}")
        now = self.clock.now_ms()
        cid = f"cmd-{secrets.token_hex(8)}"

        def build(seq: int) -> CommandRecord:
            return CommandRecord(id=cid, tenant=dev.tenant, device=device, action=action, value=float(value),
                                 key=key, seq=seq, ts=now, expires=now + int(ttl_s * 1000),
                                 trace=trace or secrets.token_hex(16), issued_by=issued_by, decision=decision,
                                 status_ms=now)

        cmd, new = await self.store.add_command(build)
        if not new:
            return cmd
        await self.audit(AuditRecord(ts_ms=now, actor=issued_by, action="command.issue", target=device, outcome="ok",
                                     detail=f"{cmd.id} seq {cmd.seq}: {action} -> {value:g}, expires in {ttl_s:g} s; "
                                            f"key {key}; trace {cmd.trace}", source="actions"))
        await self._send(cmd)
        return await self.store.get_command(cmd.id) or cmd

    async def tick(self) -> None:
        """Expire what ran out of time; publish again what is unanswered and due."""
        now = self.clock.now_ms()
        for cid in await self.store.expire_commands(now):
            log.warning("command %s expired without an answer", cid)
            await self._wake(cid)
        for cmd in await self.store.open_commands():
            due = cmd.sent_ms is None or now - cmd.sent_ms >= RESEND_S * 1000
            if due and self.online(cmd.device) is not False:
                await self._send(cmd)

    async def run(self, every_s: float = 1.0) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # the loop goes on; the store may be back next time
                log.exception("the command delivery tick failed")
            await asyncio.sleep(every_s)

    async def answered(self, ids: Sequence[str]) -> None:
        """Ingest recorded answers to these commands."""
        for cid in ids:
            await self._wake(cid)

    async def wait(self, command_id: str, timeout_s: float) -> CommandRecord:
        """The command once it is answered or expired (``TimeoutError`` if neither happens in time)."""
        found = await self.store.get_command(command_id)
        if found is None:
            raise NotFoundError("command", command_id)
        if found.status not in ("pending", "sent"):
            return found
        future: asyncio.Future[CommandRecord] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(command_id, []).append(future)
        try:
            found = await self.store.get_command(command_id)  # answered meanwhile
            if found is not None and found.status not in ("pending", "sent"):
                return found
            return await asyncio.wait_for(future, timeout_s)
        finally:
            waiting = self._waiters.get(command_id, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._waiters.pop(command_id, None)

    async def _send(self, cmd: CommandRecord) -> None:
        message = Command(id=cmd.id, key=cmd.key, device=cmd.device, seq=cmd.seq, ts=cmd.ts, expires=cmd.expires,
                          action=cmd.action, value=cmd.value, trace=cmd.trace, issued_by=cmd.issued_by[:200],
                          decision=cmd.decision)
        try:
            await self.publish(topic(cmd.tenant, cmd.device, TopicKind.CMD), encode(message))
        except BrokerError as exc:
            log.warning("command %s not published (%s): sent again in %g s", cmd.id, exc, RESEND_S)
            return
        await self.store.mark_command_sent(cmd.id, self.clock.now_ms())

    async def _wake(self, command_id: str) -> None:
        waiting = self._waiters.pop(command_id, [])
        if not waiting:
            return
        found = await self.store.get_command(command_id)
        for future in waiting:
            if found is not None and not future.done():
                future.set_result(found)

"""The embedded MQTT broker (amqtt), run inside the platform process.

Devices connect to it exactly as they would to Mosquitto. Its sessions live in
memory: a restart of the embedded platform forgets messages the broker had
accepted but the platform had not yet stored. Production uses Mosquitto with
persistence (see ``edgeloop.broker.mosquitto``).
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any, Self

from amqtt.broker import Broker

from edgeloop.errors import BrokerError

log = logging.getLogger(__name__)


class EmbeddedBroker:
    """``async with EmbeddedBroker(port=1883): ...`` serves MQTT 3.1.1 on ``host:port``."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 1883, max_connections: int = 10_000) -> None:
        self.host = host
        self.port = port
        self._config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": max_connections}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._broker: Broker | None = None

    async def __aenter__(self) -> Self:
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(max(logging.getLogger(name).level, logging.WARNING))
        self._broker = Broker(self._config)
        broker_log = logging.getLogger("amqtt.broker")
        level = broker_log.level
        broker_log.setLevel(logging.CRITICAL)  # a failed start is reported once, below, without amqtt's traceback
        try:
            await self._broker.start()
        except Exception as exc:
            raise BrokerError(f"embedded MQTT broker cannot listen on {self.host}:{self.port}: {exc}") from exc
        finally:
            broker_log.setLevel(level)
        log.info("embedded MQTT broker listening on %s:%d", self.host, self.port)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None

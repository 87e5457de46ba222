"""The dashboard's "now" (``now_ms`` of ``/api/v1/stats``): the newest sample time, never ahead of the platform's
clock, so one device whose clock runs ahead cannot move every tenant's dashboard into the future."""

from __future__ import annotations

from pathlib import Path

import httpx

from edgeloop.api import create_app
from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import ChannelSpec, DeviceProfile
from edgeloop.clock import ManualClock
from edgeloop.messages import Sample, Telemetry, TopicKind, encode, topic
from tests.support import free_port, register_device
from tests.test_api import publish_all

T0 = 1_795_000_000_000


async def test_a_sample_from_the_future_does_not_move_the_dashboard_clock(tmp_path: Path) -> None:
    clock = ManualClock(start_ms=T0)
    cfg = PlatformConfig(data_dir=tmp_path, mqtt_port=free_port(), http_port=None)
    async with Platform(cfg, clock=clock) as p:
        await register_device(p, tenant="acme", asset="pump-1", device="pump-1-dev",
                              profile=DeviceProfile(name="pump", channels=[ChannelSpec(name="temp")]))
        transport = httpx.ASGITransport(app=create_app(p.services))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

            async def publish(seq: int, ts: int) -> int:
                msg = Telemetry("pump-1-dev", seq, [Sample(ts=ts, values={"temp": 20.0})])
                await publish_all(p, [(topic("acme", "pump-1-dev", TopicKind.TELEMETRY), encode(msg))])
                assert await p.idle(30)
                now: int = (await client.get("/api/v1/stats")).json()["now_ms"]
                return now

            assert await publish(1, T0 - 60_000) == T0 - 60_000  # replayed history: "now" is the data's time
            ahead = T0 + 4 * 60_000  # within the clock skew ingest accepts, so it is stored
            assert await publish(2, ahead) == T0
            assert p.pipeline.stats.stored_messages == 2
            clock.advance(10 * 60_000)
            assert (await client.get("/api/v1/stats")).json()["now_ms"] == ahead  # the data is current again

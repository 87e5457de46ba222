"""Bad input through the running pipeline: malformed payloads between good ones, over a real MQTT broker.

Every bad payload must be dead-lettered with a reason, every good one stored exactly once,
and the pipeline must keep running. The platform runs in a background thread with its own
event loop (embedded broker), and hypothesis drives a real paho client against it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import Asset, ChannelSpec, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.messages import TopicKind, topic
from tests.support import free_port

T = TypeVar("T")
TENANT, DEVICE = "acme", "pump-9"
TOPIC = topic(TENANT, DEVICE, TopicKind.TELEMETRY)
CHANNELS = ("flow", "temp")


class Running:
    """A Platform on its own thread and event loop, callable from synchronous test code."""

    def __init__(self, data_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = free_port()
        self.platform = Platform(PlatformConfig(data_dir=data_dir, mqtt_port=self.port, http_port=None))
        self.call(self.platform.__aenter__())
        reg = self.platform.registry
        for coro in (reg.put_tenant(Tenant(id=TENANT)), reg.put_site(Site(id="s", tenant=TENANT)),
                     reg.put_line(Line(id="l", site="s")), reg.put_asset(Asset(id="a", line="l")),
                     reg.put_profile(DeviceProfile(name="p", channels=[ChannelSpec(name=c) for c in CHANNELS])),
                     reg.put_device(Device(id=DEVICE, tenant=TENANT, asset="a", profile="p"))):
            self.call(coro)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.call(self.platform.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    r = Running(tmp_path_factory.mktemp("bad-input"))
    try:
        yield r
    finally:
        r.close()


@pytest.fixture(scope="module")
def client(running: Running) -> Iterator[mqtt.Client]:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fuzzer")
    c.connect("127.0.0.1", running.port)
    c.loop_start()
    try:
        yield c
    finally:
        c.disconnect()
        c.loop_stop()


_seq = itertools.count(1)


def good_payload() -> bytes:
    seq = next(_seq)
    now = int(time.time() * 1000)
    samples = [{"ts": now - 1000 + k, "values": {"flow": float(seq), "temp": None if k else 20.5}} for k in range(3)]
    return json.dumps({"v": 1, "device": DEVICE, "seq": seq, "samples": samples}).encode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _mutated(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


_now = int(time.time() * 1000)
_base = {"v": 1, "device": DEVICE, "seq": 1, "samples": [{"ts": _now, "values": {"flow": 1.0}}]}

bad_payloads = st.one_of(
    st.binary(max_size=300).filter(lambda b: not b.strip().startswith(b"{")),  # not JSON, or not an object
    json_values.map(lambda v: json.dumps(v).encode()).filter(lambda b: not b.startswith(b"{")),
    st.dictionaries(st.sampled_from(["v", "device", "seq", "samples", "x"]), json_values, max_size=5).map(_mutated),
    st.sampled_from([
        _mutated({**_base, "seq": -1}),
        _mutated({**_base, "seq": "7"}),
        _mutated({**_base, "device": "someone-else"}),
        _mutated({**_base, "v": 2}),
        _mutated({**_base, "samples": []}),
        _mutated({**_base, "samples": [{"ts": _now, "values": {"pressure": 1.0}}]}),
        _mutated({**_base, "samples": [{"ts": _now + 86_400_000, "values": {"flow": 1.0}}]}),
        _mutated({**_base, "samples": [{"ts": 1000, "values": {"flow": 1.0}}]}),
        _mutated({**_base, "samples": [{"ts": _now, "values": {"flow": "high"}}]}),
        b'{"v":1,"device":"pump-9","seq":1,"samples":[{"ts":1,"values":{"flow":1e999}}]}',
        b'{"v":1,"device":"pump-9","seq":1,"samples":[{"ts":1,"values":{"flow":NaN}}]}',
        b"[" * 5000 + b"]" * 5000,
        b"x" * 300_000,  # oversized
    ]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(st.one_of(st.just(None), bad_payloads), min_size=1, max_size=12))
def test_bad_payloads_between_good_ones(running: Running, client: mqtt.Client, plan: list[bytes | None]) -> None:
    store, stats = running.platform.store, running.platform.pipeline.stats
    messages_before, _ = running.call(store.telemetry_counts(DEVICE))
    letters_before = running.call(store.dead_letter_counts()).get(DEVICE, 0)
    handled_before = running.platform.pipeline.handled()
    good = 0
    infos = []
    for item in plan:  # None stands for "a good message here"
        payload = good_payload() if item is None else item
        good += item is None
        infos.append(client.publish(TOPIC, payload, qos=1))
    for info in infos:
        info.wait_for_publish(10)
    running.call(asyncio.wait_for(running.platform.pipeline.wait_handled(handled_before + len(plan)), 30))

    messages_after, _ = running.call(store.telemetry_counts(DEVICE))
    assert messages_after - messages_before == good, "every good message is stored, once"
    bad = len(plan) - good
    letters = running.call(store.list_dead_letters(device=DEVICE, limit=max(bad, 1)))
    assert running.call(store.dead_letter_counts()).get(DEVICE, 0) - letters_before == bad
    for letter in letters[:bad]:
        assert letter.code and letter.detail, "a dead letter always says why"
        assert letter.code != "internal_error", f"a payload reached an unhandled path: {letter.detail}"
        assert len(letter.raw) <= 4096
    assert running.platform.alive, "the pipeline kept running"
    assert stats.dead_letters >= bad

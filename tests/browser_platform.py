"""What the dashboard's browser tests of incidents and KPIs share: a real platform on a real HTTP port, run on its
own event loop in a thread with a ``ManualClock`` (the test decides when time passes), pumps that publish over
MQTT as devices do, the API client the tests check the page against, and Debian's Chromium.

The platform has an embedded MQTT broker, SQLite, the HTTP API and the dashboard, authentication on, and a rule
document (``RULES``: ``hot`` when ``temp`` is over 80) uploaded through ``PUT /api/v1/alert-rules``.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Coroutine, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from edgeloop.app import Platform, PlatformConfig
from edgeloop.assets import Asset, ChannelSpec, Device, DeviceProfile, Line, Site, Tenant
from edgeloop.clock import ManualClock
from edgeloop.messages import Sample, Telemetry, TopicKind, encode, topic
from tests.support import HOT_RULES, free_port

T = TypeVar("T")
# the browser set-up of tests/test_dashboard.py
CHROMIUM = os.environ.get("EDGELOOP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
T0 = 1_795_000_000_000
TENANT = "acme"
RULES = HOT_RULES
PHONE: ViewportSize = {"width": 390, "height": 844}
UI_TIMEOUT_MS = 15_000  # the pages poll every few seconds
EXPECT_DEFAULT_MS = 5_000  # Playwright's, restored for other modules


@dataclass(frozen=True)
class Pump:
    device: str
    asset: str
    name: str
    line: str


class ThreadedPlatform:
    """A platform on a real HTTP port, on its own event loop in a thread; the test drives its clock and
    publishes its pumps' telemetry."""

    def __init__(self, data_dir: Path, *, pumps: Sequence[Pump], users: dict[str, tuple[str, str]],
                 admin_password: str) -> None:
        self.clock = ManualClock(start_ms=T0)
        self.config = PlatformConfig(data_dir=data_dir, mqtt_port=free_port(), http_port=free_port(), auth=True,
                                     admin_password=admin_password)
        self.base_url = f"http://127.0.0.1:{self.config.http_port}"
        self.pumps, self.users, self.admin_password = list(pumps), users, admin_password
        self.messages = 0
        self.seq: dict[str, int] = {}
        self.tokens: dict[str, str] = {}
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._platform: Platform | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="browser-test-platform")

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with Platform(self.config, clock=self.clock) as p:
                self._platform = p
                reg = p.registry
                await reg.put_profile(DeviceProfile(name="pump", channels=[ChannelSpec(name="temp", unit="degC")]))
                await reg.put_tenant(Tenant(id=TENANT))
                await reg.put_site(Site(id="plant-1", tenant=TENANT))
                for line in sorted({pump.line for pump in self.pumps}):
                    await reg.put_line(Line(id=line, site="plant-1"))
                for pump in self.pumps:
                    await reg.put_asset(Asset(id=pump.asset, line=pump.line, name=pump.name, criticality=4))
                    await reg.put_device(Device(id=pump.device, tenant=TENANT, asset=pump.asset, profile="pump"))
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._ready.set()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(60), "the platform did not start within 60 s"
        if self._error is not None:
            raise AssertionError(f"the platform failed to start: {self._error!r}")
        self.tokens["admin"] = self.login("admin", self.admin_password)
        for name, (role, password) in self.users.items():
            self.call("POST", "/users", body={"username": name, "password": password, "role": role, "tenant": TENANT},
                      expect_status=201)
            self.tokens[name] = self.login(name, password)
        req = urllib.request.Request(f"{self.base_url}/api/v1/alert-rules", data=RULES.encode(), method="PUT",
                                     headers={"Content-Type": "application/yaml",
                                              "Authorization": f"Bearer {self.tokens['admin']}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.load(resp)["version"] == 1

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the platform did not stop within 60 s"

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30) -> T:
        """Run ``coro`` on the platform's event loop and return its result."""
        assert self._loop is not None
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout_s)

    @property
    def platform(self) -> Platform:
        assert self._platform is not None
        return self._platform

    # -- HTTP (what the tests check the page against) --------------------------------------------------------

    def login(self, username: str, password: str) -> str:
        data = urllib.parse.urlencode({"grant_type": "password", "username": username, "password": password})
        with urllib.request.urlopen(f"{self.base_url}/api/v1/auth/token", data=data.encode(), timeout=10) as resp:
            return str(json.load(resp)["access_token"])

    def call(self, method: str, path: str, *, who: str = "admin", body: Any = None, expect_status: int = 200) -> Any:
        headers = {"Accept": "application/json", "Authorization": f"Bearer {self.tokens[who]}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(f"{self.base_url}/api/v1{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        assert status == expect_status, (method, path, status, raw[:500])
        return json.loads(raw) if raw else None

    # -- devices and the passing of time ---------------------------------------------------------------------

    def telemetry(self, device: str, *temps: float) -> None:
        """One message from ``device`` over MQTT: ``temps`` one second apart, the last one now; returns once it
        was stored and evaluated."""
        now = self.clock.now_ms()
        self.seq[device] = self.seq.get(device, 0) + 1
        self.messages += 1
        samples = [Sample(ts=now - (len(temps) - 1 - k) * 1000, values={"temp": v}) for k, v in enumerate(temps)]
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{device}-{self.seq[device]}",
                             clean_session=True)
        client.connect("127.0.0.1", self.config.mqtt_port)
        client.loop_start()
        try:
            client.publish(topic(TENANT, device, TopicKind.TELEMETRY),
                           encode(Telemetry(device, self.seq[device], samples)), qos=1).wait_for_publish(10)
        finally:
            client.disconnect()
            client.loop_stop()
        self.run(self._scored(self.messages))

    async def _scored(self, messages: int) -> None:
        """Wait (wall time) until ``messages`` messages went through scoring, alerting included. (``idle()``
        alone can answer before the broker has handed the message to ingest.)"""
        p = self.platform
        deadline = time.monotonic() + 20
        while p.scoring.stats.scored_messages + p.scoring.stats.late_messages < messages:
            assert time.monotonic() < deadline, f"{messages} messages not scored within 20 s: {p.scoring.stats}"
            await asyncio.sleep(0.02)
        assert await p.idle(20), "the platform did not finish scoring"

    def advance(self, ms: int) -> None:
        """Let ``ms`` of platform time pass (the alert service's timers included)."""
        self.advance_to(self.clock.now_ms() + ms)

    def advance_to(self, ms: int) -> None:
        """Move platform time to ``ms`` (the alert service's timers included)."""

        async def go() -> None:
            self.clock.advance(ms - self.clock.now_ms())
            await self.platform.alerts.tick()

        assert ms >= self.clock.now_ms()
        self.run(go())


def running(data_dir: Path, **kw: Any) -> Iterator[ThreadedPlatform]:
    """A started platform (for a fixture), stopped afterwards."""
    p = ThreadedPlatform(data_dir, **kw)
    try:
        p.start()
        yield p
    finally:
        p.stop()


def chromium() -> Iterator[Browser]:
    """Headless Chromium (for a module-scoped fixture); a missing browser fails, it never skips."""
    assert Path(CHROMIUM).exists(), f"chromium not installed at {CHROMIUM}"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def watched_page(browser: Browser, **context: Any) -> Iterator[Page]:
    """A page in a new browser context (``context``: viewport, touch, locale ...) with the UI timeouts; a
    JavaScript error or a Content-Security-Policy violation on the page fails the test (for a fixture)."""
    ctx = browser.new_context(**context)
    ctx.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    try:
        yield page
        assert not errors, f"JavaScript errors on the page: {errors}"
    finally:
        expect.set_options(timeout=EXPECT_DEFAULT_MS)
        ctx.close()

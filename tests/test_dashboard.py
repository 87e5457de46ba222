"""The operator dashboard, as a user sees it: headless Chromium against a live platform.

Uses the ``live_platform`` fixture from tests/conftest.py: an object with
``base_url`` ("http://127.0.0.1:PORT") of a running embedded platform (API serving
the dashboard at ``/`` and its assets at ``/static/``) with a simulated fleet in which
at least one faulty device raises an alert, and ``wait_for_alert(timeout_s)`` which
returns once at least one *open* alert exists (and raises if none does in time).

The browser is Debian's chromium (``EDGELOOP_CHROMIUM`` overrides the path), which the
test command installs; a missing browser fails these tests, it never skips them.
Nothing here downloads anything.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("EDGELOOP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
OPERATOR = "pytest-operator"
UI_TIMEOUT_MS = 20_000  # the dashboard polls every 2-5 s; leave room for a few rounds
ASSET_STATUSES = {"ok", "alert", "offline"}


# ---------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the whole module."""
    assert Path(CHROMIUM).exists(), f"chromium not installed at {CHROMIUM}: run scripts/bootstrap.sh dev"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Dash:
    """A fresh browser context on the dashboard, plus a JSON client for the same API."""

    page: Page
    base_url: str
    errors: list[str] = field(default_factory=list)

    def open(self, hash_route: str = "#/") -> None:
        self.page.goto(f"{self.base_url}/{hash_route}")

    def api(self, path: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.base_url}/api/v1{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def wait_until(self, check: Callable[[], bool], timeout_ms: int = UI_TIMEOUT_MS, what: str = "") -> None:
        """Poll ``check`` (which may read both the page and the API) until it is true."""
        step = 250
        for _ in range(timeout_ms // step):
            if check():
                return
            self.page.wait_for_timeout(step)
        assert check(), f"timed out waiting for {what or check}"

    def assert_no_page_errors(self) -> None:
        assert not self.errors, f"JavaScript errors on the page: {self.errors}"


def _new_dash(browser: Browser, base_url: str, width: int, height: int) -> tuple[Dash, Callable[[], None]]:
    ctx = browser.new_context(viewport={"width": width, "height": height}, locale="en-US")
    ctx.set_default_timeout(UI_TIMEOUT_MS)
    page = ctx.new_page()
    dash = Dash(page=page, base_url=base_url.rstrip("/"))
    page.on("pageerror", lambda exc: dash.errors.append(str(exc)))
    return dash, ctx.close


@pytest.fixture
def dash(browser: Browser, live_platform: Any) -> Iterator[Dash]:
    """Desktop-sized page (1280 wide), empty localStorage (no operator name stored yet)."""
    d, close = _new_dash(browser, live_platform.base_url, 1280, 900)
    try:
        yield d
    finally:
        close()


@pytest.fixture
def phone(browser: Browser, live_platform: Any) -> Iterator[Dash]:
    """Phone-sized page (390 wide)."""
    d, close = _new_dash(browser, live_platform.base_url, 390, 844)
    try:
        yield d
    finally:
        close()


# ---------------------------------------------------------------------------
# helpers


def page_asset_statuses(page: Page) -> dict[str, str]:
    result: dict[str, str] = page.eval_on_selector_all(
        "[data-testid=asset-row]",
        """rows => Object.fromEntries(rows.map(r => [
            r.dataset.assetId,
            (r.querySelector('[data-testid=asset-status]') || {dataset: {}}).dataset.status || ''
        ]))""",
    )
    return result


def chart_points(page: Page) -> list[int]:
    values: list[str | None] = page.eval_on_selector_all(
        "[data-testid=chart]", "els => els.map(e => e.dataset.points ?? null)"
    )
    return [int(v) for v in values if v is not None]


def no_horizontal_overflow(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def pick_asset_with_data(dash: Dash) -> str:
    """An asset whose device has reported: prefer one with an alert (the faulty device)."""
    assets = dash.api("/assets")
    live = [a for a in assets if a["status"] != "offline" and a["last_seen_ms"] is not None]
    assert live, f"no asset has reported telemetry yet: {assets}"
    live.sort(key=lambda a: (a["status"] != "alert", a["id"]))
    return str(live[0]["id"])


# ---------------------------------------------------------------------------
# tests


def test_fleet_lists_assets_with_status_and_kpis(dash: Dash, live_platform: Any) -> None:
    live_platform.wait_for_alert(60)
    dash.open("#/")
    rows = dash.page.locator("[data-testid=asset-row]")
    expect(rows.first).to_be_visible()

    api_assets = dash.api("/assets")
    assert api_assets, "the platform reports no assets"
    expect(rows).to_have_count(len(api_assets))

    # The page shows exactly the API's assets, each with a valid status badge, and the
    # statuses agree with the API (re-read both: statuses may change while we look).
    def statuses_agree() -> bool:
        shown = page_asset_statuses(dash.page)
        truth = {a["id"]: a["status"] for a in dash.api("/assets")}
        return shown == truth

    dash.wait_until(statuses_agree, what="fleet statuses on the page to match GET /api/v1/assets")
    shown = page_asset_statuses(dash.page)
    assert set(shown.values()) <= ASSET_STATUSES
    assert "alert" in shown.values(), "the faulty device's asset should be shown in alert"
    alert_row = dash.page.locator("[data-testid=asset-row][data-status=alert]").first
    expect(alert_row.locator("[data-testid=asset-status]")).to_have_text("alert", ignore_case=True)

    # header KPIs come from /stats
    stats = dash.api("/stats")
    expect(dash.page.locator("[data-testid=kpi-devices] [data-value]")).to_contain_text(f"/ {stats['devices_total']}")
    expect(dash.page.locator("[data-testid=kpi-alerts] [data-value]")).not_to_have_text("—")
    expect(dash.page.locator("[data-testid=kpi-rate] [data-value]")).not_to_have_text("—")
    expect(dash.page.locator("[data-testid=kpi-dead-letters] [data-value]")).to_have_text(
        f"{stats['ingest']['dead_letters']:,}"
    )
    expect(dash.page.locator("[data-testid=api-banner]")).to_be_hidden()
    words = dash.page.locator("body").inner_text().split()
    assert "null" not in words and "undefined" not in words, "a missing value leaked into the page as text"
    dash.assert_no_page_errors()


def test_asset_page_shows_live_charts(dash: Dash) -> None:
    asset_id = pick_asset_with_data(dash)
    dash.open("#/")
    dash.page.locator(f"[data-testid=asset-row][data-asset-id='{asset_id}']").click()
    expect(dash.page).to_have_url(f"{dash.base_url}/#/asset/{asset_id}")

    charts = dash.page.locator("[data-testid=chart]")
    expect(charts.first).to_be_visible()
    dash.wait_until(lambda: any(n > 0 for n in chart_points(dash.page)), what="a chart with data-points > 0")
    assert charts.locator("canvas").count() >= 1, "uPlot did not draw a canvas"

    # one chart per channel group: every channel of the device is plotted somewhere
    device_id = next(a for a in dash.api("/assets") if a["id"] == asset_id)["devices"][0]
    channels = {c["name"] for c in dash.api(f"/devices/{device_id}")["channels"]}
    plotted: list[str] = charts.evaluate_all("els => els.flatMap(e => e.dataset.channels.split(','))")
    assert channels <= set(plotted), f"channels not charted: {channels - set(plotted)}"

    # the range selector re-queries a longer window and still plots data
    dash.page.get_by_role("button", name="6 h").click()
    expect(dash.page).to_have_url(f"{dash.base_url}/#/asset/{asset_id}?range=6h")
    dash.wait_until(lambda: any(n > 0 for n in chart_points(dash.page)), what="6 h chart with data")
    dash.assert_no_page_errors()


def test_alert_status_filter(dash: Dash, live_platform: Any) -> None:
    live_platform.wait_for_alert(60)
    dash.open("#/alerts?status=open")
    rows = dash.page.locator("[data-testid=alert-row]")
    expect(rows.first).to_be_visible()
    statuses: list[str] = rows.evaluate_all("els => els.map(e => e.dataset.status)")
    assert statuses
    assert set(statuses) == {"open"}
    dash.page.get_by_role("button", name="All", exact=True).click()
    expect(dash.page).to_have_url(f"{dash.base_url}/#/alerts")
    dash.assert_no_page_errors()


def test_alert_appears_and_can_be_acknowledged_then_resolved(dash: Dash, live_platform: Any) -> None:
    live_platform.wait_for_alert(60)
    open_alerts = dash.api("/alerts?status=open")
    assert open_alerts, "wait_for_alert returned but GET /alerts?status=open is empty"
    target = open_alerts[0]
    alert_id = target["id"]

    dash.open("#/alerts")
    row = dash.page.locator(f"[data-testid=alert-row][data-alert-id='{alert_id}']")
    expect(row).to_be_visible()
    expect(row).to_have_attribute("data-status", "open")

    # the row shows what the API says (message, severity, top explaining channel); the
    # alert may be updated meanwhile (count, message), so compare against a fresh read
    def row_matches_api() -> bool:
        cur = next((a for a in dash.api("/alerts?limit=1000") if a["id"] == alert_id), None)
        if cur is None:
            return False
        text = row.inner_text().lower()
        expl = cur["explanation"] or {}
        top = max(expl, key=expl.get) if expl else ""
        return (
            row.locator("[data-testid=alert-message]").inner_text() == cur["message"]
            and cur["severity"] in text
            and top.lower() in row.locator("[data-testid=explanation]").inner_text().lower()
        )

    dash.wait_until(row_matches_api, what=f"alert row {alert_id} to show the API's message and explanation")

    # first action: the page asks once for the operator's name (default "operator")
    dialogs: list[Dialog] = []

    def answer(dialog: Dialog) -> None:
        dialogs.append(dialog)
        dialog.accept(OPERATOR)

    dash.page.on("dialog", answer)
    row.locator("[data-testid=ack-btn]").click()
    expect(row).to_have_attribute("data-status", "acknowledged")
    expect(row.locator("[data-testid=alert-status]")).to_have_text("acknowledged", ignore_case=True)
    expect(row.locator("[data-testid=ack-btn]")).to_be_disabled()
    assert len(dialogs) == 1
    assert dialogs[0].type == "prompt"
    assert dialogs[0].default_value == "operator"

    acked = {a["id"]: a for a in dash.api("/alerts?status=acknowledged")}
    assert alert_id in acked, "GET /alerts?status=acknowledged does not list the acknowledged alert"
    assert acked[alert_id]["acknowledged_by"] == OPERATOR
    assert alert_id not in {a["id"] for a in dash.api("/alerts?status=open")}

    # the status survives a reload (it comes from the API, not from page state)
    dash.page.reload()
    expect(row).to_have_attribute("data-status", "acknowledged")

    # second action: no second prompt, the stored name is used
    row.locator("[data-testid=resolve-btn]").click()
    expect(row).to_have_attribute("data-status", "resolved")
    expect(row.locator("[data-testid=resolve-btn]")).to_be_disabled()
    assert len(dialogs) == 1, "the operator name should only be asked for once"
    resolved = {a["id"]: a for a in dash.api("/alerts?status=resolved")}
    assert alert_id in resolved
    assert resolved[alert_id]["resolved_by"] == OPERATOR
    dash.assert_no_page_errors()


def test_unreachable_api_shows_banner_not_blank_page(dash: Dash) -> None:
    dash.page.route("**/api/v1/**", lambda route: route.abort())
    dash.open("#/")
    banner = dash.page.locator("[data-testid=api-banner]")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("unreachable", ignore_case=True)
    expect(dash.page.locator("#view")).to_contain_text("Could not load assets")

    dash.page.unroute("**/api/v1/**")
    expect(dash.page.locator("[data-testid=asset-row]").first).to_be_visible()
    expect(banner).to_be_hidden()


def test_phone_width_layout(phone: Dash) -> None:
    asset_id = pick_asset_with_data(phone)
    phone.open("#/")
    expect(phone.page.locator("[data-testid=asset-row]").first).to_be_visible()
    assert no_horizontal_overflow(phone.page), "fleet page scrolls sideways at 390 px"

    phone.open(f"#/asset/{asset_id}")
    phone.wait_until(lambda: any(n > 0 for n in chart_points(phone.page)), what="a chart with data on a phone")
    box = phone.page.locator("[data-testid=chart]").first.bounding_box()
    assert box is not None
    assert box["width"] <= 390
    assert no_horizontal_overflow(phone.page), "asset page scrolls sideways at 390 px"

    phone.open("#/alerts")
    expect(phone.page.locator("[data-testid=alert-row]").first).to_be_visible()
    assert no_horizontal_overflow(phone.page), "alerts page scrolls sideways at 390 px"
    phone.assert_no_page_errors()

"""The KPI page (``#/kpis``) in headless Chromium against a real platform: the tiles, charts and table show what
the KPI API computes from a lifecycle the test drives.

The platform runs in this process on its own event loop in a thread, as in tests/test_inbox.py: an embedded MQTT
broker, SQLite, the HTTP API and the dashboard on a real port, authentication on, and a ``ManualClock``. A rule
document uploaded through ``PUT /api/v1/alert-rules`` raises ``hot`` when ``temp`` goes over 80, and the pumps'
telemetry arrives over MQTT. The lifecycle, in platform time from ``t`` (past the startup grace):

- ``t``: pump 1 (line A) runs hot; its incident pages 30 s later; tina acknowledges it at ``t + 2 min`` and confirms
  it (overheating); a work order records the pump down from ``t + 3 min`` to ``t + 33 min``; the pump cools down
  and its alert resolves;
- ``t + 20 min``: pump 2 (line B) runs hot; it pages; tina calls it a false alarm and never acknowledges it.

While the platform has a minute of data, availability is "not enough data"; then the pumps' history (a month
before ``t``) is stored, so that the periods below are covered by data. So over the last 7 days, for the fleet of
2 pumps: MTTA 2.0 min, precision 50 %, MTTR repairs 30.0 min, lead time
3.0 min, 1 false alarm in 14 asset-days, 2 raw signals for 2 notifications, 30 min of downtime in 336 h. Pump 2
has no MTTA (never acknowledged) and no MTBF (no failure): "—". Nothing here sleeps: the page is waited on with
Playwright's ``expect``.

The browser is Debian's chromium (``EDGELOOP_CHROMIUM`` overrides the path); a missing browser fails.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, Locator, Page, ViewportSize, expect

from edgeloop.store.base import TelemetryChunk
from tests.browser_platform import (
    PHONE,
    T0,
    TENANT,
    Pump,
    ThreadedPlatform,
    chromium,
    running,
    watched_page,
)

pytestmark = pytest.mark.browser

PUMPS = {"pump-1": ("Pump 1", "line-a"), "pump-2": ("Pump 2", "line-b")}  # asset -> (name, line); device = asset
ADMIN_PASSWORD = "kpi-admin-password"
USERS = {"tina": ("technician", "tina-password-1")}
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
DESKTOP: ViewportSize = {"width": 1280, "height": 900}


@pytest.fixture
def live(tmp_path: Path) -> Iterator[ThreadedPlatform]:
    for p in running(tmp_path / "platform", pumps=[Pump(a, a, name, line) for a, (name, line) in PUMPS.items()],
                     users=USERS, admin_password=ADMIN_PASSWORD):
        p.advance_to(T0 + 150_000)  # past the startup grace, so that incidents page
        yield p


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A desktop window (resized to a phone's later); JavaScript errors fail the test."""
    yield from watched_page(browser, viewport=DESKTOP, locale="en-US", timezone_id="Europe/Berlin")


# ---------------------------------------------------------------------------
# helpers


def sign_in(page: Page, live: ThreadedPlatform, user: str, hash_route: str) -> None:
    page.goto(f"{live.base_url}/{hash_route}")
    expect(page.locator("[data-testid=login-form]")).to_be_visible()
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(USERS[user][1])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("body")).to_have_attribute("data-auth", "signed-in")


def tile(page: Page, kpi: str) -> Locator:
    return page.locator(f"[data-testid=kpi-tile][data-kpi={kpi}] [data-testid=kpi-tile-value]")


def tile_sub(page: Page, kpi: str) -> Locator:
    return page.locator(f"[data-testid=kpi-tile][data-kpi={kpi}] [data-testid=kpi-tile-sub]")


def reopen(page: Page) -> None:
    """Away to the incidents and back through the nav link: the KPI page loads afresh (it polls only every 15 s)."""
    page.get_by_role("link", name="Incidents").click()
    expect(page.locator("[data-testid=incident-list], [data-testid=incident-empty]")).to_be_visible()
    page.get_by_role("link", name="KPIs").click()
    expect(page).to_have_url(re.compile(r"/#/kpis$"))
    expect(page.locator("[data-testid=kpi-tile]").first).to_be_visible()


def cell(page: Page, group: str, kpi: str) -> Locator:
    return page.locator(f"[data-testid=kpi-row][data-group='{group}'] td[data-kpi={kpi}]")


def row_order(page: Page) -> list[str]:
    return [str(g) for g in page.locator("[data-testid=kpi-row]").evaluate_all("rs => rs.map(r => r.dataset.group)")]


def assert_fits(page: Page, where: str) -> None:
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{where} scrolls sideways at {width[1]} px: content is {width[0]} px wide"


def assert_no_leaks(page: Page, where: str) -> None:
    words = page.locator("#view").inner_text().split()
    assert "null" not in words and "undefined" not in words and "NaN" not in words, \
        f"{where}: a missing value leaked into the page as text"


def first_alert(live: ThreadedPlatform) -> tuple[int, dict[str, Any]]:
    """Pump 1 runs hot at ``t`` and pages 30 s later: (t, its incident)."""
    t = live.clock.now_ms()
    live.telemetry("pump-1", 70, 90)  # alert 1 opens at t (its first sample over 80)
    live.advance_to(t + 30_000)  # ... and pages
    [inc1] = live.call("GET", "/incidents?inbox=true", who="tina")
    assert inc1["paged_at"] is not None
    return t, inc1


def rest_of_lifecycle(live: ThreadedPlatform, t: int, inc1: dict[str, Any]) -> dict[str, Any]:
    """The rest of the module docstring's lifecycle, through MQTT and the API; returns what the test checks
    against."""
    live.advance_to(t + 2 * MIN)
    live.call("POST", f"/incidents/{inc1['id']}/acknowledge", who="tina")
    live.call("POST", f"/incidents/{inc1['id']}/feedback", who="tina", expect_status=201,
              body={"verdict": "confirmed", "fault_type": "overheating"})
    wo = live.call("POST", "/work-orders", who="tina", expect_status=201, body={
        "asset": "pump-1", "incident": inc1["id"], "downtime_start_ms": t + 3 * MIN, "note": "cooling fan replaced"})
    live.advance_to(t + 20 * MIN)
    live.telemetry("pump-2", 70, 95)  # alert 2 opens at t + 20 min
    live.advance_to(t + 20 * MIN + 30_000)
    inc2 = next(i for i in live.call("GET", "/incidents?inbox=true", who="tina") if i["id"] != inc1["id"])
    live.call("POST", f"/incidents/{inc2['id']}/feedback", who="tina", expect_status=201,
              body={"verdict": "false_alarm", "reason": "Planned work or test run"})
    live.advance_to(t + 33 * MIN)
    live.call("POST", f"/work-orders/{wo['id']}/close", who="tina", body={"downtime_end_ms": t + 33 * MIN})
    live.telemetry("pump-1", 70)  # pump 1 cools down: its alert clears, then resolves
    live.advance_to(t + 34 * MIN)
    live.advance_to(t + 40 * MIN)
    [alert1] = live.call("GET", f"/incidents/{inc1['id']}", who="tina")["alerts"]
    assert (alert1["first_seen"], alert1["status"]) == (t, "resolved"), alert1
    return {"t": t, "resolved_at": alert1["resolved_at"], "work_order": wo["id"]}


# ---------------------------------------------------------------------------
# the test


def test_kpi_page_shows_what_the_api_computes(live: ThreadedPlatform, page: Page) -> None:
    # no alert yet: an empty state, no tiles, no charts
    sign_in(page, live, "tina", "#/kpis")
    expect(page.locator("[data-testid=kpi-empty]")).to_be_visible()
    expect(page.locator("[data-testid=kpi-empty]")).to_contain_text("No alerts in the last 7 days")
    expect(page.locator("[data-testid=kpi-tile]")).to_have_count(0)
    expect(page.locator("[data-testid=kpi-chart] canvas")).to_have_count(0)
    expect(page.locator(".mainnav a[data-nav=kpis]")).to_have_attribute("aria-current", "page")
    page.screenshot(path="/tmp/edgeloop-kpis-empty.png")

    # the first alert, neither acknowledged nor judged yet: those KPIs have no value, and the tiles say why
    t, inc1 = first_alert(live)
    live.advance_to(t + MIN)  # a period ends before "now": the page at t + 30 s would not see the page yet
    reopen(page)
    expect(tile(page, "mtta_ms")).to_have_text("—")
    expect(tile_sub(page, "mtta_ms")).to_have_text("no alert acknowledged yet (1 unacknowledged)")
    expect(tile(page, "mtta_ms")).to_have_attribute("title", "No value: no alert acknowledged yet (1 unacknowledged)")
    expect(tile(page, "precision")).to_have_text("—")
    expect(tile_sub(page, "precision")).to_have_text("no verdicts yet")
    expect(tile(page, "false_alarms_per_asset_day")).to_have_text("—")
    expect(tile(page, "mttr_repair_ms")).to_have_text("—")
    expect(tile_sub(page, "mttr_repair_ms")).to_have_text("no repairs with downtime (work orders) in this period")
    expect(tile(page, "lead_median_ms")).to_have_text("—")
    expect(tile(page, "raw_per_notification")).to_have_text("1.0")  # 1 raw signal, 1 page
    # a minute of data says nothing of availability: never "100 %" from it
    expect(tile(page, "availability")).to_have_text("—")
    expect(tile_sub(page, "availability")).to_have_text(
        "not enough data: 1.0 min of data in this period, at least 24.0 h needed")
    expect(page.locator("[data-testid=kpi-tile].is-null")).to_have_count(8)  # all but raw / page
    [early] = live.call("GET", "/kpis?group=fleet&days=7", who="tina")
    nulls = {k for k, v in early.items() if v is None}
    assert nulls == {"mtta_ms", "mttr_alert_ms", "mttr_repair_ms", "mtbf_ms", "availability", "precision",
                     "false_alarms_per_asset_day", "lead_median_ms", "lead_mean_ms"}, nulls
    assert (early["observed_ms"], early["enough_data"]) == (MIN + 1001, False)  # from t - 1 s to now + 1 ms
    assert_no_leaks(page, "the KPI page with null KPIs")
    page.screenshot(path="/tmp/edgeloop-kpis-nulls.png")

    # the pumps' history (stored before this period, as an import would): from here every period is covered
    history = [TelemetryChunk(device=a, seq=10_000, channels=("temp",), ts=np.array([t - 31 * DAY], dtype=np.int64),
                              values=np.array([[60.0]]), tenant=TENANT, asset=a) for a in PUMPS]
    live.run(live.platform.store.write_chunks(history))

    life = rest_of_lifecycle(live, t, inc1)
    mttr_alert = life["resolved_at"] - t

    # what the API says, checked by hand first (so the page is compared with known numbers)
    [fleet] = live.call("GET", "/kpis?group=fleet&days=7", who="tina")
    assert (fleet["alerts"], fleet["acknowledged"], fleet["mtta_ms"]) == (2, 1, 2 * MIN)
    assert (fleet["resolved"], fleet["still_open"], fleet["mttr_alert_ms"]) == (1, 1, mttr_alert)
    assert (fleet["repairs"], fleet["mttr_repair_ms"], fleet["downtime_ms"]) == (1, 30 * MIN, 30 * MIN)
    assert (fleet["failures"], fleet["mtbf_ms"]) == (1, 2 * 7 * DAY - 30 * MIN)
    assert fleet["availability"] == pytest.approx(1 - 30 * MIN / (2 * 7 * DAY))
    assert (fleet["confirmed"], fleet["false_alarms"], fleet["precision"]) == (1, 1, 0.5)
    assert fleet["false_alarms_per_asset_day"] == pytest.approx(1 / 14)
    assert (fleet["raw_signals"], fleet["notifications"], fleet["raw_per_notification"]) == (2, 2, 1.0)
    assert (fleet["detected_failures"], fleet["lead_median_ms"]) == (1, 3 * MIN)

    # the whole lifecycle
    reopen(page)
    expected_tiles = {
        "mtta_ms": "2.0 min",
        "mttr_alert_ms": f"{mttr_alert / MIN:.1f} min",
        "mttr_repair_ms": "30.0 min",
        "mtbf_ms": "14.0 d",  # 335.5 h of operation / 1 failure
        "availability": "99.85 %",  # 1 - 0.5 h / 336 h
        "precision": "50 %",
        "false_alarms_per_asset_day": "0.071",  # 1 / 14
        "raw_per_notification": "1.0",
        "lead_median_ms": "3.0 min",
    }
    expect(page.locator("[data-testid=kpi-tile]")).to_have_count(len(expected_tiles))
    for kpi, text in expected_tiles.items():
        expect(tile(page, kpi)).to_have_text(text)
    expect(page.locator("[data-testid=kpi-tile].is-null")).to_have_count(0)
    expect(tile_sub(page, "mtta_ms")).to_have_text("1 of 2 alerts acknowledged")
    expect(tile_sub(page, "precision")).to_have_text("1 confirmed · 1 false alarm")
    expect(page.locator("[data-testid=kpi-summary]")).to_contain_text("2 assets · 2 alerts")

    # four charts, each drawn (a canvas) with the API's values per day
    daily = live.call("GET", "/kpis/daily?group=fleet&days=7", who="tina")
    assert len(daily) == 7 and sum(d["groups"]["fleet"]["alerts"] for d in daily) == 2
    charts = page.locator("[data-testid=kpi-chart]")
    expect(charts).to_have_count(4)
    for i in range(4):
        chart = charts.nth(i)
        expect(chart.locator("canvas")).to_have_count(1)
        expect(chart).not_to_have_attribute("data-points", "0")
        expect(chart).to_have_attribute("data-days", "7")
        box = chart.locator("canvas").bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 100, box
    plotted = charts.evaluate_all("cs => Object.fromEntries(cs.map(c => [c.dataset.chart, c._kpi.series]))")
    drawn = charts.evaluate_all("cs => cs.map(c => c._plot.data.length)")
    assert drawn == [4, 4, 3, 2]  # x + one array per series, handed to uPlot
    for key in ("alerts", "raw_signals", "notifications"):
        assert plotted["volume"][key] == [d["groups"]["fleet"][key] for d in daily], key
    assert plotted["response"]["mtta_ms"] == [d["groups"]["fleet"]["mtta_ms"] for d in daily]
    assert plotted["quality"]["precision"] == [d["groups"]["fleet"]["precision"] for d in daily]
    assert plotted["quality"]["precision"][-1] == 0.5 and plotted["volume"]["alerts"][-1] == 2
    assert plotted["response"]["mtta_ms"][:-1] == [None] * 6  # days without an acknowledgement are gaps, not 0

    # the table per asset: both pumps; what pump 2 lacks is "—" with the reason as its tooltip
    expect(page.locator("[data-testid=kpi-row]")).to_have_count(2)
    expect(page.locator("[data-testid=kpi-row][data-group='pump-1'] th")).to_contain_text("Pump 1")
    expect(cell(page, "pump-1", "mtta_ms")).to_have_text("2.0 min")
    expect(cell(page, "pump-1", "precision")).to_have_text("100 %")
    expect(cell(page, "pump-2", "precision")).to_have_text("0 %")  # a real zero stays a zero
    expect(cell(page, "pump-2", "mtta_ms")).to_have_text("—")
    expect(cell(page, "pump-2", "mtta_ms").locator("abbr")).to_have_attribute(
        "title", "no alert acknowledged yet (1 unacknowledged)")
    cell(page, "pump-2", "mtta_ms").locator("abbr").click()  # no hover on a phone: a tap says why
    expect(page.locator(".toast").last).to_have_text("MTTA, Pump 2: no alert acknowledged yet (1 unacknowledged)")
    expect(cell(page, "pump-2", "mtbf_ms")).to_have_text("—")
    expect(cell(page, "pump-2", "mtbf_ms").locator("abbr")).to_have_attribute(
        "title", "no failures in this period (more than 7.0 d of operation)")
    per_asset = {k["group"]: k for k in live.call("GET", "/kpis?group=asset&days=7", who="tina")}
    assert per_asset["pump-2"]["mtta_ms"] is None and per_asset["pump-2"]["mtbf_ms"] is None
    assert per_asset["pump-2"]["precision"] == 0.0

    # sortable by a column: precision descending puts pump 1 (100 %) first, a second click ascending pump 2 (0 %)
    page.locator("[data-testid=kpi-sort][data-key=precision]").click()
    expect(page.locator("th[aria-sort=descending] [data-key=precision]")).to_have_count(1)
    assert row_order(page) == ["pump-1", "pump-2"]
    page.locator("[data-testid=kpi-sort][data-key=precision]").click()
    expect(page.locator("th[aria-sort=ascending] [data-key=precision]")).to_have_count(1)
    assert row_order(page) == ["pump-2", "pump-1"]
    # nulls sort last either way
    page.locator("[data-testid=kpi-sort][data-key=mtta_ms]").click()
    expect(page.locator("th[aria-sort=descending] [data-key=mtta_ms]")).to_have_count(1)
    assert row_order(page) == ["pump-1", "pump-2"]
    page.locator("[data-testid=kpi-sort][data-key=mtta_ms]").click()
    expect(page.locator("th[aria-sort=ascending] [data-key=mtta_ms]")).to_have_count(1)
    assert row_order(page) == ["pump-1", "pump-2"]

    # the repair behind the downtime
    wo = page.locator(f"[data-testid=work-order-row][data-id='{life['work_order']}']")
    expect(wo.locator("[data-testid=work-order-downtime]")).to_have_text("30.0 min")
    assert_no_leaks(page, "the KPI page")
    assert_fits(page, "the KPI page")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path="/tmp/edgeloop-kpis-desktop.png", full_page=True)

    # grouping by line: one row per line
    page.locator("[data-testid=kpi-group] button[data-key=line]").click()
    expect(page).to_have_url(f"{live.base_url}/#/kpis?group=line")
    expect(page.locator("[data-testid=kpi-table]")).to_have_attribute("data-group", "line")
    expect(page.locator("[data-testid=kpi-row]")).to_have_count(2)
    expect(cell(page, "line-a", "mttr_repair_ms")).to_have_text("30.0 min")
    expect(cell(page, "line-b", "mttr_repair_ms")).to_have_text("—")
    expect(cell(page, "line-b", "false_alarms_per_asset_day")).to_have_text("0.14")  # 1 / 7

    # a longer period: the same events over 60 asset-days
    page.locator("[data-testid=kpi-period] button[data-key='30']").click()
    expect(page).to_have_url(f"{live.base_url}/#/kpis?group=line&days=30")
    expect(tile(page, "false_alarms_per_asset_day")).to_have_text("0.017")  # 1 / 60
    expect(tile(page, "availability")).to_have_text("99.97 %")  # 1 - 0.5 h / 1440 h, not rounded up to 100 %
    expect(tile(page, "mtta_ms")).to_have_text("2.0 min")
    expect(page.locator("[data-testid=kpi-chart]").first).to_have_attribute("data-days", "30")
    [fleet30] = live.call("GET", "/kpis?group=fleet&days=30", who="tina")
    assert fleet30["false_alarms_per_asset_day"] == pytest.approx(1 / 60)

    # on a phone: nothing scrolls sideways but the table, inside its own box
    page.set_viewport_size(PHONE)
    page.locator("[data-testid=kpi-group] button[data-key=asset]").click()
    # wait for the asset view's own rows: the line view's 2 rows and 50 % tile would pass before it has loaded
    expect(page).to_have_url(f"{live.base_url}/#/kpis?days=30")  # asset is the default grouping
    expect(cell(page, "pump-1", "mtta_ms")).to_have_text("2.0 min")
    expect(page.locator("[data-testid=kpi-row]")).to_have_count(2)
    expect(tile(page, "precision")).to_have_text("50 %")
    assert_fits(page, "the KPI page on a phone")
    for i in range(4):
        box = page.locator("[data-testid=kpi-chart]").nth(i).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
    scroller = page.locator(".table-scroll")
    sizes = scroller.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert sizes[0] > sizes[1], "the table should scroll inside its box on a phone"
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path="/tmp/edgeloop-kpis-phone.png")
    page.screenshot(path="/tmp/edgeloop-kpis-phone-full.png", full_page=True)
    scroller.screenshot(path="/tmp/edgeloop-kpis-phone-table.png")
    page.locator("[data-testid=kpi-chart]").first.screenshot(path="/tmp/edgeloop-kpis-phone-chart.png")

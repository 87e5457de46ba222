"""The operator dashboard, as a user sees it: headless Chromium against a live platform.

Uses the ``live_platform`` fixture from tests/conftest.py: an object with
``base_url`` ("http://127.0.0.1:PORT") of a running embedded platform (API serving
the dashboard at ``/`` and its assets at ``/static/``) with a simulated fleet in which
at least one faulty device raises an alert, and ``admin_user`` / ``admin_password`` of the
admin account that ``edgeloop up`` creates on first start.

The API needs a bearer token (POST /api/v1/auth/token); the page signs in through its own
form (see ``login``), and the Python-side API client signs in with the same admin account.
The page also has to work on a server with authentication disabled; that mode is emulated
with request interception (``test_no_sign_in_when_the_server_needs_none``).

The browser is Debian's chromium (``EDGELOOP_CHROMIUM`` overrides the path), which the
test command installs; a missing browser fails these tests, it never skips them.
Nothing here downloads anything.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Browser, Dialog, Page, Request, Route, expect

from edgeloop.identity.pki import CertificateAuthority, ensure_identity
from edgeloop.identity.tls import TlsIdentity
from edgeloop.messages import Heartbeat, SourceHealth, TopicKind, encode, topic
from tests.browser_platform import chromium

pytestmark = pytest.mark.browser

UI_TIMEOUT_MS = 20_000  # the dashboard polls every 2-5 s; leave room for a few rounds
ASSET_STATUSES = {"ok", "alert", "offline", "no_data"}
SESSION_KEY = "edgeloop.session"  # sessionStorage key of the page's token (app.js)


# ---------------------------------------------------------------------------
# plain HTTP (Python side)


def http(base_url: str, path: str, *, method: str = "GET", token: str | None = None,
         json_body: dict[str, Any] | None = None, form: dict[str, str] | None = None) -> tuple[int, Any]:
    """(status, decoded JSON or None) of one API call; HTTP errors are returned, not raised."""
    headers = {"Accept": "application/json"}
    data = None
    if json_body is not None:
        data = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    elif form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"{base_url}/api/v1{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw) if raw else None
        except ValueError:
            return e.code, None


def get_token(base_url: str, username: str, password: str) -> str:
    status, body = http(base_url, "/auth/token", method="POST",
                        form={"grant_type": "password", "username": username, "password": password})
    assert status == 200, f"POST /api/v1/auth/token as {username!r}: {status} {body}"
    assert body["token_type"].lower() == "bearer" and body["access_token"], body
    return str(body["access_token"])


@dataclass(frozen=True)
class Auth:
    """How the platform under test authenticates, and a token for the test's own API calls."""

    enabled: bool
    token: str | None
    user: str | None


@pytest.fixture(scope="module")
def auth(live_platform: Any) -> Auth:
    base = live_platform.base_url.rstrip("/")
    status, me = http(base, "/auth/me")
    if status == 401:
        user, password = live_platform.admin_user, live_platform.admin_password
        return Auth(enabled=True, token=get_token(base, user, password), user=user)
    # authentication disabled: /auth/me is missing (404) or answers for an anonymous admin
    assert status == 404 or (status == 200 and me.get("kind") == "anonymous"), f"GET /api/v1/auth/me: {status} {me}"
    return Auth(enabled=False, token=None, user=None)


def require_auth(auth: Auth) -> None:
    assert auth.enabled, "the platform answers /api/v1 without a token: authentication is not enabled"


# ---------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the whole module."""
    yield from chromium()


def login(page: Page, live_platform: Any) -> None:
    """Sign in through the page's form if it shows one; return once the dashboard is shown.

    Waits until the page has decided (``body[data-auth]`` leaves "pending"): "signed-in" or
    "open" (server without authentication) need nothing; "signed-out" shows the form.
    """
    body = page.locator("body")
    expect(body).not_to_have_attribute("data-auth", "pending")
    if body.get_attribute("data-auth") != "signed-out":
        return
    form = page.locator("[data-testid=login-form]")
    expect(form).to_be_visible()
    page.get_by_label("Username").fill(live_platform.admin_user)
    page.get_by_label("Password").fill(live_platform.admin_password)
    page.get_by_role("button", name="Sign in").click()
    expect(body).to_have_attribute("data-auth", "signed-in")
    expect(form).to_have_count(0)


@dataclass
class Dash:
    """A fresh browser context on the dashboard, plus a JSON client for the same API."""

    page: Page
    base_url: str
    platform: Any
    token: str | None
    errors: list[str] = field(default_factory=list)

    def open(self, hash_route: str = "#/", *, sign_in: bool = True) -> None:
        """Load the page at ``hash_route``; signs in through the form when the page asks."""
        self.page.goto(f"{self.base_url}/{hash_route}")
        if sign_in:
            login(self.page, self.platform)

    def api(self, path: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
        status, data = http(self.base_url, path, method=method, token=self.token, json_body=body)
        assert 200 <= status < 300, f"{method} /api/v1{path}: {status} {data}"
        return data

    def wait_until(self, check: Callable[[], bool], timeout_ms: int = UI_TIMEOUT_MS, what: str = "") -> None:
        """Poll ``check`` (which may read both the page and the API) until it is true."""
        step = 250
        for _ in range(timeout_ms // step):
            if check():
                return
            self.page.wait_for_timeout(step)
        assert check(), f"timed out waiting for {what or check}"

    def wait_for_open_alert(self, timeout_s: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            alerts: list[dict[str, Any]] = self.api("/alerts?status=open")
            if alerts:
                return alerts
            time.sleep(0.5)
        raise AssertionError(f"no open alert within {timeout_s} s")

    def page_token(self) -> str | None:
        """The token the page keeps (sessionStorage), or None."""
        raw = self.page.evaluate(f"sessionStorage.getItem({SESSION_KEY!r})")
        return json.loads(raw)["token"] if raw else None

    def assert_no_page_errors(self) -> None:
        assert not self.errors, f"JavaScript errors on the page: {self.errors}"


def _new_dash(browser: Browser, live_platform: Any, auth: Auth, width: int, height: int
              ) -> tuple[Dash, Callable[[], None]]:
    ctx = browser.new_context(viewport={"width": width, "height": height}, locale="en-US")
    ctx.set_default_timeout(UI_TIMEOUT_MS)
    page = ctx.new_page()
    dash = Dash(page=page, base_url=live_platform.base_url.rstrip("/"), platform=live_platform, token=auth.token)
    page.on("pageerror", lambda exc: dash.errors.append(str(exc)))
    page.on("console", lambda msg: dash.errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    return dash, ctx.close


@pytest.fixture
def dash(browser: Browser, live_platform: Any, auth: Auth) -> Iterator[Dash]:
    """Desktop-sized page (1280 wide), empty storage (not signed in yet)."""
    d, close = _new_dash(browser, live_platform, auth, 1280, 900)
    try:
        yield d
    finally:
        close()


@pytest.fixture
def phone(browser: Browser, live_platform: Any, auth: Auth) -> Iterator[Dash]:
    """Phone-sized page (390 wide)."""
    d, close = _new_dash(browser, live_platform, auth, 390, 844)
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
# tests: the dashboard


def test_fleet_lists_assets_with_status_and_kpis(dash: Dash, auth: Auth) -> None:
    dash.wait_for_open_alert(60)
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
        f"{stats['totals']['dead_letters']:,}"
    )
    expect(dash.page.locator("[data-testid=api-banner]")).to_be_hidden()

    # the header names the signed-in user and role (no "Set name" any more)
    if auth.enabled:
        expect(dash.page.locator("[data-testid=user-name]")).to_have_text(str(auth.user))
        expect(dash.page.locator("[data-testid=user-role]")).to_have_text("admin", ignore_case=True)
        expect(dash.page.locator("[data-testid=signout-btn]")).to_be_visible()
    expect(dash.page.get_by_text("Set name")).to_have_count(0)
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

    # a technician's hold on automation shows on the asset, and goes when it is released
    hold = dash.api("/holds", method="POST", body={"target": asset_id, "duration_s": 600, "reason": "belt change"})
    banner = dash.page.locator("[data-testid=asset-hold]")
    expect(banner).to_contain_text("Automation held by")
    expect(banner).to_contain_text("belt change")
    dash.api(f"/holds/{hold['id']}/release", method="POST")
    expect(banner).to_be_hidden()

    # the range selector re-queries a longer window and still plots data
    dash.page.get_by_role("button", name="6 h").click()
    expect(dash.page).to_have_url(f"{dash.base_url}/#/asset/{asset_id}?range=6h")
    dash.wait_until(lambda: any(n > 0 for n in chart_points(dash.page)), what="6 h chart with data")
    dash.assert_no_page_errors()


def test_alert_status_filter(dash: Dash) -> None:
    dash.wait_for_open_alert(60)
    dash.open("#/alerts?status=open")
    rows = dash.page.locator("[data-testid=alert-row]")
    expect(rows.first).to_be_visible()
    statuses: list[str] = rows.evaluate_all("els => els.map(e => e.dataset.status)")
    assert statuses
    assert set(statuses) == {"open"}
    dash.page.get_by_role("button", name="All", exact=True).click()
    expect(dash.page).to_have_url(f"{dash.base_url}/#/alerts")
    dash.assert_no_page_errors()


def test_forbidden_action_is_shown_inline_and_keeps_the_session(dash: Dash) -> None:
    """A 403 (e.g. a viewer pressing Acknowledge) is explained at the alert; no sign-out."""
    alert_id = dash.wait_for_open_alert(60)[0]["id"]
    detail = "Role viewer may not acknowledge alerts"

    def forbid(route: Route) -> None:
        route.fulfill(status=403, content_type="application/json", body=json.dumps({"detail": detail}))

    dash.open("#/alerts?status=open")
    dash.page.route("**/api/v1/alerts/*/acknowledge", forbid)
    row = dash.page.locator(f"[data-testid=alert-row][data-alert-id='{alert_id}']")
    expect(row).to_be_visible()
    row.locator("[data-testid=ack-btn]").click()
    error = row.locator("[data-testid=alert-error]")
    expect(error).to_be_visible()
    expect(error).to_contain_text(detail)
    expect(error).to_contain_text("Not allowed")
    expect(row).to_have_attribute("data-status", "open")
    expect(row.locator("[data-testid=ack-btn]")).to_be_enabled()
    expect(dash.page.locator("[data-testid=login-form]")).to_have_count(0)
    assert dash.page.locator("body").get_attribute("data-auth") in {"signed-in", "open"}
    assert dash.api(f"/alerts/{alert_id}")["status"] == "open"
    dash.assert_no_page_errors()


def test_alert_appears_and_can_be_acknowledged_then_resolved(dash: Dash, auth: Auth) -> None:
    open_alerts = dash.wait_for_open_alert(60)
    target = open_alerts[0]
    alert_id = target["id"]

    # every API call of the page carries the bearer token
    missing_token: list[str] = []

    def check_header(req: Request) -> None:
        api_call = "/api/v1/" in req.url and "/auth/token" not in req.url
        if auth.enabled and api_call and not req.headers.get("authorization", "").startswith("Bearer "):
            missing_token.append(f"{req.method} {req.url}")

    dash.open("#/alerts")
    dash.page.on("request", check_header)
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
        top = max(expl, key=lambda c: expl[c]) if expl else ""
        return (
            row.locator("[data-testid=alert-message]").inner_text() == cur["message"]
            and cur["severity"] in text
            and top.lower() in row.locator("[data-testid=explanation]").inner_text().lower()
        )

    dash.wait_until(row_matches_api, what=f"alert row {alert_id} to show the API's message and explanation")

    # no "who are you" prompt any more: the server records the signed-in user
    dialogs: list[Dialog] = []

    def refuse(dialog: Dialog) -> None:
        dialogs.append(dialog)
        dialog.dismiss()

    dash.page.on("dialog", refuse)
    row.locator("[data-testid=ack-btn]").click()
    expect(row).to_have_attribute("data-status", "acknowledged")
    expect(row.locator("[data-testid=alert-status]")).to_have_text("acknowledged", ignore_case=True)
    expect(row.locator("[data-testid=ack-btn]")).to_be_disabled()
    assert not dialogs, f"the page asked something: {[d.message for d in dialogs]}"

    acked = {a["id"]: a for a in dash.api("/alerts?status=acknowledged")}
    assert alert_id in acked, "GET /alerts?status=acknowledged does not list the acknowledged alert"
    if auth.enabled:
        assert acked[alert_id]["acknowledged_by"] == auth.user
        expect(row).to_contain_text(f"Acknowledged by {auth.user}")
    else:
        assert acked[alert_id]["acknowledged_by"], "no acknowledging user recorded"
    assert alert_id not in {a["id"] for a in dash.api("/alerts?status=open")}

    # the status survives a reload (it comes from the API, not from page state), and so does
    # the session (sessionStorage): no second sign-in
    dash.page.reload()
    expect(row).to_have_attribute("data-status", "acknowledged")
    expect(dash.page.locator("[data-testid=login-form]")).to_have_count(0)

    row.locator("[data-testid=resolve-btn]").click()
    expect(row).to_have_attribute("data-status", "resolved")
    expect(row.locator("[data-testid=resolve-btn]")).to_be_disabled()
    assert not dialogs
    resolved = {a["id"]: a for a in dash.api("/alerts?status=resolved")}
    assert alert_id in resolved
    if auth.enabled:
        assert resolved[alert_id]["resolved_by"] == auth.user
    assert not missing_token, f"API calls without a bearer token: {missing_token[:5]}"
    dash.assert_no_page_errors()


def test_api_docs_render_offline_under_the_csp(dash: Dash) -> None:
    """/docs (Swagger UI) and /redoc (ReDoc) render from the server's own vendored files, under the
    Content-Security-Policy. Nothing leaves the server: the one outside resource (ReDoc's "API docs by Redocly"
    logo, which it hides when it fails to load) is refused by the policy before any request is made."""
    tried: list[tuple[str, str]] = []
    own = (dash.base_url, "data:", "blob:")
    dash.page.on("requestfinished", lambda r: None if r.url.startswith(own) else tried.append((r.url, "sent")))
    dash.page.on("requestfailed", lambda r: None if r.url.startswith(own) else tried.append(
        (r.url, r.failure or "")))
    dash.page.goto(f"{dash.base_url}/docs")
    # both render the whole API's description in the browser: seconds on a busy machine, so the UI's timeout
    expect(dash.page.locator(".swagger-ui .info .title")).to_contain_text("EdgeLoop", timeout=UI_TIMEOUT_MS)
    expect(dash.page.locator(".opblock-summary-path[data-path='/api/v1/auth/token']")).to_be_visible()
    assert not tried, f"/docs tried other servers: {tried}"
    dash.assert_no_page_errors()
    dash.page.goto(f"{dash.base_url}/redoc")
    expect(dash.page.locator("h1").first).to_contain_text("EdgeLoop", timeout=UI_TIMEOUT_MS)
    expect(dash.page.get_by_text("/api/v1/auth/token").first).to_be_attached(timeout=UI_TIMEOUT_MS)
    expect(dash.page.get_by_role("img", name="redocly logo")).to_have_count(0)  # refused, and hidden
    assert all(failure == "csp" for _, failure in tried), tried  # blocked by the policy, never sent
    assert all(e.startswith("Loading the image 'https://cdn.redoc.ly/") for e in dash.errors), dash.errors


def test_unreachable_api_shows_banner_not_blank_page(dash: Dash) -> None:
    dash.open("#/")  # signs in first, so that data can come back once the API does
    expect(dash.page.locator("[data-testid=asset-row]").first).to_be_visible()
    dash.page.route("**/api/v1/**", lambda route: route.abort())
    dash.page.reload()
    banner = dash.page.locator("[data-testid=api-banner]")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("unreachable", ignore_case=True)
    expect(dash.page.locator("#view")).to_contain_text("Could not load assets")

    dash.page.unroute("**/api/v1/**")
    expect(dash.page.locator("[data-testid=asset-row]").first).to_be_visible()
    expect(banner).to_be_hidden()


def test_phone_navigation_shows_every_link_whole(phone: Dash) -> None:
    """At 390 px every main navigation link is on screen in full ("KPIs", not "KF" cut at the edge)."""
    phone.open("#/")
    expect(phone.page.locator("[data-testid=nav-incident-count]")).to_be_visible()  # the widest the bar gets
    links = phone.page.eval_on_selector_all(".mainnav a", """links => links.map(a => {
        const r = a.getBoundingClientRect();
        return {text: a.textContent.trim(), left: r.left, right: r.right, clipped: a.scrollWidth > a.clientWidth};
    })""")
    assert [link["text"].split()[0] for link in links] == ["Fleet", "Incidents", "Alerts", "Gateways", "KPIs"]
    for link in links:
        assert link["left"] >= 0 and link["right"] <= 390 and not link["clipped"], link
    assert phone.page.evaluate("(n => n.scrollWidth <= n.clientWidth)(document.querySelector('.mainnav'))")


def test_phone_width_layout(phone: Dash) -> None:
    asset_id = pick_asset_with_data(phone)
    phone.open("#/", sign_in=False)
    expect(phone.page.locator("body")).not_to_have_attribute("data-auth", "pending")
    if phone.page.locator("body").get_attribute("data-auth") == "signed-out":
        expect(phone.page.locator("[data-testid=login-form]")).to_be_visible()
        assert no_horizontal_overflow(phone.page), "sign-in page scrolls sideways at 390 px"
        login(phone.page, phone.platform)
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


# ---------------------------------------------------------------------------
# tests: edge gateways


@dataclass
class FakeGateway:
    """A real MQTT client with its own certificate from the live platform's CA, playing an edge gateway."""

    client: Any
    tenant: str
    gateway: str

    def heartbeat(self, **changes: Any) -> None:
        beat = Heartbeat(gateway=self.gateway, ts=int(time.time() * 1000), interval_s=60.0, devices=[],
                         journal_messages=0, journal_bytes=0, journal_samples=0, oldest_unsent_age_s=None,
                         sync_lag_s=0.4, dropped_samples=0, accepted_samples=1000, uplink_connected=1,
                         uplink_links=1, bytes_sent=1000, bytes_raw=4000, cpu_percent=2.5, rss_bytes=50_000_000,
                         sources={"plc": SourceHealth(kind="modbus", state="ok")}, config_version=1)
        payload = encode(msgspec.structs.replace(beat, **changes))
        self.client.publish(topic(self.tenant, self.gateway, TopicKind.HEALTH), payload, qos=1).wait_for_publish(10)

    def status(self, text: str) -> None:
        self.client.publish(topic(self.tenant, self.gateway, TopicKind.STATUS), text.encode(), qos=1,
                            retain=True).wait_for_publish(10)


@pytest.fixture
def fake_gateway(live_platform: Any, auth: Auth, tmp_path: Path) -> Iterator[FakeGateway]:
    """Registers ``dash-gw`` beside an existing device (same tenant, asset, profile) and connects it over mutual TLS."""
    base = live_platform.base_url.rstrip("/")
    status, devices = http(base, "/devices", token=auth.token)
    assert status == 200 and devices, devices
    model = devices[0]
    gateway = "dash-gw"
    status, body = http(base, "/devices", method="POST", token=auth.token, json_body={
        "id": gateway, "tenant": model["tenant"], "asset": model["asset"], "profile": model["profile"],
        "name": "Dashboard test gateway"})
    assert status == 201, body
    ca = CertificateAuthority.open(Path(live_platform.data_dir) / "pki")
    ensure_identity(ca, tmp_path, gateway, kind="device")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=gateway)
    TlsIdentity.from_dir(tmp_path, gateway).apply(client)
    client.will_set(topic(model["tenant"], gateway, TopicKind.STATUS), b"offline", qos=1, retain=True)
    up = threading.Event()
    client.on_connect = lambda _c, _u, _f, reason, _p: up.set() if not reason.is_failure else None
    client.connect("127.0.0.1", live_platform.mqtt_port)
    client.loop_start()
    try:
        assert up.wait(10), "the live broker refused the gateway's certificate"
        yield FakeGateway(client=client, tenant=model["tenant"], gateway=gateway)
    finally:
        client.disconnect()
        client.loop_stop()
        client.on_connect = None


def test_gateways_panel_shows_state_backlog_lag_and_sources(dash: Dash, fake_gateway: FakeGateway) -> None:
    fake_gateway.status("online")
    fake_gateway.heartbeat(journal_messages=420, journal_samples=25_000, oldest_unsent_age_s=300.0,
                           sources={"plc": SourceHealth(kind="modbus", state="failing", failures=4,
                                                        error="connection refused"),
                                    "oven": SourceHealth(kind="opcua", state="ok")})
    dash.open("#/")
    dash.page.get_by_role("link", name="Gateways").click()
    expect(dash.page).to_have_url(f"{dash.base_url}/#/gateways")
    row = dash.page.locator("[data-testid=gateway-row][data-gateway-id='dash-gw']")
    expect(row).to_be_visible()
    expect(row).to_have_attribute("data-state", "degraded")
    expect(row.locator("[data-testid=gateway-state]")).to_have_text("degraded")
    reasons = row.locator("[data-testid=gateway-reasons]")
    expect(reasons).to_contain_text("backlog: 420 messages")
    expect(reasons).to_contain_text("source plc (modbus) failing")
    expect(row.locator("[data-testid=gateway-backlog]")).to_contain_text("420 msgs")
    expect(row.locator("[data-testid=gateway-backlog]")).to_contain_text("25,000 samples")
    expect(row.locator("[data-testid=gateway-lag]")).to_have_text("0.4 s")
    chips = row.locator("[data-testid=gateway-source]")
    expect(chips).to_have_count(2)
    expect(row.locator("[data-testid=gateway-source][data-state=failing]")).to_have_text("plc: failing")
    api_row = next(g for g in dash.api("/gateways") if g["id"] == "dash-gw")
    assert (api_row["state"], api_row["backlog"]["messages"]) == ("degraded", 420)

    # The page follows the gateway: healthy again, then its connection drops (last will) -> offline at once.
    fake_gateway.heartbeat()
    expect(row).to_have_attribute("data-state", "online")
    expect(row.locator("[data-testid=gateway-reasons]")).to_have_count(0)
    fake_gateway.status("offline")
    expect(row).to_have_attribute("data-state", "offline")
    expect(row.locator("[data-testid=gateway-reasons]")).to_contain_text("connection is closed")
    words = dash.page.locator("#view").inner_text().split()
    assert "null" not in words and "undefined" not in words and "NaN" not in words
    dash.page.set_viewport_size({"width": 390, "height": 844})
    expect(row).to_be_visible()
    assert no_horizontal_overflow(dash.page), "gateways page scrolls sideways at 390 px"
    dash.assert_no_page_errors()


# ---------------------------------------------------------------------------
# tests: signing in and out


def assert_no_fleet_data(page: Page) -> None:
    expect(page.locator("[data-testid=asset-row]")).to_have_count(0)
    expect(page.locator("[data-testid=alert-row]")).to_have_count(0)
    expect(page.locator("[data-testid=chart]")).to_have_count(0)
    expect(page.locator(".kpis")).to_be_hidden()
    for kpi in ("kpi-devices", "kpi-rate", "kpi-alerts", "kpi-dead-letters", "kpi-queue"):
        expect(page.locator(f"[data-testid={kpi}] [data-value]")).to_have_text("—")
    expect(page.locator("[data-testid=sample-now]")).to_have_text("—")
    expect(page.locator("[data-testid=user-box]")).to_be_hidden()


def test_sign_in_form_is_accessible_and_the_token_stays_in_the_tab(dash: Dash, auth: Auth) -> None:
    require_auth(auth)
    dash.open("#/alerts", sign_in=False)
    form = dash.page.locator("[data-testid=login-form]")
    expect(form).to_be_visible()
    assert_no_fleet_data(dash.page)
    # labelled fields with the autocomplete hints password managers need; focus starts there
    user, password = dash.page.get_by_label("Username"), dash.page.get_by_label("Password")
    expect(user).to_have_attribute("autocomplete", "username")
    expect(password).to_have_attribute("autocomplete", "current-password")
    expect(password).to_have_attribute("type", "password")
    expect(user).to_be_focused()
    expect(dash.page.get_by_role("heading", name="Sign in")).to_be_visible()

    login(dash.page, dash.platform)
    # back on the page that was asked for, with data
    expect(dash.page).to_have_url(f"{dash.base_url}/#/alerts")
    expect(dash.page.locator("[data-testid=alert-row]").first).to_be_visible()
    expect(dash.page.locator("[data-testid=user-name]")).to_have_text(dash.platform.admin_user)
    token = dash.page_token()
    assert token, "no token in sessionStorage after signing in"
    assert dash.page.evaluate("localStorage.length") == 0, "nothing may be kept in localStorage"
    status, me = http(dash.base_url, "/auth/me", token=token)
    assert status == 200 and me["username"] == dash.platform.admin_user, (status, me)
    dash.assert_no_page_errors()


def test_wrong_password_shows_error_and_no_data(dash: Dash, auth: Auth) -> None:
    require_auth(auth)
    answers: list[tuple[str, int]] = []
    dash.page.on("response", lambda r: answers.append((r.url, r.status)) if "/api/v1/" in r.url else None)
    dash.open("#/", sign_in=False)
    expect(dash.page.locator("[data-testid=login-form]")).to_be_visible()

    dash.page.get_by_label("Username").fill(dash.platform.admin_user)
    dash.page.get_by_label("Password").fill(dash.platform.admin_password + "-wrong")
    dash.page.get_by_role("button", name="Sign in").click()
    error = dash.page.locator("[data-testid=login-error]")
    expect(error).to_be_visible()
    expect(error).to_have_text("Wrong username or password.")
    expect(error).to_have_attribute("role", "alert")
    expect(dash.page.get_by_label("Password")).to_have_attribute("aria-invalid", "true")
    expect(dash.page.locator("body")).to_have_attribute("data-auth", "signed-out")
    dash.page.wait_for_timeout(2500)  # a poll round: still nothing loads
    assert_no_fleet_data(dash.page)
    assert dash.page_token() is None
    token_answers = [s for u, s in answers if "/auth/token" in u]
    assert token_answers == [401], answers
    leaked = [(u, s) for u, s in answers if "/auth/token" not in u and s != 401]
    assert not leaked, f"API calls answered without a valid token: {leaked}"
    dash.assert_no_page_errors()


def test_too_many_attempts_shows_when_to_retry(dash: Dash, auth: Auth) -> None:
    """429 with Retry-After (faked here, so that the platform's real limiter is left alone)."""
    require_auth(auth)
    dash.open("#/", sign_in=False)
    dash.page.route("**/api/v1/auth/token", lambda route: route.fulfill(
        status=429, headers={"Retry-After": "42"}, content_type="application/json",
        body=json.dumps({"detail": "Too many failed login attempts"})))
    dash.page.get_by_label("Username").fill(dash.platform.admin_user)
    dash.page.get_by_label("Password").fill("whatever")
    dash.page.get_by_role("button", name="Sign in").click()
    error = dash.page.locator("[data-testid=login-error]")
    expect(error).to_contain_text("Too many failed sign-in attempts")
    expect(error).to_contain_text("Try again in 42 s")
    submit = dash.page.locator("[data-testid=login-submit]")
    expect(submit).to_be_disabled()
    expect(submit).to_contain_text("Try again in")
    assert_no_fleet_data(dash.page)
    dash.assert_no_page_errors()


def test_sign_out_returns_to_login_and_revokes_the_token(dash: Dash, auth: Auth) -> None:
    require_auth(auth)
    dash.open("#/")
    expect(dash.page.locator("[data-testid=asset-row]").first).to_be_visible()
    token = dash.page_token()
    assert token
    assert http(dash.base_url, "/auth/me", token=token)[0] == 200

    dash.page.get_by_role("button", name="Sign out").click()
    expect(dash.page.locator("[data-testid=login-form]")).to_be_visible()
    expect(dash.page.locator("[data-testid=login-notice]")).to_contain_text("signed out")
    assert_no_fleet_data(dash.page)
    assert dash.page_token() is None, "the token is still in sessionStorage after signing out"
    status, body = http(dash.base_url, "/auth/me", token=token)
    assert status == 401, f"the old token still works after Sign out: {status} {body}"

    # a reload does not bring the session back
    dash.page.reload()
    expect(dash.page.locator("[data-testid=login-form]")).to_be_visible()
    assert_no_fleet_data(dash.page)
    dash.assert_no_page_errors()


def test_ended_session_brings_back_the_login_form(dash: Dash, auth: Auth) -> None:
    """A token that stops working mid-session (revoked, expired) -> 401 -> sign-in form, no data."""
    require_auth(auth)
    dash.open("#/")
    expect(dash.page.locator("[data-testid=asset-row]").first).to_be_visible()
    token = dash.page_token()
    assert token
    assert http(dash.base_url, "/auth/logout", method="POST", token=token)[0] == 204
    expect(dash.page.locator("[data-testid=login-form]")).to_be_visible()  # next poll answers 401
    expect(dash.page.locator("[data-testid=login-notice]")).to_contain_text("session has ended")
    assert_no_fleet_data(dash.page)
    assert dash.page_token() is None

    # signing in again returns to the same page with data
    login(dash.page, dash.platform)
    expect(dash.page.locator("[data-testid=asset-row]").first).to_be_visible()
    dash.assert_no_page_errors()


@pytest.mark.parametrize("me", ["missing", "anonymous"])
def test_no_sign_in_when_the_server_needs_none(dash: Dash, me: str) -> None:
    """Authentication disabled on the server: the first calls work without a token, no form.

    Emulated on the live platform: /auth/me answers as such a server does, and every other call
    gets the test's own token added on the way (the page itself sends none).
    """
    sent_tokens: list[str] = []

    def as_open_server(route: Route) -> None:
        req = route.request
        if req.headers.get("authorization"):
            sent_tokens.append(req.url)
        if req.url.split("?")[0].endswith("/api/v1/auth/me"):
            if me == "missing":
                route.fulfill(status=404, content_type="application/json", body='{"detail": "Not Found"}')
            else:
                route.fulfill(status=200, content_type="application/json", body=json.dumps(
                    {"username": "anonymous", "role": "admin", "tenant": None, "kind": "anonymous"}))
            return
        headers = {k: v for k, v in req.headers.items() if k.lower() != "authorization"}
        if dash.token:
            headers["authorization"] = f"Bearer {dash.token}"
        route.continue_(headers=headers)

    dash.page.route("**/api/v1/**", as_open_server)
    dash.open("#/", sign_in=False)
    expect(dash.page.locator("body")).to_have_attribute("data-auth", "open")
    expect(dash.page.locator("[data-testid=asset-row]").first).to_be_visible()
    expect(dash.page.locator("[data-testid=login-form]")).to_have_count(0)
    expect(dash.page.locator("[data-testid=signout-btn]")).to_be_hidden()
    if me == "anonymous":
        expect(dash.page.locator("[data-testid=user-name]")).to_have_text("anonymous")
    else:
        expect(dash.page.locator("[data-testid=user-box]")).to_be_hidden()
    assert not sent_tokens, f"the page sent a token it never got: {sent_tokens[:3]}"
    dash.assert_no_page_errors()

"""The technician's incident inbox on a phone: headless Chromium (Playwright) at 390 x 844 with touch, against
a real platform.

The platform runs in this process on its own event loop in a thread (``ThreadedPlatform``): an embedded MQTT
broker, SQLite, the HTTP API and the dashboard on a real port, authentication on, and a ``ManualClock``, so
the test decides when time passes. A rule document uploaded through ``PUT /api/v1/alert-rules`` raises
``hot`` when ``temp`` goes over 80; the test publishes that telemetry over MQTT, as a device does. Nothing
here sleeps: the page is waited on with Playwright's ``expect``, and the API is read only after the page
showed the result of the call that changed it.

The browser is Debian's chromium (``EDGELOOP_CHROMIUM`` overrides the path); a missing browser fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.browser_platform import (
    PHONE,
    UI_TIMEOUT_MS,
    Pump,
    ThreadedPlatform,
    chromium,
    running,
    watched_page,
)

pytestmark = pytest.mark.browser

ASSET, DEVICE = "pump-1", "pump-1-dev"
ADMIN_PASSWORD = "inbox-admin-password"
USERS = {"tina": ("technician", "tina-password-1"), "vera": ("viewer", "vera-password-1"),
         "olga": ("operator", "olga-password-1"), "otto": ("operator", "otto-password-1")}
#: an action policy that needs two people's approval: when the pump runs hot, turn its fan up (JSON, as the API
#: takes it too)
TWO_PERSON_POLICY = {"policies": [{
    "name": "fan-up", "mode": "on", "trigger": {"kind": "alert", "rule": "hot"}, "approval": "two", "ttl_s": 3600,
    "action": {"kind": "setpoint", "actuator": "fan", "value": 2, "device": "pump-1-dev"}}]}


@pytest.fixture
def live(tmp_path: Path) -> Iterator[ThreadedPlatform]:
    yield from running(tmp_path / "platform", pumps=[Pump(DEVICE, ASSET, "Pump 1", "line-a")], users=USERS,
                       admin_password=ADMIN_PASSWORD)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium()


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:
    """A phone: 390 x 844, touch, mobile viewport; JavaScript errors fail the test."""
    yield from watched_page(browser, viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2,
                            locale="en-US")


# ---------------------------------------------------------------------------
# helpers


def sign_in(page: Page, live: ThreadedPlatform, user: str, hash_route: str) -> None:
    page.goto(f"{live.base_url}/{hash_route}")
    form = page.locator("[data-testid=login-form]")
    expect(form).to_be_visible()
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(USERS[user][1])
    page.get_by_role("button", name="Sign in").tap()
    expect(page.locator("body")).to_have_attribute("data-auth", "signed-in")
    expect(page.locator("[data-testid=user-name]")).to_have_text(user)


def assert_fits(page: Page, where: str) -> None:
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{where} scrolls sideways at {width[1]} px: content is {width[0]} px wide"


def assert_touch_targets(buttons: Locator, where: str) -> None:
    n = buttons.count()
    assert n > 0, f"no buttons in {where}"
    for i in range(n):
        b = buttons.nth(i)
        box = b.bounding_box()
        assert box is not None, f"{where}: button {b.inner_text()!r} is not shown"
        assert box["height"] >= 44 and box["width"] >= 44, f"{where}: {b.inner_text()!r} is {box} (< 44 px)"
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], f"{where}: {b.inner_text()!r} off screen"


def assert_no_leaks(page: Page, where: str) -> None:
    words = page.locator("#view").inner_text().split()
    assert "null" not in words and "undefined" not in words and "NaN" not in words, \
        f"{where}: a missing value leaked into the page as text"


def shot(page: Page, name: str, *, full_page: bool = False) -> None:
    """What the phone's screen shows (for a person to look at; nothing is compared)."""
    page.screenshot(path=f"/tmp/edgeloop-inbox-{name}.png", full_page=full_page)


# ---------------------------------------------------------------------------
# tests


def test_a_technician_works_an_incident_from_a_phone(live: ThreadedPlatform, phone: Page) -> None:
    page = phone
    sign_in(page, live, "tina", "#/incidents")
    expect(page.locator("[data-testid=incident-empty]")).to_be_visible()
    expect(page.locator("[data-testid=nav-incident-count]")).to_be_hidden()
    assert_fits(page, "the empty inbox")

    # the pump runs hot: an incident appears in the inbox, with what the API says about it
    live.telemetry(DEVICE, 70, 84, 86)
    [inc] = live.call("GET", "/incidents?inbox=true", who="tina")
    iid = inc["id"]
    card = page.locator(f"[data-testid=incident-card][data-incident-id='{iid}']")
    expect(card).to_be_visible()
    expect(page.locator("[data-testid=incident-card]")).to_have_count(1)
    expect(card).to_have_attribute("data-status", "open")
    expect(card.locator("[data-testid=incident-title]")).to_have_text(inc["title"])
    expect(card.locator("[data-testid=incident-priority]")).to_have_attribute("data-route", inc["route"])
    expect(card.locator("[data-testid=incident-priority]")).to_contain_text(f"P{round(inc['priority'])}")
    expect(card.locator("[data-testid=incident-assets]")).to_have_text("Pump 1")
    expect(card.locator("[data-testid=incident-assignee]")).to_have_text("Unassigned")
    expect(page.locator("[data-testid=nav-incident-count]")).to_have_text("1")
    assert_touch_targets(card.locator("button"), "the incident card")
    assert_touch_targets(page.locator("[data-testid=incident-toggle] button"), "the inbox / resolved toggle")
    assert_fits(page, "the inbox")
    assert_no_leaks(page, "the inbox")
    shot(page, "inbox")

    # one tap acknowledges it, as tina
    card.get_by_role("button", name="Acknowledge").tap()
    expect(card).to_have_attribute("data-status", "acknowledged")
    expect(card.locator("[data-testid=incident-status]")).to_have_text("acknowledged")
    rec = live.call("GET", f"/incidents/{iid}", who="tina")
    assert (rec["status"], rec["acknowledged_by"]) == ("acknowledged", "tina")
    expect(page.locator("[data-testid=nav-incident-count]")).to_be_hidden()  # nothing left unacknowledged

    # Confirm opens a chooser; a fault type the API refuses is explained at the card, and nothing is stored
    card.get_by_role("button", name="Confirm").tap()
    chooser = card.locator("[data-testid=verdict-chooser]")
    expect(chooser).to_be_visible()
    assert_touch_targets(chooser.locator("button"), "the fault type chooser")
    assert_fits(page, "the inbox with the chooser open")
    shot(page, "chooser")
    chooser.locator("[data-testid=chooser-input]").fill("bearing/wear")
    chooser.locator("[data-testid=chooser-send]").tap()
    error = card.locator("[data-testid=incident-error]")
    expect(error).to_be_visible()
    expect(error).to_contain_text("lowercase letters")  # the API's 422 detail, word for word
    expect(page.locator(".toast-error")).to_contain_text("lowercase letters")
    assert live.call("GET", "/labels", who="tina") == []
    # ... and one more tap on a common fault type sends the verdict
    chooser.locator("[data-testid=chooser-option][data-value=bearing_wear]").tap()
    expect(chooser).to_have_count(0)
    expect(error).to_be_hidden()
    expect(card.locator("[data-testid=incident-verdict]")).to_have_text("Confirmed: bearing wear")
    [label] = live.call("GET", "/labels", who="tina")
    assert (label["incident"], label["asset"], label["verdict"], label["fault_type"], label["by"]) == (
        iid, ASSET, "confirmed", "bearing_wear", "tina")

    # the detail page: who and when, the alert with its explanation, the timeline
    card.locator("[data-testid=incident-title]").tap()
    expect(page).to_have_url(f"{live.base_url}/#/incidents/{iid}")
    expect(page.locator("[data-testid=incident-heading]")).to_have_text(inc["title"])
    expect(page.locator("[data-testid=incident-acknowledged]")).to_contain_text("tina at ")
    alert = page.locator("[data-testid=incident-alert]")
    expect(alert).to_have_count(1)
    [api_alert] = live.call("GET", f"/incidents/{iid}", who="tina")["alerts"]
    expect(alert.locator("[data-testid=alert-message]")).to_have_text(api_alert["message"])
    expect(alert.locator("[data-testid=explanation]")).to_contain_text("temp")
    expect(alert.locator("[data-testid=explanation]")).to_contain_text("100 %")
    entries = page.locator("[data-testid=timeline-entry]")
    ack = entries.filter(has_text="open → acknowledged")
    expect(ack).to_have_count(1)
    expect(ack.locator("[data-testid=timeline-actor]")).to_have_text("tina")
    expect(entries.first).to_have_attribute("data-kind", "opened")
    expect(page.locator("[data-testid=incident-verdicts]")).to_contain_text("Confirmed: bearing wear")
    # why was nobody paged? the platform had only just started
    page.locator("[data-testid=why-panel] summary").tap()
    why = page.locator("[data-testid=why-not-paged] [data-testid=suppression]")
    expect(why).to_have_count(1)
    expect(why).to_have_attribute("data-reason", "startup_grace")
    expect(why).to_contain_text("this incident")
    assert_touch_targets(page.locator("[data-testid=incident-actions] button:visible"), "the incident's actions")
    assert_fits(page, "the incident page")
    assert_no_leaks(page, "the incident page")
    shot(page, "detail")
    shot(page, "detail-full", full_page=True)

    # assign it to me, start work, leave a comment
    page.locator("[data-testid=detail-assign-me]").tap()
    expect(page.locator("[data-testid=incident-facts] [data-testid=incident-assignee]")).to_have_text("tina")
    page.locator("[data-testid=detail-start]").tap()
    expect(page.locator("[data-testid=incident-status]")).to_have_text("in progress")
    page.locator("[data-testid=detail-comment]").tap()
    page.locator("[data-testid=comment-text]").fill("outboard bearing runs hot, grease dry")
    page.locator("[data-testid=comment-form-send]").tap()
    expect(entries.filter(has_text="outboard bearing runs hot")).to_have_count(1)

    # resolve it with a note
    page.locator("[data-testid=detail-resolve]").tap()
    page.locator("[data-testid=resolve-note]").fill("bearing replaced")
    page.locator("[data-testid=resolve-form-send]").tap()
    expect(page.locator("[data-testid=incident-status]")).to_have_text("resolved")
    expect(entries.filter(has_text="in_progress → resolved: bearing replaced")).to_have_count(1)
    rec = live.call("GET", f"/incidents/{iid}", who="tina")
    assert (rec["status"], rec["assignee"]) == ("resolved", "tina")
    people = [(e["kind"], e["actor"], e["detail"]) for e in rec["timeline"] if e["actor"] != "system"]
    assert people == [("status", "tina", "open → acknowledged"),
                      ("verdict", "tina", "pump-1/hot: confirmed (bearing_wear)"),
                      ("assigned", "tina", "assigned to tina"),
                      ("status", "tina", "acknowledged → in_progress"),
                      ("comment", "tina", "outboard bearing runs hot, grease dry"),
                      ("status", "tina", "in_progress → resolved: bearing replaced")]

    # closing while the pump is still hot is refused by the API (409), and the page says why
    expect(page.locator("[data-testid=condition-active]")).to_be_visible()
    page.locator("[data-testid=detail-close]").tap()
    detail_error = page.locator("[data-testid=incident-actions] [data-testid=incident-error]")
    expect(detail_error).to_be_visible()
    expect(detail_error).to_contain_text("still active")
    assert live.call("GET", f"/incidents/{iid}", who="tina")["status"] == "resolved"

    # the temperature comes down and stays down: the condition clears, then closing works
    live.advance(30_000)
    live.telemetry(DEVICE, 70)
    live.advance(310_000)
    expect(alert).to_have_attribute("data-status", "resolved")
    expect(page.locator("[data-testid=condition-active]")).to_be_hidden()
    page.locator("[data-testid=detail-close]").tap()
    expect(page.locator("[data-testid=incident-status]")).to_have_text("closed")
    expect(detail_error).to_be_hidden()
    assert live.call("GET", f"/incidents/{iid}", who="tina")["status"] == "closed"
    shot(page, "closed")

    # the inbox is empty again; the incident is under resolved / closed with its verdict
    page.locator("a.back-link").tap()
    expect(page.locator("[data-testid=incident-empty]")).to_be_visible()
    page.get_by_role("button", name="Resolved / closed").tap()
    expect(page).to_have_url(f"{live.base_url}/#/incidents?show=done")
    done = page.locator(f"[data-testid=incident-card][data-incident-id='{iid}']")
    expect(done).to_have_attribute("data-status", "closed")
    expect(done.locator("[data-testid=incident-verdict]")).to_have_text("Confirmed: bearing wear")
    assert_fits(page, "the resolved / closed list")


def test_a_false_alarm_takes_two_taps_and_a_viewer_can_only_read(live: ThreadedPlatform, phone: Page,
                                                                  browser: Browser) -> None:
    live.telemetry(DEVICE, 70, 90)
    [inc] = live.call("GET", "/incidents?inbox=true", who="tina")
    page = phone
    sign_in(page, live, "tina", "#/incidents")
    card = page.locator(f"[data-testid=incident-card][data-incident-id='{inc['id']}']")
    card.get_by_role("button", name="False alarm").tap()
    chooser = card.locator("[data-testid=verdict-chooser][data-verdict=false_alarm]")
    chooser.locator("[data-testid=chooser-option]").filter(has_text="Planned work or test run").tap()
    expect(card.locator("[data-testid=incident-verdict]")).to_have_text("False alarm: Planned work or test run")
    [label] = live.call("GET", "/labels", who="tina")
    assert (label["verdict"], label["reason"], label["fault_type"], label["by"]) == (
        "false_alarm", "Planned work or test run", "", "tina")
    assert live.call("GET", f"/incidents/{inc['id']}", who="tina")["status"] == "open"  # a verdict is not a move

    # a viewer sees the same inbox and the incident, but no button that would only earn a 403
    ctx = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, locale="en-US")
    ctx.set_default_timeout(UI_TIMEOUT_MS)
    try:
        viewer = ctx.new_page()
        sign_in(viewer, live, "vera", "#/incidents")
        vcard = viewer.locator(f"[data-testid=incident-card][data-incident-id='{inc['id']}']")
        expect(vcard.locator("[data-testid=incident-verdict]")).to_have_text("False alarm: Planned work or test run")
        expect(vcard.locator("button")).to_have_count(0)
        expect(viewer.get_by_text("acting on them needs the technician role")).to_be_visible()
        vcard.locator("[data-testid=incident-title]").tap()
        expect(viewer.locator("[data-testid=incident-heading]")).to_have_text(inc["title"])
        expect(viewer.locator("[data-testid=incident-actions]")).to_have_count(0)
        expect(viewer.locator("[data-testid=timeline-entry]").first).to_be_visible()
        assert_fits(viewer, "the incident page of a viewer")
    finally:
        ctx.close()
    live.call("POST", f"/incidents/{inc['id']}/acknowledge", who="vera", expect_status=403)


def test_a_missing_incident_shows_no_actions(live: ThreadedPlatform, phone: Page) -> None:
    """A link to an incident that does not exist (or belongs to another tenant) says so, with no facts and no
    button that could only fail."""
    sign_in(phone, live, "tina", "#/incidents/987654")
    expect(phone.get_by_text("Incident #987654 not found.")).to_be_visible()
    expect(phone.locator("[data-testid=incident-actions]")).to_be_hidden()
    expect(phone.locator("[data-testid=incident-facts]")).to_be_hidden()
    expect(phone.locator("#view button:visible")).to_have_count(0)


def test_two_operators_approve_an_action_from_their_phones(live: ThreadedPlatform, phone: Page,
                                                           browser: Browser) -> None:
    """The pump runs hot; the policy wants the fan up and needs two people. Olga approves from her phone (once:
    her second tap is refused, the card says why), then Otto approves from his, and the command is sent."""
    live.call("PUT", "/policies?tenant=acme", body=TWO_PERSON_POLICY)
    live.telemetry(DEVICE, 70, 90)
    sign_in(phone, live, "olga", "#/incidents")
    card = phone.locator("[data-testid=approval-card]")
    expect(card).to_have_count(1)
    [waiting] = live.call("GET", "/decisions?state=awaiting_approval", who="olga")
    expect(card).to_have_attribute("data-decision-id", waiting["id"])
    expect(card.locator("[data-testid=approval-action]")).to_have_text("fan -> 2 on Pump 1 (pump-1-dev)")
    expect(card.locator("[data-testid=approval-count]")).to_have_text("0 of 2 approvals")
    assert_touch_targets(card.locator("button"), "the approval card")
    assert_fits(phone, "the inbox with an approval")
    assert_no_leaks(phone, "the inbox with an approval")
    shot(phone, "approval")

    card.get_by_role("button", name="Approve").tap()
    expect(card.locator("[data-testid=approval-count]")).to_have_text("1 of 2 approvals")
    card.get_by_role("button", name="Approve").tap()
    expect(card.locator("[data-testid=approval-error]")).to_contain_text("must come from another person")
    assert live.call("GET", "/commands", who="olga") == [], "one person's approval sends nothing"

    ctx = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, locale="en-US")
    ctx.set_default_timeout(UI_TIMEOUT_MS)
    try:
        other = ctx.new_page()
        sign_in(other, live, "otto", "#/incidents")
        theirs = other.locator(f"[data-testid=approval-card][data-decision-id='{waiting['id']}']")
        expect(theirs.locator("[data-testid=approval-count]")).to_have_text("1 of 2 approvals")
        theirs.get_by_role("button", name="Approve").tap()
        expect(other.locator("[data-testid=approvals]")).to_be_hidden()
    finally:
        ctx.close()
    decision = live.call("GET", f"/decisions/{waiting['id']}", who="vera")
    assert decision["decision"]["state"] == "sent"
    assert [e["actor"] for e in decision["entries"] if e["kind"] == "approved"] == ["olga", "otto"]
    [command] = live.call("GET", "/commands", who="vera")
    assert (command["device"], command["action"], command["value"], command["decision"]) == (
        "pump-1-dev", "fan", 2, waiting["id"])

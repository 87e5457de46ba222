"""The dashboard's pages of the learning loop, in headless Chromium against a real platform with a PKI (so that it
signs and verifies model versions): the model list, a model's page (versions, alias history, the lineage of a
version back to the built-in detector, its model card), a lineage that is incomplete shown as such, the alert
card's link to the model version that raised the alert, the asset page's drift events, and a rollout campaign's
pages (its phases, gates and log; approve and abort, refused inline for whoever may not).

The platform (tests/browser_platform.py, with a PKI added) runs in this process on its own event loop in a thread.
The test registers versions through the registry (a detector model's versions come from training, with a card)
and through the API (a raw ONNX edge model), promotes and starts a campaign through the API, and stores an alert
and a drift event through the store, as the alert service and the drift monitor would. Nothing sleeps: the page is
waited on with Playwright's ``expect``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from edgeloop.messages import Alert, Severity
from edgeloop.models.detector_artifact import dump_detectors
from edgeloop.models.manifest import DataWindow, Trigger
from edgeloop.store.base import DriftRecord
from tests.browser_platform import PHONE, T0, TENANT, Pump, ThreadedPlatform, chromium, watched_page
from tests.support import open_alert
from tests.test_model_registry import tiny_onnx

pytestmark = pytest.mark.browser

ADMIN_PASSWORD = "models-admin-password"
USERS = {"vera": ("viewer", "vera-password-1"), "otto": ("operator", "otto-password-1")}
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
HOUR, DAY = 3_600_000, 86_400_000
DETECTOR = dump_detectors({})  # a valid artifact (no device fitted: each keeps the built-in detector)


def metrics(*, fa_rate: float, fa_window: int, recall: float | None, delay_s: float | None, p99: float
            ) -> dict[str, Any]:
    """One model's figures on the held-out span, as ``edgeloop.models.training.ModelMetrics``."""
    return {"rows_scored": 259_200, "asset_days": 6.0, "alarms": 5, "false_alarms": round(fa_rate * 6),
            "false_alarms_per_asset_day": fa_rate, "false_alarm_window_onsets": fa_window, "faults": 2,
            "detected": 2 if recall else 0, "recall": recall, "median_delay_s": delay_s,
            "score_quantiles": {"p50": 0.21, "p90": 0.48, "p99": p99, "p99.9": p99 * 1.4}, "share_above_1": 0.004}


def card(champion: str) -> dict[str, Any]:
    """A model card as ``edgeloop.models.training.ModelCard`` writes it: the candidate beat the champion."""
    return {"detector": "robust-ensemble-v2", "champion": champion, "window_start_ms": T0 - 10 * DAY,
            "window_end_ms": T0, "split_ms": T0 - 3 * DAY, "holdout_fraction": 0.3, "pad_before_ms": HOUR,
            "pad_after_ms": HOUR, "grace_ms": 600_000, "warmup_samples": {}, "ensemble_warmup": {},
            "devices": [{"device": "pump-1", "rows": 864_000, "train_rows": 604_800, "reference_rows": 600_000,
                         "cut_rows": 4_800, "heldout_rows": 259_200, "trained": True}],
            "labels": {"confirmed": 2, "false_alarm": 3},
            "candidate_metrics": metrics(fa_rate=0.17, fa_window=0, recall=1.0, delay_s=95.0, p99=0.83),
            "champion_metrics": metrics(fa_rate=0.83, fa_window=3, recall=0.5, delay_s=240.0, p99=1.31),
            "per_device": {}, "verdict": "better",
            "reasons": ["false alarms per asset-day 0.17 against 0.83", "no confirmed fault missed"]}


WINDOW = DataWindow(window_start_ms=T0 - 10 * DAY, window_end_ms=T0, devices=["pump-1", "pump-2"], rows=1_728_000,
                    data_sha256="ab" * 32)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedPlatform]:
    """A platform with a PKI and: detector.pump v1 (drift), v2 (labels; champion after v1) and v3 (no data window:
    an incomplete lineage); edge.fan v1, v2 whose parent v1's signature is broken; edge.pump v1 uploaded raw; an
    alert raised by detector.pump@2 and a drift event of pump-1 from it; an alert of the built-in detector.valve@0."""
    root = tmp_path_factory.mktemp("models-dashboard")
    p = ThreadedPlatform(root / "platform", pumps=[Pump("pump-1", "pump-1", "Pump 1", "line-a"),
                                                   Pump("pump-2", "pump-2", "Pump 2", "line-a")],
                         users=USERS, admin_password=ADMIN_PASSWORD)
    p.config = dataclasses.replace(p.config, pki_dir=root / "pki", create_pki=True)
    try:
        p.start()
        p.advance_to(T0 + 150_000)
        seed(p)
        yield p
    finally:
        p.stop()


def seed(p: ThreadedPlatform) -> None:
    models = p.platform.models
    assert models is not None

    async def detectors() -> None:
        await models.register("detector", "detector.pump", DETECTOR, by="trainer", parent="detector.pump@0",
                              trigger=Trigger(kind="drift", by="drift-monitor", ref="drift-7"), data=WINDOW,
                              label_ids=[11, 12], metrics={"false_alarms_per_asset_day": 0.4, "recall": 0.5},
                              card=card("built-in"))
        await models.register("detector", "detector.pump", DETECTOR, by="trainer", parent="detector.pump@1",
                              trigger=Trigger(kind="labels", by="retraining-policy", ref="job-3"), data=WINDOW,
                              label_ids=[11, 12, 15, 16, 17],
                              metrics={"alarms": 3.0, "false_alarms_per_asset_day": 0.17, "median_delay_s": 95.0,
                                       "recall": 1.0}, card=card("detector.pump@1"))
        await models.register("detector", "detector.pump", DETECTOR, by="trainer", parent="detector.pump@2",
                              trigger=Trigger(kind="labels", by="retraining-policy", ref="job-5"),  # no data window
                              metrics={"alarms": 4.0, "faults": 2.0, "false_alarms_per_asset_day": 0.2, "recall": 0.5})
        await models.register("edge", "edge.fan", b"fan-onnx-1" * 8, by="ana", trigger=Trigger(kind="person", by="ana"))
        await models.register("edge", "edge.fan", b"fan-onnx-2" * 8, by="ana", parent="edge.fan@1",
                              trigger=Trigger(kind="person", by="ana"))
        await p.platform.store.driver.execute(  # v1's manifest changed after it was signed
            "UPDATE model_versions SET signature=? WHERE name='edge.fan' AND version=1",
            (b"\x30\x06\x02\x01\x01\x02\x01\x01",))
        await open_alert(p.platform.store, Alert(
            tenant=TENANT, asset="pump-1", device="pump-1", kind="anomaly", severity=Severity.WARNING,
            first_seen=T0 + 60_000, last_seen=T0 + 61_000, score=2.5, message="temp above what the load explains",
            explanation={"temp": 1.0}, detector="robust-ensemble-v2", model="detector.pump@2"))
        await open_alert(p.platform.store, Alert(
            tenant=TENANT, asset="pump-2", device="pump-2", kind="anomaly", severity=Severity.WARNING,
            first_seen=T0 + 60_000, last_seen=T0 + 61_000, score=1.5, message="vibration unlike its own history",
            explanation={"temp": 1.0}, detector="robust-ensemble-v2", model="detector.valve@0"))
        await p.platform.store.add_drift_event(DriftRecord(
            tenant=TENANT, device="pump-1", asset="pump-1", profile="pump", model="detector.pump@2", kind="input",
            since_ms=T0 - 2 * HOUR, detected_ms=T0 - HOUR, figure=0.42, threshold=0.25,
            channels={"temp": 0.42, "flow": 0.31}, message="temp and flow left the training reference"))

    p.run(detectors())
    for version, reason in ((1, "better than the built-in detector"), (2, "campaign 4 passed")):
        p.call("POST", "/models/detector.pump/promote", body={"version": version, "reason": reason})
    req = urllib.request.Request(f"{p.base_url}/api/v1/models/import?kind=edge&name=edge.pump", data=tiny_onnx(),
                                 method="POST", headers={"Content-Type": "application/octet-stream",
                                                         "Authorization": f"Bearer {p.tokens['admin']}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.load(resp)["version"] == 1


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from watched_page(browser, viewport=DESKTOP, locale="en-US", timezone_id="UTC")


def sign_in(page: Page, live: ThreadedPlatform, hash_route: str, user: str = "admin") -> None:
    page.goto(f"{live.base_url}/{hash_route}")
    fill_sign_in(page, user)


def fill_sign_in(page: Page, user: str) -> None:
    expect(page.locator("[data-testid=login-form]")).to_be_visible()
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(ADMIN_PASSWORD if user == "admin" else USERS[user][1])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("body")).to_have_attribute("data-auth", "signed-in")


# ---------------------------------------------------------------------------


def test_the_model_list_shows_each_model_with_its_champion_and_newest_version(live: ThreadedPlatform,
                                                                            page: Page) -> None:
    sign_in(page, live, "#/models", user="vera")  # reading models takes a viewer
    rows = page.locator("[data-testid=model-row]")
    expect(rows).to_have_count(3)
    expect(rows.locator("[data-testid=model-link]")).to_have_text(["detector.pump", "edge.fan", "edge.pump"])
    pump = page.locator("[data-testid=model-row][data-model='detector.pump']")
    expect(pump.locator("[data-testid=model-champion]")).to_have_text("v2")
    expect(pump.locator("[data-testid=model-challenger]")).to_have_text("—")
    expect(pump.locator("[data-testid=model-versions]")).to_have_text("3")
    expect(pump.locator("[data-testid=model-newest]")).to_contain_text("v3")
    expect(pump.locator("[data-testid=model-newest]")).to_contain_text("labels by retraining-policy (job-5)")
    expect(pump.locator("[data-testid=model-metrics]")).to_have_text(
        "false alarms per asset day 0.20 · recall 50 % · alarms 4 · +1 more")
    edge = page.locator("[data-testid=model-row][data-model='edge.pump']")
    expect(edge.locator("[data-testid=model-champion]")).to_have_text("—")  # an edge model has no built-in
    expect(edge.locator("[data-testid=model-newest]")).to_contain_text("person by admin (upload)")
    fan = page.locator("[data-testid=model-row][data-model='edge.fan']")
    expect(fan.locator("[data-testid=model-metrics]")).to_have_text("—")

    pump.locator("[data-testid=model-link]").click()
    expect(page).to_have_url(f"{live.base_url}/#/models/detector.pump")
    expect(page.locator("h1")).to_have_text("detector.pump")


def test_a_model_page_shows_versions_alias_history_lineage_and_card_of_the_champion(live: ThreadedPlatform,
                                                                                    page: Page) -> None:
    sign_in(page, live, "#/models/detector.pump")
    versions = page.locator("[data-testid=version-row]")
    expect(versions.locator("[data-testid=version-link]")).to_have_text(["v3", "v2", "v1"])
    v2 = page.locator("[data-testid=version-row][data-version='2']")
    expect(v2.locator("[data-testid=version-aliases]")).to_have_text("champion")
    expect(v2).to_contain_text("labels by retraining-policy (job-3)")
    expect(v2).to_contain_text("detector.pump@1")
    expect(v2).to_contain_text("false alarms per asset day 0.17 · recall 100 % · median delay 1.6 min · alarms 3")

    # the alias history, newest first: who promoted what, when, why
    events = page.locator("[data-testid=alias-event]")
    expect(events).to_have_count(2)
    expect(events.nth(0)).to_contain_text("champion set: v1 → v2")
    expect(events.nth(0)).to_contain_text("admin")
    expect(events.nth(0)).to_contain_text("campaign 4 passed")
    expect(events.nth(1)).to_contain_text("champion set: unset → v1")

    # the champion's lineage: v2 → v1 → the built-in detector, each link verified
    expect(page.locator("[data-testid=chosen-version]")).to_have_text("v2 (champion)")
    status = page.locator("[data-testid=lineage-status]")
    expect(status).to_have_attribute("data-complete", "true")
    expect(status).to_contain_text("Complete lineage")
    steps = page.locator("[data-testid=lineage-step]")
    expect(steps).to_have_count(3)
    assert [steps.nth(k).get_attribute("data-ref") for k in range(3)] == [
        "detector.pump@2", "detector.pump@1", "detector.pump@0"]
    expect(steps.locator("[data-testid=lineage-verified]")).to_have_text(
        ["signature verified", "signature verified", "built-in"])
    first = steps.nth(0)
    expect(first.locator("[data-testid=lineage-trigger]")).to_have_text("labels by retraining-policy (job-3)")
    expect(first.locator("[data-testid=lineage-labels]")).to_have_text("5 labels: #11, #12, #15, #16, #17")
    expect(first.locator("[data-testid=lineage-data]")).to_contain_text("1,728,000 rows · 2 devices")
    expect(first.locator("[data-testid=lineage-data]")).to_contain_text("(10 d 0 h)")
    expect(first.locator("[data-testid=lineage-code]")).not_to_have_text("—")
    expect(steps.nth(1).locator("[data-testid=lineage-trigger]")).to_have_text("drift by drift-monitor (drift-7)")

    # the model card: this version against the champion it was trained to replace, on the same held-out span
    expect(page.locator("[data-testid=card-verdict]")).to_have_attribute("data-verdict", "better")
    expect(page.locator("[data-testid=card-reasons] li")).to_have_text(
        ["false alarms per asset-day 0.17 against 0.83", "no confirmed fault missed"])
    expect(page.locator("[data-testid=card-table] thead")).to_contain_text("Champion (detector.pump@1)")

    def row(metric: str) -> list[str]:
        r = page.locator(f"[data-testid=card-row][data-metric='{metric}']")
        return [r.locator(f"[data-testid={side}]").inner_text() for side in ("card-candidate", "card-champion")]

    expect(page.locator("[data-testid=card-row]").first).to_be_visible()
    assert row("fa_rate") == ["0.17", "0.83"]
    assert row("fa_window_onsets") == ["0", "3"]
    assert row("recall") == ["100 %", "50 %"]
    assert row("median_delay") == ["1.6 min", "4.0 min"]
    assert row("score_p99") == ["0.83", "1.31"]

    # another version, chosen from the table: its own lineage and card
    page.locator("[data-testid=version-row][data-version='1'] [data-testid=version-link]").click()
    expect(page.locator("[data-testid=chosen-version]")).to_have_text("v1")
    expect(page.locator("[data-testid=lineage-step]")).to_have_count(2)
    expect(page.locator("[data-testid=card-table] thead")).to_contain_text("Champion (built-in)")


def test_an_incomplete_lineage_says_so_and_where(live: ThreadedPlatform, page: Page) -> None:
    sign_in(page, live, "#/models/detector.pump?version=3")
    status = page.locator("[data-testid=lineage-status]")
    expect(status).to_have_attribute("data-complete", "false")
    expect(status).to_contain_text("Incomplete lineage")
    expect(status).not_to_contain_text("Complete lineage")
    expect(status.locator("li")).to_have_text(
        ["detector.pump@3: trained (trigger labels) but its training data window is not recorded"])
    newest = page.locator("[data-testid=lineage-step][data-ref='detector.pump@3']")
    expect(newest.locator("[data-testid=lineage-data]")).to_have_text(
        "MISSING: a trained version without its data window")
    expect(page.locator("[data-testid=card-box]")).to_have_text(re.compile(
        r"^No model card\.This version was trained \(trigger labels\) but records neither its training data nor an "
        r"evaluation\.Figures in its manifest: false alarms per asset day 0\.20 · recall 50 % · alarms 4 · faults 2$"))

    # a parent whose signature no longer checks out: the link is marked, the lineage incomplete
    page.goto(f"{live.base_url}/#/models/edge.fan?version=2")
    status = page.locator("[data-testid=lineage-status]")
    expect(status).to_have_attribute("data-complete", "false")
    expect(status).to_contain_text("edge.fan@1: signature not verified (bad_signature")
    parent = page.locator("[data-testid=lineage-step][data-ref='edge.fan@1']")
    expect(parent.locator("[data-testid=lineage-verified]")).to_have_text("signature NOT verified")
    expect(parent.locator("[data-testid=lineage-problem]")).to_contain_text("bad_signature")
    expect(page.locator("[data-testid=lineage-verified]").first).to_have_text("signature verified")
    expect(page.locator("[data-testid=card-box]")).to_have_text(re.compile(
        r"^No model card\.This version was not trained on this platform \(an imported model\): there is no "
        r"held-out evaluation\.$"))


def test_the_alert_card_links_to_the_model_version_that_raised_it(live: ThreadedPlatform, page: Page) -> None:
    sign_in(page, live, "#/alerts")
    card = page.locator("[data-testid=alert-row]").filter(has_text="temp above what the load explains")
    link = card.locator("[data-testid=alert-model-link]")
    expect(link).to_have_text("detector.pump@2")
    link.click()
    expect(page).to_have_url(f"{live.base_url}/#/models/detector.pump?version=2")
    expect(page.locator("[data-testid=chosen-version]")).to_have_text("v2 (champion)")
    expect(page.locator("[data-testid=lineage-status]")).to_have_attribute("data-complete", "true")

    # the built-in detector of a profile with no trained version: its link says so
    page.goto(f"{live.base_url}/#/alerts")
    builtin = page.locator("[data-testid=alert-row]").filter(has_text="vibration unlike its own history")
    builtin.locator("[data-testid=alert-model-link]").click()
    expect(page).to_have_url(f"{live.base_url}/#/models/detector.valve?version=0")
    expect(page.locator("main")).to_contain_text("No trained version of this model yet.")
    expect(page.locator("main")).to_contain_text("The built-in online detector (v0) serves this profile")


def test_the_asset_page_lists_its_drift_events(live: ThreadedPlatform, page: Page) -> None:
    sign_in(page, live, "#/asset/pump-1", user="vera")
    event = page.locator("[data-testid=asset-drift] [data-testid=drift-event]")
    expect(event).to_have_count(1)
    expect(event).to_have_attribute("data-kind", "input")
    expect(event).to_contain_text("Input drift")
    expect(event.locator("[data-testid=drift-channel]")).to_have_text(["temp 0.42", "flow 0.31"])
    expect(event.locator("[data-testid=drift-figure]")).to_have_text("0.42 (limit 0.25)")
    expect(event.locator("[data-testid=drift-since]")).to_have_text("2026-11-18 09:06:40")
    expect(event.locator("[data-testid=drift-detected]")).to_have_text("2026-11-18 10:06:40")
    expect(event.locator("[data-testid=drift-model] a")).to_have_attribute("href", "#/models/detector.pump?version=2")

    page.goto(f"{live.base_url}/#/asset/pump-2")  # a drift-free asset says so
    expect(page.locator("[data-testid=asset-drift]")).to_contain_text("No drift for this asset.")


def test_a_campaign_page_follows_a_rollout_through_approval_and_abort(live: ThreadedPlatform, page: Page,
                                                                     browser: Browser) -> None:
    """A campaign without shadow that waits for approval before each wave: the operator of a tenant may not
    approve it (said inline); the platform's administrator approves wave 1, then aborts with a reason."""
    started = live.call("POST", "/campaigns", expect_status=201, body={"model": "detector.pump@3", "plan": {
        "waves": [0.5, 1.0], "shadow_h": 0, "soak_h": 1, "approvals": [True, True], "probes": False}})
    cid = started["spec"]["id"]

    ctx = browser.new_context(viewport=DESKTOP, locale="en-US", timezone_id="UTC")
    try:
        other = ctx.new_page()
        sign_in(other, live, f"#/campaigns/{cid}", user="otto")
        expect(other.locator("[data-testid=approve-btn]")).to_be_enabled()
        other.locator("[data-testid=approve-btn]").click()
        expect(other.locator("[data-testid=campaign-error]")).to_contain_text(
            "Not allowed: otto (operator) may not approve this campaign")
        expect(other.locator("[data-testid=campaign-phase]")).to_have_attribute("data-phase", "awaiting_approval")
    finally:
        ctx.close()

    sign_in(page, live, f"#/campaigns/{cid}")
    phase = page.locator("[data-testid=campaign-phase]")
    expect(phase).to_have_text("Awaiting approval for wave 1 of 2 (50 % of targets)")
    expect(page.locator("[data-testid=campaign-subject]")).to_have_text(
        "detector.pump: detector.pump@2 → detector.pump@3")
    expect(page.locator("[data-testid=campaign-subject] a").nth(1)).to_have_attribute(
        "href", "#/models/detector.pump?version=3")
    rows = page.locator("[data-testid=phase-row]")
    assert [rows.nth(k).get_attribute("data-phase") for k in range(rows.count())] == [
        "approval-0", "wave-0", "approval-1", "wave-1"]
    assert [rows.nth(k).get_attribute("data-status") for k in range(4)] == ["now"] + ["not-reached"] * 3
    expect(page.locator("[data-testid=phase-row][data-phase='approval-0']")).to_have_attribute("data-status", "now")
    expect(page.locator("[data-testid=phase-row][data-phase='approval-0'] [data-testid=phase-end]")).to_have_text(
        "when an operator approves")
    gates = page.locator("[data-testid=gate]")
    expect(gates.first).to_be_visible()
    assert gates.count() == len(started["progress"]["gates"])
    start = page.locator("[data-testid=campaign-event][data-kind='campaign.started']")
    expect(start.locator("[data-testid=event-by]")).to_have_text("admin")

    page.locator("[data-testid=abort-btn]").click()  # no reason: refused before any request
    expect(page.locator("[data-testid=campaign-error]")).to_contain_text("Say why the campaign is aborted")
    expect(phase).to_have_attribute("data-phase", "awaiting_approval")

    page.locator("[data-testid=approve-btn]").click()
    expect(phase).to_have_text("Wave 1 of 2 (50 % of targets)")
    expect(page.locator("[data-testid=campaign-error]")).to_be_hidden()
    expect(page.locator("[data-testid=campaign-share]")).to_have_text("1 of 2 targets on detector.pump@3")
    expect(page.locator("[data-testid=phase-row][data-phase='approval-0']")).to_have_attribute("data-status", "done")
    wave = page.locator("[data-testid=phase-row][data-phase='wave-0']")
    expect(wave).to_have_attribute("data-status", "now")
    expect(wave.locator("[data-testid=phase-end]")).to_contain_text("at the earliest")
    expect(page.locator("[data-testid=approve-btn]")).to_be_disabled()
    expect(page.locator("[data-testid=campaign-event]").first).to_have_attribute("data-kind", "wave.entered")
    approval = page.locator("[data-testid=campaign-event][data-kind='approval.given']")
    expect(approval.locator("[data-testid=event-by]")).to_have_text("admin")
    assert live.call("GET", f"/campaigns/{cid}")["progress"]["phase"] == "wave"

    page.locator("[data-testid=abort-reason]").fill("false alarms on line A")
    with page.expect_response(lambda r: r.url.endswith(f"/api/v1/campaigns/{cid}")):
        pass  # the page polls: a half-typed reason survives the refresh
    expect(page.locator("[data-testid=abort-reason]")).to_have_value("false alarms on line A")
    page.locator("[data-testid=abort-btn]").click()
    expect(phase).to_have_attribute("data-phase", "aborted")
    expect(page.locator("[data-testid=campaign-outcome]")).to_contain_text("aborted by admin: false alarms on line A")
    expect(page.locator("[data-testid=campaign-share]")).to_have_text("0 of 2 targets on detector.pump@3")
    expect(page.locator("[data-testid=abort-btn]")).to_be_disabled()
    expect(page.locator("[data-testid=phase-row][data-phase='wave-1'] [data-testid=phase-end]")).to_have_text(
        "not reached")
    first = page.locator("[data-testid=campaign-event]").first
    expect(first).to_have_attribute("data-kind", "aborted")
    expect(first.locator("[data-testid=event-by]")).to_have_text("admin")
    assert live.call("GET", f"/campaigns/{cid}")["progress"]["phase"] == "aborted"

    # the list, as a viewer: the campaign with its phase; its page reads but offers no action
    page.get_by_role("button", name="Sign out").click()
    fill_sign_in(page, "vera")
    page.get_by_role("link", name="Campaigns", exact=True).click()
    row = page.locator(f"[data-testid=campaign-row][data-campaign='{cid}']")
    expect(row.locator("[data-testid=campaign-phase]")).to_have_text("Aborted")
    expect(row.locator("[data-testid=campaign-refs]")).to_have_text("detector.pump@2 → detector.pump@3")
    expect(row.locator("[data-testid=campaign-share]")).to_have_text("0 of 2")
    row.locator("[data-testid=campaign-link]").click()
    expect(page.locator("[data-testid=campaign-actions] .readonly-note")).to_be_visible()
    expect(page.locator("[data-testid=approve-btn]")).to_have_count(0)


def test_the_pages_fit_a_phone(live: ThreadedPlatform, browser: Browser) -> None:
    """At 390 px each page of the loop is read without scrolling sideways; its tables become cards whose facts
    say what they are."""
    started = live.call("POST", "/campaigns", expect_status=201, body={"model": "detector.pump@3", "plan": {
        "waves": [0.1, 0.5, 1.0], "shadow_h": 2, "soak_h": 1, "probes": False}})
    cid = started["spec"]["id"]
    try:
        for phone in watched_page(browser, viewport=PHONE, is_mobile=True, has_touch=True, locale="en-US"):
            sign_in(phone, live, "#/models")
            for route, shown in (("#/models", "model-row"), ("#/models/detector.pump", "card-row"),
                                 ("#/models/edge.fan?version=2", "lineage-step"), ("#/campaigns", "campaign-row"),
                                 (f"#/campaigns/{cid}", "gate"), ("#/asset/pump-1", "drift-event")):
                phone.goto(f"{live.base_url}/{route}")
                expect(phone.locator(f"[data-testid={shown}]").first).to_be_visible()
                width = phone.evaluate("document.documentElement.scrollWidth")
                assert width <= PHONE["width"], f"{route} is {width} px wide on a {PHONE['width']} px phone"
            phone.goto(f"{live.base_url}/#/models/detector.pump")  # a version is a card: each fact says what it is
            trigger = phone.locator("[data-testid=version-row][data-version='2'] td").nth(2)
            expect(trigger).to_have_text("labels by retraining-policy (job-3)")
            assert trigger.evaluate("td => getComputedStyle(td, '::before').content") == '"Trigger: "'
    finally:
        live.call("POST", f"/campaigns/{cid}/abort", body={"reason": "the test is over"})

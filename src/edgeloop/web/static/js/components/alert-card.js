// Alert cards with acknowledge / resolve (alerts page and asset page).

import { api, ApiError } from "../api.js";
import { $, h, setText } from "../dom.js";
import { fmtAgo, fmtNumber, fmtTime, humanize, isoAttr } from "../format.js";
import { refreshStats } from "../header.js";
import { session } from "../session.js";
import { syncKeyed } from "./list.js";
import { toast } from "./toast.js";
import { assetLabel, badge } from "./widgets.js";

export function explanationBars(expl) {
  const entries = Object.entries(expl || {})
    .filter(([, v]) => Number.isFinite(v))
    .sort((a, b) => b[1] - a[1]);
  if (!entries.length) return h("div", { class: "expl expl-empty", dataset: { testid: "explanation" } }, "No channel attribution");
  const top = entries.slice(0, 4);
  const rest = entries.length - top.length;
  return h("div", { class: "expl", "aria-label": "Explanation: channel shares", dataset: { testid: "explanation" } },
    top.map(([ch, share]) => {
      const pct = Math.max(0, Math.min(1, share)) * 100;
      return h("div", { class: "expl-row", title: `${ch}: ${pct.toFixed(1)} % of the anomaly score` },
        h("span", { class: "expl-ch" }, ch),
        h("span", { class: "expl-track" }, h("span", { class: "expl-bar", style: `width:${pct.toFixed(1)}%` })),
        h("span", { class: "expl-pct" }, `${Math.round(pct)} %`));
    }),
    rest > 0 ? h("div", { class: "expl-more" }, `+ ${rest} more channel${rest > 1 ? "s" : ""}`) : null);
}

const MODEL_REF = /^([a-z0-9][a-z0-9._-]{0,63})@(\d+)$/;

/** A model reference ("detector.pump@3") as a link to that version's page (lineage, model card); anything
 * else (a rule's version) as text. */
export function modelLink(ref) {
  const m = MODEL_REF.exec(ref);
  if (!m) return ref;
  return h("a", { class: "model-link", href: `#/models/${encodeURIComponent(m[1])}?version=${m[2]}`,
    title: "the model version that raised it: its lineage and model card", dataset: { testid: "alert-model-link" } }, ref);
}

function alertSignature(a) {
  return JSON.stringify(a);
}

function renderAlertCard(card, a, { showAsset = true } = {}) {
  card._sig = alertSignature(a);
  card._alert = a;
  card.dataset.alertId = String(a.id);
  card.dataset.status = a.status;
  card.dataset.severity = a.severity;
  card.className = `alert-card sev-${a.severity} st-${a.status}`;

  const lifecycle = [];
  if (a.acknowledged_by || a.acknowledged_at) {
    lifecycle.push(`Acknowledged by ${a.acknowledged_by || "?"} at ${fmtTime(a.acknowledged_at)}`);
  }
  if (a.resolved_by || a.resolved_at) {
    lifecycle.push(`Resolved by ${a.resolved_by || "?"} at ${fmtTime(a.resolved_at)}`);
  }

  const ackBtn = h("button", {
    type: "button", class: "btn btn-secondary", dataset: { testid: "ack-btn" },
    disabled: a.status !== "open",
    title: a.status === "open" ? "I have seen this alert and am on it" : "Only open alerts can be acknowledged",
    onclick: () => alertAction(card, "acknowledge"),
  }, "Acknowledge");
  const resolveBtn = h("button", {
    type: "button", class: "btn btn-primary", dataset: { testid: "resolve-btn" },
    disabled: a.status === "resolved",
    title: a.status === "resolved" ? "Already resolved" : "The cause is fixed; close this alert",
    onclick: () => alertAction(card, "resolve"),
  }, "Resolve");

  card.replaceChildren(
    h("div", { class: "alert-main" },
      h("div", { class: "alert-head" },
        badge(a.severity, a.severity, "sev-badge"),
        h("span", { class: "alert-kind" }, humanize(a.kind)),
        showAsset ? h("a", { class: "alert-asset", href: `#/asset/${encodeURIComponent(a.asset)}`, dataset: { testid: "alert-asset" } }, assetLabel(a.asset)) : null,
        h("span", { class: "alert-device" }, a.device),
        h("span", { class: `status-pill st-${a.status}`, dataset: { testid: "alert-status" } }, a.status)),
      h("p", { class: "alert-msg", dataset: { testid: "alert-message" } }, a.message || "(no message)"),
      h("dl", { class: "alert-meta" },
        h("div", null, h("dt", null, "First seen"), h("dd", null, h("time", { datetime: isoAttr(a.first_seen) }, fmtTime(a.first_seen)))),
        h("div", null, h("dt", null, "Last seen"), h("dd", null,
          h("time", { datetime: isoAttr(a.last_seen) }, fmtTime(a.last_seen)),
          h("span", { class: "muted", dataset: { ago: a.last_seen } }, ` · ${fmtAgo(a.last_seen)}`))),
        h("div", null, h("dt", null, "Count"), h("dd", null, fmtNumber(a.count))),
        scoreFact(a),
        a.detector ? h("div", null, h("dt", null, "Detector"), h("dd", null, a.detector)) : null,
        a.model ? h("div", { title: "the model version that raised it" }, h("dt", null, "Model"),
          h("dd", { dataset: { testid: "alert-model" } }, modelLink(a.model))) : null),
      lifecycle.length ? h("p", { class: "alert-lifecycle" }, lifecycle.join(" · ")) : null,
      h("p", { class: "alert-error", role: "alert", dataset: { testid: "alert-error" }, hidden: true })),
    h("div", { class: "alert-side" },
      explanationBars(a.explanation),
      h("div", { class: "alert-actions" }, ackBtn, resolveBtn)));
  return card;
}

function updateAlertCard(card, a) {
  if (card._sig !== alertSignature(a)) renderAlertCard(card, a, card._opts);
  else for (const el of card.querySelectorAll("[data-ago]")) setText(el, ` · ${fmtAgo(Number(el.dataset.ago))}`);
}

async function alertAction(card, action) {
  const a = card._alert;
  // The server records the signed-in user; `by` only matters when authentication is off.
  const by = session.user?.username || "operator";
  const buttons = card.querySelectorAll(".alert-actions button");
  buttons.forEach((b) => { b.disabled = true; });
  card.classList.add("is-busy");
  const err = $(".alert-error", card);
  err.hidden = true;
  try {
    const updated = await api(`/alerts/${encodeURIComponent(a.id)}/${action}`, { method: "POST", body: { by } });
    card.classList.remove("is-busy");
    renderAlertCard(card, updated, card._opts);
    const who = (action === "resolve" ? updated.resolved_by : updated.acknowledged_by) || by;
    toast(`Alert #${updated.id} ${updated.status} by ${who}`, "ok");
    refreshStats().catch(() => {});
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return; // signed out: the sign-in form is shown
    card.classList.remove("is-busy");
    renderAlertCard(card, a, card._opts); // restores buttons for the old state
    const who = session.user ? `${session.user.username} (${session.user.role})` : "You";
    const msg = e instanceof ApiError && e.status === 403
      ? `Not allowed: ${who} may not ${action} alerts. ${e.message}`
      : `Could not ${action} alert #${a.id}: ${e.message}`;
    const box = $(".alert-error", card);
    setText(box, msg);
    box.hidden = false;
    toast(msg, "error");
  }
}

/** Keyed reconciliation of alert cards inside `list` (order = order of `alerts`). */
export function syncAlertList(list, alerts, opts) {
  syncKeyed(list, alerts, {
    key: (a) => String(a.id),
    create: () => {
      const card = h("article", { dataset: { testid: "alert-row" } });
      card._opts = opts;
      return card;
    },
    update: (card, a) => {
      if (!card.classList.contains("is-busy")) updateAlertCard(card, a);
    },
    keep: (card) => card.classList.contains("is-busy"),
  });
}

/** A detector's score (1 = its threshold); a rule's alert (a level, a silent device) says its value and limit in
 * its message, with the unit, so a bare number ("Score 326.00") is not shown for it. */
export function scoreFact(a) {
  if (!a.detector || !Number.isFinite(a.score)) return null;
  return h("div", { title: "1.00 is the detector's threshold" }, h("dt", null, "Detector score"),
    h("dd", { dataset: { testid: "alert-score" } }, `${a.score.toFixed(2)} × threshold`));
}

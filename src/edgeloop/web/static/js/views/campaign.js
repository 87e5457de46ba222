// Page 10: one campaign (#/campaigns/{id}): what moves from which version to which, its phases (when each started
// and ends), each gate's latest decision with its figures and reason, its log, and Approve / Abort.

import { api, ApiError, isAbort } from "../api.js";
import { toast } from "../components/toast.js";
import { stateBox } from "../components/widgets.js";
import { h, setText } from "../dom.js";
import { fmtDuration, fmtPct, fmtTime, humanize, isoAttr } from "../format.js";
import { poll } from "../poll.js";
import { session } from "../session.js";
import { gateBadge, phaseBadge, refLink, TERMINAL } from "./campaigns.js";
import { fmtMetric } from "./models.js";

const CAMPAIGN_EVERY_MS = 3000;
const LOG_SHOWN = 100; // newest first
const OUTCOME_TEXT = { promoted: "Promoted", rolled_back: "Rolled back", aborted: "Aborted" };

const fact = (label, value, testid) => h("div", null, h("dt", null, label), h("dd", testid ? { dataset: { testid } } : null, value));
const when = (ms) => h("time", { datetime: isoAttr(ms) }, fmtTime(ms));

/** A person who may try Approve / Abort (the API has the last word: a platform administrator). */
const mayAct = () => !session.user || ["operator", "admin"].includes(session.user.role);

/** The campaign's phases in order (shadow, [approval,] wave 1, …) with when each started, from its log. */
function phases(view) {
  const { spec, state } = view;
  const started = new Map();
  for (const e of view.events || []) {
    const k = Number.isFinite(e.figures?.wave) ? e.figures.wave : null;
    if (e.kind === "shadow.entered") started.set("shadow", e.ts_ms);
    else if (e.kind === "approval.awaited" && k !== null) started.set(`approval-${k}`, e.ts_ms);
    else if (e.kind === "wave.entered" && k !== null) started.set(`wave-${k}`, e.ts_ms);
  }
  const out = [];
  if (spec.shadow && spec.shadow_ms > 0) out.push({ key: "shadow", label: `Shadow: ${spec.to_ref} scores beside ${spec.from_ref} on every target, never pages`, plan: `lasts ${fmtDuration(spec.shadow_ms)}`, ms: spec.shadow_ms });
  (spec.waves || []).forEach((share, k) => {
    if (spec.approvals && spec.approvals[k]) out.push({ key: `approval-${k}`, label: `Approval for wave ${k + 1}`, plan: "waits for an operator" });
    out.push({ key: `wave-${k}`, label: `Wave ${k + 1} (${fmtPct(share)} of targets)`, plan: `soaks ${fmtDuration(spec.soak_ms)}`, ms: spec.soak_ms });
  });
  const current = state.phase === "shadow" ? "shadow" : state.phase === "wave" ? `wave-${state.wave}`
    : state.phase === "awaiting_approval" ? `approval-${state.wave}` : null;
  out.forEach((p, i) => {
    p.start = started.get(p.key) ?? null;
    const next = out.slice(i + 1).find((q) => started.has(q.key));
    p.end = p.start === null ? null : next ? started.get(next.key) : state.ended_ms ?? null;
    p.status = p.key === current ? "now" : p.start !== null ? "done" : "not-reached";
  });
  return out;
}

function phaseRow(view, p) {
  let ends = "—";
  if (p.status === "now" && Number.isFinite(view.progress.phase_ends_ms)) {
    const latest = p.start + (view.spec.max_soak_factor || 1) * p.ms;
    ends = `at the earliest ${fmtTime(view.progress.phase_ends_ms)}; undecided gates extend it to ${fmtTime(latest)} at the latest`;
  } else if (p.status === "now") {
    ends = "when an operator approves";
  } else if (p.end !== null) {
    ends = fmtTime(p.end);
  } else if (p.status === "not-reached") {
    ends = TERMINAL.has(view.progress.phase) ? "not reached" : p.plan;
  }
  return h("tr", { class: `phase-row is-${p.status}`, dataset: { testid: "phase-row", phase: p.key, status: p.status } },
    h("th", { scope: "row" }, p.label, p.status === "now" ? h("span", { class: "asset-id" }, "now") : null),
    h("td", { "data-label": "Started", dataset: { testid: "phase-start" } }, p.start === null ? "—" : when(p.start)),
    h("td", { "data-label": "Ends", dataset: { testid: "phase-end" } }, ends));
}

/** A figure of a gate or log entry: durations (``*_ms``) and shares (``fraction``) in their units. */
function figureText(k, v) {
  if (k.endsWith("_ms") && Number.isFinite(v)) return `${humanize(k.slice(0, -3))} ${fmtDuration(v)}`;
  if ((k === "fraction" || k.endsWith("_share")) && Number.isFinite(v)) return `${humanize(k)} ${fmtPct(v)}`;
  return `${humanize(k)} ${fmtMetric(v)}`;
}

function figuresText(figures) {
  return Object.entries(figures || {}).map(([k, v]) => figureText(k, v)).join(" · ");
}

function gateItem(view, name, status) {
  const d = (view.state.gates || {})[name];
  return h("li", { class: "gate", dataset: { testid: "gate", gate: name, status } },
    h("div", { class: "gate-head" }, gateBadge(name, status)),
    h("p", { class: "gate-reason", dataset: { testid: "gate-reason" } },
      d ? d.reason : "No observation yet in this phase."),
    d && Object.keys(d.figures || {}).length ? h("p", { class: "gate-figures", dataset: { testid: "gate-figures" } }, figuresText(d.figures)) : null);
}

function logEntry(e) {
  const person = e.by && e.by !== "engine";
  return h("li", { class: `tl-entry${person ? " tl-person" : ""}`, dataset: { testid: "campaign-event", kind: e.kind } },
    h("time", { class: "tl-time", datetime: isoAttr(e.ts_ms) }, fmtTime(e.ts_ms)),
    h("div", { class: "tl-body" },
      h("span", { class: "tl-what" }, humanize(e.kind.replace(".", " "))),
      h("span", { class: person ? "tl-actor" : "tl-actor tl-system", dataset: { testid: "event-by" } }, e.by || "—"),
      h("p", { class: "tl-detail", dataset: { testid: "event-message" } }, e.message),
      Object.keys(e.figures || {}).length ? h("p", { class: "gate-figures" }, figuresText(e.figures)) : null));
}

export function campaignView(root, id, _query, signal) {
  document.title = `Campaign ${id} · EdgeLoop`;
  const subtitle = h("div", { class: "summary", dataset: { testid: "campaign-summary" } });
  const phaseSlot = h("span", { class: "status-slot" });
  const overview = h("div", { class: "panel-body panel-pad" }, stateBox("loading", "Loading the campaign…"));
  const gatesBox = h("div", { class: "panel-body panel-pad" });
  const logBox = h("div", { class: "panel-body" });
  const errorBox = h("p", { class: "campaign-error", role: "alert", dataset: { testid: "campaign-error" }, hidden: true });
  const reason = h("input", { class: "input", type: "text", maxlength: "1000", placeholder: "why (required to abort)",
    "aria-label": "Reason to abort", dataset: { testid: "abort-reason" } });
  const approveBtn = h("button", { type: "button", class: "btn btn-primary", dataset: { testid: "approve-btn" }, disabled: true,
    onclick: () => act("approve") }, "Approve next wave");
  const abortBtn = h("button", { type: "button", class: "btn btn-secondary", dataset: { testid: "abort-btn" }, disabled: true,
    onclick: () => act("abort") }, "Abort and roll back");
  const actions = h("section", { class: "panel", dataset: { testid: "campaign-actions" } },
    h("div", { class: "panel-head" }, h("h2", null, "Actions")),
    h("div", { class: "panel-body panel-pad" },
      mayAct() ? h("div", { class: "campaign-actions" }, approveBtn, reason, abortBtn)
        : h("p", { class: "readonly-note" }, "You can follow this campaign; approving or aborting it needs a platform administrator."),
      errorBox));
  root.append(
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/models" }, "Models"),
      h("span", { "aria-hidden": "true" }, "/"), h("a", { href: "#/campaigns" }, "Campaigns"),
      h("span", { "aria-hidden": "true" }, "/"), h("span", null, id)),
    h("div", { class: "page-head" }, h("div", null, h("div", { class: "title-row" }, h("h1", null, `Campaign ${id}`), phaseSlot), subtitle)),
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Phases")), overview),
    actions,
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Gates"),
      h("span", { class: "muted small" }, "each gate's latest decision in this phase")), gatesBox),
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Log")), logBox));

  let shown = null; // the last view drawn
  let busy = false;
  let sig = "";

  function render(view) {
    shown = view;
    const s = JSON.stringify(view);
    if (s !== sig) {
      sig = s;
      const { spec, progress } = view;
      phaseSlot.replaceChildren(phaseBadge(view));
      subtitle.replaceChildren(
        h("span", { dataset: { testid: "campaign-subject" } }, spec.subject, ": ", refLink(spec, spec.from_ref), " → ", refLink(spec, spec.to_ref)),
        h("span", { dataset: { testid: "campaign-share" } }, `${progress.on_candidate} of ${progress.targets} targets on ${spec.to_ref}`));
      overview.replaceChildren(
        h("table", { class: "fleet-table phase-table", dataset: { testid: "phase-table" } },
          h("thead", null, h("tr", null, h("th", { scope: "col" }, "Phase"), h("th", { scope: "col" }, "Started"),
            h("th", { scope: "col" }, "Ended / ends"))),
          h("tbody", null, phases(view).map((p) => phaseRow(view, p)))),
        h("dl", { class: "alert-meta" },
          fact("Started", [when(spec.created_ms), ` by ${spec.created_by || "?"}`]),
          fact("Targets", `${progress.targets} (${spec.payload === "model" ? "devices" : "gateways"})`),
          fact("Scope", spec.scope && spec.scope !== "*" ? `rollout group ${spec.scope.slice("group:".length)}` : "whole profile", "campaign-scope"),
          TERMINAL.has(progress.phase) ? fact(OUTCOME_TEXT[progress.phase], [when(progress.ended_ms), progress.outcome ? `: ${progress.outcome}` : ""], "campaign-outcome") : null));
      const names = Object.keys(progress.gates || {});
      gatesBox.replaceChildren(names.length
        ? h("ul", { class: "gate-list", dataset: { testid: "gate-list" } }, names.map((n) => gateItem(view, n, progress.gates[n])))
        : stateBox("empty", "This campaign has no gates."));
      const events = [...(view.events || [])].sort((a, b) => b.seq - a.seq).slice(0, LOG_SHOWN);
      logBox.replaceChildren(events.length ? h("ol", { class: "timeline", dataset: { testid: "campaign-log" } }, events.map(logEntry))
        : stateBox("empty", "Nothing logged yet."));
    }
    if (!busy) {
      approveBtn.disabled = view.progress.phase !== "awaiting_approval";
      approveBtn.title = approveBtn.disabled ? "Only a campaign awaiting approval can be approved" : `Start wave ${view.progress.wave}`;
      abortBtn.disabled = TERMINAL.has(view.progress.phase);
      reason.disabled = abortBtn.disabled;
    }
  }

  async function act(action) {
    if (!shown) return;
    const text = reason.value.trim();
    errorBox.hidden = true;
    if (action === "abort" && !text) {
      setText(errorBox, "Say why the campaign is aborted (the reason is kept in its log and the audit trail).");
      errorBox.hidden = false;
      reason.setAttribute("aria-invalid", "true");
      reason.focus();
      return;
    }
    reason.removeAttribute("aria-invalid");
    busy = true;
    approveBtn.disabled = true;
    abortBtn.disabled = true;
    try {
      const path = `/campaigns/${encodeURIComponent(id)}/${action}`;
      const view = await api(path, action === "abort" ? { method: "POST", body: { reason: text } } : { method: "POST" });
      busy = false;
      if (action === "abort") reason.value = "";
      render(view);
      toast(action === "abort" ? `Campaign ${id} aborted` : `Wave ${view.progress.wave} of campaign ${id} approved`, "ok");
    } catch (e) {
      busy = false;
      if (shown) render(shown);
      if (e instanceof ApiError && e.status === 401) return; // signed out: the sign-in form is shown
      const who = session.user ? `${session.user.username} (${session.user.role})` : "You";
      const msg = e instanceof ApiError && e.status === 403
        ? `Not allowed: ${who} may not ${action} this campaign. ${e.message}`
        : `Could not ${action} campaign ${id}: ${e.message}`;
      setText(errorBox, msg);
      errorBox.hidden = false;
      toast(msg, "error");
    }
  }

  poll(async () => {
    let view;
    try {
      view = await api(`/campaigns/${encodeURIComponent(id)}`, { signal });
    } catch (e) {
      if (!isAbort(e) && !shown) {
        overview.replaceChildren(e.status === 404 ? stateBox("error", `Campaign “${id}” not found.`, "Go back to the list of campaigns.")
          : stateBox("error", "Could not load the campaign.", e.status === 503 ? "Rollout campaigns need the model registry (the platform's PKI)." : `${e.message}. Retrying…`));
      }
      throw e;
    }
    render(view);
  }, CAMPAIGN_EVERY_MS, signal);
}

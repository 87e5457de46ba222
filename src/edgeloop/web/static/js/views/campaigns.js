// Page 9: Campaigns (#/campaigns): every rollout of a model version, newest first: what moves from which version
// to which, where it is (shadow, a canary wave, awaiting approval, promoted, rolled back, aborted), its gates.

import { listLoader, syncKeyed } from "../components/list.js";
import { badge, stateBox } from "../components/widgets.js";
import { $, append, h, setText } from "../dom.js";
import { fmtPct, fmtTime, isoAttr } from "../format.js";
import { poll } from "../poll.js";
import { modelHref } from "./models.js";

const CAMPAIGNS_EVERY_MS = 5000;
export const TERMINAL = new Set(["promoted", "rolled_back", "aborted"]);
const PHASE_TONE = { shadow: "info", wave: "info", awaiting_approval: "warning", promoted: "ok", rolled_back: "critical", aborted: "offline" };
const GATE_TONE = { pass: "ok", fail: "critical", continue: "info", pending: "offline" };

/** The share of targets wave ``k`` (1-based) runs the candidate on, as the spec plans it. */
const waveShare = (spec, k) => fmtPct((spec.waves || [])[k - 1]);

/** Where a campaign is, in words: "Shadow" (the candidate scores beside the champion on every target, never
 * pages), "Wave 2 of 3 (50 % of targets)", "Awaiting approval for wave 1 of 3
 * (10 % of targets)", "Promoted", "Rolled back", "Aborted". */
export function phaseText(view) {
  const p = view.progress;
  switch (p.phase) {
    case "shadow": return "Shadow";
    case "wave": return `Wave ${p.wave} of ${p.waves} (${waveShare(view.spec, p.wave)} of targets)`;
    case "awaiting_approval": return `Awaiting approval for wave ${p.wave} of ${p.waves} (${waveShare(view.spec, p.wave)} of targets)`;
    case "promoted": return "Promoted";
    case "rolled_back": return "Rolled back";
    case "aborted": return "Aborted";
    default: return String(p.phase);
  }
}

export function phaseBadge(view) {
  const b = badge(PHASE_TONE[view.progress.phase] || "info", phaseText(view), "badge-text");
  b.dataset.testid = "campaign-phase";
  b.dataset.phase = view.progress.phase;
  return b;
}

export function gateBadge(name, status) {
  const b = badge(GATE_TONE[status] || "info", `${name.replace(/_/g, " ")}: ${status}`, "badge-text");
  b.dataset.testid = "gate-badge";
  b.dataset.gate = name;
  b.dataset.status = status;
  return b;
}

/** "detector.pump@3" as a link to that version's page (a model campaign's versions; a software release's
 * versions are text). */
export function refLink(spec, ref) {
  const at = String(ref).lastIndexOf("@");
  if (at < 0 || spec.payload !== "model") return ref;
  return h("a", { class: "model-link", href: modelHref(ref.slice(0, at), ref.slice(at + 1)) }, ref);
}

export const campaignHref = (id) => `#/campaigns/${encodeURIComponent(id)}`;

export function campaignsView(root, _query, signal) {
  document.title = "Campaigns · EdgeLoop";
  const summary = h("div", { class: "summary", dataset: { testid: "campaigns-summary" } });
  const tbody = h("tbody");
  const table = h("table", { class: "fleet-table campaign-table", dataset: { testid: "campaign-table" } },
    h("thead", null, h("tr", null,
      h("th", { scope: "col" }, "Campaign"), h("th", { scope: "col" }, "Version"), h("th", { scope: "col" }, "Phase"),
      h("th", { scope: "col", class: "num" }, "On the candidate"), h("th", { scope: "col" }, "Gates"),
      h("th", { scope: "col" }, "Started"))),
    tbody);
  const body = h("div", { class: "panel-body" }, stateBox("loading", "Loading campaigns…"));
  root.append(
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/models" }, "Models"),
      h("span", { "aria-hidden": "true" }, "/"), h("span", null, "Campaigns")),
    h("div", { class: "page-head" }, h("div", null, h("h1", null, "Campaigns"), summary)),
    h("section", { class: "panel" }, body));

  function makeRow(v) {
    return h("tr", { class: "campaign-row", dataset: { testid: "campaign-row", campaign: v.spec.id } },
      h("td", { class: "cell-asset", "data-label": "Campaign" },
        h("a", { class: "asset-link", href: campaignHref(v.spec.id), dataset: { testid: "campaign-link" } }, v.spec.id),
        h("span", { class: "asset-id" })),
      h("td", { "data-label": "Version", dataset: { testid: "campaign-refs" } }),
      h("td", { "data-label": "Phase" }),
      h("td", { class: "num", "data-label": "On the candidate", dataset: { testid: "campaign-share" } }),
      h("td", { "data-label": "Gates" }),
      h("td", { "data-label": "Started" }));
  }

  function updateRow(tr, v) {
    const sig = JSON.stringify([v.progress, v.spec.id]);
    if (tr._sig === sig) return;
    tr._sig = sig;
    const [cId, cRefs, cPhase, cShare, cGates, cStarted] = tr.children;
    tr.dataset.phase = v.progress.phase;
    setText($(".asset-id", cId), v.spec.subject);
    cRefs.replaceChildren(refLink(v.spec, v.spec.from_ref), " → ", refLink(v.spec, v.spec.to_ref));
    cPhase.replaceChildren(phaseBadge(v));
    setText(cShare, `${v.progress.on_candidate} of ${v.progress.targets}`);
    cGates.replaceChildren(h("div", { class: "source-chips" },
      Object.entries(v.progress.gates || {}).map(([name, status]) => gateBadge(name, status))));
    cStarted.replaceChildren(h("time", { datetime: isoAttr(v.spec.created_ms) }, fmtTime(v.spec.created_ms)),
      h("span", { class: "asset-id" }, `by ${v.spec.created_by || "?"}`));
  }

  const load = listLoader({
    path: "/campaigns", body, table, noun: "campaigns",
    unavailable: "Rollout campaigns need the model registry (the platform's PKI).",
    empty: ["No campaign yet.",
      "A campaign rolls a new model version out: in shadow first, then to growing waves of targets, gated on its quality."],
  });
  poll(async () => {
    const list = await load(signal);
    syncKeyed(tbody, list, { key: (v) => v.spec.id, create: makeRow, update: updateRow });
    const running = list.filter((v) => !TERMINAL.has(v.progress.phase)).length;
    const waiting = list.filter((v) => v.progress.phase === "awaiting_approval").length;
    summary.replaceChildren();
    append(summary, [
      h("span", null, `${list.length} campaign${list.length === 1 ? "" : "s"}`),
      running ? badge("info", `${running} running`) : null,
      waiting ? badge("warning", `${waiting} awaiting approval`) : null]);
  }, CAMPAIGNS_EVERY_MS, signal);
}

// The header's key figures, the sample-time clock and the footer, refreshed from /stats on every page.

import { api } from "./api.js";
import { $, setText } from "./dom.js";
import { fmtDuration, fmtNumber, fmtRate, fmtTime, isoAttr } from "./format.js";
import { state } from "./state.js";

function setKpi(testid, value, sub, level) {
  const card = $(`[data-testid="${testid}"]`);
  setText($("[data-value]", card), value);
  setText($("[data-sub]", card), sub || "");
  card.dataset.level = level || "";
}

export async function refreshStats(signal) {
  const s = await api("/stats", { signal });
  state.stats = s;
  const online = s.devices_online ?? 0;
  const total = s.devices_total ?? 0;
  setKpi("kpi-devices", `${fmtNumber(online)} / ${fmtNumber(total)}`,
    total === 0 ? "no devices yet" : online === total ? "all online" : `${fmtNumber(total - online)} offline`,
    total > 0 && online < total ? "warn" : "ok");
  const ing = s.ingest || {};  // counters since this process started
  const totals = s.totals || {};  // what the store holds
  setKpi("kpi-rate", fmtRate(s.readings_per_s), `${fmtNumber(totals.stored_samples)} samples stored in all`, "");
  const acked = s.alerts_acknowledged ?? 0;
  setKpi("kpi-alerts", fmtNumber(s.alerts_open),
    s.alerts_open ? `need attention${acked ? ` · ${fmtNumber(acked)} acknowledged` : ""}`
      : acked ? `${fmtNumber(acked)} acknowledged, not resolved` : "all quiet",
    s.alerts_open ? "bad" : acked ? "warn" : "ok");
  const dl = totals.dead_letters ?? 0;
  setKpi("kpi-dead-letters", fmtNumber(dl), `${fmtNumber(ing.duplicates)} duplicates dropped since start`,
    dl > 0 ? "warn" : "ok");
  const depth = ing.queue_depth ?? 0;
  const cap = ing.queue_capacity || 0;
  const fill = cap ? depth / cap : 0;
  setKpi("kpi-queue", fmtNumber(depth), cap ? `${fmtNumber(fill * 100, fill < 0.1 ? 1 : 0)} % of ${fmtNumber(cap)}` : "",
    fill >= 0.8 ? "bad" : fill >= 0.5 ? "warn" : "");
  const now = $("#sample-now");
  setText(now, fmtTime(s.now_ms));
  if (isoAttr(s.now_ms)) now.setAttribute("datetime", isoAttr(s.now_ms));
  const badge = $("#nav-alert-count");
  badge.hidden = !s.alerts_open;
  setText(badge, s.alerts_open > 99 ? "99+" : String(s.alerts_open || 0));
  setText($("#footer-uptime"), Number.isFinite(s.uptime_s) ? `Platform up ${fmtDuration(s.uptime_s * 1000)}` : "");
  document.dispatchEvent(new CustomEvent("edgeloop:stats"));
  return s;
}

export async function ensureStats(signal) {
  if (!state.stats) await refreshStats(signal);
  return state.stats.now_ms;
}

// Page 4: Gateways (#/gateways): edge gateways' state and why, backlog, lag, sources, configuration.

import { listLoader, syncKeyed } from "../components/list.js";
import { badge, stateBox } from "../components/widgets.js";
import { $, append, h, setText } from "../dom.js";
import { fmtDuration, fmtNumber } from "../format.js";
import { poll } from "../poll.js";

const GATEWAYS_EVERY_MS = 3000;

const GATEWAY_STATE_RANK = { offline: 0, degraded: 1, online: 2 };
const GATEWAY_BADGE = { online: "ok", degraded: "warning", offline: "offline" };

function fmtSeconds(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "—";
  return s < 10 ? `${s.toFixed(1)} s` : fmtDuration(s * 1000);
}

function fmtBytes(n) {
  if (!Number.isFinite(n)) return "—";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function gatewaysView(root, _query, signal) {
  document.title = "Gateways · EdgeLoop";
  const summary = h("div", { class: "summary", dataset: { testid: "gateway-summary" } });
  const tbody = h("tbody");
  const table = h("table", { class: "fleet-table gateway-table", dataset: { testid: "gateway-table" } },
    h("thead", null, h("tr", null,
      h("th", { scope: "col" }, "Gateway"), h("th", { scope: "col" }, "State"),
      h("th", { scope: "col", class: "num" }, "Backlog"), h("th", { scope: "col", class: "num" }, "Lag"),
      h("th", { scope: "col" }, "Sources"), h("th", { scope: "col" }, "Configuration"),
      h("th", { scope: "col" }, "Heartbeat"))),
    tbody);
  const body = h("div", { class: "panel-body" }, stateBox("loading", "Loading gateways…"));
  root.append(
    h("div", { class: "page-head" }, h("div", null, h("h1", null, "Gateways"), summary)),
    h("section", { class: "panel" }, body));

  function makeRow(g) {
    return h("tr", { class: "gateway-row", dataset: { testid: "gateway-row", gatewayId: g.id } },
      h("td", { class: "cell-asset", "data-label": "Gateway" }, h("span", { class: "asset-link" }),
        h("span", { class: "asset-id" })),
      h("td", { class: "cell-status", "data-label": "State" }),
      h("td", { class: "cell-backlog num", "data-label": "Backlog", dataset: { testid: "gateway-backlog" } }),
      h("td", { class: "cell-lag num", "data-label": "Lag", dataset: { testid: "gateway-lag" } }),
      h("td", { class: "cell-sources", "data-label": "Sources", dataset: { testid: "gateway-sources" } }),
      h("td", { class: "cell-config", "data-label": "Configuration", dataset: { testid: "gateway-config" } }),
      h("td", { class: "cell-seen", "data-label": "Heartbeat" }));
  }

  function updateRow(tr, g) {
    const [cName, cState, cBacklog, cLag, cSources, cConfig, cSeen] = tr.children;
    setText($(".asset-link", cName), g.id);
    const devices = g.devices || [];
    setText($(".asset-id", cName), `${devices.length} device${devices.length === 1 ? "" : "s"} behind it`);
    cName.title = devices.join(", ");
    const reasons = g.reasons || [];
    const sig = `${g.state}|${reasons.join("|")}`;
    if (cState._sig !== sig) {
      cState._sig = sig;
      const b = badge(GATEWAY_BADGE[g.state] || "offline", g.state);
      b.dataset.testid = "gateway-state";
      b.dataset.state = g.state;
      cState.replaceChildren(b);
      if (reasons.length) {
        append(cState, [h("ul", { class: "gateway-reasons", dataset: { testid: "gateway-reasons" } },
          reasons.map((r) => h("li", null, r)))]);
      }
    }
    tr.dataset.state = g.state;
    const bl = g.backlog || {};
    setText(cBacklog, `${fmtNumber(bl.messages)} msgs · ${fmtNumber(bl.samples)} samples`);
    cBacklog.title = `${fmtBytes(bl.bytes)} in the journal; oldest unsent ${fmtSeconds(bl.oldest_unsent_age_s)}`
      + `; ${fmtNumber(g.dropped_samples)} samples dropped`;
    if (bl.oldest_unsent_age_s !== null && bl.oldest_unsent_age_s !== undefined) {
      append(cBacklog, [h("span", { class: "asset-id" }, `oldest ${fmtSeconds(bl.oldest_unsent_age_s)}`)]);
    }
    setText(cLag, fmtSeconds(g.sync_lag_s));
    const chips = h("div", { class: "source-chips" });
    cSources.replaceChildren(chips);
    append(chips, (g.sources || []).map((src) => {
      const chip = badge(src.state === "ok" ? "ok" : src.state === "failing" ? "critical" : "info", `${src.name}: ${src.state}`);
      chip.dataset.testid = "gateway-source";
      chip.dataset.state = src.state;
      chip.title = src.error || `${src.kind}`;
      return chip;
    }));
    const cfg = g.config || {};
    const latest = cfg.latest;
    setText(cConfig, cfg.running_version ? `v${cfg.running_version} (${String(cfg.status || "").replace("_", " ")})` : "—");
    if (latest && latest.version !== cfg.running_version) {
      append(cConfig, [h("span", { class: "asset-id" }, `pushed v${latest.version}: ${latest.status.replace("_", " ")}`)]);
    }
    // the platform's own clock decides the age (never the browser's)
    setText(cSeen, `${fmtSeconds(g.heartbeat_age_s)} ago`);
    cSeen.title = `CPU ${fmtNumber(g.cpu_percent, 1)} %, RSS ${fmtBytes(g.rss_bytes)}`;
  }

  const load = listLoader({
    path: "/gateways", body, table, noun: "gateways",
    empty: ["No gateways yet.", "A gateway appears here with its first heartbeat (edgeloop agent)."],
  });
  poll(async () => {
    const list = await load(signal);
    list.sort((x, y) => (GATEWAY_STATE_RANK[x.state] ?? 9) - (GATEWAY_STATE_RANK[y.state] ?? 9)
      || String(x.id).localeCompare(String(y.id)));
    syncKeyed(tbody, list, { key: (g) => g.id, create: makeRow, update: updateRow });
    const n = { online: 0, degraded: 0, offline: 0 };
    for (const g of list) n[g.state] = (n[g.state] || 0) + 1;
    summary.replaceChildren();
    append(summary, [
      h("span", null, `${list.length} gateway${list.length === 1 ? "" : "s"}`),
      n.offline ? badge("offline", `${n.offline} offline`) : null,
      n.degraded ? badge("warning", `${n.degraded} degraded`) : null,
      badge("ok", `${n.online} online`)]);
  }, GATEWAYS_EVERY_MS, signal);
}

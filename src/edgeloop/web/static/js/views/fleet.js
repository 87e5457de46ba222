// Page 1: Fleet (#/): every asset with its status, open alerts and last data, filterable.

import { api, isAbort } from "../api.js";
import { ASSET_STATUS_TEXT, ASSET_STATUS_TONE, SEVERITY_RANK } from "../components/asset-status.js";
import { syncKeyed } from "../components/list.js";
import { badge, stateBox } from "../components/widgets.js";
import { $, append, h, setText } from "../dom.js";
import { fmtAgo, fmtNumber, fmtTime } from "../format.js";
import { poll } from "../poll.js";
import { rememberAssets } from "../state.js";

const FLEET_EVERY_MS = 2000;

const ASSET_STATUS_RANK = { alert: 0, offline: 1, no_data: 2, ok: 3 };

export function fleetView(root, _query, signal) {
  document.title = "Fleet · EdgeLoop";
  const summary = h("div", { class: "summary", dataset: { testid: "fleet-summary" } });
  const filter = h("input", {
    type: "search", class: "input", placeholder: "Filter by name, id, kind, line…", "aria-label": "Filter assets",
    oninput: () => applyFilter(),
  });
  const tbody = h("tbody");
  const table = h("table", { class: "fleet-table", dataset: { testid: "asset-table" } },
    h("thead", null, h("tr", null,
      h("th", { scope: "col" }, "Asset"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Kind"),
      h("th", { scope: "col" }, "Site / line"), h("th", { scope: "col", class: "num" }, "Open alerts"),
      h("th", { scope: "col" }, "Last seen"))),
    tbody);
  const body = h("div", { class: "panel-body" }, stateBox("loading", "Loading assets…"));
  root.append(
    h("div", { class: "page-head" },
      h("div", null, h("h1", null, "Fleet"), summary),
      h("div", { class: "page-tools" }, filter)),
    h("section", { class: "panel" }, body));

  let loaded = false;
  let sevByAsset = new Map();

  function applyFilter() {
    const q = filter.value.trim().toLowerCase();
    let shown = 0;
    for (const tr of tbody.children) {
      const hit = !q || tr._search.includes(q);
      tr.hidden = !hit;
      if (hit) shown++;
    }
    const none = $(".filter-empty", body);
    if (tbody.children.length && !shown) {
      if (!none) body.append(h("div", { class: "state state-empty filter-empty" }, h("strong", null, "No asset matches the filter.")));
    } else if (none) none.remove();
  }

  function makeRow(a) {
    const link = h("a", { class: "asset-link", href: `#/asset/${encodeURIComponent(a.id)}` });
    const tr = h("tr", {
      class: "asset-row", dataset: { testid: "asset-row", assetId: a.id },
      onclick: (e) => {
        if (e.target.closest("a")) return;
        location.hash = `#/asset/${encodeURIComponent(a.id)}`;
      },
    },
    h("td", { class: "cell-asset", "data-label": "Asset" }, link, h("span", { class: "asset-id" })),
    h("td", { class: "cell-status", "data-label": "Status" }),
    h("td", { class: "cell-kind", "data-label": "Kind" }),
    h("td", { class: "cell-line", "data-label": "Site / line" }),
    h("td", { class: "cell-alerts num", "data-label": "Open alerts" }),
    h("td", { class: "cell-seen", "data-label": "Last seen" }));
    return tr;
  }

  function updateRow(tr, a) {
    const [cAsset, cStatus, cKind, cLine, cAlerts, cSeen] = tr.children;
    setText($(".asset-link", cAsset), a.name || a.id);
    setText($(".asset-id", cAsset), a.name && a.name !== a.id ? a.id : "");
    const sev = sevByAsset.get(a.id);
    const tone = a.status === "alert" ? (sev === "critical" ? "critical" : "warning") : ASSET_STATUS_TONE[a.status] ?? a.status;
    const sig = `${a.status}|${tone}`;
    if (cStatus._sig !== sig) {
      cStatus._sig = sig;
      cStatus.replaceChildren(badge(tone, ASSET_STATUS_TEXT[a.status] ?? a.status));
      $(".badge", cStatus).dataset.testid = "asset-status";
      $(".badge", cStatus).dataset.status = a.status;
    }
    tr.dataset.status = a.status;
    setText(cKind, a.kind || "—");
    setText(cLine, [a.site, a.line].filter(Boolean).join(" / ") || "—");
    setText(cAlerts, fmtNumber(a.open_alerts ?? 0));
    cAlerts.classList.toggle("has-alerts", (a.open_alerts ?? 0) > 0);
    setText(cSeen, fmtAgo(a.last_seen_ms));
    cSeen.title = a.last_seen_ms ? fmtTime(a.last_seen_ms) : "No data received yet";
    tr._search = [a.id, a.name, a.kind, a.line, a.site, a.status, ...(a.devices || [])].join(" ").toLowerCase();
  }

  function renderSummary(list) {
    const n = { ok: 0, alert: 0, offline: 0, no_data: 0 };
    for (const a of list) n[a.status] = (n[a.status] || 0) + 1;
    summary.replaceChildren();  // append() skips null children; replaceChildren() would print "null"
    append(summary, [
      h("span", null, `${list.length} asset${list.length === 1 ? "" : "s"}`),
      n.alert ? badge("critical", `${n.alert} alert`) : null,
      n.offline ? badge("offline", `${n.offline} offline`) : null,
      n.no_data ? badge("offline", `${n.no_data} no data yet`) : null,
      badge("ok", `${n.ok} ok`)]);
  }

  function lastSeenTick() {
    for (const tr of tbody.children) {
      const a = tr._asset;
      if (a) setText(tr.children[5], fmtAgo(a.last_seen_ms));
    }
  }
  document.addEventListener("edgeloop:stats", lastSeenTick, { signal });

  poll(async () => {
    let list;
    try {
      const [assets, open] = await Promise.all([
        api("/assets", { signal }),
        api("/alerts?status=open&limit=500", { signal }).catch((e) => {
          if (isAbort(e)) throw e;
          return null; // severity colouring is optional
        }),
      ]);
      list = assets;
      if (open) {
        sevByAsset = new Map();
        for (const al of open) {
          const cur = sevByAsset.get(al.asset);
          if (!cur || (SEVERITY_RANK[al.severity] || 0) > (SEVERITY_RANK[cur] || 0)) sevByAsset.set(al.asset, al.severity);
        }
      }
    } catch (e) {
      if (!loaded && !isAbort(e)) body.replaceChildren(stateBox("error", "Could not load assets.", `${e.message}. Retrying…`));
      throw e;
    }
    rememberAssets(list);
    if (!loaded) {
      loaded = true;
      body.replaceChildren(table);
    }
    if (!list.length) {
      table.hidden = true;
      if (!$(".state-empty", body)) {
        body.append(stateBox("empty", "No assets yet.", "Assets appear here as soon as devices are provisioned and report."));
      }
    } else {
      table.hidden = false;
      $(".state-empty:not(.filter-empty)", body)?.remove();
    }
    list.sort((x, y) => (ASSET_STATUS_RANK[x.status] ?? 9) - (ASSET_STATUS_RANK[y.status] ?? 9)
      || (y.criticality ?? 0) - (x.criticality ?? 0) || String(x.id).localeCompare(String(y.id)));
    // rows move only when the order really changed (keeps clicks and hover stable)
    syncKeyed(tbody, list, {
      key: (a) => a.id,
      create: makeRow,
      update: (tr, a) => {
        tr._asset = a;
        updateRow(tr, a);
      },
    });
    renderSummary(list);
    applyFilter();
  }, FLEET_EVERY_MS, signal);
}

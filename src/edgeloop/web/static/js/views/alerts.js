// Page 3: Alerts (#/alerts[?status=..&asset=..]): the alert list with acknowledge / resolve.

import { api, isAbort } from "../api.js";
import { syncAlertList } from "../components/alert-card.js";
import { segmented, stateBox } from "../components/widgets.js";
import { h, setText } from "../dom.js";
import { poll } from "../poll.js";
import { rememberAssets, state } from "../state.js";

const ALERTS_EVERY_MS = 3000;

const ALERT_STATUSES = ["open", "acknowledged", "resolved"];

export function alertsView(root, query, signal) {
  document.title = "Alerts · EdgeLoop";
  const status = ALERT_STATUSES.includes(query.get("status")) ? query.get("status") : "all";
  const assetFilter = query.get("asset") || "";
  const go = (changes) => {
    const q = new URLSearchParams(query);
    for (const [k, v] of Object.entries(changes)) {
      if (!v || v === "all") q.delete(k);
      else q.set(k, v);
    }
    const qs = q.toString();
    location.hash = `#/alerts${qs ? `?${qs}` : ""}`;
  };
  const options = [{ key: "all", label: "All" }, ...ALERT_STATUSES.map((s) => ({ key: s, label: s[0].toUpperCase() + s.slice(1) }))];
  const counter = h("span", { class: "muted", dataset: { testid: "alert-count" } });
  const list = h("div", { class: "alert-list", dataset: { testid: "alert-list" } });
  const body = h("div", null, stateBox("loading", "Loading alerts…"));
  root.append(
    h("div", { class: "page-head" },
      h("div", null, h("h1", null, "Alerts"), h("div", { class: "summary" }, counter,
        assetFilter ? h("span", { class: "filter-chip" }, "Asset: ", h("strong", null, assetFilter),
          h("button", { type: "button", class: "chip-x", "aria-label": "Clear asset filter", onclick: () => go({ asset: null }) }, "×")) : null)),
      h("div", { class: "page-tools" }, segmented("Filter by status", options, status, (s) => go({ status: s })))),
    h("section", { class: "panel" }, body));

  // asset names for nicer links (optional)
  if (!state.assets.size) api("/assets", { signal }).then(rememberAssets).catch(() => {});

  poll(async () => {
    const q = new URLSearchParams({ limit: "200" });
    if (status !== "all") q.set("status", status);
    if (assetFilter) q.set("asset", assetFilter);
    let alerts;
    try {
      alerts = await api(`/alerts?${q}`, { signal });
    } catch (e) {
      if (!isAbort(e) && !list.childElementCount) body.replaceChildren(stateBox("error", "Could not load alerts.", `${e.message}. Retrying…`));
      throw e;
    }
    setText(counter, `${alerts.length}${alerts.length === 200 ? "+" : ""} ${status === "all" ? "" : `${status} `}alert${alerts.length === 1 ? "" : "s"}`);
    if (!alerts.length) {
      const what = status === "all" ? "No alerts yet." : `No ${status} alerts.`;
      body.replaceChildren(stateBox("empty", what, status === "open" || status === "all" ? "All quiet. New anomalies appear here within seconds." : null));
      list.replaceChildren();
      return;
    }
    if (list.parentElement !== body) body.replaceChildren(list);
    syncAlertList(list, alerts, { showAsset: true });
  }, ALERTS_EVERY_MS, signal);
}

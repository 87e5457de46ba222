// Page 2: Asset (#/asset/{id}): live telemetry charts per device, the asset's alerts and its drift events.

import { api, ApiError, isAbort } from "../api.js";
import { modelLink, syncAlertList } from "../components/alert-card.js";
import { ASSET_STATUS_TEXT, ASSET_STATUS_TONE, SEVERITY_RANK } from "../components/asset-status.js";
import { ChartCard, groupChannels } from "../components/charts.js";
import { syncKeyed } from "../components/list.js";
import { badge, segmented, stateBox } from "../components/widgets.js";
import { $, append, h, setText } from "../dom.js";
import { fmtAgo, fmtClock, fmtNumber, fmtTime, humanize, isoAttr } from "../format.js";
import { ensureStats } from "../header.js";
import { poll } from "../poll.js";
import { rememberAssets } from "../state.js";

const ASSET_EVERY_MS = 3000;
const DRIFT_EVERY_MS = 10000; // drift events are rare and never page
const DRIFT_SHOWN = 20;
const DRIFT_KIND = { input: "Input drift", score: "Score shift", alert_rate: "Alert-rate shift", precision: "Label precision" };

const fmtDistance = (x) => (Number.isFinite(x) ? x.toFixed(Math.abs(x) >= 10 ? 1 : 2) : "—");

function makeDriftRow() {
  return h("li", { class: "drift-event", dataset: { testid: "drift-event" } });
}

/** One drift event: what drifted (which channels, how far against the limit), since when, found when, from which
 * model version. */
function updateDriftRow(li, d) {
  const sig = JSON.stringify(d);
  if (li._sig === sig) return;
  li._sig = sig;
  li.dataset.kind = d.kind;
  const channels = Object.entries(d.channels || {}).sort((a, b) => b[1] - a[1]);
  li.replaceChildren();
  append(li, [
    h("div", { class: "alert-head" },
      badge("warning", DRIFT_KIND[d.kind] || humanize(d.kind)),
      h("span", { class: "alert-device" }, d.device),
      h("span", { class: "muted small", dataset: { testid: "drift-figure" } },
        `${fmtDistance(d.figure)} (limit ${fmtDistance(d.threshold)})`)),
    d.message ? h("p", { class: "alert-msg", dataset: { testid: "drift-message" } }, d.message) : null,
    channels.length ? h("ul", { class: "drift-channels", dataset: { testid: "drift-channels" } }, channels.map(([ch, dist]) =>
      h("li", { dataset: { testid: "drift-channel", channel: ch } }, h("span", { class: "expl-ch" }, ch), ` ${fmtDistance(dist)}`))) : null,
    h("dl", { class: "alert-meta" },
      h("div", null, h("dt", null, "Since"), h("dd", { dataset: { testid: "drift-since" } },
        h("time", { datetime: isoAttr(d.since_ms) }, fmtTime(d.since_ms)))),
      h("div", null, h("dt", null, "Detected"), h("dd", { dataset: { testid: "drift-detected" } },
        h("time", { datetime: isoAttr(d.detected_ms) }, fmtTime(d.detected_ms)))),
      h("div", { title: "the model version whose training reference the data left" }, h("dt", null, "Model"),
        h("dd", { dataset: { testid: "drift-model" } }, d.model ? modelLink(d.model) : "—")))]);
}

const RANGES = [
  { key: "30m", label: "30 min", ms: 30 * 60_000 },
  { key: "6h", label: "6 h", ms: 6 * 3600_000 },
  { key: "24h", label: "24 h", ms: 24 * 3600_000 },
  { key: "7d", label: "7 d", ms: 7 * 24 * 3600_000 },
];

export function assetView(root, assetId, query, signal) {
  document.title = `${assetId} · EdgeLoop`;
  const rangeKey = RANGES.some((r) => r.key === query.get("range")) ? query.get("range") : RANGES[0].key;
  const range = RANGES.find((r) => r.key === rangeKey);

  const title = h("h1", null, assetId);
  const statusSlot = h("span", { class: "status-slot" });
  // a person's hold on automation (closed-loop actions, docs/actions.md): no policy acts on the asset meanwhile
  const holdBanner = h("p", { class: "hold-banner", role: "status", dataset: { testid: "asset-hold" }, hidden: true });
  const meta = h("dl", { class: "asset-meta" });
  const devicesBox = h("div", { class: "devices" });
  const rangeInfo = h("span", { class: "range-info muted", dataset: { testid: "range-info" } });
  const chartsBox = h("div", { class: "charts-body" }, stateBox("loading", "Loading devices…"));
  const alertsList = h("div", { class: "alert-list", dataset: { testid: "asset-alerts" } });
  const alertsBody = h("div", null, stateBox("loading", "Loading alerts…"));
  const driftList = h("ul", { class: "drift-list", dataset: { testid: "drift-list" } });
  const driftBody = h("div", { class: "panel-pad" }, stateBox("loading", "Loading drift events…"));

  const setRange = (key) => {
    const q = new URLSearchParams(query);
    if (key === RANGES[0].key) q.delete("range");
    else q.set("range", key);
    const qs = q.toString();
    location.hash = `#/asset/${encodeURIComponent(assetId)}${qs ? `?${qs}` : ""}`;
  };

  root.append(
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Fleet"), h("span", { "aria-hidden": "true" }, "/"), h("span", null, assetId)),
    h("div", { class: "page-head" }, h("div", { class: "title-row" }, title, statusSlot)),
    holdBanner,
    h("section", { class: "panel asset-info" }, meta, devicesBox),
    h("section", { class: "panel" },
      h("div", { class: "panel-head" },
        h("h2", null, "Telemetry"),
        h("div", { class: "panel-tools" }, rangeInfo, segmented("Time range", RANGES, rangeKey, setRange))),
      chartsBox),
    h("section", { class: "panel" },
      h("div", { class: "panel-head" },
        h("h2", null, "Alerts"),
        h("a", { class: "panel-link", href: `#/alerts?asset=${encodeURIComponent(assetId)}` }, "Open in alert list →")),
      alertsBody),
    h("section", { class: "panel", dataset: { testid: "asset-drift" } },
      h("div", { class: "panel-head" }, h("h2", null, "Drift"),
        h("span", { class: "muted small" }, "where live data left the reference of the model that scores it; never pages")),
      driftBody));

  let asset = null;
  let openSeverity = null; // highest severity among the asset's open alerts
  const devices = new Map(); // id -> device json
  const charts = new Map(); // deviceId -> [ChartCard]
  signal.addEventListener("abort", () => {
    for (const list of charts.values()) for (const c of list) c.destroy();
  }, { once: true });

  function renderHeader() {
    if (!asset) return;
    document.title = `${asset.name || asset.id} · EdgeLoop`;
    setText(title, asset.name || asset.id);
    setText($(".crumbs span:last-child", root), asset.name || asset.id);
    const tone = asset.status === "alert" ? (openSeverity === "critical" || !openSeverity ? "critical" : "warning") : ASSET_STATUS_TONE[asset.status] ?? asset.status;
    const sig = `${asset.status}|${tone}`;
    if (statusSlot._sig !== sig) {
      statusSlot._sig = sig;
      statusSlot.replaceChildren(badge(tone, ASSET_STATUS_TEXT[asset.status] ?? asset.status));
    }
    const items = [
      ["Asset id", asset.id], ["Kind", asset.kind || "—"], ["Site / line", [asset.site, asset.line].filter(Boolean).join(" / ") || "—"],
      ["Criticality", asset.criticality ? `${asset.criticality} / 5` : "—"], ["Open alerts", fmtNumber(asset.open_alerts ?? 0)],
      ["Last seen", asset.last_seen_ms ? `${fmtTime(asset.last_seen_ms)} (${fmtAgo(asset.last_seen_ms)})` : "never (no data yet)"],
    ];
    meta.replaceChildren(...items.map(([k, v]) => h("div", null, h("dt", null, k), h("dd", null, v))));
    devicesBox.replaceChildren(
      h("span", { class: "devices-label" }, asset.devices?.length === 1 ? "Device" : "Devices"),
      ...(asset.devices || []).map((id) => {
        const d = devices.get(id);
        const online = d ? d.online : null;
        return h("span", { class: "device-chip", title: d ? `${d.profile} · last seen ${fmtTime(d.last_seen_ms)}` : id },
          h("span", { class: `dot ${online === null ? "" : online ? "dot-ok" : "dot-offline"}`, "aria-hidden": "true" }),
          id, d ? h("span", { class: "muted" }, ` · ${d.profile} · ${online ? "online" : "offline"}`) : null);
      }));
  }

  async function loadAsset() {
    const list = await api("/assets", { signal });
    rememberAssets(list);
    asset = list.find((a) => a.id === assetId) || null;
    if (!asset) {
      chartsBox.replaceChildren(stateBox("error", `Asset “${assetId}” not found.`, "It may have been removed. Go back to the fleet overview."));
      return false;
    }
    renderHeader();
    return true;
  }

  async function loadDevices() {
    for (const id of asset.devices || []) {
      if (devices.has(id)) continue;
      try {
        devices.set(id, await api(`/devices/${encodeURIComponent(id)}`, { signal }));
      } catch (e) {
        if (isAbort(e)) throw e;
        // keep going; the device section says so
      }
    }
  }

  function buildCharts() {
    const sections = [];
    let colorOffset = 0;
    for (const id of asset.devices || []) {
      const d = devices.get(id);
      if (!d || charts.has(id)) continue;
      const cards = groupChannels(d.channels || []).map((g) => {
        const card = new ChartCard(id, g, colorOffset);
        colorOffset += g.channels.length;
        return card;
      });
      charts.set(id, cards);
      sections.push(h("div", { class: "device-charts", dataset: { device: id } },
        (asset.devices.length > 1) ? h("h3", { class: "device-title" }, d.name || id, h("span", { class: "muted" }, ` · ${id}`)) : null,
        cards.length ? h("div", { class: "chart-grid" }, cards.map((c) => c.el))
          : stateBox("empty", "This device declares no channels.")));
    }
    if (sections.length) {
      if (!charts.size || $(".state", chartsBox)?.parentElement === chartsBox) chartsBox.replaceChildren();
      chartsBox.append(...sections);
    }
  }

  async function refreshTelemetry() {
    const now = await ensureStats(signal);
    const start = now - range.ms;
    const end = now;
    const points = 300;
    await Promise.all([...charts.entries()].map(async ([id, cards]) => {
      const names = cards.flatMap((c) => c.group.channels.map((ch) => ch.name));
      if (!names.length) return;
      const q = new URLSearchParams({ channels: names.join(","), start: String(start), end: String(end), points: String(points) });
      const resp = await api(`/devices/${encodeURIComponent(id)}/telemetry?${q}`, { signal });
      for (const c of cards) c.update(resp, start, end);
      setText(rangeInfo, `${fmtTime(start)} → ${fmtClock(end)}`);
    }));
  }

  async function refreshAlerts() {
    const list = await api(`/alerts?asset=${encodeURIComponent(assetId)}&limit=50`, { signal });
    openSeverity = null;
    for (const a of list) {
      if (a.status === "open" && (SEVERITY_RANK[a.severity] || 0) > (SEVERITY_RANK[openSeverity] || 0)) openSeverity = a.severity;
    }
    renderHeader();
    if (!list.length) {
      alertsBody.replaceChildren(stateBox("empty", "No alerts for this asset.", "Anomalies, stuck sensors and data gaps will show up here."));
      alertsList.replaceChildren();
      return;
    }
    if (alertsList.parentElement !== alertsBody) alertsBody.replaceChildren(alertsList);
    syncAlertList(alertsList, list, { showAsset: false });
  }

  let ready = false;
  poll(async () => {
    try {
      if (!ready) {
        if (!(await loadAsset())) return;
        await loadDevices();
        buildCharts();
        const missing = (asset.devices || []).filter((id) => !devices.has(id));
        if (!asset.devices?.length) {
          chartsBox.replaceChildren(stateBox("empty", "No devices attached to this asset yet."));
        } else if (missing.length && !charts.size) {
          chartsBox.replaceChildren(stateBox("error", "Could not load device details.", `${missing.join(", ")} — retrying…`));
        }
        renderHeader();
        ready = missing.length === 0;
      } else {
        await loadAsset();
      }
      await refreshTelemetry();
    } catch (e) {
      if (!isAbort(e) && !charts.size && !(e instanceof ApiError && e.status === 0)) {
        chartsBox.replaceChildren(stateBox("error", "Could not load telemetry.", `${e.message}. Retrying…`));
      } else if (!isAbort(e) && !charts.size) {
        chartsBox.replaceChildren(stateBox("error", "Waiting for the API…", "Retrying automatically."));
      }
      throw e;
    }
  }, range.ms > 6 * 3600_000 ? 5000 : ASSET_EVERY_MS, signal);

  poll(async () => {
    let holds;
    try {
      holds = await api("/holds", { signal });
    } catch (e) {
      if (!isAbort(e) && (e.status === 404 || e.status === 503)) holdBanner.hidden = true;
      throw e;
    }
    const mine = holds.filter((x) => x.target === assetId);
    holdBanner.hidden = !mine.length;
    if (mine.length) {
      const hold = mine[0];
      setText(holdBanner, `Automation held by ${hold.held_by} until ${fmtTime(hold.until_ms)} (${hold.reason}): no policy acts on this asset.`);
    }
  }, ASSET_EVERY_MS, signal);

  poll(async () => {
    let list;
    try {
      list = await api(`/drift?asset=${encodeURIComponent(assetId)}&limit=${DRIFT_SHOWN}`, { signal });
    } catch (e) {
      if (!isAbort(e) && !driftList.childElementCount) {
        const why = e.status === 404 || e.status === 503 ? "Drift monitoring is not available on this platform." : `${e.message}. Retrying…`;
        driftBody.replaceChildren(stateBox("error", "Could not load drift events.", why));
      }
      throw e;
    }
    if (!list.length) {
      driftList.replaceChildren();
      driftBody.replaceChildren(stateBox("empty", "No drift for this asset.",
        "Drift is when a device's data moves away from what its model was trained on (a new product run, a recalibrated sensor)."));
      return;
    }
    if (driftList.parentElement !== driftBody) driftBody.replaceChildren(driftList);
    syncKeyed(driftList, list, { key: (d) => d.id, create: makeDriftRow, update: updateDriftRow });
  }, DRIFT_EVERY_MS, signal);

  poll(async () => {
    try {
      await refreshAlerts();
    } catch (e) {
      if (!isAbort(e) && !alertsList.childElementCount) alertsBody.replaceChildren(stateBox("error", "Could not load alerts.", `${e.message}. Retrying…`));
      throw e;
    }
  }, ASSET_EVERY_MS, signal);
}

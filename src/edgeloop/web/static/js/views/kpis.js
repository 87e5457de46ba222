// Page 7: KPIs of the alert and work-order lifecycle (#/kpis[?days=7|30|90&group=fleet|site|line|asset]).
//
// GET /kpis?group=fleet (the tiles) and ?group=site|line|asset (the table) over the `days`
// before the fleet's sample time; GET /kpis/daily?group=fleet&days=N (the charts: one row
// per UTC day, oldest first); GET /work-orders (the repairs behind the downtime). A KPI without
// data is null in the API: it is shown as "—" with the reason (next to a tile, in a table
// cell's tooltip) and is never drawn or sorted as 0.

import { api, isAbort } from "../api.js";
import { PALETTE } from "../components/charts.js";
import { KpiChart } from "../components/kpi-chart.js";
import { toast } from "../components/toast.js";
import { assetLabel, segmented, stateBox } from "../components/widgets.js";
import { h, setText } from "../dom.js";
import { DAY_MS, fmtNumber, fmtPct, fmtRatio, fmtSpan, fmtTime, isNum } from "../format.js";
import { ensureStats } from "../header.js";
import { poll } from "../poll.js";
import { rememberAssets, state } from "../state.js";

const KPIS_EVERY_MS = 15000;

const KPI_PERIODS = [
  { key: "7", label: "7 days", days: 7 },
  { key: "30", label: "30 days", days: 30 },
  { key: "90", label: "90 days", days: 90 },
];
const KPI_GROUPS = [
  { key: "fleet", label: "Fleet", one: "Fleet" },
  { key: "site", label: "Site", one: "Site" },
  { key: "line", label: "Line", one: "Line" },
  { key: "asset", label: "Asset", one: "Asset" },
];
const KPI_DEFAULT_GROUP = "asset";
const KPI_UNASSIGNED = "-"; // an asset without a line, a line without a site (alerts/kpi.py)

const plural = (n, one, many = `${one}s`) => `${fmtNumber(n)} ${n === 1 ? one : many}`;

/** Availability and MTBF need at least a day of observed data (kpi.MIN_OBSERVED_MS): say so, never 100 %. */
const KPI_MIN_OBSERVED_MS = 86_400_000;
function notEnoughData(k) {
  if (k.enough_data !== false) return "";
  return `not enough data: ${fmtSpan(k.observed_ms)} of data in this period, at least ${fmtSpan(KPI_MIN_OBSERVED_MS)} needed`;
}

/**
 * The headline KPIs (tiles, table columns): how to show a value, what it sums up (sub), and why
 * it is null (why). k is one row of /kpis.
 */

const KPI_DEFS = [
  {
    key: "mtta_ms", label: "MTTA", fmt: fmtSpan,
    help: "Mean time to acknowledge: alert opened → acknowledged, over the period's alerts that were acknowledged",
    sub: (k) => `${fmtNumber(k.acknowledged)} of ${plural(k.alerts, "alert")} acknowledged`,
    why: (k) => (k.alerts ? `no alert acknowledged yet (${fmtNumber(k.unacknowledged)} unacknowledged)` : "no alerts in this period"),
  },
  {
    key: "mttr_alert_ms", label: "MTTR alerts", fmt: fmtSpan,
    help: "Mean time to resolve: alert opened → resolved, over the period's alerts that were resolved",
    sub: (k) => `${fmtNumber(k.resolved)} resolved · ${fmtNumber(k.still_open)} still open`,
    why: (k) => (k.alerts ? `no alert resolved yet (${fmtNumber(k.still_open)} still open)` : "no alerts in this period"),
  },
  {
    key: "mttr_repair_ms", label: "MTTR repairs", fmt: fmtSpan,
    help: "Mean downtime per repair, from the work orders whose downtime started in the period and has ended",
    sub: (k) => `${plural(k.repairs, "repair")}${k.ongoing_repairs ? ` · ${fmtNumber(k.ongoing_repairs)} under way` : ""}`,
    why: (k) => (k.ongoing_repairs ? `no repair finished yet (${fmtNumber(k.ongoing_repairs)} under way)` : "no repairs with downtime (work orders) in this period"),
  },
  {
    key: "mtbf_ms", label: "MTBF", fmt: fmtSpan,
    help: "Mean time between failures: operating time / failures (repairs with downtime, confirmed faults)",
    sub: (k) => `${plural(k.failures, "failure")} in ${fmtSpan(k.operating_ms)} of operation`,
    why: (k) => notEnoughData(k) || `no failures in this period (more than ${fmtSpan(k.operating_ms)} of operation)`,
  },
  {
    key: "availability", label: "Availability", fmt: fmtPct,
    help: "1 − downtime / (assets × period); downtime is known from work orders only",
    sub: (k) => (k.downtime_ms ? `${fmtSpan(k.downtime_ms)} of downtime` : "no downtime recorded"),
    why: (k) => notEnoughData(k) || "nothing was recorded for these assets in this period",
  },
  {
    key: "precision", label: "Precision", fmt: fmtPct,
    help: "Alert precision from verdicts: confirmed / (confirmed + false alarms)",
    sub: (k) => `${fmtNumber(k.confirmed)} confirmed · ${plural(k.false_alarms, "false alarm")}`,
    why: (k) => (k.relabeled ? `no confirmed or false-alarm verdict yet (${fmtNumber(k.relabeled)} relabelled)`
      : k.alerts ? "no verdicts yet" : "no alerts in this period"),
  },
  {
    key: "false_alarms_per_asset_day", label: "False alarms / asset-day", fmt: fmtRatio,
    help: "False alarms (from verdicts) / (assets × days)",
    sub: (k) => `${plural(k.false_alarms, "false alarm")} in ${fmtNumber(k.asset_days, Number.isInteger(k.asset_days) ? 0 : 1)} asset-days`,
    why: (k) => (k.alerts ? "no verdicts yet" : "no alerts in this period"),
  },
  {
    key: "raw_per_notification", label: "Raw signals / notification", fmt: fmtRatio,
    help: "Raw rule signals / notifications sent: how much the incident engine condenses",
    sub: (k) => `${plural(k.raw_signals, "raw signal")} · ${plural(k.notifications, "notification")}`,
    why: (k) => (k.raw_signals ? `no notification sent (${plural(k.raw_signals, "raw signal")})` : "no signals or notifications in this period"),
  },
  {
    key: "lead_median_ms", label: "Detection lead time", fmt: fmtSpan,
    help: "Median time from the first alert to the failure it announced (failures from work orders' downtime)",
    sub: (k) => `median · mean ${fmtSpan(k.lead_mean_ms)} · ${fmtNumber(k.detected_failures)} detected, ${fmtNumber(k.missed_failures)} missed`,
    why: (k) => (k.missed_failures ? `no failure was announced by an alert (${fmtNumber(k.missed_failures)} missed)` : "no failures to detect in this period"),
  },
];

/** Table columns: the group, its alerts, the KPIs (downtime next to availability). */
const KPI_COLUMNS = [
  { key: "alerts", label: "Alerts", fmt: (v) => fmtNumber(v), help: "Alerts opened in the period" },
  ...KPI_DEFS.slice(0, 5),
  { key: "downtime_ms", label: "Downtime", fmt: (v) => (v ? fmtSpan(v) : "0"), help: "Downtime from work orders, overlaps merged" },
  ...KPI_DEFS.slice(5),
];

/** The charts over the days (/kpis/daily, fleet). kind: count | span | pct | ratio; one or two y axes. */
const KPI_CHARTS = [
  {
    key: "volume", title: "Alerts and notifications per day", empty: "No alerts, signals or notifications in this period",
    series: [
      { key: "alerts", label: "Alerts", kind: "count", color: PALETTE[0], bars: true },
      { key: "raw_signals", label: "Raw signals", kind: "count", color: PALETTE[3], dash: [5, 4] },
      { key: "notifications", label: "Notifications", kind: "count", color: PALETTE[1] },
    ],
  },
  {
    key: "response", title: "Time to acknowledge, resolve and repair", empty: "No acknowledged or resolved alerts, no finished repairs in this period",
    series: [
      { key: "mtta_ms", label: "MTTA", kind: "span", color: PALETTE[0] },
      { key: "mttr_alert_ms", label: "MTTR alerts", kind: "span", color: PALETTE[2] },
      { key: "mttr_repair_ms", label: "MTTR repairs", kind: "span", color: PALETTE[1] },
    ],
  },
  {
    key: "quality", title: "Alert precision and false alarms", empty: "No verdicts in this period",
    series: [
      { key: "precision", label: "Precision", kind: "pct", color: PALETTE[2], full: true },
      { key: "false_alarms_per_asset_day", label: "False alarms / asset-day", kind: "ratio", color: PALETTE[1] },
    ],
  },
  {
    key: "availability", title: "Availability per day", empty: "Nothing recorded in this period",
    series: [{ key: "availability", label: "Availability", kind: "pct", color: PALETTE[5] }],
  },
];

/** Module-level so that it survives a change of period or grouping (each is a new route). */
const kpiSort = { key: "alerts", dir: "desc" };

const kpiGroupLabelOf = (k) => kpiGroupLabel(k._grouping || "asset", k.group);

function kpiGroupLabel(group, key) {
  if (group === "fleet") return "Fleet";
  if (key === KPI_UNASSIGNED) return group === "line" ? "(no line)" : group === "site" ? "(no site)" : key;
  return group === "asset" ? assetLabel(key) : key;
}

/** One headline tile: the value, and under it what it sums up, or why there is no value. */
function kpiTile(def, k) {
  const v = k ? k[def.key] : null;
  const has = isNum(v);
  const why = has ? "" : k ? def.why(k) : "no data";
  return h("div", { class: `metric${has ? "" : " is-null"}`, dataset: { testid: "kpi-tile", kpi: def.key } },
    h("span", { class: "metric-label", title: def.help }, def.label),
    h("span", {
      class: "metric-value", dataset: { testid: "kpi-tile-value" },
      title: has ? `${def.label}: ${def.fmt(v)}` : `No value: ${why}`,
    }, has ? def.fmt(v) : "—"),
    h("span", { class: "metric-sub", dataset: { testid: "kpi-tile-sub" } }, has ? def.sub(k) : why));
}

/** A table cell's content; a null is "—" with the reason as its tooltip. k.kind: the table's grouping. */
function kpiCell(col, k) {
  const v = k[col.key];
  if (isNum(v)) return col.fmt(v);
  const why = col.why ? col.why(k) : "no data";
  // a phone has no hover: a tap says why too
  return h("abbr", {
    class: "null", title: why, tabindex: "0", dataset: { testid: "kpi-null" },
    onclick: () => toast(`${col.label}, ${kpiGroupLabelOf(k)}: ${why}`),
  }, "—");
}

/** Sort rows by a column: numbers ascending or descending, nulls always last, ties by name. */
function sortKpiRows(rows, group, { key, dir }) {
  const sign = dir === "asc" ? 1 : -1;
  const name = (r) => kpiGroupLabel(group, r.group);
  return [...rows].sort((a, b) => {
    if (key === "group") return sign * name(a).localeCompare(name(b), undefined, { numeric: true });
    const x = a[key];
    const y = b[key];
    const nx = !isNum(x);
    const ny = !isNum(y);
    if (nx !== ny) return nx ? 1 : -1;
    if (!nx && x !== y) return sign * (x - y);
    return name(a).localeCompare(name(b), undefined, { numeric: true });
  });
}

export function kpisView(root, query, signal) {
  document.title = "KPIs · EdgeLoop";
  const period = KPI_PERIODS.find((p) => p.key === query.get("days")) || KPI_PERIODS[0];
  const group = KPI_GROUPS.find((g) => g.key === query.get("group")) || KPI_GROUPS.find((g) => g.key === KPI_DEFAULT_GROUP);
  const go = (changes) => {
    const q = new URLSearchParams(query);
    for (const [k, v] of Object.entries(changes)) q.set(k, v);
    if (q.get("days") === KPI_PERIODS[0].key) q.delete("days");
    if (q.get("group") === KPI_DEFAULT_GROUP) q.delete("group");
    const qs = q.toString();
    location.hash = `#/kpis${qs ? `?${qs}` : ""}`;
  };
  const periodSel = segmented("Period", KPI_PERIODS, period.key, (k) => go({ days: k }));
  periodSel.dataset.testid = "kpi-period";
  const groupSel = segmented("Group by", KPI_GROUPS, group.key, (k) => go({ group: k }));
  groupSel.dataset.testid = "kpi-group";
  const summary = h("div", { class: "summary", dataset: { testid: "kpi-summary" } });
  const tiles = h("section", { class: "metrics", "aria-label": "Fleet KPIs", dataset: { testid: "kpi-tiles" } });
  const chartGrid = h("div", { class: "chart-grid kpi-charts" });
  const chartsPanel = h("section", { class: "panel" },
    h("div", { class: "panel-head" }, h("h2", null, "Per day"),
      h("span", { class: "muted small" }, `The fleet, each UTC day of the last ${period.days} days`)),
    h("div", { class: "charts-body" }, chartGrid));
  const tableHead = h("thead");
  const tableBody = h("tbody");
  const table = h("table", { class: "kpi-table", dataset: { testid: "kpi-table", group: group.key } }, tableHead, tableBody);
  const tablePanel = h("section", { class: "panel" },
    h("div", { class: "panel-head" }, h("h2", null, `Per ${group.one.toLowerCase()}`),
      h("span", { class: "muted small" }, "Sort by any column · — : no value (hover or tap it for why)")),
    h("div", { class: "table-scroll", tabindex: "0", role: "region", "aria-label": `KPIs per ${group.one.toLowerCase()}` }, table));
  const woBody = h("div", { class: "wo-body" });
  const woPanel = h("section", { class: "panel", dataset: { testid: "work-orders" } },
    h("div", { class: "panel-head" }, h("h2", null, "Repairs"),
      h("span", { class: "muted small" }, "Work orders with downtime: MTTR repairs, MTBF and availability come from these")),
    woBody);
  const content = h("div", { class: "kpi-content", hidden: true }, tiles, chartsPanel, tablePanel, woPanel);
  const status = h("div", { class: "kpi-status" }, stateBox("loading", "Loading KPIs…"));
  root.append(
    h("div", { class: "page-head" },
      h("div", null, h("h1", null, "KPIs"), summary),
      h("div", { class: "page-tools kpi-tools" }, periodSel, groupSel)),
    status,
    content);

  const charts = KPI_CHARTS.map((def) => new KpiChart(def));
  chartGrid.append(...charts.map((c) => c.el));
  signal.addEventListener("abort", () => { for (const c of charts) c.destroy(); }, { once: true });

  let loaded = false;
  let sig = "";
  let rows = [];

  function renderTableHead() {
    const cols = [{ key: "group", label: group.one, help: `Sort by ${group.one.toLowerCase()}` }, ...KPI_COLUMNS];
    tableHead.replaceChildren(h("tr", null, cols.map((c) => {
      const on = kpiSort.key === c.key;
      const dir = on ? kpiSort.dir : null;
      return h("th", {
        scope: "col", class: c.key === "group" ? "col-group" : "num",
        "aria-sort": on ? (dir === "asc" ? "ascending" : "descending") : "none",
      }, h("button", {
        type: "button", class: `sort-btn${on ? " is-sorted" : ""}`, title: c.help,
        dataset: { testid: "kpi-sort", key: c.key },
        onclick: () => {
          if (kpiSort.key === c.key) kpiSort.dir = kpiSort.dir === "asc" ? "desc" : "asc";
          else {
            kpiSort.key = c.key;
            kpiSort.dir = c.key === "group" ? "asc" : "desc";
          }
          renderTable();
        },
      }, c.label, h("span", { class: "sort-arrow", "aria-hidden": "true" }, on ? (dir === "asc" ? "▲" : "▼") : "↕")));
    })));
  }

  function renderTable() {
    const known = kpiSort.key === "group" || KPI_COLUMNS.some((c) => c.key === kpiSort.key);
    if (!known) Object.assign(kpiSort, { key: "alerts", dir: "desc" });
    renderTableHead();
    tableBody.replaceChildren(...sortKpiRows(rows, group.key, kpiSort).map((k) => {
      const name = kpiGroupLabel(group.key, k.group);
      const head = group.key === "asset"
        ? h("th", { scope: "row", class: "col-group" },
          h("a", { class: "asset-link", href: `#/asset/${encodeURIComponent(k.group)}` }, name),
          name !== k.group ? h("span", { class: "asset-id" }, k.group) : null)
        : h("th", { scope: "row", class: "col-group" }, name,
          h("span", { class: "asset-id" }, plural(k.assets, "asset")));
      return h("tr", { dataset: { testid: "kpi-row", group: k.group } }, head,
        KPI_COLUMNS.map((c) => h("td", { class: "num", dataset: { kpi: c.key } }, kpiCell(c, k))));
    }));
  }

  function renderWorkOrders(orders, start) {
    const shown = orders
      .filter((w) => w.closed_ms === null || w.closed_ms === undefined || (w.downtime_end ?? w.closed_ms) >= start)
      .sort((a, b) => (b.downtime_start ?? b.opened_ms) - (a.downtime_start ?? a.opened_ms))
      .slice(0, 50);
    if (!shown.length) {
      woBody.replaceChildren(stateBox("empty", "No work orders in this period.",
        "A CMMS reports repairs through POST /api/v1/work-orders; without them MTTR repairs and MTBF have no value."));
      return;
    }
    woBody.replaceChildren(h("ul", { class: "wo-list" }, shown.map((w) => {
      const open = w.closed_ms === null || w.closed_ms === undefined;
      const end = open ? null : (w.downtime_end ?? w.closed_ms);
      const down = isNum(w.downtime_start) ? (open ? "still down" : fmtSpan(end - w.downtime_start)) : "no downtime";
      return h("li", { class: `wo${open ? " wo-open" : ""}`, dataset: { testid: "work-order-row", id: w.id } },
        h("div", { class: "wo-head" },
          h("a", { class: "asset-link", href: `#/asset/${encodeURIComponent(w.asset)}` }, assetLabel(w.asset)),
          h("span", { class: `status-pill ${open ? "st-open" : "st-resolved"}` }, open ? "open" : "closed"),
          h("span", { class: "wo-down", dataset: { testid: "work-order-downtime" } }, down)),
        w.note ? h("p", { class: "wo-note" }, w.note) : null,
        h("p", { class: "muted small wo-meta" },
          isNum(w.downtime_start) ? `Down ${fmtTime(w.downtime_start)}${end !== null ? ` → ${fmtTime(end)}` : ""}` : `Opened ${fmtTime(w.opened_ms)}`,
          ` · ${w.id} · by ${w.opened_by}`, isNum(w.incident) ? " · " : null,
          isNum(w.incident) ? h("a", { href: `#/incidents/${w.incident}` }, `incident #${w.incident}`) : null));
    })));
  }

  poll(async () => {
    const wantGroups = group.key !== "fleet";
    let fleetRows;
    let groupRows;
    let daily;
    let orders;
    let now;
    try {
      now = await ensureStats(signal);
      if (!state.assets.size && group.key === "asset") await api("/assets", { signal }).then(rememberAssets).catch((e) => { if (isAbort(e)) throw e; });
      const start = now - period.days * DAY_MS;
      [fleetRows, groupRows, daily, orders] = await Promise.all([
        api(`/kpis?group=fleet&days=${period.days}`, { signal }),
        wantGroups ? api(`/kpis?group=${group.key}&days=${period.days}`, { signal }) : null,
        api(`/kpis/daily?group=fleet&days=${period.days}`, { signal }),
        api(`/work-orders?since=${Math.max(0, Math.floor(start))}`, { signal }).catch((e) => {
          if (isAbort(e)) throw e;
          return null; // the repairs list is optional; the KPIs already count them
        }),
      ]);
    } catch (e) {
      if (!isAbort(e) && !loaded) status.replaceChildren(stateBox("error", "Could not load the KPIs.", `${e.message}. Retrying…`));
      throw e;
    }
    loaded = true;
    const fleet = fleetRows.find((r) => r.group === "fleet") || null;
    // the API's period ends at the alerting clock's "now" (not the sample time in the header)
    setText(summary, `Last ${period.days} days${fleet ? ` · ${plural(fleet.assets, "asset")} · ${plural(fleet.alerts, "alert")}` : ""}`);
    const s = JSON.stringify([fleetRows, groupRows, daily, orders]);
    if (s === sig) return;
    sig = s;
    const quiet = !fleet || (!fleet.alerts && !fleet.raw_signals && !fleet.notifications && !fleet.repairs && !fleet.ongoing_repairs);
    if (quiet) {
      content.hidden = true;
      const longer = KPI_PERIODS.find((p) => p.days > period.days);
      status.replaceChildren(h("div", { class: "state state-empty", dataset: { testid: "kpi-empty" } },
        h("strong", null, fleet ? `No alerts in the last ${period.days} days.` : "No assets yet."),
        h("span", null, "The KPIs are computed from the alert and work-order lifecycle: alerts, acknowledgements, verdicts and repairs. They appear here once the first alert opens."),
        longer && fleet ? h("button", { type: "button", class: "btn btn-secondary", onclick: () => go({ days: longer.key }) }, `Look at the last ${longer.label}`) : null));
      return;
    }
    status.replaceChildren();
    content.hidden = false;
    tiles.replaceChildren(...KPI_DEFS.map((d) => kpiTile(d, fleet)));
    for (const c of charts) c.update(daily);
    rows = (wantGroups ? groupRows : fleetRows).map((r) => ({ ...r, _grouping: group.key }));
    renderTable();
    if (orders) renderWorkOrders(orders, now - period.days * DAY_MS);
    else woBody.replaceChildren(stateBox("error", "Could not load the work orders."));
  }, KPIS_EVERY_MS, signal);
}

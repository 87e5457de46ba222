// Page 7: Models (#/models): every model in the registry: kind, champion, challenger, its versions, the newest
// version with why it exists (its trigger) and its headline figures.

import { listLoader, syncKeyed } from "../components/list.js";
import { badge, stateBox } from "../components/widgets.js";
import { $, append, h, setText } from "../dom.js";
import { fmtPct, fmtSpan, fmtTime, humanize } from "../format.js";
import { poll } from "../poll.js";

const MODELS_EVERY_MS = 5000;
const HEADLINE_SHOWN = 3; // figures of the newest version in the list (all of them on the model's page)

/** "v3", or what version 0 of a detector model is: the built-in online detector. */
export function versionText(kind, v) {
  if (v === null || v === undefined) return "—";
  return v === 0 && kind === "detector" ? "built-in (v0)" : `v${v}`;
}

/** A trigger as a sentence: "drift by monitor (drift-7)". */
export function triggerText(t) {
  if (!t) return "—";
  return `${humanize(t.kind)} by ${t.by || "?"}${t.ref ? ` (${t.ref})` : ""}`;
}

/** A metric's value: shares and small rates with a few significant digits, counts whole. */
export function fmtMetric(x) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "—";
  if (Number.isInteger(x)) return String(x);
  const a = Math.abs(x);
  if (a >= 100) return x.toFixed(0);
  if (a >= 1) return x.toFixed(2);
  return x.toPrecision(2);
}

/** The headline figures first (as a training job records them), then the others by name. */
const METRIC_ORDER = ["false_alarms_per_asset_day", "recall", "median_delay_s"];
const metricRank = (k) => (METRIC_ORDER.includes(k) ? METRIC_ORDER.indexOf(k) : METRIC_ORDER.length);

/** One named figure in its unit: a share (recall, share_*) as a percentage, seconds (``*_s``) as a duration. */
export function fmtNamedMetric(k, v) {
  if (k.endsWith("_s") && Number.isFinite(v)) return `${humanize(k.slice(0, -2))} ${fmtSpan(v * 1000)}`;
  if ((k === "recall" || k === "precision" || k.startsWith("share_")) && Number.isFinite(v)) return `${humanize(k)} ${fmtPct(v)}`;
  return `${humanize(k)} ${fmtMetric(v)}`;
}

/** "false alarms per asset day 0.17 · recall 90 %" of a metrics dict (at most ``max`` entries). */
export function metricsText(metrics, max = Infinity) {
  const entries = Object.entries(metrics || {}).filter(([, v]) => Number.isFinite(v))
    .sort(([a], [b]) => metricRank(a) - metricRank(b) || a.localeCompare(b));
  if (!entries.length) return "—";
  const shown = entries.slice(0, max).map(([k, v]) => fmtNamedMetric(k, v));
  if (entries.length > max) shown.push(`+${entries.length - max} more`);
  return shown.join(" · ");
}

/** The version an alias points at in the whole profile (scope ``*``). */
export function aliasVersion(model, alias) {
  const a = (model.aliases || []).find((x) => x.alias === alias && x.scope === "*");
  return a ? a.version : null;
}

export const modelHref = (name, version) =>
  `#/models/${encodeURIComponent(name)}${version === undefined || version === null ? "" : `?version=${encodeURIComponent(version)}`}`;

export function modelsView(root, _query, signal) {
  document.title = "Models · EdgeLoop";
  const summary = h("div", { class: "summary", dataset: { testid: "models-summary" } });
  const tbody = h("tbody");
  const table = h("table", { class: "fleet-table model-table", dataset: { testid: "model-table" } },
    h("thead", null, h("tr", null,
      h("th", { scope: "col" }, "Model"), h("th", { scope: "col" }, "Champion"), h("th", { scope: "col" }, "Challenger"),
      h("th", { scope: "col", class: "num" }, "Versions"), h("th", { scope: "col" }, "Newest version"),
      h("th", { scope: "col" }, "Headline figures"))),
    tbody);
  const body = h("div", { class: "panel-body" }, stateBox("loading", "Loading models…"));
  root.append(
    h("div", { class: "page-head" }, h("div", null, h("h1", null, "Models"), summary),
      h("div", { class: "page-tools" }, h("a", { class: "panel-link", href: "#/campaigns" }, "Rollout campaigns →"))),
    h("section", { class: "panel" }, body));

  function makeRow(m) {
    return h("tr", { class: "model-row", dataset: { testid: "model-row", model: m.name } },
      h("td", { class: "cell-asset", "data-label": "Model" },
        h("a", { class: "asset-link", href: modelHref(m.name), dataset: { testid: "model-link" } }),
        h("span", { class: "asset-id" })),
      h("td", { "data-label": "Champion", dataset: { testid: "model-champion" } }),
      h("td", { "data-label": "Challenger", dataset: { testid: "model-challenger" } }),
      h("td", { class: "num", "data-label": "Versions", dataset: { testid: "model-versions" } }),
      h("td", { "data-label": "Newest version", dataset: { testid: "model-newest" } }),
      h("td", { class: "cell-metrics", "data-label": "Headline figures", dataset: { testid: "model-metrics" } }));
  }

  function updateRow(tr, m) {
    const sig = JSON.stringify(m);
    if (tr._sig === sig) return;
    tr._sig = sig;
    const [cName, cChamp, cChall, cCount, cNewest, cMetrics] = tr.children;
    setText($(".asset-link", cName), m.name);
    setText($(".asset-id", cName), [m.kind, m.profile ? `profile ${m.profile}` : null].filter(Boolean).join(" · "));
    setText(cChamp, versionText(m.kind, m.champion));
    const groups = (m.aliases || []).filter((a) => a.alias === "champion" && a.scope !== "*");
    if (groups.length) append(cChamp, [h("span", { class: "asset-id" }, groups.map((a) => `${a.scope}: v${a.version}`).join(", "))]);
    const challenger = aliasVersion(m, "challenger");
    setText(cChall, challenger === null ? "—" : versionText(m.kind, challenger));
    const versions = m.versions || [];
    setText(cCount, String(versions.length));
    const newest = versions[0];
    if (!newest) {
      setText(cNewest, m.kind === "detector" ? "none trained yet (the built-in detector serves)" : "—");
      setText(cMetrics, "—");
      return;
    }
    cNewest.replaceChildren(
      h("a", { href: modelHref(m.name, newest.version) }, `v${newest.version}`),
      ` · ${fmtTime(newest.created_ms)}`,
      h("span", { class: "asset-id" }, triggerText(newest.trigger)));
    setText(cMetrics, metricsText(newest.metrics, HEADLINE_SHOWN));
  }

  const load = listLoader({
    path: "/models", body, table, noun: "models",
    unavailable: "The model registry is not enabled on this platform.",
    empty: ["No models yet.",
      "Detector models appear with their first trained version; edge and RUL models when one is imported."],
  });
  poll(async () => {
    const list = await load(signal);
    list.sort((x, y) => String(x.name).localeCompare(String(y.name)));
    syncKeyed(tbody, list, { key: (m) => m.name, create: makeRow, update: updateRow });
    const challengers = list.filter((m) => aliasVersion(m, "challenger") !== null).length;
    summary.replaceChildren();
    append(summary, [
      h("span", null, `${list.length} model${list.length === 1 ? "" : "s"}`),
      challengers ? badge("info", `${challengers} with a challenger`) : null]);
  }, MODELS_EVERY_MS, signal);
}

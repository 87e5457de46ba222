// Page 8: one model (#/models/{name}[?version=N]): its versions, the history of its aliases (who promoted or
// rolled back what, when, why), and for one version (default: the champion) its lineage back to the built-in
// detector and its model card (the candidate against the champion of its day on the same held-out data).

import { api, isAbort } from "../api.js";
import { syncKeyed } from "../components/list.js";
import { badge, stateBox } from "../components/widgets.js";
import { append, h, setText } from "../dom.js";
import { fmtDuration, fmtNumber, fmtPct, fmtSpan, fmtTime, humanize, isoAttr } from "../format.js";
import { poll } from "../poll.js";
import { fmtMetric, metricsText, modelHref, triggerText, versionText } from "./models.js";

const MODEL_EVERY_MS = 5000;
const HISTORY_SHOWN = 50; // alias changes shown, newest first
const LABEL_IDS_SHOWN = 20;
const QUANTILES = ["p50", "p90", "p99", "p99.9"];
const ALIAS_ACTION = { set: "set", rollback: "rolled back", clear: "cleared" };

/** The rows of a model card's side-by-side table: label, how to read a ModelMetrics, how to show it. */
const CARD_ROWS = [
  { label: "False alarms per asset-day", get: (m) => m.false_alarms_per_asset_day, fmt: fmtMetric, key: "fa_rate" },
  { label: "False alarms (onsets outside confirmed faults)", get: (m) => m.false_alarms, fmt: fmtMetric, key: "false_alarms" },
  { label: "Onsets in windows labelled false alarm", get: (m) => m.false_alarm_window_onsets, fmt: fmtMetric, key: "fa_window_onsets" },
  { label: "Recall on confirmed faults", get: (m) => m.recall, fmt: (x) => (x === null || x === undefined ? "no confirmed fault" : fmtPct(x)), key: "recall" },
  { label: "Faults found", get: (m) => m.detected, fmt: (x, m) => (Number.isFinite(x) ? `${x} of ${fmtNumber(m.faults)}` : "—"), key: "detected" },
  { label: "Median delay", get: (m) => m.median_delay_s, fmt: (x) => (Number.isFinite(x) ? fmtSpan(x * 1000) : "—"), key: "median_delay" },
  ...QUANTILES.map((q) => ({ label: `Score ${q} (1 = threshold)`, get: (m) => (m.score_quantiles || {})[q], fmt: fmtMetric, key: `score_${q}` })),
  { label: "Share of scores above the threshold", get: (m) => m.share_above_1, fmt: fmtPct, key: "share_above_1" },
  { label: "Alarms (onsets)", get: (m) => m.alarms, fmt: fmtMetric, key: "alarms" },
  { label: "Rows scored", get: (m) => m.rows_scored, fmt: (x) => fmtNumber(x), key: "rows" },
  { label: "Asset-days", get: (m) => m.asset_days, fmt: fmtMetric, key: "asset_days" },
];

const fact = (label, value, testid) => h("div", null, h("dt", null, label), h("dd", testid ? { dataset: { testid } } : null, value));

function windowText(start, end) {
  if (!Number.isFinite(start) || !Number.isFinite(end)) return "—";
  return `${fmtTime(start)} → ${fmtTime(end)} (${fmtDuration(end - start)})`;
}

function labelsText(ids) {
  if (!ids || !ids.length) return "none";
  const shown = ids.slice(0, LABEL_IDS_SHOWN).map((i) => `#${i}`).join(", ");
  return `${ids.length} label${ids.length === 1 ? "" : "s"}: ${shown}${ids.length > LABEL_IDS_SHOWN ? ", …" : ""}`;
}

const trained = (e) => e.trigger && (e.trigger.kind === "drift" || e.trigger.kind === "labels");

/** Why a lineage is incomplete, in words: the API's ``complete`` says whether, this says where (the same rules as
 * ``ModelRegistry.lineage_complete``: every link stored and verified, with its trigger and code version, each
 * trained one with its data window, the chain reaching its root). */
function lineageProblems(lin) {
  const out = [];
  const entries = lin.entries || [];
  for (const e of entries) {
    if (e.builtin) continue;
    if (!e.found) out.push(`${e.ref} is not stored on this platform${e.problem ? ` (${e.problem})` : ""}`);
    else if (!e.verified) out.push(`${e.ref}: signature not verified${e.problem ? ` (${e.problem})` : ""}`);
    if (e.found && !e.trigger) out.push(`${e.ref}: no trigger recorded`);
    if (e.found && !e.code_version) out.push(`${e.ref}: no code version recorded`);
    if (e.found && trained(e) && !e.data) out.push(`${e.ref}: trained (trigger ${e.trigger.kind}) but its training data window is not recorded`);
  }
  const last = entries[entries.length - 1];
  if (!last) out.push("no link could be read");
  else if (last.found && !last.builtin && last.parent) out.push(`the chain stops at ${last.ref}`);
  if (!out.length) out.push("a link does not check out");
  return out;
}

function dataText(e) {
  const d = e.data;
  if (d) {
    return `${windowText(d.window_start_ms, d.window_end_ms)} · ${fmtNumber(d.rows)} rows · ${d.devices.length} device${d.devices.length === 1 ? "" : "s"}`;
  }
  return trained(e) ? "MISSING: a trained version without its data window" : "none (not trained here)";
}

function lineageStep(e) {
  let status;
  if (!e.found) status = badge("critical", "not stored here");
  else if (e.builtin) status = badge("info", "built-in");
  else if (e.verified) status = badge("ok", "signature verified");
  else status = badge("critical", "signature NOT verified");
  status.dataset.testid = "lineage-verified";
  return h("li", { class: `lineage-step${e.verified || e.builtin ? "" : " is-bad"}`, dataset: { testid: "lineage-step", ref: e.ref } },
    h("div", { class: "lineage-head" },
      h("a", { class: "lineage-ref", href: e.builtin || !e.found ? undefined : modelHref(e.ref.split("@")[0], e.ref.split("@")[1]) }, e.ref),
      status),
    e.builtin ? h("p", { class: "muted small" }, "The built-in online detector: each device learns from its own first data.") : null,
    e.problem ? h("p", { class: "lineage-problem", dataset: { testid: "lineage-problem" } }, e.problem) : null,
    !e.builtin && e.found ? h("dl", { class: "alert-meta lineage-facts" },
      fact("Created", e.created_ms ? `${fmtTime(e.created_ms)} by ${e.created_by || "?"}` : "—"),
      fact("Trigger", triggerText(e.trigger), "lineage-trigger"),
      fact("Data window", dataText(e), "lineage-data"),
      fact("Labels used", labelsText(e.label_ids), "lineage-labels"),
      fact("Code version", e.code_version || "—", "lineage-code"),
      fact("Parent", e.parent || "none")) : null);
}

function renderLineage(box, lin) {
  const entries = lin.entries || [];
  const root = entries[entries.length - 1];
  const verdict = lin.complete
    ? h("div", { class: "lineage-verdict is-complete", dataset: { testid: "lineage-status", complete: "true" } },
      badge("ok", "Complete lineage", "badge-text"),
      h("span", null, ` Every link is stored here, signed and verified, back to ${root ? root.ref : "its root"}.`))
    : h("div", { class: "lineage-verdict is-incomplete", role: "status", dataset: { testid: "lineage-status", complete: "false" } },
      badge("critical", "Incomplete lineage", "badge-text"),
      h("span", null, " Where this version came from cannot be fully shown:"),
      h("ul", { class: "lineage-problems" }, lineageProblems(lin).map((p) => h("li", null, p))));
  box.replaceChildren(verdict, h("ol", { class: "lineage", dataset: { testid: "lineage" } }, entries.map(lineageStep)));
}

function cardTable(card) {
  const cand = card.candidate_metrics;
  const champ = card.champion_metrics;
  return h("table", { class: "fleet-table card-table", dataset: { testid: "card-table" } },
    h("thead", null, h("tr", null, h("th", { scope: "col" }, "On the held-out span"),
      h("th", { scope: "col", class: "num" }, "This version"),
      h("th", { scope: "col", class: "num" }, `Champion (${card.champion || "?"})`))),
    h("tbody", null, CARD_ROWS.map((r) => {
      const a = cand ? r.get(cand) : undefined;
      const b = champ ? r.get(champ) : undefined;
      return h("tr", { dataset: { testid: "card-row", metric: r.key } },
        h("th", { scope: "row" }, r.label),
        h("td", { class: "num", dataset: { testid: "card-candidate" } }, cand ? r.fmt(a, cand) : "—"),
        h("td", { class: "num", dataset: { testid: "card-champion" } }, champ ? r.fmt(b, champ) : "—"));
    })));
}

function renderCard(box, view) {
  const m = view.manifest;
  const card = m.card || {};
  if (!Object.keys(card).length) {
    box.replaceChildren();
    let why = "This version was not trained on this platform (an imported model): there is no held-out evaluation.";
    if (m.data) why = "This version was registered without an evaluation.";
    else if (trained(m)) why = `This version was trained (trigger ${m.trigger.kind}) but records neither its training data nor an evaluation.`;
    append(box, [stateBox("empty", "No model card.", why),
    Object.keys(m.metrics || {}).length ? h("p", { class: "muted" }, `Figures in its manifest: ${metricsText(m.metrics)}`) : null]);
    return;
  }
  if (!card.candidate_metrics) { // a card of another shape: its figures as they are
    box.replaceChildren(h("dl", { class: "alert-meta" }, Object.entries(card).map(([k, v]) =>
      fact(humanize(k), typeof v === "object" ? JSON.stringify(v) : String(v)))));
    return;
  }
  const better = card.verdict === "better";
  const verdict = badge(better ? "ok" : "warning", better ? "better than the champion" : "not better than the champion", "badge-text");
  verdict.dataset.testid = "card-verdict";
  verdict.dataset.verdict = card.verdict;
  const labels = Object.entries(card.labels || {}).map(([k, n]) => `${n} ${humanize(k)}`).join(", ");
  box.replaceChildren();
  append(box, [
    h("div", { class: "card-head" }, verdict,
      h("span", { class: "muted" }, ` ${card.detector || ""} · held out ${windowText(card.split_ms, card.window_end_ms)}`
        + ` (the last ${fmtPct(card.holdout_fraction)} of the window)`)),
    (card.reasons || []).length ? h("ul", { class: "card-reasons", dataset: { testid: "card-reasons" } },
      card.reasons.map((r) => h("li", null, r))) : null,
    cardTable(card),
    h("dl", { class: "alert-meta card-facts" },
      fact("Training window", windowText(card.window_start_ms, card.window_end_ms)),
      fact("Labels used", labels || "none"),
      fact("Devices", `${(card.devices || []).filter((d) => d.trained).length} trained of ${(card.devices || []).length}`))]);
}

export function modelView(root, name, query, signal) {
  document.title = `${name} · Models · EdgeLoop`;
  const asked = /^\d+$/.test(query.get("version") || "") ? Number(query.get("version")) : null;
  const subtitle = h("div", { class: "summary", dataset: { testid: "model-summary" } });
  const versionsBody = h("tbody");
  const versionsTable = h("table", { class: "fleet-table version-table", dataset: { testid: "version-table" } },
    h("thead", null, h("tr", null,
      h("th", { scope: "col" }, "Version"), h("th", { scope: "col" }, "Created"), h("th", { scope: "col" }, "Trigger"),
      h("th", { scope: "col" }, "Parent"), h("th", { scope: "col" }, "Headline figures"), h("th", { scope: "col" }, "Aliases"))),
    versionsBody);
  const versionsBox = h("div", { class: "panel-body" }, stateBox("loading", "Loading versions…"));
  const historyBox = h("div", { class: "panel-body panel-pad" });
  const chosenTitle = h("span", { dataset: { testid: "chosen-version" } });
  const lineageBox = h("div", { class: "panel-body panel-pad", dataset: { testid: "lineage-box" } });
  const cardBox = h("div", { class: "panel-body panel-pad", dataset: { testid: "card-box" } });
  root.append(
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/models" }, "Models"),
      h("span", { "aria-hidden": "true" }, "/"), h("span", null, name)),
    h("div", { class: "page-head" }, h("div", null, h("h1", null, name), subtitle)),
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Versions")), versionsBox),
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Lineage of ", chosenTitle)), lineageBox),
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Model card")), cardBox),
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Alias history")), historyBox));

  let chosen = null; // the version whose lineage and card are shown
  let cardShown = null;
  let lineageSig = "";

  function makeVersionRow(v) {
    return h("tr", { class: "version-row", dataset: { testid: "version-row", version: v.version } },
      h("td", { "data-label": "Version" }), h("td", { "data-label": "Created" }), h("td", { "data-label": "Trigger" }),
      h("td", { "data-label": "Parent" }), h("td", { class: "cell-metrics", "data-label": "Headline figures" }),
      h("td", { "data-label": "Aliases", dataset: { testid: "version-aliases" } }));
  }

  function updateVersionRow(tr, v) {
    tr.classList.toggle("is-chosen", v.version === chosen);
    const sig = JSON.stringify(v);
    if (tr._sig === sig) return; // a version is immutable; only its aliases change
    tr._sig = sig;
    const [cV, cCreated, cTrigger, cParent, cMetrics, cAliases] = tr.children;
    cV.replaceChildren(h("a", { class: "asset-link", href: modelHref(name, v.version), dataset: { testid: "version-link" } }, `v${v.version}`),
      h("span", { class: "asset-id" }, v.format));
    cCreated.replaceChildren(h("time", { datetime: isoAttr(v.created_ms) }, fmtTime(v.created_ms)), h("span", { class: "asset-id" }, `by ${v.created_by}`));
    setText(cTrigger, triggerText(v.trigger));
    setText(cParent, v.parent || "—");
    setText(cMetrics, metricsText(v.metrics));
    cAliases.replaceChildren(...(v.aliases || []).map((a) => badge(a.startsWith("champion") ? "ok" : "info", a)));
  }

  let historySig = null;
  function renderHistory(kind, events) {
    const sig = JSON.stringify(events);
    if (sig === historySig) return;
    historySig = sig;
    const v = (x) => (x === null || x === undefined ? "unset" : versionText(kind, x));
    if (!events.length) {
      historyBox.replaceChildren(stateBox("empty", "No alias was ever set.", "Promotions and rollbacks appear here with who, when and why."));
      return;
    }
    const sorted = [...events].sort((a, b) => b.ts - a.ts || b.id - a.id).slice(0, HISTORY_SHOWN);
    historyBox.replaceChildren(h("ol", { class: "timeline alias-history", dataset: { testid: "alias-history" } }, sorted.map((e) =>
      h("li", { class: "tl-entry tl-person", dataset: { testid: "alias-event", action: e.action } },
        h("time", { class: "tl-time", datetime: isoAttr(e.ts) }, fmtTime(e.ts)),
        h("div", { class: "tl-body" },
          h("span", { class: "tl-what" }, `${e.alias}${e.scope === "*" ? "" : ` (${e.scope})`} ${ALIAS_ACTION[e.action] || e.action}: `
            + `${v(e.previous)} → ${v(e.version)}`),
          h("span", { class: "tl-actor" }, e.set_by || "—"),
          e.reason ? h("p", { class: "tl-detail" }, e.reason) : null)))));
  }

  async function showVersion(v) {
    const path = `/models/${encodeURIComponent(name)}/versions/${v}`;
    const [lin, view] = await Promise.all([api(`${path}/lineage`, { signal }), cardShown === v ? null : api(path, { signal })]);
    const sig = JSON.stringify(lin);
    if (sig !== lineageSig) {
      lineageSig = sig;
      renderLineage(lineageBox, lin);
    }
    if (view) {
      cardShown = v;
      renderCard(cardBox, view);
    }
  }

  poll(async () => {
    let model;
    try {
      model = await api(`/models/${encodeURIComponent(name)}`, { signal });
    } catch (e) {
      if (!isAbort(e) && !versionsBody.childElementCount) {
        const builtin = e.status === 404 && name.startsWith("detector.");
        versionsBox.replaceChildren(builtin ? stateBox("empty", "No trained version of this model yet.",
          "The built-in online detector (v0) serves this profile: each device learns from its own first data.")
          : e.status === 404 ? stateBox("error", `Model “${name}” not found.`, "Go back to the list of models.")
          : stateBox("error", "Could not load the model.", `${e.message}. Retrying…`));
        if (e.status === 404) {
          lineageBox.replaceChildren(stateBox("empty", "No lineage to show."));
          cardBox.replaceChildren(stateBox("empty", "No model card to show."));
        }
      }
      throw e;
    }
    const versions = model.versions || [];
    subtitle.replaceChildren();
    append(subtitle, [
      h("span", null, `${model.kind}${model.profile ? ` · profile ${model.profile}` : ""} · ${versions.length} version${versions.length === 1 ? "" : "s"}`),
      h("span", { dataset: { testid: "model-champion" } }, `champion ${versionText(model.kind, model.champion)}`)]);
    if (chosen === null) {
      const stored = (v) => versions.some((x) => x.version === v);
      chosen = asked !== null ? asked : stored(model.champion) ? model.champion : versions.length ? versions[0].version : null;
    }
    if (!versions.length) {
      versionsBox.replaceChildren(stateBox("empty", "No stored version.", model.kind === "detector"
        ? "The built-in detector (v0) serves until a trained version is promoted." : ""));
    } else if (versionsTable.parentElement !== versionsBox) {
      versionsBox.replaceChildren(versionsTable);
    }
    syncKeyed(versionsBody, versions, { key: (v) => v.version, create: makeVersionRow, update: updateVersionRow });
    renderHistory(model.kind, model.history || []);
    if (chosen === null || chosen === 0) {
      setText(chosenTitle, versionText(model.kind, 0));
      lineageBox.replaceChildren(stateBox("empty", "The built-in detector has no lineage.", "It is the root every trained version of this model descends from."));
      cardBox.replaceChildren(stateBox("empty", "No model card for the built-in detector."));
      return;
    }
    setText(chosenTitle, `v${chosen}${chosen === model.champion ? " (champion)" : ""}`);
    try {
      await showVersion(chosen);
    } catch (e) {
      if (!isAbort(e) && !lineageSig) {
        const msg = e.status === 404 ? `Version ${chosen} of ${name} does not exist.` : `${e.message}. Retrying…`;
        lineageBox.replaceChildren(stateBox("error", "Could not load the lineage.", msg));
        if (cardShown === null) cardBox.replaceChildren(stateBox("error", "Could not load the model card.", msg));
      }
      throw e;
    }
  }, MODEL_EVERY_MS, signal);
}

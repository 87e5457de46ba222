// Page 6: one incident (#/incidents/{id}): who/when, alerts with explanations, timeline, every lifecycle
// action, verdicts, "why not paged?".

import { api, ApiError, isAbort } from "../api.js";
import { explanationBars, scoreFact } from "../components/alert-card.js";
import { kickIncidentCount } from "../components/incident-count.js";
import {
  canAct, distinctVerdicts, INCIDENT_MOVES, incidentCall, INCIDENTS_EVERY_MS, incidentStatusPill, me, priorityBadge,
  sendVerdict, verdictChip, verdictChooser,
} from "../components/incident.js";
import { toast } from "../components/toast.js";
import { assetLabel, badge, stateBox } from "../components/widgets.js";
import { $, append, h, setText } from "../dom.js";
import { fmtAgo, fmtNumber, fmtTime, humanize, isoAttr } from "../format.js";
import { poll } from "../poll.js";
import { rememberAssets, state } from "../state.js";

const INCIDENT_TIMELINE_HEAD = 10; // a long timeline (a gateway storm) shows its start and its end
const INCIDENT_TIMELINE_TAIL = 30;
const INCIDENT_ALERTS_SHOWN = 20;

/** Moves a person may make from each status (mirrors the API's lifecycle; the API has the last word). */
const INCIDENT_NEXT = {
  open: ["acknowledge", "start", "resolve"],
  acknowledged: ["start", "resolve"],
  in_progress: ["resolve"],
  resolved: ["close", "reopen"],
  closed: [],
};
const TIMELINE_KIND = {
  opened: "Opened", "alert-opened": "Alert", "alert-cleared": "Condition ended", "alert-resolved": "Alert resolved",
  "alert-added": "Alert added", "alert-removed": "Alert moved", priority: "Priority", recovering: "Recovering",
  reopened: "Reopened", merged: "Merged", absorbed: "Absorbed", resolved: "Resolved", paged: "Paged", "not-paged": "Not paged",
  notified: "Notified", "notify-failed": "Notification failed", status: "Status", assigned: "Assigned",
  comment: "Comment", escalated: "Escalated",
};

/** The data time of an incident's oldest alert (it may predate the incident: raised during the startup grace). */
function firstAlert(inc) {
  const seen = (inc.alerts || []).map((a) => a.first_seen).filter(Number.isFinite);
  return seen.length ? Math.min(...seen) : null;
}
/** An incident's page reaches someone only through a configured channel for its route. */
const hasChannel = (inc) => (inc.page_channels || []).length > 0;
function pagedText(inc) {
  if (inc.paged_at === null || inc.paged_at === undefined) return "This incident has not paged anyone";
  if (!hasChannel(inc)) return `not paged: no notification channel is configured for the ${inc.route} route`;
  return `This incident paged ${inc.page_channels.join(", ")} at ${fmtTime(inc.paged_at)}`;
}

/** Data time (when it happened in the data) and record time (the platform's clock when it stored it) differ
 * when data arrives late (a replay, a gateway's backlog): then both are shown. */
const recordedLater = (ts, recordedAt) => Number.isFinite(recordedAt) && Math.abs(recordedAt - ts) >= 60_000;

function timelineEntry(e) {
  const person = e.actor && e.actor !== "system";
  return h("li", { class: `tl-entry tl-${e.kind}${person ? " tl-person" : ""}`, dataset: { testid: "timeline-entry", kind: e.kind } },
    h("time", { class: "tl-time", datetime: isoAttr(e.ts), title: `data time ${fmtTime(e.ts)}` }, fmtTime(e.ts)),
    recordedLater(e.ts, e.recorded_at) ? h("span", { class: "tl-recorded muted small", dataset: { testid: "timeline-recorded" } },
      `recorded ${fmtTime(e.recorded_at)}`) : null,
    h("div", { class: "tl-body" },
      h("span", { class: "tl-what" }, TIMELINE_KIND[e.kind] || humanize(e.kind)),
      h("span", { class: person ? "tl-actor" : "tl-actor tl-system", dataset: { testid: "timeline-actor" } }, e.actor || "—"),
      e.detail ? h("p", { class: "tl-detail", dataset: { testid: "timeline-detail" } }, e.detail) : null));
}

function incidentAlert(a) {
  return h("article", { class: `inc-alert sev-${a.severity} st-${a.status}`, dataset: { testid: "incident-alert", alertId: a.id, status: a.status } },
    h("div", { class: "alert-head" },
      badge(a.severity, a.severity, "sev-badge"),
      h("span", { class: "alert-kind" }, humanize(a.kind)),
      h("a", { class: "alert-asset", href: `#/asset/${encodeURIComponent(a.asset)}` }, assetLabel(a.asset)),
      h("span", { class: `status-pill st-${a.status}` }, a.status)),
    h("p", { class: "alert-msg", dataset: { testid: "alert-message" } }, a.message || "(no message)"),
    h("dl", { class: "alert-meta" },
      h("div", null, h("dt", null, "First seen"), h("dd", null, h("time", { datetime: isoAttr(a.first_seen) }, fmtTime(a.first_seen)))),
      h("div", null, h("dt", null, "Last seen"), h("dd", null, h("time", { datetime: isoAttr(a.last_seen) }, fmtTime(a.last_seen)))),
      h("div", null, h("dt", null, "Count"), h("dd", null, fmtNumber(a.count))),
      scoreFact(a),
      a.suppressed ? h("div", null, h("dt", null, "Not paged"), h("dd", { dataset: { testid: "alert-suppressed" } }, humanize(a.suppressed))) : null),
    explanationBars(a.explanation));
}

export function incidentDetailView(root, id, _query, signal) {
  document.title = `Incident #${id} · EdgeLoop`;
  let inc = null;
  let sig = "";
  let showAllTimeline = false;
  let showAllAlerts = false;

  const head = h("div", { class: "incident-page-head" }, stateBox("loading", "Loading incident…"));
  const facts = h("dl", { class: "incident-facts", dataset: { testid: "incident-facts" } });
  const errorBox = h("p", { class: "incident-error", role: "alert", dataset: { testid: "incident-error" }, hidden: true });
  const verdictsBox = h("div", { class: "verdicts", dataset: { testid: "incident-verdicts" } });
  const alertsBox = h("div", { class: "inc-alerts", dataset: { testid: "incident-alerts" } });
  const timelineBox = h("div", { dataset: { testid: "incident-timeline" } });
  const whyBox = h("div", { class: "why-body", dataset: { testid: "why-not-paged" } });

  // actions (built once, so polling never wipes what is being typed)
  const form = (testid, fields, submitLabel, onSubmit) => {
    const f = h("form", { class: "action-form", novalidate: true, hidden: true, dataset: { testid },
      onsubmit: async (ev) => {
        ev.preventDefault();
        const btns = f.querySelectorAll("button, input, textarea");
        btns.forEach((b) => { b.disabled = true; });
        const ok = await onSubmit();
        btns.forEach((b) => { b.disabled = false; });
        if (ok) {
          f.reset();
          f.hidden = true;
        }
      } },
    fields, h("div", { class: "form-buttons" },
      h("button", { type: "submit", class: "btn btn-primary btn-touch", dataset: { testid: `${testid}-send` } }, submitLabel),
      h("button", { type: "button", class: "btn btn-secondary btn-touch", onclick: () => { f.reset(); f.hidden = true; } }, "Cancel")));
    return f;
  };
  const openForm = (f) => {
    for (const other of [resolveForm, assignForm, commentForm]) if (other !== f) other.hidden = true;
    f.hidden = !f.hidden;
    if (!f.hidden) {
      const first = $("textarea, input", f);
      if (first) first.focus();
      f.scrollIntoView({ block: "nearest" });
    }
  };
  const act = async (action, body) => {
    const updated = await incidentCall(id, action, body, INCIDENT_MOVES[action]?.label.toLowerCase() || action, errorBox);
    if (!updated) return false;
    refresh.kick();
    kickIncidentCount();
    return updated;
  };
  const moveButtons = {};
  for (const action of ["acknowledge", "start", "resolve", "close", "reopen"]) {
    moveButtons[action] = h("button", {
      type: "button", class: `btn ${action === "acknowledge" || action === "start" ? "btn-primary" : "btn-secondary"} btn-touch`,
      dataset: { testid: `detail-${action}` }, hidden: true,
      onclick: async (ev) => {
        if (action === "resolve") {
          openForm(resolveForm);
          return;
        }
        ev.currentTarget.disabled = true;
        const btn = ev.currentTarget;
        const ok = await act(action);
        btn.disabled = false;
        if (ok) toast(`Incident #${id} ${INCIDENT_MOVES[action].done} by ${me() || "you"}`, "ok");
      },
    }, action === "resolve" ? "Resolve…" : INCIDENT_MOVES[action].label);
  }
  const resolveNote = h("textarea", { class: "input textarea", rows: "2", maxlength: "4000", id: `resolve-note-${id}`, dataset: { testid: "resolve-note" } });
  const resolveForm = form("resolve-form",
    [h("label", { for: `resolve-note-${id}` }, "What was done? (optional)"), resolveNote], "Resolve",
    async () => {
      const ok = await act("resolve", resolveNote.value.trim() ? { note: resolveNote.value.trim() } : undefined);
      if (ok) toast(`Incident #${id} resolved by ${me() || "you"}`, "ok");
      return Boolean(ok);
    });
  const assignName = h("input", { type: "text", class: "input", maxlength: "128", autocomplete: "off", autocapitalize: "none", spellcheck: "false", id: `assign-to-${id}`, dataset: { testid: "assign-name" } });
  const assignForm = form("assign-form",
    [h("label", { for: `assign-to-${id}` }, "Assign to (user name)"), assignName], "Assign",
    async () => {
      const to = assignName.value.trim();
      if (!to) {
        assignName.focus();
        return false;
      }
      const ok = await act("assign", { to });
      if (ok) toast(`Incident #${id} assigned to ${to}`, "ok");
      return Boolean(ok);
    });
  const commentText = h("textarea", { class: "input textarea", rows: "3", maxlength: "4000", id: `comment-${id}`, dataset: { testid: "comment-text" } });
  const commentForm = form("comment-form",
    [h("label", { for: `comment-${id}` }, "Comment"), commentText], "Add comment",
    async () => {
      const text = commentText.value.trim();
      if (!text) {
        commentText.focus();
        return false;
      }
      const ok = await incidentCall(id, "comments", { text }, "comment", errorBox);
      if (ok) {
        refresh.kick();
        toast(`Comment added to incident #${id}`, "ok");
      }
      return Boolean(ok);
    });
  const assignMe = h("button", { type: "button", class: "btn btn-secondary btn-touch", dataset: { testid: "detail-assign-me" },
    onclick: async (ev) => {
      const btn = ev.currentTarget;
      btn.disabled = true;
      const ok = await act("assign", { to: me() });
      btn.disabled = false;
      if (ok) toast(`Incident #${id} assigned to you (${me()})`, "ok");
    } }, "Assign to me");
  const assignOther = h("button", { type: "button", class: "btn btn-secondary btn-touch", dataset: { testid: "detail-assign" }, onclick: () => openForm(assignForm) }, "Assign to…");
  const unassign = h("button", { type: "button", class: "btn btn-secondary btn-touch", dataset: { testid: "detail-unassign" },
    onclick: async (ev) => {
      const btn = ev.currentTarget;
      btn.disabled = true;
      const ok = await act("assign", { to: null });
      btn.disabled = false;
      if (ok) toast(`Incident #${id} unassigned`, "ok");
    } }, "Unassign");
  const commentBtn = h("button", { type: "button", class: "btn btn-secondary btn-touch", dataset: { testid: "detail-comment" }, onclick: () => openForm(commentForm) }, "Comment");
  const chooserSlot = h("div", { class: "chooser-slot" });
  const verdictBtn = (verdict, label) => h("button", {
    type: "button", class: "btn btn-secondary btn-touch", dataset: { testid: `detail-${verdict.replace("_", "-")}` },
    onclick: () => {
      chooserSlot.replaceChildren(verdictChooser(verdict, async (value) => {
        const ok = await sendVerdict(id, verdict, value, errorBox);
        if (ok) {
          chooserSlot.replaceChildren();
          refresh.kick();
        }
        return ok;
      }, () => chooserSlot.replaceChildren()));
      $(".chip-btn", chooserSlot)?.focus({ preventScroll: true });
      chooserSlot.scrollIntoView({ block: "nearest" });
    },
  }, label);
  const closedNote = h("p", { class: "muted", hidden: true }, "Closed: nothing more to do. A new alert reopens it by itself.");
  const activeNote = h("p", { class: "muted small", hidden: true, dataset: { testid: "condition-active" } },
    "The condition is still active: it can be closed once it clears (it then closes by itself).");
  const actions = h("section", { class: "panel incident-actions-panel", "aria-label": "Actions", dataset: { testid: "incident-actions" } },
    h("div", { class: "panel-head" }, h("h2", null, "Actions")),
    h("div", { class: "panel-pad" },
      errorBox,
      h("div", { class: "action-row" }, Object.values(moveButtons)),
      closedNote, activeNote,
      resolveForm,
      h("div", { class: "action-row" }, assignMe, assignOther, unassign, commentBtn),
      assignForm, commentForm,
      h("div", { class: "action-row" }, verdictBtn("confirmed", "Confirm"), verdictBtn("false_alarm", "False alarm"), verdictBtn("relabel", "Relabel")),
      chooserSlot));

  const whyDetails = h("details", { class: "panel why", dataset: { testid: "why-panel" },
    ontoggle: () => { if (whyDetails.open) loadWhy(); } },
  h("summary", { class: "panel-head" }, h("h2", null, "Why not paged?")), whyBox);

  // shown once the incident has loaded: a missing incident gets no facts and no action buttons
  const layout = h("div", { class: "incident-layout", hidden: true },
    h("div", { class: "incident-side" },
      h("section", { class: "panel" }, h("div", { class: "panel-pad" }, facts, verdictsBox)),
      canAct() ? actions : h("p", { class: "readonly-note" }, "You can read this incident; acting on it needs the technician role."),
      whyDetails),
    h("div", { class: "incident-main" },
      h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Alerts and why they fired")), alertsBox),
      h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Timeline")), timelineBox)));
  root.append(
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/incidents", class: "back-link" }, "‹ Incidents")),
    head,
    layout);

  async function loadWhy() {
    if (!inc) return;
    whyBox.replaceChildren(stateBox("loading", "Loading…"));
    const assets = inc.assets || [];
    let found = [];
    try {
      if (assets.length && assets.length <= 5) {
        const lists = await Promise.all(assets.map((a) => api(`/suppressions?asset=${encodeURIComponent(a)}&limit=100`, { signal })));
        found = lists.flat();
      } else {
        const since = Math.max(0, inc.opened_at - 3600_000);
        found = (await api(`/suppressions?since=${since}&limit=1000`, { signal })).filter((x) => x.incident === id || assets.includes(x.asset));
      }
    } catch (e) {
      if (isAbort(e)) return;
      whyBox.replaceChildren(stateBox("error", "Could not load the suppression records.", e.message));
      return;
    }
    found.sort((a, b) => b.ts - a.ts);
    whyBox.replaceChildren();
    append(whyBox, [
      h("p", { class: "why-answer" }, pagedText(inc) + ".",
        found.length ? " Signals on its assets that did not page on their own:" : " No suppression recorded for its assets."),
      found.length ? h("ul", { class: "why-list" }, found.map((x) => h("li", { dataset: { testid: "suppression", reason: x.reason } },
        h("div", { class: "why-head" },
          h("span", { class: "why-reason" }, humanize(x.reason)),
          h("span", { class: "muted" }, `${assetLabel(x.asset)} · ${x.rule}`),
          x.incident === id ? h("span", { class: "why-this" }, "this incident") : null),
        h("time", { class: "muted small", datetime: isoAttr(x.ts) }, fmtTime(x.ts)),
        x.detail ? h("p", { class: "why-detail" }, x.detail) : null))) : null]);
  }

  function renderFacts() {
    const stamps = (inc.timeline || []).filter((e) => e.kind === "status" && e.data && e.data.to);
    const last = (to) => [...stamps].reverse().find((e) => e.data.to === to);
    const resolved = last("resolved");
    const suppressed = [...new Set((inc.alerts || []).map((a) => a.suppressed).filter(Boolean))];
    const row = (label, value, testid) => h("div", null, h("dt", null, label), h("dd", testid ? { dataset: { testid } } : null, value));
    facts.replaceChildren();
    append(facts, [
      row("Opened", [h("time", { datetime: isoAttr(inc.opened_at), title: "data time" }, fmtTime(inc.opened_at)), h("span", { class: "muted", dataset: { ago: inc.opened_at } }, ` · ${fmtAgo(inc.opened_at)}`)], "incident-opened"),
      firstAlert(inc) !== null && firstAlert(inc) < inc.opened_at - 60_000
        ? row("First alert", [h("time", { datetime: isoAttr(firstAlert(inc)), title: "data time" }, fmtTime(firstAlert(inc))),
          h("span", { class: "muted" }, " · before the incident opened")], "incident-first-alert") : null,
      row("Updated", h("time", { datetime: isoAttr(inc.updated_at), title: "platform time" }, `${fmtTime(inc.updated_at)} (recorded)`)),
      row("Paged", inc.paged_at && hasChannel(inc) ? fmtTime(inc.paged_at) : inc.paged_at ? pagedText(inc)
        : `not paged${suppressed.length ? ` (${suppressed.map(humanize).join(", ")})` : ""}`, "incident-paged"),
      row("Acknowledged", inc.acknowledged_by ? `${inc.acknowledged_by} at ${fmtTime(inc.acknowledged_at)}` : "not yet", "incident-acknowledged"),
      row("Assignee", inc.assignee || "Unassigned", "incident-assignee"),
      resolved ? row("Resolved", `${resolved.actor} at ${fmtTime(resolved.ts)}`, "incident-resolved") : null,
      inc.closed_at ? row("Closed", fmtTime(inc.closed_at)) : null,
      inc.merged_into ? row("Merged into", h("a", { href: `#/incidents/${inc.merged_into}` }, `incident #${inc.merged_into}`)) : null,
      row("Assets", h("span", { class: "asset-links" }, (inc.assets || []).slice(0, 10).map((a, i) => [i ? ", " : "", h("a", { href: `#/asset/${encodeURIComponent(a)}` }, assetLabel(a))]),
        (inc.assets || []).length > 10 ? ` + ${(inc.assets || []).length - 10} more` : "")),
      row("Scope", `${inc.kind} ${inc.scope}`),
      inc.escalation_level ? row("Escalation", `level ${inc.escalation_level}`) : null,
    ]);
  }

  function renderAlerts() {
    const alerts = inc.alerts || [];
    if (!alerts.length) {
      alertsBox.replaceChildren(stateBox("empty", "No alerts linked."));
      return;
    }
    const shown = showAllAlerts ? alerts : alerts.slice(0, INCIDENT_ALERTS_SHOWN);
    alertsBox.replaceChildren(...shown.map(incidentAlert));
    if (shown.length < alerts.length) {
      alertsBox.append(h("button", { type: "button", class: "btn btn-secondary btn-touch show-more",
        onclick: () => { showAllAlerts = true; renderAlerts(); } }, `Show all ${alerts.length} alerts`));
    }
  }

  function renderTimeline() {
    const tl = inc.timeline || [];
    if (!tl.length) {
      timelineBox.replaceChildren(stateBox("empty", "Nothing recorded yet."));
      return;
    }
    const long = !showAllTimeline && tl.length > INCIDENT_TIMELINE_HEAD + INCIDENT_TIMELINE_TAIL + 5;
    const items = long
      ? [...tl.slice(0, INCIDENT_TIMELINE_HEAD).map(timelineEntry),
        h("li", { class: "tl-gap" }, h("button", { type: "button", class: "btn btn-secondary btn-touch",
          onclick: () => { showAllTimeline = true; renderTimeline(); } },
        `Show ${tl.length - INCIDENT_TIMELINE_HEAD - INCIDENT_TIMELINE_TAIL} more entries`)),
        ...tl.slice(-INCIDENT_TIMELINE_TAIL).map(timelineEntry)]
      : tl.map(timelineEntry);
    timelineBox.replaceChildren(h("ol", { class: "timeline" }, items));
  }

  function renderActions() {
    const next = INCIDENT_NEXT[inc.status] || [];
    for (const [action, btn] of Object.entries(moveButtons)) btn.hidden = !next.includes(action);
    if (!next.includes("resolve")) resolveForm.hidden = true;
    const closed = inc.status === "closed";
    closedNote.hidden = !closed;
    const active = (inc.alerts || []).some((a) => a.status !== "resolved");
    activeNote.hidden = !(inc.status === "resolved" && active);
    const mine = me();
    assignMe.hidden = closed || !mine || inc.assignee === mine;
    assignOther.hidden = closed;
    unassign.hidden = closed || !inc.assignee;
    if (closed) assignForm.hidden = true;
  }

  function renderHead() {
    document.title = `#${inc.id} ${inc.title} · EdgeLoop`;
    head.replaceChildren(
      h("div", { class: "incident-head" }, priorityBadge(inc), h("span", { class: "incident-kind" }, `#${inc.id} · ${inc.kind}`), incidentStatusPill(inc.status)),
      h("h1", { class: "incident-h1", dataset: { testid: "incident-heading" } }, inc.title || `Incident #${inc.id}`));
    head.dataset.status = inc.status;
  }

  let labelsSig = "";
  let namesTried = false;
  const refresh = poll(async () => {
    if (!namesTried) {
      namesTried = true;
      if (!state.assets.size) await api("/assets", { signal }).then(rememberAssets).catch((e) => { if (isAbort(e)) throw e; });
    }
    let got;
    try {
      got = await api(`/incidents/${encodeURIComponent(id)}`, { signal });
    } catch (e) {
      if (isAbort(e)) throw e;
      if (e instanceof ApiError && e.status === 404) {
        head.replaceChildren(stateBox("error", `Incident #${id} not found.`, "It may belong to another tenant, or the link is wrong."));
        layout.hidden = true;
        inc = null;
        sig = "";
        return;
      }
      if (!inc) head.replaceChildren(stateBox("error", "Could not load the incident.", `${e.message}. Retrying…`));
      throw e;
    }
    const s = JSON.stringify(got);
    if (s !== sig) {
      sig = s;
      inc = got;
      root.dataset.status = inc.status;
      renderHead();
      renderFacts();
      renderAlerts();
      renderTimeline();
      renderActions();
      layout.hidden = false;
    }
    try {
      const labels = (await api(`/labels?since=${inc.opened_at}`, { signal })).filter((l) => l.incident === id);
      const ls = JSON.stringify(labels);
      if (ls !== labelsSig) {
        labelsSig = ls;
        const v = distinctVerdicts(labels);
        verdictsBox.replaceChildren(...(v.length
          ? [h("h3", null, "Verdict"), ...v.map((x) => h("p", { class: "verdict-line" }, verdictChip(x),
            h("span", { class: "muted small" }, ` by ${x.by} at ${fmtTime(x.ts)}${x.alerts.length > 1 ? ` (${x.alerts.length} alerts)` : ""}`)))]
          : [h("p", { class: "muted small" }, "No verdict yet: confirm it or call it a false alarm.")]));
      }
    } catch (e) {
      if (isAbort(e)) throw e;
    }
  }, INCIDENTS_EVERY_MS, signal);

  document.addEventListener("edgeloop:stats", () => {
    for (const el of facts.querySelectorAll("[data-ago]")) setText(el, ` · ${fmtAgo(Number(el.dataset.ago))}`);
  }, { signal });
}

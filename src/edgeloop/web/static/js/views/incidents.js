// Page 5: Incidents (#/incidents[?show=done]), the technician's inbox.
//
// The inbox lists what is still being worked on (open, acknowledged, in progress) in the API's order (highest
// priority first); each card has one-tap actions. show=done lists resolved and closed incidents. Above the
// incidents: the actions waiting for a person's approval (components/approvals.js).

import { api, isAbort } from "../api.js";
import { approvalsSection } from "../components/approvals.js";
import { kickIncidentCount } from "../components/incident-count.js";
import {
  canAct, distinctVerdicts, INCIDENT_MOVES, incidentCall, incidentRoute, INCIDENTS_EVERY_MS, incidentStatusPill, me,
  priorityBadge, sendVerdict, verdictChip, verdictChooser,
} from "../components/incident.js";
import { syncKeyed } from "../components/list.js";
import { toast } from "../components/toast.js";
import { assetLabel, segmented, stateBox } from "../components/widgets.js";
import { $, append, h, setText } from "../dom.js";
import { fmtAgo, fmtTime, isoAttr } from "../format.js";
import { poll } from "../poll.js";
import { rememberAssets, state } from "../state.js";

function incidentAssets(inc, max = 3) {
  const list = inc.assets || [];
  const shown = list.slice(0, max).map((a) => assetLabel(a));
  return list.length > max ? `${shown.join(", ")} + ${list.length - max} more` : shown.join(", ") || inc.scope || "—";
}

function renderIncidentCard(card, inc, verdicts, ctx) {
  card._sig = JSON.stringify([inc, verdicts]);
  card._inc = inc;
  card._verdicts = verdicts;
  card.dataset.incidentId = String(inc.id);
  card.dataset.status = inc.status;
  card.className = `incident-card route-${incidentRoute(inc)} st-${inc.status}`;
  const errorBox = h("p", { class: "incident-error", role: "alert", dataset: { testid: "incident-error" }, hidden: true });
  const chooserSlot = h("div", { class: "chooser-slot" });
  const buttons = [];
  const setBusy = (on) => {
    card.classList.toggle("is-busy", on);
    for (const b of buttons) b.disabled = on;
  };
  const move = async (action) => {
    setBusy(true);
    const updated = await incidentCall(inc.id, action, undefined, INCIDENT_MOVES[action].label.toLowerCase(), errorBox);
    setBusy(false);
    if (!updated) return;
    const who = (action === "acknowledge" && updated.acknowledged_by) || me() || "you";
    toast(`Incident #${inc.id} ${INCIDENT_MOVES[action].done} by ${who}`, "ok");
    card._choosing = null;
    renderIncidentCard(card, updated, card._verdicts, ctx);
    kickIncidentCount();
    ctx.refresh();
  };
  const choose = (verdict) => {
    card._choosing = verdict;
    chooserSlot.replaceChildren(verdictChooser(verdict, async (value) => {
      const ok = await sendVerdict(inc.id, verdict, value, errorBox);
      if (ok) {
        card._choosing = null;
        chooserSlot.replaceChildren();
        ctx.refresh();
      }
      return ok;
    }, () => {
      card._choosing = null;
      chooserSlot.replaceChildren();
    }));
    const first = $(".chip-btn", chooserSlot);
    if (first) first.focus({ preventScroll: true });
    chooserSlot.scrollIntoView({ block: "nearest" });
  };
  const primary = inc.status === "open" ? "acknowledge" : inc.status === "acknowledged" ? "start" : null;
  if (canAct()) {
    if (primary) {
      buttons.push(h("button", {
        type: "button", class: "btn btn-primary btn-touch", dataset: { testid: `incident-${primary}` },
        onclick: () => move(primary),
      }, INCIDENT_MOVES[primary].label));
    }
    buttons.push(
      h("button", { type: "button", class: "btn btn-secondary btn-touch", dataset: { testid: "incident-confirm" }, onclick: () => choose("confirmed") }, "Confirm"),
      h("button", { type: "button", class: "btn btn-secondary btn-touch", dataset: { testid: "incident-false-alarm" }, onclick: () => choose("false_alarm") }, "False alarm"));
  }
  const people = [];
  if (inc.acknowledged_by) people.push(`Ack. by ${inc.acknowledged_by}`);
  card.replaceChildren(); // append() skips null children; replaceChildren() would print "null"
  append(card, [
    h("div", { class: "incident-head" },
      priorityBadge(inc),
      h("span", { class: "incident-kind" }, `#${inc.id} · ${inc.kind}`),
      incidentStatusPill(inc.status)),
    h("a", { class: "incident-title", href: `#/incidents/${inc.id}`, dataset: { testid: "incident-title" } }, inc.title || `Incident #${inc.id}`),
    h("dl", { class: "incident-meta" },
      h("div", null, h("dt", null, "Assets"), h("dd", { dataset: { testid: "incident-assets" } }, incidentAssets(inc))),
      h("div", null, h("dt", null, "Opened"), h("dd", null,
        h("time", { datetime: isoAttr(inc.opened_at), title: fmtTime(inc.opened_at), dataset: { ago: inc.opened_at } }, fmtAgo(inc.opened_at)))),
      h("div", null, h("dt", null, "Assignee"), h("dd", { dataset: { testid: "incident-assignee" } }, inc.assignee || "Unassigned")),
      people.length ? h("div", null, h("dt", null, "Who"), h("dd", null, people.join(" · "))) : null),
    verdicts.length ? h("div", { class: "verdicts" }, verdicts.map(verdictChip)) : null,
    errorBox,
    buttons.length ? h("div", { class: "incident-actions" }, buttons) : null,
    chooserSlot]);
  return card;
}

export function incidentsView(root, query, signal) {
  const done = query.get("show") === "done";
  document.title = `${done ? "Resolved incidents" : "Incidents"} · EdgeLoop`;
  const counter = h("span", { class: "muted", dataset: { testid: "incident-summary" } });
  const list = h("div", { class: "incident-list", dataset: { testid: "incident-list" } });
  const body = h("div", { class: "incident-body" }, stateBox("loading", "Loading incidents…"));
  const toggle = segmented("Which incidents", [{ key: "inbox", label: "Inbox" }, { key: "done", label: "Resolved / closed" }],
    done ? "done" : "inbox", (k) => { location.hash = k === "done" ? "#/incidents?show=done" : "#/incidents"; });
  toggle.classList.add("segmented-touch");
  toggle.dataset.testid = "incident-toggle";
  const approvals = approvalsSection(signal);
  append(root, [
    h("div", { class: "page-head" },
      h("div", null, h("h1", null, "Incidents"), h("div", { class: "summary" }, counter)),
      h("div", { class: "page-tools" }, toggle)),
    canAct() ? null : h("p", { class: "readonly-note" }, "You can read incidents; acting on them needs the technician role."),
    done ? null : approvals.section,
    body]);
  let namesTried = false; // asset names for the cards: fetched once, before the first cards are drawn
  let verdicts = new Map(); // incident id -> distinct verdicts (kept when the labels call fails)
  let loaded = false;

  let p = null;
  const ctx = { refresh: () => p && p.kick() };
  approvals.onRefresh(ctx.refresh);
  p = poll(async () => {
    if (!namesTried) {
      namesTried = true;
      if (!state.assets.size) await api("/assets", { signal }).then(rememberAssets).catch((e) => { if (isAbort(e)) throw e; });
    }
    if (!done) await approvals.load();
    let incidents;
    try {
      incidents = await api(done ? "/incidents?status=resolved&status=closed&limit=100" : "/incidents?inbox=true&limit=200", { signal });
    } catch (e) {
      if (!isAbort(e) && !loaded) body.replaceChildren(stateBox("error", "Could not load incidents.", `${e.message}. Retrying…`));
      throw e;
    }
    if (incidents.length) {
      const since = Math.min(...incidents.map((i) => i.opened_at).filter(Number.isFinite));
      try {
        const labels = await api(`/labels${Number.isFinite(since) ? `?since=${since}` : ""}`, { signal });
        const by = new Map();
        for (const l of labels) {
          if (!by.has(l.incident)) by.set(l.incident, []);
          by.get(l.incident).push(l);
        }
        verdicts = new Map([...by].map(([k, v]) => [k, distinctVerdicts(v)]));
      } catch (e) {
        if (isAbort(e)) throw e;
      }
    }
    loaded = true;
    const urgent = incidents.filter((i) => incidentRoute(i) === "urgent").length;
    const unacked = incidents.filter((i) => i.status === "open").length;
    setText(counter, done
      ? `${incidents.length}${incidents.length === 100 ? "+" : ""} resolved or closed`
      : `${incidents.length} in the inbox${urgent ? ` · ${urgent} urgent` : ""}${unacked ? ` · ${unacked} not acknowledged` : ""}`);
    if (!incidents.length) {
      body.replaceChildren(done
        ? stateBox("empty", "No resolved or closed incidents yet.")
        : h("div", { class: "state state-empty", dataset: { testid: "incident-empty" } },
          h("strong", null, "Nothing to do: the inbox is empty."),
          h("span", null, "New incidents appear here within seconds, highest priority first.")));
      list.replaceChildren();
      return;
    }
    if (list.parentElement !== body) body.replaceChildren(list);
    // a card being acted on (busy, or its verdict chooser open) is neither redrawn nor removed
    const acting = (card) => Boolean(card._choosing) || card.classList.contains("is-busy");
    syncKeyed(list, incidents, {
      key: (inc) => inc.id,
      create: () => h("article", { dataset: { testid: "incident-card" } }),
      update: (card, inc) => {
        const v = verdicts.get(inc.id) || [];
        if (!acting(card) && card._sig !== JSON.stringify([inc, v])) renderIncidentCard(card, inc, v, ctx);
      },
      keep: acting,
    });
  }, INCIDENTS_EVERY_MS, signal);

  document.addEventListener("edgeloop:stats", () => {
    for (const el of list.querySelectorAll("[data-ago]")) setText(el, fmtAgo(Number(el.dataset.ago)));
  }, { signal });
}

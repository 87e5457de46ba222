// Shared by the incident inbox and the incident page: priority and status badges, verdicts, the verdict
// chooser, and the incident API calls with their error reporting.
//
// Every change goes through the incident API and is recorded as the signed-in user; an error (403 / 409 / 422
// detail) is shown at the card or the action and as a toast, never swallowed.

import { api, ApiError } from "../api.js";
import { append, h, setText } from "../dom.js";
import { fmtTime, humanize } from "../format.js";
import { session } from "../session.js";
import { toast } from "./toast.js";

export const INCIDENTS_EVERY_MS = 3000;

/** Common fault types offered in one tap (the simulator's kinds first); anything else can be typed. */
const FAULT_TYPES = ["bearing_wear", "cavitation", "overheating", "misalignment", "seal_leak",
  "sensor_stuck", "sensor_drift", "dropout"];
const FALSE_ALARM_REASONS = ["Planned work or test run", "Normal change of load or setpoint",
  "Threshold too tight for this machine", "Already handled in another incident"];
export const INCIDENT_MOVES = {
  acknowledge: { label: "Acknowledge", done: "acknowledged" },
  start: { label: "Start work", done: "in progress" },
  resolve: { label: "Resolve", done: "resolved" },
  close: { label: "Close", done: "closed" },
  reopen: { label: "Reopen", done: "reopened" },
};

const statusLabel = (s) => humanize(s || "—");

export function incidentRoute(inc) {
  return inc.route === "urgent" || inc.route === "normal" ? inc.route : (inc.priority >= 60 ? "urgent" : "normal");
}

export function priorityBadge(inc) {
  const r = incidentRoute(inc);
  const p = Number.isFinite(inc.priority) ? Math.round(inc.priority) : null;
  return h("span", {
    class: `prio prio-${r}`, dataset: { testid: "incident-priority", route: r },
    title: p === null ? r : `Priority ${p} of 100 (${r})`,
  }, r === "urgent" ? "Urgent" : "Normal", p === null ? null : h("span", { class: "prio-num" }, `P${p}`));
}

export function incidentStatusPill(status) {
  return h("span", { class: `status-pill st-${status}`, dataset: { testid: "incident-status", status } }, statusLabel(status));
}

export function canAct() {
  // a viewer may read but not act; without sign-in (server without auth) the API decides
  return !session.user || session.user.role !== "viewer";
}

export function me() {
  return session.user && session.user.username ? session.user.username : null;
}

/** "bearing_wear" -> "bearing wear"; free text typed on a phone -> the API's form ("Seal leak" -> "seal_leak"). */
function normalizeFaultType(text) {
  return String(text || "").trim().toLowerCase().replace(/\s+/g, "_");
}

function verdictText(l) {
  if (l.verdict === "false_alarm") return `False alarm: ${l.reason}`;
  const what = humanize(l.fault_type);
  return l.verdict === "relabel" ? `Relabelled: ${what}` : `Confirmed: ${what}`;
}

/** One entry per distinct verdict (an incident's verdict is stored once per alert). */
export function distinctVerdicts(labels) {
  const seen = new Map();
  for (const l of labels) {
    const key = `${l.verdict}|${l.fault_type}|${l.reason}|${l.by}|${l.ts}`;
    const cur = seen.get(key);
    if (cur) cur.alerts.push(l.alert);
    else seen.set(key, { ...l, alerts: [l.alert] });
  }
  return [...seen.values()].sort((a, b) => b.ts - a.ts);
}

export function verdictChip(v) {
  return h("span", {
    class: `verdict verdict-${v.verdict}`, dataset: { testid: "incident-verdict", verdict: v.verdict, faultType: v.fault_type || "" },
    title: `${verdictText(v)} (by ${v.by} at ${fmtTime(v.ts)})`,
  }, verdictText(v));
}

/**
 * POST an incident action; on failure the API's detail goes into `errorBox` and a toast.
 * Returns the response body, or null when it failed.
 */
export async function incidentCall(id, path, body, what, errorBox) {
  if (errorBox) errorBox.hidden = true;
  try {
    return await api(`/incidents/${encodeURIComponent(id)}/${path}`, { method: "POST", body });
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return null; // signed out: the sign-in form is shown
    const who = session.user ? `${session.user.username} (${session.user.role})` : "You";
    const msg = e instanceof ApiError && e.status === 403
      ? `Not allowed: ${who} may not ${what}. ${e.message}`
      : `Could not ${what} (incident #${id}): ${e.message}`;
    if (errorBox) {
      setText(errorBox, msg);
      errorBox.hidden = false;
    }
    toast(msg, "error");
    return null;
  }
}

/**
 * The verdict chooser: common choices in one tap, or free text and Send.
 * verdict: "confirmed" | "relabel" (a fault type) or "false_alarm" (a reason).
 * send(value) -> Promise<boolean> (true: done, the chooser closes).
 */
export function verdictChooser(verdict, send, cancel) {
  const isFault = verdict !== "false_alarm";
  const prompt = verdict === "confirmed" ? "Which fault did you find?"
    : verdict === "relabel" ? "What was it really?" : "Why is it a false alarm?";
  const input = h("input", {
    type: "text", class: "input", maxlength: isFault ? "64" : "1000", autocomplete: "off",
    autocapitalize: isFault ? "none" : "sentences", spellcheck: isFault ? "false" : "true",
    "aria-label": isFault ? "Other fault type" : "Other reason",
    placeholder: isFault ? "Other, e.g. impeller_damage" : "Another reason",
    dataset: { testid: "chooser-input" },
  });
  const box = h("div", { class: "chooser", role: "group", "aria-label": prompt, dataset: { testid: "verdict-chooser", verdict } });
  const busy = (on) => {
    box.classList.toggle("is-busy", on);
    for (const b of box.querySelectorAll("button, input")) b.disabled = on;
  };
  const go = async (value) => {
    if (!value) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    input.removeAttribute("aria-invalid");
    busy(true);
    const ok = await send(value);
    if (box.isConnected) busy(false);
    if (!ok && box.isConnected) input.focus({ preventScroll: true });
  };
  const choices = isFault ? FAULT_TYPES : FALSE_ALARM_REASONS;
  append(box, [
    h("p", { class: "chooser-prompt" }, prompt),
    h("div", { class: "chip-grid" }, choices.map((c) => h("button", {
      type: "button", class: "chip-btn", dataset: { testid: "chooser-option", value: c },
      onclick: () => go(c),
    }, isFault ? humanize(c) : c))),
    h("form", {
      class: "chooser-row", novalidate: true,
      onsubmit: (ev) => {
        ev.preventDefault();
        go(isFault ? normalizeFaultType(input.value) : input.value.trim());
      },
    }, input, h("button", { type: "submit", class: "btn btn-primary btn-touch", dataset: { testid: "chooser-send" } }, "Send")),
    h("button", { type: "button", class: "btn btn-secondary btn-touch chooser-cancel", dataset: { testid: "chooser-cancel" }, onclick: cancel }, "Cancel"),
  ]);
  return box;
}

export async function sendVerdict(id, verdict, value, errorBox) {
  const body = verdict === "false_alarm" ? { verdict, reason: value } : { verdict, fault_type: value };
  const what = verdict === "false_alarm" ? "mark it a false alarm" : verdict === "relabel" ? "relabel it" : "confirm it";
  const out = await incidentCall(id, "feedback", body, what, errorBox);
  if (!out) return false;
  const n = out.length;
  const label = out[0] && out[0].label;
  toast(`Incident #${id}: ${label ? verdictText(label) : verdict}${n > 1 ? ` (${n} alerts)` : ""}`, "ok");
  return true;
}

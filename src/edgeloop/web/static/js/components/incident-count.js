// The navigation's incident badge: incidents nobody has acknowledged yet.

import { api, ApiError } from "../api.js";
import { $, setText } from "../dom.js";
import { poll } from "../poll.js";

const INCIDENT_COUNT_EVERY_MS = 4000;

let running = null; // the dashboard's signal while it is shown: an action refreshes the badge at once

/** The nav badge: incidents nobody has acknowledged yet (the API's tenant scope applies). */
async function refreshIncidentCount(signal) {
  const el = $("#nav-incident-count");
  let list;
  try {
    list = await api("/incidents?status=open&limit=100", { signal });
  } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 403)) el.hidden = true;
    throw e;
  }
  el.hidden = !list.length;
  setText(el, list.length >= 100 ? "99+" : String(list.length));
  el.title = `${list.length} open incident${list.length === 1 ? "" : "s"} not acknowledged yet`;
}

/** Keep the badge current until signal aborts (the dashboard is left: sign-out, a refused token). */
export function pollIncidentCount(signal) {
  running = signal;
  poll(() => refreshIncidentCount(signal), INCIDENT_COUNT_EVERY_MS, signal);
}

/** Refresh the badge now (an incident was acknowledged, resolved, …). */
export function kickIncidentCount() {
  if (running && !running.aborted) refreshIncidentCount(running).catch(() => {});
}

// EdgeLoop operator dashboard: one static page, hash routing, no build step. This is the entry module
// (index.html loads it); the code is in js/: one module per page in js/views/, the pieces they share in
// js/components/, and the plumbing (DOM helpers, formatting, API client, session, router) in js/.
//
// Pages:  #/                    fleet overview (assets + live KPIs)
//         #/asset/{assetId}     live telemetry charts and the asset's alerts
//         #/alerts[?status=..]  alert list with acknowledge / resolve
//         #/gateways            edge gateways: state and why, backlog, lag, sources, configuration
//         #/incidents[?show=done] the technician's incident inbox (one-tap acknowledge / confirm /
//                               false alarm); show=done lists resolved and closed incidents
//         #/incidents/{id}      one incident: who/when, alerts with explanations, timeline, every
//                               lifecycle action, verdicts, "why not paged?"
//         #/kpis[?days=7|30|90&group=fleet|site|line|asset]  KPIs of the alert and work-order
//                               lifecycle: fleet tiles, charts per day, a sortable table per group
//
// Authentication: a bearer token from POST /api/v1/auth/token (kept in sessionStorage, sent on
// every API call). A 401 from any call drops the token and shows the sign-in form; a 403 is shown
// where the action happened. With authentication disabled on the server the first calls succeed
// without a token and no sign-in form is ever shown.
//
// Rules kept throughout: API strings only ever reach the DOM through textContent or
// attribute values (never innerHTML); "now" is the fleet's sample time (never ahead of the platform clock) from
// /api/v1/stats, never the browser clock; views keep their last data on errors and a
// banner says the API is unreachable, so the screen is never blank.

import { whenUnauthorized } from "./js/api.js";
import { $ } from "./js/dom.js";
import { route } from "./js/router.js";
import { session } from "./js/session.js";
import { boot, signedOut, signOut } from "./js/shell.js";

function start() {
  session.load();
  whenUnauthorized(signedOut);
  $("#signout-btn").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  boot();
}

start();

// Hash routing: one view per page, each given a fresh root, its query and an AbortSignal that ends its polling
// when the user navigates away. A new page is one view module and one line in ROUTES.

import { stateBox } from "./components/widgets.js";
import { $ } from "./dom.js";
import { alertsView } from "./views/alerts.js";
import { assetView } from "./views/asset.js";
import { campaignView } from "./views/campaign.js";
import { campaignsView } from "./views/campaigns.js";
import { fleetView } from "./views/fleet.js";
import { gatewaysView } from "./views/gateways.js";
import { incidentDetailView } from "./views/incident.js";
import { incidentsView } from "./views/incidents.js";
import { kpisView } from "./views/kpis.js";
import { modelView } from "./views/model.js";
import { modelsView } from "./views/models.js";

/**
 * The pages: the first path pattern that matches wins; nav names the main navigation's tab to highlight; view
 * draws the page into root and polls until signal aborts (the user navigated away or signed out).
 */
const ROUTES = [
  { path: /^\/$/, nav: "fleet", view: (root, _m, query, signal) => fleetView(root, query, signal) },
  { path: /^\/asset\/([^/]+)\/?$/, nav: "fleet", view: (root, m, query, signal) => assetView(root, decodeURIComponent(m[1]), query, signal) },
  { path: /^\/alerts\/?$/, nav: "alerts", view: (root, _m, query, signal) => alertsView(root, query, signal) },
  { path: /^\/incidents\/?$/, nav: "incidents", view: (root, _m, query, signal) => incidentsView(root, query, signal) },
  { path: /^\/incidents\/(\d+)\/?$/, nav: "incidents", view: (root, m, query, signal) => incidentDetailView(root, Number(m[1]), query, signal) },
  { path: /^\/gateways\/?$/, nav: "gateways", view: (root, _m, query, signal) => gatewaysView(root, query, signal) },
  { path: /^\/kpis\/?$/, nav: "kpis", view: (root, _m, query, signal) => kpisView(root, query, signal) },
  { path: /^\/models\/?$/, nav: "models", view: (root, _m, query, signal) => modelsView(root, query, signal) },
  { path: /^\/campaigns\/?$/, nav: "models", view: (root, _m, query, signal) => campaignsView(root, query, signal) },
  { path: /^\/campaigns\/([^/]+)\/?$/, nav: "models", view: (root, m, query, signal) => campaignView(root, decodeURIComponent(m[1]), query, signal) },
  { path: /^\/models\/([^/]+)\/?$/, nav: "models", view: (root, m, query, signal) => modelView(root, decodeURIComponent(m[1]), query, signal) },
];

let routing = false; // false while signed out: the hash is kept and shown after sign-in
let current = null; // the shown view's controller

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, qs] = raw.split("?");
  return { path: path || "/", query: new URLSearchParams(qs || "") };
}

/** Show the page the hash names (now, and on every hash change). */
export function startRouting() {
  routing = true;
  route();
}

/** Stop the shown view's polling; the hash is left as it is. */
export function stopRouting() {
  routing = false;
  current?.abort();
  current = null;
}

export function route() {
  if (!routing) return;
  current?.abort();
  const ctrl = new AbortController();
  current = ctrl;
  const { path, query } = parseHash();
  const root = $("#view");
  root.replaceChildren();
  let nav = "";
  try {
    const page = ROUTES.map((r) => ({ ...r, match: path.match(r.path) })).find((r) => r.match);
    if (page) {
      nav = page.nav;
      page.view(root, page.match, query, ctrl.signal);
    } else {
      document.title = "Not found · EdgeLoop";
      root.append(stateBox("error", "Page not found.", "Use the navigation above to go to the fleet, the incidents, the alerts or the KPIs."));
    }
  } catch (err) {
    console.error(err);
    root.replaceChildren(stateBox("error", "Something went wrong rendering this page.", String(err && err.message)));
  }
  document.body.dataset.page = nav;
  for (const a of document.querySelectorAll(".mainnav a")) {
    const on = a.dataset.nav === nav;
    a.classList.toggle("is-active", on);
    if (on) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  window.scrollTo(0, 0);
}

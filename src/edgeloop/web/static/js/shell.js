// The dashboard's life: shown after sign-in (or straight away when the server needs none), stopped and wiped
// on sign-out or when the server refuses the token (401).

import { api, ApiError, connection } from "./api.js";
import { pollIncidentCount } from "./components/incident-count.js";
import { $, setText } from "./dom.js";
import { refreshStats } from "./header.js";
import { showLogin } from "./login.js";
import { poll } from "./poll.js";
import { startRouting, stopRouting } from "./router.js";
import { session } from "./session.js";
import { state } from "./state.js";

const STATS_EVERY_MS = 2000;

let appCtrl = null; // alive while the dashboard is shown (stats and incident count polling)

/** Show the dashboard (after sign-in, or straight away when the server needs no sign-in). */
function startApp() {
  if (appCtrl) return;
  appCtrl = new AbortController();
  document.body.dataset.auth = session.token ? "signed-in" : "open";
  renderUser();
  const signal = appCtrl.signal;
  poll(() => refreshStats(signal), STATS_EVERY_MS, signal);
  pollIncidentCount(signal);
  startRouting();
}

/** Stop all polling and forget every piece of fleet data shown so far. */
function stopApp() {
  appCtrl?.abort();
  appCtrl = null;
  stopRouting();
  state.stats = null;
  state.assets = new Map();
  for (const el of document.querySelectorAll(".kpi")) {
    setText($("[data-value]", el), "—");
    setText($("[data-sub]", el), "");
    el.dataset.level = "";
  }
  setText($("#sample-now"), "—");
  $("#sample-now").removeAttribute("datetime");
  $("#nav-alert-count").hidden = true;
  $("#nav-incident-count").hidden = true;
  setText($("#footer-uptime"), "");
  $("#toasts").replaceChildren();
  connection.failing = false;
  $("#banner").hidden = true;
  document.body.classList.remove("is-stale");
}

/** The server refused our credentials (401): drop the token, show the sign-in form (once). */
export function signedOut(notice) {
  const wasSignedOut = document.body.dataset.auth === "signed-out";
  session.clear();
  if (wasSignedOut) return;
  stopApp();
  renderUser();
  showLogin({ notice, onSignedIn: startApp });
}

function renderUser() {
  const box = $("#user-box");
  const u = session.user;
  if (!u || document.body.dataset.auth === "signed-out") {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  const anonymous = u.kind === "anonymous" || !session.token;
  setText($("#user-name"), u.username || "—");
  setText($("#user-role"), u.role || "");
  $("#user-role").hidden = !u.role;
  $("#user-chip").title = anonymous
    ? "Authentication is disabled on this server"
    : `Signed in as ${u.username} (${u.role}${u.tenant ? `, tenant ${u.tenant}` : ""})`;
  $("#signout-btn").hidden = anonymous;
}

export async function signOut() {
  const btn = $("#signout-btn");
  btn.disabled = true;
  stopApp();
  try {
    if (session.token) await api("/auth/logout", { method: "POST" });
  } catch {
    /* revoked or unreachable: the token is dropped here either way */
  } finally {
    btn.disabled = false;
  }
  session.clear();
  renderUser();
  showLogin({ notice: "You have signed out.", noticeKind: "info", onSignedIn: startApp });
}

/** First contact: who are we? Decides between the sign-in form and the dashboard. */
export async function boot() {
  try {
    const me = await api("/auth/me");
    session.user = me && typeof me === "object" ? me : null;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return; // sign-in form is shown
    // 404: a server without authentication; 0 / 5xx: the views show the banner and retry.
    // A 401 from any later call still brings up the sign-in form.
    session.user = null;
  }
  startApp();
}

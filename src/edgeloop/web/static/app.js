// EdgeLoop operator dashboard: one static page, hash routing, no build step.
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

const API = "/api/v1";
const STATS_EVERY_MS = 2000;
const FLEET_EVERY_MS = 2000;
const ASSET_EVERY_MS = 3000;
const ALERTS_EVERY_MS = 3000;
const GATEWAYS_EVERY_MS = 3000;
const REQUEST_TIMEOUT_MS = 10000;
const SESSION_KEY = "edgeloop.session";

const RANGES = [
  { key: "30m", label: "30 min", ms: 30 * 60_000 },
  { key: "6h", label: "6 h", ms: 6 * 3600_000 },
  { key: "24h", label: "24 h", ms: 24 * 3600_000 },
  { key: "7d", label: "7 d", ms: 7 * 24 * 3600_000 },
];

const ALERT_STATUSES = ["open", "acknowledged", "resolved"];
const SEVERITY_RANK = { critical: 3, warning: 2, info: 1 };
const ASSET_STATUS_RANK = { alert: 0, offline: 1, no_data: 2, ok: 3 };
// no_data: none of the asset's devices has sent a sample yet (a new gateway's device, say): not an alert
const ASSET_STATUS_TEXT = { no_data: "no data yet" };
const ASSET_STATUS_TONE = { no_data: "offline" };
const GATEWAY_STATE_RANK = { offline: 0, degraded: 1, online: 2 };
const GATEWAY_BADGE = { online: "ok", degraded: "warning", offline: "offline" };
const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

// ---------------------------------------------------------------------------
// DOM helpers (no innerHTML anywhere)

/**
 * h("div", {class: "x", dataset: {a: 1}, onclick: fn, text: "..."}, child, ...)
 * Strings become text nodes; null/false children are skipped.
 */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = String(v);
      else if (k === "dataset") for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = String(dv);
      else if (k === "style") el.style.cssText = v;
      else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function setText(el, text) {
  const t = String(text);
  if (el.textContent !== t) el.textContent = t;
}

function $(sel, root = document) {
  return root.querySelector(sel);
}

// ---------------------------------------------------------------------------
// Formatting

const pad = (n, w = 2) => String(n).padStart(w, "0");

/** Sample time as local "YYYY-MM-DD HH:MM:SS". */
function fmtTime(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "—";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Value for a <time datetime> attribute; undefined (attribute omitted) if not a valid time. */
function isoAttr(ms) {
  return Number.isFinite(ms) ? new Date(ms).toISOString() : undefined;
}

function fmtClock(ms) {
  if (!Number.isFinite(ms)) return "—";
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtDuration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr} h ${pad(m % 60)} min`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

/** "12 s ago" relative to the fleet's sample time (falls back to the absolute time). */
function fmtAgo(ms) {
  if (ms === null || ms === undefined) return "never";
  const now = sampleNow();
  if (now === null) return fmtTime(ms);
  const diff = now - ms;
  if (diff < 1500) return "just now";
  return `${fmtDuration(diff)} ago`;
}

function fmtNumber(x, digits = 0) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "—";
  return x.toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function fmtRate(x) {
  if (!Number.isFinite(x)) return "—";
  return fmtNumber(x, x < 100 ? 1 : 0);
}

function fmtValue(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "—";
  const a = Math.abs(v);
  const digits = a >= 1000 ? 0 : a >= 100 ? 1 : a >= 10 ? 2 : 3;
  return v.toFixed(digits);
}

const UNIT_LABELS = { degC: "°C", degF: "°F", degc: "°C", m3: "m³", "m3/h": "m³/h", "m/s2": "m/s²", "m/s^2": "m/s²", pct: "%" };

/** Display form of a unit as sent by the API (e.g. "degC" -> "°C"). */
function unitLabel(u) {
  return UNIT_LABELS[u] ?? u ?? "";
}

function humanize(s) {
  return String(s ?? "").replace(/_/g, " ");
}

// ---------------------------------------------------------------------------
// API access + connection banner

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

const connection = {
  failing: false,
  lastOk: null,
  ok() {
    this.lastOk = Date.now();
    if (!this.failing) return;
    this.failing = false;
    $("#banner").hidden = true;
    document.body.classList.remove("is-stale");
  },
  fail(title, text) {
    this.failing = true;
    setText($("#banner-title"), title);
    const since = this.lastOk ? ` Last successful update at ${fmtClock(this.lastOk)} (browser time).` : "";
    setText($("#banner-text"), `${text} Showing the last known data and retrying automatically.${since}`);
    $("#banner").hidden = false;
    document.body.classList.add("is-stale");
  },
};

function detailText(data, fallback) {
  const d = data && data.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) return d.map((x) => (x && x.msg) || JSON.stringify(x)).join("; ");
  if (d) return JSON.stringify(d);
  return fallback;
}

/** fetch JSON from the API; aborts with the view's signal; reports reachability. */
async function api(path, { method = "GET", body, signal } = {}) {
  const ctrl = new AbortController();
  const onAbort = () => ctrl.abort();
  if (signal) {
    if (signal.aborted) ctrl.abort();
    else signal.addEventListener("abort", onAbort, { once: true });
  }
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ctrl.abort();
  }, REQUEST_TIMEOUT_MS);
  try {
    let res;
    try {
      const headers = { Accept: "application/json" };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      if (session.token) headers.Authorization = `Bearer ${session.token}`;
      res = await fetch(API + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: ctrl.signal,
        cache: "no-store",
      });
    } catch (err) {
      if (signal && signal.aborted) throw err; // navigation away: silent
      const why = timedOut ? `No answer within ${REQUEST_TIMEOUT_MS / 1000} s.` : "The server did not respond.";
      connection.fail("API unreachable.", why);
      throw new ApiError(timedOut ? "request timed out" : "API unreachable", 0);
    }
    const raw = await res.text();
    let data = null;
    try {
      data = raw ? JSON.parse(raw) : null;
    } catch {
      data = null;
    }
    if (!res.ok) {
      const msg = detailText(data, `${res.status} ${res.statusText || "error"}`);
      if (res.status === 401) {
        connection.ok();
        if (path !== "/auth/logout") signedOut(session.token ? "Your session has ended. Please sign in again." : null);
        throw new ApiError(msg, 401);
      }
      if (res.status >= 500) connection.fail(`API error ${res.status}.`, `${msg}.`);
      else connection.ok();
      throw new ApiError(msg, res.status);
    }
    connection.ok();
    return data;
  } finally {
    clearTimeout(timer);
    if (signal) signal.removeEventListener("abort", onAbort);
  }
}

const isAbort = (err) => err && err.name === "AbortError";

/**
 * Run fn now and then every `every` ms (timer re-armed after each run, so runs never
 * overlap) until signal aborts. Returns {kick()} to refresh immediately.
 */
function poll(fn, every, signal) {
  let timer = null;
  let running = false;
  let again = false;
  const run = async () => {
    if (signal.aborted) return;
    clearTimeout(timer);
    running = true;
    try {
      await fn();
    } catch (err) {
      if (!isAbort(err) && !(err instanceof ApiError)) console.error(err);
    } finally {
      running = false;
    }
    if (signal.aborted) return;
    if (again) {
      again = false;
      run();
      return;
    }
    timer = setTimeout(run, typeof every === "function" ? every() : every);
  };
  signal.addEventListener("abort", () => clearTimeout(timer), { once: true });
  run();
  return {
    kick() {
      if (running) again = true;
      else run();
    },
  };
}

// ---------------------------------------------------------------------------
// Shared state

const state = {
  stats: null,
  assets: new Map(), // id -> asset (last fetched list)
};

function sampleNow() {
  return state.stats ? state.stats.now_ms : null;
}

async function ensureStats(signal) {
  if (!state.stats) await refreshStats(signal);
  return state.stats.now_ms;
}

function rememberAssets(list) {
  state.assets = new Map(list.map((a) => [a.id, a]));
}

// ---------------------------------------------------------------------------
// Session: bearer token, signed-in user, sign-in form

const session = {
  token: null,
  expiresAt: null, // browser ms; the server decides, this only drops stale tokens early
  user: null, // {username, role, tenant, kind} from the token response or GET /auth/me
  load() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
      if (saved && typeof saved.token === "string" && !(saved.expiresAt && saved.expiresAt <= Date.now())) {
        this.token = saved.token;
        this.expiresAt = saved.expiresAt || null;
      } else if (saved) {
        sessionStorage.removeItem(SESSION_KEY);
      }
    } catch {
      /* storage unavailable or garbage: start signed out */
    }
  },
  save(token, expiresIn) {
    this.token = token;
    this.expiresAt = Number.isFinite(expiresIn) && expiresIn > 0 ? Date.now() + expiresIn * 1000 : null;
    try {
      sessionStorage.setItem(SESSION_KEY, JSON.stringify({ token, expiresAt: this.expiresAt }));
    } catch {
      /* storage unavailable: the token lives as long as this page */
    }
  },
  clear() {
    this.token = null;
    this.expiresAt = null;
    this.user = null;
    try {
      sessionStorage.removeItem(SESSION_KEY);
    } catch {
      /* ignore */
    }
  },
};

let appCtrl = null; // alive while the dashboard is shown (stats polling, routing)

/** Show the dashboard (after sign-in, or straight away when the server needs no sign-in). */
function startApp() {
  if (appCtrl) return;
  appCtrl = new AbortController();
  document.body.dataset.auth = session.token ? "signed-in" : "open";
  renderUser();
  const signal = appCtrl.signal;
  poll(() => refreshStats(signal), STATS_EVERY_MS, signal);
  poll(() => refreshIncidentCount(signal), INCIDENT_COUNT_EVERY_MS, signal);
  route();
}

/** Stop all polling and forget every piece of fleet data shown so far. */
function stopApp() {
  appCtrl?.abort();
  appCtrl = null;
  current?.abort();
  current = null;
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
function signedOut(notice) {
  const wasSignedOut = document.body.dataset.auth === "signed-out";
  session.clear();
  if (wasSignedOut) return;
  stopApp();
  renderUser();
  showLogin(notice);
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

async function signOut() {
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
  showLogin("You have signed out.", "info");
}

/** Retry-After (seconds or an HTTP date) -> whole seconds, or null. */
function retryAfterSeconds(value) {
  if (!value) return null;
  const n = Number(value);
  if (Number.isFinite(n)) return Math.max(1, Math.ceil(n));
  const at = Date.parse(value);
  return Number.isFinite(at) ? Math.max(1, Math.ceil((at - Date.now()) / 1000)) : null;
}

function showLogin(notice, noticeKind = "warn") {
  document.body.dataset.auth = "signed-out";
  document.title = "Sign in · EdgeLoop";
  for (const a of document.querySelectorAll(".mainnav a")) {
    a.classList.remove("is-active");
    a.removeAttribute("aria-current");
  }
  const errorBox = h("div", { class: "login-error", id: "login-error", role: "alert", dataset: { testid: "login-error" }, hidden: true });
  const user = h("input", {
    id: "login-username", name: "username", type: "text", class: "input", autocomplete: "username",
    autocapitalize: "none", spellcheck: "false", required: true, maxlength: "200", dataset: { testid: "login-username" },
  });
  const pass = h("input", {
    id: "login-password", name: "password", type: "password", class: "input", autocomplete: "current-password",
    required: true, maxlength: "1000", dataset: { testid: "login-password" },
  });
  const submit = h("button", { type: "submit", class: "btn btn-primary login-submit", dataset: { testid: "login-submit" } }, "Sign in");
  let lockTimer = null;

  const showError = (text, fields = []) => {
    setText(errorBox, text);
    errorBox.hidden = false;
    for (const f of [user, pass]) {
      if (fields.includes(f)) {
        f.setAttribute("aria-invalid", "true");
        f.setAttribute("aria-describedby", "login-error");
      } else {
        f.removeAttribute("aria-invalid");
        f.removeAttribute("aria-describedby");
      }
    }
  };

  const lockFor = (seconds) => {
    clearInterval(lockTimer);
    const until = Date.now() + seconds * 1000;
    const tick = () => {
      const left = Math.ceil((until - Date.now()) / 1000);
      if (left <= 0 || !form.isConnected) {
        clearInterval(lockTimer);
        submit.disabled = false;
        setText(submit, "Sign in");
        return;
      }
      submit.disabled = true;
      setText(submit, `Try again in ${left} s`);
    };
    tick();
    lockTimer = setInterval(tick, 1000);
  };

  const onSubmit = async (ev) => {
    ev.preventDefault();
    if (submit.disabled) return;
    const username = user.value.trim();
    if (!username || !pass.value) {
      showError("Enter your username and password.", [!username ? user : pass]);
      (!username ? user : pass).focus();
      return;
    }
    submit.disabled = true;
    form.setAttribute("aria-busy", "true");
    setText(submit, "Signing in…");
    let res = null;
    let data = null;
    try {
      res = await fetch(`${API}/auth/token`, {
        method: "POST",
        headers: { Accept: "application/json", "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ grant_type: "password", username, password: pass.value }),
        cache: "no-store",
      });
      try {
        data = await res.json();
      } catch {
        data = null;
      }
    } catch {
      res = null;
    }
    form.removeAttribute("aria-busy");
    submit.disabled = false;
    setText(submit, "Sign in");
    if (res && res.ok && data && typeof data.access_token === "string") {
      session.save(data.access_token, Number(data.expires_in));
      session.user = { username: data.username || username, role: data.role || "", tenant: data.tenant ?? null, kind: "user" };
      pass.value = "";
      startApp();
      $("#view").focus({ preventScroll: true });
      return;
    }
    if (!res) {
      showError("The server did not respond. Check the connection and try again.");
    } else if (res.status === 401) {
      showError("Wrong username or password.", [user, pass]);
      pass.select();
      pass.focus();
    } else if (res.status === 429) {
      const wait = retryAfterSeconds(res.headers.get("Retry-After"));
      showError(wait
        ? `Too many failed sign-in attempts. Try again in ${fmtDuration(wait * 1000)} (at ${fmtClock(Date.now() + wait * 1000)}).`
        : "Too many failed sign-in attempts. Try again later.");
      if (wait) lockFor(wait);
    } else if (res.status === 404) {
      showError("This server does not offer sign-in. Reload the page.");
    } else {
      showError(`Sign-in failed: ${detailText(data, `${res.status} ${res.statusText || "error"}`)}.`);
    }
  };

  const form = h("form", {
    class: "login-card", method: "post", action: "#", novalidate: true, "aria-labelledby": "login-title",
    dataset: { testid: "login-form" }, onsubmit: onSubmit,
  },
  h("div", { class: "login-head" },
    h("h1", { id: "login-title" }, "Sign in"),
    h("p", { class: "muted" }, "EdgeLoop operator dashboard")),
  notice ? h("p", { class: `login-notice login-notice-${noticeKind}`, role: "status", dataset: { testid: "login-notice" } }, notice) : null,
  errorBox,
  h("div", { class: "field" }, h("label", { for: "login-username" }, "Username"), user),
  h("div", { class: "field" }, h("label", { for: "login-password" }, "Password"), pass),
  submit);

  $("#view").replaceChildren(h("div", { class: "login-wrap" }, form));
  window.scrollTo(0, 0);
  user.focus();
}

/** First contact: who are we? Decides between the sign-in form and the dashboard. */
async function boot() {
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

// ---------------------------------------------------------------------------
// Toasts

function toast(message, kind = "info") {
  const el = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  $("#toasts").append(el);
  setTimeout(() => el.classList.add("toast-out"), 3500);
  setTimeout(() => el.remove(), 4000);
}

// ---------------------------------------------------------------------------
// Header KPIs (all pages)

function setKpi(testid, value, sub, level) {
  const card = $(`[data-testid="${testid}"]`);
  setText($("[data-value]", card), value);
  setText($("[data-sub]", card), sub || "");
  card.dataset.level = level || "";
}

async function refreshStats(signal) {
  const s = await api("/stats", { signal });
  state.stats = s;
  const online = s.devices_online ?? 0;
  const total = s.devices_total ?? 0;
  setKpi("kpi-devices", `${fmtNumber(online)} / ${fmtNumber(total)}`,
    total === 0 ? "no devices yet" : online === total ? "all online" : `${fmtNumber(total - online)} offline`,
    total > 0 && online < total ? "warn" : "ok");
  const ing = s.ingest || {};  // counters since this process started
  const totals = s.totals || {};  // what the store holds
  setKpi("kpi-rate", fmtRate(s.readings_per_s), `${fmtNumber(totals.stored_samples)} samples stored in all`, "");
  const acked = s.alerts_acknowledged ?? 0;
  setKpi("kpi-alerts", fmtNumber(s.alerts_open),
    s.alerts_open ? `need attention${acked ? ` · ${fmtNumber(acked)} acknowledged` : ""}`
      : acked ? `${fmtNumber(acked)} acknowledged, not resolved` : "all quiet",
    s.alerts_open ? "bad" : acked ? "warn" : "ok");
  const dl = totals.dead_letters ?? 0;
  setKpi("kpi-dead-letters", fmtNumber(dl), `${fmtNumber(ing.duplicates)} duplicates dropped since start`,
    dl > 0 ? "warn" : "ok");
  const depth = ing.queue_depth ?? 0;
  const cap = ing.queue_capacity || 0;
  const fill = cap ? depth / cap : 0;
  setKpi("kpi-queue", fmtNumber(depth), cap ? `${fmtNumber(fill * 100, fill < 0.1 ? 1 : 0)} % of ${fmtNumber(cap)}` : "",
    fill >= 0.8 ? "bad" : fill >= 0.5 ? "warn" : "");
  const now = $("#sample-now");
  setText(now, fmtTime(s.now_ms));
  if (isoAttr(s.now_ms)) now.setAttribute("datetime", isoAttr(s.now_ms));
  const badge = $("#nav-alert-count");
  badge.hidden = !s.alerts_open;
  setText(badge, s.alerts_open > 99 ? "99+" : String(s.alerts_open || 0));
  setText($("#footer-uptime"), Number.isFinite(s.uptime_s) ? `Platform up ${fmtDuration(s.uptime_s * 1000)}` : "");
  document.dispatchEvent(new CustomEvent("edgeloop:stats"));
  return s;
}

// ---------------------------------------------------------------------------
// Small shared widgets

function badge(status, text, extraClass = "") {
  return h("span", { class: `badge badge-${status} ${extraClass}`.trim() }, h("span", { class: "dot", "aria-hidden": "true" }), text ?? status);
}

function stateBox(kind, title, detail) {
  return h("div", { class: `state state-${kind}` }, h("strong", null, title), detail ? h("span", null, detail) : null);
}

function segmented(label, options, active, onSelect) {
  return h("div", { class: "segmented", role: "group", "aria-label": label },
    options.map((o) => h("button", {
      type: "button",
      class: o.key === active ? "is-active" : "",
      "aria-pressed": o.key === active ? "true" : "false",
      dataset: { key: o.key },
      onclick: () => onSelect(o.key),
    }, o.label)));
}

function assetLabel(id) {
  const a = state.assets.get(id);
  return a && a.name ? a.name : id;
}

// ---------------------------------------------------------------------------
// Alert cards (alerts page and asset page)

function explanationBars(expl) {
  const entries = Object.entries(expl || {})
    .filter(([, v]) => Number.isFinite(v))
    .sort((a, b) => b[1] - a[1]);
  if (!entries.length) return h("div", { class: "expl expl-empty", dataset: { testid: "explanation" } }, "No channel attribution");
  const top = entries.slice(0, 4);
  const rest = entries.length - top.length;
  return h("div", { class: "expl", "aria-label": "Explanation: channel shares", dataset: { testid: "explanation" } },
    top.map(([ch, share]) => {
      const pct = Math.max(0, Math.min(1, share)) * 100;
      return h("div", { class: "expl-row", title: `${ch}: ${pct.toFixed(1)} % of the anomaly score` },
        h("span", { class: "expl-ch" }, ch),
        h("span", { class: "expl-track" }, h("span", { class: "expl-bar", style: `width:${pct.toFixed(1)}%` })),
        h("span", { class: "expl-pct" }, `${Math.round(pct)} %`));
    }),
    rest > 0 ? h("div", { class: "expl-more" }, `+ ${rest} more channel${rest > 1 ? "s" : ""}`) : null);
}

function alertSignature(a) {
  return JSON.stringify(a);
}

function renderAlertCard(card, a, { showAsset = true } = {}) {
  card._sig = alertSignature(a);
  card._alert = a;
  card.dataset.alertId = String(a.id);
  card.dataset.status = a.status;
  card.dataset.severity = a.severity;
  card.className = `alert-card sev-${a.severity} st-${a.status}`;

  const lifecycle = [];
  if (a.acknowledged_by || a.acknowledged_at) {
    lifecycle.push(`Acknowledged by ${a.acknowledged_by || "?"} at ${fmtTime(a.acknowledged_at)}`);
  }
  if (a.resolved_by || a.resolved_at) {
    lifecycle.push(`Resolved by ${a.resolved_by || "?"} at ${fmtTime(a.resolved_at)}`);
  }

  const ackBtn = h("button", {
    type: "button", class: "btn btn-secondary", dataset: { testid: "ack-btn" },
    disabled: a.status !== "open",
    title: a.status === "open" ? "I have seen this alert and am on it" : "Only open alerts can be acknowledged",
    onclick: () => alertAction(card, "acknowledge"),
  }, "Acknowledge");
  const resolveBtn = h("button", {
    type: "button", class: "btn btn-primary", dataset: { testid: "resolve-btn" },
    disabled: a.status === "resolved",
    title: a.status === "resolved" ? "Already resolved" : "The cause is fixed; close this alert",
    onclick: () => alertAction(card, "resolve"),
  }, "Resolve");

  card.replaceChildren(
    h("div", { class: "alert-main" },
      h("div", { class: "alert-head" },
        badge(a.severity, a.severity, "sev-badge"),
        h("span", { class: "alert-kind" }, humanize(a.kind)),
        showAsset ? h("a", { class: "alert-asset", href: `#/asset/${encodeURIComponent(a.asset)}`, dataset: { testid: "alert-asset" } }, assetLabel(a.asset)) : null,
        h("span", { class: "alert-device" }, a.device),
        h("span", { class: `status-pill st-${a.status}`, dataset: { testid: "alert-status" } }, a.status)),
      h("p", { class: "alert-msg", dataset: { testid: "alert-message" } }, a.message || "(no message)"),
      h("dl", { class: "alert-meta" },
        h("div", null, h("dt", null, "First seen"), h("dd", null, h("time", { datetime: isoAttr(a.first_seen) }, fmtTime(a.first_seen)))),
        h("div", null, h("dt", null, "Last seen"), h("dd", null,
          h("time", { datetime: isoAttr(a.last_seen) }, fmtTime(a.last_seen)),
          h("span", { class: "muted", dataset: { ago: a.last_seen } }, ` · ${fmtAgo(a.last_seen)}`))),
        h("div", null, h("dt", null, "Count"), h("dd", null, fmtNumber(a.count))),
        scoreFact(a),
        a.detector ? h("div", null, h("dt", null, "Detector"), h("dd", null, a.detector)) : null),
      lifecycle.length ? h("p", { class: "alert-lifecycle" }, lifecycle.join(" · ")) : null,
      h("p", { class: "alert-error", role: "alert", dataset: { testid: "alert-error" }, hidden: true })),
    h("div", { class: "alert-side" },
      explanationBars(a.explanation),
      h("div", { class: "alert-actions" }, ackBtn, resolveBtn)));
  return card;
}

function newAlertCard(a, opts) {
  const card = h("article", { dataset: { testid: "alert-row" } });
  card._opts = opts;
  return renderAlertCard(card, a, opts);
}

function updateAlertCard(card, a) {
  if (card._sig !== alertSignature(a)) renderAlertCard(card, a, card._opts);
  else for (const el of card.querySelectorAll("[data-ago]")) setText(el, ` · ${fmtAgo(Number(el.dataset.ago))}`);
}

async function alertAction(card, action) {
  const a = card._alert;
  // The server records the signed-in user; `by` only matters when authentication is off.
  const by = session.user?.username || "operator";
  const buttons = card.querySelectorAll(".alert-actions button");
  buttons.forEach((b) => { b.disabled = true; });
  card.classList.add("is-busy");
  const err = $(".alert-error", card);
  err.hidden = true;
  try {
    const updated = await api(`/alerts/${encodeURIComponent(a.id)}/${action}`, { method: "POST", body: { by } });
    card.classList.remove("is-busy");
    renderAlertCard(card, updated, card._opts);
    const who = (action === "resolve" ? updated.resolved_by : updated.acknowledged_by) || by;
    toast(`Alert #${updated.id} ${updated.status} by ${who}`, "ok");
    refreshStats().catch(() => {});
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return; // signed out: the sign-in form is shown
    card.classList.remove("is-busy");
    renderAlertCard(card, a, card._opts); // restores buttons for the old state
    const who = session.user ? `${session.user.username} (${session.user.role})` : "You";
    const msg = e instanceof ApiError && e.status === 403
      ? `Not allowed: ${who} may not ${action} alerts. ${e.message}`
      : `Could not ${action} alert #${a.id}: ${e.message}`;
    const box = $(".alert-error", card);
    setText(box, msg);
    box.hidden = false;
    toast(msg, "error");
  }
}

/** Keyed reconciliation of alert cards inside `list` (order = order of `alerts`). */
function syncAlertList(list, alerts, opts) {
  const existing = new Map();
  for (const el of list.querySelectorAll(":scope > [data-testid='alert-row']")) existing.set(el.dataset.alertId, el);
  let prev = null;
  for (const a of alerts) {
    const key = String(a.id);
    let card = existing.get(key);
    if (card) {
      existing.delete(key);
      if (!card.classList.contains("is-busy")) updateAlertCard(card, a);
    } else {
      card = newAlertCard(a, opts);
    }
    const want = prev ? prev.nextSibling : list.firstChild;
    if (want !== card) list.insertBefore(card, want);
    prev = card;
  }
  for (const el of existing.values()) if (!el.classList.contains("is-busy")) el.remove();
}

// ---------------------------------------------------------------------------
// Page 1: Fleet

function fleetView(root, _query, signal) {
  document.title = "Fleet · EdgeLoop";
  const summary = h("div", { class: "summary", dataset: { testid: "fleet-summary" } });
  const filter = h("input", {
    type: "search", class: "input", placeholder: "Filter by name, id, kind, line…", "aria-label": "Filter assets",
    oninput: () => applyFilter(),
  });
  const tbody = h("tbody");
  const table = h("table", { class: "fleet-table", dataset: { testid: "asset-table" } },
    h("thead", null, h("tr", null,
      h("th", { scope: "col" }, "Asset"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Kind"),
      h("th", { scope: "col" }, "Site / line"), h("th", { scope: "col", class: "num" }, "Open alerts"),
      h("th", { scope: "col" }, "Last seen"))),
    tbody);
  const body = h("div", { class: "panel-body" }, stateBox("loading", "Loading assets…"));
  root.append(
    h("div", { class: "page-head" },
      h("div", null, h("h1", null, "Fleet"), summary),
      h("div", { class: "page-tools" }, filter)),
    h("section", { class: "panel" }, body));

  const rows = new Map();
  let loaded = false;
  let sevByAsset = new Map();

  function applyFilter() {
    const q = filter.value.trim().toLowerCase();
    let shown = 0;
    for (const tr of rows.values()) {
      const hit = !q || tr._search.includes(q);
      tr.hidden = !hit;
      if (hit) shown++;
    }
    const none = $(".filter-empty", body);
    if (rows.size && !shown) {
      if (!none) body.append(h("div", { class: "state state-empty filter-empty" }, h("strong", null, "No asset matches the filter.")));
    } else if (none) none.remove();
  }

  function makeRow(a) {
    const link = h("a", { class: "asset-link", href: `#/asset/${encodeURIComponent(a.id)}` });
    const tr = h("tr", {
      class: "asset-row", dataset: { testid: "asset-row", assetId: a.id },
      onclick: (e) => {
        if (e.target.closest("a")) return;
        location.hash = `#/asset/${encodeURIComponent(a.id)}`;
      },
    },
    h("td", { class: "cell-asset", "data-label": "Asset" }, link, h("span", { class: "asset-id" })),
    h("td", { class: "cell-status", "data-label": "Status" }),
    h("td", { class: "cell-kind", "data-label": "Kind" }),
    h("td", { class: "cell-line", "data-label": "Site / line" }),
    h("td", { class: "cell-alerts num", "data-label": "Open alerts" }),
    h("td", { class: "cell-seen", "data-label": "Last seen" }));
    return tr;
  }

  function updateRow(tr, a) {
    const [cAsset, cStatus, cKind, cLine, cAlerts, cSeen] = tr.children;
    setText($(".asset-link", cAsset), a.name || a.id);
    setText($(".asset-id", cAsset), a.name && a.name !== a.id ? a.id : "");
    const sev = sevByAsset.get(a.id);
    const tone = a.status === "alert" ? (sev === "critical" ? "critical" : "warning") : ASSET_STATUS_TONE[a.status] ?? a.status;
    const sig = `${a.status}|${tone}`;
    if (cStatus._sig !== sig) {
      cStatus._sig = sig;
      cStatus.replaceChildren(badge(tone, ASSET_STATUS_TEXT[a.status] ?? a.status));
      $(".badge", cStatus).dataset.testid = "asset-status";
      $(".badge", cStatus).dataset.status = a.status;
    }
    tr.dataset.status = a.status;
    setText(cKind, a.kind || "—");
    setText(cLine, [a.site, a.line].filter(Boolean).join(" / ") || "—");
    setText(cAlerts, fmtNumber(a.open_alerts ?? 0));
    cAlerts.classList.toggle("has-alerts", (a.open_alerts ?? 0) > 0);
    setText(cSeen, fmtAgo(a.last_seen_ms));
    cSeen.title = a.last_seen_ms ? fmtTime(a.last_seen_ms) : "No data received yet";
    tr._search = [a.id, a.name, a.kind, a.line, a.site, a.status, ...(a.devices || [])].join(" ").toLowerCase();
  }

  function renderSummary(list) {
    const n = { ok: 0, alert: 0, offline: 0, no_data: 0 };
    for (const a of list) n[a.status] = (n[a.status] || 0) + 1;
    summary.replaceChildren();  // append() skips null children; replaceChildren() would print "null"
    append(summary, [
      h("span", null, `${list.length} asset${list.length === 1 ? "" : "s"}`),
      n.alert ? badge("critical", `${n.alert} alert`) : null,
      n.offline ? badge("offline", `${n.offline} offline`) : null,
      n.no_data ? badge("offline", `${n.no_data} no data yet`) : null,
      badge("ok", `${n.ok} ok`)]);
  }

  function lastSeenTick() {
    for (const tr of rows.values()) {
      const a = tr._asset;
      if (a) setText(tr.children[5], fmtAgo(a.last_seen_ms));
    }
  }
  document.addEventListener("edgeloop:stats", lastSeenTick, { signal });

  poll(async () => {
    let list;
    try {
      const [assets, open] = await Promise.all([
        api("/assets", { signal }),
        api("/alerts?status=open&limit=500", { signal }).catch((e) => {
          if (isAbort(e)) throw e;
          return null; // severity colouring is optional
        }),
      ]);
      list = assets;
      if (open) {
        sevByAsset = new Map();
        for (const al of open) {
          const cur = sevByAsset.get(al.asset);
          if (!cur || (SEVERITY_RANK[al.severity] || 0) > (SEVERITY_RANK[cur] || 0)) sevByAsset.set(al.asset, al.severity);
        }
      }
    } catch (e) {
      if (!loaded && !isAbort(e)) body.replaceChildren(stateBox("error", "Could not load assets.", `${e.message}. Retrying…`));
      throw e;
    }
    rememberAssets(list);
    if (!loaded) {
      loaded = true;
      body.replaceChildren(table);
    }
    if (!list.length) {
      table.hidden = true;
      if (!$(".state-empty", body)) {
        body.append(stateBox("empty", "No assets yet.", "Assets appear here as soon as devices are provisioned and report."));
      }
    } else {
      table.hidden = false;
      $(".state-empty:not(.filter-empty)", body)?.remove();
    }
    list.sort((x, y) => (ASSET_STATUS_RANK[x.status] ?? 9) - (ASSET_STATUS_RANK[y.status] ?? 9)
      || (y.criticality ?? 0) - (x.criticality ?? 0) || String(x.id).localeCompare(String(y.id)));
    const seen = new Set();
    const ordered = [];
    for (const a of list) {
      seen.add(a.id);
      let tr = rows.get(a.id);
      if (!tr) {
        tr = makeRow(a);
        rows.set(a.id, tr);
      }
      tr._asset = a;
      updateRow(tr, a);
      ordered.push(tr);
    }
    // move rows only when the order really changed (keeps clicks and hover stable)
    ordered.forEach((tr, i) => {
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    for (const [id, tr] of rows) {
      if (!seen.has(id)) {
        tr.remove();
        rows.delete(id);
      }
    }
    renderSummary(list);
    applyFilter();
  }, FLEET_EVERY_MS, signal);
}

// ---------------------------------------------------------------------------
// Charts

const GROUPS = [
  { key: "vibration", title: "Vibration", name: /vib|accel|velocity/i, unit: /^(mm\/s|in\/s|g|m\/s²|m\/s\^2|m\/s2)$/i },
  { key: "temperature", title: "Temperature", name: /temp/i, unit: /^(°c|°f|c|k|degc|degf)$/i },
  { key: "current", title: "Current", name: /current|amp|^i_/i, unit: /^(a|ma)$/i },
  { key: "process", title: "Pressure & flow", name: /press|flow/i, unit: /^(bar|mbar|kpa|pa|psi|m³\/h|m3\/h|l\/min|l\/s)$/i },
  { key: "speed", title: "Speed", name: /speed|rpm/i, unit: /^(rpm|1\/min)$/i },
];

/** Split a device's channels into chart groups (vibration axes together, …). */
function groupChannels(channels) {
  const groups = new Map();
  for (const ch of channels) {
    const unit = ch.unit || "";
    let g = GROUPS.find((x) => x.name.test(ch.name)) || GROUPS.find((x) => x.unit.test(unit));
    if (!g) g = { key: `other:${unit}`, title: unit ? `Other (${unitLabel(unit)})` : "Other" };
    if (!groups.has(g.key)) groups.set(g.key, { key: g.key, title: g.title, channels: [] });
    groups.get(g.key).channels.push(ch);
  }
  const order = (k) => {
    const i = GROUPS.findIndex((x) => x.key === k);
    return i < 0 ? GROUPS.length : i;
  };
  return [...groups.values()].sort((a, b) => order(a.key) - order(b.key) || a.key.localeCompare(b.key));
}

function alpha(hex, a) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
}

/** One small-multiple chart: a group of channels of one device. */
class ChartCard {
  constructor(deviceId, group, colorOffset) {
    this.deviceId = deviceId;
    this.group = group;
    this.colorOffset = colorOffset;
    this.plot = null;
    this.structure = "";
    this.range = [0, 1];
    this.units = [...new Set(group.channels.map((c) => c.unit || ""))];
    this.container = h("div", {
      class: "chart",
      dataset: { testid: "chart", device: deviceId, group: group.key, channels: group.channels.map((c) => c.name).join(",") },
      role: "img",
      "aria-label": `${group.title} chart for ${deviceId}`,
    });
    this.empty = h("div", { class: "chart-empty", hidden: true }, "No data yet in this time range");
    this.note = h("span", { class: "chart-note" });
    this.el = h("figure", { class: "chart-card" },
      h("figcaption", null,
        h("span", { class: "chart-title" }, group.title),
        h("span", { class: "chart-units" }, this.units.filter(Boolean).map(unitLabel).join(" · ")),
        this.note),
      h("div", { class: "chart-wrap" }, this.container, this.empty));
    this.resizeObs = new ResizeObserver(() => this.resize());
    this.resizeObs.observe(this.container);
  }

  size() {
    const w = Math.max(200, Math.floor(this.container.clientWidth || this.el.clientWidth || 300));
    const hgt = window.matchMedia("(max-width: 640px)").matches ? 170 : 200;
    return { width: w, height: hgt };
  }

  resize() {
    if (!this.plot) return;
    const { width, height } = this.size();
    if (Math.abs(this.plot.width - width) > 1 || this.plot.height !== height) this.plot.setSize({ width, height });
  }

  /** Feed one telemetry response (all channels of the device) and draw. */
  update(resp, start, end) {
    this.range = [start, end];
    const chans = this.group.channels;
    const ser = (resp && resp.series) || {};
    // union of timestamps across the group's channels (normally identical buckets)
    const tsSet = new Set();
    for (const c of chans) for (const t of (ser[c.name]?.ts || [])) tsSet.add(t);
    const present = [...tsSet].sort((a, b) => a - b);
    // Buckets with no data at all (a silent device) get an explicit null point, so the line breaks
    // there instead of being drawn straight across time for which nothing was received.
    const bucket = resp?.bucket_ms || 0;
    const xs = [];
    for (const t of present) {
      const prev = xs.length ? xs[xs.length - 1] : null;
      if (bucket > 0 && prev !== null && t - prev > 1.5 * bucket) xs.push(prev + bucket);
      xs.push(t);
    }
    const idx = new Map(xs.map((t, i) => [t, i]));
    let banded = false;
    const cols = [];
    let points = 0;
    for (const c of chans) {
      const s = ser[c.name] || { ts: [], avg: [], min: [], max: [] };
      const avg = new Array(xs.length).fill(null);
      const mn = new Array(xs.length).fill(null);
      const mx = new Array(xs.length).fill(null);
      (s.ts || []).forEach((t, i) => {
        const j = idx.get(t);
        const v = s.avg?.[i];
        avg[j] = Number.isFinite(v) ? v : null;
        mn[j] = Number.isFinite(s.min?.[i]) ? s.min[i] : null;
        mx[j] = Number.isFinite(s.max?.[i]) ? s.max[i] : null;
        if (avg[j] !== null) points++;
        if (mn[j] !== null && mx[j] !== null && mx[j] - mn[j] > 1e-12) banded = true;
      });
      cols.push({ c, avg, mn, mx });
    }
    const data = [xs];
    for (const col of cols) {
      data.push(col.avg);
      if (banded) data.push(col.mn, col.mx);
    }
    const structure = `${chans.map((c) => c.name).join(",")}|${banded}`;
    if (typeof uPlot === "undefined") {
      setText(this.empty, "Chart library failed to load (/static/vendor/uPlot.iife.min.js)");
      this.empty.hidden = false;
      this.container.dataset.points = "0";
      return;
    }
    if (!this.plot || structure !== this.structure) {
      this.plot?.destroy();
      this.structure = structure;
      this.plot = new uPlot(this.options(banded), data, this.container);
    } else {
      this.plot.setData(data, true);
    }
    setText(this.note, bucket ? `${banded ? "avg, min–max band · " : ""}${fmtDuration(bucket)} buckets` : "");
    this.empty.hidden = points > 0;
    this.note.hidden = points === 0;
    this.container.dataset.points = String(points);
    this.container.dataset.banded = String(banded);
  }

  options(banded) {
    const { width, height } = this.size();
    const scaleOf = (unit) => `u:${unit}`;
    const series = [{ label: "time", value: (u, v) => (v === null ? "—" : fmtTime(v)) }];
    const bands = [];
    const hidden = [];
    this.group.channels.forEach((c, i) => {
      const color = PALETTE[(i + this.colorOffset) % PALETTE.length];
      const unit = c.unit || "";
      series.push({
        label: unit ? `${c.name} (${unitLabel(unit)})` : c.name,
        scale: scaleOf(unit),
        stroke: color,
        width: 1.5,
        spanGaps: false,
        points: { show: false },
        value: (u, v) => fmtValue(v),
      });
      if (banded) {
        const avgIdx = series.length - 1;
        for (const which of ["min", "max"]) {
          series.push({ label: `${c.name} ${which}`, scale: scaleOf(unit), stroke: "transparent", width: 0, points: { show: false }, value: (u, v) => fmtValue(v) });
          hidden.push(series.length - 1);
        }
        bands.push({ series: [avgIdx + 2, avgIdx + 1], fill: alpha(color, 0.16) });
      }
    });
    const axisBase = {
      stroke: "#5b6472",
      grid: { stroke: "#eceff3", width: 1 },
      ticks: { stroke: "#d9dee5", width: 1, size: 4 },
      font: "11px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    };
    const scales = {
      x: { time: true, range: () => this.range },
    };
    const axes = [{ ...axisBase, space: 64, values: (u, splits) => xTickLabels(splits, this.range[1] - this.range[0]) }];
    this.units.slice(0, 2).forEach((unit, i) => {
      scales[scaleOf(unit)] = { auto: true };
      axes.push({
        ...axisBase,
        scale: scaleOf(unit),
        side: i === 0 ? 3 : 1,
        grid: i === 0 ? axisBase.grid : { show: false },
        size: 50,
        values: (u, vals) => vals.map((v) => (v === null ? "" : fmtAxis(v))),
        label: this.units.length > 1 ? unitLabel(unit) : undefined,
        labelSize: this.units.length > 1 ? 14 : 0,
        labelFont: axisBase.font,
      });
    });
    for (const unit of this.units.slice(2)) scales[scaleOf(unit)] = { auto: true };
    return {
      width,
      height,
      ms: 1, // timestamps are milliseconds
      series,
      bands,
      scales,
      axes,
      cursor: { drag: { x: false, y: false }, points: { size: 6 } },
      legend: { live: true },
      hooks: {
        init: [(u) => {
          const rows = u.root.querySelectorAll(".u-legend .u-series");
          for (const i of hidden) if (rows[i]) rows[i].style.display = "none";
        }],
      },
    };
  }

  destroy() {
    this.resizeObs.disconnect();
    this.plot?.destroy();
    this.plot = null;
  }
}

/** 24 h tick labels; the date is added where it changes (and always for spans > 1.5 d). */
function xTickLabels(splits, span) {
  let lastDay = null;
  return splits.map((ms) => {
    if (ms === null) return "";
    const d = new Date(ms);
    const day = `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    const time = span < 15 * 60_000 ? `${hm}:${pad(d.getSeconds())}` : hm;
    const showDay = lastDay !== null && day !== lastDay;
    lastDay = day;
    if (span > 36 * 3600_000) return hm === "00:00" ? day : `${day}\n${hm}`;
    return showDay ? `${time}\n${day}` : time;
  });
}

function fmtAxis(v) {
  const a = Math.abs(v);
  if (a >= 10000) return `${(v / 1000).toFixed(a >= 100000 ? 0 : 1)}k`;
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1).replace(/\.0$/, "");
  return String(+v.toFixed(2));
}

// ---------------------------------------------------------------------------
// Page 2: Asset

function assetView(root, assetId, query, signal) {
  document.title = `${assetId} · EdgeLoop`;
  const rangeKey = RANGES.some((r) => r.key === query.get("range")) ? query.get("range") : RANGES[0].key;
  const range = RANGES.find((r) => r.key === rangeKey);

  const title = h("h1", null, assetId);
  const statusSlot = h("span", { class: "status-slot" });
  const meta = h("dl", { class: "asset-meta" });
  const devicesBox = h("div", { class: "devices" });
  const rangeInfo = h("span", { class: "range-info muted", dataset: { testid: "range-info" } });
  const chartsBox = h("div", { class: "charts-body" }, stateBox("loading", "Loading devices…"));
  const alertsList = h("div", { class: "alert-list", dataset: { testid: "asset-alerts" } });
  const alertsBody = h("div", null, stateBox("loading", "Loading alerts…"));

  const setRange = (key) => {
    const q = new URLSearchParams(query);
    if (key === RANGES[0].key) q.delete("range");
    else q.set("range", key);
    const qs = q.toString();
    location.hash = `#/asset/${encodeURIComponent(assetId)}${qs ? `?${qs}` : ""}`;
  };

  root.append(
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Fleet"), h("span", { "aria-hidden": "true" }, "/"), h("span", null, assetId)),
    h("div", { class: "page-head" }, h("div", { class: "title-row" }, title, statusSlot)),
    h("section", { class: "panel asset-info" }, meta, devicesBox),
    h("section", { class: "panel" },
      h("div", { class: "panel-head" },
        h("h2", null, "Telemetry"),
        h("div", { class: "panel-tools" }, rangeInfo, segmented("Time range", RANGES, rangeKey, setRange))),
      chartsBox),
    h("section", { class: "panel" },
      h("div", { class: "panel-head" },
        h("h2", null, "Alerts"),
        h("a", { class: "panel-link", href: `#/alerts?asset=${encodeURIComponent(assetId)}` }, "Open in alert list →")),
      alertsBody));

  let asset = null;
  let openSeverity = null; // highest severity among the asset's open alerts
  const devices = new Map(); // id -> device json
  const charts = new Map(); // deviceId -> [ChartCard]
  signal.addEventListener("abort", () => {
    for (const list of charts.values()) for (const c of list) c.destroy();
  }, { once: true });

  function renderHeader() {
    if (!asset) return;
    document.title = `${asset.name || asset.id} · EdgeLoop`;
    setText(title, asset.name || asset.id);
    setText($(".crumbs span:last-child", root), asset.name || asset.id);
    const tone = asset.status === "alert" ? (openSeverity === "critical" || !openSeverity ? "critical" : "warning") : ASSET_STATUS_TONE[asset.status] ?? asset.status;
    const sig = `${asset.status}|${tone}`;
    if (statusSlot._sig !== sig) {
      statusSlot._sig = sig;
      statusSlot.replaceChildren(badge(tone, ASSET_STATUS_TEXT[asset.status] ?? asset.status));
    }
    const items = [
      ["Asset id", asset.id], ["Kind", asset.kind || "—"], ["Site / line", [asset.site, asset.line].filter(Boolean).join(" / ") || "—"],
      ["Criticality", asset.criticality ? `${asset.criticality} / 5` : "—"], ["Open alerts", fmtNumber(asset.open_alerts ?? 0)],
      ["Last seen", asset.last_seen_ms ? `${fmtTime(asset.last_seen_ms)} (${fmtAgo(asset.last_seen_ms)})` : "never (no data yet)"],
    ];
    meta.replaceChildren(...items.map(([k, v]) => h("div", null, h("dt", null, k), h("dd", null, v))));
    devicesBox.replaceChildren(
      h("span", { class: "devices-label" }, asset.devices?.length === 1 ? "Device" : "Devices"),
      ...(asset.devices || []).map((id) => {
        const d = devices.get(id);
        const online = d ? d.online : null;
        return h("span", { class: "device-chip", title: d ? `${d.profile} · last seen ${fmtTime(d.last_seen_ms)}` : id },
          h("span", { class: `dot ${online === null ? "" : online ? "dot-ok" : "dot-offline"}`, "aria-hidden": "true" }),
          id, d ? h("span", { class: "muted" }, ` · ${d.profile} · ${online ? "online" : "offline"}`) : null);
      }));
  }

  async function loadAsset() {
    const list = await api("/assets", { signal });
    rememberAssets(list);
    asset = list.find((a) => a.id === assetId) || null;
    if (!asset) {
      chartsBox.replaceChildren(stateBox("error", `Asset “${assetId}” not found.`, "It may have been removed. Go back to the fleet overview."));
      return false;
    }
    renderHeader();
    return true;
  }

  async function loadDevices() {
    for (const id of asset.devices || []) {
      if (devices.has(id)) continue;
      try {
        devices.set(id, await api(`/devices/${encodeURIComponent(id)}`, { signal }));
      } catch (e) {
        if (isAbort(e)) throw e;
        // keep going; the device section says so
      }
    }
  }

  function buildCharts() {
    const sections = [];
    let colorOffset = 0;
    for (const id of asset.devices || []) {
      const d = devices.get(id);
      if (!d || charts.has(id)) continue;
      const cards = groupChannels(d.channels || []).map((g) => {
        const card = new ChartCard(id, g, colorOffset);
        colorOffset += g.channels.length;
        return card;
      });
      charts.set(id, cards);
      sections.push(h("div", { class: "device-charts", dataset: { device: id } },
        (asset.devices.length > 1) ? h("h3", { class: "device-title" }, d.name || id, h("span", { class: "muted" }, ` · ${id}`)) : null,
        cards.length ? h("div", { class: "chart-grid" }, cards.map((c) => c.el))
          : stateBox("empty", "This device declares no channels.")));
    }
    if (sections.length) {
      if (!charts.size || $(".state", chartsBox)?.parentElement === chartsBox) chartsBox.replaceChildren();
      chartsBox.append(...sections);
    }
  }

  async function refreshTelemetry() {
    const now = await ensureStats(signal);
    const start = now - range.ms;
    const end = now;
    const points = 300;
    await Promise.all([...charts.entries()].map(async ([id, cards]) => {
      const names = cards.flatMap((c) => c.group.channels.map((ch) => ch.name));
      if (!names.length) return;
      const q = new URLSearchParams({ channels: names.join(","), start: String(start), end: String(end), points: String(points) });
      const resp = await api(`/devices/${encodeURIComponent(id)}/telemetry?${q}`, { signal });
      for (const c of cards) c.update(resp, start, end);
      setText(rangeInfo, `${fmtTime(start)} → ${fmtClock(end)}`);
    }));
  }

  async function refreshAlerts() {
    const list = await api(`/alerts?asset=${encodeURIComponent(assetId)}&limit=50`, { signal });
    openSeverity = null;
    for (const a of list) {
      if (a.status === "open" && (SEVERITY_RANK[a.severity] || 0) > (SEVERITY_RANK[openSeverity] || 0)) openSeverity = a.severity;
    }
    renderHeader();
    if (!list.length) {
      alertsBody.replaceChildren(stateBox("empty", "No alerts for this asset.", "Anomalies, stuck sensors and data gaps will show up here."));
      alertsList.replaceChildren();
      return;
    }
    if (alertsList.parentElement !== alertsBody) alertsBody.replaceChildren(alertsList);
    syncAlertList(alertsList, list, { showAsset: false });
  }

  let ready = false;
  poll(async () => {
    try {
      if (!ready) {
        if (!(await loadAsset())) return;
        await loadDevices();
        buildCharts();
        const missing = (asset.devices || []).filter((id) => !devices.has(id));
        if (!asset.devices?.length) {
          chartsBox.replaceChildren(stateBox("empty", "No devices attached to this asset yet."));
        } else if (missing.length && !charts.size) {
          chartsBox.replaceChildren(stateBox("error", "Could not load device details.", `${missing.join(", ")} — retrying…`));
        }
        renderHeader();
        ready = missing.length === 0;
      } else {
        await loadAsset();
      }
      await refreshTelemetry();
    } catch (e) {
      if (!isAbort(e) && !charts.size && !(e instanceof ApiError && e.status === 0)) {
        chartsBox.replaceChildren(stateBox("error", "Could not load telemetry.", `${e.message}. Retrying…`));
      } else if (!isAbort(e) && !charts.size) {
        chartsBox.replaceChildren(stateBox("error", "Waiting for the API…", "Retrying automatically."));
      }
      throw e;
    }
  }, range.ms > 6 * 3600_000 ? 5000 : ASSET_EVERY_MS, signal);

  poll(async () => {
    try {
      await refreshAlerts();
    } catch (e) {
      if (!isAbort(e) && !alertsList.childElementCount) alertsBody.replaceChildren(stateBox("error", "Could not load alerts.", `${e.message}. Retrying…`));
      throw e;
    }
  }, ASSET_EVERY_MS, signal);
}

// ---------------------------------------------------------------------------
// Page 3: Alerts

function alertsView(root, query, signal) {
  document.title = "Alerts · EdgeLoop";
  const status = ALERT_STATUSES.includes(query.get("status")) ? query.get("status") : "all";
  const assetFilter = query.get("asset") || "";
  const go = (changes) => {
    const q = new URLSearchParams(query);
    for (const [k, v] of Object.entries(changes)) {
      if (!v || v === "all") q.delete(k);
      else q.set(k, v);
    }
    const qs = q.toString();
    location.hash = `#/alerts${qs ? `?${qs}` : ""}`;
  };
  const options = [{ key: "all", label: "All" }, ...ALERT_STATUSES.map((s) => ({ key: s, label: s[0].toUpperCase() + s.slice(1) }))];
  const counter = h("span", { class: "muted", dataset: { testid: "alert-count" } });
  const list = h("div", { class: "alert-list", dataset: { testid: "alert-list" } });
  const body = h("div", null, stateBox("loading", "Loading alerts…"));
  root.append(
    h("div", { class: "page-head" },
      h("div", null, h("h1", null, "Alerts"), h("div", { class: "summary" }, counter,
        assetFilter ? h("span", { class: "filter-chip" }, "Asset: ", h("strong", null, assetFilter),
          h("button", { type: "button", class: "chip-x", "aria-label": "Clear asset filter", onclick: () => go({ asset: null }) }, "×")) : null)),
      h("div", { class: "page-tools" }, segmented("Filter by status", options, status, (s) => go({ status: s })))),
    h("section", { class: "panel" }, body));

  // asset names for nicer links (optional)
  if (!state.assets.size) api("/assets", { signal }).then(rememberAssets).catch(() => {});

  poll(async () => {
    const q = new URLSearchParams({ limit: "200" });
    if (status !== "all") q.set("status", status);
    if (assetFilter) q.set("asset", assetFilter);
    let alerts;
    try {
      alerts = await api(`/alerts?${q}`, { signal });
    } catch (e) {
      if (!isAbort(e) && !list.childElementCount) body.replaceChildren(stateBox("error", "Could not load alerts.", `${e.message}. Retrying…`));
      throw e;
    }
    setText(counter, `${alerts.length}${alerts.length === 200 ? "+" : ""} ${status === "all" ? "" : `${status} `}alert${alerts.length === 1 ? "" : "s"}`);
    if (!alerts.length) {
      const what = status === "all" ? "No alerts yet." : `No ${status} alerts.`;
      body.replaceChildren(stateBox("empty", what, status === "open" || status === "all" ? "All quiet. New anomalies appear here within seconds." : null));
      list.replaceChildren();
      return;
    }
    if (list.parentElement !== body) body.replaceChildren(list);
    syncAlertList(list, alerts, { showAsset: true });
  }, ALERTS_EVERY_MS, signal);
}

// ---------------------------------------------------------------------------
// Page 4: Gateways

function fmtSeconds(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "—";
  return s < 10 ? `${s.toFixed(1)} s` : fmtDuration(s * 1000);
}

function fmtBytes(n) {
  if (!Number.isFinite(n)) return "—";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function gatewaysView(root, _query, signal) {
  document.title = "Gateways · EdgeLoop";
  const summary = h("div", { class: "summary", dataset: { testid: "gateway-summary" } });
  const tbody = h("tbody");
  const table = h("table", { class: "fleet-table gateway-table", dataset: { testid: "gateway-table" } },
    h("thead", null, h("tr", null,
      h("th", { scope: "col" }, "Gateway"), h("th", { scope: "col" }, "State"),
      h("th", { scope: "col", class: "num" }, "Backlog"), h("th", { scope: "col", class: "num" }, "Lag"),
      h("th", { scope: "col" }, "Sources"), h("th", { scope: "col" }, "Configuration"),
      h("th", { scope: "col" }, "Heartbeat"))),
    tbody);
  const body = h("div", { class: "panel-body" }, stateBox("loading", "Loading gateways…"));
  root.append(
    h("div", { class: "page-head" }, h("div", null, h("h1", null, "Gateways"), summary)),
    h("section", { class: "panel" }, body));
  const rows = new Map();
  let loaded = false;

  function makeRow(g) {
    return h("tr", { class: "gateway-row", dataset: { testid: "gateway-row", gatewayId: g.id } },
      h("td", { class: "cell-asset", "data-label": "Gateway" }, h("span", { class: "asset-link" }),
        h("span", { class: "asset-id" })),
      h("td", { class: "cell-status", "data-label": "State" }),
      h("td", { class: "cell-backlog num", "data-label": "Backlog", dataset: { testid: "gateway-backlog" } }),
      h("td", { class: "cell-lag num", "data-label": "Lag", dataset: { testid: "gateway-lag" } }),
      h("td", { class: "cell-sources", "data-label": "Sources", dataset: { testid: "gateway-sources" } }),
      h("td", { class: "cell-config", "data-label": "Configuration", dataset: { testid: "gateway-config" } }),
      h("td", { class: "cell-seen", "data-label": "Heartbeat" }));
  }

  function updateRow(tr, g) {
    const [cName, cState, cBacklog, cLag, cSources, cConfig, cSeen] = tr.children;
    setText($(".asset-link", cName), g.id);
    const devices = g.devices || [];
    setText($(".asset-id", cName), `${devices.length} device${devices.length === 1 ? "" : "s"} behind it`);
    cName.title = devices.join(", ");
    const reasons = g.reasons || [];
    const sig = `${g.state}|${reasons.join("|")}`;
    if (cState._sig !== sig) {
      cState._sig = sig;
      const b = badge(GATEWAY_BADGE[g.state] || "offline", g.state);
      b.dataset.testid = "gateway-state";
      b.dataset.state = g.state;
      cState.replaceChildren(b);
      if (reasons.length) {
        append(cState, [h("ul", { class: "gateway-reasons", dataset: { testid: "gateway-reasons" } },
          reasons.map((r) => h("li", null, r)))]);
      }
    }
    tr.dataset.state = g.state;
    const bl = g.backlog || {};
    setText(cBacklog, `${fmtNumber(bl.messages)} msgs · ${fmtNumber(bl.samples)} samples`);
    cBacklog.title = `${fmtBytes(bl.bytes)} in the journal; oldest unsent ${fmtSeconds(bl.oldest_unsent_age_s)}`
      + `; ${fmtNumber(g.dropped_samples)} samples dropped`;
    if (bl.oldest_unsent_age_s !== null && bl.oldest_unsent_age_s !== undefined) {
      append(cBacklog, [h("span", { class: "asset-id" }, `oldest ${fmtSeconds(bl.oldest_unsent_age_s)}`)]);
    }
    setText(cLag, fmtSeconds(g.sync_lag_s));
    const chips = h("div", { class: "source-chips" });
    cSources.replaceChildren(chips);
    append(chips, (g.sources || []).map((src) => {
      const chip = badge(src.state === "ok" ? "ok" : src.state === "failing" ? "critical" : "info", `${src.name}: ${src.state}`);
      chip.dataset.testid = "gateway-source";
      chip.dataset.state = src.state;
      chip.title = src.error || `${src.kind}`;
      return chip;
    }));
    const cfg = g.config || {};
    const latest = cfg.latest;
    setText(cConfig, cfg.running_version ? `v${cfg.running_version} (${String(cfg.status || "").replace("_", " ")})` : "—");
    if (latest && latest.version !== cfg.running_version) {
      append(cConfig, [h("span", { class: "asset-id" }, `pushed v${latest.version}: ${latest.status.replace("_", " ")}`)]);
    }
    // the platform's own clock decides the age (never the browser's)
    setText(cSeen, `${fmtSeconds(g.heartbeat_age_s)} ago`);
    cSeen.title = `CPU ${fmtNumber(g.cpu_percent, 1)} %, RSS ${fmtBytes(g.rss_bytes)}`;
  }

  poll(async () => {
    let list;
    try {
      list = await api("/gateways", { signal });
    } catch (e) {
      if (!loaded && !isAbort(e)) body.replaceChildren(stateBox("error", "Could not load gateways.", `${e.message}. Retrying…`));
      throw e;
    }
    if (!loaded) {
      loaded = true;
      body.replaceChildren(table);
    }
    table.hidden = !list.length;
    if (!list.length && !$(".state-empty", body)) {
      body.append(stateBox("empty", "No gateways yet.", "A gateway appears here with its first heartbeat (edgeloop agent)."));
    } else if (list.length) {
      $(".state-empty", body)?.remove();
    }
    list.sort((x, y) => (GATEWAY_STATE_RANK[x.state] ?? 9) - (GATEWAY_STATE_RANK[y.state] ?? 9)
      || String(x.id).localeCompare(String(y.id)));
    const seen = new Set();
    list.forEach((g, i) => {
      seen.add(g.id);
      let tr = rows.get(g.id);
      if (!tr) {
        tr = makeRow(g);
        rows.set(g.id, tr);
      }
      updateRow(tr, g);
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    for (const [id, tr] of rows) {
      if (!seen.has(id)) {
        tr.remove();
        rows.delete(id);
      }
    }
    const n = { online: 0, degraded: 0, offline: 0 };
    for (const g of list) n[g.state] = (n[g.state] || 0) + 1;
    summary.replaceChildren();
    append(summary, [
      h("span", null, `${list.length} gateway${list.length === 1 ? "" : "s"}`),
      n.offline ? badge("offline", `${n.offline} offline`) : null,
      n.degraded ? badge("warning", `${n.degraded} degraded`) : null,
      badge("ok", `${n.online} online`)]);
  }, GATEWAYS_EVERY_MS, signal);
}

// ---------------------------------------------------------------------------
// Page 5: Incidents (the technician's inbox) and Page 6: one incident
//
// The inbox lists what is still being worked on (open, acknowledged, in progress) in the API's
// order (highest priority first); each card has one-tap actions. Every change goes through the
// incident API and is recorded as the signed-in user; an error (403 / 409 / 422 detail) is shown
// at the card or the action and as a toast, never swallowed.

const INCIDENTS_EVERY_MS = 3000;
const INCIDENT_COUNT_EVERY_MS = 4000;
const INCIDENT_TIMELINE_HEAD = 10; // a long timeline (a gateway storm) shows its start and its end
const INCIDENT_TIMELINE_TAIL = 30;
const INCIDENT_ALERTS_SHOWN = 20;
/** Common fault types offered in one tap (the simulator's kinds first); anything else can be typed. */
const FAULT_TYPES = ["bearing_wear", "cavitation", "overheating", "misalignment", "seal_leak",
  "sensor_stuck", "sensor_drift", "dropout"];
const FALSE_ALARM_REASONS = ["Planned work or test run", "Normal change of load or setpoint",
  "Threshold too tight for this machine", "Already handled in another incident"];
const INCIDENT_MOVES = {
  acknowledge: { label: "Acknowledge", done: "acknowledged" },
  start: { label: "Start work", done: "in progress" },
  resolve: { label: "Resolve", done: "resolved" },
  close: { label: "Close", done: "closed" },
  reopen: { label: "Reopen", done: "reopened" },
};
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

const statusLabel = (s) => humanize(s || "—");
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

function incidentRoute(inc) {
  return inc.route === "urgent" || inc.route === "normal" ? inc.route : (inc.priority >= 60 ? "urgent" : "normal");
}

function priorityBadge(inc) {
  const r = incidentRoute(inc);
  const p = Number.isFinite(inc.priority) ? Math.round(inc.priority) : null;
  return h("span", {
    class: `prio prio-${r}`, dataset: { testid: "incident-priority", route: r },
    title: p === null ? r : `Priority ${p} of 100 (${r})`,
  }, r === "urgent" ? "Urgent" : "Normal", p === null ? null : h("span", { class: "prio-num" }, `P${p}`));
}

function incidentStatusPill(status) {
  return h("span", { class: `status-pill st-${status}`, dataset: { testid: "incident-status", status } }, statusLabel(status));
}

function canAct() {
  // a viewer may read but not act; without sign-in (server without auth) the API decides
  return !session.user || session.user.role !== "viewer";
}

function me() {
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
function distinctVerdicts(labels) {
  const seen = new Map();
  for (const l of labels) {
    const key = `${l.verdict}|${l.fault_type}|${l.reason}|${l.by}|${l.ts}`;
    const cur = seen.get(key);
    if (cur) cur.alerts.push(l.alert);
    else seen.set(key, { ...l, alerts: [l.alert] });
  }
  return [...seen.values()].sort((a, b) => b.ts - a.ts);
}

function verdictChip(v) {
  return h("span", {
    class: `verdict verdict-${v.verdict}`, dataset: { testid: "incident-verdict", verdict: v.verdict, faultType: v.fault_type || "" },
    title: `${verdictText(v)} (by ${v.by} at ${fmtTime(v.ts)})`,
  }, verdictText(v));
}

/**
 * POST an incident action; on failure the API's detail goes into `errorBox` and a toast.
 * Returns the response body, or null when it failed.
 */
async function incidentCall(id, path, body, what, errorBox) {
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
function verdictChooser(verdict, send, cancel) {
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

async function sendVerdict(id, verdict, value, errorBox) {
  const body = verdict === "false_alarm" ? { verdict, reason: value } : { verdict, fault_type: value };
  const what = verdict === "false_alarm" ? "mark it a false alarm" : verdict === "relabel" ? "relabel it" : "confirm it";
  const out = await incidentCall(id, "feedback", body, what, errorBox);
  if (!out) return false;
  const n = out.length;
  const label = out[0] && out[0].label;
  toast(`Incident #${id}: ${label ? verdictText(label) : verdict}${n > 1 ? ` (${n} alerts)` : ""}`, "ok");
  return true;
}

// -- nav count ---------------------------------------------------------------

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

function kickIncidentCount() {
  if (appCtrl) refreshIncidentCount(appCtrl.signal).catch(() => {});
}

// -- inbox ---------------------------------------------------------------------

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

function incidentsView(root, query, signal) {
  const done = query.get("show") === "done";
  document.title = `${done ? "Resolved incidents" : "Incidents"} · EdgeLoop`;
  const counter = h("span", { class: "muted", dataset: { testid: "incident-summary" } });
  const list = h("div", { class: "incident-list", dataset: { testid: "incident-list" } });
  const body = h("div", { class: "incident-body" }, stateBox("loading", "Loading incidents…"));
  const toggle = segmented("Which incidents", [{ key: "inbox", label: "Inbox" }, { key: "done", label: "Resolved / closed" }],
    done ? "done" : "inbox", (k) => { location.hash = k === "done" ? "#/incidents?show=done" : "#/incidents"; });
  toggle.classList.add("segmented-touch");
  toggle.dataset.testid = "incident-toggle";
  append(root, [
    h("div", { class: "page-head" },
      h("div", null, h("h1", null, "Incidents"), h("div", { class: "summary" }, counter)),
      h("div", { class: "page-tools" }, toggle)),
    canAct() ? null : h("p", { class: "readonly-note" }, "You can read incidents; acting on them needs the technician role."),
    body]);
  let namesTried = false; // asset names for the cards: fetched once, before the first cards are drawn
  const cards = new Map();
  let verdicts = new Map(); // incident id -> distinct verdicts (kept when the labels call fails)
  let loaded = false;

  let p = null;
  const ctx = { refresh: () => p && p.kick() };
  p = poll(async () => {
    if (!namesTried) {
      namesTried = true;
      if (!state.assets.size) await api("/assets", { signal }).then(rememberAssets).catch((e) => { if (isAbort(e)) throw e; });
    }
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
      for (const c of cards.values()) c.remove();
      cards.clear();
      return;
    }
    if (list.parentElement !== body) body.replaceChildren(list);
    const seen = new Set();
    let prev = null;
    for (const inc of incidents) {
      seen.add(inc.id);
      const v = verdicts.get(inc.id) || [];
      let card = cards.get(inc.id);
      if (!card) {
        card = h("article", { dataset: { testid: "incident-card" } });
        cards.set(inc.id, card);
        renderIncidentCard(card, inc, v, ctx);
      } else if (!card._choosing && !card.classList.contains("is-busy") && card._sig !== JSON.stringify([inc, v])) {
        renderIncidentCard(card, inc, v, ctx);
      }
      const want = prev ? prev.nextSibling : list.firstChild;
      if (want !== card) list.insertBefore(card, want);
      prev = card;
    }
    for (const [id, c] of cards) {
      if (!seen.has(id) && !c._choosing && !c.classList.contains("is-busy")) {
        c.remove();
        cards.delete(id);
      }
    }
  }, INCIDENTS_EVERY_MS, signal);

  document.addEventListener("edgeloop:stats", () => {
    for (const el of list.querySelectorAll("[data-ago]")) setText(el, fmtAgo(Number(el.dataset.ago)));
  }, { signal });
}

// -- one incident ----------------------------------------------------------------

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

/** A detector's score (1 = its threshold); a rule's alert (a level, a silent device) says its value and limit in
 * its message, with the unit, so a bare number ("Score 326.00") is not shown for it. */
function scoreFact(a) {
  if (!a.detector || !Number.isFinite(a.score)) return null;
  return h("div", { title: "1.00 is the detector's threshold" }, h("dt", null, "Detector score"),
    h("dd", { dataset: { testid: "alert-score" } }, `${a.score.toFixed(2)} × threshold`));
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

function incidentDetailView(root, id, _query, signal) {
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

// ---------------------------------------------------------------------------
// Page 7: KPIs of the alert and work-order lifecycle
//
// GET /kpis?group=fleet (the tiles) and ?group=site|line|asset (the table) over the `days`
// before the fleet's sample time; GET /kpis/daily?group=fleet&days=N (the charts: one row
// per UTC day, oldest first); GET /work-orders (the repairs behind the downtime). A KPI without
// data is null in the API: it is shown as "—" with the reason (next to a tile, in a table
// cell's tooltip) and is never drawn or sorted as 0.

const KPIS_EVERY_MS = 15000;
const DAY_MS = 86_400_000;
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

const isNum = (x) => typeof x === "number" && Number.isFinite(x);
const plural = (n, one, many = `${one}s`) => `${fmtNumber(n)} ${n === 1 ? one : many}`;

const SPAN_UNITS = [
  { unit: "s", name: "seconds", ms: 1000, below: 60_000 },
  { unit: "min", name: "minutes", ms: 60_000, below: 3_600_000 },
  { unit: "h", name: "hours", ms: 3_600_000, below: 48 * 3_600_000 },
  { unit: "d", name: "days", ms: DAY_MS, below: Infinity },
];

/** The unit a duration reads best in (after rounding to one decimal: 59.97 s is "1.0 min"). */
function spanUnit(ms) {
  for (const u of SPAN_UNITS) if (Math.round((Math.abs(ms) / u.ms) * 10) / 10 < u.below / u.ms) return u;
  return SPAN_UNITS[SPAN_UNITS.length - 1];
}

/** A KPI duration in human units: "45.0 s", "2.0 min", "5.5 h", "14.0 d". */
function fmtSpan(ms) {
  if (!isNum(ms)) return "—";
  const u = spanUnit(ms);
  return `${(ms / u.ms).toFixed(1)} ${u.unit}`;
}

/** A share as a percentage: "50 %", "33.3 %", "99.85 %" (near 0 or 100 never rounded onto it). */
function fmtPct(x) {
  if (!isNum(x)) return "—";
  const p = x * 100;
  if (Math.abs(p - Math.round(p)) < 1e-9) return `${Math.round(p)} %`;
  let d = p > 99 || p < 1 ? 2 : 1;
  while (d < 4 && (Number(p.toFixed(d)) >= 100 || Number(p.toFixed(d)) <= 0)) d++;
  return `${p.toFixed(d)} %`;
}

/** A rate or ratio: "0", "0.071", "1.0", "12.5", "250". */
function fmtRatio(x) {
  if (!isNum(x)) return "—";
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a >= 100) return x.toFixed(0);
  if (a >= 1) return x.toFixed(1);
  return x.toPrecision(2);
}

/** A UTC day as "MM-DD" (axis) or "YYYY-MM-DD" (legend): /kpis/daily's days are UTC days. */
function fmtDay(ms, long = false) {
  if (!isNum(ms)) return "—";
  const iso = new Date(ms).toISOString();
  return long ? iso.slice(0, 10) : iso.slice(5, 10);
}

/**
 * The headline KPIs (tiles, table columns): how to show a value, what it sums up (sub), and why
 * it is null (why). k is one row of /kpis.
 */
/** Availability and MTBF need at least a day of observed data (kpi.MIN_OBSERVED_MS): say so, never 100 %. */
const KPI_MIN_OBSERVED_MS = 86_400_000;
function notEnoughData(k) {
  if (k.enough_data !== false) return "";
  return `not enough data: ${fmtSpan(k.observed_ms)} of data in this period, at least ${fmtSpan(KPI_MIN_OBSERVED_MS)} needed`;
}

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
const KPI_DEF = Object.fromEntries(KPI_DEFS.map((d) => [d.key, d]));

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

/** One chart of KPIs per day (uPlot, as the asset page's charts). */
class KpiChart {
  constructor(def) {
    this.def = def;
    this.plot = null;
    this.structure = "";
    this.days = [];
    this.container = h("div", { class: "chart kpi-chart", dataset: { testid: "kpi-chart", chart: def.key, points: "0" }, role: "img", "aria-label": def.title });
    this.empty = h("div", { class: "chart-empty", hidden: true }, def.empty);
    this.note = h("span", { class: "chart-note" });
    this.el = h("figure", { class: "chart-card", dataset: { chart: def.key } },
      h("figcaption", null, h("span", { class: "chart-title" }, def.title), this.note),
      h("div", { class: "chart-wrap" }, this.container, this.empty));
    this.resizeObs = new ResizeObserver(() => this.resize());
    this.resizeObs.observe(this.container);
  }

  size() {
    const w = Math.max(200, Math.floor(this.container.clientWidth || this.el.clientWidth || 300));
    return { width: w, height: window.matchMedia("(max-width: 640px)").matches ? 180 : 210 };
  }

  resize() {
    if (!this.plot) return;
    const { width, height } = this.size();
    if (Math.abs(this.plot.width - width) > 1 || this.plot.height !== height) this.plot.setSize({ width, height });
  }

  /** daily: /kpis/daily rows; the fleet's KPIs of each day (null: that day has no fleet row). */
  update(daily) {
    if (!daily.length) {
      this.empty.hidden = false;
      this.container.dataset.points = "0";
      return;
    }
    this.days = daily.map((d) => d.day);
    const raw = {};
    let points = 0;
    let maxSpan = 0;
    for (const s of this.def.series) {
      raw[s.key] = daily.map((d) => {
        const k = d.groups && d.groups.fleet;
        const v = k ? k[s.key] : null;
        return isNum(v) ? v : null;
      });
      for (const v of raw[s.key]) {
        if (v === null) continue;
        points++;
        if (s.kind === "span") maxSpan = Math.max(maxSpan, v);
      }
    }
    // what is drawn: durations in one unit for the whole chart, shares in %
    const unit = spanUnit(maxSpan || 60_000);
    const scaleOf = (s) => (s.kind === "span" ? unit.ms : s.kind === "pct" ? 0.01 : 1);
    const data = [this.days, ...this.def.series.map((s) => raw[s.key].map((v) => (v === null ? null : v / scaleOf(s))))];
    this.container._kpi = { days: this.days, series: raw, unit: unit.unit };
    this.container.dataset.points = String(points);
    this.container.dataset.days = String(this.days.length);
    this.empty.hidden = points > 0;
    const kinds = [...new Set(this.def.series.map((s) => s.kind))];
    setText(this.note, `per UTC day${kinds.includes("span") ? ` · ${unit.name}` : ""}`);
    if (typeof uPlot === "undefined") {
      setText(this.empty, "Chart library failed to load (/static/vendor/uPlot.iife.min.js)");
      this.empty.hidden = false;
      return;
    }
    const structure = `${this.days.length}|${unit.unit}`;
    if (!this.plot || structure !== this.structure) {
      this.plot?.destroy();
      this.structure = structure;
      this.plot = new uPlot(this.options(unit), data, this.container);
      this.container._plot = this.plot;
    } else {
      this.plot.setData(data, true);
    }
  }

  options(unit) {
    const { width, height } = this.size();
    const days = this.days;
    const axisBase = {
      stroke: "#5b6472",
      grid: { stroke: "#eceff3", width: 1 },
      ticks: { stroke: "#d9dee5", width: 1, size: 4 },
      font: "11px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    };
    const fmtOf = (s) => (v) => {
      if (v === null || v === undefined) return "—";
      if (s.kind === "span") return `${(+v).toFixed(1)} ${unit.unit}`;
      if (s.kind === "pct") return fmtPct(v / 100);
      if (s.kind === "ratio") return fmtRatio(v);
      return fmtNumber(v);
    };
    const kinds = [...new Set(this.def.series.map((s) => s.kind))];
    const series = [{ label: "Day", value: (u, v) => fmtDay(v, true) }];
    for (const s of this.def.series) {
      series.push({
        label: s.label,
        scale: s.kind,
        stroke: s.color,
        fill: s.bars ? alpha(s.color, 0.35) : undefined,
        width: s.bars ? 1 : 2,
        dash: s.dash,
        spanGaps: false,
        paths: s.bars && uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.6, 40], gap: 1 }) : undefined,
        // counts are a value every day (0 included): a line; the others have gaps (null), so a lone day is a point
        points: s.kind === "count" ? { show: false } : { show: true, size: 6, fill: s.color },
        value: (u, v) => fmtOf(s)(v),
      });
    }
    const half = DAY_MS / 2;
    const scales = {
      x: { time: false, range: () => [days[0] - half, days[days.length - 1] + half] },
    };
    const axes = [{
      ...axisBase,
      space: 48,
      splits: (u) => {
        const fit = Math.max(2, Math.floor(u.bbox.width / (uPlot.pxRatio || window.devicePixelRatio || 1) / 52));
        const step = Math.max(1, Math.ceil(days.length / fit));
        return days.filter((_, i) => (days.length - 1 - i) % step === 0);
      },
      values: (u, splits) => splits.map((v) => fmtDay(v)),
    }];
    kinds.slice(0, 2).forEach((kind, i) => {
      const full = this.def.series.some((s) => s.kind === kind && s.full);
      scales[kind] = {
        auto: true,
        range: (u, min, max) => {
          if (kind === "pct") {
            if (full || min === null) return [0, 100];
            const lo = Math.max(0, Math.min(min, 100) - Math.max(0.5, (100 - min) * 0.6));
            return [Math.floor(lo * 10) / 10, 100];
          }
          const top = max === null || max <= 0 ? 1 : max * 1.15;
          return [0, kind === "count" ? Math.max(1, Math.ceil(top)) : top];
        },
      };
      const label = kind === "span" ? unit.unit : kind === "pct" ? "%" : kind === "ratio" ? "per asset-day" : "";
      axes.push({
        ...axisBase,
        scale: kind,
        side: i === 0 ? 3 : 1,
        grid: i === 0 ? axisBase.grid : { show: false },
        size: 50,
        incrs: kind === "count" ? [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 100000] : undefined,
        values: (u, vals) => vals.map((v) => (v === null ? "" : fmtAxis(v))),
        label: kinds.length > 1 || kind === "span" ? label : undefined,
        labelSize: kinds.length > 1 || kind === "span" ? 14 : 0,
        labelFont: axisBase.font,
      });
    });
    return {
      width,
      height,
      series,
      scales,
      axes,
      cursor: { drag: { x: false, y: false }, points: { size: 7 } },
      legend: { live: true },
    };
  }

  destroy() {
    this.resizeObs.disconnect();
    this.plot?.destroy();
    this.plot = null;
  }
}

function kpisView(root, query, signal) {
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

// ---------------------------------------------------------------------------
// Router

let current = null;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, qs] = raw.split("?");
  return { path: path || "/", query: new URLSearchParams(qs || "") };
}

function route() {
  if (!appCtrl) return; // signed out: the hash is kept and shown after sign-in
  current?.abort();
  const ctrl = new AbortController();
  current = ctrl;
  const { path, query } = parseHash();
  const root = $("#view");
  root.replaceChildren();
  let nav = "";
  const m = path.match(/^\/asset\/([^/]+)\/?$/);
  const mi = path.match(/^\/incidents\/(\d+)\/?$/);
  try {
    if (path === "/" || path === "") {
      nav = "fleet";
      fleetView(root, query, ctrl.signal);
    } else if (m) {
      nav = "fleet";
      assetView(root, decodeURIComponent(m[1]), query, ctrl.signal);
    } else if (path === "/alerts" || path === "/alerts/") {
      nav = "alerts";
      alertsView(root, query, ctrl.signal);
    } else if (path === "/incidents" || path === "/incidents/") {
      nav = "incidents";
      incidentsView(root, query, ctrl.signal);
    } else if (mi) {
      nav = "incidents";
      incidentDetailView(root, Number(mi[1]), query, ctrl.signal);
    } else if (path === "/gateways" || path === "/gateways/") {
      nav = "gateways";
      gatewaysView(root, query, ctrl.signal);
    } else if (path === "/kpis" || path === "/kpis/") {
      nav = "kpis";
      kpisView(root, query, ctrl.signal);
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

function start() {
  session.load();
  $("#signout-btn").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  boot();
}

start();

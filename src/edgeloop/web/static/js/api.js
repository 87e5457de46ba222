// The API client: JSON over fetch with the session's bearer token, a timeout, and the connection banner that
// says when the API is unreachable (views keep their last data meanwhile).

import { $, setText } from "./dom.js";
import { fmtClock } from "./format.js";
import { session } from "./session.js";

export const API = "/api/v1";

const REQUEST_TIMEOUT_MS = 10000;

/** What a 401 does (the shell shows the sign-in form); set once at start, so that this module needs no UI. */
let onUnauthorized = () => {};

export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

export const connection = {
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

export function detailText(data, fallback) {
  const d = data && data.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) return d.map((x) => (x && x.msg) || JSON.stringify(x)).join("; ");
  if (d) return JSON.stringify(d);
  return fallback;
}

/** fetch JSON from the API; aborts with the view's signal; reports reachability. */
export async function api(path, { method = "GET", body, signal } = {}) {
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
        if (path !== "/auth/logout") onUnauthorized(session.token ? "Your session has ended. Please sign in again." : null);
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

export const isAbort = (err) => err && err.name === "AbortError";

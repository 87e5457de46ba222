// Formatting of times, durations, numbers and units for display. "Now" is the fleet's sample time (state.js),
// never the browser clock.

import { sampleNow } from "./state.js";

export const pad = (n, w = 2) => String(n).padStart(w, "0");

/** Sample time as local "YYYY-MM-DD HH:MM:SS". */
export function fmtTime(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "—";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Value for a <time datetime> attribute; undefined (attribute omitted) if not a valid time. */
export function isoAttr(ms) {
  return Number.isFinite(ms) ? new Date(ms).toISOString() : undefined;
}

export function fmtClock(ms) {
  if (!Number.isFinite(ms)) return "—";
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDuration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr} h ${pad(m % 60)} min`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

/** "12 s ago" relative to the fleet's sample time (falls back to the absolute time). */
export function fmtAgo(ms) {
  if (ms === null || ms === undefined) return "never";
  const now = sampleNow();
  if (now === null) return fmtTime(ms);
  const diff = now - ms;
  if (diff < 1500) return "just now";
  return `${fmtDuration(diff)} ago`;
}

export function fmtNumber(x, digits = 0) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "—";
  return x.toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function fmtRate(x) {
  if (!Number.isFinite(x)) return "—";
  return fmtNumber(x, x < 100 ? 1 : 0);
}

export function fmtValue(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "—";
  const a = Math.abs(v);
  const digits = a >= 1000 ? 0 : a >= 100 ? 1 : a >= 10 ? 2 : 3;
  return v.toFixed(digits);
}

const UNIT_LABELS = { degC: "°C", degF: "°F", degc: "°C", m3: "m³", "m3/h": "m³/h", "m/s2": "m/s²", "m/s^2": "m/s²", pct: "%" };

/** Display form of a unit as sent by the API (e.g. "degC" -> "°C"). */
export function unitLabel(u) {
  return UNIT_LABELS[u] ?? u ?? "";
}

export function humanize(s) {
  return String(s ?? "").replace(/_/g, " ");
}

// KPI quantities (the KPI page and its charts): durations, shares and ratios, UTC days.

export const DAY_MS = 86_400_000;

export const isNum = (x) => typeof x === "number" && Number.isFinite(x);

const SPAN_UNITS = [
  { unit: "s", name: "seconds", ms: 1000, below: 60_000 },
  { unit: "min", name: "minutes", ms: 60_000, below: 3_600_000 },
  { unit: "h", name: "hours", ms: 3_600_000, below: 48 * 3_600_000 },
  { unit: "d", name: "days", ms: DAY_MS, below: Infinity },
];

/** The unit a duration reads best in (after rounding to one decimal: 59.97 s is "1.0 min"). */
export function spanUnit(ms) {
  for (const u of SPAN_UNITS) if (Math.round((Math.abs(ms) / u.ms) * 10) / 10 < u.below / u.ms) return u;
  return SPAN_UNITS[SPAN_UNITS.length - 1];
}

/** A KPI duration in human units: "45.0 s", "2.0 min", "5.5 h", "14.0 d". */
export function fmtSpan(ms) {
  if (!isNum(ms)) return "—";
  const u = spanUnit(ms);
  return `${(ms / u.ms).toFixed(1)} ${u.unit}`;
}

/** A share as a percentage: "50 %", "33.3 %", "99.85 %" (near 0 or 100 never rounded onto it). */
export function fmtPct(x) {
  if (!isNum(x)) return "—";
  const p = x * 100;
  if (Math.abs(p - Math.round(p)) < 1e-9) return `${Math.round(p)} %`;
  let d = p > 99 || p < 1 ? 2 : 1;
  while (d < 4 && (Number(p.toFixed(d)) >= 100 || Number(p.toFixed(d)) <= 0)) d++;
  return `${p.toFixed(d)} %`;
}

/** A rate or ratio: "0", "0.071", "1.0", "12.5", "250". */
export function fmtRatio(x) {
  if (!isNum(x)) return "—";
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a >= 100) return x.toFixed(0);
  if (a >= 1) return x.toFixed(1);
  return x.toPrecision(2);
}

/** A UTC day as "MM-DD" (axis) or "YYYY-MM-DD" (legend): /kpis/daily's days are UTC days. */
export function fmtDay(ms, long = false) {
  if (!isNum(ms)) return "—";
  const iso = new Date(ms).toISOString();
  return long ? iso.slice(0, 10) : iso.slice(5, 10);
}

// Telemetry charts (uPlot, vendored as a global script): one small-multiple chart per group of channels.

import { h, setText } from "../dom.js";
import { fmtDuration, fmtTime, fmtValue, pad, unitLabel } from "../format.js";

export const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

const GROUPS = [
  { key: "vibration", title: "Vibration", name: /vib|accel|velocity/i, unit: /^(mm\/s|in\/s|g|m\/s²|m\/s\^2|m\/s2)$/i },
  { key: "temperature", title: "Temperature", name: /temp/i, unit: /^(°c|°f|c|k|degc|degf)$/i },
  { key: "current", title: "Current", name: /current|amp|^i_/i, unit: /^(a|ma)$/i },
  { key: "process", title: "Pressure & flow", name: /press|flow/i, unit: /^(bar|mbar|kpa|pa|psi|m³\/h|m3\/h|l\/min|l\/s)$/i },
  { key: "speed", title: "Speed", name: /speed|rpm/i, unit: /^(rpm|1\/min)$/i },
];

/** Split a device's channels into chart groups (vibration axes together, …). */
export function groupChannels(channels) {
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

export function alpha(hex, a) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
}

/** One small-multiple chart: a group of channels of one device. */
export class ChartCard {
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

export function fmtAxis(v) {
  const a = Math.abs(v);
  if (a >= 10000) return `${(v / 1000).toFixed(a >= 100000 ? 0 : 1)}k`;
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1).replace(/\.0$/, "");
  return String(+v.toFixed(2));
}

// The KPI page's charts: the fleet's KPIs per UTC day from /kpis/daily.

import { h, setText } from "../dom.js";
import { DAY_MS, fmtDay, fmtNumber, fmtPct, fmtRatio, isNum, spanUnit } from "../format.js";
import { alpha, fmtAxis } from "./charts.js";

/** One chart of KPIs per day (uPlot, as the asset page's charts). */
export class KpiChart {
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

"""``edgeloop bench detect``: how fast the detectors score, on one core.

The process pins itself to one CPU (``sched_setaffinity``), so every thread it has (numpy's BLAS,
ONNX Runtime) shares that core: the figures are per core. Data: the fleet simulator's eight channels (a pump,
healthy), the shape of what the platform scores.

- **platform**: the detector the platform runs per asset (``AssetDetector``: the load-conditioned
  residual model plus the calibrated ensemble over its residuals, and the data-quality rules),
  warmed up, then fed ``batch`` rows per call (the batched path: the scoring stage hands it whole
  messages) and one row per call (the single-sample latency: p50 / p99 / max of one call).
- **platform KPI profile**: the detector of a ``detector: univariate`` profile (the ensemble's univariate
  preset, what ``edgeloop eval nab`` evaluates) on one channel, batched and one row per call.
- **each registered detector** (``edgeloop.detect.registry``) on the same eight channels: rows/s
  through ``score_learn_many`` in batches, and p99 latency of one ``score_one`` + ``learn_one``.
  Slow detectors are measured for at most ``budget_s`` seconds each.
"""

from __future__ import annotations

import platform as platform_mod
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from edgeloop.bench.harness import pin_one_core, publish_report
from edgeloop.detect import AssetDetector, DetectorConfig
from edgeloop.detect.registry import available, make
from edgeloop.detect.stream import UnivariateStreamDetector
from edgeloop.sim import CHANNELS, Fleet

START_MS = 1_767_225_600_000


@dataclass(frozen=True)
class Settings:
    rows: int = 200_000  # rows scored in the batched path (after warm-up)
    batch: int = 1_000  # rows per call in the batched path
    single: int = 5_000  # one-row calls timed for latency
    budget_s: float = 5.0  # at most this long per registered detector and path
    detectors: tuple[str, ...] = ()  # registered detectors to measure (empty: all)


def _stream(rows: int) -> tuple[np.ndarray, np.ndarray]:
    fleet = Fleet(devices=1, faulty=0, seed=11, start_ms=START_MS, duration_ms=rows * 1000)
    chunks = fleet.advance(fleet.end_ms)
    return np.concatenate([c.ts for c in chunks]), np.concatenate([c.values for c in chunks])


def _platform_warmup() -> int:
    """Rows until the platform detector is fully live: model fit, then the ensemble's warm-up and calibration."""
    cfg = DetectorConfig()
    return cfg.warmup_samples + 2 * cfg.ensemble_warmup + 10


def _latency(samples_s: list[float]) -> dict[str, float]:
    us = np.array(samples_s) * 1e6
    return {"p50_us": round(float(np.percentile(us, 50)), 1), "p99_us": round(float(np.percentile(us, 99)), 1),
            "max_us": round(float(us.max()), 1)}


def bench_platform(s: Settings, ts: np.ndarray, x: np.ndarray, console: Console) -> dict[str, Any]:
    det = AssetDetector(channels=CHANNELS)
    warm = _platform_warmup()
    det.process(ts[:warm], x[:warm])  # fit + ensemble warm-up and calibration
    console.print(f"platform detector: warmed up on {warm:,} rows; batched path, {s.batch} rows per call")
    end = min(len(ts), warm + s.rows)
    t0 = time.perf_counter()
    for i in range(warm, end, s.batch):
        det.process(ts[i:i + s.batch], x[i:i + s.batch])
    batched = (end - warm) / (time.perf_counter() - t0)
    console.print(f"  {batched:,.0f} rows/s; single-row calls ...")
    lat: list[float] = []
    base = end
    for i in range(base, min(len(ts), base + s.single)):
        t1 = time.perf_counter()
        det.process(ts[i:i + 1], x[i:i + 1])
        lat.append(time.perf_counter() - t1)
    return {"detector": det.name, "rows_per_s_batched": round(batched), "batch": s.batch,
            "single_row": _latency(lat), "single_rows": len(lat)}


def bench_univariate(s: Settings, ts: np.ndarray, x: np.ndarray, console: Console) -> dict[str, Any]:
    """The platform's detector for KPI profiles (``detector: univariate``) on one channel."""
    det = UnivariateStreamDetector(channels=["flow"])
    col = x[:, CHANNELS.index("flow"):CHANNELS.index("flow") + 1]
    det.process(ts[:2000], col[:2000])
    rows, i = 0, 2000
    t0 = time.perf_counter()
    while i < len(ts) and rows < s.rows and time.perf_counter() - t0 < s.budget_s:
        det.process(ts[i:i + s.batch], col[i:i + s.batch])
        i += s.batch
        rows += s.batch
    batched = rows / (time.perf_counter() - t0)
    lat: list[float] = []
    for j in range(i, min(len(ts), i + s.single)):
        t1 = time.perf_counter()
        det.process(ts[j:j + 1], col[j:j + 1])
        lat.append(time.perf_counter() - t1)
    console.print(f"  {det.name} (1 channel): {batched:,.0f} rows/s batched, "
                  f"p99 one row {_latency(lat)['p99_us']:.0f} µs")
    return {"detector": det.name, "channels": 1, "rows_per_s_batched": round(batched), "rows_timed": rows,
            "single_row": _latency(lat), "single_rows": len(lat)}


def bench_registered(name: str, s: Settings, x: np.ndarray, console: Console) -> dict[str, Any]:
    z = (x - x[:2000].mean(axis=0)) / x[:2000].std(axis=0)
    det = make(name, z.shape[1], seed=0, warmup=1000)
    det.score_learn_many(z[:3000])  # warm-up (and, for the ensemble, calibration)
    rows, i = 0, 3000
    t0 = time.perf_counter()
    while i < len(z) and rows < s.rows and time.perf_counter() - t0 < s.budget_s:
        det.score_learn_many(z[i:i + s.batch])
        i += s.batch
        rows += s.batch
    batched = rows / (time.perf_counter() - t0)
    lat: list[float] = []
    t0 = time.perf_counter()
    for row in z[i:i + s.single]:
        t1 = time.perf_counter()
        det.score_one(row)
        det.learn_one(row)
        lat.append(time.perf_counter() - t1)
        if time.perf_counter() - t0 > s.budget_s:
            break
    console.print(f"  {name}: {batched:,.0f} rows/s batched, p99 one row {_latency(lat)['p99_us']:.0f} µs")
    return {"detector": name, "rows_per_s_batched": round(batched), "rows_timed": rows,
            "single_row": _latency(lat), "single_rows": len(lat)}


def render(report: dict[str, Any], out: Console) -> None:
    table = Table(title=f"bench detect: {report['channels']} channels, one core (cpu {report['cpu']}), "
                        f"{report['rows']:,} rows")
    for col in ("detector", "rows/s batched", "one row p50 (µs)", "p99 (µs)", "max (µs)"):
        table.add_column(col, justify="left" if col == "detector" else "right")
    p = report["platform"]
    table.add_row(f"platform ({p['detector']})", f"{p['rows_per_s_batched']:,}", f"{p['single_row']['p50_us']}",
                  f"{p['single_row']['p99_us']}", f"{p['single_row']['max_us']}")
    u = report["platform_univariate"]
    table.add_row(f"platform KPI profile ({u['detector']}, 1 channel)", f"{u['rows_per_s_batched']:,}",
                  f"{u['single_row']['p50_us']}", f"{u['single_row']['p99_us']}", f"{u['single_row']['max_us']}")
    for r in report["registered"]:
        table.add_row(r["detector"], f"{r['rows_per_s_batched']:,}", f"{r['single_row']['p50_us']}",
                      f"{r['single_row']['p99_us']}", f"{r['single_row']['max_us']}")
    out.print(table)
    out.print("targets: platform >= 50,000 rows/s batched and one row p99 < 1,000 µs")


def main(*, as_json: bool, settings: Settings, console: Console, out: Console) -> dict[str, Any]:
    cpu = pin_one_core()
    started = time.monotonic()
    need = _platform_warmup() + settings.rows + settings.single + 10
    console.print(f"simulating {need:,} rows of an 8-channel pump ...")
    ts, x = _stream(need)
    report: dict[str, Any] = {
        "channels": len(CHANNELS), "rows": settings.rows, "cpu": cpu, "python": platform_mod.python_version(),
        "machine": platform_mod.machine(), "platform": bench_platform(settings, ts, x, console),
        "platform_univariate": bench_univariate(settings, ts, x, console),
    }
    names = settings.detectors or tuple(available())
    console.print(f"registered detectors: {', '.join(names)}")
    report["registered"] = [bench_registered(n, settings, x, console) for n in names]
    report["elapsed_seconds"] = time.monotonic() - started
    return publish_report(report, "detect", as_json=as_json, console=console, out=out, render=render)

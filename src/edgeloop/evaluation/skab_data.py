"""Loading SKAB runs (https://github.com/waico/SKAB layout) for :mod:`edgeloop.evaluation.skab`. File reading only.

A SKAB run is a ``;``-separated CSV with a header naming ``datetime``, the eight sensor channels of
:data:`CHANNELS` (any order, surrounding spaces ignored), ``anomaly`` and ``changepoint``; one row a second.
:func:`load_runs` takes a folder and reads every ``*.csv`` under it, recursively, in path order. Files whose
header is not a labelled SKAB header (another CSV, SKAB's unlabelled ``anomaly-free.csv``) are skipped and
returned with the reason; a SKAB file with a bad row or timestamps going backwards is an error naming the file
and line. Empty sensor fields are missing values (NaN).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgeloop.detect.protocol import F64

__all__ = ["CHANNELS", "LABELS", "SkabDataError", "SkabRun", "SkippedFile", "load_runs", "read_run", "skab_dir"]

CHANNELS = ("Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature", "Thermocouple",
            "Voltage", "Volume Flow RateRMS")
LABELS = ("anomaly", "changepoint")
Int8 = npt.NDArray[np.int8]
Stamps = npt.NDArray[np.datetime64]


class SkabDataError(ValueError):
    """The SKAB data is missing, or a SKAB-format file is malformed."""


@dataclass(frozen=True)
class SkabRun:
    """One labelled run: ``x`` is (n, 8) in :data:`CHANNELS` order; labels are 0/1 per row."""

    name: str  # path relative to the folder it was loaded from, e.g. "valve1/0.csv"
    timestamps: Stamps  # datetime64[s], non-decreasing
    x: F64
    anomaly: Int8
    changepoint: Int8


@dataclass(frozen=True)
class SkippedFile:
    """A CSV under the folder that is not a labelled SKAB run, and why."""

    name: str
    reason: str


def skab_dir(data: Path) -> Path:
    """The folder of SKAB runs in ``data``: its ``skab/`` folder when it has one, else ``data`` itself."""
    if not data.is_dir():
        raise SkabDataError(f"{data}: not a directory (give --data DIR or set EDGELOOP_DATA)")
    return data / "skab" if (data / "skab").is_dir() else data


def _header_problem(header: list[str]) -> str | None:
    if not header or header[0] != "datetime":
        return "not SKAB format: the first column is not 'datetime'"
    missing = [c for c in CHANNELS if c not in header]
    if missing:
        return f"not SKAB format: no column(s) {', '.join(missing)}"
    unlabelled = [c for c in LABELS if c not in header]
    if unlabelled:
        return f"no labels: no column(s) {', '.join(unlabelled)} (unlabelled runs cannot be scored)"
    return None


def _float(value: str) -> float:
    value = value.strip()
    return float(value) if value else float("nan")


def _label(value: str) -> int:
    v = float(value)
    if v not in (0.0, 1.0):
        raise ValueError(f"label {value!r} is not 0 or 1")
    return int(v)


def read_run(path: Path, name: str | None = None) -> SkabRun | SkippedFile:
    """One file: a :class:`SkabRun`, or a :class:`SkippedFile` when its header is not a labelled SKAB header."""
    label = name if name is not None else path.name
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter=";")
            header = [h.strip() for h in next(reader, [])]
            problem = _header_problem(header)
            if problem is not None:
                return SkippedFile(label, problem)
            cols = [header.index(c) for c in CHANNELS]
            a_col, c_col = header.index("anomaly"), header.index("changepoint")
            stamps: list[str] = []
            rows: list[list[float]] = []
            anomaly: list[int] = []
            changepoint: list[int] = []
            for line_no, row in enumerate(reader, start=2):
                if not row or all(not v.strip() for v in row):
                    continue
                try:
                    stamps.append(row[0].strip().replace(" ", "T"))
                    rows.append([_float(row[c]) for c in cols])
                    anomaly.append(_label(row[a_col]))
                    changepoint.append(_label(row[c_col]))
                except (IndexError, ValueError) as exc:
                    raise SkabDataError(f"{path}:{line_no}: bad row ({exc})") from None
    except UnicodeDecodeError:
        return SkippedFile(label, "not SKAB format: not UTF-8 text")
    try:
        timestamps = np.array(stamps, dtype="datetime64[s]")
    except ValueError as exc:
        raise SkabDataError(f"{path}: bad datetime ({exc})") from None
    if timestamps.size == 0:
        raise SkabDataError(f"{path}: a SKAB header but no rows")
    back = np.flatnonzero(np.diff(timestamps) < np.timedelta64(0, "s"))
    if back.size:
        raise SkabDataError(f"{path}:{int(back[0]) + 3}: timestamps go backwards")
    return SkabRun(name=label, timestamps=timestamps, x=np.array(rows, dtype=np.float64).reshape(-1, len(CHANNELS)),
                   anomaly=np.array(anomaly, dtype=np.int8), changepoint=np.array(changepoint, dtype=np.int8))


def load_runs(folder: Path) -> tuple[list[SkabRun], list[SkippedFile]]:
    """Every labelled SKAB run under ``folder`` (recursively, sorted by path) and the CSVs skipped, with reasons."""
    if not folder.is_dir():
        raise SkabDataError(f"{folder}: not a directory")
    runs: list[SkabRun] = []
    skipped: list[SkippedFile] = []
    for path in sorted(folder.rglob("*.csv"), key=lambda p: p.relative_to(folder).parts):
        if not path.is_file():
            continue
        got = read_run(path, path.relative_to(folder).as_posix())
        if isinstance(got, SkabRun):
            runs.append(got)
        else:
            skipped.append(got)
    if not runs:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in skipped[:5])
        raise SkabDataError(f"{folder}: no labelled SKAB runs (CSV with datetime;{';'.join(CHANNELS)};anomaly;"
                            f"changepoint)" + (f" - skipped {reasons}" if reasons else " - no CSV files"))
    return runs, skipped

"""Loading NAB's corpus (https://github.com/numenta/NAB layout) for :mod:`edgeloop.evaluation.nab`.

``NAB_DIR/labels/combined_windows.json`` names the files and their windows, ``NAB_DIR/config/profiles.json``
holds the profiles; a scores directory holds one CSV per file, ``CATEGORY/[DETECTOR_]NAME.csv``, with a header
naming at least ``timestamp`` and ``anomaly_score`` (NAB's results files and the bare calibration files);
``NAB_DIR/data/CATEGORY/NAME.csv`` holds the series themselves (``timestamp,value``) for running a detector.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.evaluation.nab import PROFILES, CostMatrix, ScoredFile, Window
from edgeloop.evaluation.nab_run import NabSeries

WINDOWS_FILE = Path("labels") / "combined_windows.json"
PROFILES_FILE = Path("config") / "profiles.json"


class NabDataError(ValueError):
    """The NAB data, a scores directory or a thresholds file is missing or malformed."""


def default_data_dir() -> Path:
    """``$EDGELOOP_DATA``, else ``../shared/data`` beside the project root."""
    env = os.environ.get("EDGELOOP_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


def nab_dir(data: Path) -> Path:
    """The NAB corpus in ``data``: ``data`` itself or its ``nab/`` folder."""
    for candidate in (data, data / "nab"):
        if (candidate / WINDOWS_FILE).is_file():
            return candidate
    raise NabDataError(f"no NAB corpus in {data}: expected {data / 'nab' / WINDOWS_FILE} (set --data or "
                       "EDGELOOP_DATA)")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise NabDataError(f"{path}: not found") from None
    except json.JSONDecodeError as exc:
        raise NabDataError(f"{path}: not JSON ({exc})") from None


def load_windows(nab: Path) -> dict[str, list[Window]]:
    """``category/name.csv`` -> its windows (start, end), for every file of the corpus."""
    raw = _read_json(nab / WINDOWS_FILE)
    if not isinstance(raw, dict):
        raise NabDataError(f"{nab / WINDOWS_FILE}: expected an object of file -> windows")
    return {name: [(np.datetime64(start, "us"), np.datetime64(end, "us")) for start, end in limits]
            for name, limits in sorted(raw.items())}


def load_profiles(nab: Path) -> dict[str, CostMatrix]:
    raw = _read_json(nab / PROFILES_FILE)
    try:
        return {name: CostMatrix(tp_weight=float(raw[name]["CostMatrix"]["tpWeight"]),
                                 fp_weight=float(raw[name]["CostMatrix"]["fpWeight"]),
                                 fn_weight=float(raw[name]["CostMatrix"]["fnWeight"])) for name in PROFILES}
    except (KeyError, TypeError, ValueError) as exc:
        raise NabDataError(f"{nab / PROFILES_FILE}: missing or bad profile weights ({exc!r})") from None


def load_thresholds(path: Path, detector: str | None = None) -> dict[str, float]:
    """Thresholds per profile from NAB's ``thresholds.json`` (``{detector: {profile: {"threshold": t}}}``);
    the detector is ``detector`` or the file's only one. A flat ``{profile: t}`` is accepted too."""
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise NabDataError(f"{path}: expected a JSON object")
    if not all(p in raw for p in PROFILES):
        if detector is not None and detector in raw:
            raw = raw[detector]
        elif len(raw) == 1:
            raw = next(iter(raw.values()))
        else:
            raise NabDataError(f"{path}: holds detectors {', '.join(sorted(raw))}; which one is {detector!r}?")
    try:
        return {p: float(raw[p]["threshold"] if isinstance(raw[p], dict) else raw[p]) for p in PROFILES}
    except (KeyError, TypeError, ValueError) as exc:
        raise NabDataError(f"{path}: missing or bad threshold ({exc!r})") from None


def _score_file(scores_dir: Path, name: str) -> Path:
    category, _, base = name.rpartition("/")
    folder = scores_dir / category
    for candidate in (folder / f"{scores_dir.name}_{base}", folder / base):
        if candidate.is_file():
            return candidate
    matches = sorted(folder.glob(f"*_{base}")) if folder.is_dir() else []
    if len(matches) == 1:
        return matches[0]
    raise NabDataError(f"{scores_dir}: no scores for {name} (looked for {category}/[DETECTOR_]{base})")


Columns = tuple[np.ndarray[Any, np.dtype[np.datetime64]], np.ndarray[Any, np.dtype[np.float64]]]


def _read_column(path: Path, column: str, *, strict: bool) -> Columns:
    """Timestamps and one numeric column of a CSV with a header; a value that is not a number is an error
    (``strict``) or NaN."""
    try:
        f = path.open(newline="")
    except FileNotFoundError:
        raise NabDataError(f"{path}: not found") from None
    with f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if "timestamp" not in header or column not in header:
            raise NabDataError(f"{path}: the header must name timestamp and {column}, got {header}")
        t_col, v_col = header.index("timestamp"), header.index(column)
        stamps: list[str] = []
        values: list[float] = []
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                stamps.append(row[t_col])
                text = row[v_col].strip()
            except IndexError:
                raise NabDataError(f"{path}:{line_no}: bad row {row}") from None
            try:
                values.append(float(text))
            except ValueError:
                if strict:
                    raise NabDataError(f"{path}:{line_no}: bad row {row}") from None
                values.append(float("nan"))
    try:
        timestamps = np.array(stamps, dtype="datetime64[us]")
    except ValueError as exc:
        raise NabDataError(f"{path}: bad timestamp ({exc})") from None
    return timestamps, np.array(values, dtype=np.float64)


def read_scores(path: Path) -> Columns:
    """Timestamps and anomaly scores of one scores CSV, in its row order (which may step back in time, as the
    corpus itself does)."""
    return _read_column(path, "anomaly_score", strict=True)


def load_scored_corpus(nab: Path, scores_dir: Path) -> list[ScoredFile]:
    """Every file of the corpus with the detector's scores from ``scores_dir`` and the labelled windows."""
    if not scores_dir.is_dir():
        raise NabDataError(f"{scores_dir}: not a directory")
    files: list[ScoredFile] = []
    for name, windows in load_windows(nab).items():
        timestamps, scores = read_scores(_score_file(scores_dir, name))
        files.append(ScoredFile(name=name, timestamps=timestamps, scores=scores, windows=windows))
    return files


def read_series(path: Path) -> Columns:
    """Timestamps and values of one NAB data CSV (``timestamp,value``); an empty or non-numeric value is NaN."""
    return _read_column(path, "value", strict=False)


def load_corpus(nab: Path, only: Sequence[str] | None = None) -> list[NabSeries]:
    """The corpus's data files (``NAB_DIR/data/CATEGORY/NAME.csv``) with their labelled windows, in the
    order of the labels file; ``only`` keeps the named files (``category/name.csv``), in that order."""
    windows = load_windows(nab)
    names = list(windows) if only is None else list(only)
    unknown = [n for n in names if n not in windows]
    if unknown:
        raise NabDataError(f"{nab / WINDOWS_FILE}: no such file(s): {', '.join(unknown)}")
    series: list[NabSeries] = []
    for name in names:
        timestamps, values = read_series(nab / "data" / name)
        series.append(NabSeries(name=name, timestamps=timestamps, values=values, windows=windows[name]))
    return series

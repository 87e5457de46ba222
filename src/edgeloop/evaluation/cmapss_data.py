"""Reading NASA's C-MAPSS turbofan files (``train_FD00x.txt``, ``test_FD00x.txt``, ``RUL_FD00x.txt``).

A run file is whitespace-separated, without a header, one row per engine cycle: unit number, cycle,
three operational settings, 21 sensors (26 columns). Rows of one unit are consecutive and its cycles
count 1, 2, 3, ... A truth file holds one remaining useful life per line, in the order of the units
of its test file. Every error names the file, the line and what is wrong with it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from edgeloop.rul.features import AssetHistory

N_SETTINGS = 3
N_SENSORS = 21
N_COLUMNS = 2 + N_SETTINGS + N_SENSORS
SETTING_NAMES = tuple(f"op{i}" for i in range(1, N_SETTINGS + 1))
SENSOR_NAMES = tuple(f"s{i}" for i in range(1, N_SENSORS + 1))


class CmapssDataError(ValueError):
    """A C-MAPSS file is missing or malformed; the message names the file and line."""


def default_cmapss_dir() -> Path:
    """``$EDGELOOP_DATA/cmapss``, else ``../shared/data/cmapss`` beside the project root."""
    env = os.environ.get("EDGELOOP_DATA")
    base = Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared" / "data"
    return base / "cmapss"


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        raise CmapssDataError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CmapssDataError(f"{path}: cannot read ({exc})") from None


def parse_runs(text_lines: list[str], source: str = "<input>") -> list[AssetHistory]:
    """The engines of a run file's lines, in file order (blank lines are ignored)."""
    engines: list[AssetHistory] = []
    unit_rows: list[list[float]] = []
    unit: int | None = None
    seen: set[int] = set()

    def close() -> None:
        if unit is not None:
            data = np.array(unit_rows, dtype=np.float64)
            engines.append(AssetHistory(
                asset=str(unit), cycles=data[:, 1].astype(np.int64), settings=data[:, 2:2 + N_SETTINGS],
                sensors=data[:, 2 + N_SETTINGS:], sensor_names=SENSOR_NAMES, setting_names=SETTING_NAMES))

    for number, line in enumerate(text_lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{source}, line {number}"
        if len(fields) != N_COLUMNS:
            raise CmapssDataError(f"{where}: {len(fields)} columns, expected {N_COLUMNS} (unit, cycle, "
                                  f"{N_SETTINGS} settings, {N_SENSORS} sensors)")
        try:
            values = [float(f) for f in fields]
        except ValueError:
            bad = next(f for f in fields if not _is_float(f))
            raise CmapssDataError(f"{where}: {bad!r} is not a number") from None
        if not all(math.isfinite(v) for v in values):
            raise CmapssDataError(f"{where}: a value is not finite")
        if not (values[0].is_integer() and values[1].is_integer() and values[0] >= 1 and values[1] >= 1):
            raise CmapssDataError(f"{where}: unit {fields[0]!r} and cycle {fields[1]!r} must be positive integers")
        this_unit, cycle = int(values[0]), int(values[1])
        if this_unit != unit:
            if this_unit in seen:
                raise CmapssDataError(f"{where}: unit {this_unit} appears again after other units (rows of a "
                                      "unit must be consecutive)")
            close()
            unit, unit_rows = this_unit, []
            seen.add(this_unit)
        expected = len(unit_rows) + 1
        if cycle != expected:
            raise CmapssDataError(f"{where}: unit {this_unit} cycle {cycle}, expected {expected} (cycles count "
                                  "1, 2, 3, ... within a unit)")
        unit_rows.append(values)
    close()
    if not engines:
        raise CmapssDataError(f"{source}: no data rows")
    return engines


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_runs(path: Path) -> list[AssetHistory]:
    """The engines of a train or test file (``train_FD001.txt``, ``test_FD001.txt``)."""
    return parse_runs(_lines(path), str(path))


def parse_truth(text_lines: list[str], source: str = "<input>") -> list[float]:
    """The remaining useful lives of a truth file's lines (one non-negative number per line)."""
    truth: list[float] = []
    for number, line in enumerate(text_lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{source}, line {number}"
        if len(fields) != 1:
            raise CmapssDataError(f"{where}: {len(fields)} values, expected one remaining useful life per line")
        try:
            value = float(fields[0])
        except ValueError:
            raise CmapssDataError(f"{where}: {fields[0]!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise CmapssDataError(f"{where}: remaining useful life {fields[0]!r} must be a finite number >= 0")
        truth.append(value)
    if not truth:
        raise CmapssDataError(f"{source}: no values")
    return truth


def load_test(test: Path, truth: Path) -> tuple[list[AssetHistory], list[float]]:
    """A test file's truncated engines and the true remaining useful life at each one's last cycle."""
    engines = load_runs(test)
    lives = parse_truth(_lines(truth), str(truth))
    if len(lives) != len(engines):
        raise CmapssDataError(f"{truth}: {len(lives)} values for the {len(engines)} units of {test} (one per "
                              "unit, in the test file's order)")
    return engines, lives


def format_runs(engines: list[AssetHistory]) -> str:
    """Engines written back in C-MAPSS layout (the engines' units must be integers); for tests and splits."""
    lines = []
    for engine in engines:
        for cycle, settings, sensors in zip(engine.cycles, engine.settings, engine.sensors, strict=True):
            cells = [engine.asset, str(int(cycle)), *(f"{v:.4f}" for v in settings), *(f"{v:.4f}" for v in sensors)]
            lines.append(" ".join(cells))
    return "\n".join(lines) + "\n"

"""Running a training job off the event loop: one worker process (``spawn``), progress streamed back, bounded
memory, cancellable, and a clear error when the worker dies.

The data travels as a file, not in the request. The caller writes each device's series to a series file with
:class:`SeriesWriter` as it reads them from the store, one device at a time (a zip of ``.npy`` arrays, the npz
layout, written member by member), and the request carries its path. Neither process ever holds more than one
device's rows plus what it keeps (the fitted detectors, the figures): the parent does not build one big request
that would have to be pickled whole into the worker's pipe, and the worker reads one device's arrays at a time
(:func:`read_series`), capped to the newest ``max_rows_per_device`` rows (:class:`TrainingConfig`).

:func:`run_training` awaits the job: ``progress(stage, done, total)`` is called on the event loop (``"started"``
once, then ``"devices"`` after each device). Cancelling the awaiting task kills the worker. A worker that dies
(killed, out of memory) raises :class:`TrainingFailed` at once, and so does a training error in the worker
(with its message). The worker process is ours alone (one per job) and is gone when :func:`run_training`
returns or raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import numpy as np

from edgeloop.detect import DetectorConfig
from edgeloop.errors import EdgeLoopError
from edgeloop.file_modes import FILE_MODE, tighten
from edgeloop.models.detector_artifact import PlatformDetector, load_detectors
from edgeloop.models.training import DeviceSeries, TrainingConfig, TrainingResult, train
from edgeloop.store.alerting import Label

__all__ = ["SeriesWriter", "TrainingFailed", "TrainingRequest", "read_series", "run_training"]

log = logging.getLogger(__name__)

_INDEX: Final = "index.json"
_worker_conn: Connection | None = None  # in a worker: where its progress goes


class TrainingFailed(EdgeLoopError):
    """A training job did not produce a model: its worker died, or training itself failed (the message says)."""


# ---------------------------------------------------------------------------------------------------- series file

class SeriesWriter:
    """Writes a series file: ``with SeriesWriter(path) as w: w.add(series)`` per device (any order, each once)."""

    def __init__(self, path: str | Path, *, max_rows: int | None = None) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        # telemetry is private data: the file is 0600 from its first byte, whatever the umask (file_modes)
        self._file = os.fdopen(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE), "wb")
        tighten(self.path)
        self._zip = zipfile.ZipFile(self._file, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._index: list[dict[str, Any]] = []

    def add(self, series: DeviceSeries) -> None:
        """Append one device (its newest ``max_rows`` rows, when set)."""
        if any(e["device"] == series.device for e in self._index):
            raise ValueError(f"device {series.device!r} is in the series file already")
        ts = np.ascontiguousarray(series.ts, dtype=np.int64).reshape(-1)
        values = np.ascontiguousarray(series.values, dtype=np.float64).reshape(ts.size, len(series.channels))
        if self.max_rows is not None and ts.size > self.max_rows:
            ts, values = ts[-self.max_rows:], values[-self.max_rows:]
        k = len(self._index)
        for name, arr in ((f"{k}.ts.npy", ts), (f"{k}.values.npy", values)):
            with self._zip.open(name, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
        self._index.append({"device": series.device, "channels": list(series.channels), "asset": series.asset,
                            "rows": int(ts.size)})

    def close(self) -> None:
        if self._zip.fp is not None:
            self._zip.writestr(_INDEX, json.dumps(self._index))
            self._zip.close()
        self._file.close()

    def __enter__(self) -> SeriesWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def read_series(path: str | Path) -> tuple[int, Iterator[DeviceSeries]]:
    """The number of devices in a series file, and an iterator that reads them one at a time (sorted by id)."""
    with zipfile.ZipFile(path) as zf:
        index = json.loads(zf.read(_INDEX))
    order = sorted(range(len(index)), key=lambda k: str(index[k]["device"]))

    def devices() -> Iterator[DeviceSeries]:
        with zipfile.ZipFile(path) as zf:
            for k in order:
                e = index[k]
                with zf.open(f"{k}.ts.npy") as f:
                    ts = np.lib.format.read_array(f, allow_pickle=False)
                with zf.open(f"{k}.values.npy") as f:
                    values = np.lib.format.read_array(f, allow_pickle=False)
                yield DeviceSeries(device=str(e["device"]), ts=ts, values=values,
                                   channels=tuple(str(c) for c in e["channels"]), asset=str(e.get("asset", "")))

    return len(index), devices()


# ---------------------------------------------------------------------------------------------------- the job

@dataclass(frozen=True, slots=True)
class TrainingRequest:
    """One training job. ``champion_artifact``: the champion's detector artifact, verified by the caller (None:
    the built-in online detector, version 0); ``champion_ref`` names it in the model card."""

    series_path: str
    window_start_ms: int
    window_end_ms: int
    labels: Sequence[Label] = ()
    label_ids: Sequence[int] | None = None
    config: TrainingConfig = field(default_factory=TrainingConfig)
    detector_config: DetectorConfig | None = None
    champion_artifact: bytes | None = None
    champion_ref: str = "built-in"
    regime_since: dict[str, int] | None = None  # device -> when its current regime began (see training.train)


def _init_worker(conn: Connection) -> None:
    global _worker_conn  # noqa: PLW0603 -- the one per-process slot the pool's initializer can fill
    _worker_conn = conn


def _report(stage: str, done: int, total: int) -> None:
    if _worker_conn is not None:
        _worker_conn.send((stage, done, total))  # a few bytes: one atomic write, never half a message


def _work(request: TrainingRequest) -> TrainingResult:
    """The worker's job (runs in the spawned process)."""
    total, devices = read_series(request.series_path)
    _report("started", 0, total)
    champions: dict[str, PlatformDetector] = (load_detectors(request.champion_artifact)
                                               if request.champion_artifact is not None else {})
    return train(devices, list(request.labels), window_start_ms=request.window_start_ms,
                 window_end_ms=request.window_end_ms, config=request.config,
                 label_ids=list(request.label_ids) if request.label_ids is not None else None,
                 champion=(lambda device: champions.pop(device, None)) if champions else None,
                 champion_ref=request.champion_ref, detector_config=request.detector_config,
                 progress=_report, total_devices=total, regime_since=request.regime_since)


def _kill_workers(executor: ProcessPoolExecutor) -> None:
    # Python 3.11's executor cannot stop a running task; its worker processes (ours alone) are killed instead.
    for proc in list((getattr(executor, "_processes", None) or {}).values()):
        with contextlib.suppress(ProcessLookupError, OSError, ValueError):
            proc.kill()


async def run_training(request: TrainingRequest, *, progress: Callable[[str, int, int], None] | None = None,
                       timeout_s: float | None = None) -> TrainingResult:
    """Run ``request`` in a fresh worker process and return its result (see the module docstring). Raises
    :class:`TrainingFailed` if the worker dies, training fails, or ``timeout_s`` passes."""
    ctx = multiprocessing.get_context("spawn")
    # Progress comes back on a pipe of its own that only the worker writes and only this loop reads: a worker
    # killed mid-write can leave no lock held that the platform would then wait on (a shared queue can).
    reader, writer = ctx.Pipe(duplex=False)
    loop = asyncio.get_running_loop()

    def on_progress() -> None:
        try:
            while reader.poll():
                item = reader.recv()
                if progress is not None:
                    try:
                        progress(*item)
                    except Exception:  # a broken progress callback must not lose the training
                        log.exception("training progress callback failed")
        except (EOFError, OSError):
            loop.remove_reader(reader.fileno())

    loop.add_reader(reader.fileno(), on_progress)
    executor = ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_init_worker, initargs=(writer,))
    finished = False
    try:
        job = loop.run_in_executor(executor, _work, request)
        try:
            result: TrainingResult = await asyncio.wait_for(job, timeout_s)
        except BrokenProcessPool as exc:
            raise TrainingFailed("the training worker process died before it finished (killed, or out of "
                                 "memory); no model was made") from exc
        except TimeoutError as exc:
            raise TrainingFailed(f"training did not finish within {timeout_s:g} s; the worker was stopped") from exc
        except EdgeLoopError as exc:
            raise TrainingFailed(f"training failed: {exc}") from exc
        except Exception as exc:  # anything else the worker raised (a bad request, memory): the job failed
            raise TrainingFailed(f"training failed: {type(exc).__name__}: {exc}") from exc
        finished = True
        return result
    finally:
        if not finished:
            _kill_workers(executor)
        await asyncio.shield(asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True))
        on_progress()  # the worker has exited: everything it reported is in the pipe
        loop.remove_reader(reader.fileno())
        reader.close()
        writer.close()

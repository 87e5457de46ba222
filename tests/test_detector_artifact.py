"""Detector artifacts (edgeloop-detector-v1): a loaded detector continues exactly as the dumped one; the restricted
unpickler refuses anything but numpy and edgeloop.detect classes, without running it."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import msgspec
import numpy as np
import pytest

from edgeloop.detect import AssetDetector, DetectorConfig, Finding
from edgeloop.detect.baseline import TrainedBaselineDetector
from edgeloop.detect.stream import UnivariateStreamDetector
from edgeloop.models.detector_artifact import (
    MAGIC,
    ArtifactError,
    ArtifactHeader,
    PlatformDetector,
    dump_detectors,
    load_detectors,
    read_header,
)
from edgeloop.sim import Fleet
from edgeloop.sim.fleet import CHANNELS, FaultKind

HOUR = 3_600_000


def _fleet_data(hours: float, kind: FaultKind) -> tuple[np.ndarray, np.ndarray]:
    """One faulty device's samples (fault between 30 % and 50 % of the run)."""
    fleet = Fleet(devices=1, faulty=1, seed=11, start_ms=0, duration_ms=int(hours * HOUR), fault_kinds=[kind])
    (chunk,) = fleet.advance(int(hours * HOUR))
    return chunk.ts, chunk.values


def _continue_both(det: PlatformDetector, ts: np.ndarray, x: np.ndarray
                   ) -> tuple[list[list[Finding]], list[list[Finding]], list[np.ndarray], list[np.ndarray]]:
    """Dump ``det``, load it back, feed both the same later data in the same batches."""
    (copy,) = load_detectors(dump_detectors({"dev-1": det})).values()
    assert type(copy) is type(det)
    found_a, found_b, scores_a, scores_b = [], [], [], []
    for lo in range(0, ts.size, 997):
        sl = slice(lo, lo + 997)
        found_a.append(det.process(ts[sl], x[sl]))
        found_b.append(copy.process(ts[sl], x[sl]))
        if not isinstance(det, UnivariateStreamDetector):
            scores_a.append(np.array(det.last_scores))
            scores_b.append(np.array(copy.last_scores))
    return found_a, found_b, scores_a, scores_b


def test_robust_detector_continues_identically_after_warm_up() -> None:
    ts, x = _fleet_data(3, FaultKind.BEARING_WEAR)
    det = AssetDetector(channels=CHANNELS)
    split = 2400  # past the 20 min warm-up, before the fault's onset (30-50 % of the run)
    det.process(ts[:split], x[:split])
    assert det.warmed_up
    found_a, found_b, scores_a, scores_b = _continue_both(det, ts[split:], x[split:])
    assert found_a == found_b
    assert any(f.kind == "anomaly" for batch in found_a for f in batch)  # the later data holds the fault
    for a, b in zip(scores_a, scores_b, strict=True):
        np.testing.assert_array_equal(a, b)


def test_robust_detector_continues_identically_after_ensemble_calibration() -> None:
    ts, x = _fleet_data(4, FaultKind.CAVITATION)
    det = AssetDetector(channels=CHANNELS, config=DetectorConfig(ensemble_warmup=1800))
    split = 1200 + 2 * 1800 + 100  # warm-up, the ensemble's warm-up and its calibration are behind it
    det.process(ts[:split], x[:split])
    assert det._ensemble is not None and det._ensemble.warmed_up
    found_a, found_b, scores_a, scores_b = _continue_both(det, ts[split:], x[split:])
    assert found_a == found_b
    assert [f.kind for batch in found_a for f in batch]
    for a, b in zip(scores_a, scores_b, strict=True):
        np.testing.assert_array_equal(a, b)
    assert det.last_updates == load_detectors(dump_detectors({"d": det}))["d"].last_updates  # type: ignore[union-attr]


def test_baseline_and_univariate_detectors_continue_identically() -> None:
    ts, x = _fleet_data(2, FaultKind.OVERHEATING)
    baseline = TrainedBaselineDetector(channels=CHANNELS)
    baseline.process(ts[:401], x[:401])  # trained: its first 400 rows
    found_a, found_b, scores_a, scores_b = _continue_both(baseline, ts[401:], x[401:])
    assert found_a == found_b and any(found_a)
    for a, b in zip(scores_a, scores_b, strict=True):
        np.testing.assert_array_equal(a, b)

    uni = UnivariateStreamDetector(channels=["bearing_temp"])
    col = x[:, [CHANNELS.index("bearing_temp")]]
    uni.process(ts[:1000], col[:1000])
    found_a, found_b, _, _ = _continue_both(uni, ts[1000:], col[1000:])
    assert found_a == found_b and any(found_a)


def test_many_devices_round_trip_with_their_names() -> None:
    dets: dict[str, PlatformDetector] = {"b": AssetDetector(channels=["speed", "flow"]),
                                         "a": UnivariateStreamDetector(channels=["x"])}
    blob = dump_detectors(dets)
    header, _ = read_header(blob)
    assert header.devices == ["a", "b"]
    assert header.classes == {"a": "ensemble-univariate-v1", "b": "robust-ensemble-v2"}
    assert {k: type(v) for k, v in load_detectors(blob).items()} == {"a": UnivariateStreamDetector,
                                                                    "b": AssetDetector}


class _Evil:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.path}",)


def _forge(payload: object) -> bytes:
    """An artifact with a valid header around an arbitrary pickle."""
    body = pickle.dumps(payload, protocol=5)
    header = msgspec.json.encode(ArtifactHeader(format="edgeloop-detector-v1", version=1, devices=["dev-1"],
                                                classes={"dev-1": "robust-ensemble-v2"}, payload_size=len(body)))
    return MAGIC + struct.pack(">I", len(header)) + header + body


def test_a_smuggled_os_system_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    blob = _forge({"dev-1": _Evil(marker)})
    with pytest.raises(ArtifactError, match=r"refused: it asks for (posix|os)\.system"):
        load_detectors(blob)
    assert not marker.exists()
    # the same pickle is not let through when hidden inside a real detector's state either
    det = AssetDetector(channels=["speed", "flow"])
    det.samples_seen = _Evil(marker)  # type: ignore[assignment]
    with pytest.raises(ArtifactError, match="refused"):
        dump_detectors({"dev-1": det})
    assert not marker.exists()


def test_other_globals_and_non_detectors_are_refused() -> None:
    with pytest.raises(ArtifactError, match=r"builtins\.eval"):
        load_detectors(_forge({"dev-1": eval}))
    with pytest.raises(ArtifactError, match="does not exist"):
        load_detectors(_forge_global("edgeloop.detect.robust", "NoSuchThing"))
    with pytest.raises(ArtifactError, match=r"refused: it asks for edgeloop\.detect\.registry\.make"):
        load_detectors(_forge_global("edgeloop.detect.registry", "make"))  # a function, not a class
    with pytest.raises(ArtifactError, match="holds ndarray"):
        load_detectors(_forge({"dev-1": np.zeros(3)}))
    with pytest.raises(ArtifactError, match="not a platform detector"):
        dump_detectors({"dev-1": object()})  # type: ignore[dict-item]


def _forge_global(module: str, name: str) -> bytes:
    body = b"\x80\x05c" + module.encode() + b"\n" + name.encode() + b"\n."
    header = msgspec.json.encode(ArtifactHeader(format="edgeloop-detector-v1", version=1, devices=["dev-1"],
                                                classes={"dev-1": "robust-ensemble-v2"}, payload_size=len(body)))
    return MAGIC + struct.pack(">I", len(header)) + header + body


def test_truncated_or_garbage_blobs_are_refused_clearly() -> None:
    blob = dump_detectors({"dev-1": AssetDetector(channels=["speed", "flow"])})
    with pytest.raises(ArtifactError, match="truncated"):
        load_detectors(blob[:-10])
    with pytest.raises(ArtifactError, match="truncated"):
        load_detectors(blob[:len(MAGIC) + 2])
    with pytest.raises(ArtifactError, match="not a detector artifact"):
        load_detectors(b"PK\x03\x04 something else entirely")
    with pytest.raises(ArtifactError, match="not a detector artifact"):
        load_detectors(b"")
    header, offset = read_header(blob)
    corrupt = blob[:offset] + b"\x00" * header.payload_size
    with pytest.raises(ArtifactError, match="corrupt"):
        load_detectors(corrupt)
    newer = blob.replace(b'"version":1', b'"version":2', 1)
    with pytest.raises(ArtifactError, match="version 2"):
        load_detectors(newer)

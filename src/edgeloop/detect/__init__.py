"""Detectors: pure functions of telemetry (no I/O) that turn samples into findings.

The public front is :class:`AssetDetector` (``robust-ensemble-v2``), its
:class:`DetectorConfig`, and the :class:`Finding` it returns (with its
:class:`FindingPhase`: onset, holding, ended).
"""

from edgeloop.detect.finding import Finding, FindingKind, FindingPhase
from edgeloop.detect.robust import AssetDetector, DetectorConfig

__all__ = ["AssetDetector", "DetectorConfig", "Finding", "FindingKind", "FindingPhase"]

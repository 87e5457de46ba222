"""Fitted platform detectors as an artifact (format ``edgeloop-detector-v1``): what a detector model version holds.

A detector model of a device profile is the fitted per-device detectors of its devices (``robust-ensemble-v2``,
``trained-baseline-v1`` or ``ensemble-univariate-v1``: their fitted regressions, calibrations, thresholds and
streaming state). :func:`dump_detectors` turns ``{device id: detector}`` into bytes, :func:`load_detectors` turns
them back into detectors that continue exactly as the dumped ones would have (same findings, same scores on the
same later data).

Layout: the magic ``b"EDGELOOP-DETECTOR\\n"``, a 4-byte big-endian length, a JSON header (``format``, ``version``,
``devices``, ``classes``, ``payload_size``), then the payload: a pickle (protocol 5) of the ``dict``.

Pickle can run any code while it loads, so the payload is only ever read by a **restricted unpickler**: it may
build numpy arrays, dtypes and scalars, a few plain builtins containers, and classes defined in
``edgeloop.detect`` -- nothing else (no functions, no modules outside that list). Anything else raises
:class:`ArtifactError` before it is looked up, let alone called. The platform also loads an artifact only after
its signature and hash are verified (``edgeloop.models.signing``), so this is the second line of defence, not
the first. A detector that holds anything outside the list (a river model inside a ``hst`` member) cannot be
dumped: :func:`dump_detectors` loads its own output back through the same unpickler and refuses it at once,
rather than leaving a model that no platform can load.
"""

from __future__ import annotations

import importlib
import io
import pickle
import struct
from collections.abc import Mapping
from typing import Final

import msgspec

from edgeloop.detect.baseline import TrainedBaselineDetector
from edgeloop.detect.robust import AssetDetector
from edgeloop.detect.stream import UnivariateStreamDetector
from edgeloop.errors import EdgeLoopError

__all__ = ["FORMAT", "MAGIC", "ArtifactError", "ArtifactHeader", "PlatformDetector", "dump_detectors",
           "load_detectors", "read_header"]

FORMAT: Final = "edgeloop-detector-v1"
VERSION: Final = 1
MAGIC: Final = b"EDGELOOP-DETECTOR\n"
_LEN = struct.Struct(">I")
_MAX_HEADER = 1 << 20  # a header is a few KiB even for thousands of devices
_PICKLE_PROTOCOL: Final = 5

PlatformDetector = AssetDetector | TrainedBaselineDetector | UnivariateStreamDetector
_DETECTOR_TYPES: Final = (AssetDetector, TrainedBaselineDetector, UnivariateStreamDetector)

# numpy's reconstruction functions and types (numpy 2 names, and the numpy 1 names a pickle may carry)
_NUMPY: Final = frozenset({
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
})
_BUILTINS: Final = frozenset({"set", "frozenset", "bytearray", "complex"})
_DETECT_PACKAGE: Final = "edgeloop.detect"


class ArtifactError(EdgeLoopError):
    """A detector artifact could not be written or read: not this format, truncated, or holding something the
    restricted unpickler refuses. The message says which."""


class ArtifactHeader(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What an artifact says about itself, readable without unpickling anything."""

    format: str
    version: int
    devices: list[str]
    classes: dict[str, str]  # device -> detector name (robust-ensemble-v2 | trained-baseline-v1 | ...)
    payload_size: int


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allowlisted globals (see the module docstring); everything else is refused unresolved."""

    def find_class(self, module: str, name: str) -> type:
        if (module, name) in _NUMPY or (module == "builtins" and name in _BUILTINS):
            found: type = super().find_class(module, name)
            return found
        if (module == _DETECT_PACKAGE or module.startswith(_DETECT_PACKAGE + ".")) and "." not in name \
                and not name.startswith("__"):
            try:
                obj = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError) as exc:
                raise ArtifactError(f"detector artifact refers to {module}.{name}, which does not exist") from exc
            if isinstance(obj, type) and getattr(obj, "__module__", "").startswith(_DETECT_PACKAGE):
                return obj
        raise ArtifactError(f"detector artifact refused: it asks for {module}.{name}, which a detector artifact "
                            "may not contain (only numpy arrays and edgeloop.detect classes)")


def _unpickle(payload: bytes) -> object:
    try:
        return _RestrictedUnpickler(io.BytesIO(payload)).load()
    except ArtifactError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            struct.error, MemoryError, RecursionError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"detector artifact is corrupt: its payload does not unpickle ({exc})") from exc


def dump_detectors(detectors: Mapping[str, PlatformDetector]) -> bytes:
    """The artifact of ``{device id: fitted detector}`` (see the module docstring). Raises :class:`ArtifactError`
    for a detector that is not a platform detector or that holds something the loader would refuse."""
    names: dict[str, str] = {}
    for device, det in detectors.items():
        if not isinstance(device, str) or not device:
            raise ArtifactError(f"device ids must be non-empty strings, got {device!r}")
        if not isinstance(det, _DETECTOR_TYPES):
            raise ArtifactError(f"device {device!r}: {type(det).__name__} is not a platform detector")
        names[device] = det.name
    ordered = {d: detectors[d] for d in sorted(detectors)}
    payload = pickle.dumps(ordered, protocol=_PICKLE_PROTOCOL)
    _unpickle(payload)  # refuse now what no platform could load later
    header = msgspec.json.encode(ArtifactHeader(format=FORMAT, version=VERSION, devices=list(ordered),
                                                classes={d: names[d] for d in ordered},
                                                payload_size=len(payload)), order="sorted")
    return MAGIC + _LEN.pack(len(header)) + header + payload


def read_header(blob: bytes) -> tuple[ArtifactHeader, int]:
    """The artifact's header and the offset of its payload; :class:`ArtifactError` if it is not one."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise ArtifactError(f"a detector artifact is bytes, got {type(blob).__name__}")
    data = bytes(blob[:len(MAGIC) + _LEN.size])
    if not data.startswith(MAGIC):
        raise ArtifactError(f"not a detector artifact ({FORMAT}): it does not start with {MAGIC!r}")
    if len(data) < len(MAGIC) + _LEN.size:
        raise ArtifactError("detector artifact is truncated: it ends inside its header length")
    (size,) = _LEN.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    if size > _MAX_HEADER or start + size > len(blob):
        raise ArtifactError(f"detector artifact is truncated or corrupt: a header of {size} bytes does not fit "
                            f"in {len(blob)} bytes")
    try:
        header = msgspec.json.decode(bytes(blob[start:start + size]), type=ArtifactHeader)
    except msgspec.ValidationError as exc:
        raise ArtifactError(f"detector artifact has a bad header: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ArtifactError(f"detector artifact has a corrupt header: {exc}") from exc
    if header.format != FORMAT or header.version != VERSION:
        raise ArtifactError(f"detector artifact is {header.format} version {header.version}; this platform reads "
                            f"{FORMAT} version {VERSION}")
    offset = start + size
    if len(blob) - offset != header.payload_size:
        raise ArtifactError(f"detector artifact is truncated or padded: its payload is {len(blob) - offset} bytes, "
                            f"its header says {header.payload_size}")
    return header, offset


def load_detectors(blob: bytes) -> dict[str, PlatformDetector]:
    """``{device id: detector}`` from an artifact, each continuing exactly where it was dumped. Raises
    :class:`ArtifactError` (nothing is executed) for anything that is not a sound artifact."""
    header, offset = read_header(blob)
    loaded = _unpickle(bytes(blob[offset:]))
    if not isinstance(loaded, dict) or list(loaded) != header.devices:
        raise ArtifactError("detector artifact's payload does not hold the devices its header lists")
    out: dict[str, PlatformDetector] = {}
    for device, det in loaded.items():
        if not isinstance(det, _DETECTOR_TYPES) or det.name != header.classes.get(device):
            raise ArtifactError(f"detector artifact: device {device!r} holds {type(det).__name__}, not the "
                                f"{header.classes.get(device)} its header names")
        out[device] = det
    return out

"""Vectorised streaming primitives shared by the detectors (no I/O, no state of their own)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

_MIN_LOG_DECAY = -9.0  # per step: a >= 1.2e-4, i.e. a long gap is (almost) a reset
_MAX_SPAN = 600.0  # exp(600) is far from overflow; chunk the closed form below that


def ewma(u: F64, valid: Bool | None, log_decay: F64, y0: F64) -> F64:
    """Time-aware EWMA of each column of ``u`` with a hold on missing values.

    ``y[i] = a[i] * y[i-1] + (1 - a[i]) * u[i]`` with ``a[i] = exp(log_decay[i])``
    where ``u[i]`` is valid, and ``y[i] = y[i-1]`` where it is not (a missing value
    is never treated as zero). ``u`` is (n, s), ``valid`` is (n, s) or ``None``
    (all valid), ``log_decay`` is (n,) or (n, s) (``-dt / tau``) and ``y0`` (s,) is
    the state before the first row. Computed in closed form, in chunks that keep the
    exponentials finite.
    """
    n = u.shape[0]
    if n == 0 or u.shape[1] == 0:
        return np.zeros_like(u)
    ld = np.maximum(log_decay, _MIN_LOG_DECAY)
    if ld.ndim == 1:
        ld = ld[:, None]
    if n == 1:  # one row (the single-sample path): the recursion itself, without the closed form's cumsums
        a = np.exp(ld[0])
        one: F64 = a * y0 + (1.0 - a) * u[0]
        if valid is not None:
            one = np.where(valid[0], one, y0)
        return one.reshape(1, -1)
    if valid is None:
        loga = ld * np.ones(u.shape[1]) if ld.shape[1] != u.shape[1] else ld
        w = -np.expm1(loga)
        wu = w * u
    else:
        loga = np.where(valid, ld, 0.0)
        w = -np.expm1(loga)
        wu = w * np.where(valid, u, 0.0)
    c = np.cumsum(loga, axis=0)
    if c[-1].min() >= -_MAX_SPAN:
        res: F64 = np.exp(c) * (y0 + np.cumsum(wu * np.exp(-c), axis=0))
        return res
    out = np.empty_like(u)
    step = int(_MAX_SPAN // -_MIN_LOG_DECAY)
    y = y0
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        cc = np.cumsum(loga[lo:hi], axis=0)
        seg = np.exp(cc) * (y + np.cumsum(wu[lo:hi] * np.exp(-cc), axis=0))
        out[lo:hi] = seg
        y = seg[-1]
    return out


def run_lengths(cond: Bool, carry: I64 | int) -> I64:
    """Length of the run of ``True`` ending at each row (0 where ``cond`` is False).

    ``cond`` is (n,) or (n, s); ``carry`` is the run length before the first row.
    """
    if not cond.any():
        return np.zeros(cond.shape, dtype=np.int64)
    n = cond.shape[0]
    shape = (n,) + (1,) * (cond.ndim - 1)
    idx = np.arange(n, dtype=np.int64).reshape(shape)
    last_false = np.maximum.accumulate(np.where(cond, np.int64(-1), idx), axis=0)
    return np.where(last_false >= 0, idx - last_false, idx + 1 + np.asarray(carry, dtype=np.int64))

"""Validation of ``solve``'s arguments: each failure names the argument, shows it, says the fix."""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._xp import Array, get_array_module, to_host_float64


def check_y0(y0: Any) -> Array:
    """Return ``y0`` as a float or complex array (NumPy or CuPy), finite, at least 1 entry."""
    xp = get_array_module(y0)
    try:
        arr = xp.asarray(y0)
    except (TypeError, ValueError):
        raise TypeError(f"`y0` must be an array of numbers, got {type(y0).__name__}: "
                        f"{y0!r}") from None
    if arr.dtype.kind in "biu":
        arr = arr.astype(xp.float64)
    if arr.dtype.kind not in "fc":
        raise TypeError(f"`y0` must have a float or complex dtype, got {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"`y0` is empty (shape {arr.shape}); give at least one state entry")
    if not bool(xp.isfinite(arr).all()):
        raise ValueError(f"`y0` must be finite; got {int((~xp.isfinite(arr)).sum())} non-finite "
                         f"entries (shape {arr.shape}, dtype {arr.dtype})")
    return arr


def check_t_span(t_span: Any) -> tuple[float, float]:
    """Return ``(t0, t1)`` as Python floats, finite and distinct."""
    try:
        t0, t1 = (float(v) for v in t_span)
    except (TypeError, ValueError):
        raise ValueError(f"`t_span` must be a pair (t0, t1) of real numbers, "
                         f"got {t_span!r}") from None
    if not (math.isfinite(t0) and math.isfinite(t1)) or t0 == t1:
        raise ValueError(f"`t_span` must hold two finite, distinct times; got ({t0!r}, {t1!r}). "
                         "t1 < t0 integrates backwards.")
    return t0, t1


def check_t_eval(t_eval: Any, t0: float, t1: float) -> NDArray[np.float64] | None:
    """Return ``t_eval`` as a float64 host array, within the span and monotone in its direction."""
    if t_eval is None:
        return None
    try:
        ts = to_host_float64(t_eval)
    except (TypeError, ValueError):
        raise TypeError(f"`t_eval` must be a 1-D array of real times, got {t_eval!r}") from None
    if ts.ndim != 1 or ts.size == 0 or not np.all(np.isfinite(ts)):
        raise ValueError(f"`t_eval` must be a non-empty finite 1-D array, got shape {ts.shape}")
    lo, hi = min(t0, t1), max(t0, t1)
    if ts.min() < lo or ts.max() > hi:
        raise ValueError(f"`t_eval` must lie within t_span = ({t0!r}, {t1!r}); got values in "
                         f"[{ts.min()!r}, {ts.max()!r}]")
    if np.any(np.sign(t1 - t0) * np.diff(ts) < 0):
        raise ValueError("`t_eval` must be sorted in the direction of integration "
                         f"({'increasing' if t1 > t0 else 'decreasing'})")
    return ts


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> int | None:
    """Return ``value`` as an int >= 1 (or None if allowed)."""
    if value is None and allow_none:
        return None
    if type(value) is int and value >= 1:  # the common case, without the ABC check below
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}")
    return int(value)


def check_first_step(first_step: Any, t0: float, t1: float) -> float | None:
    """Return ``first_step`` as a positive float no larger than ``|t1 - t0|`` (or None)."""
    if first_step is None:
        return None
    try:
        value = float(first_step)
    except (TypeError, ValueError):
        raise TypeError(f"`first_step` must be a positive float, got {first_step!r}") from None
    if not np.isfinite(value) or value <= 0 or value > abs(t1 - t0):
        raise ValueError(f"`first_step` must be positive (a magnitude; the sign follows t_span) "
                         f"and at most |t1 - t0| = {abs(t1 - t0)!r}; got {first_step!r}")
    return value


def check_tolerance_shape(name: str, tol: Any, y_shape: Sequence[int]) -> None:
    """Raise unless ``tol`` broadcasts to the state shape without changing it."""
    if type(tol) is float:                  # a scalar always does (the common case)
        return
    shape = np.shape(tol)
    try:
        out = np.broadcast_shapes(shape, tuple(y_shape))
    except ValueError:
        out = None
    if out != tuple(y_shape):
        raise ValueError(f"`{name}` with shape {shape} does not broadcast to y0's shape "
                         f"{tuple(y_shape)}; give a scalar or an array broadcastable to y0 "
                         "(see solvers.block_tolerance for block-wise values)")

"""Step-size control: error norms, PI / I controllers (pure), Hairer's initial step.

A controller is immutable; its evolving quantities live in a :class:`ControllerState` that is
passed in and returned::

    state = controller.init(err_order)
    accept, h_next, state = controller.propose(h, err_norm, state)

References
----------
Hairer, Norsett & Wanner, *Solving ODEs I*, 2nd ed., Springer 1993: sec. II.4 (error norm,
"automatic step size control", the initial step algorithm) and the DOPRI5 code (PI control
with ``beta = 0.04``, ``facold >= 1e-4``, no growth right after a rejection).
Gustafsson, "Control theoretic techniques for stepsize selection in explicit Runge-Kutta
methods", ACM TOMS 17 (1991) 533-554.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from ._field import FieldKernel
from ._xp import Array, get_array_module, real_dtype, to_host_float64

#: Aim below the tolerance so the next step is likely to be accepted (Hairer's ``fac = 0.9``).
SAFETY = 0.9
#: Shrink by at most 5x per proposal (Hairer's ``fac1 = 0.2``): guards against a wild estimate.
MIN_FACTOR = 0.2
#: Grow by at most 10x per proposal (Hairer's ``fac2 = 10``).
MAX_FACTOR = 10.0
#: PI memory exponent times ``k = err_order + 1``: ``beta2 = 0.2 / k`` is DOPRI5's 0.04 at k = 5.
PI_BETA2_TIMES_K = 0.2
#: Floor for the remembered error norm (Hairer's ``facold = max(err, 1e-4)``).
ERR_PREV_FLOOR = 1e-4
#: Remembered error norm before the first accepted step. Neutral (1.0): the first proposal is
#: then the plain ``err**(-beta1)`` rule. (Hairer's code starts from 1e-4, which shrinks the
#: first accepted step's successor by 1e-4**0.04 = 0.69.)
ERR_PREV_INIT = 1.0
#: Smallest admissible relative tolerance (below it the estimate is rounding noise).
MIN_RTOL = 100 * np.finfo(np.float64).eps


class ControllerState(NamedTuple):
    """Evolving controller quantities.

    Attributes
    ----------
    k : int
        Exponent denominator ``err_order + 1`` (error estimate is ``O(h**k)``).
    err_prev : float
        Error norm of the last accepted step (floored at ``ERR_PREV_FLOOR``).
    rejected : bool
        Whether the previous proposal rejected a step (then the next accepted step may not grow).
    """

    k: int
    err_prev: float
    rejected: bool


def rms_norm(scaled: Array) -> float:
    """Root mean square over all entries of the scaled error (the default norm).

    Computed as ``m * rms(scaled / m)`` with ``m = max|scaled|``, so huge entries give a large
    finite norm instead of overflowing to inf in the squares; inf if an entry is inf, nan if
    one is nan. One device-to-host transfer (the returned float); ``rms_norm.on_device`` gives
    the same value as a 0-d array on the device (no transfer).
    """
    return float(_rms_on_device(scaled))


def _rms_on_device(scaled: Array) -> Array:
    if type(scaled) is np.ndarray:          # host: the reduction without ndarray.max's wrapper
        mag = np.abs(scaled)
        return _scaled_rms(np, mag, np.maximum.reduce(mag, axis=None), _host_mean)
    xp = get_array_module(scaled)
    mag = xp.abs(scaled)
    return _scaled_rms(xp, mag, mag.max(), xp.mean)


def _host_mean(sq: NDArray[np.floating]) -> np.floating:
    """``numpy.mean(sq)`` of a real float32/float64 host array, bitwise: the same pairwise sum
    (``add.reduce`` over all axes) divided by the ``intp`` count and cast back to the dtype,
    as ``numpy.mean`` does, without its Python bookkeeping (once per adaptive step)."""
    if sq.dtype.type not in (np.float64, np.float32):
        return np.mean(sq)
    return sq.dtype.type(np.add.reduce(sq, axis=None) / np.intp(sq.size))


def per_sample_rms_norm(scaled: Array) -> float:
    """Largest per-sample RMS, samples along axis 0 (a batch never hides a bad sample);
    ``per_sample_rms_norm.on_device`` keeps it on the device."""
    return float(_per_sample_on_device(scaled))


def _per_sample_on_device(scaled: Array) -> Array:
    xp = get_array_module(scaled)
    mag = xp.abs(scaled.reshape(scaled.shape[0], -1))
    return _scaled_rms(xp, mag, mag.max(), lambda sq: sq.mean(axis=1).max())


rms_norm.on_device = _rms_on_device  # type: ignore[attr-defined]  # a function attribute
# a function attribute
per_sample_rms_norm.on_device = _per_sample_on_device  # type: ignore[attr-defined]


def _scaled_rms(xp: Any, mag: Array, peak: Array, mean: Callable[[Array], Array]) -> Array:
    """``peak * sqrt(mean((mag / peak)**2))`` as a 0-d array on the device. The divisor is 1
    when ``peak`` is 0 or non-finite, so the result is then 0, inf or nan without 0/0 or
    inf/inf (no floating-point warnings)."""
    if xp is np:                            # host: scalar arithmetic, the same dtype and bits
        scale = peak if (math.isfinite(peak) and peak > 0) else peak.dtype.type(1)
    else:                                   # device: no transfer to branch on
        scale = xp.where(xp.isfinite(peak) & (peak > 0), peak, xp.ones_like(peak))
    return scale * xp.sqrt(mean((mag / scale) ** 2))


def block_tolerance(sizes: Iterable[int], values: Iterable[float]) -> NDArray[np.float64]:
    """Per-entry tolerance array for a flat state made of blocks.

    Parameters
    ----------
    sizes : sequence of int
        Block lengths, in order.
    values : sequence of float
        One tolerance per block.

    Returns
    -------
    ndarray, shape (sum(sizes),), float64
    """
    sizes, values = list(sizes), list(values)
    if len(sizes) != len(values):
        raise ValueError(f"block_tolerance: got {len(sizes)} sizes but {len(values)} values")
    if any(int(n) != n or n < 0 for n in sizes):
        raise ValueError(f"block_tolerance: `sizes` must be non-negative ints, got {sizes}")
    return np.concatenate([np.full(int(n), float(v)) for n, v in zip(sizes, values, strict=True)])


def _host(tol: Any) -> NDArray[np.float64]:
    return to_host_float64(tol)


def _both_floats(rtol: Any, atol: Any) -> bool:
    """Whether both tolerances are Python floats (the common case: no array to build or move)."""
    return type(rtol) is float and type(atol) is float


def _check_tolerances(rtol: Any, atol: Any) -> None:
    if _both_floats(rtol, atol):
        bad_rtol = not (math.isfinite(rtol) and rtol >= MIN_RTOL)
        bad_atol = not (math.isfinite(atol) and atol >= 0)
    else:
        rtol_h, atol_h = _host(rtol), _host(atol)
        bad_rtol = bool(not np.all(np.isfinite(rtol_h)) or np.any(rtol_h < MIN_RTOL))
        bad_atol = bool(not np.all(np.isfinite(atol_h)) or np.any(atol_h < 0))
    if bad_rtol:
        raise ValueError(f"`rtol` must be finite and >= {MIN_RTOL:.1e} (100 eps); got {rtol!r}. "
                         "Tighter tolerances cannot be met in float64.")
    if bad_atol:
        raise ValueError(f"`atol` must be finite and >= 0; got {atol!r}")


def _check_controller(ctrl: _StepControl) -> None:
    _check_tolerances(ctrl.rtol, ctrl.atol)
    if not 0 < ctrl.min_factor < 1 < ctrl.max_factor or not 0 < ctrl.safety <= 1:
        raise ValueError(f"{type(ctrl).__name__}: need 0 < min_factor < 1 < max_factor and "
                         f"0 < safety <= 1; got min_factor={ctrl.min_factor}, "
                         f"max_factor={ctrl.max_factor}, safety={ctrl.safety}")


@dataclass(frozen=True)
class _Tolerances:
    """Tolerances and the scaled error norm shared by the controllers."""

    rtol: float | Array = 1e-6
    atol: float | Array = 1e-9

    def scaled_error(self, y_err: Array, y0: Array, y1: Array) -> Array:
        """``y_err / (atol + rtol * max(|y0|, |y1|))``, elementwise (shape of ``y_err``)."""
        host = type(y_err) is np.ndarray and type(y0) is np.ndarray and type(y1) is np.ndarray
        xp = np if host else get_array_module(y_err, y0, y1)
        return y_err / self.error_scale(xp.maximum(xp.abs(y0), xp.abs(y1)))

    def error_scale(self, magnitude: Array) -> Array:
        """``atol + rtol * magnitude`` (the divisor of :meth:`scaled_error`), with array
        tolerances in the array module and real dtype of ``magnitude``."""
        rtol, atol = self.rtol, self.atol
        if not _both_floats(rtol, atol):
            xp, real = get_array_module(magnitude), real_dtype(magnitude.dtype)
            rtol, atol = (float(v) if np.ndim(v) == 0 else xp.asarray(v, dtype=real)
                          for v in (rtol, atol))
        return atol + rtol * magnitude

    def on_device(self, like: Array) -> _Tolerances:
        """This controller with array tolerances moved to the array module and real dtype of
        ``like`` (the state), so that :meth:`scaled_error` copies nothing per step."""
        if _both_floats(self.rtol, self.atol):
            return self                     # nothing to move
        xp, real = get_array_module(like), real_dtype(like.dtype)
        moved = {name: float(v) if np.ndim(v) == 0 else xp.asarray(v, dtype=real)
                 for name, v in (("rtol", self.rtol), ("atol", self.atol))}
        return dataclasses.replace(self, **moved)

    def error_norm(self, y_err: Array, y0: Array, y1: Array,
                   norm: Callable[[Array], Any] | None = None) -> float:
        """Scaled error norm (RMS unless ``norm``, a callable ``(scaled) -> float``, is given)."""
        scaled = self.scaled_error(y_err, y0, y1)
        return float(_rms_on_device(scaled)) if norm is None else float(norm(scaled))


@dataclass(frozen=True)
class _StepControl(_Tolerances):
    """Tolerances plus the factor limits shared by the controllers (keyword-only)."""

    safety: float = dataclasses.field(default=SAFETY, kw_only=True)
    min_factor: float = dataclasses.field(default=MIN_FACTOR, kw_only=True)
    max_factor: float = dataclasses.field(default=MAX_FACTOR, kw_only=True)

    def __post_init__(self) -> None:
        _check_controller(self)

    def init(self, err_order: int) -> ControllerState:
        """Initial state for an error estimate of order ``err_order`` (local error O(h^(q+1)))."""
        return ControllerState(int(err_order) + 1, ERR_PREV_INIT, False)


@dataclass(frozen=True)
class PIController(_StepControl):
    """Proportional-integral step-size controller (Gustafsson; Hairer's DOPRI5 variant).

    ``h_next = h * clip(safety * err**(-beta1) * err_prev**beta2, min_factor, max_factor)``
    on acceptance (``err <= 1``), with ``beta2 = 0.2 / k`` and ``beta1 = 1/k - 0.75 beta2`` by
    default; on rejection ``h_next = h * max(min_factor, safety * err**(-1/k))`` and the next
    accepted step may not grow.

    Parameters
    ----------
    rtol, atol : float or array broadcastable to the state
    beta1, beta2 : float, optional, keyword-only
        Exponents; None picks the defaults above from ``k``.
    safety, min_factor, max_factor : float, keyword-only
        Need ``0 < safety <= 1`` and ``0 < min_factor < 1 < max_factor``.
    """

    beta1: float | None = dataclasses.field(default=None, kw_only=True)
    beta2: float | None = dataclasses.field(default=None, kw_only=True)

    def exponents(self, k: int) -> tuple[float, float]:
        """``(beta1, beta2)`` for exponent denominator ``k`` (defaults: 0.85/k, 0.2/k)."""
        beta2 = PI_BETA2_TIMES_K / k if self.beta2 is None else self.beta2
        beta1 = 1.0 / k - 0.75 * beta2 if self.beta1 is None else self.beta1
        return beta1, beta2

    def propose(self, h: float, err_norm: float,
                state: ControllerState) -> tuple[bool, float, ControllerState]:
        """Accept or reject a step of size ``h`` with scaled error ``err_norm``.

        Returns
        -------
        accept : bool
        h_next : float
            Next step size to try (same sign as ``h``).
        state : ControllerState
        """
        if not math.isfinite(err_norm):
            return False, h * self.min_factor, state._replace(rejected=True)
        if err_norm > 1.0:
            factor = max(self.min_factor, self.safety * err_norm ** (-1.0 / state.k))
            return False, h * factor, state._replace(rejected=True)
        beta1, beta2 = self.exponents(state.k)
        if err_norm == 0.0:
            factor = self.max_factor
        else:
            factor = self.safety * err_norm ** (-beta1) * state.err_prev ** beta2
        factor = min(max(factor, self.min_factor), 1.0 if state.rejected else self.max_factor)
        return True, h * factor, ControllerState(state.k, max(err_norm, ERR_PREV_FLOOR), False)


@dataclass(frozen=True)
class IController(_StepControl):
    """Integral (elementary) controller: ``h_next = h * clip(safety * err**(-1/k), ...)``.

    Parameters as :class:`PIController` without ``beta1``/``beta2``.
    """

    def propose(self, h: float, err_norm: float,
                state: ControllerState) -> tuple[bool, float, ControllerState]:
        """Accept iff ``err_norm <= 1``; see :meth:`PIController.propose` for the returns."""
        if not np.isfinite(err_norm):
            return False, h * self.min_factor, state._replace(rejected=True)
        accept = err_norm <= 1.0
        factor = self.max_factor if err_norm == 0.0 else self.safety * err_norm ** (-1.0 / state.k)
        upper = self.max_factor if (accept and not state.rejected) else 1.0
        factor = min(max(factor, self.min_factor), upper)
        return bool(accept), h * factor, state._replace(rejected=not accept)


def initial_step(field: Any, t0: float, y0: Array, params: Any, order: int, rtol: Any, atol: Any,
                 f0: Array, direction: float = 1.0,
                 norm: Callable[[Array], Any] | None = None) -> float:
    """Hairer's initial step-size guess (HNW I, sec. II.4, "Starting step size").

    Parameters
    ----------
    field : object with ``forward``, or a :class:`~solvers._field.FieldKernel` (then its
        forward-only ``evaluate``); evaluated exactly once (at ``y0 + h0 f0``)
    t0 : float
    y0, f0 : array
        Initial state and ``f(t0, y0)``.
    params : object
    order : int
        Order ``p`` of the method (local error O(h^(p+1))).
    rtol, atol : float or array broadcastable to ``y0``
    direction : float
        +1 or -1 (integration direction).
    norm : callable, optional
        Replaces the RMS norm (as in the solve).

    Returns
    -------
    float
        Step-size magnitude (0.0 if ``f0`` is so large that no positive guess exists; the
        solve then stops with ``STEP_UNDERFLOW``).
    """
    xp = get_array_module(y0)
    nrm = rms_norm if norm is None else (lambda s: float(norm(s)))
    # Every error here is scaled by max(|y0|, |0|) = |y0|: one divisor for the three norms.
    scale = _Tolerances(rtol, atol).error_scale(xp.abs(y0))
    d0 = nrm(y0 / scale)
    d1 = nrm(f0 / scale)
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    if not np.isfinite(h0) or h0 <= 0.0:    # d1 inf (f0 overflowed): let the solve fail cleanly
        return 0.0
    y_trial = y0 + (direction * h0) * f0
    f1 = field.evaluate(t0 + direction * h0, y_trial, params) if isinstance(field, FieldKernel) \
        else field.forward(t0 + direction * h0, y_trial, params)[0]
    if not bool(xp.isfinite(f1).all()):
        return 1e-3 * h0
    d2 = nrm((f1 - f0) / scale) / h0
    d_max = max(d1, d2)
    h1 = max(1e-6, 1e-3 * h0) if d_max <= 1e-15 else (0.01 / d_max) ** (1.0 / (order + 1))
    return float(min(100.0 * h0, h1))

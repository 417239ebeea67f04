"""Taylor remainder test (pyadjoint style, with a least-squares slope as in Devito).

For a scalar ``J`` with gradient ``g`` at ``m`` and a direction ``dm``:

    R0(eps) = |J(m + eps dm) - J(m)|                       = O(eps)     (rate 1)
    R1(eps) = |J(m + eps dm) - J(m) - eps <g, dm>|         = O(eps**2)  (rate 2 iff g is right)

A wrong gradient leaves an ``eps * <g_true - g, dm>`` term in ``R1``, whose rate drops to 1.
Steps are ``eps0 * 2**-k``, halved until the rates settle; points whose ``R1`` sits at roundoff
level (below ``1e3 * eps_mach * |J|``) are dropped before the rates are measured.

References
----------
P. E. Farrell, D. A. Ham, S. W. Funke and M. E. Rognes, "Automated derivation of the adjoint of
high-level transient finite element programs", SIAM J. Sci. Comput. 35(4), 2013 (dolfin-adjoint
/ pyadjoint ``taylor_test``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from ..backend import Array, get_array_module
from ._dot import inner
from ._fd import machine_eps

__all__ = ["TaylorResult", "TaylorTestError", "taylor_test"]

ROUNDOFF_FACTOR = 1e3     # R1 below ROUNDOFF_FACTOR * eps_mach * |J| is roundoff, not remainder
MIN_POINTS = 3            # usable points needed for two consecutive rates and a fitted slope
RATE_SPREAD = 0.05        # rates of the last n usable points agreeing this well = asymptotic


class TaylorTestError(ValueError):
    """Too few usable points for a Taylor test (remainder at roundoff or non-finite values)."""


class TaylorResult(NamedTuple):
    """Outcome of :func:`taylor_test`.

    Attributes
    ----------
    eps : ndarray, shape (k,)
        Steps ``eps0 * 2**-j`` taken (``k`` chosen adaptively).
    r0, r1 : ndarray, shape (k,)
        Zeroth- and first-order remainders at each step.
    rates0, rates1 : ndarray
        Consecutive-pair rates ``log(R(eps_i)/R(eps_{i-1})) / log(eps_i/eps_{i-1})``: ``rates1``
        over the last ``n`` usable points, ``rates0`` over all points.
    min_rate : float
        ``min(rates1)`` (pyadjoint's figure; about 2 for a correct gradient). ``inf`` when every
        ``R1`` is at roundoff level: ``J`` is linear along ``dm`` and the gradient is exact.
    slope0, slope1 : float
        Least-squares slopes of ``log R`` against ``log eps`` (last ``n`` usable points for
        ``R1``).
    usable : ndarray of bool, shape (k,)
        Points with ``R1`` above the roundoff floor.
    converged : bool
        True when the rates of the last ``n`` usable points agree to within 0.05, or every
        ``R1`` is at roundoff. False means the remainder reached roundoff before the asymptotic
        regime (inconclusive, not a verdict).
    """

    eps: NDArray[np.float64]
    r0: NDArray[np.float64]
    r1: NDArray[np.float64]
    rates0: NDArray[np.float64]
    rates1: NDArray[np.float64]
    min_rate: float
    slope0: float
    slope1: float
    usable: NDArray[np.bool_]
    converged: bool


def _rates(eps: NDArray[np.float64], r: NDArray[np.float64]) -> NDArray[np.float64]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(r[1:] / r[:-1]) / np.log(eps[1:] / eps[:-1])


def _slope(eps: NDArray[np.float64], r: NDArray[np.float64]) -> float:
    keep = r > 0
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(eps[keep]), np.log(r[keep]), 1)[0])


def _directional(grad: Any, m: Array, dm: Array) -> float:
    if callable(grad):
        grad = grad(m)
    if np.ndim(grad) == 0:
        return float(grad)
    if tuple(grad.shape) != tuple(m.shape):
        raise ValueError(f"`grad` must have the shape of `m` {tuple(m.shape)} (or be the scalar "
                         f"<grad, dm>), got shape {tuple(grad.shape)}.")
    return inner(grad, dm)


def _halvings(fun: Callable[[Array], Any], m: Array, dm: Array, dj: float, j0: float, eps0: float,
              n: int, floor: float | None,
              max_points: int) -> tuple[NDArray[Any], NDArray[Any], float]:
    """Evaluate ``J(m + eps dm)`` at ``eps0 * 2**-k`` until the rates settle or R1 hits roundoff.

    Stops when (a) two consecutive ``R1`` are below ``floor``, or (b) the last ``n`` usable points
    give rates spread by at most ``RATE_SPREAD`` (asymptotic regime reached), or (c) after
    ``max_points`` evaluations.
    """
    eps, jk, floor_now = [], [], floor
    for k in range(max_points):
        e = eps0 * 0.5 ** k
        j = float(fun(m + e * dm))
        if not np.isfinite(j):
            raise TaylorTestError(f"J(m + eps dm) is {j} at eps={e:.3g}; reduce `eps0`.")
        eps.append(e)
        jk.append(j)
        if floor is None:
            floor_now = ROUNDOFF_FACTOR * machine_eps(m.dtype) * max(abs(j0), max(map(abs, jk)))
        r1 = np.abs(np.array(jk) - j0 - np.array(eps) * dj)
        usable = r1 > floor_now
        if len(r1) >= 2 and not usable[-1] and not usable[-2]:
            break
        window = np.flatnonzero(usable)[-n:]
        if window.size == n:
            rates = _rates(np.array(eps)[window], r1[window])
            if np.ptp(rates) <= RATE_SPREAD:
                break
    # a float: floor, or set at the first point
    return np.array(eps), np.array(jk), floor_now  # type: ignore[return-value]


def taylor_test(fun: Callable[[Array], Any], grad: Any,
                m: Array, dm: Array, eps0: float | None = None, n: int = 6, *,
                floor: float | None = None, strict: bool = True,
                max_points: int = 40) -> TaylorResult:
    """Taylor remainder convergence test of a gradient, with adaptive halving.

    Steps ``eps0 * 2**-k`` are taken until the consecutive rates of the last ``n`` usable points
    agree to within 0.05 (the asymptotic regime: a cancellation between the ``eps**2`` and
    ``eps**3`` terms of ``R1`` can make early rates meaningless), or ``R1`` reaches roundoff.
    Points with ``R1`` at roundoff level are dropped; the rates and the slope use the last ``n``
    usable points.

    Parameters
    ----------
    fun : callable
        ``fun(m) -> float``, a scalar function of one array.
    grad : ndarray, float or callable
        Gradient of ``fun`` at ``m`` (shape of ``m``), or ``<grad, dm>`` as a float, or
        ``grad(m) -> ndarray``.
    m : ndarray
        Point.
    dm : ndarray, shape of ``m``
        Nonzero direction.
    eps0 : float, optional
        Largest step. Default ``1e-2 * max(1, |m|_inf) / |dm|_inf`` (each coordinate moves by at
        most 1 % of the point's scale).
    n : int
        Usable points the rates are measured on (>= 3).
    floor : float, optional
        Roundoff level for ``R1``; default ``1e3 * eps_mach * max(|J(m)|, max |J(m+eps dm)|)``.
        Pass a larger value when ``J`` is a sum with cancellation (e.g. ``1e3 eps_mach |a||b|``
        for ``J = <a, b>``).
    strict : bool
        Raise :class:`TaylorTestError` when fewer than 3 points are usable (and not all are at
        roundoff). With ``strict=False`` the result carries ``min_rate = nan`` instead.
    max_points : int
        Most evaluations of ``fun`` (besides ``fun(m)``).

    Returns
    -------
    TaylorResult
        ``min_rate >= 1.9`` and ``slope1`` near 2 for a correct gradient; ``inf`` when every
        ``R1`` is at roundoff (``J`` linear along ``dm``, gradient exact).

    Examples
    --------
    >>> import numpy as np
    >>> m = np.array([0.3, -1.2]); dm = np.array([1.0, 0.5])
    >>> res = taylor_test(lambda z: float(np.sum(np.sin(z))), np.cos(m), m, dm)
    >>> bool(res.min_rate > 1.9)
    True
    """
    if not hasattr(dm, "shape") or tuple(dm.shape) != tuple(m.shape):
        raise ValueError(f"`dm` must have the shape of `m` {tuple(m.shape)}, got "
                         f"{getattr(dm, 'shape', type(dm).__name__)}.")
    for name, value, low in (("n", n, MIN_POINTS), ("max_points", max_points, n)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    xp = get_array_module(m, dm)
    dm_inf = float(xp.max(xp.abs(dm))) if dm.size else 0.0
    if dm_inf == 0.0:
        raise ValueError("`dm` is zero; the Taylor test needs a nonzero direction.")
    if eps0 is None:
        eps0 = 1e-2 * max(1.0, float(xp.max(xp.abs(m)))) / dm_inf
    elif not np.isfinite(eps0) or eps0 <= 0:
        raise ValueError(f"`eps0` must be a positive finite step, got {eps0!r}.")

    j0 = float(fun(m))
    dj = _directional(grad, m, dm)
    if not (np.isfinite(j0) and np.isfinite(dj)):
        raise TaylorTestError(f"non-finite J(m)={j0} or <grad, dm>={dj}.")
    eps, jk, floor = _halvings(fun, m, dm, dj, j0, eps0, n, floor, max_points)
    r0 = np.abs(jk - j0)
    r1 = np.abs(jk - j0 - eps * dj)
    usable = r1 > floor
    window = np.flatnonzero(usable)[-n:]
    rates1 = _rates(eps[window], r1[window])
    converged = window.size == 0 or (window.size == n and np.ptp(rates1) <= RATE_SPREAD)
    if window.size == 0:
        min_rate = float("inf")
    elif window.size < MIN_POINTS:
        if strict:
            raise TaylorTestError(
                f"only {window.size} of {eps.size} Taylor points have R1 above the roundoff "
                f"floor {floor:.3g} (R1 = {np.array2string(r1, precision=3)}); increase `eps0` "
                f"(now {eps0:.3g}).")
        min_rate = float("nan")
    else:
        min_rate = float(np.min(rates1))
    return TaylorResult(eps=eps, r0=r0, r1=r1, rates0=_rates(eps, r0), rates1=rates1,
                        min_rate=min_rate, slope0=_slope(eps, r0),
                        slope1=_slope(eps[window], r1[window]), usable=usable,
                        converged=bool(converged))
